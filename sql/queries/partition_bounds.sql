-- The partitions of the partitioned table whose oid is $1, the DEFAULT one excepted, with the
-- bounds of their range (name, lower_bound, upper_bound). src/partitions.rs runs it as the
-- subquery of its queries (hence no ORDER BY and no semicolon), under search_path pg_catalog.
SELECT c.relname::text AS name,
       r.bounds[1]::timestamptz AS lower_bound,
       r.bounds[2]::timestamptz AS upper_bound
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS b(bound)
CROSS JOIN LATERAL pg_catalog.regexp_match(b.bound, 'FROM \(''([^'']+)''\) TO \(''([^'']+)''\)') AS r(bounds)
WHERE i.inhparent = $1
  AND b.bound <> 'DEFAULT'

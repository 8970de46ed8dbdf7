-- The partitions of memmie.events (the DEFAULT one excepted) whose upper bound is at or before
-- now() - $1 (an interval), oldest first. Used by drop_old_partitions (src/partitions.rs).
SELECT c.relname::text
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
CROSS JOIN LATERAL pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS b(bound)
WHERE i.inhparent = 'memmie.events'::regclass
  AND b.bound <> 'DEFAULT'
  AND (regexp_match(b.bound, 'TO \(''([^'']+)''\)'))[1]::timestamptz <= pg_catalog.now() - $1
ORDER BY (regexp_match(b.bound, 'TO \(''([^'']+)''\)'))[1]::timestamptz

-- The storage parameters of the DEFAULT partition of memmie table $1 (a name), as the list of a
-- WITH clause ('' when it has none): every partition src/partitions.rs makes takes them, so they
-- are set in one place (sql/partitions.sql, on the DEFAULT partitions).
SELECT coalesce(pg_catalog.string_agg(
           pg_catalog.quote_ident(pg_catalog.split_part(o, '=', 1)) || ' = '
           || pg_catalog.quote_literal(pg_catalog.substr(o, pg_catalog.strpos(o, '=') + 1)), ', '), '')
FROM pg_catalog.pg_class c
CROSS JOIN LATERAL pg_catalog.unnest(c.reloptions) AS u(o)
WHERE c.relnamespace = 'memmie'::regnamespace
  AND c.relname = $1 || '_default'

-- The installed schema: partitions, pg_dump registration, privileges.
-- deltas by month and events by day (UTC): the install makes the DEFAULT partitions,
-- ensure_partitions() (run by setup) this period and the next ones.
WITH parts AS (
    SELECT i.inhparent::regclass::text AS parent, c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent IN ('memmie.deltas'::regclass, 'memmie.events'::regclass))
SELECT parent,
       count(*) FILTER (WHERE bound = 'DEFAULT') AS defaults,
       bool_or(relname = 'deltas_' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM')
            OR relname = 'events_' || to_char(now() AT TIME ZONE 'UTC', 'YYYY_MM_DD')) AS has_current,
       bool_or(relname = 'deltas_' || to_char((now() AT TIME ZONE 'UTC') + interval '1 month', 'YYYY_MM')
            OR relname = 'events_' || to_char((now() AT TIME ZONE 'UTC') + interval '1 day', 'YYYY_MM_DD')) AS has_next
FROM parts GROUP BY parent ORDER BY parent;
SELECT pg_get_partkeydef('memmie.deltas'::regclass) AS deltas_key, pg_get_partkeydef('memmie.events'::regclass) AS events_key;

-- A delta and an event written now land in this period's partitions, not the defaults.
BEGIN;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000f1', 'x', 'text/plain')).id IS NOT NULL AS created;
SELECT tableoid::regclass::text LIKE 'memmie.deltas_2%' AS in_month FROM memmie.deltas;
SELECT tableoid::regclass::text LIKE 'memmie.events_2%' AS in_day FROM memmie.events;
ROLLBACK;

-- Every table of the extension is registered for pg_dump (user_content_refs excepted: it is
-- rebuilt from blob_versions on restore). Partitions made by ensure_partitions() are not
-- extension members: pg_dump dumps them as ordinary tables.
SELECT c.relname
FROM pg_class c
WHERE c.relnamespace = 'memmie'::regnamespace AND c.relkind IN ('r', 'p', 'S')
  AND c.oid <> ALL ((SELECT extconfig FROM pg_extension WHERE extname = 'memmie')::oid[])
  AND c.relname <> 'user_content_refs'
  AND EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
              AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e');
SELECT count(*) AS dated_partitions_in_the_extension
FROM pg_class c JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
     AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e'
WHERE c.relname ~ '^(deltas|events)_[0-9]';

-- Nothing that writes or reads users' data is executable by PUBLIC.
SELECT p.proname
FROM pg_proc p
WHERE p.pronamespace = 'memmie'::regnamespace AND has_function_privilege('public', p.oid, 'EXECUTE')
ORDER BY 1;

-- Not relocatable; every function is in schema memmie.
SELECT extrelocatable FROM pg_extension WHERE extname = 'memmie';

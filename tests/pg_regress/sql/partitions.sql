-- Partition upkeep: create_partitions (moving rows out of DEFAULT), ensure_partitions,
-- drop_old_partitions (events only, never with unprocessed events).
BEGIN;
-- setup kept 3 future periods of each table; 5 adds 2 + 2
SELECT memmie.ensure_partitions(5) AS created;
SELECT memmie.ensure_partitions(5) AS created_again;
SELECT memmie.ensure_partitions(0) AS nothing_to_do;

-- rows waiting in the DEFAULT partition move into the partitions made for them
INSERT INTO memmie.user_contexts (user_id) VALUES ('00000000-0000-0000-0000-0000000000ae');
INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, user_id, payload, created_at)
SELECT 'test', '00000000-0000-0000-0000-0000000000ae', 'blob', '00000000-0000-0000-0000-0000000000ae', '{}',
       timestamptz '2031-12-30 12:00+00' + i * interval '6 hours'
FROM generate_series(0, 11) i;
SELECT count(*) AS waiting_in_default FROM memmie.events_default;
SELECT memmie.create_partitions('memmie.events', '2031-12-30', 4) AS created;
SELECT count(*) AS left_in_default FROM memmie.events_default;
SELECT tableoid::regclass AS partition, count(*), min(created_at AT TIME ZONE 'UTC') AS first
FROM memmie.events WHERE created_at >= '2031-12-30 00:00+00' GROUP BY 1 ORDER BY 1;
-- the new partitions have the parent's indexes, keys and foreign keys
SELECT count(*) AS indexes FROM pg_indexes WHERE schemaname = 'memmie' AND tablename = 'events_2032_01_01';
-- (not NOT NULL constraints, which PostgreSQL 18 lists here too)
SELECT conname, contype FROM pg_constraint WHERE conrelid = 'memmie.events_2032_01_01'::regclass
  AND contype <> 'n' ORDER BY 1;
SELECT reloptions FROM pg_class WHERE oid = 'memmie.events_2032_01_01'::regclass;
-- months across a year end; existing ones are skipped
SELECT memmie.create_partitions('memmie.deltas', '2031-11-20', 3) AS created;
SELECT memmie.create_partitions('memmie.deltas', '2031-12-01', 3) AS created;
SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bounds
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'memmie.deltas'::regclass AND c.relname >= 'deltas_2031' AND c.relname < 'deltas_default' ORDER BY 1;

-- many at once (the DEFAULT partition is detached while they are made, then attached again):
-- rows waiting there move into them, rows of other periods stay, and the DEFAULT partition is
-- the DEFAULT partition again with its foreign keys inherited and acting
INSERT INTO memmie.user_contexts (user_id) VALUES ('00000000-0000-0000-0000-0000000000af');
INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, user_id, payload, created_at)
SELECT 'test', '00000000-0000-0000-0000-0000000000af', 'blob', '00000000-0000-0000-0000-0000000000af', '{}', t
FROM (SELECT timestamptz '2033-01-01 12:00+00' + i * interval '1 day' FROM generate_series(0, 9) i
      UNION ALL SELECT timestamptz '2040-06-01 12:00+00') x(t);
SELECT count(*) AS referenced_side_triggers FROM pg_trigger
WHERE tgrelid IN ('memmie.user_contexts'::regclass, 'memmie.blobs'::regclass) \gset
SELECT memmie.create_partitions('memmie.events', '2033-01-01', 10) AS created;
SELECT memmie.create_partitions('memmie.deltas', '2033-01-01', 10) AS created;
SELECT tableoid::regclass AS partition, count(*) FROM memmie.events
WHERE user_id = '00000000-0000-0000-0000-0000000000af' GROUP BY 1 ORDER BY 1;
SELECT i.inhparent::regclass AS parent, c.relname, pg_get_expr(c.relpartbound, c.oid) AS bounds
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE c.relname IN ('events_default', 'deltas_default') ORDER BY 1;
SELECT conrelid::regclass AS partition, conname, conparentid <> 0 AS inherited
FROM pg_constraint WHERE conrelid IN ('memmie.events_default'::regclass, 'memmie.deltas_default'::regclass)
  AND contype = 'f' ORDER BY 1, 2;
SELECT count(*) = :referenced_side_triggers AS no_trigger_left_behind FROM pg_trigger
WHERE tgrelid IN ('memmie.user_contexts'::regclass, 'memmie.blobs'::regclass);
DELETE FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000af';
SELECT count(*) AS events_left_after_user_delete FROM memmie.events WHERE user_id = '00000000-0000-0000-0000-0000000000af';
SELECT t.err($$INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, user_id, payload, created_at)
               VALUES ('test', '00000000-0000-0000-0000-0000000000af', 'blob', '00000000-0000-0000-0000-0000000000af',
                       '{}', '2040-06-02 12:00+00')$$) AS unknown_user_in_default;

SELECT t.err($$SELECT memmie.create_partitions('memmie.blobs', '2031-01-01', 1)$$) AS not_partitioned_by_memmie;
SELECT t.err($$SELECT memmie.create_partitions('memmie.events', NULL, 1)$$) AS null_date;
SELECT t.err($$SELECT memmie.create_partitions('memmie.events', '2031-01-01', 0)$$) AS zero_count;
SELECT t.err($$SELECT memmie.create_partitions('memmie.events', 'infinity', 1)$$) AS infinite_date;
SELECT t.err($$SELECT memmie.ensure_partitions(-1)$$) AS negative_premake;

-- old event partitions: dropped when every event is processed, kept (NOTICE) otherwise
SELECT memmie.create_partitions('memmie.events', '2020-03-01', 3) AS created;
INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, payload, created_at, processed)
VALUES ('test', '00000000-0000-0000-0000-0000000000ae', 'blob', '{}', '2020-03-01 10:00+00', true),
       ('test', '00000000-0000-0000-0000-0000000000ae', 'blob', '{}', '2020-03-02 10:00+00', false);
SELECT memmie.drop_old_partitions('memmie.events', '30 days') AS dropped;
SELECT relname FROM pg_class WHERE relname LIKE 'events_2020_03_%' AND relkind = 'r' ORDER BY 1;
SELECT memmie.drop_old_partitions('memmie.events', '30 days') AS dropped_again;
SELECT t.err($$SELECT memmie.drop_old_partitions('memmie.deltas', '30 days')$$) AS never_deltas;
SELECT t.err($$SELECT memmie.drop_old_partitions('memmie.events', NULL)$$) AS null_interval;
SELECT t.err($$SELECT memmie.drop_old_partitions('memmie.events', '-1 day')$$) AS negative_interval;
ROLLBACK;

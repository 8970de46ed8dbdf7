-- refresh_views() and gc_content().
BEGIN;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000a7', 'kept', 'text/plain')).id AS kept \gset
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000a7', 'garbage', 'text/plain')).id AS gone \gset
SELECT memmie.delete_blob(:'gone', hard => true);
INSERT INTO memmie.content_storage (content_hash, storage_backend, storage_path, original_size)
VALUES (repeat('ab', 32), 's3', 's3://bucket/ab', 10);
SELECT content_hash = memmie.sha256('garbage') AS garbage, reference_count FROM t.content_now
WHERE content_hash IN (memmie.sha256('kept'), memmie.sha256('garbage')) ORDER BY 1;

-- nothing is old enough within the grace period
SELECT count(*) AS collected FROM memmie.gc_content();
-- grace 0: unreferenced content goes, external content comes back with its path to delete
SELECT storage_backend, storage_path, content_hash = memmie.sha256('garbage') AS garbage
FROM memmie.gc_content('0 seconds') ORDER BY 1;
SELECT count(*) AS garbage_left FROM t.content_now WHERE reference_count = 0;
SELECT convert_from(memmie.blob_content(:'kept'), 'UTF8') AS still_readable;
SELECT t.err($$SELECT memmie.gc_content('-1 hour')$$) AS negative_grace;
SELECT t.err($$SELECT memmie.gc_content(NULL)$$) AS null_grace;
-- the same bytes stored again after collection come back as new content
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000a7', 'garbage', 'text/plain')).version;
SELECT reference_count FROM t.content_now WHERE content_hash = memmie.sha256('garbage');

-- refresh_views: both materialized views, concurrently
SELECT jsonb_object_keys(memmie.refresh_views()) AS refreshed ORDER BY 1;
SELECT total_blobs FROM memmie.user_blob_summary WHERE user_id = '00000000-0000-0000-0000-0000000000a7';
SELECT check_name, ok FROM memmie.check() WHERE NOT ok;
ROLLBACK;

-- maintenance(): the routine upkeep, with a report
BEGIN;
SELECT id FROM memmie.enqueue_job('report', '00000000-0000-0000-0000-0000000000a7', '{}', expires_at => now() - interval '1 minute', job_id => 'expired-job');
SELECT key, CASE WHEN key IN ('views', 'ms') THEN 'present' ELSE value::text END AS value
FROM jsonb_each(memmie.maintenance()) ORDER BY key;
SELECT count(*) AS expired_job_left FROM memmie.jobs WHERE id = 'expired-job';
SET LOCAL memmie.event_retention = '7d';
SELECT memmie.maintenance() ->> 'event_retention' AS retention;
ROLLBACK;

-- keep_versions (a per-user quota key, tests/pg_regress/sql/history.sql has squash_history):
-- maintenance() squashes each live blob of the user to its latest N versions; other users' blobs
-- are left alone
BEGIN;
SET LOCAL memmie.snapshot_interval = 4;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000e3', convert_to('{"n": 0}', 'UTF8'), 'application/json')).id AS k1 \gset
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000e3', 'short', 'text/plain')).id AS k2 \gset
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000e4', convert_to('{"n": 0}', 'UTF8'), 'application/json')).id AS other \gset
SELECT count(memmie.apply_delta(b, format('[{"op": "replace", "path": "/content/n", "value": %s}]', i)::jsonb))
FROM unnest(ARRAY[:'k1', :'other']::uuid[]) b, generate_series(1, 11) i;
SELECT (memmie.apply_delta(:'k2', '[{"op": "add", "path": "/tags/-", "value": "a"}]')).to_version AS k2;
-- a deleted blob keeps its history (undelete_blob brings all of it back)
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000e3', 'deleted', 'text/plain')).id AS k3 \gset
SELECT count(memmie.apply_delta(:'k3', '[{"op": "add", "path": "/tags/-", "value": "a"}]')) FROM generate_series(1, 7);
SELECT memmie.delete_blob(:'k3');
UPDATE memmie.user_contexts SET quota_limits = '{"keep_versions": 5}'
WHERE user_id = '00000000-0000-0000-0000-0000000000e3';
-- (from a session bound to another user, as an admin's may be: retention is for every user)
SET LOCAL memmie.user_id = '00000000-0000-0000-0000-0000000000e4';
SELECT (memmie.maintenance() -> 'versions_squashed')::int AS squashed;
RESET memmie.user_id;
SELECT b.id = :'k1' AS k1, min(v.version), max(v.version)
FROM memmie.blobs b JOIN memmie.blob_versions v ON v.blob_id = b.id
WHERE b.id IN (:'k1', :'k2', :'k3', :'other') GROUP BY b.id ORDER BY 2, 3;
SELECT memmie.blob_state(:'k1') -> 'content' AS k1_head;
SELECT (memmie.maintenance() -> 'versions_squashed')::int AS squashed_again;
SELECT * FROM memmie.check() WHERE NOT ok;
ROLLBACK;

-- schedule_maintenance without pg_cron in this database: 55000 and a hint with what to run
-- (tests/scheduling covers pg_cron and the background worker)
SELECT t.err($$SELECT memmie.schedule_maintenance()$$) AS without_pg_cron;
SELECT t.err($$SELECT memmie.schedule_maintenance(NULL)$$) AS null_schedule;
SELECT memmie.unschedule_maintenance() AS nothing_scheduled;

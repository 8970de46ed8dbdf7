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

-- schedule_maintenance without pg_cron in this database: 55000 and a hint with what to run
-- (tests/scheduling covers pg_cron and the background worker)
SELECT t.err($$SELECT memmie.schedule_maintenance()$$) AS without_pg_cron;
SELECT t.err($$SELECT memmie.schedule_maintenance(NULL)$$) AS null_schedule;
SELECT memmie.unschedule_maintenance() AS nothing_scheduled;

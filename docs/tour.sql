-- A five-minute tour of memmie (run by `bash .ci/dev run`; safe to run again).
\set ON_ERROR_STOP on
\pset footer off
\echo '--- two users store the same document: one stored copy (dedup), counted for each user'
SELECT (memmie.create_blob('11111111-1111-1111-1111-111111111111',
        convert_to('{"title": "Plan", "steps": ["write"]}', 'UTF8'), 'application/json',
        '{"title": "Project plan"}', '{draft}')).id AS plan \gset
SELECT (memmie.create_blob('22222222-2222-2222-2222-222222222222',
        convert_to('{"title": "Plan", "steps": ["write"]}', 'UTF8'), 'application/json')).id AS copy \gset
SELECT left(content_hash, 12) AS hash, compression, original_size, reference_count
FROM memmie.content_storage WHERE content_hash = (SELECT content_hash FROM memmie.blobs WHERE id = :'plan');
SELECT user_id, storage_used, blob_count FROM memmie.user_contexts
WHERE user_id IN ('11111111-1111-1111-1111-111111111111', '22222222-2222-2222-2222-222222222222')
ORDER BY user_id;

\echo '--- a few versions via apply_delta (RFC 6902 JSON Patch over the blob state)'
SELECT to_version, operation FROM memmie.apply_delta(:'plan',
    '[{"op": "add", "path": "/content/steps/-", "value": "review"}]');
SELECT to_version, operation FROM memmie.apply_delta(:'plan',
    '[{"op": "replace", "path": "/metadata/title", "value": "Project plan v2"},
      {"op": "add", "path": "/tags/-", "value": "team"}]', expected_version => 2);
SELECT version, metadata, tags, convert_from(memmie.blob_content(id), 'UTF8') AS content
FROM memmie.blobs WHERE id = :'plan';

\echo '--- revert to version 1: a new version equal to the old one'
SELECT version, metadata FROM memmie.revert_blob(:'plan', 1);

\echo '--- replay: the state of any version, rebuilt from the deltas alone'
SELECT v AS version, memmie.blob_state(:'plan', v) -> 'content' AS content,
       memmie.blob_state(:'plan', v) -> 'metadata' AS metadata
FROM generate_series(1, 4) v;

\echo '--- the delta history'
SELECT to_version, operation, provider_id, patch FROM memmie.blob_history(:'plan');

\echo '--- events for workers (NOTIFY memmie_events carries each id)'
SELECT event_type, payload ->> 'version' AS version, payload ->> 'operation' AS operation
FROM memmie.events WHERE aggregate_id = :'plan' ORDER BY (payload ->> 'version')::int;

\echo '--- a provider: what it takes, what triggers it (every registered version is kept)'
SELECT id, version, trigger_events, supported_types FROM memmie.register_provider('{
    "id": "tour-summarizer", "name": "Summarizer", "version": "1",
    "trigger_events": ["blob.created"], "supported_types": ["text/plain"],
    "output_schema": {"type": "object", "required": ["children"]}}');

\echo '--- a new note is dispatched to it: one processing, one job (NOTIFY memmie_jobs)'
SELECT (memmie.create_blob('11111111-1111-1111-1111-111111111111',
        convert_to('memmie keeps versioned, derived content inside PostgreSQL.', 'UTF8'),
        'text/plain', '{"title": "Note"}')).id AS note \gset
SELECT memmie.dispatch_events(1000) AS events_dispatched;
SELECT provider_id, status, processed_version FROM memmie.provider_processing WHERE blob_id = :'note';

\echo '--- a worker claims the job (SKIP LOCKED, with a lease) and hands back a derived blob'
SELECT id AS job FROM memmie.claim_jobs('tour-worker', 1, '1 minute', ARRAY['memmie.process']) \gset
SELECT version, content_type, depth, created_by FROM memmie.complete_processing(:'job'::uuid, 'tour-worker',
    '{"children": [{"content": "memmie: content + history + lineage in Postgres.",
                    "content_type": "text/plain", "transform_type": "summary"}]}');
SELECT status, processing_time_ms IS NOT NULL AS timed FROM memmie.provider_processing WHERE blob_id = :'note';

\echo '--- lineage: where the summary came from, and what came of the note'
SELECT d.depth, b.content_type, b.created_by FROM memmie.descendants(:'note') d JOIN memmie.blobs b ON b.id = d.blob_id;
SELECT jsonb_pretty(memmie.lineage(:'note') -> 'edges') AS edges;

\echo '--- operations: the routine upkeep (schedule it with pg_cron or the background worker: README)'
SELECT key, value FROM jsonb_each(memmie.maintenance())
WHERE key IN ('partitions_created', 'expired_jobs_removed', 'contents_collected', 'usage_increments_folded', 'provider_metrics_rows');
\echo '--- usage per (UTC) day, counted as memmie works; provider metrics of the day'
SELECT blobs_created, deltas_applied, blobs_processed, provider_invocations
FROM memmie.user_usage('11111111-1111-1111-1111-111111111111');
SELECT provider_id, total_invocations, successful_invocations, latency_p50 IS NOT NULL AS has_latency
FROM memmie.provider_metrics WHERE provider_id = 'tour-summarizer';
\echo '--- the consistency check'
SELECT check_name, ok FROM memmie.check();

-- leave the database as we found it
SELECT memmie.delete_blob(:'plan', hard => true), memmie.delete_blob(:'copy', hard => true),
       memmie.delete_blob(:'note', hard => true) \g /dev/null
DELETE FROM memmie.provider_metrics WHERE provider_id = 'tour-summarizer';
DELETE FROM memmie.providers WHERE id = 'tour-summarizer';
DELETE FROM memmie.user_contexts
WHERE user_id IN ('11111111-1111-1111-1111-111111111111', '22222222-2222-2222-2222-222222222222');

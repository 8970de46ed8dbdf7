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

-- leave the database as we found it
SELECT memmie.delete_blob(:'plan', hard => true), memmie.delete_blob(:'copy', hard => true) \g /dev/null
DELETE FROM memmie.user_contexts
WHERE user_id IN ('11111111-1111-1111-1111-111111111111', '22222222-2222-2222-2222-222222222222');

-- The blob lifecycle: versions, deltas, events, replay, revert, delete.
BEGIN;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000a1',
        convert_to('# Chapter 1', 'UTF8'), 'text/markdown',
        '{"title": "Chapter 1"}', '{draft}')).id AS md \gset
SELECT version, content_size, content_type, metadata, tags, created_by, depth, deleted_at IS NULL AS live
FROM memmie.blobs WHERE id = :'md';
SELECT memmie.blob_state(:'md') - 'content_hash' AS state;

-- apply_delta edits metadata and tags; each change is one version, one delta, one event.
SELECT operation, from_version, to_version, status, previous_delta_id IS NOT NULL AS linked, patch
FROM memmie.apply_delta(:'md', '[{"op": "replace", "path": "/metadata/title", "value": "Chapter One"},
                                 {"op": "add", "path": "/tags/-", "value": "fiction"}]');
SELECT * FROM memmie.apply_delta(:'md', '[{"op": "add", "path": "/metadata/description", "value": "The start"}]', 2) \gset d3_
SELECT :'d3_to_version' AS v3;
SELECT version, metadata, tags FROM memmie.blobs WHERE id = :'md';

-- Optimistic concurrency: a stale expected_version changes nothing.
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '[{"op": "add", "path": "/metadata/x", "value": 1}]', 2)$$, :'md'));
-- A failed test op is MM007 and changes nothing.
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '[{"op": "test", "path": "/metadata/title", "value": "nope"}]')$$, :'md'));
-- Derived fields cannot be patched; markdown has no /content.
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '[{"op": "replace", "path": "/content_size", "value": 1}]')$$, :'md'));
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '[{"op": "add", "path": "/content", "value": {}}]')$$, :'md'));
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '[{"op": "add", "path": "/deleted", "value": true}]')$$, :'md'));
SELECT version FROM memmie.blobs WHERE id = :'md';

-- New content: a new version naming a new hash.
SELECT version, content_size FROM memmie.update_content(:'md', convert_to(E'# Chapter 1\n\nIt was a dark night.', 'UTF8'));
SELECT convert_from(memmie.blob_content(:'md'), 'UTF8') AS content;
SELECT convert_from(memmie.blob_content(:'md', 1), 'UTF8') AS v1_content;

-- Revert makes a new version equal to the old one; history is kept.
SELECT version, content_size, metadata FROM memmie.revert_blob(:'md', 1);
SELECT memmie.blob_state(:'md', 5) = memmie.blob_state(:'md', 1) AS v5_equals_v1;

-- Soft delete is a version; the blob leaves listings; revert brings it back.
SELECT memmie.delete_blob(:'md');
SELECT memmie.delete_blob(:'md');  -- already deleted: nothing more happens
SELECT version, deleted_at IS NOT NULL AS deleted FROM memmie.blobs WHERE id = :'md';
SELECT memmie.blob_state(:'md') -> 'deleted' AS deleted_in_state;
SELECT count(*) AS listed FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000a1');
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '[]')$$, :'md'));
SELECT version, deleted_at IS NULL AS live FROM memmie.revert_blob(:'md', 5);
SELECT count(*) AS listed FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000a1');

-- The history: dense versions, each delta linked to the one before.
SELECT to_version, from_version, operation, provider_id, status,
       previous_delta_id IS NOT DISTINCT FROM lag(id) OVER (ORDER BY to_version) AS chained
FROM memmie.blob_history(:'md');
SELECT array_agg(version ORDER BY version) AS versions FROM memmie.blob_versions WHERE blob_id = :'md';
SELECT event_type, payload->>'version' AS version, payload->>'operation' AS operation,
       payload->>'delta_id' = d.id::text AS names_delta
FROM memmie.events e JOIN memmie.deltas d ON d.blob_id = e.aggregate_id AND d.to_version = (e.payload->>'version')::int
WHERE e.aggregate_id = :'md' ORDER BY (e.payload->>'version')::int;

-- Replaying the deltas from null rebuilds every stored version exactly.
SELECT v.version,
       memmie.blob_state(:'md', v.version)
         = memmie._make_state(v.content_hash, v.content_size, v.content_type, v.metadata, v.tags, v.deleted)
         AS replay_matches
FROM memmie.blob_versions v WHERE v.blob_id = :'md' ORDER BY v.version;

-- JSON blobs: /content is the parsed document; patching it rewrites the bytes and the hash.
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000a1',
        convert_to('{"title": "Plan", "steps": ["a"]}', 'UTF8'), 'application/json')).id AS js \gset
SELECT memmie.blob_state(:'js') -> 'content' AS content;
SELECT d.patch -> -1 ->> 'path' AS last_op_path, d.operation, d.provider_id
FROM memmie.apply_delta(:'js', '[{"op": "add", "path": "/content/steps/-", "value": "b"}]',
                        provider_id => 'summarizer') d;
SELECT convert_from(memmie.blob_content(:'js'), 'UTF8') AS bytes,
       b.content_hash = memmie.sha256(memmie.blob_content(:'js')) AS hash_follows,
       b.content_size = length(memmie.blob_content(:'js')) AS size_follows
FROM memmie.blobs b WHERE b.id = :'js';
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '[{"op": "remove", "path": "/content"}]')$$, :'js'));
-- Changing the type away from JSON drops /content; back to JSON parses the bytes again.
SELECT (memmie.apply_delta(:'js', '[{"op": "replace", "path": "/content_type", "value": "text/plain"}, {"op": "remove", "path": "/content"}]')).to_version;
SELECT memmie.blob_state(:'js') ? 'content' AS has_content;
SELECT (memmie.apply_delta(:'js', '[{"op": "replace", "path": "/content_type", "value": "application/ld+json"}]')).to_version;
SELECT memmie.blob_state(:'js') -> 'content' AS content;
SELECT t.err(format($$SELECT memmie.update_content(%L, 'not json')$$, :'js'));
SELECT v.version, memmie.blob_state(:'js', v.version)
         = memmie._make_state(v.content_hash, v.content_size, v.content_type, v.metadata, v.tags, v.deleted) AS replay_matches
FROM memmie.blob_versions v WHERE v.blob_id = :'js' ORDER BY v.version;

-- Causality: caused_by_delta_id must exist and is recorded with the event that caused it.
SELECT id AS first_delta FROM memmie.deltas WHERE blob_id = :'js' AND to_version = 1 \gset
SELECT caused_by_delta_id = :'first_delta' AS caused, caused_by_event
FROM memmie.apply_delta(:'js', '[{"op": "add", "path": "/metadata/k", "value": 1}]', NULL, 'indexer',
                        :'first_delta', '{"type": "blob.created"}');
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '[]', NULL, 'x', '00000000-0000-0000-0000-000000000000')$$, :'js'));

-- Derived blob via parent_blob_id: same user, depth and root follow, an edge is recorded.
SELECT depth, root_blob_id = :'js' AS rooted, parent_blob_id = :'js' AS parented, created_by
FROM memmie.create_blob('00000000-0000-0000-0000-0000000000a1', 'summary', 'text/plain',
                        parent_blob_id => :'js', created_by => 'summarizer');
SELECT provider_id, transform_type FROM memmie.blob_edges WHERE parent_blob_id = :'js';
SELECT t.err(format($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000b2', 'x', 'text/plain', parent_blob_id => %L)$$, :'js'));

-- Hard delete removes the blob, its versions, deltas and children, and releases content.
SELECT count(*) AS refs_before FROM memmie.blob_versions WHERE blob_id = :'md';
SELECT memmie.delete_blob(:'md', hard => true);
SELECT (SELECT count(*) FROM memmie.blobs WHERE id = :'md') AS blobs,
       (SELECT count(*) FROM memmie.blob_versions WHERE blob_id = :'md') AS versions,
       (SELECT count(*) FROM memmie.deltas WHERE blob_id = :'md') AS deltas,
       (SELECT count(*) FROM memmie.events WHERE aggregate_id = :'md' AND payload ? 'hard') AS hard_events;
SELECT t.err(format($$SELECT memmie.blob_state(%L)$$, :'md'));
SELECT count(*) AS orphan_content_refs FROM t.content_now c
WHERE c.reference_count <> (SELECT count(*) FROM memmie.blob_versions v WHERE v.content_hash = c.content_hash);
-- expected_version on delete_blob and revert_blob (MM001, nothing changes); undelete_blob brings
-- a soft-deleted blob back as a new version equal to the one before the delete.
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000a1', 'keep me', 'text/plain', '{"k": 1}')).id AS ud \gset
SELECT to_version FROM memmie.apply_delta(:'ud', '[{"op": "add", "path": "/metadata/k2", "value": 2}]');
SELECT t.err(format($$SELECT memmie.delete_blob(%L, expected_version => 1)$$, :'ud')) AS stale_delete;
SELECT t.err(format($$SELECT memmie.delete_blob(%L, true, 1)$$, :'ud')) AS stale_hard_delete;
SELECT version, deleted_at IS NULL AS live FROM memmie.blobs WHERE id = :'ud';
SELECT memmie.delete_blob(:'ud', false, 2);
SELECT version, deleted_at IS NOT NULL AS deleted FROM memmie.blobs WHERE id = :'ud';
SELECT t.err(format($$SELECT memmie.undelete_blob(%L, 2)$$, :'ud')) AS stale_undelete;
SELECT count(*) AS usage_rows FROM memmie.usage_increments WHERE user_id = '00000000-0000-0000-0000-0000000000a1' \gset before_
SELECT version, deleted_at IS NULL AS live, metadata, convert_from(memmie.blob_content(id), 'UTF8') AS content
FROM memmie.undelete_blob(:'ud', expected_version => 3);
SELECT memmie.blob_state(:'ud', 4) = memmie.blob_state(:'ud', 2) AS v4_equals_v2;
SELECT count(*) - :before_usage_rows AS usage_rows_added FROM memmie.usage_increments WHERE user_id = '00000000-0000-0000-0000-0000000000a1';
SELECT to_version, operation, provider_id, patch FROM memmie.blob_history(:'ud') WHERE to_version >= 3 ORDER BY 1;
SELECT event_type, payload ->> 'version' AS version, payload ->> 'operation' AS operation
FROM memmie.events WHERE aggregate_id = :'ud' ORDER BY (payload ->> 'version')::int;
SELECT count(*) AS listed FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000a1') WHERE id = :'ud';
SELECT t.err(format($$SELECT memmie.undelete_blob(%L)$$, :'ud')) AS not_deleted;
SELECT t.err($$SELECT memmie.undelete_blob('00000000-0000-0000-0000-00000000dead')$$) AS missing_blob;
SELECT t.err($$SELECT memmie.undelete_blob(NULL)$$) AS null_blob;
SELECT t.err(format($$SELECT memmie.revert_blob(%L, 1, expected_version => 3)$$, :'ud')) AS stale_revert;
SELECT version, metadata FROM memmie.revert_blob(:'ud', 1, 'user', 4);
SELECT memmie.delete_blob(:'ud', hard => true, expected_version => 5);
SELECT count(*) AS gone FROM memmie.blobs WHERE id = :'ud';
ROLLBACK;

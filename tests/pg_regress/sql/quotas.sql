-- user_contexts: created on first use; storage_used and blob_count exact; quotas enforced.
BEGIN;
SELECT count(*) AS before FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c1', t.noise(1000, 1), 'application/octet-stream')).id AS b1 \gset
SELECT storage_used, blob_count FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000c1';

-- A metadata-only edit costs nothing; the same content in a second blob counts once.
SELECT (memmie.apply_delta(:'b1', '[{"op": "add", "path": "/metadata/title", "value": "x"}]')).to_version;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c1', t.noise(1000, 1), 'application/octet-stream')).id AS b2 \gset
SELECT storage_used, blob_count FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
-- New content adds its size; old versions still hold theirs.
SELECT (memmie.update_content(:'b2', t.noise(500, 2))).version;
SELECT storage_used FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
-- Another user's copy of the same content plays no part in either user's numbers.
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c2', t.noise(1000, 1), 'application/octet-stream')).version;
SELECT user_id, storage_used, blob_count FROM memmie.user_contexts
WHERE user_id IN ('00000000-0000-0000-0000-0000000000c1', '00000000-0000-0000-0000-0000000000c2') ORDER BY 1;
SELECT reference_count FROM t.content_now WHERE content_hash = memmie.sha256(t.noise(1000, 1));
-- Soft delete lowers blob_count (not storage: the versions remain); hard delete releases storage.
SELECT memmie.delete_blob(:'b2');
SELECT storage_used, blob_count FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
SELECT memmie.delete_blob(:'b2', true);
SELECT storage_used, blob_count FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
SELECT memmie.delete_blob(:'b1', true);
SELECT storage_used, blob_count FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
SELECT count(*) AS user_refs FROM memmie.user_content_refs WHERE user_id = '00000000-0000-0000-0000-0000000000c1';

-- Quotas: MM002, and nothing of the refused change is left behind.
UPDATE memmie.user_contexts SET quota_limits = '{"max_blobs": 2, "max_storage_bytes": 3000, "max_content_size": 2000}'
WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c1', t.noise(1000, 3), 'application/octet-stream')).id AS q1 \gset
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000c1', t.noise(2500, 4), 'application/octet-stream')$$) AS too_big_content;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c1', t.noise(1500, 5), 'application/octet-stream')).version;
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000c1', 'x', 'text/plain')$$) AS too_many_blobs;
SELECT t.err(format($$SELECT memmie.update_content(%L, t.noise(1000, 6))$$, :'q1')) AS too_much_storage;
SELECT storage_used, blob_count FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
SELECT count(*) AS blobs, (SELECT count(*) FROM memmie.content_storage WHERE content_hash IN
       (memmie.sha256(t.noise(2500, 4)), memmie.sha256(t.noise(1000, 6)), memmie.sha256('x'))) AS stray_contents
FROM memmie.blobs WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
-- Undeleting counts against max_blobs too.
SELECT memmie.delete_blob(:'q1');
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c1', 'y', 'text/plain')).version;
SELECT t.err(format($$SELECT memmie.revert_blob(%L, 1)$$, :'q1')) AS undelete_over_quota;
SELECT t.err(format($$SELECT memmie.undelete_blob(%L)$$, :'q1')) AS undelete_blob_over_quota;
-- Quota values must be non-negative numbers.
SELECT t.err($$UPDATE memmie.user_contexts SET quota_limits = '{"max_blobs": "lots"}' WHERE user_id = '00000000-0000-0000-0000-0000000000c1'$$);
ROLLBACK;

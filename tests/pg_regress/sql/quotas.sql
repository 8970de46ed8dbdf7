-- user_contexts: created on first use; storage_used and blob_count exact; quotas enforced.
BEGIN;
SELECT count(*) AS before FROM t.users_now WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c1', t.noise(1000, 1), 'application/octet-stream')).id AS b1 \gset
SELECT storage_used, blob_count FROM t.users_now WHERE user_id = '00000000-0000-0000-0000-0000000000c1';

-- A metadata-only edit costs nothing; the same content in a second blob counts once.
SELECT (memmie.apply_delta(:'b1', '[{"op": "add", "path": "/metadata/title", "value": "x"}]')).to_version;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c1', t.noise(1000, 1), 'application/octet-stream')).id AS b2 \gset
SELECT storage_used, blob_count FROM t.users_now WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
-- New content adds its size; old versions still hold theirs.
SELECT (memmie.update_content(:'b2', t.noise(500, 2))).version;
SELECT storage_used FROM t.users_now WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
-- Another user's copy of the same content plays no part in either user's numbers.
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c2', t.noise(1000, 1), 'application/octet-stream')).version;
SELECT user_id, storage_used, blob_count FROM t.users_now
WHERE user_id IN ('00000000-0000-0000-0000-0000000000c1', '00000000-0000-0000-0000-0000000000c2') ORDER BY 1;
SELECT reference_count FROM t.content_now WHERE content_hash = memmie.sha256(t.noise(1000, 1));
-- Soft delete lowers blob_count (not storage: the versions remain); hard delete releases storage.
SELECT memmie.delete_blob(:'b2');
SELECT storage_used, blob_count FROM t.users_now WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
SELECT memmie.delete_blob(:'b2', true);
SELECT storage_used, blob_count FROM t.users_now WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
SELECT memmie.delete_blob(:'b1', true);
SELECT storage_used, blob_count FROM t.users_now WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
SELECT count(*) AS user_refs FROM memmie.user_content_refs WHERE user_id = '00000000-0000-0000-0000-0000000000c1';

-- Quotas: MM002, and nothing of the refused change is left behind.
UPDATE memmie.user_contexts SET quota_limits = '{"max_blobs": 2, "max_storage_bytes": 3000, "max_content_size": 2000}'
WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c1', t.noise(1000, 3), 'application/octet-stream')).id AS q1 \gset
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000c1', t.noise(2500, 4), 'application/octet-stream')$$) AS too_big_content;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c1', t.noise(1500, 5), 'application/octet-stream')).version;
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000c1', 'x', 'text/plain')$$) AS too_many_blobs;
SELECT t.err(format($$SELECT memmie.update_content(%L, t.noise(1000, 6))$$, :'q1')) AS too_much_storage;
SELECT storage_used, blob_count FROM t.users_now WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
SELECT count(*) AS blobs, (SELECT count(*) FROM memmie.content_storage WHERE content_hash IN
       (memmie.sha256(t.noise(2500, 4)), memmie.sha256(t.noise(1000, 6)), memmie.sha256('x'))) AS stray_contents
FROM memmie.blobs WHERE user_id = '00000000-0000-0000-0000-0000000000c1';
-- Undeleting counts against max_blobs too.
SELECT memmie.delete_blob(:'q1');
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c1', 'y', 'text/plain')).version;
SELECT t.err(format($$SELECT memmie.revert_blob(%L, 1)$$, :'q1')) AS undelete_over_quota;
SELECT t.err(format($$SELECT memmie.undelete_blob(%L)$$, :'q1')) AS undelete_blob_over_quota;
-- Quota values must be non-negative numbers, of the quotas there are.
SELECT t.err($$UPDATE memmie.user_contexts SET quota_limits = '{"max_blobs": "lots"}' WHERE user_id = '00000000-0000-0000-0000-0000000000c1'$$);
SELECT t.err($$UPDATE memmie.user_contexts SET quota_limits = '{"max_blob": 5}' WHERE user_id = '00000000-0000-0000-0000-0000000000c1'$$) AS unknown_key_in_table;
ROLLBACK;

-- set_quota: each key given replaces that quota, null removes it, the rest stay; the user's row
-- is made when it has none; the counts returned are the user's as the transaction sees them.
BEGIN;
SELECT quota_limits, storage_used, blob_count FROM memmie.set_quota('00000000-0000-0000-0000-0000000000c4', '{"max_blobs": 2, "max_storage_bytes": 5000}');
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c4', t.noise(1000, 7), 'application/octet-stream')).version;
SELECT quota_limits, storage_used, blob_count FROM memmie.set_quota('00000000-0000-0000-0000-0000000000c4', '{"max_content_size": 100000, "max_storage_bytes": null}');
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c4', t.noise(1000, 8), 'application/octet-stream')).version;
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000c4', 'three', 'text/plain')$$) AS over_max_blobs;
-- lowered under what is used: kept; the next write over it fails, nothing stored is removed
SELECT quota_limits, blob_count FROM memmie.set_quota('00000000-0000-0000-0000-0000000000c4', '{"max_blobs": 1}');
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000c4', 'more', 'text/plain')$$) AS under_lowered_quota;
SELECT quota_limits FROM memmie.set_quota('00000000-0000-0000-0000-0000000000c4', '{}') AS unchanged_by_empty;
-- Errors: 22023, and the quotas stay as they were.
SELECT t.err($$SELECT memmie.set_quota('00000000-0000-0000-0000-0000000000c4', '{"max_blob": 5}')$$) AS unknown_key;
SELECT t.err($$SELECT memmie.set_quota('00000000-0000-0000-0000-0000000000c4', '{"max_blobs": 5, "storage": 1, "max_storage": 2}')$$) AS unknown_keys;
SELECT t.err($$SELECT memmie.set_quota('00000000-0000-0000-0000-0000000000c4', '{"max_blobs": -1}')$$) AS negative;
SELECT t.err($$SELECT memmie.set_quota('00000000-0000-0000-0000-0000000000c4', '{"max_blobs": 1.5}')$$) AS fractional;
SELECT t.err($$SELECT memmie.set_quota('00000000-0000-0000-0000-0000000000c4', '{"max_blobs": "10"}')$$) AS a_string;
SELECT t.err($$SELECT memmie.set_quota('00000000-0000-0000-0000-0000000000c4', '{"max_blobs": 1e30}')$$) AS too_large;
SELECT t.err($$SELECT memmie.set_quota('00000000-0000-0000-0000-0000000000c4', '[1]')$$) AS not_an_object;
SELECT t.err($$SELECT memmie.set_quota('00000000-0000-0000-0000-0000000000c4', NULL)$$) AS null_limits;
SELECT t.err($$SELECT memmie.set_quota(NULL, '{}')$$) AS null_user;
SELECT quota_limits FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000c4';
ROLLBACK;

-- Counts written at commit (src/refcount.rs): a rolled-back savepoint drops its pending counts;
-- one released keeps them; what commits is exact.
SELECT memmie.set_quota('00000000-0000-0000-0000-0000000000c5', '{}') IS NOT NULL AS made;
BEGIN;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c5', t.noise(1000, 9), 'application/octet-stream')).version;
SAVEPOINT s;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c5', t.noise(700, 10), 'application/octet-stream')).version;
SELECT blob_count, storage_used, stored_blob_count, stored_storage_used FROM t.users_now WHERE user_id = '00000000-0000-0000-0000-0000000000c5';
ROLLBACK TO SAVEPOINT s;
SELECT blob_count, storage_used FROM t.users_now WHERE user_id = '00000000-0000-0000-0000-0000000000c5';
SAVEPOINT s2;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c5', t.noise(300, 11), 'application/octet-stream')).version;
RELEASE SAVEPOINT s2;
-- a quota check inside the transaction counts what it wrote: over max_blobs = 2 now
SELECT memmie.set_quota('00000000-0000-0000-0000-0000000000c5', '{"max_blobs": 2}') IS NOT NULL AS limited;
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000c5', 'third', 'text/plain')$$) AS counted_in_transaction;
COMMIT;
SELECT blob_count, storage_used FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000c5';
SELECT count(*) AS pending_after_commit FROM memmie._pending_user_counts();
SELECT check_name, ok, detail FROM memmie.check() WHERE check_name = 'user_accounting';
SELECT count(memmie.delete_blob(id, hard => true)) FROM memmie.blobs WHERE user_id = '00000000-0000-0000-0000-0000000000c5';
SELECT blob_count, storage_used FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000c5';
DELETE FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000c5';

-- Long histories: replay from kept states (blob_snapshots), squash_history, keep_versions.
-- A state is kept every 4 versions here, so that short histories have some.
SET memmie.snapshot_interval = 4;
BEGIN;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000e1', convert_to('{"n": 1}', 'UTF8'),
        'application/json', '{"title": "note"}')).id AS n \gset
SELECT count(memmie.apply_delta(:'n', format('[{"op": "replace", "path": "/content/n", "value": %s}]', i)::jsonb))
FROM generate_series(2, 10) i;
-- versions 4 and 8 are kept whole, in the transaction that wrote them
SELECT version, state - 'content_hash' AS state FROM memmie.blob_snapshots WHERE blob_id = :'n' ORDER BY version;
-- every version replayed from the nearest kept state is its stored state, and the replay from
-- version 1 (as without kept states)
SELECT v.version,
       memmie.blob_state(:'n', v.version) = memmie._make_state(v.content_hash, v.content_size, v.content_type,
                                                                v.metadata, v.tags, v.deleted) AS stored,
       memmie.blob_state(:'n', v.version) = (SELECT memmie._replay(array_agg(d.patch::text ORDER BY d.to_version))::jsonb
                                              FROM memmie.deltas d
                                              WHERE d.blob_id = :'n' AND d.to_version <= v.version) AS from_null
FROM memmie.blob_versions v WHERE v.blob_id = :'n' ORDER BY v.version;
-- revert, delete and undelete are versions like any other: 12 (the delete) is kept, deleted
SELECT version FROM memmie.revert_blob(:'n', 2);
SELECT memmie.delete_blob(:'n');
SELECT version, state -> 'deleted' AS deleted, state -> 'content' AS content
FROM memmie.blob_snapshots WHERE blob_id = :'n' AND version = 12;
SELECT version FROM memmie.undelete_blob(:'n');
SELECT memmie.blob_state(:'n', 12) -> 'deleted' AS v12_deleted, memmie.blob_state(:'n') -> 'content' AS head;
-- with no kept states (interval 0) nothing is kept, replay starts from version 1
SET LOCAL memmie.snapshot_interval = 0;
SELECT count(memmie.apply_delta(:'n', '[{"op": "add", "path": "/tags/-", "value": "x"}]')) FROM generate_series(1, 4);
SELECT max(version) AS last_kept FROM memmie.blob_snapshots WHERE blob_id = :'n';
SELECT memmie.blob_state(:'n') -> 'tags' AS tags;
SET LOCAL memmie.snapshot_interval = 4;
SELECT * FROM memmie.check() WHERE NOT ok;

-- check() compares every kept state with the replay
SAVEPOINT tamper;
UPDATE memmie.blob_snapshots SET state = state || '{"tags": ["tampered"]}' WHERE blob_id = :'n' AND version = 8;
SELECT check_name, ok, regexp_replace(detail, '[0-9a-f-]{36}', '<uuid>') AS detail
FROM memmie.check() WHERE check_name = 'replay';
ROLLBACK TO SAVEPOINT tamper;

-- squash_history: the errors
SELECT t.err($$SELECT memmie.squash_history('00000000-0000-0000-0000-00000000dead', 2)$$) AS unknown_blob;
SELECT t.err($$SELECT memmie.squash_history(NULL, 2)$$) AS null_blob;
SELECT t.err(format($$SELECT memmie.squash_history(%L, NULL)$$, :'n')) AS null_version;
SELECT t.err(format($$SELECT memmie.squash_history(%L, 0)$$, :'n')) AS version_zero;
SELECT t.err(format($$SELECT memmie.squash_history(%L, 18)$$, :'n')) AS past_the_head;
SELECT t.err(format($$SELECT memmie.squash_history(%L, 6, expected_version => 16)$$, :'n')) AS stale;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000e1', 'gone', 'text/plain')).id AS gone \gset
SELECT (memmie.apply_delta(:'gone', '[{"op": "add", "path": "/tags/-", "value": "a"}]')).to_version;
SELECT memmie.delete_blob(:'gone');
SELECT t.err(format($$SELECT memmie.squash_history(%L, 2)$$, :'gone')) AS deleted_blob;
SELECT count(*) AS versions_kept FROM memmie.blob_versions WHERE blob_id = :'gone';

-- The states before, and what references the contents of versions 1 to 5 ({"n": 1} .. {"n": 5};
-- version 11 reverted to version 2, so {"n": 2} is still used by versions 11 to 17)
CREATE TEMP TABLE before_squash AS
SELECT v.version, memmie.blob_state(:'n', v.version) AS state, v.content_hash
FROM memmie.blob_versions v WHERE v.blob_id = :'n';
SELECT u.storage_used AS storage_before FROM t.users_now u
WHERE u.user_id = '00000000-0000-0000-0000-0000000000e1' \gset

-- Squash the versions before 6 (five of them)
SELECT memmie.squash_history(:'n', 6, expected_version => 17) AS removed;
SELECT version FROM memmie.blobs WHERE id = :'n';
SELECT min(version), max(version), count(*) FROM memmie.blob_versions WHERE blob_id = :'n';
SELECT min(to_version), max(to_version), count(*) FROM memmie.deltas WHERE blob_id = :'n';
SELECT array_agg(version ORDER BY version) AS kept FROM memmie.blob_snapshots WHERE blob_id = :'n';
-- later versions are unchanged; removed ones are gone
SELECT bool_and(memmie.blob_state(:'n', b.version) = b.state) AS unchanged, count(*)
FROM before_squash b WHERE b.version >= 6;
SELECT t.err(format($$SELECT memmie.blob_state(%L, 5)$$, :'n')) AS state_5;
SELECT t.err(format($$SELECT memmie.blob_state(%L, 1)$$, :'n')) AS state_1;
SELECT t.err(format($$SELECT memmie.blob_content(%L, 3)$$, :'n')) AS content_3;
SELECT t.err(format($$SELECT memmie.revert_blob(%L, 2)$$, :'n')) AS revert_to_2;
-- contents only the removed versions used have no reference left ({"n": 2} keeps 11 to 17's)
SELECT b.version, c.reference_count
FROM before_squash b JOIN t.content_now c ON c.content_hash = b.content_hash
WHERE b.version < 6 ORDER BY b.version;
SELECT :storage_before - u.storage_used AS storage_released FROM t.users_now u
WHERE u.user_id = '00000000-0000-0000-0000-0000000000e1';
-- the event
SELECT event_type, payload - 'blob_id' AS payload FROM memmie.events
WHERE aggregate_id = :'n' AND event_type = 'blob.squashed';
-- history and replay go on from the new base
SELECT to_version, operation FROM memmie.blob_history(:'n') LIMIT 2;
SELECT to_version FROM memmie.apply_delta(:'n', '[{"op": "replace", "path": "/content/n", "value": 99}]');
SELECT memmie.blob_state(:'n') -> 'content' AS head;
-- squashing again before the base, or at it, removes nothing and records nothing
SELECT memmie.squash_history(:'n', 6) AS again, memmie.squash_history(:'n', 3) AS older;
SELECT count(*) AS squash_events FROM memmie.events WHERE aggregate_id = :'n' AND event_type = 'blob.squashed';
SELECT * FROM memmie.check() WHERE NOT ok;

-- Squash up to the head: only the head is left, kept whole
SELECT memmie.blob_state(:'n') AS head_before \gset
SELECT memmie.squash_history(:'n', 18) AS removed;
SELECT array_agg(version) AS versions FROM memmie.blob_versions WHERE blob_id = :'n';
SELECT array_agg(version) AS kept FROM memmie.blob_snapshots WHERE blob_id = :'n';
SELECT memmie.blob_state(:'n') = :'head_before'::jsonb AS head_unchanged;
SELECT to_version FROM memmie.apply_delta(:'n', '[{"op": "add", "path": "/metadata/done", "value": true}]');
SELECT memmie.blob_state(:'n') -> 'metadata' AS metadata, memmie.blob_state(:'n', 18) -> 'metadata' AS at_base;
SELECT * FROM memmie.check() WHERE NOT ok;

-- A kept base that is missing is reported by check()
SAVEPOINT base;
DELETE FROM memmie.blob_snapshots WHERE blob_id = :'n' AND version = 18;
SELECT check_name, ok, regexp_replace(detail, '[0-9a-f-]{36}', '<uuid>') AS detail
FROM memmie.check() WHERE check_name = 'replay';
ROLLBACK TO SAVEPOINT base;

-- A hard delete takes the kept states with the versions
SELECT memmie.delete_blob(:'n', hard => true);
SELECT count(*) AS kept_after_hard_delete FROM memmie.blob_snapshots WHERE blob_id = :'n';
ROLLBACK;

-- The content only removed versions used: reference_count 0, collected by gc_content once its
-- grace period has passed (reference counts are written at commit: t.content_now adds what this
-- transaction changed, as gc_content does)
BEGIN;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000e2', convert_to('history: first', 'UTF8'), 'text/plain')).id AS s \gset
SELECT memmie.sha256(convert_to('history: first', 'UTF8')) AS first_hash \gset
SELECT count(memmie.update_content(:'s', convert_to('history: ' || i, 'UTF8'))) FROM generate_series(2, 9) i;
SELECT memmie.squash_history(:'s', 5) AS removed;
SELECT reference_count FROM t.content_now WHERE content_hash = :'first_hash';
SELECT count(*) AS collected FROM memmie.gc_content('0 seconds') g WHERE g.content_hash = :'first_hash';
SELECT memmie.blob_state(:'s', 5) ->> 'content_size' AS size_5, convert_from(memmie.blob_content(:'s'), 'UTF8') AS head;
SELECT * FROM memmie.check() WHERE NOT ok;
ROLLBACK;

RESET memmie.snapshot_interval;
SELECT * FROM memmie.check() WHERE NOT ok;

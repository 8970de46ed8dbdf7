-- memmie.check(): all ok on data written through memmie's functions, and each check catches the
-- fault it is about. (Runs last: see tests/pg_regress/schedule.)
BEGIN;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000ac', convert_to('{"a": [1, 2]}', 'UTF8'), 'application/json')).id AS j \gset
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000ac', convert_to(repeat('text ', 100), 'UTF8'), 'text/plain', '{"title": "t"}')).id AS t \gset
SELECT (memmie.derive_blob(ARRAY[:'t'::uuid, :'j'::uuid], 'p', 'summary', 'short', 'text/plain')).id AS d \gset
SELECT (memmie.apply_delta(:'j', '[{"op": "add", "path": "/content/a/-", "value": 3}]')).to_version;
SELECT (memmie.update_content(:'t', 'new text')).version;
SELECT memmie.delete_blob(:'d');
SELECT (memmie.revert_blob(:'d', 1)).version;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000ad', convert_to(repeat('text ', 100), 'UTF8'), 'text/plain')).version;
SELECT check_name, ok FROM memmie.check();

SAVEPOINT s;
UPDATE memmie.content_storage SET reference_count = reference_count + 1 WHERE content_hash = memmie.sha256('short');
SELECT check_name FROM memmie.check() WHERE NOT ok;
ROLLBACK TO s;
UPDATE memmie.deltas SET patch = '[{"op": "add", "path": "/metadata/x", "value": 1}]' WHERE blob_id = :'j' AND to_version = 2;
SELECT check_name FROM memmie.check() WHERE NOT ok;
ROLLBACK TO s;
-- a delta that cannot be applied any more is a row of check(), not an error of check()
UPDATE memmie.deltas SET patch = '[{"op": "remove", "path": "/nowhere"}]' WHERE blob_id = :'j' AND to_version = 1;
SELECT check_name, regexp_replace(detail, '[0-9a-f-]{36}', '<uuid>') AS detail FROM memmie.check() WHERE NOT ok;
ROLLBACK TO s;
-- a missing delta: that version and the ones after it no longer replay to their states
DELETE FROM memmie.deltas WHERE blob_id = :'j' AND to_version = 1;
SELECT check_name, regexp_replace(detail, '[0-9a-f-]{36}', '<uuid>', 'g') AS detail FROM memmie.check()
WHERE NOT ok AND check_name = 'replay';
ROLLBACK TO s;
UPDATE memmie.blobs SET tags = '{x}' WHERE id = :'t';
SELECT check_name FROM memmie.check() WHERE NOT ok;
ROLLBACK TO s;
UPDATE memmie.content_storage SET content = 'tampered' WHERE content_hash = memmie.sha256('short');
SELECT check_name FROM memmie.check() WHERE NOT ok;
ROLLBACK TO s;
UPDATE memmie.user_contexts SET blob_count = blob_count + 1 WHERE user_id = '00000000-0000-0000-0000-0000000000ad';
SELECT check_name FROM memmie.check() WHERE NOT ok;
ROLLBACK TO s;
DELETE FROM memmie.blob_edges WHERE child_blob_id = :'d' AND parent_blob_id = :'t';
SELECT check_name FROM memmie.check() WHERE NOT ok;
ROLLBACK TO s;
INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, payload, created_at)
VALUES ('test', :'t', 'blob', '{}', '1999-01-01');
SELECT check_name, detail FROM memmie.check() WHERE NOT ok;
SELECT memmie.create_partitions('memmie.events', '1999-01-01', 1);
SELECT check_name FROM memmie.check() WHERE NOT ok;
ROLLBACK TO s;
ROLLBACK;

-- Whatever the other tests left behind in this database is consistent too.
SELECT check_name, ok FROM memmie.check();

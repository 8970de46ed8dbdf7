-- Malformed input: the documented SQLSTATE, a message naming the problem, nothing written.
BEGIN;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000e1', 'hello', 'text/plain')).id AS b \gset
SELECT count(*) AS blobs_before FROM memmie.blobs \gset
SELECT count(*) AS deltas_before FROM memmie.deltas \gset
SELECT count(*) AS events_before FROM memmie.events \gset

-- NULLs where a value is needed.
SELECT t.err($$SELECT memmie.create_blob(NULL, 'x', 'text/plain')$$);
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000e1', NULL, 'text/plain')$$);
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000e1', 'x', NULL)$$);
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000e1', 'x', 'text/plain', NULL)$$);
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000e1', 'x', 'text/plain', '{}', NULL)$$);
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000e1', 'x', 'text/plain', '{}', '{a,NULL}')$$);
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000e1', 'x', 'text/plain', created_by => NULL)$$);
SELECT t.err(format($$SELECT memmie.apply_delta(%L, NULL)$$, :'b'));
SELECT t.err($$SELECT memmie.apply_delta(NULL, '[]')$$);
SELECT t.err(format($$SELECT memmie.update_content(%L, NULL)$$, :'b'));
SELECT t.err(format($$SELECT memmie.revert_blob(%L, NULL)$$, :'b'));
SELECT t.err(format($$SELECT memmie.delete_blob(%L, NULL)$$, :'b'));
-- Wrong shapes and values.
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000e1', 'x', 'text/plain', '[1, 2]')$$);
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000e1', 'x', 'text/plain', '"str"')$$);
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000e1', 'x', 'plain')$$);
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000e1', 'x', repeat('x', 300) || '/b')$$);
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000e1', '{bad json', 'application/json')$$);
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000e1', '\xff'::bytea, 'application/json')$$);
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000e1', 'x', 'text/plain', created_by => '')$$);
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '{"op": "add"}')$$, :'b'));
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '42')$$, :'b'));
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '[{"op": "add", "path": "metadata/x", "value": 1}]')$$, :'b'));
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '[{"op": "remove", "path": "/metadata/missing"}]')$$, :'b'));
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '[{"op": "replace", "path": "/metadata", "value": []}]')$$, :'b'));
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '[{"op": "replace", "path": "/tags", "value": [1]}]')$$, :'b'));
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '[{"op": "replace", "path": "", "value": 1}]')$$, :'b'));
SELECT t.err(format($$SELECT memmie.apply_delta(%L, '[{"op": "add", "path": "/metadata/deep", "value": %s}]')$$,
             :'b', repeat('[', 1000) || repeat(']', 1000)));
SELECT t.err(format($$SELECT memmie.revert_blob(%L, 0)$$, :'b'));
SELECT t.err(format($$SELECT memmie.revert_blob(%L, 99)$$, :'b'));
SELECT t.err(format($$SELECT memmie.blob_state(%L, 99)$$, :'b'));
SELECT t.err(format($$SELECT memmie.blob_state(%L, -1)$$, :'b'));
SELECT t.err(format($$SELECT memmie.blob_content(%L, 99)$$, :'b'));
SELECT t.err($$SELECT memmie.blob_history('00000000-0000-0000-0000-000000000000')$$);
SELECT t.err($$SELECT memmie.update_content('00000000-0000-0000-0000-000000000000', 'x')$$);
SELECT t.err($$SELECT memmie.delete_blob('00000000-0000-0000-0000-000000000000')$$);
-- Oversized content.
SET memmie.max_content_size = '100B';
SELECT t.err(format($$SELECT memmie.update_content(%L, t.noise(200))$$, :'b'));
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000e9', t.noise(200), 'text/plain')$$);
RESET memmie.max_content_size;
-- A bad uuid is refused by PostgreSQL's own uuid input, before memmie runs.
SELECT t.err($$SELECT memmie.blob_state('not-a-uuid')$$);

-- Nothing was written by any of the failures above.
SELECT (SELECT count(*) FROM memmie.blobs) - :blobs_before AS new_blobs,
       (SELECT count(*) FROM memmie.deltas) - :deltas_before AS new_deltas,
       (SELECT count(*) FROM memmie.events) - :events_before AS new_events,
       (SELECT version FROM memmie.blobs WHERE id = :'b') AS version,
       (SELECT count(*) FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000e9') AS stray_user;
ROLLBACK;

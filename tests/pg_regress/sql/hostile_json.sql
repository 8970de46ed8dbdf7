-- Hostile JSON (security issue 12): every reproduction ends in its SQLSTATE, quickly, and the
-- backend survives. Each one crashed the server, ran past its timeout or was stored unreadable
-- before. Self-contained: runs alone or after the other files.
\set VERBOSITY sqlstate
\set ON_ERROR_ROLLBACK on
SET statement_timeout = '20s';
BEGIN;

-- 1. 20,000 levels built by add/move pairs (a SIGSEGV before): the walks check the stack.
SET LOCAL max_stack_depth = '1MB';
SELECT memmie.jsonb_patch('{"v": 1}', (
    SELECT jsonb_agg(x.op ORDER BY i, x.j) FROM generate_series(1, 20000) i,
    LATERAL (VALUES (1, '{"op": "add", "path": "/t", "value": []}'::jsonb),
                    (2, '{"op": "move", "from": "/v", "path": "/t/0"}'),
                    (3, '{"op": "move", "from": "/t", "path": "/v"}')) x(j, op)));
RESET max_stack_depth;
-- a few levels still work
SELECT memmie.jsonb_patch('{"v": 1}', (
    SELECT jsonb_agg(x.op ORDER BY i, x.j) FROM generate_series(1, 3) i,
    LATERAL (VALUES (1, '{"op": "add", "path": "/t", "value": []}'::jsonb),
                    (2, '{"op": "move", "from": "/v", "path": "/t/0"}'),
                    (3, '{"op": "move", "from": "/t", "path": "/v"}')) x(j, op))) AS nested;

-- 2. copy doubling: a 1 KiB document copied into itself 24 times (PANIC before). The document
-- may not grow beyond jsonb's limit (268435455 bytes): 54000, at the 18th copy.
SELECT memmie.jsonb_patch(jsonb_build_object('s', repeat('x', 1024)),
    (SELECT jsonb_agg(jsonb_build_object('op', 'copy', 'from', '', 'path', '/c' || n) ORDER BY n)
     FROM generate_series(0, 23) n));
-- apply_delta: the state may not grow beyond memmie.max_content_size.
SET LOCAL memmie.max_content_size = '1MB';
SELECT (memmie.create_blob('00000000-0000-0000-0000-00000000f001', convert_to('{"a": 1}', 'UTF8'),
        'application/json', jsonb_build_object('s', repeat('x', 1024)))).id AS j \gset
SELECT memmie.apply_delta(:'j',
    (SELECT jsonb_agg(jsonb_build_object('op', 'copy', 'from', '/metadata', 'path', '/metadata/c' || n) ORDER BY n)
     FROM generate_series(0, 23) n));
SELECT memmie.apply_delta(:'j',
    (SELECT jsonb_agg(jsonb_build_object('op', 'copy', 'from', '/content', 'path', '/content/c' || n) ORDER BY n)
     FROM generate_series(0, 23) n));
-- below the limit, copies work
SELECT (memmie.apply_delta(:'j', '[{"op": "copy", "from": "/metadata", "path": "/metadata/c"}]')).to_version;
RESET memmie.max_content_size;

-- 3. time: 100,000 adds (67 s before) and uniqueItems over 50,000 items (106 s before) finish
-- well inside a 5 s statement_timeout.
SET LOCAL statement_timeout = '5s';
SELECT (SELECT count(*) FROM jsonb_object_keys(memmie.jsonb_patch('{}',
    (SELECT jsonb_agg(jsonb_build_object('op', 'add', 'path', '/k' || n, 'value', n))
     FROM generate_series(1, 100000) n)))) AS keys_added;
SELECT jsonb_array_length(memmie.jsonb_patch('[]',
    (SELECT jsonb_agg(jsonb_build_object('op', 'add', 'path', '/0', 'value', n))
     FROM generate_series(1, 100000) n))) AS prepended;
SELECT memmie._validate_json('{"type": "array", "uniqueItems": true}',
    (SELECT jsonb_agg(jsonb_build_object('n', n, 'l', jsonb_build_array(n, n::text))) FROM generate_series(1, 50000) n),
    'outputs') AS unique_ok;
SELECT memmie._validate_json('{"type": "array", "uniqueItems": true}',
    (SELECT jsonb_agg(n % 49999) FROM generate_series(1, 50000) n), 'outputs');
-- numbers compare by value: 1 and 1.0 repeat each other
SELECT memmie._validate_json('{"uniqueItems": true}', '[{"a": [1]}, {"a": [1.0]}]', 'outputs');
RESET statement_timeout;

-- 4. accepted writes replay exactly: integers beyond 64 bits, and metadata nested deeper than a
-- JSON text memmie parses (both were 22023 on every blob_state before).
SELECT (memmie.create_blob('00000000-0000-0000-0000-00000000f001',
        convert_to('{"n": 100000000000000000000, "m": -340282366920938463463374607431768211457}', 'UTF8'),
        'application/json')).id AS big \gset
SELECT memmie.blob_state(:'big') -> 'content' AS content;
SELECT (memmie.apply_delta(:'big', '[{"op": "add", "path": "/metadata/n", "value": 123456789012345678901234567890}]')).to_version;
SELECT memmie.blob_state(:'big') -> 'metadata' AS metadata, memmie.blob_state(:'big', 1) -> 'metadata' AS metadata_v1;
SELECT memmie.blob_state(:'big') = memmie._head_state(b) AS replays_exactly FROM memmie.blobs b WHERE b.id = :'big';
-- metadata (or JSON content) that would nest the state deeper than 128 levels is refused at
-- write (22023): create_blob and update_content take it through SQL, not the patch engine
SELECT (repeat('{"d": ', 200) || '1' || repeat('}', 200))::jsonb AS deep \gset
SELECT memmie.create_blob('00000000-0000-0000-0000-00000000f001', convert_to('x', 'UTF8'),
        'text/plain', :'deep');
SELECT memmie.create_blob('00000000-0000-0000-0000-00000000f001',
        convert_to(repeat('[', 128) || repeat(']', 128), 'UTF8'), 'application/json');
-- up to the limit it is kept, replays exactly and can be patched
SELECT (repeat('{"d": ', 126) || '1' || repeat('}', 126))::jsonb AS deep \gset
SELECT (memmie.create_blob('00000000-0000-0000-0000-00000000f001', convert_to('x', 'UTF8'),
        'text/plain', :'deep')).id AS d \gset
SELECT memmie.blob_state(:'d') -> 'metadata' = :'deep'::jsonb AS deep_replays,
       memmie.blob_state(:'d') = memmie._head_state(b) AS replays_exactly FROM memmie.blobs b WHERE b.id = :'d';
SELECT (memmie.apply_delta(:'d', '[{"op": "add", "path": "/tags/-", "value": "x"}]')).to_version;
SELECT memmie.update_content(:'d', convert_to(repeat('[', 128) || repeat(']', 128), 'UTF8'), 'application/json');
-- a patch may not nest the state beyond memmie's limit (128 levels) either
SELECT memmie.apply_delta(:'big', (
    SELECT jsonb_agg(x.op ORDER BY i, x.j) FROM generate_series(1, 200) i,
    LATERAL (VALUES (1, '{"op": "add", "path": "/metadata/t", "value": []}'::jsonb),
                    (2, '{"op": "move", "from": "/metadata/n", "path": "/metadata/t/0"}'),
                    (3, '{"op": "move", "from": "/metadata/t", "path": "/metadata/n"}')) x(j, op)));

-- 5. errors carry their SQLSTATE and message only, reported by memmie: no DETAIL (where pgrx
-- put Rust backtraces) and no Rust location, also for a PostgreSQL ERROR raised inside memmie's
-- Rust code: here the statement_timeout that validation now honours (20,000 x 20,000 enum
-- comparisons, which ran to the end before).
\set VERBOSITY verbose
SELECT memmie.jsonb_patch('{}', '[{"op": "remove", "path": "/a"}]');
CREATE TEMP TABLE many AS SELECT jsonb_agg(n) AS a FROM generate_series(1, 20000) n;
SET LOCAL statement_timeout = '200ms';
SELECT memmie._validate_json(jsonb_build_object('items', jsonb_build_object('enum', a)), a, 'outputs') FROM many;
RESET statement_timeout;
\set VERBOSITY sqlstate
-- move from "-" (no element) is refused the same way by jsonb_patch and a blob state change
SELECT memmie.jsonb_patch('{"a": []}', '[{"op": "move", "from": "/a/-", "path": "/b"}]');
SELECT memmie._next_state('{"content_type": "text/plain", "metadata": {}, "tags": [], "a": []}',
                          '[{"op": "move", "from": "/a/-", "path": "/b"}]');
ROLLBACK;
\set ON_ERROR_ROLLBACK off
RESET statement_timeout;

-- RFC 6902 JSON Patch and diff.
SELECT memmie.jsonb_patch('{"a": {"b": [1, 2]}}',
    '[{"op": "add", "path": "/a/b/1", "value": 9},
      {"op": "remove", "path": "/a/b/0"},
      {"op": "add", "path": "/c", "value": null},
      {"op": "copy", "from": "/a", "path": "/d"},
      {"op": "move", "from": "/d/b", "path": "/e"},
      {"op": "test", "path": "/e", "value": [9, 2]}]') AS patched;
SELECT t.err($$SELECT memmie.jsonb_patch('{"a": {"b": [1, 2]}}', '[{"op": "replace", "path": "/c", "value": null}]')$$) AS replace_missing;
SELECT memmie.jsonb_patch('{"n": 1}', '[{"op": "replace", "path": "", "value": [1]}]') AS whole_doc;
SELECT memmie.jsonb_patch('null', '[]') AS empty_patch;
-- exact numbers survive
SELECT memmie.jsonb_patch('{"n": 12345678901234567890123.4500}', '[]') AS exact;

-- Errors: test failure is MM007, everything malformed is 22023.
SELECT t.err($$SELECT memmie.jsonb_patch('{"a": 1}', '[{"op": "test", "path": "/a", "value": 2}]')$$);
SELECT t.err($$SELECT memmie.jsonb_patch('{"a": 1}', '[{"op": "remove", "path": "/b"}]')$$);
SELECT t.err($$SELECT memmie.jsonb_patch('{"a": 1}', '[{"op": "remove", "path": "a"}]')$$);
SELECT t.err($$SELECT memmie.jsonb_patch('{"a": 1}', '[{"op": "jump", "path": "/a"}]')$$);
SELECT t.err($$SELECT memmie.jsonb_patch('{"a": 1}', '{"op": "remove", "path": "/a"}')$$);
SELECT t.err($$SELECT memmie.jsonb_patch('{"a": 1}', '[{"op": "add", "path": "/b"}]')$$);
SELECT t.err($$SELECT memmie.jsonb_patch('[1]', '[{"op": "add", "path": "/5", "value": 1}]')$$);
-- A deeply nested document (PostgreSQL accepts it) is patched where the patch reaches; reading
-- more than 128 levels of it is refused, not a crash.
SELECT t.err(format('SELECT memmie.jsonb_patch(%L, %L)', repeat('[', 1000) || repeat(']', 1000), '[]'));
SELECT t.err(format('SELECT memmie.jsonb_patch(%L, %L)', repeat('[', 1000) || repeat(']', 1000),
                    '[{"op": "add", "path": "/0/0/-", "value": 1}]'));
SELECT t.err(format('SELECT memmie.jsonb_patch(%L, %L)', repeat('[', 1000) || repeat(']', 1000),
                    '[{"op": "test", "path": "", "value": []}]'));
SELECT t.err(format('SELECT memmie.jsonb_patch(%L, %L)', '{}',
                    '[{"op": "add", "path": "/a", "value": ' || repeat('[', 1000) || repeat(']', 1000) || '}]'));
-- Untouched parts come back exactly; a raw scalar document works like any other.
SELECT memmie.jsonb_patch('{"keep": {"n": 1.50, "s": "x", "a": [1, {"b": null}]}, "edit": [1]}',
                          '[{"op": "add", "path": "/edit/-", "value": 2.0}]') AS untouched_exact;
SELECT memmie.jsonb_patch('"str"', '[{"op": "test", "path": "", "value": "str"}]') AS raw_scalar;
SELECT memmie.jsonb_patch(NULL, '[]') IS NULL AS strict_null;

-- Diff: patch(source, diff(source, target)) = target.
WITH pairs(s, t) AS (VALUES
    ('{"a": 1, "b": [1, 2, 3]}'::jsonb, '{"a": 2, "b": [1, 3], "c": {"d": null}}'::jsonb),
    ('null', '{"x": [1]}'),
    ('[1, 2, 3]', '"text"'),
    ('{"a/b": {"~": 1}}', '{"a/b": {"~": 2}}'))
SELECT memmie.jsonb_diff(s, t) AS diff, memmie.jsonb_patch(s, memmie.jsonb_diff(s, t)) = t AS round_trip
FROM pairs;
SELECT memmie.jsonb_diff('{"a": 1}', '{"a": 1}') AS no_change;

SELECT p.proname, p.provolatile, p.proisstrict, p.proparallel
FROM pg_proc p WHERE p.pronamespace = 'memmie'::regnamespace
  AND p.proname IN ('sha256', 'jsonb_patch', 'jsonb_diff') ORDER BY 1;

-- Patches that change nothing, and nested containers moved or copied to the root.
SELECT memmie.jsonb_patch('{"a": {"b": [1, 2.50]}}', '[{"op": "test", "path": "/a/b/1", "value": 2.50}]') AS tests_only;
SELECT memmie.jsonb_patch('{"a": {"b": [1, 2.50]}}', '[{"op": "move", "from": "/a", "path": ""}]') AS moved_to_root;
SELECT memmie.jsonb_patch('{"a": {"b": [1, 2.50]}}', '[{"op": "copy", "from": "/a/b", "path": ""}]') AS copied_to_root;
SELECT memmie.jsonb_patch('[[1], [2]]', '[{"op": "move", "from": "/1", "path": "/0/-"}]') AS nested_move;

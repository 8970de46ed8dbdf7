-- memmie.jsonb_patch vs an RFC 6902 implementation in PL/pgSQL written the way a user would
-- (jsonb_set / jsonb_insert / #- over a parsed pointer), 1 KiB and 100 KiB documents,
-- 1, 10 and 100 operations.
CREATE FUNCTION bench.ptr(p text) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p = '' THEN '{}'::text[]
           ELSE ARRAY(SELECT replace(replace(x, '~1', '/'), '~0', '~')
                      FROM unnest(string_to_array(substr(p, 2), '/')) WITH ORDINALITY u(x, i) ORDER BY i) END
$$;

CREATE FUNCTION bench.pl_add(doc jsonb, path text[], val jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    parent jsonb;
    n int := cardinality(path);
BEGIN
    IF n = 0 THEN
        RETURN val;
    END IF;
    parent := doc #> path[1:n - 1];
    IF parent IS NULL THEN
        RAISE EXCEPTION 'path % not found', path;
    END IF;
    IF jsonb_typeof(parent) = 'array' THEN
        IF path[n] = '-' THEN
            path[n] := jsonb_array_length(parent)::text;
        END IF;
        RETURN jsonb_insert(doc, path, val);
    END IF;
    RETURN jsonb_set(doc, path, val, true);
END
$$;

CREATE FUNCTION bench.plpgsql_patch(doc jsonb, patch jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    op   jsonb;
    path text[];
    src  text[];
    val  jsonb;
BEGIN
    FOR op IN SELECT * FROM jsonb_array_elements(patch) LOOP
        path := bench.ptr(op ->> 'path');
        CASE op ->> 'op'
        WHEN 'add' THEN
            doc := bench.pl_add(doc, path, op -> 'value');
        WHEN 'remove' THEN
            IF doc #> path IS NULL THEN RAISE EXCEPTION 'path % not found', path; END IF;
            doc := doc #- path;
        WHEN 'replace' THEN
            IF doc #> path IS NULL THEN RAISE EXCEPTION 'path % not found', path; END IF;
            doc := CASE WHEN cardinality(path) = 0 THEN op -> 'value'
                        ELSE jsonb_set(doc, path, op -> 'value', false) END;
        WHEN 'move' THEN
            src := bench.ptr(op ->> 'from');
            val := doc #> src;
            IF val IS NULL THEN RAISE EXCEPTION 'path % not found', src; END IF;
            doc := bench.pl_add(doc #- src, path, val);
        WHEN 'copy' THEN
            src := bench.ptr(op ->> 'from');
            val := doc #> src;
            IF val IS NULL THEN RAISE EXCEPTION 'path % not found', src; END IF;
            doc := bench.pl_add(doc, path, val);
        WHEN 'test' THEN
            IF doc #> path IS DISTINCT FROM op -> 'value' THEN RAISE EXCEPTION 'test failed at %', path; END IF;
        ELSE
            RAISE EXCEPTION 'unknown op %', op ->> 'op';
        END CASE;
    END LOOP;
    RETURN doc;
END
$$;

-- Documents: {"k0": {"a": 0, "b": "...", "c": [0, 1, 2]}, ...} of about 1 KiB and 100 KiB.
CREATE TABLE bench.docs (size text, keys int, doc jsonb);
INSERT INTO bench.docs
SELECT s.size, s.keys,
       (SELECT jsonb_object_agg('k' || i, jsonb_build_object('a', i, 'b', 'value number ' || i, 'c', jsonb_build_array(i, i + 1, i + 2)))
        FROM generate_series(0, s.keys - 1) i)
FROM (VALUES ('1 KiB', 20), ('100 KiB', 2000)) s(size, keys);
SELECT size, length(doc::text) AS bytes FROM bench.docs;

-- Patches: a mix of replace, add and test on keys spread over the document.
CREATE TABLE bench.patches (ops int, keys int, patch jsonb);
INSERT INTO bench.patches
SELECT n, k, (SELECT jsonb_agg(CASE j % 3
                WHEN 0 THEN jsonb_build_object('op', 'replace', 'path', '/k' || (j * 7 % k) || '/a', 'value', j)
                WHEN 1 THEN jsonb_build_object('op', 'add', 'path', '/k' || (j * 7 % k) || '/c/-', 'value', j)
                ELSE jsonb_build_object('op', 'test', 'path', '/k' || (j * 7 % k) || '/b', 'value', 'value number ' || (j * 7 % k)) END
                ORDER BY j)
              FROM generate_series(0, n - 1) j)
FROM (VALUES (1), (10), (100)) o(n), (VALUES (20), (2000)) d(k);

-- Both implementations must agree before we time them.
SELECT bool_and(memmie.jsonb_patch(d.doc, p.patch) = bench.plpgsql_patch(d.doc, p.patch)) AS implementations_agree
FROM bench.docs d JOIN bench.patches p ON p.keys = d.keys;

-- Each timed statement patches the same document `loops` times (rows of a join, so nothing is
-- constant-folded).
SELECT bench.record('jsonb_patch', v.variant, d.size || ', ' || p.ops || ' ops',
                    format('SELECT count(%s(d.doc, p.patch)) FROM bench.docs d JOIN bench.patches p ON p.keys = d.keys '
                           'CROSS JOIN generate_series(1, %s) WHERE d.size = %L AND p.ops = %s',
                           v.fn, l.loops, d.size, p.ops),
                    l.loops || ' calls')
FROM (VALUES ('memmie.jsonb_patch', 'memmie.jsonb_patch', 1), ('PL/pgSQL RFC 6902', 'bench.plpgsql_patch', 2)) v(variant, fn, vo),
     bench.docs d JOIN bench.patches p ON p.keys = d.keys,
     LATERAL (SELECT CASE WHEN d.size = '1 KiB' THEN 2000 ELSE 40 END AS loops) l
ORDER BY d.keys, p.ops, v.vo;

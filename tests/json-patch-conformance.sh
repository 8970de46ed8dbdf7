#!/usr/bin/env bash
# Runs every enabled case of the public JSON Patch conformance suite through memmie.jsonb_patch.
#   tests/json-patch-conformance.sh DIR PSQL [psql args...]
# Cases with "expected" must produce it; cases with "error" must raise 22023 or MM007.
# Prints "N passed, M failed"; exits non-zero on any failure, or when DIR is missing.
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
dir=$1; shift
if [ ! -f "$dir/tests.json" ] || [ ! -f "$dir/spec_tests.json" ]; then
    echo "!!! JSON Patch conformance cases not found in $dir: NOT RUN !!!" >&2
    exit 1
fi
"$@" -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS memmie_conformance" \
    -c "CREATE DATABASE memmie_conformance"
{
    echo "CREATE EXTENSION memmie;"
    for f in tests.json spec_tests.json; do
        # dollar-quote the file; the tag cannot occur in it
        printf 'CREATE TEMP TABLE IF NOT EXISTS suite (file text, cases jsonb);\n'
        printf "INSERT INTO suite VALUES ('%s', \$memmie_json\$%s\$memmie_json\$);\n" "$f" "$(cat "$dir/$f")"
    done
    cat <<'SQL'
CREATE TEMP TABLE results (file text, idx int, comment text, ok boolean, detail text);
DO $$
DECLARE
    c record;
    got jsonb;
BEGIN
    FOR c IN
        SELECT s.file, e.idx, e.tc FROM suite s,
               jsonb_array_elements(s.cases) WITH ORDINALITY AS e(tc, idx)
        WHERE NOT coalesce((e.tc ->> 'disabled')::boolean, false)
          AND (e.tc ? 'expected' OR e.tc ? 'error')
    LOOP
        BEGIN
            got := memmie.jsonb_patch(c.tc -> 'doc', c.tc -> 'patch');
            IF c.tc ? 'error' THEN
                INSERT INTO results VALUES (c.file, c.idx, c.tc ->> 'comment', false,
                    'expected error "' || (c.tc ->> 'error') || '", got ' || got::text);
            ELSIF got = c.tc -> 'expected' THEN
                INSERT INTO results VALUES (c.file, c.idx, c.tc ->> 'comment', true, NULL);
            ELSE
                INSERT INTO results VALUES (c.file, c.idx, c.tc ->> 'comment', false,
                    'expected ' || (c.tc -> 'expected')::text || ', got ' || got::text);
            END IF;
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO results VALUES (c.file, c.idx, c.tc ->> 'comment',
                c.tc ? 'error' AND SQLSTATE IN ('22023', 'MM007'),
                SQLSTATE || ': ' || SQLERRM);
        END;
    END LOOP;
END
$$;
\pset format unaligned
\pset tuples_only on
SELECT 'FAIL ' || file || ' #' || idx || ' (' || coalesce(comment, '') || '): ' || detail
FROM results WHERE NOT ok ORDER BY file, idx;
SELECT count(*) FILTER (WHERE ok) || ' passed, ' || count(*) FILTER (WHERE NOT ok) || ' failed'
FROM results;
SQL
} > "${TMPDIR:-/tmp}/memmie-conformance.$$.sql"
out=$("$@" -q -v ON_ERROR_STOP=1 -d memmie_conformance -f "${TMPDIR:-/tmp}/memmie-conformance.$$.sql")
rm -f "${TMPDIR:-/tmp}/memmie-conformance.$$.sql"
"$@" -q -d postgres -c "DROP DATABASE IF EXISTS memmie_conformance" || true
echo "$out"
echo "$out" | tail -1 | grep -q ' passed, 0 failed$'

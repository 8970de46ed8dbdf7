#!/usr/bin/env bash
# Backup test: fill a database through memmie's functions (blobs, versions, DAG, providers,
# processing, jobs, event positions, partitions made by ensure_partitions / create_partitions
# with rows moved into them out of DEFAULT),
# dump it with pg_dump (custom format, restored by pg_restore; plain format, restored by psql),
# and check that each restored database has every row, partition and count of the original,
# that check() is all ok, and that memmie keeps working in it.
#   tests/dump/dump.sh PSQL [psql args...]      (pg_dump / pg_restore are taken beside PSQL)
# Prints "ok - ..." / "not ok - ..." per check and "N passed, M failed"; exits non-zero on failure.

set -uo pipefail
export PGOPTIONS="-c client_min_messages=warning"
bindir=$(dirname "$1")
PSQL=("$@" -X -q -v ON_ERROR_STOP=1 -At)
conn=("${@:2}")
passed=0; failed=0
tmp=$(mktemp -d); chmod 755 "$tmp"; trap 'rm -rf "$tmp"' EXIT
result() {   # result NAME EXPECTED-FILE GOT-FILE
    if diff -u "$2" "$3" >"$tmp/diff"; then
        echo "ok - $1"; passed=$((passed + 1))
    else
        echo "not ok - $1"; head -40 "$tmp/diff"; failed=$((failed + 1))
    fi
}

for db in memmie_dump_src memmie_dump_custom memmie_dump_plain; do
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" || exit 1
done
"${PSQL[@]}" -d postgres -o /dev/null <<'SQL' || exit 1
DO $$ BEGIN CREATE ROLE memmie_dump_app; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
DO $$ BEGIN CREATE ROLE memmie_dump_worker; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
SQL
"${PSQL[@]}" -d memmie_dump_src -o /dev/null <<'SQL' || { echo "not ok - filling the source database"; echo "0 passed, 1 failed"; exit 1; }
CREATE EXTENSION memmie;
SELECT memmie.grant_app('memmie_dump_app'), memmie.grant_worker('memmie_dump_worker');
GRANT USAGE ON SCHEMA public TO memmie_dump_app;
SELECT memmie.ensure_partitions(2);
CREATE TABLE public.ids (name text PRIMARY KEY, id uuid);
INSERT INTO public.ids SELECT 'doc', (memmie.create_blob('00000000-0000-0000-0000-0000000000b1', convert_to(repeat('some words ', 200), 'UTF8'), 'text/plain', '{"title": "Doc"}', '{a}')).id;
INSERT INTO public.ids SELECT 'json', (memmie.create_blob('00000000-0000-0000-0000-0000000000b1', '{"n": 1}', 'application/json')).id;
INSERT INTO public.ids SELECT 'other', (memmie.create_blob('00000000-0000-0000-0000-0000000000b2', convert_to(repeat('some words ', 200), 'UTF8'), 'text/plain')).id;
INSERT INTO public.ids SELECT 'gone', (memmie.create_blob('00000000-0000-0000-0000-0000000000b2', 'gone', 'text/plain')).id;
SELECT memmie.apply_delta((SELECT id FROM public.ids WHERE name = 'json'), '[{"op": "replace", "path": "/content/n", "value": 2}]');
SELECT memmie.update_content((SELECT id FROM public.ids WHERE name = 'doc'), 'new words');
SELECT memmie.revert_blob((SELECT id FROM public.ids WHERE name = 'doc'), 1);
SELECT memmie.delete_blob((SELECT id FROM public.ids WHERE name = 'gone'));
-- a long, squashed history: kept states (blob_snapshots) at 16 and at the base, 5
INSERT INTO public.ids SELECT 'long', (memmie.create_blob('00000000-0000-0000-0000-0000000000b1', '{"n": 1}', 'application/json')).id;
SELECT count(memmie.apply_delta((SELECT id FROM public.ids WHERE name = 'long'), format('[{"op": "replace", "path": "/content/n", "value": %s}]', i)::jsonb)) FROM generate_series(2, 20) i;
SELECT memmie.squash_history((SELECT id FROM public.ids WHERE name = 'long'), 5);
SELECT memmie.register_provider('{"id": "p", "name": "P", "version": "1", "trigger_events": ["blob.created"], "supported_types": ["text/*"]}');
SELECT memmie.register_provider('{"id": "p", "name": "P", "version": "2", "trigger_events": ["blob.created", "blob.updated"], "supported_types": ["text/*"]}');
SELECT memmie.dispatch_events(1000);
SELECT memmie.claim_jobs('w', 1, job_types => ARRAY['memmie.process']);
SELECT memmie.complete_processing(p.id, 'w', '{"children": [{"content": "derived", "content_type": "text/plain", "transform_type": "summary"}], "patch": [{"op": "add", "path": "/metadata/seen", "value": true}]}')
FROM memmie.provider_processing p WHERE p.status = 'processing';
INSERT INTO public.ids SELECT 'merged', (memmie.derive_blob(ARRAY[(SELECT id FROM public.ids WHERE name = 'doc'), (SELECT id FROM public.ids WHERE name = 'json')], 'merger', 'merge', 'merged', 'text/plain')).id;
SELECT memmie.add_edge((SELECT id FROM public.ids WHERE name = 'json'), (SELECT id FROM public.ids WHERE name = 'doc'), 'linker', 'cites');
SELECT memmie.enqueue_job('email', '00000000-0000-0000-0000-0000000000b1', '{"to": "x"}', job_id => 'job-1');
SELECT memmie.events_since(0, 5);
-- rows waiting in DEFAULT, then partitions for them
INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, payload, created_at)
VALUES ('test', '00000000-0000-0000-0000-0000000000b1', 'blob', '{}', '2031-06-15 12:00+00');
SELECT memmie.create_partitions('memmie.events', '2031-06-14', 3);
SELECT memmie.create_partitions('memmie.deltas', '2031-06-01', 2);
SQL
"${PSQL[@]}" -d memmie_dump_src -o /dev/null -c "GRANT SELECT ON public.ids TO memmie_dump_app" || exit 1
grep -q 'events_2031_06_15' <("${PSQL[@]}" -d memmie_dump_src -c "SELECT relname FROM pg_class WHERE relname LIKE 'events_2031%'") \
    || { echo "not ok - the source has partitions made after install"; failed=$((failed + 1)); }

snapshot() {   # every table's rows (and partition lists, sequences, check())
    "${PSQL[@]}" -d "$1" <<'SQL'
SELECT format('%s %s', c.oid::regclass, pg_get_expr(c.relpartbound, c.oid))
FROM pg_class c WHERE c.relnamespace = 'memmie'::regnamespace AND c.relispartition ORDER BY 1;
SELECT 'event_position_seq', last_value FROM memmie.event_position_seq;
DO $$
DECLARE t regclass;
BEGIN
    CREATE TEMP TABLE snap (tbl text, rows bigint, digest text);
    FOR t IN SELECT c.oid::regclass FROM pg_class c
             WHERE c.relnamespace IN ('memmie'::regnamespace, 'public'::regnamespace) AND c.relkind IN ('r', 'p')
             ORDER BY 1::text
    LOOP
        EXECUTE format($q$INSERT INTO snap SELECT %L, count(*), md5(string_agg(x::text, '|' ORDER BY x::text))
                         FROM (SELECT to_jsonb(r) - 'last_accessed' AS x FROM %s r) s$q$, t::text, t);
    END LOOP;
END $$;
SELECT tbl, rows, digest FROM snap ORDER BY tbl;
SELECT check_name, ok FROM memmie.check();
SQL
}
snapshot memmie_dump_src >"$tmp/src" || exit 1

"$bindir/pg_dump" "${conn[@]}" -Fc -f "$tmp/custom.dump" memmie_dump_src || exit 1
"$bindir/pg_restore" "${conn[@]}" --exit-on-error -d memmie_dump_custom "$tmp/custom.dump" 2>"$tmp/restore.err"
status=$?
if [ $status -ne 0 ]; then echo "not ok - pg_restore of the custom-format dump"; cat "$tmp/restore.err"; failed=$((failed + 1))
else
    snapshot memmie_dump_custom >"$tmp/custom"
    result "pg_dump -Fc | pg_restore: every row, partition and count equal, check() all ok ($(grep -c '|' "$tmp/src") lines)" "$tmp/src" "$tmp/custom"
fi

"$bindir/pg_dump" "${conn[@]}" -Fp -f "$tmp/plain.sql" memmie_dump_src || exit 1
"${PSQL[@]}" -d memmie_dump_plain -o /dev/null -f "$tmp/plain.sql" 2>"$tmp/plain.err"
status=$?
if [ $status -ne 0 ]; then echo "not ok - psql restore of the plain dump"; cat "$tmp/plain.err"; failed=$((failed + 1))
else
    snapshot memmie_dump_plain >"$tmp/plain"
    result "pg_dump (plain) | psql: every row, partition and count equal, check() all ok" "$tmp/src" "$tmp/plain"
fi

# The access levels come back: the grantees, their privileges, the row-level security policies,
# and a role of the app level bound to a user sees that user's rows only.
access() {
    "${PSQL[@]}" -d "$1" <<'SQL'
SELECT role_name, level FROM memmie.grantees ORDER BY 1, 2;
SELECT r, has_function_privilege(r, 'memmie.create_blob(uuid, bytea, text, jsonb, text[], uuid, text)', 'EXECUTE'),
       has_function_privilege(r, 'memmie.claim_jobs(text, integer, interval, text[])', 'EXECUTE'),
       has_table_privilege(r, 'memmie.blobs', 'SELECT'), has_table_privilege(r, 'memmie.blobs', 'INSERT,UPDATE,DELETE')
FROM unnest(ARRAY['memmie_dump_app', 'memmie_dump_worker']) r ORDER BY 1;
SELECT tablename, policyname FROM pg_policies WHERE schemaname = 'memmie' ORDER BY 1, 2;
SET ROLE memmie_dump_app;
SET memmie.user_id = '00000000-0000-0000-0000-0000000000b1';
SELECT 'b1 sees', count(*), count(*) FILTER (WHERE user_id <> memmie.current_user_id()) FROM memmie.blobs;
SELECT 'b1 finds', count(*) FROM memmie.find_blobs('00000000-0000-0000-0000-0000000000b1');
SELECT 'b2''s blob', count(*) FROM memmie.blobs WHERE id = (SELECT id FROM public.ids WHERE name = 'other');
RESET memmie.user_id;
RESET ROLE;
SQL
}
access memmie_dump_src >"$tmp/access.src" 2>&1
if ! grep -q "^b1 sees|[1-9][0-9]*|0$" "$tmp/access.src"; then
    echo "not ok - the source's app role sees its user's rows only"; cat "$tmp/access.src"; failed=$((failed + 1))
fi
for db in memmie_dump_custom memmie_dump_plain; do
    access $db >"$tmp/access.$db" 2>&1
    result "$db: grantees, their privileges, the policies and one user's view as the source's" "$tmp/access.src" "$tmp/access.$db"
done

# memmie keeps working in the restored database
cat >"$tmp/expected.after" <<'TXT'
2
ok
TXT
"${PSQL[@]}" -d memmie_dump_custom >"$tmp/after" 2>&1 <<'SQL'
SELECT (memmie.apply_delta((SELECT id FROM public.ids WHERE name = 'json'), '[{"op": "replace", "path": "/content/n", "value": 3}]')).to_version - 1;
SELECT CASE WHEN bool_and(ok) THEN 'ok' ELSE string_agg(check_name, ',') END FROM memmie.check();
SQL
result "memmie keeps working after the restore" "$tmp/expected.after" "$tmp/after"

for db in memmie_dump_src memmie_dump_custom memmie_dump_plain; do "${PSQL[@]}" -d postgres -c "DROP DATABASE $db"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

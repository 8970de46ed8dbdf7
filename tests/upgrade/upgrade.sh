#!/usr/bin/env bash
# Upgrade test: install memmie 0.1.0 (tests/upgrade/memmie--0.1.0.sql, the script 0.1.0 shipped,
# which must be in the extension directory), fill it through the 0.1.0 API, run
# ALTER EXTENSION memmie UPDATE, and check that
#   - the data is unchanged (every blob's replayed state, counts, reference counts, storage),
#   - the schema equals a fresh install of the current version, object by object,
#   - the new functions work on the old data.
#   tests/upgrade/upgrade.sh PSQL [psql args...]
# Prints "ok - ..." / "not ok - ..." per check and "N passed, M failed"; exits non-zero on failure.
set -uo pipefail
export PGOPTIONS="-c client_min_messages=warning"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PSQL=("$@" -X -q -v ON_ERROR_STOP=1 -At)
passed=0; failed=0
check() {   # check NAME: compares stdin's two halves given as files $2 and $3
    if diff -u "$2" "$3" >"$tmp/diff"; then
        echo "ok - $1"; passed=$((passed + 1))
    else
        echo "not ok - $1"; head -60 "$tmp/diff"; failed=$((failed + 1))
    fi
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

for db in memmie_upgrade memmie_fresh; do
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" || exit 1
done
"${PSQL[@]}" -d memmie_fresh -c "CREATE EXTENSION memmie" || exit 1
"${PSQL[@]}" -d memmie_upgrade -c "CREATE EXTENSION memmie VERSION '0.1.0'" || exit 1

# Data written through the 0.1.0 API.
"${PSQL[@]}" -d memmie_upgrade -o /dev/null <<'SQL' || exit 1
CREATE TABLE public.ids (name text PRIMARY KEY, id uuid);
INSERT INTO public.ids SELECT 'doc', (memmie.create_blob('00000000-0000-0000-0000-00000000aa01', convert_to(repeat('some words ', 50), 'UTF8'), 'text/plain', '{"title": "Doc"}', '{a}')).id;
INSERT INTO public.ids SELECT 'json', (memmie.create_blob('00000000-0000-0000-0000-00000000aa01', '{"n": 1}', 'application/json')).id;
INSERT INTO public.ids SELECT 'child', (memmie.create_blob('00000000-0000-0000-0000-00000000aa01', 'child', 'text/plain', parent_blob_id => (SELECT id FROM public.ids WHERE name = 'doc'))).id;
INSERT INTO public.ids SELECT 'gone', (memmie.create_blob('00000000-0000-0000-0000-00000000aa02', 'gone', 'text/plain')).id;
SELECT memmie.apply_delta((SELECT id FROM public.ids WHERE name = 'json'), '[{"op": "replace", "path": "/content/n", "value": 2}]');
SELECT memmie.update_content((SELECT id FROM public.ids WHERE name = 'doc'), 'new words');
SELECT memmie.delete_blob((SELECT id FROM public.ids WHERE name = 'gone'));
SELECT memmie.revert_blob((SELECT id FROM public.ids WHERE name = 'doc'), 1);
SQL

snapshot_data() {
    "${PSQL[@]}" -d memmie_upgrade <<'SQL'
SELECT i.name, b.version, memmie.blob_state(b.id, v.version)::text
FROM public.ids i JOIN memmie.blobs b ON b.id = i.id JOIN memmie.blob_versions v ON v.blob_id = b.id ORDER BY 1, v.version;
SELECT content_hash, reference_count, original_size FROM memmie.content_storage ORDER BY 1;
SELECT user_id, storage_used, blob_count FROM memmie.user_contexts ORDER BY 1;
SELECT count(*) FROM memmie.deltas; SELECT count(*) FROM memmie.events; SELECT count(*) FROM memmie.blob_edges;
SQL
}
snapshot_data >"$tmp/data.before" || exit 1
"${PSQL[@]}" -d memmie_upgrade -c "ALTER EXTENSION memmie UPDATE" || { echo "not ok - ALTER EXTENSION memmie UPDATE"; echo "0 passed, 1 failed"; exit 1; }

"${PSQL[@]}" -d memmie_upgrade -c "SELECT extversion FROM pg_extension WHERE extname = 'memmie'" >"$tmp/v.upgraded"
"${PSQL[@]}" -d memmie_fresh -c "SELECT extversion FROM pg_extension WHERE extname = 'memmie'" >"$tmp/v.fresh"
check "the upgraded version is the current one ($(cat "$tmp/v.fresh"))" "$tmp/v.fresh" "$tmp/v.upgraded"

snapshot_data >"$tmp/data.after"
check "data unchanged by the upgrade (states of every version, refcounts, storage, counts)" "$tmp/data.before" "$tmp/data.after"

for db in memmie_upgrade memmie_fresh; do
    "${PSQL[@]}" -d "$db" -f "$here/catalog.sql" >"$tmp/catalog.$db" || exit 1
done
check "schema after upgrade equals a fresh install ($(wc -l <"$tmp/catalog.memmie_fresh") objects)" \
    "$tmp/catalog.memmie_fresh" "$tmp/catalog.memmie_upgrade"

# The partitions 0.1.0 made at install: indexed like new ones, no longer extension members.
cat >"$tmp/expected.parts" <<'TXT'
dated partitions|4
without a primary key|0
with fewer indexes than a new one|0
still extension members|0
TXT
"${PSQL[@]}" -d memmie_upgrade >"$tmp/got.parts" 2>&1 <<'SQL'
CREATE TEMP VIEW parts AS
SELECT c.oid, c.relname, p.relname AS parent,
       (SELECT count(*) FROM pg_index x WHERE x.indrelid = c.oid) AS indexes,
       EXISTS (SELECT FROM pg_index x WHERE x.indrelid = c.oid AND x.indisprimary) AS has_pkey
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
WHERE p.oid IN ('memmie.deltas'::regclass, 'memmie.events'::regclass) AND c.relname ~ '_[0-9]';
SELECT 'dated partitions', count(*) FROM parts;
SELECT 'without a primary key', count(*) FROM parts WHERE NOT has_pkey;
SELECT 'with fewer indexes than a new one', count(*) FROM parts
WHERE indexes < CASE parent WHEN 'deltas' THEN 9 ELSE 7 END;
SELECT 'still extension members', count(*) FROM parts p
WHERE EXISTS (SELECT FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = p.oid AND d.deptype = 'e');
SQL
check "partitions made by 0.1.0: indexed per partition, no longer extension members" "$tmp/expected.parts" "$tmp/got.parts"

# The new functions on the old data.
cat >"$tmp/expected.new" <<'TXT'
events before the upgrade are in the feed|t
old blob.created events dispatched|t
derive_blob from an old blob|1
old parent edge traversed|t
claimed|1
completed|1
TXT
"${PSQL[@]}" -d memmie_upgrade >"$tmp/got.new" 2>&1 <<'SQL'
SELECT 'events before the upgrade are in the feed', count(*) = (SELECT count(*) FROM memmie.events) FROM memmie.events_since(0, 1000);
SELECT id FROM memmie.register_provider('{"id": "p", "name": "P", "version": "1", "trigger_events": ["blob.created"], "supported_types": ["text/plain"]}') \g /dev/null
-- of the old blob.created events only 'child' matches: doc and json moved on or do not match, gone is deleted
SELECT memmie.dispatch_events(1000) \g /dev/null
SELECT 'old blob.created events dispatched', count(*) = 1 FROM memmie.provider_processing;
SELECT 'derive_blob from an old blob', (memmie.derive_blob(ARRAY[(SELECT id FROM public.ids WHERE name = 'doc')], 'p', 't', 'x', 'text/plain')).version;
SELECT 'old parent edge traversed', (SELECT id FROM public.ids WHERE name = 'child') IN (SELECT blob_id FROM memmie.descendants((SELECT id FROM public.ids WHERE name = 'doc')));
SELECT 'claimed', count(*) FROM memmie.claim_jobs('w', 10);
SELECT 'completed', count(*) FROM (SELECT memmie.complete_processing(p.id, 'w', '{"children": [{"content": "y", "content_type": "text/plain"}]}')
                                   FROM memmie.provider_processing p WHERE p.status = 'processing') x;
SQL
check "new functions work on the upgraded data" "$tmp/expected.new" "$tmp/got.new"

for db in memmie_upgrade memmie_fresh; do "${PSQL[@]}" -d postgres -c "DROP DATABASE $db"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

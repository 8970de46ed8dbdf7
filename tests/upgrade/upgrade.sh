#!/usr/bin/env bash
# Upgrade test, once per released version V (tests/upgrade/memmie--V.sql, the install script V
# shipped, must be in the extension directory):
#   install V, give an application role the grants README "Privileges" documents, fill it
#   through V's API as that role (fill-V.sql), run ALTER EXTENSION memmie UPDATE, and check that
#   - the version is the current one,
#   - the data is unchanged (every blob's replayed state, counts, reference counts, storage),
#   - the schema and every grant equal a fresh install of the current version given the same
#     grants, object by object (catalog.sql),
#   - the role goes on working and the new functions work on the old data (check-V.sql, whose
#     output must equal check-V.out; it ends with memmie.check(), which must find nothing wrong).
#   tests/upgrade/upgrade.sh PSQL [psql args...]
# Prints "ok - ..." / "not ok - ..." per check and "N passed, M failed"; exits non-zero on failure.
set -uo pipefail
export PGOPTIONS="-c client_min_messages=warning"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PSQL=("$@" -X -q -v ON_ERROR_STOP=1 -At)
passed=0; failed=0
check() {   # check NAME EXPECTED GOT
    if diff -u "$2" "$3" >"$tmp/diff"; then
        echo "ok - $1"; passed=$((passed + 1))
    else
        echo "not ok - $1"; head -60 "$tmp/diff"; failed=$((failed + 1))
    fi
}
fail() { echo "not ok - $1"; failed=$((failed + 1)); }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

snapshot_data() {
    "${PSQL[@]}" -d memmie_upgrade <<'SQL'
SELECT i.name, b.version, memmie.blob_state(b.id, v.version)::text
FROM public.ids i JOIN memmie.blobs b ON b.id = i.id JOIN memmie.blob_versions v ON v.blob_id = b.id ORDER BY 1, v.version;
SELECT content_hash, reference_count, original_size FROM memmie.content_storage ORDER BY 1;
SELECT user_id, storage_used, blob_count FROM memmie.user_contexts ORDER BY 1;
SELECT count(*) FROM memmie.deltas; SELECT count(*) FROM memmie.events; SELECT count(*) FROM memmie.blob_edges;
SELECT id, status FROM memmie.jobs ORDER BY 1;
SQL
}

hop() {   # hop FROM_VERSION
    local from=$1
    for db in memmie_upgrade memmie_fresh; do
        "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" || return 1
    done
    "${PSQL[@]}" -d memmie_fresh -c "CREATE EXTENSION memmie" -f "$here/grants.sql" || return 1
    "${PSQL[@]}" -d memmie_upgrade -c "CREATE EXTENSION memmie VERSION '$from'" -f "$here/grants.sql" || return 1
    "${PSQL[@]}" -d memmie_upgrade -o /dev/null -f "$here/fill-$from.sql" || return 1

    snapshot_data >"$tmp/data.before" || return 1
    "${PSQL[@]}" -d memmie_upgrade -c "ALTER EXTENSION memmie UPDATE" || return 1

    "${PSQL[@]}" -d memmie_upgrade -c "SELECT extversion FROM pg_extension WHERE extname = 'memmie'" >"$tmp/v.upgraded"
    "${PSQL[@]}" -d memmie_fresh -c "SELECT extversion FROM pg_extension WHERE extname = 'memmie'" >"$tmp/v.fresh"
    check "$from: the upgraded version is the current one ($(cat "$tmp/v.fresh"))" "$tmp/v.fresh" "$tmp/v.upgraded"

    snapshot_data >"$tmp/data.after"
    check "$from: data unchanged by the upgrade (states of every version, refcounts, storage, counts, jobs)" \
        "$tmp/data.before" "$tmp/data.after"

    for db in memmie_upgrade memmie_fresh; do
        "${PSQL[@]}" -d "$db" -f "$here/catalog.sql" >"$tmp/catalog.$db" || return 1
    done
    check "$from: schema and grants after upgrade equal a fresh install ($(wc -l <"$tmp/catalog.memmie_fresh") objects)" \
        "$tmp/catalog.memmie_fresh" "$tmp/catalog.memmie_upgrade"

    "${PSQL[@]}" -d memmie_upgrade -f "$here/check-$from.sql" >"$tmp/got.check" 2>&1
    check "$from: the application role and the new functions work on the upgraded data" \
        "$here/check-$from.out" "$tmp/got.check"

    for db in memmie_upgrade memmie_fresh; do "${PSQL[@]}" -d postgres -c "DROP DATABASE $db"; done
}

# the application role gets the grants README "Privileges" of the old version documents
# (grants.sql); the worker and admin roles exist on the old version with no grant, and are given
# their levels after the update (check-0.2.0.sql)
ROLES=(memmie_upgrade_app memmie_upgrade_worker memmie_upgrade_admin)
for r in "${ROLES[@]}"; do
    "${PSQL[@]}" -d postgres -c "DROP ROLE IF EXISTS $r" -c "CREATE ROLE $r" || exit 1
done
for from in $(cat "$here/versions"); do
    hop "$from" || fail "$from: the upgrade could not be run (see above)"
done
for db in memmie_upgrade memmie_fresh; do "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $db"; done
for r in "${ROLES[@]}"; do "${PSQL[@]}" -d postgres -c "DROP ROLE $r"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

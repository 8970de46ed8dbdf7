#!/usr/bin/env bash
# pgspot (a linter for extension scripts: search_path, unqualified names, unsafe CREATE) over the
# installed install script and every upgrade script memmie ships. Installs pgspot into a venv
# kept outside the checkout. Passes when pgspot reports no error and no warning, with these
# codes suppressed by name, each for a reason that holds for every occurrence (the count of what
# each suppressed is printed):
#   PS001 unqualified operator, PS016 unqualified function call: pgspot reports them only in
#         the DDL run at install time (CHECK constraints, column defaults, index expressions):
#         every function pins search_path or qualifies every name (tests/pg_regress/sql/
#         security.sql lists the unpinned ones and fails on a new one). DDL is resolved once,
#         at CREATE EXTENSION, with pg_catalog searched before the extension's own schema, which
#         only the extension creates in; the resolved operators and functions are stored by oid.
#   PS005 function without explicit search_path: the five SQL functions kept inlinable
#         (jsonb_diff, _utc_day, _utc_start, _provider_accepts, _matches), which qualify every
#         name instead; security.sql checks both that list and that nothing planted runs in them.
#   PS002 CREATE OR REPLACE: an upgrade script replaces the extension's own functions; PostgreSQL
#         refuses CREATE OR REPLACE of a function that is not a member of the extension.
#
# FROZEN: scripts shipped by a release before pgspot ran in CI. They are reported, neither passed
# nor failed: changing them would change what that release installs. (memmie--0.1.0--0.2.0.sql:
# its errors are unqualified casts, run by ALTER EXTENSION UPDATE with search_path = memmie,
# where only the updating superuser's own pg_temp could shadow a type; the functions it
# creates are pinned by memmie--0.2.0--0.3.0.sql in the same update.)
#   tests/pgspot.sh EXTENSION_DIR
set -uo pipefail
ext=$1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${MEMMIE_PGSPOT_VENV:-/var/tmp/memmie-pgspot-venv-$(id -u)}
version=0.9.4
if ! "$venv/bin/pgspot" --version 2>/dev/null | grep -q "$version"; then
    python3 -m venv "$venv" && "$venv/bin/pip" install -q "pgspot==$version" || { echo "0 passed, 1 failed"; exit 1; }
fi
current=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/../Cargo.toml" | head -1)
FROZEN=" memmie--0.1.0--0.2.0.sql "
SUPPRESSED=(PS001 PS016 PS005 PS002)
passed=0; failed=0
for f in "$ext/memmie--$current.sql" $(ls "$here"/../sql/memmie--*--*.sql | sort -V); do
    name=$(basename "$f")
    all=$("$venv/bin/pgspot" --ignore-lang c "$f" 2>&1)
    counts=$(echo "$all" | grep -o '^PS[0-9]*' | sort | uniq -c | awk '{printf "%s %s, ", $2, $1}')
    out=$("$venv/bin/pgspot" --ignore-lang c $(printf -- '--ignore %s ' "${SUPPRESSED[@]}") "$f" 2>&1)
    summary=$(echo "$out" | grep -o 'Errors: [0-9]* Warnings: [0-9]* Unknown: [0-9]*' | tail -1)
    if [[ "$FROZEN" == *" $name "* ]]; then
        echo "# pgspot $name (frozen as released, not counted): ${counts%, }"
    elif echo "$summary" | grep -q '^Errors: 0 Warnings: 0 '; then
        echo "ok - pgspot $name: $summary with ${SUPPRESSED[*]} suppressed (they were: ${counts%, })"
        passed=$((passed + 1))
    else
        echo "not ok - pgspot $name: $summary (${counts%, })"
        echo "$out" | head -60
        failed=$((failed + 1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

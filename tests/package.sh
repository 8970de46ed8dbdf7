#!/usr/bin/env bash
# Package test: the tarball of `bash .ci/dev package` installs memmie into a PostgreSQL that has
# none (memmie's files are removed from it first), without Rust: unpacked over /, then a new
# cluster runs CREATE EXTENSION memmie, the tour (docs/tour.sql) and check(), and the README's
# tour exactly as a reader would paste it into psql (its first ```sql block, from CREATE
# EXTENSION on, into a new database).
#   tests/package.sh PACKAGE PG_CONFIG WORKDIR CLUSTER_OWNER
# (as root, or with sudo for the PostgreSQL directories). Prints "ok - ..." / "not ok - ..." per
# check and "N passed, M failed"; exits non-zero on failure.
set -uo pipefail
package=$1 pg_config=$2 work=$3 owner=$4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bindir=$("$pg_config" --bindir)
sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo)
as_owner() { if [ "$(id -un)" = "$owner" ]; then "$@"; else runuser -u "$owner" -- "$@"; fi; }
passed=0; failed=0
result() { if [ "$1" = 0 ]; then echo "ok - $2"; passed=$((passed + 1)); else echo "not ok - $2"; failed=$((failed + 1)); fi; }

[ -f "$package" ] || { echo "not ok - no package at $package"; echo "0 passed, 1 failed"; exit 1; }
libdir=$("$pg_config" --pkglibdir) extdir=$("$pg_config" --sharedir)/extension
"${sudo[@]}" rm -f "$libdir/memmie.so" "$extdir/memmie.control" "$extdir"/memmie--*.sql
ls "$libdir/memmie.so" "$extdir/memmie.control" >/dev/null 2>&1
result "$([ $? -ne 0 ]; echo $?)" "memmie removed from $libdir and $extdir"

# only files under pg_config's directories, nothing else
outside=$(tar -tzf "$package" | grep -v '/$' | sed 's|^\./|/|' | grep -v -e "^$libdir/" -e "^$extdir/")
result "$([ -z "$outside" ]; echo $?)" "the package holds only files under pg_config's directories${outside:+: $outside}"
"${sudo[@]}" tar -xzf "$package" -C / --no-same-owner
result $? "unpacked over /"

rm -rf "$work"; mkdir -p "$work"; chmod 700 "$work"
[ "$(id -un)" = "$owner" ] || chown "$owner" "$work"
as_owner "$bindir/initdb" -D "$work/data" -A trust -U postgres --no-sync >"$work/initdb.log" 2>&1 \
    && as_owner "$bindir/pg_ctl" -D "$work/data" -w -l "$work/server.log" \
        -o "-c listen_addresses='' -c unix_socket_directories='$work' -c port=5433" start >/dev/null
result $? "a new cluster starts"
psql=("$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p 5433 -U postgres)
"${psql[@]}" -d postgres -c "CREATE DATABASE tour" && "${psql[@]}" -d tour -c "CREATE EXTENSION memmie" \
    -c "SELECT memmie.ensure_partitions()" >/dev/null
result $? "CREATE EXTENSION memmie"
"${psql[@]}" -d tour -f "$here/docs/tour.sql" >"$work/tour.log" 2>&1
result $? "the tour runs ($(grep -c . "$work/tour.log") lines of output)"
got=$("${psql[@]}" -At -d tour -c "SELECT extversion FROM pg_extension WHERE extname = 'memmie'")
want=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/Cargo.toml" | head -1)
result "$([ "$got" = "$want" ]; echo $?)" "the installed version is $want (got $got)"
result "$([ "$("${psql[@]}" -At -d tour -c "SELECT bool_and(ok) FROM memmie.check()")" = t ]; echo $?)" "check() is all ok"
awk '/^## A five-minute tour/ {t = 1} t && /^```sql/ {b = 1; next} b && /^```/ {exit} b' "$here/README.md" >"$work/readme.sql"
"${psql[@]}" -d postgres -c "CREATE DATABASE readme" \
    && "${psql[@]}" -d readme -f "$work/readme.sql" >"$work/readme.log" 2>&1
result $? "the README's tour pastes into psql ($(grep -c . "$work/readme.sql") lines)$( [ -s "$work/readme.log" ] && grep -m1 'ERROR\|error:' "$work/readme.log")"
as_owner "$bindir/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

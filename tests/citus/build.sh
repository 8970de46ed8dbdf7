#!/usr/bin/env bash
# tests/citus/build.sh PG_CONFIG: builds Citus from the vendored source into the PostgreSQL that
# PG_CONFIG names (the system PostgreSQL 15 in the citus suite), once. The source is
# ../shared/vendor/citus-13.2.2.tar.gz (MEMMIE_CITUS_SRC for another tarball) with
# citus-13.2.2-pg15.20.patch applied (MEMMIE_CITUS_PATCH; empty for none): PostgreSQL 15.20's
# headers export have_createdb_privilege(), which Citus 13.2.2 also defines.
#
# Cached: after a build, a marker beside citus.control records the sha256 of the tarball and of
# the patch and the PostgreSQL version; a later run with the same three finds citus.so and the
# marker and returns at once. Another tarball, patch or PostgreSQL minor rebuilds.
# Runs as root or as a user with sudo (apt-get, make install into PostgreSQL's directories).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SHARED=${MEMMIE_SHARED:-$ROOT/../shared}
PG_CONFIG=${1:?usage: build.sh PG_CONFIG}
SRC=${MEMMIE_CITUS_SRC:-$SHARED/vendor/citus-13.2.2.tar.gz}
PATCH=${MEMMIE_CITUS_PATCH-$SHARED/vendor/citus-13.2.2-pg15.20.patch}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
SUDO=(); [ "$(id -u)" = 0 ] || SUDO=(sudo)

[ -x "$PG_CONFIG" ] || die "pg_config not found at $PG_CONFIG"
[ -f "$SRC" ] || die "Citus source not found at $SRC (set MEMMIE_CITUS_SRC)"
[ -z "$PATCH" ] || [ -f "$PATCH" ] || die "patch not found at $PATCH (set MEMMIE_CITUS_PATCH, empty for none)"

pkglibdir=$("$PG_CONFIG" --pkglibdir)
marker="$("$PG_CONFIG" --sharedir)/extension/citus.memmie-build"
want="src $(sha256sum "$SRC" | cut -d' ' -f1)
patch $( [ -n "$PATCH" ] && sha256sum "$PATCH" | cut -d' ' -f1 || echo none)
postgres $("$PG_CONFIG" --version)"
if [ -f "$pkglibdir/citus.so" ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$want" ]; then
    say "Citus is already built from $(basename "$SRC") for $("$PG_CONFIG" --version) (cached; $marker)"
    exit 0
fi

# Debian packages Citus's configure needs beyond memmie's own (gcc, make, the server headers).
missing=()
for p in autoconf flex libcurl4-gnutls-dev libkrb5-dev liblz4-dev libpam0g-dev libselinux1-dev \
         libzstd-dev libssl-dev libxslt1-dev libreadline-dev zlib1g-dev; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

top=$(mktemp -d /var/tmp/memmie-citus-build.XXXXXX)
build=$top
log=$top.log
say "building Citus from $SRC for $("$PG_CONFIG" --version) (once; about 5 minutes on 2 cores)"
tar -xzf "$SRC" -C "$build"
# a `git archive` without --prefix has the tree at its top; a release tarball has one directory
if [ ! -f "$build/configure" ] && [ "$(find "$build" -mindepth 1 -maxdepth 1 | wc -l)" = 1 ]; then
    build=$(find "$build" -mindepth 1 -maxdepth 1 -type d)
fi
[ -f "$build/configure" ] || die "no configure script in $SRC"
if [ -n "$PATCH" ]; then
    (cd "$build" && patch -p1 --forward --quiet) <"$PATCH" || die "the patch $PATCH does not apply to $SRC"
fi
if ! (cd "$build" && ./configure PG_CONFIG="$PG_CONFIG" && make -j"$(nproc)") >"$log" 2>&1; then
    tail -30 "$log" >&2; die "building Citus failed (log: $log)"
fi
# make install writes citus.so in place; a server that mapped the old one would crash, so the
# suite installs only while no cluster of its own runs (it starts them after this script).
"${SUDO[@]}" make -C "$build" install >>"$log" 2>&1 || { tail -30 "$log" >&2; die "installing Citus failed (log: $log)"; }
printf '%s\n' "$want" | "${SUDO[@]}" tee "$marker" >/dev/null
rm -rf "$top" "$log"
say "Citus installed into $pkglibdir"

#!/usr/bin/env bash
# tests/citus/citus.sh PGBIN WORKDIR: memmie on a 3-node Citus cluster (PostgreSQL 15).
#
# Starts a coordinator and two workers on 127.0.0.1 (ports MEMMIE_CITUS_PORT, +1, +2; default
# 5710-5712), each with its own data directory under WORKDIR, shared_preload_libraries = 'citus'
# and trust authentication for 127.0.0.1 only (and the node's own Unix socket). Adds the workers,
# runs CREATE EXTENSION citus (every node) and memmie (coordinator; Citus propagates it), then
# memmie.distribute(), then tests/citus/workload.sql step by step, then the invariants in
# tests/citus/invariants.sql, then: no prepared transaction left on any node, no ERROR in any
# node's log other than those of the steps that failed. Stops every node at the end (trap).
#
# Citus must already be installed into that PostgreSQL (tests/citus/build.sh does it).
# Each step of workload.sql (a "-- step: NAME" line, then its SQL) runs in its own session
# with ON_ERROR_STOP; a failing step prints its error and the run goes on, so that one run shows
# every step that fails on Citus (tests/citus/FINDINGS.md). A step whose SQL has "-- and:" lines
# runs each part in its own session, all at once (two workers claiming jobs together). A check of invariants.sql ("-- check:
# NAME", then a query returning one boolean) passes when it returns t.
# Prints "ok - ..." / "not ok - ..." per step and check and ends with "N passed, M failed".
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PGBIN=${1:?usage: citus.sh PGBIN WORKDIR}
WORK=${2:?usage: citus.sh PGBIN WORKDIR}
BASE_PORT=${MEMMIE_CITUS_PORT:-5710}
DB=memmie_citus
NODES=(coordinator worker1 worker2)
ME=$(id -un)
RUNAS=$ME; [ "$(id -u)" = 0 ] && RUNAS=postgres
as_owner() { if [ "$ME" = "$RUNAS" ]; then "$@"; else runuser -u "$RUNAS" -- "$@"; fi; }

PASSED=0 FAILED=0
ok()     { PASSED=$((PASSED + 1)); echo "ok - $*"; }
not_ok() { FAILED=$((FAILED + 1)); echo "not ok - $*"; }
finish() { echo "$PASSED passed, $FAILED failed"; [ "$FAILED" = 0 ]; exit $?; }

port_of() { echo $((BASE_PORT + $1)); }
dir_of()  { echo "$WORK/${NODES[$1]}"; }
# psql on node I (over TCP, as the nodes talk to each other)
node_psql() { local i=$1; shift; "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$(port_of "$i")" -U postgres "$@"; }

stop_all() {
    local i
    for i in "${!NODES[@]}"; do
        [ -d "$(dir_of "$i")/data" ] && as_owner "$PGBIN/pg_ctl" -D "$(dir_of "$i")/data" -m fast stop >/dev/null 2>&1
    done
    return 0
}
# MEMMIE_CITUS_CONTROL=1 is the control run: the same cluster, workload and checks, but the steps
# and checks marked [distributed] are skipped, so memmie's tables stay local to the coordinator
# (the workload and the checks pass there; what fails in a real run fails because of Citus).
# MEMMIE_CITUS_KEEP=1 leaves the nodes running after the workload (to look at them by hand;
# stop them with pg_ctl -D WORKDIR/NODE/data stop) and skips the log checks.
[ -n "${MEMMIE_CITUS_KEEP:-}" ] || trap stop_all EXIT

mkdir -p "$WORK"; chmod 755 "$WORK"
[ "$ME" = "$RUNAS" ] || chown "$RUNAS" "$WORK"
for i in "${!NODES[@]}"; do
    d=$(dir_of "$i"); port=$(port_of "$i")
    rm -rf "$d"; mkdir -p "$d"; chmod 700 "$d"
    [ "$ME" = "$RUNAS" ] || chown "$RUNAS" "$d"
    if ! as_owner "$PGBIN/initdb" -D "$d/data" -U postgres -E UTF8 --locale=C.UTF-8 --no-sync \
            --auth-local=trust --auth-host=reject >"$d/initdb.log" 2>&1; then
        cat "$d/initdb.log"; not_ok "initdb ${NODES[$i]}"; finish
    fi
    # trust for this machine's loopback address only; everything else is refused
    as_owner sh -c "printf '%s\n' 'local all all trust' 'host all all 127.0.0.1/32 trust' >'$d/data/pg_hba.conf'"
    as_owner sh -c "cat >>'$d/data/postgresql.conf'" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$d'
shared_preload_libraries = 'citus'
fsync = off
max_prepared_transactions = 100
log_min_messages = warning
log_line_prefix = '%m [%p] %d '
CONF
    if ! as_owner "$PGBIN/pg_ctl" -D "$d/data" -w -l "$d/server.log" start >/dev/null; then
        tail -20 "$d/server.log"; not_ok "start ${NODES[$i]} on port $port"; finish
    fi
    node_psql "$i" -d postgres -c "CREATE DATABASE $DB" -c "\\c $DB" -c "CREATE EXTENSION citus" \
        || { not_ok "CREATE EXTENSION citus on ${NODES[$i]}"; finish; }
done
ok "3 nodes started (ports $(port_of 0)-$(port_of 2)), citus in each"

if node_psql 0 -d "$DB" -v ON_ERROR_STOP=1 \
        -c "SELECT citus_set_coordinator_host('127.0.0.1', $(port_of 0))" \
        -c "SELECT citus_add_node('127.0.0.1', $(port_of 1))" \
        -c "SELECT citus_add_node('127.0.0.1', $(port_of 2))" >/dev/null; then
    ok "workers added: $(node_psql 0 -d "$DB" -At -c "SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND isactive AND shouldhaveshards")"
else
    not_ok "citus_add_node"; finish
fi
if node_psql 0 -d "$DB" -v ON_ERROR_STOP=1 -c "CREATE EXTENSION memmie" >/dev/null; then
    ok "CREATE EXTENSION memmie on the coordinator, on the workers: $(node_psql 1 -d "$DB" -At -c "SELECT extversion FROM pg_extension WHERE extname = 'memmie'"), $(node_psql 2 -d "$DB" -At -c "SELECT extversion FROM pg_extension WHERE extname = 'memmie'")"
else
    not_ok "CREATE EXTENSION memmie"; finish
fi

# run_blocks FILE KIND: runs each "-- KIND: NAME" block of FILE in its own session on the coordinator
run_blocks() {
    local file=$1 kind=$2 name="" sql="" line
    run_one() {
        [ -n "$name" ] || return 0
        if [ -n "${MEMMIE_CITUS_CONTROL:-}" ] && [[ $name == *"[distributed]"* ]]; then
            echo "ok - $name # skip: control run"; return 0
        fi
        local out status
        if [ "$kind" = step ] && [[ $sql == *$'\n-- and:'* || $sql == $'-- and:'* ]]; then
            # parts separated by "-- and:" lines, each in its own session, all at once
            local parts=() part="" l pids=() i=0 failed=0
            while IFS= read -r l; do
                if [ "$l" = "-- and:" ]; then parts+=("$part"); part=""; else part+="$l"$'\n'; fi
            done <<<"$sql"
            parts+=("$part")
            for part in "${parts[@]}"; do
                printf '%s\n' "$part" | node_psql 0 -d "$DB" -v ON_ERROR_STOP=1 -At >"$WORK/part.$i" 2>&1 &
                pids+=($!); i=$((i + 1))
            done
            out=""
            for i in "${!pids[@]}"; do
                wait "${pids[$i]}" || failed=1
                out+=$(cat "$WORK/part.$i")$'\n'
            done
            status=$failed
            if [ $status = 0 ]; then ok "$name (${#parts[@]} sessions at once)"; else
                not_ok "$name (${#parts[@]} sessions at once)"; printf '%s\n' "$out" | grep -E 'ERROR|DETAIL|HINT|CONTEXT' | head -6 | sed 's/^/#   /'
            fi
        elif [ "$kind" = step ]; then
            out=$(printf '%s\n' "$sql" | node_psql 0 -d "$DB" -v ON_ERROR_STOP=1 -At 2>&1); status=$?
            if [ $status = 0 ]; then ok "$name"; else
                not_ok "$name"; printf '%s\n' "$out" | grep -E 'ERROR|DETAIL|HINT|CONTEXT' | head -6 | sed 's/^/#   /'
            fi
        else
            out=$(printf '%s\n' "$sql" | node_psql 0 -d "$DB" -v ON_ERROR_STOP=1 -At 2>&1); status=$?
            if [ $status = 0 ] && [ "$(printf '%s\n' "$out" | tail -1)" = t ]; then ok "check: $name"; else
                not_ok "check: $name"; printf '%s\n' "$out" | head -6 | sed 's/^/#   /'
            fi
        fi
    }
    while IFS= read -r line || [ -n "$line" ]; do
        if [[ $line =~ ^--\ $kind:\ (.*)$ ]]; then
            run_one; name=${BASH_REMATCH[1]}; sql=""
        else
            sql+="$line"$'\n'
        fi
    done <"$file"
    run_one
}

run_blocks "$HERE/workload.sql" step
run_blocks "$HERE/invariants.sql" check

for i in "${!NODES[@]}"; do
    n=$(node_psql "$i" -d "$DB" -At -c "SELECT count(*) FROM pg_prepared_xacts")
    if [ "$n" = 0 ]; then ok "no prepared transaction left on ${NODES[$i]}"; else not_ok "$n prepared transactions left on ${NODES[$i]}"; fi
done
if [ -n "${MEMMIE_CITUS_KEEP:-}" ]; then
    echo "# the nodes keep running: $PGBIN/psql -h 127.0.0.1 -p $(port_of 0) -U postgres $DB"; finish
fi
stop_all
for i in "${!NODES[@]}"; do
    n=$(grep -c ' ERROR: ' "$(dir_of "$i")/server.log")
    if [ "$n" = 0 ]; then ok "no ERROR in the log of ${NODES[$i]}"; else
        not_ok "$n ERRORs in the log of ${NODES[$i]} ($(dir_of "$i")/server.log), the first:"
        grep ' ERROR: ' "$(dir_of "$i")/server.log" | sed 's/^[^E]*ERROR: //' | sort | uniq -c | sort -rn | head -5 | sed 's/^/#   /'
    fi
done
finish

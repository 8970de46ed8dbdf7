#!/usr/bin/env bash
# tests/citus/cluster.sh: a 3-node Citus cluster on this machine, for tests/citus/citus.sh and
# bench/citus.sh (sourced; defines functions and nothing else runs).
#
#   citus_cluster_start PGBIN WORKDIR DB   a coordinator and two workers on 127.0.0.1 (ports
#                                          MEMMIE_CITUS_PORT, +1, +2; default 5710-5712), each with
#                                          its own data directory under WORKDIR,
#                                          shared_preload_libraries = 'citus', trust for 127.0.0.1
#                                          only (and the node's own Unix socket); database DB with
#                                          CREATE EXTENSION citus on every node and the workers
#                                          added. Returns non-zero (with what failed on stderr).
#   citus_database DB                      one more database on the same nodes, likewise
#   citus_cluster_stop                     stops every node
#   node_psql I ARGS...                    psql on node I (0 coordinator, 1-2 workers), over TCP
#   citus_dir_of I                         node I's directory (server.log is there)
# Citus must already be installed into that PostgreSQL (tests/citus/build.sh does it).

CITUS_NODES=(coordinator worker1 worker2)
CITUS_BASE_PORT=${MEMMIE_CITUS_PORT:-5710}
CITUS_ME=$(id -un)
CITUS_RUNAS=$CITUS_ME; [ "$(id -u)" = 0 ] && CITUS_RUNAS=postgres
citus_as_owner() { if [ "$CITUS_ME" = "$CITUS_RUNAS" ]; then "$@"; else runuser -u "$CITUS_RUNAS" -- "$@"; fi; }
citus_port_of() { echo $((CITUS_BASE_PORT + $1)); }
citus_dir_of()  { echo "$CITUS_WORK/${CITUS_NODES[$1]}"; }
node_psql() { local i=$1; shift; "$CITUS_PGBIN/psql" -X -q -h 127.0.0.1 -p "$(citus_port_of "$i")" -U postgres "$@"; }

citus_cluster_stop() {
    local i
    [ -n "${CITUS_WORK:-}" ] || return 0
    for i in "${!CITUS_NODES[@]}"; do
        [ -d "$(citus_dir_of "$i")/data" ] && citus_as_owner "$CITUS_PGBIN/pg_ctl" -D "$(citus_dir_of "$i")/data" -m fast stop >/dev/null 2>&1
    done
    return 0
}

citus_cluster_start() {   # citus_cluster_start PGBIN WORKDIR DB [EXTRA postgresql.conf LINES]
    CITUS_PGBIN=$1 CITUS_WORK=$2
    local db=$3 extra=${4:-} i d port
    mkdir -p "$CITUS_WORK"; chmod 755 "$CITUS_WORK"
    [ "$CITUS_ME" = "$CITUS_RUNAS" ] || chown "$CITUS_RUNAS" "$CITUS_WORK"
    for i in "${!CITUS_NODES[@]}"; do
        d=$(citus_dir_of "$i"); port=$(citus_port_of "$i")
        rm -rf "$d"; mkdir -p "$d"; chmod 700 "$d"
        [ "$CITUS_ME" = "$CITUS_RUNAS" ] || chown "$CITUS_RUNAS" "$d"
        if ! citus_as_owner "$CITUS_PGBIN/initdb" -D "$d/data" -U postgres -E UTF8 --locale=C.UTF-8 --no-sync \
                --auth-local=trust --auth-host=reject >"$d/initdb.log" 2>&1; then
            cat "$d/initdb.log" >&2; echo "initdb ${CITUS_NODES[$i]} failed" >&2; return 1
        fi
        # trust for this machine's loopback address only; everything else is refused
        citus_as_owner sh -c "printf '%s\n' 'local all all trust' 'host all all 127.0.0.1/32 trust' >'$d/data/pg_hba.conf'"
        citus_as_owner sh -c "cat >>'$d/data/postgresql.conf'" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$d'
shared_preload_libraries = 'citus'
fsync = off
max_prepared_transactions = 100
log_min_messages = warning
log_line_prefix = '%m [%p] %d '
$extra
CONF
        if ! citus_as_owner "$CITUS_PGBIN/pg_ctl" -D "$d/data" -w -l "$d/server.log" start >/dev/null; then
            tail -20 "$d/server.log" >&2; echo "${CITUS_NODES[$i]} did not start on port $port" >&2; return 1
        fi
    done
    citus_database "$db"
}

citus_database() {   # citus_database DB: database DB on every node, with citus, the workers added
    local db=$1 i
    for i in "${!CITUS_NODES[@]}"; do
        node_psql "$i" -d postgres -c "CREATE DATABASE $db" -c "\\c $db" -c "CREATE EXTENSION citus" >/dev/null \
            || { echo "CREATE EXTENSION citus on ${CITUS_NODES[$i]} failed" >&2; return 1; }
    done
    node_psql 0 -d "$db" -v ON_ERROR_STOP=1 \
        -c "SELECT citus_set_coordinator_host('127.0.0.1', $(citus_port_of 0))" \
        -c "SELECT citus_add_node('127.0.0.1', $(citus_port_of 1))" \
        -c "SELECT citus_add_node('127.0.0.1', $(citus_port_of 2))" >/dev/null \
        || { echo "citus_add_node failed" >&2; return 1; }
}

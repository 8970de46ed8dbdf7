#!/usr/bin/env bash
# bench/citus.sh: create_blob and apply_delta on a 3-node Citus cluster (a coordinator and two
# workers, tests/citus/cluster.sh) against a single node, on this machine (PostgreSQL 15).
# Builds memmie in release mode and Citus (tests/citus/build.sh, cached), then, for each side
# and call, BENCH_RUNS (3) pgbench runs of PGBENCH_SECONDS (10) with 1 and 4 clients over 64
# users (bench/citus/*.sql: each call with no user bound, as an admin would, and "_bound", with
# memmie.user_id set per transaction, as an application does; BENCH_CALLS picks some), and
# prints the median tps, ms per call per client and the ratio
# cluster / single node. Both sides run on the same 2 cores, so the cluster cannot be faster
# here: the ratio is the per-call cost of distribution (routing, 2PC across nodes). Timings are
# never asserted anywhere.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/dev"
use_pg 15
RUNS=${BENCH_RUNS:-3}
SECONDS_=${PGBENCH_SECONDS:-10}
ensure_deps
MEMMIE_SHARED=$SHARED bash "$ROOT/tests/citus/build.sh" "$PG_CONFIG"
install_extension --release
OUT=$(mktemp -d /tmp/memmie-bench-citus.XXXXXX)
chmod 755 "$OUT"; [ "$ME" = "$RUNAS" ] || chown "$RUNAS" "$OUT"
source "$ROOT/tests/citus/cluster.sh"
trap 'stop_cluster; citus_cluster_stop; rm -rf "$OUT"' EXIT
CONF="shared_buffers = 256MB
synchronous_commit = off"

say "single node"
PG_EXTRA_OPTS="-c shared_buffers=256MB -c synchronous_commit=off" start_cluster "$OUT/single"
psql_c -q -d postgres -c "CREATE DATABASE memmie_bench"
psql_c -q -d memmie_bench -c "CREATE EXTENSION memmie" -c "SELECT memmie.ensure_partitions()" -f "$ROOT/bench/citus/setup.sql"
say "3-node Citus cluster"
citus_cluster_start "$PGBIN" "$OUT/citus" memmie_bench "$CONF" || die "the Citus cluster did not start"
node_psql 0 -d memmie_bench -v ON_ERROR_STOP=1 -c "CREATE EXTENSION memmie" -c "SELECT memmie.distribute()" \
    -c "SELECT memmie.ensure_partitions()" -f "$ROOT/bench/citus/setup.sql" >/dev/null

results=$OUT/results
: >"$results"
for call in ${BENCH_CALLS:-create_blob create_blob_bound apply_delta apply_delta_bound}; do
    for clients in 1 4; do
        for run in $(seq "$RUNS"); do
            for side in single citus; do
                if [ $side = single ]; then conn=(-h "$CLUSTER" -p "$PORT"); else conn=(-h 127.0.0.1 -p "$(citus_port_of 0)"); fi
                "$PGBIN/pgbench" -n "${conn[@]}" -U postgres -c "$clients" -j "$clients" -T "$SECONDS_" \
                    -f "$ROOT/bench/citus/$call.sql" memmie_bench >"$OUT/pgbench.log" 2>&1 || true
                tps=$(awk '/^tps = / {print $3; exit}' "$OUT/pgbench.log")
                if [ -z "$tps" ] || grep -q "aborted" "$OUT/pgbench.log"; then
                    echo "  $call $side $clients client(s) run $run: FAILED"; grep -iE "error|abort" "$OUT/pgbench.log" | head -3; continue
                fi
                echo "  $call $side $clients client(s) run $run: $tps tps"
                echo "$call $clients $side $tps" >>"$results"
            done
        done
    done
done
say "results (median of $RUNS runs of ${SECONDS_} s; ms per call per client; ratio: cluster / single node)"
psql_c -q -d memmie_bench -c "CREATE TEMP TABLE r (call text, clients int, side text, tps numeric)" \
    -c "\\copy r FROM '$results' WITH (DELIMITER ' ')" -c "
WITH m AS (SELECT call, clients, side, percentile_cont(0.5) WITHIN GROUP (ORDER BY tps)::numeric AS tps
           FROM r GROUP BY 1, 2, 3)
SELECT s.call, s.clients, round(s.tps) AS single_tps, round(c.tps) AS citus_tps,
       round(1000 * s.clients / s.tps, 3) AS single_ms, round(1000 * c.clients / c.tps, 3) AS citus_ms,
       round(s.tps / c.tps, 2) AS ratio
FROM m s JOIN m c ON c.call = s.call AND c.clients = s.clients AND c.side = 'citus'
WHERE s.side = 'single' ORDER BY s.call DESC, s.clients"

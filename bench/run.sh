#!/usr/bin/env bash
# memmie's benchmarks, side by side with what a user would otherwise run inside PostgreSQL.
#   bash bench/run.sh            everything (about 15 minutes on 2 cores)
#   bash bench/run.sh NAME...    only bench/sql/NAME.sql files (e.g. 10_sha256) and/or "pgbench"
# Builds memmie in release mode, starts a private cluster (its own, not the one of `run`), and
# prints medians of several runs and their ratios. Timings are never asserted anywhere.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/dev"
BENCH=$ROOT/bench
RUNS=${BENCH_RUNS:-3}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-10}

ensure_deps
install_extension --release
OUT=$(mktemp -d /tmp/memmie-bench.XXXXXX)
chmod 755 "$OUT"
trap 'stop_cluster; rm -rf "$OUT"' EXIT
[ "$ME" = "$RUNAS" ] || chown "$RUNAS" "$OUT"
PG_EXTRA_OPTS="-c shared_buffers=256MB -c max_wal_size=4GB -c synchronous_commit=off" start_cluster "$OUT/cluster"
DB=memmie_bench
psql_c -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
psql_c -q -d $DB -c "CREATE EXTENSION memmie" -f "$BENCH/sql/00_harness.sql"

selected=("$@")
is_selected() {
    [ ${#selected[@]} -eq 0 ] && return 0
    local s; for s in "${selected[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1
}

for f in "$BENCH"/sql/[1-9]*.sql; do
    name=$(basename "$f" .sql)
    is_selected "$name" || continue
    say "bench $name"
    psql_c -d $DB -f "$f"
done

if is_selected pgbench; then
    say "bench create_blob vs plain INSERTs with the design document's triggers (pgbench, ${PGBENCH_SECONDS}s runs)"
    psql_c -q -d $DB -f "$BENCH/design_schema.sql"
    psql_c -q -d $DB -c "CREATE TABLE IF NOT EXISTS bench.tps (variant text, clients int, tps numeric)"
    for clients in 1 2; do
        for run in $(seq "$RUNS"); do
            for variant in memmie_create_blob design_inserts; do
                "$PGBIN/pgbench" -n -h "$CLUSTER" -p "$PORT" -U postgres -c "$clients" -j "$clients" \
                    -T "$PGBENCH_SECONDS" -f "$BENCH/pgbench/$variant.sql" $DB >"$OUT/pgbench.log" 2>&1 || true
                tps=$(awk '/^tps = / {print $3; exit}' "$OUT/pgbench.log")
                if [ -z "$tps" ]; then
                    echo "  $variant, $clients client(s), run $run: FAILED"; grep -i error "$OUT/pgbench.log" | head -3
                    continue
                fi
                echo "  $variant, $clients client(s), run $run: $tps tps"
                psql_c -q -d $DB -c "INSERT INTO bench.tps VALUES ('$variant', $clients, $tps)"
            done
        done
    done
    psql_c -q -d $DB <<SQL
INSERT INTO bench.results (benchmark, variant, size, ms_median, per, runs)
SELECT 'create_blob (1 KiB)', variant, clients || ' client(s)',
       round(1000.0 / percentile_cont(0.5) WITHIN GROUP (ORDER BY tps)::numeric * clients, 3),
       'ms per blob per client (median of ' || count(*) || ' pgbench runs: ' ||
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY tps)::numeric) || ' tps)', count(*)
FROM bench.tps GROUP BY variant, clients ORDER BY clients, variant DESC;
SQL
fi

say "results (median ms; lower is faster)"
psql_c -d $DB -c "SELECT benchmark, size, variant, ms_median, per FROM bench.results ORDER BY ord"
say "ratios (the alternative's time / memmie's time: above 1 means memmie is faster)"
psql_c -d $DB -f "$BENCH/ratios.sql"

#!/usr/bin/env bash
# memmie's benchmarks, side by side with what a user would otherwise run inside PostgreSQL.
#   bash bench/run.sh            everything (about 25 minutes on 2 cores)
#   bash bench/run.sh NAME...    only bench/sql/NAME.sql files (e.g. 10_sha256, 70_dag) and/or
#                                the named steps "pgbench" (create_blob), "jobs" (claim +
#                                complete, pgbench), "graphile" (vs graphile-worker, node) and
#                                "latency" (create_blob -> claimed job, node)
# Builds memmie in release mode, starts a private cluster (its own, not the one of `run`), and
# prints medians of several runs and their ratios. Timings are never asserted anywhere.
# Knobs (environment): BENCH_RUNS (3), PGBENCH_SECONDS (10), BENCH_DAG_NODES (1000000),
# BENCH_QUEUE_JOBS (200000 pre-enqueued per pgbench run), BENCH_GRAPHILE_JOBS (20000),
# BENCH_LATENCY_BLOBS (500), BENCH_LATENCY_GAP_MS (5), BENCH_RETENTION_EVENTS (1000000),
# BENCH_METRICS_ROWS (1000000), BENCH_PG (15: the PostgreSQL version to run on, 15 or 18).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../.ci/dev"
use_pg "${BENCH_PG:-15}"
BENCH=$ROOT/bench
RUNS=${BENCH_RUNS:-3}
PGBENCH_SECONDS=${PGBENCH_SECONDS:-10}
QUEUE_JOBS=${BENCH_QUEUE_JOBS:-200000}
GRAPHILE_JOBS=${BENCH_GRAPHILE_JOBS:-20000}
LATENCY_BLOBS=${BENCH_LATENCY_BLOBS:-500}
LATENCY_GAP_MS=${BENCH_LATENCY_GAP_MS:-5}

selected=("$@")
is_selected() {
    [ ${#selected[@]} -eq 0 ] && return 0
    local s; for s in "${selected[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1
}

ensure_deps
# pg_partman, the alternative in bench/sql/80_partitions.sql (only when that file runs)
if is_selected 80_partitions && ! dpkg-query -W -f='${Status}' postgresql-$PG_MAJOR-partman 2>/dev/null | grep -q "install ok installed"; then
    say "installing Debian package postgresql-$PG_MAJOR-partman"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-$PG_MAJOR-partman >/dev/null
fi
install_extension --release
OUT=$(mktemp -d /tmp/memmie-bench.XXXXXX)
chmod 755 "$OUT"
trap 'stop_cluster; rm -rf "$OUT"' EXIT
[ "$ME" = "$RUNAS" ] || chown "$RUNAS" "$OUT"
PG_EXTRA_OPTS="-c shared_buffers=256MB -c max_wal_size=4GB -c synchronous_commit=off" start_cluster "$OUT/cluster"
DB=memmie_bench
psql_c -q -d postgres -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB"
psql_c -q -d $DB -c "CREATE EXTENSION memmie" -c "SELECT memmie.ensure_partitions()" -f "$BENCH/sql/00_harness.sql"

for f in "$BENCH"/sql/[1-9]*.sql; do
    name=$(basename "$f" .sql)
    is_selected "$name" || continue
    say "bench $name"
    psql_c -d $DB -f "$f"
done

psql_c -q -d $DB -c "CREATE TABLE IF NOT EXISTS bench.tps (variant text, clients int, tps numeric)"
# pgbench_run VARIANT CLIENTS RUN: one run of bench/pgbench/VARIANT.sql; its tps into bench.tps
pgbench_run() {
    local variant=$1 clients=$2 run=$3 tps
    "$PGBIN/pgbench" -n -h "$CLUSTER" -p "$PORT" -U postgres -c "$clients" -j "$clients" \
        -T "$PGBENCH_SECONDS" -f "$BENCH/pgbench/$variant.sql" $DB >"$OUT/pgbench.log" 2>&1 || true
    tps=$(awk '/^tps = / {print $3; exit}' "$OUT/pgbench.log")
    if [ -z "$tps" ] || grep -q "aborted" "$OUT/pgbench.log"; then
        echo "  $variant, $clients client(s), run $run: FAILED"; grep -iE "error|abort" "$OUT/pgbench.log" | head -3
        return 0
    fi
    echo "  $variant, $clients client(s), run $run: $tps tps"
    psql_c -q -d $DB -c "INSERT INTO bench.tps VALUES ('$variant', $clients, $tps)"
}
# pgbench_results BENCHMARK PER VARIANT...: medians of bench.tps into bench.results, per client
# count, as ms per PER per client
pgbench_results() {
    local benchmark=$1 per=$2; shift 2
    local list; list=$(printf "'%s'," "$@"); list=${list%,}
    psql_c -q -d $DB <<SQL
INSERT INTO bench.results (benchmark, variant, size, ms_median, per, runs)
SELECT '$benchmark', variant, clients || ' client(s)',
       round(1000.0 / percentile_cont(0.5) WITHIN GROUP (ORDER BY tps)::numeric * clients, 3),
       'ms per $per per client (median of ' || count(*) || ' pgbench runs: ' ||
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY tps)::numeric) || ' tps)', count(*)
FROM bench.tps WHERE variant IN ($list)
GROUP BY variant, clients ORDER BY clients, array_position(ARRAY[$list], variant);
SQL
}

if is_selected pgbench; then
    say "bench create_blob vs plain INSERTs with the design document's triggers (pgbench, ${PGBENCH_SECONDS}s runs)"
    psql_c -q -d $DB -f "$BENCH/design_schema.sql"
    for clients in 1 2; do
        for run in $(seq "$RUNS"); do
            for variant in memmie_create_blob design_inserts; do
                pgbench_run $variant "$clients" "$run"
            done
        done
    done
    pgbench_results 'create_blob (1 KiB)' blob memmie_create_blob design_inserts
fi

if is_selected jobs; then
    say "bench claim + complete of no-op jobs: memmie vs hand-written SKIP LOCKED (pgbench, ${PGBENCH_SECONDS}s runs, $QUEUE_JOBS jobs queued)"
    psql_c -q -d $DB -f "$BENCH/jobs_schema.sql"
    for clients in 1 2; do
        for run in $(seq "$RUNS"); do
            for variant in memmie_claim_complete skip_locked_claim_complete; do
                table=$([ $variant = memmie_claim_complete ] && echo memmie.jobs || echo bench.jobs)
                psql_c -q -d $DB -c "CALL bench.refill_jobs('$variant', $QUEUE_JOBS)" -c "VACUUM ANALYZE $table"
                pgbench_run $variant "$clients" "$run"
                left=$(psql_c -At -d $DB -c "SELECT bench.jobs_left('$variant')")
                [ "$left" -gt 0 ] || echo "  WARNING: the queue ran dry; raise BENCH_QUEUE_JOBS"
            done
        done
    done
    pgbench_results 'claim + complete (no-op job)' job memmie_claim_complete skip_locked_claim_complete
fi

# npm_deps DIR: installs DIR's node packages (pinned in package-lock.json) when missing
npm_deps() {
    command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed for bench/$1"
    if [ ! -d "$BENCH/$1/node_modules" ]; then
        say "installing node packages in bench/$1"
        (cd "$BENCH/$1" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}
node_env() { env PGHOST="$CLUSTER" PGPORT="$PORT" PGUSER=postgres PGDATABASE=$DB "$@"; }

if is_selected graphile; then
    say "bench $GRAPHILE_JOBS no-op jobs through 1 and 2 worker processes: memmie vs graphile-worker (node)"
    npm_deps graphile
    gw_version=$(cd "$BENCH/graphile" && node -p "require('graphile-worker/package.json').version")
    psql_c -q -d $DB -c "CREATE TABLE IF NOT EXISTS bench.queue_runs (side text, workers int, jobs int, ms numeric)"
    for workers in 1 2; do
        for run in $(seq "$RUNS"); do
            for side in memmie graphile; do
                if ! node_env node "$BENCH/graphile/queue.js" $side "$GRAPHILE_JOBS" $workers >"$OUT/queue.log" 2>&1; then
                    echo "  $side, $workers worker(s), run $run: FAILED"; tail -5 "$OUT/queue.log"; continue
                fi
                ms=$(awk '/^RESULT / {print $5}' "$OUT/queue.log")
                echo "  $side, $workers worker(s), run $run: $ms ms for $GRAPHILE_JOBS jobs"
                psql_c -q -d $DB -c "INSERT INTO bench.queue_runs VALUES ('$side', $workers, $GRAPHILE_JOBS, $ms)"
            done
        done
    done
    psql_c -q -d $DB <<SQL
INSERT INTO bench.results (benchmark, variant, size, ms_median, per, runs)
SELECT 'no-op jobs, ' || jobs || ' queued (node workers)',
       CASE side WHEN 'memmie' THEN 'memmie claim_jobs + complete_job' ELSE 'graphile-worker $gw_version' END,
       workers || ' worker process(es)',
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric / jobs, 4),
       'ms per job (median of ' || count(*) || ' runs: ' ||
       round(jobs * 1000 / percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric) || ' jobs/s)', count(*)
FROM bench.queue_runs GROUP BY side, workers, jobs ORDER BY workers, side DESC;
SQL
fi

if is_selected latency; then
    say "bench latency: committed create_blob -> its job claimed by a LISTENing worker ($LATENCY_BLOBS blobs, ${LATENCY_GAP_MS} ms apart, node)"
    npm_deps latency
    psql_c -q -d $DB -c "CREATE TABLE IF NOT EXISTS bench.latency_runs (p50 numeric, p99 numeric, max numeric, mean numeric, blobs int)"
    for run in $(seq "$RUNS"); do
        if ! node_env node "$BENCH/latency/latency.js" "$LATENCY_BLOBS" "$LATENCY_GAP_MS" >"$OUT/latency.log" 2>&1; then
            echo "  run $run: FAILED"; tail -5 "$OUT/latency.log"; continue
        fi
        read -r p50 p99 max mean blobs < <(awk '/^RESULT / {print $2, $3, $4, $5, $6}' "$OUT/latency.log")
        echo "  run $run: p50 $p50 ms, p99 $p99 ms, max $max ms, mean $mean ms ($blobs blobs)"
        psql_c -q -d $DB -c "INSERT INTO bench.latency_runs VALUES ($p50, $p99, $max, $mean, $blobs)"
    done
    psql_c -q -d $DB <<SQL
INSERT INTO bench.results (benchmark, variant, size, ms_median, per, runs)
SELECT 'create_blob commit -> job claimed', 'memmie dispatch_events + claim_jobs (LISTEN)', p.name,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY p.v)::numeric, 3),
       'ms, ' || min(blobs) || ' blobs ${LATENCY_GAP_MS} ms apart (median of ' || count(*) || ' runs)', count(*)
FROM bench.latency_runs r, LATERAL (VALUES (1, 'p50', r.p50), (2, 'p99', r.p99)) p(ord, name, v)
GROUP BY p.ord, p.name ORDER BY p.ord;
SQL
fi

say "results (median ms; lower is faster)"
psql_c -d $DB -c "SELECT benchmark, size, variant, ms_median, per FROM bench.results ORDER BY ord"
say "ratios (the alternative's time / memmie's time: above 1 means memmie is faster)"
psql_c -d $DB -f "$BENCH/ratios.sql"

#!/usr/bin/env bash
# End-to-end: N (1,000) blobs through a two-stage provider chain, run by the reference worker
# (examples/worker.py), which is killed with kill -9 five times mid-run under a short lease.
#   bash tests/e2e/pipeline.sh PSQL [psql args...]
# e.g. bash tests/e2e/pipeline.sh psql -X -h /tmp/mmdev -U postgres
#
# Stage 1 ("e2e-upper", text/plain -> text/x-stage1): tr a-z A-Z
# Stage 2 ("e2e-under", blob.created of text/x-stage1 -> text/x-stage2): tr ' ' _
# Two workers (lease 2 s) run from the start while the blobs are created in batches; at 1/6,
# 2/6, ... 5/6 of the processings one of them is killed with SIGKILL while it holds jobs, and
# restarted. At the end both are stopped with SIGTERM and SQL checks that every processing
# completed exactly once, that no job was lost, and that every stage-2 blob's lineage leads back
# to its source. Prints "ok - ..." / "FAIL - ..." per check, then "N passed, M failed"; exits
# non-zero on any failure.
#
# The worker needs Python 3 with psycopg 3 (Debian: python3-psycopg); MEMMIE_PYTHON overrides
# the interpreter. The workers connect with the host, port and user of the psql arguments (or
# the PG* environment). Settings: E2E_DB (the database, default e2e_pipeline: dropped and
# created anew; dropped again on success unless E2E_KEEP=1, kept on failure), E2E_BLOBS (1000),
# E2E_KILLS (5), E2E_TIMEOUT (600 s for the processing), E2E_CHECK_ONLY=1 (only run the checks,
# on the database a previous run left behind).
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ $# -ge 1 ] || { echo "usage: bash tests/e2e/pipeline.sh PSQL [psql args...]" >&2; exit 2; }

DB=${E2E_DB:-e2e_pipeline}
N=${E2E_BLOBS:-1000}
KILLS=${E2E_KILLS:-5}
TIMEOUT=${E2E_TIMEOUT:-600}
LEASE=2
WORKERS=2
USERS=10
TOTAL=$((2 * N))            # processings: one per source blob and stage, two stages

PSQL=("$@" -X -q -v ON_ERROR_STOP=1)
q() { "${PSQL[@]}" -At -d "$DB" -c "$1"; }

# ------------------------------------------------------------------------------------------
# The workers' connection string, from the psql arguments.
dsn_kv() { local v=${2//\\/\\\\}; v=${v//\'/\\\'}; printf "%s='%s' " "$1" "$v"; }
host="" port="" user=""
args=("${@:2}")
for ((i = 0; i < ${#args[@]}; i++)); do
    a=${args[$i]}
    case "$a" in
        -h|--host) host=${args[$((i + 1))]}; i=$((i + 1)) ;;
        -p|--port) port=${args[$((i + 1))]}; i=$((i + 1)) ;;
        -U|--username) user=${args[$((i + 1))]}; i=$((i + 1)) ;;
        --host=*) host=${a#*=} ;;
        --port=*) port=${a#*=} ;;
        --username=*) user=${a#*=} ;;
        -h?*) host=${a#-h} ;;
        -p?*) port=${a#-p} ;;
        -U?*) user=${a#-U} ;;
    esac
done
DSN=$(dsn_kv dbname "$DB"; [ -z "$host" ] || dsn_kv host "$host"; [ -z "$port" ] || dsn_kv port "$port"
      [ -z "$user" ] || dsn_kv user "$user")
# the workers connect as a worker-level role (memmie.grant_worker), nothing more
WORKER_ROLE=memmie_e2e_worker
WORKER_DSN=$(dsn_kv dbname "$DB"; [ -z "$host" ] || dsn_kv host "$host"; [ -z "$port" ] || dsn_kv port "$port"
             dsn_kv user "$WORKER_ROLE")

PY=${MEMMIE_PYTHON:-}
if [ -z "$PY" ]; then
    for c in /usr/bin/python3 python3; do
        if command -v "$c" >/dev/null && "$c" -c 'import psycopg' 2>/dev/null; then PY=$c; break; fi
    done
fi
if [ -z "$PY" ] || ! "$PY" -c 'import psycopg' 2>/dev/null; then
    echo "!!! Python 3 with psycopg 3 not found (apt-get install python3-psycopg): NOT RUN !!!" >&2
    echo "0 passed, 1 failed"
    exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/memmie-e2e.XXXXXX")
declare -a PIDS=() WIDS=()
GEN=0
DONE=0          # the summary line was printed
DROP=0          # drop the database and the logs at exit
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true
    done
    if [ "$DONE" = 0 ]; then
        echo "!!! the e2e test stopped early (database $DB and worker logs in $WORK kept) !!!"
        echo "0 passed, 1 failed"
    fi
    if [ "$DROP" = 1 ]; then
        "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" 2>/dev/null || true
    fi
    if [ "$DROP" = 1 ] || [ "${E2E_CHECK_ONLY:-0}" = 1 ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

now() { date +%s.%N; }
alive() {   # alive PID: running and not a zombie
    local st
    st=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    st=${st##*) }
    [ "${st%% *}" != Z ]
}
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }

start_worker() {   # start_worker SLOT
    local slot=$1
    GEN=$((GEN + 1))
    WIDS[$slot]="e2e-w$slot-$GEN"
    "$PY" "$ROOT/examples/worker.py" --dsn "$WORKER_DSN" --worker-id "${WIDS[$slot]}" --lease "$LEASE" \
        --max-jobs 4 --poll 1 >>"$WORK/worker$slot.log" 2>&1 &
    PIDS[$slot]=$!
}

# ------------------------------------------------------------------------------------------
T0=$(now)
WORKER_PROBLEMS=""
if [ "${E2E_CHECK_ONLY:-0}" != 1 ]; then
    "${PSQL[@]}" -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
    q "CREATE EXTENSION memmie" >/dev/null
    q "DO \$\$ BEGIN CREATE ROLE $WORKER_ROLE LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" >/dev/null
    q "SELECT memmie.grant_worker('$WORKER_ROLE')" >/dev/null
    q "SELECT memmie.ensure_partitions()" >/dev/null
    "${PSQL[@]}" -d "$DB" >/dev/null <<'SQL'
SELECT memmie.register_provider('{
    "id": "e2e-upper", "name": "Upper case", "version": "1",
    "trigger_events": ["blob.created"], "supported_types": ["text/plain"], "timeout_seconds": 10,
    "config": {"command": ["tr", "a-z", "A-Z"], "output_content_type": "text/x-stage1",
               "transform_type": "upper"}}');
SELECT memmie.register_provider('{
    "id": "e2e-under", "name": "Underscores", "version": "1",
    "trigger_events": ["blob.created"], "supported_types": ["text/x-stage1"], "timeout_seconds": 10,
    "config": {"command": ["tr", " ", "_"], "output_content_type": "text/x-stage2",
               "transform_type": "underscore"}}');
-- what the test saw: each kill, and the jobs the killed worker held
CREATE TABLE public.e2e_kills (kill_no int, worker_id text, completed_before int, job_id text,
                               killed_at timestamptz DEFAULT clock_timestamp());
SQL
    for ((s = 0; s < WORKERS; s++)); do start_worker $s; done

    say_t() { echo "[$(since "$T0")s] $*"; }
    say_t "creating $N blobs for $USERS users, in batches of 100, while $WORKERS workers run (lease ${LEASE}s)"
    # One user per batch (transaction): a transaction writing several users' blobs can deadlock
    # with a concurrent dispatch_events (memmie._lock_user takes FOR UPDATE, which waits for and
    # blocks the FOR KEY SHARE of dispatch's foreign-key checks on user_contexts).
    for ((b = 0; b < N; b += 100)); do
        q "SELECT count(memmie.create_blob(
                 ('00000000-0000-0000-0000-0000000000' || lpad('$(( b / 100 % USERS ))', 2, '0'))::uuid,
                 convert_to(format('e2e blob %s: the quick brown fox jumps over the lazy dog', i), 'UTF8'),
                 'text/plain', jsonb_build_object('n', i)))
           FROM generate_series($b + 1, least($b + 100, $N)) i" >/dev/null
    done
    T1=$(now)
    say_t "blobs created"

    kills=0
    deadline=$(( $(date +%s) + TIMEOUT ))
    while :; do
        read -r done_n active < <(q "SELECT (SELECT count(*) FROM memmie.provider_processing
                                             WHERE status = 'completed'),
                                            (SELECT count(*) FROM memmie.events WHERE NOT processed)
                                          + (SELECT count(*) FROM memmie.jobs
                                             WHERE status IN ('queued', 'running'))" | tr '|' ' ')
        # a worker that exited on its own is a failure (it is restarted so the run can finish)
        for ((s = 0; s < WORKERS; s++)); do
            if ! alive "${PIDS[$s]}"; then
                wait "${PIDS[$s]}" 2>/dev/null && st=0 || st=$?
                WORKER_PROBLEMS+="worker ${WIDS[$s]} exited by itself (status $st); "
                say_t "worker ${WIDS[$s]} exited by itself (status $st): restarting it"
                start_worker $s
            fi
        done
        if [ "$kills" -lt "$KILLS" ] && [ "$done_n" -lt "$TOTAL" ] \
           && [ "$done_n" -ge $(( (kills + 1) * TOTAL / (KILLS + 1) )) ]; then
            s=$((kills % WORKERS))
            victim=${WIDS[$s]}
            # kill it while it holds jobs (it claims all the time; about 40 tries at most)
            for ((t = 0; t < 40; t++)); do
                [ "$(q "SELECT count(*) FROM memmie.jobs WHERE status = 'running'
                                                           AND worker_id = '$victim'")" -gt 0 ] && break
                sleep 0.05
            done
            kill -KILL "${PIDS[$s]}"
            wait "${PIDS[$s]}" 2>/dev/null || true
            kills=$((kills + 1))
            held=$(q "WITH k AS (
                          INSERT INTO public.e2e_kills (kill_no, worker_id, completed_before, job_id)
                          SELECT $kills, '$victim', $done_n, j.id FROM memmie.jobs j
                          WHERE j.status = 'running' AND j.worker_id = '$victim'
                          UNION ALL SELECT $kills, '$victim', $done_n, NULL
                          RETURNING job_id)
                      SELECT count(job_id) FROM k")
            say_t "kill -9 #$kills: $victim at $done_n/$TOTAL completed, holding $held jobs; restarting"
            start_worker $s
        fi
        if [ "$done_n" -ge "$TOTAL" ] && [ "$active" -eq 0 ]; then
            break
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say_t "TIMEOUT after ${TIMEOUT}s: $done_n/$TOTAL completed"
            break
        fi
        if [ "$active" -eq 0 ] && [ "$done_n" -lt "$TOTAL" ]; then
            # nothing queued or running: give a last dispatch a moment, then stop waiting
            sleep 3
            [ "$(q "SELECT (SELECT count(*) FROM memmie.events WHERE NOT processed)
                         + (SELECT count(*) FROM memmie.jobs WHERE status IN ('queued', 'running'))")" \
                -eq 0 ] && { say_t "stalled at $done_n/$TOTAL completed, nothing left to run"; break; }
        fi
        sleep 0.2
    done
    T2=$(now)
    say_t "processing done in $(since "$T1")s"

    # stop the workers cleanly; each must exit 0 within 15 s
    for ((s = 0; s < WORKERS; s++)); do kill -TERM "${PIDS[$s]}" 2>/dev/null || true; done
    for ((s = 0; s < WORKERS; s++)); do
        for ((t = 0; t < 150; t++)); do alive "${PIDS[$s]}" || break; sleep 0.1; done
        if alive "${PIDS[$s]}"; then
            WORKER_PROBLEMS+="worker ${WIDS[$s]} did not stop within 15 s of SIGTERM; "
            kill -KILL "${PIDS[$s]}" 2>/dev/null || true
        fi
        wait "${PIDS[$s]}" 2>/dev/null && st=0 || st=$?
        [ "$st" = 0 ] || WORKER_PROBLEMS+="worker ${WIDS[$s]} exited with status $st after SIGTERM; "
        PIDS[$s]=""
    done
    if grep -l 'Traceback' "$WORK"/worker*.log >/dev/null 2>&1; then
        WORKER_PROBLEMS+="a worker logged a Python traceback; "
    fi
    echo "timing: create ${N} blobs $(awk -v a="$T0" -v b="$T1" 'BEGIN {printf "%.1f", b - a}')s," \
         "process $TOTAL processings $(awk -v a="$T1" -v b="$T2" 'BEGIN {printf "%.1f", b - a}')s," \
         "live workers logged $(grep -h 'lease lost' "$WORK"/worker*.log | wc -l) lost leases"
fi

# ------------------------------------------------------------------------------------------
# The checks: one row each (name, ok, detail).
out=$("${PSQL[@]}" -d "$DB" -v n="$N" -v kills="$KILLS" -v problems="$WORKER_PROBLEMS" <<'SQL'
\pset format unaligned
\pset tuples_only on
\pset fieldsep '\t'
CREATE TEMP TABLE chk (no serial, name text, ok boolean, detail text);
CREATE TEMP TABLE src AS
    SELECT id, content_hash FROM memmie.blobs WHERE created_by = 'user' AND content_type = 'text/plain';
-- the chain as the edges tell it: source -> stage 1 child -> stage 2 child
CREATE TEMP TABLE chain AS
    SELECT s.id AS src, e1.child_blob_id AS s1, e2.child_blob_id AS s2
    FROM src s
    LEFT JOIN memmie.blob_edges e1 ON e1.parent_blob_id = s.id AND e1.provider_id = 'e2e-upper'
    LEFT JOIN memmie.blob_edges e2 ON e2.parent_blob_id = e1.child_blob_id AND e2.provider_id = 'e2e-under';
CREATE TEMP TABLE pp AS
    SELECT * FROM memmie.provider_processing WHERE provider_id IN ('e2e-upper', 'e2e-under');

INSERT INTO chk (name, ok, detail)
SELECT 'the workers ran as memmie_e2e_worker: worker level only, no privilege on users'' tables',
       (SELECT array_agg(level) FROM memmie.grantees WHERE role_name = 'memmie_e2e_worker') = '{worker}'
           AND NOT has_table_privilege('memmie_e2e_worker', 'memmie.blobs', 'SELECT')
           AND NOT has_table_privilege('memmie_e2e_worker', 'memmie.jobs', 'SELECT,UPDATE')
           AND NOT has_function_privilege('memmie_e2e_worker', 'memmie.blob_content(uuid, integer)', 'EXECUTE')
           AND has_function_privilege('memmie_e2e_worker', 'memmie.processing_input(uuid, text)', 'EXECUTE'),
       (SELECT string_agg(level, ', ') FROM memmie.grantees WHERE role_name = 'memmie_e2e_worker');

INSERT INTO chk (name, ok, detail)
SELECT format('%s source blobs created by user', :n), count(*) = :n, count(*) || ' found' FROM src;

INSERT INTO chk (name, ok, detail)
SELECT format('%s processings, %s per provider, all completed', 2 * :n, :n),
       count(*) = 2 * :n AND count(*) FILTER (WHERE provider_id = 'e2e-upper') = :n
           AND count(*) FILTER (WHERE status = 'completed') = 2 * :n,
       format('%s rows (%s e2e-upper, %s e2e-under); by status: %s', count(*),
              count(*) FILTER (WHERE provider_id = 'e2e-upper'),
              count(*) FILTER (WHERE provider_id = 'e2e-under'),
              (SELECT string_agg(status || ' ' || c, ', ') FROM
                  (SELECT status, count(*) c FROM pp GROUP BY status) x))
FROM pp;

INSERT INTO chk (name, ok, detail)
SELECT 'one processing per (input blob, provider): each source by stage 1, each stage-1 blob by stage 2',
       count(*) = 0, format('%s blobs, e.g. %s', count(*),
                            array_to_string((array_agg(format('%s x%s', b.id, c)))[1:5], ', '))
FROM (SELECT b.id, (SELECT count(*) FROM pp WHERE pp.blob_id = b.id) c
      FROM memmie.blobs b WHERE b.content_type IN ('text/plain', 'text/x-stage1')) b
WHERE c <> 1;

INSERT INTO chk (name, ok, detail)
SELECT 'every processing has its job, completed, and no memmie.process job is left over or lost',
       count(*) FILTER (WHERE pp.id IS NULL OR j.id IS NULL OR j.status <> 'completed') = 0
           AND count(*) = 2 * :n,
       format('%s jobs; without processing: %s; processings without job: %s; not completed: %s',
              count(j.id), count(*) FILTER (WHERE pp.id IS NULL),
              count(*) FILTER (WHERE j.id IS NULL),
              count(*) FILTER (WHERE j.status <> 'completed'))
FROM pp FULL JOIN (SELECT * FROM memmie.jobs WHERE job_type = 'memmie.process') j ON j.id = pp.job_id;

INSERT INTO chk (name, ok, detail)
SELECT 'every event dispatched; one blob.created per blob, no blob.updated (no child rewritten)',
       count(*) FILTER (WHERE NOT processed) = 0
           AND count(*) FILTER (WHERE event_type = 'blob.created') = 3 * :n
           AND count(DISTINCT aggregate_id) FILTER (WHERE event_type = 'blob.created') = 3 * :n
           AND count(*) FILTER (WHERE event_type <> 'blob.created') = 0,
       format('%s events, %s undispatched, %s blob.created for %s blobs, %s others', count(*),
              count(*) FILTER (WHERE NOT processed), count(*) FILTER (WHERE event_type = 'blob.created'),
              count(DISTINCT aggregate_id) FILTER (WHERE event_type = 'blob.created'),
              count(*) FILTER (WHERE event_type <> 'blob.created'))
FROM memmie.events;

INSERT INTO chk (name, ok, detail)
SELECT format('exactly %s stage-1 and %s stage-2 blobs, each at version 1 with one delta', :n, :n),
       count(*) FILTER (WHERE created_by = 'e2e-upper' AND content_type = 'text/x-stage1') = :n
           AND count(*) FILTER (WHERE created_by = 'e2e-under' AND content_type = 'text/x-stage2') = :n
           AND count(*) = 3 * :n
           AND count(*) FILTER (WHERE version <> 1 OR nd <> 1) = 0,
       format('%s blobs: %s stage-1, %s stage-2; %s not at version 1 with one delta', count(*),
              count(*) FILTER (WHERE created_by = 'e2e-upper'), count(*) FILTER (WHERE created_by = 'e2e-under'),
              count(*) FILTER (WHERE version <> 1 OR nd <> 1))
FROM (SELECT b.*, (SELECT count(*) FROM memmie.deltas d WHERE d.blob_id = b.id) nd FROM memmie.blobs b) b;

INSERT INTO chk (name, ok, detail)
SELECT 'one child per (input blob, provider): no duplicate and no missing child, one version_map entry each',
       count(*) FILTER (WHERE c <> 1 OR vm <> 1) = 0,
       format('%s blobs, e.g. %s', count(*) FILTER (WHERE c <> 1 OR vm <> 1),
              array_to_string((array_agg(format('%s: %s children, %s version_map entries', id, c, vm))
                                   FILTER (WHERE c <> 1 OR vm <> 1))[1:5], '; '))
FROM (SELECT b.id, count(e.id) c, coalesce(max(jsonb_array_length(e.version_map)), 0) vm
      FROM memmie.blobs b
      LEFT JOIN memmie.blob_edges e ON e.parent_blob_id = b.id
      WHERE b.content_type IN ('text/plain', 'text/x-stage1')
      GROUP BY b.id) x;

INSERT INTO chk (name, ok, detail)
SELECT 'each processing and its job name the one child its edge leads to',
       count(*) FILTER (WHERE NOT good) = 0,
       format('%s of %s disagree', count(*) FILTER (WHERE NOT good), count(*))
FROM (SELECT pp.output_blob_id IS NOT NULL
             AND pp.metadata -> 'output_blob_ids' = jsonb_build_array(pp.output_blob_id)
             AND j.output -> 'output_blob_ids' = jsonb_build_array(pp.output_blob_id)
             AND EXISTS (SELECT FROM memmie.blob_edges e
                         WHERE e.parent_blob_id = pp.blob_id AND e.child_blob_id = pp.output_blob_id
                           AND e.provider_id = pp.provider_id) AS good
      FROM pp JOIN memmie.jobs j ON j.id = pp.job_id) x;

INSERT INTO chk (name, ok, detail)
SELECT 'every stage-2 blob holds its source''s text, upper-cased, spaces to underscores',
       count(*) FILTER (WHERE NOT good) = 0,
       format('%s of %s wrong or missing', count(*) FILTER (WHERE NOT good), count(*))
FROM (SELECT c.s2 IS NOT NULL
             AND convert_from(memmie.blob_content(c.s2), 'UTF8')
                 = translate(upper(convert_from(memmie.blob_content(c.src), 'UTF8')), ' ', '_') AS good
      FROM chain c) x;

INSERT INTO chk (name, ok, detail)
SELECT 'every stage-2 blob''s ancestors() and lineage() lead back to its source, created by user',
       count(*) FILTER (WHERE NOT good) = 0 AND count(*) = :n,
       format('%s stage-2 blobs, %s with a wrong lineage', count(*), count(*) FILTER (WHERE NOT good))
FROM (SELECT b.id,
             (SELECT array_agg(a.blob_id ORDER BY a.depth) FROM memmie.ancestors(b.id) a)
                 = ARRAY[c.s1, c.src]
             AND (SELECT created_by FROM memmie.blobs WHERE id = c.src) = 'user'
             AND b.root_blob_id = c.src
             AND EXISTS (SELECT FROM jsonb_array_elements(memmie.lineage(b.id) -> 'nodes') nd
                         WHERE (nd ->> 'blob_id')::uuid = c.src AND nd ->> 'created_by' = 'user'
                           AND (nd ->> 'depth')::int = -2) AS good
      FROM memmie.blobs b LEFT JOIN chain c ON c.s2 = b.id
      WHERE b.created_by = 'e2e-under') x;

-- the kills: mid-run, while holding jobs, and those jobs were taken back by live workers
INSERT INTO chk (name, ok, detail)
SELECT format('%s kill -9 mid-run, at least one while holding jobs', :kills),
       count(DISTINCT kill_no) = :kills AND max(completed_before) < 2 * :n
           AND count(job_id) > 0,
       format('%s kills at %s completed; %s jobs held by killed workers', count(DISTINCT kill_no),
              string_agg(DISTINCT completed_before::text, ', '), count(job_id))
FROM public.e2e_kills;

-- A job a killed worker held is either taken back after its lease ran out and completed by
-- another worker, or is the one job whose completion the killed worker's backend was already
-- running and still committed right after the kill (at most one per kill: a worker runs one job
-- at a time).
INSERT INTO chk (name, ok, detail)
SELECT 'jobs held by killed workers were taken back and completed once, by another worker',
       bool_and(done) AND count(*) FILTER (WHERE taken_back) > 0
           AND bool_and(taken_back OR by_victim) AND max(by_victim_per_kill) <= 1,
       format('%s jobs held at kills: %s taken back and completed by another worker, %s completed '
              'by the killed worker''s last transaction (at most %s per kill), %s not completed',
              count(*), count(*) FILTER (WHERE taken_back), count(*) FILTER (WHERE by_victim),
              max(by_victim_per_kill), count(*) FILTER (WHERE NOT done))
FROM (SELECT j.status = 'completed' AND pp.status = 'completed' AS done,
             j.retry_count > 0 AND pp.attempt_count >= 2
                 AND pp.metadata ->> 'worker_id' <> k.worker_id AS taken_back,
             pp.metadata ->> 'worker_id' = k.worker_id
                 AND pp.completed_at < k.killed_at + interval '1 second' AS by_victim,
             count(*) FILTER (WHERE pp.metadata ->> 'worker_id' = k.worker_id)
                 OVER (PARTITION BY k.kill_no) AS by_victim_per_kill
      FROM public.e2e_kills k
      JOIN memmie.jobs j ON j.id = k.job_id
      JOIN pp ON pp.job_id = j.id) x;

INSERT INTO chk (name, ok, detail)
SELECT 'the workers never crashed and stopped cleanly on SIGTERM', :'problems' = '',
       coalesce(nullif(:'problems', ''), 'ok');

INSERT INTO chk (name, ok, detail)
SELECT 'memmie.check(): counts, replay, hashes, accounting, edges all consistent', bool_and(c.ok),
       string_agg(c.check_name || ': ' || c.detail, '; ') FILTER (WHERE NOT c.ok)
FROM memmie.check() c;

UPDATE chk SET ok = false, detail = coalesce(detail, '') || ' (undecided: NULL)' WHERE ok IS NULL;
SELECT CASE WHEN ok THEN 'ok - ' || name ELSE 'FAIL - ' || name || ': ' || detail END
FROM chk ORDER BY no;
SELECT count(*) FILTER (WHERE ok) || ' passed, ' || count(*) FILTER (WHERE NOT ok) || ' failed' FROM chk;
SQL
) || { echo "$out"; echo "!!! the checks could not run (database $DB kept) !!!"; echo "0 passed, 1 failed"
       DONE=1; exit 1; }

if ! echo "$out" | tail -1 | grep -q ' passed, 0 failed$'; then
    for f in "$WORK"/worker*.log; do
        [ -f "$f" ] && { echo "--- last lines of $f:"; { grep -v ' DEBUG ' "$f" || true; } | tail -15; }
    done
    if [ "${E2E_CHECK_ONLY:-0}" = 1 ]; then echo "(database $DB kept)"
    else echo "(database $DB and worker logs in $WORK kept for inspection)"; fi
    echo "$out"
    DONE=1
    exit 1
fi
if [ "${E2E_CHECK_ONLY:-0}" = 1 ] || [ "${E2E_KEEP:-0}" = 1 ]; then
    echo "(database $DB kept)"
else
    DROP=1
fi
echo "total $(since "$T0")s"
echo "$out"
DONE=1

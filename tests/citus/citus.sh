#!/usr/bin/env bash
# tests/citus/citus.sh PGBIN WORKDIR: memmie on a 3-node Citus cluster (PostgreSQL 15).
#
# Starts a coordinator and two workers (tests/citus/cluster.sh: ports MEMMIE_CITUS_PORT, +1, +2;
# default 5710-5712; data directories under WORKDIR), runs CREATE EXTENSION memmie on the
# coordinator (Citus propagates it), then
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
DB=memmie_citus
source "$HERE/cluster.sh"
NODES=("${CITUS_NODES[@]}")

PASSED=0 FAILED=0
ok()     { PASSED=$((PASSED + 1)); echo "ok - $*"; }
not_ok() { FAILED=$((FAILED + 1)); echo "not ok - $*"; }
finish() { echo "$PASSED passed, $FAILED failed"; [ "$FAILED" = 0 ]; exit $?; }

# MEMMIE_CITUS_CONTROL=1 is the control run: the same cluster, workload and checks, but the steps
# and checks marked [distributed] are skipped, so memmie's tables stay local to the coordinator
# (the workload and the checks pass there; what fails in a real run fails because of Citus).
# MEMMIE_CITUS_KEEP=1 leaves the nodes running after the workload (to look at them by hand;
# stop them with pg_ctl -D WORKDIR/NODE/data stop) and skips the log checks.
[ -n "${MEMMIE_CITUS_KEEP:-}" ] || trap citus_cluster_stop EXIT

citus_cluster_start "$PGBIN" "$WORK" "$DB" || { not_ok "a 3-node Citus cluster"; finish; }
ok "3 nodes started (ports $(citus_port_of 0)-$(citus_port_of 2)), citus in each"
ok "workers added: $(node_psql 0 -d "$DB" -At -c "SELECT count(*) FROM pg_dist_node WHERE noderole = 'primary' AND isactive AND shouldhaveshards")"
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
# The upgrade on a cluster (README "Scaling out"): a database where memmie 0.2.0 runs with Citus
# (0.2.0 had no distribute(): its tables are the coordinator's), some writes, ALTER EXTENSION
# memmie UPDATE on the coordinator (Citus runs it on every node), then the post-upgrade step
# memmie.distribute(); the data is still there, writes work, check() finds nothing wrong.
if [ -f "$("$PGBIN/pg_config" --sharedir)/extension/memmie--0.2.0.sql" ]; then
    upgraded=$(citus_database memmie_citus_upgrade 2>&1 && node_psql 0 -d memmie_citus_upgrade -v ON_ERROR_STOP=1 -At <<'SQL' 2>&1
SET client_min_messages = warning;
CREATE EXTENSION memmie VERSION '0.2.0';
SELECT count(*) FROM (
    SELECT memmie.apply_delta((memmie.create_blob(format('%s-0000-4000-8000-000000000000', lpad(i::text, 8, '0'))::uuid,
                                                  convert_to('{"steps": ["write"]}', 'UTF8'), 'application/json')).id,
                              '[{"op": "add", "path": "/content/steps/-", "value": "review"}]')
    FROM generate_series(1, 6) i) s;
ALTER EXTENSION memmie UPDATE;
SELECT memmie.distribute() IS NOT NULL;
SELECT memmie.ensure_partitions() IS NOT NULL;   -- (the rows written so far wait in DEFAULT)
DO $$
DECLARE
    b uuid;
BEGIN   -- (memmie's functions called on the coordinator: in a query over a distributed table
        -- Citus would push the call into the query on each shard)
    FOR b IN SELECT id FROM memmie.blobs LOOP
        PERFORM memmie.apply_delta(b, '[{"op": "add", "path": "/content/steps/-", "value": "ship"}]');
    END LOOP;
END $$;
SELECT (SELECT string_agg(DISTINCT extversion, ',') FROM pg_extension WHERE extname = 'memmie')
       || ' ' || (SELECT count(*) FROM pg_dist_partition d WHERE d.logicalrelid::text LIKE 'memmie.%'
                    AND NOT EXISTS (SELECT FROM pg_inherits i WHERE i.inhrelid = d.logicalrelid))
       || ' ' || (SELECT count(*) FROM memmie.blob_versions) || ' ' || (SELECT bool_and(ok) FROM memmie.check())
       || ' ' || (SELECT string_agg(DISTINCT result, ',') FROM run_command_on_workers(
                      $$SELECT extversion FROM pg_extension WHERE extname = 'memmie'$$));
SQL
)
    want="$(sed -n 's/^default_version = .\(.*\)./\1/p' "$("$PGBIN/pg_config" --sharedir)/extension/memmie.control") 17 18 true"
    if [ "$(printf '%s\n' "$upgraded" | tail -1)" = "$want $(echo "$want" | cut -d' ' -f1)" ]; then
        ok "upgrade on the cluster: 0.2.0, ALTER EXTENSION memmie UPDATE, distribute(): $(printf '%s\n' "$upgraded" | tail -1)"
    else
        not_ok "upgrade on the cluster: 0.2.0, ALTER EXTENSION memmie UPDATE, distribute() (want: $want on every node)"
        printf '%s\n' "$upgraded" | tail -8 | sed 's/^/#   /'
    fi
else
    not_ok "upgrade on the cluster: memmie--0.2.0.sql is not installed (tests/upgrade/memmie--0.2.0.sql; .ci/dev installs it)"
fi

if [ -n "${MEMMIE_CITUS_KEEP:-}" ]; then
    echo "# the nodes keep running: $PGBIN/psql -h 127.0.0.1 -p $(citus_port_of 0) -U postgres $DB"; finish
fi
citus_cluster_stop
for i in "${!NODES[@]}"; do
    n=$(grep -c ' ERROR: ' "$(citus_dir_of "$i")/server.log")
    if [ "$n" = 0 ]; then ok "no ERROR in the log of ${NODES[$i]}"; else
        not_ok "$n ERRORs in the log of ${NODES[$i]} ($(citus_dir_of "$i")/server.log), the first:"
        grep ' ERROR: ' "$(citus_dir_of "$i")/server.log" | sed 's/^[^E]*ERROR: //' | sort | uniq -c | sort -rn | head -5 | sed 's/^/#   /'
    fi
done
finish

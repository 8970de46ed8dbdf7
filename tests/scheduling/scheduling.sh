#!/usr/bin/env bash
# Scheduling test: maintenance() run by memmie's background worker and by pg_cron (where there is
# one for this PostgreSQL: see MEMMIE_NO_PG_CRON below).
#   tests/scheduling/scheduling.sh PSQL [psql args...]
# The server must have been started with (see .ci/dev):
#   shared_preload_libraries = 'pg_cron,memmie', cron.database_name = 'memmie_sched',
#   cron.use_background_workers = on, memmie.maintenance_database = 'memmie_sched'
# and the database memmie_sched must exist. (memmie.maintenance_interval is set here with ALTER
# SYSTEM: a setting given on the server's command line could not be changed by a reload.) Prints "ok - ..." / "not ok - ..." per check and
# "N passed, M failed"; exits non-zero on failure.

set -uo pipefail
export PGOPTIONS="-c client_min_messages=warning"
PSQL=("$@" -X -q -v ON_ERROR_STOP=1 -At -d memmie_sched)
passed=0; failed=0
check() {   # check NAME EXPECTED GOT
    if [ "$2" = "$3" ]; then
        echo "ok - $1"; passed=$((passed + 1))
    else
        echo "not ok - $1"; echo "  expected: $2"; echo "  got:      $3"; failed=$((failed + 1))
    fi
}
q() { "${PSQL[@]}" -c "$1" 2>&1; }
# wait_for SECONDS QUERY: polls QUERY until it returns t (prints t or the last answer)
wait_for() {
    local deadline=$((SECONDS + $1)) got
    while :; do
        got=$(q "$2")
        if [ "$got" = t ] || [ $SECONDS -ge $deadline ]; then echo "$got"; return; fi
        sleep 0.5
    done
}

q "DROP EXTENSION IF EXISTS memmie CASCADE" >/dev/null
q "CREATE EXTENSION memmie" >/dev/null
q "SELECT memmie.ensure_partitions()" >/dev/null
q "ALTER SYSTEM SET memmie.maintenance_interval = 1" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null

# Objects planted in public by an unprivileged role, as in tests/pg_regress/sql/security.sql:
# each records that it ran. The worker runs maintenance() as a superuser, with the default
# search_path ("$user", public): none of them may run.
q "DROP ROLE IF EXISTS memmie_sched_mallory" >/dev/null
q "CREATE ROLE memmie_sched_mallory; GRANT USAGE, CREATE ON SCHEMA public TO memmie_sched_mallory" >/dev/null
q "CREATE TABLE public.shadow_hits (what text, who text); GRANT INSERT ON public.shadow_hits TO PUBLIC" >/dev/null
"${PSQL[@]}" >/dev/null <<'SQL'
SET ROLE memmie_sched_mallory;
CREATE FUNCTION public.s_hit(what text) RETURNS boolean LANGUAGE sql AS
    $$ INSERT INTO public.shadow_hits VALUES (what, current_user) RETURNING true $$;
CREATE FUNCTION public.s_eq_vt(a varchar, b text) RETURNS boolean LANGUAGE sql AS
    $$ SELECT public.s_hit('=(varchar,text)') AND a::pg_catalog.text OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR public.= (LEFTARG = varchar, RIGHTARG = text, FUNCTION = public.s_eq_vt);
CREATE FUNCTION public.s_eq_nt(a name, b text) RETURNS boolean LANGUAGE sql AS
    $$ SELECT public.s_hit('=(name,text)') AND a::pg_catalog.text OPERATOR(pg_catalog.=) b $$;
CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = text, FUNCTION = public.s_eq_nt);
CREATE FUNCTION public.s_ne_vv(a varchar, b varchar) RETURNS boolean LANGUAGE sql AS
    $$ SELECT public.s_hit('<>(varchar,varchar)') AND a::pg_catalog.text OPERATOR(pg_catalog.<>) b::pg_catalog.text $$;
CREATE OPERATOR public.<> (LEFTARG = varchar, RIGHTARG = varchar, FUNCTION = public.s_ne_vv);
CREATE FUNCTION public.format(f text, a text) RETURNS text LANGUAGE sql AS
    $$ SELECT CASE WHEN public.s_hit('format(text,text)') THEN pg_catalog.format(f, a) END $$;
SQL

# --- the background worker
check "the worker runs, in memmie_sched" "1|memmie_sched" \
    "$(q "SELECT count(*) || '|' || min(datname) FROM pg_stat_activity WHERE backend_type = 'memmie maintenance'")"
check "its settings are visible" "1s|memmie_sched" \
    "$(q "SELECT current_setting('memmie.maintenance_interval') || '|' || current_setting('memmie.maintenance_database')")"
q "SELECT memmie.record_api_call('00000000-0000-0000-0000-00000000e001', true, 7)" >/dev/null
q "SELECT memmie.enqueue_job('report', '00000000-0000-0000-0000-00000000e001', '{}', expires_at => now() - interval '1 minute', job_id => 'expired-e001')" >/dev/null
check "the worker ran maintenance(): usage folded, expired job removed" t \
    "$(wait_for 20 "SELECT NOT EXISTS (SELECT FROM memmie.usage_increments)
                           AND NOT EXISTS (SELECT FROM memmie.jobs WHERE id = 'expired-e001')
                           AND EXISTS (SELECT FROM memmie.usage_metrics WHERE user_id = '00000000-0000-0000-0000-00000000e001' AND api_calls = 1)")"
check "nothing planted in public ran inside the worker's maintenance()" 0 \
    "$(q "SELECT count(*) FROM public.shadow_hits")"
# turned off by a reload: nothing is folded any more
q "ALTER SYSTEM SET memmie.maintenance_interval = 0" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
sleep 3
q "SELECT memmie.record_api_call('00000000-0000-0000-0000-00000000e001', true, 7)" >/dev/null
sleep 4
check "memmie.maintenance_interval = 0 stops the runs (after a reload)" 1 \
    "$(q "SELECT count(*) FROM memmie.usage_increments")"
q "ALTER SYSTEM RESET memmie.maintenance_interval" >/dev/null
q "SELECT pg_reload_conf()" >/dev/null
check "the worker is still there" 1 \
    "$(q "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'memmie maintenance'")"

# --- pg_cron (MEMMIE_NO_PG_CRON says why it is missing: its checks are then skipped, not counted;
# only that schedule_maintenance() says pg_cron is needed is checked)
if [ -n "${MEMMIE_NO_PG_CRON:-}" ]; then
    echo "# skipped, not counted: the 5 pg_cron checks ($MEMMIE_NO_PG_CRON)"
    check "without pg_cron, schedule_maintenance() says it needs it" "ERROR" \
        "$(q "SELECT memmie.schedule_maintenance()" | grep -o '^ERROR' | head -1)"
else
q "CREATE EXTENSION pg_cron" >/dev/null
job=$(q "SELECT memmie.schedule_maintenance()")
check "schedule_maintenance() registers the job" "memmie-maintenance|*/15 * * * *|SELECT memmie.maintenance()|memmie_sched" \
    "$(q "SELECT jobname || '|' || schedule || '|' || command || '|' || database FROM cron.job WHERE jobid = $job")"
check "scheduling again changes the schedule of the same job" "$job|1" \
    "$(q "SELECT memmie.schedule_maintenance('* * * * *') || '|' || (SELECT count(*) FROM cron.job WHERE jobname = 'memmie-maintenance')")"
check "a bad schedule is refused" "ERROR" \
    "$(q "SELECT memmie.schedule_maintenance('every now and then')" | grep -o '^ERROR' | head -1)"
q "TRUNCATE memmie.usage_increments" >/dev/null
q "SELECT memmie.record_api_call('00000000-0000-0000-0000-00000000e002', false, 9)" >/dev/null
check "pg_cron runs maintenance() (within 75 s)" t \
    "$(wait_for 75 "SELECT EXISTS (SELECT FROM cron.job_run_details WHERE jobid = $job AND status = 'succeeded')
                           AND EXISTS (SELECT FROM memmie.usage_metrics WHERE user_id = '00000000-0000-0000-0000-00000000e002' AND api_errors = 1)")"
check "unschedule_maintenance() removes it" "t 0 f" \
    "$(echo $(q "SELECT memmie.unschedule_maintenance()") $(q "SELECT count(*) FROM cron.job WHERE jobname = 'memmie-maintenance'") $(q "SELECT memmie.unschedule_maintenance()"))"
fi
check "check() is all ok" t "$(q "SELECT bool_and(ok) FROM memmie.check()")"

# terminated by hand, the worker is started again (after its one-minute restart time)
pid=$(q "SELECT pid FROM pg_stat_activity WHERE backend_type = 'memmie maintenance'")
q "SELECT pg_terminate_backend($pid)" >/dev/null
check "pg_terminate_backend ends the worker, the postmaster starts it again (within 90 s)" t \
    "$(wait_for 90 "SELECT count(*) = 1 AND min(pid) <> $pid FROM pg_stat_activity WHERE backend_type = 'memmie maintenance'")"

check "nothing planted in public ran in any scheduled run" 0 "$(q "SELECT count(*) FROM public.shadow_hits")"
q "DROP OWNED BY memmie_sched_mallory CASCADE; DROP TABLE public.shadow_hits; DROP ROLE memmie_sched_mallory" >/dev/null
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]

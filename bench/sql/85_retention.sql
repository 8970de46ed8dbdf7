-- Retention of one day of BENCH_RETENTION_EVENTS events (default 1,000,000), all processed:
-- memmie.drop_old_partitions('memmie.events', '30 days') vs
-- DELETE FROM bench.ret_events WHERE created_at < now() - '30 days' on an identical copy.
--   * The day is 100 days ago (UTC) and has its own partition (memmie.create_partitions(
--     'memmie.events', day, 1)); its events are loaded with one INSERT ... SELECT generate_series
--     (blob.created events of one user, processed, spread over the day), with
--     session_replication_role = replica (no FK check per row).
--   * bench.ret_events: a plain table made LIKE memmie.events, with the primary key, the indexes
--     of a memmie partition and the foreign key; it gets every row memmie.events then holds
--     (the day and whatever earlier benchmarks left), autovacuum off (the VACUUM below is ours).
--   * Both are VACUUM ANALYZEd (steady state), then each side runs after a CHECKPOINT (the data
--     is days old: its pages were checkpointed long ago, so a DELETE writes full-page images).
-- Timed: the statement and its COMMIT, and the WAL it wrote (pg_current_wal_insert_lsn() before
-- and after). The DELETE only marks the rows dead: "DELETE, then VACUUM" adds the VACUUM that
-- reclaims them (run right after it, so its WAL is a lower bound). Row counts are checked before
-- and after: both sides remove the same rows and keep the same rows; a difference stops the
-- bench. Medians of BENCH_RUNS runs (default 3); each run reloads both sides (~1 min per run).
\getenv retention_events BENCH_RETENTION_EVENTS
\if :{?retention_events}
\else
\set retention_events 1000000
\endif
\ir runs.psql
\set ret_user '00000000-0000-0000-0000-0000000000ee'
\set retention '30 days'
SELECT (now() AT TIME ZONE 'UTC')::date - 100 AS old_day \gset
SELECT format('memmie.%I', 'events_' || to_char(:'old_day'::date, 'YYYY_MM_DD')) AS old_part \gset

INSERT INTO memmie.user_contexts (user_id) VALUES (:'ret_user') ON CONFLICT DO NOTHING;
CREATE TABLE bench.ret_events (LIKE memmie.events INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE)
    WITH (autovacuum_enabled = off);
SELECT bench.copy_shape('memmie.events', 'memmie.events_default', 'bench.ret_events');
CREATE TABLE bench.ret_times (run int, variant text, ms numeric, wal numeric);

-- Makes the day's partition, loads its n events, and copies memmie.events into bench.ret_events.
CREATE PROCEDURE bench.ret_load(n int, day date, uid uuid) LANGUAGE plpgsql AS $$
BEGIN
    PERFORM memmie.create_partitions('memmie.events', day, 1);
    PERFORM set_config('session_replication_role', 'replica', true);
    INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, user_id, payload, processed,
                               processed_at, created_at, position)
    SELECT 'blob.created', a, 'blob', uid,
           jsonb_build_object('blob_id', a, 'version', 1, 'delta_id', md5('ret delta ' || i)::uuid,
                              'operation', 'create', 'content_type', 'text/plain', 'created_by', 'user'),
           true, t + interval '2 seconds', t, i
    FROM generate_series(1, n) i,
         LATERAL (SELECT md5('ret blob ' || i)::uuid AS a,
                         day::timestamp AT TIME ZONE 'UTC' + (i - 1) * (86400.0 / n) * interval '1 second' AS t) x;
    COMMIT;
    PERFORM set_config('session_replication_role', 'replica', true);
    TRUNCATE bench.ret_events;
    INSERT INTO bench.ret_events SELECT * FROM memmie.events;
    COMMIT;
END $$;

-- Row counts: 'loaded' (both hold the same rows, n of them older than the cut, all processed)
-- or 'removed' (neither holds a row older than the cut; both lost exactly the n rows).
CREATE FUNCTION bench.ret_check(stage text, n int, older_than interval) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    m_old bigint; m_all bigint; c_old bigint; c_all bigint; pending bigint;
BEGIN
    SELECT count(*) FILTER (WHERE created_at < now() - older_than), count(*),
           count(*) FILTER (WHERE created_at < now() - older_than AND NOT processed)
    INTO m_old, m_all, pending FROM memmie.events;
    SELECT count(*) FILTER (WHERE created_at < now() - older_than), count(*) INTO c_old, c_all FROM bench.ret_events;
    IF stage = 'loaded' THEN
        IF m_old <> n OR c_old <> n OR m_all <> c_all OR pending <> 0 THEN
            RAISE EXCEPTION 'bench: loaded % old events of % (copy: % of %), % unprocessed; expected %', m_old, m_all, c_old, c_all, pending, n;
        END IF;
        PERFORM set_config('bench.ret_total', m_all::text, false);
    ELSIF m_old <> 0 OR c_old <> 0 OR m_all <> c_all OR m_all <> current_setting('bench.ret_total')::bigint - n THEN
        RAISE EXCEPTION 'bench: after retention memmie.events holds % old events of %, the copy % of %; expected 0 of %',
            m_old, m_all, c_old, c_all, current_setting('bench.ret_total')::bigint - n;
    END IF;
    RETURN format('%s: memmie.events %s rows (%s older than %s), the copy %s (%s)', stage, m_all, m_old, older_than, c_all, c_old);
END $$;

-- Timing and WAL of the statements between ret_mark and ret_stop (session settings: no WAL of
-- their own; the row is inserted after the LSN is read).
CREATE PROCEDURE bench.ret_mark() LANGUAGE sql AS $$
    SELECT set_config('bench.t0', clock_timestamp()::text, false), set_config('bench.lsn0', pg_current_wal_insert_lsn()::text, false)
$$;
CREATE PROCEDURE bench.ret_stop(run int, variant text) LANGUAGE sql AS $$
    INSERT INTO bench.ret_times
    SELECT run, variant, extract(epoch FROM clock_timestamp() - current_setting('bench.t0')::timestamptz) * 1000,
           pg_wal_lsn_diff(pg_current_wal_insert_lsn(), current_setting('bench.lsn0')::pg_lsn)
$$;

\set ON_ERROR_STOP 1
SELECT s FROM generate_series(1, :bench_runs) r
CROSS JOIN LATERAL (VALUES
    (1, format('CALL bench.ret_load(%s, %L, %L)', :retention_events, :'old_day', :'ret_user')),
    (2, format('VACUUM ANALYZE %s', :'old_part')),
    (3, 'VACUUM ANALYZE bench.ret_events'),
    (4, format('SELECT bench.ret_check(''loaded'', %s, %L) AS run_%s', :retention_events, :'retention', r)),
    (5, 'CHECKPOINT'),
    (6, 'CALL bench.ret_mark()'),
    (7, format($f$DO $d$ BEGIN IF memmie.drop_old_partitions('memmie.events', %L) <> 1 THEN RAISE EXCEPTION 'bench: no partition dropped'; END IF; END $d$$f$, :'retention')),
    (8, format('CALL bench.ret_stop(%s, ''drop'')', r)),
    (9, 'CHECKPOINT'),
    (10, 'CALL bench.ret_mark()'),
    (11, format('DELETE FROM bench.ret_events WHERE created_at < now() - interval %L', :'retention')),
    (12, format('CALL bench.ret_stop(%s, ''delete'')', r)),
    (13, 'CALL bench.ret_mark()'),
    (14, 'VACUUM bench.ret_events'),
    (15, format('CALL bench.ret_stop(%s, ''vacuum'')', r)),
    (16, format('SELECT bench.ret_check(''removed'', %s, %L) AS run_%s', :retention_events, :'retention', r))
) v(ord, s)
ORDER BY r, ord \gexec

SELECT run, variant, round(ms, 1) AS ms, wal AS wal_bytes FROM bench.ret_times ORDER BY run, variant;

-- Medians; "DELETE, then VACUUM" sums each run's two.
CREATE TEMP TABLE ret_sides AS
SELECT s.vord, s.variant, count(*) AS runs,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY s.ms)::numeric AS ms,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY s.wal)::numeric AS wal
FROM (SELECT 1 AS vord, 'memmie.drop_old_partitions' AS variant, run, ms, wal FROM bench.ret_times WHERE variant = 'drop'
      UNION ALL
      SELECT 2, 'DELETE ... WHERE created_at < now() - ''30 days''', run, ms, wal FROM bench.ret_times WHERE variant = 'delete'
      UNION ALL
      SELECT 3, 'DELETE, then VACUUM', run, sum(ms), sum(wal) FROM bench.ret_times
      WHERE variant IN ('delete', 'vacuum') GROUP BY run) s
GROUP BY s.vord, s.variant;
INSERT INTO bench.results (benchmark, variant, size, ms_median, per, runs)
SELECT 'retention: one day of events', variant, to_char(:retention_events, 'FM9,999,999,999') || ' events',
       round(ms, 3), format('ms per run incl. COMMIT; WAL %s bytes (%s)', round(wal), pg_size_pretty(round(wal))), runs
FROM ret_sides ORDER BY vord;

SELECT s.variant, round(s.ms, 1) AS ms_median, round(s.wal) AS wal_bytes, pg_size_pretty(round(s.wal)) AS wal,
       round(s.ms / nullif(m.ms, 0), 1) AS time_vs_memmie, round(s.wal / nullif(m.wal, 0), 1) AS wal_vs_memmie
FROM ret_sides s CROSS JOIN (SELECT ms, wal FROM ret_sides WHERE vord = 1) m ORDER BY s.vord;

DROP TABLE bench.ret_events;
DELETE FROM memmie.user_contexts WHERE user_id = :'ret_user';

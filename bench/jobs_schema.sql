-- The claim + complete benchmark (pgbench/*_claim_complete.sql): a plain table with
-- memmie.jobs' columns, defaults, checks, indexes and user FK, for the hand-written SKIP LOCKED
-- queue, and the refill run before every pgbench run (both queues emptied and refilled with the
-- same number of no-op jobs; run.sh then vacuums and analyzes the table).
DROP TABLE IF EXISTS bench.jobs;
CREATE TABLE bench.jobs (LIKE memmie.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES);
ALTER TABLE bench.jobs ADD FOREIGN KEY (user_id) REFERENCES memmie.user_contexts (user_id) ON DELETE CASCADE;
INSERT INTO memmie.user_contexts (user_id) VALUES ('00000000-0000-0000-0000-0000000000b0') ON CONFLICT DO NOTHING;

-- The same rows in both tables: what enqueue_job writes, with created_at / run_after 1 us apart
-- as if enqueued one per transaction (jobs enqueued by one statement share them; see the
-- report on idx_jobs_queued).
CREATE OR REPLACE PROCEDURE bench.refill_jobs(variant text, n int) LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp() - interval '1 hour';
BEGIN
    IF variant = 'memmie_claim_complete' THEN
        DELETE FROM memmie.jobs WHERE job_type = 'bench.noop';
        INSERT INTO memmie.jobs (job_type, user_id, input, created_at, run_after)
        SELECT 'bench.noop', '00000000-0000-0000-0000-0000000000b0', '{}', t, t
        FROM generate_series(1, n) i, LATERAL (SELECT t0 + i * interval '1 microsecond' AS t) x;
    ELSE
        DELETE FROM bench.jobs;
        INSERT INTO bench.jobs (job_type, user_id, input, created_at, run_after)
        SELECT 'bench.noop', '00000000-0000-0000-0000-0000000000b0', '{}', t, t
        FROM generate_series(1, n) i, LATERAL (SELECT t0 + i * interval '1 microsecond' AS t) x;
    END IF;
END $$;
-- queued jobs left after a run (0: the run ran dry, the tps is not a throughput)
CREATE OR REPLACE FUNCTION bench.jobs_left(variant text) RETURNS bigint LANGUAGE sql AS $$
    SELECT CASE WHEN variant = 'memmie_claim_complete'
                THEN (SELECT count(*) FROM memmie.jobs WHERE job_type = 'bench.noop' AND status = 'queued')
                ELSE (SELECT count(*) FROM bench.jobs WHERE status = 'queued') END
$$;

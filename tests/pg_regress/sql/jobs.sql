-- Jobs: enqueue (idempotent), claim (SKIP LOCKED, leases, expiry), heartbeat, complete, fail
-- (backoff, max_retries), cancel, and MM005 for a worker without the lease.
BEGIN;
SELECT id, job_type, status, retry_count, max_retries, input
FROM memmie.enqueue_job('email', '00000000-0000-0000-0000-0000000000e1', '{"to": "a@example.com"}', job_id => 'job-1');
-- idempotent on job_id: the existing job comes back unchanged
SELECT id, input FROM memmie.enqueue_job('email', '00000000-0000-0000-0000-0000000000e1', '{"to": "other"}', job_id => 'job-1');
SELECT count(*) AS jobs FROM memmie.jobs;
SELECT count(*) AS user_created FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000e1';
SELECT id FROM memmie.enqueue_job('email', '00000000-0000-0000-0000-0000000000e1', '{}', max_retries => 1, job_id => 'job-2');
SELECT id FROM memmie.enqueue_job('report', '00000000-0000-0000-0000-0000000000e1', '{}', job_id => 'job-3');
SELECT id FROM memmie.enqueue_job('email', '00000000-0000-0000-0000-0000000000e1', '{}', expires_at => now() - interval '1 second', job_id => 'job-expired');

SELECT t.err($$SELECT memmie.enqueue_job('', '00000000-0000-0000-0000-0000000000e1', '{}')$$) AS empty_type;
SELECT t.err($$SELECT memmie.enqueue_job('x', NULL, '{}')$$) AS null_user;
SELECT t.err($$SELECT memmie.enqueue_job('x', '00000000-0000-0000-0000-0000000000e1', NULL)$$) AS null_input;
SELECT t.err($$SELECT memmie.enqueue_job('x', '00000000-0000-0000-0000-0000000000e1', '{}', -1)$$) AS negative_retries;
SELECT t.err($$SELECT memmie.enqueue_job('x', '00000000-0000-0000-0000-0000000000e1', '{}', job_id => '')$$) AS empty_job_id;

-- claim: at most max_jobs, of the asked types, oldest first; expired jobs never handed out
SELECT id, status, worker_id, lease_expires_at > now() AS leased FROM memmie.claim_jobs('w1', 1);
SELECT id, worker_id FROM memmie.claim_jobs('w2', 10, job_types => ARRAY['report']);
SELECT id FROM memmie.claim_jobs('w2', 10, job_types => ARRAY['report']);
SELECT id, worker_id FROM memmie.claim_jobs('w2', 10, '1 millisecond');
SELECT id, status FROM memmie.jobs ORDER BY id;
SELECT t.err($$SELECT memmie.claim_jobs(NULL)$$) AS null_worker;
SELECT t.err($$SELECT memmie.claim_jobs('w', 0)$$) AS zero_jobs;
SELECT t.err($$SELECT memmie.claim_jobs('w', 1, '-1 second')$$) AS negative_lease;

-- heartbeat: only the holder; extends the lease, records progress
SELECT id, progress, lease_expires_at > now() + interval '4 minutes' AS extended FROM memmie.heartbeat_job('job-1', 'w1', 40);
SELECT t.err($$SELECT memmie.heartbeat_job('job-1', 'w2')$$) AS not_the_holder;
SELECT t.err($$SELECT memmie.heartbeat_job('job-1', 'w1', 101)$$) AS bad_progress;
SELECT t.err($$SELECT memmie.heartbeat_job('nope', 'w1')$$) AS missing_job;

-- complete: only the holder; then nobody holds it
SELECT id, status, progress, output FROM memmie.complete_job('job-1', 'w1', '{"sent": true}');
SELECT t.err($$SELECT memmie.complete_job('job-1', 'w1')$$) AS completed_twice;
SELECT t.err($$SELECT memmie.fail_job('job-1', 'w1', 'late')$$) AS fail_after_complete;

-- an expired lease is taken back by the next claim (one attempt used); the old holder gets MM005
SELECT pg_sleep(0.05);
SELECT id, worker_id, retry_count, status FROM memmie.claim_jobs('w3', 10);
SELECT t.err($$SELECT memmie.complete_job('job-2', 'w2')$$) AS lease_taken;
SELECT regexp_replace(error_message, ' at .*', ' at <time>') AS error_message FROM memmie.jobs WHERE id = 'job-2';

-- fail: retried after a backoff while attempts are left, then failed
SELECT id, status, retry_count, run_after > now() AS backing_off, error_message FROM memmie.fail_job('job-3', 'w2', 'timeout');
SELECT count(*) AS claimable_during_backoff FROM memmie.claim_jobs('w4', 10, job_types => ARRAY['report']);
UPDATE memmie.jobs SET run_after = now() - interval '1 second' WHERE id = 'job-3';
SELECT id, retry_count FROM memmie.claim_jobs('w4', 10, job_types => ARRAY['report']);
SELECT t.err($$SELECT memmie.fail_job('job-3', 'w4', NULL)$$) AS null_error;
SELECT id, status, retry_count, completed_at IS NOT NULL AS done FROM memmie.fail_job('job-3', 'w4', 'bad input', retryable => false);
-- job-2 has max_retries 1, used by the lease expiry: its next failure is final
SELECT id, status, retry_count FROM memmie.fail_job('job-2', 'w3', 'again');

-- cancel: queued or running jobs end; finished ones stay as they are
SELECT id, status FROM memmie.enqueue_job('email', '00000000-0000-0000-0000-0000000000e1', '{}', job_id => 'job-4');
SELECT id, status FROM memmie.cancel_job('job-4');
SELECT count(*) AS claimable_after_cancel FROM memmie.claim_jobs('w5', 10, job_types => ARRAY['email']);
SELECT id, status FROM memmie.cancel_job('job-1');
SELECT t.err($$SELECT memmie.cancel_job('nope')$$) AS missing_job;
SELECT id, status, retry_count FROM memmie.jobs ORDER BY id;

-- a claim of one job takes back every expired lease (up to 100 per call), not only one
SELECT count(*) AS enqueued FROM generate_series(1, 3) i,
       memmie.enqueue_job('sweep', '00000000-0000-0000-0000-0000000000e1', '{}', job_id => 'sweep-' || i);
SELECT count(*) AS claimed_with_short_leases FROM memmie.claim_jobs('w6', 3, '1 millisecond', ARRAY['sweep']);
SELECT pg_sleep(0.05);
SELECT id, worker_id, retry_count FROM memmie.claim_jobs('w7', 1, job_types => ARRAY['sweep']);
SELECT id, status, worker_id, retry_count FROM memmie.jobs WHERE job_type = 'sweep' ORDER BY id;
-- job_types: an empty array claims nothing (two sweep jobs are queued); a 2-D or not 1-based
-- array means its elements, as a plain array does
SELECT count(*) AS nothing_of_no_type FROM memmie.claim_jobs('w8', 1, job_types => '{}');
SELECT id FROM memmie.claim_jobs('w8', 1, job_types => '{{sweep}}');
SELECT id FROM memmie.claim_jobs('w8', 1, job_types => '[2:3]={nothing,sweep}');

-- a provider's processings are held while it is inactive or deprecated: not claimed, still
-- queued, claimed again once it is active
SELECT id, status FROM memmie.register_provider('{"id": "held", "name": "Held", "version": "1",
    "trigger_events": ["blob.created"], "supported_types": ["text/x-held"]}');
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000e1', 'hold me', 'text/x-held')).version;
SELECT memmie.dispatch_events(1000) > 0 AS dispatched;
SELECT id AS held_job FROM memmie.jobs WHERE job_type = 'memmie.process' AND input ->> 'provider_id' = 'held' \gset
SELECT id, status FROM memmie.set_provider_status('held', 'inactive');
SELECT count(*) AS claimed_one FROM memmie.claim_jobs('w9', 1, job_types => ARRAY['memmie.process']);
SELECT count(*) AS claimed_many FROM memmie.claim_jobs('w9', 10, job_types => ARRAY['memmie.process']);
SELECT count(*) AS claimed_of_types FROM memmie.claim_jobs('w9', 1, job_types => ARRAY['memmie.process', 'none']);
SELECT id, status FROM memmie.set_provider_status('held', 'deprecated');
SELECT count(*) AS claimed_deprecated FROM memmie.claim_jobs('w9', 10, job_types => ARRAY['memmie.process']);
SELECT j.status AS job_status, p.status AS processing_status
FROM memmie.jobs j JOIN memmie.provider_processing p ON p.job_id = j.id WHERE j.id = :'held_job';
SELECT id, status FROM memmie.set_provider_status('held', 'active');
SELECT id = :'held_job' AS held_job, status, worker_id, input ->> 'provider_id' AS provider_id
FROM memmie.claim_jobs('w9', 1, job_types => ARRAY['memmie.process']);
SELECT t.err($$SELECT memmie.set_provider_status('held', NULL)$$) AS null_status;

-- the columns check their values whoever writes them (domains: job_status, percent,
-- non_negative_int), and a running job needs a holder
SELECT t.err($$UPDATE memmie.jobs SET status = 'done' WHERE id = 'sweep-1'$$) AS unknown_status;
SELECT t.err($$UPDATE memmie.jobs SET progress = 101 WHERE id = 'sweep-1'$$) AS progress_over_100;
SELECT t.err($$UPDATE memmie.jobs SET retry_count = -1 WHERE id = 'sweep-1'$$) AS negative_retry_count;
SELECT t.err($$UPDATE memmie.jobs SET max_retries = -1 WHERE id = 'sweep-1'$$) AS negative_max_retries;
SELECT t.err($$UPDATE memmie.jobs SET status = 'running', worker_id = NULL WHERE id = 'job-2'$$) AS running_without_holder;
-- and the claim's partial indexes still serve queries on the domain-typed status
SET LOCAL enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT j.id FROM memmie.jobs j
WHERE j.status = 'queued' AND j.job_type >= 'sweep' AND j.job_type <= 'sweep'
ORDER BY j.job_type, j.run_after, j.created_at, j.id LIMIT 1;
EXPLAIN (COSTS OFF) SELECT j.id FROM memmie.jobs j WHERE j.status = 'running' AND j.lease_expires_at < now();
-- a completion finds its job by key, also in the generic plan that a function caches (with
-- a partial index on status = 'running', few running jobs in the statistics made the planner
-- read every running job's index entry instead; sequential scans are still off: the table is
-- small here)
ANALYZE memmie.jobs;
SET LOCAL plan_cache_mode = force_generic_plan;
PREPARE complete_one(text, text) AS
    UPDATE memmie.jobs x SET status = 'completed', lease_expires_at = NULL
    WHERE x.id = $1 AND x.status = 'running' AND x.worker_id = $2;
EXPLAIN (COSTS OFF) EXECUTE complete_one('sweep-1', 'w7');
DEALLOCATE complete_one;
-- a queue is vacuumed often: every claim steps over the entries of jobs claimed since the last
-- vacuum
SELECT reloptions FROM pg_class WHERE oid = 'memmie.jobs'::regclass;
ROLLBACK;

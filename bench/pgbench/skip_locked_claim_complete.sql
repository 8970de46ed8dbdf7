-- The same round hand-written on bench.jobs (memmie.jobs' columns and indexes): the usual
-- FOR UPDATE SKIP LOCKED claim setting the same lease columns, then a completion checked
-- against the lease holder. No validation, no expired-lease pass.
WITH next AS (
    SELECT id FROM bench.jobs
    WHERE status = 'queued' AND run_after <= now() AND (expires_at IS NULL OR expires_at > now())
      AND job_type = 'bench.noop'
    ORDER BY run_after, created_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE bench.jobs j
    SET status = 'running', worker_id = 'bench-' || :client_id, lease_expires_at = now() + interval '5 minutes',
        lease_duration = interval '5 minutes', heartbeat_at = now(), started_at = now(), progress = 0
    FROM next WHERE j.id = next.id
    RETURNING j.id
)
SELECT coalesce((SELECT id FROM claimed), '') AS job_id \gset
UPDATE bench.jobs
SET status = 'completed', output = NULL, progress = 100, completed_at = now(), lease_expires_at = NULL,
    error_message = NULL
WHERE id = ':job_id' AND status = 'running' AND worker_id = 'bench-' || :client_id;

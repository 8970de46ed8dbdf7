-- A worker's round on memmie's queue: claim one no-op job (one transaction), complete it
-- (another). An empty queue gives job_id '' and no completion (the run then says the queue
-- ran dry).
SELECT coalesce((SELECT id FROM memmie.claim_jobs('bench-' || :client_id, 1, job_types => '{bench.noop}')), '') AS job_id \gset
SELECT 1 FROM memmie.complete_job(':job_id', 'bench-' || :client_id) WHERE ':job_id' <> '';

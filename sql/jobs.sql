-- Jobs: a work queue claimed and completed from SQL, with leases.
--
-- A claimed job is `running` and leased to one worker until `lease_expires_at`; the worker
-- extends the lease with heartbeat_job and ends it with complete_job / fail_job. A lease that
-- expires is taken back by the next claim_jobs (counted as a failed attempt). Whoever no longer
-- holds the lease gets MM005 and changes nothing. Claims use FOR UPDATE SKIP LOCKED: concurrent
-- workers never wait for each other and never get the same job.

-- clock_timestamp(), declared STABLE: compared with it, lease_expires_at is an index condition
-- evaluated when a scan starts, and a cached plan stays valid (against a PL/pgSQL variable, the
-- planner guesses a third of the leases expired and plans the query anew on every call).
CREATE FUNCTION memmie._clock() RETURNS timestamptz
LANGUAGE internal STABLE PARALLEL SAFE AS 'clock_timestamp';

-- The job, row-locked; P0002 when it does not exist (or is not of user p_user, when given).
-- Locked by (id, user_id), one shard on a Citus cluster: without p_user, the job's user is read
-- first, without a lock. Where Citus is not installed (to_regclass(), a catalog cache lookup)
-- a job without p_user is locked by its id alone, one statement as before.
CREATE FUNCTION memmie._lock_job(p_job text, p_user uuid DEFAULT NULL) RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j memmie.jobs;
BEGIN
    PERFORM memmie._require(p_job, 'job_id');
    IF p_user IS NULL AND pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        SELECT * INTO j FROM memmie.jobs x WHERE x.id = p_job FOR UPDATE;
    ELSE
        IF p_user IS NULL THEN
            SELECT x.user_id INTO p_user FROM memmie.jobs x WHERE x.id = p_job;
        END IF;
        SELECT * INTO j FROM memmie.jobs x WHERE x.id = p_job AND x.user_id = p_user FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % does not exist', p_job USING ERRCODE = 'P0002';
    END IF;
    RETURN j;
END
$$;

-- MM005 unless worker holds the lease of job j.
CREATE FUNCTION memmie._check_lease(j memmie.jobs, p_worker text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM memmie._require(p_worker, 'worker_id');
    -- a job cancelled under its worker (its blob deleted, cancel_job) says why in the message
    IF j.status = 'cancelled' THEN
        RAISE EXCEPTION 'job % was cancelled%: worker % does not hold its lease any more', j.id,
            coalesce(' (' || j.error_message || ')', ''), p_worker
            USING ERRCODE = 'MM005', DETAIL = 'the job is cancelled';
    END IF;
    IF j.status <> 'running' OR j.worker_id IS DISTINCT FROM p_worker THEN
        RAISE EXCEPTION 'worker % does not hold the lease of job %', p_worker, j.id
            USING ERRCODE = 'MM005',
                  DETAIL = format('the job is %s%s', j.status,
                                  CASE WHEN j.status = 'running' THEN ', leased to ' || j.worker_id ELSE '' END);
    END IF;
END
$$;

CREATE FUNCTION memmie.enqueue_job(job_type text, user_id uuid, input jsonb, max_retries int DEFAULT 3,
                                   expires_at timestamptz DEFAULT NULL, job_id text DEFAULT NULL)
RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j memmie.jobs;
BEGIN
    PERFORM memmie._check_text(enqueue_job.job_type, 'job_type', 100);
    PERFORM memmie._acting_user(enqueue_job.user_id);
    PERFORM memmie._require(enqueue_job.input, 'input');
    IF enqueue_job.max_retries IS NULL OR enqueue_job.max_retries < 0 THEN
        RAISE EXCEPTION 'max_retries must be 0 or more, got %', enqueue_job.max_retries USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.job_id IS NOT NULL THEN
        PERFORM memmie._check_text(enqueue_job.job_id, 'job_id', 255);
    END IF;
    INSERT INTO memmie.user_contexts (user_id) VALUES (enqueue_job.user_id) ON CONFLICT DO NOTHING;
    -- A job id is unique: on a single node the primary key (id) says so. On a Citus cluster the
    -- key is (id, user_id) (distribute()), so an id the caller chooses is first looked for among
    -- the other users' jobs (every shard; two users enqueueing the same new id at the same
    -- moment are not caught there). Generated ids (uuids) need no look.
    IF enqueue_job.job_id IS NOT NULL AND memmie._distributed()
       AND EXISTS (SELECT 1 FROM memmie.jobs x
                   WHERE x.id = enqueue_job.job_id AND x.user_id <> enqueue_job.user_id) THEN
        RAISE EXCEPTION 'job id % is already in use', enqueue_job.job_id USING ERRCODE = '23505';
    END IF;
    -- (no conflict target: the key is (id) on a single node, (id, user_id) on a cluster)
    INSERT INTO memmie.jobs (id, job_type, user_id, input, max_retries, expires_at)
    VALUES (coalesce(enqueue_job.job_id, gen_random_uuid()::text), enqueue_job.job_type,
            enqueue_job.user_id, enqueue_job.input, enqueue_job.max_retries, enqueue_job.expires_at)
    ON CONFLICT DO NOTHING
    RETURNING * INTO j;
    IF FOUND THEN
        PERFORM pg_notify('memmie_jobs', j.job_type);
    ELSE
        -- idempotent: the job with this id exists already (when it is this user's)
        SELECT * INTO j FROM memmie.jobs x WHERE x.id = enqueue_job.job_id AND x.user_id = enqueue_job.user_id;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'job id % is already in use', enqueue_job.job_id USING ERRCODE = '23505';
        END IF;
    END IF;
    RETURN j;
END
$$;

-- The claim on a Citus cluster (claim_jobs takes this path when memmie._distributed()): there
-- jobs is distributed by user_id, and Citus refuses row locks (FOR UPDATE SKIP LOCKED) in a query
-- over many shards. So the claim is optimistic, in two steps:
--   1. candidates without row locks: one query over every shard, in claim_jobs' order (run_after,
--      created_at, id), a few more than needed (some may be taken meanwhile);
--   2. each candidate claimed by (id, user_id), one shard: FOR UPDATE SKIP LOCKED of the row with
--      its conditions checked again (status 'queued', due, not expired), then the UPDATE.
-- A job is never handed to two workers: step 2 locks the row and reads its latest committed
-- version (under READ COMMITTED a locked row is checked again as it is now), so of two workers
-- only the first sees it queued; the second skips it, or finds it running. A row another
-- session holds is skipped, not waited for, so one busy job does not stall the others. Up to
-- three rounds when candidates were taken by others (each goes on after the last one tried).
-- Expired leases are taken back the same way (at most 100 per call). No volatile function in
-- the UPDATEs (Citus refuses them): p_now is the call's clock_timestamp(). Callable on a single
-- node too (tests/isolation/specs/claim_race_sharded.spec); p_types in the plain form (or NULL).
CREATE FUNCTION memmie._claim_jobs_sharded(p_worker text, p_max int, p_lease interval, p_types text[],
                                           p_now timestamptz)
RETURNS SETOF memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids       text[];
    users     uuid[];
    v_id      text;
    v_user    uuid;
    v_msg     text;
    after_run timestamptz;
    after_at  timestamptz;
    after_id  text;
    last_run  timestamptz;
    last_at   timestamptz;
    limit_was int;
    j         memmie.jobs;
    n         int := 0;
BEGIN
    SELECT array_agg(x.id ORDER BY x.lease_expires_at), array_agg(x.user_id ORDER BY x.lease_expires_at)
    INTO ids, users
    FROM (SELECT e.id, e.user_id, e.lease_expires_at FROM memmie.jobs e
          WHERE e.status = 'running' AND e.lease_expires_at < p_now
          ORDER BY e.lease_expires_at
          LIMIT 100) x;
    FOR i IN 1 .. coalesce(cardinality(ids), 0) LOOP
        v_id := ids[i];
        v_user := users[i];
        -- (the message made here: format() of the row's columns is STABLE, which Citus refuses
        -- in a distributed UPDATE)
        SELECT format('lease of worker %s expired at %s', e.worker_id, e.lease_expires_at)
        INTO v_msg
        FROM memmie.jobs e
        WHERE e.id = v_id AND e.user_id = v_user
          AND e.status = 'running' AND e.lease_expires_at < p_now
        FOR UPDATE SKIP LOCKED;
        CONTINUE WHEN NOT FOUND;
        UPDATE memmie.jobs e
        SET status = CASE WHEN e.retry_count < e.max_retries THEN 'queued' ELSE 'failed' END,
            retry_count = least(e.retry_count + 1, e.max_retries),
            error_message = v_msg,
            completed_at = CASE WHEN e.retry_count < e.max_retries THEN NULL ELSE p_now END,
            run_after = p_now, worker_id = NULL, lease_expires_at = NULL
        WHERE e.id = v_id AND e.user_id = v_user;
    END LOOP;

    FOR r IN 1 .. 3 LOOP
        SELECT array_agg(x.id ORDER BY x.run_after, x.created_at, x.id),
               array_agg(x.user_id ORDER BY x.run_after, x.created_at, x.id),
               (array_agg(x.run_after ORDER BY x.run_after DESC, x.created_at DESC, x.id DESC))[1],
               (array_agg(x.created_at ORDER BY x.run_after DESC, x.created_at DESC, x.id DESC))[1]
        INTO ids, users, last_run, last_at
        FROM (SELECT e.id, e.user_id, e.run_after, e.created_at FROM memmie.jobs e
              WHERE e.status = 'queued' AND e.run_after <= p_now
                AND (e.expires_at IS NULL OR e.expires_at > p_now)
                AND (p_types IS NULL OR e.job_type = ANY (p_types))
                AND (after_id IS NULL OR (e.run_after, e.created_at, e.id::text) > (after_run, after_at, after_id))
                -- (SELECT 1: an empty select list trips citusdata/citus#5094)
                AND (e.job_type <> 'memmie.process' OR NOT EXISTS (
                         SELECT 1 FROM memmie.providers p
                         WHERE p.id = e.input ->> 'provider_id' AND p.status <> 'active'))
              ORDER BY e.run_after, e.created_at, e.id
              LIMIT 2 * (p_max - n) + 8) x;
        EXIT WHEN ids IS NULL;
        limit_was := 2 * (p_max - n) + 8;
        FOR i IN 1 .. cardinality(ids) LOOP
            v_id := ids[i];
            v_user := users[i];
            WITH l AS MATERIALIZED (
                SELECT e.id FROM memmie.jobs e
                WHERE e.id = v_id AND e.user_id = v_user
                  AND e.status = 'queued' AND e.run_after <= p_now
                  AND (e.expires_at IS NULL OR e.expires_at > p_now)
                FOR UPDATE SKIP LOCKED
            )
            UPDATE memmie.jobs e
            SET status = 'running', worker_id = p_worker,
                lease_expires_at = p_now + p_lease, lease_duration = p_lease,
                heartbeat_at = p_now, started_at = p_now, progress = 0
            FROM l WHERE e.id = l.id AND e.user_id = v_user
            RETURNING e.* INTO j;
            IF j.id IS NOT NULL THEN
                n := n + 1;
                RETURN NEXT j;
                IF n >= p_max THEN
                    RETURN;
                END IF;
                j := NULL;
            END IF;
        END LOOP;
        -- another round only when this one found as many as it asked for (there may be more)
        EXIT WHEN cardinality(ids) < limit_was;
        after_run := last_run;
        after_at := last_at;
        after_id := ids[cardinality(ids)];
    END LOOP;
END
$$;

CREATE FUNCTION memmie.claim_jobs(worker_id text, max_jobs int DEFAULT 1,
                                  lease interval DEFAULT '5 minutes', job_types text[] DEFAULT NULL)
RETURNS SETOF memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    t_now timestamptz;
BEGIN
    IF claim_jobs.worker_id IS NULL OR btrim(claim_jobs.worker_id) = '' OR length(claim_jobs.worker_id) > 255 THEN
        PERFORM memmie._check_text(claim_jobs.worker_id, 'worker_id', 255);
    END IF;
    IF claim_jobs.max_jobs IS NULL OR claim_jobs.max_jobs < 1 OR claim_jobs.max_jobs > 10000 THEN
        RAISE EXCEPTION 'max_jobs must be between 1 and 10000, got %', claim_jobs.max_jobs USING ERRCODE = '22023';
    END IF;
    IF claim_jobs.lease IS NULL OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, got %', claim_jobs.lease USING ERRCODE = '22023';
    END IF;
    -- Take back jobs whose lease expired (at most 100 per call): queued again (one more attempt
    -- used), or failed when none is left. (t_now is a variable, not clock_timestamp() in the
    -- query, so that both conditions are index conditions.)
    t_now := clock_timestamp();
    -- On a Citus cluster the claim goes shard by shard (memmie._claim_jobs_sharded, below); on a
    -- single node it stays the one-statement claim tuned here.
    IF memmie._distributed() THEN
        IF array_ndims(claim_jobs.job_types) > 1 OR array_lower(claim_jobs.job_types, 1) <> 1 THEN
            claim_jobs.job_types := ARRAY(SELECT unnest(claim_jobs.job_types));
        END IF;
        RETURN QUERY SELECT * FROM memmie._claim_jobs_sharded(claim_jobs.worker_id, claim_jobs.max_jobs,
                                                              claim_jobs.lease, claim_jobs.job_types, t_now);
        RETURN;
    END IF;
    -- (looked for first: a query costs a fraction of an UPDATE that finds nothing)
    IF EXISTS (SELECT FROM memmie.jobs j WHERE j.status = 'running' AND j.lease_expires_at < memmie._clock()) THEN
        WITH expired AS MATERIALIZED (
            SELECT j.id FROM memmie.jobs j
            WHERE j.status = 'running' AND j.lease_expires_at < t_now
            ORDER BY j.lease_expires_at
            LIMIT 100
            FOR UPDATE SKIP LOCKED
        )
        UPDATE memmie.jobs j
        SET status = CASE WHEN j.retry_count < j.max_retries THEN 'queued' ELSE 'failed' END,
            retry_count = least(j.retry_count + 1, j.max_retries),
            error_message = format('lease of worker %s expired at %s', j.worker_id, j.lease_expires_at),
            completed_at = CASE WHEN j.retry_count < j.max_retries THEN NULL ELSE t_now END,
            run_after = t_now, worker_id = NULL, lease_expires_at = NULL
        FROM expired e WHERE j.id = e.id;
    END IF;

    -- The claim is written twice on purpose. A LIMIT given as a parameter makes PostgreSQL plan
    -- the statement anew on every call (about half of a one-job claim's time) or, once it
    -- settles on a generic plan, sort every queued job. The usual worker's call, one job of one
    -- type, has its own statement with LIMIT 1, planned once: the type is a range of one value
    -- and leads the ORDER BY, so that only idx_jobs_queued_type gives the order (with an
    -- equality, the plan made without knowing the type guesses how much of the queue is of it
    -- and may walk idx_jobs_queued past every queued job of the other types). Every other call
    -- is planned with its arguments, where the conditions on job_types fold to the one that
    -- applies (one type: idx_jobs_queued_type; none: idx_jobs_queued).
    -- A provider's processings (job_type 'memmie.process', input.provider_id) are held while
    -- the provider is inactive or deprecated (set_provider_status): skipped, still queued, and
    -- handed out again once it is active. One primary-key lookup of memmie.providers per
    -- candidate, inside the cached plan.
    IF array_ndims(claim_jobs.job_types) > 1 OR array_lower(claim_jobs.job_types, 1) <> 1 THEN
        claim_jobs.job_types := ARRAY(SELECT unnest(claim_jobs.job_types));   -- the plain form
    END IF;
    IF claim_jobs.max_jobs = 1 AND cardinality(claim_jobs.job_types) = 1 THEN
        RETURN QUERY
        WITH c AS MATERIALIZED (
            SELECT j.id FROM memmie.jobs j
            WHERE j.status = 'queued' AND j.run_after <= t_now
              AND j.job_type >= claim_jobs.job_types[1] AND j.job_type <= claim_jobs.job_types[1]
              AND (j.expires_at IS NULL OR j.expires_at > t_now)
              AND (j.job_type <> 'memmie.process' OR NOT EXISTS (
                       SELECT FROM memmie.providers p
                       WHERE p.id = j.input ->> 'provider_id' AND p.status <> 'active'))
            ORDER BY j.job_type, j.run_after, j.created_at, j.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        UPDATE memmie.jobs j
        SET status = 'running', worker_id = claim_jobs.worker_id,
            lease_expires_at = t_now + claim_jobs.lease, lease_duration = claim_jobs.lease,
            heartbeat_at = t_now, started_at = t_now, progress = 0
        FROM c WHERE j.id = c.id
        RETURNING j.*;
    ELSE
        RETURN QUERY
        WITH c AS MATERIALIZED (
            SELECT j.id FROM memmie.jobs j
            WHERE j.status = 'queued' AND j.run_after <= t_now
              AND (j.expires_at IS NULL OR j.expires_at > t_now)
              AND (claim_jobs.job_types IS NULL
                   OR (cardinality(claim_jobs.job_types) = 1 AND j.job_type = claim_jobs.job_types[1])
                   OR (cardinality(claim_jobs.job_types) > 1 AND j.job_type = ANY (claim_jobs.job_types)))
              AND (j.job_type <> 'memmie.process' OR NOT EXISTS (
                       SELECT FROM memmie.providers p
                       WHERE p.id = j.input ->> 'provider_id' AND p.status <> 'active'))
            ORDER BY j.run_after, j.created_at, j.id
            LIMIT claim_jobs.max_jobs
            FOR UPDATE SKIP LOCKED
        )
        UPDATE memmie.jobs j
        SET status = 'running', worker_id = claim_jobs.worker_id,
            lease_expires_at = t_now + claim_jobs.lease, lease_duration = claim_jobs.lease,
            heartbeat_at = t_now, started_at = t_now, progress = 0
        FROM c WHERE j.id = c.id
        RETURNING j.*;
    END IF;
END
$$;

CREATE FUNCTION memmie.heartbeat_job(job_id text, worker_id text, progress int DEFAULT NULL)
RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j     memmie.jobs := memmie._lock_job(heartbeat_job.job_id);
    t_now timestamptz;
BEGIN
    PERFORM memmie._check_lease(j, heartbeat_job.worker_id);
    IF heartbeat_job.progress IS NOT NULL AND heartbeat_job.progress NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'progress must be between 0 and 100, got %', heartbeat_job.progress USING ERRCODE = '22023';
    END IF;
    -- the times first (j is locked): Citus refuses a volatile function in a distributed
    -- UPDATE's SET, and a stable one (timestamptz + interval) applied to a column
    t_now := clock_timestamp();
    UPDATE memmie.jobs x
    SET lease_expires_at = t_now + j.lease_duration, heartbeat_at = t_now,
        progress = coalesce(heartbeat_job.progress, x.progress)
    WHERE x.id = j.id AND x.user_id = j.user_id
    RETURNING * INTO j;
    RETURN j;
END
$$;

-- Completes the job if p_worker holds it and it is (p_processing) or is not a provider
-- processing; the completed row, or NULL when nothing matched. p_user: the job's user when the
-- caller knows it. Without it, a single node updates by id alone (one statement: the hot path
-- of complete_job); a Citus cluster reads the job's user first, so that the UPDATE goes to one
-- shard. (Whether Citus is there at all is asked first: to_regclass() is a catalog cache
-- lookup, a fraction of memmie._distributed()'s query, which a single node then never runs.)
CREATE FUNCTION memmie._complete_job(p_job text, p_worker text, p_output jsonb, p_processing boolean,
                                     p_user uuid DEFAULT NULL)
RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j     memmie.jobs;
    -- the time first: Citus refuses a volatile function in a distributed UPDATE's SET
    t_now timestamptz := clock_timestamp();
BEGIN
    IF p_user IS NULL THEN
        IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL OR NOT memmie._distributed() THEN
            UPDATE memmie.jobs x
            SET status = 'completed', output = p_output, progress = 100, completed_at = t_now,
                lease_expires_at = NULL, error_message = NULL
            WHERE x.id = p_job AND x.status = 'running' AND x.worker_id = p_worker
              AND (x.job_type = 'memmie.process') = p_processing
            RETURNING * INTO j;
            RETURN j;
        END IF;
        SELECT x.user_id INTO p_user FROM memmie.jobs x WHERE x.id = p_job;
        IF NOT FOUND THEN
            RETURN j;
        END IF;
    END IF;
    UPDATE memmie.jobs x
    SET status = 'completed', output = p_output, progress = 100, completed_at = t_now,
        lease_expires_at = NULL, error_message = NULL
    WHERE x.id = p_job AND x.user_id = p_user AND x.status = 'running' AND x.worker_id = p_worker
      AND (x.job_type = 'memmie.process') = p_processing
    RETURNING * INTO j;
    RETURN j;
END
$$;

CREATE FUNCTION memmie.complete_job(job_id text, worker_id text, output jsonb DEFAULT NULL)
RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j memmie.jobs;
BEGIN
    -- the common case in one statement: the holder completes its job
    j := memmie._complete_job(complete_job.job_id, complete_job.worker_id, complete_job.output, false);
    IF j.id IS NOT NULL THEN
        RETURN j;
    END IF;
    -- otherwise say why (or, if the job changed meanwhile, complete it after all)
    j := memmie._lock_job(complete_job.job_id);
    PERFORM memmie._check_lease(j, complete_job.worker_id);
    IF j.job_type = 'memmie.process' THEN
        RAISE EXCEPTION 'job % is a provider processing: finish it with complete_processing()', j.id
            USING ERRCODE = '22023';
    END IF;
    RETURN memmie._complete_job(j.id, complete_job.worker_id, complete_job.output, false, j.user_id);
END
$$;

CREATE FUNCTION memmie.fail_job(job_id text, worker_id text, error text, retryable boolean DEFAULT true)
RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    j     memmie.jobs := memmie._lock_job(fail_job.job_id);
    t_now timestamptz;
BEGIN
    PERFORM memmie._check_lease(j, fail_job.worker_id);
    PERFORM memmie._require(fail_job.error, 'error');
    PERFORM memmie._require(fail_job.retryable, 'retryable');
    -- retry after 1, 2, 4, ... seconds (at most an hour) while attempts are left (the times
    -- first, j is locked: Citus refuses a volatile function in a distributed UPDATE's SET, and a
    -- stable one (timestamptz + interval) applied to a column)
    t_now := clock_timestamp();
    UPDATE memmie.jobs x
    SET status = CASE WHEN fail_job.retryable AND x.retry_count < x.max_retries THEN 'queued' ELSE 'failed' END,
        run_after = t_now + least(power(2, j.retry_count), 3600) * interval '1 second',
        completed_at = CASE WHEN fail_job.retryable AND x.retry_count < x.max_retries THEN NULL
                            ELSE t_now END,
        retry_count = CASE WHEN fail_job.retryable AND x.retry_count < x.max_retries THEN x.retry_count + 1
                           ELSE x.retry_count END,
        error_message = fail_job.error, worker_id = NULL, lease_expires_at = NULL
    WHERE x.id = j.id AND x.user_id = j.user_id
    RETURNING * INTO j;
    RETURN j;
END
$$;

CREATE FUNCTION memmie.cancel_job(job_id text) RETURNS memmie.jobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    scope uuid := memmie._scope();
    j     memmie.jobs;
    -- (a variable: Citus refuses a volatile function in a distributed UPDATE's SET)
    t_now timestamptz := clock_timestamp();
BEGIN
    -- another user's job is not visible here: the same answer as a missing one (_lock_job with
    -- the scope)
    j := memmie._lock_job(cancel_job.job_id, scope);
    IF j.status IN ('queued', 'running') THEN
        UPDATE memmie.jobs x
        SET status = 'cancelled', completed_at = t_now, worker_id = NULL,
            lease_expires_at = NULL
        WHERE x.id = j.id AND x.user_id = j.user_id
        RETURNING * INTO j;
    END IF;
    RETURN j;
END
$$;

-- What is left to do, for a worker deciding whether it is idle: events not dispatched yet, and
-- jobs queued or running (of job_type when given). Counts only: no user's data. PL/pgSQL: a
-- LANGUAGE sql function whose parameter filters a distributed table cannot be planned by Citus.
CREATE FUNCTION memmie.pending_work(job_type text DEFAULT NULL)
RETURNS TABLE (undispatched_events bigint, open_jobs bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    SELECT (SELECT count(*) FROM memmie.events e WHERE NOT e.processed),
           (SELECT count(*) FROM memmie.jobs j
            WHERE j.status IN ('queued', 'running')
              AND (pending_work.job_type IS NULL OR j.job_type = pending_work.job_type));
END
$$;

-- The provider pipeline: events -> provider_processing (one per blob, provider, version) ->
-- jobs ('memmie.process', id = the processing id) -> workers -> derived blobs and deltas.

-- ---------------------------------------------------------------------------------------------
-- Queues provider p_providers[i] on blob p_blobs[i] at its current version, with p_metadata[i]:
-- one provider_processing row each (none where it exists already) and its job, which has the
-- processing's id (CHECK processing_job_id). The one place processings are made (dispatch_events,
-- backfill, reprocess); not a trigger, so a restore (pg_dump) loading both tables does not make
-- jobs again. Returns the ids of the processings it made.
CREATE FUNCTION memmie._queue_processing(p_blobs uuid[], p_providers text[], p_metadata jsonb[])
RETURNS uuid[]
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids uuid[];
BEGIN
    WITH queued AS (
        INSERT INTO memmie.provider_processing (id, job_id, blob_id, provider_id, provider_version,
                                                user_id, status, processed_version,
                                                current_blob_version, input_size, metadata)
        SELECT c.id, c.id::text, c.blob_id, c.provider_id, c.provider_version, c.user_id, 'pending',
               c.version, c.version, c.content_size, c.metadata
        FROM (SELECT gen_random_uuid() AS id, b.id AS blob_id, p.id AS provider_id,
                     p.version AS provider_version, b.user_id, b.version, b.content_size, u.metadata
              FROM unnest(p_blobs, p_providers, p_metadata) u(blob_id, provider_id, metadata)
              JOIN memmie.blobs b ON b.id = u.blob_id
              JOIN memmie.providers p ON p.id = u.provider_id) c
        ON CONFLICT ON CONSTRAINT unique_processing DO NOTHING
        RETURNING id, blob_id, provider_id, provider_version, user_id, processed_version
    ), jobs AS (
        INSERT INTO memmie.jobs (id, job_type, user_id, input, max_retries)
        SELECT r.id::text, 'memmie.process', r.user_id,
               jsonb_build_object('processing_id', r.id, 'blob_id', r.blob_id,
                                  'version', r.processed_version, 'provider_id', r.provider_id,
                                  'provider_version', r.provider_version),
               coalesce((p.processing_rules ->> 'max_retries')::int, 3)
        FROM queued r JOIN memmie.providers p ON p.id = r.provider_id
    )
    SELECT coalesce(array_agg(id), '{}') INTO ids FROM queued;
    IF cardinality(ids) > 0 THEN
        PERFORM pg_notify('memmie_jobs', 'memmie.process');
    END IF;
    RETURN ids;
END
$$;

-- A processing that disappears (its blob hard-deleted, directly or by a cascade) cancels its
-- job, so that no worker claims work nobody can complete.
CREATE FUNCTION memmie._cancel_orphan_jobs() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t_now timestamptz := clock_timestamp();
BEGIN
    UPDATE memmie.jobs j
    SET status = 'cancelled', completed_at = t_now, worker_id = NULL, lease_expires_at = NULL,
        -- (not format(): Citus refuses a stable function of a column in a distributed UPDATE)
        error_message = 'processing of blob ' || o.blob_id::text || ' was deleted'
    FROM memmie_old o
    WHERE j.id = o.id::text AND j.user_id = o.user_id AND j.status IN ('queued', 'running');
    RETURN NULL;
END
$$;
CREATE TRIGGER cancel_orphan_jobs AFTER DELETE ON memmie.provider_processing
    REFERENCING OLD TABLE AS memmie_old
    FOR EACH STATEMENT EXECUTE FUNCTION memmie._cancel_orphan_jobs();

-- The same for one row: on a Citus cluster a trigger runs on the shard, where transition tables
-- do not exist, so distribute() puts this row trigger (cancel_orphan_job) in the statement
-- trigger's place. The job has the processing's user: its UPDATE goes to the co-located shard.
CREATE FUNCTION memmie._cancel_orphan_job() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t_now timestamptz := clock_timestamp();
BEGIN
    UPDATE memmie.jobs j
    SET status = 'cancelled', completed_at = t_now, worker_id = NULL, lease_expires_at = NULL,
        error_message = 'processing of blob ' || OLD.blob_id::text || ' was deleted'
    WHERE j.id = OLD.id::text AND j.user_id = OLD.user_id AND j.status IN ('queued', 'running');
    RETURN NULL;
END
$$;

-- A processing follows its job: claimed -> processing, retried -> pending, failed, cancelled
-- -> skipped. (Completion is written by complete_processing itself.)
-- A running attempt that ends in a retry or a failure is a failed invocation of the provider:
-- it is counted in the user's usage with the time it took (sql/metrics.sql).
-- The trigger's WHEN clause only picks the processings' jobs; the rest of the condition is
-- here: a WHEN clause is read back from the catalog and planned by every UPDATE of jobs, so
-- every claim and completion of every other job would pay for a longer one.
CREATE FUNCTION memmie._sync_processing() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pr memmie.provider_processing;
    ms bigint;
BEGIN
    IF OLD.status IS NOT DISTINCT FROM NEW.status OR NEW.status = 'completed' THEN
        RETURN NULL;
    END IF;
    ms := CASE WHEN OLD.status = 'running' AND NEW.status IN ('queued', 'failed')
               THEN greatest(0, extract(epoch FROM clock_timestamp() - OLD.started_at) * 1000)::bigint END;
    UPDATE memmie.provider_processing pp
    SET status = CASE NEW.status WHEN 'running' THEN 'processing' WHEN 'queued' THEN 'pending'
                                 WHEN 'cancelled' THEN 'skipped' ELSE NEW.status END,
        started_at = CASE WHEN NEW.status = 'running' THEN NEW.started_at ELSE pp.started_at END,
        attempt_count = pp.attempt_count + (NEW.status = 'running')::int,
        error_message = CASE WHEN NEW.status = 'running' THEN pp.error_message ELSE NEW.error_message END,
        completed_at = CASE WHEN NEW.status IN ('failed', 'cancelled') THEN NEW.completed_at END,
        processing_time_ms = CASE WHEN NEW.status = 'failed' THEN ms ELSE pp.processing_time_ms END
    WHERE pp.id = NEW.id::uuid AND pp.user_id = NEW.user_id
    RETURNING * INTO pr;
    IF ms IS NOT NULL AND pr.id IS NOT NULL THEN
        INSERT INTO memmie.usage_increments (user_id, provider_id, provider_invocations, processing_time_ms)
        VALUES (pr.user_id, pr.provider_id, 1, ms);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER sync_processing AFTER UPDATE OF status ON memmie.jobs
    FOR EACH ROW WHEN (NEW.job_type = 'memmie.process')
    EXECUTE FUNCTION memmie._sync_processing();

-- ---------------------------------------------------------------------------------------------
-- Event positions

-- The event feed on a Citus cluster (_sequence_events takes this path when memmie._distributed()).
-- events is distributed by user_id: the single-node statement (one multi-shard UPDATE with a
-- locking subquery and nextval in it) is refused there, and worse, a reader could see half of
-- a sequencing round: the round commits on each worker in turn (two-phase commit), so a reader
-- in between might see position 10 (worker 1) and not yet 9 (worker 2), read past 9 and never
-- see it. So on the cluster:
--   1. Sequencing happens on the coordinator only, one session at a time: it waits for the
--      transaction advisory lock (pg_advisory_xact_lock, a lock of the coordinator), and
--      events_since holds the same lock while it reads (memmie.events_since). The lock is let go
--      only when the holder's transaction has ended on every node (PostgreSQL releases locks
--      after the commit callbacks, in which Citus commits the prepared transactions of the
--      workers), so a reader sees all of a round's positions or none of them.
--   2. Under the lock: the events without a position, in (created_at, id) order, read without
--      row locks (one query over every shard); their positions drawn from
--      memmie.event_position_seq on the coordinator in that order, after the lock was taken,
--      so every one is above every position given by an earlier round; then one UPDATE over
--      the shards writes them (a row another session changes meanwhile is waited for: the
--      dispatchers never wait for this one (they skip locked rows), so no deadlock).
-- Why no consumer misses an event: a reader sees a position only when the round that gave it
-- has committed everywhere (1). Every later round draws from the sequence after taking the lock,
-- so after that round, and gives only higher positions. An event not committed yet when a
-- round reads (or committed on a worker the round's read did not see yet) gets its position in
-- a later round: higher than any a reader may have seen. An event whose position was written
-- in a round that rolled back gets a new, higher one later. Numbers drawn and not used (an event
-- gone meanwhile) leave holes in the numbering, never an event below the reader's position.
-- Called on a worker it gives no positions (0): the sequence and the lock are the coordinator's.
CREATE FUNCTION memmie._sequence_events_sharded(p_max int) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids uuid[];
    pos bigint[];
    n   int;
BEGIN
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RETURN 0;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('memmie.sequence_events', 0));
    SELECT array_agg(x.id ORDER BY x.created_at, x.id) INTO ids
    FROM (SELECT e.id, e.created_at FROM memmie.events e
          WHERE e.position IS NULL
          ORDER BY e.created_at, e.id
          LIMIT p_max) x;
    IF ids IS NULL THEN
        RETURN 0;
    END IF;
    pos := ARRAY(SELECT nextval('memmie.event_position_seq') FROM generate_series(1, cardinality(ids)));
    UPDATE memmie.events e SET position = s.pos
    FROM unnest(ids, pos) s(id, pos)
    WHERE e.id = s.id AND e.position IS NULL;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- Gives the committed events that have none a position, in order. Only one session sequences
-- at a time and holds that right until it commits, so a position is never given out below one
-- that a reader may already have seen: a consumer of events_since() misses nothing.
CREATE FUNCTION memmie._sequence_events(p_max int DEFAULT 10000) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n int;
BEGIN
    IF memmie._distributed() THEN
        RETURN memmie._sequence_events_sharded(p_max);
    END IF;
    IF NOT pg_try_advisory_xact_lock(hashtextextended('memmie.sequence_events', 0)) THEN
        RETURN 0;   -- another session is sequencing; its positions appear when it commits
    END IF;
    UPDATE memmie.events e SET position = s.pos
    FROM (SELECT u.id, u.created_at, nextval('memmie.event_position_seq') AS pos
          FROM (SELECT x.id, x.created_at FROM memmie.events x
                WHERE x.position IS NULL
                ORDER BY x.created_at, x.id
                LIMIT p_max
                FOR UPDATE SKIP LOCKED) u) s
    WHERE e.id = s.id AND e.created_at = s.created_at;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE FUNCTION memmie.events_since(after_position bigint DEFAULT 0, max_events int DEFAULT 100)
RETURNS SETOF memmie.events
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM memmie._require(events_since.after_position, 'after_position');
    IF events_since.max_events IS NULL OR events_since.max_events < 1 OR events_since.max_events > 10000 THEN
        RAISE EXCEPTION 'max_events must be between 1 and 10000, got %', events_since.max_events
            USING ERRCODE = '22023';
    END IF;
    IF memmie._distributed() THEN
        IF NOT pg_catalog.citus_is_coordinator() THEN
            RAISE EXCEPTION 'memmie.events_since() runs on the Citus coordinator, not on a worker'
                USING ERRCODE = '55000',
                      DETAIL = 'the positions of the feed are given and read under a lock of the coordinator';
        END IF;
        -- reads under the sequencing lock, which _sequence_events_sharded takes: no round of
        -- positions is half committed meanwhile (see there)
    END IF;
    PERFORM memmie._sequence_events();
    RETURN QUERY SELECT * FROM memmie.events e
                 WHERE e.position > events_since.after_position
                 ORDER BY e.position
                 LIMIT events_since.max_events;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Dispatch

-- The (blob, provider) pairs provider p may process now: live blobs at their current version,
-- of a type and size p accepts, not produced or last changed by p itself, above the derivation
-- depth limit. p_blobs limits the blobs (NULL: all).
CREATE FUNCTION memmie._matches(p memmie.providers, b memmie.blobs, v memmie.blob_versions)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p.status OPERATOR(pg_catalog.=) 'active'
       AND b.deleted_at IS NULL AND NOT v.deleted AND v.version OPERATOR(pg_catalog.=) b.version
       AND b.created_by OPERATOR(pg_catalog.<>) p.id AND v.created_by OPERATOR(pg_catalog.<>) p.id
       AND b.depth OPERATOR(pg_catalog.<) memmie._max_derivation_depth()
       AND memmie._provider_accepts(p, v.content_type, v.content_size)
$$;

-- dispatch_events on a Citus cluster (it takes this path when memmie._distributed()): events is
-- distributed by user_id and Citus refuses FOR UPDATE SKIP LOCKED over many shards. So:
--   1. the undispatched events, oldest first, without row locks (one query over every shard);
--   2. user by user (one shard each), those of them still undispatched are locked (FOR UPDATE
--      SKIP LOCKED) and marked processed in one statement: an event another dispatcher holds
--      or has marked meanwhile is left to it, so with two dispatchers at once each event is
--      dispatched once, and neither waits for the other; up to three rounds of 1 and 2 (each
--      going on after the last event the one before tried) while fewer than p_max were marked;
--   3. the events marked matched with the providers as on a single node, the joins between
--      blobs and versions on (id, user_id) (co-located), and their processings queued.
-- processed_at is the call's clock_timestamp() (Citus refuses a volatile function in a
-- distributed UPDATE). Callable on a single node too (tests/isolation/specs/dispatch_race_sharded.spec).
CREATE FUNCTION memmie._dispatch_events_sharded(p_max int) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t_now     timestamptz := clock_timestamp();
    users     uuid[];
    ids       uuid[];
    u         uuid;
    uids      uuid[];
    after_at  timestamptz;
    after_id  uuid;
    last_at   timestamptz;
    limit_was int;
    ev_id     uuid[] := '{}';
    ev_at     timestamptz[] := '{}';
    ev_type   text[] := '{}';
    ev_agg    uuid[] := '{}';
    ev_aggt   text[] := '{}';
    ev_pay    jsonb[] := '{}';
    ev_user   uuid[] := '{}';
    blobs     uuid[];
    providers text[];
    metadata  jsonb[];
BEGIN
    FOR r IN 1 .. 3 LOOP
        SELECT array_agg(x.user_id ORDER BY x.created_at, x.id), array_agg(x.id ORDER BY x.created_at, x.id),
               max(x.created_at)
        INTO users, ids, last_at
        FROM (SELECT e.user_id, e.id, e.created_at FROM memmie.events e
              WHERE e.processed = false
                AND (after_at IS NULL OR (e.created_at, e.id) > (after_at, after_id))
              ORDER BY e.created_at, e.id
              LIMIT p_max - cardinality(ev_id)) x;
        limit_was := p_max - cardinality(ev_id);
        EXIT WHEN ids IS NULL;
        FOR u, uids IN SELECT x.u, array_agg(x.id) FROM unnest(users, ids) x(u, id) GROUP BY x.u LOOP
            WITH c AS MATERIALIZED (
                SELECT e.id, e.created_at FROM memmie.events e
                WHERE e.user_id = u AND e.processed = false AND e.id = ANY (uids)
                FOR UPDATE SKIP LOCKED
            ), marked AS (
                UPDATE memmie.events e SET processed = true, processed_at = t_now
                FROM c WHERE e.user_id = u AND e.id = c.id AND e.created_at = c.created_at
                RETURNING e.id, e.created_at, e.event_type, e.aggregate_id, e.aggregate_type, e.payload
            )
            SELECT ev_id || coalesce(array_agg(m.id), '{}'), ev_at || coalesce(array_agg(m.created_at), '{}'),
                   ev_type || coalesce(array_agg(m.event_type::text), '{}'), ev_agg || coalesce(array_agg(m.aggregate_id), '{}'),
                   ev_aggt || coalesce(array_agg(m.aggregate_type::text), '{}'), ev_pay || coalesce(array_agg(m.payload), '{}'),
                   ev_user || coalesce(array_agg(u), '{}')
            INTO ev_id, ev_at, ev_type, ev_agg, ev_aggt, ev_pay, ev_user
            FROM marked m;
        END LOOP;
        -- another round only when this one found as many as it asked for (there may be more)
        EXIT WHEN cardinality(ev_id) >= p_max OR cardinality(ids) < limit_was;
        after_at := last_at;
        after_id := ids[cardinality(ids)];
    END LOOP;
    IF cardinality(ev_id) = 0 THEN
        RETURN 0;
    END IF;
    SELECT array_agg(m.blob_id), array_agg(m.provider_id), array_agg(m.metadata)
    INTO blobs, providers, metadata
    FROM (SELECT DISTINCT ON (b.user_id, b.id, p.id) b.id AS blob_id, p.id AS provider_id,
                 jsonb_build_object('event_id', ev.id, 'event_type', ev.event_type) AS metadata
          FROM unnest(ev_id, ev_at, ev_type, ev_agg, ev_aggt, ev_pay, ev_user)
                   AS ev(id, created_at, event_type, aggregate_id, aggregate_type, payload, user_id)
          JOIN memmie.blobs b ON ev.aggregate_type = 'blob' AND b.id = ev.aggregate_id AND b.user_id = ev.user_id
          JOIN memmie.blob_versions v ON v.blob_id = b.id AND v.user_id = b.user_id
               AND v.version = (ev.payload ->> 'version')::int
          JOIN memmie.providers p ON ev.event_type = ANY (p.trigger_events)
          LEFT JOIN memmie.blob_versions pv ON pv.blob_id = b.id AND pv.user_id = b.user_id
               AND pv.version = v.version - 1
          -- (the rows spelled out: a whole-row reference would be a shard's row type on a worker)
          WHERE memmie._matches(ROW(p.*)::memmie.providers, ROW(b.*)::memmie.blobs, ROW(v.*)::memmie.blob_versions)
            AND NOT (ev.event_type = 'blob.updated'
                     AND (p.processing_rules ->> 'content_changes_only')::boolean IS TRUE
                     AND pv.content_hash IS NOT DISTINCT FROM v.content_hash AND pv.version IS NOT NULL)
          ORDER BY b.user_id, b.id, p.id, ev.created_at) m;
    PERFORM memmie._queue_processing(blobs, providers, metadata);
    RETURN cardinality(ev_id);
END
$$;

CREATE FUNCTION memmie.dispatch_events(max_events int DEFAULT 100) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    n         int;
    blobs     uuid[];
    providers text[];
    metadata  jsonb[];
BEGIN
    IF dispatch_events.max_events IS NULL OR dispatch_events.max_events < 1
       OR dispatch_events.max_events > 100000 THEN
        RAISE EXCEPTION 'max_events must be between 1 and 100000, got %', dispatch_events.max_events
            USING ERRCODE = '22023';
    END IF;
    IF memmie._distributed() THEN
        RETURN memmie._dispatch_events_sharded(dispatch_events.max_events);
    END IF;
    WITH ev AS MATERIALIZED (
        SELECT e.id, e.created_at, e.event_type, e.aggregate_id, e.aggregate_type, e.payload
        FROM memmie.events e
        WHERE e.processed = false
        ORDER BY e.created_at, e.id
        LIMIT dispatch_events.max_events
        FOR UPDATE SKIP LOCKED
    ), marked AS (
        UPDATE memmie.events e SET processed = true, processed_at = clock_timestamp()
        FROM ev WHERE e.id = ev.id AND e.created_at = ev.created_at
        RETURNING 1
    ), matched AS (
        SELECT DISTINCT ON (b.id, p.id) b.id AS blob_id, p.id AS provider_id,
               jsonb_build_object('event_id', ev.id, 'event_type', ev.event_type) AS metadata
        FROM ev
        JOIN memmie.blobs b ON ev.aggregate_type = 'blob' AND b.id = ev.aggregate_id
        JOIN memmie.blob_versions v ON v.blob_id = b.id
             AND v.version = (ev.payload ->> 'version')::int
        JOIN memmie.providers p ON ev.event_type = ANY (p.trigger_events)
        LEFT JOIN memmie.blob_versions pv ON pv.blob_id = b.id AND pv.version = v.version - 1
        WHERE memmie._matches(p, b, v)
          -- a provider with processing_rules.content_changes_only skips a blob.updated that kept
          -- the content (a tag or metadata edit)
          AND NOT (ev.event_type = 'blob.updated'
                   AND (p.processing_rules ->> 'content_changes_only')::boolean IS TRUE
                   AND pv.content_hash IS NOT DISTINCT FROM v.content_hash AND pv.version IS NOT NULL)
        ORDER BY b.id, p.id, ev.created_at
    )
    SELECT (SELECT count(*) FROM marked), array_agg(m.blob_id), array_agg(m.provider_id), array_agg(m.metadata)
    INTO n, blobs, providers, metadata
    FROM matched m;
    PERFORM memmie._queue_processing(blobs, providers, metadata);
    RETURN n;
END
$$;

CREATE FUNCTION memmie._require_provider(p_provider text) RETURNS memmie.providers
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    p memmie.providers;
BEGIN
    SELECT * INTO p FROM memmie.providers x WHERE x.id = memmie._require(p_provider, 'provider_id');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'provider % does not exist', p_provider USING ERRCODE = 'P0002';
    END IF;
    RETURN p;
END
$$;

CREATE FUNCTION memmie.backfill(provider_id text) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p         memmie.providers := memmie._require_provider(backfill.provider_id);
    blobs     uuid[];
    providers text[];
    metadata  jsonb[];
    ids       uuid[];
BEGIN
    IF p.status <> 'active' THEN
        RAISE EXCEPTION 'provider % is %, not active', p.id, p.status USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(b.id), array_agg(p.id::text), array_agg('{"backfill": true}'::jsonb)
    INTO blobs, providers, metadata
    FROM memmie.blobs b
    JOIN memmie.blob_versions v ON v.blob_id = b.id AND v.version = b.version AND v.user_id = b.user_id
    WHERE b.deleted_at IS NULL AND memmie._matches(p, b, v);
    ids := memmie._queue_processing(blobs, providers, metadata);
    RETURN cardinality(ids);
END
$$;

CREATE FUNCTION memmie.reprocess(blob_id uuid, provider_id text) RETURNS uuid
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p     memmie.providers := memmie._require_provider(reprocess.provider_id);
    b     memmie.blobs;
    pr    memmie.provider_processing;
    ids   uuid[];
    t_now timestamptz;
BEGIN
    SELECT * INTO b FROM memmie.blobs x WHERE x.id = memmie._require(reprocess.blob_id, 'blob_id');
    IF NOT FOUND OR b.deleted_at IS NOT NULL THEN
        RAISE EXCEPTION 'blob % does not exist', reprocess.blob_id USING ERRCODE = 'P0002';
    END IF;
    ids := memmie._queue_processing(ARRAY[b.id], ARRAY[p.id::text], ARRAY['{"reprocess": true}'::jsonb]);
    IF cardinality(ids) > 0 THEN
        RETURN ids[1];
    END IF;
    -- processed at this version before: run it again (its job is queued anew), by the
    -- provider's current version, which the processing records and the job's input names
    SELECT * INTO pr FROM memmie.provider_processing x
    WHERE x.blob_id = b.id AND x.user_id = b.user_id AND x.provider_id = p.id
      AND x.processed_version = b.version;
    PERFORM memmie._lock_job(pr.job_id, pr.user_id);
    -- (the time in a variable: Citus refuses a volatile function in a distributed UPDATE's SET)
    t_now := clock_timestamp();
    UPDATE memmie.jobs j
    SET status = 'queued', retry_count = 0, run_after = t_now, worker_id = NULL,
        lease_expires_at = NULL, completed_at = NULL, output = NULL, error_message = NULL, progress = 0,
        input = j.input || jsonb_build_object('provider_version', p.version)
    WHERE j.id = pr.job_id AND j.user_id = pr.user_id AND j.status NOT IN ('queued', 'running');
    IF FOUND THEN
        UPDATE memmie.provider_processing x
        SET status = 'pending', provider_version = p.version, error_message = NULL,
            completed_at = NULL, queued_at = t_now,
            metadata = x.metadata || '{"reprocess": true}'
        WHERE x.id = pr.id AND x.user_id = pr.user_id;
        PERFORM pg_notify('memmie_jobs', 'memmie.process');
    END IF;
    RETURN pr.id;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Results

-- The processing, after locking its job: MM005 unless worker holds the job's lease.
CREATE FUNCTION memmie._leased_processing(p_processing uuid, p_worker text)
RETURNS memmie.provider_processing
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pr memmie.provider_processing;
    j  memmie.jobs;
BEGIN
    SELECT * INTO pr FROM memmie.provider_processing x
    WHERE x.id = memmie._require(p_processing, 'processing_id');
    IF NOT FOUND THEN
        -- deleted with its blob: its job, cancelled then, says so to the worker that had it
        SELECT * INTO j FROM memmie.jobs x WHERE x.id = p_processing::pg_catalog.text;
        IF FOUND THEN
            PERFORM memmie._check_lease(j, p_worker);
        END IF;
        RAISE EXCEPTION 'processing % does not exist', p_processing USING ERRCODE = 'P0002';
    END IF;
    PERFORM memmie._check_lease(memmie._lock_job(pr.job_id, pr.user_id), p_worker);
    RETURN pr;
END
$$;

-- The bytes of an output child: "content" (text, or any other JSON value as its text) or
-- "content_base64".
CREATE FUNCTION memmie._child_bytes(c jsonb, i int) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF c ? 'content' AND c ? 'content_base64' THEN
        RAISE EXCEPTION 'outputs.children[%] has both content and content_base64', i USING ERRCODE = '22023';
    ELSIF jsonb_typeof(c -> 'content_base64') = 'string' THEN
        BEGIN
            RETURN decode(c ->> 'content_base64', 'base64');
        EXCEPTION WHEN invalid_parameter_value OR invalid_text_representation THEN
            RAISE EXCEPTION 'outputs.children[%].content_base64 is not valid base64', i USING ERRCODE = '22023';
        END;
    ELSIF jsonb_typeof(c -> 'content') = 'string' THEN
        RETURN convert_to(c ->> 'content', 'UTF8');
    ELSIF c ? 'content' AND jsonb_typeof(c -> 'content') <> 'null' THEN
        RETURN convert_to((c -> 'content')::text, 'UTF8');
    END IF;
    RAISE EXCEPTION 'outputs.children[%] needs content or content_base64 (a string)', i USING ERRCODE = '22023';
END
$$;

-- The input of a processing, for the worker that holds its job's lease (MM005 otherwise): the
-- blob version it processes, its content (NULL for content kept outside PostgreSQL: then
-- storage_backend and storage_path say where) and type, and the provider version's definition.
-- The one way a worker-level role reads users' content: only while it holds the work.
CREATE FUNCTION memmie.processing_input(processing_id uuid, worker_id text)
RETURNS TABLE (blob_id uuid, version int, content_type text, content bytea, metadata jsonb,
               provider_id text, provider_version text, definition jsonb,
               storage_backend text, storage_path text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    pr memmie.provider_processing;
    j  memmie.jobs;
    v  memmie.blob_versions;
    c  memmie.content_storage;
BEGIN
    SELECT * INTO pr FROM memmie.provider_processing x
    WHERE x.id = memmie._require(processing_input.processing_id, 'processing_id');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'processing % does not exist', processing_input.processing_id USING ERRCODE = 'P0002';
    END IF;
    SELECT * INTO j FROM memmie.jobs x WHERE x.id = pr.job_id AND x.user_id = pr.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'processing % has no job: worker % does not hold it', pr.id, processing_input.worker_id
            USING ERRCODE = 'MM005';
    END IF;
    PERFORM memmie._check_lease(j, processing_input.worker_id);
    SELECT * INTO v FROM memmie.blob_versions x
    WHERE x.blob_id = pr.blob_id AND x.version = pr.processed_version AND x.user_id = pr.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % has no version %', pr.blob_id, pr.processed_version USING ERRCODE = 'P0002';
    END IF;
    -- the content's row first, then the bytes: in one query with content_storage, Citus would
    -- push _content() down to the shard, where it cannot query a distributed table
    SELECT * INTO c FROM memmie.content_storage x WHERE x.content_hash = v.content_hash;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT v.blob_id, v.version, v.content_type::text,
           CASE WHEN c.storage_backend = 'postgres' THEN memmie._content(v.content_hash) END,
           v.metadata, pr.provider_id::text, pr.provider_version::text,
           (SELECT pv.definition FROM memmie.provider_versions pv
            WHERE pv.provider_id = pr.provider_id AND pv.version = pr.provider_version),
           c.storage_backend::text, c.storage_path;
END
$$;

CREATE FUNCTION memmie.complete_processing(processing_id uuid, worker_id text, outputs jsonb)
RETURNS SETOF memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    pr        memmie.provider_processing;
    created   boolean;
    p         memmie.providers;
    b         memmie.blobs;
    child     memmie.blobs;
    c         jsonb;
    i         int := 0;
    k         int;
    ttype     text;
    caused_by uuid;
    cause     jsonb;
    d         memmie.deltas;
    patch_id  uuid;
    patch_err text;
    out_ids   uuid[] := '{}';
    out_size  bigint := 0;
    content   bytea;
    first_delta uuid;
    first_out uuid;
    t_now     timestamptz;
BEGIN
    -- the job is locked and its lease checked from here on
    pr := memmie._leased_processing(complete_processing.processing_id, complete_processing.worker_id);
    PERFORM memmie._require(complete_processing.outputs, 'outputs');
    IF jsonb_typeof(complete_processing.outputs) <> 'object' THEN
        RAISE EXCEPTION 'outputs must be a JSON object, got %', jsonb_typeof(complete_processing.outputs)
            USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT FROM jsonb_object_keys(complete_processing.outputs) key
               WHERE key NOT IN ('children', 'patch', 'metadata')) THEN
        RAISE EXCEPTION 'outputs may hold only "children", "patch" and "metadata"' USING ERRCODE = '22023';
    END IF;
    IF complete_processing.outputs ? 'children' AND jsonb_typeof(complete_processing.outputs -> 'children') <> 'array' THEN
        RAISE EXCEPTION 'outputs.children must be an array' USING ERRCODE = '22023';
    END IF;
    IF complete_processing.outputs ? 'patch' AND jsonb_typeof(complete_processing.outputs -> 'patch') <> 'array' THEN
        RAISE EXCEPTION 'outputs.patch must be a JSON Patch (an array of operations)' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO p FROM memmie.providers x WHERE x.id = pr.provider_id;
    IF p.output_schema IS NOT NULL THEN
        PERFORM memmie._validate_json(p.output_schema, complete_processing.outputs,
                                      format('output of provider %s', p.id));
    END IF;

    b := memmie._lock_blob(pr.blob_id, pr.user_id);
    IF b.deleted_at IS NOT NULL THEN
        -- the input was deleted while it was processed: nothing to attach the outputs to
        t_now := clock_timestamp();
        UPDATE memmie.provider_processing x
        SET status = 'skipped', completed_at = t_now,
            error_message = format('blob %s was deleted before the processing completed', b.id)
        WHERE x.id = pr.id AND x.user_id = pr.user_id;
        PERFORM memmie._complete_job(pr.job_id, complete_processing.worker_id,
                                     jsonb_build_object('skipped', 'input deleted'), true, pr.user_id);
        RETURN;
    END IF;
    SELECT v.delta_id INTO caused_by FROM memmie.blob_versions v
    WHERE v.blob_id = b.id AND v.version = pr.processed_version AND v.user_id = b.user_id;
    cause := jsonb_build_object('processing_id', pr.id, 'provider_id', p.id,
                                'provider_version', pr.provider_version,
                                'event_id', pr.metadata -> 'event_id',
                                'event_type', pr.metadata -> 'event_type');

    -- a patch of the input: recorded pending, then applied, or failed when it no longer applies
    IF complete_processing.outputs ? 'patch' THEN
        INSERT INTO memmie.deltas (blob_id, user_id, operation, provider_id, patch, from_version,
                                   to_version, caused_by_delta_id, caused_by_event, status)
        VALUES (b.id, b.user_id, 'transform', p.id, complete_processing.outputs -> 'patch', b.version,
                b.version + 1, caused_by, cause, 'pending')
        RETURNING id INTO patch_id;
        BEGIN
            d := memmie._apply_patch(b, complete_processing.outputs -> 'patch', p.id, caused_by, cause,
                                     patch_id);
        EXCEPTION WHEN invalid_parameter_value OR SQLSTATE 'MM007' OR SQLSTATE 'MM002'
                       OR program_limit_exceeded THEN
            patch_err := SQLERRM;
            UPDATE memmie.deltas x SET status = 'failed', error_message = patch_err
            WHERE x.id = patch_id AND x.user_id = b.user_id;
        END;
        SELECT * INTO b FROM memmie.blobs x WHERE x.id = b.id AND x.user_id = b.user_id;
    END IF;

    -- children: a new derived blob each, or a new version of the child this provider derived
    -- from this input before (matched by transform_type, in order)
    FOR c IN SELECT x FROM jsonb_array_elements(coalesce(complete_processing.outputs -> 'children', '[]')) x LOOP
        IF jsonb_typeof(c) <> 'object' THEN
            RAISE EXCEPTION 'outputs.children[%] must be an object', i USING ERRCODE = '22023';
        END IF;
        IF jsonb_typeof(c -> 'content_type') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'outputs.children[%].content_type must be a string', i USING ERRCODE = '22023';
        END IF;
        IF c ? 'metadata' AND jsonb_typeof(c -> 'metadata') <> 'object' THEN
            RAISE EXCEPTION 'outputs.children[%].metadata must be an object', i USING ERRCODE = '22023';
        END IF;
        IF c ? 'tags' AND (jsonb_typeof(c -> 'tags') <> 'array'
                           OR jsonb_path_exists(c -> 'tags', '$[*] ? (@.type() != "string")')) THEN
            RAISE EXCEPTION 'outputs.children[%].tags must be an array of strings', i USING ERRCODE = '22023';
        END IF;
        IF c ? 'transform_type' AND jsonb_typeof(c -> 'transform_type') <> 'string' THEN
            RAISE EXCEPTION 'outputs.children[%].transform_type must be a string', i USING ERRCODE = '22023';
        END IF;
        content := memmie._child_bytes(c, i);
        ttype := memmie._check_text(coalesce(c ->> 'transform_type', 'derived'), 'transform_type', 255);
        -- the k-th child of this transform type in the outputs matches the k-th existing one
        SELECT count(*) INTO k FROM jsonb_array_elements(complete_processing.outputs -> 'children')
                                    WITH ORDINALITY o(x, n)
        WHERE o.n <= i AND coalesce(o.x ->> 'transform_type', 'derived') = ttype;
        -- (the edges' children as a list, the blobs of the input's user locked: on a Citus cluster
        -- a row lock is refused in a join of distributed tables, and this one goes to one shard)
        SELECT cb.* INTO child FROM memmie.blobs cb
        WHERE cb.user_id = b.user_id AND cb.deleted_at IS NULL
          AND cb.id = ANY (ARRAY(SELECT e.child_blob_id FROM memmie.blob_edges e
                                 WHERE e.parent_blob_id = b.id AND e.user_id = b.user_id AND e.provider_id = p.id
                                   AND e.transform_type = ttype))
        ORDER BY cb.created_at, cb.id
        OFFSET k LIMIT 1
        FOR NO KEY UPDATE;
        created := NOT FOUND;
        IF NOT created THEN
            -- a new version of that child: new content, type, metadata and tags
            child := memmie._replace_content(child, content, c ->> 'content_type', p.id, caused_by, cause,
                                             coalesce(c -> 'metadata', '{}'),
                                             ARRAY(SELECT jsonb_array_elements_text(coalesce(c -> 'tags', '[]'))));
        ELSE
            child := memmie._derive(ARRAY[b.id], p.id, ttype, content, c ->> 'content_type',
                                    coalesce(c -> 'metadata', '{}'),
                                    ARRAY(SELECT jsonb_array_elements_text(coalesce(c -> 'tags', '[]'))),
                                    caused_by, cause, NULL);
        END IF;
        UPDATE memmie.blob_edges e
        SET version_map = CASE WHEN created THEN '[]'::jsonb ELSE e.version_map END
                          || jsonb_build_array(jsonb_build_object('parent_version', pr.processed_version,
                                                                  'child_version', child.version))
        WHERE e.parent_blob_id = b.id AND e.child_blob_id = child.id AND e.provider_id = p.id
          AND e.user_id = b.user_id;
        IF first_delta IS NULL THEN
            first_delta := memmie._head_delta(child);
        END IF;
        out_ids := out_ids || child.id;
        out_size := out_size + length(content);
        i := i + 1;
        RETURN NEXT child;
    END LOOP;
    IF d.id IS NOT NULL THEN
        RETURN NEXT b;
    END IF;

    -- (the time, the first output and what is added to the metadata computed first: Citus
    -- refuses volatile functions in a distributed UPDATE's SET and stable ones in a CASE or
    -- COALESCE there, and Citus 13.2 crashes on an array subscript of a variable there)
    t_now := clock_timestamp();
    first_out := out_ids[1];
    cause := jsonb_build_object('output_blob_ids', to_jsonb(out_ids))
             || CASE WHEN patch_id IS NULL THEN '{}'::jsonb
                     ELSE jsonb_build_object('patch_status', CASE WHEN patch_err IS NULL THEN 'applied' ELSE 'failed' END)
                END
             || coalesce(complete_processing.outputs -> 'metadata', '{}');
    out_size := out_size + coalesce(length((complete_processing.outputs -> 'patch')::text), 0);
    UPDATE memmie.provider_processing x
    SET status = 'completed', completed_at = t_now,
        processing_time_ms = (extract(epoch FROM t_now - x.started_at) * 1000)::int,
        output_size = out_size,
        output_blob_id = first_out,
        output_delta_id = coalesce(patch_id, first_delta),
        current_blob_version = b.version,
        error_message = patch_err,
        metadata = x.metadata || cause
    WHERE x.id = pr.id AND x.user_id = pr.user_id
    RETURNING * INTO pr;
    INSERT INTO memmie.usage_increments (user_id, blobs_processed, provider_id, provider_invocations,
                                         processing_time_ms)
    VALUES (pr.user_id, 1, pr.provider_id, 1, coalesce(pr.processing_time_ms, 0));
    PERFORM memmie._complete_job(pr.job_id, complete_processing.worker_id,
                                 jsonb_build_object('output_blob_ids', to_jsonb(out_ids), 'output_delta_id', patch_id),
                                 true, pr.user_id);
END
$$;

CREATE FUNCTION memmie.fail_processing(processing_id uuid, worker_id text, error text,
                                       retryable boolean DEFAULT true)
RETURNS memmie.provider_processing
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    pr memmie.provider_processing;
BEGIN
    pr := memmie._leased_processing(fail_processing.processing_id, fail_processing.worker_id);
    PERFORM memmie.fail_job(pr.job_id, fail_processing.worker_id, fail_processing.error,
                            fail_processing.retryable);
    SELECT * INTO pr FROM memmie.provider_processing x
    WHERE x.id = fail_processing.processing_id AND x.user_id = pr.user_id;
    RETURN pr;
END
$$;

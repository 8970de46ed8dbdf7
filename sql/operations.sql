-- Operations: garbage collection of content, the routine upkeep (maintenance()) and its schedule.
-- (The view refreshes maintenance() runs are in views.sql.)

-- On a Citus cluster: content_storage.reference_count := the number of version rows naming each
-- content, summed from user_content_refs (the exact references, per user, kept at once on the
-- users' nodes), for the contents whose stored count differs. Returns how many it changed. A
-- recount as of this statement: references made or removed by transactions still running are
-- not in it (docs/schema.md "Counting on Citus").
CREATE FUNCTION memmie._recount_references() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n bigint;
    m bigint;
BEGIN
    UPDATE memmie.content_storage c SET reference_count = r.n
    FROM (SELECT u.content_hash, pg_catalog.sum(u.reference_count)::pg_catalog.int4 AS n
          FROM memmie.user_content_refs u GROUP BY u.content_hash) r
    WHERE c.content_hash OPERATOR(pg_catalog.=) r.content_hash
      AND c.reference_count OPERATOR(pg_catalog.<>) r.n;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE memmie.content_storage c SET reference_count = 0
    WHERE c.reference_count OPERATOR(pg_catalog.<>) 0
      AND c.content_hash OPERATOR(pg_catalog.<>) ALL (SELECT u.content_hash FROM memmie.user_content_refs u);
    GET DIAGNOSTICS m = ROW_COUNT;
    RETURN n OPERATOR(pg_catalog.+) m;
END
$$;

-- gc_content on a Citus cluster, a fan-out that trusts no stored count: content_storage is
-- distributed by content_hash and a content's references (user_content_refs) lie on the nodes of
-- its users, so no row lock can cover both, and Citus refuses row locks in multi-shard queries.
-- 1. the reference counts recounted (_recount_references); 2. the candidates, without locks:
-- count 0 and last touched before p_cutoff; 3. each locked on its own shard (FOR UPDATE SKIP
-- LOCKED: a writer referencing it holds it FOR KEY SHARE, put_content, and is skipped), in
-- batches; 4. the locked ones still not named by any user_content_refs row (a multi-shard read,
-- after the locks: a reference committed before is seen) are deleted. A writer that committed on
-- the content's node but not yet on its user's node when the read runs is not seen: it has
-- touched last_accessed (memmie._touch_content), so the content is past the cutoff only when the
-- grace is shorter than a minute plus that writer's transaction (the default grace: an hour).
-- One run at a time (a transaction advisory lock; a second one waits for the first to commit).
-- Each run moves one row per referenced content through the coordinator (the recount).
CREATE FUNCTION memmie._gc_content_distributed(p_cutoff timestamptz)
RETURNS TABLE (content_hash text, storage_backend text, storage_path text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    candidates text[];
    locked     text[];
    referenced text[];
    h          text;
    i          int := 0;
    batch      constant int := 1000;
BEGIN
    -- one at a time (until commit): two recounts would lock the same rows on many shards at once
    PERFORM pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended('memmie.gc_content', 0));
    PERFORM memmie._recount_references();
    SELECT pg_catalog.array_agg(c.content_hash) INTO candidates
    FROM memmie.content_storage c
    WHERE c.reference_count OPERATOR(pg_catalog.=) 0 AND c.last_accessed OPERATOR(pg_catalog.<) p_cutoff;
    WHILE i OPERATOR(pg_catalog.<) coalesce(pg_catalog.cardinality(candidates), 0) LOOP
        locked := '{}';
        FOREACH h IN ARRAY candidates[i OPERATOR(pg_catalog.+) 1 : i OPERATOR(pg_catalog.+) batch] LOOP
            PERFORM FROM memmie.content_storage c
            WHERE c.content_hash OPERATOR(pg_catalog.=) h AND c.last_accessed OPERATOR(pg_catalog.<) p_cutoff
            FOR UPDATE SKIP LOCKED;
            IF FOUND THEN
                locked := locked OPERATOR(pg_catalog.||) h;
            END IF;
        END LOOP;
        i := i OPERATOR(pg_catalog.+) batch;
        CONTINUE WHEN pg_catalog.cardinality(locked) OPERATOR(pg_catalog.=) 0;
        SELECT pg_catalog.array_agg(DISTINCT u.content_hash::pg_catalog.text) INTO referenced
        FROM memmie.user_content_refs u WHERE u.content_hash OPERATOR(pg_catalog.=) ANY (locked);
        RETURN QUERY
        DELETE FROM memmie.content_storage c
        WHERE c.content_hash OPERATOR(pg_catalog.=) ANY (locked)
          AND c.content_hash OPERATOR(pg_catalog.<>) ALL (coalesce(referenced, '{}'))
        RETURNING c.content_hash::pg_catalog.text, c.storage_backend::pg_catalog.text, c.storage_path;
    END LOOP;
END
$$;

-- Deletes content no blob version references (reference_count = 0) that nobody touched for
-- longer than grace, and returns it (storage_path: external bytes for the caller to delete).
-- Contents a writer is referencing right now are locked by put_content and skipped; contents
-- this transaction itself has started to reference (counted when it commits) are kept. On a
-- Citus cluster: a fan-out over candidates, each deleted on its own shard after a re-check
-- (_gc_content_distributed), which also recounts reference_count.
CREATE FUNCTION memmie.gc_content(grace interval DEFAULT '1 hour')
RETURNS TABLE (content_hash text, storage_backend text, storage_path text)
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    IF gc_content.grace IS NULL OR gc_content.grace < interval '0' THEN
        RAISE EXCEPTION 'grace must be a non-negative interval, got %', gc_content.grace USING ERRCODE = '22023';
    END IF;
    IF memmie._distributed() THEN
        RETURN QUERY SELECT * FROM memmie._gc_content_distributed(clock_timestamp() - gc_content.grace);
        RETURN;
    END IF;
    RETURN QUERY
    WITH garbage AS MATERIALIZED (
        SELECT c.content_hash FROM memmie.content_storage c
        WHERE c.reference_count = 0 AND c.last_accessed < clock_timestamp() - gc_content.grace
          AND c.content_hash NOT IN (SELECT p.content_hash FROM memmie._pending_references() p WHERE p.n > 0)
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM memmie.content_storage c USING garbage g
    WHERE c.content_hash = g.content_hash AND c.reference_count = 0
    RETURNING c.content_hash::text, c.storage_backend::text, c.storage_path;
END
$$;

-- The retention of versions: a user whose quota_limits has keep_versions = N (N >= 1) keeps the
-- latest N versions of each live blob; squash_history removes the older ones. Returns how many
-- versions were removed. Run by maintenance() (before gc_content, which then takes the contents
-- only those versions used once their grace period has passed), blob by blob in user order,
-- each taking its user's and its blob's locks as any writer does.
CREATE FUNCTION memmie._apply_keep_versions() RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r     record;
    total bigint := 0;
BEGIN
    FOR r IN
        SELECT b.id, b.user_id, b.version - q.keep + 1 AS before_version
        FROM memmie.user_contexts u
        CROSS JOIN LATERAL (SELECT floor((u.quota_limits ->> 'keep_versions')::numeric) AS keep) q
        JOIN memmie.blobs b ON b.user_id = u.user_id AND b.deleted_at IS NULL
        WHERE q.keep >= 1 AND b.version > q.keep
          AND (SELECT min(v.version) FROM memmie.blob_versions v WHERE v.blob_id = b.id AND v.user_id = b.user_id)
              < b.version - q.keep + 1
        ORDER BY b.user_id, b.id
    LOOP
        BEGIN
            -- (with its user as the scope: the blob is locked on its shard)
            total := total + memmie._squash_history(r.id, r.before_version::int, NULL, r.user_id);
        EXCEPTION WHEN no_data_found THEN
            -- (P0002: deleted since the query read it; nothing to keep)
            NULL;
        END;
    END LOOP;
    RETURN total;
END
$$;

-- The routine upkeep (the design document's maintenance_routine, without its defects): one
-- session at a time; a second caller returns at once saying so. Returns what it did.
CREATE FUNCTION memmie.maintenance() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    report    jsonb := '{}';
    t0        timestamptz := clock_timestamp();
    t_expired timestamptz;
    n         int;
    retention interval := make_interval(secs => memmie._event_retention_seconds());
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('memmie.maintenance', 0)) THEN
        RETURN jsonb_build_object('skipped', 'another session is running memmie.maintenance()');
    END IF;
    report := report || jsonb_build_object('partitions_created', memmie.ensure_partitions());
    ANALYZE memmie.blobs;
    ANALYZE memmie.blob_edges;
    ANALYZE memmie.blob_versions;
    ANALYZE memmie.deltas;
    ANALYZE memmie.events;
    ANALYZE memmie.provider_processing;
    ANALYZE memmie.jobs;
    report := report || jsonb_build_object('analyzed',
        '["blobs", "blob_versions", "deltas", "events", "provider_processing", "jobs"]'::jsonb);
    report := report || jsonb_build_object('views', memmie.refresh_views());
    -- jobs past expires_at are never handed out; a running one is left to its worker (the
    -- time in a variable: Citus refuses a volatile function in a distributed DELETE's WHERE)
    t_expired := clock_timestamp();
    DELETE FROM memmie.jobs j WHERE j.expires_at < t_expired AND j.status <> 'running';
    GET DIAGNOSTICS n = ROW_COUNT;
    report := report || jsonb_build_object('expired_jobs_removed', n);
    report := report || jsonb_build_object('event_partitions_dropped',
        memmie.drop_old_partitions('memmie.events', retention), 'event_retention', justify_hours(retention)::text);
    report := report || jsonb_build_object('versions_squashed', memmie._apply_keep_versions());
    SELECT count(*) INTO n FROM memmie.gc_content();
    report := report || jsonb_build_object('contents_collected', n);
    report := report || jsonb_build_object('usage_increments_folded', memmie.fold_usage());
    -- today's provider metrics so far, and yesterday's final ones (UTC days)
    report := report || jsonb_build_object('provider_metrics_rows',
        memmie.rollup_metrics(memmie._utc_day(now()) - 1) + memmie.rollup_metrics(memmie._utc_day(now())));
    RETURN report || jsonb_build_object('ms', round(extract(epoch FROM clock_timestamp() - t0) * 1000, 1));
END
$$;

-- Registers maintenance() with pg_cron, in this database, under the job name
-- 'memmie-maintenance' (scheduling again changes the schedule); returns pg_cron's job id. pg_cron
-- must be installed in this database; when it lives in another one (cron.database_name), the
-- hint says what to run there. (With memmie in shared_preload_libraries a background worker can
-- run it instead: memmie.maintenance_interval.)
CREATE FUNCTION memmie.schedule_maintenance(cron text DEFAULT '*/15 * * * *') RETURNS bigint
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    job bigint;
BEGIN
    PERFORM memmie._require(schedule_maintenance.cron, 'cron');
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in database %', current_database()
            USING ERRCODE = '55000',
                  HINT = format('Either CREATE EXTENSION pg_cron here (with pg_cron in shared_preload_libraries and cron.database_name = %L), '
                                'or run in pg_cron''s database: SELECT cron.schedule_in_database(%L, %L, %L, %L); '
                                'or put memmie in shared_preload_libraries and set memmie.maintenance_database and memmie.maintenance_interval.',
                                current_database(), 'memmie-maintenance', schedule_maintenance.cron,
                                'SELECT memmie.maintenance()', current_database());
    END IF;
    -- through EXECUTE: the cron schema exists only where pg_cron is installed
    EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO job
        USING 'memmie-maintenance', schedule_maintenance.cron, 'SELECT memmie.maintenance()';
    RETURN job;
END
$$;

-- Removes the pg_cron job schedule_maintenance() made; false when there was none.
CREATE FUNCTION memmie.unschedule_maintenance() RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    found boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM cron.job WHERE jobname = $1)' INTO found USING 'memmie-maintenance';
    IF found THEN
        EXECUTE 'SELECT cron.unschedule($1)' USING 'memmie-maintenance';
    END IF;
    RETURN found;
END
$$;

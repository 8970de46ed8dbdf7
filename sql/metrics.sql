-- Metrics: each user's usage per day (usage_metrics) and each provider's per day
-- (provider_metrics). Days are UTC days, whatever the session's TimeZone.
--
-- memmie's functions count usage as they work, into usage_increments (one row per change, insert
-- only: two writers of one user never wait for each other on a counter row); fold_usage() adds
-- those rows up into usage_metrics. provider_metrics is computed from provider_processing by
-- rollup_metrics(), so it can be recomputed for any day.

-- The UTC day of a moment, and the moment a UTC day starts.
CREATE FUNCTION memmie._utc_day(t timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT (t AT TIME ZONE 'UTC')::pg_catalog.date $$;
CREATE FUNCTION memmie._utc_start(d date) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT d::pg_catalog.timestamp AT TIME ZONE 'UTC' $$;

-- {"a": 1} + {"a": 2, "b": 1} = {"a": 3, "b": 1}
CREATE FUNCTION memmie._add_counts(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(jsonb_object_agg(k, n), '{}')
    FROM (SELECT k, sum(v::bigint) AS n
          FROM (SELECT * FROM jsonb_each_text(coalesce(a, '{}'))
                UNION ALL SELECT * FROM jsonb_each_text(coalesce(b, '{}'))) x(k, v)
          GROUP BY k) y
$$;

-- fold_usage() for the increments of user p_user (on a Citus cluster: one shard), p_now the
-- time it writes as updated_at; the caller holds fold_usage's lock.
CREATE FUNCTION memmie._fold_usage_of(p_user uuid, p_now timestamptz) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n int;
BEGIN
    WITH moved AS (
        DELETE FROM memmie.usage_increments x WHERE x.user_id = p_user RETURNING *
    ), days AS (
        SELECT m.user_id, m.metric_date,
               sum(m.blobs_created) AS blobs_created, sum(m.blobs_processed) AS blobs_processed,
               sum(m.deltas_applied) AS deltas_applied,
               (array_agg(m.storage_bytes_used ORDER BY m.recorded_at DESC)
                    FILTER (WHERE m.storage_bytes_used IS NOT NULL))[1] AS storage_bytes_used,
               sum(m.processing_time_ms) AS processing_time_ms,
               sum(m.api_calls) AS api_calls, sum(m.api_errors) AS api_errors,
               sum(m.response_time_ms) AS response_time_ms
        FROM moved m GROUP BY m.user_id, m.metric_date
    ), invocations AS (
        SELECT x.user_id, x.metric_date, jsonb_object_agg(x.provider_id, x.n) AS counts
        FROM (SELECT m.user_id, m.metric_date, m.provider_id, sum(m.provider_invocations) AS n
              FROM moved m WHERE m.provider_id IS NOT NULL AND m.provider_invocations <> 0
              GROUP BY m.user_id, m.metric_date, m.provider_id) x
        GROUP BY x.user_id, x.metric_date
    ), folded AS (
        INSERT INTO memmie.usage_metrics AS um
            (user_id, metric_date, blobs_created, blobs_processed, deltas_applied,
             storage_bytes_used, provider_invocations, api_calls, api_errors,
             total_processing_time_ms, total_response_time_ms, average_response_time_ms)
        SELECT d.user_id, d.metric_date, d.blobs_created, d.blobs_processed, d.deltas_applied,
               coalesce(d.storage_bytes_used, old.storage_bytes_used, u.storage_used),
               memmie._add_counts(old.provider_invocations, i.counts),
               d.api_calls, d.api_errors, d.processing_time_ms, d.response_time_ms,
               round((coalesce(old.total_response_time_ms, 0) + d.response_time_ms)
                     / nullif(coalesce(old.api_calls, 0) + d.api_calls, 0))
        FROM days d
        JOIN memmie.user_contexts u ON u.user_id = d.user_id AND u.user_id = p_user   -- a deleted user's rows go
        LEFT JOIN invocations i ON i.user_id = d.user_id AND i.metric_date = d.metric_date
        LEFT JOIN memmie.usage_metrics old ON old.user_id = d.user_id AND old.user_id = p_user
                                           AND old.metric_date = d.metric_date
        ON CONFLICT ON CONSTRAINT unique_user_date DO UPDATE
        SET blobs_created = um.blobs_created + excluded.blobs_created,
            blobs_processed = um.blobs_processed + excluded.blobs_processed,
            deltas_applied = um.deltas_applied + excluded.deltas_applied,
            storage_bytes_used = excluded.storage_bytes_used,
            provider_invocations = excluded.provider_invocations,
            api_calls = um.api_calls + excluded.api_calls,
            api_errors = um.api_errors + excluded.api_errors,
            total_processing_time_ms = um.total_processing_time_ms + excluded.total_processing_time_ms,
            total_response_time_ms = um.total_response_time_ms + excluded.total_response_time_ms,
            average_response_time_ms = excluded.average_response_time_ms,
            updated_at = p_now
        RETURNING 1
    )
    SELECT count(*) INTO n FROM moved;
    RETURN n;
END
$$;

-- Adds every committed usage increment into usage_metrics and deletes it; returns how many it
-- folded. One session folds at a time (a second waits for the first, then folds what is left).
-- A day's storage_bytes_used is the user's storage after the day's last change (or, for a day
-- without a change, when its row was first written).
CREATE FUNCTION memmie.fold_usage() RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n     int;
    t_now timestamptz;
    u     uuid;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('memmie.fold_usage', 0));
    -- the time once, before: Citus refuses a volatile function in the DO UPDATE SET of an INSERT
    -- into a distributed table (the rows folded are those committed before the lock was taken)
    t_now := clock_timestamp();
    IF memmie._distributed() THEN
        -- On a Citus cluster one user at a time: each statement then reads and writes the
        -- co-located rows of one user (one shard); over every user it would need joins Citus
        -- cannot run between a modifying CTE and distributed tables.
        n := 0;
        FOR u IN SELECT DISTINCT x.user_id FROM memmie.usage_increments x LOOP
            n := n + memmie._fold_usage_of(u, t_now);
        END LOOP;
        RETURN n;
    END IF;
    WITH moved AS (
        DELETE FROM memmie.usage_increments RETURNING *
    ), days AS (
        SELECT m.user_id, m.metric_date,
               sum(m.blobs_created) AS blobs_created, sum(m.blobs_processed) AS blobs_processed,
               sum(m.deltas_applied) AS deltas_applied,
               (array_agg(m.storage_bytes_used ORDER BY m.recorded_at DESC)
                    FILTER (WHERE m.storage_bytes_used IS NOT NULL))[1] AS storage_bytes_used,
               sum(m.processing_time_ms) AS processing_time_ms,
               sum(m.api_calls) AS api_calls, sum(m.api_errors) AS api_errors,
               sum(m.response_time_ms) AS response_time_ms
        FROM moved m GROUP BY m.user_id, m.metric_date
    ), invocations AS (
        SELECT x.user_id, x.metric_date, jsonb_object_agg(x.provider_id, x.n) AS counts
        FROM (SELECT m.user_id, m.metric_date, m.provider_id, sum(m.provider_invocations) AS n
              FROM moved m WHERE m.provider_id IS NOT NULL AND m.provider_invocations <> 0
              GROUP BY m.user_id, m.metric_date, m.provider_id) x
        GROUP BY x.user_id, x.metric_date
    ), folded AS (
        INSERT INTO memmie.usage_metrics AS um
            (user_id, metric_date, blobs_created, blobs_processed, deltas_applied,
             storage_bytes_used, provider_invocations, api_calls, api_errors,
             total_processing_time_ms, total_response_time_ms, average_response_time_ms)
        SELECT d.user_id, d.metric_date, d.blobs_created, d.blobs_processed, d.deltas_applied,
               coalesce(d.storage_bytes_used, old.storage_bytes_used, u.storage_used),
               memmie._add_counts(old.provider_invocations, i.counts),
               d.api_calls, d.api_errors, d.processing_time_ms, d.response_time_ms,
               round((coalesce(old.total_response_time_ms, 0) + d.response_time_ms)
                     / nullif(coalesce(old.api_calls, 0) + d.api_calls, 0))
        FROM days d
        JOIN memmie.user_contexts u ON u.user_id = d.user_id   -- a deleted user's rows go
        LEFT JOIN invocations i ON i.user_id = d.user_id AND i.metric_date = d.metric_date
        LEFT JOIN memmie.usage_metrics old ON old.user_id = d.user_id AND old.metric_date = d.metric_date
        ON CONFLICT ON CONSTRAINT unique_user_date DO UPDATE
        SET blobs_created = um.blobs_created + excluded.blobs_created,
            blobs_processed = um.blobs_processed + excluded.blobs_processed,
            deltas_applied = um.deltas_applied + excluded.deltas_applied,
            storage_bytes_used = excluded.storage_bytes_used,
            provider_invocations = excluded.provider_invocations,
            api_calls = um.api_calls + excluded.api_calls,
            api_errors = um.api_errors + excluded.api_errors,
            total_processing_time_ms = um.total_processing_time_ms + excluded.total_processing_time_ms,
            total_response_time_ms = um.total_response_time_ms + excluded.total_response_time_ms,
            average_response_time_ms = excluded.average_response_time_ms,
            updated_at = t_now
        RETURNING 1
    )
    SELECT count(*) INTO n FROM moved;
    RETURN n;
END
$$;

-- A user's usage per day, newest first, up to date (fold_usage() first).
CREATE FUNCTION memmie.user_usage(user_id uuid, from_date date DEFAULT NULL, to_date date DEFAULT NULL)
RETURNS SETOF memmie.usage_metrics
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM memmie._acting_user(user_usage.user_id);
    PERFORM memmie.fold_usage();
    RETURN QUERY
    SELECT * FROM memmie.usage_metrics m
    WHERE m.user_id = user_usage.user_id
      AND (user_usage.from_date IS NULL OR m.metric_date >= user_usage.from_date)
      AND (user_usage.to_date IS NULL OR m.metric_date <= user_usage.to_date)
    ORDER BY m.metric_date DESC;
END
$$;

-- Counts one call of the application's API for a user (created on first use): api_calls,
-- api_errors (ok = false) and average_response_time_ms of the day.
CREATE FUNCTION memmie.record_api_call(user_id uuid, ok boolean, response_ms int) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
BEGIN
    PERFORM memmie._acting_user(record_api_call.user_id);
    PERFORM memmie._require(record_api_call.ok, 'ok');
    PERFORM memmie._require(record_api_call.response_ms, 'response_ms');
    IF record_api_call.response_ms < 0 THEN
        RAISE EXCEPTION 'response_ms must not be negative, got %', record_api_call.response_ms
            USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM memmie.user_contexts u WHERE u.user_id = record_api_call.user_id) THEN
        INSERT INTO memmie.user_contexts (user_id) VALUES (record_api_call.user_id) ON CONFLICT DO NOTHING;
    END IF;
    INSERT INTO memmie.usage_increments (user_id, api_calls, api_errors, response_time_ms)
    VALUES (record_api_call.user_id, 1, (NOT record_api_call.ok)::int, record_api_call.response_ms);
END
$$;

-- The kind of a processing error: what its text says before the first colon ("timeout: after
-- 30 s" -> "timeout"), at most 64 characters; "unknown" when there is no text.
CREATE FUNCTION memmie._error_type(msg text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(nullif(left(btrim(split_part(msg, ':', 1)), 64), ''), 'unknown')
$$;

-- provider_metrics of one UTC day from the processings that finished that day (completed or
-- failed): successes, failures (a failed processing and every earlier attempt of a processing
-- that was retried), latency percentiles of the successful ones, bytes, time, errors by kind.
-- Writes one row per provider with such processings, removes the day's other rows (a re-run
-- gives the same rows) and returns how many rows the day has.
CREATE FUNCTION memmie.rollup_metrics(day date DEFAULT current_date) RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    lo timestamptz := memmie._utc_start(memmie._require(rollup_metrics.day, 'day'));
    n  int;
BEGIN
    WITH finished AS (
        SELECT p.provider_id, p.status, p.attempt_count, p.processing_time_ms, p.input_size,
               p.output_size, p.error_message
        FROM memmie.provider_processing p
        WHERE p.completed_at >= lo AND p.completed_at < lo + interval '1 day'
          AND p.status IN ('completed', 'failed')
    ), errors AS (
        SELECT e.provider_id, jsonb_object_agg(e.kind, e.n) AS counts
        FROM (SELECT f.provider_id, memmie._error_type(f.error_message) AS kind, count(*) AS n
              FROM finished f WHERE f.status = 'failed'
              GROUP BY 1, 2) e
        GROUP BY e.provider_id
    ), per_provider AS (
        SELECT f.provider_id,
               count(*) FILTER (WHERE f.status = 'completed') AS ok,
               count(*) FILTER (WHERE f.status = 'failed')
                   + coalesce(sum(greatest(f.attempt_count - 1, 0)), 0) AS failed,
               percentile_disc(0.50) WITHIN GROUP (ORDER BY f.processing_time_ms)
                   FILTER (WHERE f.status = 'completed') AS p50,
               percentile_disc(0.95) WITHIN GROUP (ORDER BY f.processing_time_ms)
                   FILTER (WHERE f.status = 'completed') AS p95,
               percentile_disc(0.99) WITHIN GROUP (ORDER BY f.processing_time_ms)
                   FILTER (WHERE f.status = 'completed') AS p99,
               coalesce(sum(f.input_size), 0) AS bytes_in,
               coalesce(sum(f.output_size), 0) AS bytes_out,
               coalesce(sum(f.processing_time_ms), 0) AS time_ms
        FROM finished f GROUP BY f.provider_id
    ), written AS (
        INSERT INTO memmie.provider_metrics AS pm
            (provider_id, metric_date, total_invocations, successful_invocations, failed_invocations,
             latency_p50, latency_p95, latency_p99, total_input_bytes, total_output_bytes,
             total_processing_time_ms, error_counts)
        SELECT a.provider_id, rollup_metrics.day, a.ok + a.failed, a.ok, a.failed, a.p50, a.p95, a.p99,
               a.bytes_in, a.bytes_out, a.time_ms, coalesce(e.counts, '{}')
        FROM per_provider a LEFT JOIN errors e ON e.provider_id = a.provider_id
        ON CONFLICT ON CONSTRAINT unique_provider_date DO UPDATE
        SET total_invocations = excluded.total_invocations,
            successful_invocations = excluded.successful_invocations,
            failed_invocations = excluded.failed_invocations,
            latency_p50 = excluded.latency_p50, latency_p95 = excluded.latency_p95,
            latency_p99 = excluded.latency_p99, total_input_bytes = excluded.total_input_bytes,
            total_output_bytes = excluded.total_output_bytes,
            total_processing_time_ms = excluded.total_processing_time_ms,
            error_counts = excluded.error_counts
        RETURNING pm.provider_id
    ), stale AS (
        DELETE FROM memmie.provider_metrics pm
        WHERE pm.metric_date = rollup_metrics.day
          AND pm.provider_id NOT IN (SELECT w.provider_id FROM written w)
    )
    SELECT count(*) INTO n FROM written;
    RETURN n;
END
$$;

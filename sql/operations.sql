-- Operations: view refreshes and garbage collection of content (more of issue 4 to come).

-- Refreshes both materialized views without blocking their readers; returns what it refreshed.
CREATE FUNCTION memmie.refresh_views() RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz := clock_timestamp();
    t1 timestamptz;
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY memmie.user_blob_summary;
    t1 := clock_timestamp();
    REFRESH MATERIALIZED VIEW CONCURRENTLY memmie.dag_statistics;
    RETURN jsonb_build_object(
        'user_blob_summary', jsonb_build_object('rows', (SELECT count(*) FROM memmie.user_blob_summary),
                                                'ms', round(extract(epoch FROM t1 - t0) * 1000, 1)),
        'dag_statistics', jsonb_build_object('rows', (SELECT count(*) FROM memmie.dag_statistics),
                                             'ms', round(extract(epoch FROM clock_timestamp() - t1) * 1000, 1)));
END
$$;

-- Deletes content no blob version references (reference_count = 0) that nobody touched for
-- longer than grace, and returns it (storage_path: external bytes for the caller to delete).
-- Contents a writer is referencing right now are locked by put_content and skipped.
CREATE FUNCTION memmie.gc_content(grace interval DEFAULT '1 hour')
RETURNS TABLE (content_hash text, storage_backend text, storage_path text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF gc_content.grace IS NULL OR gc_content.grace < interval '0' THEN
        RAISE EXCEPTION 'grace must be a non-negative interval, got %', gc_content.grace USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    WITH garbage AS MATERIALIZED (
        SELECT c.content_hash FROM memmie.content_storage c
        WHERE c.reference_count = 0 AND c.last_accessed < clock_timestamp() - gc_content.grace
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM memmie.content_storage c USING garbage g
    WHERE c.content_hash = g.content_hash AND c.reference_count = 0
    RETURNING c.content_hash::text, c.storage_backend::text, c.storage_path;
END
$$;

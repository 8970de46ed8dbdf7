-- The materialized views (design document; dag_statistics over blob_edges, see docs/schema.md)
-- and their refreshes: refresh_views() for both (run by maintenance()), and
-- refresh_user_blob_summary() for one.

CREATE MATERIALIZED VIEW memmie.user_blob_summary AS
SELECT user_id,
       count(*)                     AS total_blobs,
       count(DISTINCT root_blob_id) AS root_blobs,
       sum(content_size)            AS total_storage,
       count(DISTINCT created_by)   AS providers_used,
       max(created_at)              AS last_activity,
       avg(depth)                   AS avg_dag_depth
FROM memmie.blobs
WHERE deleted_at IS NULL
GROUP BY user_id;
CREATE UNIQUE INDEX idx_user_blob_summary ON memmie.user_blob_summary (user_id);

-- Every live blob without a live parent is a root; levels follow blob_edges (all parents).
-- Computed natively (src/dag_statistics.rs), linear in the edges: a recursive query keeping a row
-- per (root, node, level) is quadratic on graphs with many paths. It reads blobs and blob_edges
-- through SQL, so on a Citus cluster each is one query to every shard and the view (a table of
-- the coordinator) is right there too.
CREATE MATERIALIZED VIEW memmie.dag_statistics AS
SELECT root_id, total_nodes, max_depth, unique_levels FROM memmie._dag_statistics();
CREATE UNIQUE INDEX idx_dag_statistics ON memmie.dag_statistics (root_id);

-- Refreshes both materialized views without blocking their readers; returns what it refreshed.
-- The refreshes sort and hash every blob and edge: they get maintenance_work_mem (the DBA's
-- budget for maintenance work) as work_mem when that is larger, for their duration only.
CREATE FUNCTION memmie.refresh_views() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t0       timestamptz := clock_timestamp();
    t1       timestamptz;
    work_mem text := current_setting('work_mem');
BEGIN
    IF pg_size_bytes(current_setting('maintenance_work_mem')) > pg_size_bytes(work_mem) THEN
        PERFORM set_config('work_mem', current_setting('maintenance_work_mem'), true);
    END IF;
    REFRESH MATERIALIZED VIEW CONCURRENTLY memmie.user_blob_summary;
    t1 := clock_timestamp();
    REFRESH MATERIALIZED VIEW CONCURRENTLY memmie.dag_statistics;
    PERFORM set_config('work_mem', work_mem, true);
    RETURN jsonb_build_object(
        'user_blob_summary', jsonb_build_object('rows', (SELECT count(*) FROM memmie.user_blob_summary),
                                                'ms', round(extract(epoch FROM t1 - t0) * 1000, 1)),
        'dag_statistics', jsonb_build_object('rows', (SELECT count(*) FROM memmie.dag_statistics),
                                             'ms', round(extract(epoch FROM clock_timestamp() - t1) * 1000, 1)));
END
$$;

-- user_blob_summary alone (public since 0.1.0, docs/sql-api.md); refresh_views() does both.
CREATE FUNCTION memmie.refresh_user_blob_summary() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    REFRESH MATERIALIZED VIEW CONCURRENTLY memmie.user_blob_summary;
END
$$;


-- refresh_views(), rollup_metrics() and fold_usage() at 1,000,000 blobs and 1,000,000
-- processings (BENCH_METRICS_ROWS):
--   * blobs: 1,000 users, chains of 10 (parent_blob_id and a blob_edges row per child: 900,000
--     edges), 2% soft-deleted;
--   * provider_processing: one per blob, two providers, all finished on one day (2000-03-01,
--     UTC), 5% failed with two kinds of error, some retried;
--   * usage_increments: one per processing (what completions write), folded once.
-- Side by side: refresh_views() (REFRESH ... CONCURRENTLY: readers keep reading; it runs with
-- maintenance_work_mem as work_mem) against plain REFRESH of the same two views (readers wait)
-- at the session's work_mem, as a user would type it; and memmie's dag_statistics (over
-- blob_edges, every parent, deleted blobs excluded) against the design document's definition (a
-- path array over parent_blob_id, parent_blob_id only, deleted blobs included) refreshed on the
-- same data, both with work_mem = maintenance_work_mem. rollup_metrics and fold_usage have no
-- alternative in the design document: their own times. Everything is deleted at the end.
\getenv metrics_rows BENCH_METRICS_ROWS
\if :{?metrics_rows}
\else
\set metrics_rows 1000000
\endif
\ir runs.psql

CREATE FUNCTION bench.m_id(i bigint) RETURNS uuid LANGUAGE sql IMMUTABLE AS
$$ SELECT md5('memmie metrics blob ' || i)::uuid $$;
CREATE FUNCTION bench.m_user(i bigint) RETURNS uuid LANGUAGE sql IMMUTABLE AS
$$ SELECT md5('memmie metrics user ' || i / 1000)::uuid $$;

\timing on
-- The bulk load writes rows directly (replica mode: no per-row counting triggers, no FK checks;
-- every referenced row is inserted here).
BEGIN;
SET LOCAL session_replication_role = replica;
INSERT INTO memmie.user_contexts (user_id, blob_count)
SELECT bench.m_user(u * 1000), 1000 FROM generate_series(0, (:metrics_rows - 1) / 1000) u;
INSERT INTO memmie.content_storage (content_hash, content, original_size, mime_type)
VALUES (memmie.sha256('metrics blob'::bytea), 'metrics blob'::bytea, 12, 'text/plain') ON CONFLICT DO NOTHING;
INSERT INTO memmie.blobs (id, user_id, content_hash, content_size, content_type, parent_blob_id,
                          root_blob_id, depth, created_by, deleted_at)
SELECT bench.m_id(i), bench.m_user(i), memmie.sha256('metrics blob'::bytea), 12, 'text/plain',
       CASE WHEN i % 10 > 0 THEN bench.m_id(i - 1) END, CASE WHEN i % 10 > 0 THEN bench.m_id(i - i % 10) END,
       i % 10, CASE WHEN i % 10 > 0 THEN 'bench-chain' ELSE 'user' END,
       CASE WHEN i % 50 = 7 THEN now() END
FROM generate_series(0, :metrics_rows - 1) i;
INSERT INTO memmie.blob_edges (parent_blob_id, child_blob_id, provider_id, transform_type)
SELECT bench.m_id(i - 1), bench.m_id(i), 'bench-chain', 'derived'
FROM generate_series(0, :metrics_rows - 1) i WHERE i % 10 > 0;
COMMIT;
SELECT memmie.register_provider(format('{"id": "%s", "name": "%s", "version": "1", "trigger_events": [], "supported_types": ["*/*"]}', p, p)::jsonb) IS NOT NULL
FROM unnest(ARRAY['bench-ocr', 'bench-embed']) p;
BEGIN;
SET LOCAL session_replication_role = replica;
INSERT INTO memmie.provider_processing (blob_id, provider_id, provider_version, user_id, status,
                                        processed_version, current_blob_version, attempt_count,
                                        error_message, processing_time_ms, input_size, output_size,
                                        queued_at, started_at, completed_at)
SELECT bench.m_id(i), CASE WHEN i % 2 = 0 THEN 'bench-ocr' ELSE 'bench-embed' END, '1', bench.m_user(i),
       CASE WHEN i % 20 = 3 THEN 'failed' ELSE 'completed' END, 1, 1,
       1 + (i % 7 = 0)::int,
       CASE WHEN i % 20 = 3 THEN CASE WHEN i % 3 = 0 THEN 'timeout: after 30 s' ELSE 'bad output: not JSON' END END,
       50 + abs(hashint8(i)) % 2000, 12, CASE WHEN i % 20 = 3 THEN NULL ELSE 200 END,
       t - interval '3 seconds', t - interval '2 seconds', t
FROM (SELECT i, timestamptz '2000-03-01 00:00:00+00' + (i % 86400) * interval '1 second' AS t
      FROM generate_series(0, :metrics_rows - 1) i) x;
INSERT INTO memmie.usage_increments (user_id, metric_date, blobs_processed, provider_id,
                                     provider_invocations, processing_time_ms)
SELECT bench.m_user(i), date '2000-03-01', 1, CASE WHEN i % 2 = 0 THEN 'bench-ocr' ELSE 'bench-embed' END,
       1, 50 + abs(hashint8(i)) % 2000
FROM generate_series(0, :metrics_rows - 1) i;
COMMIT;
VACUUM ANALYZE memmie.blobs, memmie.blob_edges, memmie.provider_processing, memmie.usage_increments;
\timing off

-- the design document's dag_statistics, on the same blobs
CREATE MATERIALIZED VIEW bench.design_dag_statistics AS
WITH RECURSIVE dag_tree AS (
    SELECT id AS root_id, id AS node_id, 0 AS level, ARRAY[id] AS path
    FROM memmie.blobs WHERE parent_blob_id IS NULL
    UNION ALL
    SELECT dt.root_id, b.id, dt.level + 1, dt.path || b.id
    FROM dag_tree dt JOIN memmie.blobs b ON b.parent_blob_id = dt.node_id
    WHERE NOT b.id = ANY(dt.path)
)
SELECT root_id, count(*) AS total_nodes, max(level) AS max_depth, count(DISTINCT level) AS unique_levels
FROM dag_tree GROUP BY root_id
WITH NO DATA;
CREATE FUNCTION bench.refresh_plain() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    REFRESH MATERIALIZED VIEW memmie.user_blob_summary;
    REFRESH MATERIALIZED VIEW memmie.dag_statistics;
END
$$;
-- populated once (CONCURRENTLY needs a populated view; the harness's warm-up run does it too)
SELECT memmie.refresh_views() IS NOT NULL AS populated;

\set size '''' :metrics_rows ' blobs, ' :metrics_rows ' processings'''
SELECT bench.record('refresh of both views', 'memmie refresh_views() (CONCURRENTLY)', :size,
                    'SELECT memmie.refresh_views()', 'ms per refresh of both', :bench_runs);
SELECT bench.record('refresh of both views', 'REFRESH MATERIALIZED VIEW (readers wait, session work_mem)', :size,
                    'SELECT bench.refresh_plain()', 'ms per refresh of both', :bench_runs);
SELECT set_config('work_mem', current_setting('maintenance_work_mem'), false) AS work_mem;
SELECT bench.record('dag_statistics refresh', 'memmie dag_statistics (blob_edges, not concurrently)', :size,
                    'REFRESH MATERIALIZED VIEW memmie.dag_statistics', 'ms per refresh', :bench_runs);
SELECT bench.record('dag_statistics refresh', 'design document dag_statistics (path array)', :size,
                    'REFRESH MATERIALIZED VIEW bench.design_dag_statistics', 'ms per refresh', :bench_runs);
RESET work_mem;
SELECT bench.record('rollup_metrics (one day)', 'memmie rollup_metrics()', :size,
                    $$SELECT memmie.rollup_metrics('2000-03-01')$$, 'ms per day rolled up', :bench_runs);
-- the same rows every run
SELECT provider_id, total_invocations, successful_invocations, failed_invocations, latency_p50,
       latency_p95, latency_p99, error_counts
FROM memmie.provider_metrics WHERE metric_date = '2000-03-01' ORDER BY 1;
-- fold_usage consumes its input: timed once
SELECT clock_timestamp() AS t0 \gset
SELECT memmie.fold_usage() AS folded;
INSERT INTO bench.results (benchmark, variant, size, ms_median, per, runs)
VALUES ('fold_usage', 'memmie fold_usage()', :metrics_rows || ' increments, ' || (:metrics_rows / 1000) || ' users',
        round(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz)::numeric * 1000, 3), 'ms per fold (one run)', 1);
SELECT count(*) AS usage_rows, sum(blobs_processed) AS processed FROM memmie.usage_metrics WHERE metric_date = '2000-03-01';
SELECT (SELECT count(*) FROM memmie.dag_statistics) AS memmie_roots,
       (SELECT count(*) FROM bench.design_dag_statistics) AS design_roots;

SELECT benchmark, variant, size, ms_median, per FROM bench.results
WHERE benchmark IN ('refresh of both views', 'dag_statistics refresh', 'rollup_metrics (one day)', 'fold_usage')
ORDER BY ord;

-- clean up (replica mode: no cascading triggers; every dependent row is deleted explicitly)
\timing on
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM memmie.usage_metrics WHERE metric_date = '2000-03-01';
DELETE FROM memmie.provider_metrics WHERE metric_date = '2000-03-01';
DELETE FROM memmie.provider_processing WHERE provider_id IN ('bench-ocr', 'bench-embed');
DELETE FROM memmie.provider_versions WHERE provider_id IN ('bench-ocr', 'bench-embed');
DELETE FROM memmie.providers WHERE id IN ('bench-ocr', 'bench-embed');
DELETE FROM memmie.blob_edges WHERE provider_id = 'bench-chain';
DELETE FROM memmie.blobs b USING generate_series(0, (:metrics_rows - 1) / 1000) u WHERE b.user_id = bench.m_user(u * 1000);
DELETE FROM memmie.user_contexts c USING generate_series(0, (:metrics_rows - 1) / 1000) u WHERE c.user_id = bench.m_user(u * 1000);
COMMIT;
\timing off
DROP MATERIALIZED VIEW bench.design_dag_statistics;
SELECT memmie.refresh_views() IS NOT NULL AS refreshed_after_cleanup;

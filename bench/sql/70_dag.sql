-- descendants / ancestors vs what a user writes without memmie: a recursive CTE over
-- blob_edges (UNION ALL with a path-array cycle guard, then each node once at its shortest
-- depth), on a DAG of BENCH_DAG_NODES blobs (default 1,000,000) of one user:
--   * a tree: node i (0 = the root) has parent (i - 1) / 10, so depth-1 nodes have ~111k tree
--     descendants and depth-4 nodes ~111, more with the merges (ids are md5-derived uuids,
--     scattered like real ones);
--   * 5% merge edges, always from a lower to a higher node number (so the graph stays acyclic):
--     4% between random pairs, 1% into one "summary" leaf (the last node), which so has tens of
--     thousands of ancestors.
-- Cases: descendants of a depth-4 node (small), a depth-1 node (~165k) and the root (all);
-- ancestors of a deep leaf (small) and of the summary leaf (large). The DAG is deleted at the
-- end. Load ~1.5 min, the whole file ~4 min at 1M nodes.
-- Both sides get the same start node and must give the same (blob_id, depth) set (count, depth
-- sum and a hash sum, compared in this run; a difference stops the bench). Timed: the whole
-- result consumed, SELECT count(*), sum(depth) over it. Medians of BENCH_RUNS runs (default 3).
-- Default settings (work_mem, JIT) for both.
\getenv dag_nodes BENCH_DAG_NODES
\if :{?dag_nodes}
\else
\set dag_nodes 1000000
\endif
\ir runs.psql
\set dag_user '00000000-0000-0000-0000-0000000000da'

CREATE FUNCTION bench.dag_id(i bigint) RETURNS uuid LANGUAGE sql IMMUTABLE AS
$$ SELECT md5('memmie dag node ' || i)::uuid $$;
-- pseudo-random in [0, n), from k
CREATE FUNCTION bench.dag_rand(k bigint, n bigint) RETURNS bigint LANGUAGE sql IMMUTABLE AS
$$ SELECT abs(hashint8(k)::bigint) % n $$;

-- The bulk load writes blobs and edges directly (create_blob a million times would take an
-- hour). replica mode skips the per-row blob_count trigger (a million updates of one
-- user_contexts row in one transaction) and the FK checks, whose targets are all inserted
-- here; blob_count is set afterwards. No versions, deltas or events: traversal reads only
-- blob_edges (and blobs, for the start node).
\timing on
BEGIN;
SET LOCAL session_replication_role = replica;
INSERT INTO memmie.user_contexts (user_id) VALUES (:'dag_user');
INSERT INTO memmie.content_storage (content_hash, content, original_size, mime_type)
VALUES (memmie.sha256('dag node'::bytea), 'dag node'::bytea, 8, 'text/plain') ON CONFLICT DO NOTHING;
INSERT INTO memmie.blobs (id, user_id, content_hash, content_size, content_type, parent_blob_id,
                          root_blob_id, depth, created_by)
SELECT bench.dag_id(i), :'dag_user', memmie.sha256('dag node'::bytea), 8, 'text/plain',
       CASE WHEN i > 0 THEN bench.dag_id((i - 1) / 10) END, CASE WHEN i > 0 THEN bench.dag_id(0) END,
       length((9 * i + 1)::text) - 1, CASE WHEN i > 0 THEN 'bench-dag' ELSE 'user' END
FROM generate_series(0, :dag_nodes - 1) i;
UPDATE memmie.user_contexts SET blob_count = :dag_nodes WHERE user_id = :'dag_user';
-- tree edges, then merge edges: 4% random pairs, 1% into the last node (not its tree parent)
INSERT INTO memmie.blob_edges (parent_blob_id, child_blob_id, provider_id, transform_type, version_map)
SELECT bench.dag_id(p), bench.dag_id(c), 'bench-dag', t, '[{"parent_version": 1, "child_version": 1}]'
FROM (SELECT (i - 1) / 10 AS p, i AS c, 'derived' AS t FROM generate_series(1, :dag_nodes - 1) i
      UNION
      SELECT DISTINCT bench.dag_rand(k + 7777777, c), c, 'merge'
      FROM (SELECT k, 1 + bench.dag_rand(k, :dag_nodes - 2) AS c FROM generate_series(1, :dag_nodes / 25) k) r
      UNION
      SELECT DISTINCT bench.dag_rand(k + 9999999, :dag_nodes - 1), :dag_nodes - 1, 'merge'
      FROM generate_series(1, :dag_nodes / 100) k) e
WHERE p <> c AND NOT (t = 'merge' AND p = (c - 1) / 10)
ORDER BY c, p;
COMMIT;
\timing off
-- steady state: autovacuum would have set the visibility map and statistics
VACUUM ANALYZE memmie.blobs;
VACUUM ANALYZE memmie.blob_edges;
SELECT count(*) AS dag_edges, count(*) FILTER (WHERE transform_type = 'merge') AS merge_edges
FROM memmie.blob_edges WHERE provider_id = 'bench-dag';

-- The recursive CTE a user would write (docs and Q&A sites: UNION ALL, a path array against
-- cycles, GROUP BY for the shortest depth).
CREATE FUNCTION bench.cte_sql(dir text, start uuid) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT format($q$
WITH RECURSIVE walk(blob_id, depth, path) AS (
    SELECT e.%1$s, 1, ARRAY[e.%2$s, e.%1$s]
    FROM memmie.blob_edges e WHERE e.%2$s = %3$L
  UNION ALL
    SELECT e.%1$s, w.depth + 1, w.path || e.%1$s
    FROM walk w JOIN memmie.blob_edges e ON e.%2$s = w.blob_id
    WHERE e.%1$s <> ALL (w.path)
)
SELECT blob_id, min(depth) AS depth FROM walk GROUP BY blob_id$q$,
        CASE dir WHEN 'descendants' THEN 'child_blob_id' ELSE 'parent_blob_id' END,
        CASE dir WHEN 'descendants' THEN 'parent_blob_id' ELSE 'child_blob_id' END,
        start)
$$;
CREATE FUNCTION bench.dag_check(q text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    r text;
BEGIN
    EXECUTE format('SELECT count(*) || '' nodes, depth sum '' || coalesce(sum(depth), 0) || '', hash sum ''
                           || coalesce(sum(hashtext(blob_id::text || ''/'' || depth)::bigint), 0) FROM (%s) r', q)
    INTO r;
    RETURN r;
END $$;

-- Start nodes: depth d of the tree starts at node (10^d - 1) / 9; its subtree has ~N / 10^d nodes.
CREATE TABLE bench.dag_cases (ord int, dir text, what text, start uuid);
INSERT INTO bench.dag_cases (ord, dir, what, start) VALUES
    (1, 'descendants', format('depth-%s node', greatest(round(log(:dag_nodes / 100.0)), 1)),
        bench.dag_id((10 ^ greatest(round(log(:dag_nodes / 100.0)), 1)::int - 1)::bigint / 9)),
    (2, 'descendants', format('depth-%s node', greatest(round(log(:dag_nodes / 100000.0)), 1)),
        bench.dag_id((10 ^ greatest(round(log(:dag_nodes / 100000.0)), 1)::int - 1)::bigint / 9)),
    (3, 'descendants', 'root', bench.dag_id(0)),
    (4, 'ancestors', 'a deep leaf', bench.dag_id(:dag_nodes - 2)),
    (5, 'ancestors', 'the summary leaf', bench.dag_id(:dag_nodes - 1));

-- Per case and side: one run computing the checksum (it also warms the cache), then `runs`
-- timed runs; the two checksums must be equal. The slowest queries take tens of seconds, so
-- the checksum run stands in for bench.record's separate warm-up run.
CREATE PROCEDURE bench.dag_run(benchmark_suffix text, runs int) LANGUAGE plpgsql AS $$
DECLARE
    c record;
    v record;
    chk text;
    first text;
    ms numeric;
    timed text;
BEGIN
    FOR c IN SELECT * FROM bench.dag_cases ORDER BY ord LOOP
        first := NULL;
        CREATE TEMP TABLE dag_times (variant text, median numeric, vord int);
        FOR v IN SELECT * FROM (VALUES (1, 'memmie.' || c.dir, format('SELECT * FROM memmie.%s(%L)', c.dir, c.start)),
                                       (2, 'recursive CTE (UNION ALL, path guard)', bench.cte_sql(c.dir, c.start))) x(vord, variant, q)
                 ORDER BY vord LOOP
            chk := bench.dag_check(v.q);
            RAISE NOTICE '% from % (%): %', c.dir, c.what, v.variant, chk;
            IF first IS NULL THEN
                first := chk;
            ELSIF chk IS DISTINCT FROM first THEN
                RAISE EXCEPTION '% from % (%): memmie and the recursive CTE differ: % / %', c.dir, c.what, c.start, first, chk;
            END IF;
            ms := bench.median_ms(format('SELECT count(*), sum(depth) FROM (%s) r', v.q), runs, 0);
            INSERT INTO dag_times VALUES (v.variant, ms, v.vord);
        END LOOP;
        INSERT INTO bench.results (benchmark, variant, size, ms_median, per, runs)
        SELECT c.dir || benchmark_suffix, t.variant, format('from %s: %s nodes', c.what, split_part(first, ' ', 1)),
               round(t.median, 3), 'one traversal', dag_run.runs
        FROM dag_times t ORDER BY t.vord;
        DROP TABLE dag_times;
        COMMIT;
    END LOOP;
END $$;
CALL bench.dag_run(format(' (%s-node DAG)', CASE WHEN :dag_nodes % 1000000 = 0 THEN (:dag_nodes / 1000000) || 'M'
                                                 WHEN :dag_nodes % 1000 = 0 THEN (:dag_nodes / 1000) || 'k'
                                                 ELSE :dag_nodes::text END), :bench_runs);
SELECT size, variant, ms_median FROM bench.results WHERE benchmark ~ '^(descendants|ancestors) \(' ORDER BY ord;

-- Remove the DAG (and vacuum), so that the benchmarks after this one run on the database they
-- ran on before it.
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM memmie.blob_edges WHERE provider_id = 'bench-dag';
DELETE FROM memmie.blobs WHERE user_id = :'dag_user';
DELETE FROM memmie.user_contexts WHERE user_id = :'dag_user';
DELETE FROM memmie.content_storage c WHERE c.content_hash = memmie.sha256('dag node'::bytea) AND c.reference_count = 0
    AND NOT EXISTS (SELECT FROM memmie.blobs b WHERE b.content_hash = c.content_hash);
COMMIT;
VACUUM memmie.blob_edges;
VACUUM memmie.blobs;

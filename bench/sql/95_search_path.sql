-- The per-call cost of pinning search_path (SET search_path = pg_catalog, pg_temp on every memmie
-- function that runs SQL, 0.3.0) against the same functions unpinned (0.2.0), same run:
--   * one PL/pgSQL helper (memmie._require) and one native function running SQL
--     (memmie.get_content), 100,000 calls, vs copies without the setting;
--   * create_blob and apply_delta (each reaches ~15 memmie functions), 1,000 calls, with every
--     memmie function pinned (as installed) vs every setting reset (ALTER FUNCTION ... RESET),
--     put back afterwards.
\ir runs.psql
CREATE FUNCTION bench.require_unpinned(val anyelement, what text) RETURNS anyelement
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF val IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = '22023';
    END IF;
    RETURN val;
END
$$;
CREATE FUNCTION bench.get_content_unpinned(content_hash text) RETURNS bytea
LANGUAGE c STABLE STRICT PARALLEL SAFE AS '$libdir/memmie', 'get_content_wrapper';
SELECT memmie.put_content('search_path bench', 'text/plain') AS sp_hash \gset

SELECT bench.record('search_path: PL/pgSQL helper', 'memmie._require (pinned)', '100000 calls',
    'SELECT count(memmie._require(i, ''x'')) FROM generate_series(1, 100000) i', 'call', :bench_runs);
SELECT bench.record('search_path: PL/pgSQL helper', 'unpinned copy', '100000 calls',
    'SELECT count(bench.require_unpinned(i, ''x'')) FROM generate_series(1, 100000) i', 'call', :bench_runs);
SELECT bench.record('search_path: native function running SQL', 'memmie.get_content (pinned)', '100000 calls',
    format('SELECT count(memmie.get_content(%L)) FROM generate_series(1, 100000) i', :'sp_hash'), 'call', :bench_runs);
SELECT bench.record('search_path: native function running SQL', 'unpinned copy', '100000 calls',
    format('SELECT count(bench.get_content_unpinned(%L)) FROM generate_series(1, 100000) i', :'sp_hash'), 'call', :bench_runs);

CREATE TABLE bench.sp_blobs (i int, id uuid);
CREATE FUNCTION bench.sp_writes(variant text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bench.record('search_path: create_blob', variant, '1000 calls',
        'INSERT INTO bench.sp_blobs SELECT i, (memmie.create_blob(''00000000-0000-0000-0000-0000000005b0'',
             convert_to(''{"n": '' || i || '', "r": '' || random() || ''}'', ''UTF8''), ''application/json'')).id
         FROM generate_series(1, 1000) i', 'call', current_setting('bench.runs')::int);
    PERFORM bench.record('search_path: apply_delta', variant, '1000 calls',
        'SELECT count(memmie.apply_delta(id, ''[{"op": "replace", "path": "/content/n", "value": 0}]''))
         FROM (SELECT id FROM bench.sp_blobs ORDER BY i DESC LIMIT 1000) b', 'call', current_setting('bench.runs')::int);
END $$;
SELECT set_config('bench.runs', :'bench_runs', false);
-- every pinned memmie function, to reset and pin again
CREATE TABLE bench.sp_pinned AS
SELECT p.oid::regprocedure AS f FROM pg_proc p
WHERE p.pronamespace = 'memmie'::regnamespace AND p.proconfig @> '{"search_path=pg_catalog, pg_temp"}';
-- Two rounds, alternating, so that neither variant always runs on the larger tables; each
-- sp_writes is one transaction (the same shape for both variants), each ALTER its own statement.
SELECT bench.sp_writes('memmie (every function pinned)');
SELECT format('ALTER FUNCTION %s RESET search_path', f) FROM bench.sp_pinned \o /dev/null \gexec \o
SELECT bench.sp_writes('unpinned (as 0.2.0)');
SELECT format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f) FROM bench.sp_pinned \o /dev/null \gexec \o
SELECT bench.sp_writes('memmie (every function pinned)');
SELECT format('ALTER FUNCTION %s RESET search_path', f) FROM bench.sp_pinned \o /dev/null \gexec \o
SELECT bench.sp_writes('unpinned (as 0.2.0)');
SELECT format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp', f) FROM bench.sp_pinned \o /dev/null \gexec \o
-- each variant's figure: the mean of its two medians
WITH m AS (SELECT benchmark, variant, min(ord) AS first, round(avg(ms_median), 3) AS ms FROM bench.results
           WHERE benchmark IN ('search_path: create_blob', 'search_path: apply_delta') GROUP BY 1, 2)
UPDATE bench.results r SET ms_median = m.ms FROM m WHERE r.ord = m.first;
DELETE FROM bench.results r
WHERE r.benchmark IN ('search_path: create_blob', 'search_path: apply_delta')
  AND r.ord > (SELECT min(ord) FROM bench.results x WHERE x.benchmark = r.benchmark AND x.variant = r.variant);
SELECT benchmark, variant, size, ms_median, round(ms_median * 1000 / split_part(size, ' ', 1)::int, 2) AS us_per_call
FROM bench.results WHERE benchmark LIKE 'search_path:%' ORDER BY ord;
DROP TABLE bench.sp_blobs, bench.sp_pinned;

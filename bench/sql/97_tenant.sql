-- The cost of acting for one user (issue 14): create_blob and apply_delta called by an app-level
-- role bound to a user (memmie.user_id; every call checks the user, runs as the owner through
-- SECURITY DEFINER) against the same calls by the extension's owner with no user bound, same
-- run, 1,000 calls each, two alternating rounds per variant (the figure: the mean of their
-- medians). Target: the bound app role at most 10% slower.
\ir runs.psql
DO $$ BEGIN CREATE ROLE bench_tenant_app; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
SELECT memmie.grant_app('bench_tenant_app');
CREATE TABLE bench.tn_blobs (variant text, i int, id uuid);
GRANT USAGE ON SCHEMA bench TO bench_tenant_app;
GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA bench TO bench_tenant_app;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA bench TO bench_tenant_app;
CREATE FUNCTION bench.tn_writes(variant text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bench.record('tenants: create_blob', variant, '1000 calls',
        format('INSERT INTO bench.tn_blobs SELECT %L, i, (memmie.create_blob(''00000000-0000-0000-0000-0000000005c0'',
             convert_to(''{"n": '' || i || '', "r": '' || random() || ''}'', ''UTF8''), ''application/json'')).id
         FROM generate_series(1, 1000) i', variant), 'call', current_setting('bench.runs')::int);
    PERFORM bench.record('tenants: apply_delta', variant, '1000 calls',
        format('SELECT count(memmie.apply_delta(id, ''[{"op": "replace", "path": "/content/n", "value": 0}]''))
         FROM (SELECT id FROM bench.tn_blobs WHERE variant = %L ORDER BY i DESC LIMIT 1000) b', variant),
        'call', current_setting('bench.runs')::int);
END $$;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA bench TO bench_tenant_app;
SELECT set_config('bench.runs', :'bench_runs', false);
SELECT bench.tn_writes('owner (no user bound)');
SET ROLE bench_tenant_app;
SET memmie.user_id = '00000000-0000-0000-0000-0000000005c0';
SELECT bench.tn_writes('memmie, app role bound to the user');
RESET memmie.user_id;
RESET ROLE;
SELECT bench.tn_writes('owner (no user bound)');
SET ROLE bench_tenant_app;
SET memmie.user_id = '00000000-0000-0000-0000-0000000005c0';
SELECT bench.tn_writes('memmie, app role bound to the user');
RESET memmie.user_id;
RESET ROLE;
WITH m AS (SELECT benchmark, variant, min(ord) AS first, round(avg(ms_median), 3) AS ms FROM bench.results
           WHERE benchmark IN ('tenants: create_blob', 'tenants: apply_delta') GROUP BY 1, 2)
UPDATE bench.results r SET ms_median = m.ms FROM m WHERE r.ord = m.first;
DELETE FROM bench.results r
WHERE r.benchmark IN ('tenants: create_blob', 'tenants: apply_delta')
  AND r.ord <> (SELECT min(x.ord) FROM bench.results x WHERE x.benchmark = r.benchmark AND x.variant = r.variant);
SELECT count(memmie.delete_blob(id, hard => true)) AS cleaned FROM bench.tn_blobs;
SELECT memmie.revoke_access('bench_tenant_app');

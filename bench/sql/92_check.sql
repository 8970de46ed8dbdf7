-- check() is linear in the number of deltas (issue 15): one blob with 2,000 versions against
-- 2,000 blobs of one version, in one run; and 0.2.0's replay check (blob_state of every
-- version, each replayed from the start: quadratic in a blob's history) on the long blob.
\ir runs.psql
\set n 2000
-- 2,000 one-version blobs
SELECT count(memmie.create_blob('00000000-0000-0000-0000-0000000c0001', convert_to('{"n": ' || i || '}', 'UTF8'),
                                 'application/json'))
FROM generate_series(1, :n) i;
-- statistics as autovacuum would leave them: without, check()'s plans depend on what the
-- benchmarks before this one left in the tables (after 45_blob_state: 4x slower)
ANALYZE memmie.blobs, memmie.blob_versions, memmie.deltas, memmie.content_storage, memmie.user_contexts;
SELECT bench.record('check(): 2,000 deltas', 'reference: 2,000 blobs of 1 version', :'n' || ' deltas',
                    'SELECT count(*) FROM memmie.check()', 'check()', :bench_runs);
SELECT count(memmie.delete_blob(id, hard => true)) FROM memmie.blobs WHERE user_id = '00000000-0000-0000-0000-0000000c0001';
-- one blob with 2,000 versions
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000c0002', convert_to('{"n": 0, "title": "long"}', 'UTF8'),
                           'application/json')).id AS long \gset
SELECT count(memmie.apply_delta(:'long', format('[{"op": "replace", "path": "/content/n", "value": %s}]', i)::jsonb))
FROM generate_series(2, :n) i;
ANALYZE memmie.blobs, memmie.blob_versions, memmie.deltas, memmie.content_storage, memmie.user_contexts;
SELECT bench.record('check(): 2,000 deltas', 'memmie: 1 blob of 2,000 versions', :'n' || ' deltas',
                    'SELECT count(*) FROM memmie.check()', 'check()', :bench_runs);
SELECT bench.record('check(): 2,000 deltas', '0.2.0 replay check (blob_state per version)', :'n' || ' deltas',
                    $q$SELECT count(*) FROM memmie.blob_versions v
                       WHERE memmie.blob_state(v.blob_id, v.version)
                             IS DISTINCT FROM memmie._make_state(v.content_hash, v.content_size, v.content_type,
                                                                 v.metadata, v.tags, v.deleted)$q$, 'replay part only', 1);
SELECT benchmark, variant, size, ms_median FROM bench.results WHERE benchmark LIKE 'check()%' ORDER BY ord;
SELECT memmie.delete_blob(:'long', hard => true);

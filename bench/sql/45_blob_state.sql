-- blob_state of a long history (issue 15): the latest and the middle version of a note with
-- 3,000 versions (an autosaving notes app) against the same versions of a note with 10, side by
-- side; and the long note without kept states (memmie.snapshot_interval = 0: replay from
-- version 1, as 0.2.0 did). Also the worst case with kept states: the version just below the
-- next kept one (snapshot_interval - 1 deltas to replay). Each figure is 100 calls.
\ir runs.psql
\set calls 100
-- a note: a title, a body of about 1 kB, a counter each autosave changes
CREATE FUNCTION bench.note(title text) RETURNS bytea LANGUAGE sql AS $$
    SELECT convert_to(jsonb_build_object('title', title, 'n', 0,
                                         'body', repeat('Lorem ipsum dolor sit amet. ', 40))::text, 'UTF8')
$$;
CREATE FUNCTION bench.autosave(blob uuid, n int) RETURNS int LANGUAGE sql AS $$
    SELECT count(memmie.apply_delta(blob, format('[{"op": "replace", "path": "/content/n", "value": %s}]', i)::jsonb))::int
    FROM generate_series(2, n) i
$$;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000b5001', bench.note('short'), 'application/json')).id AS short \gset
SELECT bench.autosave(:'short', 10);
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000b5001', bench.note('long'), 'application/json')).id AS long \gset
SELECT bench.autosave(:'long', 3000);
SET memmie.snapshot_interval = 0;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000b5001', bench.note('long, no snapshots'), 'application/json')).id AS bare \gset
SELECT bench.autosave(:'bare', 3000);
RESET memmie.snapshot_interval;
VACUUM ANALYZE memmie.blob_versions, memmie.blob_snapshots, memmie.deltas;
SELECT current_setting('memmie.snapshot_interval')::int AS k \gset
SELECT count(*) AS kept_states FROM memmie.blob_snapshots WHERE blob_id = :'long';

-- the worst case: as many deltas after the kept state as there can be
SELECT bench.record('blob_state, 3,000 vs 10 versions', c.variant, c.size,
                    format('SELECT count(memmie.blob_state(%L, %s)) FROM generate_series(1, %s)', c.blob, c.version, :calls),
                    :'calls' || ' calls', :bench_runs)
FROM (VALUES (1, 'reference: 10-version note', 'latest', :'short'::uuid, 10),
             (2, 'memmie: 3,000-version note', 'latest', :'long', 3000),
             (3, 'replay from version 1 (snapshot_interval = 0)', 'latest', :'bare', 3000),
             (4, 'reference: 10-version note', 'middle', :'short', 5),
             (5, 'memmie: 3,000-version note', 'middle', :'long', 1500),
             (6, 'replay from version 1 (snapshot_interval = 0)', 'middle', :'bare', 1500),
             (7, 'reference: 10-version note', 'worst', :'short', 10),
             (8, 'memmie: 3,000-version note', 'worst', :'long', (1500 / :k + 1) * :k - 1)) c(n, variant, size, blob, version)
ORDER BY c.n;
SELECT benchmark, variant, size, ms_median FROM bench.results WHERE benchmark LIKE 'blob_state%' ORDER BY ord;
SELECT memmie.delete_blob(:'short', hard => true), memmie.delete_blob(:'long', hard => true),
       memmie.delete_blob(:'bare', hard => true);
-- and their contents, and the dead rows of their 9,000 writes (every write updates the user's
-- row: 14,000 dead versions of it made 92_check after this file 4x slower)
SELECT count(*) AS contents_collected FROM memmie.gc_content('0 seconds');
VACUUM memmie.content_storage, memmie.blob_versions, memmie.blob_snapshots, memmie.deltas,
       memmie.user_contexts, memmie.blobs, memmie.user_content_refs;

-- Bulk writes inside one transaction stay flat (issue 15): 2,000 calls in one transaction, timed
-- in five batches of 400; the figure is batch 5's time over batch 1's (target <= 1.2). Each run
-- is its own transaction and, for create_blob, its own user; the contents are distinct and
-- 1 KiB each. derive_blob makes children of one parent. apply_delta runs on one blob: a
-- metadata edit (the content stays, as a tag edit) and a JSON content edit (each version a new
-- content, so the user's storage grows each call).
-- The alternative for one blob: a plain table updated as memmie updates a blob's head row, with
-- PostgreSQL alone: one row, 2,000 UPDATEs in one transaction, once changing only an unindexed
-- column (a HOT update) and once an indexed one (as an edit of metadata, tags or content does
-- in memmie.blobs). Every earlier version of that row stays until the transaction ends, and each
-- lookup of the row by its key steps over them: PostgreSQL itself grows here.
\ir runs.psql

-- Runs `batches` batches of `batch` calls of q (a statement with $1 = the call's number, $2 =
-- arg), all in the caller's transaction, and records for each batch the ms per call and the
-- buffer reads per call of memmie's tables and indexes (pg_stat_get_xact_blocks_fetched: the
-- row versions a lookup steps over show there, without the noise of a shared machine's clock).
CREATE FUNCTION bench.batches(benchmark text, run int, q text, batches int, batch int, arg uuid) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    b0 bigint;
    times numeric[] := '{}';
    reads numeric[] := '{}';
BEGIN
    FOR b IN 1..batches LOOP
        SELECT sum(pg_stat_get_xact_blocks_fetched(c.oid)) INTO b0 FROM pg_class c
        WHERE c.relnamespace IN ('memmie'::regnamespace, 'bench'::regnamespace);
        t0 := clock_timestamp();
        FOR i IN (b - 1) * batch + 1 .. b * batch LOOP
            EXECUTE q USING i, arg;
        END LOOP;
        times := times || round((extract(epoch FROM clock_timestamp() - t0) * 1000 / batch)::numeric, 4);
        reads := reads || round(((SELECT sum(pg_stat_get_xact_blocks_fetched(c.oid)) FROM pg_class c
                                  WHERE c.relnamespace IN ('memmie'::regnamespace, 'bench'::regnamespace)) - b0) / batch::numeric, 1);
    END LOOP;
    INSERT INTO bench.bulk_runs VALUES (benchmark, run, times, reads);
END $$;

CREATE TABLE bench.bulk_runs (benchmark text, run int, times numeric[], reads numeric[]);

-- create_blob: a new user per run
CREATE PROCEDURE bench.bulk_create(runs int) LANGUAGE plpgsql AS $$
BEGIN
    FOR r IN 1..runs LOOP
        PERFORM bench.batches('create_blob, 5 x 400 calls in one transaction', r,
               $q$SELECT memmie.create_blob($2, bench.noise(1024, $1), 'application/octet-stream')$q$,
               5, 400, ('00000000-0000-0000-0000-0000000b' || lpad(r::text, 4, '0'))::uuid);
        COMMIT;
    END LOOP;
END $$;

-- derive_blob from one parent (a provider's outputs): a new parent and user per run
CREATE PROCEDURE bench.bulk_derive(runs int) LANGUAGE plpgsql AS $$
DECLARE
    parent uuid;
BEGIN
    FOR r IN 1..runs LOOP
        parent := (memmie.create_blob(('00000000-0000-0000-0000-0000000bd1' || lpad(r::text, 2, '0'))::uuid,
                                      bench.noise(1024, r), 'application/octet-stream')).id;
        COMMIT;
        PERFORM bench.batches('derive_blob from one parent, 5 x 400 calls in one transaction', r,
               $q$SELECT memmie.derive_blob(ARRAY[$2], 'bench', 'part', bench.noise(1024, $1 + 100000), 'application/octet-stream')$q$,
               5, 400, parent);
        COMMIT;
    END LOOP;
END $$;

-- apply_delta on one blob per run
CREATE PROCEDURE bench.bulk_apply(runs int, kind text) LANGUAGE plpgsql AS $$
DECLARE
    blob uuid;
BEGIN
    FOR r IN 1..runs LOOP
        IF kind = 'metadata' THEN
            blob := (memmie.create_blob('00000000-0000-0000-0000-0000000bd001', bench.noise(1024, r),
                                        'application/octet-stream')).id;
        ELSE
            blob := (memmie.create_blob('00000000-0000-0000-0000-0000000bd002', convert_to('{"n": 0}', 'UTF8'),
                                        'application/json')).id;
        END IF;
        COMMIT;
        PERFORM bench.batches('apply_delta on one blob (' || kind || ' edit), 5 x 400 calls in one transaction', r,
               CASE kind WHEN 'metadata'
                   THEN $q$SELECT memmie.apply_delta($2, jsonb_build_array(jsonb_build_object('op', 'add', 'path', '/metadata/n', 'value', $1)))$q$
                   ELSE $q$SELECT memmie.apply_delta($2, jsonb_build_array(jsonb_build_object('op', 'replace', 'path', '/content/n', 'value', $1)))$q$ END,
               5, 400, blob);
        COMMIT;
    END LOOP;
END $$;

-- apply_delta over many blobs: 400 blobs, each batch edits every one once (a bulk edit, as an
-- import or a migration does), so each blob gets 5 new versions in the transaction
CREATE PROCEDURE bench.bulk_apply_many(runs int) LANGUAGE plpgsql AS $$
BEGIN
    FOR r IN 1..runs LOOP
        CREATE TEMP TABLE bulk_many AS
        SELECT i, (memmie.create_blob('00000000-0000-0000-0000-0000000bd003', convert_to('{"n": 0}', 'UTF8'),
                                      'application/json')).id
        FROM generate_series(0, 399) i;
        CREATE INDEX ON bulk_many (i);
        COMMIT;
        PERFORM bench.batches('apply_delta over 400 blobs (metadata edit, each blob once a batch), 5 x 400 calls in one transaction', r,
               $q$SELECT memmie.apply_delta((SELECT id FROM pg_temp.bulk_many WHERE i = $1 % 400),
                                           jsonb_build_array(jsonb_build_object('op', 'add', 'path', '/metadata/n', 'value', $1)))$q$,
               5, 400, NULL);
        COMMIT;
        DROP TABLE pg_temp.bulk_many;
        COMMIT;
    END LOOP;
END $$;

-- the same on a plain table shaped as memmie.blobs' head row, a new row per run
CREATE TABLE bench.plain_heads (id uuid PRIMARY KEY, version int NOT NULL, updated_at timestamptz NOT NULL,
                                metadata jsonb NOT NULL, hits int NOT NULL DEFAULT 0);
CREATE INDEX ON bench.plain_heads (updated_at);
CREATE INDEX ON bench.plain_heads USING gin (metadata jsonb_path_ops);
CREATE PROCEDURE bench.bulk_plain(runs int, kind text) LANGUAGE plpgsql AS $$
DECLARE
    head uuid;
BEGIN
    FOR r IN 1..runs LOOP
        head := gen_random_uuid();
        INSERT INTO bench.plain_heads VALUES (head, 1, now(), '{}');
        COMMIT;
        PERFORM bench.batches('PostgreSQL: UPDATE of one row (' || kind || '), 5 x 400 in one transaction', r,
               CASE kind WHEN 'unindexed column, HOT'
                   THEN $q$UPDATE bench.plain_heads SET hits = hits + 1 WHERE id = $2$q$
                   ELSE $q$UPDATE bench.plain_heads SET version = version + 1, updated_at = clock_timestamp(),
                                   metadata = jsonb_build_object('n', $1) WHERE id = $2$q$ END,
               5, 400, head);
        COMMIT;
    END LOOP;
END $$;

CALL bench.bulk_create(:bench_runs);
CALL bench.bulk_derive(:bench_runs);
CALL bench.bulk_apply(:bench_runs, 'metadata');
CALL bench.bulk_apply(:bench_runs, 'content');
CALL bench.bulk_apply_many(:bench_runs);
CALL bench.bulk_plain(:bench_runs, 'unindexed column, HOT');
CALL bench.bulk_plain(:bench_runs, 'indexed columns, as memmie.blobs');

-- Into bench.results: the median ms per call of batch 1 and of batch 5, and their ratio; the
-- same for the buffer reads per call (the same in every run: the median is that value).
INSERT INTO bench.results (benchmark, variant, size, ms_median, per, runs)
SELECT benchmark, v.variant, '2000 calls', v.ms, v.per, m.n
FROM (SELECT benchmark,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY times[1]) AS b1,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY times[5]) AS b5,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY times[5] / times[1]) AS ratio,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY reads[1]) AS r1,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY reads[5]) AS r5,
             percentile_cont(0.5) WITHIN GROUP (ORDER BY reads[5] / reads[1]) AS rratio,
             min(run) AS first, count(*)::int AS n
      FROM bench.bulk_runs GROUP BY benchmark) m,
     LATERAL (SELECT CASE WHEN m.benchmark LIKE 'PostgreSQL:%' THEN 'PostgreSQL' ELSE 'memmie' END AS who) w,
     LATERAL (VALUES (w.who || ': batch 1 (calls 1-400)', round(m.b1::numeric, 3), 'ms per call'),
                     (w.who || ': batch 5 (calls 1601-2000)', round(m.b5::numeric, 3), 'ms per call'),
                     (w.who || ': batch 5 / batch 1', round(m.ratio::numeric, 3), 'ratio of ms (target <= 1.2), not ms'),
                     (w.who || ': batch 1 buffer reads', round(m.r1::numeric, 1), 'buffer reads per call, not ms'),
                     (w.who || ': batch 5 buffer reads', round(m.r5::numeric, 1), 'buffer reads per call, not ms'),
                     (w.who || ': batch 5 / batch 1 buffer reads', round(m.rratio::numeric, 3), 'ratio of buffer reads, not ms'))
             v(variant, ms, per)
ORDER BY m.first, benchmark;
SELECT benchmark, run, times AS ms_per_call_by_batch, reads AS buffer_reads_per_call_by_batch
FROM bench.bulk_runs ORDER BY benchmark, run;
SELECT benchmark, variant, ms_median, per FROM bench.results WHERE benchmark LIKE '%5 x 400%' ORDER BY ord;

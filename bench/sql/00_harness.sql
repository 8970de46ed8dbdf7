-- Benchmark harness: medians of several timed runs, in one session, on the same data.
DROP SCHEMA IF EXISTS bench CASCADE;
CREATE SCHEMA bench;
CREATE TABLE bench.results (
    benchmark text, variant text, size text, ms_median numeric, per text, runs int,
    ord serial);

-- Runs q `runs` times (after `warmups` untimed runs) and returns the median wall time in ms.
CREATE FUNCTION bench.median_ms(q text, runs int DEFAULT 5, warmups int DEFAULT 1) RETURNS numeric
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    times numeric[] := '{}';
BEGIN
    FOR i IN 1..warmups LOOP
        EXECUTE q;
    END LOOP;
    FOR i IN 1..runs LOOP
        t0 := clock_timestamp();
        EXECUTE q;
        times := times || (extract(epoch FROM clock_timestamp() - t0) * 1000)::numeric;
    END LOOP;
    RETURN (SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY x) FROM unnest(times) x);
END
$$;

CREATE FUNCTION bench.record(benchmark text, variant text, size text, q text, per text,
                             runs int DEFAULT 5) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench.results (benchmark, variant, size, ms_median, per, runs)
    VALUES (benchmark, variant, size, round(bench.median_ms(q, runs), 3), per, runs);
END
$$;

-- n deterministic incompressible bytes
CREATE FUNCTION bench.noise(n bigint, seed int DEFAULT 1) RETURNS bytea LANGUAGE sql AS $$
    SELECT substring(string_agg(sha256(convert_to(seed::text || ':' || i::text, 'UTF8')), ''::bytea) FROM 1 FOR n::int)
    FROM generate_series(1, (n + 31) / 32) i
$$;

-- Gives table dst the foreign keys of src_parent and the primary key and indexes of partition
-- src_part (80_partitions, 85_retention: the alternatives get memmie's shape).
CREATE FUNCTION bench.copy_shape(src_parent regclass, src_part regclass, dst regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint
             WHERE conrelid = src_parent AND contype = 'f' ORDER BY conname LOOP
        EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', dst, r.conname, r.def);
    END LOOP;
    FOR r IN SELECT pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conrelid = src_part AND contype = 'p' LOOP
        EXECUTE format('ALTER TABLE %s ADD %s', dst, r.def);
    END LOOP;
    FOR r IN SELECT pg_get_indexdef(i.indexrelid) AS def FROM pg_index i
             WHERE i.indrelid = src_part AND NOT i.indisprimary ORDER BY i.indexrelid LOOP
        EXECUTE regexp_replace(r.def, '^CREATE (UNIQUE )?INDEX \S+ ON \S+ ', format('CREATE \1INDEX ON %s ', dst));
    END LOOP;
END $$;

-- Partition creation: memmie.create_partitions / ensure_partitions vs pg_partman's create_parent /
-- run_maintenance (native partitioning), on tables of the same shape:
--   * bench.pm_deltas / bench.pm_events: partitioned by RANGE (created_at), made LIKE memmie.deltas /
--     memmie.events (columns, defaults, CHECKs), with the parents' foreign keys, and the primary
--     key (id, created_at) and every index that memmie._index_partition puts on a memmie
--     partition, declared on the parent (PostgreSQL makes them on each new partition); a
--     template table carries memmie's autovacuum_vacuum_scale_factor. Before any timing, one
--     partition of each side is compared (columns, constraints, index definitions, triggers,
--     reloptions): a difference stops the bench.
--   * memmie's DEFAULT partitions exist from CREATE EXTENSION; pg_partman 4.x's create_parent
--     always makes its own DEFAULT partition (one more table than memmie makes there).
--   * bench.fl_deltas / bench.fl_events, the same shape again with the keys and indexes declared
--     on the parent and a DEFAULT partition: the least SQL that makes such a partition in
--     PostgreSQL, one CREATE TABLE ... PARTITION OF each (its indexes made by that statement).
--     Not an alternative (memmie's partitions cannot be made so, see docs/schema.md, "Backup and
--     restore") but a reference: how much of each side's time is DDL that any way of making
--     these partitions pays (catalog rows, a file per table and index, the parent's partition
--     list read again after each new partition).
-- Cases (each timed run starts with none of the partitions it makes: they are dropped, untimed,
-- before it, then a CHECKPOINT unlinks their files; memmie and pg_partman runs alternate; timed:
-- the call and its COMMIT):
--   1. 30 monthly partitions of deltas: memmie.create_partitions('memmie.deltas', '2100-01-01', 30)
--      vs create_parent('bench.pm_deltas', ..., 'monthly', p_premake => 29, p_start_partition =>
--      this month), and the reference (30 CREATE TABLE ... PARTITION OF bench.fl_deltas);
--   2. 365 daily partitions of events: memmie.create_partitions('memmie.events', '2100-01-01', 365)
--      vs create_parent('bench.pm_events', ..., 'daily', p_premake => 364, this day), and the
--      reference;
--   3. upkeep of both tables, the current and next 3 periods existing: ensure_partitions(33) vs
--      run_maintenance() (infinite_time_partitions, the sets being empty; its premake set so that
--      it too stops at the 33rd period after the current one): 30 monthly + 30 daily each;
--   4. no-op upkeep (everything exists): ensure_partitions() vs run_maintenance() (premake 3).
-- Every partition made here is dropped at the end, and pg_partman with it. Medians of BENCH_RUNS
-- runs (default 3; no-ops: 20 runs, one transaction), after one untimed warm-up run.
-- Needs pg_partman (Debian: postgresql-15-partman, installed by bench/run.sh); skipped without.
\ir runs.psql

SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pg_partman') AS have_partman \gset
\if :have_partman
\else
\echo 'pg_partman is not available (Debian: postgresql-15-partman): 80_partitions skipped'
\quit
\endif
-- memmie's periods are UTC days and months; pg_partman truncates in the session's time zone
SET timezone = 'UTC';
CREATE SCHEMA IF NOT EXISTS partman;
CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman;
SELECT extversion AS partman_version FROM pg_extension WHERE extname = 'pg_partman' \gset

-- The partitions of parent and their lower bounds (NULL for the DEFAULT partition).
CREATE FUNCTION bench.partitions_of(parent regclass) RETURNS TABLE (part regclass, lo timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT c.oid::regclass, (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = parent
$$;
-- Drops the partitions of parent starting at or after from_ts (and the DEFAULT one if asked);
-- they must be empty (only partitions this bench made are dropped).
CREATE FUNCTION bench.drop_partitions(parent regclass, from_ts timestamptz, with_default boolean DEFAULT false)
RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    p record;
    n int := 0;
    has_rows boolean;
BEGIN
    FOR p IN SELECT * FROM bench.partitions_of(parent) WHERE lo >= from_ts OR (with_default AND lo IS NULL) LOOP
        EXECUTE format('SELECT EXISTS (SELECT FROM %s)', p.part) INTO has_rows;
        IF has_rows THEN
            RAISE EXCEPTION 'bench: partition % holds rows, not dropping it', p.part;
        END IF;
        EXECUTE format('DROP TABLE %s', p.part);
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
CREATE FUNCTION bench.count_partitions(parent regclass, from_ts timestamptz) RETURNS int LANGUAGE sql STABLE AS $$
    SELECT count(*)::int FROM bench.partitions_of(parent) WHERE lo >= from_ts
$$;

-- What a partition is made of, names left out: columns, constraints, index definitions,
-- triggers, reloptions.
CREATE FUNCTION bench.partition_shape(rel regclass) RETURNS text[] LANGUAGE sql STABLE AS $$
    SELECT array_agg(x ORDER BY x) FROM (
        SELECT format('column %s %s%s default %s', a.attname, format_type(a.atttypid, a.atttypmod),
                      CASE WHEN a.attnotnull THEN ' not null' END, pg_get_expr(d.adbin, d.adrelid)) AS x
        FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped
        UNION ALL
        SELECT format('constraint %s %s', contype, pg_get_constraintdef(oid)) FROM pg_constraint WHERE conrelid = rel
        UNION ALL
        SELECT 'index ' || CASE WHEN indisprimary THEN 'primary ' ELSE '' END
               || regexp_replace(pg_get_indexdef(indexrelid), '^CREATE (UNIQUE )?INDEX \S+ ON \S+ ', 'CREATE \1INDEX ON _ ')
        FROM pg_index WHERE indrelid = rel
        UNION ALL
        SELECT format('trigger %s %s %s', tgfoid::regproc, tgtype, tgenabled) FROM pg_trigger WHERE tgrelid = rel
        UNION ALL
        SELECT 'reloptions ' || coalesce(array_to_string(reloptions, ','), '') FROM pg_class WHERE oid = rel
    ) s
$$;

-- pg_partman's sets, and their template tables (pg_partman copies a template's reloptions).
-- dst: a table partitioned by RANGE (created_at) made LIKE memmie.<src> (columns, defaults,
-- CHECKs), with the parent's foreign keys and, declared on it, the key and indexes of memmie's
-- partitions of src.
CREATE FUNCTION bench.shaped_like(dst text, src text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('CREATE TABLE %s (LIKE memmie.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING STORAGE) '
                   'PARTITION BY RANGE (created_at)', dst, src);
    PERFORM bench.copy_shape(format('memmie.%I', src)::regclass, format('memmie.%I', src || '_default')::regclass,
                             dst::regclass);
END $$;
SELECT bench.shaped_like('bench.pm_deltas', 'deltas'), bench.shaped_like('bench.pm_events', 'events');
SELECT bench.shaped_like('bench.fl_deltas', 'deltas'), bench.shaped_like('bench.fl_events', 'events');
CREATE TABLE bench.fl_deltas_default PARTITION OF bench.fl_deltas DEFAULT;
CREATE TABLE bench.fl_events_default PARTITION OF bench.fl_events DEFAULT;
-- The reference: count periods (interval `period`) from start, one CREATE TABLE ... PARTITION OF
-- each, with the reloptions memmie gives its partitions.
CREATE FUNCTION bench.fl_create(parent text, start date, count int, period interval, scale numeric)
RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 0 .. count - 1 LOOP
        EXECUTE format('CREATE TABLE %s PARTITION OF %s FOR VALUES FROM (%L) TO (%L) WITH (autovacuum_vacuum_scale_factor = %s)',
                       parent || to_char(start + i * period, '_YYYY_MM_DD'), parent,
                       (start + i * period)::timestamptz, (start + (i + 1) * period)::timestamptz, scale);
    END LOOP;
    RETURN count;
END $$;
CREATE TABLE bench.pm_deltas_template (LIKE bench.pm_deltas) WITH (autovacuum_vacuum_scale_factor = 0.1);
CREATE TABLE bench.pm_events_template (LIKE bench.pm_events) WITH (autovacuum_vacuum_scale_factor = 0.05);

CREATE FUNCTION bench.pm_reset(parent text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM bench.drop_partitions(parent::regclass, '-infinity', true);
    DELETE FROM partman.part_config WHERE parent_table = parent;
END $$;
CREATE FUNCTION bench.pm_create_parent(parent text, period text, premake int) RETURNS boolean
LANGUAGE sql AS $$
    SELECT partman.create_parent(p_parent_table => parent, p_control => 'created_at', p_type => 'native',
                                 p_interval => period, p_premake => premake,
                                 p_start_partition => date_trunc(CASE period WHEN 'monthly' THEN 'month' ELSE 'day' END, now())::text,
                                 p_template_table => parent || '_template')
$$;

-- The same shape on both sides, or no comparison.
SELECT memmie.create_partitions('memmie.deltas', '2100-01-01', 1) AS one_delta_partition,
       memmie.create_partitions('memmie.events', '2100-01-01', 1) AS one_event_partition;
SELECT bench.pm_create_parent('bench.pm_deltas', 'monthly', 1), bench.pm_create_parent('bench.pm_events', 'daily', 1);
SELECT bench.fl_create('bench.fl_deltas', '2100-01-01', 1, '1 month', 0.1), bench.fl_create('bench.fl_events', '2100-01-01', 1, '1 day', 0.05);
DO $$
DECLARE
    pair record;
    m text[];
    p text[];
BEGIN
    FOR pair IN SELECT * FROM (VALUES ('memmie.deltas', 'bench.pm_deltas'), ('memmie.events', 'bench.pm_events'),
                                      ('memmie.deltas', 'bench.fl_deltas'), ('memmie.events', 'bench.fl_events')) v(mp, pp) LOOP
        m := bench.partition_shape((SELECT part FROM bench.partitions_of(pair.mp::regclass) WHERE lo = '2100-01-01'));
        p := bench.partition_shape((SELECT part FROM bench.partitions_of(pair.pp::regclass) WHERE lo IS NOT NULL LIMIT 1));
        IF m IS DISTINCT FROM p THEN
            RAISE EXCEPTION 'bench: % and % partitions differ: only memmie: %; only pg_partman: %', pair.mp, pair.pp,
                (SELECT array_agg(x) FROM unnest(m) x WHERE x <> ALL (p)), (SELECT array_agg(x) FROM unnest(p) x WHERE x <> ALL (m));
        END IF;
        RAISE NOTICE '% and % partitions: same shape (% items: columns, constraints, indexes, triggers, options)', pair.mp, pair.pp, cardinality(m);
    END LOOP;
END $$;
SELECT bench.drop_partitions('memmie.deltas', '2100-01-01'), bench.drop_partitions('memmie.events', '2100-01-01');
SELECT bench.pm_reset('bench.pm_deltas'), bench.pm_reset('bench.pm_events');
SELECT bench.drop_partitions('bench.fl_deltas', '2100-01-01'), bench.drop_partitions('bench.fl_events', '2100-01-01');

-- One row per side of a case: what to run before each timed run (untimed, committed), the timed
-- call, and a query that must then return `expect` (the partitions it made).
CREATE TABLE bench.ddl_cases (benchmark text, size text, vord int, variant text, setup text, q text,
                              check_sql text, expect int);
-- Runs each case's sides alternately, one untimed warm-up round then `runs` timed rounds; each
-- timed run is the call and its COMMIT.
CREATE PROCEDURE bench.ddl_run(bm text, runs int) LANGUAGE plpgsql AS $$
DECLARE
    c record;
    t0 timestamptz;
    ms numeric;
    n int;
BEGIN
    CREATE TEMP TABLE ddl_times (vord int, ms numeric);
    FOR i IN 0..runs LOOP
        FOR c IN SELECT * FROM bench.ddl_cases WHERE benchmark = bm ORDER BY vord LOOP
            EXECUTE c.setup;
            COMMIT;
            -- the dropped tables' files go now, not at a checkpoint during a timed run
            CHECKPOINT;
            t0 := clock_timestamp();
            EXECUTE c.q;
            COMMIT;
            ms := extract(epoch FROM clock_timestamp() - t0) * 1000;
            EXECUTE c.check_sql INTO n;
            IF n IS DISTINCT FROM c.expect THEN
                RAISE EXCEPTION 'bench: % (%): % partitions made, % expected', bm, c.variant, n, c.expect;
            END IF;
            RAISE NOTICE '% (%), run %: % ms', bm, c.variant, CASE WHEN i = 0 THEN 'warm-up' ELSE i::text END, round(ms, 1);
            IF i > 0 THEN
                INSERT INTO ddl_times VALUES (c.vord, ms);
            END IF;
        END LOOP;
    END LOOP;
    INSERT INTO bench.results (benchmark, variant, size, ms_median, per, runs)
    SELECT dc.benchmark, dc.variant, dc.size,
           round((SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY t.ms) FROM ddl_times t WHERE t.vord = dc.vord)::numeric, 3),
           'ms per call + COMMIT (none of its partitions existing)', runs
    FROM bench.ddl_cases dc WHERE dc.benchmark = bm ORDER BY dc.vord;
    DROP TABLE ddl_times;
    COMMIT;
END $$;

INSERT INTO bench.ddl_cases VALUES
    ('partitions: create, deltas-shaped (monthly)', '30 partitions', 1, 'memmie.create_partitions',
     $$SELECT bench.drop_partitions('memmie.deltas', '2100-01-01')$$,
     $$SELECT memmie.create_partitions('memmie.deltas', '2100-01-01', 30)$$,
     $$SELECT bench.count_partitions('memmie.deltas', '2100-01-01')$$, 30),
    ('partitions: create, deltas-shaped (monthly)', '30 partitions', 2, 'pg_partman ' || :'partman_version' || ' create_parent',
     $$SELECT bench.pm_reset('bench.pm_deltas')$$,
     $$SELECT bench.pm_create_parent('bench.pm_deltas', 'monthly', 29)$$,
     $$SELECT bench.count_partitions('bench.pm_deltas', '-infinity')$$, 30),
    ('partitions: create, deltas-shaped (monthly)', '30 partitions', 3, 'PostgreSQL alone: CREATE TABLE ... PARTITION OF',
     $$SELECT bench.drop_partitions('bench.fl_deltas', '2100-01-01')$$,
     $$SELECT bench.fl_create('bench.fl_deltas', '2100-01-01', 30, '1 month', 0.1)$$,
     $$SELECT bench.count_partitions('bench.fl_deltas', '2100-01-01')$$, 30),
    ('partitions: create, events-shaped (daily)', '365 partitions', 1, 'memmie.create_partitions',
     $$SELECT bench.drop_partitions('memmie.events', '2100-01-01')$$,
     $$SELECT memmie.create_partitions('memmie.events', '2100-01-01', 365)$$,
     $$SELECT bench.count_partitions('memmie.events', '2100-01-01')$$, 365),
    ('partitions: create, events-shaped (daily)', '365 partitions', 2, 'pg_partman ' || :'partman_version' || ' create_parent',
     $$SELECT bench.pm_reset('bench.pm_events')$$,
     $$SELECT bench.pm_create_parent('bench.pm_events', 'daily', 364)$$,
     $$SELECT bench.count_partitions('bench.pm_events', '-infinity')$$, 365),
    ('partitions: create, events-shaped (daily)', '365 partitions', 3, 'PostgreSQL alone: CREATE TABLE ... PARTITION OF',
     $$SELECT bench.drop_partitions('bench.fl_events', '2100-01-01')$$,
     $$SELECT bench.fl_create('bench.fl_events', '2100-01-01', 365, '1 day', 0.05)$$,
     $$SELECT bench.count_partitions('bench.fl_events', '2100-01-01')$$, 365);
CALL bench.ddl_run('partitions: create, deltas-shaped (monthly)', :bench_runs);
CALL bench.ddl_run('partitions: create, events-shaped (daily)', :bench_runs);
SELECT bench.drop_partitions('memmie.deltas', '2100-01-01') AS dropped, bench.drop_partitions('memmie.events', '2100-01-01') AS dropped;
SELECT bench.pm_reset('bench.pm_deltas'), bench.pm_reset('bench.pm_events');
DROP TABLE bench.fl_deltas, bench.fl_events;
DROP FUNCTION bench.fl_create(text, date, int, interval, numeric);

-- Upkeep: both sides keep the current and the next 3 periods (memmie: ensure_partitions() at
-- install; pg_partman: create_parent with premake 3), then are asked for 33 periods ahead.
-- run_maintenance keeps making partitions while round((start of the next one - now()) / period)
-- < premake, so depending on the time of day (of month) it makes one more than premake; its
-- premake is set so that it stops, like ensure_partitions(33), at the 33rd period after the
-- current one.
SELECT memmie.ensure_partitions();
SELECT bench.pm_create_parent('bench.pm_deltas', 'monthly', 3), bench.pm_create_parent('bench.pm_events', 'daily', 3);
UPDATE partman.part_config
SET premake = round(extract(epoch FROM age(date_trunc(p.unit, now()) + 33 * partition_interval::interval, now()))
                    / extract(epoch FROM partition_interval::interval)),
    infinite_time_partitions = true
FROM (VALUES ('bench.pm_deltas', 'month'), ('bench.pm_events', 'day')) p(parent, unit)
WHERE parent_table = p.parent
RETURNING parent_table, premake AS partman_premake_for_33_periods;
SELECT date_trunc('month', now()) + interval '4 months' AS month4, date_trunc('day', now()) + interval '4 days' AS day4 \gset
INSERT INTO bench.ddl_cases VALUES
    ('partitions: upkeep of both tables', '30 monthly + 30 daily', 1, 'memmie.ensure_partitions(33)',
     format($$SELECT bench.drop_partitions('memmie.deltas', %L), bench.drop_partitions('memmie.events', %L)$$, :'month4', :'day4'),
     $$SELECT memmie.ensure_partitions(33)$$,
     format($$SELECT bench.count_partitions('memmie.deltas', %L) + bench.count_partitions('memmie.events', %L)$$, :'month4', :'day4'), 60),
    ('partitions: upkeep of both tables', '30 monthly + 30 daily', 2, 'pg_partman ' || :'partman_version' || ' run_maintenance()',
     format($$SELECT bench.drop_partitions('bench.pm_deltas', %L), bench.drop_partitions('bench.pm_events', %L)$$, :'month4', :'day4'),
     $$SELECT partman.run_maintenance()$$,
     format($$SELECT bench.count_partitions('bench.pm_deltas', %L) + bench.count_partitions('bench.pm_events', %L)$$, :'month4', :'day4'), 60);
CALL bench.ddl_run('partitions: upkeep of both tables', :bench_runs);

-- No-op upkeep: everything exists (both sides keep 3 periods ahead).
UPDATE partman.part_config SET premake = 3 WHERE parent_table IN ('bench.pm_deltas', 'bench.pm_events');
SELECT memmie.ensure_partitions() AS made_by_noop_ensure;
SELECT bench.record('partitions: no-op upkeep of both tables', 'memmie.ensure_partitions()', 'all exist',
                    'SELECT memmie.ensure_partitions()', 'ms per call (20 calls in one transaction)', 20);
SELECT bench.record('partitions: no-op upkeep of both tables', 'pg_partman ' || :'partman_version' || ' run_maintenance()', 'all exist',
                    'SELECT partman.run_maintenance()', 'ms per call (20 calls in one transaction)', 20);
SELECT (SELECT count(*) FROM bench.partitions_of('bench.pm_deltas')) AS pm_deltas_partitions,
       (SELECT count(*) FROM bench.partitions_of('bench.pm_events')) AS pm_events_partitions;

-- Clean up: memmie keeps its current and next 3 periods, as before this file; no pg_partman.
SELECT bench.drop_partitions('memmie.deltas', :'month4') AS dropped, bench.drop_partitions('memmie.events', :'day4') AS dropped;
SELECT bench.pm_reset('bench.pm_deltas'), bench.pm_reset('bench.pm_events');
DROP TABLE bench.pm_deltas, bench.pm_events, bench.pm_deltas_template, bench.pm_events_template;
DROP EXTENSION pg_partman;
DROP SCHEMA partman;

SELECT benchmark, size, variant, ms_median, per FROM bench.results WHERE benchmark LIKE 'partitions:%' ORDER BY ord;
SELECT m.benchmark, m.size, a.variant AS versus, m.ms_median AS memmie_ms, a.ms_median AS versus_ms,
       round(a.ms_median / nullif(m.ms_median, 0), 2) AS speedup,
       CASE WHEN a.variant LIKE 'PostgreSQL alone%' THEN 'none (reference)'
            WHEN m.benchmark LIKE '%no-op%' THEN 'memmie < 5 ms' ELSE '>= 2' END AS target
FROM bench.results m JOIN bench.results a ON a.benchmark = m.benchmark AND a.size = m.size AND a.ord <> m.ord
WHERE m.benchmark LIKE 'partitions:%' AND m.variant LIKE 'memmie%' AND a.variant NOT LIKE 'memmie%'
ORDER BY m.ord;

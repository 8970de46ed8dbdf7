-- Partitions: everything about the partitions of memmie.deltas (by month) and memmie.events (by
-- day), the tables themselves excepted (sql/schema.sql). What a partition gets (keys, indexes,
-- storage parameters) is defined here once, for the DEFAULT partitions made at install and for
-- every partition src/partitions.rs makes later; the queries it runs are sql/queries/*.sql.

-- deltas and events are partitioned by created_at. Their keys and indexes are made on each
-- partition (by this function, for every partition memmie makes), not on the partitioned
-- parents: a partition made after install is then dumped and restored by pg_dump like any
-- table (with indexes on the parents, the restore's ATTACH PARTITION would already have made
-- the indexes pg_dump creates next, and fail). The primary key (id, created_at) per partition is
-- as unique as one on the parent: created_at decides the partition. On Citus, once
-- memmie.distribute() has distributed the parent, the key also has user_id (Citus wants the
-- distribution column in it; docs/schema.md "Citus").
CREATE FUNCTION memmie._index_partition(p_parent text, p_part text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t   text := format('memmie.%I', p_part);
    key text := 'id, created_at';
    distributed boolean := false;
BEGIN
    IF to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL THEN
        EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition d
                                WHERE d.logicalrelid OPERATOR(pg_catalog.=) pg_catalog.to_regclass($1))'
            INTO distributed USING format('memmie.%I', p_parent);
    END IF;
    IF distributed THEN
        key := 'id, created_at, user_id';
    END IF;
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (%s)', t, key);
    IF p_parent = 'deltas' THEN
        EXECUTE format('CREATE INDEX ON %s (blob_id, to_version)', t);
        EXECUTE format('CREATE INDEX ON %s (user_id)', t);
        EXECUTE format($i$CREATE INDEX ON %s (status) WHERE status <> 'applied'$i$, t);
        EXECUTE format('CREATE INDEX ON %s (provider_id)', t);
        EXECUTE format('CREATE INDEX ON %s (created_at DESC)', t);
        EXECUTE format('CREATE INDEX ON %s (applied_at DESC) WHERE applied_at IS NOT NULL', t);
        EXECUTE format('CREATE INDEX ON %s (caused_by_delta_id) WHERE caused_by_delta_id IS NOT NULL', t);
        EXECUTE format($i$CREATE INDEX ON %s (created_at) WHERE status = 'pending'$i$, t);
    ELSIF p_parent = 'events' THEN
        EXECUTE format('CREATE INDEX ON %s (event_type)', t);
        EXECUTE format('CREATE INDEX ON %s (aggregate_id, aggregate_type)', t);
        EXECUTE format('CREATE INDEX ON %s (processed, created_at) WHERE processed = false', t);
        EXECUTE format('CREATE INDEX ON %s (created_at DESC)', t);
        EXECUTE format('CREATE INDEX ON %s (position) WHERE position IS NOT NULL', t);
        EXECUTE format('CREATE INDEX ON %s (created_at) WHERE position IS NULL', t);
    ELSE
        RAISE EXCEPTION 'memmie partitions deltas and events, not %', p_parent USING ERRCODE = '22023';
    END IF;
END
$$;

-- Autovacuum of the partitions (design document). Partitioned parents take no storage
-- parameters; every partition memmie makes later takes those of its table's DEFAULT partition
-- (sql/queries/partition_options.sql), so they are set here only.
SELECT memmie._index_partition('deltas', 'deltas_default');
ALTER TABLE memmie.deltas_default SET (autovacuum_vacuum_scale_factor = 0.1);
SELECT memmie._index_partition('events', 'events_default');
ALTER TABLE memmie.events_default SET (autovacuum_vacuum_scale_factor = 0.05);

-- ---------------------------------------------------------------------------------------------
-- Upkeep (native: src/partitions.rs). The public functions take a regclass, which the Rust entry
-- points receive as its oid.

CREATE FUNCTION memmie.create_partitions(parent regclass, start_date date, count int) RETURNS int
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._create_partitions(parent::oid, start_date, count)
$$;

CREATE FUNCTION memmie.drop_old_partitions(parent regclass, older_than interval) RETURNS int
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._drop_old_partitions(parent::oid, older_than)
$$;

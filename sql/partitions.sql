-- Partition upkeep (native: src/partitions.rs). The public functions take a regclass, which
-- the Rust entry points receive as its oid.

CREATE FUNCTION memmie.create_partitions(parent regclass, start_date date, count int) RETURNS int
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._create_partitions(parent::oid, start_date, count)
$$;

CREATE FUNCTION memmie.drop_old_partitions(parent regclass, older_than interval) RETURNS int
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._drop_old_partitions(parent::oid, older_than)
$$;

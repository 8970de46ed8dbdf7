-- memmie 0.1.0 -> 0.2.0: the provenance DAG, providers, jobs with leases, the provider pipeline.
-- Run by ALTER EXTENSION memmie UPDATE TO '0.2.0'. tests/upgrade checks that the result equals
-- a fresh 0.2.0 install, object by object.
\echo Use "ALTER EXTENSION memmie UPDATE TO '0.2.0'" to load this file. \quit

-- ---------------------------------------------------------------------------------------------
-- Tables

ALTER TABLE memmie.blob_edges
    ADD COLUMN version_map jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(version_map) = 'array');

ALTER TABLE memmie.events ADD COLUMN position bigint;
CREATE SEQUENCE memmie.event_position_seq AS bigint;
SELECT pg_catalog.pg_extension_config_dump('memmie.event_position_seq', '');

-- 0.1.0 had no way to hand out jobs: a job someone marked running holds no lease, so it goes back
-- to the queue (the new CHECK needs a holder for every running job).
UPDATE memmie.jobs SET status = 'queued' WHERE status = 'running';
-- The value checks every claim and completion pays for become domains (see sql/schema.sql),
-- made without their checks first so that the columns change type without a rewrite; adding
-- the checks then validates the rows. idx_jobs_status: the claim and lease indexes cover it.
DROP INDEX memmie.idx_jobs_status;
CREATE DOMAIN memmie.job_status AS varchar(50);
CREATE DOMAIN memmie.percent AS integer;
CREATE DOMAIN memmie.non_negative_int AS integer;
ALTER TABLE memmie.jobs
    DROP CONSTRAINT jobs_status_check, DROP CONSTRAINT jobs_progress_check,
    DROP CONSTRAINT jobs_retry_count_check, DROP CONSTRAINT jobs_max_retries_check,
    ALTER COLUMN status TYPE memmie.job_status, ALTER COLUMN progress TYPE memmie.percent,
    ALTER COLUMN retry_count TYPE memmie.non_negative_int, ALTER COLUMN max_retries TYPE memmie.non_negative_int;
ALTER DOMAIN memmie.job_status ADD CONSTRAINT job_status_check
    CHECK (VALUE IN ('queued', 'running', 'completed', 'failed', 'cancelled'));
ALTER DOMAIN memmie.percent ADD CONSTRAINT percent_check CHECK (VALUE BETWEEN 0 AND 100);
ALTER DOMAIN memmie.non_negative_int ADD CONSTRAINT non_negative_int_check CHECK (VALUE >= 0);
ALTER TABLE memmie.jobs
    ADD COLUMN worker_id varchar(255),
    ADD COLUMN lease_expires_at timestamptz,
    ADD COLUMN lease_duration interval,
    ADD COLUMN heartbeat_at timestamptz,
    ADD COLUMN run_after timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    ADD CONSTRAINT running_has_lease CHECK (status <> 'running'
        OR (worker_id IS NOT NULL AND lease_expires_at IS NOT NULL));
CREATE INDEX idx_jobs_queued ON memmie.jobs (run_after, created_at, id) WHERE status = 'queued';
CREATE INDEX idx_jobs_queued_type ON memmie.jobs (job_type, run_after, created_at, id) WHERE status = 'queued';
-- (predicate: see sql/schema.sql)
CREATE INDEX idx_jobs_leases ON memmie.jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
-- a queue: vacuumed often (see sql/schema.sql)
ALTER TABLE memmie.jobs SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);

-- A processing's job now has the processing's id. Ids set by hand in 0.1.0 (free text then) are
-- kept in metadata.
UPDATE memmie.provider_processing
SET metadata = metadata || jsonb_build_object('external_job_id', job_id), job_id = NULL
WHERE job_id IS NOT NULL AND job_id <> id::text;
ALTER TABLE memmie.provider_processing
    ADD CONSTRAINT processing_job_id CHECK (job_id IS NULL OR job_id = id::text);

-- Usage counted insert-only, folded into usage_metrics (see sql/schema.sql and sql/metrics.sql).
ALTER TABLE memmie.usage_metrics ADD COLUMN total_response_time_ms bigint NOT NULL DEFAULT 0;
CREATE TABLE memmie.usage_increments (
    user_id              uuid NOT NULL,
    metric_date          date NOT NULL DEFAULT (clock_timestamp() AT TIME ZONE 'UTC')::date,
    recorded_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    blobs_created        integer NOT NULL DEFAULT 0,
    blobs_processed      integer NOT NULL DEFAULT 0,
    deltas_applied       integer NOT NULL DEFAULT 0,
    storage_bytes_used   bigint,
    provider_id          varchar(255),
    provider_invocations integer NOT NULL DEFAULT 0,
    processing_time_ms   bigint NOT NULL DEFAULT 0,
    api_calls            integer NOT NULL DEFAULT 0,
    api_errors           integer NOT NULL DEFAULT 0,
    response_time_ms     bigint NOT NULL DEFAULT 0
);
SELECT pg_catalog.pg_extension_config_dump('memmie.usage_increments', '');

-- The two CHECKs of deltas in the form pg_dump prints back (see sql/schema.sql).
ALTER TABLE memmie.deltas
    DROP CONSTRAINT deltas_operation_check,
    ADD CONSTRAINT deltas_operation_check
        CHECK (operation::text = ANY (ARRAY['create'::text, 'update'::text, 'transform'::text,
                                            'delete'::text, 'revert'::text])),
    DROP CONSTRAINT deltas_status_check,
    ADD CONSTRAINT deltas_status_check
        CHECK (status::text = ANY (ARRAY['pending'::text, 'applying'::text, 'applied'::text,
                                         'failed'::text]));

-- user_content_refs is derived from blob_versions and rebuilt by the counting triggers when a
-- dump is restored: it leaves pg_dump's list (pg_extension_config_dump cannot remove an entry).
UPDATE pg_catalog.pg_extension e
SET extconfig = (SELECT array_agg(c ORDER BY i) FROM unnest(e.extconfig) WITH ORDINALITY u(c, i)
                 WHERE c <> 'memmie.user_content_refs'::regclass),
    extcondition = (SELECT array_agg(x ORDER BY i) FROM unnest(e.extcondition) WITH ORDINALITY u(x, i)
                    WHERE e.extconfig[i] <> 'memmie.user_content_refs'::regclass)
WHERE e.extname = 'memmie';

-- New rows start their counters at zero (see sql/blobs.sql).
-- @function sql/blobs.sql _zero_counters
CREATE TRIGGER zero_counters BEFORE INSERT ON memmie.content_storage
    FOR EACH ROW WHEN (NEW.reference_count <> 0) EXECUTE FUNCTION memmie._zero_counters();
CREATE TRIGGER zero_counters BEFORE INSERT ON memmie.user_contexts
    FOR EACH ROW WHEN (NEW.storage_used <> 0 OR NEW.blob_count <> 0)
    EXECUTE FUNCTION memmie._zero_counters();

-- Content reference counts are noted per row and written when the transaction commits (see
-- src/refcount.rs): the three statement-level triggers make way for two row-level ones.
DROP TRIGGER content_refs_insert ON memmie.blob_versions;
DROP TRIGGER content_refs_delete ON memmie.blob_versions;
DROP TRIGGER content_refs_update ON memmie.blob_versions;
CREATE TRIGGER content_refs AFTER INSERT OR DELETE ON memmie.blob_versions
    FOR EACH ROW EXECUTE FUNCTION memmie.content_refcount();
CREATE TRIGGER content_refs_update AFTER UPDATE OF content_hash ON memmie.blob_versions
    FOR EACH ROW WHEN (OLD.content_hash IS DISTINCT FROM NEW.content_hash)
    EXECUTE FUNCTION memmie.content_refcount();

-- ---------------------------------------------------------------------------------------------
-- deltas and events: keys and indexes move from the partitioned parents to each partition, and
-- the dated partitions 0.1.0 made at install leave the extension, so that pg_dump dumps them as
-- ordinary tables and a dump restores on any day (see sql/schema.sql).
-- @function sql/schema.sql _index_partition

DROP INDEX memmie.idx_deltas_blob_id, memmie.idx_deltas_user_id, memmie.idx_deltas_status,
           memmie.idx_deltas_provider, memmie.idx_deltas_created, memmie.idx_deltas_applied,
           memmie.idx_deltas_causality, memmie.idx_deltas_pending,
           memmie.idx_events_type, memmie.idx_events_aggregate, memmie.idx_events_unprocessed,
           memmie.idx_events_created;
ALTER TABLE memmie.deltas DROP CONSTRAINT deltas_pkey;
ALTER TABLE memmie.events DROP CONSTRAINT events_pkey;
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT p.relname AS parent, c.relname AS part,
                    pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT' AS is_default
             FROM pg_catalog.pg_inherits i
             JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
             JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
             WHERE i.inhparent IN ('memmie.deltas'::regclass, 'memmie.events'::regclass)
             ORDER BY 2
    LOOP
        PERFORM memmie._index_partition(r.parent::text, r.part::text);
        IF NOT r.is_default THEN
            EXECUTE format('ALTER EXTENSION memmie DROP TABLE memmie.%I', r.part);
        END IF;
    END LOOP;
END
$$;
UPDATE pg_catalog.pg_extension e
SET extconfig = (SELECT array_agg(c ORDER BY i) FROM unnest(e.extconfig) WITH ORDINALITY u(c, i)
                 WHERE (c::regclass)::text !~ '^memmie\.(deltas|events)_[0-9]'),
    extcondition = (SELECT array_agg(x ORDER BY i) FROM unnest(e.extcondition) WITH ORDINALITY u(x, i)
                    WHERE (e.extconfig[i]::regclass)::text !~ '^memmie\.(deltas|events)_[0-9]')
WHERE e.extname = 'memmie';


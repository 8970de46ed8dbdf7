-- memmie schema: the tables of the design document (seed/000), with its defects corrected.
-- Every deviation is listed, with its reason, in docs/schema.md.
-- Loaded first (bootstrap). All names are schema-qualified; nothing depends on search_path.

-- ---------------------------------------------------------------------------------------------
-- Users
CREATE TABLE memmie.user_contexts (
    user_id       uuid PRIMARY KEY,
    settings      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    -- the quotas memmie knows, each a non-negative number (memmie.set_quota checks the same,
    -- with 22023 naming what is wrong)
    quota_limits  jsonb NOT NULL DEFAULT '{}' CHECK (
                      jsonb_typeof(quota_limits) = 'object'
                      AND NOT jsonb_path_exists(quota_limits, '$.* ? (@.type() != "number" || @ < 0)')
                      AND quota_limits - '{keep_versions,max_blobs,max_content_size,max_storage_bytes}'::pg_catalog.text[]
                          = '{}'::pg_catalog.jsonb),
    storage_used  bigint NOT NULL DEFAULT 0 CHECK (storage_used >= 0),
    blob_count    integer NOT NULL DEFAULT 0 CHECK (blob_count >= 0),
    created_at    timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at    timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_user_contexts_storage ON memmie.user_contexts (storage_used);
CREATE INDEX idx_user_contexts_created ON memmie.user_contexts (created_at);

-- ---------------------------------------------------------------------------------------------
-- Content-addressed storage. One row per SHA-256 of the original bytes.
CREATE TABLE memmie.content_storage (
    content_hash    varchar(64) PRIMARY KEY CHECK (content_hash ~ '^[0-9a-f]{64}$'),
    content         bytea,
    storage_backend varchar(50) NOT NULL DEFAULT 'postgres'
                    CHECK (storage_backend IN ('postgres', 's3', 'filesystem')),
    storage_path    text,
    compression     varchar(20) NOT NULL DEFAULT 'none'
                    CHECK (compression IN ('none', 'gzip', 'lz4', 'zstd')),
    original_size   bigint NOT NULL CHECK (original_size >= 0),
    compressed_size bigint CHECK (compressed_size >= 0),
    mime_type       varchar(255),
    reference_count integer NOT NULL DEFAULT 0 CHECK (reference_count >= 0),
    created_at      timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    last_accessed   timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT content_where CHECK (
        (storage_backend = 'postgres' AND content IS NOT NULL)
        OR (storage_backend <> 'postgres' AND content IS NULL AND storage_path IS NOT NULL))
);
-- memmie compresses content itself; TOAST must not try again.
ALTER TABLE memmie.content_storage ALTER COLUMN content SET STORAGE EXTERNAL;
CREATE INDEX idx_content_storage_accessed ON memmie.content_storage (last_accessed);
CREATE INDEX idx_content_storage_refs ON memmie.content_storage (reference_count);
CREATE INDEX idx_content_hash_size ON memmie.content_storage (content_hash, original_size);

-- ---------------------------------------------------------------------------------------------
-- Blobs: one row per blob, its head (latest version). Every version lives in blob_versions.
CREATE TABLE memmie.blobs (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id        uuid NOT NULL,
    content_hash   varchar(64) NOT NULL,
    content_size   bigint NOT NULL CHECK (content_size >= 0),
    content_type   varchar(255) NOT NULL,
    version        integer NOT NULL DEFAULT 1 CHECK (version >= 1),
    is_latest      boolean NOT NULL DEFAULT true CHECK (is_latest),
    parent_blob_id uuid REFERENCES memmie.blobs (id) ON DELETE CASCADE,
    root_blob_id   uuid,
    depth          integer NOT NULL DEFAULT 0 CHECK (depth >= 0),
    created_by     varchar(255) NOT NULL DEFAULT 'user',
    metadata       jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    tags           text[] NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at     timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    deleted_at     timestamptz,
    CONSTRAINT fk_user FOREIGN KEY (user_id)
        REFERENCES memmie.user_contexts (user_id) ON DELETE CASCADE
);
CREATE INDEX idx_blobs_user_id ON memmie.blobs (user_id) WHERE deleted_at IS NULL;
CREATE INDEX idx_blobs_parent ON memmie.blobs (parent_blob_id) WHERE deleted_at IS NULL;
CREATE INDEX idx_blobs_root ON memmie.blobs (root_blob_id) WHERE deleted_at IS NULL;
CREATE INDEX idx_blobs_content_hash ON memmie.blobs (content_hash);
CREATE INDEX idx_blobs_created_by ON memmie.blobs (created_by);
CREATE INDEX idx_blobs_tags ON memmie.blobs USING gin (tags);
CREATE INDEX idx_blobs_metadata ON memmie.blobs USING gin (metadata jsonb_path_ops);
CREATE INDEX idx_blobs_created_at ON memmie.blobs (created_at DESC);
CREATE INDEX idx_blobs_updated_at ON memmie.blobs (updated_at DESC);
-- Full text over title and description; a missing key must not make the whole text NULL.
CREATE INDEX idx_blobs_search ON memmie.blobs USING gin (
    to_tsvector('english'::pg_catalog.regconfig,
                coalesce(metadata ->> 'title', '') || ' ' || coalesce(metadata ->> 'description', '')));
-- Keyset pagination (created_at DESC, id DESC) per user, per parent, per provider.
CREATE INDEX idx_blobs_user_created ON memmie.blobs (user_id, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;
CREATE INDEX idx_blobs_user_created_all ON memmie.blobs (user_id, created_at DESC, id DESC);
CREATE INDEX idx_blobs_parent_created ON memmie.blobs (parent_blob_id, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;
CREATE INDEX idx_blobs_provider_created ON memmie.blobs (created_by, created_at DESC, id DESC)
    WHERE deleted_at IS NULL;

-- ---------------------------------------------------------------------------------------------
-- Every version of every blob, the head included: enough to restore any version.
CREATE TABLE memmie.blob_versions (
    blob_id      uuid NOT NULL,
    version      integer NOT NULL CHECK (version >= 1),
    user_id      uuid NOT NULL,
    content_hash varchar(64) NOT NULL REFERENCES memmie.content_storage (content_hash),
    content_size bigint NOT NULL CHECK (content_size >= 0),
    content_type varchar(255) NOT NULL,
    metadata     jsonb NOT NULL DEFAULT '{}',
    tags         text[] NOT NULL DEFAULT '{}',
    deleted      boolean NOT NULL DEFAULT false,
    delta_id     uuid,
    created_at   timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    created_by   varchar(255) NOT NULL,
    PRIMARY KEY (blob_id, version),
    CONSTRAINT fk_blob FOREIGN KEY (blob_id) REFERENCES memmie.blobs (id) ON DELETE CASCADE
);
CREATE INDEX idx_blob_versions_created ON memmie.blob_versions (created_at DESC);
CREATE INDEX idx_blob_versions_content ON memmie.blob_versions (content_hash);

-- A blob's whole state at some of its versions, so that replay starts from the nearest one at or
-- below the version asked for instead of from version 1: written with the version, in the same
-- transaction, at every memmie.snapshot_interval-th version, and at the base of a squashed
-- history (squash_history). Deleted with their version (a hard delete, a squash). Not counted
-- in storage_used (see docs/schema.md).
CREATE TABLE memmie.blob_snapshots (
    blob_id uuid NOT NULL,
    version integer NOT NULL,
    -- the blob's user (its versions' user): on a Citus cluster the table is distributed by it
    user_id uuid NOT NULL,
    state   jsonb NOT NULL CHECK (jsonb_typeof(state) = 'object'),
    PRIMARY KEY (blob_id, version),
    CONSTRAINT fk_version FOREIGN KEY (blob_id, version)
        REFERENCES memmie.blob_versions (blob_id, version) ON DELETE CASCADE
);

-- Per user and content: how many of the user's versions name it. storage_used is the sum of
-- content_size over these rows, kept by the native trigger memmie.user_storage_accounting.
CREATE TABLE memmie.user_content_refs (
    user_id         uuid NOT NULL REFERENCES memmie.user_contexts (user_id) ON DELETE CASCADE,
    content_hash    varchar(64) NOT NULL,
    content_size    bigint NOT NULL CHECK (content_size >= 0),
    reference_count integer NOT NULL CHECK (reference_count > 0),
    PRIMARY KEY (user_id, content_hash)
);

-- ---------------------------------------------------------------------------------------------
-- Deltas: the event-sourced history, range-partitioned by month on created_at.
CREATE TABLE memmie.deltas (
    id                 uuid NOT NULL DEFAULT gen_random_uuid(),
    blob_id            uuid NOT NULL,
    user_id            uuid NOT NULL,
    -- These two CHECKs are written as pg_dump prints them back, so that a partition made after
    -- install (dumped as CREATE TABLE + ATTACH PARTITION) matches its parent on restore.
    operation          varchar(50) NOT NULL
                       CHECK (operation::pg_catalog.text = ANY (ARRAY[
                           'create'::pg_catalog.text, 'update'::pg_catalog.text, 'transform'::pg_catalog.text,
                           'delete'::pg_catalog.text, 'revert'::pg_catalog.text])),
    provider_id        varchar(255) NOT NULL DEFAULT 'user',
    patch              jsonb NOT NULL CHECK (jsonb_typeof(patch) = 'array'),
    from_version       integer NOT NULL DEFAULT 0 CHECK (from_version >= 0),
    to_version         integer NOT NULL,
    previous_delta_id  uuid,
    caused_by_delta_id uuid,
    caused_by_event    jsonb,
    status             varchar(50) NOT NULL DEFAULT 'pending'
                       CHECK (status::pg_catalog.text = ANY (ARRAY[
                           'pending'::pg_catalog.text, 'applying'::pg_catalog.text, 'applied'::pg_catalog.text,
                           'failed'::pg_catalog.text])),
    error_message      text,
    created_at         timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    applied_at         timestamptz,
    CONSTRAINT fk_blob FOREIGN KEY (blob_id) REFERENCES memmie.blobs (id) ON DELETE CASCADE,
    CONSTRAINT fk_user FOREIGN KEY (user_id)
        REFERENCES memmie.user_contexts (user_id) ON DELETE CASCADE
) PARTITION BY RANGE (created_at);
-- (its keys, indexes and storage parameters: sql/partitions.sql)
CREATE TABLE memmie.deltas_default PARTITION OF memmie.deltas DEFAULT;

-- ---------------------------------------------------------------------------------------------
-- The DAG of derived blobs.
CREATE TABLE memmie.blob_edges (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    parent_blob_id uuid NOT NULL,
    child_blob_id  uuid NOT NULL,
    provider_id    varchar(255) NOT NULL,
    transform_type varchar(255) NOT NULL,
    metadata       jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    -- Which version of the parent produced which version of the child, oldest first:
    -- [{"parent_version": 1, "child_version": 1}, ...] (kept by complete_processing).
    version_map    jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(version_map) = 'array'),
    -- the user of both blobs (an edge never joins two users' blobs): on a Citus cluster the
    -- table is distributed by it, so a user's whole DAG lies on that user's shards (last: the
    -- upgrade from 0.2.0 adds it)
    user_id        uuid NOT NULL,
    CONSTRAINT fk_parent FOREIGN KEY (parent_blob_id) REFERENCES memmie.blobs (id) ON DELETE CASCADE,
    CONSTRAINT fk_child FOREIGN KEY (child_blob_id) REFERENCES memmie.blobs (id) ON DELETE CASCADE,
    CONSTRAINT unique_edge UNIQUE (parent_blob_id, child_blob_id, provider_id),
    CONSTRAINT no_self_edge CHECK (parent_blob_id <> child_blob_id)
);
CREATE INDEX idx_edges_parent ON memmie.blob_edges (parent_blob_id);
CREATE INDEX idx_edges_child ON memmie.blob_edges (child_blob_id);
CREATE INDEX idx_edges_provider ON memmie.blob_edges (provider_id);

-- ---------------------------------------------------------------------------------------------
-- Providers: one row per provider id (its current version); every registered version is kept
-- in provider_versions, which processing rows reference.
CREATE TABLE memmie.providers (
    id                varchar(255) PRIMARY KEY,
    name              varchar(255) NOT NULL,
    description       text,
    category          varchar(100),
    version           varchar(50) NOT NULL,
    workflow_id       varchar(255),
    config            jsonb NOT NULL DEFAULT '{}',
    trigger_events    text[] NOT NULL DEFAULT '{}',
    supported_types   text[] NOT NULL DEFAULT '{}',
    max_input_size    bigint CHECK (max_input_size >= 0),
    timeout_seconds   integer NOT NULL DEFAULT 30 CHECK (timeout_seconds > 0),
    input_schema      jsonb,
    output_schema     jsonb,
    config_schema     jsonb,
    processing_rules  jsonb NOT NULL DEFAULT '{}',
    status            varchar(50) NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'inactive', 'deprecated')),
    author            varchar(255),
    license           varchar(100),
    documentation_url text,
    created_at        timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at        timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT unique_provider_version UNIQUE (id, version)
);
CREATE INDEX idx_providers_status ON memmie.providers (status);
CREATE INDEX idx_providers_category ON memmie.providers (category);
CREATE INDEX idx_providers_events ON memmie.providers USING gin (trigger_events);
CREATE INDEX idx_providers_types ON memmie.providers USING gin (supported_types);

CREATE TABLE memmie.provider_versions (
    provider_id varchar(255) NOT NULL REFERENCES memmie.providers (id) ON DELETE CASCADE,
    version     varchar(50) NOT NULL,
    definition  jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (provider_id, version)
);

-- ---------------------------------------------------------------------------------------------
-- Provider processing state.
CREATE TABLE memmie.provider_processing (
    id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    blob_id              uuid NOT NULL,
    provider_id          varchar(255) NOT NULL,
    provider_version     varchar(50),
    user_id              uuid NOT NULL,
    status               varchar(50) NOT NULL
                         CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'skipped')),
    processed_version    integer,
    current_blob_version integer,
    output_blob_id       uuid REFERENCES memmie.blobs (id) ON DELETE SET NULL,
    output_delta_id      uuid,
    job_id               varchar(255),
    attempt_count        integer NOT NULL DEFAULT 0,
    error_message        text,
    processing_time_ms   integer,
    input_size           bigint,
    output_size          bigint,
    metadata             jsonb NOT NULL DEFAULT '{}',
    queued_at            timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    started_at           timestamptz,
    completed_at         timestamptz,
    CONSTRAINT fk_blob FOREIGN KEY (blob_id) REFERENCES memmie.blobs (id) ON DELETE CASCADE,
    CONSTRAINT fk_provider FOREIGN KEY (provider_id) REFERENCES memmie.providers (id),
    CONSTRAINT fk_provider_version FOREIGN KEY (provider_id, provider_version)
        REFERENCES memmie.provider_versions (provider_id, version),
    CONSTRAINT fk_user FOREIGN KEY (user_id)
        REFERENCES memmie.user_contexts (user_id) ON DELETE CASCADE,
    CONSTRAINT unique_processing UNIQUE (blob_id, provider_id, processed_version)
);
-- The job that runs a processing has the processing's id (see sql/pipeline.sql).
ALTER TABLE memmie.provider_processing
    ADD CONSTRAINT processing_job_id CHECK (job_id IS NULL OR job_id = id::pg_catalog.text);
CREATE INDEX idx_processing_blob ON memmie.provider_processing (blob_id);
CREATE INDEX idx_processing_provider ON memmie.provider_processing (provider_id);
CREATE INDEX idx_processing_status ON memmie.provider_processing (status)
    WHERE status IN ('pending', 'processing');
CREATE INDEX idx_processing_completed ON memmie.provider_processing (completed_at DESC)
    WHERE completed_at IS NOT NULL;
CREATE INDEX idx_processing_provider_status ON memmie.provider_processing (provider_id, status)
    WHERE status IN ('pending', 'processing');
CREATE INDEX idx_processing_output_blob ON memmie.provider_processing (output_blob_id)
    WHERE output_blob_id IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- Events, range-partitioned by day on created_at.
CREATE TABLE memmie.events (
    id             uuid NOT NULL DEFAULT gen_random_uuid(),
    event_type     varchar(100) NOT NULL,
    aggregate_id   uuid NOT NULL,
    aggregate_type varchar(50) NOT NULL,
    user_id        uuid,
    payload        jsonb NOT NULL,
    metadata       jsonb NOT NULL DEFAULT '{}',
    processed      boolean NOT NULL DEFAULT false,
    processed_at   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    -- The event's place in the feed of events_since(): given in commit order by
    -- memmie._sequence_events(), NULL until then (see docs/schema.md).
    position       bigint,
    CONSTRAINT fk_user FOREIGN KEY (user_id)
        REFERENCES memmie.user_contexts (user_id) ON DELETE CASCADE
) PARTITION BY RANGE (created_at);
CREATE SEQUENCE memmie.event_position_seq AS bigint;
-- (its keys, indexes and storage parameters: sql/partitions.sql)
CREATE TABLE memmie.events_default PARTITION OF memmie.events DEFAULT;

-- ---------------------------------------------------------------------------------------------
-- Jobs, claimed and completed from SQL.
-- The value checks of the columns that every claim and completion writes are domains: a
-- table's CHECK constraints are read back from the catalog and planned anew by every INSERT or
-- UPDATE statement (docs/schema.md: 30% of a claim + completion), a domain's once per session.
CREATE DOMAIN memmie.job_status AS varchar(50)
    CHECK (VALUE IN ('queued', 'running', 'completed', 'failed', 'cancelled'));
CREATE DOMAIN memmie.percent AS integer CHECK (VALUE BETWEEN 0 AND 100);
CREATE DOMAIN memmie.non_negative_int AS integer CHECK (VALUE >= 0);
CREATE TABLE memmie.jobs (
    id            varchar(255) PRIMARY KEY DEFAULT gen_random_uuid()::pg_catalog.text,
    job_type      varchar(100) NOT NULL,
    user_id       uuid NOT NULL,
    input         jsonb NOT NULL,
    output        jsonb,
    status        memmie.job_status NOT NULL DEFAULT 'queued',
    progress      memmie.percent NOT NULL DEFAULT 0,
    error_message text,
    retry_count   memmie.non_negative_int NOT NULL DEFAULT 0,
    max_retries   memmie.non_negative_int NOT NULL DEFAULT 3,
    created_at    timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    started_at    timestamptz,
    completed_at  timestamptz,
    expires_at    timestamptz,
    -- The lease (claim_jobs / heartbeat_job): who holds the job and until when.
    worker_id        varchar(255),
    lease_expires_at timestamptz,
    lease_duration   interval,
    heartbeat_at     timestamptz,
    -- Not handed out before this time (retry backoff).
    run_after        timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT fk_user FOREIGN KEY (user_id)
        REFERENCES memmie.user_contexts (user_id) ON DELETE CASCADE,
    CONSTRAINT running_has_lease CHECK (status <> 'running'
        OR (worker_id IS NOT NULL AND lease_expires_at IS NOT NULL))
);
CREATE INDEX idx_jobs_queued ON memmie.jobs (run_after, created_at, id) WHERE status = 'queued';
CREATE INDEX idx_jobs_queued_type ON memmie.jobs (job_type, run_after, created_at, id) WHERE status = 'queued';
-- (leases held: only running jobs have one. Not "WHERE status = 'running'": the planner would
-- then take it, not the primary key, to find the one running job that a worker completes.)
CREATE INDEX idx_jobs_leases ON memmie.jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
CREATE INDEX idx_jobs_user ON memmie.jobs (user_id);
CREATE INDEX idx_jobs_created ON memmie.jobs (created_at DESC);
CREATE INDEX idx_jobs_expires ON memmie.jobs (expires_at) WHERE expires_at IS NOT NULL;

-- ---------------------------------------------------------------------------------------------
-- Analytics.
CREATE TABLE memmie.usage_metrics (
    id                       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id                  uuid NOT NULL,
    metric_date              date NOT NULL,
    blobs_created            integer NOT NULL DEFAULT 0,
    blobs_processed          integer NOT NULL DEFAULT 0,
    deltas_applied           integer NOT NULL DEFAULT 0,
    storage_bytes_used       bigint NOT NULL DEFAULT 0,
    provider_invocations     jsonb NOT NULL DEFAULT '{}',
    api_calls                integer NOT NULL DEFAULT 0,
    api_errors               integer NOT NULL DEFAULT 0,
    total_processing_time_ms bigint NOT NULL DEFAULT 0,
    average_response_time_ms integer,
    created_at               timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at               timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    -- not in the design document: the sum average_response_time_ms is kept exact from
    total_response_time_ms   bigint NOT NULL DEFAULT 0,
    CONSTRAINT fk_user FOREIGN KEY (user_id)
        REFERENCES memmie.user_contexts (user_id) ON DELETE CASCADE,
    CONSTRAINT unique_user_date UNIQUE (user_id, metric_date)
);
CREATE INDEX idx_metrics_user_date ON memmie.usage_metrics (user_id, metric_date DESC);
CREATE INDEX idx_metrics_date ON memmie.usage_metrics (metric_date DESC);

-- Not in the design document: what memmie's functions count goes here first, one row per
-- change, insert only, so writers never wait for each other on a usage_metrics row; fold_usage()
-- (run by maintenance(), rollup_metrics() and user_usage()) adds the rows up into usage_metrics
-- and deletes them. Days are UTC days. No foreign key: fold_usage() drops the rows of users that
-- no longer exist.
CREATE TABLE memmie.usage_increments (
    user_id              uuid NOT NULL,
    metric_date          date NOT NULL DEFAULT (clock_timestamp() AT TIME ZONE 'UTC')::pg_catalog.date,
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

CREATE TABLE memmie.provider_metrics (
    id                       uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    provider_id              varchar(255) NOT NULL,
    metric_date              date NOT NULL,
    total_invocations        integer NOT NULL DEFAULT 0,
    successful_invocations   integer NOT NULL DEFAULT 0,
    failed_invocations       integer NOT NULL DEFAULT 0,
    latency_p50              integer,
    latency_p95              integer,
    latency_p99              integer,
    total_input_bytes        bigint NOT NULL DEFAULT 0,
    total_output_bytes       bigint NOT NULL DEFAULT 0,
    total_processing_time_ms bigint NOT NULL DEFAULT 0,
    error_counts             jsonb NOT NULL DEFAULT '{}',
    created_at               timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT fk_provider FOREIGN KEY (provider_id) REFERENCES memmie.providers (id),
    CONSTRAINT unique_provider_date UNIQUE (provider_id, metric_date)
);
CREATE INDEX idx_provider_metrics_date ON memmie.provider_metrics (provider_id, metric_date DESC);

-- ---------------------------------------------------------------------------------------------
-- Autovacuum for the busy tables (design document). Partitioned parents take no storage
-- parameters: deltas and events partitions get theirs in sql/partitions.sql.
ALTER TABLE memmie.blobs SET (autovacuum_vacuum_scale_factor = 0.1);
-- jobs is a queue: every job is written twice (claimed, finished) and every claim steps over
-- the index entries of the jobs claimed since the table was last vacuumed (one session, claim
-- + complete: 167 us just after a VACUUM, 333 / 509 / 700-1200 us after 20,000 / 40,000 /
-- 60,000-100,000 jobs). Vacuumed after 1% of its rows changed (plus 1,000), not 20%: with a
-- million jobs kept, 5,000 jobs between vacuums instead of 100,000.
ALTER TABLE memmie.jobs SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000);

-- ---------------------------------------------------------------------------------------------
-- The install makes only the DEFAULT partitions. Periods get their own partitions from
-- memmie.ensure_partitions() (run it after CREATE EXTENSION, and let maintenance keep it up):
-- those are ordinary tables that pg_dump dumps, so a dump restores on any day; partitions made
-- here would be extension members named by the install date, missing in a restore made on
-- another day. Rows made before land in DEFAULT and move when their partition is made.

-- pg_dump keeps the data of every table (extension member tables are otherwise skipped).
-- One call per statement: pg_extension_config_dump updates the pg_extension row each time.
-- Not user_content_refs: it is derived from blob_versions, and restoring blob_versions rebuilds
-- it through the counting triggers (see "Backup and restore" in docs/schema.md).
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY[
        'user_contexts', 'content_storage', 'blobs', 'blob_versions', 'blob_snapshots',
        'deltas', 'deltas_default', 'blob_edges', 'providers', 'provider_versions',
        'provider_processing', 'events', 'events_default', 'jobs', 'usage_metrics',
        'usage_increments', 'provider_metrics']
    LOOP
        PERFORM pg_catalog.pg_extension_config_dump(format('memmie.%I', t)::pg_catalog.regclass, '');
    END LOOP;
END
$$;
SELECT pg_catalog.pg_extension_config_dump('memmie.event_position_seq', '');

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
CREATE FUNCTION memmie._zero_counters() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'content_storage' THEN
        NEW.reference_count := 0;
    ELSE
        NEW.storage_used := 0;
        NEW.blob_count := 0;
    END IF;
    RETURN NEW;
END
$$;
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
CREATE FUNCTION memmie._index_partition(p_parent text, p_part text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text := format('memmie.%I', p_part);
BEGIN
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (id, created_at)', t);
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


-- ---------------------------------------------------------------------------------------------
-- Native functions new in 0.2.0

-- memmie::json_schema::_check_json_schema
CREATE  FUNCTION "_check_json_schema"(
	"schema" jsonb, /* JsonbArg */
	"what" TEXT /* & str */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'check_json_schema_wrapper';

-- memmie::partitions::_create_partitions
CREATE  FUNCTION "_create_partitions"(
	"parent" oid, /* Option < pg_sys :: Oid > */
	"start_date" date, /* Option < Date > */
	"count" INT /* Option < i32 > */
) RETURNS INT /* i32 */

LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'create_partitions_wrapper';

-- memmie::partitions::_drop_old_partitions
CREATE  FUNCTION "_drop_old_partitions"(
	"parent" oid, /* Option < pg_sys :: Oid > */
	"older_than" interval /* Option < Interval > */
) RETURNS INT /* i32 */

LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'drop_old_partitions_wrapper';

-- memmie::guc::_event_retention_seconds
CREATE  FUNCTION "_event_retention_seconds"() RETURNS INT /* i32 */
STRICT STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'event_retention_seconds_wrapper';

-- memmie::guc::_max_derivation_depth
CREATE  FUNCTION "_max_derivation_depth"() RETURNS INT /* i32 */
STRICT STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'max_derivation_depth_wrapper';

-- memmie::refcount::_pending_references
CREATE  FUNCTION "_pending_references"() RETURNS TABLE (
	"content_hash" TEXT,  /* String */
	"n" bigint  /* i64 */
)
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'pending_references_wrapper';

-- memmie::json_schema::_validate_json
CREATE  FUNCTION "_validate_json"(
	"schema" jsonb, /* JsonbArg */
	"doc" jsonb, /* JsonbArg */
	"what" TEXT /* & str */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'validate_json_wrapper';

-- memmie::dag::_would_cycle
CREATE  FUNCTION "_would_cycle"(
	"parent" uuid, /* Uuid */
	"child" uuid /* Uuid */
) RETURNS bool /* bool */
STRICT STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'would_cycle_wrapper';

-- memmie::dag::ancestors
CREATE  FUNCTION "ancestors"(
	"blob_id" uuid, /* Option < Uuid > */
	"max_depth" INT DEFAULT NULL /* Option < i32 > */
) RETURNS TABLE (
	"blob_id" uuid,  /* Uuid */
	"depth" INT  /* i32 */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ancestors_wrapper';

-- memmie::dag::descendants
CREATE  FUNCTION "descendants"(
	"blob_id" uuid, /* Option < Uuid > */
	"max_depth" INT DEFAULT NULL /* Option < i32 > */
) RETURNS TABLE (
	"blob_id" uuid,  /* Uuid */
	"depth" INT  /* i32 */
)
STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'descendants_wrapper';

-- memmie::partitions::ensure_partitions
CREATE  FUNCTION "ensure_partitions"(
	"premake" INT DEFAULT 3 /* Option < i32 > */
) RETURNS INT /* i32 */
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'ensure_partitions_wrapper';

-- ---------------------------------------------------------------------------------------------
-- Blob functions changed in 0.2.0 (sql/blobs.sql): two internal ones gained a parameter.
DROP FUNCTION memmie._record_version(memmie.blobs, text, jsonb, text, uuid, jsonb, text);
DROP FUNCTION memmie._write_state(memmie.blobs, jsonb, text, jsonb, text, uuid, jsonb);


-- Stores content once per hash; returns the hash.
CREATE OR REPLACE FUNCTION memmie.put_content(data bytea, mime_type text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    h      text;
    enc    bytea;
    stored bytea;   -- what goes into content_storage.content (set once, when first needed)
    codec  text;
BEGIN
    IF data IS NULL THEN
        RAISE EXCEPTION 'put_content: data must not be NULL' USING ERRCODE = '22023';
    END IF;
    PERFORM memmie._check_content_size(length(data));
    IF mime_type IS NOT NULL THEN
        PERFORM memmie._check_mime(mime_type);
    END IF;
    h := memmie.sha256(data);
    LOOP
        -- An existing content is locked (FOR KEY SHARE) until the caller's transaction ends, so
        -- gc_content (FOR UPDATE SKIP LOCKED) cannot delete it under the reference being made;
        -- one that gc_content is deleting right now is waited for, then stored again.
        PERFORM FROM memmie.content_storage c
        WHERE c.content_hash = h AND c.storage_backend = 'postgres' FOR KEY SHARE;
        EXIT WHEN FOUND;
        IF stored IS NULL THEN
            enc := memmie._encode_content(data);
            stored := coalesce(enc, data);
            codec := CASE WHEN enc IS NULL THEN 'none' ELSE 'zstd' END;
        END IF;
        -- known as content kept outside PostgreSQL (create_external_blob): now that the bytes
        -- are here, they are stored here; storage_path still names the outside copy, so that
        -- gc_content reports it when the content goes
        UPDATE memmie.content_storage c
        SET content = stored, compression = codec, compressed_size = length(stored), storage_backend = 'postgres',
            mime_type = coalesce(c.mime_type, put_content.mime_type), last_accessed = CURRENT_TIMESTAMP
        WHERE c.content_hash = h AND c.storage_backend <> 'postgres' AND c.original_size = length(data);
        CONTINUE WHEN FOUND;
        IF EXISTS (SELECT FROM memmie.content_storage c WHERE c.content_hash = h AND c.storage_backend <> 'postgres') THEN
            RAISE EXCEPTION 'content % is recorded as kept outside PostgreSQL with a size other than % bytes',
                h, length(data) USING ERRCODE = 'MM006';
        END IF;
        INSERT INTO memmie.content_storage
            (content_hash, content, compression, original_size, compressed_size, mime_type)
        VALUES (h, stored, codec, length(data), length(stored), mime_type)
        ON CONFLICT (content_hash) DO NOTHING;
        EXIT WHEN FOUND;
    END LOOP;
    RETURN h;
END
$$;

-- The user's row, created on first use, locked for the rest of the transaction. FOR NO KEY
-- UPDATE: writers of one user still queue behind each other, but the FOR KEY SHARE locks that
-- foreign-key checks take (dispatch_events inserting a user's processing rows) pass, so a
-- writer of two users cannot deadlock with them.
CREATE OR REPLACE FUNCTION memmie._lock_user(p_user uuid) RETURNS memmie.user_contexts
LANGUAGE plpgsql AS $$
DECLARE
    u memmie.user_contexts;
BEGIN
    SELECT * INTO u FROM memmie.user_contexts WHERE user_id = p_user FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        INSERT INTO memmie.user_contexts (user_id) VALUES (p_user) ON CONFLICT (user_id) DO NOTHING;
        SELECT * INTO u FROM memmie.user_contexts WHERE user_id = p_user FOR NO KEY UPDATE;
    END IF;
    RETURN u;
END
$$;

-- The blob, locked, after its user's row: P0002 when it does not exist.
CREATE OR REPLACE FUNCTION memmie._lock_blob(p_blob uuid) RETURNS memmie.blobs
LANGUAGE plpgsql AS $$
DECLARE
    b memmie.blobs;
BEGIN
    PERFORM memmie._require(p_blob, 'blob_id');
    SELECT * INTO b FROM memmie.blobs WHERE id = p_blob;
    IF FOUND THEN
        PERFORM memmie._lock_user(b.user_id);
        SELECT * INTO b FROM memmie.blobs WHERE id = p_blob FOR NO KEY UPDATE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % does not exist', p_blob USING ERRCODE = 'P0002';
    END IF;
    RETURN b;
END
$$;

-- The state document of a version (see docs/sql-api.md).
CREATE OR REPLACE FUNCTION memmie._make_state(p_hash text, p_size bigint, p_type text, p_metadata jsonb,
                                   p_tags text[], p_deleted boolean) RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    s jsonb := jsonb_build_object('content_hash', p_hash, 'content_size', p_size,
                                  'content_type', p_type, 'metadata', p_metadata,
                                  'tags', to_jsonb(p_tags));
BEGIN
    IF p_deleted THEN
        s := s || '{"deleted": true}';
    END IF;
    -- JSON content kept outside PostgreSQL (sql/external.sql) is not part of the state
    IF memmie._is_json_type(p_type) AND memmie._stored_here(p_hash) THEN
        s := s || jsonb_build_object('content',
                 memmie._json_from_bytes(memmie.get_content(p_hash))::jsonb);
    END IF;
    RETURN s;
END
$$;

-- Whether a content's bytes are in content_storage (not in s3 or a file system). PL/pgSQL, not
-- SQL: a SQL function with a subquery is not inlined and is planned again in every transaction
-- that calls it (measured: 50 to 80 us of planning for a 10 us lookup, twice per apply_delta).
CREATE OR REPLACE FUNCTION memmie._stored_here(p_hash text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN EXISTS (SELECT FROM memmie.content_storage c
                   WHERE c.content_hash = p_hash AND c.storage_backend = 'postgres');
END
$$;

-- Records version b.version of blob b (whose head row is already written): its blob_versions
-- row, its delta and its event. Returns the delta.
CREATE OR REPLACE FUNCTION memmie._record_version(b memmie.blobs, p_operation text, p_patch jsonb,
                                       p_provider text, p_caused_by uuid DEFAULT NULL,
                                       p_caused_event jsonb DEFAULT NULL,
                                       p_event_type text DEFAULT 'blob.updated',
                                       p_pending_delta uuid DEFAULT NULL)
RETURNS memmie.deltas
LANGUAGE plpgsql AS $$
DECLARE
    d        memmie.deltas;
    prev     uuid;
    event_id uuid;
BEGIN
    IF b.version > 1 THEN
        SELECT v.delta_id INTO prev FROM memmie.blob_versions v
        WHERE v.blob_id = b.id AND v.version = b.version - 1;
    END IF;
    IF p_pending_delta IS NULL THEN
        INSERT INTO memmie.deltas (blob_id, user_id, operation, provider_id, patch, from_version,
                                   to_version, previous_delta_id, caused_by_delta_id, caused_by_event,
                                   status, applied_at)
        VALUES (b.id, b.user_id, p_operation, p_provider, p_patch, b.version - 1, b.version, prev,
                p_caused_by, p_caused_event, 'applied', CURRENT_TIMESTAMP)
        RETURNING * INTO d;
    ELSE
        -- a delta recorded as pending (complete_processing) is now applied
        UPDATE memmie.deltas x
        SET operation = p_operation, provider_id = p_provider, patch = p_patch,
            from_version = b.version - 1, to_version = b.version, previous_delta_id = prev,
            caused_by_delta_id = p_caused_by, caused_by_event = p_caused_event,
            status = 'applied', applied_at = CURRENT_TIMESTAMP
        WHERE x.id = p_pending_delta AND x.blob_id = b.id
        RETURNING * INTO d;
    END IF;
    INSERT INTO memmie.blob_versions (blob_id, version, user_id, content_hash, content_size,
                                      content_type, metadata, tags, deleted, delta_id, created_by)
    VALUES (b.id, b.version, b.user_id, b.content_hash, b.content_size, b.content_type,
            b.metadata, b.tags, b.deleted_at IS NOT NULL, d.id, p_provider);
    -- the day's usage (sql/metrics.sql), with the user's storage after this version
    INSERT INTO memmie.usage_increments (user_id, blobs_created, deltas_applied, storage_bytes_used)
    SELECT b.user_id, (p_event_type = 'blob.created')::int, 1, u.storage_used
    FROM memmie.user_contexts u WHERE u.user_id = b.user_id;
    -- clock time, not transaction time: events of one transaction keep the order they happened in
    INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, user_id, payload, created_at)
    VALUES (p_event_type, b.id, 'blob', b.user_id,
            jsonb_build_object('blob_id', b.id, 'version', b.version, 'delta_id', d.id,
                               'operation', p_operation, 'content_type', b.content_type,
                               'created_by', p_provider), clock_timestamp())
    RETURNING id INTO event_id;
    PERFORM pg_notify('memmie_events', event_id::text);
    RETURN d;
END
$$;

-- Writes state s as the next version of blob b: the head row, then _record_version.
CREATE OR REPLACE FUNCTION memmie._write_state(b memmie.blobs, s jsonb, p_operation text, p_patch jsonb,
                                    p_provider text, p_caused_by uuid DEFAULT NULL,
                                    p_caused_event jsonb DEFAULT NULL,
                                    p_pending_delta uuid DEFAULT NULL)
RETURNS memmie.deltas
LANGUAGE plpgsql AS $$
DECLARE
    nb         memmie.blobs;
    event_type text := 'blob.updated';
BEGIN
    UPDATE memmie.blobs
    SET content_hash = s ->> 'content_hash',
        content_size = (s ->> 'content_size')::bigint,
        content_type = s ->> 'content_type',
        metadata     = s -> 'metadata',
        tags         = ARRAY(SELECT jsonb_array_elements_text(s -> 'tags')),
        version      = b.version + 1,
        deleted_at   = CASE WHEN s ? 'deleted' THEN coalesce(b.deleted_at, CURRENT_TIMESTAMP) END
    WHERE id = b.id
    RETURNING * INTO nb;
    IF nb.deleted_at IS NOT NULL AND b.deleted_at IS NULL THEN
        event_type := 'blob.deleted';
    END IF;
    RETURN memmie._record_version(nb, p_operation, p_patch, p_provider, p_caused_by,
                                  p_caused_event, event_type, p_pending_delta);
END
$$;

-- A name-like text argument: 1 to max_len characters, not blank (22023 naming it otherwise).
CREATE OR REPLACE FUNCTION memmie._check_text(v text, what text, max_len int) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF v IS NULL OR btrim(v) = '' OR length(v) > max_len THEN
        RAISE EXCEPTION 'invalid % "%": expected 1 to % characters', what, v, max_len
            USING ERRCODE = '22023';
    END IF;
    RETURN v;
END
$$;

CREATE OR REPLACE FUNCTION memmie._check_provider(p_provider text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT memmie._check_text(p_provider, 'provider id', 255)
$$;

-- P0002 unless delta p_delta (when given) exists.
CREATE OR REPLACE FUNCTION memmie._check_delta_exists(p_delta uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF p_delta IS NOT NULL THEN
        PERFORM FROM memmie.deltas x WHERE x.id = p_delta;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'delta % does not exist', p_delta USING ERRCODE = 'P0002';
        END IF;
    END IF;
END
$$;

-- Validates and writes a new blob (version 1) with an edge from `parent` when given. Its content
-- is p_content, or, with p_external, kept outside PostgreSQL (see _with_external).
CREATE OR REPLACE FUNCTION memmie._insert_blob(p_user uuid, p_content bytea, p_type text, p_meta jsonb,
                                    p_tags text[], parent memmie.blobs, p_by text,
                                    p_operation text, p_transform text,
                                    p_caused_by uuid DEFAULT NULL, p_caused_event jsonb DEFAULT NULL,
                                    p_external jsonb DEFAULT NULL)
RETURNS memmie.blobs
LANGUAGE plpgsql AS $$
DECLARE
    s jsonb;
    b memmie.blobs;
BEGIN
    IF p_external IS NULL THEN
        PERFORM memmie._require(p_content, 'content');
    END IF;
    PERFORM memmie._check_mime(p_type);
    PERFORM memmie._require(p_meta, 'metadata');
    PERFORM memmie._require(p_tags, 'tags');
    IF jsonb_typeof(p_meta) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object, got %', jsonb_typeof(p_meta) USING ERRCODE = '22023';
    END IF;
    IF array_position(p_tags, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'tags must not contain NULL' USING ERRCODE = '22023';
    END IF;
    s := jsonb_build_object('metadata', p_meta, 'tags', to_jsonb(p_tags));
    s := CASE WHEN p_external IS NULL THEN memmie._with_content(s, p_user, p_content, p_type)
              ELSE memmie._with_external(s, p_user, p_external, p_type) END;
    INSERT INTO memmie.blobs (user_id, content_hash, content_size, content_type, version,
                              parent_blob_id, root_blob_id, depth, created_by, metadata, tags)
    VALUES (p_user, s ->> 'content_hash', (s ->> 'content_size')::bigint, p_type, 1,
            parent.id, coalesce(parent.root_blob_id, parent.id), coalesce(parent.depth + 1, 0),
            p_by, p_meta, p_tags)
    RETURNING * INTO b;
    IF parent.id IS NOT NULL THEN
        INSERT INTO memmie.blob_edges (parent_blob_id, child_blob_id, provider_id, transform_type,
                                       version_map)
        VALUES (parent.id, b.id, p_by, p_transform,
                jsonb_build_array(jsonb_build_object('parent_version', parent.version,
                                                     'child_version', 1)));
    END IF;
    PERFORM memmie._record_version(b, p_operation,
        jsonb_build_array(jsonb_build_object('op', 'replace', 'path', '', 'value', s)),
        p_by, p_caused_by, p_caused_event, 'blob.created');
    PERFORM memmie._check_quotas(p_user);
    RETURN b;
END
$$;

-- A live blob of p_user, share-locked (it must not be deleted under a new child): P0002 otherwise.
CREATE OR REPLACE FUNCTION memmie._live_parent(p_parent uuid, p_user uuid) RETURNS memmie.blobs
LANGUAGE plpgsql AS $$
DECLARE
    parent memmie.blobs;
BEGIN
    SELECT * INTO parent FROM memmie.blobs b
    WHERE b.id = p_parent AND b.user_id = p_user AND b.deleted_at IS NULL
    FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'parent blob % does not exist', p_parent USING ERRCODE = 'P0002';
    END IF;
    RETURN parent;
END
$$;

CREATE OR REPLACE FUNCTION memmie.create_blob(user_id uuid, content bytea, content_type text,
                                   metadata jsonb DEFAULT '{}', tags text[] DEFAULT '{}',
                                   parent_blob_id uuid DEFAULT NULL, created_by text DEFAULT 'user')
RETURNS memmie.blobs
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p_user uuid := memmie._require(create_blob.user_id, 'user_id');
    p_by   text := memmie._check_provider(create_blob.created_by);
    parent memmie.blobs;
BEGIN
    PERFORM memmie._require(create_blob.content_type, 'content_type');
    PERFORM memmie._check_mime(create_blob.content_type);
    PERFORM memmie._lock_user(p_user);
    IF create_blob.parent_blob_id IS NOT NULL THEN
        parent := memmie._live_parent(create_blob.parent_blob_id, p_user);
    END IF;
    RETURN memmie._insert_blob(p_user, create_blob.content, create_blob.content_type,
                               create_blob.metadata, create_blob.tags, parent, p_by, 'create',
                               'derived');
END
$$;

CREATE OR REPLACE FUNCTION memmie.apply_delta(blob_id uuid, patch jsonb, expected_version int DEFAULT NULL,
                                   provider_id text DEFAULT 'user',
                                   caused_by_delta_id uuid DEFAULT NULL,
                                   caused_by_event jsonb DEFAULT NULL)
RETURNS memmie.deltas
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p_patch  jsonb := memmie._require(apply_delta.patch, 'patch');
    p_by     text  := memmie._check_provider(apply_delta.provider_id);
    b        memmie.blobs;
BEGIN
    b := memmie._lock_blob(apply_delta.blob_id);
    PERFORM memmie._check_live(b);
    PERFORM memmie._check_expected(b, apply_delta.expected_version);
    PERFORM memmie._check_delta_exists(apply_delta.caused_by_delta_id);
    RETURN memmie._apply_patch(b, p_patch, p_by, apply_delta.caused_by_delta_id,
                               apply_delta.caused_by_event);
END
$$;

-- Applies a JSON Patch to the state of blob b (locked, live) as its next version.
CREATE OR REPLACE FUNCTION memmie._apply_patch(b memmie.blobs, p_patch jsonb, p_by text, p_caused_by uuid,
                                    p_caused_event jsonb, p_pending_delta uuid DEFAULT NULL)
RETURNS memmie.deltas
LANGUAGE plpgsql AS $$
DECLARE
    old_s    jsonb;
    user_s   jsonb;
    new_s    jsonb;
    new_type text;
    d        memmie.deltas;
BEGIN
    old_s := memmie._head_state(b);
    user_s := memmie._next_state(old_s::text, p_patch::text)::jsonb;
    new_s := user_s;
    new_type := user_s ->> 'content_type';
    IF memmie._is_json_type(new_type) AND NOT user_s ? 'content' AND memmie._stored_here(b.content_hash) THEN
        -- became a JSON type: its bytes must be JSON
        new_s := user_s || jsonb_build_object('content',
                     memmie._json_from_bytes(memmie.get_content(b.content_hash))::jsonb);
    ELSIF user_s ? 'content' AND (user_s -> 'content') IS DISTINCT FROM (old_s -> 'content') THEN
        new_s := memmie._with_content(user_s, b.user_id,
                                      convert_to((user_s -> 'content')::text, 'UTF8'), new_type);
    END IF;
    -- The stored patch is the caller's operations plus those that keep the derived fields in
    -- step, so that replaying the deltas alone rebuilds every version.
    d := memmie._write_state(b, new_s, memmie._operation(p_by),
                             p_patch || memmie.jsonb_diff(user_s, new_s), p_by,
                             p_caused_by, p_caused_event, p_pending_delta);
    PERFORM memmie._check_quotas(b.user_id);
    RETURN d;
END
$$;

CREATE OR REPLACE FUNCTION memmie.update_content(blob_id uuid, content bytea, content_type text DEFAULT NULL,
                                      expected_version int DEFAULT NULL,
                                      provider_id text DEFAULT 'user')
RETURNS memmie.blobs
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p_by  text := memmie._check_provider(update_content.provider_id);
    b     memmie.blobs;
BEGIN
    PERFORM memmie._require(update_content.content, 'content');
    IF update_content.content_type IS NOT NULL THEN
        PERFORM memmie._check_mime(update_content.content_type);
    END IF;
    b := memmie._lock_blob(update_content.blob_id);
    PERFORM memmie._check_live(b);
    PERFORM memmie._check_expected(b, update_content.expected_version);
    RETURN memmie._replace_content(b, update_content.content, update_content.content_type, p_by);
END
$$;

-- Writes new content (and type, metadata, tags, when given) as the next version of blob b
-- (locked, live): p_content, or, with p_external, content kept outside PostgreSQL.
CREATE OR REPLACE FUNCTION memmie._replace_content(b memmie.blobs, p_content bytea, p_type text, p_by text,
                                        p_caused_by uuid DEFAULT NULL,
                                        p_caused_event jsonb DEFAULT NULL,
                                        p_meta jsonb DEFAULT NULL, p_tags text[] DEFAULT NULL,
                                        p_external jsonb DEFAULT NULL)
RETURNS memmie.blobs
LANGUAGE plpgsql AS $$
DECLARE
    old_s jsonb := memmie._head_state(b);
    new_s jsonb := old_s;
BEGIN
    IF p_meta IS NOT NULL THEN
        new_s := new_s || jsonb_build_object('metadata', p_meta);
    END IF;
    IF p_tags IS NOT NULL THEN
        new_s := new_s || jsonb_build_object('tags', to_jsonb(p_tags));
    END IF;
    new_s := CASE WHEN p_external IS NULL
                  THEN memmie._with_content(new_s, b.user_id, p_content, coalesce(p_type, b.content_type))
                  ELSE memmie._with_external(new_s, b.user_id, p_external, coalesce(p_type, b.content_type)) END;
    PERFORM memmie._write_state(b, new_s, memmie._operation(p_by),
                                memmie.jsonb_diff(old_s, new_s), p_by, p_caused_by, p_caused_event);
    PERFORM memmie._check_quotas(b.user_id);
    SELECT * INTO b FROM memmie.blobs x WHERE x.id = b.id;
    RETURN b;
END
$$;

CREATE OR REPLACE FUNCTION memmie.delete_blob(blob_id uuid, hard boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    b        memmie.blobs;
    event_id uuid;
BEGIN
    PERFORM memmie._require(delete_blob.hard, 'hard');
    b := memmie._lock_blob(delete_blob.blob_id);
    IF delete_blob.hard THEN
        INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, user_id, payload, created_at)
        VALUES ('blob.deleted', b.id, 'blob', b.user_id,
                jsonb_build_object('blob_id', b.id, 'version', b.version, 'delta_id', NULL,
                                   'operation', 'delete', 'content_type', b.content_type,
                                   'created_by', b.created_by, 'hard', true), clock_timestamp())
        RETURNING id INTO event_id;
        PERFORM pg_notify('memmie_events', event_id::text);
        DELETE FROM memmie.blobs x WHERE x.id = b.id;
        INSERT INTO memmie.usage_increments (user_id, storage_bytes_used)
        SELECT b.user_id, u.storage_used FROM memmie.user_contexts u WHERE u.user_id = b.user_id;
    ELSIF b.deleted_at IS NULL THEN
        PERFORM memmie._write_state(b, memmie._head_state(b) || '{"deleted": true}', 'delete',
                                    '[{"op": "add", "path": "/deleted", "value": true}]',
                                    'user');
    END IF;
END
$$;


-- =============================================================================================
-- sql/dag.sql (new in 0.2.0)


-- The provenance DAG: derived blobs, edges, lineage. Traversal itself is native (src/dag.rs:
-- descendants, ancestors, _would_cycle).
--
-- Edges never cross users, so a cycle can only be closed inside one user's blobs; every edge
-- change takes the user's lock first (_lock_user_dag), so two sessions adding A->B and B->A
-- at once are checked one after the other.

-- The user's row lock for DAG changes. It is an UPDATE, not only a row lock, so that under
-- REPEATABLE READ the second of two concurrent edge writers fails with a serialization error
-- instead of checking for cycles in a snapshot that misses the first one's edge.
CREATE FUNCTION memmie._lock_user_dag(p_user uuid) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM memmie._lock_user(p_user);
    UPDATE memmie.user_contexts SET updated_at = CURRENT_TIMESTAMP WHERE user_id = p_user;
END
$$;

-- The delta that made the current version of blob b. (PL/pgSQL for its cached plan: see
-- memmie._stored_here.)
CREATE FUNCTION memmie._head_delta(b memmie.blobs) RETURNS uuid
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT v.delta_id FROM memmie.blob_versions v WHERE v.blob_id = b.id AND v.version = b.version);
END
$$;

-- A new blob derived from one or more parents (all of one user), with one edge per parent.
CREATE FUNCTION memmie._derive(p_parents uuid[], p_by text, p_transform text, p_content bytea,
                               p_type text, p_meta jsonb, p_tags text[], p_caused_by uuid,
                               p_caused_event jsonb)
RETURNS memmie.blobs
LANGUAGE plpgsql AS $$
DECLARE
    first   memmie.blobs;
    parent  memmie.blobs;
    b       memmie.blobs;
    p_user  uuid;
BEGIN
    PERFORM memmie._check_provider(p_by);
    PERFORM memmie._check_text(p_transform, 'transform_type', 255);
    IF p_parents IS NULL OR cardinality(p_parents) = 0 THEN
        RAISE EXCEPTION 'parent_blob_ids must name at least one blob' USING ERRCODE = '22023';
    END IF;
    IF array_position(p_parents, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'parent_blob_ids must not contain NULL' USING ERRCODE = '22023';
    END IF;
    IF (SELECT count(DISTINCT x) FROM unnest(p_parents) x) <> cardinality(p_parents) THEN
        RAISE EXCEPTION 'parent_blob_ids must not repeat a blob' USING ERRCODE = '22023';
    END IF;
    SELECT x.user_id INTO p_user FROM memmie.blobs x WHERE x.id = p_parents[1];
    IF NOT FOUND THEN
        RAISE EXCEPTION 'parent blob % does not exist', p_parents[1] USING ERRCODE = 'P0002';
    END IF;
    PERFORM memmie._lock_user_dag(p_user);
    first := memmie._live_parent(p_parents[1], p_user);
    FOR i IN 2 .. cardinality(p_parents) LOOP
        PERFORM memmie._live_parent(p_parents[i], p_user);
    END LOOP;
    PERFORM memmie._check_delta_exists(p_caused_by);
    b := memmie._insert_blob(p_user, p_content, p_type, coalesce(p_meta, '{}'), coalesce(p_tags, '{}'),
                             first, p_by, 'transform', p_transform,
                             coalesce(p_caused_by, memmie._head_delta(first)), p_caused_event);
    FOR i IN 2 .. cardinality(p_parents) LOOP
        SELECT * INTO parent FROM memmie.blobs x WHERE x.id = p_parents[i];
        INSERT INTO memmie.blob_edges (parent_blob_id, child_blob_id, provider_id, transform_type,
                                       version_map)
        VALUES (parent.id, b.id, p_by, p_transform,
                jsonb_build_array(jsonb_build_object('parent_version', parent.version,
                                                     'child_version', 1)));
    END LOOP;
    RETURN b;
END
$$;

CREATE FUNCTION memmie.derive_blob(parent_blob_ids uuid[], provider_id text, transform_type text,
                                   content bytea, content_type text, metadata jsonb DEFAULT '{}',
                                   tags text[] DEFAULT '{}', caused_by_delta_id uuid DEFAULT NULL)
RETURNS memmie.blobs
LANGUAGE sql AS $$
    SELECT memmie._derive(parent_blob_ids, provider_id, transform_type, content, content_type,
                          metadata, tags, caused_by_delta_id, NULL)
$$;

CREATE FUNCTION memmie.add_edge(parent_blob_id uuid, child_blob_id uuid, provider_id text,
                                transform_type text, metadata jsonb DEFAULT '{}')
RETURNS memmie.blob_edges
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    parent memmie.blobs;
    child  memmie.blobs;
    e      memmie.blob_edges;
BEGIN
    PERFORM memmie._require(add_edge.parent_blob_id, 'parent_blob_id');
    PERFORM memmie._require(add_edge.child_blob_id, 'child_blob_id');
    PERFORM memmie._check_provider(add_edge.provider_id);
    PERFORM memmie._check_text(add_edge.transform_type, 'transform_type', 255);
    IF add_edge.metadata IS NULL OR jsonb_typeof(add_edge.metadata) <> 'object' THEN
        RAISE EXCEPTION 'metadata must be a JSON object, got %', coalesce(jsonb_typeof(add_edge.metadata), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    SELECT * INTO parent FROM memmie.blobs x WHERE x.id = add_edge.parent_blob_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % does not exist', add_edge.parent_blob_id USING ERRCODE = 'P0002';
    END IF;
    PERFORM memmie._lock_user_dag(parent.user_id);
    parent := memmie._live_parent(add_edge.parent_blob_id, parent.user_id);
    -- a blob of another user is not visible here: the same answer as a missing one
    SELECT * INTO child FROM memmie.blobs x
    WHERE x.id = add_edge.child_blob_id AND x.user_id = parent.user_id AND x.deleted_at IS NULL
    FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % does not exist', add_edge.child_blob_id USING ERRCODE = 'P0002';
    END IF;
    IF memmie._would_cycle(parent.id, child.id) THEN
        RAISE EXCEPTION 'edge % -> % would create a cycle', parent.id, child.id USING ERRCODE = 'MM003',
            DETAIL = format('blob %s already derives from blob %s', parent.id, child.id);
    END IF;
    INSERT INTO memmie.blob_edges (parent_blob_id, child_blob_id, provider_id, transform_type,
                                   metadata, version_map)
    VALUES (parent.id, child.id, add_edge.provider_id, add_edge.transform_type, add_edge.metadata,
            jsonb_build_array(jsonb_build_object('parent_version', parent.version,
                                                 'child_version', child.version)))
    ON CONFLICT ON CONSTRAINT unique_edge DO NOTHING
    RETURNING * INTO e;
    IF e.id IS NULL THEN
        -- the same edge exists already: adding it again is a no-op
        SELECT * INTO e FROM memmie.blob_edges x
        WHERE x.parent_blob_id = parent.id AND x.child_blob_id = child.id
          AND x.provider_id = add_edge.provider_id;
    END IF;
    RETURN e;
END
$$;

-- The blob, its ancestors (negative depth) and descendants (positive depth), and every edge
-- between them.
CREATE FUNCTION memmie.lineage(blob_id uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    WITH n AS (
        SELECT lineage.blob_id AS id, 0 AS depth
        UNION ALL
        SELECT a.blob_id, -a.depth FROM memmie.ancestors(lineage.blob_id) a
        UNION ALL
        SELECT d.blob_id, d.depth FROM memmie.descendants(lineage.blob_id) d
    )
    SELECT jsonb_build_object(
        'nodes', (SELECT jsonb_agg(jsonb_build_object(
                             'blob_id', b.id, 'depth', n.depth, 'version', b.version,
                             'content_type', b.content_type, 'created_by', b.created_by,
                             'deleted', b.deleted_at IS NOT NULL)
                         ORDER BY n.depth, b.id)
                  FROM n JOIN memmie.blobs b ON b.id = n.id),
        'edges', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                     'parent_blob_id', e.parent_blob_id,
                                     'child_blob_id', e.child_blob_id,
                                     'provider_id', e.provider_id,
                                     'transform_type', e.transform_type,
                                     'version_map', e.version_map)
                                 ORDER BY e.parent_blob_id, e.child_blob_id, e.provider_id)
                           FROM memmie.blob_edges e
                           WHERE e.parent_blob_id IN (SELECT id FROM n)
                             AND e.child_blob_id IN (SELECT id FROM n)), '[]'))
$$;

-- Size and shape of the DAG below root_blob_id (the root included, at level 0).
CREATE FUNCTION memmie.dag_stats(root_blob_id uuid)
RETURNS TABLE (total_nodes bigint, max_depth int, unique_levels int)
LANGUAGE sql STABLE AS $$
    SELECT count(*) + 1, coalesce(max(d.depth), 0), count(DISTINCT d.depth)::int + 1
    FROM memmie.descendants(root_blob_id) d
$$;


-- =============================================================================================
-- sql/providers.sql (new in 0.2.0)


-- Providers: the transformers that run outside the database. Every registered version is kept
-- in provider_versions; providers holds the current one.

-- A MIME type pattern of supported_types: "type/subtype", "type/*" or "*/*".
CREATE FUNCTION memmie._check_mime_pattern(p text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p = '*/*' THEN
        RETURN;
    ELSIF strpos(rtrim(p, '*'), '*') > 0 OR (p LIKE '%*' AND p NOT LIKE '%/*') THEN
        RAISE EXCEPTION 'invalid content type pattern "%": expected type/subtype, type/* or */*', p
            USING ERRCODE = '22023';
    ELSIF p LIKE '%/*' THEN
        PERFORM memmie._check_mime(left(p, -2) || '/x');
    ELSE
        PERFORM memmie._check_mime(p);
    END IF;
END
$$;

-- Whether provider p takes content of this type and size.
CREATE FUNCTION memmie._provider_accepts(p memmie.providers, p_type text, p_size bigint)
RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT (p.max_input_size IS NULL OR p_size <= p.max_input_size)
       AND (cardinality(p.supported_types) = 0
            OR EXISTS (SELECT FROM unnest(p.supported_types) pat
                       WHERE pat = '*/*'
                          OR lower(pat) = lower(split_part(p_type, ';', 1))
                          OR (pat LIKE '%/*'
                              AND lower(left(pat, -1)) = lower(split_part(p_type, '/', 1)) || '/')))
$$;

-- The value of key k of a definition, checked against the JSON type it must have.
CREATE FUNCTION memmie._def_field(def jsonb, k text, want text, required boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    v jsonb := def -> k;
BEGIN
    IF v IS NULL OR jsonb_typeof(v) = 'null' THEN
        IF required THEN
            RAISE EXCEPTION 'provider definition needs "%"', k USING ERRCODE = '22023';
        END IF;
        RETURN NULL;
    END IF;
    IF want = 'schema' THEN
        IF jsonb_typeof(v) NOT IN ('object', 'boolean') THEN
            RAISE EXCEPTION 'provider definition: "%" must be a JSON Schema (object or boolean), got %',
                k, jsonb_typeof(v) USING ERRCODE = '22023';
        END IF;
        PERFORM memmie._check_json_schema(v, format('provider definition: "%s"', k));
    ELSIF want = 'integer' THEN
        IF jsonb_typeof(v) <> 'number' OR v::text !~ '^[0-9]{1,18}$' THEN
            RAISE EXCEPTION 'provider definition: "%" must be a non-negative integer, got %', k, v
                USING ERRCODE = '22023';
        END IF;
    ELSIF want = 'string' THEN
        IF jsonb_typeof(v) <> 'string' OR v #>> '{}' = '' THEN
            RAISE EXCEPTION 'provider definition: "%" must be a non-empty string, got %', k, v
                USING ERRCODE = '22023';
        END IF;
    ELSIF jsonb_typeof(v) <> want THEN
        RAISE EXCEPTION 'provider definition: "%" must be a JSON %, got %', k, want, jsonb_typeof(v)
            USING ERRCODE = '22023';
    END IF;
    IF want = 'array' AND jsonb_path_exists(v, '$[*] ? (@.type() != "string")') THEN
        RAISE EXCEPTION 'provider definition: "%" must be an array of strings', k USING ERRCODE = '22023';
    END IF;
    RETURN v;
END
$$;

-- The definition as a providers row (validated; config checked against config_schema: MM004).
CREATE FUNCTION memmie._provider_from_definition(def jsonb) RETURNS memmie.providers
LANGUAGE plpgsql AS $$
DECLARE
    p       memmie.providers;
    unknown text;
    pat     text;
BEGIN
    IF def IS NULL OR jsonb_typeof(def) <> 'object' THEN
        RAISE EXCEPTION 'provider definition must be a JSON object, got %', coalesce(jsonb_typeof(def), 'NULL')
            USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(format('"%s"', k), ', ' ORDER BY k) INTO unknown
    FROM jsonb_object_keys(def) k
    WHERE k NOT IN ('id', 'name', 'description', 'category', 'version', 'workflow_id', 'config',
                    'trigger_events', 'supported_types', 'max_input_size', 'timeout_seconds',
                    'input_schema', 'output_schema', 'config_schema', 'processing_rules', 'status',
                    'author', 'license', 'documentation_url');
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'provider definition has unknown keys: %', unknown USING ERRCODE = '22023';
    END IF;
    p.id := memmie._def_field(def, 'id', 'string', true) #>> '{}';
    IF length(p.id) > 255 OR p.id = 'user' THEN
        RAISE EXCEPTION 'invalid provider id "%": 1 to 255 characters, and not "user"', p.id
            USING ERRCODE = '22023';
    END IF;
    p.name := memmie._def_field(def, 'name', 'string', true) #>> '{}';
    p.version := memmie._def_field(def, 'version', 'string', true) #>> '{}';
    IF length(p.name) > 255 OR length(p.version) > 50 THEN
        RAISE EXCEPTION 'provider name (at most 255 characters) or version (at most 50) too long'
            USING ERRCODE = '22023';
    END IF;
    p.description := memmie._def_field(def, 'description', 'string') #>> '{}';
    p.category := memmie._def_field(def, 'category', 'string') #>> '{}';
    p.workflow_id := memmie._def_field(def, 'workflow_id', 'string') #>> '{}';
    p.author := memmie._def_field(def, 'author', 'string') #>> '{}';
    p.license := memmie._def_field(def, 'license', 'string') #>> '{}';
    p.documentation_url := memmie._def_field(def, 'documentation_url', 'string') #>> '{}';
    IF length(p.category) > 100 OR length(p.workflow_id) > 255 OR length(p.author) > 255
       OR length(p.license) > 100 THEN
        RAISE EXCEPTION 'provider definition: a text field is too long' USING ERRCODE = '22023';
    END IF;
    p.config := coalesce(memmie._def_field(def, 'config', 'object'), '{}');
    p.trigger_events := ARRAY(SELECT jsonb_array_elements_text(
                                  coalesce(memmie._def_field(def, 'trigger_events', 'array'), '[]')));
    p.supported_types := ARRAY(SELECT jsonb_array_elements_text(
                                   coalesce(memmie._def_field(def, 'supported_types', 'array'), '[]')));
    FOREACH pat IN ARRAY p.supported_types LOOP
        PERFORM memmie._check_mime_pattern(pat);
    END LOOP;
    p.max_input_size := (memmie._def_field(def, 'max_input_size', 'integer') #>> '{}')::bigint;
    p.timeout_seconds := coalesce((memmie._def_field(def, 'timeout_seconds', 'integer') #>> '{}')::bigint, 30);
    IF p.timeout_seconds < 1 OR p.timeout_seconds > 86400 THEN
        RAISE EXCEPTION 'provider definition: "timeout_seconds" must be between 1 and 86400, got %',
            p.timeout_seconds USING ERRCODE = '22023';
    END IF;
    p.input_schema := memmie._def_field(def, 'input_schema', 'schema');
    p.output_schema := memmie._def_field(def, 'output_schema', 'schema');
    p.config_schema := memmie._def_field(def, 'config_schema', 'schema');
    p.processing_rules := coalesce(memmie._def_field(def, 'processing_rules', 'object'), '{}');
    IF p.processing_rules ? 'max_retries'
       AND (p.processing_rules -> 'max_retries')::text !~ '^[0-9]{1,4}$' THEN
        RAISE EXCEPTION 'provider definition: processing_rules.max_retries must be an integer from 0 to 9999'
            USING ERRCODE = '22023';
    END IF;
    p.status := coalesce(memmie._def_field(def, 'status', 'string') #>> '{}', 'active');
    IF p.status NOT IN ('active', 'inactive', 'deprecated') THEN
        RAISE EXCEPTION 'invalid provider status "%": expected active, inactive or deprecated', p.status
            USING ERRCODE = '22023';
    END IF;
    IF p.config_schema IS NOT NULL THEN
        PERFORM memmie._validate_json(p.config_schema, p.config, format('config of provider %s', p.id));
    END IF;
    RETURN p;
END
$$;

CREATE FUNCTION memmie.register_provider(definition jsonb) RETURNS memmie.providers
LANGUAGE plpgsql AS $$
DECLARE
    p     memmie.providers := memmie._provider_from_definition(definition);
    known jsonb;
    cur   memmie.providers;
BEGIN
    -- one registration of an id at a time
    PERFORM pg_advisory_xact_lock(hashtextextended('memmie.provider:' || p.id, 0));
    SELECT v.definition INTO known FROM memmie.provider_versions v
    WHERE v.provider_id = p.id AND v.version = p.version;
    IF FOUND THEN
        IF known IS DISTINCT FROM definition THEN
            RAISE EXCEPTION 'version % of provider % is already registered with another definition', p.version, p.id
                USING ERRCODE = '22023', HINT = 'register the changed definition under a new version';
        END IF;
    END IF;
    SELECT * INTO cur FROM memmie.providers x WHERE x.id = p.id FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO memmie.providers (id, name, description, category, version, workflow_id, config,
                                      trigger_events, supported_types, max_input_size,
                                      timeout_seconds, input_schema, output_schema, config_schema,
                                      processing_rules, status, author, license, documentation_url)
        VALUES (p.id, p.name, p.description, p.category, p.version, p.workflow_id, p.config,
                p.trigger_events, p.supported_types, p.max_input_size, p.timeout_seconds,
                p.input_schema, p.output_schema, p.config_schema, p.processing_rules, p.status,
                p.author, p.license, p.documentation_url)
        RETURNING * INTO cur;
    ELSIF known IS NULL OR cur.version <> p.version THEN
        UPDATE memmie.providers x
        SET name = p.name, description = p.description, category = p.category, version = p.version,
            workflow_id = p.workflow_id, config = p.config, trigger_events = p.trigger_events,
            supported_types = p.supported_types, max_input_size = p.max_input_size,
            timeout_seconds = p.timeout_seconds, input_schema = p.input_schema,
            output_schema = p.output_schema, config_schema = p.config_schema,
            processing_rules = p.processing_rules, status = p.status, author = p.author,
            license = p.license, documentation_url = p.documentation_url
        WHERE x.id = p.id
        RETURNING * INTO cur;
    END IF;
    IF known IS NULL THEN
        INSERT INTO memmie.provider_versions (provider_id, version, definition)
        VALUES (p.id, p.version, definition);
    END IF;
    RETURN cur;
END
$$;

CREATE FUNCTION memmie.set_provider_status(provider_id text, status text) RETURNS memmie.providers
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p memmie.providers;
BEGIN
    PERFORM memmie._require(set_provider_status.provider_id, 'provider_id');
    IF set_provider_status.status IS NULL
       OR set_provider_status.status NOT IN ('active', 'inactive', 'deprecated') THEN
        RAISE EXCEPTION 'invalid provider status "%": expected active, inactive or deprecated',
            set_provider_status.status USING ERRCODE = '22023';
    END IF;
    UPDATE memmie.providers x SET status = set_provider_status.status
    WHERE x.id = set_provider_status.provider_id
    RETURNING * INTO p;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'provider % does not exist', set_provider_status.provider_id USING ERRCODE = 'P0002';
    END IF;
    RETURN p;
END
$$;


-- =============================================================================================
-- sql/jobs.sql (new in 0.2.0)


-- Jobs: a work queue claimed and completed from SQL, with leases.
--
-- A claimed job is `running` and leased to one worker until `lease_expires_at`; the worker
-- extends the lease with heartbeat_job and ends it with complete_job / fail_job. A lease that
-- expires is taken back by the next claim_jobs (counted as a failed attempt). Whoever no longer
-- holds the lease gets MM005 and changes nothing. Claims use FOR UPDATE SKIP LOCKED: concurrent
-- workers never wait for each other and never get the same job.

-- clock_timestamp(), declared STABLE: compared with it, lease_expires_at is an index condition
-- evaluated when a scan starts, and a cached plan stays valid (against a PL/pgSQL variable, the
-- planner guesses a third of the leases expired and plans the query anew on every call).
CREATE FUNCTION memmie._clock() RETURNS timestamptz
LANGUAGE internal STABLE PARALLEL SAFE AS 'clock_timestamp';

-- The job, row-locked; P0002 when it does not exist.
CREATE FUNCTION memmie._lock_job(p_job text) RETURNS memmie.jobs
LANGUAGE plpgsql AS $$
DECLARE
    j memmie.jobs;
BEGIN
    SELECT * INTO j FROM memmie.jobs x WHERE x.id = memmie._require(p_job, 'job_id') FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'job % does not exist', p_job USING ERRCODE = 'P0002';
    END IF;
    RETURN j;
END
$$;

-- MM005 unless worker holds the lease of job j.
CREATE FUNCTION memmie._check_lease(j memmie.jobs, p_worker text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM memmie._require(p_worker, 'worker_id');
    IF j.status <> 'running' OR j.worker_id IS DISTINCT FROM p_worker THEN
        RAISE EXCEPTION 'worker % does not hold the lease of job %', p_worker, j.id
            USING ERRCODE = 'MM005',
                  DETAIL = format('the job is %s%s', j.status,
                                  CASE WHEN j.status = 'running' THEN ', leased to ' || j.worker_id ELSE '' END);
    END IF;
END
$$;

CREATE FUNCTION memmie.enqueue_job(job_type text, user_id uuid, input jsonb, max_retries int DEFAULT 3,
                                   expires_at timestamptz DEFAULT NULL, job_id text DEFAULT NULL)
RETURNS memmie.jobs
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    j memmie.jobs;
BEGIN
    PERFORM memmie._check_text(enqueue_job.job_type, 'job_type', 100);
    PERFORM memmie._require(enqueue_job.user_id, 'user_id');
    PERFORM memmie._require(enqueue_job.input, 'input');
    IF enqueue_job.max_retries IS NULL OR enqueue_job.max_retries < 0 THEN
        RAISE EXCEPTION 'max_retries must be 0 or more, got %', enqueue_job.max_retries USING ERRCODE = '22023';
    END IF;
    IF enqueue_job.job_id IS NOT NULL THEN
        PERFORM memmie._check_text(enqueue_job.job_id, 'job_id', 255);
    END IF;
    INSERT INTO memmie.user_contexts (user_id) VALUES (enqueue_job.user_id) ON CONFLICT DO NOTHING;
    INSERT INTO memmie.jobs (id, job_type, user_id, input, max_retries, expires_at)
    VALUES (coalesce(enqueue_job.job_id, gen_random_uuid()::text), enqueue_job.job_type,
            enqueue_job.user_id, enqueue_job.input, enqueue_job.max_retries, enqueue_job.expires_at)
    ON CONFLICT (id) DO NOTHING
    RETURNING * INTO j;
    IF FOUND THEN
        PERFORM pg_notify('memmie_jobs', j.job_type);
    ELSE
        -- idempotent: the job with this id exists already
        SELECT * INTO j FROM memmie.jobs x WHERE x.id = enqueue_job.job_id;
    END IF;
    RETURN j;
END
$$;

CREATE FUNCTION memmie.claim_jobs(worker_id text, max_jobs int DEFAULT 1,
                                  lease interval DEFAULT '5 minutes', job_types text[] DEFAULT NULL)
RETURNS SETOF memmie.jobs
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    t_now timestamptz;
BEGIN
    IF claim_jobs.worker_id IS NULL OR btrim(claim_jobs.worker_id) = '' OR length(claim_jobs.worker_id) > 255 THEN
        PERFORM memmie._check_text(claim_jobs.worker_id, 'worker_id', 255);
    END IF;
    IF claim_jobs.max_jobs IS NULL OR claim_jobs.max_jobs < 1 OR claim_jobs.max_jobs > 10000 THEN
        RAISE EXCEPTION 'max_jobs must be between 1 and 10000, got %', claim_jobs.max_jobs USING ERRCODE = '22023';
    END IF;
    IF claim_jobs.lease IS NULL OR claim_jobs.lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be a positive interval, got %', claim_jobs.lease USING ERRCODE = '22023';
    END IF;
    -- Take back jobs whose lease expired (at most 100 per call): queued again (one more attempt
    -- used), or failed when none is left. (t_now is a variable, not clock_timestamp() in the
    -- query, so that both conditions are index conditions.)
    t_now := clock_timestamp();
    -- (looked for first: a query costs a fraction of an UPDATE that finds nothing)
    IF EXISTS (SELECT FROM memmie.jobs j WHERE j.status = 'running' AND j.lease_expires_at < memmie._clock()) THEN
        WITH expired AS MATERIALIZED (
            SELECT j.id FROM memmie.jobs j
            WHERE j.status = 'running' AND j.lease_expires_at < t_now
            ORDER BY j.lease_expires_at
            LIMIT 100
            FOR UPDATE SKIP LOCKED
        )
        UPDATE memmie.jobs j
        SET status = CASE WHEN j.retry_count < j.max_retries THEN 'queued' ELSE 'failed' END,
            retry_count = least(j.retry_count + 1, j.max_retries),
            error_message = format('lease of worker %s expired at %s', j.worker_id, j.lease_expires_at),
            completed_at = CASE WHEN j.retry_count < j.max_retries THEN NULL ELSE t_now END,
            run_after = t_now, worker_id = NULL, lease_expires_at = NULL
        FROM expired e WHERE j.id = e.id;
    END IF;

    -- The claim is written twice on purpose. A LIMIT given as a parameter makes PostgreSQL plan
    -- the statement anew on every call (about half of a one-job claim's time) or, once it
    -- settles on a generic plan, sort every queued job. The usual worker's call, one job of one
    -- type, has its own statement with LIMIT 1, planned once: the type is a range of one value
    -- and leads the ORDER BY, so that only idx_jobs_queued_type gives the order (with an
    -- equality, the plan made without knowing the type guesses how much of the queue is of it
    -- and may walk idx_jobs_queued past every queued job of the other types). Every other call
    -- is planned with its arguments, where the conditions on job_types fold to the one that
    -- applies (one type: idx_jobs_queued_type; none: idx_jobs_queued).
    IF array_ndims(claim_jobs.job_types) > 1 OR array_lower(claim_jobs.job_types, 1) <> 1 THEN
        claim_jobs.job_types := ARRAY(SELECT unnest(claim_jobs.job_types));   -- the plain form
    END IF;
    IF claim_jobs.max_jobs = 1 AND cardinality(claim_jobs.job_types) = 1 THEN
        RETURN QUERY
        WITH c AS MATERIALIZED (
            SELECT j.id FROM memmie.jobs j
            WHERE j.status = 'queued' AND j.run_after <= t_now
              AND j.job_type >= claim_jobs.job_types[1] AND j.job_type <= claim_jobs.job_types[1]
              AND (j.expires_at IS NULL OR j.expires_at > t_now)
            ORDER BY j.job_type, j.run_after, j.created_at, j.id
            LIMIT 1
            FOR UPDATE SKIP LOCKED
        )
        UPDATE memmie.jobs j
        SET status = 'running', worker_id = claim_jobs.worker_id,
            lease_expires_at = t_now + claim_jobs.lease, lease_duration = claim_jobs.lease,
            heartbeat_at = t_now, started_at = t_now, progress = 0
        FROM c WHERE j.id = c.id
        RETURNING j.*;
    ELSE
        RETURN QUERY
        WITH c AS MATERIALIZED (
            SELECT j.id FROM memmie.jobs j
            WHERE j.status = 'queued' AND j.run_after <= t_now
              AND (j.expires_at IS NULL OR j.expires_at > t_now)
              AND (claim_jobs.job_types IS NULL
                   OR (cardinality(claim_jobs.job_types) = 1 AND j.job_type = claim_jobs.job_types[1])
                   OR (cardinality(claim_jobs.job_types) > 1 AND j.job_type = ANY (claim_jobs.job_types)))
            ORDER BY j.run_after, j.created_at, j.id
            LIMIT claim_jobs.max_jobs
            FOR UPDATE SKIP LOCKED
        )
        UPDATE memmie.jobs j
        SET status = 'running', worker_id = claim_jobs.worker_id,
            lease_expires_at = t_now + claim_jobs.lease, lease_duration = claim_jobs.lease,
            heartbeat_at = t_now, started_at = t_now, progress = 0
        FROM c WHERE j.id = c.id
        RETURNING j.*;
    END IF;
END
$$;

CREATE FUNCTION memmie.heartbeat_job(job_id text, worker_id text, progress int DEFAULT NULL)
RETURNS memmie.jobs
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    j memmie.jobs := memmie._lock_job(heartbeat_job.job_id);
BEGIN
    PERFORM memmie._check_lease(j, heartbeat_job.worker_id);
    IF heartbeat_job.progress IS NOT NULL AND heartbeat_job.progress NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'progress must be between 0 and 100, got %', heartbeat_job.progress USING ERRCODE = '22023';
    END IF;
    UPDATE memmie.jobs x
    SET lease_expires_at = clock_timestamp() + x.lease_duration, heartbeat_at = clock_timestamp(),
        progress = coalesce(heartbeat_job.progress, x.progress)
    WHERE x.id = j.id
    RETURNING * INTO j;
    RETURN j;
END
$$;

-- Completes the job if p_worker holds it and it is (p_processing) or is not a provider
-- processing; the completed row, or NULL when nothing matched.
CREATE FUNCTION memmie._complete_job(p_job text, p_worker text, p_output jsonb, p_processing boolean)
RETURNS memmie.jobs
LANGUAGE plpgsql AS $$
DECLARE
    j memmie.jobs;
BEGIN
    UPDATE memmie.jobs x
    SET status = 'completed', output = p_output, progress = 100, completed_at = clock_timestamp(),
        lease_expires_at = NULL, error_message = NULL
    WHERE x.id = p_job AND x.status = 'running' AND x.worker_id = p_worker
      AND (x.job_type = 'memmie.process') = p_processing
    RETURNING * INTO j;
    RETURN j;
END
$$;

CREATE FUNCTION memmie.complete_job(job_id text, worker_id text, output jsonb DEFAULT NULL)
RETURNS memmie.jobs
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    j memmie.jobs;
BEGIN
    -- the common case in one statement: the holder completes its job
    j := memmie._complete_job(complete_job.job_id, complete_job.worker_id, complete_job.output, false);
    IF j.id IS NOT NULL THEN
        RETURN j;
    END IF;
    -- otherwise say why (or, if the job changed meanwhile, complete it after all)
    j := memmie._lock_job(complete_job.job_id);
    PERFORM memmie._check_lease(j, complete_job.worker_id);
    IF j.job_type = 'memmie.process' THEN
        RAISE EXCEPTION 'job % is a provider processing: finish it with complete_processing()', j.id
            USING ERRCODE = '22023';
    END IF;
    RETURN memmie._complete_job(j.id, complete_job.worker_id, complete_job.output, false);
END
$$;

CREATE FUNCTION memmie.fail_job(job_id text, worker_id text, error text, retryable boolean DEFAULT true)
RETURNS memmie.jobs
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    j memmie.jobs := memmie._lock_job(fail_job.job_id);
BEGIN
    PERFORM memmie._check_lease(j, fail_job.worker_id);
    PERFORM memmie._require(fail_job.error, 'error');
    PERFORM memmie._require(fail_job.retryable, 'retryable');
    -- retry after 1, 2, 4, ... seconds (at most an hour) while attempts are left
    UPDATE memmie.jobs x
    SET status = CASE WHEN fail_job.retryable AND x.retry_count < x.max_retries THEN 'queued' ELSE 'failed' END,
        run_after = clock_timestamp() + least(power(2, x.retry_count), 3600) * interval '1 second',
        completed_at = CASE WHEN fail_job.retryable AND x.retry_count < x.max_retries THEN NULL
                            ELSE clock_timestamp() END,
        retry_count = CASE WHEN fail_job.retryable AND x.retry_count < x.max_retries THEN x.retry_count + 1
                           ELSE x.retry_count END,
        error_message = fail_job.error, worker_id = NULL, lease_expires_at = NULL
    WHERE x.id = j.id
    RETURNING * INTO j;
    RETURN j;
END
$$;

CREATE FUNCTION memmie.cancel_job(job_id text) RETURNS memmie.jobs
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    j memmie.jobs := memmie._lock_job(cancel_job.job_id);
BEGIN
    IF j.status IN ('queued', 'running') THEN
        UPDATE memmie.jobs x
        SET status = 'cancelled', completed_at = clock_timestamp(), worker_id = NULL,
            lease_expires_at = NULL
        WHERE x.id = j.id
        RETURNING * INTO j;
    END IF;
    RETURN j;
END
$$;


-- =============================================================================================
-- sql/pipeline.sql (new in 0.2.0)


-- The provider pipeline: events -> provider_processing (one per blob, provider, version) ->
-- jobs ('memmie.process', id = the processing id) -> workers -> derived blobs and deltas.

-- ---------------------------------------------------------------------------------------------
-- Queues provider p_providers[i] on blob p_blobs[i] at its current version, with p_metadata[i]:
-- one provider_processing row each (none where it exists already) and its job, which has the
-- processing's id (CHECK processing_job_id). The one place processings are made (dispatch_events,
-- backfill, reprocess); not a trigger, so a restore (pg_dump) loading both tables does not make
-- jobs again. Returns the ids of the processings it made.
CREATE FUNCTION memmie._queue_processing(p_blobs uuid[], p_providers text[], p_metadata jsonb[])
RETURNS uuid[]
LANGUAGE plpgsql AS $$
DECLARE
    ids uuid[];
BEGIN
    WITH queued AS (
        INSERT INTO memmie.provider_processing (id, job_id, blob_id, provider_id, provider_version,
                                                user_id, status, processed_version,
                                                current_blob_version, input_size, metadata)
        SELECT c.id, c.id::text, c.blob_id, c.provider_id, c.provider_version, c.user_id, 'pending',
               c.version, c.version, c.content_size, c.metadata
        FROM (SELECT gen_random_uuid() AS id, b.id AS blob_id, p.id AS provider_id,
                     p.version AS provider_version, b.user_id, b.version, b.content_size, u.metadata
              FROM unnest(p_blobs, p_providers, p_metadata) u(blob_id, provider_id, metadata)
              JOIN memmie.blobs b ON b.id = u.blob_id
              JOIN memmie.providers p ON p.id = u.provider_id) c
        ON CONFLICT ON CONSTRAINT unique_processing DO NOTHING
        RETURNING id, blob_id, provider_id, provider_version, user_id, processed_version
    ), jobs AS (
        INSERT INTO memmie.jobs (id, job_type, user_id, input, max_retries)
        SELECT r.id::text, 'memmie.process', r.user_id,
               jsonb_build_object('processing_id', r.id, 'blob_id', r.blob_id,
                                  'version', r.processed_version, 'provider_id', r.provider_id,
                                  'provider_version', r.provider_version),
               coalesce((p.processing_rules ->> 'max_retries')::int, 3)
        FROM queued r JOIN memmie.providers p ON p.id = r.provider_id
    )
    SELECT coalesce(array_agg(id), '{}') INTO ids FROM queued;
    IF cardinality(ids) > 0 THEN
        PERFORM pg_notify('memmie_jobs', 'memmie.process');
    END IF;
    RETURN ids;
END
$$;

-- A processing that disappears (its blob hard-deleted, directly or by a cascade) cancels its
-- job, so that no worker claims work nobody can complete.
CREATE FUNCTION memmie._cancel_orphan_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE memmie.jobs j
    SET status = 'cancelled', completed_at = clock_timestamp(), worker_id = NULL, lease_expires_at = NULL,
        error_message = format('processing of blob %s was deleted', o.blob_id)
    FROM memmie_old o
    WHERE j.id = o.id::text AND j.status IN ('queued', 'running');
    RETURN NULL;
END
$$;
CREATE TRIGGER cancel_orphan_jobs AFTER DELETE ON memmie.provider_processing
    REFERENCING OLD TABLE AS memmie_old
    FOR EACH STATEMENT EXECUTE FUNCTION memmie._cancel_orphan_jobs();

-- A processing follows its job: claimed -> processing, retried -> pending, failed, cancelled
-- -> skipped. (Completion is written by complete_processing itself.)
-- A running attempt that ends in a retry or a failure is a failed invocation of the provider:
-- it is counted in the user's usage with the time it took (sql/metrics.sql).
-- The trigger's WHEN clause only picks the processings' jobs; the rest of the condition is
-- here: a WHEN clause is read back from the catalog and planned by every UPDATE of jobs, so
-- every claim and completion of every other job would pay for a longer one.
CREATE FUNCTION memmie._sync_processing() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    pr memmie.provider_processing;
    ms bigint;
BEGIN
    IF OLD.status IS NOT DISTINCT FROM NEW.status OR NEW.status = 'completed' THEN
        RETURN NULL;
    END IF;
    ms := CASE WHEN OLD.status = 'running' AND NEW.status IN ('queued', 'failed')
               THEN greatest(0, extract(epoch FROM clock_timestamp() - OLD.started_at) * 1000)::bigint END;
    UPDATE memmie.provider_processing pp
    SET status = CASE NEW.status WHEN 'running' THEN 'processing' WHEN 'queued' THEN 'pending'
                                 WHEN 'cancelled' THEN 'skipped' ELSE NEW.status END,
        started_at = CASE WHEN NEW.status = 'running' THEN NEW.started_at ELSE pp.started_at END,
        attempt_count = pp.attempt_count + (NEW.status = 'running')::int,
        error_message = CASE WHEN NEW.status = 'running' THEN pp.error_message ELSE NEW.error_message END,
        completed_at = CASE WHEN NEW.status IN ('failed', 'cancelled') THEN NEW.completed_at END,
        processing_time_ms = CASE WHEN NEW.status = 'failed' THEN ms ELSE pp.processing_time_ms END
    WHERE pp.id = NEW.id::uuid
    RETURNING * INTO pr;
    IF ms IS NOT NULL AND pr.id IS NOT NULL THEN
        INSERT INTO memmie.usage_increments (user_id, provider_id, provider_invocations, processing_time_ms)
        VALUES (pr.user_id, pr.provider_id, 1, ms);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER sync_processing AFTER UPDATE OF status ON memmie.jobs
    FOR EACH ROW WHEN (NEW.job_type = 'memmie.process')
    EXECUTE FUNCTION memmie._sync_processing();

-- ---------------------------------------------------------------------------------------------
-- Event positions

-- Gives the committed events that have none a position, in order. Only one session sequences
-- at a time and holds that right until it commits, so a position is never given out below one
-- that a reader may already have seen: a consumer of events_since() misses nothing.
CREATE FUNCTION memmie._sequence_events(p_max int DEFAULT 10000) RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    n int;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('memmie.sequence_events', 0)) THEN
        RETURN 0;   -- another session is sequencing; its positions appear when it commits
    END IF;
    UPDATE memmie.events e SET position = s.pos
    FROM (SELECT u.id, u.created_at, nextval('memmie.event_position_seq') AS pos
          FROM (SELECT x.id, x.created_at FROM memmie.events x
                WHERE x.position IS NULL
                ORDER BY x.created_at, x.id
                LIMIT p_max
                FOR UPDATE SKIP LOCKED) u) s
    WHERE e.id = s.id AND e.created_at = s.created_at;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE FUNCTION memmie.events_since(after_position bigint DEFAULT 0, max_events int DEFAULT 100)
RETURNS SETOF memmie.events
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM memmie._require(events_since.after_position, 'after_position');
    IF events_since.max_events IS NULL OR events_since.max_events < 1 OR events_since.max_events > 10000 THEN
        RAISE EXCEPTION 'max_events must be between 1 and 10000, got %', events_since.max_events
            USING ERRCODE = '22023';
    END IF;
    PERFORM memmie._sequence_events();
    RETURN QUERY SELECT * FROM memmie.events e
                 WHERE e.position > events_since.after_position
                 ORDER BY e.position
                 LIMIT events_since.max_events;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Dispatch

-- The (blob, provider) pairs provider p may process now: live blobs at their current version,
-- of a type and size p accepts, not produced or last changed by p itself, above the derivation
-- depth limit. p_blobs limits the blobs (NULL: all).
CREATE FUNCTION memmie._matches(p memmie.providers, b memmie.blobs, v memmie.blob_versions)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT p.status = 'active'
       AND b.deleted_at IS NULL AND NOT v.deleted AND v.version = b.version
       AND b.created_by <> p.id AND v.created_by <> p.id
       AND b.depth < memmie._max_derivation_depth()
       AND memmie._provider_accepts(p, v.content_type, v.content_size)
$$;

CREATE FUNCTION memmie.dispatch_events(max_events int DEFAULT 100) RETURNS int
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    n         int;
    blobs     uuid[];
    providers text[];
    metadata  jsonb[];
BEGIN
    IF dispatch_events.max_events IS NULL OR dispatch_events.max_events < 1
       OR dispatch_events.max_events > 100000 THEN
        RAISE EXCEPTION 'max_events must be between 1 and 100000, got %', dispatch_events.max_events
            USING ERRCODE = '22023';
    END IF;
    WITH ev AS MATERIALIZED (
        SELECT e.id, e.created_at, e.event_type, e.aggregate_id, e.aggregate_type, e.payload
        FROM memmie.events e
        WHERE e.processed = false
        ORDER BY e.created_at, e.id
        LIMIT dispatch_events.max_events
        FOR UPDATE SKIP LOCKED
    ), marked AS (
        UPDATE memmie.events e SET processed = true, processed_at = clock_timestamp()
        FROM ev WHERE e.id = ev.id AND e.created_at = ev.created_at
        RETURNING 1
    ), matched AS (
        SELECT DISTINCT ON (b.id, p.id) b.id AS blob_id, p.id AS provider_id,
               jsonb_build_object('event_id', ev.id, 'event_type', ev.event_type) AS metadata
        FROM ev
        JOIN memmie.blobs b ON ev.aggregate_type = 'blob' AND b.id = ev.aggregate_id
        JOIN memmie.blob_versions v ON v.blob_id = b.id
             AND v.version = (ev.payload ->> 'version')::int
        JOIN memmie.providers p ON ev.event_type = ANY (p.trigger_events)
        WHERE memmie._matches(p, b, v)
        ORDER BY b.id, p.id, ev.created_at
    )
    SELECT (SELECT count(*) FROM marked), array_agg(m.blob_id), array_agg(m.provider_id), array_agg(m.metadata)
    INTO n, blobs, providers, metadata
    FROM matched m;
    PERFORM memmie._queue_processing(blobs, providers, metadata);
    RETURN n;
END
$$;

CREATE FUNCTION memmie._require_provider(p_provider text) RETURNS memmie.providers
LANGUAGE plpgsql AS $$
DECLARE
    p memmie.providers;
BEGIN
    SELECT * INTO p FROM memmie.providers x WHERE x.id = memmie._require(p_provider, 'provider_id');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'provider % does not exist', p_provider USING ERRCODE = 'P0002';
    END IF;
    RETURN p;
END
$$;

CREATE FUNCTION memmie.backfill(provider_id text) RETURNS int
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p         memmie.providers := memmie._require_provider(backfill.provider_id);
    blobs     uuid[];
    providers text[];
    metadata  jsonb[];
    ids       uuid[];
BEGIN
    IF p.status <> 'active' THEN
        RAISE EXCEPTION 'provider % is %, not active', p.id, p.status USING ERRCODE = '22023';
    END IF;
    SELECT array_agg(b.id), array_agg(p.id::text), array_agg('{"backfill": true}'::jsonb)
    INTO blobs, providers, metadata
    FROM memmie.blobs b
    JOIN memmie.blob_versions v ON v.blob_id = b.id AND v.version = b.version
    WHERE b.deleted_at IS NULL AND memmie._matches(p, b, v);
    ids := memmie._queue_processing(blobs, providers, metadata);
    RETURN cardinality(ids);
END
$$;

CREATE FUNCTION memmie.reprocess(blob_id uuid, provider_id text) RETURNS uuid
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p   memmie.providers := memmie._require_provider(reprocess.provider_id);
    b   memmie.blobs;
    pr  memmie.provider_processing;
    ids uuid[];
BEGIN
    SELECT * INTO b FROM memmie.blobs x WHERE x.id = memmie._require(reprocess.blob_id, 'blob_id');
    IF NOT FOUND OR b.deleted_at IS NOT NULL THEN
        RAISE EXCEPTION 'blob % does not exist', reprocess.blob_id USING ERRCODE = 'P0002';
    END IF;
    ids := memmie._queue_processing(ARRAY[b.id], ARRAY[p.id::text], ARRAY['{"reprocess": true}'::jsonb]);
    IF cardinality(ids) > 0 THEN
        RETURN ids[1];
    END IF;
    -- processed at this version before: run it again (its job is queued anew)
    SELECT * INTO pr FROM memmie.provider_processing x
    WHERE x.blob_id = b.id AND x.provider_id = p.id AND x.processed_version = b.version;
    PERFORM memmie._lock_job(pr.job_id);
    UPDATE memmie.jobs j
    SET status = 'queued', retry_count = 0, run_after = clock_timestamp(), worker_id = NULL,
        lease_expires_at = NULL, completed_at = NULL, output = NULL, error_message = NULL, progress = 0
    WHERE j.id = pr.job_id AND j.status NOT IN ('queued', 'running');
    IF FOUND THEN
        UPDATE memmie.provider_processing x
        SET status = 'pending', provider_version = p.version, error_message = NULL,
            completed_at = NULL, queued_at = clock_timestamp(),
            metadata = x.metadata || '{"reprocess": true}'
        WHERE x.id = pr.id;
        PERFORM pg_notify('memmie_jobs', 'memmie.process');
    END IF;
    RETURN pr.id;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Results

-- The processing, after locking its job: MM005 unless worker holds the job's lease.
CREATE FUNCTION memmie._leased_processing(p_processing uuid, p_worker text)
RETURNS memmie.provider_processing
LANGUAGE plpgsql AS $$
DECLARE
    pr memmie.provider_processing;
BEGIN
    SELECT * INTO pr FROM memmie.provider_processing x
    WHERE x.id = memmie._require(p_processing, 'processing_id');
    IF NOT FOUND THEN
        RAISE EXCEPTION 'processing % does not exist', p_processing USING ERRCODE = 'P0002';
    END IF;
    PERFORM memmie._check_lease(memmie._lock_job(pr.job_id), p_worker);
    RETURN pr;
END
$$;

-- The bytes of an output child: "content" (text, or any other JSON value as its text) or
-- "content_base64".
CREATE FUNCTION memmie._child_bytes(c jsonb, i int) RETURNS bytea
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF c ? 'content' AND c ? 'content_base64' THEN
        RAISE EXCEPTION 'outputs.children[%] has both content and content_base64', i USING ERRCODE = '22023';
    ELSIF jsonb_typeof(c -> 'content_base64') = 'string' THEN
        BEGIN
            RETURN decode(c ->> 'content_base64', 'base64');
        EXCEPTION WHEN invalid_parameter_value OR invalid_text_representation THEN
            RAISE EXCEPTION 'outputs.children[%].content_base64 is not valid base64', i USING ERRCODE = '22023';
        END;
    ELSIF jsonb_typeof(c -> 'content') = 'string' THEN
        RETURN convert_to(c ->> 'content', 'UTF8');
    ELSIF c ? 'content' AND jsonb_typeof(c -> 'content') <> 'null' THEN
        RETURN convert_to((c -> 'content')::text, 'UTF8');
    END IF;
    RAISE EXCEPTION 'outputs.children[%] needs content or content_base64 (a string)', i USING ERRCODE = '22023';
END
$$;

CREATE FUNCTION memmie.complete_processing(processing_id uuid, worker_id text, outputs jsonb)
RETURNS SETOF memmie.blobs
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    pr        memmie.provider_processing;
    created   boolean;
    p         memmie.providers;
    b         memmie.blobs;
    child     memmie.blobs;
    c         jsonb;
    i         int := 0;
    k         int;
    ttype     text;
    caused_by uuid;
    cause     jsonb;
    d         memmie.deltas;
    patch_id  uuid;
    patch_err text;
    out_ids   uuid[] := '{}';
    out_size  bigint := 0;
    content   bytea;
    first_delta uuid;
BEGIN
    -- the job is locked and its lease checked from here on
    pr := memmie._leased_processing(complete_processing.processing_id, complete_processing.worker_id);
    PERFORM memmie._require(complete_processing.outputs, 'outputs');
    IF jsonb_typeof(complete_processing.outputs) <> 'object' THEN
        RAISE EXCEPTION 'outputs must be a JSON object, got %', jsonb_typeof(complete_processing.outputs)
            USING ERRCODE = '22023';
    END IF;
    IF EXISTS (SELECT FROM jsonb_object_keys(complete_processing.outputs) key
               WHERE key NOT IN ('children', 'patch', 'metadata')) THEN
        RAISE EXCEPTION 'outputs may hold only "children", "patch" and "metadata"' USING ERRCODE = '22023';
    END IF;
    IF complete_processing.outputs ? 'children' AND jsonb_typeof(complete_processing.outputs -> 'children') <> 'array' THEN
        RAISE EXCEPTION 'outputs.children must be an array' USING ERRCODE = '22023';
    END IF;
    IF complete_processing.outputs ? 'patch' AND jsonb_typeof(complete_processing.outputs -> 'patch') <> 'array' THEN
        RAISE EXCEPTION 'outputs.patch must be a JSON Patch (an array of operations)' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO p FROM memmie.providers x WHERE x.id = pr.provider_id;
    IF p.output_schema IS NOT NULL THEN
        PERFORM memmie._validate_json(p.output_schema, complete_processing.outputs,
                                      format('output of provider %s', p.id));
    END IF;

    b := memmie._lock_blob(pr.blob_id);
    IF b.deleted_at IS NOT NULL THEN
        -- the input was deleted while it was processed: nothing to attach the outputs to
        UPDATE memmie.provider_processing x
        SET status = 'skipped', completed_at = clock_timestamp(),
            error_message = format('blob %s was deleted before the processing completed', b.id)
        WHERE x.id = pr.id;
        PERFORM memmie._complete_job(pr.job_id, complete_processing.worker_id, jsonb_build_object('skipped', 'input deleted'), true);
        RETURN;
    END IF;
    SELECT v.delta_id INTO caused_by FROM memmie.blob_versions v
    WHERE v.blob_id = b.id AND v.version = pr.processed_version;
    cause := jsonb_build_object('processing_id', pr.id, 'provider_id', p.id,
                                'provider_version', pr.provider_version,
                                'event_id', pr.metadata -> 'event_id',
                                'event_type', pr.metadata -> 'event_type');

    -- a patch of the input: recorded pending, then applied, or failed when it no longer applies
    IF complete_processing.outputs ? 'patch' THEN
        INSERT INTO memmie.deltas (blob_id, user_id, operation, provider_id, patch, from_version,
                                   to_version, caused_by_delta_id, caused_by_event, status)
        VALUES (b.id, b.user_id, 'transform', p.id, complete_processing.outputs -> 'patch', b.version,
                b.version + 1, caused_by, cause, 'pending')
        RETURNING id INTO patch_id;
        BEGIN
            d := memmie._apply_patch(b, complete_processing.outputs -> 'patch', p.id, caused_by, cause,
                                     patch_id);
        EXCEPTION WHEN invalid_parameter_value OR SQLSTATE 'MM007' OR SQLSTATE 'MM002'
                       OR program_limit_exceeded THEN
            patch_err := SQLERRM;
            UPDATE memmie.deltas x SET status = 'failed', error_message = patch_err WHERE x.id = patch_id;
        END;
        SELECT * INTO b FROM memmie.blobs x WHERE x.id = b.id;
    END IF;

    -- children: a new derived blob each, or a new version of the child this provider derived
    -- from this input before (matched by transform_type, in order)
    FOR c IN SELECT x FROM jsonb_array_elements(coalesce(complete_processing.outputs -> 'children', '[]')) x LOOP
        IF jsonb_typeof(c) <> 'object' THEN
            RAISE EXCEPTION 'outputs.children[%] must be an object', i USING ERRCODE = '22023';
        END IF;
        IF jsonb_typeof(c -> 'content_type') IS DISTINCT FROM 'string' THEN
            RAISE EXCEPTION 'outputs.children[%].content_type must be a string', i USING ERRCODE = '22023';
        END IF;
        IF c ? 'metadata' AND jsonb_typeof(c -> 'metadata') <> 'object' THEN
            RAISE EXCEPTION 'outputs.children[%].metadata must be an object', i USING ERRCODE = '22023';
        END IF;
        IF c ? 'tags' AND (jsonb_typeof(c -> 'tags') <> 'array'
                           OR jsonb_path_exists(c -> 'tags', '$[*] ? (@.type() != "string")')) THEN
            RAISE EXCEPTION 'outputs.children[%].tags must be an array of strings', i USING ERRCODE = '22023';
        END IF;
        IF c ? 'transform_type' AND jsonb_typeof(c -> 'transform_type') <> 'string' THEN
            RAISE EXCEPTION 'outputs.children[%].transform_type must be a string', i USING ERRCODE = '22023';
        END IF;
        content := memmie._child_bytes(c, i);
        ttype := memmie._check_text(coalesce(c ->> 'transform_type', 'derived'), 'transform_type', 255);
        -- the k-th child of this transform type in the outputs matches the k-th existing one
        SELECT count(*) INTO k FROM jsonb_array_elements(complete_processing.outputs -> 'children')
                                    WITH ORDINALITY o(x, n)
        WHERE o.n <= i AND coalesce(o.x ->> 'transform_type', 'derived') = ttype;
        SELECT cb.* INTO child FROM memmie.blob_edges e JOIN memmie.blobs cb ON cb.id = e.child_blob_id
        WHERE e.parent_blob_id = b.id AND e.provider_id = p.id AND e.transform_type = ttype
          AND cb.deleted_at IS NULL
        ORDER BY cb.created_at, cb.id
        OFFSET k LIMIT 1
        FOR NO KEY UPDATE OF cb;
        created := NOT FOUND;
        IF NOT created THEN
            -- a new version of that child: new content, type, metadata and tags
            child := memmie._replace_content(child, content, c ->> 'content_type', p.id, caused_by, cause,
                                             coalesce(c -> 'metadata', '{}'),
                                             ARRAY(SELECT jsonb_array_elements_text(coalesce(c -> 'tags', '[]'))));
        ELSE
            child := memmie._derive(ARRAY[b.id], p.id, ttype, content, c ->> 'content_type',
                                    coalesce(c -> 'metadata', '{}'),
                                    ARRAY(SELECT jsonb_array_elements_text(coalesce(c -> 'tags', '[]'))),
                                    caused_by, cause);
        END IF;
        UPDATE memmie.blob_edges e
        SET version_map = CASE WHEN created THEN '[]'::jsonb ELSE e.version_map END
                          || jsonb_build_array(jsonb_build_object('parent_version', pr.processed_version,
                                                                  'child_version', child.version))
        WHERE e.parent_blob_id = b.id AND e.child_blob_id = child.id AND e.provider_id = p.id;
        IF first_delta IS NULL THEN
            first_delta := memmie._head_delta(child);
        END IF;
        out_ids := out_ids || child.id;
        out_size := out_size + length(content);
        i := i + 1;
        RETURN NEXT child;
    END LOOP;
    IF d.id IS NOT NULL THEN
        RETURN NEXT b;
    END IF;

    UPDATE memmie.provider_processing x
    SET status = 'completed', completed_at = clock_timestamp(),
        processing_time_ms = (extract(epoch FROM clock_timestamp() - x.started_at) * 1000)::int,
        output_size = out_size + coalesce(length((complete_processing.outputs -> 'patch')::text), 0),
        output_blob_id = out_ids[1],
        output_delta_id = coalesce(patch_id, first_delta),
        current_blob_version = b.version,
        error_message = patch_err,
        metadata = x.metadata || jsonb_build_object('output_blob_ids', to_jsonb(out_ids))
                 || CASE WHEN patch_id IS NULL THEN '{}'::jsonb
                         ELSE jsonb_build_object('patch_status', CASE WHEN patch_err IS NULL THEN 'applied' ELSE 'failed' END)
                    END
                 || coalesce(complete_processing.outputs -> 'metadata', '{}')
    WHERE x.id = pr.id
    RETURNING * INTO pr;
    INSERT INTO memmie.usage_increments (user_id, blobs_processed, provider_id, provider_invocations,
                                         processing_time_ms)
    VALUES (pr.user_id, 1, pr.provider_id, 1, coalesce(pr.processing_time_ms, 0));
    PERFORM memmie._complete_job(pr.job_id, complete_processing.worker_id,
                                 jsonb_build_object('output_blob_ids', to_jsonb(out_ids), 'output_delta_id', patch_id),
                                 true);
END
$$;

CREATE FUNCTION memmie.fail_processing(processing_id uuid, worker_id text, error text,
                                       retryable boolean DEFAULT true)
RETURNS memmie.provider_processing
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    pr memmie.provider_processing;
BEGIN
    pr := memmie._leased_processing(fail_processing.processing_id, fail_processing.worker_id);
    PERFORM memmie.fail_job(pr.job_id, fail_processing.worker_id, fail_processing.error,
                            fail_processing.retryable);
    SELECT * INTO pr FROM memmie.provider_processing x WHERE x.id = fail_processing.processing_id;
    RETURN pr;
END
$$;


-- =============================================================================================
-- sql/partitions.sql (new in 0.2.0)


-- Partition upkeep (native: src/partitions.rs). The public functions take a regclass, which
-- the Rust entry points receive as its oid.

CREATE FUNCTION memmie.create_partitions(parent regclass, start_date date, count int) RETURNS int
LANGUAGE sql AS $$
    SELECT memmie._create_partitions(parent::oid, start_date, count)
$$;

CREATE FUNCTION memmie.drop_old_partitions(parent regclass, older_than interval) RETURNS int
LANGUAGE sql AS $$
    SELECT memmie._drop_old_partitions(parent::oid, older_than)
$$;


-- =============================================================================================
-- sql/external.sql (new in 0.2.0)


-- Content kept outside PostgreSQL (storage_backend s3 or filesystem): memmie records its hash,
-- size and location, counts its references like any content, and gc_content returns the
-- location when the last reference is gone, for the caller to delete the bytes. get_content of
-- such content raises 0A000 naming where it lives.
--
-- A blob can only be attached to an existing content by naming the same location and size: the
-- location is what gives access to the bytes, and memmie never hands out bytes it holds itself
-- to a caller who knows only their hash.

-- Validates an external location {content_hash, content_size, storage_backend, storage_path},
-- records it in content_storage (or finds the same record there, share-locked against
-- gc_content) and returns state s pointing at it. JSON content kept outside has no /content in
-- the state: memmie cannot read it.
CREATE FUNCTION memmie._with_external(s jsonb, p_user uuid, p_location jsonb, p_type text)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    h       text := p_location ->> 'content_hash';
    size    bigint := (p_location ->> 'content_size')::bigint;
    backend text := p_location ->> 'storage_backend';
    path    text := p_location ->> 'storage_path';
    c       memmie.content_storage;
BEGIN
    PERFORM memmie._require(h, 'content_hash');
    PERFORM memmie._check_hash(h);
    PERFORM memmie._require(size, 'content_size');
    IF size < 0 THEN
        RAISE EXCEPTION 'content_size must not be negative, got %', size USING ERRCODE = '22023';
    END IF;
    PERFORM memmie._require(backend, 'storage_backend');
    IF backend NOT IN ('s3', 'filesystem') THEN
        RAISE EXCEPTION 'storage_backend must be "s3" or "filesystem", got "%" (content kept in PostgreSQL is stored with create_blob / update_content)',
            backend USING ERRCODE = '22023';
    END IF;
    PERFORM memmie._check_text(path, 'storage_path', 4096);
    PERFORM memmie._check_content_quota(p_user, size);
    INSERT INTO memmie.content_storage (content_hash, content, storage_backend, storage_path,
                                        compression, original_size, compressed_size, mime_type)
    VALUES (h, NULL, backend, path, 'none', size, NULL, p_type)
    ON CONFLICT (content_hash) DO NOTHING;
    -- locked until the caller commits, so gc_content cannot delete it under the new reference
    SELECT * INTO c FROM memmie.content_storage x WHERE x.content_hash = h FOR KEY SHARE;
    IF c.storage_backend IS DISTINCT FROM backend OR c.storage_path IS DISTINCT FROM path
       OR c.original_size <> size THEN
        -- says nothing of where the existing content is kept
        RAISE EXCEPTION 'content % is already recorded with another storage_backend, storage_path or content_size', h
            USING ERRCODE = '22023',
                  HINT = 'A blob can reference existing content only by naming the same location and size.';
    END IF;
    RETURN (s - 'content') || jsonb_build_object('content_hash', h, 'content_size', size,
                                                 'content_type', p_type);
END
$$;

CREATE FUNCTION memmie._external_location(p_hash text, p_size bigint, p_backend text, p_path text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('content_hash', p_hash, 'content_size', p_size,
                              'storage_backend', p_backend, 'storage_path', p_path)
$$;

CREATE FUNCTION memmie.create_external_blob(user_id uuid, content_hash text, content_size bigint,
                                            content_type text, storage_backend text,
                                            storage_path text, metadata jsonb DEFAULT '{}',
                                            tags text[] DEFAULT '{}')
RETURNS memmie.blobs
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p_user uuid := memmie._require(create_external_blob.user_id, 'user_id');
BEGIN
    PERFORM memmie._require(create_external_blob.content_type, 'content_type');
    PERFORM memmie._check_mime(create_external_blob.content_type);
    PERFORM memmie._lock_user(p_user);
    RETURN memmie._insert_blob(p_user, NULL, create_external_blob.content_type,
                               create_external_blob.metadata, create_external_blob.tags, NULL,
                               'user', 'create', 'derived', NULL, NULL,
                               memmie._external_location(create_external_blob.content_hash,
                                                         create_external_blob.content_size,
                                                         create_external_blob.storage_backend,
                                                         create_external_blob.storage_path));
END
$$;

CREATE FUNCTION memmie.update_external_content(blob_id uuid, content_hash text, content_size bigint,
                                               storage_backend text, storage_path text,
                                               content_type text DEFAULT NULL,
                                               expected_version int DEFAULT NULL,
                                               provider_id text DEFAULT 'user')
RETURNS memmie.blobs
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    p_by text := memmie._check_provider(update_external_content.provider_id);
    b    memmie.blobs;
BEGIN
    IF update_external_content.content_type IS NOT NULL THEN
        PERFORM memmie._check_mime(update_external_content.content_type);
    END IF;
    b := memmie._lock_blob(update_external_content.blob_id);
    PERFORM memmie._check_live(b);
    PERFORM memmie._check_expected(b, update_external_content.expected_version);
    RETURN memmie._replace_content(b, NULL, update_external_content.content_type, p_by, NULL, NULL,
                                   NULL, NULL,
                                   memmie._external_location(update_external_content.content_hash,
                                                             update_external_content.content_size,
                                                             update_external_content.storage_backend,
                                                             update_external_content.storage_path));
END
$$;


-- =============================================================================================
-- sql/metrics.sql (new in 0.2.0)


-- Metrics: each user's usage per day (usage_metrics) and each provider's per day
-- (provider_metrics). Days are UTC days, whatever the session's TimeZone.
--
-- memmie's functions count usage as they work, into usage_increments (one row per change, insert
-- only: two writers of one user never wait for each other on a counter row); fold_usage() adds
-- those rows up into usage_metrics. provider_metrics is computed from provider_processing by
-- rollup_metrics(), so it can be recomputed for any day.

-- The UTC day of a moment, and the moment a UTC day starts.
CREATE FUNCTION memmie._utc_day(t timestamptz) RETURNS date
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT (t AT TIME ZONE 'UTC')::date $$;
CREATE FUNCTION memmie._utc_start(d date) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT d::timestamp AT TIME ZONE 'UTC' $$;

-- {"a": 1} + {"a": 2, "b": 1} = {"a": 3, "b": 1}
CREATE FUNCTION memmie._add_counts(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(jsonb_object_agg(k, n), '{}')
    FROM (SELECT k, sum(v::bigint) AS n
          FROM (SELECT * FROM jsonb_each_text(coalesce(a, '{}'))
                UNION ALL SELECT * FROM jsonb_each_text(coalesce(b, '{}'))) x(k, v)
          GROUP BY k) y
$$;

-- Adds every committed usage increment into usage_metrics and deletes it; returns how many it
-- folded. One session folds at a time (a second waits for the first, then folds what is left).
-- A day's storage_bytes_used is the user's storage after the day's last change (or, for a day
-- without a change, when its row was first written).
CREATE FUNCTION memmie.fold_usage() RETURNS int
LANGUAGE plpgsql AS $$
DECLARE
    n int;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('memmie.fold_usage', 0));
    WITH moved AS (
        DELETE FROM memmie.usage_increments RETURNING *
    ), days AS (
        SELECT m.user_id, m.metric_date,
               sum(m.blobs_created) AS blobs_created, sum(m.blobs_processed) AS blobs_processed,
               sum(m.deltas_applied) AS deltas_applied,
               (array_agg(m.storage_bytes_used ORDER BY m.recorded_at DESC)
                    FILTER (WHERE m.storage_bytes_used IS NOT NULL))[1] AS storage_bytes_used,
               sum(m.processing_time_ms) AS processing_time_ms,
               sum(m.api_calls) AS api_calls, sum(m.api_errors) AS api_errors,
               sum(m.response_time_ms) AS response_time_ms
        FROM moved m GROUP BY m.user_id, m.metric_date
    ), invocations AS (
        SELECT x.user_id, x.metric_date, jsonb_object_agg(x.provider_id, x.n) AS counts
        FROM (SELECT m.user_id, m.metric_date, m.provider_id, sum(m.provider_invocations) AS n
              FROM moved m WHERE m.provider_id IS NOT NULL AND m.provider_invocations <> 0
              GROUP BY m.user_id, m.metric_date, m.provider_id) x
        GROUP BY x.user_id, x.metric_date
    ), folded AS (
        INSERT INTO memmie.usage_metrics AS um
            (user_id, metric_date, blobs_created, blobs_processed, deltas_applied,
             storage_bytes_used, provider_invocations, api_calls, api_errors,
             total_processing_time_ms, total_response_time_ms, average_response_time_ms)
        SELECT d.user_id, d.metric_date, d.blobs_created, d.blobs_processed, d.deltas_applied,
               coalesce(d.storage_bytes_used, old.storage_bytes_used, u.storage_used),
               memmie._add_counts(old.provider_invocations, i.counts),
               d.api_calls, d.api_errors, d.processing_time_ms, d.response_time_ms,
               round((coalesce(old.total_response_time_ms, 0) + d.response_time_ms)
                     / nullif(coalesce(old.api_calls, 0) + d.api_calls, 0))
        FROM days d
        JOIN memmie.user_contexts u ON u.user_id = d.user_id   -- a deleted user's rows go
        LEFT JOIN invocations i ON i.user_id = d.user_id AND i.metric_date = d.metric_date
        LEFT JOIN memmie.usage_metrics old ON old.user_id = d.user_id AND old.metric_date = d.metric_date
        ON CONFLICT ON CONSTRAINT unique_user_date DO UPDATE
        SET blobs_created = um.blobs_created + excluded.blobs_created,
            blobs_processed = um.blobs_processed + excluded.blobs_processed,
            deltas_applied = um.deltas_applied + excluded.deltas_applied,
            storage_bytes_used = excluded.storage_bytes_used,
            provider_invocations = excluded.provider_invocations,
            api_calls = um.api_calls + excluded.api_calls,
            api_errors = um.api_errors + excluded.api_errors,
            total_processing_time_ms = um.total_processing_time_ms + excluded.total_processing_time_ms,
            total_response_time_ms = um.total_response_time_ms + excluded.total_response_time_ms,
            average_response_time_ms = excluded.average_response_time_ms,
            updated_at = clock_timestamp()
        RETURNING 1
    )
    SELECT count(*) INTO n FROM moved;
    RETURN n;
END
$$;

-- A user's usage per day, newest first, up to date (fold_usage() first).
CREATE FUNCTION memmie.user_usage(user_id uuid, from_date date DEFAULT NULL, to_date date DEFAULT NULL)
RETURNS SETOF memmie.usage_metrics
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM memmie._require(user_usage.user_id, 'user_id');
    PERFORM memmie.fold_usage();
    RETURN QUERY
    SELECT * FROM memmie.usage_metrics m
    WHERE m.user_id = user_usage.user_id
      AND (user_usage.from_date IS NULL OR m.metric_date >= user_usage.from_date)
      AND (user_usage.to_date IS NULL OR m.metric_date <= user_usage.to_date)
    ORDER BY m.metric_date DESC;
END
$$;

-- Counts one call of the application's API for a user (created on first use): api_calls,
-- api_errors (ok = false) and average_response_time_ms of the day.
CREATE FUNCTION memmie.record_api_call(user_id uuid, ok boolean, response_ms int) RETURNS void
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    PERFORM memmie._require(record_api_call.user_id, 'user_id');
    PERFORM memmie._require(record_api_call.ok, 'ok');
    PERFORM memmie._require(record_api_call.response_ms, 'response_ms');
    IF record_api_call.response_ms < 0 THEN
        RAISE EXCEPTION 'response_ms must not be negative, got %', record_api_call.response_ms
            USING ERRCODE = '22023';
    END IF;
    IF NOT EXISTS (SELECT FROM memmie.user_contexts u WHERE u.user_id = record_api_call.user_id) THEN
        INSERT INTO memmie.user_contexts (user_id) VALUES (record_api_call.user_id) ON CONFLICT DO NOTHING;
    END IF;
    INSERT INTO memmie.usage_increments (user_id, api_calls, api_errors, response_time_ms)
    VALUES (record_api_call.user_id, 1, (NOT record_api_call.ok)::int, record_api_call.response_ms);
END
$$;

-- The kind of a processing error: what its text says before the first colon ("timeout: after
-- 30 s" -> "timeout"), at most 64 characters; "unknown" when there is no text.
CREATE FUNCTION memmie._error_type(msg text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(nullif(left(btrim(split_part(msg, ':', 1)), 64), ''), 'unknown')
$$;

-- provider_metrics of one UTC day from the processings that finished that day (completed or
-- failed): successes, failures (a failed processing and every earlier attempt of a processing
-- that was retried), latency percentiles of the successful ones, bytes, time, errors by kind.
-- Writes one row per provider with such processings, removes the day's other rows (a re-run
-- gives the same rows) and returns how many rows the day has.
CREATE FUNCTION memmie.rollup_metrics(day date DEFAULT current_date) RETURNS int
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    lo timestamptz := memmie._utc_start(memmie._require(rollup_metrics.day, 'day'));
    n  int;
BEGIN
    WITH finished AS (
        SELECT p.provider_id, p.status, p.attempt_count, p.processing_time_ms, p.input_size,
               p.output_size, p.error_message
        FROM memmie.provider_processing p
        WHERE p.completed_at >= lo AND p.completed_at < lo + interval '1 day'
          AND p.status IN ('completed', 'failed')
    ), errors AS (
        SELECT e.provider_id, jsonb_object_agg(e.kind, e.n) AS counts
        FROM (SELECT f.provider_id, memmie._error_type(f.error_message) AS kind, count(*) AS n
              FROM finished f WHERE f.status = 'failed'
              GROUP BY 1, 2) e
        GROUP BY e.provider_id
    ), per_provider AS (
        SELECT f.provider_id,
               count(*) FILTER (WHERE f.status = 'completed') AS ok,
               count(*) FILTER (WHERE f.status = 'failed')
                   + coalesce(sum(greatest(f.attempt_count - 1, 0)), 0) AS failed,
               percentile_disc(0.50) WITHIN GROUP (ORDER BY f.processing_time_ms)
                   FILTER (WHERE f.status = 'completed') AS p50,
               percentile_disc(0.95) WITHIN GROUP (ORDER BY f.processing_time_ms)
                   FILTER (WHERE f.status = 'completed') AS p95,
               percentile_disc(0.99) WITHIN GROUP (ORDER BY f.processing_time_ms)
                   FILTER (WHERE f.status = 'completed') AS p99,
               coalesce(sum(f.input_size), 0) AS bytes_in,
               coalesce(sum(f.output_size), 0) AS bytes_out,
               coalesce(sum(f.processing_time_ms), 0) AS time_ms
        FROM finished f GROUP BY f.provider_id
    ), written AS (
        INSERT INTO memmie.provider_metrics AS pm
            (provider_id, metric_date, total_invocations, successful_invocations, failed_invocations,
             latency_p50, latency_p95, latency_p99, total_input_bytes, total_output_bytes,
             total_processing_time_ms, error_counts)
        SELECT a.provider_id, rollup_metrics.day, a.ok + a.failed, a.ok, a.failed, a.p50, a.p95, a.p99,
               a.bytes_in, a.bytes_out, a.time_ms, coalesce(e.counts, '{}')
        FROM per_provider a LEFT JOIN errors e ON e.provider_id = a.provider_id
        ON CONFLICT ON CONSTRAINT unique_provider_date DO UPDATE
        SET total_invocations = excluded.total_invocations,
            successful_invocations = excluded.successful_invocations,
            failed_invocations = excluded.failed_invocations,
            latency_p50 = excluded.latency_p50, latency_p95 = excluded.latency_p95,
            latency_p99 = excluded.latency_p99, total_input_bytes = excluded.total_input_bytes,
            total_output_bytes = excluded.total_output_bytes,
            total_processing_time_ms = excluded.total_processing_time_ms,
            error_counts = excluded.error_counts
        RETURNING pm.provider_id
    ), stale AS (
        DELETE FROM memmie.provider_metrics pm
        WHERE pm.metric_date = rollup_metrics.day
          AND pm.provider_id NOT IN (SELECT w.provider_id FROM written w)
    )
    SELECT count(*) INTO n FROM written;
    RETURN n;
END
$$;


-- =============================================================================================
-- sql/check.sql (new in 0.2.0)


-- memmie.check(): recomputes what memmie keeps incrementally and compares. Each row says what
-- was checked, whether it holds, and (when not) the first offenders.

CREATE FUNCTION memmie._check_row(p_name text, p_bad bigint, p_sample text, p_what text)
RETURNS TABLE (check_name text, ok boolean, detail text)
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_name, p_bad = 0,
           CASE WHEN p_bad = 0 THEN p_what
                ELSE format('%s wrong: %s', p_bad, p_sample) END
$$;

CREATE FUNCTION memmie.check()
RETURNS TABLE (check_name text, ok boolean, detail text)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    bad    bigint;
    sample text;
    total  bigint;
BEGIN
    -- reference counts = version rows naming each content (the stored count, plus what this
    -- transaction has changed and will write when it commits)
    SELECT count(*), string_agg(format('%s has %s, %s versions name it', x.content_hash, x.reference_count, x.refs), '; ')
           FILTER (WHERE x.rn <= 3)
    INTO bad, sample
    FROM (SELECT c.content_hash, c.reference_count + coalesce(p.n, 0) AS reference_count, coalesce(v.refs, 0) AS refs,
                 row_number() OVER (ORDER BY c.content_hash) AS rn
          FROM memmie.content_storage c
          LEFT JOIN (SELECT content_hash, count(*) AS refs FROM memmie.blob_versions GROUP BY 1) v
                 ON v.content_hash = c.content_hash
          LEFT JOIN memmie._pending_references() p ON p.content_hash = c.content_hash
          WHERE c.reference_count + coalesce(p.n, 0) <> coalesce(v.refs, 0)) x;
    SELECT count(*) INTO total FROM memmie.content_storage;
    RETURN QUERY SELECT * FROM memmie._check_row('reference_counts', bad, sample,
                                                 format('%s contents', total));

    -- replaying each blob's deltas gives every version's stored state; the head is the last one
    SELECT count(*), string_agg(format('blob %s version %s', x.blob_id, x.version), '; ') FILTER (WHERE x.rn <= 3)
    INTO bad, sample
    FROM (SELECT v.blob_id, v.version, row_number() OVER (ORDER BY v.blob_id, v.version) AS rn
          FROM memmie.blob_versions v
          WHERE memmie.blob_state(v.blob_id, v.version)
                IS DISTINCT FROM memmie._make_state(v.content_hash, v.content_size, v.content_type,
                                                    v.metadata, v.tags, v.deleted)) x;
    SELECT count(*) INTO total FROM memmie.blob_versions;
    RETURN QUERY SELECT * FROM memmie._check_row('replay', bad, sample, format('%s versions replayed', total));

    SELECT count(*), string_agg(format('blob %s', x.id), '; ') FILTER (WHERE x.rn <= 3)
    INTO bad, sample
    FROM (SELECT b.id, row_number() OVER (ORDER BY b.id) AS rn
          FROM memmie.blobs b
          LEFT JOIN memmie.blob_versions v ON v.blob_id = b.id AND v.version = b.version
          WHERE v.blob_id IS NULL
             OR (b.content_hash, b.content_size, b.content_type, b.metadata, b.tags, b.deleted_at IS NOT NULL)
                IS DISTINCT FROM (v.content_hash, v.content_size, v.content_type, v.metadata, v.tags, v.deleted)
             OR (SELECT count(*) FROM memmie.blob_versions w WHERE w.blob_id = b.id) <> b.version) x;
    SELECT count(*) INTO total FROM memmie.blobs;
    RETURN QUERY SELECT * FROM memmie._check_row('heads', bad, sample,
                                                 format('%s blobs: head = latest version, versions dense', total));

    -- stored bytes still hash to their names
    SELECT count(*), string_agg(format('%s: %s', x.content_hash, x.detail), '; ') FILTER (WHERE x.rn <= 3)
    INTO bad, sample
    FROM (SELECT r.content_hash, r.detail, row_number() OVER (ORDER BY r.content_hash) AS rn
          FROM memmie.verify_content() r WHERE NOT r.ok) x;
    SELECT count(*) INTO total FROM memmie.content_storage WHERE storage_backend = 'postgres';
    RETURN QUERY SELECT * FROM memmie._check_row('content_hashes', bad, sample, format('%s contents re-hashed', total));

    -- storage_used and blob_count against a recomputation
    SELECT count(*), string_agg(format('user %s: storage %s (recomputed %s), blobs %s (recomputed %s)',
                                       x.user_id, x.storage_used, x.storage, x.blob_count, x.blobs), '; ')
           FILTER (WHERE x.rn <= 3)
    INTO bad, sample
    FROM (SELECT u.user_id, u.storage_used, u.blob_count, coalesce(s.storage, 0) AS storage,
                 coalesce(n.blobs, 0) AS blobs, row_number() OVER (ORDER BY u.user_id) AS rn
          FROM memmie.user_contexts u
          LEFT JOIN (SELECT d.user_id, sum(d.content_size) AS storage
                     FROM (SELECT DISTINCT v.user_id, v.content_hash, v.content_size FROM memmie.blob_versions v) d
                     GROUP BY 1) s ON s.user_id = u.user_id
          LEFT JOIN (SELECT b.user_id, count(*) AS blobs FROM memmie.blobs b WHERE b.deleted_at IS NULL GROUP BY 1) n
                 ON n.user_id = u.user_id
          WHERE u.storage_used <> coalesce(s.storage, 0) OR u.blob_count <> coalesce(n.blobs, 0)) x;
    SELECT count(*) INTO total FROM memmie.user_contexts;
    RETURN QUERY SELECT * FROM memmie._check_row('user_accounting', bad, sample, format('%s users', total));

    -- edges join blobs of one user; every parent_blob_id has its edge
    SELECT count(*), string_agg(x.what, '; ') FILTER (WHERE x.rn <= 3)
    INTO bad, sample
    FROM (SELECT y.what, row_number() OVER (ORDER BY y.what) AS rn FROM (
              SELECT format('edge %s -> %s crosses users', e.parent_blob_id, e.child_blob_id) AS what
              FROM memmie.blob_edges e JOIN memmie.blobs p ON p.id = e.parent_blob_id
              JOIN memmie.blobs c ON c.id = e.child_blob_id
              WHERE p.user_id <> c.user_id
              UNION ALL
              SELECT format('blob %s has parent %s without an edge', b.id, b.parent_blob_id)
              FROM memmie.blobs b
              WHERE b.parent_blob_id IS NOT NULL
                AND NOT EXISTS (SELECT FROM memmie.blob_edges e
                                WHERE e.parent_blob_id = b.parent_blob_id AND e.child_blob_id = b.id)) y) x;
    SELECT count(*) INTO total FROM memmie.blob_edges;
    RETURN QUERY SELECT * FROM memmie._check_row('edges', bad, sample, format('%s edges', total));

    -- every delta and event lies in a partition of its own period, not in the DEFAULT one
    SELECT (SELECT count(*) FROM memmie.deltas_default) + (SELECT count(*) FROM memmie.events_default),
           format('%s deltas and %s events in the DEFAULT partitions (run memmie.create_partitions)',
                  (SELECT count(*) FROM memmie.deltas_default), (SELECT count(*) FROM memmie.events_default))
    INTO bad, sample;
    RETURN QUERY SELECT * FROM memmie._check_row('partitions', bad, sample,
                                                 'no delta or event in a DEFAULT partition');
END
$$;


-- =============================================================================================
-- sql/operations.sql (new in 0.2.0)


-- Operations: view refreshes, garbage collection of content, the routine upkeep and its schedule.

-- Refreshes both materialized views without blocking their readers; returns what it refreshed.
-- The refreshes sort and hash every blob and edge: they get maintenance_work_mem (the DBA's
-- budget for maintenance work) as work_mem when that is larger, for their duration only.
CREATE FUNCTION memmie.refresh_views() RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    t0       timestamptz := clock_timestamp();
    t1       timestamptz;
    work_mem text := current_setting('work_mem');
BEGIN
    IF pg_size_bytes(current_setting('maintenance_work_mem')) > pg_size_bytes(work_mem) THEN
        PERFORM set_config('work_mem', current_setting('maintenance_work_mem'), true);
    END IF;
    REFRESH MATERIALIZED VIEW CONCURRENTLY memmie.user_blob_summary;
    t1 := clock_timestamp();
    REFRESH MATERIALIZED VIEW CONCURRENTLY memmie.dag_statistics;
    PERFORM set_config('work_mem', work_mem, true);
    RETURN jsonb_build_object(
        'user_blob_summary', jsonb_build_object('rows', (SELECT count(*) FROM memmie.user_blob_summary),
                                                'ms', round(extract(epoch FROM t1 - t0) * 1000, 1)),
        'dag_statistics', jsonb_build_object('rows', (SELECT count(*) FROM memmie.dag_statistics),
                                             'ms', round(extract(epoch FROM clock_timestamp() - t1) * 1000, 1)));
END
$$;

-- Deletes content no blob version references (reference_count = 0) that nobody touched for
-- longer than grace, and returns it (storage_path: external bytes for the caller to delete).
-- Contents a writer is referencing right now are locked by put_content and skipped; contents
-- this transaction itself has started to reference (counted when it commits) are kept.
CREATE FUNCTION memmie.gc_content(grace interval DEFAULT '1 hour')
RETURNS TABLE (content_hash text, storage_backend text, storage_path text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
    IF gc_content.grace IS NULL OR gc_content.grace < interval '0' THEN
        RAISE EXCEPTION 'grace must be a non-negative interval, got %', gc_content.grace USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    WITH garbage AS MATERIALIZED (
        SELECT c.content_hash FROM memmie.content_storage c
        WHERE c.reference_count = 0 AND c.last_accessed < clock_timestamp() - gc_content.grace
          AND c.content_hash NOT IN (SELECT p.content_hash FROM memmie._pending_references() p WHERE p.n > 0)
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM memmie.content_storage c USING garbage g
    WHERE c.content_hash = g.content_hash AND c.reference_count = 0
    RETURNING c.content_hash::text, c.storage_backend::text, c.storage_path;
END
$$;

-- The routine upkeep (the design document's maintenance_routine, without its defects): one
-- session at a time; a second caller returns at once saying so. Returns what it did.
CREATE FUNCTION memmie.maintenance() RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    report    jsonb := '{}';
    t0        timestamptz := clock_timestamp();
    n         int;
    retention interval := make_interval(secs => memmie._event_retention_seconds());
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('memmie.maintenance', 0)) THEN
        RETURN jsonb_build_object('skipped', 'another session is running memmie.maintenance()');
    END IF;
    report := report || jsonb_build_object('partitions_created', memmie.ensure_partitions());
    ANALYZE memmie.blobs;
    ANALYZE memmie.blob_versions;
    ANALYZE memmie.deltas;
    ANALYZE memmie.events;
    ANALYZE memmie.provider_processing;
    ANALYZE memmie.jobs;
    report := report || jsonb_build_object('analyzed',
        '["blobs", "blob_versions", "deltas", "events", "provider_processing", "jobs"]'::jsonb);
    report := report || jsonb_build_object('views', memmie.refresh_views());
    -- jobs past expires_at are never handed out; a running one is left to its worker
    DELETE FROM memmie.jobs j WHERE j.expires_at < clock_timestamp() AND j.status <> 'running';
    GET DIAGNOSTICS n = ROW_COUNT;
    report := report || jsonb_build_object('expired_jobs_removed', n);
    report := report || jsonb_build_object('event_partitions_dropped',
        memmie.drop_old_partitions('memmie.events', retention), 'event_retention', justify_hours(retention)::text);
    SELECT count(*) INTO n FROM memmie.gc_content();
    report := report || jsonb_build_object('contents_collected', n);
    report := report || jsonb_build_object('usage_increments_folded', memmie.fold_usage());
    -- today's provider metrics so far, and yesterday's final ones (UTC days)
    report := report || jsonb_build_object('provider_metrics_rows',
        memmie.rollup_metrics(memmie._utc_day(now()) - 1) + memmie.rollup_metrics(memmie._utc_day(now())));
    RETURN report || jsonb_build_object('ms', round(extract(epoch FROM clock_timestamp() - t0) * 1000, 1));
END
$$;

-- Registers maintenance() with pg_cron, in this database, under the job name
-- 'memmie-maintenance' (scheduling again changes the schedule); returns pg_cron's job id. pg_cron
-- must be installed in this database; when it lives in another one (cron.database_name), the
-- hint says what to run there. (With memmie in shared_preload_libraries a background worker can
-- run it instead: memmie.maintenance_interval.)
CREATE FUNCTION memmie.schedule_maintenance(cron text DEFAULT '*/15 * * * *') RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    job bigint;
BEGIN
    PERFORM memmie._require(schedule_maintenance.cron, 'cron');
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RAISE EXCEPTION 'pg_cron is not installed in database %', current_database()
            USING ERRCODE = '55000',
                  HINT = format('Either CREATE EXTENSION pg_cron here (with pg_cron in shared_preload_libraries and cron.database_name = %L), '
                                'or run in pg_cron''s database: SELECT cron.schedule_in_database(%L, %L, %L, %L); '
                                'or put memmie in shared_preload_libraries and set memmie.maintenance_database and memmie.maintenance_interval.',
                                current_database(), 'memmie-maintenance', schedule_maintenance.cron,
                                'SELECT memmie.maintenance()', current_database());
    END IF;
    -- through EXECUTE: the cron schema exists only where pg_cron is installed
    EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO job
        USING 'memmie-maintenance', schedule_maintenance.cron, 'SELECT memmie.maintenance()';
    RETURN job;
END
$$;

-- Removes the pg_cron job schedule_maintenance() made; false when there was none.
CREATE FUNCTION memmie.unschedule_maintenance() RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    found boolean;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname = 'pg_cron') THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT EXISTS (SELECT FROM cron.job WHERE jobname = $1)' INTO found USING 'memmie-maintenance';
    IF found THEN
        EXECUTE 'SELECT cron.unschedule($1)' USING 'memmie-maintenance';
    END IF;
    RETURN found;
END
$$;


-- =============================================================================================
-- sql/privileges.sql (new in 0.2.0)


-- ---------------------------------------------------------------------------------------------
-- Privileges: nothing that writes (or reads users' data) is executable by PUBLIC; grant
-- EXECUTE to the application's role (see README). Pure functions stay public.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'memmie'::regnamespace
          AND p.proname NOT IN ('sha256', 'jsonb_patch', 'jsonb_diff', '_jsonb_diff')
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;

-- The design document's tables, indexes and PL/pgSQL triggers for blobs (the baseline of the
-- create_blob benchmark). Only what cannot run is changed: the invalid partial UNIQUE constraint
-- is dropped, and deltas/events are plain tables (the design's partitions cannot be created).
DROP SCHEMA IF EXISTS design CASCADE;
CREATE SCHEMA design;
SET search_path = design;
CREATE TABLE user_contexts (user_id UUID PRIMARY KEY, settings JSONB DEFAULT '{}', quota_limits JSONB DEFAULT '{}',
    storage_used BIGINT DEFAULT 0, blob_count INTEGER DEFAULT 0,
    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE blobs (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(), user_id UUID NOT NULL,
    content_hash VARCHAR(64) NOT NULL, content_size BIGINT NOT NULL, content_type VARCHAR(255) NOT NULL,
    version INTEGER NOT NULL DEFAULT 1, is_latest BOOLEAN DEFAULT TRUE,
    parent_blob_id UUID REFERENCES blobs(id) ON DELETE CASCADE, root_blob_id UUID, depth INTEGER DEFAULT 0,
    created_by VARCHAR(255) NOT NULL DEFAULT 'user', metadata JSONB DEFAULT '{}', tags TEXT[] DEFAULT '{}',
    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    deleted_at TIMESTAMPTZ,
    CONSTRAINT fk_user FOREIGN KEY (user_id) REFERENCES user_contexts(user_id) ON DELETE CASCADE);
CREATE INDEX ON blobs(user_id) WHERE deleted_at IS NULL;
CREATE INDEX ON blobs(parent_blob_id) WHERE deleted_at IS NULL;
CREATE INDEX ON blobs(root_blob_id) WHERE deleted_at IS NULL;
CREATE INDEX ON blobs(content_hash);
CREATE INDEX ON blobs(created_by);
CREATE INDEX ON blobs USING GIN(tags);
CREATE INDEX ON blobs USING GIN(metadata);
CREATE INDEX ON blobs(created_at DESC);
CREATE INDEX ON blobs(updated_at DESC);
-- the design's expression parses as ((title || ' ' || metadata) ->> 'description') and fails; parenthesized here
CREATE INDEX ON blobs USING GIN(to_tsvector('english', (metadata->>'title') || ' ' || (metadata->>'description')));
CREATE INDEX ON blobs(user_id, created_at DESC) WHERE deleted_at IS NULL;
CREATE INDEX ON blobs(parent_blob_id, created_at DESC) WHERE deleted_at IS NULL;
CREATE INDEX ON blobs(created_by, created_at DESC) WHERE deleted_at IS NULL;
CREATE TABLE blob_versions (blob_id UUID NOT NULL, version INTEGER NOT NULL, content_hash VARCHAR(64) NOT NULL,
    content_size BIGINT NOT NULL, metadata JSONB DEFAULT '{}', created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    created_by VARCHAR(255) NOT NULL, PRIMARY KEY (blob_id, version),
    CONSTRAINT fk_blob FOREIGN KEY (blob_id) REFERENCES blobs(id) ON DELETE CASCADE);
CREATE INDEX ON blob_versions(created_at DESC);
CREATE TABLE deltas (id UUID PRIMARY KEY DEFAULT gen_random_uuid(), blob_id UUID NOT NULL, user_id UUID NOT NULL,
    operation VARCHAR(50) NOT NULL, provider_id VARCHAR(255) NOT NULL DEFAULT 'user', patch JSONB NOT NULL,
    from_version INTEGER NOT NULL DEFAULT 0, to_version INTEGER NOT NULL,
    previous_delta_id UUID REFERENCES deltas(id), caused_by_delta_id UUID REFERENCES deltas(id), caused_by_event JSONB,
    status VARCHAR(50) DEFAULT 'pending', error_message TEXT,
    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP, applied_at TIMESTAMPTZ,
    CONSTRAINT fk_blob FOREIGN KEY (blob_id) REFERENCES blobs(id) ON DELETE CASCADE,
    CONSTRAINT fk_user FOREIGN KEY (user_id) REFERENCES user_contexts(user_id) ON DELETE CASCADE);
CREATE INDEX ON deltas(blob_id);
CREATE INDEX ON deltas(user_id);
CREATE INDEX ON deltas(status) WHERE status != 'applied';
CREATE INDEX ON deltas(provider_id);
CREATE INDEX ON deltas(created_at DESC);
CREATE INDEX ON deltas(applied_at DESC) WHERE applied_at IS NOT NULL;
CREATE INDEX ON deltas(caused_by_delta_id) WHERE caused_by_delta_id IS NOT NULL;
CREATE INDEX ON deltas(created_at) WHERE status = 'pending';
CREATE TABLE content_storage (content_hash VARCHAR(64) PRIMARY KEY, content BYTEA,
    storage_backend VARCHAR(50) DEFAULT 'postgres', storage_path TEXT, compression VARCHAR(20),
    original_size BIGINT NOT NULL, compressed_size BIGINT, mime_type VARCHAR(255), reference_count INTEGER DEFAULT 1,
    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP, last_accessed TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP);
CREATE INDEX ON content_storage(last_accessed);
CREATE INDEX ON content_storage(reference_count);
CREATE INDEX ON content_storage(content_hash, original_size);
CREATE TABLE events (id UUID PRIMARY KEY DEFAULT gen_random_uuid(), event_type VARCHAR(100) NOT NULL,
    aggregate_id UUID NOT NULL, aggregate_type VARCHAR(50) NOT NULL, user_id UUID, payload JSONB NOT NULL,
    metadata JSONB DEFAULT '{}', processed BOOLEAN DEFAULT FALSE, processed_at TIMESTAMPTZ,
    created_at TIMESTAMPTZ DEFAULT CURRENT_TIMESTAMP,
    CONSTRAINT fk_user FOREIGN KEY (user_id) REFERENCES user_contexts(user_id) ON DELETE CASCADE);
CREATE INDEX ON events(event_type);
CREATE INDEX ON events(aggregate_id, aggregate_type);
CREATE INDEX ON events(processed, created_at) WHERE processed = FALSE;
CREATE INDEX ON events(created_at DESC);

CREATE FUNCTION update_updated_at() RETURNS TRIGGER AS $$
BEGIN NEW.updated_at = CURRENT_TIMESTAMP; RETURN NEW; END; $$ LANGUAGE plpgsql;
CREATE TRIGGER update_blobs_updated_at BEFORE UPDATE ON blobs FOR EACH ROW EXECUTE FUNCTION update_updated_at();
CREATE FUNCTION update_content_references() RETURNS TRIGGER AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE design.content_storage SET reference_count = reference_count + 1, last_accessed = CURRENT_TIMESTAMP
        WHERE content_hash = NEW.content_hash;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE design.content_storage SET reference_count = reference_count - 1 WHERE content_hash = OLD.content_hash;
    END IF;
    RETURN NEW;
END; $$ LANGUAGE plpgsql;
CREATE TRIGGER manage_content_references AFTER INSERT OR DELETE ON blobs FOR EACH ROW EXECUTE FUNCTION update_content_references();
CREATE FUNCTION emit_blob_event() RETURNS TRIGGER AS $$
BEGIN
    INSERT INTO design.events (event_type, aggregate_id, aggregate_type, user_id, payload) VALUES (
        CASE WHEN TG_OP = 'INSERT' THEN 'blob.created' WHEN TG_OP = 'UPDATE' THEN 'blob.updated'
             WHEN TG_OP = 'DELETE' THEN 'blob.deleted' END,
        COALESCE(NEW.id, OLD.id), 'blob', COALESCE(NEW.user_id, OLD.user_id),
        jsonb_build_object('blob_id', COALESCE(NEW.id, OLD.id), 'operation', TG_OP, 'version', COALESCE(NEW.version, OLD.version)));
    RETURN NEW;
END; $$ LANGUAGE plpgsql;
CREATE TRIGGER blob_events AFTER INSERT OR UPDATE OR DELETE ON blobs FOR EACH ROW EXECUTE FUNCTION emit_blob_event();
INSERT INTO user_contexts (user_id) SELECT ('00000000-0000-0000-0000-' || lpad(i::text, 12, '0'))::uuid FROM generate_series(0, 8) i;
RESET search_path;

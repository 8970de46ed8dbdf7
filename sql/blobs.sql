-- The blob lifecycle: versions, deltas, events; and find_blobs. The argument checks, locks and
-- quotas it relies on (and the order in which changes lock) are in helpers.sql, the triggers
-- that count what it writes in counters.sql, the views over blobs in views.sql.

-- ---------------------------------------------------------------------------------------------
-- Internal

-- The state document of a version (see docs/sql-api.md).
CREATE FUNCTION memmie._make_state(p_hash text, p_size bigint, p_type text, p_metadata jsonb,
                                   p_tags text[], p_deleted boolean) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
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
CREATE FUNCTION memmie._stored_here(p_hash text) RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN EXISTS (SELECT FROM memmie.content_storage c
                   WHERE c.content_hash = p_hash AND c.storage_backend = 'postgres');
END
$$;

CREATE FUNCTION memmie._head_state(b memmie.blobs) RETURNS jsonb
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._make_state(b.content_hash, b.content_size, b.content_type, b.metadata, b.tags,
                              b.deleted_at IS NOT NULL)
$$;

-- Records version b.version of blob b (whose head row is already written): its blob_versions
-- row, its delta and its event. Returns the delta.
CREATE FUNCTION memmie._record_version(b memmie.blobs, p_operation text, p_patch jsonb,
                                       p_provider text, p_caused_by uuid DEFAULT NULL,
                                       p_caused_event jsonb DEFAULT NULL,
                                       p_event_type text DEFAULT 'blob.updated',
                                       p_pending_delta uuid DEFAULT NULL)
RETURNS memmie.deltas
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d        memmie.deltas;
    prev     uuid;
    event_id uuid;
BEGIN
    IF b.version > 1 THEN
        SELECT v.delta_id INTO prev FROM memmie.blob_versions v
        WHERE v.blob_id = b.id AND v.version = b.version - 1 AND v.user_id = b.user_id;
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
        WHERE x.id = p_pending_delta AND x.blob_id = b.id AND x.user_id = b.user_id
        RETURNING * INTO d;
    END IF;
    INSERT INTO memmie.blob_versions (blob_id, version, user_id, content_hash, content_size,
                                      content_type, metadata, tags, deleted, delta_id, created_by)
    VALUES (b.id, b.version, b.user_id, b.content_hash, b.content_size, b.content_type,
            b.metadata, b.tags, b.deleted_at IS NOT NULL, d.id, p_provider);
    -- the day's usage (sql/metrics.sql), with the user's storage after this version
    INSERT INTO memmie.usage_increments (user_id, blobs_created, deltas_applied, storage_bytes_used)
    SELECT b.user_id, (p_event_type = 'blob.created')::int, 1, u.storage_used
    FROM memmie._user_counts(b.user_id) u WHERE u.storage_used IS NOT NULL;
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
CREATE FUNCTION memmie._write_state(b memmie.blobs, s jsonb, p_operation text, p_patch jsonb,
                                    p_provider text, p_caused_by uuid DEFAULT NULL,
                                    p_caused_event jsonb DEFAULT NULL,
                                    p_pending_delta uuid DEFAULT NULL)
RETURNS memmie.deltas
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    nb         memmie.blobs;
    event_type text := 'blob.updated';
    d          memmie.deltas;
    interval_  int;
    -- (computed here: Citus refuses a non-immutable function in a CASE in an UPDATE's SET)
    deleted    timestamptz := CASE WHEN s ? 'deleted' THEN coalesce(b.deleted_at, CURRENT_TIMESTAMP) END;
BEGIN
    UPDATE memmie.blobs
    SET content_hash = s ->> 'content_hash',
        content_size = (s ->> 'content_size')::bigint,
        content_type = s ->> 'content_type',
        metadata     = s -> 'metadata',
        tags         = ARRAY(SELECT jsonb_array_elements_text(s -> 'tags')),
        version      = b.version + 1,
        deleted_at   = deleted
    WHERE id = b.id AND user_id = b.user_id
    RETURNING * INTO nb;
    IF nb.deleted_at IS NOT NULL AND b.deleted_at IS NULL THEN
        event_type := 'blob.deleted';
    END IF;
    d := memmie._record_version(nb, p_operation, p_patch, p_provider, p_caused_by,
                                p_caused_event, event_type, p_pending_delta);
    -- every snapshot_interval-th version keeps its whole state: replay starts there (blob_state)
    interval_ := memmie._snapshot_interval();
    IF interval_ > 0 AND nb.version % interval_ = 0 THEN
        INSERT INTO memmie.blob_snapshots (blob_id, version, user_id, state) VALUES (nb.id, nb.version, nb.user_id, s);
    END IF;
    RETURN d;
END
$$;

-- Replaces the state's content: stores the bytes, sets content_hash / content_size (and
-- content, for JSON types).
CREATE FUNCTION memmie._with_content(s jsonb, p_user uuid, p_content bytea, p_type text)
RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    h text;
BEGIN
    PERFORM memmie._check_content_size(length(p_content));
    PERFORM memmie._check_content_quota(p_user, length(p_content));
    h := memmie.put_content(p_content, p_type);
    s := s || jsonb_build_object('content_hash', h, 'content_size', length(p_content),
                                 'content_type', p_type);
    IF memmie._is_json_type(p_type) THEN
        s := s || jsonb_build_object('content', memmie._json_from_bytes(p_content)::jsonb);
    ELSE
        s := s - 'content';
    END IF;
    RETURN s;
END
$$;

CREATE FUNCTION memmie._operation(p_provider text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE WHEN p_provider = 'user' THEN 'update' ELSE 'transform' END
$$;

-- ---------------------------------------------------------------------------------------------
-- Public API

-- Validates and writes a new blob (version 1) with an edge from `parent` when given. Its content
-- is p_content, or, with p_external, kept outside PostgreSQL (see _with_external).
CREATE FUNCTION memmie._insert_blob(p_user uuid, p_content bytea, p_type text, p_meta jsonb,
                                    p_tags text[], parent memmie.blobs, p_by text,
                                    p_operation text, p_transform text,
                                    p_caused_by uuid DEFAULT NULL, p_caused_event jsonb DEFAULT NULL,
                                    p_external jsonb DEFAULT NULL)
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    s jsonb;
    b memmie.blobs;
BEGIN
    IF p_external IS NULL THEN
        PERFORM memmie._require(p_content, 'content');
    END IF;
    PERFORM memmie._require(p_type, 'content_type');
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
    PERFORM memmie._check_depth(s, 'blob state (metadata or JSON content)');
    INSERT INTO memmie.blobs (user_id, content_hash, content_size, content_type, version,
                              parent_blob_id, root_blob_id, depth, created_by, metadata, tags)
    VALUES (p_user, s ->> 'content_hash', (s ->> 'content_size')::bigint, p_type, 1,
            parent.id, coalesce(parent.root_blob_id, parent.id), coalesce(parent.depth + 1, 0),
            p_by, p_meta, p_tags)
    RETURNING * INTO b;
    IF parent.id IS NOT NULL THEN
        INSERT INTO memmie.blob_edges (parent_blob_id, child_blob_id, provider_id, transform_type,
                                       version_map, user_id)
        VALUES (parent.id, b.id, p_by, p_transform,
                jsonb_build_array(jsonb_build_object('parent_version', parent.version,
                                                     'child_version', 1)), p_user);
    END IF;
    PERFORM memmie._record_version(b, p_operation,
        jsonb_build_array(jsonb_build_object('op', 'replace', 'path', '', 'value', s)),
        p_by, p_caused_by, p_caused_event, 'blob.created');
    PERFORM memmie._check_quotas(p_user);
    RETURN b;
END
$$;

-- A live blob of p_user, share-locked (it must not be deleted under a new child): P0002 otherwise.
CREATE FUNCTION memmie._live_parent(p_parent uuid, p_user uuid) RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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

CREATE FUNCTION memmie.create_blob(user_id uuid, content bytea, content_type text,
                                   metadata jsonb DEFAULT '{}', tags text[] DEFAULT '{}',
                                   parent_blob_id uuid DEFAULT NULL, created_by text DEFAULT 'user')
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_user uuid := memmie._acting_user(create_blob.user_id);
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

CREATE FUNCTION memmie.apply_delta(blob_id uuid, patch jsonb, expected_version int DEFAULT NULL,
                                   provider_id text DEFAULT 'user',
                                   caused_by_delta_id uuid DEFAULT NULL,
                                   caused_by_event jsonb DEFAULT NULL)
RETURNS memmie.deltas
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_patch  jsonb := memmie._require(apply_delta.patch, 'patch');
    p_by     text  := memmie._check_provider(apply_delta.provider_id);
    b        memmie.blobs;
BEGIN
    b := memmie._lock_blob(apply_delta.blob_id, memmie._scope());
    PERFORM memmie._check_live(b);
    PERFORM memmie._check_expected(b, apply_delta.expected_version);
    PERFORM memmie._check_delta_exists(apply_delta.caused_by_delta_id, memmie._scope());
    RETURN memmie._apply_patch(b, p_patch, p_by, apply_delta.caused_by_delta_id,
                               apply_delta.caused_by_event);
END
$$;

-- Applies a JSON Patch to the state of blob b (locked, live) as its next version.
CREATE FUNCTION memmie._apply_patch(b memmie.blobs, p_patch jsonb, p_by text, p_caused_by uuid,
                                    p_caused_event jsonb, p_pending_delta uuid DEFAULT NULL)
RETURNS memmie.deltas
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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


CREATE FUNCTION memmie.update_content(blob_id uuid, content bytea, content_type text DEFAULT NULL,
                                      expected_version int DEFAULT NULL,
                                      provider_id text DEFAULT 'user')
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_by  text := memmie._check_provider(update_content.provider_id);
    b     memmie.blobs;
BEGIN
    PERFORM memmie._require(update_content.content, 'content');
    IF update_content.content_type IS NOT NULL THEN
        PERFORM memmie._check_mime(update_content.content_type);
    END IF;
    b := memmie._lock_blob(update_content.blob_id, memmie._scope());
    PERFORM memmie._check_live(b);
    PERFORM memmie._check_expected(b, update_content.expected_version);
    RETURN memmie._replace_content(b, update_content.content, update_content.content_type, p_by);
END
$$;

-- Writes new content (and type, metadata, tags, when given) as the next version of blob b
-- (locked, live): p_content, or, with p_external, content kept outside PostgreSQL.
CREATE FUNCTION memmie._replace_content(b memmie.blobs, p_content bytea, p_type text, p_by text,
                                        p_caused_by uuid DEFAULT NULL,
                                        p_caused_event jsonb DEFAULT NULL,
                                        p_meta jsonb DEFAULT NULL, p_tags text[] DEFAULT NULL,
                                        p_external jsonb DEFAULT NULL)
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
    PERFORM memmie._check_depth(new_s, 'blob state (metadata or JSON content)');
    PERFORM memmie._write_state(b, new_s, memmie._operation(p_by),
                                memmie.jsonb_diff(old_s, new_s), p_by, p_caused_by, p_caused_event);
    PERFORM memmie._check_quotas(b.user_id);
    SELECT * INTO b FROM memmie.blobs x WHERE x.id = b.id AND x.user_id = b.user_id;
    RETURN b;
END
$$;

CREATE FUNCTION memmie.revert_blob(blob_id uuid, to_version int, provider_id text DEFAULT 'user',
                                   expected_version int DEFAULT NULL)
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_by  text := memmie._check_provider(revert_blob.provider_id);
    b     memmie.blobs;
    v     memmie.blob_versions;
    old_s jsonb;
    new_s jsonb;
BEGIN
    PERFORM memmie._require(revert_blob.to_version, 'to_version');
    b := memmie._lock_blob(revert_blob.blob_id, memmie._scope());
    PERFORM memmie._check_expected(b, revert_blob.expected_version);
    SELECT * INTO v FROM memmie.blob_versions x
    WHERE x.blob_id = b.id AND x.version = revert_blob.to_version AND x.user_id = b.user_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % has no version %', b.id, revert_blob.to_version USING ERRCODE = 'P0002';
    END IF;
    old_s := memmie._head_state(b);
    new_s := memmie._make_state(v.content_hash, v.content_size, v.content_type, v.metadata, v.tags,
                                v.deleted);
    PERFORM memmie._write_state(b, new_s, 'revert', memmie.jsonb_diff(old_s, new_s), p_by);
    PERFORM memmie._check_quotas(b.user_id);
    SELECT * INTO b FROM memmie.blobs x WHERE x.id = b.id AND x.user_id = b.user_id;
    RETURN b;
END
$$;

CREATE FUNCTION memmie.delete_blob(blob_id uuid, hard boolean DEFAULT false,
                                   expected_version int DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    b        memmie.blobs;
    event_id uuid;
    child    uuid;
BEGIN
    PERFORM memmie._require(delete_blob.hard, 'hard');
    b := memmie._lock_blob(delete_blob.blob_id, memmie._scope());
    PERFORM memmie._check_expected(b, delete_blob.expected_version);
    IF delete_blob.hard THEN
        INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, user_id, payload, created_at)
        VALUES ('blob.deleted', b.id, 'blob', b.user_id,
                jsonb_build_object('blob_id', b.id, 'version', b.version, 'delta_id', NULL,
                                   'operation', 'delete', 'content_type', b.content_type,
                                   'created_by', b.created_by, 'hard', true), clock_timestamp())
        RETURNING id INTO event_id;
        PERFORM pg_notify('memmie_events', event_id::text);
        IF memmie._distributed() THEN
            -- on the cluster processings keep output_blob_id without its foreign key (Citus
            -- refuses ON DELETE SET NULL with the distribution column): cleared here
            UPDATE memmie.provider_processing x SET output_blob_id = NULL
            WHERE x.user_id = b.user_id AND x.output_blob_id = b.id;
        END IF;
        DELETE FROM memmie.blobs x WHERE x.id = b.id AND x.user_id = b.user_id;
        INSERT INTO memmie.usage_increments (user_id, storage_bytes_used)
        SELECT b.user_id, u.storage_used FROM memmie._user_counts(b.user_id) u WHERE u.storage_used IS NOT NULL;
    ELSIF b.deleted_at IS NULL THEN
        PERFORM memmie._write_state(b, memmie._head_state(b) || '{"deleted": true}', 'delete',
                                    '[{"op": "add", "path": "/deleted", "value": true}]',
                                    'user');
        -- Blobs derived from it stay live and listed, unless the provider that derived one has
        -- processing_rules.delete_with_parent: those are soft-deleted with it (and theirs in
        -- turn). undelete_blob brings back only the blob it is given.
        -- (the edges' children as a list, then the live ones among the user's blobs: one shard
        -- on a Citus cluster, where blobs cannot be joined with the edges on a blob id)
        FOR child IN
            SELECT c.id
            FROM memmie.blobs c
            WHERE c.user_id = b.user_id AND c.deleted_at IS NULL
              AND c.id = ANY (ARRAY(SELECT e.child_blob_id
                                    FROM memmie.blob_edges e
                                    JOIN memmie.providers p ON p.id = e.provider_id
                                    WHERE e.parent_blob_id = b.id AND e.user_id = b.user_id
                                      AND (p.processing_rules ->> 'delete_with_parent')::boolean IS TRUE))
            ORDER BY c.id
        LOOP
            PERFORM memmie.delete_blob(child);
        END LOOP;
    END IF;
END
$$;

-- Brings a soft-deleted blob back: a new version whose state is the deleted one's without
-- "deleted" (the state before the soft delete), recorded as a revert (event blob.updated, as a
-- revert_blob to a live version); counted and quota-checked as every writer is.
CREATE FUNCTION memmie.undelete_blob(blob_id uuid, expected_version int DEFAULT NULL)
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    b     memmie.blobs := memmie._lock_blob(undelete_blob.blob_id, memmie._scope());
    old_s jsonb;
BEGIN
    PERFORM memmie._check_expected(b, undelete_blob.expected_version);
    IF b.deleted_at IS NULL THEN
        RAISE EXCEPTION 'blob % is not deleted', b.id USING ERRCODE = '22023';
    END IF;
    old_s := memmie._head_state(b);
    PERFORM memmie._write_state(b, old_s - 'deleted', 'revert',
                                '[{"op": "remove", "path": "/deleted"}]', 'user');
    PERFORM memmie._check_quotas(b.user_id);
    SELECT * INTO b FROM memmie.blobs x WHERE x.id = b.id AND x.user_id = b.user_id;
    RETURN b;
END
$$;

-- The state of version v of blob b (P0002 when it has no such version), replayed from the
-- nearest kept state at or below it (blob_snapshots; from null when there is none): at most
-- snapshot_interval - 1 deltas, however long the history. blob_state is it for a visible blob.
CREATE FUNCTION memmie._state_of(b memmie.blobs, v int) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    snap memmie.blob_snapshots;
    s    jsonb;
BEGIN
    -- (versions before a squash_history are gone)
    IF NOT EXISTS (SELECT 1 FROM memmie.blob_versions x
                   WHERE x.blob_id = b.id AND x.version = v AND x.user_id = b.user_id) THEN
        RAISE EXCEPTION 'blob % has no version %', b.id, v USING ERRCODE = 'P0002';
    END IF;
    SELECT * INTO snap FROM memmie.blob_snapshots x
    WHERE x.blob_id = b.id AND x.user_id = b.user_id AND x.version <= v ORDER BY x.version DESC LIMIT 1;
    IF snap.state IS NULL THEN
        SELECT memmie._replay(array_agg(d.patch::text ORDER BY d.to_version))::jsonb INTO s
        FROM memmie.deltas d
        WHERE d.blob_id = b.id AND d.user_id = b.user_id AND d.status = 'applied' AND d.to_version <= v;
    ELSE
        SELECT memmie._replay_from(snap.state, coalesce(array_agg(d.patch::text ORDER BY d.to_version), '{}'))
        INTO s
        FROM memmie.deltas d
        WHERE d.blob_id = b.id AND d.user_id = b.user_id AND d.status = 'applied' AND d.to_version > snap.version
          AND d.to_version <= v;
    END IF;
    RETURN s;
END
$$;

CREATE FUNCTION memmie.blob_state(blob_id uuid, version int DEFAULT NULL) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    b memmie.blobs := memmie._visible_blob(blob_state.blob_id);
BEGIN
    RETURN memmie._state_of(b, coalesce(blob_state.version, b.version));
END
$$;

CREATE FUNCTION memmie.blob_content(blob_id uuid, version int DEFAULT NULL) RETURNS bytea
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    b memmie.blobs := memmie._visible_blob(blob_content.blob_id);
    h text;
BEGIN
    SELECT v.content_hash INTO h
    FROM memmie.blob_versions v
    WHERE v.blob_id = b.id AND v.user_id = b.user_id
      AND v.version = coalesce(blob_content.version, b.version);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % has no version %', blob_content.blob_id,
            coalesce(blob_content.version::text, '(latest)') USING ERRCODE = 'P0002';
    END IF;
    RETURN memmie.get_content(h);
END
$$;

CREATE FUNCTION memmie.blob_history(blob_id uuid) RETURNS SETOF memmie.deltas
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    b memmie.blobs := memmie._visible_blob(blob_history.blob_id);
BEGIN
    RETURN QUERY SELECT * FROM memmie.deltas d WHERE d.blob_id = b.id AND d.user_id = b.user_id
                 ORDER BY d.to_version, d.created_at;
END
$$;

-- Compacts a blob's history: the versions older than before_version are removed (their
-- blob_versions rows, and with them their content references and snapshots; their deltas), and
-- the state of before_version, kept whole in blob_snapshots, is the base replay starts from.
-- Later versions keep their states and numbers. Returns how many versions were removed (0 when
-- none is older than before_version: a squash already done). Event blob.squashed.
-- (the work, for the blobs of user p_scope, or of any user when it is NULL: maintenance())
CREATE FUNCTION memmie._squash_history(p_blob uuid, p_before int, p_expected int, p_scope uuid)
RETURNS int
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b        memmie.blobs;
    base     int;
    n        int;
    event_id uuid;
BEGIN
    PERFORM memmie._require(p_before, 'before_version');
    b := memmie._lock_blob(p_blob, p_scope);
    PERFORM memmie._check_live(b);
    PERFORM memmie._check_expected(b, p_expected);
    IF p_before < 1 OR p_before > b.version THEN
        RAISE EXCEPTION 'before_version must be between 1 and the version of blob % (%), got %',
            b.id, b.version, p_before USING ERRCODE = '22023';
    END IF;
    SELECT min(x.version) INTO base FROM memmie.blob_versions x WHERE x.blob_id = b.id AND x.user_id = b.user_id;
    IF p_before <= base THEN
        RETURN 0;
    END IF;
    -- the new base keeps its state whole (it may be a snapshot already)
    INSERT INTO memmie.blob_snapshots (blob_id, version, user_id, state)
    VALUES (b.id, p_before, b.user_id, memmie._state_of(b, p_before))
    ON CONFLICT ON CONSTRAINT blob_snapshots_pkey DO NOTHING;
    DELETE FROM memmie.blob_versions x WHERE x.blob_id = b.id AND x.user_id = b.user_id AND x.version < p_before;
    GET DIAGNOSTICS n = ROW_COUNT;
    DELETE FROM memmie.deltas d WHERE d.blob_id = b.id AND d.user_id = b.user_id AND d.to_version < p_before;
    INSERT INTO memmie.events (event_type, aggregate_id, aggregate_type, user_id, payload, created_at)
    VALUES ('blob.squashed', b.id, 'blob', b.user_id,
            jsonb_build_object('blob_id', b.id, 'version', b.version, 'delta_id', NULL,
                               'operation', 'squash', 'content_type', b.content_type,
                               'created_by', 'user', 'before_version', p_before,
                               'versions_removed', n), clock_timestamp())
    RETURNING id INTO event_id;
    PERFORM pg_notify('memmie_events', event_id::text);
    -- the day's usage, with the user's storage after the squash (as a hard delete records it)
    INSERT INTO memmie.usage_increments (user_id, storage_bytes_used)
    SELECT b.user_id, u.storage_used FROM memmie.user_contexts u WHERE u.user_id = b.user_id;
    RETURN n;
END
$$;

CREATE FUNCTION memmie.squash_history(blob_id uuid, before_version int, expected_version int DEFAULT NULL)
RETURNS int
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._squash_history(blob_id, before_version, expected_version, memmie._scope())
$$;

-- The query find_blobs runs for a set of filters: parameters $1 user_id, $2 tags, $3 created_by,
-- $4 parent_blob_id, $5 metadata_contains, $6 text_query, $7/$8 the sort value and id the page
-- starts after, $9 max_rows, $10 the content type (a lowercase type/subtype, or a type alone
-- for content_kind 'type'). Only the given filters appear, so each can use its index.
CREATE FUNCTION memmie._find_blobs_sql(has_tags boolean, has_created_by boolean, has_parent boolean,
                                       has_metadata boolean, has_text boolean, include_deleted boolean,
                                       has_page_after boolean, content_kind text DEFAULT NULL,
                                       roots_only boolean DEFAULT false,
                                       order_by text DEFAULT 'created_at') RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT 'SELECT b.* FROM memmie.blobs b WHERE b.user_id = $1'
        || CASE WHEN include_deleted THEN '' ELSE ' AND b.deleted_at IS NULL' END
        || CASE WHEN has_tags THEN ' AND b.tags @> $2' ELSE '' END
        || CASE WHEN has_created_by THEN ' AND b.created_by = $3' ELSE '' END
        || CASE WHEN has_parent THEN ' AND b.parent_blob_id = $4' ELSE '' END
        || CASE WHEN has_metadata THEN ' AND b.metadata @> $5' ELSE '' END
        || CASE WHEN has_text
                THEN ' AND to_tsvector(''english''::regconfig, coalesce(b.metadata ->> ''title'', '''')'
                     || ' || '' '' || coalesce(b.metadata ->> ''description'', ''''))'
                     || ' @@ websearch_to_tsquery(''english''::regconfig, $6)'
                ELSE '' END
        || CASE content_kind
                WHEN 'type' THEN ' AND lower(split_part(b.content_type, ''/'', 1)) = $10'
                WHEN 'exact' THEN ' AND lower(btrim(split_part(b.content_type, '';'', 1))) = $10'
                ELSE '' END
        || CASE WHEN roots_only
                THEN ' AND NOT EXISTS (SELECT FROM memmie.blob_edges e WHERE e.child_blob_id = b.id AND e.user_id = b.user_id)'
                ELSE '' END
        || CASE WHEN has_page_after THEN format(' AND (b.%I, b.id) < ($7, $8)', order_by) ELSE '' END
        || format(' ORDER BY b.%I DESC, b.id DESC LIMIT $9', order_by)
$$;

-- One user's blobs, newest first (by created_at or updated_at), with keyset pagination.
CREATE FUNCTION memmie.find_blobs(user_id uuid, tags text[] DEFAULT NULL, created_by text DEFAULT NULL,
                                  parent_blob_id uuid DEFAULT NULL, metadata_contains jsonb DEFAULT NULL,
                                  text_query text DEFAULT NULL, include_deleted boolean DEFAULT false,
                                  page_after uuid DEFAULT NULL, max_rows int DEFAULT 50,
                                  content_type text DEFAULT NULL, roots_only boolean DEFAULT false,
                                  order_by text DEFAULT 'created_at',
                                  page_after_at timestamptz DEFAULT NULL)
RETURNS SETOF memmie.blobs
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    after_at timestamptz := find_blobs.page_after_at;
    kind     text;
    pattern  text;
BEGIN
    PERFORM memmie._acting_user(find_blobs.user_id);
    IF find_blobs.max_rows IS NULL OR find_blobs.max_rows < 1 OR find_blobs.max_rows > 10000 THEN
        RAISE EXCEPTION 'max_rows must be between 1 and 10000, got %', find_blobs.max_rows
            USING ERRCODE = '22023';
    END IF;
    IF find_blobs.metadata_contains IS NOT NULL AND jsonb_typeof(find_blobs.metadata_contains) <> 'object' THEN
        RAISE EXCEPTION 'metadata_contains must be a JSON object, got %', jsonb_typeof(find_blobs.metadata_contains)
            USING ERRCODE = '22023';
    END IF;
    IF array_position(find_blobs.tags, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'tags must not contain NULL' USING ERRCODE = '22023';
    END IF;
    IF find_blobs.order_by IS NULL OR find_blobs.order_by NOT IN ('created_at', 'updated_at') THEN
        RAISE EXCEPTION 'invalid order_by "%": expected created_at or updated_at', find_blobs.order_by
            USING ERRCODE = '22023';
    END IF;
    PERFORM memmie._require(find_blobs.roots_only, 'roots_only');
    IF find_blobs.content_type IS NOT NULL THEN
        -- type/subtype (parameters ignored), type/* or */*, as in a provider's supported_types
        PERFORM memmie._check_mime_pattern(find_blobs.content_type);
        IF find_blobs.content_type LIKE '%/*' THEN
            kind := CASE WHEN find_blobs.content_type <> '*/*' THEN 'type' END;
            pattern := lower(left(find_blobs.content_type, -2));
        ELSE
            kind := 'exact';
            pattern := lower(btrim(split_part(find_blobs.content_type, ';', 1)));
        END IF;
    END IF;
    IF find_blobs.page_after_at IS NOT NULL AND find_blobs.page_after IS NULL THEN
        RAISE EXCEPTION 'page_after_at needs page_after (the id of the row whose % it is)', find_blobs.order_by
            USING ERRCODE = '22023';
    END IF;
    IF find_blobs.page_after IS NOT NULL AND after_at IS NULL THEN
        -- the cursor's sort value read from its row, which must still exist (with page_after_at
        -- the row is not needed)
        EXECUTE format('SELECT x.%I FROM memmie.blobs x WHERE x.id = $1 AND x.user_id = $2', find_blobs.order_by)
            INTO after_at USING find_blobs.page_after, find_blobs.user_id;
        IF after_at IS NULL THEN
            RAISE EXCEPTION 'page_after blob % does not exist', find_blobs.page_after USING ERRCODE = 'P0002',
                HINT = format('pass page_after_at (the %s of the last row) too: then the cursor does not need the row',
                              find_blobs.order_by);
        END IF;
    END IF;
    RETURN QUERY EXECUTE memmie._find_blobs_sql(
            find_blobs.tags IS NOT NULL, find_blobs.created_by IS NOT NULL,
            find_blobs.parent_blob_id IS NOT NULL, find_blobs.metadata_contains IS NOT NULL,
            find_blobs.text_query IS NOT NULL, coalesce(find_blobs.include_deleted, false),
            find_blobs.page_after IS NOT NULL, kind, find_blobs.roots_only, find_blobs.order_by)
        USING find_blobs.user_id, find_blobs.tags, find_blobs.created_by::varchar, find_blobs.parent_blob_id,
              find_blobs.metadata_contains, find_blobs.text_query, after_at, find_blobs.page_after,
              find_blobs.max_rows, pattern;
END
$$;

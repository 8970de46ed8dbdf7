-- The provenance DAG: derived blobs, edges, lineage. Traversal itself is native (src/dag.rs:
-- descendants, ancestors, _would_cycle).
--
-- Edges never cross users, so a cycle can only be closed inside one user's blobs; every edge
-- change takes the user's lock first (_lock_user_dag), so two sessions adding A->B and B->A
-- at once are checked one after the other.

-- The user's row lock for DAG changes. It is an UPDATE, not only a row lock, so that under
-- REPEATABLE READ the second of two concurrent edge writers fails with a serialization error
-- instead of checking for cycles in a snapshot that misses the first one's edge. Once per
-- transaction is enough (a row this transaction wrote already does that): updating it at every
-- edge made a chain of row versions that every later lookup of the user stepped over, so that
-- 2,000 derive_blob calls in one transaction slowed down call by call.
CREATE FUNCTION memmie._lock_user_dag(p_user uuid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM memmie._lock_user(p_user);
    UPDATE memmie.user_contexts SET updated_at = CURRENT_TIMESTAMP
    WHERE user_id = p_user AND xmin <> pg_current_xact_id()::xid;
END
$$;

-- The delta that made the current version of blob b. (PL/pgSQL for its cached plan: see
-- memmie._stored_here.)
CREATE FUNCTION memmie._head_delta(b memmie.blobs) RETURNS uuid
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (SELECT v.delta_id FROM memmie.blob_versions v WHERE v.blob_id = b.id AND v.version = b.version);
END
$$;

-- A new blob derived from one or more parents (all of one user, of user p_scope unless it is
-- NULL), with one edge per parent.
CREATE FUNCTION memmie._derive(p_parents uuid[], p_by text, p_transform text, p_content bytea,
                               p_type text, p_meta jsonb, p_tags text[], p_caused_by uuid,
                               p_caused_event jsonb, p_scope uuid)
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
    SELECT x.user_id INTO p_user FROM memmie.blobs x
    WHERE x.id = p_parents[1] AND (p_scope IS NULL OR x.user_id = p_scope);
    IF NOT FOUND THEN
        RAISE EXCEPTION 'parent blob % does not exist', p_parents[1] USING ERRCODE = 'P0002';
    END IF;
    PERFORM memmie._lock_user_dag(p_user);
    first := memmie._live_parent(p_parents[1], p_user);
    FOR i IN 2 .. cardinality(p_parents) LOOP
        PERFORM memmie._live_parent(p_parents[i], p_user);
    END LOOP;
    PERFORM memmie._check_delta_exists(p_caused_by, p_user);
    b := memmie._insert_blob(p_user, p_content, p_type, coalesce(p_meta, '{}'), coalesce(p_tags, '{}'),
                             first, p_by, 'transform', p_transform,
                             coalesce(p_caused_by, memmie._head_delta(first)), p_caused_event);
    FOR i IN 2 .. cardinality(p_parents) LOOP
        SELECT * INTO parent FROM memmie.blobs x WHERE x.id = p_parents[i] AND x.user_id = p_user;
        INSERT INTO memmie.blob_edges (parent_blob_id, child_blob_id, provider_id, transform_type,
                                       version_map, user_id)
        VALUES (parent.id, b.id, p_by, p_transform,
                jsonb_build_array(jsonb_build_object('parent_version', parent.version,
                                                     'child_version', 1)), p_user);
    END LOOP;
    RETURN b;
END
$$;

CREATE FUNCTION memmie.derive_blob(parent_blob_ids uuid[], provider_id text, transform_type text,
                                   content bytea, content_type text, metadata jsonb DEFAULT '{}',
                                   tags text[] DEFAULT '{}', caused_by_delta_id uuid DEFAULT NULL)
RETURNS memmie.blobs
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._derive(parent_blob_ids, provider_id, transform_type, content, content_type,
                          metadata, tags, caused_by_delta_id, NULL, memmie._scope())
$$;

CREATE FUNCTION memmie.add_edge(parent_blob_id uuid, child_blob_id uuid, provider_id text,
                                transform_type text, metadata jsonb DEFAULT '{}')
RETURNS memmie.blob_edges
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
    parent := memmie._visible_blob(add_edge.parent_blob_id);
    PERFORM memmie._lock_user_dag(parent.user_id);
    parent := memmie._live_parent(add_edge.parent_blob_id, parent.user_id);
    -- a blob of another user is not visible here: the same answer as a missing one
    SELECT * INTO child FROM memmie.blobs x
    WHERE x.id = add_edge.child_blob_id AND x.user_id = parent.user_id AND x.deleted_at IS NULL
    FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % does not exist', add_edge.child_blob_id USING ERRCODE = 'P0002';
    END IF;
    IF memmie._would_cycle(parent.id, child.id, parent.user_id) THEN
        RAISE EXCEPTION 'edge % -> % would create a cycle', parent.id, child.id USING ERRCODE = 'MM003',
            DETAIL = format('blob %s already derives from blob %s', parent.id, child.id);
    END IF;
    INSERT INTO memmie.blob_edges (parent_blob_id, child_blob_id, provider_id, transform_type,
                                   metadata, version_map, user_id)
    VALUES (parent.id, child.id, add_edge.provider_id, add_edge.transform_type, add_edge.metadata,
            jsonb_build_array(jsonb_build_object('parent_version', parent.version,
                                                 'child_version', child.version)), parent.user_id)
    ON CONFLICT ON CONSTRAINT unique_edge DO NOTHING
    RETURNING * INTO e;
    IF e.id IS NULL THEN
        -- the same edge exists already: adding it again is a no-op
        SELECT * INTO e FROM memmie.blob_edges x
        WHERE x.parent_blob_id = parent.id AND x.child_blob_id = child.id
          AND x.provider_id = add_edge.provider_id AND x.user_id = parent.user_id;
    END IF;
    RETURN e;
END
$$;

-- The blob, its ancestors (negative depth) and descendants (positive depth), and every edge
-- between them. PL/pgSQL, and the blobs and edges read by the user's id: on a Citus cluster a
-- LANGUAGE sql function whose parameter filters a distributed table cannot be planned, and a
-- user's DAG lies on that user's shards (one router query each).
CREATE FUNCTION memmie.lineage(blob_id uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    ids    uuid[];
    depths int[];
    u      uuid;
BEGIN
    -- ancestors() and descendants() say what is wrong with blob_id (NULL, missing, not visible)
    SELECT array_agg(n.id), array_agg(n.depth) INTO ids, depths
    FROM (SELECT a.blob_id AS id, -a.depth AS depth FROM memmie.ancestors(lineage.blob_id) a
          UNION ALL
          SELECT d.blob_id, d.depth FROM memmie.descendants(lineage.blob_id) d) n;
    u := (memmie._visible_blob(lineage.blob_id)).user_id;
    ids := lineage.blob_id || coalesce(ids, '{}');
    depths := 0 || coalesce(depths, '{}');
    RETURN jsonb_build_object(
        'nodes', (SELECT jsonb_agg(jsonb_build_object(
                             'blob_id', b.id, 'depth', n.depth, 'version', b.version,
                             'content_type', b.content_type, 'created_by', b.created_by,
                             'deleted', b.deleted_at IS NOT NULL)
                         ORDER BY n.depth, b.id)
                  FROM unnest(ids, depths) n(id, depth)
                  JOIN memmie.blobs b ON b.id = n.id AND b.user_id = u),
        'edges', coalesce((SELECT jsonb_agg(jsonb_build_object(
                                     'parent_blob_id', e.parent_blob_id,
                                     'child_blob_id', e.child_blob_id,
                                     'provider_id', e.provider_id,
                                     'transform_type', e.transform_type,
                                     'version_map', e.version_map)
                                 ORDER BY e.parent_blob_id, e.child_blob_id, e.provider_id)
                           FROM memmie.blob_edges e
                           WHERE e.user_id = u
                             AND e.parent_blob_id = ANY (ids)
                             AND e.child_blob_id = ANY (ids)), '[]'));
END
$$;

-- Size and shape of the DAG below root_blob_id (the root included, at level 0).
CREATE FUNCTION memmie.dag_stats(root_blob_id uuid)
RETURNS TABLE (total_nodes bigint, max_depth int, unique_levels int)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT count(*) + 1, coalesce(max(d.depth), 0), count(DISTINCT d.depth)::int + 1
    FROM memmie.descendants(root_blob_id) d
$$;

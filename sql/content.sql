-- Content-addressed storage and JSON Patch: the SQL face of src/content.rs and src/patch.rs.

COMMENT ON FUNCTION memmie.jsonb_patch(jsonb, jsonb) IS
    'Applies an RFC 6902 JSON Patch. 22023 for a malformed patch or pointer, MM007 when a test operation fails.';

CREATE FUNCTION memmie.jsonb_diff(source jsonb, target jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT memmie._jsonb_diff(source::pg_catalog.text, target::pg_catalog.text)::pg_catalog.jsonb $$;
COMMENT ON FUNCTION memmie.jsonb_diff(jsonb, jsonb) IS
    'An RFC 6902 JSON Patch p with jsonb_patch(source, p) = target.';

-- A writer about to reference content that is already stored (put_content, _with_external),
-- which holds its row share-locked (FOR KEY SHARE) until it commits: on a Citus cluster, also
-- refreshes its last_accessed (when older than a minute), so that gc_content, which there does
-- not see the reference until the writer has committed on every node (the reference is in
-- user_content_refs, on the user's node, and the content row on its hash's node), finds the
-- content touched within its grace period and keeps it. On one node the reference is counted
-- with the content row at commit (src/refcount.rs): nothing to do. p_seen: the row's
-- last_accessed as the caller read it (the catalog of Citus is read only when it is old).
CREATE FUNCTION memmie._touch_content(p_hash text, p_seen timestamptz) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    stale timestamptz := pg_catalog.now() OPERATOR(pg_catalog.-) interval '1 minute';
BEGIN
    IF p_seen OPERATOR(pg_catalog.<) stale AND memmie._distributed() THEN
        UPDATE memmie.content_storage c SET last_accessed = pg_catalog.now()
        WHERE c.content_hash OPERATOR(pg_catalog.=) p_hash AND c.last_accessed OPERATOR(pg_catalog.<) stale;
    END IF;
END
$$;

-- Stores content once per hash; returns the hash.
CREATE FUNCTION memmie.put_content(data bytea, mime_type text DEFAULT NULL) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    h      text;
    enc    bytea;
    stored bytea;   -- what goes into content_storage.content (set once, when first needed)
    codec  text;
    seen   timestamptz;
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
        SELECT c.last_accessed INTO seen FROM memmie.content_storage c
        WHERE c.content_hash = h AND c.storage_backend = 'postgres' FOR KEY SHARE;
        IF FOUND THEN
            -- (the test here: most contents found were touched within the minute)
            IF seen < now() - interval '1 minute' THEN
                PERFORM memmie._touch_content(h, seen);
            END IF;
            EXIT;
        END IF;
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

-- What verify_content checks: p_hash (a well-formed hash of stored content: 22023 / P0002
-- otherwise), or NULL for every content.
CREATE FUNCTION memmie._verify_target(p_hash text) RETURNS text
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_hash IS NOT NULL THEN
        PERFORM memmie._check_hash(p_hash);
        PERFORM FROM memmie.content_storage c WHERE c.content_hash = p_hash;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'content % does not exist', p_hash USING ERRCODE = 'P0002';
        END IF;
    END IF;
    RETURN p_hash;
END
$$;

-- The rows of verify_content (below). PL/pgSQL: on a Citus cluster content_storage is a
-- distributed table, and a SQL function's parameter filtering it cannot be planned there (`could
-- not create distributed plan`); here the hash is a plain value (one shard, or all of them).
CREATE FUNCTION memmie._verify_contents(p_hash text)
RETURNS TABLE (content_hash text, ok boolean, detail text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    target text := memmie._verify_target(p_hash);
BEGIN
    RETURN QUERY
    SELECT c.content_hash::pg_catalog.text,
           v.problem IS NULL,
           coalesce(v.problem,
                    CASE WHEN c.storage_backend OPERATOR(pg_catalog.=) 'postgres' THEN 'ok'
                         ELSE 'stored in ' OPERATOR(pg_catalog.||) c.storage_backend OPERATOR(pg_catalog.||) ', not checked here' END)
    FROM memmie.content_storage c
    CROSS JOIN LATERAL memmie._verify_content_row(c.content_hash, c.compression, c.storage_backend,
                                                  c.storage_path, c.content, c.original_size) AS v(problem)
    WHERE target IS NULL OR c.content_hash OPERATOR(pg_catalog.=) target
    ORDER BY c.content_hash;
END
$$;

-- Re-hashes one stored content, or all of them. (SQL, not PL/pgSQL: the argument and the first
-- result column share the name content_hash, which PL/pgSQL cannot compile; the work is done by
-- memmie._verify_contents.)
CREATE FUNCTION memmie.verify_content(content_hash text DEFAULT NULL)
RETURNS TABLE (content_hash text, ok boolean, detail text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM memmie._verify_contents($1)
$$;

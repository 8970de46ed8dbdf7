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
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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
    -- gc_content returns storage_path for the caller to delete: no control characters, no "."
    -- or ".." segment that could make it name something outside the store's own root.
    IF path ~ '[[:cntrl:]]' OR path ~ '(^|/)\.\.?(/|$)' THEN
        RAISE EXCEPTION 'storage_path must not contain control characters or "." / ".." segments, got %',
            quote_literal(regexp_replace(path, '[[:cntrl:]]', '?', 'g'))
            USING ERRCODE = '22023';
    END IF;
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
    -- (on a Citus cluster: kept by gc_content until the reference is seen everywhere)
    PERFORM memmie._touch_content(h, c.last_accessed);
    RETURN (s - 'content') || jsonb_build_object('content_hash', h, 'content_size', size,
                                                 'content_type', p_type);
END
$$;

CREATE FUNCTION memmie._external_location(p_hash text, p_size bigint, p_backend text, p_path text)
RETURNS jsonb
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT jsonb_build_object('content_hash', p_hash, 'content_size', p_size,
                              'storage_backend', p_backend, 'storage_path', p_path)
$$;

CREATE FUNCTION memmie.create_external_blob(user_id uuid, content_hash text, content_size bigint,
                                            content_type text, storage_backend text,
                                            storage_path text, metadata jsonb DEFAULT '{}',
                                            tags text[] DEFAULT '{}')
RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_user uuid := memmie._acting_user(create_external_blob.user_id);
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
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_by text := memmie._check_provider(update_external_content.provider_id);
    b    memmie.blobs;
BEGIN
    IF update_external_content.content_type IS NOT NULL THEN
        PERFORM memmie._check_mime(update_external_content.content_type);
    END IF;
    b := memmie._lock_blob(update_external_content.blob_id, memmie._scope());
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

-- Helpers every part of the SQL API calls: argument checks (22023 / P0002 naming the value),
-- the row locks of a change, and the quotas. Loaded right after content.sql; dag.sql,
-- external.sql, jobs.sql, pipeline.sql, providers.sql and blobs.sql use them.
--
-- Every change takes, in this order, the user's user_contexts row lock (_lock_user), then the
-- blob's row lock (_lock_blob); so concurrent changes of one user serialize (quotas hold),
-- concurrent changes of one blob serialize (versions stay dense), and the fixed order cannot
-- deadlock.
--
-- Every row lock and every UPDATE / DELETE of a blob, job or processing names its user_id with
-- its id (WHERE id = $1 AND user_id = $2): on a Citus cluster (memmie.distribute()) the tenant
-- tables are distributed by user_id, a statement with that equality goes to one shard, and
-- Citus refuses row locks in a statement over many shards. The user is the bound one
-- (memmie._scope()) when a call is confined to one, else the row's, read first without a lock
-- (the lock then finds the row again by both). On a single node the same statements use the
-- same primary-key index: the user_id condition is one more comparison.

-- ---------------------------------------------------------------------------------------------
-- Arguments

CREATE FUNCTION memmie._require(val anyelement, what text) RETURNS anyelement
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF val IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', what USING ERRCODE = '22023';
    END IF;
    RETURN val;
END
$$;


-- A name-like text argument: 1 to max_len characters, not blank (22023 naming it otherwise).
CREATE FUNCTION memmie._check_text(v text, what text, max_len int) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF v IS NULL OR btrim(v) = '' OR length(v) > max_len THEN
        RAISE EXCEPTION 'invalid % "%": expected 1 to % characters', what, v, max_len
            USING ERRCODE = '22023';
    END IF;
    RETURN v;
END
$$;

CREATE FUNCTION memmie._check_provider(p_provider text) RETURNS text
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._check_text(p_provider, 'provider id', 255)
$$;

-- P0002 unless delta p_delta (when given) exists and is of user p_scope (any user: NULL).
CREATE FUNCTION memmie._check_delta_exists(p_delta uuid, p_scope uuid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_delta IS NOT NULL THEN
        -- (two statements: with a scope, one shard on a Citus cluster)
        IF p_scope IS NULL THEN
            PERFORM 1 FROM memmie.deltas x WHERE x.id = p_delta;
        ELSE
            PERFORM 1 FROM memmie.deltas x WHERE x.id = p_delta AND x.user_id = p_scope;
        END IF;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'delta % does not exist', p_delta USING ERRCODE = 'P0002';
        END IF;
    END IF;
END
$$;

CREATE FUNCTION memmie._check_expected(b memmie.blobs, expected int) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF expected IS NOT NULL AND expected <> b.version THEN
        RAISE EXCEPTION 'blob % is at version %, not the expected version %', b.id, b.version, expected
            USING ERRCODE = 'MM001';
    END IF;
END
$$;

CREATE FUNCTION memmie._check_live(b memmie.blobs) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF b.deleted_at IS NOT NULL THEN
        RAISE EXCEPTION 'blob % is deleted', b.id USING ERRCODE = 'P0002',
            HINT = 'undelete_blob() brings it back';
    END IF;
END
$$;
-- ---------------------------------------------------------------------------------------------
-- Locks

-- The user's row, created on first use, locked for the rest of the transaction. FOR NO KEY
-- UPDATE: writers of one user still queue behind each other, but the FOR KEY SHARE locks that
-- foreign-key checks take (dispatch_events inserting a user's processing rows) pass, so a
-- writer of two users cannot deadlock with them.
CREATE FUNCTION memmie._lock_user(p_user uuid) RETURNS memmie.user_contexts
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
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

-- The blob, locked, after its user's row: P0002 when it does not exist or is not of user
-- p_scope (the user a call is confined to, memmie._scope(); NULL: any user).
CREATE FUNCTION memmie._lock_blob(p_blob uuid, p_scope uuid) RETURNS memmie.blobs
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    b memmie.blobs;
BEGIN
    PERFORM memmie._require(p_blob, 'blob_id');
    -- the user first (one shard when the scope names it), without a lock: the user's row is
    -- locked before the blob's
    IF p_scope IS NULL THEN
        SELECT * INTO b FROM memmie.blobs WHERE id = p_blob;
    ELSE
        SELECT * INTO b FROM memmie.blobs WHERE id = p_blob AND user_id = p_scope;
    END IF;
    IF FOUND THEN
        PERFORM memmie._lock_user(b.user_id);
        SELECT * INTO b FROM memmie.blobs WHERE id = p_blob AND user_id = b.user_id FOR NO KEY UPDATE;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % does not exist', p_blob USING ERRCODE = 'P0002';
    END IF;
    RETURN b;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Citus

-- True when memmie's tables have been placed on a Citus cluster (memmie.distribute()): the
-- functions that must work differently there (the counting, the queue, GC, the event feed, the
-- DAG) take their distributed path. False on a single node, and with Citus loaded but memmie's
-- tables still local (the catalog of Citus is read only when it is there: without Citus the
-- answer is one catalog cache lookup, under a microsecond).
CREATE FUNCTION memmie._distributed() RETURNS boolean
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
        RETURN false;
    END IF;
    RETURN EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                   WHERE d.logicalrelid OPERATOR(pg_catalog.=) 'memmie.blobs'::pg_catalog.regclass);
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Quotas

-- A content's size against the user's max_content_size quota.
CREATE FUNCTION memmie._check_content_quota(p_user uuid, p_size bigint) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lim numeric;
BEGIN
    SELECT (quota_limits ->> 'max_content_size')::numeric INTO lim
    FROM memmie.user_contexts WHERE user_id = p_user;
    IF p_size > lim THEN
        RAISE EXCEPTION 'content of % bytes exceeds the max_content_size quota (%) of user %', p_size, lim, p_user
            USING ERRCODE = 'MM002';
    END IF;
END
$$;

-- A user's storage_used and blob_count as this transaction sees them: the stored ones plus the
-- changes it has made, written when it commits (src/refcount.rs).
CREATE FUNCTION memmie._user_counts(p_user uuid, OUT storage_used bigint, OUT blob_count bigint)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    SELECT u.storage_used + coalesce(p.storage_used, 0), u.blob_count + coalesce(p.blob_count, 0)
    INTO storage_used, blob_count
    FROM memmie.user_contexts u LEFT JOIN memmie._pending_user_counts() p ON p.user_id = u.user_id
    WHERE u.user_id = p_user;
END
$$;

-- After a change: the user's storage and blob quotas.
CREATE FUNCTION memmie._check_quotas(p_user uuid) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    u memmie.user_contexts;
    c record;
BEGIN
    SELECT * INTO u FROM memmie.user_contexts WHERE user_id = p_user;
    SELECT * INTO c FROM memmie._user_counts(p_user) c;
    u.storage_used := c.storage_used;
    u.blob_count := c.blob_count;
    IF u.storage_used > (u.quota_limits ->> 'max_storage_bytes')::numeric THEN
        RAISE EXCEPTION 'user % would use % bytes, over the max_storage_bytes quota (%)',
            p_user, u.storage_used, u.quota_limits ->> 'max_storage_bytes' USING ERRCODE = 'MM002';
    END IF;
    IF u.blob_count > (u.quota_limits ->> 'max_blobs')::numeric THEN
        RAISE EXCEPTION 'user % would have % blobs, over the max_blobs quota (%)',
            p_user, u.blob_count, u.quota_limits ->> 'max_blobs' USING ERRCODE = 'MM002';
    END IF;
END
$$;

-- Sets a user's quotas: each key of limits replaces that quota, a key whose value is null removes
-- it; the others stay. Creates the user's row when it has none. 22023 for an unknown key, a value
-- that is not a non-negative integer, or limits that are not an object; nothing is changed then.
-- A quota lowered under what the user already uses is kept: the user's next write over it fails
-- (MM002), nothing already stored is removed.
CREATE FUNCTION memmie.set_quota(user_id uuid, limits jsonb) RETURNS memmie.user_contexts
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_user  uuid := memmie._require(set_quota.user_id, 'user_id');
    -- the quotas there are (user_contexts' constraint in schema.sql names the same)
    known   text[] := '{keep_versions,max_blobs,max_content_size,max_storage_bytes}';
    unknown text;
    bad     record;
    c       record;
    u       memmie.user_contexts;
BEGIN
    PERFORM memmie._require(set_quota.limits, 'limits');
    IF jsonb_typeof(set_quota.limits) <> 'object' THEN
        RAISE EXCEPTION 'limits must be a JSON object, got %', jsonb_typeof(set_quota.limits)
            USING ERRCODE = '22023';
    END IF;
    SELECT string_agg(format('"%s"', k), ', ' ORDER BY k) INTO unknown
    FROM jsonb_object_keys(set_quota.limits) k WHERE k <> ALL (known);
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'unknown quota keys: %', unknown USING ERRCODE = '22023',
            HINT = 'the quotas are ' || array_to_string(known, ', ');
    END IF;
    SELECT e.key, e.value INTO bad FROM jsonb_each(set_quota.limits) e
    WHERE jsonb_typeof(e.value) <> 'null'
      AND (jsonb_typeof(e.value) <> 'number' OR e.value::text !~ '^[0-9]{1,18}$')
    ORDER BY e.key LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'quota "%" must be a non-negative integer or null, got %', bad.key, bad.value
            USING ERRCODE = '22023';
    END IF;
    PERFORM memmie._lock_user(p_user);
    UPDATE memmie.user_contexts x
    SET quota_limits = jsonb_strip_nulls(x.quota_limits || set_quota.limits),
        updated_at = CURRENT_TIMESTAMP
    WHERE x.user_id = p_user
    RETURNING * INTO u;
    -- as the transaction sees them (the counts of its own writes are written at commit)
    SELECT * INTO c FROM memmie._user_counts(p_user) c;
    u.storage_used := c.storage_used;
    u.blob_count := c.blob_count;
    RETURN u;
END
$$;

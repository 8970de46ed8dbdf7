-- Access: who may call what, and whose rows a call sees (README "Privileges", docs/sql-api.md
-- "Access levels").
--
-- Three levels, granted to roles by grant_app / grant_worker / grant_admin (the extension
-- creates no roles). A level is EXECUTE on its functions and SELECT on its tables, never INSERT,
-- UPDATE, DELETE or TRUNCATE: memmie's functions run as the extension's owner (SECURITY
-- DEFINER, privileges.sql) and are the only way to change anything, so versioning, accounting
-- and events cannot be bypassed.
--
-- A session acts for one user through the setting memmie.user_id (src/guc.rs; a value that is
-- not a uuid is refused when set). Bound to user A, every user-level function acts on A's rows
-- only: another user's user_id argument is 42501; another user's blob, delta, job or content is
-- P0002 with the message an unknown one gets. With no user bound, only the owner (and members
-- of its role, superusers) and admin-level roles may call them, for any user. Row-level
-- security gives SELECT the same view (the policies below; the owner bypasses them).
--
-- The grantees are kept in memmie.grantees, dumped by pg_dump; every upgrade script re-applies
-- their grants (memmie._reapply_grants) so new functions reach them.

CREATE TABLE memmie.grantees (
    role_name  name NOT NULL,
    level      text NOT NULL CHECK (level IN ('app', 'worker', 'admin')),
    granted_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (role_name, level)
);
SELECT pg_catalog.pg_extension_config_dump('memmie.grantees', '');

-- ---------------------------------------------------------------------------------------------
-- Who is calling

-- Whether the caller sees every user's rows: a superuser, the extension's owner or a member of
-- its role, or a role holding the admin level (directly or as a member). SECURITY DEFINER: the
-- row-level security policies call it as the querying role, which cannot read grantees.
CREATE FUNCTION memmie._unrestricted() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM pg_catalog.pg_extension e
                   WHERE e.extname = 'memmie'
                     AND pg_catalog.pg_has_role(memmie._caller(), e.extowner, 'USAGE'))
        OR EXISTS (SELECT FROM memmie.grantees g
                   JOIN pg_catalog.pg_roles r ON r.rolname = g.role_name
                   WHERE g.level = 'admin'
                     AND pg_catalog.pg_has_role(memmie._caller(), r.oid, 'USAGE'))
$$;

-- _unrestricted() for the row-level security policies of a Citus cluster, through
-- memmie._unrestricted_on_node() (src/access.rs: the answer kept for the rest of the command, as
-- the policies call it per row there; distribute() writes them with it; a single node's
-- policies call _unrestricted() once per query). There the policies run on
-- the workers, inside the query on a shard, where reading grantees through Citus (a reference
-- table) is refused (a distributed query from a query on a shard). So: the owner's role from
-- this node's catalog, and the admin-level grantees from this node's placement of grantees,
-- read as the plain table it is here (a reference table has one on every node, written in the
-- same transaction on all of them). A node without a placement (the coordinator when it is not
-- in the metadata) reads grantees itself: it is not a shard there. Without Citus, _unrestricted().
CREATE FUNCTION memmie._unrestricted_node_check() RETURNS boolean
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    caller oid := memmie._caller();
    shard  text;
    ok     boolean;
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_extension e
               WHERE e.extname OPERATOR(pg_catalog.=) 'memmie'
                 AND pg_catalog.pg_has_role(caller, e.extowner, 'USAGE')) THEN
        RETURN true;
    END IF;
    IF NOT memmie._distributed() THEN
        RETURN memmie._unrestricted();
    END IF;
    SELECT pg_catalog.format('memmie.%I', 'grantees_' OPERATOR(pg_catalog.||) s.shardid) INTO shard
    FROM pg_catalog.pg_dist_shard s
    JOIN pg_catalog.pg_dist_placement p ON p.shardid OPERATOR(pg_catalog.=) s.shardid
    WHERE s.logicalrelid OPERATOR(pg_catalog.=) 'memmie.grantees'::pg_catalog.regclass
      AND p.groupid OPERATOR(pg_catalog.=) (SELECT l.groupid FROM pg_catalog.pg_dist_local_group l);
    IF shard IS NULL THEN
        RETURN memmie._unrestricted();
    END IF;
    EXECUTE pg_catalog.format(
        'SELECT EXISTS (SELECT FROM %s g JOIN pg_catalog.pg_roles r ON r.rolname OPERATOR(pg_catalog.=) g.role_name'
        ' WHERE g.level OPERATOR(pg_catalog.=) ''admin'' AND pg_catalog.pg_has_role($1, r.oid, ''USAGE''))', shard)
        INTO ok USING caller;
    RETURN ok;
END
$$;

-- The user a call is confined to: the bound user; NULL when the caller sees every user (no user
-- bound, and _unrestricted). 42501 when no user is bound and the caller may not see all.
CREATE FUNCTION memmie._scope() RETURNS uuid
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    bound uuid := memmie._bound_user();
BEGIN
    IF bound IS NOT NULL THEN
        RETURN bound;
    END IF;
    IF memmie._unrestricted() THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'no user bound: memmie.user_id is not set'
        USING ERRCODE = '42501',
              HINT = 'Set the user this session acts for: SET memmie.user_id = ''<uuid>'', or set_config(''memmie.user_id'', $1, true) per transaction.';
END
$$;

-- The user a call with a user_id argument acts for: p_user when the caller may act for it (the
-- bound user, or anyone for an unrestricted caller with no user bound); NULL means the bound
-- user. 42501 for another user than the bound one; 22023 for NULL with no user bound.
CREATE FUNCTION memmie._acting_user(p_user uuid) RETURNS uuid
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    scope uuid := memmie._scope();
BEGIN
    IF scope IS NULL THEN
        RETURN memmie._require(p_user, 'user_id');
    END IF;
    IF p_user IS NOT NULL AND p_user <> scope THEN
        RAISE EXCEPTION 'this session acts for user %, not for user %', scope, p_user
            USING ERRCODE = '42501', HINT = 'memmie.user_id names the user a session acts for.';
    END IF;
    RETURN scope;
END
$$;

-- The blob, when this call may see it; P0002 as for a blob that does not exist otherwise.
CREATE FUNCTION memmie._visible_blob(p_blob uuid) RETURNS memmie.blobs
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    scope uuid := memmie._scope();
    b     memmie.blobs;
BEGIN
    PERFORM memmie._require(p_blob, 'blob_id');
    -- two statements, not (scope IS NULL OR user_id = scope): with the user bound, a Citus
    -- cluster reads one shard
    IF scope IS NULL THEN
        SELECT * INTO b FROM memmie.blobs x WHERE x.id = p_blob;
    ELSE
        SELECT * INTO b FROM memmie.blobs x WHERE x.id = p_blob AND x.user_id = scope;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'blob % does not exist', p_blob USING ERRCODE = 'P0002';
    END IF;
    RETURN b;
END
$$;

-- P0002 unless this call may read content p_hash: the bound user references it.
CREATE FUNCTION memmie._check_content_visible(p_hash text) RETURNS void
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    scope uuid := memmie._scope();
BEGIN
    IF scope IS NOT NULL AND NOT EXISTS (SELECT FROM memmie.user_content_refs r
                                         WHERE r.user_id = scope AND r.content_hash = p_hash) THEN
        RAISE EXCEPTION 'content % does not exist', p_hash USING ERRCODE = 'P0002';
    END IF;
END
$$;

-- The user this session acts for (memmie.user_id), NULL when none: for the application's own
-- queries and policies, as Supabase's auth.uid().
CREATE FUNCTION memmie.current_user_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._bound_user()
$$;

-- ---------------------------------------------------------------------------------------------
-- The levels: which functions and tables each one gets. Functions are named (every overload of
-- a name gets the level); a function in no list is the owner's alone. Every level gets the
-- functions the row-level security policies call (they run as the querying role) and the two
-- that say who the caller is.

CREATE FUNCTION memmie._level_function_names(p_level text) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT ARRAY['current_user_id', 'access_levels', '_bound_user', '_unrestricted', '_caller',
                 '_unrestricted_on_node', '_unrestricted_node_check']
        || CASE p_level
        WHEN 'app' THEN ARRAY[
            'create_blob', 'create_external_blob', 'apply_delta', 'update_content',
            'update_external_content', 'revert_blob', 'delete_blob', 'undelete_blob', 'squash_history',
            'blob_state', 'blob_content', 'blob_history', 'find_blobs', 'get_content',
            'derive_blob', 'add_edge', 'ancestors', 'descendants', 'lineage', 'dag_stats',
            'user_usage', 'enqueue_job', 'cancel_job', 'record_api_call']
        WHEN 'worker' THEN ARRAY[
            'events_since', 'dispatch_events', 'claim_jobs', 'heartbeat_job', 'complete_job',
            'fail_job', 'complete_processing', 'fail_processing', 'processing_input',
            'pending_work']
        WHEN 'admin' THEN ARRAY[
            'register_provider', 'set_provider_status', 'backfill', 'reprocess',
            'maintenance', 'check', 'gc_content', 'put_content', 'verify_content',
            'create_partitions', 'drop_old_partitions', 'ensure_partitions', 'fold_usage',
            'rollup_metrics', 'refresh_views', 'refresh_user_blob_summary',
            'schedule_maintenance', 'unschedule_maintenance', 'user_usage', 'cancel_job',
            'set_quota', 'distribute']
        END
$$;

-- The tables a level may SELECT (row-level security decides which rows).
CREATE FUNCTION memmie._level_table_names(p_level text) RETURNS text[]
LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT CASE p_level
        WHEN 'app' THEN ARRAY[
            'user_contexts', 'content_storage', 'blobs', 'blob_versions', 'user_content_refs',
            'deltas', 'blob_edges', 'provider_processing', 'events', 'jobs', 'usage_metrics']
        WHEN 'worker' THEN ARRAY['providers', 'provider_versions']
        WHEN 'admin' THEN ARRAY[
            'user_contexts', 'content_storage', 'blobs', 'blob_versions', 'user_content_refs',
            'deltas', 'blob_edges', 'providers', 'provider_versions', 'provider_processing',
            'events', 'jobs', 'usage_metrics', 'usage_increments', 'provider_metrics',
            'user_blob_summary', 'dag_statistics', 'grantees', 'blob_snapshots']
        END
$$;

-- EXECUTE on the functions of levels p_levels for role p_role, on this node.
CREATE FUNCTION memmie._grant_functions(p_role name, p_levels text[]) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lvl text;
    f   regprocedure;
BEGIN
    FOREACH lvl IN ARRAY coalesce(p_levels, '{}') LOOP
        FOR f IN SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
                 WHERE p.pronamespace = 'memmie'::regnamespace
                   AND p.proname = ANY (memmie._level_function_names(lvl)) LOOP
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f, p_role);
        END LOOP;
    END LOOP;
END
$$;

-- Every privilege role p_role holds on memmie's functions, on this node.
CREATE FUNCTION memmie._revoke_functions(p_role name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    EXECUTE format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA memmie FROM %I', p_role);
END
$$;

-- The functions' grants on every node of a Citus cluster. Citus propagates the GRANTs on the
-- schema and on its tables, not those on memmie's functions: they are not Citus distributed
-- objects (Citus distributes an extension's function only with a distribution argument), yet
-- the policies run on the workers as the querying role and call the functions there.
-- distribute() puts this trigger on grantees, a reference table: a write to it runs on every
-- node's placement in the same (two-phase) transaction, and the trigger there grants the row's
-- level's functions (INSERT, UPDATE) or revokes the role's (DELETE: only revoke_access deletes)
-- on that node. So the workers' grants commit or roll back with the coordinator's;
-- _apply_grants touches the role's rows to reach them. Not on a single node (no trigger).
CREATE FUNCTION memmie._grantees_on_node() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = OLD.role_name) THEN
            PERFORM memmie._revoke_functions(OLD.role_name);
        END IF;
        RETURN OLD;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles r WHERE r.rolname = NEW.role_name) THEN
        PERFORM memmie._grant_functions(NEW.role_name, ARRAY[NEW.level]);
    END IF;
    RETURN NEW;
END
$$;

-- Grants role p_role what its recorded levels give (schema usage, EXECUTE, SELECT), on every
-- node of a Citus cluster (the schema's and tables' GRANTs through Citus, the functions' through
-- the trigger on grantees: _grantees_on_node).
CREATE FUNCTION memmie._apply_grants(p_role name) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    lvl    text;
    levels text[];
    t      text;
    dist   boolean := memmie._distributed();
BEGIN
    IF dist THEN
        -- GRANTs on distributed and reference tables and a write to grantees in one
        -- transaction: one connection per node
        PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
    EXECUTE format('GRANT USAGE ON SCHEMA memmie TO %I', p_role);
    SELECT array_agg(g.level ORDER BY g.level) INTO levels FROM memmie.grantees g WHERE g.role_name = p_role;
    PERFORM memmie._grant_functions(p_role, levels);
    FOREACH lvl IN ARRAY coalesce(levels, '{}') LOOP
        FOREACH t IN ARRAY memmie._level_table_names(lvl) LOOP
            EXECUTE format('GRANT SELECT ON TABLE memmie.%I TO %I', t, p_role);
        END LOOP;
    END LOOP;
    IF dist THEN
        UPDATE memmie.grantees g SET granted_at = g.granted_at WHERE g.role_name = p_role;
    END IF;
END
$$;

-- Every recorded grantee's grants again (each upgrade script ends with it; a role dropped since
-- is skipped, its rows kept until revoke_access or a new role of that name).
CREATE FUNCTION memmie._reapply_grants() RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    r name;
BEGIN
    FOR r IN SELECT DISTINCT g.role_name FROM memmie.grantees g
             JOIN pg_catalog.pg_roles x ON x.rolname = g.role_name LOOP
        PERFORM memmie._apply_grants(r);
    END LOOP;
END
$$;

-- The name of role p_role (22023 for NULL; 42704 for a role dropped since the regrole was made).
CREATE FUNCTION memmie._role_name(p_role regrole) RETURNS name
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n name;
BEGIN
    PERFORM memmie._require(p_role, 'role');
    SELECT r.rolname INTO n FROM pg_catalog.pg_roles r WHERE r.oid = p_role;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'role % does not exist', p_role USING ERRCODE = '42704';
    END IF;
    RETURN n;
END
$$;

CREATE FUNCTION memmie._grant_level(p_role regrole, p_level text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n name := memmie._role_name(p_role);
BEGIN
    INSERT INTO memmie.grantees (role_name, level) VALUES (n, p_level) ON CONFLICT DO NOTHING;
    PERFORM memmie._apply_grants(n);
END
$$;

CREATE FUNCTION memmie.grant_app(role regrole) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._grant_level(role, 'app')
$$;

CREATE FUNCTION memmie.grant_worker(role regrole) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._grant_level(role, 'worker')
$$;

CREATE FUNCTION memmie.grant_admin(role regrole) RETURNS void
LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $$
    SELECT memmie._grant_level(role, 'admin')
$$;

-- Every level of the role, and every privilege it holds on memmie's objects.
CREATE FUNCTION memmie.revoke_access(role regrole) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n name := memmie._role_name(revoke_access.role);
BEGIN
    IF memmie._distributed() THEN
        PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
    END IF;
    -- on a Citus cluster the trigger on grantees revokes the functions on every node
    DELETE FROM memmie.grantees g WHERE g.role_name = n;
    PERFORM memmie._revoke_functions(n);
    EXECUTE format('REVOKE ALL ON ALL TABLES IN SCHEMA memmie FROM %I', n);
    EXECUTE format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA memmie FROM %I', n);
    EXECUTE format('REVOKE ALL ON SCHEMA memmie FROM %I', n);
END
$$;

-- The levels a role holds (for the caller when role is NULL).
CREATE FUNCTION memmie.access_levels(role regrole DEFAULT NULL)
RETURNS TABLE (role_name name, level text, granted_at timestamptz)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT g.role_name, g.level, g.granted_at FROM memmie.grantees g
    JOIN pg_catalog.pg_roles r ON r.rolname = g.role_name
    WHERE r.oid = coalesce($1, memmie._caller()::regrole)
    ORDER BY g.level
$$;

-- ---------------------------------------------------------------------------------------------
-- Row-level security: what SELECT shows a level's roles. The bound user's rows; every row for
-- an unrestricted caller (admin level). The owner bypasses these (memmie's functions run as the
-- owner); no policy allows a write, and no level may write. Each call is evaluated once per
-- query (the scalar subqueries), not per row.

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['user_contexts', 'blobs', 'blob_versions', 'user_content_refs',
                             'deltas', 'provider_processing', 'events', 'jobs', 'usage_metrics',
                             'usage_increments'] LOOP
        EXECUTE format('ALTER TABLE memmie.%I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_read ON memmie.%I FOR SELECT
                          USING (user_id OPERATOR(pg_catalog.=) (SELECT memmie._bound_user()) OR (SELECT memmie._unrestricted()))$p$, t);
    END LOOP;
END
$$;

-- Edges never cross users: an edge is visible with its parent blob.
ALTER TABLE memmie.blob_edges ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON memmie.blob_edges FOR SELECT
    USING ((SELECT memmie._unrestricted())
           OR EXISTS (SELECT FROM memmie.blobs b
                      WHERE b.id OPERATOR(pg_catalog.=) blob_edges.parent_blob_id
                        AND b.user_id OPERATOR(pg_catalog.=) (SELECT memmie._bound_user())));

-- A content is visible to the users that reference it (dedup across users stays invisible).
ALTER TABLE memmie.content_storage ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_read ON memmie.content_storage FOR SELECT
    USING ((SELECT memmie._unrestricted())
           OR EXISTS (SELECT FROM memmie.user_content_refs r
                      WHERE r.content_hash OPERATOR(pg_catalog.=) content_storage.content_hash
                        AND r.user_id OPERATOR(pg_catalog.=) (SELECT memmie._bound_user())));

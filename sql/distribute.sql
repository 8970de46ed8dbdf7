-- memmie on Citus (issue 16): memmie.distribute() turns memmie's tables into Citus tables.
-- Run once on the coordinator, after CREATE EXTENSION citus, citus_add_node and CREATE EXTENSION
-- memmie (admin level: it changes keys and places every table). A second call changes nothing.
--
-- Why here and not in the install script: Citus refuses to create or change distributed tables
-- from an extension script (citusdata/citus#6662), and the single-node schema stays as it is:
-- only distribute() changes the keys, on the cluster it distributes (docs/schema.md "Citus").
--
-- What goes where (the reasons: docs/schema.md "Citus"):
--   reference tables (a copy on every node): providers, provider_versions, provider_metrics,
--     grantees (the access levels: read by the row-level security policies on every shard);
--   distributed by user_id, co-located with user_contexts: user_contexts, blobs, blob_versions,
--     blob_snapshots, blob_edges (an edge joins two blobs of its user: a user's whole DAG lies
--     on the user's shards, and traversals read it there, src/dag.rs), user_content_refs,
--     deltas, events, provider_processing, jobs, usage_metrics, usage_increments;
--   distributed by content_hash, on its own: content_storage (one row per content, shared by
--     users on any node).
-- Key changes made first (Citus wants the distribution column in every primary key, unique
-- constraint and foreign key between distributed tables): the keys of blobs, blob_versions,
-- blob_edges (and its unique_edge), deltas and events partitions, provider_processing, jobs and
-- usage_metrics get user_id; the foreign keys to blobs become (id, user_id) pairs;
-- blob_versions loses its foreign key to content_storage (not co-located).
CREATE FUNCTION memmie._citus_key(p_table regclass, p_name text, p_def text) RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
-- Makes constraint p_name of p_table be p_def (a definition as pg_get_constraintdef prints it):
-- nothing when it already is, else drops the old one (if any) and adds it. True when it changed.
DECLARE
    old text;
BEGIN
    SELECT pg_catalog.pg_get_constraintdef(c.oid) INTO old
    FROM pg_catalog.pg_constraint c
    WHERE c.conrelid OPERATOR(pg_catalog.=) p_table AND c.conname OPERATOR(pg_catalog.=) p_name;
    IF old IS NOT DISTINCT FROM p_def THEN
        RETURN false;
    END IF;
    IF old IS NOT NULL THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', p_table, p_name);
    END IF;
    IF p_def IS NOT NULL THEN
        EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s', p_table, p_name, p_def);
    END IF;
    RETURN true;
END
$$;

CREATE FUNCTION memmie._citus_on_workers(p_sql text) RETURNS void
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
-- Runs p_sql on every Citus worker, in the worker's copy of memmie: CREATE EXTENSION memmie made
-- memmie's tables there too, and Citus keeps them as the tables' shells on the workers (it does
-- not make its own for a table an extension owns), so a key changed on the coordinator before
-- the table is placed must change there as well. p_sql must do nothing when run twice.
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM pg_catalog.run_command_on_workers(p_sql) LOOP
        IF NOT r.success THEN
            RAISE EXCEPTION 'memmie.distribute(): worker %:% refused %: %', r.nodename, r.nodeport, p_sql, r.result
                USING ERRCODE = '55000';
        END IF;
    END LOOP;
END
$$;

CREATE FUNCTION memmie._citus_counting_triggers() RETURNS boolean
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
-- Swaps the counting triggers of one node (sql/counters.sql) for those of a cluster: on
-- blob_versions and blobs, the single-node ones (transition tables, counts written at commit)
-- dropped, the row-level ones that apply the counts at once to the co-located rows of the same
-- user made. Run by distribute() on the coordinator and on every worker's copy before the tables
-- are placed (the shards get the coordinator's triggers); on a table already placed, Citus takes
-- the change to its shards (citus.enable_unsafe_triggers). True when it changed something;
-- nothing when run twice.
DECLARE
    t       record;
    changed boolean := false;
BEGIN
    FOR t IN
        SELECT g.tgname, g.tgrelid::pg_catalog.regclass AS tab FROM pg_catalog.pg_trigger g
        WHERE (g.tgrelid OPERATOR(pg_catalog.=) 'memmie.blob_versions'::pg_catalog.regclass
               AND g.tgname OPERATOR(pg_catalog.=) ANY (ARRAY['content_refs', 'content_refs_update', 'user_storage_insert',
                                                              'user_storage_delete', 'user_storage_update']::pg_catalog.name[]))
           OR (g.tgrelid OPERATOR(pg_catalog.=) 'memmie.blobs'::pg_catalog.regclass
               AND g.tgname OPERATOR(pg_catalog.=) ANY (ARRAY['count_blobs_insert_delete', 'count_blobs_update']::pg_catalog.name[]))
        ORDER BY 2, 1
    LOOP
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t.tgname, t.tab);
        changed := true;
    END LOOP;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger g
                   WHERE g.tgrelid OPERATOR(pg_catalog.=) 'memmie.blob_versions'::pg_catalog.regclass
                     AND g.tgname OPERATOR(pg_catalog.=) 'count_refs_at_once') THEN
        CREATE TRIGGER count_refs_at_once AFTER INSERT OR DELETE ON memmie.blob_versions
            FOR EACH ROW EXECUTE FUNCTION memmie._count_refs_at_once();
        CREATE TRIGGER count_refs_at_once_update AFTER UPDATE OF content_hash ON memmie.blob_versions
            FOR EACH ROW WHEN (OLD.content_hash IS DISTINCT FROM NEW.content_hash)
            EXECUTE FUNCTION memmie._count_refs_at_once();
        changed := true;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger g
                   WHERE g.tgrelid OPERATOR(pg_catalog.=) 'memmie.blobs'::pg_catalog.regclass
                     AND g.tgname OPERATOR(pg_catalog.=) 'count_blobs_at_once') THEN
        CREATE TRIGGER count_blobs_at_once AFTER INSERT OR DELETE ON memmie.blobs
            FOR EACH ROW EXECUTE FUNCTION memmie._count_blobs_at_once();
        CREATE TRIGGER count_blobs_at_once_update AFTER UPDATE OF deleted_at ON memmie.blobs
            FOR EACH ROW WHEN ((OLD.deleted_at IS NULL) IS DISTINCT FROM (NEW.deleted_at IS NULL))
            EXECUTE FUNCTION memmie._count_blobs_at_once();
        changed := true;
    END IF;
    RETURN changed;
END
$$;

CREATE FUNCTION memmie.distribute() RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    placed  jsonb := '{}';
    changed int := 0;
    fks     jsonb;
    k       record;
    t       record;
    part    regclass;
    pkey    text;
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension WHERE extname OPERATOR(pg_catalog.=) 'citus') THEN
        RAISE EXCEPTION 'memmie.distribute() needs the citus extension in this database'
            USING ERRCODE = '55000',
                  HINT = 'on a Citus coordinator: CREATE EXTENSION citus, citus_add_node() for each worker, then memmie.distribute()';
    END IF;
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RAISE EXCEPTION 'memmie.distribute() runs on the Citus coordinator, not on a worker'
            USING ERRCODE = '55000';
    END IF;
    -- 0. The counting triggers of a cluster (sql/counters.sql) in place of the single-node ones,
    -- here and, while the tables are not placed yet, on every worker's copy (the shards get the
    -- coordinator's at placement). Counted with the keys changed.
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
    IF memmie._citus_counting_triggers() THEN
        changed := changed OPERATOR(pg_catalog.+) 1;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                   WHERE d.logicalrelid OPERATOR(pg_catalog.=) 'memmie.blob_versions'::pg_catalog.regclass) THEN
        PERFORM memmie._citus_on_workers('SELECT memmie._citus_counting_triggers()');
    END IF;
    -- Every table placed (a second call): nothing to place, but the recorded grantees' levels
    -- are given again on every node (a worker added since gets the functions' grants).
    IF NOT EXISTS (SELECT FROM pg_catalog.unnest(ARRAY[
                       'memmie.providers', 'memmie.provider_versions', 'memmie.provider_metrics',
                       'memmie.grantees', 'memmie.user_contexts', 'memmie.blobs', 'memmie.blob_versions', 'memmie.blob_snapshots',
                       'memmie.blob_edges', 'memmie.user_content_refs',
                       'memmie.deltas', 'memmie.events', 'memmie.provider_processing', 'memmie.jobs',
                       'memmie.usage_metrics', 'memmie.usage_increments', 'memmie.content_storage']) x
                   WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                                     WHERE d.logicalrelid OPERATOR(pg_catalog.=) x::pg_catalog.regclass)) THEN
        PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
        PERFORM memmie._reapply_grants();
        RETURN pg_catalog.jsonb_build_object('placed', placed, 'keys_changed', changed,
            'coordinator_only', pg_catalog.jsonb_build_array());
    END IF;
    -- DDL on distributed and reference tables in one transaction: one connection per node
    PERFORM pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true);
    -- memmie's counting and bookkeeping triggers go with the tables (they run on the shards)
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);

    -- 1. Every foreign key between memmie's tables is dropped and made again once all are placed
    -- (a table placed while a local table references it, or it references a local one, makes
    -- Citus convert the local one, which fails: the extension made it on every node). On the way
    -- the foreign keys to blobs become (id, user_id) pairs (a derived blob has its parent's
    -- user; an edge joins two blobs of its user), and some are not made again: blob_versions to
    -- content_storage (not co-located) and provider_processing.output_blob_id (ON DELETE SET
    -- NULL: Citus refuses SET NULL in a key with the distribution column).
    SELECT pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
               'tab', c.conrelid::pg_catalog.regclass::pg_catalog.text, 'name', c.conname,
               'def', CASE WHEN c.conname OPERATOR(pg_catalog.=) 'blob_versions_content_hash_fkey'
                             OR c.confdeltype OPERATOR(pg_catalog.=) ANY (ARRAY['n', 'd']::"char"[]) THEN NULL
                           WHEN c.confrelid OPERATOR(pg_catalog.=) 'memmie.blob_versions'::pg_catalog.regclass
                               THEN 'FOREIGN KEY (blob_id, version, user_id) REFERENCES memmie.blob_versions(blob_id, version, user_id) ON DELETE CASCADE'
                           WHEN c.confrelid OPERATOR(pg_catalog.=) 'memmie.blobs'::pg_catalog.regclass
                               THEN pg_catalog.format('FOREIGN KEY (%I, user_id) REFERENCES memmie.blobs(id, user_id)%s',
                                        (SELECT a.attname FROM pg_catalog.pg_attribute a
                                         WHERE a.attrelid OPERATOR(pg_catalog.=) c.conrelid
                                           AND a.attnum OPERATOR(pg_catalog.=) c.conkey[1]),
                                        CASE c.confdeltype WHEN 'c' THEN ' ON DELETE CASCADE' ELSE '' END)
                           ELSE pg_catalog.pg_get_constraintdef(c.oid) END,
               'old', pg_catalog.pg_get_constraintdef(c.oid)))
    INTO fks
    FROM pg_catalog.pg_constraint c
    WHERE c.contype OPERATOR(pg_catalog.=) 'f' AND c.conparentid OPERATOR(pg_catalog.=) 0
      AND c.connamespace OPERATOR(pg_catalog.=) 'memmie'::pg_catalog.regnamespace;
    FOR k IN SELECT * FROM pg_catalog.jsonb_to_recordset(coalesce(fks, '[]')) AS x(tab text, name text, def text, old text) LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s DROP CONSTRAINT %I', k.tab, k.name);
        PERFORM memmie._citus_on_workers(pg_catalog.format('SELECT memmie._citus_key(%L, %L, NULL)', k.tab, k.name));
        IF k.def IS DISTINCT FROM k.old THEN
            changed := changed OPERATOR(pg_catalog.+) 1;
        END IF;
    END LOOP;

    -- 2. Primary keys and unique constraints with user_id, on the tables not placed yet.
    FOR k IN SELECT * FROM (VALUES
        ('memmie.blobs', 'blobs_pkey', 'PRIMARY KEY (id, user_id)'),
        ('memmie.blob_versions', 'blob_versions_pkey', 'PRIMARY KEY (blob_id, version, user_id)'),
        ('memmie.blob_snapshots', 'blob_snapshots_pkey', 'PRIMARY KEY (blob_id, version, user_id)'),
        ('memmie.blob_edges', 'blob_edges_pkey', 'PRIMARY KEY (id, user_id)'),
        ('memmie.blob_edges', 'unique_edge', 'UNIQUE (parent_blob_id, child_blob_id, provider_id, user_id)'),
        ('memmie.provider_processing', 'provider_processing_pkey', 'PRIMARY KEY (id, user_id)'),
        ('memmie.provider_processing', 'unique_processing', 'UNIQUE (blob_id, provider_id, processed_version, user_id)'),
        ('memmie.jobs', 'jobs_pkey', 'PRIMARY KEY (id, user_id)'),
        ('memmie.usage_metrics', 'usage_metrics_pkey', 'PRIMARY KEY (id, user_id)')) AS v(tab, name, def)
    WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                      WHERE d.logicalrelid OPERATOR(pg_catalog.=) v.tab::pg_catalog.regclass)
    LOOP
        IF memmie._citus_key(k.tab::pg_catalog.regclass, k.name, k.def) THEN
            changed := changed OPERATOR(pg_catalog.+) 1;
        END IF;
        PERFORM memmie._citus_on_workers(pg_catalog.format('SELECT memmie._citus_key(%L, %L, %L)', k.tab, k.name, k.def));
    END LOOP;
    -- deltas and events keep their primary keys on each partition (sql/partitions.sql)
    FOR part IN
        SELECT i.inhrelid::pg_catalog.regclass FROM pg_catalog.pg_inherits i
        WHERE i.inhparent OPERATOR(pg_catalog.=) ANY (ARRAY['memmie.deltas'::pg_catalog.regclass, 'memmie.events'::pg_catalog.regclass])
          AND NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                          WHERE d.logicalrelid OPERATOR(pg_catalog.=) i.inhrelid::pg_catalog.regclass)
    LOOP
        pkey := (SELECT c.conname FROM pg_catalog.pg_constraint c
                 WHERE c.conrelid OPERATOR(pg_catalog.=) part AND c.contype OPERATOR(pg_catalog.=) 'p');
        IF memmie._citus_key(part, pkey, 'PRIMARY KEY (id, created_at, user_id)') THEN
            changed := changed OPERATOR(pg_catalog.+) 1;
        END IF;
        PERFORM memmie._citus_on_workers(pg_catalog.format('SELECT memmie._citus_key(%L, %L, %L)',
                                         part, pkey, 'PRIMARY KEY (id, created_at, user_id)'));
    END LOOP;

    -- 3. Row-level security: Citus refuses subqueries in the policies of distributed tables,
    -- and the policies run on the workers, in the query on a shard, where nothing distributed
    -- may be read. The tenant tables' policy without its scalar subqueries (the same rows; the
    -- functions are then called per row), with _unrestricted_on_node() (the admin level from
    -- this node's placement of grantees, sql/access.sql) for _unrestricted();
    -- content_storage's (an EXISTS over user_content_refs) cannot do without a subquery, so
    -- there only the admin level reads the table directly (functions read content for the
    -- bound user as before). blob_edges has a user_id since 0.3.0 and gets the tenant tables'
    -- policy (a table without one would be admin-level only, as content_storage).
    FOR k IN
        SELECT pc.relid::pg_catalog.regclass::pg_catalog.text AS tab,
               CASE WHEN pc.relid OPERATOR(pg_catalog.=) 'memmie.content_storage'::pg_catalog.regclass
                      OR NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                                     WHERE a.attrelid OPERATOR(pg_catalog.=) pc.relid
                                       AND a.attname OPERATOR(pg_catalog.=) 'user_id' AND NOT a.attisdropped)
                    THEN 'memmie._unrestricted_on_node()'
                    ELSE 'user_id OPERATOR(pg_catalog.=) memmie._bound_user() OR memmie._unrestricted_on_node()' END AS qual
        FROM (SELECT pol.polrelid AS relid FROM pg_catalog.pg_policy pol
              WHERE pol.polname OPERATOR(pg_catalog.=) 'tenant_read'
                AND pg_catalog.pg_get_expr(pol.polqual, pol.polrelid) OPERATOR(pg_catalog.!~~) '%_unrestricted_on_node()%'
                AND NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                                WHERE d.logicalrelid OPERATOR(pg_catalog.=) pol.polrelid)) pc
    LOOP
        EXECUTE pg_catalog.format('ALTER POLICY tenant_read ON %s USING (%s)', k.tab, k.qual);
        PERFORM memmie._citus_on_workers(pg_catalog.format('ALTER POLICY tenant_read ON %s USING (%s)', k.tab, k.qual));
        changed := changed OPERATOR(pg_catalog.+) 1;
    END LOOP;

    -- The access levels' function grants on every node: a trigger on grantees (a reference
    -- table) grants them on each node's placement (sql/access.sql _grantees_on_node). Made
    -- before placement, so that Citus gives it to every placement.
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_trigger g
                   WHERE g.tgrelid OPERATOR(pg_catalog.=) 'memmie.grantees'::pg_catalog.regclass
                     AND g.tgname OPERATOR(pg_catalog.=) 'grants_on_node') THEN
        CREATE TRIGGER grants_on_node AFTER INSERT OR UPDATE OR DELETE ON memmie.grantees
            FOR EACH ROW EXECUTE FUNCTION memmie._grantees_on_node();
    END IF;
    -- 3b. Triggers with transition tables cannot run on a shard: provider_processing's
    -- cancel_orphan_jobs (statement level) becomes cancel_orphan_job (row level), on the
    -- coordinator and on the workers' copies, before the table is placed (its shards get it).
    PERFORM memmie._citus_on_workers(
        'DROP TRIGGER IF EXISTS cancel_orphan_jobs ON memmie.provider_processing; '
        'CREATE OR REPLACE TRIGGER cancel_orphan_job AFTER DELETE ON memmie.provider_processing '
        'FOR EACH ROW EXECUTE FUNCTION memmie._cancel_orphan_job()');
    DROP TRIGGER IF EXISTS cancel_orphan_jobs ON memmie.provider_processing;
    CREATE OR REPLACE TRIGGER cancel_orphan_job AFTER DELETE ON memmie.provider_processing
        FOR EACH ROW EXECUTE FUNCTION memmie._cancel_orphan_job();

    -- 4. Placement, in dependency order: the reference tables, then user_contexts, then the
    -- tables co-located with it, then content_storage.
    FOR t IN SELECT * FROM (VALUES
        (1, 'memmie.providers', 'reference', NULL),
        (2, 'memmie.provider_versions', 'reference', NULL),
        (3, 'memmie.provider_metrics', 'reference', NULL),
        (3, 'memmie.grantees', 'reference', NULL),
        (4, 'memmie.user_contexts', 'distributed', 'user_id'),
        (5, 'memmie.blobs', 'distributed', 'user_id'),
        (6, 'memmie.blob_versions', 'distributed', 'user_id'),
        (6, 'memmie.blob_snapshots', 'distributed', 'user_id'),
        (6, 'memmie.blob_edges', 'distributed', 'user_id'),
        (7, 'memmie.user_content_refs', 'distributed', 'user_id'),
        (8, 'memmie.deltas', 'distributed', 'user_id'),
        (9, 'memmie.events', 'distributed', 'user_id'),
        (10, 'memmie.provider_processing', 'distributed', 'user_id'),
        (11, 'memmie.jobs', 'distributed', 'user_id'),
        (12, 'memmie.usage_metrics', 'distributed', 'user_id'),
        (13, 'memmie.usage_increments', 'distributed', 'user_id'),
        (14, 'memmie.content_storage', 'by content', 'content_hash')) AS v(n, tab, how, col)
    WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                      WHERE d.logicalrelid OPERATOR(pg_catalog.=) v.tab::pg_catalog.regclass)
    ORDER BY n
    LOOP
        IF t.how OPERATOR(pg_catalog.=) 'reference' THEN
            PERFORM pg_catalog.create_reference_table(t.tab::pg_catalog.regclass);
        ELSIF t.tab OPERATOR(pg_catalog.=) 'memmie.user_contexts' OR t.how OPERATOR(pg_catalog.=) 'by content' THEN
            PERFORM pg_catalog.create_distributed_table(t.tab::pg_catalog.regclass, t.col, colocate_with => 'none');
        ELSE
            PERFORM pg_catalog.create_distributed_table(t.tab::pg_catalog.regclass, t.col,
                                                        colocate_with => 'memmie.user_contexts');
        END IF;
        placed := placed OPERATOR(pg_catalog.||) pg_catalog.jsonb_build_object(t.tab, t.how);
    END LOOP;

    -- 4b. Citus copies the rows a table held into its shards and leaves them in the
    -- coordinator's table too, where nothing reads them but PostgreSQL's own checks do (a new
    -- partition is checked against the DEFAULT partition's stale rows there): a database that
    -- had data before distribute() (an upgraded one) drops them, before the foreign keys are
    -- made again (the truncation would cascade along them).
    FOR t IN SELECT x.key AS tab FROM pg_catalog.jsonb_each(placed) x LOOP
        PERFORM pg_catalog.truncate_local_data_after_distributing_table(t.tab::pg_catalog.regclass);
    END LOOP;

    -- 5. The foreign keys again, between placed tables.
    FOR k IN SELECT * FROM pg_catalog.jsonb_to_recordset(coalesce(fks, '[]')) AS x(tab text, name text, def text, old text)
             WHERE x.def IS NOT NULL LOOP
        EXECUTE pg_catalog.format('ALTER TABLE %s ADD CONSTRAINT %I %s', k.tab, k.name, k.def);
    END LOOP;

    -- 6. The access levels of the roles granted before: the same privileges on every node
    -- (the functions' EXECUTE on the workers through the trigger above).
    PERFORM memmie._reapply_grants();

    RETURN pg_catalog.jsonb_build_object('placed', placed, 'keys_changed', changed,
        'coordinator_only', pg_catalog.jsonb_build_array());
END
$$;

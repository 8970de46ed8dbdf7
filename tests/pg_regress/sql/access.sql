-- Access levels and tenant isolation (issue 14; sql/access.sql).
--
-- Four roles: one per level and one with no grant. Every public function is called as each,
-- and the outcome compared with the level lists; then each user-level function is called by a
-- session bound to user A with user B's ids (the same answer as for an id that does not
-- exist), and SELECT on every table shows A's rows only.
SET search_path = pg_catalog, pg_temp;
CREATE ROLE memmie_acc_app;
CREATE ROLE memmie_acc_worker;
CREATE ROLE memmie_acc_admin;
CREATE ROLE memmie_acc_none;
SELECT memmie.grant_app('memmie_acc_app'), memmie.grant_worker('memmie_acc_worker'),
       memmie.grant_admin('memmie_acc_admin');
SELECT role_name, level FROM memmie.access_levels('memmie_acc_app');
SELECT role_name, level FROM memmie.grantees WHERE role_name LIKE 'memmie_acc_%' ORDER BY 1, 2;
-- granting twice is a no-op; an unknown role is 42704 (from regrole), NULL 22023
SELECT memmie.grant_app('memmie_acc_app');
SELECT t.err($$SELECT memmie.grant_app('memmie_acc_nobody')$$);
SELECT t.err($$SELECT memmie.grant_app(NULL)$$);
GRANT USAGE ON SCHEMA t TO PUBLIC;
-- the grant functions are the owner's: no level may call them
SET ROLE memmie_acc_admin;
SELECT t.err($$SELECT memmie.grant_app('memmie_acc_none')$$);
RESET ROLE;

-- Data of two users, A and B, as the owner.
CREATE TABLE t.acc_ids (name text PRIMARY KEY, id text);
GRANT SELECT ON t.acc_ids TO PUBLIC;
SELECT id FROM memmie.register_provider('{"id": "acc-prov", "name": "A", "version": "1",
    "trigger_events": ["blob.created"], "supported_types": ["text/*"]}');
SELECT (memmie.set_provider_status('acc-prov', 'active')).status;
INSERT INTO t.acc_ids
SELECT 'a_blob', (memmie.create_blob('acc00000-0000-0000-0000-00000000000a', 'A text', 'text/plain')).id
UNION ALL SELECT 'a_json', (memmie.create_blob('acc00000-0000-0000-0000-00000000000a', '{"n": 1}', 'application/json')).id
UNION ALL SELECT 'b_blob', (memmie.create_blob('acc00000-0000-0000-0000-00000000000b', 'B secret', 'text/plain')).id
UNION ALL SELECT 'b_json', (memmie.create_blob('acc00000-0000-0000-0000-00000000000b', '{"n": 2}', 'application/json')).id
UNION ALL SELECT 'a_user', 'acc00000-0000-0000-0000-00000000000a'
UNION ALL SELECT 'b_user', 'acc00000-0000-0000-0000-00000000000b';
INSERT INTO t.acc_ids SELECT 'a_hash', memmie.sha256('A text')
UNION ALL SELECT 'b_hash', memmie.sha256('B secret')
UNION ALL SELECT 'b_delta', (SELECT d.id::text FROM memmie.deltas d JOIN t.acc_ids i ON i.name = 'b_json' AND d.blob_id = i.id::uuid)
UNION ALL SELECT 'b_job', (memmie.enqueue_job('acc.b', 'acc00000-0000-0000-0000-00000000000b', '{}')).id
UNION ALL SELECT 'a_job', (memmie.enqueue_job('acc.a', 'acc00000-0000-0000-0000-00000000000a', '{}')).id;
SELECT memmie.dispatch_events(1000) >= 2 AS dispatched;
CREATE FUNCTION t.acc(n text) RETURNS text LANGUAGE sql STABLE AS $$ SELECT id FROM t.acc_ids WHERE name = n $$;

-- ---------------------------------------------------------------------------------------------
-- The allow / deny table: one call per public function, run as each role (the app role bound
-- to user A). 'denied' is "permission denied" (for the function, or for schema memmie); 'ok' ran; anything else is the
-- SQLSTATE it raised after passing the privilege check.
CREATE TABLE t.acc_calls (fn text PRIMARY KEY, q text NOT NULL);
INSERT INTO t.acc_calls VALUES
('create_blob', $$SELECT memmie.create_blob(t.acc('a_user')::uuid, 'new', 'text/plain')$$),
('create_external_blob', $$SELECT memmie.create_external_blob(t.acc('a_user')::uuid, repeat('c', 64), 3, 'text/plain', 's3', 'acc/x')$$),
('apply_delta', $$SELECT memmie.apply_delta(t.acc('a_json')::uuid, '[{"op": "add", "path": "/metadata/k", "value": 1}]')$$),
('update_content', $$SELECT memmie.update_content(t.acc('a_blob')::uuid, 'A text 2')$$),
('update_external_content', $$SELECT memmie.update_external_content(t.acc('a_blob')::uuid, repeat('d', 64), 3, 's3', 'acc/y')$$),
('revert_blob', $$SELECT memmie.revert_blob(t.acc('a_json')::uuid, 1)$$),
('delete_blob', $$SELECT memmie.delete_blob(t.acc('a_blob')::uuid)$$),
('undelete_blob', $$SELECT memmie.delete_blob(t.acc('a_json')::uuid), memmie.undelete_blob(t.acc('a_json')::uuid)$$),
('squash_history', $$SELECT memmie.squash_history(t.acc('a_json')::uuid, 1)$$),
('blob_state', $$SELECT memmie.blob_state(t.acc('a_json')::uuid)$$),
('blob_content', $$SELECT memmie.blob_content(t.acc('a_json')::uuid)$$),
('blob_history', $$SELECT count(*) FROM memmie.blob_history(t.acc('a_json')::uuid)$$),
('find_blobs', $$SELECT count(*) FROM memmie.find_blobs(t.acc('a_user')::uuid)$$),
('get_content', $$SELECT memmie.get_content(t.acc('a_hash'))$$),
('derive_blob', $$SELECT memmie.derive_blob(ARRAY[t.acc('a_json')::uuid], 'acc-prov', 'copy', 'd', 'text/plain')$$),
('add_edge', $$SELECT memmie.add_edge(t.acc('a_json')::uuid, t.acc('a_blob')::uuid, 'acc-prov', 'link')$$),
('ancestors', $$SELECT count(*) FROM memmie.ancestors(t.acc('a_json')::uuid)$$),
('descendants', $$SELECT count(*) FROM memmie.descendants(t.acc('a_json')::uuid)$$),
('lineage', $$SELECT memmie.lineage(t.acc('a_json')::uuid)$$),
('dag_stats', $$SELECT memmie.dag_stats(t.acc('a_json')::uuid)$$),
('user_usage', $$SELECT count(*) FROM memmie.user_usage(t.acc('a_user')::uuid)$$),
('enqueue_job', $$SELECT memmie.enqueue_job('acc.x', t.acc('a_user')::uuid, '{}')$$),
('cancel_job', $$SELECT memmie.cancel_job(t.acc('a_job'))$$),
('record_api_call', $$SELECT memmie.record_api_call(t.acc('a_user')::uuid, true, 3)$$),
('current_user_id', $$SELECT memmie.current_user_id()$$),
('access_levels', $$SELECT count(*) FROM memmie.access_levels()$$),
('events_since', $$SELECT count(*) FROM memmie.events_since(0, 5)$$),
('dispatch_events', $$SELECT memmie.dispatch_events(10)$$),
('claim_jobs', $$SELECT count(*) FROM memmie.claim_jobs('acc-w', 1, '1 minute', ARRAY['acc.none'])$$),
('heartbeat_job', $$SELECT memmie.heartbeat_job('acc-no-such-job', 'acc-w')$$),
('complete_job', $$SELECT memmie.complete_job('acc-no-such-job', 'acc-w', '{}')$$),
('fail_job', $$SELECT memmie.fail_job('acc-no-such-job', 'acc-w', 'x')$$),
('complete_processing', $$SELECT memmie.complete_processing('acc00000-0000-0000-0000-0000000000ff', 'acc-w', '{}')$$),
('fail_processing', $$SELECT memmie.fail_processing('acc00000-0000-0000-0000-0000000000ff', 'acc-w', 'x')$$),
('pending_work', $$SELECT count(*) FROM memmie.pending_work('memmie.process')$$),
('processing_input', $$SELECT memmie.processing_input('acc00000-0000-0000-0000-0000000000ff', 'acc-w')$$),
('register_provider', $$SELECT memmie.register_provider('{"id": "acc-prov2", "name": "B", "version": "1", "trigger_events": ["blob.created"], "supported_types": ["text/*"]}')$$),
('set_provider_status', $$SELECT memmie.set_provider_status('acc-prov', 'active')$$),
('backfill', $$SELECT memmie.backfill('acc-prov')$$),
('reprocess', $$SELECT memmie.reprocess(t.acc('b_blob')::uuid, 'acc-prov')$$),
('maintenance', $$SELECT memmie.maintenance() IS NOT NULL$$),
('check', $$SELECT count(*) FROM memmie.check()$$),
('gc_content', $$SELECT count(*) FROM memmie.gc_content('1 day')$$),
('put_content', $$SELECT memmie.put_content('acc put')$$),
('verify_content', $$SELECT count(*) FROM memmie.verify_content(t.acc('b_hash'))$$),
('create_partitions', $$SELECT memmie.create_partitions('memmie.events', '2032-01-01', 1)$$),
('drop_old_partitions', $$SELECT memmie.drop_old_partitions('memmie.events', '3650 days')$$),
('ensure_partitions', $$SELECT memmie.ensure_partitions()$$),
('fold_usage', $$SELECT memmie.fold_usage()$$),
('rollup_metrics', $$SELECT memmie.rollup_metrics()$$),
('refresh_views', $$SELECT memmie.refresh_views() IS NOT NULL$$),
('refresh_user_blob_summary', $$SELECT memmie.refresh_user_blob_summary()$$),
('set_quota', $$SELECT memmie.set_quota(t.acc('b_user')::uuid, '{"max_blobs": 1000}')$$),
('schedule_maintenance', $$SELECT memmie.schedule_maintenance('*/5 * * * *')$$),
('unschedule_maintenance', $$SELECT memmie.unschedule_maintenance()$$),
('distribute', $$SELECT memmie.distribute()$$),
('grant_app', $$SELECT memmie.grant_app('memmie_acc_none')$$),
('grant_worker', $$SELECT memmie.grant_worker('memmie_acc_none')$$),
('grant_admin', $$SELECT memmie.grant_admin('memmie_acc_none')$$),
('revoke_access', $$SELECT memmie.revoke_access('memmie_acc_none')$$),
('sha256', $$SELECT memmie.sha256('x')$$),
('jsonb_patch', $$SELECT memmie.jsonb_patch('{}', '[]')$$),
('jsonb_diff', $$SELECT memmie.jsonb_diff('{}', '{}')$$);
-- every public function (not a trigger function) has a call here
SELECT p.proname AS without_a_call FROM pg_proc p
WHERE p.pronamespace = 'memmie'::regnamespace AND p.proname !~ '^_'
  AND p.prorettype <> 'trigger'::regtype
  AND p.proname NOT IN (SELECT fn FROM t.acc_calls)
ORDER BY 1;

CREATE TABLE t.acc_results (who text, fn text, outcome text, PRIMARY KEY (who, fn));
GRANT INSERT ON t.acc_results TO PUBLIC;
GRANT SELECT ON t.acc_calls TO PUBLIC;
-- Each call in a transaction rolled back (a subtransaction: the EXCEPTION block), so that every
-- role sees the same data.
CREATE FUNCTION t.acc_run(who text) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c record;
    r text;
BEGIN
    FOR c IN SELECT * FROM t.acc_calls ORDER BY fn LOOP
        BEGIN
            r := t.err(c.q);
            RAISE SQLSTATE 'TTTTT';
        EXCEPTION WHEN SQLSTATE 'TTTTT' THEN
            NULL;
        END;
        INSERT INTO t.acc_results VALUES (who, c.fn,
            CASE WHEN r LIKE '42501: permission denied for %' THEN 'denied'
                 WHEN r = 'ok' THEN 'ok' ELSE left(r, 5) END);
    END LOOP;
END
$$;
SET ROLE memmie_acc_app;
SET memmie.user_id = 'acc00000-0000-0000-0000-00000000000a';
SELECT t.acc_run('app');
RESET memmie.user_id;
SET ROLE memmie_acc_worker;
SELECT t.acc_run('worker');
SET ROLE memmie_acc_admin;
SELECT t.acc_run('admin');
SET ROLE memmie_acc_none;
SELECT t.acc_run('none');
RESET ROLE;
SELECT t.acc_run('owner');
SELECT fn,
       max(outcome) FILTER (WHERE who = 'app') AS app,
       max(outcome) FILTER (WHERE who = 'worker') AS worker,
       max(outcome) FILTER (WHERE who = 'admin') AS admin,
       max(outcome) FILTER (WHERE who = 'none') AS "none",
       max(outcome) FILTER (WHERE who = 'owner') AS owner
FROM t.acc_results GROUP BY fn ORDER BY fn;
-- the table agrees with the level lists: a level's functions pass the privilege check, no other does
SELECT r.who, r.fn, r.outcome FROM t.acc_results r
WHERE r.who IN ('app', 'worker', 'admin')
  AND (r.outcome = 'denied') = (r.fn = ANY (memmie._level_function_names(r.who))
                                OR r.fn IN ('sha256', 'jsonb_patch', 'jsonb_diff'))
ORDER BY 1, 2;
SELECT count(*) AS cells FROM t.acc_results;

-- What SELECT shows of every table the app level may read (for the caller's bound user).
CREATE FUNCTION t.acc_visible() RETURNS TABLE (tbl text, visible bigint, others bigint)
LANGUAGE plpgsql AS $$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['user_contexts', 'content_storage', 'blobs', 'blob_versions', 'user_content_refs',
                             'deltas', 'blob_edges', 'provider_processing', 'events', 'jobs', 'usage_metrics'] LOOP
        tbl := r;
        IF r = 'content_storage' THEN
            EXECUTE 'SELECT count(*), count(*) FILTER (WHERE content_hash = $1) FROM memmie.content_storage'
                INTO visible, others USING t.acc('b_hash');
        ELSIF r = 'blob_edges' THEN
            EXECUTE 'SELECT count(*), 0::bigint FROM memmie.blob_edges' INTO visible, others;
        ELSE
            EXECUTE format('SELECT count(*), count(*) FILTER (WHERE user_id <> $1) FROM memmie.%I', r)
                INTO visible, others USING memmie.current_user_id();
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;

-- ---------------------------------------------------------------------------------------------
-- Bound to user A: user B's ids are answered as ids that do not exist.
CREATE TABLE t.acc_cross (what text PRIMARY KEY, theirs text NOT NULL, unknown text NOT NULL);
INSERT INTO t.acc_cross VALUES
('apply_delta', $$SELECT memmie.apply_delta(t.acc('b_json')::uuid, '[]')$$, $$SELECT memmie.apply_delta('acc00000-0000-0000-0000-0000000000ee', '[]')$$),
('apply_delta caused_by', $$SELECT memmie.apply_delta(t.acc('a_json')::uuid, '[]', caused_by_delta_id => t.acc('b_delta')::uuid)$$, $$SELECT memmie.apply_delta(t.acc('a_json')::uuid, '[]', caused_by_delta_id => 'acc00000-0000-0000-0000-0000000000ee')$$),
('update_content', $$SELECT memmie.update_content(t.acc('b_blob')::uuid, 'x')$$, $$SELECT memmie.update_content('acc00000-0000-0000-0000-0000000000ee', 'x')$$),
('update_external_content', $$SELECT memmie.update_external_content(t.acc('b_blob')::uuid, repeat('d', 64), 3, 's3', 'acc/y')$$, $$SELECT memmie.update_external_content('acc00000-0000-0000-0000-0000000000ee', repeat('d', 64), 3, 's3', 'acc/y')$$),
('revert_blob', $$SELECT memmie.revert_blob(t.acc('b_json')::uuid, 1)$$, $$SELECT memmie.revert_blob('acc00000-0000-0000-0000-0000000000ee', 1)$$),
('delete_blob', $$SELECT memmie.delete_blob(t.acc('b_blob')::uuid)$$, $$SELECT memmie.delete_blob('acc00000-0000-0000-0000-0000000000ee')$$),
('delete_blob hard', $$SELECT memmie.delete_blob(t.acc('b_blob')::uuid, true)$$, $$SELECT memmie.delete_blob('acc00000-0000-0000-0000-0000000000ee', true)$$),
('undelete_blob', $$SELECT memmie.undelete_blob(t.acc('b_blob')::uuid)$$, $$SELECT memmie.undelete_blob('acc00000-0000-0000-0000-0000000000ee')$$),
('squash_history', $$SELECT memmie.squash_history(t.acc('b_json')::uuid, 1)$$, $$SELECT memmie.squash_history('acc00000-0000-0000-0000-0000000000ee', 1)$$),
('blob_state', $$SELECT memmie.blob_state(t.acc('b_json')::uuid)$$, $$SELECT memmie.blob_state('acc00000-0000-0000-0000-0000000000ee')$$),
('blob_state version', $$SELECT memmie.blob_state(t.acc('b_json')::uuid, 1)$$, $$SELECT memmie.blob_state('acc00000-0000-0000-0000-0000000000ee', 1)$$),
('blob_content', $$SELECT memmie.blob_content(t.acc('b_blob')::uuid)$$, $$SELECT memmie.blob_content('acc00000-0000-0000-0000-0000000000ee')$$),
('blob_history', $$SELECT memmie.blob_history(t.acc('b_blob')::uuid)$$, $$SELECT memmie.blob_history('acc00000-0000-0000-0000-0000000000ee')$$),
('descendants', $$SELECT memmie.descendants(t.acc('b_blob')::uuid)$$, $$SELECT memmie.descendants('acc00000-0000-0000-0000-0000000000ee')$$),
('ancestors', $$SELECT memmie.ancestors(t.acc('b_blob')::uuid)$$, $$SELECT memmie.ancestors('acc00000-0000-0000-0000-0000000000ee')$$),
('lineage', $$SELECT memmie.lineage(t.acc('b_blob')::uuid)$$, $$SELECT memmie.lineage('acc00000-0000-0000-0000-0000000000ee')$$),
('dag_stats', $$SELECT memmie.dag_stats(t.acc('b_blob')::uuid)$$, $$SELECT memmie.dag_stats('acc00000-0000-0000-0000-0000000000ee')$$),
('derive_blob', $$SELECT memmie.derive_blob(ARRAY[t.acc('b_blob')::uuid], 'acc-prov', 'copy', 'd', 'text/plain')$$, $$SELECT memmie.derive_blob(ARRAY['acc00000-0000-0000-0000-0000000000ee'::uuid], 'acc-prov', 'copy', 'd', 'text/plain')$$),
('add_edge parent', $$SELECT memmie.add_edge(t.acc('b_blob')::uuid, t.acc('a_blob')::uuid, 'acc-prov', 'link')$$, $$SELECT memmie.add_edge('acc00000-0000-0000-0000-0000000000ee', t.acc('a_blob')::uuid, 'acc-prov', 'link')$$),
('add_edge child', $$SELECT memmie.add_edge(t.acc('a_blob')::uuid, t.acc('b_blob')::uuid, 'acc-prov', 'link')$$, $$SELECT memmie.add_edge(t.acc('a_blob')::uuid, 'acc00000-0000-0000-0000-0000000000ee', 'acc-prov', 'link')$$),
('get_content', $$SELECT memmie.get_content(t.acc('b_hash'))$$, $$SELECT memmie.get_content(repeat('e', 64))$$),
('cancel_job', $$SELECT memmie.cancel_job(t.acc('b_job'))$$, $$SELECT memmie.cancel_job('acc00000-0000-0000-0000-0000000000ee')$$),
('find_blobs parent', $$SELECT memmie.find_blobs(t.acc('a_user')::uuid, parent_blob_id => t.acc('b_blob')::uuid)$$, $$SELECT memmie.find_blobs(t.acc('a_user')::uuid, parent_blob_id => 'acc00000-0000-0000-0000-0000000000ee')$$);
CREATE FUNCTION t.acc_mask(r text) RETURNS text LANGUAGE sql AS $$
    SELECT replace(replace(r, t.acc('b_hash'), '<hash>'), repeat('e', 64), '<hash>')
$$;
CREATE TABLE t.acc_cross_results (what text, theirs text, unknown text);
GRANT INSERT ON t.acc_cross_results TO PUBLIC;
GRANT SELECT ON t.acc_cross TO PUBLIC;
SET ROLE memmie_acc_app;
SET memmie.user_id = 'acc00000-0000-0000-0000-00000000000a';
INSERT INTO t.acc_cross_results SELECT what, t.err(theirs), t.err(unknown) FROM t.acc_cross;
-- and with no user bound: 42501, before any lookup
RESET memmie.user_id;
INSERT INTO t.acc_cross_results SELECT what || ' (no user bound)', t.err(theirs), t.err(unknown) FROM t.acc_cross;
RESET ROLE;
SELECT what, t.acc_mask(theirs) AS answer, t.acc_mask(theirs) = t.acc_mask(unknown) AS same_as_unknown
FROM t.acc_cross_results ORDER BY what;

-- Another user's user_id argument is 42501 (bound to A); NULL stands for the bound user.
SET ROLE memmie_acc_app;
SET memmie.user_id = 'acc00000-0000-0000-0000-00000000000a';
SELECT t.err($$SELECT memmie.create_blob(t.acc('b_user')::uuid, 'x', 'text/plain')$$);
SELECT t.err($$SELECT memmie.create_external_blob(t.acc('b_user')::uuid, repeat('c', 64), 3, 'text/plain', 's3', 'acc/x')$$);
SELECT t.err($$SELECT memmie.find_blobs(t.acc('b_user')::uuid)$$);
SELECT t.err($$SELECT memmie.user_usage(t.acc('b_user')::uuid)$$);
SELECT t.err($$SELECT memmie.enqueue_job('acc.x', t.acc('b_user')::uuid, '{}')$$);
SELECT t.err($$SELECT memmie.enqueue_job('acc.x', t.acc('a_user')::uuid, '{}', job_id => t.acc('b_job'))$$);
SELECT t.err($$SELECT memmie.record_api_call(t.acc('b_user')::uuid, true, 1)$$);
SELECT t.err($$SELECT memmie.create_blob(NULL, 'x', 'text/plain')$$);

-- SELECT shows A's rows only, in every table the app level may read; content only what A
-- references; no write is allowed, not even to A's own rows.
SELECT tbl, visible > 0 AS some_visible, others FROM t.acc_visible() ORDER BY 1;
SELECT t.err($$UPDATE memmie.blobs SET metadata = '{}' WHERE user_id = memmie.current_user_id()$$);
SELECT t.err($$DELETE FROM memmie.blob_versions$$);
SELECT t.err($$INSERT INTO memmie.user_contexts (user_id) VALUES (gen_random_uuid())$$);
SELECT t.err($$TRUNCATE memmie.events$$);
SELECT t.err($$SELECT * FROM memmie.deltas_default$$);
SELECT t.err($$SELECT * FROM memmie.user_blob_summary$$);
SELECT t.err($$SELECT * FROM memmie.grantees$$);
-- bound to nobody: nothing visible
RESET memmie.user_id;
SELECT tbl, visible > 0 AS some_visible, others FROM t.acc_visible() ORDER BY 1;
RESET ROLE;
-- the admin level sees everyone's rows
SET ROLE memmie_acc_admin;
SELECT count(DISTINCT user_id) >= 2 AS sees_both FROM memmie.blobs
WHERE user_id IN ('acc00000-0000-0000-0000-00000000000a', 'acc00000-0000-0000-0000-00000000000b');
SELECT count(*) AS b_versions FROM memmie.blob_versions WHERE user_id = 'acc00000-0000-0000-0000-00000000000b';
RESET ROLE;

-- memmie.user_id must be a uuid (22023 when set); empty means no user.
SELECT t.err($$SET memmie.user_id = 'alice'$$);
SELECT t.err($$SELECT set_config('memmie.user_id', 'acc00000-0000-0000-0000-00000000000a1', true)$$);
SELECT t.err($$SET memmie.user_id = '{ACC00000-0000-0000-0000-00000000000A}'$$);
SELECT memmie.current_user_id();
SET memmie.user_id = '';
SELECT memmie.current_user_id() IS NULL AS unbound;
BEGIN;
SELECT set_config('memmie.user_id', 'acc00000-0000-0000-0000-00000000000b', true) IS NOT NULL AS bound_for_the_transaction;
SELECT memmie.current_user_id();
COMMIT;
SELECT memmie.current_user_id() IS NULL AS unbound_after_commit;

-- The worker level reads a job's input only while it holds the lease.
SET ROLE memmie_acc_worker;
CREATE TEMP TABLE held AS SELECT * FROM memmie.claim_jobs('acc-w1', 10, '1 minute', ARRAY['memmie.process']);
SELECT convert_from(p.content, 'UTF8') AS content, p.content_type, p.provider_id, p.version,
       p.definition ->> 'id' AS definition_of
FROM held h CROSS JOIN LATERAL memmie.processing_input(h.id::uuid, 'acc-w1') p
WHERE p.blob_id IN (t.acc('a_blob')::uuid, t.acc('b_blob')::uuid) ORDER BY 1, 3;
SELECT t.err(format('SELECT memmie.processing_input(%L, %L)', (SELECT min(id) FROM held), 'acc-w2'));
SELECT t.err(format('SELECT memmie.processing_input(%L, %L)', gen_random_uuid(), 'acc-w1'));
SELECT count(*) AS providers_readable FROM memmie.providers WHERE id = 'acc-prov';
SELECT t.err($$SELECT count(*) FROM memmie.blobs$$);
SELECT t.err($$SELECT memmie.blob_content(t.acc('b_blob')::uuid)$$);
SELECT count(*) >= 2 AS failed FROM held h, LATERAL memmie.fail_processing(h.id::uuid, 'acc-w1', 'done here', false) f;
DROP TABLE held;
RESET ROLE;

-- The policy function of a Citus cluster (memmie._unrestricted_on_node, src/access.rs): on a
-- single node the same answer as _unrestricted() for every level. It keeps its answer for the
-- rest of a command; the next statement after a grant in the same transaction sees the grant.
SET ROLE memmie_acc_app;
SELECT memmie._unrestricted_on_node() AS app_on_node, memmie._unrestricted() AS app;
SET ROLE memmie_acc_worker;
SELECT memmie._unrestricted_on_node() AS worker_on_node, memmie._unrestricted() AS worker;
SET ROLE memmie_acc_admin;
SELECT memmie._unrestricted_on_node() AS admin_on_node, memmie._unrestricted() AS admin;
RESET ROLE;
SELECT memmie._unrestricted_on_node() AS owner_on_node;
BEGIN;
SET LOCAL ROLE memmie_acc_app;
SELECT memmie._unrestricted_on_node() AS before_grant;
RESET ROLE;
SELECT memmie.grant_admin('memmie_acc_app');
SET LOCAL ROLE memmie_acc_app;
SELECT memmie._unrestricted_on_node() AS after_grant,
       (SELECT count(*) FROM generate_series(1, 3) i WHERE i > 0 AND memmie._unrestricted_on_node()) AS rows_seen;
ROLLBACK;

-- revoke_access takes every level and privilege away
SELECT memmie.revoke_access('memmie_acc_app');
SELECT count(*) AS levels_left FROM memmie.grantees WHERE role_name = 'memmie_acc_app';
SET ROLE memmie_acc_app;
SET memmie.user_id = 'acc00000-0000-0000-0000-00000000000a';
SELECT t.err($$SELECT memmie.find_blobs(t.acc('a_user')::uuid)$$);
SELECT t.err($$SELECT count(*) FROM memmie.blobs$$);
RESET memmie.user_id;
RESET ROLE;

-- Clean up: the users' data, jobs, the provider and the roles.
SELECT count(memmie.cancel_job(id)) AS cancelled FROM memmie.jobs WHERE job_type LIKE 'acc.%' AND status = 'queued';
SELECT (memmie.set_provider_status('acc-prov', 'inactive')).status;
SELECT count(memmie.delete_blob(id, hard => true)) >= 4 AS deleted FROM memmie.blobs
WHERE user_id IN ('acc00000-0000-0000-0000-00000000000a', 'acc00000-0000-0000-0000-00000000000b');
SELECT count(*) > 0 AS collected FROM memmie.gc_content('0 seconds');
-- (rows a user's functions leave: its events, jobs, processings, metrics; as the tests before)
SELECT memmie.fold_usage() >= 0 AS usage_folded;
DELETE FROM memmie.user_contexts WHERE user_id IN ('acc00000-0000-0000-0000-00000000000a', 'acc00000-0000-0000-0000-00000000000b');
DELETE FROM memmie.jobs WHERE id IN (SELECT job_id FROM memmie.provider_processing WHERE provider_id = 'acc-prov');
DELETE FROM memmie.provider_processing WHERE provider_id = 'acc-prov';
DELETE FROM memmie.providers WHERE id = 'acc-prov';
SELECT memmie.revoke_access(r::regrole) FROM unnest(ARRAY['memmie_acc_worker', 'memmie_acc_admin', 'memmie_acc_none']) r;
DROP FUNCTION t.acc_visible(), t.acc_run(text), t.acc_mask(text), t.acc(text);
DROP TABLE t.acc_ids, t.acc_calls, t.acc_results, t.acc_cross, t.acc_cross_results;
REVOKE USAGE ON SCHEMA t FROM PUBLIC;
DROP ROLE memmie_acc_app, memmie_acc_worker, memmie_acc_admin, memmie_acc_none;
RESET search_path;

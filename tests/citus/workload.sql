-- The workload of tests/citus/citus.sh, run on the coordinator after CREATE EXTENSION memmie.
-- Each "-- step: NAME" block runs in its own session, ON_ERROR_STOP; a failing step is reported
-- with its error and the next one runs (what fails on Citus: tests/citus/FINDINGS.md). Steps
-- pass ids on through citus_test.ids, a table of the coordinator.
-- Eight users (their shards on both workers: see invariants.sql), the same content stored by
-- all of them, a DAG with a frontier of 1,100, the provider pipeline, events, GC, partitions
-- made while DEFAULT holds rows (no partition exists before), maintenance().

-- step: scratch table for ids
CREATE SCHEMA citus_test;
CREATE TABLE citus_test.ids (kind text NOT NULL, name text NOT NULL, id text NOT NULL);
CREATE FUNCTION citus_test.user_n(i int) RETURNS uuid LANGUAGE sql IMMUTABLE
    AS $$ SELECT format('%s-0000-4000-8000-000000000000', lpad(i::text, 8, '0'))::uuid $$;
-- a step that works on the ids of an earlier one fails when that one made none (not vacuously ok)
CREATE FUNCTION citus_test.need(p_kind text, p_n int) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT count(*) FROM citus_test.ids WHERE kind LIKE p_kind) < p_n THEN
        RAISE EXCEPTION 'an earlier step made fewer than % ids of kind %', p_n, p_kind;
    END IF;
END $$;

-- step: access levels: an app-level and an admin-level role, granted before distribute()
CREATE ROLE citus_app LOGIN;
CREATE ROLE citus_admin LOGIN;
SELECT memmie.grant_app('citus_app');
SELECT memmie.grant_admin('citus_admin');
GRANT USAGE ON SCHEMA citus_test TO citus_app, citus_admin;
GRANT SELECT, INSERT ON citus_test.ids TO citus_app, citus_admin;

-- step: [distributed] distribute()
SELECT memmie.distribute();

-- step: [distributed] distribute() again is a no-op
DO $$
DECLARE r jsonb := memmie.distribute();
BEGIN
    IF r->'placed' <> '{}' OR (r->>'keys_changed')::int <> 0 THEN
        RAISE EXCEPTION 'second distribute() changed something: %', r;
    END IF;
END $$;

-- step: register_provider (reference table)
SELECT memmie.register_provider('{"id": "summarizer", "name": "Summarizer", "version": "1",
    "trigger_events": ["blob.created"], "supported_types": ["text/*"]}');
SELECT memmie.register_provider('{"id": "splitter", "name": "Splitter", "version": "1",
    "trigger_events": [], "supported_types": ["application/octet-stream"]}');

-- step: create_blob, the same content for 8 users
INSERT INTO citus_test.ids
SELECT 'json', 'u' || i,
       (memmie.create_blob(citus_test.user_n(i), convert_to('{"title": "Plan", "steps": ["write"]}', 'UTF8'),
                           'application/json', metadata => '{"title": "Project plan"}', tags => '{draft}')).id::text
FROM generate_series(1, 8) i;

-- step: apply_delta
SELECT citus_test.need('json', 8);
SELECT memmie.apply_delta(id::uuid, '[{"op": "add", "path": "/content/steps/-", "value": "review"}]')
FROM citus_test.ids WHERE kind = 'json';
SELECT memmie.apply_delta(id::uuid, '[{"op": "replace", "path": "/metadata/title", "value": "v3"}]',
                          expected_version => 2)
FROM citus_test.ids WHERE kind = 'json';

-- step: update_content
SELECT citus_test.need('json', 8);
SELECT memmie.update_content(id::uuid, convert_to('{"title": "Plan", "steps": []}', 'UTF8'))
FROM citus_test.ids WHERE kind = 'json';

-- step: revert_blob
SELECT citus_test.need('json', 8);
SELECT memmie.revert_blob(id::uuid, 1) FROM citus_test.ids WHERE kind = 'json';

-- step: blob_state, blob_content, blob_history, find_blobs
SELECT citus_test.need('json', 8);
SELECT memmie.blob_state(id::uuid, 2), memmie.blob_content(id::uuid, 3),
       (SELECT count(*) FROM memmie.blob_history(id::uuid))
FROM citus_test.ids WHERE kind = 'json';
SELECT count(*) FROM memmie.find_blobs(citus_test.user_n(1), tags => '{draft}', text_query => 'project plan');

-- step: delete_blob (soft), undelete_blob
SELECT citus_test.need('json', 8);
SELECT memmie.delete_blob(id::uuid) FROM citus_test.ids WHERE kind = 'json' AND name IN ('u1', 'u2');
SELECT memmie.undelete_blob(id::uuid) FROM citus_test.ids WHERE kind = 'json' AND name = 'u1';

-- step: delete_blob (hard)
SELECT citus_test.need('json', 8);
SELECT memmie.delete_blob(id::uuid, hard => true) FROM citus_test.ids WHERE kind = 'json' AND name = 'u3';

-- step: access levels: an app-level role bound to user 5 (SET LOCAL, propagated) reads its rows only, on both workers
-- The documented way on Citus: citus.propagate_set_commands = local and SET LOCAL memmie.user_id
-- in a transaction block (a session SET or set_config() does not reach the workers).
SELECT citus_test.need('json', 8);
SET ROLE citus_app;
SET citus.propagate_set_commands = local;
BEGIN;
SET LOCAL memmie.user_id = '00000005-0000-4000-8000-000000000000';
DO $$
DECLARE
    me     uuid := '00000005-0000-4000-8000-000000000000';
    t      text;
    mine   bigint;
    others bigint;
BEGIN
    FOREACH t IN ARRAY ARRAY['user_contexts', 'blobs', 'blob_versions', 'user_content_refs', 'deltas',
                             'provider_processing', 'events', 'jobs', 'usage_metrics'] LOOP
        EXECUTE format('SELECT count(*) FILTER (WHERE user_id = $1), count(*) FILTER (WHERE user_id <> $1) FROM memmie.%I', t)
            INTO mine, others USING me;
        IF others <> 0 THEN
            RAISE EXCEPTION 'memmie.% shows % rows of other users to an app-level role bound to user 5', t, others;
        END IF;
        IF t IN ('user_contexts', 'blobs', 'blob_versions') AND mine = 0 THEN
            RAISE EXCEPTION 'memmie.% shows none of user 5''s rows to its app-level role', t;
        END IF;
    END LOOP;
    -- on the cluster content_storage is read directly by the admin level only
    IF EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = 'memmie.content_storage'::regclass)
       AND EXISTS (SELECT 1 FROM memmie.content_storage) THEN
        RAISE EXCEPTION 'memmie.content_storage shows rows to an app-level role';
    END IF;
    -- another user's blob is P0002, as one that does not exist
    BEGIN
        PERFORM memmie.blob_state((SELECT id::uuid FROM citus_test.ids WHERE kind = 'json' AND name = 'u6'));
        RAISE EXCEPTION 'user 6''s blob was visible to user 5';
    EXCEPTION WHEN no_data_found THEN NULL;
    END;
    -- writes are refused: memmie's functions are the only way to change anything
    BEGIN
        INSERT INTO memmie.blobs (user_id, content_hash, content_size, content_type) VALUES (me, repeat('0', 64), 0, 'text/plain');
        RAISE EXCEPTION 'an app-level role inserted into memmie.blobs';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
    BEGIN
        DELETE FROM memmie.blobs WHERE user_id = me;
        RAISE EXCEPTION 'an app-level role deleted from memmie.blobs';
    EXCEPTION WHEN insufficient_privilege THEN NULL;
    END;
END $$;
COMMIT;

-- step: access levels: without the bound user on the workers (a session SET) an app-level role sees no other user's rows
SET ROLE citus_app;
SET memmie.user_id = '00000005-0000-4000-8000-000000000000';
DO $$
DECLARE
    t      text;
    others bigint;
BEGIN
    FOREACH t IN ARRAY ARRAY['user_contexts', 'blobs', 'blob_versions', 'deltas', 'events', 'jobs'] LOOP
        EXECUTE format('SELECT count(*) FILTER (WHERE user_id IS DISTINCT FROM $1) FROM memmie.%I', t)
            INTO others USING '00000005-0000-4000-8000-000000000000'::uuid;
        IF others <> 0 THEN
            RAISE EXCEPTION 'memmie.% shows % rows of other users to a session whose user did not reach the workers', t, others;
        END IF;
    END LOOP;
END $$;

-- step: access levels: memmie's functions work for the app-level role's user, and only for it
SET ROLE citus_app;
SET citus.propagate_set_commands = local;
BEGIN;
SET LOCAL memmie.user_id = '00000005-0000-4000-8000-000000000000';
INSERT INTO citus_test.ids
SELECT 'app', 'u5', (memmie.create_blob('00000005-0000-4000-8000-000000000000', convert_to('{"by": "app role"}', 'UTF8'),
                                        'application/json')).id::text;
SELECT memmie.apply_delta(id::uuid, '[{"op": "add", "path": "/content/more", "value": 1}]') FROM citus_test.ids WHERE kind = 'app';
SELECT memmie.blob_state(id::uuid) FROM citus_test.ids WHERE kind = 'app';
SELECT count(*) FROM memmie.find_blobs('00000005-0000-4000-8000-000000000000');
DO $$
BEGIN
    PERFORM memmie.create_blob('00000006-0000-4000-8000-000000000000', '\x00'::bytea, 'application/octet-stream');
    RAISE EXCEPTION 'an app-level role bound to user 5 made a blob for user 6';
EXCEPTION WHEN insufficient_privilege THEN NULL;
END $$;
COMMIT;

-- step: access levels: revoke_access takes every privilege away on every node, and a rolled-back grant gives none
CREATE ROLE citus_gone LOGIN;
BEGIN;
SELECT memmie.grant_app('citus_gone');
ROLLBACK;
DO $$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT * FROM run_command_on_workers($c$SELECT has_function_privilege('citus_gone', 'memmie._bound_user()', 'EXECUTE')$c$) LOOP
        IF NOT r.success OR r.result <> 'f' THEN
            RAISE EXCEPTION 'worker %: a rolled-back grant_app left EXECUTE (%)', r.nodeport, r.result;
        END IF;
    END LOOP;
END $$;
SELECT memmie.grant_app('citus_gone');
SELECT memmie.revoke_access('citus_gone');
DO $$
DECLARE
    r record;
BEGIN
    IF has_function_privilege('citus_gone', 'memmie._bound_user()', 'EXECUTE')
       OR has_table_privilege('citus_gone', 'memmie.blobs', 'SELECT') THEN
        RAISE EXCEPTION 'citus_gone keeps privileges on the coordinator';
    END IF;
    FOR r IN SELECT * FROM run_command_on_workers($c$SELECT has_function_privilege('citus_gone', 'memmie._bound_user()', 'EXECUTE')
                                                        OR has_table_privilege('citus_gone', 'memmie.blobs', 'SELECT')$c$) LOOP
        IF NOT r.success OR r.result <> 'f' THEN
            RAISE EXCEPTION 'worker %: citus_gone keeps privileges (%)', r.nodeport, r.result;
        END IF;
    END LOOP;
END $$;
DROP ROLE citus_gone;

-- step: derive_blob, a frontier of 1,100 (root -> 1,100 children -> one grandchild each)
INSERT INTO citus_test.ids
SELECT 'dag', 'root', (memmie.create_blob(citus_test.user_n(4), '\x00'::bytea, 'application/octet-stream')).id::text;
DO $$
DECLARE
    root uuid := (SELECT id::uuid FROM citus_test.ids WHERE kind = 'dag' AND name = 'root');
    c    uuid;
BEGIN
    FOR i IN 1 .. 1100 LOOP
        c := (memmie.derive_blob(ARRAY[root], 'splitter', 'part', convert_to('part ' || i, 'UTF8'),
                                 'application/octet-stream')).id;
        INSERT INTO citus_test.ids VALUES ('dag', 'child' || i, c::text);
        INSERT INTO citus_test.ids
        VALUES ('dag', 'grandchild' || i,
                (memmie.derive_blob(ARRAY[c], 'splitter', 'piece', convert_to('piece ' || i, 'UTF8'),
                                    'application/octet-stream')).id::text);
    END LOOP;
END $$;

-- step: add_edge
SELECT citus_test.need('dag', 2201);
SELECT memmie.add_edge((SELECT id::uuid FROM citus_test.ids WHERE kind = 'dag' AND name = 'child1'),
                       (SELECT id::uuid FROM citus_test.ids WHERE kind = 'dag' AND name = 'grandchild2'),
                       'splitter', 'cross');
-- the same edge again is a no-op; the reverse edge would close a cycle; a blob of another user
-- (on the other worker) is not found
DO $$
DECLARE
    c1 uuid := (SELECT id::uuid FROM citus_test.ids WHERE kind = 'dag' AND name = 'child1');
    g2 uuid := (SELECT id::uuid FROM citus_test.ids WHERE kind = 'dag' AND name = 'grandchild2');
    e  memmie.blob_edges;
BEGIN
    e := memmie.add_edge(c1, g2, 'splitter', 'cross');
    IF e.user_id IS DISTINCT FROM citus_test.user_n(4) THEN
        RAISE EXCEPTION 'add_edge again: %', e;
    END IF;
    BEGIN
        PERFORM memmie.add_edge(g2, (SELECT id::uuid FROM citus_test.ids WHERE kind = 'dag' AND name = 'root'),
                                'splitter', 'back');
        RAISE EXCEPTION 'a cycle was accepted';
    EXCEPTION WHEN SQLSTATE 'MM003' THEN NULL;
    END;
    BEGIN
        PERFORM memmie.add_edge(c1, (SELECT id::uuid FROM citus_test.ids WHERE kind = 'json' AND name = 'u5'),
                                'splitter', 'other user');
        RAISE EXCEPTION 'an edge to another user''s blob was accepted';
    EXCEPTION WHEN SQLSTATE 'P0002' THEN NULL;
    END;
END $$;

-- step: descendants, ancestors, lineage, dag_stats
SELECT citus_test.need('dag', 2201);
DO $$
DECLARE
    id_of jsonb := (SELECT jsonb_object_agg(name, id) FROM citus_test.ids WHERE kind = 'dag'
                    AND name IN ('root', 'child1', 'child2', 'grandchild1', 'grandchild2'));
    n     bigint;
    l     jsonb;
    s     record;
BEGIN
    n := (SELECT count(*) FROM memmie.descendants((id_of ->> 'root')::uuid));
    IF n <> 2200 THEN
        RAISE EXCEPTION 'descendants of the root: % of 2200', n;
    END IF;
    n := (SELECT count(*) FROM memmie.descendants((id_of ->> 'root')::uuid, 1));
    IF n <> 1100 THEN
        RAISE EXCEPTION 'children of the root: % of 1100', n;
    END IF;
    -- grandchild2: its parents child2 and child1 (the cross edge), and the root
    n := (SELECT count(*) FROM memmie.ancestors((id_of ->> 'grandchild2')::uuid));
    IF n <> 3 THEN
        RAISE EXCEPTION 'ancestors of grandchild2: % of 3', n;
    END IF;
    -- child1: the root above, grandchild1 and grandchild2 below, and the 3 edges between them
    l := memmie.lineage((id_of ->> 'child1')::uuid);
    IF jsonb_array_length(l -> 'nodes') <> 4 OR jsonb_array_length(l -> 'edges') <> 3 THEN
        RAISE EXCEPTION 'lineage of child1: %', l;
    END IF;
    SELECT * INTO s FROM memmie.dag_stats((id_of ->> 'root')::uuid);
    IF (s.total_nodes, s.max_depth, s.unique_levels) <> (2201::bigint, 2, 3) THEN
        RAISE EXCEPTION 'dag_stats of the root: %', s;
    END IF;
END $$;

-- step: create_blob text/plain for the pipeline, 8 users
INSERT INTO citus_test.ids
SELECT 'note', 'u' || i, (memmie.create_blob(citus_test.user_n(i), convert_to('a long text ' || i, 'UTF8'), 'text/plain')).id::text
FROM generate_series(1, 8) i;

-- step: dispatch_events, two dispatchers
SELECT citus_test.need('note', 8);
SELECT memmie.dispatch_events(10000);
-- and:
SELECT memmie.dispatch_events(10000);

-- step: claim_jobs, two workers
INSERT INTO citus_test.ids SELECT 'claim-a', worker_id, id FROM memmie.claim_jobs('worker-a', 4, '5 minutes');
-- and:
INSERT INTO citus_test.ids SELECT 'claim-b', worker_id, id FROM memmie.claim_jobs('worker-b', 4, '5 minutes');

-- step: heartbeat_job, complete_processing
SELECT citus_test.need('claim-%', 1);
SELECT memmie.heartbeat_job(id, name, 50) FROM citus_test.ids WHERE kind IN ('claim-a', 'claim-b');
SELECT count(*) FROM citus_test.ids j,
     LATERAL memmie.complete_processing(j.id::uuid, j.name,
         '{"children": [{"content": "short", "content_type": "text/plain", "transform_type": "summary"}]}')
WHERE j.kind IN ('claim-a', 'claim-b');

-- step: enqueue_job, claim_jobs (by type), complete_job
SELECT memmie.enqueue_job('test.job', citus_test.user_n(i), jsonb_build_object('i', i)) FROM generate_series(1, 4) i;
INSERT INTO citus_test.ids SELECT 'claim-c', worker_id, id FROM memmie.claim_jobs('worker-c', 4, '5 minutes', '{test.job}');
SELECT memmie.complete_job(id, name, '{"done": true}') FROM citus_test.ids WHERE kind = 'claim-c';

-- step: claim_jobs takes back an expired lease (then another worker gets the job)
SELECT memmie.enqueue_job('test.lease', citus_test.user_n(5), '{}', job_id => 'lease-job');
INSERT INTO citus_test.ids SELECT 'lease-1', worker_id, id FROM memmie.claim_jobs('worker-l1', 1, '5 minutes', '{test.lease}');
SELECT citus_test.need('lease-1', 1);
UPDATE memmie.jobs SET lease_expires_at = now() - interval '1 second'
WHERE id = 'lease-job' AND user_id = citus_test.user_n(5);
INSERT INTO citus_test.ids SELECT 'lease-2', worker_id, id FROM memmie.claim_jobs('worker-l2', 1, '5 minutes', '{test.lease}');
DO $$
BEGIN
    IF (SELECT count(*) FROM citus_test.ids WHERE kind = 'lease-2') <> 1
       OR (SELECT retry_count FROM memmie.jobs WHERE id = 'lease-job') <> 1 THEN
        RAISE EXCEPTION 'the expired lease was not taken back';
    END IF;
END $$;

-- step: access levels: a worker-level role, granted after distribute(), claims and completes a job
CREATE ROLE citus_worker LOGIN;
SELECT memmie.grant_worker('citus_worker');
GRANT USAGE ON SCHEMA citus_test TO citus_worker;
GRANT SELECT, INSERT ON citus_test.ids TO citus_worker;
SELECT memmie.enqueue_job('access.job', citus_test.user_n(5), '{"by": "worker role"}');
SET ROLE citus_worker;
INSERT INTO citus_test.ids SELECT 'claim-w', worker_id, id FROM memmie.claim_jobs('worker-w', 4, '5 minutes', '{access.job}');
SELECT citus_test.need('claim-w', 1);
SELECT memmie.complete_job(id, name, '{"done": true}') FROM citus_test.ids WHERE kind = 'claim-w';
DO $$
BEGIN
    PERFORM count(*) FROM memmie.jobs;
    RAISE EXCEPTION 'a worker-level role read memmie.jobs';
EXCEPTION WHEN insufficient_privilege THEN NULL;
END $$;

-- step: squash_history, create_external_blob, update_external_content
SELECT citus_test.need('json', 8);
SELECT memmie.squash_history(id::uuid, 2) FROM citus_test.ids WHERE kind = 'json' AND name = 'u5';
INSERT INTO citus_test.ids
SELECT 'external', 'u' || i,
       (memmie.create_external_blob(citus_test.user_n(i), repeat('e', 64), 4096, 'application/pdf', 's3',
                                    'bucket/shared.pdf')).id::text
FROM generate_series(6, 7) i;
SELECT memmie.update_external_content(id::uuid, repeat('f', 64), 2048, 's3', 'bucket/other.pdf')
FROM citus_test.ids WHERE kind = 'external' AND name = 'u6';

-- step: enqueue_job by id (idempotent; another user's id refused), cancel_job, fail_job
SELECT memmie.enqueue_job('test.once', citus_test.user_n(5), '{}', job_id => 'once-1');
DO $$
BEGIN
    IF (memmie.enqueue_job('test.once', citus_test.user_n(5), '{"again": true}', job_id => 'once-1')).input <> '{}' THEN
        RAISE EXCEPTION 'enqueue_job with the same id made another job';
    END IF;
    BEGIN
        PERFORM memmie.enqueue_job('test.once', citus_test.user_n(6), '{}', job_id => 'once-1');
        RAISE EXCEPTION 'the job id of another user was accepted';
    EXCEPTION WHEN unique_violation THEN NULL;
    END;
    IF (memmie.cancel_job('once-1')).status <> 'cancelled' THEN
        RAISE EXCEPTION 'cancel_job did not cancel';
    END IF;
END $$;
SELECT memmie.enqueue_job('test.fail', citus_test.user_n(i), '{}') FROM generate_series(7, 8) i;
INSERT INTO citus_test.ids SELECT 'fail', worker_id, id FROM memmie.claim_jobs('worker-f', 2, '5 minutes', '{test.fail}');
SELECT citus_test.need('fail', 2);
SELECT (memmie.fail_job(id, name, 'timeout: test', retryable => false)).status FROM citus_test.ids WHERE kind = 'fail';

-- step: backfill, pending_work
SELECT memmie.backfill('summarizer');
SELECT count(*) FROM memmie.pending_work('memmie.process');

-- step: reprocess, delete_blob (hard) of an input with a queued processing and of an output blob
INSERT INTO citus_test.ids
SELECT 'orphan-input', 'u6', (memmie.create_blob(citus_test.user_n(6), convert_to('delete me', 'UTF8'), 'text/plain')).id::text;
INSERT INTO citus_test.ids
SELECT 'orphan-job', 'u6', memmie.reprocess(id::uuid, 'summarizer')::text FROM citus_test.ids WHERE kind = 'orphan-input';
DO $$
BEGIN
    -- a second reprocess finds the same processing (its job still queued)
    IF memmie.reprocess((SELECT id::uuid FROM citus_test.ids WHERE kind = 'orphan-input'), 'summarizer')::text
       <> (SELECT id FROM citus_test.ids WHERE kind = 'orphan-job') THEN
        RAISE EXCEPTION 'reprocess made a second processing of the same version';
    END IF;
END $$;
SELECT memmie.delete_blob(id::uuid, hard => true) FROM citus_test.ids WHERE kind = 'orphan-input';
DO $$
BEGIN
    IF (SELECT status FROM memmie.jobs WHERE id = (SELECT id FROM citus_test.ids WHERE kind = 'orphan-job')) <> 'cancelled' THEN
        RAISE EXCEPTION 'the job of a processing deleted with its blob was not cancelled';
    END IF;
END $$;
INSERT INTO citus_test.ids
SELECT 'deleted-output', 'output', output_blob_id::text FROM memmie.provider_processing
WHERE output_blob_id IS NOT NULL ORDER BY output_blob_id LIMIT 1;
SELECT citus_test.need('deleted-output', 1);
SELECT memmie.delete_blob(id::uuid, hard => true) FROM citus_test.ids WHERE kind = 'deleted-output';

-- step: events_since
SELECT count(*) FROM memmie.events_since(0, 10000);

-- step: [distributed] the counts are applied at once, nothing is left for the commit
BEGIN;
SELECT memmie.create_blob(citus_test.user_n(6), convert_to('counted at once', 'UTF8'), 'text/plain') IS NOT NULL;
DO $$
BEGIN
    IF EXISTS (SELECT FROM memmie._pending_user_counts()) OR EXISTS (SELECT FROM memmie._pending_references()) THEN
        RAISE EXCEPTION 'counts pending for the commit on the cluster';
    END IF;
    IF (SELECT storage_used FROM memmie.user_contexts WHERE user_id = citus_test.user_n(6))
       <> (SELECT sum(content_size) FROM memmie.user_content_refs WHERE user_id = citus_test.user_n(6))
       OR (SELECT blob_count FROM memmie.user_contexts WHERE user_id = citus_test.user_n(6))
       <> (SELECT count(*) FROM memmie.blobs WHERE user_id = citus_test.user_n(6) AND deleted_at IS NULL) THEN
        RAISE EXCEPTION 'the counts of user 6 are not up to date inside the writing transaction';
    END IF;
END $$;
COMMIT;

-- step: put_content, gc_content
INSERT INTO citus_test.ids SELECT 'orphan', 'orphan', memmie.put_content(convert_to('nobody refers to me', 'UTF8'));
SELECT count(*) FROM memmie.gc_content('0 seconds');

-- step: put_content of a content nobody references yet
INSERT INTO citus_test.ids SELECT 'gc-race', 'content', memmie.put_content(convert_to('wanted again', 'UTF8'));

-- step: gc_content while a writer deduplicates onto its candidate
-- (the writer holds the content row FOR KEY SHARE until it commits: gc_content skips it)
BEGIN;
INSERT INTO citus_test.ids
SELECT 'gc-race', 'blob', (memmie.create_blob(citus_test.user_n(5), convert_to('wanted again', 'UTF8'), 'text/plain')).id::text;
SELECT pg_sleep(2);
COMMIT;
-- and:
SELECT pg_sleep(0.5);
INSERT INTO citus_test.ids SELECT 'gc-race', 'collected', content_hash FROM memmie.gc_content('0 seconds');

-- step: gc_content again: the writer's reference, committed now, keeps the content (and is counted)
INSERT INTO citus_test.ids SELECT 'gc-race', 'collected', content_hash FROM memmie.gc_content('0 seconds');

-- step: ensure_partitions while DEFAULT holds rows
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM memmie.events_default) OR NOT EXISTS (SELECT 1 FROM memmie.deltas_default) THEN
        RAISE EXCEPTION 'the DEFAULT partitions hold no rows: the earlier steps wrote none';
    END IF;
END $$;
SELECT memmie.ensure_partitions();

-- step: create_partitions
SELECT memmie.create_partitions('memmie.events', current_date + 30, 2);

-- step: user_usage, record_api_call, rollup_metrics
SELECT memmie.record_api_call(citus_test.user_n(1), true, 12);
SELECT count(*) FROM memmie.user_usage(citus_test.user_n(1));
SELECT memmie.rollup_metrics();

-- step: refresh_views
SELECT memmie.refresh_views();

-- step: maintenance()
SELECT memmie.maintenance();

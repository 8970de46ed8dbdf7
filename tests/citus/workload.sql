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

-- step: descendants, ancestors, lineage, dag_stats
SELECT citus_test.need('dag', 2201);
SELECT count(*) FROM memmie.descendants((SELECT id::uuid FROM citus_test.ids WHERE kind = 'dag' AND name = 'root'));
SELECT count(*) FROM memmie.ancestors((SELECT id::uuid FROM citus_test.ids WHERE kind = 'dag' AND name = 'grandchild2'));
SELECT memmie.lineage((SELECT id::uuid FROM citus_test.ids WHERE kind = 'dag' AND name = 'child1')) IS NOT NULL;
SELECT * FROM memmie.dag_stats((SELECT id::uuid FROM citus_test.ids WHERE kind = 'dag' AND name = 'root'));

-- step: create_blob text/plain for the pipeline, 8 users
INSERT INTO citus_test.ids
SELECT 'note', 'u' || i, (memmie.create_blob(citus_test.user_n(i), convert_to('a long text ' || i, 'UTF8'), 'text/plain')).id::text
FROM generate_series(1, 8) i;

-- step: dispatch_events
SELECT citus_test.need('note', 8);
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

-- The invariants tests/citus/citus.sh checks after the workload: each "-- check: NAME" block is a
-- query whose last row is one boolean, true when the invariant holds.

-- check: [distributed] the 8 users' shards lie on both workers
SELECT count(DISTINCT s.nodeport) = 2
FROM generate_series(1, 8) i,
     LATERAL (SELECT p.nodeport FROM pg_dist_placement pl JOIN pg_dist_node p USING (groupid)
              WHERE pl.shardid = get_shard_id_for_distribution_column('memmie.blobs', citus_test.user_n(i))) s;

-- check: [distributed] the tables are placed as distribute() says
SELECT count(*) FILTER (WHERE d.partmethod = 'n') = 4 AND count(*) FILTER (WHERE d.partmethod = 'h') = 13
   AND count(DISTINCT d.colocationid) FILTER (WHERE d.partmethod = 'h' AND t <> 'memmie.content_storage') = 1
FROM unnest(ARRAY['memmie.providers', 'memmie.provider_versions', 'memmie.provider_metrics', 'memmie.grantees',
                  'memmie.user_contexts', 'memmie.blobs', 'memmie.blob_versions', 'memmie.blob_snapshots', 'memmie.blob_edges', 'memmie.user_content_refs',
                  'memmie.deltas', 'memmie.events', 'memmie.provider_processing', 'memmie.jobs',
                  'memmie.usage_metrics', 'memmie.usage_increments', 'memmie.content_storage']) t
JOIN pg_dist_partition d ON d.logicalrelid = t::regclass;

-- check: check() all ok
SELECT bool_and(ok) FROM memmie.check();

-- check: user_content_refs = version rows per user and content (exact at all times)
SELECT NOT EXISTS (
    SELECT 1 FROM (SELECT user_id, content_hash, count(*) AS n FROM memmie.blob_versions GROUP BY 1, 2) v
    FULL JOIN memmie.user_content_refs r ON r.user_id = v.user_id AND r.content_hash = v.content_hash
    WHERE r.reference_count IS DISTINCT FROM v.n);

-- check: reference counts = version rows naming each content (recounted by gc_content; no version written since)
SELECT NOT EXISTS (
    SELECT 1 FROM memmie.content_storage c
    LEFT JOIN (SELECT content_hash, count(*) AS n FROM memmie.blob_versions GROUP BY 1) v USING (content_hash)
    WHERE c.reference_count <> coalesce(v.n, 0));

-- check: the shared content is one row counted for every version of every user
SELECT c.reference_count = v.n AND v.n >= 7 AND v.users >= 7
FROM memmie.content_storage c,
     (SELECT count(*) AS n, count(DISTINCT user_id) AS users FROM memmie.blob_versions
      WHERE content_hash = memmie.sha256(convert_to('{"title": "Plan", "steps": ["write"]}', 'UTF8'))) v
WHERE c.content_hash = memmie.sha256(convert_to('{"title": "Plan", "steps": ["write"]}', 'UTF8'));

-- check: every content a user references is stored
SELECT NOT EXISTS (
    SELECT 1 FROM (SELECT DISTINCT content_hash FROM memmie.user_content_refs) r
    WHERE r.content_hash NOT IN (SELECT content_hash FROM memmie.content_storage));

-- check: storage_used = recomputation from the versions
SELECT NOT EXISTS (
    SELECT 1 FROM memmie.user_contexts u
    LEFT JOIN (SELECT user_id, sum(content_size) AS s
               FROM (SELECT DISTINCT user_id, content_hash, content_size FROM memmie.blob_versions) d GROUP BY 1) r
           USING (user_id)
    WHERE u.storage_used <> coalesce(r.s, 0));

-- check: blob_count = live blobs (recomputed)
SELECT NOT EXISTS (
    SELECT 1 FROM memmie.user_contexts u
    LEFT JOIN (SELECT user_id, count(*) AS n FROM memmie.blobs WHERE deleted_at IS NULL GROUP BY 1) b USING (user_id)
    WHERE u.blob_count <> coalesce(b.n, 0));

-- check: descendants of the root: exactly 2,200
SELECT count(*) = 2200 FROM memmie.descendants((SELECT id::uuid FROM citus_test.ids WHERE kind = 'dag' AND name = 'root'));

-- check: every edge of the DAG is its user's (2,200 derived and one added), on that user's shard
SELECT count(*) = 2201 AND bool_and(e.user_id = citus_test.user_n(4))
FROM memmie.blob_edges e
WHERE e.parent_blob_id IN (SELECT id::uuid FROM citus_test.ids WHERE kind = 'dag');

-- check: dag_statistics (refreshed by refresh_views and maintenance) has the root's whole DAG
SELECT total_nodes = 2201 AND max_depth = 2
FROM memmie.dag_statistics WHERE root_id = (SELECT id::uuid FROM citus_test.ids WHERE kind = 'dag' AND name = 'root');

-- check: no job claimed twice
SELECT count(*) = count(DISTINCT id) AND count(*) > 0 FROM citus_test.ids WHERE kind LIKE 'claim-%';

-- check: every claimed job done, none by two workers
SELECT bool_and(j.status = 'completed' AND j.worker_id = c.name) AND count(*) > 0
FROM citus_test.ids c JOIN memmie.jobs j ON j.id = c.id WHERE c.kind LIKE 'claim-%';

-- check: no event missing from events_since
SELECT (SELECT count(*) FROM memmie.events_since(0, 10000)) = (SELECT count(*) FROM memmie.events)
   AND (SELECT count(*) FROM memmie.events) > 0;

-- check: every note dispatched, once: one summarizer processing each
SELECT count(*) = 8 AND count(DISTINCT p.blob_id) = 8
FROM citus_test.ids n JOIN memmie.provider_processing p ON p.blob_id = n.id::uuid AND p.provider_id = 'summarizer'
WHERE n.kind = 'note';

-- check: every event has a position of its own (events_since gave each one, none twice)
SELECT count(*) = count(DISTINCT position) AND count(position) = count(*) AND count(*) > 0 FROM memmie.events;

-- check: gc_content removed the orphan content
SELECT NOT EXISTS (SELECT 1 FROM memmie.content_storage c JOIN citus_test.ids i ON i.kind = 'orphan' AND c.content_hash = i.id)
   AND EXISTS (SELECT 1 FROM citus_test.ids WHERE kind = 'orphan');

-- check: gc_content kept the content a writer was deduplicating onto at the same moment
SELECT EXISTS (SELECT 1 FROM memmie.content_storage
               WHERE content_hash = memmie.sha256(convert_to('wanted again', 'UTF8')))
   AND EXISTS (SELECT 1 FROM citus_test.ids WHERE kind = 'gc-race' AND name = 'blob')
   AND NOT EXISTS (SELECT 1 FROM citus_test.ids WHERE kind = 'gc-race' AND name = 'collected'
                   AND id = memmie.sha256(convert_to('wanted again', 'UTF8')));

-- check: the DEFAULT partitions are empty
SELECT (SELECT count(*) FROM memmie.deltas_default) + (SELECT count(*) FROM memmie.events_default) = 0;

-- check: [distributed] access levels: every node gives the roles the same privileges on memmie's functions and tables
SELECT bool_and(r.success AND r.result = c.v)
FROM (SELECT md5(string_agg(x, ',' ORDER BY x)) AS v FROM (
          SELECT format('%s:%s', ro.rolname, p.oid::regprocedure) AS x
          FROM pg_roles ro, pg_proc p
          WHERE ro.rolname LIKE 'citus\_%' AND p.pronamespace = 'memmie'::regnamespace
            AND has_function_privilege(ro.oid, p.oid, 'EXECUTE')
          UNION ALL
          SELECT format('%s:%s', ro.rolname, t)
          FROM pg_roles ro, unnest(ARRAY['user_contexts', 'content_storage', 'blobs', 'blob_versions', 'user_content_refs',
                                         'deltas', 'provider_processing', 'events', 'jobs', 'usage_metrics', 'providers',
                                         'provider_versions', 'grantees']) t
          WHERE ro.rolname LIKE 'citus\_%' AND has_table_privilege(ro.oid, ('memmie.' || t)::regclass, 'SELECT')) s) c,
     run_command_on_workers($c$
         SELECT md5(string_agg(x, ',' ORDER BY x)) FROM (
             SELECT format('%s:%s', ro.rolname, p.oid::regprocedure) AS x
             FROM pg_roles ro, pg_proc p
             WHERE ro.rolname LIKE 'citus\_%' AND p.pronamespace = 'memmie'::regnamespace
               AND has_function_privilege(ro.oid, p.oid, 'EXECUTE')
             UNION ALL
             SELECT format('%s:%s', ro.rolname, t)
             FROM pg_roles ro, unnest(ARRAY['user_contexts', 'content_storage', 'blobs', 'blob_versions', 'user_content_refs',
                                            'deltas', 'provider_processing', 'events', 'jobs', 'usage_metrics', 'providers',
                                            'provider_versions', 'grantees']) t
             WHERE ro.rolname LIKE 'citus\_%' AND has_table_privilege(ro.oid, ('memmie.' || t)::regclass, 'SELECT')) s
     $c$) r;

-- check: access levels: the admin-level role reads every user's rows (both workers)
SET ROLE citus_admin;
SELECT count(DISTINCT user_id) = 8 AND count(*) > 0 FROM memmie.blobs;

-- check: access levels: the app-level role bound to user 5 (SET LOCAL, propagated) reads its blobs and no other user's
SET ROLE citus_app;
SET citus.propagate_set_commands = local;
BEGIN;
SET LOCAL memmie.user_id = '00000005-0000-4000-8000-000000000000';
SELECT count(*) FILTER (WHERE user_id <> '00000005-0000-4000-8000-000000000000') = 0
   AND count(*) FILTER (WHERE user_id = '00000005-0000-4000-8000-000000000000') > 0
FROM memmie.blobs;
COMMIT;

-- check: no processing names a hard-deleted output blob
SELECT NOT EXISTS (SELECT 1 FROM memmie.provider_processing p
                   WHERE p.output_blob_id IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM memmie.blobs b
                                     WHERE b.id = p.output_blob_id AND b.user_id = p.user_id))
   AND EXISTS (SELECT 1 FROM citus_test.ids WHERE kind = 'deleted-output');

-- check: no job of a processing that is gone is left queued or running
SELECT NOT EXISTS (SELECT 1 FROM memmie.jobs j
                   WHERE j.job_type = 'memmie.process' AND j.status IN ('queued', 'running')
                     AND NOT EXISTS (SELECT 1 FROM memmie.provider_processing p
                                     WHERE p.id::text = j.id AND p.user_id = j.user_id));

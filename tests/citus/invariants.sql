-- The invariants tests/citus/citus.sh checks after the workload: each "-- check: NAME" block is a
-- query whose last row is one boolean, true when the invariant holds.

-- check: [distributed] the 8 users' shards lie on both workers
SELECT count(DISTINCT s.nodeport) = 2
FROM generate_series(1, 8) i,
     LATERAL (SELECT p.nodeport FROM pg_dist_placement pl JOIN pg_dist_node p USING (groupid)
              WHERE pl.shardid = get_shard_id_for_distribution_column('memmie.blobs', citus_test.user_n(i))) s;

-- check: [distributed] the tables are placed as distribute() says
SELECT count(*) FILTER (WHERE d.partmethod = 'n') = 4 AND count(*) FILTER (WHERE d.partmethod = 'h') = 12
   AND count(DISTINCT d.colocationid) FILTER (WHERE d.partmethod = 'h' AND t <> 'memmie.content_storage') = 1
FROM unnest(ARRAY['memmie.providers', 'memmie.provider_versions', 'memmie.provider_metrics', 'memmie.grantees',
                  'memmie.user_contexts', 'memmie.blobs', 'memmie.blob_versions', 'memmie.blob_snapshots', 'memmie.user_content_refs',
                  'memmie.deltas', 'memmie.events', 'memmie.provider_processing', 'memmie.jobs',
                  'memmie.usage_metrics', 'memmie.usage_increments', 'memmie.content_storage']) t
JOIN pg_dist_partition d ON d.logicalrelid = t::regclass;

-- check: check() all ok
SELECT bool_and(ok) FROM memmie.check();

-- check: reference counts = version rows naming each content (recomputed)
SELECT NOT EXISTS (
    SELECT 1 FROM memmie.content_storage c
    LEFT JOIN (SELECT content_hash, count(*) AS n FROM memmie.blob_versions GROUP BY 1) v USING (content_hash)
    WHERE c.reference_count <> coalesce(v.n, 0));

-- check: the shared content is one row counted for every version of every user
SELECT reference_count = (SELECT count(*) FROM memmie.blob_versions v WHERE v.content_hash = c.content_hash)
   AND reference_count >= 7
FROM memmie.content_storage c
WHERE content_hash = memmie.sha256(convert_to('{"title": "Plan", "steps": ["write"]}', 'UTF8'));

-- check: storage_used = recomputation from the versions
SELECT NOT EXISTS (
    SELECT 1 FROM memmie.user_contexts u
    LEFT JOIN (SELECT user_id, sum(content_size) AS s
               FROM (SELECT DISTINCT user_id, content_hash, content_size FROM memmie.blob_versions) d GROUP BY 1) r
           USING (user_id)
    WHERE u.storage_used <> coalesce(r.s, 0));

-- check: descendants of the root: exactly 2,200
SELECT count(*) = 2200 FROM memmie.descendants((SELECT id::uuid FROM citus_test.ids WHERE kind = 'dag' AND name = 'root'));

-- check: no job claimed twice
SELECT count(*) = count(DISTINCT id) AND count(*) > 0 FROM citus_test.ids WHERE kind LIKE 'claim-%';

-- check: every claimed job done, none by two workers
SELECT bool_and(j.status = 'completed' AND j.worker_id = c.name) AND count(*) > 0
FROM citus_test.ids c JOIN memmie.jobs j ON j.id = c.id WHERE c.kind LIKE 'claim-%';

-- check: no event missing from events_since
SELECT (SELECT count(*) FROM memmie.events_since(0, 10000)) = (SELECT count(*) FROM memmie.events)
   AND (SELECT count(*) FROM memmie.events) > 0;

-- check: gc_content removed the orphan content
SELECT NOT EXISTS (SELECT 1 FROM memmie.content_storage c JOIN citus_test.ids i ON i.kind = 'orphan' AND c.content_hash = i.id)
   AND EXISTS (SELECT 1 FROM citus_test.ids WHERE kind = 'orphan');

-- check: the DEFAULT partitions are empty
SELECT (SELECT count(*) FROM memmie.deltas_default) + (SELECT count(*) FROM memmie.events_default) = 0;

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

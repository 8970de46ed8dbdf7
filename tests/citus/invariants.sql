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

-- check: gc_content kept the content a writer was deduplicating onto at the same moment
SELECT EXISTS (SELECT 1 FROM memmie.content_storage
               WHERE content_hash = memmie.sha256(convert_to('wanted again', 'UTF8')))
   AND EXISTS (SELECT 1 FROM citus_test.ids WHERE kind = 'gc-race' AND name = 'blob')
   AND NOT EXISTS (SELECT 1 FROM citus_test.ids WHERE kind = 'gc-race' AND name = 'collected'
                   AND id = memmie.sha256(convert_to('wanted again', 'UTF8')));

-- check: the DEFAULT partitions are empty
SELECT (SELECT count(*) FROM memmie.deltas_default) + (SELECT count(*) FROM memmie.events_default) = 0;

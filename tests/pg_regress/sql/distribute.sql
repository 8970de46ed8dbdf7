-- memmie.distribute() without Citus: a clear 55000, and nothing changed (tests/citus runs it on
-- a Citus cluster).
SELECT t.err($$SELECT memmie.distribute()$$) AS without_citus;
SELECT conrelid::regclass AS tab, conname, pg_get_constraintdef(oid) AS def
FROM pg_constraint
WHERE conname IN ('blobs_pkey', 'blob_versions_pkey', 'jobs_pkey', 'fk_blob', 'blob_versions_content_hash_fkey')
  AND connamespace = 'memmie'::regnamespace AND conparentid = 0
ORDER BY conrelid::regclass::text, conname;
-- admin level: not executable by PUBLIC, nor the helpers
SELECT p.proname, p.proacl IS NULL OR EXISTS (SELECT FROM aclexplode(p.proacl) a WHERE a.grantee = 0) AS public_execute
FROM pg_proc p
WHERE p.pronamespace = 'memmie'::regnamespace AND p.proname IN ('distribute', '_citus_key', '_citus_on_workers')
ORDER BY 1;

-- The cluster's counting and GC, run here on one node in a transaction rolled back (tests/citus
-- runs them on a Citus cluster): _citus_counting_triggers() swaps the triggers (a second call
-- changes nothing), the counts are then applied at once (nothing pending for the commit), and
-- the distributed GC recounts reference_count from user_content_refs and collects only what no
-- user references.
BEGIN;
SELECT memmie._citus_counting_triggers() AS swapped, memmie._citus_counting_triggers() AS again;
SELECT tgrelid::regclass AS tab, tgname FROM pg_trigger
WHERE tgrelid IN ('memmie.blobs'::regclass, 'memmie.blob_versions'::regclass) AND NOT tgisinternal
ORDER BY 1, 2;
SELECT (memmie.create_blob('00000000-0000-0000-0000-00000000c105', convert_to('one', 'UTF8'), 'text/plain')).id AS c1 \gset
SELECT (memmie.create_blob('00000000-0000-0000-0000-00000000c105', convert_to('one', 'UTF8'), 'text/plain')).id AS c2 \gset
SELECT (memmie.update_content(:'c1', convert_to('two!', 'UTF8'))).version AS updated_to;
SELECT memmie.delete_blob(:'c2');
SELECT memmie.put_content(convert_to('three', 'UTF8')) IS NOT NULL AS orphan_stored;
SELECT (SELECT count(*) FROM memmie._pending_user_counts()) AS pending_users,
       (SELECT count(*) FROM memmie._pending_references()) AS pending_references;
SELECT storage_used, blob_count FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-00000000c105';
SELECT convert_from(memmie.get_content(content_hash), 'UTF8') AS content, content_size, reference_count
FROM memmie.user_content_refs WHERE user_id = '00000000-0000-0000-0000-00000000c105' ORDER BY 1;
SELECT memmie.delete_blob(:'c2', hard => true);
SELECT storage_used, blob_count FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-00000000c105';
-- the GC of a cluster: counts recounted, then only the orphan collected among these contents
CREATE TEMP TABLE names AS
SELECT x AS content, memmie.sha256(convert_to(x, 'UTF8')) AS h FROM unnest(ARRAY['one', 'two!', 'three']) x;
CREATE TEMP TABLE collected AS SELECT * FROM memmie._gc_content_distributed(clock_timestamp());
SELECT n.content, c.reference_count, g.content_hash IS NOT NULL AS collected
FROM names n LEFT JOIN memmie.content_storage c ON c.content_hash = n.h
LEFT JOIN collected g ON g.content_hash = n.h ORDER BY 1;
-- the last references gone: both contents collected, the user's counts back to zero
SELECT memmie.delete_blob(:'c1', hard => true);
SELECT storage_used, blob_count FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-00000000c105';
INSERT INTO collected SELECT * FROM memmie._gc_content_distributed(clock_timestamp());
SELECT n.content, g.content_hash IS NOT NULL AS collected
FROM names n LEFT JOIN collected g ON g.content_hash = n.h ORDER BY 1;
ROLLBACK;

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

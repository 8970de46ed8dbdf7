-- Helpers shared by the regression tests (the database is shared by every test file).
CREATE SCHEMA t;

-- Runs a statement and returns 'SQLSTATE: message' (ids masked), or 'ok'.
CREATE FUNCTION t.err(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || regexp_replace(
        regexp_replace(SQLERRM, '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}', '<uuid>', 'g'),
        '[0-9a-f]{64}', '<hash>', 'g');
END
$$;

-- Deterministic pseudo-random bytes (incompressible).
CREATE FUNCTION t.noise(n int, seed int DEFAULT 1) RETURNS bytea LANGUAGE sql AS $$
    SELECT string_agg(sha256(convert_to(seed::text || ':' || i::text, 'UTF8')), ''::bytea)
    FROM generate_series(1, (n + 31) / 32) i
$$;

-- content_storage as the current transaction sees its counts: reference_count is written when a
-- transaction commits, so inside one (these tests roll theirs back) the stored count plus the
-- changes it has noted (memmie._pending_references()) is the count of its versions.
CREATE VIEW t.content_now AS
SELECT c.content_hash, c.storage_backend, c.storage_path, c.original_size, c.compressed_size, c.content,
       c.mime_type, c.last_accessed, c.reference_count + coalesce(p.n, 0)::int AS reference_count,
       c.reference_count AS stored_reference_count
FROM memmie.content_storage c LEFT JOIN memmie._pending_references() p ON p.content_hash = c.content_hash;
-- user_contexts the same way: storage_used and blob_count are written at commit too
-- (memmie._pending_user_counts()).
CREATE VIEW t.users_now AS
SELECT u.user_id, u.settings, u.quota_limits, u.storage_used + coalesce(p.storage_used, 0) AS storage_used,
       u.blob_count + coalesce(p.blob_count, 0) AS blob_count, u.storage_used AS stored_storage_used,
       u.blob_count AS stored_blob_count, u.created_at, u.updated_at
FROM memmie.user_contexts u LEFT JOIN memmie._pending_user_counts() p ON p.user_id = u.user_id;

SELECT extname, extversion, nspname
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE extname = 'memmie';

-- What an operator does after CREATE EXTENSION: partitions for this and the next periods.
SELECT memmie.ensure_partitions() AS partitions_made;

-- The same rows memmie writes for one blob (content, blob, version, delta; the event comes from
-- the design document's emit_blob_event trigger, the reference count from its
-- update_content_references trigger), as plain INSERTs in one transaction.
\set n random(1, 2000000000)
BEGIN;
INSERT INTO design.content_storage (content_hash, content, original_size, mime_type)
SELECT encode(sha256(d), 'hex'), d, length(d), 'text/plain'
FROM (SELECT convert_to(repeat(md5(:n::text || 'bench'), 32), 'UTF8') AS d) x
ON CONFLICT (content_hash) DO NOTHING;
INSERT INTO design.blobs (user_id, content_hash, content_size, content_type, metadata, tags)
SELECT ('00000000-0000-0000-0000-' || lpad(:client_id::text, 12, '0'))::uuid, encode(sha256(d), 'hex'), length(d),
       'text/plain', '{"title": "bench"}', '{bench}'
FROM (SELECT convert_to(repeat(md5(:n::text || 'bench'), 32), 'UTF8') AS d) x
RETURNING id AS blob_id, content_hash AS h \gset
INSERT INTO design.blob_versions (blob_id, version, content_hash, content_size, metadata, created_by)
VALUES (':blob_id', 1, ':h', 1024, '{"title": "bench"}', 'user');
INSERT INTO design.deltas (blob_id, user_id, operation, patch, from_version, to_version, status, applied_at)
VALUES (':blob_id', ('00000000-0000-0000-0000-' || lpad(:client_id::text, 12, '0'))::uuid, 'create',
        '[{"op": "replace", "path": "", "value": {}}]', 0, 1, 'applied', now());
COMMIT;

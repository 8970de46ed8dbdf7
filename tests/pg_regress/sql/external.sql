-- Content kept outside PostgreSQL: create_external_blob, update_external_content, what
-- get_content says of it, how it is shared, garbage-collected and never reachable by hash alone.
BEGIN;
CREATE TEMP TABLE x (name text PRIMARY KEY, id uuid);
INSERT INTO x SELECT 'doc', (memmie.create_external_blob('00000000-0000-0000-0000-0000000000d1', repeat('ab', 32), 1000,
    'application/json', 's3', 's3://bucket/ab', '{"title": "Big"}', '{big}')).id;
SELECT b.version, b.content_hash = repeat('ab', 32) AS hash, b.content_size, b.content_type, b.metadata, b.tags
FROM memmie.blobs b JOIN x ON x.id = b.id;
SELECT storage_backend, storage_path, original_size, compressed_size, content IS NULL AS no_bytes, mime_type, reference_count
FROM t.content_now WHERE content_hash = repeat('ab', 32);
SELECT storage_used, blob_count FROM t.users_now WHERE user_id = '00000000-0000-0000-0000-0000000000d1';
-- the state has no /content (memmie cannot read it); the history is a create
SELECT memmie.blob_state(id) - 'content_hash' AS state FROM x WHERE name = 'doc';
SELECT operation, to_version FROM memmie.blob_history((SELECT id FROM x WHERE name = 'doc'));
-- reading it says where it lives
SELECT t.err(format('SELECT memmie.get_content(%L)', repeat('ab', 32))) AS get_content;
SELECT t.err(format('SELECT memmie.blob_content(%L)', (SELECT id FROM x WHERE name = 'doc'))) AS blob_content;
SELECT c.ok, c.detail FROM memmie.verify_content(repeat('ab', 32)) c;

-- metadata patches work; the same location shared by a second blob of the same user
SELECT (memmie.apply_delta((SELECT id FROM x WHERE name = 'doc'), '[{"op": "add", "path": "/metadata/n", "value": 1}]')).to_version;
INSERT INTO x SELECT 'copy', (memmie.create_external_blob('00000000-0000-0000-0000-0000000000d1', repeat('ab', 32), 1000,
    'application/octet-stream', 's3', 's3://bucket/ab')).id;
SELECT reference_count FROM t.content_now WHERE content_hash = repeat('ab', 32);

-- knowing a hash gives nothing: another location, size or an inline content is refused
SELECT t.err(format($$SELECT memmie.create_external_blob('00000000-0000-0000-0000-0000000000d2', %L, 1000, 'text/plain', 's3', 's3://mine')$$, repeat('ab', 32))) AS other_path;
SELECT t.err(format($$SELECT memmie.create_external_blob('00000000-0000-0000-0000-0000000000d2', %L, 999, 'text/plain', 's3', 's3://bucket/ab')$$, repeat('ab', 32))) AS other_size;
SELECT t.err(format($$SELECT memmie.create_external_blob('00000000-0000-0000-0000-0000000000d2', %L, 1000, 'text/plain', 'filesystem', 's3://bucket/ab')$$, repeat('ab', 32))) AS other_backend;
INSERT INTO x SELECT 'inline', (memmie.create_blob('00000000-0000-0000-0000-0000000000d1', 'secret bytes', 'text/plain')).id;
SELECT t.err(format($$SELECT memmie.create_external_blob('00000000-0000-0000-0000-0000000000d2', %L, 12, 'text/plain', 's3', 's3://guess')$$, memmie.sha256('secret bytes'))) AS inline_by_hash;
SELECT count(*) AS blobs_of_d2 FROM memmie.blobs WHERE user_id = '00000000-0000-0000-0000-0000000000d2';

-- bad input
SELECT t.err($$SELECT memmie.create_external_blob(NULL, repeat('ab', 32), 1, 'text/plain', 's3', 'p')$$) AS null_user;
SELECT t.err($$SELECT memmie.create_external_blob('00000000-0000-0000-0000-0000000000d1', 'xyz', 1, 'text/plain', 's3', 'p')$$) AS bad_hash;
SELECT t.err($$SELECT memmie.create_external_blob('00000000-0000-0000-0000-0000000000d1', NULL, 1, 'text/plain', 's3', 'p')$$) AS null_hash;
SELECT t.err($$SELECT memmie.create_external_blob('00000000-0000-0000-0000-0000000000d1', repeat('cd', 32), -1, 'text/plain', 's3', 'p')$$) AS negative_size;
SELECT t.err($$SELECT memmie.create_external_blob('00000000-0000-0000-0000-0000000000d1', repeat('cd', 32), 1, 'text/plain', 'postgres', 'p')$$) AS postgres_backend;
SELECT t.err($$SELECT memmie.create_external_blob('00000000-0000-0000-0000-0000000000d1', repeat('cd', 32), 1, 'text/plain', 'ftp', 'p')$$) AS unknown_backend;
SELECT t.err($$SELECT memmie.create_external_blob('00000000-0000-0000-0000-0000000000d1', repeat('cd', 32), 1, 'text/plain', 's3', '')$$) AS empty_path;
SELECT t.err($$SELECT memmie.create_external_blob('00000000-0000-0000-0000-0000000000d1', repeat('cd', 32), 1, 'text/plain', 's3', NULL)$$) AS null_path;
SELECT t.err($$SELECT memmie.create_external_blob('00000000-0000-0000-0000-0000000000d1', repeat('cd', 32), 1, 'not a type', 's3', 'p')$$) AS bad_type;
SELECT t.err($$SELECT memmie.create_external_blob('00000000-0000-0000-0000-0000000000d1', repeat('cd', 32), 1, 'text/plain', 's3', 'p', '[]')$$) AS array_metadata;
UPDATE memmie.user_contexts SET quota_limits = quota_limits || '{"max_content_size": 100}' WHERE user_id = '00000000-0000-0000-0000-0000000000d1';
SELECT t.err($$SELECT memmie.create_external_blob('00000000-0000-0000-0000-0000000000d1', repeat('cd', 32), 101, 'text/plain', 's3', 'p')$$) AS over_quota;
UPDATE memmie.user_contexts SET quota_limits = quota_limits - 'max_content_size' WHERE user_id = '00000000-0000-0000-0000-0000000000d1';
SELECT count(*) AS cd_recorded FROM memmie.content_storage WHERE content_hash = repeat('cd', 32);

-- update_external_content: a new version at a new location; back to inline with update_content
SELECT b.version, b.content_hash = repeat('cd', 32) AS hash, b.content_size, b.content_type
FROM memmie.update_external_content((SELECT id FROM x WHERE name = 'copy'), repeat('cd', 32), 7, 'filesystem', '/data/cd',
                                    content_type => 'text/plain', expected_version => 1) b;
SELECT t.err(format($$SELECT memmie.update_external_content(%L, %L, 7, 'filesystem', '/data/cd', expected_version => 1)$$,
                    (SELECT id FROM x WHERE name = 'copy'), repeat('cd', 32))) AS stale_version;
SELECT t.err($$SELECT memmie.update_external_content('00000000-0000-0000-0000-00000000dead', repeat('cd', 32), 7, 'filesystem', '/data/cd')$$) AS missing_blob;
SELECT (memmie.update_content((SELECT id FROM x WHERE name = 'copy'), 'now inline')).version;
SELECT convert_from(memmie.blob_content((SELECT id FROM x WHERE name = 'copy')), 'UTF8') AS inline_again;
-- JSON content written under /content makes an external JSON blob inline
SELECT (memmie.apply_delta((SELECT id FROM x WHERE name = 'doc'), '[{"op": "add", "path": "/content", "value": {"a": 1}}]')).to_version;
SELECT convert_from(memmie.blob_content((SELECT id FROM x WHERE name = 'doc')), 'UTF8') AS json_inline;
-- replaying versions of external content gives the recorded states
SELECT b.name, v.version, memmie.blob_state(v.blob_id, v.version) = memmie._make_state(v.content_hash, v.content_size, v.content_type, v.metadata, v.tags, v.deleted) AS replay_ok
FROM x b JOIN memmie.blob_versions v ON v.blob_id = b.id WHERE b.name IN ('doc', 'copy') ORDER BY 1, 2;

-- the bytes of an external content stored with create_blob are kept here from then on
SELECT (memmie.create_external_blob('00000000-0000-0000-0000-0000000000d1', memmie.sha256('later here'), 10, 'text/plain', 's3', 's3://bucket/later')).version;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000d1', 'later here', 'text/plain')).version;
SELECT storage_backend, storage_path, reference_count, convert_from(memmie.get_content(content_hash), 'UTF8') AS bytes
FROM t.content_now WHERE content_hash = memmie.sha256('later here');
SELECT (memmie.create_external_blob('00000000-0000-0000-0000-0000000000d1', memmie.sha256('sized wrong'), 99, 'text/plain', 's3', 's3://bucket/wrong')).version;
SELECT t.err($$SELECT memmie.create_blob('00000000-0000-0000-0000-0000000000d1', 'sized wrong', 'text/plain')$$) AS size_mismatch;

-- gc_content returns the outside location once nothing references it
SELECT memmie.delete_blob(id, hard => true) FROM x WHERE name IN ('doc', 'copy');
SELECT storage_backend, storage_path FROM memmie.gc_content('0 seconds')
WHERE content_hash IN (repeat('ab', 32), repeat('cd', 32)) ORDER BY 1;
SELECT check_name, ok FROM memmie.check() WHERE NOT ok;
ROLLBACK;

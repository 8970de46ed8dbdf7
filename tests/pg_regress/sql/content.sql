-- Content hashing, dedup, compression, verification.
BEGIN;
SELECT memmie.sha256('') = encode(sha256(''), 'hex') AS empty_ok,
       memmie.sha256('abc') = encode(sha256('abc'), 'hex') AS abc_ok,
       memmie.sha256(t.noise(100000)) = encode(sha256(t.noise(100000)), 'hex') AS large_ok;

-- Same bytes twice: one row. Text compresses, noise does not.
SELECT memmie.put_content(convert_to(repeat('memmie stores text. ', 200), 'UTF8'), 'text/plain') AS h_text \gset
SELECT memmie.put_content(convert_to(repeat('memmie stores text. ', 200), 'UTF8'), 'text/markdown') = :'h_text' AS same_hash;
SELECT memmie.put_content(t.noise(8192), 'image/jpeg') AS h_noise \gset
SELECT memmie.put_content('tiny') AS h_tiny \gset
SELECT c.content_hash = :'h_text' AS is_text, compression, original_size,
       compressed_size < original_size / 10 AS much_smaller, mime_type, reference_count, storage_backend
FROM memmie.content_storage c
WHERE c.content_hash IN (:'h_text', :'h_noise', :'h_tiny') ORDER BY original_size;

-- Round trips.
SELECT memmie.get_content(:'h_text') = convert_to(repeat('memmie stores text. ', 200), 'UTF8') AS text_back,
       memmie.get_content(:'h_noise') = t.noise(8192) AS noise_back,
       memmie.get_content(:'h_tiny') = 'tiny'::bytea AS tiny_back;

-- Storage is EXTERNAL (no second compression by TOAST).
SELECT attstorage FROM pg_attribute
WHERE attrelid = 'memmie.content_storage'::regclass AND attname = 'content';

-- Verification finds tampering; get_content refuses to return tampered bytes.
SELECT * FROM memmie.verify_content(:'h_tiny');
UPDATE memmie.content_storage SET content = 'tinY' WHERE content_hash = :'h_tiny';
SELECT ok, regexp_replace(detail, '[0-9a-f]{64}', '<hash>', 'g') AS detail FROM memmie.verify_content(:'h_tiny');
SELECT t.err(format('SELECT memmie.get_content(%L)', :'h_tiny'));
-- A zstd frame that decodes to more than the recorded size is corruption, not an allocation.
UPDATE memmie.content_storage SET original_size = 10 WHERE content_hash = :'h_text';
SELECT t.err(format('SELECT memmie.get_content(%L)', :'h_text'));
UPDATE memmie.content_storage SET content = 'garbage' WHERE content_hash = :'h_text';
SELECT t.err(format('SELECT memmie.get_content(%L)', :'h_text'));
SELECT count(*) AS checked, count(*) FILTER (WHERE NOT ok) AS bad FROM memmie.verify_content()
WHERE content_hash IN (:'h_text', :'h_noise', :'h_tiny');
ROLLBACK;

-- Errors.
SELECT t.err($$SELECT memmie.get_content('nothex')$$);
SELECT t.err($$SELECT memmie.get_content(repeat('0', 64))$$);
SELECT t.err($$SELECT * FROM memmie.verify_content(repeat('0', 64))$$);
SELECT t.err($$SELECT memmie.put_content(NULL)$$);
SELECT t.err($$SELECT memmie.put_content('x', 'not a mime type')$$);
SELECT memmie.get_content(NULL) IS NULL AS strict_null;

-- memmie.max_content_size (superuser-settable, 256MB by default).
SHOW memmie.max_content_size;
SET memmie.max_content_size = '1kB';
SELECT t.err($$SELECT memmie.put_content(t.noise(2000))$$);
SELECT t.err($$SELECT memmie.put_content(t.noise(1000))$$);
RESET memmie.max_content_size;
SELECT count(*) AS leftover FROM memmie.content_storage WHERE original_size = 2016;
DELETE FROM memmie.content_storage;

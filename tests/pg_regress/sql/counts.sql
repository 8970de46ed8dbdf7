-- reference_count and storage_used stay exact under multi-row statements of every kind
-- (the counting triggers work per statement, over transition tables).
BEGIN;
CREATE TEMP VIEW drift AS
SELECT (SELECT count(*) FROM memmie.content_storage c
        WHERE c.reference_count <> (SELECT count(*) FROM memmie.blob_versions v WHERE v.content_hash = c.content_hash)) AS bad_refcounts,
       (SELECT count(*) FROM memmie.user_contexts u
        WHERE u.storage_used <> coalesce((SELECT sum(content_size) FROM (SELECT DISTINCT v.content_hash, v.content_size
                                          FROM memmie.blob_versions v WHERE v.user_id = u.user_id) x), 0)) AS bad_storage,
       (SELECT count(*) FROM memmie.user_contexts u
        WHERE u.blob_count <> (SELECT count(*) FROM memmie.blobs b WHERE b.user_id = u.user_id AND b.deleted_at IS NULL)) AS bad_blob_counts;

SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000f1', 'aaa', 'text/plain')).id AS a \gset
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000f1', 'bbbb', 'text/plain')).id AS b \gset
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000f2', 'aaa', 'text/plain')).id AS c \gset
SELECT memmie.put_content('ccccc') AS h5 \gset
SELECT * FROM drift;

-- Many versions in one INSERT, the same hash several times.
INSERT INTO memmie.blob_versions (blob_id, version, user_id, content_hash, content_size, content_type, created_by)
SELECT :'a', v, '00000000-0000-0000-0000-0000000000f1',
       CASE WHEN v % 2 = 0 THEN :'h5' ELSE memmie.sha256('bbbb') END, CASE WHEN v % 2 = 0 THEN 5 ELSE 4 END,
       'text/plain', 'user'
FROM generate_series(2, 7) v;
SELECT * FROM drift;
SELECT reference_count FROM memmie.content_storage WHERE content_hash = :'h5';
SELECT storage_used FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000f1';

-- One UPDATE moving some versions to another content, and one moving a version to another user.
UPDATE memmie.blob_versions SET content_hash = memmie.sha256('aaa'), content_size = 3
WHERE blob_id = :'a' AND version IN (2, 3);
UPDATE memmie.blob_versions SET user_id = '00000000-0000-0000-0000-0000000000f2'
WHERE blob_id = :'a' AND version = 4;
SELECT * FROM drift;

-- One DELETE of several versions, then cascades from blobs and from a user.
DELETE FROM memmie.blob_versions WHERE blob_id = :'a' AND version > 4;
SELECT * FROM drift;
SELECT memmie.delete_blob(:'b', true);
SELECT * FROM drift;
DELETE FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000f2';
SELECT * FROM drift;
SELECT content_hash = :'h5' AS is_h5, reference_count FROM memmie.content_storage
WHERE content_hash IN (:'h5', memmie.sha256('aaa'), memmie.sha256('bbbb')) ORDER BY original_size;
ROLLBACK;

-- The trigger functions can serve another table of a different shape in the same session
-- (their kept plans are per table): counts stay right on both.
BEGIN;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c7', 'shape one', 'text/plain')).version;
CREATE TABLE t.other_shape (note text, content_hash varchar(64), pad int, user_id uuid, content_size bigint);
CREATE TRIGGER other_refs AFTER INSERT ON t.other_shape REFERENCING NEW TABLE AS memmie_new
    FOR EACH STATEMENT EXECUTE FUNCTION memmie.content_refcount();
INSERT INTO t.other_shape VALUES ('x', memmie.sha256('shape one'), 1, '00000000-0000-0000-0000-0000000000c7', 9);
SELECT reference_count FROM memmie.content_storage WHERE content_hash = memmie.sha256('shape one');
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c7', 'shape one', 'text/plain')).version;
SELECT reference_count FROM memmie.content_storage WHERE content_hash = memmie.sha256('shape one');
ROLLBACK;

-- The counters start at zero whoever inserts a row (a restore loads these tables before the rows
-- that count into them).
BEGIN;
INSERT INTO memmie.content_storage (content_hash, content, original_size, reference_count)
VALUES (memmie.sha256('counted'), 'counted', 7, 5);
SELECT reference_count FROM memmie.content_storage WHERE content_hash = memmie.sha256('counted');
INSERT INTO memmie.user_contexts (user_id, storage_used, blob_count)
VALUES ('00000000-0000-0000-0000-0000000000af', 100, 3);
SELECT storage_used, blob_count FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000af';
ROLLBACK;

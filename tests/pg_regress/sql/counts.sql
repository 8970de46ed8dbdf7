-- reference_count and storage_used stay exact under multi-row statements of every kind
-- (reference_count as this transaction sees it: t.content_now, see setup).
BEGIN;
CREATE TEMP VIEW drift AS
SELECT (SELECT count(*) FROM t.content_now c
        WHERE c.reference_count <> (SELECT count(*) FROM memmie.blob_versions v WHERE v.content_hash = c.content_hash)) AS bad_refcounts,
       (SELECT count(*) FROM t.users_now u
        WHERE u.storage_used <> coalesce((SELECT sum(content_size) FROM (SELECT DISTINCT v.content_hash, v.content_size
                                          FROM memmie.blob_versions v WHERE v.user_id = u.user_id) x), 0)) AS bad_storage,
       (SELECT count(*) FROM t.users_now u
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
SELECT reference_count FROM t.content_now WHERE content_hash = :'h5';
SELECT storage_used FROM t.users_now WHERE user_id = '00000000-0000-0000-0000-0000000000f1';

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
SELECT content_hash = :'h5' AS is_h5, reference_count FROM t.content_now
WHERE content_hash IN (:'h5', memmie.sha256('aaa'), memmie.sha256('bbbb')) ORDER BY original_size;
ROLLBACK;

-- The trigger functions can serve another table of a different shape in the same session,
-- content_refcount per row (as memmie installs it) or per statement over a transition table (as
-- 0.1.0 installed it; that way it writes at once): counts stay right on both.
BEGIN;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c7', 'shape one', 'text/plain')).version;
CREATE TABLE t.other_shape (note text, content_hash varchar(64), pad int, user_id uuid, content_size bigint);
CREATE TRIGGER other_refs AFTER INSERT OR DELETE ON t.other_shape
    FOR EACH ROW EXECUTE FUNCTION memmie.content_refcount();
INSERT INTO t.other_shape VALUES ('x', memmie.sha256('shape one'), 1, '00000000-0000-0000-0000-0000000000c7', 9);
SELECT reference_count, stored_reference_count FROM t.content_now WHERE content_hash = memmie.sha256('shape one');
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000c7', 'shape one', 'text/plain')).version;
SELECT reference_count, stored_reference_count FROM t.content_now WHERE content_hash = memmie.sha256('shape one');
DROP TRIGGER other_refs ON t.other_shape;
CREATE TRIGGER other_refs AFTER INSERT ON t.other_shape REFERENCING NEW TABLE AS memmie_new
    FOR EACH STATEMENT EXECUTE FUNCTION memmie.content_refcount();
INSERT INTO t.other_shape VALUES ('y', memmie.sha256('shape one'), 2, '00000000-0000-0000-0000-0000000000c7', 9);
SELECT reference_count, stored_reference_count FROM t.content_now WHERE content_hash = memmie.sha256('shape one');
ROLLBACK;

-- reference_count is written when the transaction commits (once per content, whatever the
-- number of versions): inside the transaction the stored count is the one before it; a
-- subtransaction that rolls back (ROLLBACK TO SAVEPOINT, an EXCEPTION block) takes its
-- references with it, one that is released hands them on.
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000f3', 'counted at commit', 'text/plain')).id AS r1 \gset
SELECT reference_count FROM memmie.content_storage WHERE content_hash = memmie.sha256('counted at commit');
BEGIN;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000f3', 'counted at commit', 'text/plain')).id AS r2 \gset
SELECT reference_count, stored_reference_count FROM t.content_now WHERE content_hash = memmie.sha256('counted at commit');
SAVEPOINT s1;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000f3', 'counted at commit', 'text/plain')).version;
SELECT reference_count FROM t.content_now WHERE content_hash = memmie.sha256('counted at commit');
ROLLBACK TO SAVEPOINT s1;
SELECT reference_count FROM t.content_now WHERE content_hash = memmie.sha256('counted at commit');
SAVEPOINT s2;
SAVEPOINT s3;
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000f3', 'counted at commit', 'text/plain')).id AS r3 \gset
RELEASE SAVEPOINT s3;
SAVEPOINT s4;
SELECT (memmie.update_content(:'r1', 'something else')).version;
ROLLBACK TO SAVEPOINT s4;
RELEASE SAVEPOINT s2;
DO $$
BEGIN
    PERFORM memmie.create_blob('00000000-0000-0000-0000-0000000000f3', 'counted at commit', 'text/plain');
    RAISE EXCEPTION 'undo';
EXCEPTION WHEN raise_exception THEN
    NULL;
END
$$;
SELECT reference_count, stored_reference_count FROM t.content_now WHERE content_hash = memmie.sha256('counted at commit');
SELECT check_name, ok FROM memmie.check() WHERE check_name = 'reference_counts';
COMMIT;
SELECT reference_count FROM memmie.content_storage WHERE content_hash = memmie.sha256('counted at commit');
-- A procedure that commits as it goes: each COMMIT writes what came before it.
CREATE PROCEDURE t.create_and_commit(n int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        PERFORM memmie.create_blob('00000000-0000-0000-0000-0000000000f3', 'counted at commit', 'text/plain');
        COMMIT;
    END LOOP;
END
$$;
CALL t.create_and_commit(2);
SELECT reference_count FROM memmie.content_storage WHERE content_hash = memmie.sha256('counted at commit');
-- Adding and removing in one transaction leaves the content row as it was.
BEGIN;
SELECT xmin AS row_version FROM memmie.content_storage WHERE content_hash = memmie.sha256('counted at commit') \gset
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000f3', 'counted at commit', 'text/plain')).id AS r4 \gset
SELECT memmie.delete_blob(:'r4', hard => true);
COMMIT;
SELECT xmin = :'row_version' AS untouched, reference_count FROM memmie.content_storage
WHERE content_hash = memmie.sha256('counted at commit');
-- Hard deletes release them at commit.
SELECT memmie.delete_blob(id, hard => true) FROM memmie.blobs WHERE user_id = '00000000-0000-0000-0000-0000000000f3';
SELECT reference_count FROM memmie.content_storage WHERE content_hash = memmie.sha256('counted at commit');
DROP PROCEDURE t.create_and_commit(int);
-- The counts are written as content_storage's owner: an app-level role, which may write no
-- table at all, stores and shares content all the same.
CREATE ROLE memmie_counted;
SELECT memmie.grant_app('memmie_counted');
GRANT USAGE ON SCHEMA t TO memmie_counted;
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA t TO memmie_counted;
SET ROLE memmie_counted;
SET memmie.user_id = '00000000-0000-0000-0000-0000000000f3';
SELECT (memmie.create_blob('00000000-0000-0000-0000-0000000000f3', 'counted at commit', 'text/plain')).version;
SELECT t.err($$UPDATE memmie.content_storage SET reference_count = 7$$) AS by_hand;
RESET memmie.user_id;
RESET ROLE;
SELECT reference_count FROM memmie.content_storage WHERE content_hash = memmie.sha256('counted at commit');
SELECT memmie.revoke_access('memmie_counted');
DROP OWNED BY memmie_counted;
DROP ROLE memmie_counted;
-- Many contents in one transaction (more than 16: locked in hash order, then written together),
-- and all released at once by a cascade.
BEGIN;
SELECT count(memmie.create_blob('00000000-0000-0000-0000-0000000000f3', convert_to('many ' || i, 'UTF8'), 'text/plain'))
FROM generate_series(1, 40) i;
COMMIT;
CREATE TEMP VIEW many AS SELECT c.* FROM memmie.content_storage c
WHERE c.content_hash IN (SELECT memmie.sha256(convert_to('many ' || i, 'UTF8')) FROM generate_series(1, 40) i);
SELECT count(*) AS contents, min(reference_count), max(reference_count) FROM many;
-- leave nothing behind for the tests after this one (the user's events, metrics, the contents)
SELECT memmie.fold_usage() > 0 AS usage_folded;
DELETE FROM memmie.user_contexts WHERE user_id = '00000000-0000-0000-0000-0000000000f3';
SELECT count(*) AS contents, min(reference_count), max(reference_count) FROM many;
SELECT count(*) AS collected, count(*) FILTER (WHERE content_hash = memmie.sha256('counted at commit')) AS counted_at_commit
FROM memmie.gc_content('0 seconds');
DROP VIEW many;

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

-- Per-row overhead of memmie's native refcount trigger vs the design document's PL/pgSQL one,
-- each installed the way its author installs it (memmie: per statement over a transition table;
-- design: per row). Same table shape as blob_versions, same 1000 contents, 20 references each;
-- the overhead is (time with trigger - time without) / rows. A second pair inserts one row per
-- statement, the shape of create_blob.
CREATE TABLE bench.content (content_hash varchar(64) PRIMARY KEY, reference_count int NOT NULL DEFAULT 0,
                            last_accessed timestamptz);
INSERT INTO bench.content SELECT memmie.sha256(convert_to(i::text, 'UTF8')), 0, now() FROM generate_series(1, 1000) i;
CREATE TABLE bench.versions (user_id uuid, content_hash varchar(64), content_size bigint);

-- The design document's trigger function, updating the same table as memmie's trigger
-- (memmie.content_storage with its indexes), so only the trigger machinery differs.
CREATE FUNCTION bench.update_content_references() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        UPDATE memmie.content_storage SET reference_count = reference_count + 1, last_accessed = CURRENT_TIMESTAMP
        WHERE content_hash = NEW.content_hash;
    ELSIF TG_OP = 'DELETE' THEN
        UPDATE memmie.content_storage SET reference_count = reference_count - 1
        WHERE content_hash = OLD.content_hash;
    END IF;
    RETURN NEW;
END
$$;
-- memmie's native trigger updates memmie.content_storage; give it the same 1000 rows.
INSERT INTO memmie.content_storage (content_hash, content, original_size)
SELECT content_hash, 'x', 1 FROM bench.content ON CONFLICT DO NOTHING;

CREATE FUNCTION bench.insert_versions(n int) RETURNS void LANGUAGE sql AS $$
    INSERT INTO bench.versions
    SELECT '00000000-0000-0000-0000-000000000001', memmie.sha256(convert_to((i % 1000 + 1)::text, 'UTF8')), 1
    FROM generate_series(1, n) i;
    TRUNCATE bench.versions;
$$;

SELECT bench.record('refcount trigger', 'no trigger (baseline)', '20000 rows', 'SELECT bench.insert_versions(20000)', 'insert 20000 rows');
-- memmie's trigger as memmie installs it: once per statement, over the transition table
CREATE TRIGGER t AFTER INSERT ON bench.versions REFERENCING NEW TABLE AS memmie_new
    FOR EACH STATEMENT EXECUTE FUNCTION memmie.content_refcount();
SELECT bench.record('refcount trigger', 'memmie native (content_refcount)', '20000 rows', 'SELECT bench.insert_versions(20000)', 'insert 20000 rows');
DROP TRIGGER t ON bench.versions;
CREATE TRIGGER t AFTER INSERT OR DELETE ON bench.versions FOR EACH ROW EXECUTE FUNCTION bench.update_content_references();
SELECT bench.record('refcount trigger', 'design PL/pgSQL (update_content_references)', '20000 rows', 'SELECT bench.insert_versions(20000)', 'insert 20000 rows');
DROP TRIGGER t ON bench.versions;

-- One row per statement (2000 statements).
CREATE PROCEDURE bench.insert_one_by_one(n int) LANGUAGE plpgsql AS $$
BEGIN
    FOR i IN 1..n LOOP
        INSERT INTO bench.versions VALUES ('00000000-0000-0000-0000-000000000001',
                                           memmie.sha256(convert_to((i % 1000 + 1)::text, 'UTF8')), 1);
    END LOOP;
    TRUNCATE bench.versions;
END $$;
SELECT bench.record('refcount trigger, 1 row per statement', 'no trigger (baseline)', '2000 rows', 'CALL bench.insert_one_by_one(2000)', 'insert 2000 rows');
CREATE TRIGGER t AFTER INSERT ON bench.versions REFERENCING NEW TABLE AS memmie_new
    FOR EACH STATEMENT EXECUTE FUNCTION memmie.content_refcount();
SELECT bench.record('refcount trigger, 1 row per statement', 'memmie native (content_refcount)', '2000 rows', 'CALL bench.insert_one_by_one(2000)', 'insert 2000 rows');
DROP TRIGGER t ON bench.versions;
CREATE TRIGGER t AFTER INSERT OR DELETE ON bench.versions FOR EACH ROW EXECUTE FUNCTION bench.update_content_references();
SELECT bench.record('refcount trigger, 1 row per statement', 'design PL/pgSQL (update_content_references)', '2000 rows', 'CALL bench.insert_one_by_one(2000)', 'insert 2000 rows');
DROP TRIGGER t ON bench.versions;
DELETE FROM memmie.content_storage c USING bench.content b WHERE c.content_hash = b.content_hash;

-- Per-row overhead of memmie's native refcount trigger vs the design document's PL/pgSQL one,
-- each installed the way its author installs it (memmie: per row, noting the change and writing
-- the net change per content when the transaction commits; design: per row, updating at once).
-- Same table shape as blob_versions, same 1000 contents, 20 references each; the overhead is
-- (time with trigger - time without) / rows, each timed run one transaction, its COMMIT
-- included. A second pair inserts one row per statement, the shape of create_blob.

-- bench.record, but each run (and the warm-up) is its own transaction and its time includes the
-- COMMIT: memmie's trigger does part of its work there.
CREATE PROCEDURE bench.record_committed(benchmark text, variant text, size text, q text, per text, runs int DEFAULT 5)
LANGUAGE plpgsql AS $$
DECLARE
    t0 timestamptz;
    times numeric[] := '{}';
BEGIN
    EXECUTE q;
    COMMIT;
    FOR i IN 1..runs LOOP
        t0 := clock_timestamp();
        EXECUTE q;
        COMMIT;
        times := times || (extract(epoch FROM clock_timestamp() - t0) * 1000)::numeric;
    END LOOP;
    INSERT INTO bench.results (benchmark, variant, size, ms_median, per, runs)
    SELECT benchmark, variant, size, round(percentile_cont(0.5) WITHIN GROUP (ORDER BY x)::numeric, 3), per, runs
    FROM unnest(times) x;
    COMMIT;
END
$$;

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

CALL bench.record_committed('refcount trigger', 'no trigger (baseline)', '20000 rows', 'SELECT bench.insert_versions(20000)', 'insert 20000 rows');
-- memmie's trigger as memmie installs it (sql/counters.sql)
CREATE TRIGGER t AFTER INSERT OR DELETE ON bench.versions FOR EACH ROW EXECUTE FUNCTION memmie.content_refcount();
CALL bench.record_committed('refcount trigger', 'memmie native (content_refcount)', '20000 rows', 'SELECT bench.insert_versions(20000)', 'insert 20000 rows');
DROP TRIGGER t ON bench.versions;
CREATE TRIGGER t AFTER INSERT OR DELETE ON bench.versions FOR EACH ROW EXECUTE FUNCTION bench.update_content_references();
CALL bench.record_committed('refcount trigger', 'design PL/pgSQL (update_content_references)', '20000 rows', 'SELECT bench.insert_versions(20000)', 'insert 20000 rows');
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
CALL bench.record_committed('refcount trigger, 1 row per statement', 'no trigger (baseline)', '2000 rows', 'CALL bench.insert_one_by_one(2000)', 'insert 2000 rows');
CREATE TRIGGER t AFTER INSERT OR DELETE ON bench.versions FOR EACH ROW EXECUTE FUNCTION memmie.content_refcount();
CALL bench.record_committed('refcount trigger, 1 row per statement', 'memmie native (content_refcount)', '2000 rows', 'CALL bench.insert_one_by_one(2000)', 'insert 2000 rows');
DROP TRIGGER t ON bench.versions;
CREATE TRIGGER t AFTER INSERT OR DELETE ON bench.versions FOR EACH ROW EXECUTE FUNCTION bench.update_content_references();
CALL bench.record_committed('refcount trigger, 1 row per statement', 'design PL/pgSQL (update_content_references)', '2000 rows', 'CALL bench.insert_one_by_one(2000)', 'insert 2000 rows');
DROP TRIGGER t ON bench.versions;
DELETE FROM memmie.content_storage c USING bench.content b WHERE c.content_hash = b.content_hash;

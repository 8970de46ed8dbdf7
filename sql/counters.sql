-- The triggers that keep memmie's derived columns exact, whoever writes the rows (memmie's
-- functions, a cascade, plain DML, a restore by pg_dump): updated_at, the reference counts of
-- content_storage and user_content_refs, user_contexts.storage_used and blob_count. The counting
-- of references and storage is native (src/refcount.rs); the rest is here.

-- updated_at on every UPDATE (design document).
CREATE FUNCTION memmie.update_updated_at() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.updated_at := CURRENT_TIMESTAMP;
    RETURN NEW;
END
$$;
CREATE TRIGGER update_blobs_updated_at BEFORE UPDATE ON memmie.blobs
    FOR EACH ROW EXECUTE FUNCTION memmie.update_updated_at();
CREATE TRIGGER update_providers_updated_at BEFORE UPDATE ON memmie.providers
    FOR EACH ROW EXECUTE FUNCTION memmie.update_updated_at();

-- Native reference counting (src/refcount.rs). content_refcount notes each row's change and
-- writes the net change per content when the transaction commits; user_storage_accounting works
-- per statement, over transition tables (a trigger with transition tables takes exactly one
-- event, hence three of those): it keeps user_content_refs at once and notes the change of
-- storage_used, written at commit (see count_blobs below).
CREATE TRIGGER content_refs AFTER INSERT OR DELETE ON memmie.blob_versions
    FOR EACH ROW EXECUTE FUNCTION memmie.content_refcount();
CREATE TRIGGER content_refs_update AFTER UPDATE OF content_hash ON memmie.blob_versions
    FOR EACH ROW WHEN (OLD.content_hash IS DISTINCT FROM NEW.content_hash)
    EXECUTE FUNCTION memmie.content_refcount();
CREATE TRIGGER user_storage_insert AFTER INSERT ON memmie.blob_versions
    REFERENCING NEW TABLE AS memmie_new
    FOR EACH STATEMENT EXECUTE FUNCTION memmie.user_storage_accounting();
CREATE TRIGGER user_storage_delete AFTER DELETE ON memmie.blob_versions
    REFERENCING OLD TABLE AS memmie_old
    FOR EACH STATEMENT EXECUTE FUNCTION memmie.user_storage_accounting();
CREATE TRIGGER user_storage_update AFTER UPDATE ON memmie.blob_versions
    REFERENCING OLD TABLE AS memmie_old NEW TABLE AS memmie_new
    FOR EACH STATEMENT EXECUTE FUNCTION memmie.user_storage_accounting();

-- The counters memmie keeps (content_storage.reference_count, user_contexts.storage_used and
-- blob_count) start at zero in every new row, whoever inserts it: they count the rows that
-- reference it, which the triggers here add as they come. So a restore by pg_dump, which loads
-- user_contexts and content_storage before the blobs and versions that reference them, ends
-- with exact counters instead of doubled ones. The trigger's argument names its table (on a
-- Citus worker the trigger fires on a shard, whose name is not the table's).
CREATE FUNCTION memmie._zero_counters() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_ARGV[0] = 'content_storage' THEN
        NEW.reference_count := 0;
    ELSE
        NEW.storage_used := 0;
        NEW.blob_count := 0;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER zero_counters BEFORE INSERT ON memmie.content_storage
    FOR EACH ROW WHEN (NEW.reference_count <> 0) EXECUTE FUNCTION memmie._zero_counters('content_storage');
CREATE TRIGGER zero_counters BEFORE INSERT ON memmie.user_contexts
    FOR EACH ROW WHEN (NEW.storage_used <> 0 OR NEW.blob_count <> 0)
    EXECUTE FUNCTION memmie._zero_counters('user_contexts');

-- user_contexts.blob_count = the user's blobs that are not deleted, whatever removes them
-- (memmie's functions, a cascade from a parent blob, plain DML): native (src/refcount.rs), noted
-- per user and written at commit with storage_used, as the reference counts are. Until then
-- memmie._pending_user_counts() lists this transaction's changes (quota checks, check() and the
-- usage snapshots add them).
CREATE TRIGGER count_blobs_insert_delete AFTER INSERT OR DELETE ON memmie.blobs
    FOR EACH ROW EXECUTE FUNCTION memmie.count_blobs();
CREATE TRIGGER count_blobs_update AFTER UPDATE OF deleted_at, user_id ON memmie.blobs
    FOR EACH ROW WHEN ((OLD.deleted_at IS NULL) IS DISTINCT FROM (NEW.deleted_at IS NULL)
                       OR OLD.user_id IS DISTINCT FROM NEW.user_id)
    EXECUTE FUNCTION memmie.count_blobs();

-- ---------------------------------------------------------------------------------------------
-- On a Citus cluster (memmie.distribute()): the same counts, applied at once, row by row.
--
-- The triggers above cannot run on a shard: a trigger with transition tables finds no tuplestore
-- there, and the counts written at commit would update content_storage (distributed by
-- content_hash: another node) from inside a shard's transaction, at PREPARE. distribute() swaps
-- them for the row-level triggers below (memmie._citus_counting_triggers(), in distribute.sql),
-- which write only rows of the same user: user_content_refs and user_contexts are distributed by
-- user_id, co-located with blob_versions and blobs, so each write goes to the co-located shard on
-- the same node. Nothing is left for the commit (memmie._pending_user_counts() stays empty), and
-- content_storage.reference_count is not kept per write there: gc_content() recounts it from
-- user_content_refs (docs/schema.md "Counting on Citus").

-- AFTER INSERT OR DELETE ON memmie.blob_versions FOR EACH ROW, and AFTER UPDATE OF content_hash
-- when it changes: the user's reference to the content in user_content_refs (made, counted up,
-- counted down, removed with its last version), and storage_used with its first and last. The
-- new reference is counted before the old one is removed, as the single-node trigger does.
CREATE FUNCTION memmie._count_refs_at_once() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n    int;
    size bigint;
BEGIN
    IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN
        INSERT INTO memmie.user_content_refs AS u (user_id, content_hash, content_size, reference_count)
        VALUES (NEW.user_id, NEW.content_hash, NEW.content_size, 1)
        ON CONFLICT (user_id, content_hash)
        DO UPDATE SET reference_count = u.reference_count OPERATOR(pg_catalog.+) 1
        RETURNING u.reference_count INTO n;
        IF n OPERATOR(pg_catalog.=) 1 THEN
            UPDATE memmie.user_contexts c SET storage_used = c.storage_used OPERATOR(pg_catalog.+) NEW.content_size
            WHERE c.user_id OPERATOR(pg_catalog.=) NEW.user_id;
        END IF;
    END IF;
    IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN
        DELETE FROM memmie.user_content_refs u
        WHERE u.user_id OPERATOR(pg_catalog.=) OLD.user_id AND u.content_hash OPERATOR(pg_catalog.=) OLD.content_hash
          AND u.reference_count OPERATOR(pg_catalog.<=) 1
        RETURNING u.content_size INTO size;
        IF FOUND THEN
            UPDATE memmie.user_contexts c SET storage_used = c.storage_used OPERATOR(pg_catalog.-) size
            WHERE c.user_id OPERATOR(pg_catalog.=) OLD.user_id;
        ELSE
            UPDATE memmie.user_content_refs u SET reference_count = u.reference_count OPERATOR(pg_catalog.-) 1
            WHERE u.user_id OPERATOR(pg_catalog.=) OLD.user_id AND u.content_hash OPERATOR(pg_catalog.=) OLD.content_hash;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- AFTER INSERT OR DELETE ON memmie.blobs FOR EACH ROW, and AFTER UPDATE OF deleted_at when a blob
-- is deleted or brought back: the user's blob_count (its blobs that are not deleted).
CREATE FUNCTION memmie._count_blobs_at_once() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    change int := 0;
    usr    uuid;
BEGIN
    IF TG_OP OPERATOR(pg_catalog.<>) 'DELETE' THEN
        usr := NEW.user_id;
        IF NEW.deleted_at IS NULL THEN
            change := 1;
        END IF;
    END IF;
    IF TG_OP OPERATOR(pg_catalog.<>) 'INSERT' THEN
        usr := OLD.user_id;
        IF OLD.deleted_at IS NULL THEN
            change := change OPERATOR(pg_catalog.-) 1;
        END IF;
    END IF;
    IF change OPERATOR(pg_catalog.<>) 0 THEN
        UPDATE memmie.user_contexts c SET blob_count = c.blob_count OPERATOR(pg_catalog.+) change
        WHERE c.user_id OPERATOR(pg_catalog.=) usr;
    END IF;
    RETURN NULL;
END
$$;

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
-- with exact counters instead of doubled ones.
CREATE FUNCTION memmie._zero_counters() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_TABLE_NAME = 'content_storage' THEN
        NEW.reference_count := 0;
    ELSE
        NEW.storage_used := 0;
        NEW.blob_count := 0;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER zero_counters BEFORE INSERT ON memmie.content_storage
    FOR EACH ROW WHEN (NEW.reference_count <> 0) EXECUTE FUNCTION memmie._zero_counters();
CREATE TRIGGER zero_counters BEFORE INSERT ON memmie.user_contexts
    FOR EACH ROW WHEN (NEW.storage_used <> 0 OR NEW.blob_count <> 0)
    EXECUTE FUNCTION memmie._zero_counters();

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

//! Native triggers on `blob_versions` that keep two counts exact at every commit:
//!
//! * `content_storage.reference_count` = number of `blob_versions` rows naming the hash
//!   (`content_refcount`), which garbage collection relies on;
//! * each user's `storage_used` = total size of the distinct contents their versions name
//!   (`user_storage_accounting`), through `user_content_refs` (one row per user and hash).
//!
//! Each trigger runs one cached, fully schema-qualified statement per row with bound parameters.

use pgrx::prelude::*;
use pgrx::spi::{self, OwnedPreparedStatement};
use pgrx::datum::DatumWithOid;
use pgrx::PgOid;
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// Runs `sql` with `args`, preparing and keeping its plan the first time.
fn run(sql: &'static str, types: &[PgOid], args: &[DatumWithOid]) -> spi::Result<()> {
    Spi::connect_mut(|client| {
        PLANS.with(|plans| {
            let mut plans = plans.borrow_mut();
            if !plans.contains_key(sql) {
                let stmt = client.prepare_mut(sql, types)?.keep();
                plans.insert(sql, stmt);
            }
            let stmt = plans.get(sql).ok_or(spi::SpiError::NoTupleTable)?;
            client.update(stmt, None, args)?;
            Ok(())
        })
    })
}

const TEXT: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::TEXTOID);
const UUID: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::UUIDOID);
const INT8: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::INT8OID);

const CONTENT_ADD: &str = "UPDATE memmie.content_storage \
     SET reference_count = reference_count + 1, last_accessed = pg_catalog.now() \
     WHERE content_hash = $1";
const CONTENT_SUB: &str = "UPDATE memmie.content_storage \
     SET reference_count = reference_count - 1, last_accessed = pg_catalog.now() \
     WHERE content_hash = $1";

// A user's first reference to a content adds its size to storage_used.
const USER_ADD: &str = "WITH r AS (\
       INSERT INTO memmie.user_content_refs AS u (user_id, content_hash, content_size, reference_count) \
       VALUES ($1, $2, $3, 1) \
       ON CONFLICT (user_id, content_hash) DO UPDATE SET reference_count = u.reference_count + 1 \
       RETURNING u.reference_count) \
     UPDATE memmie.user_contexts SET storage_used = storage_used + $3 \
     WHERE user_id = $1 AND (SELECT reference_count FROM r) = 1";
// A user's last reference to a content removes its size from storage_used.
const USER_SUB: &str = "WITH d AS (\
       DELETE FROM memmie.user_content_refs \
       WHERE user_id = $1 AND content_hash = $2 AND reference_count = 1 \
       RETURNING content_size), \
     u AS (\
       UPDATE memmie.user_content_refs SET reference_count = reference_count - 1 \
       WHERE user_id = $1 AND content_hash = $2 AND reference_count > 1) \
     UPDATE memmie.user_contexts SET storage_used = storage_used - (SELECT content_size FROM d) \
     WHERE user_id = $1 AND EXISTS (SELECT FROM d)";

#[derive(Debug)]
struct TriggerFailure(String);

impl std::fmt::Display for TriggerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for TriggerFailure {}

impl From<spi::SpiError> for TriggerFailure {
    fn from(e: spi::SpiError) -> Self {
        TriggerFailure(format!("memmie reference counting: {e}"))
    }
}
impl From<pgrx::heap_tuple::PgHeapTupleError> for TriggerFailure {
    fn from(e: pgrx::heap_tuple::PgHeapTupleError) -> Self {
        TriggerFailure(format!("memmie reference counting: {e}"))
    }
}
impl From<pgrx::datum::TryFromDatumError> for TriggerFailure {
    fn from(e: pgrx::datum::TryFromDatumError) -> Self {
        TriggerFailure(format!("memmie reference counting: {e}"))
    }
}
impl From<pgrx::trigger_support::PgTriggerError> for TriggerFailure {
    fn from(e: pgrx::trigger_support::PgTriggerError) -> Self {
        TriggerFailure(format!("memmie reference counting: {e}"))
    }
}

/// The columns of a `blob_versions` row that the counts depend on.
#[derive(PartialEq)]
struct VersionRef {
    user_id: pgrx::Uuid,
    content_hash: String,
    content_size: i64,
}

fn version_ref(t: &PgHeapTuple<'_, impl WhoAllocated>) -> Result<VersionRef, TriggerFailure> {
    let missing = |c: &str| TriggerFailure(format!("memmie reference counting: blob_versions.{c} is NULL"));
    Ok(VersionRef {
        user_id: t.get_by_name("user_id")?.ok_or_else(|| missing("user_id"))?,
        content_hash: t.get_by_name("content_hash")?.ok_or_else(|| missing("content_hash"))?,
        content_size: t.get_by_name("content_size")?.ok_or_else(|| missing("content_size"))?,
    })
}

/// (old, new) references of the row the trigger fired for.
fn refs(trigger: &PgTrigger<'_>) -> Result<(Option<VersionRef>, Option<VersionRef>), TriggerFailure> {
    let old = match trigger.old() {
        Some(t) => Some(version_ref(&t)?),
        None => None,
    };
    let new = match trigger.new() {
        Some(t) => Some(version_ref(&t)?),
        None => None,
    };
    Ok((old, new))
}

type TriggerResult<'a> = Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, TriggerFailure>;

/// AFTER INSERT OR DELETE OR UPDATE OF content_hash ON memmie.blob_versions, FOR EACH ROW.
#[pg_trigger]
fn content_refcount<'a>(trigger: &'a PgTrigger<'a>) -> TriggerResult<'a> {
    let (old, new) = refs(trigger)?;
    if old.as_ref().map(|r| &r.content_hash) == new.as_ref().map(|r| &r.content_hash) {
        return Ok(None);
    }
    if let Some(old) = old {
        run(CONTENT_SUB, &[TEXT], &[old.content_hash.into()])?;
    }
    if let Some(new) = new {
        run(CONTENT_ADD, &[TEXT], &[new.content_hash.into()])?;
    }
    Ok(None)
}

/// AFTER INSERT OR DELETE OR UPDATE OF user_id, content_hash ON memmie.blob_versions, FOR EACH ROW.
#[pg_trigger]
fn user_storage_accounting<'a>(trigger: &'a PgTrigger<'a>) -> TriggerResult<'a> {
    let (old, new) = refs(trigger)?;
    if old == new {
        return Ok(None);
    }
    if let Some(old) = old {
        run(USER_SUB, &[UUID, TEXT], &[old.user_id.into(), old.content_hash.into()])?;
    }
    if let Some(new) = new {
        run(USER_ADD, &[UUID, TEXT, INT8], &[new.user_id.into(), new.content_hash.into(), new.content_size.into()])?;
    }
    Ok(None)
}

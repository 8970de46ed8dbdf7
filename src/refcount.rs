//! Native statement-level triggers on `blob_versions` that keep two counts exact at every
//! commit:
//!
//! * `content_storage.reference_count` = number of `blob_versions` rows naming the hash
//!   (`content_refcount`), which garbage collection relies on;
//! * each user's `storage_used` = total size of the distinct contents their versions name
//!   (`user_storage_accounting`), through `user_content_refs` (one row per user and hash).
//!
//! Each fires once per statement with the statement's rows as transition tables
//! (`memmie_new`, `memmie_old`) and applies them set-wise, one kept plan per step: a statement
//! writing many versions costs one UPDATE per step, not one per row.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::trigger_support::PgTriggerOperation;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;

const CONTENT_ADD: &CStr = c"UPDATE memmie.content_storage c \
    SET reference_count = c.reference_count + d.n, last_accessed = pg_catalog.now() \
    FROM (SELECT content_hash, count(*)::int AS n FROM memmie_new GROUP BY content_hash) d \
    WHERE c.content_hash = d.content_hash";
const CONTENT_SUB: &CStr = c"UPDATE memmie.content_storage c \
    SET reference_count = c.reference_count - d.n, last_accessed = pg_catalog.now() \
    FROM (SELECT content_hash, count(*)::int AS n FROM memmie_old GROUP BY content_hash) d \
    WHERE c.content_hash = d.content_hash";

// A user's first reference to a content adds its size to storage_used: after the upsert the
// count equals what this statement added exactly when there was none before.
const USER_ADD: &CStr = c"WITH d AS (\
        SELECT user_id, content_hash, max(content_size) AS content_size, count(*)::int AS n \
        FROM memmie_new GROUP BY user_id, content_hash), \
    up AS (\
        INSERT INTO memmie.user_content_refs AS u (user_id, content_hash, content_size, reference_count) \
        SELECT user_id, content_hash, content_size, n FROM d \
        ON CONFLICT (user_id, content_hash) \
        DO UPDATE SET reference_count = u.reference_count + excluded.reference_count \
        RETURNING u.user_id, u.content_hash, u.content_size, u.reference_count) \
    UPDATE memmie.user_contexts c SET storage_used = c.storage_used + s.added \
    FROM (SELECT up.user_id, sum(up.content_size) AS added FROM up \
          JOIN d ON d.user_id = up.user_id AND d.content_hash = up.content_hash \
          WHERE up.reference_count = d.n GROUP BY up.user_id) s \
    WHERE c.user_id = s.user_id";
// A user's last reference to a content removes its size from storage_used.
const USER_SUB: &CStr = c"WITH d AS (\
        SELECT user_id, content_hash, count(*)::int AS n FROM memmie_old GROUP BY user_id, content_hash), \
    gone AS (\
        DELETE FROM memmie.user_content_refs u USING d \
        WHERE u.user_id = d.user_id AND u.content_hash = d.content_hash AND u.reference_count <= d.n \
        RETURNING u.user_id, u.content_size), \
    kept AS (\
        UPDATE memmie.user_content_refs u SET reference_count = u.reference_count - d.n FROM d \
        WHERE u.user_id = d.user_id AND u.content_hash = d.content_hash AND u.reference_count > d.n) \
    UPDATE memmie.user_contexts c SET storage_used = c.storage_used - s.removed \
    FROM (SELECT user_id, sum(content_size) AS removed FROM gone GROUP BY user_id) s \
    WHERE c.user_id = s.user_id";

thread_local! {
    // Keyed by statement and by the table the trigger is on: a plan reads the transition table by
    // column position, so a plan made for one table's rows must never read another's.
    static PLANS: RefCell<HashMap<(usize, pg_sys::Oid), pg_sys::SPIPlanPtr>> = RefCell::new(HashMap::new());
}

/// Runs each statement, in order, with the trigger's transition tables visible, through plans
/// prepared once per backend.
fn run_steps(trigger: &PgTrigger<'_>, steps: &[&'static CStr]) {
    let tg = trigger.trigger_data() as *const pg_sys::TriggerData as *mut pg_sys::TriggerData;
    let relid = unsafe { (*(*tg).tg_relation).rd_id };
    unsafe {
        if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
            pgrx::error!("memmie reference counting: SPI_connect failed");
        }
        if pg_sys::SPI_register_trigger_data(tg) != pg_sys::SPI_OK_TD_REGISTER as i32 {
            pgrx::error!("memmie reference counting: could not register transition tables");
        }
        for sql in steps {
            let key = (sql.as_ptr() as usize, relid);
            let plan = PLANS.with(|plans| {
                *plans.borrow_mut().entry(key).or_insert_with(|| {
                    let plan = pg_sys::SPI_prepare(sql.as_ptr(), 0, std::ptr::null_mut());
                    if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
                        pgrx::error!("memmie reference counting: could not prepare {sql:?}");
                    }
                    plan
                })
            });
            let rc = pg_sys::SPI_execute_plan(plan, std::ptr::null_mut(), std::ptr::null(), false, 0);
            if rc < 0 {
                pgrx::error!("memmie reference counting: SPI_execute_plan returned {rc}");
            }
        }
        pg_sys::SPI_finish();
    }
}

/// The steps for one firing: additions before removals, so that an UPDATE that keeps a row's
/// content never lets a count pass through zero.
fn steps_for(trigger: &PgTrigger<'_>, add: &'static CStr, sub: &'static CStr) -> Vec<&'static CStr> {
    match trigger.op() {
        Ok(PgTriggerOperation::Insert) => vec![add],
        Ok(PgTriggerOperation::Delete) => vec![sub],
        Ok(PgTriggerOperation::Update) => vec![add, sub],
        _ => vec![],
    }
}

type TriggerResult<'a> = Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::trigger_support::PgTriggerError>;

/// AFTER INSERT / DELETE / UPDATE ON memmie.blob_versions FOR EACH STATEMENT, with transition
/// tables memmie_new / memmie_old.
#[pg_trigger]
fn content_refcount<'a>(trigger: &'a PgTrigger<'a>) -> TriggerResult<'a> {
    run_steps(trigger, &steps_for(trigger, CONTENT_ADD, CONTENT_SUB));
    Ok(None)
}

/// AFTER INSERT / DELETE / UPDATE ON memmie.blob_versions FOR EACH STATEMENT, with transition
/// tables memmie_new / memmie_old.
#[pg_trigger]
fn user_storage_accounting<'a>(trigger: &'a PgTrigger<'a>) -> TriggerResult<'a> {
    run_steps(trigger, &steps_for(trigger, USER_ADD, USER_SUB));
    Ok(None)
}

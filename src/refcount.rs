//! Native triggers on `blob_versions` that keep two counts exact at every commit:
//!
//! * `content_storage.reference_count` = number of `blob_versions` rows naming the hash
//!   (`content_refcount`), which garbage collection relies on. The trigger fires per row and
//!   only notes `+1` / `-1` per hash in backend memory (per subtransaction, so a rolled-back
//!   savepoint takes its notes with it); the net change of each hash is written once, just before
//!   the transaction commits or prepares. A transaction that adds a thousand versions of one
//!   content updates its row once, and the content row is locked only while the transaction
//!   commits, not from its first reference to its end, so writers deduplicating onto the same
//!   popular content do not queue behind each other's whole transactions. Inside the
//!   writing transaction `reference_count` shows the value before it (`memmie.check()` and
//!   `memmie.gc_content()` add what `memmie._pending_references()` lists). The counts are written
//!   as the table's owner, in bytewise hash order.
//! * each user's `storage_used` = total size of the distinct contents their versions name
//!   (`user_storage_accounting`), through `user_content_refs` (one row per user and hash). It
//!   must hold at statement end (quotas are checked against it), so it fires once per statement
//!   with the statement's rows as transition tables (`memmie_new`, `memmie_old`) and applies them
//!   set-wise, one kept plan per step: a statement writing many versions costs one UPDATE per
//!   step, not one per row.

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::trigger_support::PgTriggerOperation;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;

use crate::error::{raise, MemmieError};

// Errors here leave as XX000 through crate::error::raise (no Rust location or backtrace), from
// the top of each trigger and transaction callback, once every Rust value is dropped.
type Fallible<T> = std::result::Result<T, MemmieError>;

fn internal(message: impl Into<String>) -> MemmieError {
    MemmieError::Internal(message.into())
}

// Every statement here runs under the pinned search_path (crate::plans::SEARCH_PATH) and names
// its operators, functions and types with their schema as well: they run inside other roles'
// statements, and at commit as content_storage's owner.
const CONTENT_ADD: &CStr = c"UPDATE memmie.content_storage c \
    SET reference_count = c.reference_count OPERATOR(pg_catalog.+) d.n, last_accessed = pg_catalog.now() \
    FROM (SELECT content_hash, pg_catalog.count(*)::pg_catalog.int4 AS n FROM memmie_new GROUP BY content_hash) d \
    WHERE c.content_hash OPERATOR(pg_catalog.=) d.content_hash";
const CONTENT_SUB: &CStr = c"UPDATE memmie.content_storage c \
    SET reference_count = c.reference_count OPERATOR(pg_catalog.-) d.n, last_accessed = pg_catalog.now() \
    FROM (SELECT content_hash, pg_catalog.count(*)::pg_catalog.int4 AS n FROM memmie_old GROUP BY content_hash) d \
    WHERE c.content_hash OPERATOR(pg_catalog.=) d.content_hash";

// A user's first reference to a content adds its size to storage_used: after the upsert the
// count equals what this statement added exactly when there was none before. USER_ADD returns
// the change of each user's storage_used, which is kept pending (see `pending`) and written at
// commit with the other counts.
macro_rules! user_add_ctes {
    () => {
        "WITH d AS (\
            SELECT user_id, content_hash, pg_catalog.max(content_size) AS content_size, \
                   pg_catalog.count(*)::pg_catalog.int4 AS n \
            FROM memmie_new GROUP BY user_id, content_hash), \
        up AS (\
            INSERT INTO memmie.user_content_refs AS u (user_id, content_hash, content_size, reference_count) \
            SELECT user_id, content_hash, content_size, n FROM d \
            ON CONFLICT (user_id, content_hash) \
            DO UPDATE SET reference_count = u.reference_count OPERATOR(pg_catalog.+) excluded.reference_count \
            RETURNING u.user_id, u.content_hash, u.content_size, u.reference_count) "
    };
}
macro_rules! user_added {
    () => {
        "SELECT up.user_id, pg_catalog.sum(up.content_size)::pg_catalog.int8 AS change FROM up \
        JOIN d ON d.user_id OPERATOR(pg_catalog.=) up.user_id \
              AND d.content_hash OPERATOR(pg_catalog.=) up.content_hash \
        WHERE up.reference_count OPERATOR(pg_catalog.=) d.n GROUP BY up.user_id"
    };
}
// A user's last reference to a content removes its size from storage_used (USER_SUB returns the
// change, negative).
macro_rules! user_sub_ctes {
    () => {
        "WITH d AS (\
            SELECT user_id, content_hash, pg_catalog.count(*)::pg_catalog.int4 AS n \
            FROM memmie_old GROUP BY user_id, content_hash), \
        gone AS (\
            DELETE FROM memmie.user_content_refs u USING d \
            WHERE u.user_id OPERATOR(pg_catalog.=) d.user_id AND u.content_hash OPERATOR(pg_catalog.=) d.content_hash \
              AND u.reference_count OPERATOR(pg_catalog.<=) d.n \
            RETURNING u.user_id, u.content_size), \
        kept AS (\
            UPDATE memmie.user_content_refs u SET reference_count = u.reference_count OPERATOR(pg_catalog.-) d.n FROM d \
            WHERE u.user_id OPERATOR(pg_catalog.=) d.user_id AND u.content_hash OPERATOR(pg_catalog.=) d.content_hash \
              AND u.reference_count OPERATOR(pg_catalog.>) d.n) "
    };
}
macro_rules! user_removed {
    () => {
        "SELECT user_id, (OPERATOR(pg_catalog.-) pg_catalog.sum(content_size))::pg_catalog.int8 AS change \
        FROM gone GROUP BY user_id"
    };
}
// The change applied at once: on 0.2.0's schema, between installing this library and `ALTER
// EXTENSION memmie UPDATE`, whose quota checks read user_contexts alone (as 0.2.0 did; its
// blob_count trigger is its own PL/pgSQL one, also writing at once).
macro_rules! applied_at_once {
    ($($changes:tt)*) => {
        concat!(
            "UPDATE memmie.user_contexts c SET storage_used = c.storage_used OPERATOR(pg_catalog.+) s.change \
            FROM (",
            $($changes)*,
            ") s WHERE c.user_id OPERATOR(pg_catalog.=) s.user_id"
        )
    };
}

const fn c_str(s: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(s.as_bytes()) {
        Ok(c) => c,
        Err(_) => panic!("a statement with a NUL inside"),
    }
}

const USER_ADD: &CStr = c_str(concat!(user_add_ctes!(), user_added!(), "\0"));
const USER_SUB: &CStr = c_str(concat!(user_sub_ctes!(), user_removed!(), "\0"));
const USER_ADD_AT_ONCE: &CStr = c_str(concat!(user_add_ctes!(), applied_at_once!(user_added!()), "\0"));
const USER_SUB_AT_ONCE: &CStr = c_str(concat!(user_sub_ctes!(), applied_at_once!(user_removed!()), "\0"));

thread_local! {
    // Keyed by statement and by the table the trigger is on: a plan reads the transition table by
    // column position, so a plan made for one table's rows must never read another's.
    static PLANS: RefCell<HashMap<(usize, pg_sys::Oid), pg_sys::SPIPlanPtr>> = RefCell::new(HashMap::new());
}

/// Runs each statement, in order, with the trigger's transition tables visible, through plans
/// prepared once per backend, under the pinned search_path (the triggering statement's may be
/// anything).
fn run_steps(trigger: &PgTrigger<'_>, steps: &[&'static CStr]) -> Fallible<()> {
    crate::plans::with_pinned_search_path(|| run_steps_pinned(trigger, steps))
}

// (On an error SPI stays connected: the transaction's abort disconnects it.)
fn run_steps_pinned(trigger: &PgTrigger<'_>, steps: &[&'static CStr]) -> Fallible<()> {
    let tg = trigger.trigger_data() as *const pg_sys::TriggerData as *mut pg_sys::TriggerData;
    let relid = unsafe { (*(*tg).tg_relation).rd_id };
    unsafe {
        if pg_sys::SPI_connect() != pg_sys::SPI_OK_CONNECT as i32 {
            return Err(internal("memmie reference counting: SPI_connect failed"));
        }
        if pg_sys::SPI_register_trigger_data(tg) != pg_sys::SPI_OK_TD_REGISTER as i32 {
            return Err(internal(
                "memmie reference counting: could not register transition tables",
            ));
        }
        for sql in steps {
            let key = (sql.as_ptr() as usize, relid);
            let plan = match PLANS.with(|plans| plans.borrow().get(&key).copied()) {
                Some(plan) => plan,
                None => {
                    let plan = pg_sys::SPI_prepare(sql.as_ptr(), 0, std::ptr::null_mut());
                    if plan.is_null() || pg_sys::SPI_keepplan(plan) != 0 {
                        return Err(internal(format!(
                            "memmie reference counting: could not prepare {sql:?}"
                        )));
                    }
                    PLANS.with(|plans| plans.borrow_mut().insert(key, plan));
                    plan
                }
            };
            let rc = pg_sys::SPI_execute_plan(plan, std::ptr::null_mut(), std::ptr::null(), false, 0);
            if rc < 0 {
                return Err(internal(format!(
                    "memmie reference counting: SPI_execute_plan returned {rc}"
                )));
            }
            if rc == pg_sys::SPI_OK_SELECT as i32 {
                note_storage_rows()?;
            }
        }
        pg_sys::SPI_finish();
    }
    Ok(())
}

/// The rows of the step just run (USER_ADD, USER_SUB): (user_id uuid, storage change int8), each
/// noted as pending for its user.
unsafe fn note_storage_rows() -> Fallible<()> {
    let table = unsafe { pg_sys::SPI_tuptable };
    if table.is_null() {
        return Ok(());
    }
    let n = unsafe { pg_sys::SPI_processed } as usize;
    for i in 0..n {
        let (user, change) = unsafe {
            let tuple = *(*table).vals.add(i);
            let desc = (*table).tupdesc;
            let (mut user_null, mut change_null) = (false, false);
            let user = pg_sys::SPI_getbinval(tuple, desc, 1, &mut user_null);
            let change = pg_sys::SPI_getbinval(tuple, desc, 2, &mut change_null);
            (
                <pgrx::Uuid as pgrx::FromDatum>::from_datum(user, user_null),
                <i64 as pgrx::FromDatum>::from_datum(change, change_null),
            )
        };
        let Some(user) = user else {
            return Err(internal("memmie storage accounting: a change without its user"));
        };
        pending::note_user(user, 0, change.unwrap_or(0));
    }
    Ok(())
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

type TriggerResult<'a> =
    std::result::Result<Option<PgHeapTuple<'a, AllocatedByPostgres>>, pgrx::trigger_support::PgTriggerError>;

/// AFTER INSERT OR DELETE OR UPDATE ON memmie.blob_versions FOR EACH ROW: notes the change of
/// the row's content reference, written at commit.
///
/// 0.1.0 compatibility: 0.1.0 installed this trigger FOR EACH STATEMENT with transition tables
/// memmie_new / memmie_old; fired so, it applies them at once. `ALTER EXTENSION memmie UPDATE`
/// from 0.1.0 runs with this library already loaded (the new .so replaces the old one at
/// install), and the schema keeps the statement-level trigger until the upgrade script swaps it,
/// so every write between the two, and the upgrade script's own, goes through this path. It can
/// go when no supported upgrade starts from a schema whose trigger is statement-level: when
/// upgrading from 0.1.0 to the current version is no longer supported (tests/upgrade/versions).
#[pg_trigger]
fn content_refcount<'a>(trigger: &'a PgTrigger<'a>) -> TriggerResult<'a> {
    if let Err(e) = note_content_refs(trigger) {
        raise(e)
    }
    Ok(None)
}

fn note_content_refs(trigger: &PgTrigger<'_>) -> Fallible<()> {
    if matches!(trigger.level(), PgTriggerLevel::Statement) {
        return run_steps(trigger, &steps_for(trigger, CONTENT_ADD, CONTENT_SUB));
    }
    let hash_of = |tuple: Option<PgHeapTuple<'_, AllocatedByPostgres>>| -> Fallible<Option<String>> {
        let Some(tuple) = tuple else { return Ok(None) };
        tuple.get_by_name::<String>("content_hash").map_err(|e| {
            internal(format!(
                "memmie.content_refcount: cannot read content_hash of the row: {e}"
            ))
        })
    };
    match trigger.op() {
        Ok(PgTriggerOperation::Insert) => pending::note(hash_of(trigger.new())?, 1),
        Ok(PgTriggerOperation::Delete) => pending::note(hash_of(trigger.old())?, -1),
        Ok(PgTriggerOperation::Update) => {
            let (new, old) = (hash_of(trigger.new())?, hash_of(trigger.old())?);
            if new != old {
                pending::note(new, 1);
                pending::note(old, -1);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Reference-count changes noted by `content_refcount` and not yet written, per open
/// (sub)transaction: a subtransaction that aborts drops its notes, one that commits hands them to
/// its parent, and the top transaction writes the net change of each hash just before it
/// commits or prepares (the transaction callbacks are registered in `_PG_init`).
pub mod pending {
    use super::*;

    struct Level {
        subid: pg_sys::SubTransactionId,
        counts: HashMap<String, i64>,
        /// Per user: the change of (blob_count, storage_used).
        users: HashMap<[u8; 16], (i64, i64)>,
    }

    impl Level {
        fn new(subid: pg_sys::SubTransactionId) -> Level {
            Level {
                subid,
                counts: HashMap::new(),
                users: HashMap::new(),
            }
        }
    }

    thread_local! {
        static LEVELS: RefCell<Vec<Level>> = const { RefCell::new(Vec::new()) };
    }

    /// Adds `counts` into `into`.
    fn add_into(into: &mut HashMap<String, i64>, counts: impl IntoIterator<Item = (String, i64)>) {
        for (hash, n) in counts {
            *into.entry(hash).or_insert(0) += n;
        }
    }

    /// Adds the per-user changes `users` into `into`.
    fn add_users_into(
        into: &mut HashMap<[u8; 16], (i64, i64)>,
        users: impl IntoIterator<Item = ([u8; 16], (i64, i64))>,
    ) {
        for (user, (blobs, storage)) in users {
            let entry = into.entry(user).or_insert((0, 0));
            entry.0 += blobs;
            entry.1 += storage;
        }
    }

    /// Runs `f` on the current subtransaction's level (made when missing).
    fn with_current(f: impl FnOnce(&mut Level)) {
        let subid = unsafe { pg_sys::GetCurrentSubTransactionId() };
        LEVELS.with(|levels| {
            let mut levels = levels.borrow_mut();
            if levels.last().is_none_or(|l| l.subid != subid) {
                levels.push(Level::new(subid));
            }
            if let Some(level) = levels.last_mut() {
                f(level);
            }
        });
    }

    /// Adds `n` references to `hash` in the current subtransaction.
    pub(super) fn note(hash: Option<String>, n: i64) {
        let Some(hash) = hash else { return };
        with_current(|level| add_into(&mut level.counts, [(hash, n)]));
    }

    /// Adds `blobs` to the user's blob_count and `storage` to its storage_used in the current
    /// subtransaction.
    pub(super) fn note_user(user: pgrx::Uuid, blobs: i64, storage: i64) {
        if blobs == 0 && storage == 0 {
            return;
        }
        with_current(|level| add_users_into(&mut level.users, [(*user.as_bytes(), (blobs, storage))]));
    }

    /// The levels from `subid` up, removed and merged.
    fn take_from(levels: &mut Vec<Level>, subid: pg_sys::SubTransactionId) -> Level {
        let mut merged = Level::new(subid);
        while levels.last().is_some_and(|l| l.subid >= subid) {
            if let Some(level) = levels.pop() {
                add_into(&mut merged.counts, level.counts);
                add_users_into(&mut merged.users, level.users);
            }
        }
        merged
    }

    /// The net change of every hash noted in this transaction and not written yet, without
    /// zeros, in hash order.
    pub fn net() -> Vec<(String, i64)> {
        let mut all: Vec<(String, i64)> = LEVELS
            .with(|levels| {
                let mut merged: HashMap<String, i64> = HashMap::new();
                for level in levels.borrow().iter() {
                    add_into(&mut merged, level.counts.iter().map(|(hash, n)| (hash.clone(), *n)));
                }
                merged
            })
            .into_iter()
            .filter(|(_, n)| *n != 0)
            .collect();
        all.sort_unstable();
        all
    }

    /// The net change of (blob_count, storage_used) of every user noted in this transaction and
    /// not written yet, without zeros, in user_id order.
    pub fn net_users() -> Vec<([u8; 16], i64, i64)> {
        let mut all: Vec<([u8; 16], i64, i64)> = LEVELS
            .with(|levels| {
                let mut merged: HashMap<[u8; 16], (i64, i64)> = HashMap::new();
                for level in levels.borrow().iter() {
                    add_users_into(&mut merged, level.users.iter().map(|(u, c)| (*u, *c)));
                }
                merged
            })
            .into_iter()
            .filter(|(_, (blobs, storage))| *blobs != 0 || *storage != 0)
            .map(|(user, (blobs, storage))| (user, blobs, storage))
            .collect();
        // uuid's order is the bytewise order of its 16 bytes
        all.sort_unstable();
        all
    }

    // Run as content_storage's owner: every operator, function and type is named with its
    // schema, under the pinned search_path (see write()).
    const ADD_ONE: &str = "UPDATE memmie.content_storage \
        SET reference_count = reference_count OPERATOR(pg_catalog.+) $2, last_accessed = pg_catalog.now() \
        WHERE content_hash OPERATOR(pg_catalog.=) $1";
    const ADD_MANY: &str = "UPDATE memmie.content_storage c \
        SET reference_count = c.reference_count OPERATOR(pg_catalog.+) d.n, last_accessed = pg_catalog.now() \
        FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.int8[])) AS d(h, n) \
        WHERE c.content_hash OPERATOR(pg_catalog.=) d.h";
    /// Up to this many hashes are written one UPDATE each, in order; more are locked in order
    /// (LOCK_MANY), then written by one statement per CHUNK.
    const FEW: usize = 16;
    const LOCK_MANY: &str = "SELECT FROM memmie.content_storage \
        WHERE content_hash OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.text[]) \
        ORDER BY content_hash COLLATE pg_catalog.\"C\" FOR NO KEY UPDATE";
    /// Hashes written per statement.
    const CHUNK: usize = 1000;

    /// Writes every pending change (in hash order, bytewise, so that two committing
    /// transactions take the content rows' locks in the same order and cannot deadlock on them)
    /// and forgets them.
    fn write_all() -> Fallible<()> {
        // Writing can itself cause notes (a user's trigger on content_storage writing versions):
        // those are written too, before the transaction goes on to commit.
        for _ in 0..16 {
            let (all, users) = (net(), net_users());
            LEVELS.with(|levels| levels.borrow_mut().clear());
            if all.is_empty() && users.is_empty() {
                return Ok(());
            }
            if !all.is_empty() {
                write(&all)?;
            }
            if !users.is_empty() {
                write_users(&users)?;
            }
        }
        Err(internal(
            "memmie reference counting: the counts kept changing while they were written at commit",
        ))
    }

    /// The owner of memmie's table `name`; None when it is gone (the extension dropped in
    /// this transaction: nothing left to count).
    fn owner_of(name: &CStr) -> Option<pg_sys::Oid> {
        let relid = crate::memmie_relid(name)?;
        unsafe {
            let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
            let rel = pg_sys::relation_open(relid, lock);
            let owner = (*(*rel).rd_rel).relowner;
            pg_sys::relation_close(rel, lock);
            Some(owner)
        }
    }

    /// Writes `all` as the owner of content_storage: the counts are memmie's bookkeeping, not the
    /// committing role's writes (PostgreSQL's foreign-key triggers run as the table owner the
    /// same way), and the statement that noted them may have run under another role (a SECURITY
    /// DEFINER function) than the one that commits. As PostgreSQL does for code it runs on
    /// behalf of a table owner (maintenance commands, RI checks): a security-restricted
    /// operation (no SET ROLE, no temporary objects, no deferred work left behind) under the
    /// pinned search_path, so nothing the committing session created (a `pg_temp` type, an
    /// operator in `public`) is found while running with the owner's rights.
    fn write(all: &[(String, i64)]) -> Fallible<()> {
        as_owner_of(c"content_storage", || write_as_owner(all))
    }

    /// Writes the users' pending counts as the owner of user_contexts, as `write` does for
    /// content_storage, one UPDATE per user in user_id order (two committing transactions lock
    /// the rows in the same order). memmie's own writers hold the user's row lock already.
    fn write_users(users: &[([u8; 16], i64, i64)]) -> Fallible<()> {
        as_owner_of(c"user_contexts", || {
            unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
            let uuid = pgrx::PgOid::BuiltIn(pg_sys::BuiltinOid::UUIDOID);
            let int8 = pgrx::PgOid::BuiltIn(pg_sys::BuiltinOid::INT8OID);
            let written = users.iter().try_for_each(|(user, blobs, storage)| {
                crate::plans::with_plan(ADD_USER, &[uuid, int8, int8], |client, stmt| {
                    client
                        .update(
                            stmt,
                            None,
                            &[pgrx::Uuid::from_bytes(*user).into(), (*blobs).into(), (*storage).into()],
                        )
                        .map(|_| ())
                })
            });
            unsafe { pg_sys::PopActiveSnapshot() };
            written.map_err(|e| {
                internal(format!(
                    "memmie storage accounting: could not write the users' counts at commit: {e}"
                ))
            })
        })
    }

    const ADD_USER: &str = "UPDATE memmie.user_contexts \
        SET blob_count = blob_count OPERATOR(pg_catalog.+) $2, \
            storage_used = storage_used OPERATOR(pg_catalog.+) $3 \
        WHERE user_id OPERATOR(pg_catalog.=) $1";

    /// Runs `f` as the owner of memmie's table `name` (nothing when the table is gone).
    fn as_owner_of(name: &CStr, f: impl FnOnce() -> Fallible<()>) -> Fallible<()> {
        let Some(owner) = owner_of(name) else {
            return Ok(());
        };
        let (mut user, mut context) = (pg_sys::InvalidOid, 0);
        unsafe {
            pg_sys::GetUserIdAndSecContext(&mut user, &mut context);
            pg_sys::SetUserIdAndSecContext(
                owner,
                context | pg_sys::SECURITY_LOCAL_USERID_CHANGE as i32 | pg_sys::SECURITY_RESTRICTED_OPERATION as i32,
            );
        }
        // (an ERROR raised inside aborts the transaction, which restores the user and the
        // search_path; an error returned is raised once both are restored)
        let written = crate::plans::with_pinned_search_path(f);
        unsafe { pg_sys::SetUserIdAndSecContext(user, context) };
        written
    }

    fn write_as_owner(all: &[(String, i64)]) -> Fallible<()> {
        // At commit no portal is left to lend SPI a snapshot: planning the UPDATE needs one
        // (it then takes a fresh one per statement itself, as any write does).
        unsafe { pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot()) };
        let text = crate::plans::TEXT;
        let int8 = pgrx::PgOid::BuiltIn(pg_sys::BuiltinOid::INT8OID);
        let written = if all.len() <= FEW {
            all.iter().try_for_each(|(hash, n)| {
                crate::plans::with_plan(ADD_ONE, &[text, int8], |client, stmt| {
                    client
                        .update(stmt, None, &[hash.as_str().into(), (*n).into()])
                        .map(|_| ())
                })
            })
        } else {
            let text_array = pgrx::PgOid::BuiltIn(pg_sys::BuiltinOid::TEXTARRAYOID);
            let int8_array = pgrx::PgOid::BuiltIn(pg_sys::BuiltinOid::INT8ARRAYOID);
            all.chunks(CHUNK).try_for_each(|chunk| {
                let hashes: Vec<&str> = chunk.iter().map(|(h, _)| h.as_str()).collect();
                let counts: Vec<i64> = chunk.iter().map(|(_, n)| *n).collect();
                crate::plans::with_plan(LOCK_MANY, &[text_array], |client, stmt| {
                    client.update(stmt, None, &[hashes.clone().into()]).map(|_| ())
                })?;
                crate::plans::with_plan(ADD_MANY, &[text_array, int8_array], |client, stmt| {
                    client.update(stmt, None, &[hashes.into(), counts.into()]).map(|_| ())
                })
            })
        };
        unsafe { pg_sys::PopActiveSnapshot() };
        written.map_err(|e| {
            internal(format!(
                "memmie reference counting: could not write the counts at commit: {e}"
            ))
        })
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
        use pg_sys::XactEvent::*;
        match event {
            XACT_EVENT_PRE_COMMIT | XACT_EVENT_PRE_PREPARE => {
                if let Err(e) = write_all() {
                    raise(e)
                }
            }
            XACT_EVENT_COMMIT
            | XACT_EVENT_ABORT
            | XACT_EVENT_PREPARE
            | XACT_EVENT_PARALLEL_COMMIT
            | XACT_EVENT_PARALLEL_ABORT => LEVELS.with(|levels| levels.borrow_mut().clear()),
            _ => {}
        }
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn on_subxact(
        event: pg_sys::SubXactEvent::Type,
        subid: pg_sys::SubTransactionId,
        parent: pg_sys::SubTransactionId,
        _arg: *mut std::ffi::c_void,
    ) {
        use pg_sys::SubXactEvent::*;
        match event {
            SUBXACT_EVENT_ABORT_SUB => LEVELS.with(|levels| {
                take_from(&mut levels.borrow_mut(), subid);
            }),
            SUBXACT_EVENT_COMMIT_SUB => LEVELS.with(|levels| {
                let mut levels = levels.borrow_mut();
                let merged = take_from(&mut levels, subid);
                if merged.counts.is_empty() && merged.users.is_empty() {
                    return;
                }
                if levels.last().is_none_or(|l| l.subid != parent) {
                    levels.push(Level::new(parent));
                }
                if let Some(level) = levels.last_mut() {
                    add_into(&mut level.counts, merged.counts);
                    add_users_into(&mut level.users, merged.users);
                }
            }),
            _ => {}
        }
    }

    /// Registers the transaction callbacks (from `_PG_init`, once per backend).
    pub fn register_callbacks() {
        unsafe {
            pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
            pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
        }
    }
}

/// The reference-count changes this transaction has made and not yet written (they are written
/// when it commits): what `check()` and `gc_content()` add to the stored counts.
#[pg_extern(name = "_pending_references", volatile, parallel_unsafe)]
fn pending_references() -> TableIterator<'static, (name!(content_hash, String), name!(n, i64))> {
    TableIterator::new(pending::net())
}

/// The changes of users' blob_count and storage_used this transaction has made and not yet
/// written (they are written when it commits): what quota checks, `check()` and the usage
/// snapshots add to the stored counts.
#[pg_extern(name = "_pending_user_counts", volatile, parallel_unsafe)]
fn pending_user_counts() -> TableIterator<
    'static,
    (
        name!(user_id, pgrx::Uuid),
        name!(blob_count, i64),
        name!(storage_used, i64),
    ),
> {
    TableIterator::new(
        pending::net_users()
            .into_iter()
            .map(|(user, blobs, storage)| (pgrx::Uuid::from_bytes(user), blobs, storage)),
    )
}

/// AFTER INSERT OR DELETE ON memmie.blobs FOR EACH ROW, and AFTER UPDATE OF deleted_at, user_id
/// when either changes: user_contexts.blob_count = the user's blobs that are not deleted,
/// whatever removes them (memmie's functions, a cascade from a parent blob, plain DML). The
/// change is noted per user and written at commit with the other counts (updating the user's
/// row at each blob made a chain of row versions that every later lookup of it walked: a
/// transaction of many writes slowed down with each one).
#[pg_trigger]
fn count_blobs<'a>(trigger: &'a PgTrigger<'a>) -> TriggerResult<'a> {
    if let Err(e) = note_blob_count(trigger) {
        raise(e)
    }
    Ok(None)
}

fn note_blob_count(trigger: &PgTrigger<'_>) -> Fallible<()> {
    // the user_id of a row version that is not deleted (None for a deleted one)
    let live_of = |tuple: Option<PgHeapTuple<'_, AllocatedByPostgres>>| -> Fallible<Option<pgrx::Uuid>> {
        let Some(tuple) = tuple else { return Ok(None) };
        let deleted = tuple
            .get_by_name::<pgrx::datum::TimestampWithTimeZone>("deleted_at")
            .map_err(|e| internal(format!("memmie.count_blobs: cannot read deleted_at: {e}")))?;
        if deleted.is_some() {
            return Ok(None);
        }
        tuple
            .get_by_name::<pgrx::Uuid>("user_id")
            .map_err(|e| internal(format!("memmie.count_blobs: cannot read user_id: {e}")))
    };
    let (old, new) = match trigger.op() {
        Ok(PgTriggerOperation::Insert) => (None, live_of(trigger.new())?),
        Ok(PgTriggerOperation::Delete) => (live_of(trigger.old())?, None),
        Ok(PgTriggerOperation::Update) => (live_of(trigger.old())?, live_of(trigger.new())?),
        _ => (None, None),
    };
    if let Some(user) = old {
        pending::note_user(user, -1, 0);
    }
    if let Some(user) = new {
        pending::note_user(user, 1, 0);
    }
    Ok(())
}

/// AFTER INSERT / DELETE / UPDATE ON memmie.blob_versions FOR EACH STATEMENT, with transition
/// tables memmie_new / memmie_old.
#[pg_trigger]
fn user_storage_accounting<'a>(trigger: &'a PgTrigger<'a>) -> TriggerResult<'a> {
    let steps = match counts_at_commit() {
        Ok(true) => steps_for(trigger, USER_ADD, USER_SUB),
        Ok(false) => steps_for(trigger, USER_ADD_AT_ONCE, USER_SUB_AT_ONCE),
        Err(e) => raise(e),
    };
    if let Err(e) = run_steps(trigger, &steps) {
        raise(e)
    }
    Ok(None)
}

thread_local! {
    static COUNTS_AT_COMMIT: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the schema adds the pending counts where it reads them (0.3.0's: it has
/// memmie._pending_user_counts()). Once seen, remembered for the backend (a schema does not go
/// back to 0.2.0's).
fn counts_at_commit() -> Fallible<bool> {
    if COUNTS_AT_COMMIT.with(|c| c.get()) {
        return Ok(true);
    }
    let found = Spi::get_one::<bool>("SELECT pg_catalog.to_regprocedure('memmie._pending_user_counts()') IS NOT NULL")
        .map_err(|e| internal(format!("memmie storage accounting: cannot read the schema: {e}")))?
        .unwrap_or(false);
    COUNTS_AT_COMMIT.with(|c| c.set(found));
    Ok(found)
}

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use pgrx::prelude::*;

    const USER: &str = "00000000-0000-0000-0000-0000000007e5";

    fn pending_of_user() -> Vec<(i64, i64)> {
        super::pending::net_users()
            .into_iter()
            .filter(|(u, _, _)| pgrx::Uuid::from_bytes(*u).to_string() == USER)
            .map(|(_, blobs, storage)| (blobs, storage))
            .collect()
    }

    // The users' counts are pending in the writing transaction: a subtransaction that aborts
    // takes its share with it, one that commits hands it to its parent, a hard delete in the same
    // transaction nets out to nothing.
    #[pg_test]
    fn user_counts_follow_subtransactions() {
        let create = |content: &str| {
            format!("PERFORM memmie.create_blob('{USER}', convert_to('{content}', 'UTF8'), 'text/plain');")
        };
        Spi::run(&format!("DO $$ BEGIN {} END $$", create("four"))).unwrap();
        assert_eq!(pending_of_user(), vec![(1, 4)]);
        // aborted: dropped
        Spi::run(&format!(
            "DO $$ BEGIN BEGIN {} RAISE EXCEPTION 'undo'; EXCEPTION WHEN OTHERS THEN NULL; END; END $$",
            create("seven!!")
        ))
        .unwrap();
        assert_eq!(pending_of_user(), vec![(1, 4)]);
        // committed subtransaction: kept; the same content again adds a blob, not storage
        Spi::run(&format!(
            "DO $$ BEGIN BEGIN {} {} EXCEPTION WHEN OTHERS THEN NULL; END; END $$",
            create("six!!!"),
            create("four")
        ))
        .unwrap();
        assert_eq!(pending_of_user(), vec![(3, 10)]);
        // the stored row has none of it yet; memmie._user_counts adds it
        let stored = Spi::get_two::<i64, i32>(&format!(
            "SELECT storage_used, blob_count FROM memmie.user_contexts WHERE user_id = '{USER}'"
        ))
        .unwrap();
        assert_eq!(stored, (Some(0), Some(0)));
        let seen = Spi::get_two::<i64, i64>(&format!(
            "SELECT storage_used, blob_count FROM memmie._user_counts('{USER}')"
        ))
        .unwrap();
        assert_eq!(seen, (Some(10), Some(3)));
        // hard-deleting them all: nothing left to write
        Spi::run(&format!(
            "SELECT memmie.delete_blob(id, hard => true) FROM memmie.blobs WHERE user_id = '{USER}'"
        ))
        .unwrap();
        assert_eq!(pending_of_user(), vec![]);
    }
}

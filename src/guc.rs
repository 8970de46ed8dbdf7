//! memmie's settings (GUCs), every one of them: defined here, read through the functions here.
//! `register` runs from `_PG_init`; `register_preload` only while shared_preload_libraries are
//! loaded (src/maintenance_worker.rs: the worker's database is a postmaster-level setting).

use std::ffi::CString;

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Largest content one call may store, in bytes (default 256 MiB, at most 1 GiB, bytea's limit).
static MAX_CONTENT_SIZE: GucSetting<i32> = GucSetting::<i32>::new(256 * 1024 * 1024);

pub fn max_content_size() -> u64 {
    MAX_CONTENT_SIZE.get().max(0) as u64
}

/// Longest chain of providers dispatch follows: a blob at this depth triggers no provider.
static MAX_DERIVATION_DEPTH: GucSetting<i32> = GucSetting::<i32>::new(16);

/// The current `memmie.max_derivation_depth` (reading it through here loads the library, so the
/// setting is defined with its default even in a session that never called memmie's Rust code).
#[pgrx::pg_extern(name = "_max_derivation_depth", stable, parallel_safe)]
fn max_derivation_depth() -> i32 {
    MAX_DERIVATION_DEPTH.get()
}

/// How long processed events are kept before maintenance() drops their partitions (seconds).
static EVENT_RETENTION: GucSetting<i32> = GucSetting::<i32>::new(30 * 24 * 3600);

/// The current `memmie.event_retention`, in seconds (read through here so that the setting is
/// defined even in a session that never called memmie's Rust code).
#[pgrx::pg_extern(name = "_event_retention_seconds", stable, parallel_safe)]
fn event_retention_seconds() -> i32 {
    EVENT_RETENTION.get()
}

/// Every how many versions a blob's state is kept whole (memmie.blob_snapshots); 0: never.
static SNAPSHOT_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(16);

/// The current `memmie.snapshot_interval` (read through here so that the setting is defined
/// even in a session that never called memmie's Rust code).
#[pgrx::pg_extern(name = "_snapshot_interval", stable, parallel_safe)]
fn snapshot_interval() -> i32 {
    SNAPSHOT_INTERVAL.get()
}

/// Memory a DAG traversal may use to read `blob_edges` whole (kB; 0: never).
static TRAVERSAL_WORK_MEM: GucSetting<i32> = GucSetting::<i32>::new(64 * 1024);

pub fn traversal_work_mem_bytes() -> usize {
    TRAVERSAL_WORK_MEM.get().max(0) as usize * 1024
}

/// Seconds between two runs of maintenance() by the background worker; 0: the worker only waits.
static MAINTENANCE_INTERVAL: GucSetting<i32> = GucSetting::<i32>::new(15 * 60);

pub fn maintenance_interval_seconds() -> i32 {
    MAINTENANCE_INTERVAL.get()
}

/// The database the background worker connects to (memmie must be installed there).
static MAINTENANCE_DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c"postgres"));

pub fn maintenance_database() -> String {
    MAINTENANCE_DATABASE
        .get()
        .and_then(|d| d.into_string().ok())
        .unwrap_or_else(|| "postgres".to_string())
}

/// The user the session acts for (src/access.rs, sql/access.sql): a uuid, or empty for none.
/// Defined through PostgreSQL's own API for its check hook (a value that is not a uuid is
/// refused when it is set); PostgreSQL owns the string.
static mut USER_ID: *mut std::ffi::c_char = std::ptr::null_mut();

/// `memmie.user_id` as the 16 bytes of a uuid; None when empty (no user bound).
pub fn bound_user() -> Option<[u8; 16]> {
    let raw = unsafe { USER_ID };
    if raw.is_null() {
        return None;
    }
    let text = unsafe { std::ffi::CStr::from_ptr(raw) }.to_str().ok()?;
    crate::access::parse_uuid(text)
}

/// The settings defined once shared_preload_libraries are loaded (postmaster-level ones can be
/// defined only then).
pub fn register_preload() {
    GucRegistry::define_string_guc(
        c"memmie.maintenance_database",
        c"The database in which memmie's background worker runs memmie.maintenance().",
        c"Needs memmie in shared_preload_libraries; memmie must be installed in that database.",
        &MAINTENANCE_DATABASE,
        GucContext::Postmaster,
        GucFlags::default(),
    );
}

pub fn register() {
    unsafe {
        pgrx::pg_sys::DefineCustomStringVariable(
            c"memmie.user_id".as_ptr(),
            c"The user this session acts for: memmie's functions and row-level security show and change only this user's data.".as_ptr(),
            c"A uuid, or empty for none (then only owner and admin-level roles can call memmie's user functions). Set it per transaction with set_config('memmie.user_id', $1, true) behind a transaction-pooling connection pooler.".as_ptr(),
            &raw mut USER_ID,
            c"".as_ptr(),
            pgrx::pg_sys::GucContext::PGC_USERSET,
            0,
            Some(crate::access::check_user_id),
            None,
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"memmie.maintenance_interval",
        c"How often memmie's background worker runs memmie.maintenance().",
        c"Needs memmie in shared_preload_libraries. 0 turns the runs off.",
        &MAINTENANCE_INTERVAL,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"memmie.traversal_work_mem",
        c"Memory a DAG traversal may use to read memmie.blob_edges whole.",
        c"A traversal that reaches a large part of the graph reads the table once (about 36 bytes per edge) instead of looking each node up; 0 never does.",
        &TRAVERSAL_WORK_MEM,
        0,
        i32::MAX / 2,
        GucContext::Userset,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"memmie.event_retention",
        c"How long maintenance() keeps processed events.",
        c"Partitions of memmie.events older than this whose events are all processed are dropped.",
        &EVENT_RETENTION,
        3600,
        i32::MAX,
        GucContext::Suset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"memmie.snapshot_interval",
        c"Every how many versions memmie keeps a blob's whole state, where replay starts.",
        c"blob_state() replays at most this many deltas from the nearest kept state. 0 keeps none (replay from version 1).",
        &SNAPSHOT_INTERVAL,
        0,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memmie.max_derivation_depth",
        c"Longest chain of derived blobs that dispatch_events follows.",
        c"A blob whose depth is at least this value triggers no provider.",
        &MAX_DERIVATION_DEPTH,
        0,
        1000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"memmie.max_content_size",
        c"Largest content memmie stores in one piece.",
        c"Contents larger than this are refused with SQLSTATE 54000. Only superusers can change it.",
        &MAX_CONTENT_SIZE,
        0,
        1024 * 1024 * 1024,
        GucContext::Suset,
        GucFlags::UNIT_BYTE,
    );
}

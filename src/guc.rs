//! memmie's settings (GUCs).

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

/// Memory a DAG traversal may use to read `blob_edges` whole (kB; 0: never).
static TRAVERSAL_WORK_MEM: GucSetting<i32> = GucSetting::<i32>::new(64 * 1024);

pub fn traversal_work_mem_bytes() -> usize {
    TRAVERSAL_WORK_MEM.get().max(0) as usize * 1024
}

pub fn register() {
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

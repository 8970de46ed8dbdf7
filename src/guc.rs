//! memmie's settings (GUCs).

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};

/// Largest content one call may store, in bytes (default 256 MiB, at most 1 GiB, bytea's limit).
static MAX_CONTENT_SIZE: GucSetting<i32> = GucSetting::<i32>::new(256 * 1024 * 1024);

pub fn max_content_size() -> u64 {
    MAX_CONTENT_SIZE.get().max(0) as u64
}

pub fn register() {
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

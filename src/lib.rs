//! memmie: a versioned, content-addressed, event-sourced blob store inside PostgreSQL.
//!
//! The schema and the set-based parts live in `sql/*.sql`, loaded in the order below; Rust holds
//! what must be fast or exact (hashing, compression, JSON Patch, replay, the counting triggers).

use pgrx::prelude::*;

mod access;
mod content;
mod dag;
mod dag_statistics;
mod error;
mod guc;
mod json_schema;
mod jsonb;
mod maintenance_worker;
mod partitions;
mod patch;
mod patch_jsonb;
mod plans;
mod refcount;
mod state;

::pgrx::pg_module_magic!(name, version);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
    refcount::pending::register_callbacks();
    maintenance_worker::register_worker();
}

/// The oid of table `name` of schema memmie; None when there is none (the extension dropped in
/// the current transaction).
pub(crate) fn memmie_relid(name: &std::ffi::CStr) -> Option<pg_sys::Oid> {
    unsafe {
        let nsp = pg_sys::get_namespace_oid(c"memmie".as_ptr(), true);
        if nsp == pg_sys::InvalidOid {
            return None;
        }
        let relid = pg_sys::get_relname_relid(name.as_ptr(), nsp);
        (relid != pg_sys::InvalidOid).then_some(relid)
    }
}

// Load order (each file names what it needs; `requires` puts it after them): the tables, the
// SQLSTATE list, content, the shared helpers, the access levels, the counting triggers, the blob lifecycle, the
// views, then the rest of the API; privileges last.
extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
extension_sql_file!("../sql/errors.sql", name = "errors", requires = ["schema"]);
extension_sql_file!(
    "../sql/content.sql",
    name = "content",
    requires = [
        "errors",
        content::sha256,
        content::encode_content,
        content::check_content_size,
        content::check_hash,
        content::verify_content_row,
        patch::jsonb_patch,
        patch::jsonb_diff_text,
        state::check_mime,
    ]
);
extension_sql_file!(
    "../sql/helpers.sql",
    name = "helpers",
    requires = ["content", refcount::pending_user_counts]
);
extension_sql_file!(
    "../sql/access.sql",
    name = "access",
    requires = ["helpers", access::bound_user, access::caller]
);
extension_sql_file!(
    "../sql/counters.sql",
    name = "counters",
    requires = [
        "helpers",
        refcount::content_refcount,
        refcount::user_storage_accounting,
        refcount::count_blobs
    ]
);
extension_sql_file!(
    "../sql/blobs.sql",
    name = "blobs",
    requires = [
        "helpers",
        "counters",
        content::get_content,
        patch::replay_text,
        patch::replay_from,
        guc::snapshot_interval,
        state::next_state_text,
        state::is_json_type_sql,
        state::json_from_bytes,
        jsonb::check_depth,
    ]
);
extension_sql_file!(
    "../sql/views.sql",
    name = "views",
    requires = ["blobs", dag_statistics::dag_statistics]
);
extension_sql_file!(
    "../sql/dag.sql",
    name = "dag",
    requires = ["views", dag::descendants, dag::ancestors, dag::would_cycle]
);
extension_sql_file!(
    "../sql/providers.sql",
    name = "providers",
    requires = ["blobs", json_schema::check_json_schema, json_schema::validate_json]
);
extension_sql_file!("../sql/jobs.sql", name = "jobs", requires = ["blobs"]);
extension_sql_file!(
    "../sql/pipeline.sql",
    name = "pipeline",
    requires = ["dag", "providers", "jobs", guc::max_derivation_depth]
);
extension_sql_file!(
    "../sql/partitions.sql",
    name = "partitions",
    requires = ["schema", partitions::create_partitions, partitions::drop_old_partitions]
);
extension_sql_file!("../sql/external.sql", name = "external", requires = ["blobs"]);
extension_sql_file!("../sql/metrics.sql", name = "metrics", requires = ["pipeline"]);
extension_sql_file!(
    "../sql/check.sql",
    name = "check",
    requires = [
        "pipeline",
        "partitions",
        refcount::pending_references,
        refcount::pending_user_counts
    ]
);
extension_sql_file!(
    "../sql/operations.sql",
    name = "operations",
    requires = [
        "views",
        "partitions",
        "metrics",
        refcount::pending_references,
        guc::event_retention_seconds
    ]
);
extension_sql_file!("../sql/distribute.sql", name = "distribute", requires = ["operations"]);
extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    #[must_use]
    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}

//! Prepared SPI statements kept for the life of the backend: memmie's per-row and per-call SQL
//! is planned once, with bound parameters, and fully schema-qualified; and the pinned
//! `search_path` under which memmie's SQL runs when no memmie function has pinned it already.

use pgrx::prelude::*;
use pgrx::spi::{self, OwnedPreparedStatement, SpiClient};
use pgrx::PgOid;
use std::cell::RefCell;
use std::collections::HashMap;

pub const TEXT: PgOid = PgOid::BuiltIn(pg_sys::BuiltinOid::TEXTOID);

thread_local! {
    static PLANS: RefCell<HashMap<&'static str, OwnedPreparedStatement>> = RefCell::new(HashMap::new());
}

/// Connects to SPI and calls `f` with the kept plan of `sql` (prepared on first use).
pub fn with_plan<R>(
    sql: &'static str,
    types: &[PgOid],
    f: impl FnOnce(&mut SpiClient<'_>, &OwnedPreparedStatement) -> spi::Result<R>,
) -> spi::Result<R> {
    Spi::connect_mut(|client| {
        PLANS.with(|plans| {
            let mut plans = plans.borrow_mut();
            if !plans.contains_key(sql) {
                let stmt = client.prepare_mut(sql, types)?.keep();
                plans.insert(sql, stmt);
            }
            let stmt = plans.get(sql).ok_or(spi::SpiError::NoTupleTable)?;
            f(client, stmt)
        })
    })
}

/// The search_path every memmie function runs with: nothing a user can create in is searched,
/// and `pg_temp` is named last, so a temporary type, table or view never shadows one of
/// `pg_catalog` (PostgreSQL searches an unnamed `pg_temp` first for those).
pub const SEARCH_PATH: &std::ffi::CStr = c"pg_catalog, pg_temp";

/// Runs `f` with `search_path` set to [`SEARCH_PATH`], as a function declared
/// `SET search_path = pg_catalog, pg_temp` would: the setting is restored when `f` returns, and
/// by the (sub)transaction's abort when it raises.
pub fn with_pinned_search_path<R>(f: impl FnOnce() -> R) -> R {
    let level = unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"search_path".as_ptr(),
            SEARCH_PATH.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        level
    };
    let result = f();
    unsafe { pg_sys::AtEOXact_GUC(true, level) };
    result
}

/// Whether function `signature` (e.g. `memmie._scope()`) exists. The library is shared by every
/// installed version of the extension's SQL: until `ALTER EXTENSION memmie UPDATE` has run, a
/// database holds the previous version's functions, and calls that only the new version has are
/// skipped rather than failing there.
pub fn function_exists(signature: &str) -> bool {
    use pgrx::IntoDatum;
    let Some(text) = signature.into_datum() else {
        return false;
    };
    let oid = unsafe { pgrx::direct_function_call_as_datum(pg_sys::to_regprocedure, &[Some(text)]) };
    oid.is_some_and(|d| d.value() != 0)
}

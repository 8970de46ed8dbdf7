//! Prepared SPI statements kept for the life of the backend: memmie's per-row and per-call SQL
//! is planned once, with bound parameters, and fully schema-qualified (no search_path lookups).

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

//! One error type for everything memmie raises, mapped to the SQLSTATEs of the SQL API.
//!
//! The list of every SQLSTATE memmie raises, from SQL or from Rust, is `sql/errors.sql`; each
//! variant of [`MemmieError`] documents its code in that list, and `tests/sqlstates.sh` checks
//! that the variants, the list, every raise in `sql/*.sql` and `src/*.rs` and the "Errors" table
//! of `docs/sql-api.md` agree. Nothing in `src/` raises past this type (no `pgrx::error!`, which
//! would give `XX000` with Rust's file and line as the location).
//!
//! pgrx can only raise the SQLSTATEs it knows (`PgSqlErrorCode`); memmie's own codes (`MM001`…)
//! would come out as `XX000`. So errors leave Rust through [`raise`], which calls Postgres'
//! `ereport` machinery directly with the exact code, after every Rust value has been dropped.
//!
//! ## Why every `#[pg_extern]` body runs inside [`guarded`]
//!
//! How pgrx 0.18.1 reports errors (`pgrx-pg-sys/src/submodules/panic.rs`): its panic hook stores
//! a `std::backtrace::Backtrace::capture()` with every panic, and when a panic reaches a
//! `#[pg_extern]` boundary `do_ereport` sends `detail_with_backtrace()` as the ERROR's DETAIL.
//! That is a Rust `panic!`, a `pgrx::error!` (raised as a panic carrying an `ErrorReport`), and
//! also a PostgreSQL ERROR raised inside a `pg_sys` call (its `pg_guard_ffi_boundary` turns the
//! `longjmp` into a panic, and the backtrace is attached when it is re-raised). The backtrace is
//! captured whenever the server runs with `RUST_BACKTRACE` / `RUST_LIB_BACKTRACE` set, and its
//! frames name crate paths; the error's location (file, function) is Rust's too.
//!
//! So memmie's functions catch everything at their top ([`guarded`], a `PgTryBuilder`): a
//! PostgreSQL ERROR becomes a [`MemmieError`] with the same SQLSTATE and message (no DETAIL, no
//! backtrace), and a panic — which should never happen: nothing input can reach unwraps — an
//! `XX000` with the panic's message only. [`raise`] then reports it with location `memmie`.

use std::ffi::{c_char, c_int, CString};
use std::fmt;

/// What went wrong, with the value that caused it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemmieError {
    /// `P0002`: the blob / content / provider / job does not exist.
    NotFound(String),
    /// `22023`: malformed argument.
    InvalidParameter(String),
    /// `MM006`: stored content no longer matches its hash.
    ContentCorrupted(String),
    /// `MM007`: a JSON Patch `test` operation failed.
    PatchTestFailed(String),
    /// `54000`: content larger than `memmie.max_content_size`.
    ContentTooLarge(String),
    /// `0A000`: the content is kept outside Postgres.
    ExternalContent(String),
    /// `MM004`: a provider's config or output fails its JSON Schema.
    SchemaViolation(String),
    /// `54001`: nested too deeply for the stack (`max_stack_depth`), see [`check_stack`].
    StackDepth(String),
    /// Any other SQLSTATE, from a PostgreSQL ERROR caught by [`guarded`] (`57014` for a cancel or
    /// `statement_timeout`, `53200` out of memory, ...): the code and message as PostgreSQL gave them.
    Postgres(String, String),
    /// `XX000`: something memmie did not expect (never reachable by input).
    Internal(String),
}

impl MemmieError {
    /// The five-character SQLSTATE of this error.
    pub fn sqlstate(&self) -> &str {
        match self {
            MemmieError::NotFound(_) => "P0002",
            MemmieError::InvalidParameter(_) => "22023",
            MemmieError::ContentCorrupted(_) => "MM006",
            MemmieError::PatchTestFailed(_) => "MM007",
            MemmieError::ContentTooLarge(_) => "54000",
            MemmieError::ExternalContent(_) => "0A000",
            MemmieError::SchemaViolation(_) => "MM004",
            MemmieError::StackDepth(_) => "54001",
            MemmieError::Postgres(code, _) => code,
            MemmieError::Internal(_) => "XX000",
        }
    }

    fn message(&self) -> &str {
        match self {
            MemmieError::NotFound(m)
            | MemmieError::InvalidParameter(m)
            | MemmieError::ContentCorrupted(m)
            | MemmieError::PatchTestFailed(m)
            | MemmieError::ContentTooLarge(m)
            | MemmieError::ExternalContent(m)
            | MemmieError::SchemaViolation(m)
            | MemmieError::StackDepth(m)
            | MemmieError::Postgres(_, m)
            | MemmieError::Internal(m) => m,
        }
    }
}

impl fmt::Display for MemmieError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.sqlstate(), self.message())
    }
}

impl std::error::Error for MemmieError {}

pub type Result<T> = std::result::Result<T, MemmieError>;

/// Postgres' MAKE_SQLSTATE.
fn make_sqlstate(code: &str) -> c_int {
    code.bytes()
        .enumerate()
        .map(|(i, b)| (((b.wrapping_sub(b'0')) & 0x3F) as c_int) << (6 * i))
        .sum()
}

// Declared here, not taken from pgrx's bindings: pgrx wraps its bindings in a guard that turns a
// Postgres ERROR into a Rust panic and back, and that round trip loses codes pgrx does not know.
unsafe extern "C-unwind" {
    fn errstart(elevel: c_int, domain: *const c_char) -> bool;
    fn errcode(sqlerrcode: c_int) -> c_int;
    fn errmsg(fmt: *const c_char, ...) -> c_int;
    fn errfinish(filename: *const c_char, lineno: c_int, funcname: *const c_char);
}

/// The SQLSTATE text of an `errcode` value (inverse of [`make_sqlstate`]).
fn unpack_sqlstate(code: c_int) -> String {
    (0..5)
        .map(|i| (((code >> (6 * i)) & 0x3F) as u8 + b'0') as char)
        .collect()
}

unsafe extern "C" {
    // Only reads the stack pointer; never raises (unlike check_stack_depth, which would longjmp).
    fn stack_is_too_deep() -> bool;
}

/// `54001` once the stack is deeper than `max_stack_depth`: called at every level of memmie's
/// recursive walks over JSON (one comparison of the stack pointer), so that no input can nest
/// deeply enough to overflow the stack. It is PostgreSQL's own `check_stack_depth()` test, but
/// returned as an error instead of raised through a `longjmp`.
#[inline]
pub fn check_stack() -> Result<()> {
    if unsafe { stack_is_too_deep() } {
        return Err(MemmieError::StackDepth(
            "stack depth limit exceeded: the JSON value is nested too deeply (see max_stack_depth)".into(),
        ));
    }
    Ok(())
}

/// Reacts to a query cancel or `statement_timeout` (the ERROR comes back out of [`guarded`] as
/// `57014`). Call it in every loop whose length input decides.
#[inline]
pub fn check_interrupts() {
    pgrx::check_for_interrupts!();
}

/// Runs `f`, turning a PostgreSQL ERROR raised inside it into a [`MemmieError`] with the same
/// SQLSTATE and message, and a panic into `XX000` (see the module comment: this keeps Rust
/// backtraces and paths out of what clients see). Every `#[pg_extern]` body of the JSON code runs
/// in it.
pub fn guarded<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    use pgrx::pg_sys::panic::CaughtError;
    pgrx::PgTryBuilder::new(std::panic::AssertUnwindSafe(f))
        .catch_others(|e| {
            Err(match e {
                CaughtError::PostgresError(r) | CaughtError::ErrorReport(r) => {
                    let code = unpack_sqlstate(r.sql_error_code() as c_int);
                    let msg = r.message().to_string();
                    match code.as_str() {
                        "54000" => MemmieError::ContentTooLarge(msg),
                        "54001" => MemmieError::StackDepth(msg),
                        _ => MemmieError::Postgres(code, msg),
                    }
                }
                CaughtError::RustPanic { ereport, .. } => {
                    MemmieError::Internal(format!("internal error: {}", ereport.message()))
                }
            })
        })
        .execute()
}

/// Unwraps `result`, or raises its error as a Postgres ERROR with the exact SQLSTATE.
///
/// Call it only at the top of a `#[pg_extern]` body, on a value that owns nothing else that needs
/// dropping: the ERROR leaves through `longjmp`, so the frames it crosses must hold no
/// destructors. Everything Rust allocated for the message is freed before the jump.
pub fn or_raise<T>(result: Result<T>) -> T {
    match result {
        Ok(v) => v,
        Err(e) => raise(e),
    }
}

/// Raises `err` as a Postgres ERROR. Never returns.
#[inline(never)]
pub fn raise(err: MemmieError) -> ! {
    let code = make_sqlstate(err.sqlstate());
    // Interior NULs cannot occur in our messages, but input text may carry one: strip it.
    let text = CString::new(err.message().replace('\0', "\\0")).unwrap_or_default();
    drop(err);
    unsafe {
        // Copy into Postgres memory so that nothing Rust-owned is alive across the longjmp.
        let msg = pgrx::pg_sys::pstrdup(text.as_ptr());
        drop(text);
        if errstart(pgrx::pg_sys::PGERROR as c_int, std::ptr::null()) {
            errcode(code);
            errmsg(c"%s".as_ptr(), msg);
            errfinish(c"memmie".as_ptr(), 0, c"memmie".as_ptr());
        }
        // errstart(ERROR) always returns true and errfinish(ERROR) never returns.
        std::process::abort()
    }
}

#[cfg(test)]
mod tests {
    use super::make_sqlstate;

    #[test]
    fn sqlstate_encoding_matches_postgres() {
        // ERRCODE_INVALID_PARAMETER_VALUE = MAKE_SQLSTATE('2','2','0','2','3')
        assert_eq!(
            make_sqlstate("22023"),
            pgrx::PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE as i32
        );
        assert_eq!(
            make_sqlstate("P0002"),
            pgrx::PgSqlErrorCode::ERRCODE_NO_DATA_FOUND as i32
        );
        for code in ["22023", "54001", "57014", "MM006", "XX000"] {
            assert_eq!(super::unpack_sqlstate(make_sqlstate(code)), code);
        }
    }
}

//! Who is calling: the user a session acts for (`memmie.user_id`, see src/guc.rs) and the role
//! behind a call. The access model itself (levels, grants, the checks every function makes, the
//! row-level security policies) is SQL: sql/access.sql.

use pgrx::prelude::*;

/// A uuid as PostgreSQL's `uuid` input accepts it: 32 hex digits, optionally in braces, with a
/// hyphen allowed after any group of four digits. None for anything else.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let inner = match text.strip_prefix('{') {
        Some(rest) => rest.strip_suffix('}')?,
        None => text,
    };
    let mut bytes = [0u8; 16];
    let mut digits = 0usize;
    let mut last_hyphen = false;
    for c in inner.chars() {
        if c == '-' {
            if digits == 0 || !digits.is_multiple_of(4) || last_hyphen || digits == 32 {
                return None;
            }
            last_hyphen = true;
            continue;
        }
        let v = c.to_digit(16)? as u8;
        if digits == 32 {
            return None;
        }
        bytes[digits / 2] |= if digits.is_multiple_of(2) { v << 4 } else { v };
        digits += 1;
        last_hyphen = false;
    }
    (digits == 32 && !last_hyphen).then_some(bytes)
}

/// The GUC check hook of `memmie.user_id`: empty (no user bound) or a uuid; anything else is
/// refused when it is set (SQLSTATE 22023, invalid_parameter_value).
///
/// # Safety
/// Called by PostgreSQL's GUC machinery with a valid (possibly NULL) C string.
#[pg_guard]
pub unsafe extern "C-unwind" fn check_user_id(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    let value = unsafe {
        if newval.is_null() || (*newval).is_null() {
            return true;
        }
        std::ffi::CStr::from_ptr(*newval)
    };
    let ok = match value.to_str() {
        Ok(s) => s.is_empty() || parse_uuid(s).is_some(),
        Err(_) => false,
    };
    if !ok {
        unsafe {
            pg_sys::GUC_check_errdetail_string =
                pg_sys::pstrdup(c"memmie.user_id must be a uuid, or empty for no user.".as_ptr());
        }
    }
    ok
}

/// The user this session acts for: `memmie.user_id` as a uuid, NULL when it is empty or unset.
#[pg_extern(name = "_bound_user", stable, parallel_safe)]
fn bound_user() -> Option<pgrx::Uuid> {
    crate::guc::bound_user().map(pgrx::Uuid::from_bytes)
}

/// The role the caller is (SET ROLE's or the session's), also inside a SECURITY DEFINER
/// function, where `current_user` is the function's owner.
#[pg_extern(name = "_caller", stable, parallel_safe)]
fn caller() -> pg_sys::Oid {
    unsafe { pg_sys::GetOuterUserId() }
}

/// The transaction this backend is in (its local id; 0 outside one).
fn local_xact_id() -> u32 {
    unsafe {
        if pg_sys::MyProc.is_null() {
            return 0;
        }
        #[cfg(not(feature = "pg18"))]
        {
            (*pg_sys::MyProc).lxid
        }
        #[cfg(feature = "pg18")]
        {
            (*pg_sys::MyProc).vxid.lxid
        }
    }
}

thread_local! {
    /// The last answer of `_unrestricted_on_node`: (caller, transaction, command, answer).
    static UNRESTRICTED: std::cell::Cell<Option<(pg_sys::Oid, u32, u32, bool)>> =
        const { std::cell::Cell::new(None) };
}

/// Whether the caller sees every user's rows, for the row-level security policies of a Citus
/// cluster (distribute() writes them with it). Citus refuses subqueries in the policies of
/// distributed tables, so the policy calls this per row: the answer of
/// `memmie._unrestricted_node_check()` (sql/access.sql) is kept for the rest of the command
/// (the same caller, transaction and command id), so a scan pays for the check once, not per row
/// (it reads the catalogs and grantees: ~0.2 ms). A new command asks again, so a grant or a
/// revoke is seen by the next statement, as the single node's `(SELECT memmie._unrestricted())`.
#[pg_extern(name = "_unrestricted_on_node", stable, parallel_safe)]
fn unrestricted_on_node() -> bool {
    let key = (unsafe { pg_sys::GetOuterUserId() }, local_xact_id(), unsafe {
        pg_sys::GetCurrentCommandId(false)
    });
    if let Some((user, xact, command, answer)) = UNRESTRICTED.with(|c| c.get()) {
        if (user, xact, command) == key {
            return answer;
        }
    }
    let answer = Spi::get_one::<bool>("SELECT memmie._unrestricted_node_check()")
        .ok()
        .flatten()
        .unwrap_or(false);
    UNRESTRICTED.with(|c| c.set(Some((key.0, key.1, key.2, answer))));
    answer
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::parse_uuid;
    use pgrx::prelude::*;

    #[pg_test]
    fn uuid_forms_postgres_accepts() {
        let canonical = parse_uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap();
        for form in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
            "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
        ] {
            assert_eq!(parse_uuid(form), Some(canonical), "{form}");
            // and PostgreSQL agrees
            let pg = Spi::get_one::<pgrx::Uuid>(&format!("SELECT '{form}'::uuid"))
                .unwrap()
                .unwrap();
            assert_eq!(*pg.as_bytes(), canonical);
        }
        for bad in [
            "",
            "a0eebc99",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
            "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eeb-c99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
            " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        ] {
            assert_eq!(parse_uuid(bad), None, "{bad:?}");
        }
    }
}

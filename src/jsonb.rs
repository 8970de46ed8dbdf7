//! jsonb <-> serde_json::Value directly, without printing and re-parsing text: the document is
//! read with Postgres' JsonbIterator and the result built with pushJsonbValue.

use crate::error::{MemmieError, Result};
use pgrx::callconv::{Arg, ArgAbi, BoxRet, FcInfo};
use pgrx::pg_sys::{self, jbvType, JsonbIteratorToken as Tok};
use pgrx::pgrx_sql_entity_graph::metadata::{
    ArgumentError, ReturnsError, ReturnsRef, SqlMappingRef, SqlTranslatable, TypeOrigin,
};
use pgrx::FromDatum;
use serde_json::{Map, Number, Value};
use std::ffi::CString;

/// memmie's nesting limit: the deepest JSON it turns into Rust values (`serde_json::Value`).
///
/// It is serde_json's own recursion limit (128, fixed without the `unbounded_depth` feature),
/// which bounds every JSON *text* memmie parses: a blob state, a JSON Patch, JSON content (the
/// parser counts the container it is opening, so a text holds at most 127 nested containers).
/// jsonb read directly (`jsonb_patch`'s patch, the values a `test` compares, provider schemas and
/// outputs) holds at most `MAX_DEPTH` levels, and a blob state built by a patch at most
/// `MAX_DEPTH` too; deeper input is refused with `22023`. Documents `jsonb_patch` patches may be
/// deeper (PostgreSQL accepts them): their untouched parts are never read into Rust, and what is
/// walked is bounded by the stack check instead (`54001`). Replay reads the stored deltas as
/// jsonb, so it has no such limit and rebuilds every state that was accepted when written.
pub const MAX_DEPTH: usize = 128;

/// A jsonb argument as Postgres passed it (possibly toasted).
pub struct JsonbArg(pg_sys::Datum);

impl FromDatum for JsonbArg {
    unsafe fn from_polymorphic_datum(datum: pg_sys::Datum, is_null: bool, _: pg_sys::Oid) -> Option<Self> {
        if is_null {
            None
        } else {
            Some(JsonbArg(datum))
        }
    }
}

unsafe impl<'fcx> ArgAbi<'fcx> for JsonbArg {
    unsafe fn unbox_arg_unchecked(arg: Arg<'_, 'fcx>) -> Self {
        let index = arg.index();
        unsafe { arg.unbox_arg_using_from_datum() }.unwrap_or_else(|| panic!("argument {index} must not be null"))
    }
}

unsafe impl SqlTranslatable for JsonbArg {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::JsonbArg");
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: std::result::Result<SqlMappingRef, ArgumentError> = Ok(SqlMappingRef::literal("jsonb"));
    const RETURN_SQL: std::result::Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}

/// A jsonb built in Postgres memory, returned as is.
#[derive(Debug)]
pub struct JsonbOut(pub pg_sys::Datum);

unsafe impl BoxRet for JsonbOut {
    unsafe fn box_into<'fcx>(self, fcinfo: &mut FcInfo<'fcx>) -> pgrx::datum::Datum<'fcx> {
        unsafe { fcinfo.return_raw_datum(self.0) }
    }
}

unsafe impl SqlTranslatable for JsonbOut {
    const TYPE_IDENT: &'static str = concat!(module_path!(), "::JsonbOut");
    const TYPE_ORIGIN: TypeOrigin = TypeOrigin::External;
    const ARGUMENT_SQL: std::result::Result<SqlMappingRef, ArgumentError> =
        Err(ArgumentError::NotValidAsArgument("JsonbOut"));
    const RETURN_SQL: std::result::Result<ReturnsRef, ReturnsError> =
        Ok(ReturnsRef::One(SqlMappingRef::literal("jsonb")));
}

fn too_deep(what: &str) -> MemmieError {
    MemmieError::InvalidParameter(format!("invalid {what}: nested deeper than {MAX_DEPTH} levels"))
}

pub unsafe fn scalar(v: &pg_sys::JsonbValue, what: &str) -> Result<Value> {
    unsafe {
        Ok(match v.type_ {
            jbvType::jbvNull => Value::Null,
            jbvType::jbvBool => Value::Bool(v.val.boolean),
            jbvType::jbvString => {
                let s = std::slice::from_raw_parts(v.val.string.val as *const u8, v.val.string.len as usize);
                Value::String(String::from_utf8_lossy(s).into_owned())
            }
            jbvType::jbvNumeric => {
                let text = pgrx::direct_function_call::<&std::ffi::CStr>(
                    pg_sys::numeric_out,
                    &[Some(pg_sys::Datum::from(v.val.numeric))],
                )
                .ok_or_else(|| MemmieError::InvalidParameter(format!("invalid {what}: unreadable number")))?;
                let n: Number = text
                    .to_str()
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| MemmieError::InvalidParameter(format!("invalid {what}: number {text:?}")))?;
                Value::Number(n)
            }
            _ => {
                return Err(MemmieError::InvalidParameter(format!(
                    "invalid {what}: unexpected jsonb value"
                )))
            }
        })
    }
}

impl JsonbArg {
    /// The jsonb datum `d` as an argument (tests).
    #[cfg(any(test, feature = "pg_test"))]
    pub(crate) fn from_raw(d: pg_sys::Datum) -> JsonbArg {
        JsonbArg(d)
    }

    /// The detoasted document's root container (valid for the rest of the call).
    pub fn root(&self) -> *mut pg_sys::JsonbContainer {
        unsafe {
            let jb = pg_sys::pg_detoast_datum(self.0.cast_mut_ptr()) as *mut pg_sys::Jsonb;
            &mut (*jb).root
        }
    }

    /// The detoasted document's root container and the document's size in bytes (detoasting
    /// once: a toasted argument is copied again by every detoast).
    pub fn root_and_size(&self) -> (*mut pg_sys::JsonbContainer, u64) {
        unsafe {
            let jb = pg_sys::pg_detoast_datum(self.0.cast_mut_ptr()) as *mut pg_sys::Jsonb;
            (&mut (*jb).root, pgrx::varsize_any(jb as *const pg_sys::varlena) as u64)
        }
    }

    /// The argument, detoasted, to hand back unchanged.
    pub fn unchanged(&self) -> JsonbOut {
        JsonbOut(pg_sys::Datum::from(unsafe {
            pg_sys::pg_detoast_datum(self.0.cast_mut_ptr())
        }))
    }
}

/// Reads a jsonb datum into a serde_json::Value.
pub fn read(arg: &JsonbArg, what: &str) -> Result<Value> {
    read_container(arg.root(), what)
}

/// Reads a jsonb container (a whole document or a nested one) into a serde_json::Value.
pub fn read_container(container: *mut pg_sys::JsonbContainer, what: &str) -> Result<Value> {
    enum Frame {
        Array(Vec<Value>),
        Object(Map<String, Value>, Option<String>),
    }
    unsafe {
        let mut it = pg_sys::JsonbIteratorInit(container);
        let mut v = pg_sys::JsonbValue {
            type_: jbvType::jbvNull,
            val: std::mem::zeroed(),
        };
        let mut stack: Vec<Frame> = Vec::new();
        let mut raw_scalar = false;
        let mut result: Option<Value> = None;
        loop {
            crate::error::check_interrupts();
            let tok = pg_sys::JsonbIteratorNext(&mut it, &mut v, false);
            let finished: Option<Value> = match tok {
                Tok::WJB_DONE => break,
                Tok::WJB_BEGIN_ARRAY => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(too_deep(what));
                    }
                    raw_scalar = v.val.array.rawScalar;
                    stack.push(Frame::Array(Vec::new()));
                    None
                }
                Tok::WJB_BEGIN_OBJECT => {
                    if stack.len() >= MAX_DEPTH {
                        return Err(too_deep(what));
                    }
                    stack.push(Frame::Object(Map::new(), None));
                    None
                }
                Tok::WJB_KEY => {
                    if let Some(Frame::Object(_, key)) = stack.last_mut() {
                        if let Value::String(k) = scalar(&v, what)? {
                            *key = Some(k);
                        }
                    }
                    None
                }
                Tok::WJB_VALUE | Tok::WJB_ELEM => Some(scalar(&v, what)?),
                Tok::WJB_END_ARRAY => match stack.pop() {
                    Some(Frame::Array(items)) if raw_scalar && stack.is_empty() && items.len() == 1 => {
                        items.into_iter().next()
                    }
                    Some(Frame::Array(items)) => Some(Value::Array(items)),
                    _ => None,
                },
                Tok::WJB_END_OBJECT => match stack.pop() {
                    Some(Frame::Object(map, _)) => Some(Value::Object(map)),
                    _ => None,
                },
                _ => None,
            };
            if let Some(value) = finished {
                match stack.last_mut() {
                    Some(Frame::Array(items)) => items.push(value),
                    Some(Frame::Object(map, key)) => {
                        if let Some(k) = key.take() {
                            map.insert(k, value);
                        }
                    }
                    None => result = Some(value),
                }
            }
        }
        result.ok_or_else(|| MemmieError::InvalidParameter(format!("invalid {what}: empty jsonb")))
    }
}

/// 22023 unless the jsonb `doc` nests at most MAX_DEPTH levels of containers: what a blob state
/// may hold (`create_blob`'s and `update_content`'s metadata and content come in through SQL,
/// not through the patch engine, and must be patchable and replayable afterwards). Walks the
/// binary jsonb without building anything.
#[pgrx::pg_extern(name = "_check_depth", immutable, strict, parallel_safe)]
fn check_depth(doc: JsonbArg, what: &str) -> bool {
    crate::error::or_raise(container_depth_at_most(doc.root(), MAX_DEPTH).and_then(|ok| {
        if ok {
            Ok(true)
        } else {
            Err(too_deep(what))
        }
    }))
}

/// Whether `container` nests at most `limit` levels of containers.
fn container_depth_at_most(container: *mut pg_sys::JsonbContainer, limit: usize) -> Result<bool> {
    unsafe {
        let mut it = pg_sys::JsonbIteratorInit(container);
        let mut v = pg_sys::JsonbValue {
            type_: jbvType::jbvNull,
            val: std::mem::zeroed(),
        };
        let mut depth = 0usize;
        loop {
            crate::error::check_interrupts();
            match pg_sys::JsonbIteratorNext(&mut it, &mut v, false) {
                Tok::WJB_DONE => return Ok(true),
                Tok::WJB_BEGIN_ARRAY | Tok::WJB_BEGIN_OBJECT => {
                    depth += 1;
                    if depth > limit {
                        return Ok(false);
                    }
                }
                Tok::WJB_END_ARRAY | Tok::WJB_END_OBJECT => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
}

/// How many levels of containers `v` nests (0 for a scalar), checking the stack on the way.
pub fn depth(v: &Value) -> Result<usize> {
    crate::error::check_stack()?;
    Ok(match v {
        Value::Array(items) => 1 + items.iter().map(depth).try_fold(0, |m, d| d.map(|d| m.max(d)))?,
        Value::Object(map) => 1 + map.values().map(depth).try_fold(0, |m, d| d.map(|d| m.max(d)))?,
        _ => 0,
    })
}

/// The length of `v` as compact JSON text, not counting string escapes (a lower bound).
pub fn text_size(v: &Value) -> Result<u64> {
    crate::error::check_stack()?;
    Ok(match v {
        Value::Null => 4,
        Value::Bool(b) => {
            if *b {
                4
            } else {
                5
            }
        }
        Value::Number(n) => n.as_str().len() as u64,
        Value::String(s) => s.len() as u64 + 2,
        Value::Array(items) => {
            let mut n = 2 + items.len() as u64;
            for item in items {
                n += text_size(item)?;
            }
            n
        }
        Value::Object(map) => {
            let mut n = 2 + map.len() as u64;
            for (k, item) in map {
                n += k.len() as u64 + 3 + text_size(item)?;
            }
            n
        }
    })
}

unsafe fn palloc_bytes(s: &str) -> *mut std::ffi::c_char {
    unsafe {
        let p = pg_sys::palloc(s.len().max(1)) as *mut u8;
        std::ptr::copy_nonoverlapping(s.as_ptr(), p, s.len());
        p.cast()
    }
}

pub(crate) unsafe fn to_jbv(v: &Value) -> Result<pg_sys::JsonbValue> {
    unsafe {
        let mut jv = pg_sys::JsonbValue {
            type_: jbvType::jbvNull,
            val: std::mem::zeroed(),
        };
        match v {
            Value::Null => {}
            Value::Bool(b) => {
                jv.type_ = jbvType::jbvBool;
                jv.val.boolean = *b;
            }
            Value::String(s) => {
                jv.type_ = jbvType::jbvString;
                jv.val.string.len = i32::try_from(s.len())
                    .map_err(|_| MemmieError::InvalidParameter("string too long for jsonb".into()))?;
                jv.val.string.val = palloc_bytes(s);
            }
            Value::Number(n) => {
                let text = CString::new(n.to_string())
                    .map_err(|_| MemmieError::InvalidParameter(format!("invalid number {n}")))?;
                let d = pgrx::direct_function_call_as_datum(
                    pg_sys::numeric_in,
                    &[
                        Some(pg_sys::Datum::from(text.as_ptr())),
                        Some(pg_sys::Datum::from(pg_sys::InvalidOid)),
                        Some(pg_sys::Datum::from(-1i32)),
                    ],
                )
                .ok_or_else(|| MemmieError::InvalidParameter(format!("invalid number {n}")))?;
                jv.type_ = jbvType::jbvNumeric;
                jv.val.numeric = d.cast_mut_ptr();
            }
            Value::Array(_) | Value::Object(_) => {
                return Err(MemmieError::InvalidParameter("a container is not a scalar".into()))
            }
        }
        Ok(jv)
    }
}

pub unsafe fn push(
    state: &mut *mut pg_sys::JsonbParseState,
    tok: Tok::Type,
    v: &Value,
) -> Result<*mut pg_sys::JsonbValue> {
    crate::error::check_stack()?;
    unsafe {
        Ok(match v {
            Value::Array(items) => {
                pg_sys::pushJsonbValue(state, Tok::WJB_BEGIN_ARRAY, std::ptr::null_mut());
                for item in items {
                    crate::error::check_interrupts();
                    push(state, Tok::WJB_ELEM, item)?;
                }
                pg_sys::pushJsonbValue(state, Tok::WJB_END_ARRAY, std::ptr::null_mut())
            }
            Value::Object(map) => {
                pg_sys::pushJsonbValue(state, Tok::WJB_BEGIN_OBJECT, std::ptr::null_mut());
                for (k, item) in map {
                    let mut key = to_jbv(&Value::String(k.clone()))?;
                    pg_sys::pushJsonbValue(state, Tok::WJB_KEY, &mut key);
                    push(state, Tok::WJB_VALUE, item)?;
                }
                pg_sys::pushJsonbValue(state, Tok::WJB_END_OBJECT, std::ptr::null_mut())
            }
            scalar => {
                let mut jv = to_jbv(scalar)?;
                pg_sys::pushJsonbValue(state, tok, &mut jv)
            }
        })
    }
}

/// The text of a jsonb datum (PostgreSQL's jsonb output).
pub fn out_text(jb: &JsonbOut) -> String {
    unsafe {
        let p = jb.0.cast_mut_ptr::<pg_sys::Jsonb>();
        let len = i32::try_from(pgrx::varsize_any(p as *const pg_sys::varlena)).unwrap_or(i32::MAX);
        let c = pg_sys::JsonbToCString(std::ptr::null_mut(), &mut (*p).root, len);
        let s = std::ffi::CStr::from_ptr(c).to_string_lossy().into_owned();
        pg_sys::pfree(c.cast());
        s
    }
}

/// Builds a jsonb datum from a serde_json::Value.
pub fn build(v: &Value) -> Result<JsonbOut> {
    unsafe {
        let mut state: *mut pg_sys::JsonbParseState = std::ptr::null_mut();
        let root = match v {
            Value::Array(_) | Value::Object(_) => push(&mut state, Tok::WJB_DONE, v)?,
            scalar => {
                // a top-level scalar is stored as a one-element "raw scalar" array
                let mut wrapper = pg_sys::JsonbValue {
                    type_: jbvType::jbvArray,
                    val: std::mem::zeroed(),
                };
                wrapper.val.array.rawScalar = true;
                pg_sys::pushJsonbValue(&mut state, Tok::WJB_BEGIN_ARRAY, &mut wrapper);
                push(&mut state, Tok::WJB_ELEM, scalar)?;
                pg_sys::pushJsonbValue(&mut state, Tok::WJB_END_ARRAY, std::ptr::null_mut())
            }
        };
        Ok(JsonbOut(pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(root))))
    }
}

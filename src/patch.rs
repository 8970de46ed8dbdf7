//! RFC 6902 JSON Patch and diff over jsonb, and replay of a blob's deltas.
//!
//! Diff and replay take and give text (their SQL callers cast to and from jsonb: `jsonb_diff` in
//! `sql/content.sql`, `blob_state` in `sql/blobs.sql`), so that every malformed input becomes a
//! 22023 error here instead of a panic inside a conversion; `jsonb_patch` reads binary jsonb
//! (`src/patch_jsonb.rs`).

use crate::error::{check_interrupts, check_stack, guarded, or_raise, MemmieError, Result};
use crate::patch_jsonb::{Doc, Kind};
use pgrx::prelude::*;
use serde_json::{Map, Value};

/// Parses a JSON text (what Postgres' jsonb output gives us). Depth is limited by serde_json
/// (see [`crate::jsonb::MAX_DEPTH`]), which keeps the recursive algorithms below far from the
/// stack limit.
pub fn parse(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| MemmieError::InvalidParameter(format!("invalid {what}: {e}")))
}

/// One JSON Patch operation. `from` is empty unless `kind` is move or copy; `value` is set for
/// add, replace and test.
pub struct Op {
    pub kind: Kind,
    pub path: String,
    pub from: String,
    pub value: Option<Value>,
}

/// A parsed JSON Patch.
pub struct Patch(pub Vec<Op>);

pub(crate) fn unknown_op(name: &str) -> MemmieError {
    MemmieError::InvalidParameter(format!(
        "invalid JSON Patch: unknown variant `{name}`, expected one of `add`, `remove`, `replace`, `move`, `copy`, `test`"
    ))
}

/// Refuses what is not an RFC 6901 JSON Pointer (the messages are those of the `jsonptr` crate,
/// which parsed patches before).
pub(crate) fn check_pointer(p: &str) -> Result<()> {
    if !p.is_empty() && !p.starts_with('/') {
        return Err(MemmieError::InvalidParameter(
            "invalid JSON Patch: json pointer failed to parse; does not start with a slash ('/') and is not empty"
                .into(),
        ));
    }
    let bytes = p.as_bytes();
    let mut token_start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'/' {
            token_start = i;
        } else if b == b'~' && !matches!(bytes.get(i + 1), Some(b'0' | b'1')) {
            return Err(MemmieError::InvalidParameter(format!(
                "invalid JSON Patch: json pointer failed to parse; the first token in the partial-pointer starting at offset {token_start} is malformed"
            )));
        }
    }
    Ok(())
}

/// What serde would call `v` in an "invalid type" message.
fn unexpected(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean `{b}`"),
        Value::Number(n) if n.is_f64() => format!("floating point `{n}`"),
        Value::Number(n) => format!("integer `{n}`"),
        Value::String(s) => format!("string {s:?}"),
        Value::Array(_) => "sequence".into(),
        Value::Object(_) => "map".into(),
    }
}

/// Parses a JSON Patch document: an array of operations. Parsed here rather than with serde's
/// derive, whose internally tagged enums buffer values in a form without 128-bit integers (a
/// value like 100000000000000000000 failed with "invalid type: integer as u128").
pub fn parse_patch(patch: Value) -> Result<Patch> {
    let Value::Array(items) = patch else {
        return Err(MemmieError::InvalidParameter(format!(
            "invalid JSON Patch: expected an array of operations, got {}",
            type_name(&patch)
        )));
    };
    let mut ops = Vec::with_capacity(items.len());
    for item in items {
        check_interrupts();
        let Value::Object(mut fields) = item else {
            return Err(MemmieError::InvalidParameter(format!(
                "invalid JSON Patch: invalid type: {}, expected internally tagged enum PatchOperation",
                unexpected(&item)
            )));
        };
        let mut text = |k: &str| -> Result<Option<String>> {
            match fields.remove(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(other) => Err(MemmieError::InvalidParameter(format!(
                    "invalid JSON Patch: invalid type: {}, expected a string",
                    unexpected(&other)
                ))),
            }
        };
        let missing = |k: &str| MemmieError::InvalidParameter(format!("invalid JSON Patch: missing field `{k}`"));
        let name = text("op")?.ok_or_else(|| missing("op"))?;
        let kind = Kind::from_name(&name).ok_or_else(|| unknown_op(&name))?;
        let path = text("path")?.ok_or_else(|| missing("path"))?;
        check_pointer(&path)?;
        let from = match kind {
            Kind::Move | Kind::Copy => {
                let f = text("from")?.ok_or_else(|| missing("from"))?;
                check_pointer(&f)?;
                f
            }
            _ => String::new(),
        };
        let value = match kind {
            Kind::Add | Kind::Replace | Kind::Test => Some(fields.remove("value").ok_or_else(|| missing("value"))?),
            _ => None,
        };
        ops.push(Op {
            kind,
            path,
            from,
            value,
        });
    }
    Ok(Patch(ops))
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Applies `patch` to `doc` and returns the result (on error, `doc` is gone: callers keep what
/// they need). The document may not grow beyond `limit` bytes at any step (`54000`, see
/// [`Doc`]) nor nest deeper than [`crate::jsonb::MAX_DEPTH`] (`22023`).
///
/// It is the engine `jsonb_patch` uses ([`crate::patch_jsonb`]), so both (and replay) agree.
pub fn apply(doc: Value, patch: Patch, limit: u64) -> Result<Value> {
    let mut d = Doc::from_value(doc, limit)?;
    d.apply(patch)?;
    d.into_value()
}

/// RFC 6901 escaping of one pointer token.
fn push_token(ptr: &mut String, token: &str) {
    ptr.push('/');
    for c in token.chars() {
        match c {
            '~' => ptr.push_str("~0"),
            '/' => ptr.push_str("~1"),
            c => ptr.push(c),
        }
    }
}

fn diff_op(op: &str, path: &str, value: Option<&Value>) -> Value {
    let mut m = Map::new();
    m.insert("op".into(), Value::String(op.into()));
    m.insert("path".into(), Value::String(path.into()));
    if let Some(v) = value {
        m.insert("value".into(), v.clone());
    }
    Value::Object(m)
}

/// The operations that turn `left` into `right` (the same patch json_patch::diff made: members
/// by key, arrays by position), checking for interrupts and the stack as it goes.
fn diff_into(left: &Value, right: &Value, ptr: &mut String, out: &mut Vec<Value>) -> Result<()> {
    check_stack()?;
    match (left, right) {
        (Value::Object(l), Value::Object(r)) => {
            for (k, rv) in r {
                check_interrupts();
                let len = ptr.len();
                push_token(ptr, k);
                match l.get(k) {
                    Some(lv) => diff_into(lv, rv, ptr, out)?,
                    None => out.push(diff_op("add", ptr, Some(rv))),
                }
                ptr.truncate(len);
            }
            for k in l.keys() {
                check_interrupts();
                if !r.contains_key(k) {
                    let len = ptr.len();
                    push_token(ptr, k);
                    out.push(diff_op("remove", ptr, None));
                    ptr.truncate(len);
                }
            }
        }
        (Value::Array(l), Value::Array(r)) => {
            let mut shift = 0usize;
            for idx in 0..l.len().max(r.len()) {
                check_interrupts();
                let len = ptr.len();
                push_token(ptr, &(idx - shift).to_string());
                match (l.get(idx), r.get(idx)) {
                    (Some(lv), Some(rv)) => diff_into(lv, rv, ptr, out)?,
                    (Some(_), None) => {
                        shift += 1;
                        out.push(diff_op("remove", ptr, None));
                    }
                    (None, Some(rv)) => out.push(diff_op("add", ptr, Some(rv))),
                    (None, None) => {}
                }
                ptr.truncate(len);
            }
        }
        _ if left == right => {}
        _ => out.push(diff_op("replace", ptr, Some(right))),
    }
    Ok(())
}

/// A patch that turns `source` into `target`.
pub fn diff(source: &Value, target: &Value) -> Result<Value> {
    let mut out = Vec::new();
    diff_into(source, target, &mut String::new(), &mut out)?;
    Ok(Value::Array(out))
}

/// Largest state replay builds: the most `memmie.max_content_size` can be set to (1 GiB). Not the
/// current setting, so that lowering it never makes stored versions unreadable.
pub const REPLAY_MAX_SIZE: u64 = 1024 * 1024 * 1024;

/// Replays patches in order starting from `null`, as jsonb: each stored patch is read by
/// PostgreSQL's jsonb input and applied with its values still binary, so any state that was
/// accepted when it was written (however deep its metadata, whatever its numbers) comes back.
pub fn replay<'a>(patches: impl IntoIterator<Item = Option<&'a str>>) -> Result<crate::jsonb::JsonbOut> {
    replay_onto(Doc::from_value(Value::Null, REPLAY_MAX_SIZE)?, patches)
}

/// Replays patches in order onto `doc` (a kept state, or `null`), as [`replay`] does.
fn replay_onto<'a>(mut doc: Doc, patches: impl IntoIterator<Item = Option<&'a str>>) -> Result<crate::jsonb::JsonbOut> {
    for (i, p) in patches.into_iter().enumerate() {
        check_interrupts();
        let Some(p) = p else {
            return Err(MemmieError::InvalidParameter(format!(
                "delta {} of the replay has no patch",
                i + 1
            )));
        };
        let text = std::ffi::CString::new(p)
            .map_err(|_| MemmieError::InvalidParameter(format!("delta {} of the replay is not JSON", i + 1)))?;
        let jb = unsafe {
            pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(pg_sys::Datum::from(text.as_ptr()))])
                .ok_or_else(|| MemmieError::InvalidParameter(format!("delta {} of the replay is not JSON", i + 1)))?
                .cast_mut_ptr::<pg_sys::Jsonb>()
        };
        doc.apply_jsonb(unsafe { &mut (*jb).root })?;
    }
    doc.build()
}

pub fn to_text(v: &Value) -> String {
    // Serialising a serde_json::Value to a String cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

fn diff_text(source: &str, target: &str) -> Result<String> {
    let source = parse("source document", source)?;
    let target = parse("target document", target)?;
    Ok(to_text(&diff(&source, &target)?))
}

/// RFC 6902 JSON Patch over jsonb, applied in place to the binary document.
#[pg_extern(immutable, strict, parallel_safe)]
fn jsonb_patch(doc: crate::jsonb::JsonbArg, patch: crate::jsonb::JsonbArg) -> crate::jsonb::JsonbOut {
    or_raise(guarded(|| crate::patch_jsonb::apply(&doc, parse_patch_arg(&patch)?)))
}

fn parse_patch_arg(patch: &crate::jsonb::JsonbArg) -> Result<Patch> {
    parse_patch(crate::jsonb::read(patch, "JSON Patch")?)
}

#[pg_extern(name = "_jsonb_diff", immutable, strict, parallel_safe)]
fn jsonb_diff_text(source: &str, target: &str) -> String {
    or_raise(guarded(|| diff_text(source, target)))
}

/// Replays an ordered array of patches (as text) from `null`.
#[pg_extern(name = "_replay", immutable, strict, parallel_safe)]
fn replay_text(patches: Array<&str>) -> String {
    or_raise(guarded(|| replay(patches.iter()).map(|jb| crate::jsonb::out_text(&jb))))
}

/// Replays an ordered array of patches (as text) onto the state `base` (a kept snapshot, read in
/// place as binary jsonb): the same engine and limits as `_replay`.
#[pg_extern(name = "_replay_from", immutable, strict, parallel_safe)]
fn replay_from(base: crate::jsonb::JsonbArg, patches: Array<&str>) -> crate::jsonb::JsonbOut {
    or_raise(guarded(|| {
        if patches.is_empty() {
            return Ok(base.unchanged());
        }
        let (root, size) = base.root_and_size();
        replay_onto(Doc::from_jsonb(root, size, REPLAY_MAX_SIZE), patches.iter())
    }))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(doc: Value, patch: Value) -> Result<Value> {
        apply(doc, parse_patch(patch)?, u64::MAX)
    }

    fn replayed(patches: &[Value]) -> Result<Value> {
        let texts: Vec<String> = patches.iter().map(to_text).collect();
        let jb = replay(texts.iter().map(|t| Some(t.as_str())))?;
        parse("replayed state", &crate::jsonb::out_text(&jb))
    }

    #[pg_test]
    fn failed_test_op_is_mm007() {
        let p = parse_patch(json!([{"op": "add", "path": "/b", "value": 2}, {"op": "test", "path": "/a", "value": 5}]))
            .unwrap();
        let err = apply(json!({"a": 1}), p, u64::MAX).unwrap_err();
        assert_eq!(err.sqlstate(), "MM007");
    }

    #[pg_test]
    fn bad_pointer_and_bad_op_are_22023() {
        assert_eq!(
            patched(json!({}), json!([{"op": "remove", "path": "/nope"}]))
                .unwrap_err()
                .sqlstate(),
            "22023"
        );
        assert_eq!(
            patched(json!({}), json!([{"op": "frobnicate", "path": ""}]))
                .unwrap_err()
                .sqlstate(),
            "22023"
        );
        assert_eq!(
            patched(json!({}), json!({"op": "add"})).unwrap_err().sqlstate(),
            "22023"
        );
        assert_eq!(
            patched(json!({}), json!([{"op": "add", "path": "x", "value": 1}]))
                .unwrap_err()
                .sqlstate(),
            "22023"
        );
        assert_eq!(
            patched(json!({}), json!([{"op": "add", "path": "/~2", "value": 1}]))
                .unwrap_err()
                .sqlstate(),
            "22023"
        );
        assert_eq!(
            patched(json!({}), json!([{"op": "add", "path": "/a"}]))
                .unwrap_err()
                .to_string(),
            "22023: invalid JSON Patch: missing field `value`"
        );
        assert_eq!(patched(json!({}), json!([1])).unwrap_err().sqlstate(), "22023");
        // move from "-" (no element) of an empty array
        assert_eq!(
            patched(json!({"a": []}), json!([{"op": "move", "from": "/a/-", "path": "/b"}]))
                .unwrap_err()
                .sqlstate(),
            "22023"
        );
    }

    #[pg_test]
    fn diff_then_patch_round_trips() {
        let a = json!({"x": [1, 2, 3], "y": {"z": "q"}, "gone": true, "a/b~": 1});
        let b = json!({"x": [1, 3], "y": {"z": "r", "w": null}, "new": [{}], "a/b~": 2});
        assert_eq!(patched(a.clone(), diff(&a, &b).unwrap()).unwrap(), b);
        assert_eq!(patched(Value::Null, diff(&Value::Null, &b).unwrap()).unwrap(), b);
        // the same patch json_patch::diff made
        assert_eq!(
            diff(&json!({"t": "a", "l": [1, 2]}), &json!({"t": "b", "l": [1], "n": 1})).unwrap(),
            json!([{"op": "remove", "path": "/l/1"}, {"op": "add", "path": "/n", "value": 1}, {"op": "replace", "path": "/t", "value": "b"}])
        );
    }

    #[pg_test]
    fn replay_from_a_kept_state_equals_replay_from_null() {
        let p1 = r#"[{"op": "replace", "path": "", "value": {"n": 1, "l": [1]}}]"#;
        let p2 = r#"[{"op": "replace", "path": "/n", "value": 2}]"#;
        let p3 = r#"[{"op": "add", "path": "/l/-", "value": 123456789012345678901234567890}]"#;
        let q = |sql: &str| Spi::get_one::<String>(sql).unwrap().unwrap();
        let from_null = q(&format!(
            "SELECT memmie._replay(ARRAY['{p1}', '{p2}', '{p3}'])::jsonb::text"
        ));
        let kept = q(&format!("SELECT memmie._replay(ARRAY['{p1}', '{p2}'])::jsonb::text"));
        let from_kept = q(&format!(
            "SELECT memmie._replay_from('{kept}'::jsonb, ARRAY['{p3}'])::text"
        ));
        assert_eq!(from_kept, from_null);
        assert_eq!(from_kept, r#"{"l": [1, 123456789012345678901234567890], "n": 2}"#);
        // no patches: the kept state itself
        assert_eq!(
            q(&format!("SELECT memmie._replay_from('{kept}'::jsonb, '{{}}')::text")),
            kept
        );
        // a patch that does not apply to the kept state fails as replay does
        let doc = Doc::from_value(json!({"n": 1}), REPLAY_MAX_SIZE).unwrap();
        let err = replay_onto(doc, [Some(r#"[{"op": "remove", "path": "/x"}]"#)]).unwrap_err();
        assert_eq!(err.sqlstate(), "22023");
    }

    #[pg_test]
    fn replay_applies_in_order_from_null() {
        let p1 = json!([{"op": "replace", "path": "", "value": {"n": 1}}]);
        let p2 = json!([{"op": "replace", "path": "/n", "value": 2}]);
        assert_eq!(replayed(&[p1, p2]).unwrap(), json!({"n": 2}));
        assert_eq!(replay([None]).unwrap_err().sqlstate(), "22023");
    }

    #[pg_test]
    fn excessive_nesting_is_rejected_not_crashed() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert_eq!(parse("JSON document", &deep).unwrap_err().sqlstate(), "22023");
    }

    #[pg_test]
    fn large_numbers_survive_exactly() {
        let doc = parse("doc", r#"{"n": 123456789012345678901234567890.123450}"#).unwrap();
        assert_eq!(to_text(&doc), r#"{"n":123456789012345678901234567890.123450}"#);
    }

    #[pg_test]
    fn integers_beyond_64_bits_patch_and_replay_exactly() {
        // u128 / i128 range: serde's tagged-enum buffering refused these ("integer as u128")
        for n in [
            "100000000000000000000",
            "-100000000000000000000",
            "340282366920938463463374607431768211456",
        ] {
            let v: Value = parse("n", n).unwrap();
            let p = parse("patch", &format!(r#"[{{"op": "add", "path": "/n", "value": {n}}}]"#)).unwrap();
            let state = patched(json!({}), p.clone()).unwrap();
            assert_eq!(to_text(&state["n"]), n);
            let created = json!([{"op": "replace", "path": "", "value": {"n": v}}]);
            assert_eq!(to_text(&replayed(&[created, p]).unwrap()["n"]), n);
        }
    }

    #[pg_test]
    fn deep_states_replay_exactly() {
        // 200 levels: more than a JSON text memmie parses, as create_blob can store in metadata
        let mut v = json!(1);
        for _ in 0..50 {
            v = json!({"d": v});
        }
        let mut text = to_text(&v);
        for _ in 0..150 {
            text = format!("[{text}]");
        }
        let patch = format!(r#"[{{"op": "replace", "path": "", "value": {{"metadata": {text}}}}}]"#);
        let jb = replay([Some(patch.as_str())]).unwrap();
        let out = crate::jsonb::out_text(&jb);
        assert!(
            out.starts_with(r#"{"metadata": [[[["#) && out.contains(r#"{"d": 1}"#),
            "{out}"
        );
    }

    #[pg_test]
    fn a_patch_cannot_nest_a_state_beyond_max_depth() {
        // each add + move pair nests /v one level deeper
        let mut ops = vec![json!({"op": "add", "path": "/v", "value": 1})];
        for _ in 0..100 {
            ops.push(json!({"op": "add", "path": "/t", "value": []}));
            ops.push(json!({"op": "move", "from": "/v", "path": "/t/0"}));
            ops.push(json!({"op": "move", "from": "/t", "path": "/v"}));
        }
        assert!(patched(json!({}), Value::Array(ops.clone())).is_ok());
        for _ in 0..100 {
            ops.push(json!({"op": "add", "path": "/t", "value": []}));
            ops.push(json!({"op": "move", "from": "/v", "path": "/t/0"}));
            ops.push(json!({"op": "move", "from": "/t", "path": "/v"}));
        }
        assert_eq!(patched(json!({}), Value::Array(ops)).unwrap_err().sqlstate(), "22023");
    }

    #[pg_test]
    fn nesting_beyond_the_stack_is_54001() {
        // 100,000 levels by moves: the walks check the stack, the drop is iterative
        let mut ops = vec![json!({"op": "add", "path": "/v", "value": 1})];
        for _ in 0..100_000 {
            ops.push(json!({"op": "add", "path": "/t", "value": []}));
            ops.push(json!({"op": "move", "from": "/v", "path": "/t/0"}));
            ops.push(json!({"op": "move", "from": "/t", "path": "/v"}));
        }
        let p = parse_patch(Value::Array(ops)).unwrap();
        let mut d = Doc::from_value(json!({}), u64::MAX).unwrap();
        d.apply(p).unwrap();
        assert_eq!(d.build().err().map(|e| e.sqlstate().to_string()), Some("54001".into()));
    }

    #[pg_test]
    fn copy_doubling_is_54000() {
        let ops: Vec<Value> = (0..30)
            .map(|n| json!({"op": "copy", "from": "", "path": format!("/c{n}")}))
            .collect();
        let doc = json!({"s": "x".repeat(1000)});
        let err = apply(doc, parse_patch(Value::Array(ops)).unwrap(), 1 << 20).unwrap_err();
        assert_eq!(err.sqlstate(), "54000", "{err}");
    }

    #[pg_test]
    fn many_adds_are_linear() {
        let ops: Vec<Value> = (0..100_000)
            .map(|n| json!({"op": "add", "path": format!("/k{n}"), "value": n}))
            .collect();
        let t = std::time::Instant::now();
        let v = patched(json!({}), Value::Array(ops)).unwrap();
        assert_eq!(v.as_object().map(|m| m.len()), Some(100_000));
        // quadratic was minutes
        assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
    }
}

//! RFC 6902 JSON Patch and diff over jsonb, and replay of a blob's deltas.
//!
//! Values cross the SQL boundary as text (the SQL wrappers in `sql/patch.sql` cast to and from
//! jsonb), so that every malformed input becomes a 22023 error here instead of a panic inside a
//! conversion.

use crate::error::{or_raise, MemmieError, Result};
use json_patch::{Patch, PatchErrorKind};
use pgrx::prelude::*;
use serde_json::Value;

/// Parses a JSON text (what Postgres' jsonb output gives us). Depth is limited to 128 levels by
/// serde_json, which keeps the recursive algorithms below far from the stack limit.
pub fn parse(what: &str, text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| MemmieError::InvalidParameter(format!("invalid {what}: {e}")))
}

/// Parses a JSON Patch document.
pub fn parse_patch(patch: Value) -> Result<Patch> {
    if !patch.is_array() {
        return Err(MemmieError::InvalidParameter(format!(
            "invalid JSON Patch: expected an array of operations, got {}",
            type_name(&patch)
        )));
    }
    serde_json::from_value(patch).map_err(|e| MemmieError::InvalidParameter(format!("invalid JSON Patch: {e}")))
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

/// Applies `patch` to `doc` atomically: on error `doc` is left unchanged.
pub fn apply(doc: &mut Value, patch: &Patch) -> Result<()> {
    json_patch::patch(doc, patch).map_err(|e| {
        let msg = format!("JSON Patch operation {} ({}) failed: {}", e.operation, op_name(patch, e.operation), e.kind);
        match e.kind {
            PatchErrorKind::TestFailed => MemmieError::PatchTestFailed(format!("{msg} at path \"{}\"", e.path)),
            _ => MemmieError::InvalidParameter(format!("{msg} at path \"{}\"", e.path)),
        }
    })
}

fn op_name(patch: &Patch, i: usize) -> &'static str {
    use json_patch::PatchOperation::*;
    match patch.0.get(i) {
        Some(Add(_)) => "add",
        Some(Remove(_)) => "remove",
        Some(Replace(_)) => "replace",
        Some(Move(_)) => "move",
        Some(Copy(_)) => "copy",
        Some(Test(_)) => "test",
        None => "?",
    }
}

/// A patch that turns `source` into `target`.
pub fn diff(source: &Value, target: &Value) -> Value {
    // json_patch::diff never fails; serialising a Patch cannot fail either.
    serde_json::to_value(json_patch::diff(source, target)).unwrap_or(Value::Array(vec![]))
}

/// Replays patches in order starting from `null`.
pub fn replay<'a>(patches: impl IntoIterator<Item = Option<&'a str>>) -> Result<Value> {
    let mut state = Value::Null;
    for (i, p) in patches.into_iter().enumerate() {
        let Some(p) = p else {
            return Err(MemmieError::InvalidParameter(format!("delta {} of the replay has no patch", i + 1)));
        };
        let patch = parse_patch(parse("JSON Patch", p)?)?;
        apply(&mut state, &patch)?;
    }
    Ok(state)
}

pub fn to_text(v: &Value) -> String {
    // Serialising a serde_json::Value to a String cannot fail.
    serde_json::to_string(v).unwrap_or_default()
}

fn diff_text(source: &str, target: &str) -> Result<String> {
    let source = parse("source document", source)?;
    let target = parse("target document", target)?;
    Ok(to_text(&diff(&source, &target)))
}

/// RFC 6902 JSON Patch over jsonb, applied in place to the binary document.
#[pg_extern(immutable, strict, parallel_safe)]
fn jsonb_patch(doc: crate::jsonb::JsonbArg, patch: crate::jsonb::JsonbArg) -> crate::jsonb::JsonbOut {
    or_raise(parse_patch_arg(&patch).and_then(|p| crate::patch_jsonb::apply(&doc, &p)))
}

fn parse_patch_arg(patch: &crate::jsonb::JsonbArg) -> Result<Patch> {
    parse_patch(crate::jsonb::read(patch, "JSON Patch")?)
}

#[pg_extern(name = "_jsonb_diff", immutable, strict, parallel_safe)]
fn jsonb_diff_text(source: &str, target: &str) -> String {
    or_raise(diff_text(source, target))
}

/// Replays an ordered array of patches (as text) from `null`.
#[pg_extern(name = "_replay", immutable, strict, parallel_safe)]
fn replay_text(patches: Array<&str>) -> String {
    or_raise(replay(patches.iter()).map(|v| to_text(&v)))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(doc: Value, patch: Value) -> Result<Value> {
        let mut doc = doc;
        apply(&mut doc, &parse_patch(patch)?)?;
        Ok(doc)
    }

    #[pg_test]
    fn failed_test_op_is_mm007_and_leaves_doc_unchanged() {
        let mut doc = json!({"a": 1});
        let p = parse_patch(json!([{"op": "add", "path": "/b", "value": 2}, {"op": "test", "path": "/a", "value": 5}])).unwrap();
        let err = apply(&mut doc, &p).unwrap_err();
        assert_eq!(err.sqlstate(), "MM007");
        assert_eq!(doc, json!({"a": 1}));
    }

    #[pg_test]
    fn bad_pointer_and_bad_op_are_22023() {
        assert_eq!(patched(json!({}), json!([{"op": "remove", "path": "/nope"}])).unwrap_err().sqlstate(), "22023");
        assert_eq!(patched(json!({}), json!([{"op": "frobnicate", "path": ""}])).unwrap_err().sqlstate(), "22023");
        assert_eq!(patched(json!({}), json!({"op": "add"})).unwrap_err().sqlstate(), "22023");
    }

    #[pg_test]
    fn diff_then_patch_round_trips() {
        let a = json!({"x": [1, 2, 3], "y": {"z": "q"}, "gone": true});
        let b = json!({"x": [1, 3], "y": {"z": "r", "w": null}, "new": [{}]});
        assert_eq!(patched(a.clone(), diff(&a, &b)).unwrap(), b);
        assert_eq!(patched(Value::Null, diff(&Value::Null, &b)).unwrap(), b);
    }

    #[pg_test]
    fn replay_applies_in_order_from_null() {
        let p1 = to_text(&json!([{"op": "replace", "path": "", "value": {"n": 1}}]));
        let p2 = to_text(&json!([{"op": "replace", "path": "/n", "value": 2}]));
        assert_eq!(replay([Some(p1.as_str()), Some(p2.as_str())]).unwrap(), json!({"n": 2}));
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
}

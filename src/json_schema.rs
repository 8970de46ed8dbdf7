//! Validation of provider configs and outputs against the provider's JSON Schemas.
//!
//! memmie implements the validation vocabulary that provider schemas use (draft 2020-12 /
//! draft 7 semantics): `type`, `enum`, `const`, `properties`, `required`,
//! `additionalProperties`, `items`, `minItems`, `maxItems`, `uniqueItems`, `minLength`,
//! `maxLength`, `minimum`, `maximum`, `exclusiveMinimum`, `exclusiveMaximum`, `multipleOf`,
//! `minProperties`, `maxProperties`, `allOf`, `anyOf`, `oneOf`, `not`; annotations (`title`,
//! `description`, `default`, `examples`, `format`, ...) are accepted and ignored. A schema that
//! uses any other keyword (`$ref`, `pattern`, ...) is refused when the provider is registered
//! (22023), so a schema is never silently half-enforced.

use crate::error::{check_interrupts, check_stack, guarded, or_raise, MemmieError, Result};
use crate::jsonb::{read, JsonbArg};
use serde_json::{Map, Value};

const ANNOTATIONS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "default",
    "examples",
    "format",
    "readOnly",
    "writeOnly",
    "deprecated",
    "$defs",
    "definitions",
];

const TYPES: &[&str] = &["null", "boolean", "object", "array", "number", "string", "integer"];

fn bad_schema(path: &str, why: impl std::fmt::Display) -> MemmieError {
    MemmieError::InvalidParameter(format!("invalid JSON Schema at {}: {why}", pointer(path)))
}

fn pointer(path: &str) -> &str {
    if path.is_empty() {
        "/"
    } else {
        path
    }
}

fn non_negative_int(v: &Value) -> bool {
    v.as_u64().is_some()
}

/// Checks that `schema` uses only what [`validate`] enforces.
pub fn check(schema: &Value, path: &str) -> Result<()> {
    check_stack()?;
    check_interrupts();
    let obj = match schema {
        Value::Bool(_) => return Ok(()),
        Value::Object(o) => o,
        other => {
            return Err(bad_schema(
                path,
                format!(
                    "a schema is an object or a boolean, not {}",
                    crate::patch::type_name(other)
                ),
            ))
        }
    };
    for (k, v) in obj {
        let here = format!("{path}/{k}");
        match k.as_str() {
            "type" => {
                let ok_name = |t: &Value| t.as_str().is_some_and(|s| TYPES.contains(&s));
                let ok = match v {
                    Value::Array(a) => !a.is_empty() && a.iter().all(ok_name),
                    t => ok_name(t),
                };
                if !ok {
                    return Err(bad_schema(
                        &here,
                        format!("type must be one of {TYPES:?} or a list of them"),
                    ));
                }
            }
            "enum" => {
                if !v.is_array() {
                    return Err(bad_schema(&here, "enum must be an array"));
                }
            }
            "const" => {}
            "properties" => {
                let props = v
                    .as_object()
                    .ok_or_else(|| bad_schema(&here, "properties must be an object"))?;
                for (name, sub) in props {
                    check(sub, &format!("{here}/{name}"))?;
                }
            }
            "required" => {
                if !v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) {
                    return Err(bad_schema(&here, "required must be an array of strings"));
                }
            }
            "additionalProperties" | "items" | "not" => check(v, &here)?,
            "allOf" | "anyOf" | "oneOf" => {
                let subs = v
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| bad_schema(&here, format!("{k} must be a non-empty array of schemas")))?;
                for (i, sub) in subs.iter().enumerate() {
                    check(sub, &format!("{here}/{i}"))?;
                }
            }
            "minItems" | "maxItems" | "minLength" | "maxLength" | "minProperties" | "maxProperties" => {
                if !non_negative_int(v) {
                    return Err(bad_schema(&here, format!("{k} must be a non-negative integer")));
                }
            }
            "uniqueItems" => {
                if !v.is_boolean() {
                    return Err(bad_schema(&here, "uniqueItems must be a boolean"));
                }
            }
            "minimum" | "maximum" | "exclusiveMinimum" | "exclusiveMaximum" => {
                if v.as_f64().is_none() {
                    return Err(bad_schema(&here, format!("{k} must be a number")));
                }
            }
            "multipleOf" => {
                if !v.as_f64().is_some_and(|m| m > 0.0) {
                    return Err(bad_schema(&here, "multipleOf must be a number above 0"));
                }
            }
            a if ANNOTATIONS.contains(&a) => {}
            other => {
                return Err(bad_schema(
                    &here,
                    format!("keyword \"{other}\" is not supported by memmie"),
                ))
            }
        }
    }
    Ok(())
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "number" => v.is_number(),
        "integer" => v.as_i64().is_some() || v.as_u64().is_some() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}

fn fail(path: &str, why: impl std::fmt::Display) -> Result<()> {
    Err(MemmieError::SchemaViolation(format!("{}: {why}", pointer(path))))
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Checks `doc` against `schema` (already accepted by [`check`]); the error names the first
/// failing location as a JSON Pointer.
pub fn validate(schema: &Value, doc: &Value, path: &str) -> Result<()> {
    check_stack()?;
    check_interrupts();
    let obj = match schema {
        Value::Bool(true) => return Ok(()),
        Value::Bool(false) => return fail(path, "no value is allowed here"),
        Value::Object(o) => o,
        _ => return Ok(()),
    };
    if let Some(t) = obj.get("type") {
        let ok = match t {
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(|t| type_matches(t, doc)),
            t => t.as_str().is_some_and(|t| type_matches(t, doc)),
        };
        if !ok {
            return fail(path, format!("expected type {t}, got {}", crate::patch::type_name(doc)));
        }
    }
    if let Some(Value::Array(options)) = obj.get("enum") {
        if !options.iter().any(|o| {
            check_interrupts();
            json_eq(o, doc)
        }) {
            return fail(path, format!("{doc} is not one of {}", Value::Array(options.clone())));
        }
    }
    if let Some(c) = obj.get("const") {
        if !json_eq(c, doc) {
            return fail(path, format!("expected {c}, got {doc}"));
        }
    }
    match doc {
        Value::Object(fields) => validate_object(obj, fields, path)?,
        Value::Array(items) => validate_array(obj, items, path)?,
        Value::String(s) => {
            let n = s.chars().count() as u64;
            if obj.get("minLength").and_then(Value::as_u64).is_some_and(|m| n < m) {
                return fail(
                    path,
                    format!(
                        "string of {n} characters is shorter than minLength {}",
                        obj["minLength"]
                    ),
                );
            }
            if obj.get("maxLength").and_then(Value::as_u64).is_some_and(|m| n > m) {
                return fail(
                    path,
                    format!("string of {n} characters is longer than maxLength {}", obj["maxLength"]),
                );
            }
        }
        Value::Number(_) => validate_number(obj, doc, path)?,
        _ => {}
    }
    if let Some(Value::Array(all)) = obj.get("allOf") {
        for s in all {
            validate(s, doc, path)?;
        }
    }
    if let Some(Value::Array(any)) = obj.get("anyOf") {
        if !any.iter().any(|s| validate(s, doc, path).is_ok()) {
            return fail(path, "matches none of anyOf");
        }
    }
    if let Some(Value::Array(one)) = obj.get("oneOf") {
        let n = one.iter().filter(|s| validate(s, doc, path).is_ok()).count();
        if n != 1 {
            return fail(path, format!("matches {n} of oneOf, not exactly one"));
        }
    }
    if let Some(not) = obj.get("not") {
        if validate(not, doc, path).is_ok() {
            return fail(path, "matches the schema under \"not\"");
        }
    }
    Ok(())
}

fn validate_number(obj: &Map<String, Value>, doc: &Value, path: &str) -> Result<()> {
    let Some(x) = num(doc) else { return Ok(()) };
    let bound = |k: &str| obj.get(k).and_then(num);
    if bound("minimum").is_some_and(|m| x < m) {
        return fail(path, format!("{doc} is below minimum {}", obj["minimum"]));
    }
    if bound("maximum").is_some_and(|m| x > m) {
        return fail(path, format!("{doc} is above maximum {}", obj["maximum"]));
    }
    if bound("exclusiveMinimum").is_some_and(|m| x <= m) {
        return fail(
            path,
            format!("{doc} is not above exclusiveMinimum {}", obj["exclusiveMinimum"]),
        );
    }
    if bound("exclusiveMaximum").is_some_and(|m| x >= m) {
        return fail(
            path,
            format!("{doc} is not below exclusiveMaximum {}", obj["exclusiveMaximum"]),
        );
    }
    if let Some(m) = bound("multipleOf") {
        let q = x / m;
        if (q - q.round()).abs() > 1e-9 {
            return fail(path, format!("{doc} is not a multiple of {}", obj["multipleOf"]));
        }
    }
    Ok(())
}

fn validate_object(obj: &Map<String, Value>, fields: &Map<String, Value>, path: &str) -> Result<()> {
    if let Some(Value::Array(req)) = obj.get("required") {
        for name in req.iter().filter_map(Value::as_str) {
            if !fields.contains_key(name) {
                return fail(path, format!("required property \"{name}\" is missing"));
            }
        }
    }
    let n = fields.len() as u64;
    if obj.get("minProperties").and_then(Value::as_u64).is_some_and(|m| n < m) {
        return fail(
            path,
            format!("{n} properties, fewer than minProperties {}", obj["minProperties"]),
        );
    }
    if obj.get("maxProperties").and_then(Value::as_u64).is_some_and(|m| n > m) {
        return fail(
            path,
            format!("{n} properties, more than maxProperties {}", obj["maxProperties"]),
        );
    }
    let props = obj.get("properties").and_then(Value::as_object);
    for (name, v) in fields {
        check_interrupts();
        let here = format!("{path}/{}", name.replace('~', "~0").replace('/', "~1"));
        match props.and_then(|p| p.get(name)) {
            Some(sub) => validate(sub, v, &here)?,
            None => {
                if let Some(extra) = obj.get("additionalProperties") {
                    if extra == &Value::Bool(false) {
                        return fail(&here, format!("property \"{name}\" is not allowed"));
                    }
                    validate(extra, v, &here)?;
                }
            }
        }
    }
    Ok(())
}

fn validate_array(obj: &Map<String, Value>, items: &[Value], path: &str) -> Result<()> {
    let n = items.len() as u64;
    if obj.get("minItems").and_then(Value::as_u64).is_some_and(|m| n < m) {
        return fail(path, format!("{n} items, fewer than minItems {}", obj["minItems"]));
    }
    if obj.get("maxItems").and_then(Value::as_u64).is_some_and(|m| n > m) {
        return fail(path, format!("{n} items, more than maxItems {}", obj["maxItems"]));
    }
    if obj.get("uniqueItems") == Some(&Value::Bool(true)) {
        // O(n): items are compared by a canonical text, equal exactly when json_eq says so
        let mut seen = std::collections::HashSet::with_capacity(items.len());
        for (i, a) in items.iter().enumerate() {
            check_interrupts();
            let mut key = String::new();
            canonical(a, &mut key)?;
            if !seen.insert(key) {
                return fail(&format!("{path}/{i}"), "repeats an earlier item (uniqueItems)");
            }
        }
    }
    if let Some(sub) = obj.get("items") {
        for (i, v) in items.iter().enumerate() {
            check_interrupts();
            validate(sub, v, &format!("{path}/{i}"))?;
        }
    }
    Ok(())
}

/// A text for `v` that is the same for two values exactly when [`json_eq`] holds: object members
/// in key order (serde_json's map is ordered), and numbers by their f64 value when they have one
/// (as json_eq compares them), by their exact text otherwise.
fn canonical(v: &Value, out: &mut String) -> Result<()> {
    use std::fmt::Write;
    check_stack()?;
    match v {
        Value::Number(n) => match n.as_f64() {
            // -0 and 0 are equal as f64, so give them one text
            Some(f) => {
                let _ = write!(out, "f{}", if f == 0.0 { 0u64 } else { f.to_bits() });
            }
            None => {
                let _ = write!(out, "n{n}");
            }
        },
        Value::Array(items) => {
            out.push('[');
            for item in items {
                canonical(item, out)?;
                out.push(',');
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (k, item) in map {
                let _ = write!(out, "{k:?}:");
                canonical(item, out)?;
                out.push(',');
            }
            out.push('}');
        }
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
    Ok(())
}

/// JSON equality with numbers compared by value (1 = 1.0).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || (x.as_f64().is_some() && x.as_f64() == y.as_f64()),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_eq(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

/// 22023 unless `schema` is a JSON Schema memmie can enforce completely.
#[pgrx::pg_extern(name = "_check_json_schema", immutable, strict, parallel_safe)]
fn check_json_schema(schema: JsonbArg, what: &str) -> bool {
    or_raise(guarded(|| {
        read(&schema, what).and_then(|s| {
            check(&s, "").map_err(|e| {
                MemmieError::InvalidParameter(format!("{what}: {}", e.to_string().trim_start_matches("22023: ")))
            })
        })
    }));
    true
}

/// MM004 unless `doc` satisfies `schema`; the message says which `what` and where.
#[pgrx::pg_extern(name = "_validate_json", immutable, strict, parallel_safe)]
fn validate_json(schema: JsonbArg, doc: JsonbArg, what: &str) -> bool {
    or_raise(guarded(|| {
        read(&schema, "schema").and_then(|s| {
            let d = read(&doc, what)?;
            validate(&s, &d, "").map_err(|e| match e {
                MemmieError::SchemaViolation(m) => {
                    MemmieError::SchemaViolation(format!("{what} does not match its schema at {m}"))
                }
                other => other,
            })
        })
    }));
    true
}

// pg_tests, not plain #[test]s: validation checks the stack and for interrupts, which needs
// the server's symbols.
#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;
    use pgrx::prelude::*;
    use serde_json::json;

    #[pg_test]
    fn validates_the_common_keywords() {
        let s = json!({"type": "object", "required": ["model"], "additionalProperties": false,
                       "properties": {"model": {"type": "string", "enum": ["a", "b"]},
                                      "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                                      "n": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2}}});
        check(&s, "").unwrap();
        assert!(validate(&s, &json!({"model": "a", "temperature": 1.5, "n": 2}), "").is_ok());
        assert!(validate(&s, &json!({"model": "c"}), "").is_err());
        assert!(validate(&s, &json!({}), "").is_err());
        assert!(validate(&s, &json!({"model": "a", "x": 1}), "").is_err());
        assert!(validate(&s, &json!({"model": "a", "temperature": 3}), "").is_err());
        assert!(validate(&s, &json!({"model": "a", "n": 1.5}), "").is_err());
        let e = validate(&s, &json!({"model": "a", "tags": ["x", 1]}), "").unwrap_err();
        assert!(e.to_string().contains("/tags/1"), "{e}");
    }

    #[pg_test]
    fn refuses_what_it_cannot_enforce() {
        assert!(check(&json!({"type": "string", "pattern": "^a"}), "").is_err());
        assert!(check(&json!({"$ref": "#/x"}), "").is_err());
        assert!(check(&json!({"type": "strng"}), "").is_err());
        assert!(check(&json!(3), "").is_err());
    }

    #[pg_test]
    fn unique_items_compares_by_value_in_linear_time() {
        let s = json!({"uniqueItems": true});
        assert!(validate(&s, &json!([1, "1", [1], {"a": 1}, {"a": "1"}, 1.5, null, true]), "").is_ok());
        for dup in [
            json!([1, 1.0]),
            json!([{"a": [1, {"b": 2}]}, {"a": [1.0, {"b": 2.0}]}]),
            json!([0, -0]),
            json!(["x", "x"]),
        ] {
            assert!(validate(&s, &dup, "").unwrap_err().to_string().contains("/1"), "{dup}");
        }
        let big: Vec<Value> = (0..50_000).map(|n| json!({"n": n, "s": n.to_string()})).collect();
        let t = std::time::Instant::now();
        assert!(validate(&s, &Value::Array(big), "").is_ok());
        // the pairwise comparison it replaced took minutes
        assert!(t.elapsed().as_secs() < 10, "{:?}", t.elapsed());
    }
}

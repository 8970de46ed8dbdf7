//! The blob state document (see the SQL API): its shape and the rules a change must keep.

use crate::error::{guarded, or_raise, MemmieError, Result};
use crate::patch;
use pgrx::prelude::*;
use serde_json::{Map, Value};

const KEYS: [&str; 7] = [
    "content_hash",
    "content_size",
    "content_type",
    "metadata",
    "tags",
    "deleted",
    "content",
];

/// Is `mime` a syntactically valid MIME type (`type/subtype` with optional parameters)?
pub fn validate_mime(mime: &str) -> Result<()> {
    let bad = || {
        MemmieError::InvalidParameter(format!(
            "invalid content type \"{}\": expected type/subtype",
            mime.chars().take(300).collect::<String>()
        ))
    };
    if mime.len() > 255 {
        return Err(bad());
    }
    let essence = mime.split(';').next().unwrap_or("").trim();
    let (ty, sub) = essence.split_once('/').ok_or_else(bad)?;
    // RFC 6838 restricted-name: alphanumerics and ! # $ & - ^ _ . +
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'*')
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+*".contains(&b))
    };
    if !token(ty) || !token(sub) || mime.bytes().any(|b| b.is_ascii_control()) {
        return Err(bad());
    }
    Ok(())
}

/// Do blobs of this MIME type carry their parsed content in the state (`application/json`, `*+json`)?
pub fn is_json_type(mime: &str) -> bool {
    let essence = mime.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.contains('/') && essence.ends_with("+json"))
}

fn invalid(msg: String) -> MemmieError {
    MemmieError::InvalidParameter(msg)
}

fn as_object<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object()
        .ok_or_else(|| invalid(format!("{what} must be a JSON object, got {}", patch::type_name(v))))
}

/// Checks the parts of a state that a caller may set.
pub fn validate(state: &Value) -> Result<()> {
    let obj = as_object(state, "the blob state")?;
    if let Some(k) = obj.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(invalid(format!("unknown key \"{k}\" in the blob state")));
    }
    let ct = obj
        .get("content_type")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("the blob state needs a string content_type".into()))?;
    validate_mime(ct)?;
    as_object(obj.get("metadata").unwrap_or(&Value::Null), "metadata")?;
    match obj.get("tags") {
        Some(Value::Array(tags)) if tags.iter().all(Value::is_string) => {}
        _ => return Err(invalid("tags must be a JSON array of strings".into())),
    }
    if obj.contains_key("content") && !is_json_type(ct) {
        return Err(invalid(format!(
            "only JSON blobs have /content; content type is \"{ct}\""
        )));
    }
    Ok(())
}

/// Applies a caller's patch to a blob state and checks the result. The caller may change
/// `content_type`, `metadata`, `tags` and (for JSON blobs) `content`; `content_hash`,
/// `content_size` and `deleted` follow from memmie's own operations.
pub fn next_state(old: &str, patch_doc: &str) -> Result<Value> {
    let old = patch::parse("blob state", old)?;
    let p = patch::parse_patch(patch::parse("JSON Patch", patch_doc)?)?;
    // what the checks below compare, kept before the old state is consumed by the patch
    let derived: Vec<Option<Value>> = DERIVED.iter().map(|k| old.get(*k).cloned()).collect();
    let was_json = old.get("content").is_some();
    // The state may not grow beyond memmie.max_content_size while the patch runs (54000).
    let new = patch::apply(old, p, crate::guc::max_content_size())?;
    validate(&new)?;
    for (key, was) in DERIVED.iter().zip(&derived) {
        if was.as_ref() != new.get(*key) {
            return Err(invalid(format!(
                "/{key} cannot be changed by a patch; it follows from the blob's content and lifecycle"
            )));
        }
    }
    let ct = new.get("content_type").and_then(Value::as_str).unwrap_or("");
    if was_json && is_json_type(ct) && new.get("content").is_none() {
        return Err(invalid("a JSON blob's state must keep /content".into()));
    }
    Ok(new)
}

/// The keys of the state that only memmie's own operations change.
const DERIVED: [&str; 3] = ["content_hash", "content_size", "deleted"];

#[pg_extern(name = "_next_state", immutable, strict, parallel_safe)]
fn next_state_text(old: &str, patch_doc: &str) -> String {
    or_raise(guarded(|| next_state(old, patch_doc).map(|v| patch::to_text(&v))))
}

#[pg_extern(name = "_check_mime", immutable, strict, parallel_safe)]
fn check_mime(mime: &str) -> bool {
    or_raise(guarded(|| validate_mime(mime)));
    true
}

#[pg_extern(name = "_is_json_type", immutable, strict, parallel_safe)]
fn is_json_type_sql(mime: &str) -> bool {
    is_json_type(mime)
}

/// Parses a JSON blob's bytes (UTF-8 JSON) into a JSON text for the state document.
#[pg_extern(name = "_json_from_bytes", immutable, strict, parallel_safe)]
fn json_from_bytes(data: &[u8]) -> String {
    or_raise(guarded(|| parse_content(data)))
}

fn parse_content(data: &[u8]) -> Result<String> {
    let text = std::str::from_utf8(data).map_err(|e| invalid(format!("JSON content is not valid UTF-8: {e}")))?;
    let v = patch::parse("JSON content", text)?;
    Ok(patch::to_text(&v))
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    use super::*;
    use serde_json::json;

    fn state() -> String {
        patch::to_text(
            &json!({"content_hash": "h", "content_size": 3, "content_type": "text/plain", "metadata": {}, "tags": []}),
        )
    }

    #[pg_test]
    fn mime_types() {
        for ok in [
            "text/plain",
            "application/json",
            "application/vnd.api+json",
            "text/markdown; charset=utf-8",
            "image/svg+xml",
        ] {
            assert!(validate_mime(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "text",
            "/plain",
            "text/",
            "te xt/plain",
            "text/pl\nain",
            "text/plain/extra",
        ] {
            assert!(validate_mime(bad).is_err(), "{bad}");
        }
        assert!(is_json_type("application/json; charset=utf-8"));
        assert!(is_json_type("application/ld+json"));
        assert!(!is_json_type("text/plain"));
    }

    #[pg_test]
    fn metadata_and_tags_can_change() {
        let p = r#"[{"op":"add","path":"/metadata/title","value":"T"},{"op":"add","path":"/tags/-","value":"x"}]"#;
        let s = next_state(&state(), p).unwrap();
        assert_eq!(s["metadata"], json!({"title": "T"}));
        assert_eq!(s["tags"], json!(["x"]));
    }

    #[pg_test]
    fn derived_fields_are_protected() {
        for p in [
            r#"[{"op":"replace","path":"/content_hash","value":"x"}]"#,
            r#"[{"op":"add","path":"/deleted","value":true}]"#,
            r#"[{"op":"replace","path":"/metadata","value":[]}]"#,
            r#"[{"op":"add","path":"/tags/-","value":1}]"#,
            r#"[{"op":"add","path":"/content","value":{}}]"#,
            r#"[{"op":"add","path":"/other","value":1}]"#,
            r#"[{"op":"replace","path":"/content_type","value":"nonsense"}]"#,
            r#"[{"op":"replace","path":"","value":null}]"#,
        ] {
            assert_eq!(next_state(&state(), p).unwrap_err().sqlstate(), "22023", "{p}");
        }
    }

    #[pg_test]
    fn json_content_must_stay() {
        let s = patch::to_text(
            &json!({"content_hash": "h", "content_size": 2, "content_type": "application/json", "metadata": {}, "tags": [], "content": {}}),
        );
        assert!(next_state(&s, r#"[{"op":"add","path":"/content/a","value":1}]"#).is_ok());
        assert_eq!(
            next_state(&s, r#"[{"op":"remove","path":"/content"}]"#)
                .unwrap_err()
                .sqlstate(),
            "22023"
        );
    }

    #[pg_test]
    fn content_bytes_must_be_json() {
        assert!(parse_content(br#"{"a": [1, 2]}"#).is_ok());
        assert_eq!(parse_content(b"{nope").unwrap_err().sqlstate(), "22023");
        assert_eq!(parse_content(&[0xff, 0xfe]).unwrap_err().sqlstate(), "22023");
    }
}

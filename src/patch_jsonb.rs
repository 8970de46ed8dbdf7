//! RFC 6902 applied to a jsonb document in place: only the containers a patch walks through are
//! unpacked; everything else stays binary jsonb and is copied back as is. Numbers are never
//! printed and re-parsed, which is what made a round trip through serde cost O(document).

use crate::error::{MemmieError, Result};
use crate::jsonb::{self, JsonbArg, JsonbOut, MAX_DEPTH};
use json_patch::{Patch, PatchOperation};
use pgrx::pg_sys::{self, jbvType, JsonbIteratorToken as Tok};
use serde_json::Value;

/// A node of the document being patched.
enum Node {
    /// A scalar read from the document (its string / numeric point into the document).
    Scalar(pg_sys::JsonbValue),
    /// A container not touched yet.
    Binary(*mut pg_sys::JsonbContainer),
    Array(Vec<Node>),
    Object(Vec<(Key, Node)>),
    /// A value that came from the patch.
    New(Value),
}

/// An object key: still in the document's memory, or new from the patch.
#[derive(Clone)]
enum Key {
    Raw(*const u8, usize),
    Owned(String),
}

impl Key {
    fn bytes(&self) -> &[u8] {
        match self {
            Key::Raw(p, n) => unsafe { std::slice::from_raw_parts(*p, *n) },
            Key::Owned(s) => s.as_bytes(),
        }
    }
}

impl Clone for Node {
    fn clone(&self) -> Self {
        match self {
            Node::Scalar(v) => Node::Scalar(*v),
            Node::Binary(c) => Node::Binary(*c),
            Node::Array(items) => Node::Array(items.clone()),
            Node::Object(pairs) => Node::Object(pairs.clone()),
            Node::New(v) => Node::New(v.clone()),
        }
    }
}

fn leaf(v: pg_sys::JsonbValue) -> Node {
    if v.type_ == jbvType::jbvBinary {
        Node::Binary(unsafe { v.val.binary.data })
    } else {
        Node::Scalar(v)
    }
}

unsafe fn key_of(v: &pg_sys::JsonbValue) -> Key {
    unsafe { Key::Raw(v.val.string.val as *const u8, v.val.string.len as usize) }
}

/// Unpacks one level of a container (a raw scalar document becomes its scalar).
fn expand(c: *mut pg_sys::JsonbContainer) -> Node {
    unsafe {
        let mut it = pg_sys::JsonbIteratorInit(c);
        let mut v = pg_sys::JsonbValue { type_: jbvType::jbvNull, val: std::mem::zeroed() };
        let mut items = Vec::new();
        let mut pairs = Vec::new();
        let mut key = Key::Owned(String::new());
        let mut is_array = true;
        let mut raw_scalar = false;
        loop {
            match pg_sys::JsonbIteratorNext(&mut it, &mut v, true) {
                Tok::WJB_DONE => break,
                Tok::WJB_BEGIN_ARRAY => raw_scalar = v.val.array.rawScalar,
                Tok::WJB_BEGIN_OBJECT => is_array = false,
                Tok::WJB_ELEM => items.push(leaf(v)),
                Tok::WJB_KEY => key = key_of(&v),
                Tok::WJB_VALUE => pairs.push((std::mem::replace(&mut key, Key::Owned(String::new())), leaf(v))),
                _ => {}
            }
        }
        if !is_array {
            Node::Object(pairs)
        } else if raw_scalar && items.len() == 1 {
            items.pop().unwrap_or(Node::New(Value::Null))
        } else {
            Node::Array(items)
        }
    }
}

/// Unpacks `node` one level if it is a container still in binary form, or a container
/// that came from the patch.
fn open(node: &mut Node) {
    match node {
        Node::Binary(c) => *node = expand(*c),
        Node::New(Value::Array(items)) => *node = Node::Array(items.drain(..).map(Node::New).collect()),
        Node::New(Value::Object(map)) => {
            *node = Node::Object(std::mem::take(map).into_iter().map(|(k, v)| (Key::Owned(k), Node::New(v))).collect())
        }
        _ => {}
    }
}

fn to_value(node: &Node) -> Result<Value> {
    Ok(match node {
        Node::Scalar(v) => unsafe { jsonb::scalar(v, "JSON document")? },
        Node::Binary(c) => jsonb::read_container(*c, "JSON document")?,
        Node::Array(items) => Value::Array(items.iter().map(to_value).collect::<Result<_>>()?),
        Node::Object(pairs) => Value::Object(
            pairs
                .iter()
                .map(|(k, v)| Ok((String::from_utf8_lossy(k.bytes()).into_owned(), to_value(v)?)))
                .collect::<Result<_>>()?,
        ),
        Node::New(v) => v.clone(),
    })
}

fn invalid_path(op: usize, name: &str, path: &str) -> MemmieError {
    MemmieError::InvalidParameter(format!("JSON Patch operation {op} ({name}) failed: path is invalid at path \"{path}\""))
}

/// RFC 6901 pointer tokens.
fn tokens(ptr: &str, op: usize, name: &str) -> Result<Vec<String>> {
    if ptr.is_empty() {
        return Ok(vec![]);
    }
    let Some(rest) = ptr.strip_prefix('/') else {
        return Err(invalid_path(op, name, ptr));
    };
    rest.split('/')
        .map(|t| {
            let mut out = String::with_capacity(t.len());
            let mut chars = t.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err(invalid_path(op, name, ptr)),
                    }
                } else {
                    out.push(c);
                }
            }
            Ok(out)
        })
        .collect()
}

/// An array index token: digits, no leading zero; None for anything else.
fn index(token: &str) -> Option<usize> {
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

/// The node at `path`, unpacking containers on the way.
fn locate<'a>(root: &'a mut Node, path: &[String]) -> Option<&'a mut Node> {
    let mut node = root;
    for (depth, t) in path.iter().enumerate() {
        if depth >= MAX_DEPTH * 2 {
            return None;
        }
        open(node);
        node = match node {
            Node::Object(pairs) => &mut pairs.iter_mut().find(|(k, _)| k.bytes() == t.as_bytes())?.1,
            Node::Array(items) => items.get_mut(index(t)?)?,
            _ => return None,
        };
    }
    Some(node)
}

fn add(root: &mut Node, path: &[String], value: Node, op: usize, name: &str, ptr: &str) -> Result<()> {
    let Some((last, parent_path)) = path.split_last() else {
        *root = value;
        return Ok(());
    };
    let parent = locate(root, parent_path).ok_or_else(|| invalid_path(op, name, ptr))?;
    open(parent);
    match parent {
        Node::Object(pairs) => match pairs.iter_mut().find(|(k, _)| k.bytes() == last.as_bytes()) {
            Some(slot) => slot.1 = value,
            None => pairs.push((Key::Owned(last.clone()), value)),
        },
        Node::Array(items) => {
            let i = if last == "-" { items.len() } else { index(last).ok_or_else(|| invalid_path(op, name, ptr))? };
            if i > items.len() {
                return Err(invalid_path(op, name, ptr));
            }
            items.insert(i, value);
        }
        _ => return Err(invalid_path(op, name, ptr)),
    }
    Ok(())
}

fn remove(root: &mut Node, path: &[String], op: usize, name: &str, ptr: &str) -> Result<Node> {
    let Some((last, parent_path)) = path.split_last() else {
        return Ok(std::mem::replace(root, Node::New(Value::Null)));
    };
    let parent = locate(root, parent_path).ok_or_else(|| invalid_path(op, name, ptr))?;
    open(parent);
    match parent {
        Node::Object(pairs) => {
            let i = pairs
                .iter()
                .position(|(k, _)| k.bytes() == last.as_bytes())
                .ok_or_else(|| invalid_path(op, name, ptr))?;
            Ok(pairs.remove(i).1)
        }
        Node::Array(items) => {
            let i = index(last).filter(|i| *i < items.len()).ok_or_else(|| invalid_path(op, name, ptr))?;
            Ok(items.remove(i))
        }
        _ => Err(invalid_path(op, name, ptr)),
    }
}

fn apply_op(root: &mut Node, op: &PatchOperation, i: usize) -> Result<()> {
    match op {
        PatchOperation::Add(o) => {
            let p = o.path.to_string();
            add(root, &tokens(&p, i, "add")?, Node::New(o.value.clone()), i, "add", &p)
        }
        PatchOperation::Remove(o) => {
            let p = o.path.to_string();
            remove(root, &tokens(&p, i, "remove")?, i, "remove", &p).map(drop)
        }
        PatchOperation::Replace(o) => {
            let p = o.path.to_string();
            let target = locate(root, &tokens(&p, i, "replace")?).ok_or_else(|| invalid_path(i, "replace", &p))?;
            *target = Node::New(o.value.clone());
            Ok(())
        }
        PatchOperation::Move(o) => {
            let (from, p) = (o.from.to_string(), o.path.to_string());
            if from == p {
                return locate(root, &tokens(&from, i, "move")?).map(drop).ok_or_else(|| invalid_path(i, "move", &from));
            }
            if p.starts_with(&format!("{from}/")) {
                return Err(MemmieError::InvalidParameter(format!(
                    "JSON Patch operation {i} (move) failed: cannot move the value inside itself at path \"{p}\""
                )));
            }
            let value = remove(root, &tokens(&from, i, "move")?, i, "move", &from)?;
            add(root, &tokens(&p, i, "move")?, value, i, "move", &p)
        }
        PatchOperation::Copy(o) => {
            let (from, p) = (o.from.to_string(), o.path.to_string());
            let value = locate(root, &tokens(&from, i, "copy")?).ok_or_else(|| invalid_path(i, "copy", &from))?.clone();
            add(root, &tokens(&p, i, "copy")?, value, i, "copy", &p)
        }
        PatchOperation::Test(o) => {
            let p = o.path.to_string();
            let target = locate(root, &tokens(&p, i, "test")?).ok_or_else(|| invalid_path(i, "test", &p))?;
            if to_value(target)? != o.value {
                return Err(MemmieError::PatchTestFailed(format!(
                    "JSON Patch operation {i} (test) failed: value did not match at path \"{p}\""
                )));
            }
            Ok(())
        }
    }
}

unsafe fn push_node(state: &mut *mut pg_sys::JsonbParseState, tok: Tok::Type, node: &Node) -> Result<*mut pg_sys::JsonbValue> {
    unsafe {
        Ok(match node {
            Node::Scalar(v) => {
                let mut v = *v;
                pg_sys::pushJsonbValue(state, tok, &mut v)
            }
            Node::Binary(c) => {
                let mut v = pg_sys::JsonbValue { type_: jbvType::jbvBinary, val: std::mem::zeroed() };
                v.val.binary.data = *c;
                pg_sys::pushJsonbValue(state, tok, &mut v)
            }
            Node::Array(items) => {
                pg_sys::pushJsonbValue(state, Tok::WJB_BEGIN_ARRAY, std::ptr::null_mut());
                for item in items {
                    push_node(state, Tok::WJB_ELEM, item)?;
                }
                pg_sys::pushJsonbValue(state, Tok::WJB_END_ARRAY, std::ptr::null_mut())
            }
            Node::Object(pairs) => {
                pg_sys::pushJsonbValue(state, Tok::WJB_BEGIN_OBJECT, std::ptr::null_mut());
                for (k, item) in pairs {
                    let bytes = k.bytes();
                    let mut key = pg_sys::JsonbValue { type_: jbvType::jbvString, val: std::mem::zeroed() };
                    key.val.string.len = i32::try_from(bytes.len())
                        .map_err(|_| MemmieError::InvalidParameter("key too long for jsonb".into()))?;
                    // Points into the document or into this tree, both alive until
                    // JsonbValueToJsonb has copied the result.
                    key.val.string.val = bytes.as_ptr() as *mut std::ffi::c_char;
                    pg_sys::pushJsonbValue(state, Tok::WJB_KEY, &mut key);
                    push_node(state, Tok::WJB_VALUE, item)?;
                }
                pg_sys::pushJsonbValue(state, Tok::WJB_END_OBJECT, std::ptr::null_mut())
            }
            Node::New(v) => jsonb::push(state, tok, v)?,
        })
    }
}

fn build(root: &Node) -> Result<JsonbOut> {
    match root {
        Node::New(v) => jsonb::build(v),
        // a nested container moved or copied to the root: rebuild from its first level
        Node::Binary(c) => build(&expand(*c)),
        Node::Array(_) | Node::Object(_) => unsafe {
            let mut state: *mut pg_sys::JsonbParseState = std::ptr::null_mut();
            let res = push_node(&mut state, Tok::WJB_DONE, root)?;
            Ok(JsonbOut(pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(res))))
        },
        scalar => jsonb::build(&to_value(scalar)?),
    }
}

/// Applies `patch` to `doc`.
pub fn apply(doc: &JsonbArg, patch: &Patch) -> Result<JsonbOut> {
    if patch.0.is_empty() {
        return Ok(doc.unchanged());
    }
    let original = doc.root();
    let mut root = Node::Binary(original);
    for (i, op) in patch.0.iter().enumerate() {
        apply_op(&mut root, op, i)?;
    }
    match root {
        // only tests (or nothing that changed the document)
        Node::Binary(c) if c == original => Ok(doc.unchanged()),
        _ => build(&root),
    }
}

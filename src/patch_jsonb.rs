//! RFC 6902 applied to a document in place: only the containers a patch walks through are
//! unpacked; everything else stays binary jsonb and is copied back as is. Numbers are never
//! printed and re-parsed, which is what made a round trip through serde cost O(document).
//!
//! This is memmie's one JSON Patch engine: `jsonb_patch` runs it on a jsonb document, blob state
//! changes ([`crate::patch::apply`]) on a parsed `serde_json::Value`, and replay on the stored
//! deltas read as jsonb, so a patch accepted when it is written replays to the same state.
//!
//! Hostile patches are bounded:
//! - time: an object's members are kept in a `BTreeMap` and an array's in a `VecDeque` (no
//!   linear search per operation; adding at either end of an array is O(1)), nothing is cloned
//!   or serialised per operation, and a query cancel / `statement_timeout` is honoured after
//!   every operation;
//! - memory: the document's size (see [`Doc`]) is tracked as operations add and remove values,
//!   and a patch that would make it larger than its limit fails with `54000` before the value is
//!   copied;
//! - stack: every recursive walk checks the stack ([`check_stack`], `54001`), and dropping a
//!   tree is iterative, so a document nested arbitrarily deep by `move`s cannot overflow it.

use crate::error::{check_interrupts, check_stack, MemmieError, Result};
use crate::jsonb::{self, JsonbArg, JsonbOut, MAX_DEPTH};
use crate::patch::Patch;
use pgrx::pg_sys::{self, jbvType, JsonbIteratorToken as Tok};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};

/// A node of the document being patched.
enum Node {
    /// A scalar read from the document (its string / numeric point into the document).
    Scalar(pg_sys::JsonbValue),
    /// A container not touched yet (its size in bytes).
    Binary(*mut pg_sys::JsonbContainer, u64),
    Array(VecDeque<Node>),
    Object(BTreeMap<Key, Node>),
    /// A value that came from the patch.
    New(Value),
}

/// An object key: still in the document's memory, or new from the patch. Ordered as jsonb
/// orders keys (shorter first, then by bytes, see [`JKey`]), so that an object unpacked from the
/// document is already sorted (the map is built without sorting) and is pushed back in the order
/// PostgreSQL stores it (its sort of the members finds them sorted, in one pass).
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

/// Key bytes compared in jsonb's order: by length, then bytewise (`lengthCompareJsonbString`);
/// what an object is looked up by.
#[repr(transparent)]
#[derive(PartialEq, Eq)]
struct JKey([u8]);

impl JKey {
    fn new(b: &[u8]) -> &JKey {
        // SAFETY: JKey is a transparent wrapper of [u8]
        unsafe { &*(b as *const [u8] as *const JKey) }
    }
}

impl PartialOrd for JKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for JKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.len().cmp(&other.0.len()).then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.bytes() == other.bytes()
    }
}
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        JKey::new(self.bytes()).cmp(JKey::new(other.bytes()))
    }
}
impl std::borrow::Borrow<JKey> for Key {
    fn borrow(&self) -> &JKey {
        JKey::new(self.bytes())
    }
}

impl Clone for Key {
    fn clone(&self) -> Self {
        match self {
            Key::Raw(p, n) => Key::Raw(*p, *n),
            Key::Owned(s) => Key::Owned(s.clone()),
        }
    }
}

impl Drop for Node {
    /// Iterative: the children are taken out before each node is dropped, so a tree of any depth
    /// is freed without recursion.
    fn drop(&mut self) {
        fn take(node: &mut Node, stack: &mut Vec<Node>) {
            match node {
                Node::Array(items) => stack.extend(std::mem::take(items)),
                Node::Object(pairs) => stack.extend(std::mem::take(pairs).into_values()),
                _ => {}
            }
        }
        if !matches!(self, Node::Array(_) | Node::Object(_)) {
            return;
        }
        let mut stack = Vec::new();
        take(self, &mut stack);
        while let Some(mut n) = stack.pop() {
            take(&mut n, &mut stack);
        }
    }
}

/// A copy of `node` (for `copy`), checking the stack at every level.
fn duplicate(node: &Node) -> Result<Node> {
    check_stack()?;
    Ok(match node {
        Node::Scalar(v) => Node::Scalar(*v),
        Node::Binary(c, n) => Node::Binary(*c, *n),
        Node::Array(items) => Node::Array(items.iter().map(duplicate).collect::<Result<_>>()?),
        Node::Object(pairs) => {
            Node::Object(pairs.iter().map(|(k, v)| Ok((k.clone(), duplicate(v)?))).collect::<Result<_>>()?)
        }
        Node::New(v) => Node::New(v.clone()),
    })
}

fn leaf(v: pg_sys::JsonbValue) -> Node {
    if v.type_ == jbvType::jbvBinary {
        unsafe { Node::Binary(v.val.binary.data, v.val.binary.len.max(0) as u64) }
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
        let mut items = VecDeque::new();
        let mut pairs = Vec::new();
        let mut key = Key::Owned(String::new());
        let mut is_array = true;
        let mut raw_scalar = false;
        loop {
            match pg_sys::JsonbIteratorNext(&mut it, &mut v, true) {
                Tok::WJB_DONE => break,
                Tok::WJB_BEGIN_ARRAY => raw_scalar = v.val.array.rawScalar,
                Tok::WJB_BEGIN_OBJECT => is_array = false,
                Tok::WJB_ELEM => items.push_back(leaf(v)),
                Tok::WJB_KEY => key = key_of(&v),
                Tok::WJB_VALUE => pairs.push((std::mem::replace(&mut key, Key::Owned(String::new())), leaf(v))),
                _ => {}
            }
        }
        if !is_array {
            // jsonb keys are unique and already in the map's order
            Node::Object(pairs.into_iter().collect())
        } else if raw_scalar && items.len() == 1 {
            items.pop_front().unwrap_or(Node::New(Value::Null))
        } else {
            Node::Array(items)
        }
    }
}

/// Unpacks `node` one level if it is a container still in binary form, or a container
/// that came from the patch.
fn open(node: &mut Node) {
    match node {
        Node::Binary(c, _) => *node = expand(*c),
        Node::New(Value::Array(items)) => *node = Node::Array(std::mem::take(items).into_iter().map(Node::New).collect()),
        Node::New(Value::Object(map)) => {
            *node = Node::Object(std::mem::take(map).into_iter().map(|(k, v)| (Key::Owned(k), Node::New(v))).collect())
        }
        _ => {}
    }
}

fn to_value(node: &Node) -> Result<Value> {
    check_stack()?;
    Ok(match node {
        Node::Scalar(v) => unsafe { jsonb::scalar(v, "JSON document")? },
        Node::Binary(c, _) => jsonb::read_container(*c, "JSON document")?,
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

/// `node` as a Value, taking it apart (no copy of what came from the patch); at most
/// [`MAX_DEPTH`] levels below `depth`.
fn into_value(mut node: Node, depth: usize) -> Result<Value> {
    check_stack()?;
    if depth > MAX_DEPTH {
        return Err(MemmieError::InvalidParameter(format!(
            "invalid JSON document: nested deeper than {MAX_DEPTH} levels"
        )));
    }
    Ok(match &mut node {
        Node::Scalar(v) => unsafe { jsonb::scalar(v, "JSON document")? },
        Node::Binary(c, _) => jsonb::read_container(*c, "JSON document")?,
        Node::Array(items) => {
            Value::Array(std::mem::take(items).into_iter().map(|n| into_value(n, depth + 1)).collect::<Result<_>>()?)
        }
        Node::Object(pairs) => Value::Object(
            std::mem::take(pairs)
                .into_iter()
                .map(|(k, v)| Ok((String::from_utf8_lossy(k.bytes()).into_owned(), into_value(v, depth + 1)?)))
                .collect::<Result<_>>()?,
        ),
        Node::New(v) => {
            let v = std::mem::take(v);
            if depth + jsonb::depth(&v)? > MAX_DEPTH + 1 {
                return Err(MemmieError::InvalidParameter(format!(
                    "invalid JSON document: nested deeper than {MAX_DEPTH} levels"
                )));
            }
            v
        }
    })
}

/// The size of `node` in bytes, as counted against [`Doc`]'s limit: binary parts by their jsonb
/// size, everything else by the length of its JSON text (strings without their escapes).
fn size(node: &Node) -> Result<u64> {
    check_stack()?;
    Ok(match node {
        Node::Scalar(v) => unsafe {
            match v.type_ {
                jbvType::jbvString => v.val.string.len.max(0) as u64 + 2,
                jbvType::jbvNumeric => 1,
                jbvType::jbvBool => 4,
                _ => 4,
            }
        },
        Node::Binary(_, n) => *n,
        Node::Array(items) => {
            let mut n = 2 + items.len() as u64;
            for item in items {
                n += size(item)?;
            }
            n
        }
        Node::Object(pairs) => {
            let mut n = 2 + pairs.len() as u64;
            for (k, v) in pairs {
                n += k.bytes().len() as u64 + 3 + size(v)?;
            }
            n
        }
        Node::New(v) => jsonb::text_size(v)?,
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
            Node::Object(pairs) => pairs.get_mut(JKey::new(t.as_bytes()))?,
            Node::Array(items) => items.get_mut(index(t)?)?,
            _ => return None,
        };
    }
    Some(node)
}

/// The kind of a JSON Patch operation.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Add,
    Remove,
    Replace,
    Move,
    Copy,
    Test,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Add => "add",
            Kind::Remove => "remove",
            Kind::Replace => "replace",
            Kind::Move => "move",
            Kind::Copy => "copy",
            Kind::Test => "test",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "add" => Kind::Add,
            "remove" => Kind::Remove,
            "replace" => Kind::Replace,
            "move" => Kind::Move,
            "copy" => Kind::Copy,
            "test" => Kind::Test,
            _ => return None,
        })
    }
}

/// A document being patched, with its size.
///
/// The size limit: a patch may not make the document larger than `limit` bytes at any step,
/// where parts still in binary form count their jsonb size and everything else the length of
/// its compact JSON text (a lower bound: string escapes are not counted). It is checked as
/// values are added (`add`, `replace`, `copy`: before the copy is made), from sizes kept as the
/// patch goes, so a patch that doubles the document with `copy` fails with `54000` once it would
/// pass the limit, instead of exhausting memory.
pub struct Doc {
    root: Node,
    size: u64,
    limit: u64,
}

impl Doc {
    /// The jsonb document `root` of `size` bytes.
    pub fn from_jsonb(root: *mut pg_sys::JsonbContainer, size: u64, limit: u64) -> Doc {
        Doc { root: Node::Binary(root, size), size, limit }
    }

    pub fn from_value(v: Value, limit: u64) -> Result<Doc> {
        let size = jsonb::text_size(&v)?;
        Ok(Doc { root: Node::New(v), size, limit })
    }

    /// The document as a Value (at most [`MAX_DEPTH`] levels deep).
    pub fn into_value(mut self) -> Result<Value> {
        into_value(std::mem::replace(&mut self.root, Node::New(Value::Null)), 1)
    }

    /// Is the document still the binary container `c`?
    fn is_binary(&self, c: *mut pg_sys::JsonbContainer) -> bool {
        matches!(self.root, Node::Binary(r, _) if r == c)
    }

    fn grow(&mut self, by: u64, shrink: u64, op: usize, name: &str) -> Result<()> {
        let size = self.size.saturating_sub(shrink).saturating_add(by);
        if size > self.limit {
            return Err(MemmieError::ContentTooLarge(format!(
                "JSON Patch operation {op} ({name}) failed: the document would grow to more than {} bytes",
                self.limit
            )));
        }
        self.size = size;
        Ok(())
    }

    /// Adds `value` at `path`; returns the value it replaced (an object member), if any.
    fn add(&mut self, path: &[String], value: Node, op: usize, name: &str, ptr: &str) -> Result<Option<Node>> {
        let Some((last, parent_path)) = path.split_last() else {
            return Ok(Some(std::mem::replace(&mut self.root, value)));
        };
        let parent = locate(&mut self.root, parent_path).ok_or_else(|| invalid_path(op, name, ptr))?;
        open(parent);
        match parent {
            Node::Object(pairs) => match pairs.get_mut(JKey::new(last.as_bytes())) {
                Some(slot) => Ok(Some(std::mem::replace(slot, value))),
                None => {
                    pairs.insert(Key::Owned(last.clone()), value);
                    Ok(None)
                }
            },
            Node::Array(items) => {
                let i = if last == "-" { items.len() } else { index(last).ok_or_else(|| invalid_path(op, name, ptr))? };
                if i > items.len() {
                    return Err(invalid_path(op, name, ptr));
                }
                items.insert(i, value);
                Ok(None)
            }
            _ => Err(invalid_path(op, name, ptr)),
        }
    }

    fn remove(&mut self, path: &[String], op: usize, name: &str, ptr: &str) -> Result<Node> {
        let Some((last, parent_path)) = path.split_last() else {
            return Ok(std::mem::replace(&mut self.root, Node::New(Value::Null)));
        };
        let parent = locate(&mut self.root, parent_path).ok_or_else(|| invalid_path(op, name, ptr))?;
        open(parent);
        match parent {
            Node::Object(pairs) => pairs.remove(JKey::new(last.as_bytes())).ok_or_else(|| invalid_path(op, name, ptr)),
            Node::Array(items) => index(last)
                .and_then(|i| items.remove(i))
                .ok_or_else(|| invalid_path(op, name, ptr)),
            _ => Err(invalid_path(op, name, ptr)),
        }
    }

    /// Applies operation number `i`. `value` is the operation's value (add, replace, test).
    fn apply_op(&mut self, i: usize, kind: Kind, path: &str, from: &str, value: Option<Node>) -> Result<()> {
        let name = kind.name();
        let value = || value.ok_or_else(|| MemmieError::InvalidParameter("invalid JSON Patch: missing field `value`".into()));
        match kind {
            Kind::Add => {
                let value = value()?;
                let n = size(&value)?;
                self.grow(n, 0, i, name)?;
                if let Some(old) = self.add(&tokens(path, i, name)?, value, i, name, path)? {
                    self.size = self.size.saturating_sub(size(&old)?);
                }
            }
            Kind::Remove => {
                let old = self.remove(&tokens(path, i, name)?, i, name, path)?;
                self.size = self.size.saturating_sub(size(&old)?);
            }
            Kind::Replace => {
                let value = value()?;
                let n = size(&value)?;
                let target = locate(&mut self.root, &tokens(path, i, name)?).ok_or_else(|| invalid_path(i, name, path))?;
                let old = std::mem::replace(target, value);
                let shrink = size(&old)?;
                self.grow(n, shrink, i, name)?;
            }
            Kind::Move => {
                if from == path {
                    return locate(&mut self.root, &tokens(from, i, name)?).map(drop).ok_or_else(|| invalid_path(i, name, from));
                }
                if path.starts_with(from) && path.as_bytes().get(from.len()) == Some(&b'/') {
                    return Err(MemmieError::InvalidParameter(format!(
                        "JSON Patch operation {i} (move) failed: cannot move the value inside itself at path \"{path}\""
                    )));
                }
                let moved = self.remove(&tokens(from, i, name)?, i, name, from)?;
                if let Some(old) = self.add(&tokens(path, i, name)?, moved, i, name, path)? {
                    self.size = self.size.saturating_sub(size(&old)?);
                }
            }
            Kind::Copy => {
                let source = locate(&mut self.root, &tokens(from, i, name)?).ok_or_else(|| invalid_path(i, name, from))?;
                let n = size(source)?;
                // refuse before making the copy
                if self.size.saturating_add(n) > self.limit {
                    return self.grow(n, 0, i, name);
                }
                let copy = duplicate(source)?;
                self.grow(n, 0, i, name)?;
                if let Some(old) = self.add(&tokens(path, i, name)?, copy, i, name, path)? {
                    self.size = self.size.saturating_sub(size(&old)?);
                }
            }
            Kind::Test => {
                let expected = value()?;
                let target = locate(&mut self.root, &tokens(path, i, name)?).ok_or_else(|| invalid_path(i, name, path))?;
                if to_value(target)? != to_value(&expected)? {
                    return Err(MemmieError::PatchTestFailed(format!(
                        "JSON Patch operation {i} (test) failed: value did not match at path \"{path}\""
                    )));
                }
            }
        }
        Ok(())
    }

    /// Applies the operations of `patch` in order (consuming their values).
    pub fn apply(&mut self, patch: Patch) -> Result<()> {
        for (i, op) in patch.0.into_iter().enumerate() {
            check_interrupts();
            self.apply_op(i, op.kind, &op.path, &op.from, op.value.map(Node::New))?;
        }
        Ok(())
    }

    /// Applies the JSON Patch stored in the jsonb `patch` (an array of operations): its values
    /// are used in place, as binary jsonb, so that it replays at any nesting depth PostgreSQL
    /// accepted when it was stored.
    pub fn apply_jsonb(&mut self, patch: *mut pg_sys::JsonbContainer) -> Result<()> {
        let mut top = expand(patch);
        let ops = match &mut top {
            Node::Array(ops) => std::mem::take(ops),
            other => {
                return Err(MemmieError::InvalidParameter(format!(
                    "invalid JSON Patch: expected an array of operations, got {}",
                    node_type(&other)
                )))
            }
        };
        for (i, mut op) in ops.into_iter().enumerate() {
            check_interrupts();
            open(&mut op);
            let Node::Object(fields) = &mut op else {
                return Err(MemmieError::InvalidParameter(format!("invalid JSON Patch: operation {i} is not an object")));
            };
            let mut text = |k: &str| -> Result<Option<String>> {
                match fields.remove(JKey::new(k.as_bytes())) {
                    None => Ok(None),
                    Some(Node::Scalar(v)) if v.type_ == jbvType::jbvString => match unsafe { jsonb::scalar(&v, "JSON Patch")? } {
                        Value::String(s) => Ok(Some(s)),
                        _ => Ok(None),
                    },
                    Some(_) => Err(MemmieError::InvalidParameter(format!("invalid JSON Patch: \"{k}\" must be a string"))),
                }
            };
            let op_name = text("op")?.ok_or_else(|| MemmieError::InvalidParameter("invalid JSON Patch: missing field `op`".into()))?;
            let kind = Kind::from_name(&op_name).ok_or_else(|| crate::patch::unknown_op(&op_name))?;
            let path = text("path")?.ok_or_else(|| MemmieError::InvalidParameter("invalid JSON Patch: missing field `path`".into()))?;
            crate::patch::check_pointer(&path)?;
            let from = match kind {
                Kind::Move | Kind::Copy => {
                    let f = text("from")?.ok_or_else(|| MemmieError::InvalidParameter("invalid JSON Patch: missing field `from`".into()))?;
                    crate::patch::check_pointer(&f)?;
                    f
                }
                _ => String::new(),
            };
            let value = match kind {
                Kind::Add | Kind::Replace | Kind::Test => Some(
                    fields
                        .remove(JKey::new(b"value"))
                        .ok_or_else(|| MemmieError::InvalidParameter("invalid JSON Patch: missing field `value`".into()))?,
                ),
                _ => None,
            };
            self.apply_op(i, kind, &path, &from, value)?;
        }
        Ok(())
    }

    /// The document as jsonb.
    pub fn build(&self) -> Result<JsonbOut> {
        build(&self.root)
    }
}

fn node_type(n: &Node) -> &'static str {
    match n {
        Node::Array(_) => "array",
        Node::Object(_) => "object",
        Node::New(v) => crate::patch::type_name(v),
        Node::Scalar(v) => match v.type_ {
            jbvType::jbvString => "string",
            jbvType::jbvNumeric => "number",
            jbvType::jbvBool => "boolean",
            _ => "null",
        },
        Node::Binary(..) => "container",
    }
}

unsafe fn push_node(state: &mut *mut pg_sys::JsonbParseState, tok: Tok::Type, node: &Node) -> Result<*mut pg_sys::JsonbValue> {
    check_stack()?;
    unsafe {
        Ok(match node {
            Node::Scalar(v) => {
                let mut v = *v;
                pg_sys::pushJsonbValue(state, tok, &mut v)
            }
            Node::Binary(c, n) => {
                let mut v = pg_sys::JsonbValue { type_: jbvType::jbvBinary, val: std::mem::zeroed() };
                v.val.binary.data = *c;
                v.val.binary.len = *n as i32;
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
        Node::Binary(c, _) => build(&expand(*c)),
        Node::Array(_) | Node::Object(_) => unsafe {
            let mut state: *mut pg_sys::JsonbParseState = std::ptr::null_mut();
            let res = push_node(&mut state, Tok::WJB_DONE, root)?;
            Ok(JsonbOut(pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(res))))
        },
        scalar => jsonb::build(&to_value(scalar)?),
    }
}

/// The largest document `jsonb_patch` builds: jsonb's own limit on a container's size
/// (`JENTRY_OFFLENMASK`, 268435455 bytes); a constant so that the function stays immutable.
pub const JSONB_PATCH_MAX_SIZE: u64 = 0x0FFF_FFFF;

/// Applies `patch` to `doc`.
pub fn apply(doc: &JsonbArg, patch: Patch) -> Result<JsonbOut> {
    if patch.0.is_empty() {
        return Ok(doc.unchanged());
    }
    let (original, size) = doc.root_and_size();
    let mut d = Doc::from_jsonb(original, size, JSONB_PATCH_MAX_SIZE);
    d.apply(patch)?;
    if d.is_binary(original) {
        // only tests (or nothing that changed the document)
        return Ok(doc.unchanged());
    }
    d.build()
}

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
        Node::Object(pairs) => Node::Object(
            pairs
                .iter()
                .map(|(k, v)| Ok((k.clone(), duplicate(v)?)))
                .collect::<Result<_>>()?,
        ),
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
        let mut v = pg_sys::JsonbValue {
            type_: jbvType::jbvNull,
            val: std::mem::zeroed(),
        };
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
        Node::New(Value::Array(items)) => {
            *node = Node::Array(std::mem::take(items).into_iter().map(Node::New).collect())
        }
        Node::New(Value::Object(map)) => {
            *node = Node::Object(
                std::mem::take(map)
                    .into_iter()
                    .map(|(k, v)| (Key::Owned(k), Node::New(v)))
                    .collect(),
            )
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
        Node::Array(items) => Value::Array(
            std::mem::take(items)
                .into_iter()
                .map(|n| into_value(n, depth + 1))
                .collect::<Result<_>>()?,
        ),
        Node::Object(pairs) => Value::Object(
            std::mem::take(pairs)
                .into_iter()
                .map(|(k, v)| {
                    Ok((
                        String::from_utf8_lossy(k.bytes()).into_owned(),
                        into_value(v, depth + 1)?,
                    ))
                })
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
    MemmieError::InvalidParameter(format!(
        "JSON Patch operation {op} ({name}) failed: path is invalid at path \"{path}\""
    ))
}

/// The member a remove, replace, move or test names is not in its object.
fn missing_member(op: usize, name: &str, member: &str, path: &str) -> MemmieError {
    MemmieError::InvalidParameter(format!(
        "JSON Patch operation {op} ({name}) failed: member \"{member}\" does not exist at path \"{path}\""
    ))
}

/// The array index a path names is past the array's end.
fn out_of_range(op: usize, name: &str, index: &str, len: usize, path: &str) -> MemmieError {
    MemmieError::InvalidParameter(format!(
        "JSON Patch operation {op} ({name}) failed: index {index} is out of range (array length {len}) \
         at path \"{path}\""
    ))
}

/// Why `toks` names nothing in `root`: the member or the index that is missing when its parent
/// exists, the path otherwise.
fn not_found(root: &mut Node, toks: &[String], op: usize, name: &str, ptr: &str) -> MemmieError {
    let Some((last, parent_path)) = toks.split_last() else {
        return invalid_path(op, name, ptr);
    };
    let Some(parent) = locate(root, parent_path) else {
        return invalid_path(op, name, ptr);
    };
    open(parent);
    match parent {
        Node::Object(_) => missing_member(op, name, last, ptr),
        Node::Array(items) if index(last).is_some() => out_of_range(op, name, last, items.len(), ptr),
        _ => invalid_path(op, name, ptr),
    }
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
        Doc {
            root: Node::Binary(root, size),
            size,
            limit,
        }
    }

    pub fn from_value(v: Value, limit: u64) -> Result<Doc> {
        let size = jsonb::text_size(&v)?;
        Ok(Doc {
            root: Node::New(v),
            size,
            limit,
        })
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
                let i = if last == "-" {
                    items.len()
                } else {
                    index(last).ok_or_else(|| invalid_path(op, name, ptr))?
                };
                if i > items.len() {
                    return Err(out_of_range(op, name, last, items.len(), ptr));
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
            Node::Object(pairs) => pairs
                .remove(JKey::new(last.as_bytes()))
                .ok_or_else(|| missing_member(op, name, last, ptr)),
            Node::Array(items) => {
                let len = items.len();
                let i = index(last).ok_or_else(|| invalid_path(op, name, ptr))?;
                items.remove(i).ok_or_else(|| out_of_range(op, name, last, len, ptr))
            }
            _ => Err(invalid_path(op, name, ptr)),
        }
    }

    /// Applies operation number `i`. `value` is the operation's value (add, replace, test).
    fn apply_op(&mut self, i: usize, kind: Kind, path: &str, from: &str, value: Option<Node>) -> Result<()> {
        let name = kind.name();
        let value =
            || value.ok_or_else(|| MemmieError::InvalidParameter("invalid JSON Patch: missing field `value`".into()));
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
                let toks = tokens(path, i, name)?;
                let old = match locate(&mut self.root, &toks) {
                    Some(target) => std::mem::replace(target, value),
                    None => return Err(not_found(&mut self.root, &toks, i, name, path)),
                };
                let shrink = size(&old)?;
                self.grow(n, shrink, i, name)?;
            }
            Kind::Move => {
                if from == path {
                    return locate(&mut self.root, &tokens(from, i, name)?)
                        .map(drop)
                        .ok_or_else(|| invalid_path(i, name, from));
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
                let source =
                    locate(&mut self.root, &tokens(from, i, name)?).ok_or_else(|| invalid_path(i, name, from))?;
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
                let target =
                    locate(&mut self.root, &tokens(path, i, name)?).ok_or_else(|| invalid_path(i, name, path))?;
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
                    node_type(other)
                )))
            }
        };
        for (i, mut op) in ops.into_iter().enumerate() {
            check_interrupts();
            open(&mut op);
            let Node::Object(fields) = &mut op else {
                return Err(MemmieError::InvalidParameter(format!(
                    "invalid JSON Patch: operation {i} is not an object"
                )));
            };
            let mut text = |k: &str| -> Result<Option<String>> {
                match fields.remove(JKey::new(k.as_bytes())) {
                    None => Ok(None),
                    Some(Node::Scalar(v)) if v.type_ == jbvType::jbvString => {
                        match unsafe { jsonb::scalar(&v, "JSON Patch")? } {
                            Value::String(s) => Ok(Some(s)),
                            _ => Ok(None),
                        }
                    }
                    Some(_) => Err(MemmieError::InvalidParameter(format!(
                        "invalid JSON Patch: \"{k}\" must be a string"
                    ))),
                }
            };
            let op_name = text("op")?
                .ok_or_else(|| MemmieError::InvalidParameter("invalid JSON Patch: missing field `op`".into()))?;
            let kind = Kind::from_name(&op_name).ok_or_else(|| crate::patch::unknown_op(&op_name))?;
            let path = text("path")?
                .ok_or_else(|| MemmieError::InvalidParameter("invalid JSON Patch: missing field `path`".into()))?;
            crate::patch::check_pointer(&path)?;
            let from = match kind {
                Kind::Move | Kind::Copy => {
                    let f = text("from")?.ok_or_else(|| {
                        MemmieError::InvalidParameter("invalid JSON Patch: missing field `from`".into())
                    })?;
                    crate::patch::check_pointer(&f)?;
                    f
                }
                _ => String::new(),
            };
            let value = match kind {
                Kind::Add | Kind::Replace | Kind::Test => {
                    Some(fields.remove(JKey::new(b"value")).ok_or_else(|| {
                        MemmieError::InvalidParameter("invalid JSON Patch: missing field `value`".into())
                    })?)
                }
                _ => None,
            };
            self.apply_op(i, kind, &path, &from, value)?;
        }
        Ok(())
    }

    /// The document as jsonb.
    pub fn build(&self) -> Result<JsonbOut> {
        // room for about the document's size up front (it is a lower bound), within reason
        build(&self.root, self.size.min(1 << 24) as usize + 64)
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

// jsonb's binary format (PostgreSQL's jsonb.h).
const JENTRY_OFFLENMASK: u32 = 0x0FFF_FFFF;
const JENTRY_TYPEMASK: u32 = 0x7000_0000;
const JENTRY_HAS_OFF: u32 = 0x8000_0000;
const JENTRY_ISNUMERIC: u32 = 0x1000_0000;
const JENTRY_ISBOOL_FALSE: u32 = 0x2000_0000;
const JENTRY_ISBOOL_TRUE: u32 = 0x3000_0000;
const JENTRY_ISNULL: u32 = 0x4000_0000;
const JENTRY_ISCONTAINER: u32 = 0x5000_0000;
const JB_OFFSET_STRIDE: usize = 32;
const JB_CMASK: u32 = 0x0FFF_FFFF;
const JB_FSCALAR: u32 = 0x1000_0000;
const JB_FOBJECT: u32 = 0x2000_0000;
const JB_FARRAY: u32 = 0x4000_0000;

/// The document written directly in jsonb's binary format, as PostgreSQL's `convertToJsonb`
/// writes it (same bytes), except that the containers the patch did not open are copied as
/// they are (a container's bytes do not depend on where it sits, once aligned on 4 bytes)
/// instead of being unpacked value by value by `pushJsonbValue` and encoded again: a small
/// patch on a large document costs a copy of the document, not its re-encoding.
struct Encoder(Vec<u8>);

fn too_big() -> MemmieError {
    MemmieError::ContentTooLarge(format!(
        "total size of jsonb object elements exceeds the maximum of {JENTRY_OFFLENMASK} bytes"
    ))
}

impl Encoder {
    /// Pads to a 4-byte boundary (relative to the start of the varlena); the padding's length.
    fn pad(&mut self) -> u32 {
        let n = (4 - self.0.len() % 4) % 4;
        self.0.extend_from_slice(&[0u8; 3][..n]);
        n as u32
    }

    fn string(&mut self, b: &[u8]) -> Result<u32> {
        let n = u32::try_from(b.len())
            .ok()
            .filter(|n| *n <= JENTRY_OFFLENMASK)
            .ok_or_else(too_big)?;
        self.0.extend_from_slice(b);
        Ok(n)
    }

    /// A numeric datum (a varlena), aligned.
    unsafe fn numeric(&mut self, num: *const u8) -> Result<u32> {
        let n = unsafe { pgrx::varsize_any(num as *const pg_sys::varlena) };
        let pad = self.pad();
        self.0.extend_from_slice(unsafe { std::slice::from_raw_parts(num, n) });
        Ok(JENTRY_ISNUMERIC | (pad + u32::try_from(n).map_err(|_| too_big())?))
    }

    /// A container of `count` elements (or pairs, `object`): the header, then the JEntries of
    /// its `entries` children (an object's keys, then its values), each written by `child`.
    fn container(
        &mut self,
        object: bool,
        count: usize,
        mut child: impl FnMut(&mut Encoder, usize) -> Result<u32>,
    ) -> Result<u32> {
        check_stack()?;
        check_interrupts();
        let base = self.0.len();
        self.pad();
        let count32 = u32::try_from(count)
            .ok()
            .filter(|n| *n <= JB_CMASK)
            .ok_or_else(too_big)?;
        let entries = if object { count * 2 } else { count };
        self.0
            .extend_from_slice(&(count32 | if object { JB_FOBJECT } else { JB_FARRAY }).to_ne_bytes());
        let at = self.0.len();
        self.0.resize(at + 4 * entries, 0);
        let mut total: u32 = 0;
        for i in 0..entries {
            let mut meta = child(self, i)?;
            total = total
                .checked_add(meta & JENTRY_OFFLENMASK)
                .filter(|n| *n <= JENTRY_OFFLENMASK)
                .ok_or_else(too_big)?;
            if i % JB_OFFSET_STRIDE == 0 {
                meta = (meta & JENTRY_TYPEMASK) | total | JENTRY_HAS_OFF;
            }
            self.0[at + 4 * i..at + 4 * i + 4].copy_from_slice(&meta.to_ne_bytes());
        }
        let len = u32::try_from(self.0.len() - base)
            .ok()
            .filter(|n| *n <= JENTRY_OFFLENMASK)
            .ok_or_else(too_big)?;
        Ok(JENTRY_ISCONTAINER | len)
    }

    unsafe fn scalar(&mut self, v: &pg_sys::JsonbValue) -> Result<u32> {
        unsafe {
            match v.type_ {
                jbvType::jbvNull => Ok(JENTRY_ISNULL),
                jbvType::jbvBool => Ok(if v.val.boolean {
                    JENTRY_ISBOOL_TRUE
                } else {
                    JENTRY_ISBOOL_FALSE
                }),
                jbvType::jbvString => self.string(std::slice::from_raw_parts(
                    v.val.string.val as *const u8,
                    v.val.string.len.max(0) as usize,
                )),
                jbvType::jbvNumeric => self.numeric(v.val.numeric as *const u8),
                _ => Err(MemmieError::InvalidParameter(
                    "invalid JSON document: unexpected jsonb value".into(),
                )),
            }
        }
    }

    /// A container of the document (or of a stored patch), copied as it is.
    unsafe fn binary(&mut self, c: *mut pg_sys::JsonbContainer) -> Result<u32> {
        if unsafe { (*c).header } & JB_FSCALAR != 0 {
            // a whole scalar document moved or copied inside another: its scalar
            return self.node(&expand(c));
        }
        let bytes = unsafe { container_bytes(c) };
        let pad = self.pad();
        self.0.extend_from_slice(bytes);
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|n| pad + *n <= JENTRY_OFFLENMASK)
            .ok_or_else(too_big)?;
        Ok(JENTRY_ISCONTAINER | (pad + len))
    }

    fn node(&mut self, node: &Node) -> Result<u32> {
        match node {
            Node::Scalar(v) => unsafe { self.scalar(v) },
            Node::Binary(c, _) => unsafe { self.binary(*c) },
            Node::Array(items) => self.container(false, items.len(), |e, i| e.node(&items[i])),
            Node::Object(pairs) => {
                // keys, then values, in the map's (jsonb's) order
                let mut keys = pairs.keys();
                let mut values = pairs.values();
                let n = pairs.len();
                self.container(true, n, |e, i| {
                    if i < n {
                        e.string(keys.next().map(Key::bytes).unwrap_or_default())
                    } else {
                        values.next().map_or(Ok(JENTRY_ISNULL), |v| e.node(v))
                    }
                })
            }
            Node::New(v) => self.value(v),
        }
    }

    fn value(&mut self, v: &Value) -> Result<u32> {
        match v {
            Value::Null => Ok(JENTRY_ISNULL),
            Value::Bool(b) => Ok(if *b { JENTRY_ISBOOL_TRUE } else { JENTRY_ISBOOL_FALSE }),
            Value::String(s) => self.string(s.as_bytes()),
            Value::Number(_) => unsafe {
                let jv = jsonb::to_jbv(v)?;
                let r = self.numeric(jv.val.numeric as *const u8);
                pg_sys::pfree(jv.val.numeric.cast());
                r
            },
            Value::Array(items) => self.container(false, items.len(), |e, i| e.value(&items[i])),
            Value::Object(map) => {
                let mut pairs: Vec<(&String, &Value)> = map.iter().collect();
                pairs.sort_unstable_by(|a, b| JKey::new(a.0.as_bytes()).cmp(JKey::new(b.0.as_bytes())));
                let n = pairs.len();
                self.container(true, n, |e, i| {
                    if i < n {
                        e.string(pairs[i].0.as_bytes())
                    } else {
                        e.value(pairs[i - n].1)
                    }
                })
            }
        }
    }

    /// The varlena: header, then the root container written after it.
    fn finish(self) -> Result<JsonbOut> {
        let len = i32::try_from(self.0.len()).map_err(|_| too_big())?;
        unsafe {
            let p = pg_sys::palloc(self.0.len()) as *mut u8;
            std::ptr::copy_nonoverlapping(self.0.as_ptr(), p, self.0.len());
            pgrx::set_varsize_4b(p as *mut pg_sys::varlena, len);
            Ok(JsonbOut(pg_sys::Datum::from(p)))
        }
    }
}

/// The bytes of the (non-scalar-root) container `c`: its header, JEntries and data, up to the
/// end of its last child.
unsafe fn container_bytes<'a>(c: *mut pg_sys::JsonbContainer) -> &'a [u8] {
    unsafe {
        let header = (*c).header;
        let count = (header & JB_CMASK) as usize;
        let entries = if header & JB_FOBJECT != 0 { count * 2 } else { count };
        let children = (c as *const u32).add(1);
        // the end of the last child: lengths back to the nearest stored offset
        let mut end = 0usize;
        for i in (0..entries).rev() {
            let e = *children.add(i);
            end += (e & JENTRY_OFFLENMASK) as usize;
            if e & JENTRY_HAS_OFF != 0 {
                break;
            }
        }
        std::slice::from_raw_parts(c as *const u8, 4 + 4 * entries + end)
    }
}

fn build(root: &Node, capacity: usize) -> Result<JsonbOut> {
    match root {
        Node::New(v) => jsonb::build(v),
        // the document, or a nested container moved or copied to the root: its bytes
        Node::Binary(c, _) => unsafe {
            let mut e = Encoder(Vec::new());
            e.0.extend_from_slice(&[0u8; 4]);
            if (**c).header & JB_FSCALAR != 0 {
                let bytes = container_bytes(*c);
                e.0.extend_from_slice(bytes);
            } else {
                e.binary(*c)?;
            }
            e.finish()
        },
        Node::Array(_) | Node::Object(_) => {
            let mut e = Encoder(Vec::with_capacity(capacity));
            e.0.extend_from_slice(&[0u8; 4]);
            e.node(root)?;
            e.finish()
        }
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

#[cfg(any(test, feature = "pg_test"))]
#[pgrx::pg_schema]
mod tests {
    use super::*;
    use pgrx::prelude::*;
    use serde_json::json;

    fn jb(text: &str) -> pg_sys::Datum {
        let c = std::ffi::CString::new(text).unwrap();
        unsafe {
            pgrx::direct_function_call_as_datum(pg_sys::jsonb_in, &[Some(pg_sys::Datum::from(c.as_ptr()))]).unwrap()
        }
    }

    fn bytes(d: pg_sys::Datum) -> Vec<u8> {
        unsafe {
            let p = d.cast_mut_ptr::<u8>();
            std::slice::from_raw_parts(p, pgrx::varsize_any(p as *const pg_sys::varlena)).to_vec()
        }
    }

    /// The bytes jsonb_patch writes, and those PostgreSQL writes for the same text.
    fn both(doc: &str, patch: Value) -> (Vec<u8>, Vec<u8>) {
        let out = apply(&JsonbArg::from_raw(jb(doc)), crate::patch::parse_patch(patch).unwrap()).unwrap();
        let text = jsonb::out_text(&out);
        (bytes(out.0), bytes(jb(&text)))
    }

    #[pg_test]
    fn encoder_writes_the_bytes_postgres_writes() {
        let mut doc = serde_json::Map::new();
        for i in 0..70 {
            doc.insert(
                format!("{}{i}", "k".repeat(1 + i % 7)),
                json!({"a": i, "b": format!("v{i}"), "c": [i, 1.5, -12345678901234567890.125, true, false, null, {}, []],
                       "d": (0..i).collect::<Vec<_>>()}),
            );
        }
        let doc = Value::Object(doc).to_string();
        let big: Vec<Value> = (0..100)
            .map(|i| json!({"n": i, "s": "x".repeat(i), "f": i as f64 / 3.0}))
            .collect();
        let patches = [
            json!([{"op": "replace", "path": "/k0/a", "value": 0}]),
            json!([{"op": "add", "path": "/kk1/c/-", "value": 7}, {"op": "add", "path": "/new", "value": big}]),
            json!([{"op": "add", "path": "/x", "value": {"zz": 1, "a": [1e100, 0.000001, -0, "é", {"": null}], "bb": {}}}]),
            json!([{"op": "remove", "path": "/k0"}, {"op": "remove", "path": "/kk1/d/0"}]),
            json!([{"op": "move", "from": "/kk1", "path": "/m"}, {"op": "copy", "from": "/kkk2/c", "path": "/kkk2/d/0"}]),
            json!([{"op": "copy", "from": "", "path": "/self"}]),
            json!([{"op": "move", "from": "/kk1/c", "path": ""}]),
            json!([{"op": "move", "from": "/kk1", "path": ""}]),
            json!([{"op": "replace", "path": "/kk1/c/1", "value": "s"}, {"op": "test", "path": "/k0/a", "value": 0}]),
        ];
        for p in patches {
            let (ours, theirs) = both(&doc, p.clone());
            assert!(ours == theirs, "{p}");
        }
        for (d, p) in [
            (
                "[1, \"a\", [2, 3]]",
                json!([{"op": "add", "path": "/1", "value": 1.25}]),
            ),
            ("[1, [\"a\"]]", json!([{"op": "move", "from": "/1", "path": ""}])),
            ("{\"a\": 1}", json!([{"op": "replace", "path": "", "value": 3}])),
            ("{\"a\": 1}", json!([{"op": "move", "from": "/a", "path": ""}])),
            ("{\"a\": \"s\"}", json!([{"op": "remove", "path": "/a"}])),
            ("{}", json!([{"op": "add", "path": "/a", "value": []}])),
        ] {
            let (ours, theirs) = both(d, p.clone());
            assert!(ours == theirs, "{d} {p}");
        }
    }
}

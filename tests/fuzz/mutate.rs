//! Fuzz inputs for the `fuzz` tests, shared by every crate that has some (each includes this file
//! with `#[path]`): arbitrary bytes, and the seed corpus of a target (`tests/fuzz-corpus/<target>/`)
//! mutated byte by byte and, where a seed is JSON (a whole body, or the `data:` lines of an SSE
//! transcript) or another tree format, value by value.
//!
//! Proptest draws the mutations, so a failure shrinks toward the seed with the fewest changes and
//! is saved in the test's `.proptest-regressions` file. `PROPTEST_CASES` sets the number of cases
//! (256 by default; `scripts/fuzz.sh` sets it high).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // reason: test support

use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value};

/// The seed files of `target`, sorted by name. Panics when there are none.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = corpus_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no seed files", dir.display());
    files.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// `tests/fuzz-corpus` of the workspace: the nearest ancestor of the crate that has one.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("tests/fuzz-corpus"))
        .find(|p| p.is_dir())
        .expect("tests/fuzz-corpus in an ancestor of the crate")
}

/// A tree form of a seed, for value-level mutations: `decode` returns `None` for input it cannot
/// read, `encode` returns `None` for a value it cannot write (both are then skipped).
#[derive(Clone, Copy)]
pub struct Codec {
    /// Bytes to a tree.
    pub decode: fn(&[u8]) -> Option<Value>,
    /// A tree back to bytes.
    pub encode: fn(&Value) -> Option<Vec<u8>>,
}

/// JSON, written compactly.
pub const JSON: Codec = Codec {
    decode: |b| serde_json::from_slice(b).ok(),
    encode: |v| serde_json::to_vec(v).ok(),
};

/// How the seeds of a target are structured.
#[derive(Clone, Copy)]
pub enum Structure {
    /// Bytes only.
    Bytes,
    /// Each seed is a whole document in this codec.
    Whole(Codec),
    /// Each seed is an SSE transcript; the JSON of its `data:` lines is mutated one line at a time.
    SseJson,
}

/// A fuzz input: bytes, shown in failures as an escaped byte string.
#[derive(Clone, PartialEq, Eq)]
pub struct Input(pub Vec<u8>);

impl std::fmt::Debug for Input {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "b\"{}\"", self.0.escape_ascii())
    }
}

impl std::ops::Deref for Input {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

/// Inputs for a target: arbitrary bytes, seeds as they are, and seeds mutated. `dict` holds tokens
/// of the format (field names, enum values, delimiters) that mutations insert or put in place of
/// strings and keys.
pub fn inputs(seeds: Vec<Vec<u8>>, dict: &[&str], structure: Structure) -> BoxedStrategy<Input> {
    assert!(!seeds.is_empty());
    let seeds = Arc::new(seeds);
    let dict: Arc<Vec<String>> = Arc::new(dict.iter().map(|s| (*s).to_owned()).collect());
    let (s1, d1) = (Arc::clone(&seeds), Arc::clone(&dict));
    let (s2, d2) = (Arc::clone(&seeds), Arc::clone(&dict));
    let s0 = Arc::clone(&seeds);
    let bytes_then_tree = matches!(structure, Structure::Bytes);
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..512),
        1 => any::<Index>().prop_map(move |i| s0[i.index(s0.len())].clone()),
        4 => (any::<Index>(), prop::collection::vec(byte_op(), 1..8)).prop_map(move |(i, ops)| {
            let mut b = s1[i.index(s1.len())].clone();
            for op in &ops {
                apply_byte_op(&mut b, op, &s1, &d1);
            }
            b
        }),
        4 => (any::<Index>(), prop::collection::vec(tree_op(), 1..6), prop::collection::vec(byte_op(), 0..2))
            .prop_map(move |(i, ops, after)| {
                let mut b = s2[i.index(s2.len())].clone();
                if !bytes_then_tree {
                    b = mutate_tree(&b, &ops, &d2, structure);
                }
                for op in &after {
                    apply_byte_op(&mut b, op, &s2, &d2);
                }
                b
            }),
    ]
    .prop_map(Input)
    .boxed()
}

/// One byte-level mutation; positions are fractions of the input's length.
#[derive(Clone, Debug)]
pub enum ByteOp {
    /// Flip one bit.
    Flip(Index, u8),
    /// Overwrite one byte.
    Set(Index, u8),
    /// Insert a dictionary token.
    Token(Index, Index),
    /// Insert bytes.
    Insert(Index, Vec<u8>),
    /// Remove up to this many bytes.
    Delete(Index, usize),
    /// Copy a range to another place (repeated keys, repeated events).
    Duplicate(Index, usize, Index),
    /// Cut the input short.
    Truncate(Index),
    /// Insert a piece of another seed.
    Splice(Index, Index, usize, Index),
    /// Replace the n-th number with a boundary value.
    Number(Index, Index),
}

fn byte_op() -> impl Strategy<Value = ByteOp> {
    let i = any::<Index>;
    prop_oneof![
        (i(), 0u8..8).prop_map(|(a, b)| ByteOp::Flip(a, b)),
        (i(), any::<u8>()).prop_map(|(a, b)| ByteOp::Set(a, b)),
        (i(), i()).prop_map(|(a, b)| ByteOp::Token(a, b)),
        (i(), prop::collection::vec(any::<u8>(), 1..16)).prop_map(|(a, b)| ByteOp::Insert(a, b)),
        (i(), 1usize..64).prop_map(|(a, n)| ByteOp::Delete(a, n)),
        (i(), 1usize..128, i()).prop_map(|(a, n, b)| ByteOp::Duplicate(a, n, b)),
        i().prop_map(ByteOp::Truncate),
        (i(), i(), 1usize..256, i()).prop_map(|(s, a, n, b)| ByteOp::Splice(s, a, n, b)),
        (i(), i()).prop_map(|(a, b)| ByteOp::Number(a, b)),
    ]
}

/// Numbers at the edges of the integer and float types the parsers read.
pub const NUMBERS: &[&str] = &[
    "0",
    "-0",
    "-1",
    "1",
    "255",
    "65535",
    "65536",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "-1e308",
    "1e309",
    "1e-320",
    "0.5",
    "-0.5",
    "1.0",
    "NaN",
    "inf",
    "1_000",
    "0x10",
];

fn apply_byte_op(b: &mut Vec<u8>, op: &ByteOp, seeds: &[Vec<u8>], dict: &[String]) {
    let at = |i: &Index, len: usize| i.index(len + 1);
    match op {
        ByteOp::Flip(i, bit) => {
            if !b.is_empty() {
                let k = i.index(b.len());
                b[k] ^= 1 << bit;
            }
        }
        ByteOp::Set(i, v) => {
            if !b.is_empty() {
                let k = i.index(b.len());
                b[k] = *v;
            }
        }
        ByteOp::Token(i, t) => {
            if !dict.is_empty() {
                let k = at(i, b.len());
                let tok = dict[t.index(dict.len())].as_bytes();
                b.splice(k..k, tok.iter().copied());
            }
        }
        ByteOp::Insert(i, bytes) => {
            let k = at(i, b.len());
            b.splice(k..k, bytes.iter().copied());
        }
        ByteOp::Delete(i, n) => {
            let k = at(i, b.len());
            let end = (k + n).min(b.len());
            b.drain(k..end);
        }
        ByteOp::Duplicate(i, n, to) => {
            let k = at(i, b.len());
            let end = (k + n).min(b.len());
            let piece = b[k..end].to_vec();
            let dest = at(to, b.len());
            b.splice(dest..dest, piece);
        }
        ByteOp::Truncate(i) => {
            let k = at(i, b.len());
            b.truncate(k);
        }
        ByteOp::Splice(s, from, n, to) => {
            let other = &seeds[s.index(seeds.len())];
            let k = at(from, other.len());
            let end = (k + n).min(other.len());
            let dest = at(to, b.len());
            b.splice(dest..dest, other[k..end].iter().copied());
        }
        ByteOp::Number(which, value) => {
            let runs: Vec<(usize, usize)> = digit_runs(b);
            if !runs.is_empty() {
                let (start, end) = runs[which.index(runs.len())];
                let v = NUMBERS[value.index(NUMBERS.len())].as_bytes();
                b.splice(start..end, v.iter().copied());
            }
        }
    }
}

fn digit_runs(b: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (k, c) in b.iter().enumerate() {
        match (c.is_ascii_digit(), start) {
            (true, None) => start = Some(k),
            (false, Some(s)) => {
                runs.push((s, k));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, b.len()));
    }
    runs
}

/// One value-level mutation: walk down `path` (each step picks a member or element), then act.
#[derive(Clone, Debug)]
pub struct TreeOp {
    path: Vec<Index>,
    action: TreeAction,
}

/// What a [`TreeOp`] does where its path ends.
#[derive(Clone, Debug)]
pub enum TreeAction {
    /// Put a boundary value in place (null, a number at a type's edge, empty containers…).
    Replace(Index),
    /// Put a dictionary string in place.
    Token(Index),
    /// Remove the member or element.
    Remove,
    /// Rename the member to a dictionary token.
    Rename(Index),
    /// Add a member named by a dictionary token (a copy of this value), or append a copy.
    Grow(Index),
    /// Wrap the value in an array.
    Wrap,
    /// Replace the value with another part of the document.
    Transplant(Vec<Index>),
    /// Nest the value this many arrays deep.
    Nest(usize),
}

fn tree_op() -> impl Strategy<Value = TreeOp> {
    let i = any::<Index>;
    let action = prop_oneof![
        3 => i().prop_map(TreeAction::Replace),
        3 => i().prop_map(TreeAction::Token),
        2 => Just(TreeAction::Remove),
        2 => i().prop_map(TreeAction::Rename),
        1 => i().prop_map(TreeAction::Grow),
        1 => Just(TreeAction::Wrap),
        1 => prop::collection::vec(i(), 0..6).prop_map(TreeAction::Transplant),
        1 => prop_oneof![1usize..8, Just(200usize)].prop_map(TreeAction::Nest),
    ];
    // A path of one step picks any node of the document with the same chance (a config's header
    // value is as likely as its root); a longer one walks down from the root, one member or
    // element per step, and stops at the first scalar; an empty one is the root.
    let path = prop_oneof![
        1 => Just(Vec::new()),
        4 => i().prop_map(|k| vec![k]),
        2 => prop::collection::vec(i(), 2..12),
    ];
    (path, action).prop_map(|(path, action)| TreeOp { path, action })
}

fn boundary_values() -> Vec<Value> {
    use serde_json::json;
    vec![
        Value::Null,
        json!(true),
        json!(false),
        json!(0),
        json!(-1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(u64::from(u32::MAX) + 1),
        json!(1e308),
        json!(-1e308),
        json!(0.5),
        json!(""),
        json!(" "),
        json!("\u{0}\u{1f}\u{7f}\u{fffd}é😀"),
        json!("x".repeat(5000)),
        json!("\n"),
        json!("\r\n"),
        json!("\t"),
        json!("\u{0}"),
        json!("a\r\nx-injected: 1"),
        json!("%2F..%2F"),
        json!([]),
        json!({}),
        json!([null]),
        json!({"": null}),
    ]
}

fn mutate_tree(b: &[u8], ops: &[TreeOp], dict: &[String], structure: Structure) -> Vec<u8> {
    match structure {
        Structure::Bytes => b.to_vec(),
        Structure::Whole(codec) => {
            let Some(mut v) = (codec.decode)(b) else {
                return b.to_vec();
            };
            for op in ops {
                apply_tree_op(&mut v, op, dict);
            }
            (codec.encode)(&v).unwrap_or_else(|| b.to_vec())
        }
        Structure::SseJson => {
            // Lines with their terminators; JSON after `data:` is mutated, one line per op.
            let mut lines: Vec<Vec<u8>> = b
                .split_inclusive(|&c| c == b'\n')
                .map(<[u8]>::to_vec)
                .collect();
            let json_lines: Vec<usize> = (0..lines.len())
                .filter(|&k| {
                    lines[k].starts_with(b"data:")
                        && serde_json::from_slice::<Value>(&lines[k][5..]).is_ok()
                })
                .collect();
            if json_lines.is_empty() {
                return b.to_vec();
            }
            for op in ops {
                let pick = op.path.first().map_or(0, |i| i.index(json_lines.len()));
                let k = json_lines[pick];
                let line = &lines[k];
                let end = line.len()
                    - line
                        .iter()
                        .rev()
                        .take_while(|c| **c == b'\n' || **c == b'\r')
                        .count();
                let Ok(mut v) = serde_json::from_slice::<Value>(&line[5..end]) else {
                    continue;
                };
                apply_tree_op(&mut v, op, dict);
                let mut out = b"data: ".to_vec();
                out.extend(serde_json::to_vec(&v).unwrap_or_default());
                out.extend_from_slice(&line[end..]);
                lines[k] = out;
            }
            lines.concat()
        }
    }
}

/// Applies `op` to `root`.
pub fn apply_tree_op(root: &mut Value, op: &TreeOp, dict: &[String]) {
    let token = |i: &Index| -> String {
        if dict.is_empty() {
            String::new()
        } else {
            dict[i.index(dict.len())].clone()
        }
    };
    let transplant = match &op.action {
        TreeAction::Transplant(from) => Some(walk(root, from).clone()),
        _ => None,
    };
    // Where the path leads (it stops early at a scalar or an empty container).
    let mut segs: Vec<Seg> = Vec::new();
    let mut v: &Value = root;
    if let [pick] = op.path.as_slice() {
        let mut all = Vec::new();
        every_node(root, &mut Vec::new(), &mut all);
        segs = all.swap_remove(pick.index(all.len()));
    }
    for step in op.path.iter().filter(|_| op.path.len() > 1) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                let (k, next) = m.iter().nth(step.index(m.len())).unwrap();
                segs.push(Seg::Key(k.clone()));
                v = next;
            }
            Value::Array(a) if !a.is_empty() => {
                let k = step.index(a.len());
                segs.push(Seg::Index(k));
                v = &a[k];
            }
            _ => break,
        }
    }
    let Some(last) = segs.pop() else {
        act_on_value(root, &op.action, transplant, &token);
        return;
    };
    let mut parent = root;
    for seg in &segs {
        parent = match seg {
            Seg::Key(k) => parent.get_mut(k.as_str()).unwrap(),
            Seg::Index(k) => parent.get_mut(*k).unwrap(),
        };
    }
    match (parent, last) {
        (Value::Object(map), Seg::Key(k)) => act_in_object(map, &k, &op.action, transplant, &token),
        (Value::Array(items), Seg::Index(k)) => {
            act_in_array(items, k, &op.action, transplant, &token)
        }
        _ => unreachable!("the path was resolved on this tree"),
    }
}

#[derive(Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// The paths of `v` and of every node below it, in document order.
fn every_node(v: &Value, at: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                at.push(Seg::Key(k.clone()));
                every_node(child, at, out);
                at.pop();
            }
        }
        Value::Array(a) => {
            for (k, child) in a.iter().enumerate() {
                at.push(Seg::Index(k));
                every_node(child, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn walk<'v>(mut v: &'v Value, path: &[Index]) -> &'v Value {
    for step in path {
        v = match v {
            Value::Object(m) if !m.is_empty() => m.values().nth(step.index(m.len())).unwrap(),
            Value::Array(a) if !a.is_empty() => &a[step.index(a.len())],
            _ => return v,
        };
    }
    v
}

fn act_on_value(
    v: &mut Value,
    action: &TreeAction,
    transplant: Option<Value>,
    token: &dyn Fn(&Index) -> String,
) {
    match action {
        TreeAction::Replace(i) => {
            let values = boundary_values();
            *v = values[i.index(values.len())].clone();
        }
        TreeAction::Token(i) => *v = Value::String(token(i)),
        TreeAction::Remove => *v = Value::Null,
        TreeAction::Rename(_) => {}
        TreeAction::Grow(i) => match v {
            Value::Object(m) => {
                m.insert(token(i), Value::Null);
            }
            Value::Array(a) => a.push(Value::Null),
            _ => {}
        },
        TreeAction::Wrap => *v = Value::Array(vec![v.take()]),
        TreeAction::Transplant(_) => {
            if let Some(t) = transplant {
                *v = t;
            }
        }
        TreeAction::Nest(depth) => {
            for _ in 0..*depth {
                *v = Value::Array(vec![v.take()]);
            }
        }
    }
}

fn act_in_object(
    map: &mut Map<String, Value>,
    key: &str,
    action: &TreeAction,
    transplant: Option<Value>,
    token: &dyn Fn(&Index) -> String,
) {
    match action {
        TreeAction::Remove => {
            map.remove(key);
        }
        TreeAction::Rename(i) => {
            if let Some(v) = map.remove(key) {
                map.insert(token(i), v);
            }
        }
        TreeAction::Grow(i) => {
            if let Some(v) = map.get(key).cloned() {
                map.insert(token(i), v);
            }
        }
        _ => {
            if let Some(v) = map.get_mut(key) {
                act_on_value(v, action, transplant, token);
            }
        }
    }
}

fn act_in_array(
    items: &mut Vec<Value>,
    k: usize,
    action: &TreeAction,
    transplant: Option<Value>,
    token: &dyn Fn(&Index) -> String,
) {
    match action {
        TreeAction::Remove => {
            items.remove(k);
        }
        TreeAction::Grow(_) => {
            let v = items[k].clone();
            items.insert(k, v);
        }
        _ => act_on_value(&mut items[k], action, transplant, token),
    }
}

/// Tokens of the canonical chat request, for mutations to insert (the request targets of the
/// plugin crate, each plugin and the gateway share it).
pub const REQUEST_DICT: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    "null",
    "true",
    "model",
    "messages",
    "role",
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "content",
    "name",
    "tool_calls",
    "tool_call_id",
    "id",
    "type",
    "function",
    "arguments",
    "text",
    "image_url",
    "url",
    "detail",
    "input_audio",
    "data:image/png;base64,iVBORw0KGgo=",
    "https://example.com/a.png",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "include_usage",
    "tools",
    "tool_choice",
    "auto",
    "required",
    "none",
    "parameters",
    "description",
    "seed",
    "n",
    "user",
    "response_format",
    "json_object",
    "json_schema",
];

//! Conditions as data, not code: a small predicate language in JSON that the host evaluates,
//! for trigger filters and step conditions. No expression is ever executed, so there is no
//! sandbox to escape; what a predicate can cost is bounded when it is saved.
//!
//! ```json
//! {"all": [
//!   {"eq": [{"$from": "/trigger/body/type"}, "invoice.paid"]},
//!   {"gt": [{"$from": "/trigger/body/amount"}, 100]},
//!   {"not": {"matches": [{"$from": "/trigger/body/customer/email"}, "@example\\.com$"]}}
//! ]}
//! ```
//!
//! - `eq`, `ne`: `[a, b]`, JSON equality (numbers by value: `1` equals `1.0`).
//! - `lt`, `le`, `gt`, `ge`: `[a, b]`, two numbers, or two RFC 3339 date-times (compared as
//!   instants, offsets applied); anything else is false.
//! - `in`: `[needle, haystack]`: an element of an array, a substring of a string, a key of
//!   an object.
//! - `exists`: `"<pointer>"`: whether the context has a value there (`null` included).
//! - `matches`: `[value, "<regex>"]`: a string the regular expression (Rust's `regex`
//!   syntax: no backreferences, no look-around, matching in linear time) finds a match in.
//! - `all`, `any`: `[p, ...]` (an empty `all` is true, an empty `any` false); `not`: `p`.
//! - `true`, `false`.
//!
//! An operand is a literal JSON value or a reference into the context, `{"$from":
//! "<pointer>"}` as in step inputs, with an optional `"default": v` used when nothing is
//! there. A missing value (no default) equals nothing: every comparison with it is false,
//! except `ne`, which is true.
//!
//! Bounded: at most [`MAX_NODES`] predicates and operands, nested at most [`MAX_DEPTH`]
//! deep; a pattern of at most [`MAX_PATTERN_BYTES`], compiled once at save within
//! [`REGEX_SIZE_LIMIT`]. Evaluation is one pass over the tree; each node's work is linear
//! in the size of the values it reads.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::workflow::{FROM, resolve_tokens, tokens};

/// Predicates and operands in one predicate, at most.
pub const MAX_NODES: usize = 256;
/// How deep predicates nest, at most.
pub const MAX_DEPTH: usize = 16;
/// The longest pattern of a `matches`.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// The most memory a compiled pattern may take (and its lazy DFA's cache, apiece).
pub const REGEX_SIZE_LIMIT: usize = 64 * 1024;
/// `matches` in one predicate, at most: what a predicate's patterns hold in memory and may
/// scan per evaluation stays a small multiple of its values' size.
pub const MAX_PATTERNS: usize = 8;

const DEFAULT: &str = "default";

/// A checked, compiled predicate. It serializes back to the JSON it was read from.
#[derive(Debug, Clone)]
pub struct Predicate {
    source: Value,
    root: Node,
    patterns: usize,
}

impl PartialEq for Predicate {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// Why a predicate was refused: where in it (a JSON Pointer from its root), and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {reason}", if path.is_empty() { "(root)" } else { path.as_str() })]
pub struct PredicateError {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
enum Node {
    Const(bool),
    Compare(Cmp, Operand, Operand),
    In(Operand, Operand),
    Exists(Pointer),
    Matches(Operand, regex::Regex),
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
enum Operand {
    Literal {
        value: Value,
        /// The value read as an RFC 3339 date-time, once, when it is one.
        instant: Option<(i64, u32)>,
    },
    From {
        pointer: Pointer,
        default: Option<Value>,
    },
}

/// A pointer and its tokens, split once at save.
#[derive(Debug, Clone)]
struct Pointer {
    text: String,
    tokens: Vec<String>,
}

impl Pointer {
    fn get<'a>(&self, context: Context<'a>) -> Option<&'a Value> {
        resolve_tokens(&self.tokens, context)
    }
}

fn literal(value: Value) -> Operand {
    let instant = value.as_str().and_then(instant);
    Operand::Literal { value, instant }
}

/// Where a predicate or an input mapping reads its values: the run's context
/// (`/trigger/...`, `/steps/<id>/...`, and inside a `for_each` body `/item/...`).
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub trigger: &'a Value,
    pub steps: &'a BTreeMap<String, Value>,
    /// The element of a `for_each` iteration; `None` outside one.
    pub item: Option<&'a Value>,
    /// The outputs of the iteration's earlier body steps, read before `steps`.
    pub locals: Option<&'a BTreeMap<String, Value>>,
}

impl<'a> Context<'a> {
    /// The context outside any `for_each` body.
    pub fn new(trigger: &'a Value, steps: &'a BTreeMap<String, Value>) -> Self {
        Context {
            trigger,
            steps,
            item: None,
            locals: None,
        }
    }

    /// The context of a `for_each` iteration: its element and its body's outputs so far.
    pub fn iteration(self, item: &'a Value, locals: &'a BTreeMap<String, Value>) -> Self {
        Context {
            item: Some(item),
            locals: Some(locals),
            ..self
        }
    }

    /// The output of step `id` (a body step's in an iteration, else the run's).
    pub fn step(&self, id: &str) -> Option<&'a Value> {
        self.locals
            .and_then(|locals| locals.get(id))
            .or_else(|| self.steps.get(id))
    }
}

impl Predicate {
    /// Reads and checks `value`: its shape, its size, its patterns and its pointers' syntax
    /// (which step a pointer may name is the workflow's to check: [`Predicate::pointers`]).
    pub fn parse(value: &Value) -> Result<Predicate, PredicateError> {
        let mut parser = Parser {
            nodes: 0,
            patterns: 0,
        };
        let root = parser.node(value, "", 1)?;
        Ok(Predicate {
            source: value.clone(),
            root,
            patterns: parser.patterns,
        })
    }

    /// The JSON it was read from.
    pub fn source(&self) -> &Value {
        &self.source
    }

    /// Its `matches` patterns: each holds up to [`REGEX_SIZE_LIMIT`] twice once compiled.
    pub fn patterns(&self) -> usize {
        self.patterns
    }

    /// Every pointer it reads, with where it is in the predicate.
    pub fn pointers(&self) -> Vec<&str> {
        let mut found = Vec::new();
        self.root.pointers(&mut found);
        found
    }

    pub fn eval(&self, context: Context<'_>) -> bool {
        self.root.eval(context)
    }
}

impl Serialize for Predicate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.source.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Predicate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Predicate::parse(&value).map_err(serde::de::Error::custom)
    }
}

struct Parser {
    nodes: usize,
    patterns: usize,
}

fn refuse(path: &str, reason: impl Into<String>) -> PredicateError {
    PredicateError {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

impl Parser {
    fn count(&mut self, path: &str) -> Result<(), PredicateError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(refuse(
                path,
                format!("a predicate has at most {MAX_NODES} predicates and operands"),
            ));
        }
        Ok(())
    }

    fn node(&mut self, value: &Value, path: &str, depth: usize) -> Result<Node, PredicateError> {
        self.count(path)?;
        if depth > MAX_DEPTH {
            return Err(refuse(
                path,
                format!("predicates nest at most {MAX_DEPTH} deep"),
            ));
        }
        let object = match value {
            Value::Bool(b) => return Ok(Node::Const(*b)),
            Value::Object(object) if object.len() == 1 => object,
            _ => {
                return Err(refuse(
                    path,
                    "a predicate is `true`, `false` or an object of one operator: eq, ne, lt, le, gt, ge, in, exists, matches, all, any, not",
                ));
            }
        };
        let Some((op, arg)) = object.iter().next() else {
            return Err(refuse(path, "an empty object is not a predicate"));
        };
        let at = format!("{path}/{op}");
        let cmp = match op.as_str() {
            "eq" => Some(Cmp::Eq),
            "ne" => Some(Cmp::Ne),
            "lt" => Some(Cmp::Lt),
            "le" => Some(Cmp::Le),
            "gt" => Some(Cmp::Gt),
            "ge" => Some(Cmp::Ge),
            _ => None,
        };
        if let Some(cmp) = cmp {
            let (a, b) = self.pair(arg, &at)?;
            if cmp != Cmp::Eq && cmp != Cmp::Ne {
                for (operand, i) in [(&a, 0), (&b, 1)] {
                    if let Operand::Literal { value: v, instant } = operand
                        && !v.is_number()
                        && instant.is_none()
                    {
                        return Err(refuse(
                            &format!("{at}/{i}"),
                            format!("`{op}` compares numbers or RFC 3339 date-times, not {v}"),
                        ));
                    }
                }
            }
            return Ok(Node::Compare(cmp, a, b));
        }
        match op.as_str() {
            "in" => {
                let (needle, haystack) = self.pair(arg, &at)?;
                if let Operand::Literal { value: v, .. } = &haystack
                    && !(v.is_array() || v.is_string() || v.is_object())
                {
                    return Err(refuse(
                        &format!("{at}/1"),
                        "`in` looks in an array, a string or an object",
                    ));
                }
                Ok(Node::In(needle, haystack))
            }
            "exists" => match arg {
                Value::String(pointer) => Ok(Node::Exists(check_pointer(pointer, &at)?)),
                _ => Err(refuse(&at, "`exists` takes a JSON Pointer string")),
            },
            "matches" => {
                let items = two(arg, &at)?;
                let value = self.operand(&items[0], &format!("{at}/0"))?;
                let Value::String(pattern) = &items[1] else {
                    return Err(refuse(
                        &format!("{at}/1"),
                        "`matches` takes a pattern string, written in the predicate",
                    ));
                };
                self.count(&at)?;
                self.patterns += 1;
                if self.patterns > MAX_PATTERNS {
                    return Err(refuse(
                        &at,
                        format!("a predicate has at most {MAX_PATTERNS} `matches`"),
                    ));
                }
                if pattern.len() > MAX_PATTERN_BYTES {
                    return Err(refuse(
                        &format!("{at}/1"),
                        format!("a pattern has at most {MAX_PATTERN_BYTES} bytes"),
                    ));
                }
                let regex = regex::RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .dfa_size_limit(REGEX_SIZE_LIMIT)
                    .nest_limit(32)
                    .build()
                    .map_err(|e| refuse(&format!("{at}/1"), format!("not a pattern: {e}")))?;
                Ok(Node::Matches(value, regex))
            }
            "all" | "any" => {
                let Value::Array(items) = arg else {
                    return Err(refuse(&at, format!("`{op}` takes an array of predicates")));
                };
                let nodes = items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.node(item, &format!("{at}/{i}"), depth + 1))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if op == "all" {
                    Node::All(nodes)
                } else {
                    Node::Any(nodes)
                })
            }
            "not" => Ok(Node::Not(Box::new(self.node(arg, &at, depth + 1)?))),
            other => Err(refuse(
                path,
                format!(
                    "unknown operator `{other}` (eq, ne, lt, le, gt, ge, in, exists, matches, all, any, not)"
                ),
            )),
        }
    }

    fn pair(&mut self, arg: &Value, at: &str) -> Result<(Operand, Operand), PredicateError> {
        let items = two(arg, at)?;
        Ok((
            self.operand(&items[0], &format!("{at}/0"))?,
            self.operand(&items[1], &format!("{at}/1"))?,
        ))
    }

    fn operand(&mut self, value: &Value, path: &str) -> Result<Operand, PredicateError> {
        self.count(path)?;
        let Value::Object(object) = value else {
            return Ok(literal(value.clone()));
        };
        if !object.contains_key(FROM) {
            if object.keys().any(|k| k.starts_with('$')) {
                return Err(refuse(
                    path,
                    "an operand object with a `$` member must be a reference: {\"$from\": \"<pointer>\"}",
                ));
            }
            return Ok(literal(value.clone()));
        }
        if let Some(other) = object.keys().find(|k| *k != FROM && *k != DEFAULT) {
            return Err(refuse(
                path,
                format!("a reference has `$from` and an optional `default`, not `{other}`"),
            ));
        }
        let Some(Value::String(pointer)) = object.get(FROM) else {
            return Err(refuse(path, "`$from` must be a JSON Pointer string"));
        };
        Ok(Operand::From {
            pointer: check_pointer(pointer, &format!("{path}/$from"))?,
            default: object.get(DEFAULT).cloned(),
        })
    }
}

fn two<'a>(arg: &'a Value, at: &str) -> Result<&'a [Value], PredicateError> {
    match arg {
        Value::Array(items) if items.len() == 2 => Ok(items),
        _ => Err(refuse(at, "takes an array of two operands")),
    }
}

fn check_pointer(pointer: &str, at: &str) -> Result<Pointer, PredicateError> {
    let tokens = tokens(pointer)
        .ok_or_else(|| refuse(at, format!("`{pointer}` is not a JSON Pointer (RFC 6901)")))?;
    match tokens.first().map(String::as_str) {
        // `/item`: a for_each body's element; the workflow checks where it may be read.
        Some("trigger" | "item") => Ok(Pointer {
            text: pointer.to_owned(),
            tokens,
        }),
        Some("steps") if tokens.len() >= 2 => Ok(Pointer {
            text: pointer.to_owned(),
            tokens,
        }),
        _ => Err(refuse(
            at,
            format!("`{pointer}` must start with /trigger, /steps/<step id> or /item"),
        )),
    }
}

impl Node {
    fn pointers<'a>(&'a self, found: &mut Vec<&'a str>) {
        match self {
            Node::Const(_) => {}
            Node::Compare(_, a, b) | Node::In(a, b) => {
                a.pointer(found);
                b.pointer(found);
            }
            Node::Exists(pointer) => found.push(&pointer.text),
            Node::Matches(a, _) => a.pointer(found),
            Node::All(nodes) | Node::Any(nodes) => nodes.iter().for_each(|n| n.pointers(found)),
            Node::Not(node) => node.pointers(found),
        }
    }

    fn eval(&self, context: Context<'_>) -> bool {
        match self {
            Node::Const(b) => *b,
            Node::Compare(cmp, a, b) => {
                let (a, b) = (a.value(context), b.value(context));
                match cmp {
                    Cmp::Eq => matches!((a, b), (Some(a), Some(b)) if same(a.value, b.value)),
                    Cmp::Ne => !matches!((a, b), (Some(a), Some(b)) if same(a.value, b.value)),
                    _ => {
                        let (Some(a), Some(b)) = (a, b) else {
                            return false;
                        };
                        let Some(order) = order(a, b) else {
                            return false;
                        };
                        match cmp {
                            Cmp::Lt => order == Ordering::Less,
                            Cmp::Le => order != Ordering::Greater,
                            Cmp::Gt => order == Ordering::Greater,
                            _ => order != Ordering::Less,
                        }
                    }
                }
            }
            Node::In(needle, haystack) => match (
                needle.value(context).map(|r| r.value),
                haystack.value(context).map(|r| r.value),
            ) {
                (Some(needle), Some(Value::Array(items))) => {
                    items.iter().any(|item| same(needle, item))
                }
                (Some(Value::String(needle)), Some(Value::String(haystack))) => {
                    haystack.contains(needle.as_str())
                }
                (Some(Value::String(key)), Some(Value::Object(object))) => object.contains_key(key),
                _ => false,
            },
            Node::Exists(pointer) => pointer.get(context).is_some(),
            Node::Matches(value, regex) => {
                matches!(value.value(context), Some(Read { value: Value::String(s), .. }) if regex.is_match(s))
            }
            Node::All(nodes) => nodes.iter().all(|n| n.eval(context)),
            Node::Any(nodes) => nodes.iter().any(|n| n.eval(context)),
            Node::Not(node) => !node.eval(context),
        }
    }
}

impl Operand {
    fn pointer<'a>(&'a self, found: &mut Vec<&'a str>) {
        if let Operand::From { pointer, .. } = self {
            found.push(&pointer.text);
        }
    }

    /// The value, and its instant when it is a literal date-time (read once, at save).
    fn value<'a>(&'a self, context: Context<'a>) -> Option<Read<'a>> {
        match self {
            Operand::Literal { value, instant } => Some(Read {
                value,
                instant: *instant,
            }),
            Operand::From { pointer, default } => {
                pointer.get(context).or(default.as_ref()).map(|value| Read {
                    value,
                    instant: None,
                })
            }
        }
    }
}

/// JSON equality, numbers by value.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x == y,
            _ => x.as_f64() == y.as_f64(),
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        (Value::Object(x), Value::Object(y)) => objects_same(x, y),
        _ => a == b,
    }
}

fn objects_same(x: &Map<String, Value>, y: &Map<String, Value>) -> bool {
    x.len() == y.len()
        && x.iter()
            .all(|(k, v)| y.get(k).is_some_and(|other| same(v, other)))
}

/// An operand's value as read from the context.
#[derive(Clone, Copy)]
struct Read<'a> {
    value: &'a Value,
    instant: Option<(i64, u32)>,
}

/// Two numbers, or two RFC 3339 date-times; `None` for anything else.
fn order(a: Read<'_>, b: Read<'_>) -> Option<Ordering> {
    match (a.value, b.value) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
        },
        (Value::String(x), Value::String(y)) => {
            let x = a.instant.or_else(|| instant(x))?;
            let y = b.instant.or_else(|| instant(y))?;
            Some(x.cmp(&y))
        }
        _ => None,
    }
}

/// An RFC 3339 date-time as milliseconds since the epoch (its offset applied).
pub fn instant_ms(text: &str) -> Option<i64> {
    let (seconds, nanos) = instant(text)?;
    seconds
        .checked_mul(1000)?
        .checked_add(i64::from(nanos / 1_000_000))
}

/// An RFC 3339 date-time as (seconds since the epoch, nanoseconds): `2026-12-07T10:00:00Z`,
/// `2026-12-07t10:00:00.5+01:00`.
fn instant(text: &str) -> Option<(i64, u32)> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in(year, month) {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0u32;
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 {
            return None;
        }
        let kept = &fraction[..len.min(9)];
        nanos = kept.parse::<u32>().ok()? * 10u32.pow(9 - u32::try_from(kept.len()).ok()?);
        rest = &fraction[len..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let r = rest.as_bytes();
            if r.len() != 6 || r[3] != b':' {
                return None;
            }
            let hours: i64 = rest.get(1..3)?.parse().ok()?;
            let minutes: i64 = rest.get(4..6)?.parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            sign * (hours * 3600 + minutes * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some((seconds, nanos))
}

fn days_in(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(predicate: Value, trigger: Value) -> bool {
        let steps = BTreeMap::from([("fetch".to_owned(), json!({"items": [1, 2, 3]}))]);
        Predicate::parse(&predicate)
            .unwrap()
            .eval(Context::new(&trigger, &steps))
    }

    #[test]
    fn instants_read_as_milliseconds() {
        assert_eq!(instant_ms("1970-01-01T00:00:01.5Z"), Some(1_500));
        assert_eq!(instant_ms("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(instant_ms("yesterday"), None);
    }

    #[test]
    fn each_operator_decides_as_documented() {
        let t = json!({"type": "invoice.paid", "amount": 120, "ratio": 0.5,
            "at": "2026-12-07T10:00:00Z", "tags": ["vip", "eu"], "email": "a@example.com",
            "nothing": null, "meta": {"k": 1}});
        let from = |p: &str| json!({"$from": p});
        let cases = [
            (json!({"eq": [from("/trigger/type"), "invoice.paid"]}), true),
            (json!({"eq": [from("/trigger/amount"), 120.0]}), true),
            (
                json!({"ne": [from("/trigger/type"), "invoice.created"]}),
                true,
            ),
            (json!({"gt": [from("/trigger/amount"), 100]}), true),
            (json!({"le": [from("/trigger/ratio"), 0.5]}), true),
            (
                json!({"lt": [from("/trigger/amount"), from("/trigger/type")]}),
                false,
            ),
            (
                json!({"gt": [from("/trigger/at"), "2026-12-07T10:59:59+01:00"]}),
                true,
            ),
            (
                json!({"lt": [from("/trigger/at"), "2026-12-07T10:00:00.001Z"]}),
                true,
            ),
            (json!({"in": ["vip", from("/trigger/tags")]}), true),
            (json!({"in": ["paid", from("/trigger/type")]}), true),
            (json!({"in": ["k", from("/trigger/meta")]}), true),
            (json!({"in": ["us", from("/trigger/tags")]}), false),
            (json!({"exists": "/trigger/nothing"}), true),
            (json!({"exists": "/trigger/missing"}), false),
            (json!({"exists": "/steps/fetch/items/2"}), true),
            (
                json!({"matches": [from("/trigger/email"), "@example\\.com$"]}),
                true,
            ),
            (json!({"matches": [from("/trigger/amount"), "1"]}), false),
            (json!({"all": []}), true),
            (json!({"any": []}), false),
            (json!({"not": {"any": [false, {"eq": [1, 2]}]}}), true),
            // A missing value equals nothing; `ne` is its negation.
            (json!({"eq": [from("/trigger/missing"), null]}), false),
            (json!({"ne": [from("/trigger/missing"), "x"]}), true),
            (json!({"gt": [from("/trigger/missing"), 1]}), false),
            (
                json!({"eq": [{"$from": "/trigger/missing", "default": 7}, 7]}),
                true,
            ),
            (json!({"eq": [from("/trigger/meta"), {"k": 1.0}]}), true),
            (json!({"eq": [from("/steps/fetch/items"), [1, 2, 3]]}), true),
        ];
        for (predicate, expected) in cases {
            assert_eq!(eval(predicate.clone(), t.clone()), expected, "{predicate}");
        }
    }

    #[test]
    fn malformed_and_oversized_predicates_are_refused_where_they_are() {
        let refused = |p: Value| Predicate::parse(&p).unwrap_err();
        assert_eq!(refused(json!({"eq": [1]})).path, "/eq");
        assert_eq!(refused(json!({"all": [{"xor": [1, 2]}]})).path, "/all/0");
        assert_eq!(
            refused(json!({"lt": [{"$from": "/trigger/a"}, true]})).path,
            "/lt/1"
        );
        assert_eq!(refused(json!({"in": [1, 2]})).path, "/in/1");
        assert_eq!(refused(json!({"exists": "trigger/a"})).path, "/exists");
        assert_eq!(
            refused(json!({"eq": [{"$from": "/other"}, 1]})).path,
            "/eq/0/$from"
        );
        assert_eq!(
            refused(json!({"eq": [{"$from": "/trigger", "x": 1}, 1]})).path,
            "/eq/0"
        );
        assert_eq!(
            refused(json!({"eq": [{"$form": "/trigger"}, 1]})).path,
            "/eq/0"
        );
        assert_eq!(refused(json!({"matches": ["a", "(a"]})).path, "/matches/1");
        assert_eq!(
            refused(json!({"matches": ["a", "(a)\\1"]})).path,
            "/matches/1"
        );
        assert!(
            refused(json!({"matches": ["a", "a".repeat(2000)]}))
                .reason
                .contains("1024")
        );
        // A pattern whose automaton would be huge is refused, not built.
        assert_eq!(
            refused(json!({"matches": ["a", "\\w{1000}\\w{1000}\\w{1000}"]})).path,
            "/matches/1"
        );
        assert!(refused(json!({"eq": [1, 2], "ne": [1, 2]})).path.is_empty());
        assert!(refused(json!("yes")).path.is_empty());

        let mut deep = json!(true);
        for _ in 0..MAX_DEPTH {
            deep = json!({ "not": deep });
        }
        assert!(refused(deep).reason.contains("nest"));
        let wide = json!({"any": vec![json!({"eq": [1, 1]}); MAX_NODES / 3 + 1]});
        let patterns = json!({"any": vec![json!({"matches": ["a", "a"]}); MAX_PATTERNS + 1]});
        assert!(refused(patterns).reason.contains("at most 8"));
        assert!(refused(wide).reason.contains(&MAX_NODES.to_string()));
    }

    #[test]
    fn a_predicate_reads_back_as_written_and_lists_its_pointers() {
        let source = json!({"all": [{"exists": "/steps/a/x"},
            {"eq": [{"$from": "/trigger/t", "default": 1}, 2]}]});
        let predicate: Predicate = serde_json::from_value(source.clone()).unwrap();
        assert_eq!(serde_json::to_value(&predicate).unwrap(), source);
        assert_eq!(predicate.pointers(), ["/steps/a/x", "/trigger/t"]);
    }

    #[test]
    fn rfc3339_instants() {
        assert_eq!(instant("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(instant("1970-01-01T01:00:00+01:00"), Some((0, 0)));
        assert_eq!(
            instant("2024-02-29T00:00:00.25Z"),
            Some((1_709_164_800, 250_000_000))
        );
        for bad in [
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-07T10:00:00",
            "2026-12-07T10:00:00+1:00",
            "2026-12-07T10:00:00.Z",
            "2026-12-07",
            "",
        ] {
            assert_eq!(instant(bad), None, "{bad}");
        }
    }
}

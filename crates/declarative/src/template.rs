//! URL and header templates: a subset of RFC 6570 with no way for a value to change a URL's
//! scheme, host or path structure.
//!
//! URL templates have literal text and expressions: `{x}` (simple), `{/x}` (a path
//! segment), `{?x,y}` (a query), `{&x}` (more query). A variable may end in `*` (a list
//! exploded: `{/parts*}`, `{?tag*}`). `{+x}` and `{#x}`, whose values keep reserved
//! characters, are refused, as are the level-3 operators `.` and `;` and prefixes (`{x:3}`).
//!
//! Every value is encoded as RFC 6570 encodes unreserved expansions: only `A-Z a-z 0-9 - . _
//! ~` stay, so `/`, `?`, `#`, `%`, `@`, `:` and every control or non-ASCII byte are
//! percent-encoded. A value cannot be `.` or `..` in the path: the WHATWG URL parser treats
//! `%2E%2E` as `..` too, so no encoding keeps such a segment from removing its parent. Values
//! keep their JSON type up to the text (`478` is `478`, `true` is `true`); an object is
//! refused, a list is joined with `,` (or exploded), `null` or absent is undefined.
//!
//! Header templates are literal text and `{name}` only; a value with a control character
//! (CR, LF, NUL, ...) is refused rather than sent.

use std::fmt;

use airlock_contract::connector::is_dns_label;
use serde_json::Value;

/// How long a template may be, and how many expressions it may hold: definitions are
/// uploaded by tenants.
pub const MAX_TEMPLATE_LEN: usize = 2_048;
pub const MAX_EXPRESSIONS: usize = 64;

/// The prefix of a variable read from the connection's config.
pub const CONFIG_PREFIX: &str = "config.";

/// A parsed URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Expr(Expr),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Expr {
    op: Op,
    vars: Vec<VarSpec>,
}

/// An expression's operator, which is also where its variables come from: `{x}` and `{/x}`
/// from the input's `path`, `{?x}` and `{&x}` from its `query` (`config.` names from the
/// connection's config, in any expression).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Simple,
    Segment,
    Query,
    QueryContinue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarSpec {
    pub name: String,
    pub explode: bool,
}

/// A template that does not parse. Definitions are checked when saved, so a runner seeing one
/// of these is looking at a definition that skipped the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

/// A value that cannot be expanded: names the variable and why. Its text never quotes the
/// value (it may be a secret a workflow passed through).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpandError {
    pub variable: String,
    pub reason: &'static str,
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.variable, self.reason)
    }
}

impl std::error::Error for ExpandError {}

/// Where a template's variables come from.
pub trait Vars {
    /// The value of `name` for an expression with operator `op`; `None` when undefined.
    fn get(&self, op: Op, name: &str) -> Option<&Value>;
}

fn bad(reason: impl Into<String>) -> TemplateError {
    TemplateError(reason.into())
}

fn check_varname(name: &str) -> Result<(), TemplateError> {
    let plain = name.strip_prefix(CONFIG_PREFIX).unwrap_or(name);
    let ok = !plain.is_empty()
        && plain.len() <= 128
        && plain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(bad(format!(
            "`{name}` is not a variable name: letters, digits, `_` and `-`, optionally after `config.`"
        )))
    }
}

/// Bytes a URL template's literal text may hold: RFC 3986's unreserved and reserved
/// characters and `%` (of a `%XX` escape).
fn literal_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b)
}

impl UrlTemplate {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.len() > MAX_TEMPLATE_LEN {
            return Err(bad(format!(
                "the template is {} bytes, more than {MAX_TEMPLATE_LEN}",
                text.len()
            )));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        let mut expressions = 0;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(i) if rest.as_bytes()[i] == b'}' => {
                    return Err(bad("a `}` without its `{`"));
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Literal(literal(&rest[..i])?));
                    }
                    let after = &rest[i + 1..];
                    let end = after
                        .find('}')
                        .ok_or_else(|| bad("a `{` without its `}`"))?;
                    expressions += 1;
                    if expressions > MAX_EXPRESSIONS {
                        return Err(bad(format!("more than {MAX_EXPRESSIONS} expressions")));
                    }
                    parts.push(Part::Expr(expression(&after[..end])?));
                    rest = &after[end + 1..];
                }
                None => {
                    parts.push(Part::Literal(literal(rest)?));
                    rest = "";
                }
            }
        }
        let template = UrlTemplate { parts };
        template.check_query_order()?;
        Ok(template)
    }

    /// A `{/x}` or a literal `/` after the query began would put a value's text in the
    /// query where the author meant a path; a literal `#` would cut the URL short.
    fn check_query_order(&self) -> Result<(), TemplateError> {
        let mut in_query = false;
        for part in &self.parts {
            match part {
                Part::Literal(text) => {
                    if text.contains('#') {
                        return Err(bad("a fragment (`#`) has no place in a request URL"));
                    }
                    if text.contains('?') {
                        in_query = true;
                    }
                }
                Part::Expr(expr) => match expr.op {
                    Op::Query | Op::QueryContinue => in_query = true,
                    Op::Segment if in_query => {
                        return Err(bad("a `{/x}` after the query began"));
                    }
                    _ => {}
                },
            }
        }
        Ok(())
    }

    /// Every variable, with the operator of its expression.
    pub fn variables(&self) -> impl Iterator<Item = (Op, &VarSpec)> {
        self.parts.iter().flat_map(|part| {
            match part {
                Part::Literal(_) => [].iter(),
                Part::Expr(expr) => expr.vars.iter(),
            }
            .map(move |var| (op_of(part), var))
        })
    }

    /// Whether the template starts with something that keeps it inside the base URL's path:
    /// nothing, a literal `/` (not `//`, which reads as a host to a reader if not to a URL
    /// parser) or `?`, or a `{/x}` or `{?x}` expression.
    pub fn is_relative_path(&self) -> bool {
        match self.parts.first() {
            None => true,
            Some(Part::Literal(text)) => {
                (text.starts_with('/') && !text.starts_with("//")) || text.starts_with('?')
            }
            Some(Part::Expr(expr)) => matches!(expr.op, Op::Segment | Op::Query),
        }
    }

    /// Whether the literal text or a `{?x}` already opened the query.
    pub fn has_query(&self) -> bool {
        self.parts.iter().any(|part| match part {
            Part::Literal(text) => text.contains('?'),
            Part::Expr(expr) => matches!(expr.op, Op::Query | Op::QueryContinue),
        })
    }

    /// Whether a variable named `name` appears in a query expression.
    pub fn has_query_var(&self, name: &str) -> bool {
        self.variables()
            .any(|(op, var)| matches!(op, Op::Query | Op::QueryContinue) && var.name == name)
    }

    pub fn expand(&self, vars: &dyn Vars) -> Result<String, ExpandError> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Expr(expr) => {
                    // Whether a `?` was written, not whether one was templated: `{?a}` with
                    // `a` undefined writes nothing, and a `{&b}` after it must open the query
                    // itself rather than append `&b=` to the path.
                    let in_query = out.contains('?');
                    let path = !in_query && matches!(expr.op, Op::Simple | Op::Segment);
                    expand_expr(expr, vars, path, in_query, &mut out)?;
                }
            }
        }
        Ok(out)
    }
}

fn op_of(part: &Part) -> Op {
    match part {
        Part::Expr(expr) => expr.op,
        Part::Literal(_) => Op::Simple,
    }
}

fn literal(text: &str) -> Result<String, TemplateError> {
    if let Some(b) = text.bytes().find(|b| !literal_byte_ok(*b)) {
        return Err(bad(format!(
            "the character {:?} must be percent-encoded in a URL template",
            char::from(b)
        )));
    }
    // A `%` must start an escape: a stray one would change what the next bytes mean.
    let bytes = text.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            return Err(bad("a `%` that does not start a `%XX` escape"));
        }
    }
    Ok(text.to_owned())
}

fn expression(body: &str) -> Result<Expr, TemplateError> {
    let (op, list) = match body.as_bytes().first() {
        Some(b'/') => (Op::Segment, &body[1..]),
        Some(b'?') => (Op::Query, &body[1..]),
        Some(b'&') => (Op::QueryContinue, &body[1..]),
        Some(b'+') | Some(b'#') => {
            return Err(bad(format!(
                "`{{{body}}}`: `+` and `#` expansions keep reserved characters, so a value could change the URL's structure; use `{{x}}` or `{{/x}}`"
            )));
        }
        Some(b'.') | Some(b';') | Some(b'=') | Some(b',') | Some(b'!') | Some(b'@')
        | Some(b'|') => {
            return Err(bad(format!(
                "`{{{body}}}`: only `{{x}}`, `{{/x}}`, `{{?x}}` and `{{&x}}` expressions are supported"
            )));
        }
        None => return Err(bad("an empty expression `{}`")),
        Some(_) => (Op::Simple, body),
    };
    let mut vars = Vec::new();
    for spec in list.split(',') {
        if spec.contains(':') {
            return Err(bad(format!(
                "`{spec}`: prefix modifiers (`{{x:3}}`) are not supported"
            )));
        }
        let (name, explode) = match spec.strip_suffix('*') {
            Some(name) => (name, true),
            None => (spec, false),
        };
        check_varname(name)?;
        vars.push(VarSpec {
            name: name.to_owned(),
            explode,
        });
    }
    Ok(Expr { op, vars })
}

/// The text of a scalar; `None` for null (undefined).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// The items of a defined value: one for a scalar, each for a list; `None` when undefined
/// (null, absent or an empty list).
fn items(name: &str, value: Option<&Value>) -> Result<Option<Vec<String>>, ExpandError> {
    let refuse = |reason| ExpandError {
        variable: name.to_owned(),
        reason,
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(_)) => Err(refuse(
            "is an object; a URL can hold text, numbers, booleans and lists of them",
        )),
        Some(Value::Array(list)) => {
            let mut out = Vec::with_capacity(list.len());
            for item in list {
                match item {
                    Value::Array(_) | Value::Object(_) => {
                        return Err(refuse(
                            "holds a list or an object; a URL list holds text, numbers and booleans",
                        ));
                    }
                    other => {
                        if let Some(text) = scalar_text(other) {
                            out.push(text);
                        }
                    }
                }
            }
            Ok(if out.is_empty() { None } else { Some(out) })
        }
        Some(scalar) => Ok(scalar_text(scalar).map(|text| vec![text])),
    }
}

/// RFC 6570's encoding of unreserved expansions: every byte but `A-Z a-z 0-9 - . _ ~`.
pub fn encode(text: &str, out: &mut String) {
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn path_item(name: &str, item: &str, out: &mut String) -> Result<(), ExpandError> {
    if item.is_empty() {
        return Err(ExpandError {
            variable: name.to_owned(),
            reason: "is empty, which would leave an empty path segment (`/contacts/` names another resource than `/contacts/{id}`)",
        });
    }
    if item == "." || item == ".." {
        return Err(ExpandError {
            variable: name.to_owned(),
            reason: "is `.` or `..`, which a URL parser reads as a path step, encoded or not",
        });
    }
    encode(item, out);
    Ok(())
}

fn expand_expr(
    expr: &Expr,
    vars: &dyn Vars,
    in_path: bool,
    mut query_open: bool,
    out: &mut String,
) -> Result<(), ExpandError> {
    let mut first = true;
    for var in &expr.vars {
        let Some(values) = items(&var.name, vars.get(expr.op, &var.name))? else {
            continue;
        };
        let shown_name = var.name.strip_prefix(CONFIG_PREFIX).unwrap_or(&var.name);
        match expr.op {
            Op::Simple | Op::Segment => {
                let (lead, sep) = match expr.op {
                    Op::Segment => ('/', if var.explode { '/' } else { ',' }),
                    _ => (',', ','),
                };
                if expr.op == Op::Segment || !first {
                    out.push(lead);
                }
                for (i, item) in values.iter().enumerate() {
                    if i > 0 {
                        out.push(sep);
                    }
                    if in_path {
                        path_item(&var.name, item, out)?;
                    } else {
                        encode(item, out);
                    }
                }
            }
            Op::Query | Op::QueryContinue => {
                out.push(if query_open { '&' } else { '?' });
                query_open = true;
                if var.explode {
                    for (i, item) in values.iter().enumerate() {
                        if i > 0 {
                            out.push('&');
                        }
                        encode(shown_name, out);
                        out.push('=');
                        encode(item, out);
                    }
                } else {
                    encode(shown_name, out);
                    out.push('=');
                    for (i, item) in values.iter().enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        encode(item, out);
                    }
                }
            }
        }
        first = false;
    }
    Ok(())
}

/// A parsed header value template: literal text and `{name}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTemplate {
    parts: Vec<HeaderPart>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HeaderPart {
    Literal(String),
    Var(String),
}

fn header_text_ok(text: &str) -> bool {
    // Visible ASCII, space and tab (RFC 9110 field-value), and UTF-8 beyond ASCII, which
    // HTTP carries as opaque bytes; no other control character.
    text.chars().all(|c| c == '\t' || !c.is_control())
}

impl HeaderTemplate {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        if text.len() > MAX_TEMPLATE_LEN {
            return Err(bad(format!("more than {MAX_TEMPLATE_LEN} bytes")));
        }
        if !header_text_ok(text) {
            return Err(bad(
                "a control character (CR, LF, NUL, ...) in a header value",
            ));
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(i) if rest.as_bytes()[i] == b'}' => {
                    return Err(bad("a `}` without its `{`"));
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(HeaderPart::Literal(rest[..i].to_owned()));
                    }
                    let after = &rest[i + 1..];
                    let end = after
                        .find('}')
                        .ok_or_else(|| bad("a `{` without its `}`"))?;
                    let name = &after[..end];
                    check_varname(name)
                        .map_err(|e| bad(format!("{e} (header values take `{{name}}` only)")))?;
                    parts.push(HeaderPart::Var(name.to_owned()));
                    rest = &after[end + 1..];
                }
                None => {
                    parts.push(HeaderPart::Literal(rest.to_owned()));
                    rest = "";
                }
            }
        }
        Ok(HeaderTemplate { parts })
    }

    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            HeaderPart::Var(name) => Some(name.as_str()),
            HeaderPart::Literal(_) => None,
        })
    }

    /// The header's value; `None` when every variable it holds is undefined (the header is
    /// then left out rather than sent half-empty).
    pub fn expand(&self, vars: &dyn Vars) -> Result<Option<String>, ExpandError> {
        let mut out = String::new();
        let mut vars_seen = 0;
        let mut vars_defined = 0;
        for part in &self.parts {
            match part {
                HeaderPart::Literal(text) => out.push_str(text),
                HeaderPart::Var(name) => {
                    vars_seen += 1;
                    let Some(values) = items(name, vars.get(Op::Simple, name))? else {
                        continue;
                    };
                    let joined = values.join(",");
                    // An empty value says nothing: sent, it would be a header with no value.
                    if joined.is_empty() {
                        continue;
                    }
                    vars_defined += 1;
                    if !header_text_ok(&joined) {
                        return Err(ExpandError {
                            variable: name.clone(),
                            reason: "holds a control character (CR, LF, NUL, ...), which a header value cannot carry",
                        });
                    }
                    out.push_str(&joined);
                }
            }
        }
        if vars_seen > 0 && vars_defined == 0 {
            return Ok(None);
        }
        Ok(Some(out))
    }
}

/// Expands the base URL's `{config.NAME}` variables: in the host each must be one DNS label
/// (`a-z`, `0-9`, `-`, 1-63 long, no leading or trailing `-`), so a config value can pick a
/// subdomain but never another domain; elsewhere it is encoded like `{x}`.
pub fn expand_base_url(template: &str, config: &Value) -> Result<String, ExpandError> {
    let mut out = String::new();
    let mut rest = template;
    // The authority ends at the first `/` after `://`.
    let authority_end = template
        .find("://")
        .map(|i| {
            template[i + 3..]
                .find('/')
                .map_or(template.len(), |j| i + 3 + j)
        })
        .unwrap_or(0);
    let mut offset = 0;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            return Err(ExpandError {
                variable: after.to_owned(),
                reason: "opens a `{` without its `}`",
            });
        };
        let name = &after[..end];
        let key = name.strip_prefix(CONFIG_PREFIX).unwrap_or(name);
        let value = config.get(key).and_then(scalar_text).ok_or(ExpandError {
            variable: name.to_owned(),
            reason: "is not set in the connection's config",
        })?;
        if offset + start < authority_end {
            if !is_dns_label(&value) {
                return Err(ExpandError {
                    variable: name.to_owned(),
                    reason: "must be one DNS label (a-z, 0-9, `-`) to stand in a host name",
                });
            }
            out.push_str(&value);
        } else {
            path_item(name, &value, &mut out)?;
        }
        let consumed = start + 1 + end + 1;
        offset += consumed;
        rest = &rest[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Input(Value);

    impl Vars for Input {
        fn get(&self, op: Op, name: &str) -> Option<&Value> {
            if let Some(key) = name.strip_prefix(CONFIG_PREFIX) {
                return self.0.get("config")?.get(key);
            }
            let group = match op {
                Op::Simple | Op::Segment => "path",
                Op::Query | Op::QueryContinue => "query",
            };
            self.0.get(group)?.get(name)
        }
    }

    fn expand(template: &str, input: Value) -> Result<String, ExpandError> {
        UrlTemplate::parse(template)
            .expect("parses")
            .expand(&Input(input))
    }

    #[test]
    fn expands_the_supported_operators() {
        let input = json!({
            "path": {"owner": "rust-lang", "repo": "rust", "parts": ["a", "b c"], "n": 478},
            "query": {"state": "open", "per_page": 100, "labels": ["bug", "p-1"], "empty": null, "flag": true},
            "config": {"account": "acme 1"}
        });
        assert_eq!(
            expand(
                "/repos/{owner}/{repo}/issues{?state,per_page}",
                input.clone()
            )
            .expect("ok"),
            "/repos/rust-lang/rust/issues?state=open&per_page=100"
        );
        assert_eq!(
            expand("/x{/parts*}{/n}", input.clone()).expect("ok"),
            "/x/a/b%20c/478"
        );
        assert_eq!(
            expand("/x{/parts}", input.clone()).expect("ok"),
            "/x/a,b%20c"
        );
        assert_eq!(
            expand("/i{?labels*,empty}{&flag}", input.clone()).expect("ok"),
            "/i?labels=bug&labels=p-1&flag=true"
        );
        assert_eq!(
            expand("/i{?labels}", input.clone()).expect("ok"),
            "/i?labels=bug,p-1"
        );
        assert_eq!(
            expand("/a/{config.account}", input.clone()).expect("ok"),
            "/a/acme%201"
        );
        assert_eq!(expand("/i{?missing}", input.clone()).expect("ok"), "/i");
        // A `{&x}` opens the query when nothing before it did, and a `{?x}` after a literal
        // query continues it.
        assert_eq!(
            expand("/i{?missing}{&flag}", input.clone()).expect("ok"),
            "/i?flag=true"
        );
        assert_eq!(
            expand("/i?a=1{?state}", input).expect("ok"),
            "/i?a=1&state=open"
        );
    }

    #[test]
    fn values_cannot_change_the_url_structure() {
        for hostile in [
            "../../admin",
            "a/b",
            "x?admin=1",
            "x#frag",
            "%2F",
            "https://evil.test/",
            "a\r\nHost: evil",
            "@evil.test",
        ] {
            let url = expand("/repos/{owner}", json!({"path": {"owner": hostile}})).expect("ok");
            let tail = &url["/repos/".len()..];
            assert!(
                !tail.contains(['/', '?', '#', ':', '@', '\r', '\n']),
                "{hostile:?} -> {url}"
            );
        }
        for dots in [".", "..", ""] {
            let error = expand("/repos/{owner}", json!({"path": {"owner": dots}}))
                .expect_err("a dot segment");
            assert_eq!(error.variable, "owner");
            assert!(expand("/r{/p}", json!({"path": {"p": dots}})).is_err());
        }
        // In the query a dot is only text.
        assert_eq!(
            expand("/r{?q}", json!({"query": {"q": ".."}})).expect("ok"),
            "/r?q=.."
        );
    }

    #[test]
    fn refuses_objects_and_nested_lists() {
        assert!(expand("/r/{x}", json!({"path": {"x": {"a": 1}}})).is_err());
        assert!(expand("/r{?x}", json!({"query": {"x": [[1]]}})).is_err());
    }

    #[test]
    fn refuses_unsafe_and_unsupported_syntax() {
        for bad in [
            "/a/{+x}",
            "/a/{#x}",
            "/a{.x}",
            "/a{;x}",
            "/a/{x:3}",
            "/a/{}",
            "/a/{x",
            "/a/x}",
            "/a b",
            "/a/%zz",
            "/a#frag",
            "/a?q=1{/x}",
            "/a/{x y}",
            "/a/{con fig.x}",
        ] {
            assert!(UrlTemplate::parse(bad).is_err(), "{bad:?}");
        }
        assert!(UrlTemplate::parse("/a/%20b/{x}").is_ok());
    }

    #[test]
    fn relative_paths_are_told_from_host_changing_templates() {
        for ok in ["", "/x", "?a=1", "{/x}", "{?x}"] {
            assert!(
                UrlTemplate::parse(ok).expect("parses").is_relative_path(),
                "{ok:?}"
            );
        }
        for not in ["{x}", "x/y", "{&x}", ".evil.test", "//evil.test/x"] {
            assert!(
                !UrlTemplate::parse(not).expect("parses").is_relative_path(),
                "{not:?}"
            );
        }
    }

    #[test]
    fn header_templates_refuse_control_characters() {
        assert!(HeaderTemplate::parse("a\r\nb").is_err());
        assert!(HeaderTemplate::parse("{a}{b").is_err());
        assert!(HeaderTemplate::parse("{/a}").is_err());
        let template = HeaderTemplate::parse("Token {token}").expect("parses");
        let vars = Input(json!({"path": {"token": "abc"}}));
        assert_eq!(
            template.expand(&vars).expect("ok").as_deref(),
            Some("Token abc")
        );
        let crlf = Input(json!({"path": {"token": "a\r\nX-Evil: 1"}}));
        assert!(template.expand(&crlf).is_err());
        let nul = Input(json!({"path": {"token": "a\u{0}"}}));
        assert!(template.expand(&nul).is_err());
        assert_eq!(template.expand(&Input(json!({}))).expect("ok"), None);
        let empty = Input(json!({"path": {"token": ""}}));
        assert_eq!(
            template.expand(&empty).expect("ok"),
            None,
            "an empty value is no value"
        );
        let number = Input(json!({"path": {"token": 478}}));
        assert_eq!(
            template.expand(&number).expect("ok").as_deref(),
            Some("Token 478")
        );
    }

    #[test]
    fn base_urls_take_one_dns_label_in_the_host() {
        let config = json!({"subdomain": "acme", "region": "eu west"});
        assert_eq!(
            expand_base_url("https://{config.subdomain}.zendesk.com/api/v2", &config).expect("ok"),
            "https://acme.zendesk.com/api/v2"
        );
        assert_eq!(
            expand_base_url("https://api.test/{config.region}", &config).expect("ok"),
            "https://api.test/eu%20west"
        );
        for hostile in [
            "evil.test#",
            "a.b",
            "evil.test/x",
            "",
            "-a",
            "A",
            "a:80",
            "a@b",
        ] {
            let config = json!({"subdomain": hostile});
            assert!(
                expand_base_url("https://{config.subdomain}.zendesk.com", &config).is_err(),
                "{hostile:?}"
            );
        }
        assert!(expand_base_url("https://{config.subdomain}.zendesk.com", &json!({})).is_err());
    }
}

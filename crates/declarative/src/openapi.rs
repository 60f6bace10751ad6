//! OpenAPI 3 import: a declarative connector from an API description.
//!
//! [`import`] turns an OpenAPI 3.0.x or 3.1.x document (as JSON; Swagger 2.0 is refused) into
//! a [`Definition`] with one action per operation, and says which operations it skipped and
//! why. It never panics and never reaches the network: everything it needs is in the
//! document, and only local references (`#/components/...`, any JSON Pointer into the
//! document) are followed.
//!
//! What it makes of a document:
//!
//! - **Base URL**: [`ImportOptions::base_url`], else `servers[0].url` with its variables
//!   filled in. A variable in the host name becomes `{config.NAME}` with a property of the
//!   definition's `config_schema` (a DNS label, with the variable's `enum` and `default`),
//!   unless its `enum` has a single value or its values are not DNS labels: then its
//!   default. Variables elsewhere take their default (a path variable without one becomes
//!   `{config.NAME}` too). A relative server URL needs `base_url`. The trailing `/` goes.
//! - **Actions**: one per operation, sorted by path then method (OpenAPI's method order).
//!   The name is the `operationId` under the manifest's rule (`a-z`, `0-9`, `_`, starting
//!   with a letter, at most 64: `issues/list-for-repo` is `issues_list_for_repo`,
//!   `listPets` is `list_pets`), `METHOD_path` without one, `_2`, `_3`... when taken. The
//!   description is the summary, else the description cut to [`MAX_DESCRIPTION_CHARS`].
//!   An operation with its own `servers` is imported under the extra path when its server
//!   is the base URL with more path (`https://api.test/v2`), else skipped. `TRACE` is
//!   skipped (the format has no such method).
//! - **Parameters**: the path item's and the operation's (the operation's win by name and
//!   location). Path parameters stay `{name}` in the endpoint; a name that is not a
//!   template variable (`owner.name`) gets a safe one (`owner_name`) used by the input too,
//!   listed in [`Import::renamed`]. Query parameters make one `{?a,b*}` at the end (`*` for
//!   an exploded array, form style's default); a query parameter's name is what the URL
//!   carries, so one that is not a variable name cannot be renamed: dropped when optional,
//!   the operation skipped when required. Objects (`deepObject`, exploded objects), `label`
//!   and `matrix` styles and non-exploded space or pipe delimited arrays likewise. Header
//!   parameters become header templates (`X-Request-Id: {x_request_id}`) except `Accept`,
//!   `Content-Type` and `Authorization` (dropped silently), the auth's own headers and the
//!   transport's (`Cookie`, `Host`, `Content-Length`, ...), dropped with a note. A required
//!   cookie parameter skips the operation; an optional one is dropped.
//! - **Schemas**: `path_schema`, `query_schema` and `headers_schema` are objects of the
//!   parameters' schemas (`required` from `required: true`, path parameters always,
//!   `additionalProperties: false`), absent when the operation has none of that kind.
//!   `body_schema` is the JSON (`application/json`, `*+json`) or form
//!   (`application/x-www-form-urlencoded`, with a form [`BodyDef`]) request body's schema;
//!   another body type skips the operation when the body is required and is left out
//!   otherwise. The format has no field for whether the body is required: an optional body
//!   is only noted. `output_schema` is the first 2xx response with JSON content (`200`, `201`,
//!   ... `2XX`, then `default`), widened to allow `null` when another 2xx answers with no
//!   body; `{}` when no 2xx response has JSON content.
//! - **Schema conversion** to JSON Schema 2020-12: references are inlined (the definition
//!   stands alone); a recursive schema is cut at its recursion point (`{}`, noted); an
//!   action's schemas larger than [`MAX_ACTION_SCHEMA_BYTES`] are cut at the depth that fits
//!   (the deeper parts become `{}`, noted). `nullable` adds `"null"` to `type` (or wraps the
//!   schema in an `anyOf` with `{"type": "null"}`), the boolean `exclusiveMinimum` and
//!   `exclusiveMaximum` take their numeric form, a 3.0 array `items` becomes
//!   `prefixItems`, and only JSON Schema's keywords stay, each with a value of the shape the
//!   2020-12 meta-schema wants (others dropped): no `discriminator`, `xml`,
//!   `externalDocs`, `example`, `x-*`, `$id`, `$schema`.
//! - **Auth**: one for the connector, the scheme the most selected operations accept (ties:
//!   the first met); [`ImportOptions::auth`] overrides it. `apiKey` in a header or the query
//!   is `api_key`; `http` bearer is `api_key` on `Authorization` with `Bearer `; `http`
//!   basic is `basic`; `oauth2` is `oauth2` with the authorization code (else client
//!   credentials, else password) flow's URLs and the union of the scopes the operations
//!   require; a requirement of several `apiKey` headers together is `custom_header`.
//!   `openIdConnect`, `mutualTLS`, cookie keys and other `http` schemes are not mapped
//!   (noted). A description without security schemes (GitHub's) gives `none`: pick the auth
//!   by hand or through `ImportOptions::auth`.
//!
//! The output is deterministic: the same document and options give the same definition,
//! byte for byte.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io;

use serde_json::{Map, Value, json};

use crate::format::{ActionDef, BodyDef, BodyEncoding, Definition, FORMAT, Method};
use crate::template::{HeaderTemplate, UrlTemplate};

/// The most one action's schemas (path, query, headers, body, output) may take as compact
/// JSON; past it the body and output schemas are cut at the depth that fits.
pub const MAX_ACTION_SCHEMA_BYTES: usize = 256 * 1024;

/// How many characters of an operation's description an action keeps.
pub const MAX_DESCRIPTION_CHARS: usize = 300;

/// How many JSON values converting one action's schemas may produce before it starts again
/// with a depth limit: bounds the time and memory a description of nested references
/// (each level repeating the next several times) can cost.
const NODE_BUDGET: usize = 150_000;

/// How deeply schemas may nest (also through references).
const MAX_SCHEMA_DEPTH: usize = 64;

/// The depth limits tried, in order, when an action's schemas overrun [`NODE_BUDGET`].
const DEPTH_RETRIES: [usize; 9] = [16, 10, 7, 5, 4, 3, 2, 1, 0];

/// How many references may be followed to reach a parameter, body, response, path item or
/// security scheme.
const MAX_REF_HOPS: usize = 32;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// What to import, and how.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportOptions {
    /// The connector's name (the manifest's rule); empty: derived from `info.title`.
    pub name: String,
    /// The connector's version (`MAJOR.MINOR.PATCH`); empty: `info.version` when it is one,
    /// else `0.1.0`.
    pub version: String,
    /// Which operations: an `operationId`, `tag:NAME`, or a glob with `*` matched against
    /// the `operationId` and against `METHOD /path` (`GET /repos/*`). Empty: all. A
    /// pattern that matches nothing is an error.
    pub select: Vec<String>,
    /// The base URL, instead of the document's `servers` (it may hold `{config.NAME}`).
    pub base_url: Option<String>,
    /// The manifest's auth spec, instead of the one derived from the security schemes.
    pub auth: Option<Value>,
}

impl ImportOptions {
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        ImportOptions {
            name: name.into(),
            version: version.into(),
            ..ImportOptions::default()
        }
    }
}

/// The result of an import.
#[derive(Debug, Clone, PartialEq)]
pub struct Import {
    pub definition: Definition,
    /// The selected operations that were not imported, in the order of the document.
    pub skipped: Vec<Skipped>,
    /// What the import chose or left out without skipping an operation: the auth, dropped
    /// parameters, cut schemas. Each starts with the operation it concerns, if one.
    pub notes: Vec<String>,
    /// Parameters whose template variable is not their OpenAPI name.
    pub renamed: Vec<Renamed>,
    /// Every operation of the document.
    pub total_operations: usize,
    /// The operations [`ImportOptions::select`] chose (all of them without a selection).
    pub selected_operations: usize,
}

impl Import {
    /// How many operations became actions.
    pub fn converted(&self) -> usize {
        self.definition.actions.len()
    }

    /// The share of the selected operations that became actions.
    pub fn share(&self) -> f64 {
        if self.selected_operations == 0 {
            return 0.0;
        }
        self.converted() as f64 / self.selected_operations as f64
    }
}

/// An operation that was not imported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Its `operationId`, else `METHOD /path`.
    pub operation: String,
    pub reason: String,
}

/// A parameter whose template variable (and input property) is not its OpenAPI name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renamed {
    pub action: String,
    /// Where the parameter is: `path` (a header parameter's variable is in the action's
    /// `headers` beside its name).
    pub location: String,
    /// The OpenAPI name.
    pub parameter: String,
    /// The template variable and the input's property.
    pub variable: String,
}

/// Why nothing could be imported.
#[derive(Debug, Clone, PartialEq)]
pub enum ImportError {
    /// Not an OpenAPI document at all.
    NotOpenApi(String),
    /// A Swagger 2.0 document.
    Swagger2,
    /// An `openapi` version other than 3.x.
    Version(String),
    /// An option is not usable (the name, the version, the auth).
    Options(String),
    /// No base URL: the servers are absent or relative, or the URL is not http(s).
    BaseUrl(String),
    /// A selection pattern that matches no operation.
    Select(String),
    /// No operation could be imported.
    NoActions {
        selected: usize,
        skipped: Vec<Skipped>,
    },
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImportError::NotOpenApi(why) => write!(f, "not an OpenAPI document: {why}"),
            ImportError::Swagger2 => f.write_str(
                "a Swagger 2.0 document: convert it to OpenAPI 3 first (swagger2openapi, or the Swagger Editor)",
            ),
            ImportError::Version(version) => {
                write!(f, "OpenAPI {version} is not supported: 3.0.x and 3.1.x are")
            }
            ImportError::Options(why) => write!(f, "invalid option: {why}"),
            ImportError::BaseUrl(why) => write!(f, "no base URL: {why}"),
            ImportError::Select(pattern) => {
                write!(f, "the selection `{pattern}` matches no operation")
            }
            ImportError::NoActions { selected, skipped } => {
                write!(f, "none of the {selected} selected operations could be imported")?;
                if let Some(first) = skipped.first() {
                    write!(f, " (`{}`: {})", first.operation, first.reason)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ImportError {}

/// Imports `spec` (an OpenAPI 3.0 or 3.1 document as JSON) as a declarative connector.
pub fn import(spec: &Value, options: &ImportOptions) -> Result<Import, ImportError> {
    let root = spec
        .as_object()
        .ok_or_else(|| ImportError::NotOpenApi("the document is not a JSON object".into()))?;
    let v30 = openapi_version(root)?;
    let info = root.get("info").and_then(Value::as_object);
    let name = connector_name(options, info)?;
    let version = connector_version(options, info)?;
    let description = info
        .and_then(|info| info.get("title"))
        .and_then(Value::as_str)
        .map(|title| truncate(title.trim(), MAX_DESCRIPTION_CHARS))
        .unwrap_or_default();

    let mut notes = Vec::new();
    let base = match &options.base_url {
        Some(url) => base_from_option(url)?,
        None => base_from_servers(root.get("servers"), &mut notes).map_err(ImportError::BaseUrl)?,
    };

    let operations = collect_operations(spec);
    let total_operations = operations.len();
    let selected = select(&operations, &options.select)?;
    let selected_operations = selected.len();

    let auth = match &options.auth {
        Some(auth) => {
            if auth.get("type").and_then(Value::as_str).is_none() {
                return Err(ImportError::Options(
                    "`auth` must be a manifest auth spec with a `type`".into(),
                ));
            }
            auth.clone()
        }
        None => choose_auth(spec, &selected, &base.url, &mut notes),
    };
    let reserved = AuthNames::of(&auth);

    let mut converter = Converter::new(spec, v30);
    let mut names = BTreeSet::new();
    let mut actions = Vec::new();
    let mut skipped = Vec::new();
    let mut renamed = Vec::new();
    for operation in &selected {
        match operation.kind {
            OpKind::Broken(reason) => {
                skipped.push(Skipped {
                    operation: operation.label(),
                    reason: reason.to_owned(),
                });
                continue;
            }
            OpKind::Ok { .. } => {}
        }
        let mut cx = OpCx {
            base: &base,
            auth: &reserved,
            notes: Vec::new(),
            renamed: Vec::new(),
        };
        match convert_operation(operation, &mut cx, &mut converter) {
            Ok(mut action) => {
                action.name = unique_name(&action_name(operation), &mut names);
                for mut entry in cx.renamed {
                    entry.action = action.name.clone();
                    renamed.push(entry);
                }
                let label = operation.label();
                notes.extend(
                    cx.notes
                        .into_iter()
                        .map(|note| format!("`{label}`: {note}")),
                );
                actions.push(action);
            }
            Err(reason) => skipped.push(Skipped {
                operation: operation.label(),
                reason,
            }),
        }
    }
    if actions.is_empty() {
        return Err(ImportError::NoActions {
            selected: selected_operations,
            skipped,
        });
    }
    let definition = Definition {
        schema: None,
        format: FORMAT.to_owned(),
        name,
        version,
        description,
        auth,
        base_url: base.url,
        hosts: Vec::new(),
        config_schema: base.config_schema,
        headers: BTreeMap::new(),
        errors: Vec::new(),
        test: None,
        actions,
    };
    Ok(Import {
        definition,
        skipped,
        notes,
        renamed,
        total_operations,
        selected_operations,
    })
}

// ---------------------------------------------------------------------------------------
// The document

/// Whether the document is OpenAPI 3.0 (rather than 3.1 or later 3.x).
fn openapi_version(root: &Map<String, Value>) -> Result<bool, ImportError> {
    if root.contains_key("swagger") {
        return Err(ImportError::Swagger2);
    }
    let version = match root.get("openapi") {
        Some(Value::String(version)) => version.trim(),
        Some(_) => return Err(ImportError::NotOpenApi("`openapi` is not a string".into())),
        None => return Err(ImportError::NotOpenApi("no `openapi` version".into())),
    };
    let mut parts = version.split('.');
    let major = parts.next().unwrap_or_default();
    let minor = parts.next().unwrap_or_default();
    if major != "3" || minor.is_empty() || !minor.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ImportError::Version(truncate(version, 40)));
    }
    Ok(minor == "0")
}

fn is_manifest_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=64).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-' || *b == b'_')
}

fn connector_name(
    options: &ImportOptions,
    info: Option<&Map<String, Value>>,
) -> Result<String, ImportError> {
    if !options.name.is_empty() {
        if !is_manifest_name(&options.name) {
            return Err(ImportError::Options(format!(
                "the name `{}` is not 1-64 characters of `a-z`, `0-9`, `-`, `_` starting with a letter",
                truncate(&options.name, 80)
            )));
        }
        return Ok(options.name.clone());
    }
    let title = info
        .and_then(|info| info.get("title"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = snake_name(title);
    Ok(if name.is_empty() {
        "openapi".to_owned()
    } else {
        name
    })
}

fn is_semver(version: &str) -> bool {
    let parts: Vec<&str> = version.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|part| {
            !part.is_empty() && part.len() <= 9 && part.bytes().all(|b| b.is_ascii_digit())
        })
}

fn connector_version(
    options: &ImportOptions,
    info: Option<&Map<String, Value>>,
) -> Result<String, ImportError> {
    if !options.version.is_empty() {
        if !is_semver(&options.version) {
            return Err(ImportError::Options(format!(
                "the version `{}` is not MAJOR.MINOR.PATCH",
                truncate(&options.version, 80)
            )));
        }
        return Ok(options.version.clone());
    }
    let version = info
        .and_then(|info| info.get("version"))
        .and_then(Value::as_str)
        .unwrap_or_default();
    Ok(if is_semver(version) {
        version.to_owned()
    } else {
        "0.1.0".to_owned()
    })
}

/// The value a local reference (`#/components/schemas/Pet`) points to: a JSON Pointer in
/// a URI fragment, so percent-decoded first.
fn lookup<'v>(root: &'v Value, reference: &str) -> Option<&'v Value> {
    let fragment = reference.strip_prefix('#')?;
    let pointer = percent_decode(fragment)?;
    if pointer.is_empty() {
        return Some(root);
    }
    if !pointer.starts_with('/') {
        return None;
    }
    root.pointer(&pointer)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) = (
                bytes.get(i + 1).and_then(|b| hex_value(*b)),
                bytes.get(i + 2).and_then(|b| hex_value(*b)),
            )
        {
            out.push(high << 4 | low);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// An object of the document, through its `$ref`s (parameters, request bodies, responses,
/// path items, security schemes).
fn resolve_object<'v>(root: &'v Value, value: &'v Value) -> Result<&'v Map<String, Value>, String> {
    let mut current = value;
    for _ in 0..MAX_REF_HOPS {
        let object = current
            .as_object()
            .ok_or_else(|| "an object of the description is not a JSON object".to_owned())?;
        match object.get("$ref") {
            None => return Ok(object),
            Some(Value::String(reference)) => {
                if !reference.starts_with('#') {
                    return Err(format!(
                        "the reference `{}` is outside the document",
                        truncate(reference, 120)
                    ));
                }
                current = lookup(root, reference).ok_or_else(|| {
                    format!(
                        "the reference `{}` does not resolve",
                        truncate(reference, 120)
                    )
                })?;
            }
            Some(_) => return Err("a `$ref` that is not a string".to_owned()),
        }
    }
    Err(format!(
        "more than {MAX_REF_HOPS} references in a row (a loop?)"
    ))
}

/// The text, at most `max` characters, `…` at the end when cut.
fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((_, _)) => {
            let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
            out = out.trim_end().to_owned();
            out.push('…');
            out
        }
    }
}

// ---------------------------------------------------------------------------------------
// Base URL

struct Base {
    url: String,
    config_schema: Option<Value>,
}

const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$";

fn is_http_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://"))
        && url.split_once("://").is_some_and(|(_, rest)| {
            let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
            !host.is_empty()
        })
}

/// The URL without trailing `/` after its host.
fn strip_trailing_slash(url: &str) -> String {
    let host_start = url.find("://").map_or(0, |i| i + 3);
    let mut end = url.len();
    while end > host_start && url[..end].ends_with('/') {
        end -= 1;
    }
    url[..end].to_owned()
}

fn config_schema(properties: Map<String, Value>, required: Vec<String>) -> Option<Value> {
    if properties.is_empty() {
        return None;
    }
    let mut schema = json!({
        "type": "object",
        "properties": properties,
        "additionalProperties": false,
    });
    if !required.is_empty() {
        schema["required"] = json!(required);
    }
    Some(schema)
}

fn base_from_option(url: &str) -> Result<Base, ImportError> {
    let url = strip_trailing_slash(url.trim());
    if !is_http_url(&url) {
        return Err(ImportError::BaseUrl(format!(
            "`{}` is not an http(s) URL",
            truncate(&url, 200)
        )));
    }
    // `{config.NAME}` variables get a config property each.
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut rest = url.as_str();
    while let Some(start) = rest.find("{config.") {
        let after = &rest[start + "{config.".len()..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if is_var_name(name) && !properties.contains_key(name) {
            properties.insert(name.to_owned(), json!({"type": "string"}));
            required.push(name.to_owned());
        }
        rest = &after[end..];
    }
    Ok(Base {
        url,
        config_schema: config_schema(properties, required),
    })
}

/// Where in a URL a server variable stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UrlPart {
    Scheme,
    Host,
    Port,
    Path,
}

/// A server's URL with its variables filled in or turned into `{config.NAME}`.
fn server_url(
    server: &Value,
    properties: &mut Map<String, Value>,
    required: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Result<String, String> {
    let url = server
        .get("url")
        .and_then(Value::as_str)
        .ok_or("`servers[0]` has no `url`")?
        .trim();
    let variables = server.get("variables").and_then(Value::as_object);
    let scheme_end = url.find("://");
    let authority_end = scheme_end.map_or(0, |i| {
        url[i + 3..]
            .find(['/', '?'])
            .map_or(url.len(), |j| i + 3 + j)
    });
    let mut out = String::new();
    let mut i = 0;
    let mut in_port = false;
    while i < url.len() {
        let rest = &url[i..];
        if rest.starts_with('{')
            && let Some(end) = rest.find('}')
        {
            let name = &rest[1..end];
            let part = match scheme_end {
                Some(s) if i < s => UrlPart::Scheme,
                Some(_) if i < authority_end && in_port => UrlPart::Port,
                Some(_) if i < authority_end => UrlPart::Host,
                _ => UrlPart::Path,
            };
            let variable = variables
                .and_then(|vars| vars.get(name))
                .and_then(Value::as_object);
            out.push_str(&server_variable(
                name, part, variable, properties, required, notes,
            )?);
            i += end + 1;
            continue;
        }
        let c = rest.chars().next().unwrap_or_default();
        if c == ':' && scheme_end.is_some_and(|s| i > s + 2 && i < authority_end) {
            in_port = true;
        }
        if c == '@' {
            in_port = false;
        }
        out.push(c);
        i += c.len_utf8();
    }
    Ok(strip_trailing_slash(&out))
}

fn server_variable(
    name: &str,
    part: UrlPart,
    variable: Option<&Map<String, Value>>,
    properties: &mut Map<String, Value>,
    required: &mut Vec<String>,
    notes: &mut Vec<String>,
) -> Result<String, String> {
    let default = variable
        .and_then(|v| v.get("default"))
        .and_then(|d| match d {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    let choices: Vec<String> = variable
        .and_then(|v| v.get("enum"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let single = (choices.len() == 1).then(|| choices[0].clone());
    let to_config = match part {
        UrlPart::Scheme | UrlPart::Port => false,
        UrlPart::Host => {
            single.is_none()
                && choices
                    .iter()
                    .chain(default.iter())
                    .all(|v| airlock_contract::connector::is_dns_label(v))
        }
        UrlPart::Path => default.is_none() && single.is_none(),
    };
    if !to_config {
        if part == UrlPart::Host
            && single.is_none()
            && let Some(default) = &default
        {
            notes.push(format!(
                "the server variable `{name}` is its default `{}`: a config value can only be one DNS label of a host; pass a base URL if the default is a placeholder",
                truncate(default, 80)
            ));
        }
        return match single.or(default) {
            Some(value) => Ok(value),
            None => Err(format!(
                "the server variable `{name}` has no default and cannot come from the config"
            )),
        };
    }
    let key = safe_var_name(name);
    if !properties.contains_key(&key) {
        let mut property = Map::new();
        property.insert("type".into(), json!("string"));
        if part == UrlPart::Host {
            property.insert("pattern".into(), json!(DNS_LABEL_PATTERN));
        }
        if !choices.is_empty() {
            property.insert("enum".into(), json!(choices));
        }
        if let Some(description) = variable
            .and_then(|v| v.get("description"))
            .and_then(Value::as_str)
        {
            property.insert(
                "description".into(),
                json!(truncate(description, MAX_DESCRIPTION_CHARS)),
            );
        }
        match &default {
            Some(default) => {
                property.insert("default".into(), json!(default));
            }
            None => required.push(key.clone()),
        }
        properties.insert(key.clone(), Value::Object(property));
        notes.push(format!(
            "the server variable `{name}` is the connection's config `{key}`"
        ));
    }
    Ok(format!("{{config.{key}}}"))
}

fn base_from_servers(servers: Option<&Value>, notes: &mut Vec<String>) -> Result<Base, String> {
    let server = servers
        .and_then(Value::as_array)
        .and_then(|list| list.first())
        .ok_or("the description has no `servers`: pass a base URL")?;
    let mut properties = Map::new();
    let mut required = Vec::new();
    let url = server_url(server, &mut properties, &mut required, notes)?;
    if !is_http_url(&url) {
        return Err(format!(
            "the server URL `{}` is not an absolute http(s) URL: pass a base URL",
            truncate(&url, 200)
        ));
    }
    Ok(Base {
        url,
        config_schema: config_schema(properties, required),
    })
}

// ---------------------------------------------------------------------------------------
// Operations and selection

#[derive(Clone, Copy)]
enum OpKind<'v> {
    Ok {
        item: &'v Map<String, Value>,
        op: &'v Map<String, Value>,
    },
    Broken(&'static str),
}

struct Operation<'v> {
    path: String,
    method: &'static str,
    id: Option<String>,
    tags: Vec<String>,
    kind: OpKind<'v>,
}

impl Operation<'_> {
    fn label(&self) -> String {
        match &self.id {
            Some(id) => id.clone(),
            None => self.method_path(),
        }
    }

    fn method_path(&self) -> String {
        format!("{} {}", self.method.to_ascii_uppercase(), self.path)
    }
}

fn collect_operations(root: &Value) -> Vec<Operation<'_>> {
    let Some(paths) = root.get("paths").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut keys: Vec<&String> = paths.keys().collect();
    keys.sort();
    let mut out = Vec::new();
    for path in keys {
        let Ok(item) = resolve_object(root, &paths[path]) else {
            continue;
        };
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let (kind, id, tags) = match op.as_object() {
                Some(object) => {
                    let id = object
                        .get("operationId")
                        .and_then(Value::as_str)
                        .filter(|id| !id.trim().is_empty())
                        .map(str::to_owned);
                    let tags = object
                        .get("tags")
                        .and_then(Value::as_array)
                        .map(|tags| {
                            tags.iter()
                                .filter_map(Value::as_str)
                                .map(str::to_owned)
                                .collect()
                        })
                        .unwrap_or_default();
                    (OpKind::Ok { item, op: object }, id, tags)
                }
                None => (
                    OpKind::Broken("the operation is not a JSON object"),
                    None,
                    Vec::new(),
                ),
            };
            out.push(Operation {
                path: path.clone(),
                method,
                id,
                tags,
                kind,
            });
        }
    }
    out
}

/// Whether `text` matches `pattern`, where `*` stands for any run of characters.
fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn pattern_matches(pattern: &str, operation: &Operation<'_>) -> bool {
    if let Some(tag) = pattern.strip_prefix("tag:") {
        return operation
            .tags
            .iter()
            .any(|t| t.eq_ignore_ascii_case(tag.trim()));
    }
    operation
        .id
        .as_deref()
        .is_some_and(|id| glob_match(pattern, id))
        || glob_match(pattern, &operation.method_path())
}

fn select<'o, 'v>(
    operations: &'o [Operation<'v>],
    patterns: &[String],
) -> Result<Vec<&'o Operation<'v>>, ImportError> {
    if patterns.is_empty() {
        return Ok(operations.iter().collect());
    }
    for pattern in patterns {
        if !operations.iter().any(|op| pattern_matches(pattern, op)) {
            return Err(ImportError::Select(truncate(pattern, 200)));
        }
    }
    Ok(operations
        .iter()
        .filter(|op| patterns.iter().any(|pattern| pattern_matches(pattern, op)))
        .collect())
}

// ---------------------------------------------------------------------------------------
// Names

/// `snake_case` under the manifest's rule: `a-z`, `0-9`, `_`, starting with a letter, at
/// most 64 characters; empty when nothing usable is left.
fn snake_name(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let boundary = prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
                || (prev.is_some_and(|p| p.is_ascii_uppercase())
                    && next.is_some_and(|n| n.is_ascii_lowercase()));
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(*c);
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    let mut name = out.trim_matches('_').to_owned();
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        name = format!("op_{name}");
    }
    if name.len() > 64 {
        name.truncate(64);
        name = name.trim_end_matches('_').to_owned();
    }
    name
}

fn action_name(operation: &Operation<'_>) -> String {
    if let Some(id) = &operation.id {
        let name = snake_name(id);
        if !name.is_empty() {
            return name;
        }
    }
    let name = snake_name(&format!("{} {}", operation.method, operation.path));
    if name.is_empty() {
        operation.method.to_owned()
    } else {
        name
    }
}

fn unique_name(base: &str, taken: &mut BTreeSet<String>) -> String {
    let mut name = base.to_owned();
    let mut n = 2usize;
    while taken.contains(&name) {
        let suffix = format!("_{n}");
        let mut stem = base.to_owned();
        stem.truncate(64 - suffix.len());
        name = format!("{}{suffix}", stem.trim_end_matches('_'));
        n += 1;
    }
    taken.insert(name.clone());
    name
}

/// A template variable name: letters, digits, `_` and `-`, at most 128.
fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A template variable for a name that may not be one: other characters become `_`.
fn safe_var_name(name: &str) -> String {
    if is_var_name(name) {
        return name.to_owned();
    }
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    out.truncate(128);
    if out.trim_matches('_').is_empty() {
        "param".to_owned()
    } else {
        out
    }
}

/// `name`, or with `_2`, `_3`... when taken.
fn unique_var(name: String, taken: &mut BTreeSet<String>) -> String {
    let mut candidate = name.clone();
    let mut n = 2usize;
    while taken.contains(&candidate) {
        let suffix = format!("_{n}");
        let mut stem = name.clone();
        stem.truncate(128 - suffix.len());
        candidate = format!("{stem}{suffix}");
        n += 1;
    }
    taken.insert(candidate.clone());
    candidate
}

// ---------------------------------------------------------------------------------------
// Auth

/// The header and query names the auth sets: parameters of those names are the host's.
struct AuthNames {
    headers: BTreeSet<String>,
    query: Option<String>,
}

impl AuthNames {
    fn of(auth: &Value) -> Self {
        let mut headers = BTreeSet::new();
        let mut query = None;
        match auth.get("type").and_then(Value::as_str) {
            Some("api_key") => {
                let name = auth.get("name").and_then(Value::as_str).unwrap_or_default();
                if auth.get("in").and_then(Value::as_str) == Some("query") {
                    query = Some(name.to_owned());
                } else {
                    headers.insert(name.to_ascii_lowercase());
                }
            }
            Some("custom_header") => {
                for name in auth
                    .get("headers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(name) = name.as_str() {
                        headers.insert(name.to_ascii_lowercase());
                    }
                }
            }
            _ => {}
        }
        AuthNames { headers, query }
    }
}

/// The security requirements that apply to an operation: its own, else the document's.
fn requirements<'v>(root: &'v Value, op: &'v Map<String, Value>) -> Option<&'v Vec<Value>> {
    op.get("security")
        .or_else(|| root.get("security"))
        .and_then(Value::as_array)
}

/// The manifest auth for one security scheme, or why there is none.
fn map_scheme(
    scheme: &Map<String, Value>,
    scopes: &BTreeSet<String>,
    base_url: Option<&str>,
) -> Result<Value, String> {
    let kind = scheme
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match kind {
        "apiKey" => {
            let name = scheme
                .get("name")
                .and_then(Value::as_str)
                .filter(|name| !name.is_empty())
                .ok_or("an `apiKey` scheme without a `name`")?;
            match scheme.get("in").and_then(Value::as_str) {
                Some("header") => Ok(json!({"type": "api_key", "in": "header", "name": name})),
                Some("query") => Ok(json!({"type": "api_key", "in": "query", "name": name})),
                Some("cookie") => Err("an `apiKey` in a cookie has no manifest auth".to_owned()),
                _ => Err("an `apiKey` scheme without `in`".to_owned()),
            }
        }
        "http" => {
            let http = scheme
                .get("scheme")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_ascii_lowercase();
            match http.as_str() {
                "bearer" => Ok(
                    json!({"type": "api_key", "in": "header", "name": "Authorization", "prefix": "Bearer "}),
                ),
                "basic" => Ok(json!({"type": "basic"})),
                other => Err(format!(
                    "the `http` scheme `{}` has no manifest auth",
                    truncate(other, 40)
                )),
            }
        }
        "oauth2" => {
            let flows = scheme
                .get("flows")
                .and_then(Value::as_object)
                .ok_or("an `oauth2` scheme without `flows`")?;
            let flow = ["authorizationCode", "clientCredentials", "password"]
                .iter()
                .find_map(|name| {
                    let flow = flows.get(*name)?.as_object()?;
                    flow.get("tokenUrl")?.as_str()?;
                    Some(flow)
                })
                .ok_or(
                    "an `oauth2` scheme without a flow that has a `tokenUrl` (implicit only?)",
                )?;
            let absolute = |url: &str| absolute_url(url, base_url);
            let token_url = flow
                .get("tokenUrl")
                .and_then(Value::as_str)
                .map(absolute)
                .unwrap_or_default();
            let mut auth = json!({"type": "oauth2", "token_url": token_url});
            if let Some(url) = flow.get("authorizationUrl").and_then(Value::as_str) {
                auth["authorization_url"] = json!(absolute(url));
            }
            auth["scopes"] = json!(scopes.iter().collect::<Vec<_>>());
            Ok(auth)
        }
        "openIdConnect" => Err("`openIdConnect` has no manifest auth".to_owned()),
        "mutualTLS" => Err("`mutualTLS` has no manifest auth".to_owned()),
        other => Err(format!(
            "the security scheme type `{}` is unknown",
            truncate(other, 40)
        )),
    }
}

/// A URL made absolute against the base URL's origin (OpenAPI 3.1 allows relative token
/// URLs).
fn absolute_url(url: &str, base_url: Option<&str>) -> String {
    if url.contains("://") {
        return url.to_owned();
    }
    let Some(base) = base_url else {
        return url.to_owned();
    };
    let origin_end = base
        .find("://")
        .map(|i| base[i + 3..].find('/').map_or(base.len(), |j| i + 3 + j))
        .unwrap_or(base.len());
    if url.starts_with('/') {
        format!("{}{url}", &base[..origin_end])
    } else {
        format!("{base}/{url}")
    }
}

/// Whether an operation requires security and accepts none with exactly `names`.
fn requires_other(root: &Value, operation: &Operation<'_>, names: &[String]) -> bool {
    let OpKind::Ok { op, .. } = operation.kind else {
        return false;
    };
    let Some(alternatives) = requirements(root, op) else {
        return false;
    };
    let sets: Vec<Vec<&String>> = alternatives
        .iter()
        .filter_map(Value::as_object)
        .map(|requirement| requirement.keys().collect())
        .collect();
    !sets.is_empty()
        && !sets.iter().any(Vec::is_empty)
        && !sets.iter().any(|set| set.iter().copied().eq(names.iter()))
}

/// The auth the most selected operations accept.
fn choose_auth(
    root: &Value,
    selected: &[&Operation<'_>],
    base_url: &str,
    notes: &mut Vec<String>,
) -> Value {
    let schemes = root
        .get("components")
        .and_then(|c| c.get("securitySchemes"))
        .and_then(Value::as_object);
    // A relative token URL is resolved against the base URL (when it has no variable).
    let base_url = Some(base_url).filter(|url| !url.contains('{'));
    // Per requirement (a set of scheme names): how many operations accept it, where it was
    // first met, and the scopes operations ask of each of its schemes.
    let mut counts: BTreeMap<Vec<String>, (usize, usize)> = BTreeMap::new();
    let mut scopes: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut order = 0usize;
    let mut any_security = false;
    for operation in selected {
        let OpKind::Ok { op, .. } = operation.kind else {
            continue;
        };
        let Some(alternatives) = requirements(root, op) else {
            continue;
        };
        let mut seen = BTreeSet::new();
        for alternative in alternatives {
            let Some(requirement) = alternative.as_object() else {
                continue;
            };
            if requirement.is_empty() {
                continue;
            }
            any_security = true;
            let names: Vec<String> = requirement.keys().cloned().collect();
            for (name, list) in requirement {
                let entry = scopes.entry(name.clone()).or_default();
                for scope in list
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    entry.insert(scope.to_owned());
                }
            }
            if seen.insert(names.clone()) {
                let slot = counts.entry(names).or_insert((0, order));
                slot.0 += 1;
                order += 1;
            }
        }
    }
    let mut ranked: Vec<(Vec<String>, usize, usize)> = counts
        .into_iter()
        .map(|(names, (count, first))| (names, count, first))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.2.cmp(&b.2)));
    let no_scopes = BTreeSet::new();
    let mut unmapped = BTreeSet::new();
    for (names, count, _) in &ranked {
        let mut mapped = Vec::new();
        for name in names {
            let scheme = schemes
                .and_then(|s| s.get(name))
                .ok_or_else(|| format!("the security scheme `{name}` is not declared"))
                .and_then(|s| resolve_object(root, s))
                .and_then(|s| map_scheme(s, scopes.get(name).unwrap_or(&no_scopes), base_url));
            match scheme {
                Ok(auth) => mapped.push(auth),
                Err(why) => {
                    unmapped.insert(format!("`{name}`: {why}"));
                }
            }
        }
        if mapped.len() != names.len() {
            continue;
        }
        let auth = if mapped.len() == 1 {
            mapped.remove(0)
        } else if mapped.iter().all(|a| {
            a.get("type") == Some(&json!("api_key"))
                && a.get("in") == Some(&json!("header"))
                && a.get("prefix").is_none()
        }) {
            let headers: BTreeSet<&str> = mapped
                .iter()
                .filter_map(|a| a.get("name")?.as_str())
                .collect();
            json!({"type": "custom_header", "headers": headers})
        } else {
            unmapped.insert(format!(
                "`{}` together: no one manifest auth",
                names.join("` + `")
            ));
            continue;
        };
        for why in &unmapped {
            notes.push(format!("security scheme {why}"));
        }
        notes.push(format!(
            "auth: `{}`, accepted by {count} of the {} selected operations",
            names.join("` + `"),
            selected.len()
        ));
        let others = selected
            .iter()
            .filter(|operation| requires_other(root, operation, names))
            .count();
        if others > 0 {
            notes.push(format!(
                "auth: {others} selected operations require another security scheme; they may fail with this auth"
            ));
        }
        return auth;
    }
    for why in &unmapped {
        notes.push(format!("security scheme {why}"));
    }
    if any_security {
        notes.push("auth: none of the security schemes maps to a manifest auth; auth is `none`: set it by hand".to_owned());
    } else {
        notes.push("auth: the description declares no security requirement; auth is `none`: set it by hand if the API needs one".to_owned());
    }
    json!({"type": "none"})
}

// ---------------------------------------------------------------------------------------
// One operation

struct OpCx<'a> {
    base: &'a Base,
    auth: &'a AuthNames,
    notes: Vec<String>,
    renamed: Vec<Renamed>,
}

/// A parameter, merged and resolved, its schema not yet converted.
struct Param<'v> {
    name: String,
    location: String,
    required: bool,
    description: Option<&'v str>,
    deprecated: bool,
    style: Option<&'v str>,
    explode: Option<bool>,
    schema: Option<&'v Value>,
}

fn is_json_media(media: &str) -> bool {
    let media = media
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media == "application/json"
        || media.ends_with("+json")
        || media == "*/*"
        || media == "application/*"
}

fn is_form_media(media: &str) -> bool {
    media
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

fn collect_params<'v>(
    root: &'v Value,
    item: &'v Map<String, Value>,
    op: &'v Map<String, Value>,
) -> Result<Vec<Param<'v>>, String> {
    let mut out: Vec<Param<'v>> = Vec::new();
    for list in [item.get("parameters"), op.get("parameters")]
        .into_iter()
        .flatten()
    {
        let Some(list) = list.as_array() else {
            return Err("`parameters` is not a list".to_owned());
        };
        for raw in list {
            let param = resolve_object(root, raw).map_err(|why| format!("a parameter: {why}"))?;
            let name = param
                .get("name")
                .and_then(Value::as_str)
                .ok_or("a parameter without a `name`")?
                .to_owned();
            let location = param
                .get("in")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("the parameter `{}` has no `in`", truncate(&name, 80)))?
                .to_owned();
            let schema = match (
                param.get("schema"),
                param.get("content").and_then(Value::as_object),
            ) {
                (Some(schema), _) => Some(schema),
                (None, Some(content)) => match content.iter().next() {
                    Some((media, value)) if is_json_media(media) => value.get("schema"),
                    Some((media, _)) => {
                        return Err(format!(
                            "the parameter `{}` is `{}` content, not JSON",
                            truncate(&name, 80),
                            truncate(media, 80)
                        ));
                    }
                    None => None,
                },
                (None, None) => None,
            };
            let parsed = Param {
                required: location == "path" || param.get("required") == Some(&Value::Bool(true)),
                description: param.get("description").and_then(Value::as_str),
                deprecated: param.get("deprecated") == Some(&Value::Bool(true)),
                style: param.get("style").and_then(Value::as_str),
                explode: param.get("explode").and_then(Value::as_bool),
                schema,
                name,
                location,
            };
            match out
                .iter_mut()
                .find(|p| p.name == parsed.name && p.location == parsed.location)
            {
                Some(existing) => *existing = parsed,
                None => out.push(parsed),
            }
        }
    }
    Ok(out)
}

fn schema_types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Whether a (converted) parameter schema describes an object: a URL or header value cannot
/// carry one.
fn is_object_schema(schema: &Value) -> bool {
    let types = schema_types(schema);
    let non_null: Vec<&&str> = types.iter().filter(|t| **t != "null").collect();
    if non_null.is_empty() {
        return types.is_empty() && schema.get("properties").is_some();
    }
    non_null.iter().all(|t| **t == "object")
}

fn is_array_schema(schema: &Value) -> bool {
    let types = schema_types(schema);
    types.contains(&"array")
        || (types.is_empty()
            && (schema.get("items").is_some() || schema.get("prefixItems").is_some()))
}

/// The parameter's property schema: its converted schema with its description.
fn property_schema(mut schema: Value, param: &Param<'_>) -> Value {
    if schema == Value::Bool(true) {
        schema = json!({});
    }
    if let Value::Object(map) = &mut schema {
        if let Some(description) = param.description
            && !map.contains_key("description")
            && !description.trim().is_empty()
        {
            map.insert("description".into(), json!(description.trim()));
        }
        if param.deprecated {
            map.insert("deprecated".into(), json!(true));
        }
    }
    schema
}

fn object_schema(properties: Map<String, Value>, required: Vec<String>) -> Option<Value> {
    if properties.is_empty() {
        return None;
    }
    let mut schema = Map::new();
    schema.insert("type".into(), json!("object"));
    schema.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        schema.insert("required".into(), json!(required));
    }
    schema.insert("additionalProperties".into(), json!(false));
    Some(Value::Object(schema))
}

/// Header names a connector's request may not set: the transport's and the credential's.
const TRANSPORT_HEADERS: [&str; 9] = [
    "cookie",
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "proxy-authorization",
    "te",
    "upgrade",
    "trailer",
];

fn is_header_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Bytes a URL template's literal text may hold as they are.
fn literal_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?[]@!$&'()*+,;=".contains(&b)
}

/// The path as a URL template: `{name}` for each parameter (under its variable), other
/// text percent-encoded where a template needs it.
fn path_template(path: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'{'
            && let Some(end) = path[i + 1..].find('}')
        {
            let name = &path[i + 1..i + 1 + end];
            let var = vars.get(name).ok_or_else(|| {
                format!(
                    "the path parameter `{}` has no variable",
                    truncate(name, 80)
                )
            })?;
            out.push('{');
            out.push_str(var);
            out.push('}');
            i += end + 2;
            continue;
        }
        if b == b'#' {
            break;
        }
        if b == b'%'
            && bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        {
            out.push('%');
        } else if literal_byte_ok(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
        i += 1;
    }
    Ok(out)
}

/// The path's `{name}`s.
fn path_names(path: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
        rest = &after[end + 1..];
    }
    names
}

/// The operation's own server, when it has one: `Ok(prefix)` to put before its path when
/// that server is the base URL with more path, an error when it is another.
fn operation_prefix(
    cx: &mut OpCx<'_>,
    item: &Map<String, Value>,
    op: &Map<String, Value>,
) -> Result<String, String> {
    let servers = op
        .get("servers")
        .or_else(|| item.get("servers"))
        .and_then(Value::as_array)
        .filter(|list| !list.is_empty());
    let Some(server) = servers.and_then(|list| list.first()) else {
        return Ok(String::new());
    };
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut ignored = Vec::new();
    let url = server_url(server, &mut properties, &mut required, &mut ignored)?;
    let base = cx.base.url.as_str();
    if url == base {
        return Ok(String::new());
    }
    if let Some(rest) = url.strip_prefix(base)
        && rest.starts_with('/')
        && !rest.contains('{')
    {
        return Ok(rest.to_owned());
    }
    Err(format!(
        "its own server `{}` is not the base URL",
        truncate(&url, 200)
    ))
}

fn convert_operation<'v>(
    operation: &Operation<'v>,
    cx: &mut OpCx<'_>,
    converter: &mut Converter<'v>,
) -> Result<ActionDef, String> {
    let OpKind::Ok { item, op } = operation.kind else {
        return Err("the operation is not a JSON object".to_owned());
    };
    let method = match operation.method {
        "get" => Method::Get,
        "put" => Method::Put,
        "post" => Method::Post,
        "delete" => Method::Delete,
        "options" => Method::Options,
        "head" => Method::Head,
        "patch" => Method::Patch,
        _ => {
            return Err(format!(
                "the method {} is not supported",
                operation.method.to_ascii_uppercase()
            ));
        }
    };
    if !operation.path.starts_with('/') {
        return Err("the path does not begin with `/`".to_owned());
    }
    let prefix = operation_prefix(cx, item, op)?;
    let params = collect_params(converter.root, item, op)?;

    // Converting schemas may need another try with a depth limit when they are huge.
    let mut attempt = converter.start(MAX_SCHEMA_DEPTH);
    let mut retries = DEPTH_RETRIES.iter();
    let built = loop {
        let mut scratch = OpCx {
            base: cx.base,
            auth: cx.auth,
            notes: Vec::new(),
            renamed: Vec::new(),
        };
        match build_action(operation, method, &prefix, &params, &mut scratch, converter) {
            Ok(action) => {
                cx.notes.append(&mut scratch.notes);
                cx.renamed.append(&mut scratch.renamed);
                break action;
            }
            Err(Fail::Budget) => {
                // A limit at or past the depth the schemas reached would not help.
                let deepest = converter.deepest;
                match retries.find(|depth| **depth < deepest) {
                    Some(depth) => attempt = converter.start(*depth),
                    None => {
                        return Err("its schemas are too large even cut to depth 0".to_owned());
                    }
                }
            }
            Err(Fail::Skip(reason)) => return Err(reason),
        }
    };
    if attempt.max_depth < MAX_SCHEMA_DEPTH {
        cx.notes.push(format!(
            "its schemas nest references so much that they were cut at depth {}",
            attempt.max_depth
        ));
    }
    for reference in converter.take_cuts() {
        cx.notes.push(format!(
            "the recursive schema `{reference}` is cut (`{{}}`) where it recurs"
        ));
    }
    if converter.depth_cut {
        cx.notes.push(format!(
            "schemas nested deeper than {} levels are cut (`{{}}`)",
            attempt.max_depth
        ));
    }
    let mut action = built;
    fit_schemas(&mut action, &mut cx.notes);
    Ok(action)
}

/// Why building an action stopped: a reason to skip the operation, or the schemas overran
/// the budget (tried again with a depth limit).
enum Fail {
    Skip(String),
    Budget,
}

impl From<String> for Fail {
    fn from(reason: String) -> Self {
        Fail::Skip(reason)
    }
}

fn build_action<'v>(
    operation: &Operation<'v>,
    method: Method,
    prefix: &str,
    params: &[Param<'v>],
    cx: &mut OpCx<'_>,
    converter: &mut Converter<'v>,
) -> Result<ActionDef, Fail> {
    let OpKind::Ok { op, .. } = operation.kind else {
        return Err(Fail::Skip("the operation is not a JSON object".to_owned()));
    };
    let mut path_vars: BTreeMap<String, String> = BTreeMap::new();
    let mut taken_path = BTreeSet::new();
    let mut path_props = Map::new();
    let mut path_required = Vec::new();
    let mut query_vars: Vec<String> = Vec::new();
    let mut query_props = Map::new();
    let mut query_required = Vec::new();
    let mut headers = BTreeMap::new();
    let mut taken_headers = BTreeSet::new();
    let mut header_props = Map::new();
    let mut header_required = Vec::new();

    let in_path = path_names(&operation.path);
    // Names first, so that a renamed variable cannot take the name of another as written.
    for name in &in_path {
        if is_var_name(name) {
            taken_path.insert(name.clone());
        }
    }
    for param in params {
        let name = param.name.as_str();
        let skip_or_drop = |cx: &mut OpCx<'_>, why: String| -> Result<(), Fail> {
            if param.required {
                Err(Fail::Skip(format!(
                    "the required {} parameter `{}` {why}",
                    param.location,
                    truncate(name, 80)
                )))
            } else {
                cx.notes.push(format!(
                    "the {} parameter `{}` is dropped: it {why}",
                    param.location,
                    truncate(name, 80)
                ));
                Ok(())
            }
        };
        match param.location.as_str() {
            "path" => {
                if !in_path.iter().any(|n| n == name) {
                    cx.notes.push(format!(
                        "the path parameter `{}` is not in the path: dropped",
                        truncate(name, 80)
                    ));
                    continue;
                }
                if matches!(param.style, Some("label") | Some("matrix")) {
                    return Err(Fail::Skip(format!(
                        "the path parameter `{}` has the `{}` style",
                        truncate(name, 80),
                        param.style.unwrap_or_default()
                    )));
                }
                let schema = converter.convert_root(param.schema, 1)?;
                if is_object_schema(&schema) {
                    return Err(Fail::Skip(format!(
                        "the path parameter `{}` is an object",
                        truncate(name, 80)
                    )));
                }
                let var = if is_var_name(name) {
                    name.to_owned()
                } else {
                    let var = unique_var(safe_var_name(name), &mut taken_path);
                    cx.renamed.push(Renamed {
                        action: String::new(),
                        location: "path".into(),
                        parameter: name.to_owned(),
                        variable: var.clone(),
                    });
                    var
                };
                path_vars.insert(name.to_owned(), var.clone());
                path_props.insert(var.clone(), property_schema(schema, param));
                path_required.push(var);
            }
            "query" => {
                if cx.auth.query.as_deref() == Some(name) {
                    cx.notes.push(format!(
                        "the query parameter `{}` is the auth's: dropped",
                        truncate(name, 80)
                    ));
                    continue;
                }
                if !is_var_name(name) {
                    skip_or_drop(cx, "is not a template variable name (letters, digits, `_`, `-`) and its name is sent as written".to_owned())?;
                    continue;
                }
                let explode = match param.style {
                    None | Some("form") => param.explode.unwrap_or(true),
                    Some("spaceDelimited") | Some("pipeDelimited") => {
                        if param.explode != Some(true) {
                            skip_or_drop(
                                cx,
                                format!("has the `{}` style", param.style.unwrap_or_default()),
                            )?;
                            continue;
                        }
                        true
                    }
                    Some(other) => {
                        skip_or_drop(cx, format!("has the `{}` style", truncate(other, 40)))?;
                        continue;
                    }
                };
                let schema = converter.convert_root(param.schema, 1)?;
                if is_object_schema(&schema) {
                    skip_or_drop(cx, "is an object".to_owned())?;
                    continue;
                }
                let var = if explode && is_array_schema(&schema) {
                    format!("{name}*")
                } else {
                    name.to_owned()
                };
                query_vars.push(var);
                query_props.insert(name.to_owned(), property_schema(schema, param));
                if param.required {
                    query_required.push(name.to_owned());
                }
            }
            "header" => {
                let lower = name.to_ascii_lowercase();
                if matches!(lower.as_str(), "accept" | "content-type" | "authorization") {
                    continue;
                }
                if TRANSPORT_HEADERS.contains(&lower.as_str()) {
                    cx.notes.push(format!(
                        "the header parameter `{}` is the transport's: dropped",
                        truncate(name, 80)
                    ));
                    continue;
                }
                if cx.auth.headers.contains(&lower) {
                    cx.notes.push(format!(
                        "the header parameter `{}` is the auth's: dropped",
                        truncate(name, 80)
                    ));
                    continue;
                }
                if !is_header_token(name) {
                    skip_or_drop(cx, "is not a header name".to_owned())?;
                    continue;
                }
                let schema = converter.convert_root(param.schema, 1)?;
                if is_object_schema(&schema) {
                    skip_or_drop(cx, "is an object".to_owned())?;
                    continue;
                }
                let var = unique_var(safe_var_name(&lower.replace('-', "_")), &mut taken_headers);
                headers.insert(name.to_owned(), format!("{{{var}}}"));
                header_props.insert(var.clone(), property_schema(schema, param));
                if param.required {
                    header_required.push(var);
                }
            }
            "cookie" => {
                skip_or_drop(cx, "is a cookie, which a connector does not set".to_owned())?;
            }
            other => {
                skip_or_drop(
                    cx,
                    format!("is in `{}`, not path, query or header", truncate(other, 40)),
                )?;
            }
        }
    }
    // Path names the parameters do not declare: required strings.
    for name in &in_path {
        if path_vars.contains_key(name) {
            continue;
        }
        let var = if is_var_name(name) {
            name.clone()
        } else {
            let var = unique_var(safe_var_name(name), &mut taken_path);
            cx.renamed.push(Renamed {
                action: String::new(),
                location: "path".into(),
                parameter: name.clone(),
                variable: var.clone(),
            });
            var
        };
        cx.notes.push(format!(
            "the path parameter `{}` is not declared: a string",
            truncate(name, 80)
        ));
        path_vars.insert(name.clone(), var.clone());
        path_props.insert(var.clone(), json!({"type": "string"}));
        path_required.push(var);
    }

    let mut endpoint = path_template(&format!("{prefix}{}", operation.path), &path_vars)?;
    if !query_vars.is_empty() {
        let open = if endpoint.contains('?') { '&' } else { '?' };
        endpoint.push('{');
        endpoint.push(open);
        endpoint.push_str(&query_vars.join(","));
        endpoint.push('}');
    }
    let template = UrlTemplate::parse(&endpoint).map_err(|e| {
        format!(
            "its endpoint `{}` is not a URL template: {e}",
            truncate(&endpoint, 200)
        )
    })?;
    if !template.is_relative_path() {
        return Err(Fail::Skip(
            "its endpoint does not begin with `/`".to_owned(),
        ));
    }
    for value in headers.values() {
        HeaderTemplate::parse(value).map_err(|e| format!("a header template: {e}"))?;
    }

    let (body_schema, body) = request_body(op, method, cx, converter)?;
    // OpenAPI's `requestBody.required` defaults to false.
    let body_required = op
        .get("requestBody")
        .and_then(|raw| resolve_object(converter.root, raw).ok())
        .is_some_and(|body| body.get("required") == Some(&Value::Bool(true)));
    let (output_schema, accept) = output_schema(op, cx, converter)?;
    if let Some(accept) = accept
        && !headers
            .keys()
            .any(|name| name.eq_ignore_ascii_case("accept"))
    {
        headers.insert("Accept".to_owned(), accept);
    }

    let description = op
        .get("summary")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .or_else(|| op.get("description").and_then(Value::as_str))
        .map(|s| truncate(s.trim(), MAX_DESCRIPTION_CHARS))
        .unwrap_or_default();

    Ok(ActionDef {
        name: String::new(),
        description,
        method,
        endpoint,
        headers,
        path_schema: object_schema(path_props, path_required),
        query_schema: object_schema(query_props, query_required),
        headers_schema: object_schema(header_props, header_required),
        body_schema,
        body_required,
        body,
        output_schema: Some(output_schema),
        output: None,
        errors: Vec::new(),
        pagination: None,
        timeout_ms: None,
        retry: None,
    })
}

fn request_body<'v>(
    op: &'v Map<String, Value>,
    method: Method,
    cx: &mut OpCx<'_>,
    converter: &mut Converter<'v>,
) -> Result<(Option<Value>, Option<BodyDef>), Fail> {
    let Some(raw) = op.get("requestBody") else {
        return Ok((None, None));
    };
    let body =
        resolve_object(converter.root, raw).map_err(|why| format!("the request body: {why}"))?;
    let required = body.get("required") == Some(&Value::Bool(true));
    let content = body.get("content").and_then(Value::as_object);
    let media_types: Vec<&String> = content.map(|c| c.keys().collect()).unwrap_or_default();
    let json = media_types
        .iter()
        .find(|m| {
            m.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case("application/json")
        })
        .or_else(|| media_types.iter().find(|m| is_json_media(m)));
    let form = media_types.iter().find(|m| is_form_media(m));
    let (media, encoding) = match (json, form) {
        (Some(media), _) => (*media, BodyEncoding::Json),
        (None, Some(media)) => (*media, BodyEncoding::Form),
        (None, None) => {
            let listed = if media_types.is_empty() {
                "no content".to_owned()
            } else {
                media_types
                    .iter()
                    .map(|m| format!("`{}`", truncate(m, 60)))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            if required {
                return Err(Fail::Skip(format!(
                    "its request body is {listed}: only JSON and form bodies are supported"
                )));
            }
            cx.notes
                .push(format!("its optional request body ({listed}) is left out"));
            return Ok((None, None));
        }
    };
    let schema = content
        .and_then(|c| c.get(media))
        .and_then(|m| m.get("schema"));
    let mut schema = converter.convert_root(schema, 0)?;
    if !media.eq_ignore_ascii_case("application/json") && encoding == BodyEncoding::Json {
        cx.notes.push(format!(
            "its `{}` body is sent as `application/json`",
            truncate(media, 60)
        ));
    }
    if let (Some(description), Value::Object(map)) =
        (body.get("description").and_then(Value::as_str), &mut schema)
        && !map.contains_key("description")
        && !description.trim().is_empty()
    {
        map.insert(
            "description".into(),
            json!(truncate(description.trim(), MAX_DESCRIPTION_CHARS)),
        );
    }
    if !required {
        cx.notes
            .push("its request body is optional (the input's `body` may be left out)".to_owned());
    }
    let def = match encoding {
        BodyEncoding::Form => Some(BodyDef {
            encoding,
            template: None,
        }),
        // Without a body definition GET and HEAD send no body.
        BodyEncoding::Json if matches!(method, Method::Get | Method::Head) => Some(BodyDef {
            encoding,
            template: None,
        }),
        BodyEncoding::Json => None,
    };
    Ok((Some(schema), def))
}

/// The order success responses are read in: `200` ... `299`, `2XX`, `default`.
fn success_rank(code: &str) -> Option<u32> {
    let upper = code.to_ascii_uppercase();
    if upper == "2XX" {
        return Some(1000);
    }
    if code == "default" {
        return Some(1001);
    }
    let n: u32 = code.parse().ok()?;
    (200..=299).contains(&n).then_some(n)
}

/// The output schema, and the `Accept` the action must send when a success response is not
/// JSON (the runner asks for `application/json` otherwise, which such a server answers 406).
fn output_schema<'v>(
    op: &'v Map<String, Value>,
    cx: &mut OpCx<'_>,
    converter: &mut Converter<'v>,
) -> Result<(Value, Option<String>), Fail> {
    let Some(responses) = op.get("responses").and_then(Value::as_object) else {
        return Ok((json!({}), None));
    };
    let mut ranked: Vec<(u32, &String, &Value)> = responses
        .iter()
        .filter_map(|(code, response)| Some((success_rank(code)?, code, response)))
        .collect();
    ranked.sort_by_key(|(rank, _, _)| *rank);
    // `default` counts only when no 2xx is declared.
    if ranked.iter().any(|(rank, _, _)| *rank < 1001) {
        ranked.retain(|(rank, _, _)| *rank < 1001);
    }
    let mut chosen: Option<Value> = None;
    let mut empty_too = false;
    let mut other_too = false;
    let mut media_types = BTreeSet::new();
    for (_, code, raw) in ranked {
        let response = resolve_object(converter.root, raw)
            .map_err(|why| format!("the response {code}: {why}"))?;
        let content = response
            .get("content")
            .and_then(Value::as_object)
            .filter(|c| !c.is_empty());
        let Some(content) = content else {
            empty_too = true;
            continue;
        };
        let json = content
            .iter()
            .find(|(m, _)| {
                m.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .eq_ignore_ascii_case("application/json")
            })
            .or_else(|| content.iter().find(|(m, _)| is_json_media(m)));
        media_types.extend(
            content
                .keys()
                .map(|m| m.split(';').next().unwrap_or_default().trim().to_owned())
                .filter(|m| {
                    !m.is_empty()
                        && m.len() <= 100
                        && m.bytes().all(|b| b.is_ascii_graphic())
                        && !m.contains(['{', '}', ','])
                }),
        );
        match json {
            Some((_, media)) if chosen.is_none() => {
                chosen = Some(converter.convert_root(media.get("schema"), 0)?);
            }
            Some(_) => {}
            None => other_too = true,
        }
    }
    let accept = (other_too && !media_types.is_empty())
        .then(|| media_types.into_iter().collect::<Vec<_>>().join(", "));
    let schema = match chosen {
        None => json!({}),
        Some(_) if other_too => {
            cx.notes
                .push("a success response is not JSON: the output schema is `{}`".to_owned());
            json!({})
        }
        Some(schema) if empty_too => make_nullable(schema),
        Some(schema) => schema,
    };
    Ok((schema, accept))
}

// ---------------------------------------------------------------------------------------
// Schema conversion: OpenAPI 3.0 / 3.1 schema objects to self-contained JSON Schema 2020-12

/// Keywords whose value is one schema.
const SUB_ONE: [&str; 11] = [
    "additionalProperties",
    "items",
    "contains",
    "not",
    "if",
    "then",
    "else",
    "propertyNames",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
];
/// Keywords whose value is a non-empty list of schemas.
const SUB_LIST: [&str; 4] = ["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value is an object of schemas.
const SUB_MAP: [&str; 3] = ["properties", "patternProperties", "dependentSchemas"];

const SIMPLE_TYPES: [&str; 7] = [
    "array", "boolean", "integer", "null", "number", "object", "string",
];

/// Keywords that annotate rather than constrain: they may stand beside a `$ref` and be
/// merged into its target.
const ANNOTATIONS: [&str; 8] = [
    "title",
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "$comment",
];

struct Cached {
    value: Value,
    height: usize,
    nodes: usize,
}

/// Converts schemas of one document, caching each referenced schema whose conversion cut
/// nothing (so that it does not depend on where it was met, nor on which operations were
/// converted before).
struct Converter<'v> {
    root: &'v Value,
    v30: bool,
    cache: HashMap<String, Cached>,
    stack: Vec<String>,
    /// Whether a schema was cut for depth since the last reset.
    depth_cut: bool,
    /// The deepest schema met since [`Converter::start`].
    deepest: usize,
    max_depth: usize,
    budget: usize,
    /// Every recursion cut for the action being converted, in order.
    cuts: Vec<String>,
}

#[derive(Clone, Copy)]
struct Attempt {
    max_depth: usize,
}

impl<'v> Converter<'v> {
    fn new(root: &'v Value, v30: bool) -> Self {
        Converter {
            root,
            v30,
            cache: HashMap::new(),
            stack: Vec::new(),
            depth_cut: false,
            deepest: 0,
            max_depth: MAX_SCHEMA_DEPTH,
            budget: NODE_BUDGET,
            cuts: Vec::new(),
        }
    }

    /// Starts (or starts again) the conversion of one action's schemas.
    fn start(&mut self, max_depth: usize) -> Attempt {
        self.stack.clear();
        self.depth_cut = false;
        self.deepest = 0;
        self.max_depth = max_depth;
        self.budget = NODE_BUDGET;
        self.cuts.clear();
        Attempt { max_depth }
    }

    /// The recursion points cut since [`Converter::start`], each once.
    fn take_cuts(&mut self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        std::mem::take(&mut self.cuts)
            .into_iter()
            .filter(|c| seen.insert(c.clone()))
            .collect()
    }

    fn spend(&mut self, nodes: usize) -> Result<(), Fail> {
        match self.budget.checked_sub(nodes) {
            Some(left) => {
                self.budget = left;
                Ok(())
            }
            None => Err(Fail::Budget),
        }
    }

    /// A schema of the document (absent: `{}`) at `depth`.
    fn convert_root(&mut self, schema: Option<&'v Value>, depth: usize) -> Result<Value, Fail> {
        match schema {
            None => Ok(json!({})),
            Some(schema) => self.convert(schema, depth),
        }
    }

    fn convert(&mut self, schema: &'v Value, depth: usize) -> Result<Value, Fail> {
        match schema {
            Value::Bool(b) => {
                self.spend(1)?;
                Ok(Value::Bool(*b))
            }
            Value::Object(map) => self.convert_object(map, depth),
            // Not a schema: accept anything rather than fail the operation.
            _ => {
                self.spend(1)?;
                Ok(json!({}))
            }
        }
    }

    fn convert_object(&mut self, map: &'v Map<String, Value>, depth: usize) -> Result<Value, Fail> {
        self.deepest = self.deepest.max(depth);
        if depth > self.max_depth {
            self.depth_cut = true;
            return Ok(json!({}));
        }
        self.spend(1)?;
        let target = match map.get("$ref") {
            Some(Value::String(reference)) => Some(self.resolve(reference, depth)?),
            _ => None,
        };
        let mut out = Map::new();
        for (key, value) in map {
            if target.is_some() && self.v30 && !ANNOTATIONS.contains(&key.as_str()) {
                // OpenAPI 3.0 ignores a `$ref`'s siblings (but `nullable`, below).
                continue;
            }
            if let Some(converted) = self.keyword(map, key, value, depth)? {
                let key = if key == "items" && value.is_array() {
                    if map.contains_key("prefixItems") {
                        continue;
                    }
                    "prefixItems".to_owned()
                } else {
                    key.clone()
                };
                out.insert(key, converted);
            }
        }
        let mut result = match target {
            None => Value::Object(out),
            Some(target) if out.is_empty() => target,
            Some(mut target) => {
                if out.keys().all(|k| ANNOTATIONS.contains(&k.as_str()))
                    && let Value::Object(target_map) = &mut target
                {
                    for (key, value) in out {
                        target_map.insert(key, value);
                    }
                    target
                } else {
                    let mut all = vec![target];
                    if let Some(Value::Array(existing)) = out.remove("allOf") {
                        all.extend(existing);
                    }
                    out.insert("allOf".into(), Value::Array(all));
                    Value::Object(out)
                }
            }
        };
        if map.get("nullable") == Some(&Value::Bool(true)) {
            result = make_nullable(result);
        }
        Ok(result)
    }

    /// One keyword of a schema, converted; `None` to leave it out.
    fn keyword(
        &mut self,
        map: &'v Map<String, Value>,
        key: &str,
        value: &'v Value,
        depth: usize,
    ) -> Result<Option<Value>, Fail> {
        let schema_like = |v: &Value| v.is_object() || v.is_boolean();
        Ok(match key {
            "type" => match value {
                Value::String(t) if SIMPLE_TYPES.contains(&t.as_str()) => Some(value.clone()),
                Value::Array(list) => {
                    let mut types: Vec<&str> = Vec::new();
                    for t in list.iter().filter_map(Value::as_str) {
                        if SIMPLE_TYPES.contains(&t) && !types.contains(&t) {
                            types.push(t);
                        }
                    }
                    match types.len() {
                        0 => None,
                        1 => Some(json!(types[0])),
                        _ => Some(json!(types)),
                    }
                }
                _ => None,
            },
            k if SUB_MAP.contains(&k) => match value {
                Value::Object(members) => {
                    let mut out = Map::new();
                    for (name, sub) in members {
                        out.insert(name.clone(), self.convert(sub, depth + 1)?);
                    }
                    Some(Value::Object(out))
                }
                _ => None,
            },
            // 3.0's tuple form; the caller stores it as `prefixItems`.
            "items" if value.is_array() => match value {
                Value::Array(list) if !list.is_empty() => {
                    let mut out = Vec::with_capacity(list.len());
                    for sub in list {
                        out.push(self.convert(sub, depth + 1)?);
                    }
                    Some(Value::Array(out))
                }
                _ => None,
            },
            k if SUB_ONE.contains(&k) => {
                if schema_like(value) {
                    Some(self.convert(value, depth + 1)?)
                } else {
                    None
                }
            }
            k if SUB_LIST.contains(&k) => match value {
                Value::Array(list) if !list.is_empty() => {
                    let mut out = Vec::with_capacity(list.len());
                    for sub in list {
                        out.push(self.convert(sub, depth + 1)?);
                    }
                    Some(Value::Array(out))
                }
                _ => None,
            },
            "enum" | "examples" => match value {
                Value::Array(_) => {
                    self.spend(count_nodes(value))?;
                    Some(value.clone())
                }
                _ => None,
            },
            "const" | "default" => {
                self.spend(count_nodes(value))?;
                Some(value.clone())
            }
            "multipleOf" => value.as_f64().filter(|n| *n > 0.0).map(|_| value.clone()),
            // With 3.0's `exclusiveMaximum: true` the bound moves there.
            "maximum" if map.get("exclusiveMaximum") == Some(&Value::Bool(true)) => None,
            "minimum" if map.get("exclusiveMinimum") == Some(&Value::Bool(true)) => None,
            "maximum" | "minimum" => value.is_number().then(|| value.clone()),
            "exclusiveMaximum" | "exclusiveMinimum" => match value {
                Value::Number(_) => Some(value.clone()),
                // 3.0's boolean form: the bound is `maximum` / `minimum`.
                Value::Bool(true) => {
                    let bound = if key == "exclusiveMaximum" {
                        "maximum"
                    } else {
                        "minimum"
                    };
                    map.get(bound).filter(|b| b.is_number()).cloned()
                }
                _ => None,
            },
            "maxLength" | "minLength" | "maxItems" | "minItems" | "maxContains" | "minContains"
            | "maxProperties" | "minProperties" => non_negative_integer(value),
            "pattern" | "format" | "title" | "description" | "contentEncoding"
            | "contentMediaType" | "$comment" => value.is_string().then(|| value.clone()),
            "uniqueItems" | "deprecated" | "readOnly" | "writeOnly" => {
                value.is_boolean().then(|| value.clone())
            }
            "required" => match value {
                Value::Array(list) => {
                    let names = unique_strings(list);
                    (!names.is_empty()).then(|| json!(names))
                }
                _ => None,
            },
            "dependentRequired" => match value {
                Value::Object(members) => {
                    let mut out = Map::new();
                    for (name, list) in members {
                        if let Value::Array(list) = list {
                            out.insert(name.clone(), json!(unique_strings(list)));
                        }
                    }
                    Some(Value::Object(out))
                }
                _ => None,
            },
            _ => None,
        })
    }

    /// The schema a `$ref` points to, converted; `{}` at a recursion point.
    fn resolve(&mut self, reference: &str, depth: usize) -> Result<Value, Fail> {
        if !reference.starts_with('#') {
            return Err(Fail::Skip(format!(
                "the reference `{}` is outside the document",
                truncate(reference, 120)
            )));
        }
        if self.stack.iter().any(|r| r == reference) {
            self.cuts.push(reference.to_owned());
            return Ok(json!({}));
        }
        if self.stack.len() >= MAX_SCHEMA_DEPTH {
            self.depth_cut = true;
            return Ok(json!({}));
        }
        if let Some(cached) = self.cache.get(reference)
            && depth + cached.height <= self.max_depth
        {
            let (nodes, value) = (cached.nodes, cached.value.clone());
            self.deepest = self.deepest.max(depth + cached.height);
            self.spend(nodes)?;
            return Ok(value);
        }
        let root = self.root;
        let target = lookup(root, reference).ok_or_else(|| {
            Fail::Skip(format!(
                "the reference `{}` does not resolve",
                truncate(reference, 120)
            ))
        })?;
        self.stack.push(reference.to_owned());
        let (outer_depth_cut, cuts_before, budget_before) =
            (self.depth_cut, self.cuts.len(), self.budget);
        self.depth_cut = false;
        let result = self.convert(target, depth);
        self.stack.pop();
        let inner_depth_cut = self.depth_cut;
        self.depth_cut = outer_depth_cut || inner_depth_cut;
        let value = result?;
        if self.cuts.len() == cuts_before && !inner_depth_cut {
            self.cache.insert(
                reference.to_owned(),
                Cached {
                    height: schema_height(&value),
                    nodes: budget_before.saturating_sub(self.budget),
                    value: value.clone(),
                },
            );
        }
        Ok(value)
    }
}

fn non_negative_integer(value: &Value) -> Option<Value> {
    if let Some(n) = value.as_u64() {
        return Some(json!(n));
    }
    let f = value.as_f64()?;
    (f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64).then(|| json!(f as u64))
}

fn unique_strings(list: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in list.iter().filter_map(Value::as_str) {
        if !out.iter().any(|n| n == name) {
            out.push(name.to_owned());
        }
    }
    out
}

fn count_nodes(value: &Value) -> usize {
    match value {
        Value::Array(list) => 1 + list.iter().map(count_nodes).sum::<usize>(),
        Value::Object(map) => 1 + map.values().map(count_nodes).sum::<usize>(),
        _ => 1,
    }
}

/// The schema, or `null`: `"null"` added to `type` when that suffices, else an `anyOf`.
fn make_nullable(schema: Value) -> Value {
    let null_schema = json!({"type": "null"});
    let Value::Object(mut map) = schema else {
        return match schema {
            Value::Bool(true) => Value::Bool(true),
            _ => null_schema,
        };
    };
    let combinators = ["allOf", "anyOf", "oneOf", "not", "if", "const"];
    let typed = matches!(
        map.get("type"),
        Some(Value::String(_)) | Some(Value::Array(_))
    );
    if map.is_empty() {
        return Value::Object(map);
    }
    if !typed || combinators.iter().any(|k| map.contains_key(*k)) {
        if map
            .get("anyOf")
            .and_then(Value::as_array)
            .is_some_and(|list| list.contains(&null_schema))
        {
            return Value::Object(map);
        }
        return json!({"anyOf": [Value::Object(map), null_schema]});
    }
    let types = match map.remove("type") {
        Some(Value::String(t)) => vec![Value::String(t)],
        Some(Value::Array(list)) => list,
        _ => Vec::new(),
    };
    let mut types = types;
    if !types.contains(&json!("null")) {
        types.push(json!("null"));
    }
    map.insert("type".into(), Value::Array(types));
    if let Some(Value::Array(values)) = map.get_mut("enum")
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
    Value::Object(map)
}

// ---------------------------------------------------------------------------------------
// Size

/// Counts bytes written.
struct Counter(usize);

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The length of `value` as compact JSON.
fn json_len(value: &Value) -> usize {
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => counter.0,
        Err(_) => usize::MAX / 4,
    }
}

fn key_len(key: &str) -> usize {
    let mut counter = Counter(0);
    match serde_json::to_writer(&mut counter, key) {
        Ok(()) => counter.0,
        Err(_) => key.len() + 2,
    }
}

/// The direct subschemas of a converted schema.
fn subschemas_mut(schema: &mut Value) -> Vec<&mut Value> {
    let mut out = Vec::new();
    if let Value::Object(map) = schema {
        for (key, value) in map.iter_mut() {
            let key = key.as_str();
            if SUB_ONE.contains(&key) {
                out.push(value);
            } else if SUB_LIST.contains(&key) {
                if let Value::Array(list) = value {
                    out.extend(list.iter_mut());
                }
            } else if SUB_MAP.contains(&key)
                && let Value::Object(members) = value
            {
                out.extend(members.values_mut());
            }
        }
    }
    out
}

fn subschemas(schema: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    if let Value::Object(map) = schema {
        for (key, value) in map {
            let key = key.as_str();
            if SUB_ONE.contains(&key) {
                out.push(value);
            } else if SUB_LIST.contains(&key) {
                if let Value::Array(list) = value {
                    out.extend(list.iter());
                }
            } else if SUB_MAP.contains(&key)
                && let Value::Object(members) = value
            {
                out.extend(members.values());
            }
        }
    }
    out
}

fn schema_height(schema: &Value) -> usize {
    subschemas(schema)
        .into_iter()
        .map(|s| 1 + schema_height(s))
        .max()
        .unwrap_or(0)
}

/// The compact JSON length of `schema`, adding each subschema's length (and one to the
/// count) at its depth in `at_depth`.
fn measure(schema: &Value, depth: usize, at_depth: &mut Vec<(usize, usize)>) -> usize {
    let len = match schema {
        Value::Object(map) => {
            let mut len = 2 + map.len().saturating_sub(1);
            for (key, value) in map {
                len += key_len(key) + 1;
                let k = key.as_str();
                len += if SUB_ONE.contains(&k) {
                    measure(value, depth + 1, at_depth)
                } else if SUB_LIST.contains(&k) && value.is_array() {
                    let list = value.as_array().map(Vec::as_slice).unwrap_or_default();
                    2 + list.len().saturating_sub(1)
                        + list
                            .iter()
                            .map(|s| measure(s, depth + 1, at_depth))
                            .sum::<usize>()
                } else if SUB_MAP.contains(&k) && value.is_object() {
                    let members = value
                        .as_object()
                        .map(|m| m.iter().collect::<Vec<_>>())
                        .unwrap_or_default();
                    2 + members.len().saturating_sub(1)
                        + members
                            .iter()
                            .map(|(name, s)| key_len(name) + 1 + measure(s, depth + 1, at_depth))
                            .sum::<usize>()
                } else {
                    json_len(value)
                };
            }
            len
        }
        other => json_len(other),
    };
    if at_depth.len() <= depth {
        at_depth.resize(depth + 1, (0, 0));
    }
    at_depth[depth].0 += len;
    at_depth[depth].1 += 1;
    len
}

/// Replaces every subschema at `depth` with `{}`.
fn cut_at(schema: &mut Value, depth: usize) {
    if depth == 0 {
        *schema = json!({});
        return;
    }
    for sub in subschemas_mut(schema) {
        cut_at(sub, depth - 1);
    }
}

/// Keeps an action's schemas under [`MAX_ACTION_SCHEMA_BYTES`] by cutting its body and
/// output schemas at the deepest depth that fits.
fn fit_schemas(action: &mut ActionDef, notes: &mut Vec<String>) {
    let fixed: usize = [
        &action.path_schema,
        &action.query_schema,
        &action.headers_schema,
    ]
    .iter()
    .filter_map(|s| s.as_ref())
    .map(json_len)
    .sum();
    let mut profiles = Vec::new();
    for schema in [&action.body_schema, &action.output_schema]
        .into_iter()
        .flatten()
    {
        let mut at_depth = Vec::new();
        let total = measure(schema, 0, &mut at_depth);
        profiles.push((total, at_depth));
    }
    let full: usize = fixed + profiles.iter().map(|(total, _)| total).sum::<usize>();
    if full <= MAX_ACTION_SCHEMA_BYTES {
        return;
    }
    let height = profiles.iter().map(|(_, at)| at.len()).max().unwrap_or(0);
    // The size with every subschema at `depth` replaced by `{}`.
    let size_cut_at = |depth: usize| -> usize {
        fixed
            + profiles
                .iter()
                .map(|(total, at)| match at.get(depth) {
                    Some((len, count)) => total.saturating_sub(*len) + 2 * count,
                    None => *total,
                })
                .sum::<usize>()
    };
    let depth = (0..height)
        .rev()
        .find(|d| size_cut_at(*d) <= MAX_ACTION_SCHEMA_BYTES)
        .unwrap_or(0);
    for schema in [&mut action.body_schema, &mut action.output_schema]
        .into_iter()
        .flatten()
    {
        cut_at(schema, depth);
    }
    notes.push(format!(
        "its schemas take {} KB: cut at depth {depth} to fit in {} KB",
        full / 1024,
        MAX_ACTION_SCHEMA_BYTES / 1024
    ));
}

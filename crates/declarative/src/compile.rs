//! The checks a definition passes when saved, and what the host derives from it: the
//! manifest (the same document a code connector's `manifest()` returns, so registry,
//! workflows, quotas and the sandbox treat both kinds alike) and one [`Plan`] per action.
//!
//! What is checked here is what needs the definition as a whole (every template variable
//! declared by a schema, no reserved header, pagination capped). JSON Schemas themselves and
//! the host patterns are checked by the host when it validates the derived manifest.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::format::{
    ActionDef, BodyDef, Definition, ErrorRule, FORMAT, MAX_PAGES_CAP, Pagination, StatusMatch,
    StatusPattern,
};
use crate::plan::Plan;
use crate::pointer;
use crate::template::{CONFIG_PREFIX, HeaderTemplate, Op, UrlTemplate};

/// A definition that passed every check: the manifest the host registers for it, and each
/// action's plan.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub definition: Definition,
    pub manifest: Value,
    pub plans: BTreeMap<String, Plan>,
}

/// Why a definition was refused: the field (a path such as `actions[2].endpoint`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for DefinitionError {}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> DefinitionError {
    DefinitionError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Headers a definition may not set: the transport's own (framing, routing) and the
/// credential's, which only the host attaches.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
    "proxy-connection",
    "authorization",
    "cookie",
];

/// Error kinds a rule may name (`http_denied` is the gate's, not an upstream's).
const RULE_KINDS: &[&str] = &[
    "success",
    "auth",
    "invalid_input",
    "not_found",
    "rate_limited",
    "upstream",
    "internal",
];

/// Parses a definition from JSON text and checks it.
pub fn compile_json(text: &str) -> Result<Compiled, DefinitionError> {
    let definition: Definition =
        serde_json::from_str(text).map_err(|e| refuse("(document)", e.to_string()))?;
    compile(definition)
}

pub fn compile(definition: Definition) -> Result<Compiled, DefinitionError> {
    if definition.format != FORMAT {
        return Err(refuse(
            "format",
            format!("must be {FORMAT:?} (this host reads that version of the format)"),
        ));
    }
    airlock_contract::connector::check_name(&definition.name).map_err(|r| refuse("name", r))?;
    airlock_contract::connector::check_version(&definition.version)
        .map_err(|r| refuse("version", r))?;
    let config_names = config_properties(definition.config_schema.as_ref())?;
    let config_required = required_of(definition.config_schema.as_ref());
    let auth_headers = auth_headers(&definition.auth)?;
    let base_host = check_base_url(&definition.base_url, &config_names)?;
    if let Some(name) = config_vars(&definition.base_url)
        .into_iter()
        .find(|name| !config_required.contains(*name))
    {
        return Err(refuse(
            "base_url",
            format!(
                "`{{config.{name}}}` is in every URL, so `config_schema` must list `{name}` in `required`"
            ),
        ));
    }
    let query_key = api_key_query_param(&definition.auth);
    for (i, host) in definition.hosts.iter().enumerate() {
        check_config_vars(&format!("hosts[{i}]"), host, &config_names)?;
    }
    check_headers(
        "headers",
        &definition.headers,
        None,
        &config_names,
        &auth_headers,
    )?;
    check_rules("errors", &definition.errors)?;
    if definition.actions.is_empty() {
        return Err(refuse("actions", "a connector needs at least one action"));
    }
    let mut hosts = vec![base_host];
    hosts.extend(definition.hosts.iter().cloned());

    let mut plans = BTreeMap::new();
    let mut actions = Vec::with_capacity(definition.actions.len());
    for (i, action) in definition.actions.iter().enumerate() {
        let at = format!("actions[{i}]");
        airlock_contract::connector::check_name(&action.name)
            .map_err(|r| refuse(format!("{at}.name"), r))?;
        check_action(&at, action, &config_names, &config_required, &auth_headers)?;
        if let Some(key) = &query_key
            && let Ok(endpoint) = UrlTemplate::parse(&action.endpoint)
            && endpoint.variables().any(|(_, var)| &var.name == key)
        {
            return Err(refuse(
                format!("{at}.endpoint"),
                format!("`{key}` is where the host puts the API key; an action cannot set it"),
            ));
        }
        let plan = Plan {
            base_url: definition.base_url.clone(),
            hosts: hosts.clone(),
            headers: merged_headers(&definition.headers, &action.headers),
            errors: action
                .errors
                .iter()
                .chain(&definition.errors)
                .cloned()
                .collect(),
            action: action.clone(),
        };
        if plans.insert(action.name.clone(), plan).is_some() {
            return Err(refuse(
                format!("{at}.name"),
                format!("duplicate action `{}`", action.name),
            ));
        }
        actions.push(manifest_action(action));
    }
    if let Some(test) = &definition.test {
        if !plans.contains_key(&test.action) {
            return Err(refuse(
                "test.action",
                format!("`{}` is not an action of this connector", test.action),
            ));
        }
        if !test.input.is_object() {
            return Err(refuse("test.input", "must be an object"));
        }
    }

    let mut manifest = json!({
        "name": definition.name,
        "version": definition.version,
        "description": definition.description,
        "auth": definition.auth,
        "hosts": hosts,
        "actions": actions,
    });
    if let (Some(schema), Some(object)) = (&definition.config_schema, manifest.as_object_mut()) {
        object.insert("config_schema".into(), schema.clone());
    }
    Ok(Compiled {
        definition,
        manifest,
        plans,
    })
}

/// The names a `{config.NAME}` may use: the config schema's properties.
fn config_properties(schema: Option<&Value>) -> Result<BTreeSet<String>, DefinitionError> {
    let Some(schema) = schema else {
        return Ok(BTreeSet::new());
    };
    object_properties("config_schema", schema)
}

/// The properties of an object schema; refuses a schema that is not `type: object`.
fn object_properties(field: &str, schema: &Value) -> Result<BTreeSet<String>, DefinitionError> {
    if schema.get("type").and_then(Value::as_str) != Some("object") {
        return Err(refuse(
            field,
            "must be a JSON Schema with `\"type\": \"object\"`",
        ));
    }
    Ok(schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default())
}

fn required_of(schema: Option<&Value>) -> BTreeSet<String> {
    schema
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The `{config.NAME}` names in `text`.
fn config_vars(text: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            break;
        };
        if let Some(name) = after[..end].strip_prefix(CONFIG_PREFIX) {
            names.push(name);
        }
        rest = &after[end + 1..];
    }
    names
}

/// The query parameter an `api_key` auth puts the key in, if it does.
fn api_key_query_param(auth: &Value) -> Option<String> {
    (auth.get("type").and_then(Value::as_str) == Some("api_key")
        && auth.get("in").and_then(Value::as_str) == Some("query"))
    .then(|| auth.get("name").and_then(Value::as_str).map(str::to_owned))
    .flatten()
}

/// The header names the auth spec fills, lowercase.
fn auth_headers(auth: &Value) -> Result<Vec<String>, DefinitionError> {
    let kind = auth
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| refuse("auth.type", "missing"))?;
    Ok(match kind {
        "api_key" if auth.get("in").and_then(Value::as_str) == Some("header") => auth
            .get("name")
            .and_then(Value::as_str)
            .map(|n| vec![n.to_ascii_lowercase()])
            .unwrap_or_default(),
        "custom_header" => auth
            .get("headers")
            .and_then(Value::as_array)
            .map(|h| {
                h.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default(),
        _ => Vec::new(),
    })
}

/// Every `{...}` of `text` must be a `{config.NAME}` the config schema declares.
fn check_config_vars(
    field: &str,
    text: &str,
    config: &BTreeSet<String>,
) -> Result<(), DefinitionError> {
    let mut rest = text;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| refuse(field, "a `{` without its `}`"))?;
        let name = &after[..end];
        let Some(key) = name.strip_prefix(CONFIG_PREFIX) else {
            return Err(refuse(
                field,
                format!("`{{{name}}}`: only `{{config.NAME}}` may appear here"),
            ));
        };
        if !config.contains(key) {
            return Err(refuse(
                field,
                format!("`{{{name}}}`: `config_schema` declares no property `{key}`"),
            ));
        }
        rest = &after[end + 1..];
    }
    if rest.contains('}') {
        return Err(refuse(field, "a `}` without its `{`"));
    }
    Ok(())
}

/// Checks the base URL and returns its host as a host pattern (`{config.NAME}` kept).
fn check_base_url(base_url: &str, config: &BTreeSet<String>) -> Result<String, DefinitionError> {
    const FIELD: &str = "base_url";
    check_config_vars(FIELD, base_url, config)?;
    let rest = base_url
        .strip_prefix("https://")
        .or_else(|| base_url.strip_prefix("http://"))
        .ok_or_else(|| refuse(FIELD, "must start with https:// (or http://)"))?;
    if base_url.contains(['?', '#']) {
        return Err(refuse(FIELD, "must not hold a query or a fragment"));
    }
    if base_url
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(refuse(
            FIELD,
            "must not hold whitespace or control characters",
        ));
    }
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err(refuse(FIELD, "must not hold a user name or password"));
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(']') || authority.starts_with('[') => {
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
                host
            } else if authority.starts_with('[') && authority.ends_with(']') {
                authority
            } else {
                return Err(refuse(FIELD, "the port must be a number"));
            }
        }
        _ => authority,
    };
    if host.is_empty() {
        return Err(refuse(FIELD, "has no host"));
    }
    // With each `{config.NAME}` read as one label, the rest must be host-name characters.
    let mut probe = String::new();
    let mut rest = host;
    while let Some(start) = rest.find('{') {
        probe.push_str(&rest[..start]);
        probe.push('a');
        let end = rest[start..]
            .find('}')
            .map_or(rest.len(), |e| start + e + 1);
        rest = &rest[end..];
    }
    probe.push_str(rest);
    let is_ip6 = probe.starts_with('[') && probe.ends_with(']');
    if !is_ip6
        && !probe
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(refuse(FIELD, "the host is not a host name"));
    }
    Ok(host.to_ascii_lowercase())
}

fn valid_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn check_headers(
    field: &str,
    headers: &BTreeMap<String, String>,
    input_headers: Option<&BTreeSet<String>>,
    config: &BTreeSet<String>,
    auth_headers: &[String],
) -> Result<(), DefinitionError> {
    let mut seen = BTreeSet::new();
    for (name, value) in headers {
        let at = format!("{field}.{name}");
        if !valid_header_name(name) {
            return Err(refuse(at, "not a valid header name"));
        }
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) || auth_headers.contains(&lower) {
            return Err(refuse(
                at,
                "a reserved header: the host sets it (credentials come from the connection)",
            ));
        }
        if !seen.insert(lower) {
            return Err(refuse(at, "set twice (header names ignore case)"));
        }
        let template = HeaderTemplate::parse(value).map_err(|e| refuse(&at, e.to_string()))?;
        for var in template.variables() {
            check_var(&at, var, input_headers, "headers_schema", config)?;
        }
    }
    Ok(())
}

/// A template variable must come from somewhere: the config schema for `config.` names, the
/// group's schema otherwise.
fn check_var(
    field: &str,
    var: &str,
    group: Option<&BTreeSet<String>>,
    group_schema: &str,
    config: &BTreeSet<String>,
) -> Result<(), DefinitionError> {
    if let Some(key) = var.strip_prefix(CONFIG_PREFIX) {
        if config.contains(key) {
            return Ok(());
        }
        return Err(refuse(
            field,
            format!("`{{{var}}}`: `config_schema` declares no property `{key}`"),
        ));
    }
    match group {
        Some(names) if names.contains(var) => Ok(()),
        _ => Err(refuse(
            field,
            format!("`{{{var}}}`: the action's `{group_schema}` declares no property `{var}`"),
        )),
    }
}

fn check_pointer(field: &str, pointer: &str) -> Result<(), DefinitionError> {
    if pointer::is_valid(pointer) {
        Ok(())
    } else {
        Err(refuse(
            field,
            format!("{pointer:?} is not a JSON Pointer (`\"\"` or `/a/0/b`)"),
        ))
    }
}

fn check_action(
    at: &str,
    action: &ActionDef,
    config: &BTreeSet<String>,
    config_required: &BTreeSet<String>,
    auth_headers: &[String],
) -> Result<(), DefinitionError> {
    let endpoint = UrlTemplate::parse(&action.endpoint)
        .map_err(|e| refuse(format!("{at}.endpoint"), e.to_string()))?;
    if !endpoint.is_relative_path() {
        return Err(refuse(
            format!("{at}.endpoint"),
            "must start with `/`, `?`, `{/x}` or `{?x}`: it is appended to `base_url`",
        ));
    }
    let group =
        |name: &str, schema: Option<&Value>| -> Result<Option<BTreeSet<String>>, DefinitionError> {
            schema
                .map(|s| object_properties(&format!("{at}.{name}"), s))
                .transpose()
        };
    let path = group("path_schema", action.path_schema.as_ref())?;
    let query = group("query_schema", action.query_schema.as_ref())?;
    let headers = group("headers_schema", action.headers_schema.as_ref())?;
    let path_required = required_of(action.path_schema.as_ref());
    for (op, var) in endpoint.variables() {
        let field = format!("{at}.endpoint");
        match op {
            Op::Simple | Op::Segment => {
                check_var(&field, &var.name, path.as_ref(), "path_schema", config)?;
                if let Some(key) = var.name.strip_prefix(CONFIG_PREFIX)
                    && !config_required.contains(key)
                {
                    return Err(refuse(
                        field,
                        format!(
                            "`{{{}}}` is in the path, so `config_schema` must list `{key}` in `required`",
                            var.name
                        ),
                    ));
                }
                if !var.name.starts_with(CONFIG_PREFIX) && !path_required.contains(&var.name) {
                    return Err(refuse(
                        field,
                        format!(
                            "`{}` is in the path, so `path_schema` must list it in `required`",
                            var.name
                        ),
                    ));
                }
            }
            Op::Query | Op::QueryContinue => {
                check_var(&field, &var.name, query.as_ref(), "query_schema", config)?;
            }
        }
    }
    check_headers(
        &format!("{at}.headers"),
        &action.headers,
        headers.as_ref(),
        config,
        auth_headers,
    )?;
    if let Some(body) = &action.body {
        check_body(&format!("{at}.body"), body)?;
    }
    if let Some(output) = &action.output {
        check_pointer(&format!("{at}.output"), output)?;
    }
    check_rules(&format!("{at}.errors"), &action.errors)?;
    if let Some(pagination) = &action.pagination {
        check_pagination(&format!("{at}.pagination"), pagination, &endpoint)?;
        if action.output.is_some() {
            return Err(refuse(
                format!("{at}.output"),
                "a paginated action's output is its pages' items: say where they are with `pagination.items`",
            ));
        }
    }
    if action.timeout_ms == Some(0) {
        return Err(refuse(format!("{at}.timeout_ms"), "must be positive"));
    }
    Ok(())
}

/// Every `{"$input": ...}` and `{"$config": ...}` of a body template holds a JSON Pointer.
fn check_body(field: &str, body: &BodyDef) -> Result<(), DefinitionError> {
    fn walk(field: &str, value: &Value, depth: usize) -> Result<(), DefinitionError> {
        if depth > 64 {
            return Err(refuse(field, "nested more than 64 levels"));
        }
        match value {
            Value::Object(map) => {
                for key in ["$input", "$config"] {
                    if let Some(pointer) = map.get(key) {
                        if map.len() != 1 {
                            return Err(refuse(
                                field,
                                format!("`{key}` must be alone in its object"),
                            ));
                        }
                        let Some(pointer) = pointer.as_str() else {
                            return Err(refuse(field, format!("`{key}` takes a JSON Pointer")));
                        };
                        return check_pointer(field, pointer);
                    }
                }
                map.values().try_for_each(|v| walk(field, v, depth + 1))
            }
            Value::Array(items) => items.iter().try_for_each(|v| walk(field, v, depth + 1)),
            _ => Ok(()),
        }
    }
    match &body.template {
        Some(template) => walk(&format!("{field}.template"), template, 0),
        None => Ok(()),
    }
}

fn check_rules(field: &str, rules: &[ErrorRule]) -> Result<(), DefinitionError> {
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("{field}[{i}]");
        if !RULE_KINDS.contains(&rule.kind.as_str()) {
            return Err(refuse(
                format!("{at}.kind"),
                format!("must be one of {}", RULE_KINDS.join(", ")),
            ));
        }
        let patterns: &[StatusPattern] = match &rule.status {
            None => &[],
            Some(StatusMatch::One(p)) => std::slice::from_ref(p),
            Some(StatusMatch::Any(ps)) => ps,
        };
        for pattern in patterns {
            let ok = match pattern {
                StatusPattern::Code(code) => (100..=599).contains(code),
                StatusPattern::Class(class) => {
                    let b = class.as_bytes();
                    b.len() == 3
                        && (b'1'..=b'5').contains(&b[0])
                        && b[1..].iter().all(|c| c.eq_ignore_ascii_case(&b'x'))
                }
            };
            if !ok {
                return Err(refuse(
                    format!("{at}.status"),
                    "a status (100-599) or a class (`4xx`)",
                ));
            }
        }
        if let Some(when) = &rule.when {
            check_pointer(&format!("{at}.when.pointer"), &when.pointer)?;
        }
        if let Some(header) = &rule.when_header
            && !valid_header_name(&header.name)
        {
            return Err(refuse(
                format!("{at}.when_header.name"),
                "not a valid header name",
            ));
        }
        if let Some(message) = &rule.message {
            check_pointer(&format!("{at}.message"), message)?;
        }
        if rule.status.is_none()
            && rule.when.is_none()
            && rule.when_header.is_none()
            && rule.kind == "success"
        {
            return Err(refuse(
                at,
                "a rule without `status` or `when` cannot be `success`",
            ));
        }
    }
    Ok(())
}

fn check_pagination(
    field: &str,
    pagination: &Pagination,
    endpoint: &UrlTemplate,
) -> Result<(), DefinitionError> {
    let max = pagination.max_pages();
    if max == 0 || max > MAX_PAGES_CAP {
        return Err(refuse(
            format!("{field}.max_pages"),
            format!("must be 1 to {MAX_PAGES_CAP}"),
        ));
    }
    check_pointer(&format!("{field}.items"), pagination.items())?;
    let param = |name: &str, value: &str| -> Result<(), DefinitionError> {
        if value.is_empty() || value.len() > 128 || value.chars().any(|c| c.is_control()) {
            return Err(refuse(format!("{field}.{name}"), "a query parameter name"));
        }
        if endpoint.has_query_var(value) {
            return Err(refuse(
                format!("{field}.{name}"),
                format!("`{value}` is set by the pagination; drop it from the endpoint's query"),
            ));
        }
        Ok(())
    };
    match pagination {
        Pagination::Page {
            param: p,
            size_param,
            ..
        } => {
            param("param", p)?;
            if let Some(size) = size_param {
                param("size_param", size)?;
            }
        }
        Pagination::Offset {
            param: p,
            limit_param,
            limit,
            ..
        } => {
            param("param", p)?;
            param("limit_param", limit_param)?;
            if *limit == 0 {
                return Err(refuse(format!("{field}.limit"), "must be positive"));
            }
        }
        Pagination::Cursor {
            param: p,
            cursor,
            cursor_from_last_item,
            has_more,
            ..
        } => {
            param("param", p)?;
            match (cursor, cursor_from_last_item) {
                (Some(pointer), None) => check_pointer(&format!("{field}.cursor"), pointer)?,
                (None, Some(pointer)) => {
                    check_pointer(&format!("{field}.cursor_from_last_item"), pointer)?
                }
                _ => {
                    return Err(refuse(
                        field,
                        "set one of `cursor` and `cursor_from_last_item`",
                    ));
                }
            }
            if let Some(pointer) = has_more {
                check_pointer(&format!("{field}.has_more"), pointer)?;
            }
        }
        Pagination::NextLink { from, pointer, .. } => match (from, pointer) {
            (crate::format::LinkSource::Body, Some(pointer)) => {
                check_pointer(&format!("{field}.pointer"), pointer)?
            }
            (crate::format::LinkSource::Body, None) => {
                return Err(refuse(
                    format!("{field}.pointer"),
                    "`from: body` needs the pointer to the next link",
                ));
            }
            (crate::format::LinkSource::Header, Some(_)) => {
                return Err(refuse(
                    format!("{field}.pointer"),
                    "`from: header` reads the `Link` header; drop `pointer`",
                ));
            }
            (crate::format::LinkSource::Header, None) => {}
        },
    }
    Ok(())
}

/// The connector's headers overlaid with the action's (same name ignoring case: the action's).
fn merged_headers(
    connector: &BTreeMap<String, String>,
    action: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut merged: BTreeMap<String, String> = connector
        .iter()
        .filter(|(name, _)| !action.keys().any(|a| a.eq_ignore_ascii_case(name)))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    merged.extend(action.iter().map(|(n, v)| (n.clone(), v.clone())));
    merged
}

/// The action as the manifest lists it: its input is `{path, query, headers, body}`, each
/// group present only when the action declares its schema, required when that schema
/// requires something (the body: whenever the action declares one).
fn manifest_action(action: &ActionDef) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (group, schema) in [
        ("path", &action.path_schema),
        ("query", &action.query_schema),
        ("headers", &action.headers_schema),
    ] {
        if let Some(schema) = schema {
            properties.insert(group.into(), schema.clone());
            if !required_of(Some(schema)).is_empty() {
                required.push(group);
            }
        }
    }
    if let Some(schema) = &action.body_schema {
        properties.insert("body".into(), schema.clone());
        if action.body_required {
            required.push("body");
        }
    }
    let output_schema = match (&action.output_schema, &action.pagination) {
        (Some(schema), _) => schema.clone(),
        (None, Some(_)) => json!({"type": "array"}),
        (None, None) => json!({}),
    };
    let mut spec = json!({
        "name": action.name,
        "description": action.description,
        "input_schema": {
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        },
        "output_schema": output_schema,
    });
    if let Some(object) = spec.as_object_mut() {
        if let Some(timeout) = action.timeout_ms {
            object.insert("timeout_ms".into(), json!(timeout));
        }
        if let Some(retry) = &action.retry {
            object.insert("retry".into(), retry.clone());
        }
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition(actions: Value) -> Value {
        json!({
            "format": FORMAT,
            "name": "crm",
            "version": "1.0.0",
            "auth": {"type": "api_key", "in": "header", "name": "X-Api-Key"},
            "base_url": "https://{config.subdomain}.crm.test/api",
            "config_schema": {"type": "object", "required": ["subdomain"],
                "properties": {"subdomain": {"type": "string"}, "account": {"type": "string"}}},
            "headers": {"X-Account": "{config.account}"},
            "actions": actions,
        })
    }

    fn get_contact() -> Value {
        json!({
            "name": "get_contact",
            "method": "GET",
            "endpoint": "/contacts/{id}{?fields}",
            "path_schema": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}},
            "query_schema": {"type": "object", "properties": {"fields": {"type": "string"}}},
            "output": "/contact",
        })
    }

    fn compile_value(value: Value) -> Result<Compiled, DefinitionError> {
        compile_json(&value.to_string())
    }

    fn refused_field(value: Value) -> String {
        compile_value(value).expect_err("refused").field
    }

    #[test]
    fn derives_the_manifest_and_the_plans() {
        let compiled = compile_value(definition(json!([get_contact()]))).expect("valid");
        let manifest = &compiled.manifest;
        assert_eq!(manifest["hosts"], json!(["{config.subdomain}.crm.test"]));
        assert_eq!(manifest["config_schema"]["required"], json!(["subdomain"]));
        let input = &manifest["actions"][0]["input_schema"];
        assert_eq!(input["required"], json!(["path"]));
        assert_eq!(input["additionalProperties"], json!(false));
        assert_eq!(
            input["properties"]["path"]["properties"]["id"]["type"],
            "integer"
        );
        let plan = &compiled.plans["get_contact"];
        assert_eq!(plan.headers["X-Account"], "{config.account}");
        assert_eq!(plan.hosts, vec!["{config.subdomain}.crm.test".to_owned()]);
    }

    #[test]
    fn config_in_urls_must_be_required_and_the_api_key_parameter_is_the_hosts() {
        let mut optional = definition(json!([get_contact()]));
        optional["config_schema"]["required"] = json!([]);
        assert_eq!(refused_field(optional), "base_url");
        let mut path = get_contact();
        path["endpoint"] = json!("/{config.account}/contacts/{id}");
        assert_eq!(
            refused_field(definition(json!([path]))),
            "actions[0].endpoint"
        );
        let mut key = definition(json!([get_contact()]));
        key["auth"] = json!({"type": "api_key", "in": "query", "name": "fields"});
        assert_eq!(refused_field(key), "actions[0].endpoint");
        let mut paged = get_contact();
        paged["pagination"] = json!({"type": "page", "param": "page", "max_pages": 3});
        assert_eq!(
            refused_field(definition(json!([paged]))),
            "actions[0].output"
        );
    }

    #[test]
    fn a_body_is_required_unless_the_action_says_otherwise() {
        let mut action = get_contact();
        action["method"] = json!("POST");
        action["body_schema"] = json!({"type": "object"});
        let compiled = compile_value(definition(json!([action.clone()]))).expect("valid");
        let required = &compiled.manifest["actions"][0]["input_schema"]["required"];
        assert_eq!(required, &json!(["path", "body"]));
        action["body_required"] = json!(false);
        let compiled = compile_value(definition(json!([action]))).expect("valid");
        let required = &compiled.manifest["actions"][0]["input_schema"]["required"];
        assert_eq!(required, &json!(["path"]));
    }

    #[test]
    fn the_contract_names_are_accepted_as_aliases() {
        let mut action = get_contact();
        let object = action.as_object_mut().expect("object");
        let endpoint = object.remove("endpoint").expect("set");
        object.insert("endpointTemplate".into(), endpoint);
        let schema = object.remove("path_schema").expect("set");
        object.insert("pathSchema".into(), schema);
        assert!(compile_value(definition(json!([action]))).is_ok());
    }

    #[test]
    fn every_template_variable_needs_a_schema() {
        let mut undeclared = get_contact();
        undeclared["endpoint"] = json!("/contacts/{id}/{other}");
        assert_eq!(
            refused_field(definition(json!([undeclared]))),
            "actions[0].endpoint"
        );
        let mut optional_path = get_contact();
        optional_path["path_schema"]["required"] = json!([]);
        assert_eq!(
            refused_field(definition(json!([optional_path]))),
            "actions[0].endpoint"
        );
        let mut config = get_contact();
        config["endpoint"] = json!("/{config.region}/contacts/{id}");
        assert_eq!(
            refused_field(definition(json!([config]))),
            "actions[0].endpoint"
        );
        let mut header = get_contact();
        header["headers"] = json!({"X-Trace": "{trace}"});
        assert_eq!(
            refused_field(definition(json!([header]))),
            "actions[0].headers.X-Trace"
        );
    }

    #[test]
    fn endpoints_cannot_leave_the_base_url() {
        for endpoint in ["{id}", "evil.test/x", "//evil.test/x", "{&fields}"] {
            let mut action = get_contact();
            action["endpoint"] = json!(endpoint);
            let error = compile_value(definition(json!([action]))).expect_err(endpoint);
            assert_eq!(error.field, "actions[0].endpoint", "{endpoint}: {error}");
        }
    }

    #[test]
    fn refuses_reserved_and_credential_headers() {
        for name in [
            "Authorization",
            "cookie",
            "Host",
            "Content-Length",
            "x-api-key",
        ] {
            let mut action = get_contact();
            action["headers"] = json!({name: "x"});
            let error = compile_value(definition(json!([action]))).expect_err(name);
            assert!(error.reason.contains("reserved"), "{name}: {error}");
        }
        let mut bad = get_contact();
        bad["headers"] = json!({"X-A": "a\r\nX-B: b"});
        assert!(compile_value(definition(json!([bad]))).is_err());
    }

    #[test]
    fn checks_the_base_url() {
        for base in [
            "ftp://x.test",
            "https://x.test/?q=1",
            "https://user@x.test",
            "https://{config.missing}.test",
            "https://{subdomain}.test",
            "https://x y.test",
            "https://x.test:port",
            "https://",
        ] {
            let mut value = definition(json!([get_contact()]));
            value["base_url"] = json!(base);
            assert_eq!(refused_field(value), "base_url", "{base}");
        }
    }

    #[test]
    fn pagination_needs_a_cap_and_a_consistent_shape() {
        for (pagination, field) in [
            (
                json!({"type": "page", "param": "page", "max_pages": 0}),
                "actions[0].pagination.max_pages",
            ),
            (
                json!({"type": "page", "param": "page", "max_pages": 100_000}),
                "actions[0].pagination.max_pages",
            ),
            (
                json!({"type": "page", "param": "fields", "max_pages": 5}),
                "actions[0].pagination.param",
            ),
            (
                json!({"type": "cursor", "param": "c", "max_pages": 5}),
                "actions[0].pagination",
            ),
            (
                json!({"type": "next_link", "from": "body", "max_pages": 5}),
                "actions[0].pagination.pointer",
            ),
            (
                json!({"type": "offset", "param": "o", "limit_param": "l", "limit": 0, "max_pages": 5}),
                "actions[0].pagination.limit",
            ),
        ] {
            let mut action = get_contact();
            action["pagination"] = pagination.clone();
            assert_eq!(
                refused_field(definition(json!([action]))),
                field,
                "{pagination}"
            );
        }
        let mut missing = get_contact();
        missing["pagination"] = json!({"type": "page", "param": "page"});
        assert!(compile_value(definition(json!([missing]))).is_err());
    }

    #[test]
    fn checks_rules_names_and_the_test_call() {
        let mut rule = get_contact();
        rule["errors"] = json!([{"status": "6xx", "kind": "auth"}]);
        assert_eq!(
            refused_field(definition(json!([rule]))),
            "actions[0].errors[0].status"
        );
        let mut kind = get_contact();
        kind["errors"] = json!([{"status": 404, "kind": "http_denied"}]);
        assert_eq!(
            refused_field(definition(json!([kind]))),
            "actions[0].errors[0].kind"
        );
        assert_eq!(
            refused_field(definition(json!([get_contact(), get_contact()]))),
            "actions[1].name"
        );
        let mut test = definition(json!([get_contact()]));
        test["test"] = json!({"action": "nope"});
        assert_eq!(refused_field(test), "test.action");
        let mut format = definition(json!([get_contact()]));
        format["format"] = json!("airlock.declarative/v2");
        assert_eq!(refused_field(format), "format");
        let mut unknown = definition(json!([get_contact()]));
        unknown["extra"] = json!(1);
        assert_eq!(refused_field(unknown), "(document)");
    }
}

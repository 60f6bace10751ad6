//! The `transform` connector: pure JSON reshaping (map by JSON pointer, pick, rename, string
//! templates) with no network access and no auth.
//!
//! Missing data is treated the same way everywhere: `map` yields `null` for a pointer that
//! finds nothing (or fails with `strict: true`), `pick` and `rename` skip absent fields, and
//! `template` fails, since a message with a silent hole is worse than no message.

use std::collections::BTreeMap;

use airlock_sdk::prelude::*;
use serde_json::{Map, Value};

pub struct Transform;

impl Connector for Transform {
    fn definition() -> Definition {
        Definition::new("transform", env!("CARGO_PKG_VERSION"))
            .description("Reshape JSON: map fields by JSON pointer, pick, rename, fill templates")
            .action(Action::new("map", map).description(
                "Build an object whose fields are values picked from `data` by JSON pointer",
            ))
            .action(Action::new("pick", pick).description("Keep only the listed top-level fields"))
            .action(
                Action::new("rename", rename)
                    .description("Rename top-level fields, keeping the others"),
            )
            .action(Action::new("template", template).description(
                "Fill a text template: `{{/pointer}}` is replaced by that value of `data`",
            ))
    }
}

airlock_sdk::export_connector!(Transform);

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MapInput {
    /// Any JSON document to read from.
    pub data: Value,
    /// Output field name -> JSON pointer (RFC 6901) into `data`, e.g. `"/user/login"`.
    pub mapping: BTreeMap<String, String>,
    /// Fail with invalid-input when a pointer finds nothing, instead of yielding `null`.
    #[serde(default)]
    pub strict: bool,
}

fn map(_cx: &Context, input: MapInput) -> Result<Map<String, Value>, ConnectorError> {
    let mut out = Map::new();
    for (field, pointer) in input.mapping {
        let value = lookup(&input.data, &pointer)?;
        let value = match value {
            Some(v) => v.clone(),
            None if input.strict => {
                return Err(ConnectorError::invalid_input(format_args!(
                    "field {field:?}: pointer {pointer:?} finds nothing in data"
                )));
            }
            None => Value::Null,
        };
        out.insert(field, value);
    }
    Ok(out)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PickInput {
    pub data: Map<String, Value>,
    /// Top-level field names to keep; names absent from `data` are skipped.
    pub fields: Vec<String>,
}

fn pick(_cx: &Context, mut input: PickInput) -> Result<Map<String, Value>, ConnectorError> {
    Ok(input
        .fields
        .iter()
        .filter_map(|f| input.data.remove(f).map(|v| (f.clone(), v)))
        .collect())
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameInput {
    pub data: Map<String, Value>,
    /// Old name -> new name. A renamed field replaces a kept field of the same name.
    pub fields: BTreeMap<String, String>,
}

fn rename(_cx: &Context, mut input: RenameInput) -> Result<Map<String, Value>, ConnectorError> {
    // Take the renamed values out first, so `{a: b, b: a}` swaps instead of clobbering.
    let moved: Vec<(String, Value)> = input
        .fields
        .into_iter()
        .filter_map(|(old, new)| input.data.remove(&old).map(|v| (new, v)))
        .collect();
    input.data.extend(moved);
    Ok(input.data)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateInput {
    /// Text with `{{/json/pointer}}` placeholders. Strings are inserted as they are, other
    /// values as JSON.
    pub template: String,
    pub data: Value,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TemplateOutput {
    pub text: String,
}

fn template(_cx: &Context, input: TemplateInput) -> Result<TemplateOutput, ConnectorError> {
    let mut text = String::with_capacity(input.template.len());
    let mut rest = input.template.as_str();
    while let Some(start) = rest.find("{{") {
        text.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| {
            ConnectorError::invalid_input(format_args!(
                "unclosed '{{{{' before {:?}",
                &rest[start..]
            ))
        })?;
        let pointer = after[..end].trim();
        match lookup(&input.data, pointer)? {
            Some(Value::String(s)) => text.push_str(s),
            Some(other) => text.push_str(&other.to_string()),
            None => {
                return Err(ConnectorError::invalid_input(format_args!(
                    "template placeholder {pointer:?} finds nothing in data"
                )));
            }
        }
        rest = &after[end + 2..];
    }
    text.push_str(rest);
    Ok(TemplateOutput { text })
}

/// Resolves an RFC 6901 pointer. A malformed pointer is an error rather than "not found", so
/// a typo such as `user/login` (no leading slash) does not silently yield nothing.
fn lookup<'v>(data: &'v Value, pointer: &str) -> Result<Option<&'v Value>, ConnectorError> {
    if !pointer.is_empty() && !pointer.starts_with('/') {
        return Err(ConnectorError::invalid_input(format_args!(
            "{pointer:?} is not a JSON pointer: it must be empty or start with '/'"
        )));
    }
    Ok(data.pointer(pointer))
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_sdk::testing::MockHost;
    use serde_json::json;

    fn run(action: &str, input: Value) -> Result<Value, ConnectorError> {
        MockHost::new().invoke::<Transform>(action, input)
    }

    fn kind(result: Result<Value, ConnectorError>) -> Option<ErrorKind> {
        result.err().map(|e| e.kind)
    }

    #[test]
    fn manifest_declares_no_hosts_no_auth_and_all_actions() {
        let manifest = MockHost::new().manifest::<Transform>();
        assert_eq!(manifest["name"], "transform");
        assert_eq!(manifest["hosts"], json!([]));
        assert_eq!(manifest["auth"], json!({"type": "none"}));
        let names: Vec<&str> = manifest["actions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["name"].as_str())
            .collect();
        assert_eq!(names, ["map", "pick", "rename", "template"]);
    }

    #[test]
    fn map_picks_values_by_pointer_and_nulls_missing_ones() {
        let out = run(
            "map",
            json!({
                "data": {"user": {"login": "octo"}, "tags": ["a", "b"]},
                "mapping": {"who": "/user/login", "second": "/tags/1", "all": "", "gone": "/nope"}
            }),
        );
        assert_eq!(
            out,
            Ok(json!({
                "who": "octo",
                "second": "b",
                "all": {"user": {"login": "octo"}, "tags": ["a", "b"]},
                "gone": null
            }))
        );
    }

    #[test]
    fn map_strict_rejects_missing_values() {
        let input = json!({"data": {}, "mapping": {"x": "/x"}, "strict": true});
        assert_eq!(kind(run("map", input)), Some(ErrorKind::InvalidInput));
    }

    #[test]
    fn malformed_pointer_is_invalid_input() {
        let input = json!({"data": {"a": 1}, "mapping": {"x": "a"}});
        assert_eq!(kind(run("map", input)), Some(ErrorKind::InvalidInput));
    }

    #[test]
    fn pick_keeps_listed_fields_and_skips_absent_ones() {
        let out = run(
            "pick",
            json!({"data": {"a": 1, "b": 2, "c": 3}, "fields": ["c", "a", "z"]}),
        );
        assert_eq!(out, Ok(json!({"a": 1, "c": 3})));
    }

    #[test]
    fn pick_requires_an_object() {
        let out = run("pick", json!({"data": [1, 2], "fields": ["a"]}));
        assert_eq!(kind(out), Some(ErrorKind::InvalidInput));
    }

    #[test]
    fn rename_moves_fields_and_can_swap() {
        let out = run(
            "rename",
            json!({"data": {"a": 1, "b": 2, "c": 3}, "fields": {"a": "b", "b": "a"}}),
        );
        assert_eq!(out, Ok(json!({"a": 2, "b": 1, "c": 3})));
    }

    #[test]
    fn template_fills_placeholders() {
        let out = run(
            "template",
            json!({"template": "Hello {{/name}}, you have {{ /count }} new {{/what/0}}", "data": {"name": "Ada", "count": 3, "what": ["issues"]}}),
        );
        assert_eq!(out, Ok(json!({"text": "Hello Ada, you have 3 new issues"})));
    }

    #[test]
    fn template_rejects_holes_and_unclosed_placeholders() {
        let missing = run("template", json!({"template": "Hi {{/name}}", "data": {}}));
        assert_eq!(kind(missing), Some(ErrorKind::InvalidInput));
        let unclosed = run(
            "template",
            json!({"template": "Hi {{/name", "data": {"name": "x"}}),
        );
        assert_eq!(kind(unclosed), Some(ErrorKind::InvalidInput));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let out = run("pick", json!({"data": {}, "fields": [], "extra": true}));
        assert_eq!(kind(out), Some(ErrorKind::InvalidInput));
    }
}

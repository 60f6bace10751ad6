//! A workflow's definition: an ordered list of steps, each one action of one connector, with
//! an input built by the host from the trigger payload and earlier steps' outputs.
//!
//! Input mapping: a step's `input` is a JSON template. Any object of exactly one member
//! `{"$from": "<pointer>"}` is replaced by the value at that RFC 6901 JSON Pointer into the
//! run's context, whose root has `trigger` (the run's input) and `steps` (each finished
//! step's output by step id): `/trigger/repo`, `/steps/fetch/items/0/id`; with a second
//! member `"default": v`, `v` stands in when nothing is there (a skipped step's output, an
//! optional field). An object of exactly one member `{"$literal": v}` stands for `v` as
//! written (to pass an object that itself has a `$from` member). Everything else is copied
//! as it is.
//!
//! A step with a `when` predicate ([`crate::predicate`]) runs only when it holds; otherwise
//! it is skipped (journaled as such, no output), and a later reference into it without a
//! `default` fails the step that makes it ([`MappingError::skipped_step`]).
//!
//! Checked at save ([`WorkflowSpec::validate`]): step ids, that every pointer names the
//! trigger or an *earlier* step, and that an object with a `$from` or `$literal` member has no
//! other member (`{"$from": "/trigger/a", "x": 1}` would otherwise be copied as it is, its
//! `$from` silently unused). Checked at run time ([`StepSpec::build_input`]): the
//! pointed-at value exists.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::manifest::RetryPolicy;
use crate::predicate::Predicate;

/// Steps in one workflow.
pub const MAX_STEPS: usize = 50;
/// `matches` patterns in all of a workflow's conditions: a parsed version is cached by the
/// workers, so what its compiled patterns hold is bounded per version.
pub const MAX_WORKFLOW_PATTERNS: usize = 16;
/// Attempts of one step, whatever the manifest or the step asks for.
pub const MAX_ATTEMPTS_CAP: u32 = 10;
/// The longest wait between two attempts.
pub const MAX_BACKOFF_CAP_MS: u64 = 60 * 60 * 1000;
/// The policy of a step that names none and whose action's manifest declares none: one
/// attempt. The connector guide's contract: a connector leaves `retry` off for actions that
/// are not safe to repeat (creating things), so the host never repeats them on its own; a
/// workflow that knows better says so with the step's `retry`.
pub const NO_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 1,
    initial_backoff_ms: 1_000,
    max_backoff_ms: 60_000,
};

pub(crate) const FROM: &str = "$from";
const DEFAULT: &str = "default";

/// `{"$from": "<pointer>"}`, or with a `default` beside it.
fn is_reference(object: &Map<String, Value>) -> bool {
    object.contains_key(FROM)
        && (object.len() == 1 || (object.len() == 2 && object.contains_key(DEFAULT)))
}
const LITERAL: &str = "$literal";

/// What a workflow version runs. Immutable once saved: a change is a new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    pub steps: Vec<StepSpec>,
}

/// One step: an action of a connector, with its input mapping and retry policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    /// Unique in the workflow: 1-64 of `a-z`, `0-9`, `_`, `-`, starting with a letter.
    pub id: String,
    pub connector: String,
    /// A pinned connector version; absent: the newest not deprecated when the step runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub action: String,
    /// The connection (id) the step runs with, for connectors that need a credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The input template (see the module documentation). Absent: `{}`.
    #[serde(default = "empty_object")]
    pub input: Value,
    /// Overrides the action's manifest `retry` (absent in both: [`NO_RETRY`], one attempt);
    /// clamped by [`MAX_ATTEMPTS_CAP`] and [`MAX_BACKOFF_CAP_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// The step's wall-clock budget; clamped by the tenant's `timeout_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Run the step only when this holds (over the trigger and earlier steps); otherwise
    /// it is skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Predicate>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// Why a definition was refused at save. Names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct WorkflowError {
    pub field: String,
    pub reason: String,
}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> WorkflowError {
    WorkflowError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Why a step's input could not be built at run time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match skipped_step {
    Some(step) => format!("input mapping: `{pointer}` reads step `{step}`, which was skipped (give the reference a `default`)"),
    None => format!("input mapping: nothing at `{pointer}`"),
})]
pub struct MappingError {
    pub pointer: String,
    /// The pointer reads a step that was skipped (its `when` did not hold).
    pub skipped_step: Option<String>,
}

impl WorkflowSpec {
    /// The structural checks that need no database: step count and ids, pointers that name
    /// only the trigger or earlier steps, retry and timeout values.
    pub fn validate(&self) -> Result<(), WorkflowError> {
        if self.steps.is_empty() {
            return Err(refuse("steps", "a workflow needs at least one step"));
        }
        if self.steps.len() > MAX_STEPS {
            return Err(refuse(
                "steps",
                format!("at most {MAX_STEPS} steps, got {}", self.steps.len()),
            ));
        }
        let patterns: usize = self
            .steps
            .iter()
            .filter_map(|s| s.when.as_ref())
            .map(Predicate::patterns)
            .sum();
        if patterns > MAX_WORKFLOW_PATTERNS {
            return Err(refuse(
                "steps",
                format!(
                    "the conditions of a workflow have at most {MAX_WORKFLOW_PATTERNS} `matches` in all, got {patterns}"
                ),
            ));
        }
        let mut earlier = BTreeSet::new();
        for (i, step) in self.steps.iter().enumerate() {
            let at = |field: &str| format!("steps[{i}].{field}");
            check_step_id(&step.id).map_err(|reason| refuse(at("id"), reason))?;
            for (field, value) in [
                ("connector", Some(&step.connector)),
                ("action", Some(&step.action)),
                ("version", step.version.as_ref()),
                ("connection", step.connection.as_ref()),
            ] {
                if let Some(value) = value
                    && (value.is_empty()
                        || value.chars().count() > 200
                        || !airlock_contract::names::is_clean(value))
                {
                    return Err(refuse(
                        at(field),
                        "must be 1-200 characters without control, bidi or invisible characters",
                    ));
                }
            }
            let mut pointers = Vec::new();
            collect_pointers(&step.input, "", &mut pointers).map_err(|(path, reason)| {
                refuse(
                    format!("{}{path}", at("input")),
                    format!("step `{}`: {reason}", step.id),
                )
            })?;
            for (path, pointer) in pointers {
                check_reference(pointer, &earlier).map_err(|reason| {
                    refuse(
                        format!("{}{path}", at("input")),
                        format!("step `{}`: {reason}", step.id),
                    )
                })?;
            }
            if let Some(retry) = &step.retry {
                if retry.max_attempts == 0 || retry.max_attempts > MAX_ATTEMPTS_CAP {
                    return Err(refuse(
                        at("retry.max_attempts"),
                        format!("must be 1-{MAX_ATTEMPTS_CAP}"),
                    ));
                }
                if retry.initial_backoff_ms > retry.max_backoff_ms {
                    return Err(refuse(
                        at("retry.initial_backoff_ms"),
                        "must not exceed max_backoff_ms",
                    ));
                }
            }
            if let Some(when) = &step.when {
                for pointer in when.pointers() {
                    check_reference(pointer, &earlier).map_err(|reason| {
                        refuse(at("when"), format!("step `{}`: {reason}", step.id))
                    })?;
                }
            }
            if step.timeout_ms == Some(0) {
                return Err(refuse(at("timeout_ms"), "must be at least 1"));
            }
            if !earlier.insert(step.id.as_str()) {
                return Err(refuse(
                    at("id"),
                    format!("step id `{}` is used twice", step.id),
                ));
            }
        }
        Ok(())
    }

    /// The index of the step with id `id`.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.id == id)
    }
}

impl StepSpec {
    /// The step's input: the template with every `$from` replaced from `trigger` and the
    /// finished steps' `outputs`, every `$literal` unwrapped.
    pub fn build_input(
        &self,
        trigger: &Value,
        outputs: &BTreeMap<String, Value>,
    ) -> Result<Value, MappingError> {
        build(&self.input, trigger, outputs)
    }

    /// The retry policy: the step's, else the action's (`declared`), else [`NO_RETRY`] (one
    /// attempt); clamped by the caps.
    pub fn retry_policy(&self, declared: Option<RetryPolicy>) -> RetryPolicy {
        let policy = self.retry.or(declared).unwrap_or(NO_RETRY);
        let max_backoff_ms = policy.max_backoff_ms.min(MAX_BACKOFF_CAP_MS);
        RetryPolicy {
            max_attempts: policy.max_attempts.clamp(1, MAX_ATTEMPTS_CAP),
            initial_backoff_ms: policy.initial_backoff_ms.min(max_backoff_ms),
            max_backoff_ms,
        }
    }
}

/// Step ids appear in pointers (`/steps/<id>/...`) and idempotency keys, so they are kept
/// to characters that need no escaping in either.
fn check_step_id(id: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "step id `{id}` must be 1-64 of a-z, 0-9, `_`, `-`, starting with a letter"
        ))
    }
}

/// Every `$from` pointer in `template`, with the template path it was found at.
fn collect_pointers<'a>(
    template: &'a Value,
    path: &str,
    found: &mut Vec<(String, &'a str)>,
) -> Result<(), (String, String)> {
    match template {
        Value::Object(object) if is_reference(object) => match &object[FROM] {
            Value::String(pointer) => {
                found.push((path.to_owned(), pointer.as_str()));
                Ok(())
            }
            _ => Err((
                format!("{path}/$from"),
                "`$from` must be a JSON Pointer string".into(),
            )),
        },
        Value::Object(object) if object.len() == 1 && object.contains_key(LITERAL) => Ok(()),
        // A marker with company is neither a reference nor plain data: refused, so that a
        // typo or a misplaced key cannot turn a reference into a literal copy unnoticed.
        Value::Object(object) if object.contains_key(FROM) || object.contains_key(LITERAL) => {
            let marker = if object.contains_key(FROM) {
                FROM
            } else {
                LITERAL
            };
            let others: Vec<String> = object
                .keys()
                .filter(|key| {
                    key.as_str() != marker && !(marker == FROM && key.as_str() == DEFAULT)
                })
                .map(|key| format!("`{key}`"))
                .collect();
            let besides = if marker == FROM {
                " (besides an optional `default`)"
            } else {
                ""
            };
            Err((
                path.to_owned(),
                format!(
                    "`{marker}` must be the only member of its object{besides}, but it has {} beside it (to pass such an object as data, wrap it: {{\"$literal\": …}})",
                    others.join(", ")
                ),
            ))
        }
        Value::Object(object) => {
            for (key, value) in object {
                collect_pointers(value, &format!("{path}/{}", escape(key)), found)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                collect_pointers(value, &format!("{path}/{i}"), found)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A pointer must be RFC 6901 and start at the trigger or at an earlier step.
fn check_reference(pointer: &str, earlier: &BTreeSet<&str>) -> Result<(), String> {
    let tokens = tokens(pointer).ok_or_else(|| {
        format!("`{pointer}` is not a JSON Pointer (RFC 6901: empty, or `/`-separated tokens with `~0`, `~1` escapes)")
    })?;
    match tokens.first().map(String::as_str) {
        Some("trigger") => Ok(()),
        Some("steps") => match tokens.get(1) {
            Some(id) if earlier.contains(id.as_str()) => Ok(()),
            Some(id) => Err(format!(
                "`{pointer}` names step `{id}`, which is not an earlier step"
            )),
            None => Err(format!("`{pointer}` must name a step: /steps/<id>/...")),
        },
        _ => Err(format!(
            "`{pointer}` must start with /trigger or /steps/<earlier step id>"
        )),
    }
}

/// The unescaped reference tokens of an RFC 6901 pointer; `None` if it is not one.
pub(crate) fn tokens(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return None,
                    }
                } else {
                    out.push(c);
                }
            }
            Some(out)
        })
        .collect()
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn build(
    template: &Value,
    trigger: &Value,
    outputs: &BTreeMap<String, Value>,
) -> Result<Value, MappingError> {
    match template {
        Value::Object(object) if is_reference(object) => {
            let pointer = object[FROM].as_str().unwrap_or_default();
            if let Some(found) = resolve(pointer, trigger, outputs) {
                return Ok(found.clone());
            }
            if let Some(default) = object.get(DEFAULT) {
                return Ok(default.clone());
            }
            // Every step a reference may name ran before: one without an output was skipped.
            let skipped_step = tokens(pointer).and_then(|t| match t.as_slice() {
                [root, id, ..] if root == "steps" && !outputs.contains_key(id) => Some(id.clone()),
                _ => None,
            });
            Err(MappingError {
                pointer: pointer.to_owned(),
                skipped_step,
            })
        }
        Value::Object(object) if object.len() == 1 && object.contains_key(LITERAL) => {
            Ok(object[LITERAL].clone())
        }
        Value::Object(object) => object
            .iter()
            .map(|(key, value)| Ok((key.clone(), build(value, trigger, outputs)?)))
            .collect::<Result<Map<_, _>, _>>()
            .map(Value::Object),
        Value::Array(items) => items
            .iter()
            .map(|value| build(value, trigger, outputs))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// The value at `pointer` in the context `{trigger, steps: outputs}`, without building it.
pub(crate) fn resolve<'a>(
    pointer: &str,
    trigger: &'a Value,
    outputs: &'a BTreeMap<String, Value>,
) -> Option<&'a Value> {
    resolve_tokens(&tokens(pointer)?, trigger, outputs)
}

/// [`resolve`] of a pointer already split into its tokens.
pub(crate) fn resolve_tokens<'a>(
    tokens: &[String],
    trigger: &'a Value,
    outputs: &'a BTreeMap<String, Value>,
) -> Option<&'a Value> {
    let (root, rest) = match tokens.first().map(String::as_str) {
        Some("trigger") => (trigger, &tokens[1..]),
        Some("steps") => (outputs.get(tokens.get(1)?)?, tokens.get(2..)?),
        _ => return None,
    };
    rest.iter().try_fold(root, |value, token| match value {
        Value::Object(object) => object.get(token),
        Value::Array(items) => {
            // RFC 6901: an array index is `0` or digits without a leading zero.
            if token == "0"
                || (!token.starts_with('0') && token.bytes().all(|b| b.is_ascii_digit()))
            {
                items.get(token.parse::<usize>().ok()?)
            } else {
                None
            }
        }
        _ => None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(steps: Value) -> WorkflowSpec {
        serde_json::from_value(json!({ "steps": steps })).unwrap()
    }

    fn step(id: &str, input: Value) -> Value {
        json!({"id": id, "connector": "c", "action": "a", "input": input})
    }

    #[test]
    fn builds_input_from_trigger_and_earlier_outputs() {
        let s = spec(json!([
            step("first", json!({})),
            step(
                "second",
                json!({
                    "repo": {"$from": "/trigger/repo"},
                    "id": {"$from": "/steps/first/items/1/id"},
                    "tilde": {"$from": "/trigger/a~1b~0c"},
                    "fixed": [1, {"$literal": {"$from": "/not/a/reference"}}],
                    "whole": {"$from": "/trigger"},
                })
            ),
        ]));
        s.validate().unwrap();
        let trigger = json!({"repo": "airlock", "a/b~c": true});
        let outputs =
            BTreeMap::from([("first".to_owned(), json!({"items": [{"id": 1}, {"id": 2}]}))]);
        let input = s.steps[1].build_input(&trigger, &outputs).unwrap();
        assert_eq!(
            input,
            json!({
                "repo": "airlock",
                "id": 2,
                "tilde": true,
                "fixed": [1, {"$from": "/not/a/reference"}],
                "whole": trigger,
            })
        );
    }

    #[test]
    fn a_missing_value_is_a_mapping_error_naming_the_pointer() {
        let s = spec(json!([step(
            "only",
            json!({"x": {"$from": "/trigger/items/01"}})
        )]));
        s.validate().unwrap();
        let error = s.steps[0]
            .build_input(&json!({"items": [1, 2]}), &BTreeMap::new())
            .unwrap_err();
        assert_eq!(error.pointer, "/trigger/items/01");
    }

    #[test]
    fn references_must_name_the_trigger_or_an_earlier_step() {
        let later = spec(json!([
            step("first", json!({"x": {"$from": "/steps/second/y"}})),
            step("second", json!({})),
        ]));
        let error = later.validate().unwrap_err();
        assert_eq!(error.field, "steps[0].input/x");
        assert!(error.reason.contains("not an earlier step"), "{error}");

        let itself = spec(json!([step(
            "first",
            json!({"x": {"$from": "/steps/first"}})
        )]));
        assert!(itself.validate().is_err());
        let elsewhere = spec(json!([step("first", json!([{"$from": "/env/HOME"}]))]));
        assert_eq!(elsewhere.validate().unwrap_err().field, "steps[0].input/0");
        let bad_escape = spec(json!([step("first", json!({"$from": "/trigger/~2"}))]));
        assert!(bad_escape.validate().is_err());
        let not_text = spec(json!([step("first", json!({"$from": 3}))]));
        assert!(not_text.validate().is_err());
    }

    #[test]
    fn a_marker_with_other_members_is_refused_naming_the_step_and_the_key() {
        for (input, marker, path) in [
            (json!({"a": {"$from": "/trigger/x", "x": 1}}), "$from", "/a"),
            (
                json!([{"$literal": {"k": 1}, "extra": true}]),
                "$literal",
                "/0",
            ),
            (json!({"$from": "/trigger", "$literal": 2}), "$from", ""),
        ] {
            let s = spec(json!([step("fetch", json!({})), step("send", input)]));
            let error = s.validate().unwrap_err();
            assert_eq!(error.field, format!("steps[1].input{path}"), "{error}");
            assert!(error.reason.contains("step `send`"), "{error}");
            assert!(
                error
                    .reason
                    .contains(&format!("`{marker}` must be the only member")),
                "{error}"
            );
        }
        let error = spec(json!([step("a", json!({"$from": "/trigger/x", "x": 1}))]))
            .validate()
            .unwrap_err();
        assert!(error.reason.contains("`x`"), "{error}");
        // Inside a `$literal` everything is data, markers with company included.
        let literal = spec(json!([step(
            "a",
            json!({"$literal": {"$from": "/trigger", "x": 1}})
        )]));
        literal.validate().unwrap();
    }

    #[test]
    fn step_ids_are_checked_and_unique() {
        for bad in ["", "Upper", "9lives", "has space", "a/b", &"x".repeat(65)] {
            assert!(
                spec(json!([step(bad, json!({}))])).validate().is_err(),
                "{bad:?}"
            );
        }
        let twice = spec(json!([step("a", json!({})), step("a", json!({}))]));
        assert_eq!(twice.validate().unwrap_err().field, "steps[1].id");
        assert!(spec(json!([])).validate().is_err());
        let many: Vec<Value> = (0..=MAX_STEPS)
            .map(|i| step(&format!("s{i}"), json!({})))
            .collect();
        assert!(spec(Value::Array(many)).validate().is_err());
    }

    #[test]
    fn names_with_invisible_characters_are_refused() {
        let s = spec(json!([{"id": "a", "connector": "gith\u{200b}ub", "action": "x"}]));
        assert_eq!(s.validate().unwrap_err().field, "steps[0].connector");
    }

    #[test]
    fn retry_policy_prefers_the_step_then_the_manifest_and_is_clamped() {
        let mut s = spec(json!([step("a", json!({}))]));
        assert_eq!(s.steps[0].retry_policy(None), NO_RETRY);
        assert_eq!(s.steps[0].retry_policy(None).max_attempts, 1);
        let declared = RetryPolicy {
            max_attempts: 50,
            initial_backoff_ms: 10,
            max_backoff_ms: u64::MAX,
        };
        let clamped = s.steps[0].retry_policy(Some(declared));
        assert_eq!(clamped.max_attempts, MAX_ATTEMPTS_CAP);
        assert_eq!(clamped.max_backoff_ms, MAX_BACKOFF_CAP_MS);
        s.steps[0].retry = Some(RetryPolicy {
            max_attempts: 2,
            initial_backoff_ms: 5,
            max_backoff_ms: 7,
        });
        assert_eq!(s.steps[0].retry_policy(Some(declared)).max_attempts, 2);
        s.steps[0].retry = Some(RetryPolicy {
            max_attempts: 0,
            initial_backoff_ms: 5,
            max_backoff_ms: 7,
        });
        assert_eq!(
            s.validate().unwrap_err().field,
            "steps[0].retry.max_attempts"
        );
    }

    #[test]
    fn unknown_fields_are_refused() {
        let parsed: Result<WorkflowSpec, _> = serde_json::from_value(json!({
            "steps": [{"id": "a", "connector": "c", "action": "x", "inputs": {}}]
        }));
        assert!(parsed.is_err());
    }
}

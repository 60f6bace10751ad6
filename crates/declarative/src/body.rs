//! The request body: the input's `body` as JSON, or the action's template with
//! `{"$input": "<pointer>"}` and `{"$config": "<pointer>"}` replaced by values, encoded as
//! JSON or as a form (`a[b]=v`, `a[0]=v`).

use serde_json::{Map, Value};

use crate::format::{BodyDef, BodyEncoding, Method};
use crate::pointer;
use crate::run::RunError;
use crate::template::encode;

/// The largest body the runner sends.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// How deep a body template, or a value encoded as a form, may nest.
pub const MAX_TEMPLATE_DEPTH: usize = 64;

/// How deep a value sent as JSON may nest: serde_json's own parsing limit, so any input the
/// host parsed passes.
pub const MAX_JSON_DEPTH: usize = 128;

pub const JSON: &str = "application/json";
pub const FORM: &str = "application/x-www-form-urlencoded";

/// An encoded body and its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
}

fn too_large() -> RunError {
    RunError::invalid_input(
        "body_too_large",
        format!("the request body would exceed {MAX_BODY_BYTES} bytes"),
    )
}

fn too_deep(limit: usize) -> RunError {
    RunError::invalid_input(
        "body_too_deep",
        format!("the request body nests deeper than {limit} levels"),
    )
}

/// The body of a request for `method`: with a [`BodyDef`], its template (or the input's
/// `body`) in its encoding; without, the input's `body` as JSON, except for GET and HEAD.
/// A body that is absent or `null` is no body.
pub fn build(
    method: Method,
    def: Option<&BodyDef>,
    input: &Value,
    config: &Value,
) -> Result<Option<Body>, RunError> {
    let (encoding, value) = match def {
        None if matches!(method, Method::Get | Method::Head) => return Ok(None),
        None => (BodyEncoding::Json, input.get("body").cloned()),
        Some(def) => {
            let value = match &def.template {
                Some(template) => {
                    let mut budget = MAX_BODY_BYTES;
                    substitute(template, input, config, 0, &mut budget)?
                }
                None => input.get("body").cloned(),
            };
            (def.encoding, value)
        }
    };
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return Ok(None);
    };
    let body = match encoding {
        BodyEncoding::Json => {
            // Bounds serialization's recursion (a value built rather than parsed could be
            // deeper than any parser allows) and its size before the bytes exist.
            if approximate_size(&value, 0, MAX_JSON_DEPTH)? > MAX_BODY_BYTES {
                return Err(too_large());
            }
            let bytes = serde_json::to_vec(&value).map_err(|_| {
                RunError::invalid_input("invalid_body", "the request body is not valid JSON")
            })?;
            Body {
                bytes,
                content_type: JSON,
            }
        }
        BodyEncoding::Form => Body {
            bytes: form_encode(&value)?.into_bytes(),
            content_type: FORM,
        },
    };
    if body.bytes.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(Some(body))
}

/// The template with its `$input` and `$config` references replaced; `None` when the
/// template is one reference to an absent value. `budget` is what is left of the body's size
/// (roughly counted), so that a template repeating a large value stops early.
fn substitute(
    template: &Value,
    input: &Value,
    config: &Value,
    depth: usize,
    budget: &mut usize,
) -> Result<Option<Value>, RunError> {
    if depth >= MAX_TEMPLATE_DEPTH {
        return Err(too_deep(MAX_TEMPLATE_DEPTH));
    }
    match template {
        Value::Object(members) => {
            if let Some((source, reference)) = reference(members) {
                let document = match source {
                    Source::Input => input,
                    Source::Config => config,
                };
                if !pointer::is_valid(reference) {
                    return Err(RunError::invalid_definition(format!(
                        "the body template's {reference:?} is not a JSON Pointer"
                    )));
                }
                let Some(value) = pointer::get(document, reference) else {
                    return Ok(None);
                };
                spend(budget, approximate_size(value, 0, MAX_JSON_DEPTH)?)?;
                return Ok(Some(value.clone()));
            }
            let mut out = Map::new();
            for (name, member) in members {
                spend(budget, name.len() + 4)?;
                if let Some(value) = substitute(member, input, config, depth + 1, budget)? {
                    out.insert(name.clone(), value);
                }
            }
            Ok(Some(Value::Object(out)))
        }
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                spend(budget, 1)?;
                out.push(
                    substitute(item, input, config, depth + 1, budget)?.unwrap_or(Value::Null),
                );
            }
            Ok(Some(Value::Array(out)))
        }
        scalar => {
            spend(budget, approximate_size(scalar, 0, MAX_JSON_DEPTH)?)?;
            Ok(Some(scalar.clone()))
        }
    }
}

fn spend(budget: &mut usize, size: usize) -> Result<(), RunError> {
    *budget = budget.checked_sub(size).ok_or_else(too_large)?;
    Ok(())
}

enum Source {
    Input,
    Config,
}

/// `{"$input": "<pointer>"}` or `{"$config": "<pointer>"}`: exactly one member, a string.
fn reference(members: &Map<String, Value>) -> Option<(Source, &str)> {
    if members.len() != 1 {
        return None;
    }
    let (name, value) = members.iter().next()?;
    let source = match name.as_str() {
        "$input" => Source::Input,
        "$config" => Source::Config,
        _ => return None,
    };
    Some((source, value.as_str()?))
}

/// About how many bytes `value` takes as JSON (without escapes); an error past `limit`
/// levels of nesting.
fn approximate_size(value: &Value, depth: usize, limit: usize) -> Result<usize, RunError> {
    if depth >= limit {
        return Err(too_deep(limit));
    }
    Ok(match value {
        Value::Null => 4,
        Value::Bool(_) => 5,
        Value::Number(_) => 20,
        Value::String(text) => text.len() + 2,
        Value::Array(items) => {
            let mut size = 2usize;
            for item in items {
                size = size.saturating_add(approximate_size(item, depth + 1, limit)? + 1);
            }
            size
        }
        Value::Object(members) => {
            let mut size = 2usize;
            for (name, member) in members {
                size = size.saturating_add(name.len() + 4);
                size = size.saturating_add(approximate_size(member, depth + 1, limit)?);
            }
            size
        }
    })
}

/// `application/x-www-form-urlencoded`: every member of the top-level object, nested objects
/// as `a[b]=v`, lists as `a[0]=v`; `null` members are left out, booleans and numbers are
/// their JSON text. Everything but RFC 3986's unreserved characters is percent-encoded (a
/// space is `%20`); the brackets that nest keys are written as they are.
pub fn form_encode(value: &Value) -> Result<String, RunError> {
    let Value::Object(members) = value else {
        return Err(RunError::invalid_input(
            "invalid_body",
            "a form body must be an object",
        ));
    };
    let mut out = String::new();
    for (name, member) in members {
        let mut key = String::new();
        encode(name, &mut key);
        form_pairs(&key, member, 1, &mut out)?;
    }
    Ok(out)
}

fn form_pairs(key: &str, value: &Value, depth: usize, out: &mut String) -> Result<(), RunError> {
    if depth >= MAX_TEMPLATE_DEPTH {
        return Err(too_deep(MAX_TEMPLATE_DEPTH));
    }
    let text = match value {
        Value::Null => return Ok(()),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => {
            // Each byte becomes at most three: refuse before encoding a huge string.
            if s.len() > MAX_BODY_BYTES {
                return Err(too_large());
            }
            s.clone()
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                form_pairs(&format!("{key}[{i}]"), item, depth + 1, out)?;
            }
            return Ok(());
        }
        Value::Object(members) => {
            for (name, member) in members {
                let mut nested = format!("{key}[");
                encode(name, &mut nested);
                nested.push(']');
                form_pairs(&nested, member, depth + 1, out)?;
            }
            return Ok(());
        }
    };
    if !out.is_empty() {
        out.push('&');
    }
    out.push_str(key);
    out.push('=');
    encode(&text, out);
    if out.len() > MAX_BODY_BYTES {
        return Err(too_large());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn def(encoding: BodyEncoding, template: Option<Value>) -> BodyDef {
        BodyDef { encoding, template }
    }

    fn json_of(body: Option<Body>) -> Value {
        let body = body.expect("a body");
        assert_eq!(body.content_type, JSON);
        serde_json::from_slice(&body.bytes).expect("JSON")
    }

    #[test]
    fn passes_the_input_body_through_except_for_get_and_head() {
        let input = json!({"body": {"n": 478, "s": "478", "l": [1, null]}});
        let body = build(Method::Post, None, &input, &json!({})).expect("ok");
        assert_eq!(json_of(body), json!({"n": 478, "s": "478", "l": [1, null]}));
        for method in [Method::Get, Method::Head] {
            assert_eq!(build(method, None, &input, &json!({})).expect("ok"), None);
        }
        assert_eq!(
            build(Method::Post, None, &json!({}), &json!({})).expect("ok"),
            None
        );
        assert_eq!(
            build(Method::Post, None, &json!({"body": null}), &json!({})).expect("ok"),
            None
        );
    }

    #[test]
    fn substitutes_input_and_config_keeping_types() {
        let template = json!({
            "channel": {"$input": "/body/channel"},
            "count": {"$input": "/path/n"},
            "text": {"$input": "/path/s"},
            "region": {"$config": "/region"},
            "gone": {"$input": "/body/missing"},
            "list": [{"$input": "/body/missing"}, {"$input": "/body/channel"}, "lit"],
            "nested": {"a": {"$input": "/query/q"}, "b": 1},
            "not_a_ref": {"$input": 3},
            "two_keys": {"$input": "/body/channel", "x": 1}
        });
        let input = json!({
            "path": {"n": 478, "s": "478"},
            "query": {"q": true},
            "body": {"channel": "C1"}
        });
        let body = build(
            Method::Get,
            Some(&def(BodyEncoding::Json, Some(template))),
            &input,
            &json!({"region": "eu"}),
        )
        .expect("ok");
        assert_eq!(
            json_of(body),
            json!({
                "channel": "C1",
                "count": 478,
                "text": "478",
                "region": "eu",
                "list": [null, "C1", "lit"],
                "nested": {"a": true, "b": 1},
                "not_a_ref": {"$input": 3},
                "two_keys": {"$input": "/body/channel", "x": 1}
            })
        );
        // A template that is one absent reference: no body at all.
        let absent = def(BodyEncoding::Json, Some(json!({"$input": "/body/none"})));
        assert_eq!(
            build(Method::Post, Some(&absent), &input, &json!({})).expect("ok"),
            None
        );
        // Without a template, the input's body even for GET.
        let plain = def(BodyEncoding::Json, None);
        assert_eq!(
            json_of(build(Method::Get, Some(&plain), &input, &json!({})).expect("ok")),
            json!({"channel": "C1"})
        );
    }

    #[test]
    fn encodes_forms_with_brackets() {
        let value = json!({
            "amount": 478,
            "live": false,
            "skip": null,
            "name": "a b&c=d/é",
            "metadata": {"plan": "pro", "k y": "v"},
            "items": [{"price": "p_1", "qty": 2}, "x"]
        });
        assert_eq!(
            form_encode(&value).expect("ok"),
            "amount=478&items[0][price]=p_1&items[0][qty]=2&items[1]=x&live=false\
             &metadata[k%20y]=v&metadata[plan]=pro&name=a%20b%26c%3Dd%2F%C3%A9"
        );
        for not_object in [json!([1]), json!("a"), json!(3)] {
            assert_eq!(
                form_encode(&not_object).expect_err("refused").code,
                "invalid_body"
            );
        }
        let form = def(BodyEncoding::Form, None);
        let body = build(
            Method::Post,
            Some(&form),
            &json!({"body": {"a": 1}}),
            &json!({}),
        )
        .expect("ok")
        .expect("a body");
        assert_eq!(body.content_type, FORM);
        assert_eq!(body.bytes, b"a=1");
    }

    #[test]
    fn caps_size_and_depth() {
        let big = "x".repeat(MAX_BODY_BYTES);
        let input = json!({"body": {"text": big}});
        let error = build(Method::Post, None, &input, &json!({})).expect_err("too large");
        assert_eq!(error.code, "body_too_large");
        assert!(!error.message.contains("xxx"));
        let repeated = def(
            BodyEncoding::Json,
            Some(json!([{"$input": "/body/text"}, {"$input": "/body/text"}])),
        );
        let half = json!({"body": {"text": "y".repeat(MAX_BODY_BYTES / 2 + 10)}});
        assert_eq!(
            build(Method::Post, Some(&repeated), &half, &json!({}))
                .expect_err("too large")
                .code,
            "body_too_large"
        );
        let form = def(BodyEncoding::Form, None);
        let spaces = json!({"body": {"t": " ".repeat(MAX_BODY_BYTES / 2)}});
        assert_eq!(
            build(Method::Post, Some(&form), &spaces, &json!({}))
                .expect_err("too large")
                .code,
            "body_too_large"
        );

        let mut deep = json!(1);
        for _ in 0..MAX_TEMPLATE_DEPTH {
            deep = json!({"a": deep});
        }
        let template = def(BodyEncoding::Json, Some(deep.clone()));
        assert_eq!(
            build(Method::Post, Some(&template), &json!({}), &json!({}))
                .expect_err("too deep")
                .code,
            "body_too_deep"
        );
        assert_eq!(
            form_encode(&deep).expect_err("too deep").code,
            "body_too_deep"
        );
        // Passed through as JSON, the same value is fine.
        assert!(build(Method::Post, None, &json!({"body": deep}), &json!({})).is_ok());
    }
}

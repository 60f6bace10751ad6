//! Reading a response: its body as JSON (or text), the error rules then the default table by
//! status, and the output by JSON Pointer.

use airlock_contract::ConnectorErrorKind;
use serde_json::Value;

use crate::format::{ErrorRule, StatusMatch, StatusPattern};
use crate::pointer;
use crate::run::{Response, RunError};

/// How many characters of an upstream's own message an error quotes.
pub const MAX_QUOTE_CHARS: usize = 500;

/// The response's body, once the error rules and the default table found it a success.
pub fn read(rules: &[ErrorRule], response: &Response) -> Result<Value, RunError> {
    let (body, unparsable_json) = parse_body(response);
    classify_response(rules, response.status, &response.headers, &body)?;
    if unparsable_json {
        return Err(RunError::upstream(
            "invalid_json",
            format!(
                "upstream answered {} with a body that says it is JSON and is not",
                response.status
            ),
            false,
        ));
    }
    Ok(body)
}

/// The body: `null` when empty, JSON when it parses, else its text. The flag says the
/// content type claims JSON and the body is not: an error, unless the response is one anyway.
pub fn parse_body(response: &Response) -> (Value, bool) {
    if response.body.iter().all(u8::is_ascii_whitespace) {
        return (Value::Null, false);
    }
    if let Ok(value) = serde_json::from_slice(&response.body) {
        return (value, false);
    }
    let says_json = response
        .header_values("content-type")
        .any(|value| value.to_ascii_lowercase().contains("json"));
    let text = String::from_utf8_lossy(&response.body).into_owned();
    (Value::String(text), says_json)
}

fn is_success(status: u16) -> bool {
    (200..=299).contains(&status)
}

fn pattern_matches(pattern: &StatusPattern, status: u16) -> Result<bool, RunError> {
    match pattern {
        StatusPattern::Code(code) => Ok(*code == status),
        StatusPattern::Class(class) => {
            let bytes = class.as_bytes();
            match bytes {
                [digit @ b'1'..=b'5', x, y]
                    if x.eq_ignore_ascii_case(&b'x') && y.eq_ignore_ascii_case(&b'x') =>
                {
                    Ok(status / 100 == u16::from(digit - b'0'))
                }
                _ => Err(RunError::invalid_definition(format!(
                    "{class:?} is not a status class (`1xx` to `5xx`)"
                ))),
            }
        }
    }
}

fn status_matches(matcher: &StatusMatch, status: u16) -> Result<bool, RunError> {
    match matcher {
        StatusMatch::One(pattern) => pattern_matches(pattern, status),
        StatusMatch::Any(patterns) => {
            for pattern in patterns {
                if pattern_matches(pattern, status)? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
    }
}

/// Whether `rule` covers this response. A rule without `status` and `when` covers every
/// non-2xx status only: it would otherwise turn each success into an error.
fn rule_matches(
    rule: &ErrorRule,
    status: u16,
    headers: &[(String, String)],
    body: &Value,
) -> Result<bool, RunError> {
    if let Some(matcher) = &rule.status
        && !status_matches(matcher, status)?
    {
        return Ok(false);
    }
    if let Some(expected) = &rule.when_header
        && !headers.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case(&expected.name) && value.trim() == expected.equals.trim()
        })
    {
        return Ok(false);
    }
    Ok(match &rule.when {
        Some(when) => pointer::get(body, &when.pointer) == Some(&when.equals),
        None => rule.status.is_some() || rule.when_header.is_some() || !is_success(status),
    })
}

fn kind_named(name: &str) -> Option<ConnectorErrorKind> {
    Some(match name {
        "auth" => ConnectorErrorKind::Auth,
        "invalid_input" => ConnectorErrorKind::InvalidInput,
        "not_found" => ConnectorErrorKind::NotFound,
        "rate_limited" => ConnectorErrorKind::RateLimited,
        "upstream" => ConnectorErrorKind::Upstream,
        "internal" => ConnectorErrorKind::Internal,
        _ => return None,
    })
}

fn default_retryable(kind: ConnectorErrorKind) -> bool {
    matches!(
        kind,
        ConnectorErrorKind::RateLimited | ConnectorErrorKind::Upstream
    )
}

/// Text quoted from a response: control characters as spaces, at most
/// [`MAX_QUOTE_CHARS`] characters.
fn quote(text: &str) -> String {
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == MAX_QUOTE_CHARS {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

fn message(status: u16, quoted: Option<String>) -> String {
    match quoted {
        Some(text) if !text.trim().is_empty() => format!("upstream answered {status}: {text}"),
        _ => format!("upstream answered {status}"),
    }
}

/// Ok for a success, else the error the rules or the default table make of the response.
pub fn classify(rules: &[ErrorRule], status: u16, body: &Value) -> Result<(), RunError> {
    classify_response(rules, status, &[], body)
}

/// [`classify`], with the response's headers for rules that read them (`when_header`).
pub fn classify_response(
    rules: &[ErrorRule],
    status: u16,
    headers: &[(String, String)],
    body: &Value,
) -> Result<(), RunError> {
    for rule in rules {
        if rule_matches(rule, status, headers, body)? {
            return apply(rule, status, body);
        }
    }
    default_outcome(status, body)
}

fn apply(rule: &ErrorRule, status: u16, body: &Value) -> Result<(), RunError> {
    if rule.kind == "success" {
        return Ok(());
    }
    let kind = kind_named(&rule.kind).ok_or_else(|| {
        RunError::invalid_definition(format!(
            "an error rule's kind {:?} is not one a rule may give",
            rule.kind
        ))
    })?;
    let quoted = rule
        .message
        .as_deref()
        .and_then(|at| pointer::get(body, at))
        .and_then(|value| match value {
            Value::Null => None,
            Value::String(text) => Some(quote(text)),
            other => Some(quote(&other.to_string())),
        });
    let code = if rule.when.is_some() && is_success(status) {
        "upstream_error".to_owned()
    } else {
        format!("status_{status}")
    };
    Err(RunError::new(
        kind,
        code,
        message(status, quoted),
        rule.retryable.unwrap_or_else(|| default_retryable(kind)),
    ))
}

/// Where APIs commonly put their message.
fn common_message(body: &Value) -> Option<String> {
    ["/message", "/error/message", "/error", "/error_description"]
        .iter()
        .find_map(|at| pointer::get(body, at)?.as_str())
        .map(quote)
}

fn default_outcome(status: u16, body: &Value) -> Result<(), RunError> {
    if is_success(status) {
        return Ok(());
    }
    let (kind, retryable) = match status {
        400 | 409 | 422 => (ConnectorErrorKind::InvalidInput, false),
        401 | 403 => (ConnectorErrorKind::Auth, false),
        404 | 410 => (ConnectorErrorKind::NotFound, false),
        408 => (ConnectorErrorKind::Upstream, true),
        429 => (ConnectorErrorKind::RateLimited, true),
        500..=599 => (ConnectorErrorKind::Upstream, true),
        _ => (ConnectorErrorKind::Upstream, false),
    };
    Err(RunError::new(
        kind,
        format!("status_{status}"),
        message(status, common_message(body)),
        retryable,
    ))
}

/// The value at `at` in the body (`None` or `""`: all of it).
pub fn extract(mut body: Value, at: Option<&str>) -> Result<Value, RunError> {
    let at = match at {
        None | Some("") => return Ok(body),
        Some(at) => at,
    };
    body.pointer_mut(at).map(Value::take).ok_or_else(|| {
        RunError::upstream(
            "output_missing",
            format!("the response has no value at `{at}`"),
            false,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::BodyMatch;
    use serde_json::json;

    fn response(status: u16, content_type: &str, body: &str) -> Response {
        Response {
            status,
            headers: vec![("Content-Type".to_owned(), content_type.to_owned())],
            body: body.as_bytes().to_vec(),
        }
    }

    fn rule(status: Option<StatusMatch>, kind: &str) -> ErrorRule {
        ErrorRule {
            status,
            when: None,
            when_header: None,
            kind: kind.to_owned(),
            retryable: None,
            message: None,
        }
    }

    #[test]
    fn parses_bodies() {
        assert_eq!(read(&[], &response(204, "", "")).expect("ok"), Value::Null);
        assert_eq!(
            read(&[], &response(200, "application/json", " {\"a\":1} ")).expect("ok"),
            json!({"a": 1})
        );
        assert_eq!(
            read(&[], &response(200, "text/plain", "héllo")).expect("ok"),
            json!("héllo")
        );
        let error =
            read(&[], &response(200, "application/problem+JSON", "<html>")).expect_err("bad");
        assert_eq!(
            (error.code.as_str(), error.kind, error.retryable),
            ("invalid_json", ConnectorErrorKind::Upstream, false)
        );
        // A failed status with a broken JSON body is the status's error.
        assert_eq!(
            read(&[], &response(503, "application/json", "<html>"))
                .expect_err("bad")
                .code,
            "status_503"
        );
    }

    #[test]
    fn default_table() {
        use ConnectorErrorKind::*;
        for (status, kind, retryable) in [
            (400, InvalidInput, false),
            (422, InvalidInput, false),
            (409, InvalidInput, false),
            (401, Auth, false),
            (403, Auth, false),
            (404, NotFound, false),
            (410, NotFound, false),
            (408, Upstream, true),
            (429, RateLimited, true),
            (500, Upstream, true),
            (503, Upstream, true),
            (302, Upstream, false),
            (418, Upstream, false),
            (101, Upstream, false),
        ] {
            let error = classify(&[], status, &Value::Null).expect_err("an error");
            assert_eq!((error.kind, error.retryable), (kind, retryable), "{status}");
            assert_eq!(error.code, format!("status_{status}"));
            assert_eq!(error.message, format!("upstream answered {status}"));
        }
        for status in [200, 201, 204, 299] {
            assert!(classify(&[], status, &Value::Null).is_ok());
        }
    }

    #[test]
    fn default_errors_quote_common_messages() {
        for (body, quoted) in [
            (json!({"message": "Bad credentials"}), "Bad credentials"),
            (
                json!({"error": {"message": "No such customer"}}),
                "No such customer",
            ),
            (
                json!({"error": "invalid_grant", "error_description": "x"}),
                "invalid_grant",
            ),
            (
                json!({"error": {"code": 1}, "error_description": "expired"}),
                "expired",
            ),
        ] {
            let error = classify(&[], 401, &body).expect_err("an error");
            assert_eq!(error.message, format!("upstream answered 401: {quoted}"));
        }
        let long = "é".repeat(2 * MAX_QUOTE_CHARS);
        let error = classify(&[], 500, &json!({"message": long})).expect_err("an error");
        assert_eq!(
            error.message.chars().count(),
            "upstream answered 500: ".len() + MAX_QUOTE_CHARS + 1
        );
        let error = classify(&[], 500, &json!({"message": "a\r\nb"})).expect_err("an error");
        assert_eq!(error.message, "upstream answered 500: a  b");
    }

    #[test]
    fn rules_can_read_a_response_header() {
        let rules = vec![ErrorRule {
            when_header: Some(crate::format::HeaderMatch {
                name: "X-RateLimit-Remaining".to_owned(),
                equals: "0".to_owned(),
            }),
            ..rule(
                Some(StatusMatch::One(StatusPattern::Code(403))),
                "rate_limited",
            )
        }];
        let limited = classify_response(
            &rules,
            403,
            &[("x-ratelimit-remaining".to_owned(), " 0".to_owned())],
            &json!({}),
        )
        .expect_err("rate limited");
        assert_eq!(limited.kind, ConnectorErrorKind::RateLimited);
        assert!(limited.retryable);
        // Another value, or no such header: the rule does not apply (403 is auth by default).
        for headers in [
            vec![("x-ratelimit-remaining".to_owned(), "12".to_owned())],
            vec![],
        ] {
            let error = classify_response(&rules, 403, &headers, &json!({})).expect_err("auth");
            assert_eq!(error.kind, ConnectorErrorKind::Auth);
        }
    }

    #[test]
    fn rules_match_in_order_by_status_and_body() {
        let rules = vec![
            ErrorRule {
                when: Some(BodyMatch {
                    pointer: "/ok".to_owned(),
                    equals: json!(false),
                }),
                message: Some("/error".to_owned()),
                ..rule(None, "not_found")
            },
            rule(Some(StatusMatch::One(StatusPattern::Code(404))), "success"),
            rule(
                Some(StatusMatch::Any(vec![
                    StatusPattern::Code(418),
                    StatusPattern::Class("5XX".to_owned()),
                ])),
                "rate_limited",
            ),
            ErrorRule {
                retryable: Some(true),
                message: Some("/detail".to_owned()),
                ..rule(
                    Some(StatusMatch::One(StatusPattern::Class("4xx".to_owned()))),
                    "auth",
                )
            },
        ];
        let slack = classify(
            &rules,
            200,
            &json!({"ok": false, "error": "channel_not_found"}),
        )
        .expect_err("an error");
        assert_eq!(
            (
                slack.kind,
                slack.code.as_str(),
                slack.message.as_str(),
                slack.retryable
            ),
            (
                ConnectorErrorKind::NotFound,
                "upstream_error",
                "upstream answered 200: channel_not_found",
                false
            )
        );
        assert!(classify(&rules, 200, &json!({"ok": true})).is_ok());
        assert!(classify(&rules, 404, &json!({})).is_ok());
        let e = classify(&rules, 418, &Value::Null).expect_err("an error");
        assert_eq!(
            (e.kind, e.retryable, e.code.as_str()),
            (ConnectorErrorKind::RateLimited, true, "status_418")
        );
        assert_eq!(
            classify(&rules, 502, &Value::Null)
                .expect_err("an error")
                .kind,
            ConnectorErrorKind::RateLimited
        );
        let e = classify(&rules, 400, &json!({"detail": {"why": 1}})).expect_err("an error");
        assert_eq!((e.kind, e.retryable), (ConnectorErrorKind::Auth, true));
        assert_eq!(e.message, "upstream answered 400: {\"why\":1}");
        // A `when` rule on an error status keeps the status code.
        let e = classify(&rules, 500, &json!({"ok": false})).expect_err("an error");
        assert_eq!(
            (e.kind, e.code.as_str()),
            (ConnectorErrorKind::NotFound, "status_500")
        );
    }

    #[test]
    fn a_rule_without_status_or_when_leaves_successes_alone() {
        let rules = vec![rule(None, "internal")];
        assert!(classify(&rules, 200, &Value::Null).is_ok());
        let e = classify(&rules, 404, &Value::Null).expect_err("an error");
        assert_eq!((e.kind, e.retryable), (ConnectorErrorKind::Internal, false));
    }

    #[test]
    fn refuses_rule_kinds_and_classes_it_does_not_know() {
        for kind in ["http_denied", "fatal", ""] {
            let rules = vec![rule(None, kind)];
            assert_eq!(
                classify(&rules, 500, &Value::Null).expect_err("bad").code,
                "invalid_definition"
            );
        }
        let rules = vec![rule(
            Some(StatusMatch::One(StatusPattern::Class("4x".to_owned()))),
            "auth",
        )];
        assert_eq!(
            classify(&rules, 500, &Value::Null).expect_err("bad").kind,
            ConnectorErrorKind::Internal
        );
    }

    #[test]
    fn extracts_the_output() {
        let body = json!({"data": {"items": [1, 2]}});
        assert_eq!(extract(body.clone(), None).expect("ok"), body);
        assert_eq!(extract(body.clone(), Some("")).expect("ok"), body);
        assert_eq!(
            extract(body.clone(), Some("/data/items/1")).expect("ok"),
            json!(2)
        );
        let error = extract(body, Some("/data/missing")).expect_err("absent");
        assert_eq!(
            (error.code.as_str(), error.retryable),
            ("output_missing", false)
        );
        assert!(error.message.contains("/data/missing"));
    }
}

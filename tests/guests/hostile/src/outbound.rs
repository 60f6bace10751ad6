//! Attacks through the HTTP import: request floods, forbidden destinations (undeclared hosts,
//! loopback, private and metadata addresses, DNS rebinding), oversized responses, and a probe
//! that hands everything it receives back to the caller, to prove the credential is not in it.

use std::io::Write;

use serde_json::{Value, json};

use crate::bindings::airlock::connector::http::{self, HttpError, Request, Response};
use crate::bindings::airlock::connector::log::{Level, write as log};
use crate::bindings::airlock::connector::types::{ConnectorError, ErrorKind};
use crate::input::Input;
use crate::{Outcome, error};

/// Sends `count` (default 1000) GETs to https://api.example.test/ping, ignoring every error
/// but one: the host's too-many-requests ends the flood with an `internal` error
/// "flood stopped: too-many-requests after N", N being the requests the host let through
/// (answered or failed otherwise). `{"sent", "ok", "errors"}` if the host never said stop.
pub(crate) fn flood(input: &Input) -> Outcome {
    let count = input.u64("count", 1000)?;
    let (mut ok, mut errors) = (0u64, 0u64);
    for i in 0..count {
        match http::send(&get("https://api.example.test/ping")) {
            Ok(_) => ok += 1,
            Err(HttpError::TooManyRequests) => {
                return Err(error(
                    ErrorKind::Internal,
                    format!("flood stopped: too-many-requests after {i}"),
                ));
            }
            Err(_) => errors += 1,
        }
    }
    Ok(json!({ "sent": count, "ok": ok, "errors": errors }).to_string())
}

/// Sends one request to any URL the test names and reports the answer, or the host's refusal.
///
/// Input: `url` (required), `method` (default "GET"), `headers` (default `[]`, a list of
/// `[name, value]` pairs: a guest may try to set `Authorization` or `Host` itself), `body`
/// (optional string). Output: `{"status", "body" (lossy UTF-8), "headers": [[name, value]]}`.
/// Errors: see [`http_error`].
pub(crate) fn fetch(input: &Input) -> Outcome {
    let response = http::send(&request(input)?).map_err(|e| http_error(&e))?;
    Ok(response_json(&response).to_string())
}

/// Like `fetch`, and also writes the response body and headers to the log import, stdout and
/// stderr: everything a credential could leak through if the host forwarded it to the guest.
pub(crate) fn echo_auth(input: &Input) -> Outcome {
    let response = http::send(&request(input)?).map_err(|e| http_error(&e))?;
    let out = response_json(&response);
    let body = String::from_utf8_lossy(&response.body);
    log(Level::Info, &body);
    log(Level::Info, &out["headers"].to_string());
    let _ = writeln!(std::io::stdout(), "{body}");
    let _ = writeln!(std::io::stderr(), "{body}");
    Ok(out.to_string())
}

/// GET https://api.example.test/user: 401 and 403 are `auth`, other non-2xx `upstream`.
pub(crate) fn test_connection() -> Result<(), ConnectorError> {
    let response = http::send(&get("https://api.example.test/user")).map_err(|e| http_error(&e))?;
    match response.status {
        200..=299 => Ok(()),
        401 | 403 => Err(error(
            ErrorKind::Auth,
            format!("credential rejected: {}", response.status),
        )),
        status => Err(error(
            ErrorKind::Upstream,
            format!("unexpected status {status}"),
        )),
    }
}

fn get(url: &str) -> Request {
    Request {
        method: "GET".to_owned(),
        url: url.to_owned(),
        headers: Vec::new(),
        body: None,
    }
}

fn request(input: &Input) -> Result<Request, ConnectorError> {
    let mut headers = Vec::new();
    if let Some(list) = input.value("headers") {
        let pairs = list.as_array().ok_or_else(bad_headers)?;
        for pair in pairs {
            match pair.as_array().map(Vec::as_slice) {
                Some([Value::String(name), Value::String(value)]) => {
                    headers.push((name.clone(), value.clone()));
                }
                _ => return Err(bad_headers()),
            }
        }
    }
    Ok(Request {
        method: input.str("method", "GET")?.to_owned(),
        url: input.required_str("url")?.to_owned(),
        headers,
        body: input
            .value("body")
            .and_then(Value::as_str)
            .map(|s| s.as_bytes().to_vec()),
    })
}

fn bad_headers() -> ConnectorError {
    error(
        ErrorKind::InvalidInput,
        "headers must be a list of [name, value] string pairs",
    )
}

fn response_json(response: &Response) -> Value {
    json!({
        "status": response.status,
        "body": String::from_utf8_lossy(&response.body),
        "headers": response.headers,
    })
}

/// `denied(text)` becomes `http-denied` with the host's text as the message, unchanged. Every
/// other failure becomes `upstream`, its message the variant's WIT name and its text:
/// "timeout", "too-large: <text>", "too-many-requests", "connect-failed: <text>",
/// "invalid-request: <text>", "other: <text>".
fn http_error(e: &HttpError) -> ConnectorError {
    let (kind, message) = match e {
        HttpError::Denied(s) => (ErrorKind::HttpDenied, s.clone()),
        HttpError::Timeout => (ErrorKind::Upstream, "timeout".to_owned()),
        HttpError::TooLarge(s) => (ErrorKind::Upstream, format!("too-large: {s}")),
        HttpError::TooManyRequests => (ErrorKind::Upstream, "too-many-requests".to_owned()),
        HttpError::ConnectFailed(s) => (ErrorKind::Upstream, format!("connect-failed: {s}")),
        HttpError::InvalidRequest(s) => (ErrorKind::Upstream, format!("invalid-request: {s}")),
        HttpError::Other(s) => (ErrorKind::Upstream, format!("other: {s}")),
    };
    error(kind, message)
}

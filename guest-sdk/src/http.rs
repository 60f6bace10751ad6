//! Outbound HTTP through the host: a small request builder, the response type and the mapping
//! from HTTP statuses onto connector errors.

use std::fmt::{self, Write as _};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ConnectorError;
use crate::host::Host;

/// Why the host could not complete a request; mirrors the WIT `http-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The host refused the request (host not allowed, private address, bad scheme, ...).
    Denied(String),
    /// The request did not complete within the per-request timeout.
    Timeout,
    /// The request or response body exceeded the tenant's byte caps.
    TooLarge(String),
    /// The invocation already sent as many requests as its limit allows.
    TooManyRequests,
    /// The connection could not be established.
    ConnectFailed(String),
    /// The request was malformed (bad method, bad URL, bad header, unserializable body).
    InvalidRequest(String),
    /// Any other transport failure.
    Other(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Denied(why) => write!(f, "request denied: {why}"),
            HttpError::Timeout => f.write_str("request timed out"),
            HttpError::TooLarge(why) => write!(f, "too large: {why}"),
            HttpError::TooManyRequests => f.write_str("too many requests in this invocation"),
            HttpError::ConnectFailed(why) => write!(f, "connect failed: {why}"),
            HttpError::InvalidRequest(why) => write!(f, "invalid request: {why}"),
            HttpError::Other(why) => write!(f, "http error: {why}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// A request exactly as it crosses to the host. `MockHost` records these for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Request {
    /// The first header with this name, compared case-insensitively as HTTP does.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body parsed as JSON; `None` when there is no body or it is not JSON.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        self.body
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok())
    }
}

fn find_header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Returned by [`Context::http`](crate::Context::http).
#[derive(Clone, Copy)]
pub struct Http<'a> {
    host: &'a dyn Host,
}

impl<'a> Http<'a> {
    pub(crate) fn new(host: &'a dyn Host) -> Self {
        Http { host }
    }

    pub fn request(&self, method: &str, url: impl Into<String>) -> RequestBuilder<'a> {
        RequestBuilder {
            host: self.host,
            method: method.to_ascii_uppercase(),
            url: url.into(),
            query: Vec::new(),
            headers: Vec::new(),
            body: None,
            json_body: false,
            error: None,
        }
    }

    pub fn get(&self, url: impl Into<String>) -> RequestBuilder<'a> {
        self.request("GET", url)
    }

    pub fn post(&self, url: impl Into<String>) -> RequestBuilder<'a> {
        self.request("POST", url)
    }

    pub fn put(&self, url: impl Into<String>) -> RequestBuilder<'a> {
        self.request("PUT", url)
    }

    pub fn patch(&self, url: impl Into<String>) -> RequestBuilder<'a> {
        self.request("PATCH", url)
    }

    pub fn delete(&self, url: impl Into<String>) -> RequestBuilder<'a> {
        self.request("DELETE", url)
    }
}

/// One request being built; nothing is sent until [`RequestBuilder::send`].
#[must_use = "a request does nothing until .send() is called"]
pub struct RequestBuilder<'a> {
    host: &'a dyn Host,
    method: String,
    url: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    json_body: bool,
    /// A builder step that failed (a body that does not serialize); reported by `send` so the
    /// chain stays free of `?` until the end.
    error: Option<HttpError>,
}

impl<'a> RequestBuilder<'a> {
    /// Appends a query parameter; key and value are percent-encoded.
    pub fn query(mut self, key: impl Into<String>, value: impl fmt::Display) -> Self {
        self.query.push((key.into(), value.to_string()));
        self
    }

    /// Appends a header (an existing header of the same name is kept: HTTP allows repeats).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets a JSON body, with `content-type: application/json` unless a content type is set.
    pub fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Self {
        match serde_json::to_vec(body) {
            Ok(bytes) => {
                self.body = Some(bytes);
                self.json_body = true;
            }
            Err(e) => {
                self.error = Some(HttpError::InvalidRequest(format!(
                    "body does not serialize as JSON: {e}"
                )))
            }
        }
        self
    }

    /// Sets a raw body.
    pub fn body(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.body = Some(bytes.into());
        self.json_body = false;
        self
    }

    /// The request as it will be sent, without sending it.
    pub fn build(self) -> Result<Request, HttpError> {
        if let Some(err) = self.error {
            return Err(err);
        }
        let mut headers = self.headers;
        if self.json_body && find_header(&headers, "content-type").is_none() {
            headers.push(("content-type".into(), "application/json".into()));
        }
        Ok(Request {
            method: self.method,
            url: with_query(&self.url, &self.query),
            headers,
            body: self.body,
        })
    }

    pub fn send(self) -> Result<Response, HttpError> {
        let host = self.host;
        let request = self.build()?;
        let (method, url) = (request.method.clone(), request.url.clone());
        let mut response = host.send(request)?;
        response.origin = format!("{method} {}", without_query(&url));
        Ok(response)
    }
}

/// Adds `query` to `url`, keeping an existing query string and putting a fragment last.
fn with_query(url: &str, query: &[(String, String)]) -> String {
    if query.is_empty() {
        return url.to_string();
    }
    let (base, fragment) = match url.split_once('#') {
        Some((base, fragment)) => (base, Some(fragment)),
        None => (url, None),
    };
    let mut out = base.to_string();
    let mut sep = match base.find('?') {
        None => Some('?'),
        Some(_) if base.ends_with('?') || base.ends_with('&') => None,
        Some(_) => Some('&'),
    };
    for (key, value) in query {
        if let Some(c) = sep {
            out.push(c);
        }
        sep = Some('&');
        percent_encode_into(&mut out, key);
        out.push('=');
        percent_encode_into(&mut out, value);
    }
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Encodes everything but RFC 3986 unreserved characters, which is safe in any query.
fn percent_encode_into(out: &mut String, s: &str) {
    for byte in s.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(char::from(byte))
            }
            _ => {
                // Writing to a String cannot fail.
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
}

fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or(url)
}

/// A response from the host. Any status arrives here; [`Response::error_for_status`] turns
/// the failures into connector errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// "METHOD url-without-query", for error messages; the query may carry input data.
    origin: String,
}

/// How much of an error body goes into a connector error's message: enough for an upstream's
/// `{"message": ...}`, not enough to flood the run's record.
const ERROR_BODY_SNIPPET: usize = 300;

impl Response {
    pub(crate) fn new(status: u16, headers: Vec<(String, String)>, body: Vec<u8>) -> Self {
        Response {
            status,
            headers,
            body,
            origin: String::new(),
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    pub(crate) fn push_header(&mut self, name: String, value: String) {
        self.headers.push((name, value));
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The first header with this name, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.body
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.body
    }

    /// The body as text; invalid UTF-8 becomes U+FFFD rather than an error.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Parses the body as JSON. A body that does not fit `T` is the upstream's fault (or a
    /// changed API), so it is an `upstream` error that a retry would not fix.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ConnectorError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            ConnectorError::upstream(format_args!(
                "{} returned a body that is not the expected JSON: {e}",
                self.origin_or_default()
            ))
            .retryable(false)
        })
    }

    /// Passes 2xx through and maps every other status onto a connector error:
    ///
    /// | status | kind | retryable |
    /// |---|---|---|
    /// | 401, 403 | auth | no |
    /// | 404, 410 | not_found | no |
    /// | 429 | rate_limited | yes |
    /// | 400, 409, 422 | invalid_input | no |
    /// | 408, 5xx | upstream | yes |
    /// | other | upstream | no |
    pub fn error_for_status(self) -> Result<Self, ConnectorError> {
        if self.is_success() {
            return Ok(self);
        }
        let mut message = format!("{} returned {}", self.origin_or_default(), self.status);
        if self.status == 429
            && let Some(after) = self.header("retry-after")
        {
            let _ = write!(message, " (retry after {after})");
        }
        let snippet = self.text();
        let snippet = snippet.trim();
        if !snippet.is_empty() {
            message.push_str(": ");
            message.extend(snippet.chars().take(ERROR_BODY_SNIPPET));
        }
        Err(match self.status {
            401 | 403 => ConnectorError::auth(message),
            404 | 410 => ConnectorError::not_found(message),
            429 => ConnectorError::rate_limited(message),
            400 | 409 | 422 => ConnectorError::invalid_input(message),
            408 | 500..=599 => ConnectorError::upstream(message),
            _ => ConnectorError::upstream(message).retryable(false),
        })
    }

    fn origin_or_default(&self) -> &str {
        if self.origin.is_empty() {
            "upstream"
        } else {
            &self.origin
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn query_is_appended_and_percent_encoded() {
        assert_eq!(
            with_query(
                "https://a.test/x",
                &q(&[("labels", "bug,help wanted"), ("q", "a&b=c")])
            ),
            "https://a.test/x?labels=bug%2Chelp%20wanted&q=a%26b%3Dc"
        );
        assert_eq!(
            with_query("https://a.test/x", &q(&[("name", "é~._-")])),
            "https://a.test/x?name=%C3%A9~._-"
        );
    }

    #[test]
    fn query_extends_an_existing_query_and_keeps_the_fragment_last() {
        assert_eq!(
            with_query("https://a.test/x?a=1", &q(&[("b", "2")])),
            "https://a.test/x?a=1&b=2"
        );
        assert_eq!(
            with_query("https://a.test/x?", &q(&[("b", "2")])),
            "https://a.test/x?b=2"
        );
        assert_eq!(
            with_query("https://a.test/x#frag", &q(&[("b", "2")])),
            "https://a.test/x?b=2#frag"
        );
        assert_eq!(with_query("https://a.test/x", &[]), "https://a.test/x");
    }

    fn response(status: u16, body: &str) -> Response {
        let mut r = Response::new(
            status,
            vec![("Retry-After".into(), "30".into())],
            body.into(),
        );
        r.origin = "GET https://a.test/x".into();
        r
    }

    fn status_error(status: u16) -> (ErrorKind, bool) {
        match response(status, "").error_for_status() {
            Ok(_) => panic!("status {status} passed error_for_status"),
            Err(e) => (e.kind, e.retryable),
        }
    }

    #[test]
    fn error_for_status_maps_statuses() {
        use ErrorKind::*;
        assert_eq!(status_error(401), (Auth, false));
        assert_eq!(status_error(403), (Auth, false));
        assert_eq!(status_error(404), (NotFound, false));
        assert_eq!(status_error(429), (RateLimited, true));
        assert_eq!(status_error(422), (InvalidInput, false));
        assert_eq!(status_error(500), (Upstream, true));
        assert_eq!(status_error(503), (Upstream, true));
        assert_eq!(status_error(418), (Upstream, false));
        assert_eq!(status_error(302), (Upstream, false));
        assert!(response(204, "").error_for_status().is_ok());
    }

    #[test]
    fn error_message_names_the_request_and_quotes_the_body() {
        let err = response(429, r#"{"message":"slow down"}"#)
            .error_for_status()
            .err()
            .map(|e| e.message);
        assert_eq!(
            err.as_deref(),
            Some(r#"GET https://a.test/x returned 429 (retry after 30): {"message":"slow down"}"#)
        );
        let long = "x".repeat(1000);
        let err = response(500, &long)
            .error_for_status()
            .err()
            .map(|e| e.message.len());
        assert_eq!(
            err,
            Some("GET https://a.test/x returned 500: ".len() + ERROR_BODY_SNIPPET)
        );
    }

    #[test]
    fn json_parses_and_maps_garbage_to_upstream() {
        let ok: Result<Vec<u32>, _> = response(200, "[1,2]").json();
        assert_eq!(ok, Ok(vec![1, 2]));
        let err = response(200, "<html>").json::<Vec<u32>>().err();
        assert_eq!(
            err.map(|e| (e.kind, e.retryable)),
            Some((ErrorKind::Upstream, false))
        );
    }

    #[test]
    fn header_lookup_ignores_case() {
        assert_eq!(response(200, "").header("retry-after"), Some("30"));
        assert_eq!(response(200, "").header("x-missing"), None);
    }

    #[test]
    fn without_query_strips_query_and_fragment() {
        assert_eq!(
            without_query("https://a.test/x?token=1#f"),
            "https://a.test/x"
        );
    }
}

//! A session's record of what it sent and received, for `testAction`: each hop's request as
//! it went out (credential values masked, every secret form scrubbed) and the response the
//! guest was given (already scrubbed), bodies cut to a bound.

use reqwest::header::{HeaderMap, HeaderName};
use serde::Serialize;
use url::Url;

use super::scrub::Scrubber;
use airlock_secrets::REDACTED;

/// How much of each body a trace keeps.
pub const MAX_TRACED_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    pub request: TracedRequest,
    /// `None` when the hop failed (`error`) or was followed by a redirect.
    pub response: Option<TracedResponse>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TracedRequest {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    pub body_truncated: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct TracedResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub body_truncated: bool,
}

/// Text of at most [`MAX_TRACED_BODY_BYTES`] of `bytes` (lossy UTF-8), and whether it was cut.
fn body_text(bytes: &[u8]) -> (String, bool) {
    let cut = bytes.len() > MAX_TRACED_BODY_BYTES;
    let kept = &bytes[..bytes.len().min(MAX_TRACED_BODY_BYTES)];
    (String::from_utf8_lossy(kept).into_owned(), cut)
}

/// The request of one hop: `masked` headers (the credential's) show `***` whatever they
/// hold; everything else is scrubbed of every form of the secrets.
pub(crate) fn request(
    method: &reqwest::Method,
    url: &Url,
    headers: &HeaderMap,
    body: Option<&[u8]>,
    masked: &[HeaderName],
    scrubber: &Scrubber,
) -> TracedRequest {
    let headers = headers
        .iter()
        .map(|(name, value)| {
            let value = if masked.contains(name) {
                REDACTED.to_owned()
            } else {
                scrubber.scrub_str(&String::from_utf8_lossy(value.as_bytes()))
            };
            (name.as_str().to_owned(), value)
        })
        .collect();
    let (body, body_truncated) = match body {
        Some(bytes) => {
            let (text, cut) = body_text(&scrubber.scrub_bytes(bytes));
            (Some(text), cut)
        }
        None => (None, false),
    };
    TracedRequest {
        method: method.as_str().to_owned(),
        url: scrubber.scrub_str(url.as_str()),
        headers,
        body,
        body_truncated,
    }
}

/// A response as the guest got it (the gate scrubbed it already).
pub(crate) fn response(status: u16, headers: &[(String, String)], body: &[u8]) -> TracedResponse {
    let (body, body_truncated) = body_text(body);
    TracedResponse {
        status,
        headers: headers.to_vec(),
        body,
        body_truncated,
    }
}

//! hyper's own refusals, recognised on the way out and rewritten as problem documents.
//!
//! When hyper cannot parse a request head it writes a response itself, with no body and no
//! content type (`HTTP/1.1 400 Bad Request`, `content-length: 0`, `date`), and closes the
//! connection; it offers no hook to change that response. It writes it as the first bytes of
//! a write, after everything before it was flushed (it reads the next head only once the
//! previous response is out). Our own error responses always carry a content type (see
//! `error::ensure_problem`), so a head with exactly hyper's fields and nothing else can only
//! be hyper's.

use memchr::memmem;

use super::{MAX_HEAD_BYTES, MAX_HEADERS, MAX_URI_BYTES};
use crate::error::{ApiError, PROBLEM_JSON};

/// Every response starts so; a refusal of hyper's is a 4xx.
const CANDIDATE: &[u8] = b"HTTP/1.1 4";

/// If `bytes` starts with one of hyper's bare refusals, the length of that head and the
/// response to write in its place. Costs one comparison of ten bytes for anything else.
pub(super) fn replace(bytes: &[u8]) -> Option<(usize, Vec<u8>)> {
    if !bytes.starts_with(CANDIDATE) {
        return None;
    }
    let (status_line, error) = refusal(bytes)?;
    let end = memmem::find(bytes, b"\r\n\r\n")? + 4;
    let mut fields = bytes.get(status_line.len()..end - 2)?;
    let mut date = None;
    let mut empty_body = false;
    while !fields.is_empty() {
        let line_end = memmem::find(fields, b"\r\n")?;
        let line = &fields[..line_end + 2];
        fields = &fields[line_end + 2..];
        let colon = memchr::memchr(b':', line)?;
        let (name, value) = (&line[..colon], line[colon + 1..line_end].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") && value == b"0" {
            empty_body = true;
        } else if name.eq_ignore_ascii_case(b"date") {
            date = Some(line);
        } else if !(name.eq_ignore_ascii_case(b"connection")
            && value.eq_ignore_ascii_case(b"close"))
        {
            return None;
        }
    }
    if !empty_body {
        return None;
    }
    let body = serde_json::to_vec(&error.problem()).ok()?;
    let mut response = Vec::with_capacity(256 + body.len());
    response.extend_from_slice(status_line);
    response.extend_from_slice(b"content-type: ");
    response.extend_from_slice(PROBLEM_JSON.as_bytes());
    response.extend_from_slice(b"\r\ncontent-length: ");
    response.extend_from_slice(body.len().to_string().as_bytes());
    response.extend_from_slice(b"\r\nconnection: close\r\n");
    if let Some(date) = date {
        response.extend_from_slice(date);
    }
    response.extend_from_slice(b"\r\n");
    response.extend_from_slice(&body);
    Some((end, response))
}

/// The status line of a refusal hyper writes on a parse error, and the problem it stands for.
fn refusal(bytes: &[u8]) -> Option<(&'static [u8], ApiError)> {
    const BAD_REQUEST: &[u8] = b"HTTP/1.1 400 Bad Request\r\n";
    const URI_TOO_LONG: &[u8] = b"HTTP/1.1 414 URI Too Long\r\n";
    const TOO_LARGE: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\n";
    if bytes.starts_with(BAD_REQUEST) {
        Some((
            BAD_REQUEST,
            ApiError::BadRequest("the request line or a header field is not valid HTTP/1.1".into()),
        ))
    } else if bytes.starts_with(URI_TOO_LONG) {
        Some((URI_TOO_LONG, uri_too_long()))
    } else if bytes.starts_with(TOO_LARGE) {
        Some((
            TOO_LARGE,
            ApiError::HeaderFieldsTooLarge(format!(
                "a request may have at most {MAX_HEADERS} header fields and a head of {} KiB",
                MAX_HEAD_BYTES / 1024
            )),
        ))
    } else {
        None
    }
}

pub(super) fn uri_too_long() -> ApiError {
    ApiError::UriTooLong(format!(
        "the request target is longer than {MAX_URI_BYTES} bytes"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATE: &str = "date: Mon, 30 Nov 2026 16:00:00 GMT\r\n";

    fn problem_of(response: &[u8]) -> (String, serde_json::Value) {
        let text = String::from_utf8(response.to_vec()).expect("utf-8");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        (head.to_owned(), serde_json::from_str(body).expect("json"))
    }

    #[test]
    fn hypers_bare_refusals_become_problems_with_the_same_status_and_date() {
        for (status_line, status, slug) in [
            ("HTTP/1.1 400 Bad Request\r\n", 400, "bad-request"),
            ("HTTP/1.1 414 URI Too Long\r\n", 414, "uri-too-long"),
            (
                "HTTP/1.1 431 Request Header Fields Too Large\r\n",
                431,
                "header-fields-too-large",
            ),
        ] {
            let bare = format!("{status_line}content-length: 0\r\n{DATE}\r\n");
            let (len, response) = replace(bare.as_bytes()).expect("recognised");
            assert_eq!(len, bare.len());
            let (head, problem) = problem_of(&response);
            assert!(head.starts_with(status_line.trim_end()), "{head}");
            assert!(head.contains("content-type: application/problem+json"));
            assert!(head.contains("connection: close"));
            assert!(head.contains(DATE.trim_end()));
            assert_eq!(problem["status"], status);
            assert_eq!(
                problem["type"],
                format!("https://airlock.dev/problems/{slug}")
            );
        }
    }

    #[test]
    fn only_the_head_is_claimed_when_more_follows() {
        let bare = format!(
            "HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n{DATE}\r\n"
        );
        let bytes = format!("{bare}trailing");
        let (len, _) = replace(bytes.as_bytes()).expect("recognised");
        assert_eq!(len, bare.len());
    }

    #[test]
    fn our_own_responses_and_anything_else_pass_through() {
        for bytes in [
            // One of ours: it has a content type.
            "HTTP/1.1 400 Bad Request\r\ncontent-type: application/problem+json\r\ncontent-length: 0\r\n\r\n",
            // A body: not hyper's refusal.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n",
            "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            // Not a whole head in this write: leave it.
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n",
            "{\"HTTP/1.1 400 Bad Request\"}",
        ] {
            assert!(replace(bytes.as_bytes()).is_none(), "{bytes}");
        }
    }
}

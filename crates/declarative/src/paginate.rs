//! Following pages: page numbers, offsets, cursors from the body, and next links (the `Link`
//! header or the body), always under `max_pages`, stopping on an empty page, refusing a
//! repeated cursor or link, and a link off the declared hosts.

use std::collections::HashSet;

use airlock_contract::ConnectorErrorKind;
use serde_json::Value;

use crate::format::{LinkSource, MAX_PAGES_CAP, OnMaxPages, Pagination};
use crate::plan::Plan;
use crate::pointer;
use crate::response;
use crate::run::{self, Request, Response, RunError, Transport};
use crate::template::{self, encode};

/// The most items a paginated action collects, whatever its `max_pages`.
pub const MAX_ITEMS: usize = 100_000;

/// The first request of a paginated action: for pages and offsets, with the first page's
/// parameters (replacing any of the same name the template wrote); for cursors and links,
/// the request as the templates built it.
pub fn first_request(pagination: &Pagination, mut request: Request) -> Result<Request, RunError> {
    match pagination {
        Pagination::Page {
            param,
            start,
            size_param,
            size,
            ..
        } => {
            request.url = set_query_param(&request.url, param, &start.to_string());
            if let (Some(size_param), Some(size)) = (size_param, size) {
                request.url = set_query_param(&request.url, size_param, &size.to_string());
            }
        }
        Pagination::Offset {
            param,
            limit_param,
            limit,
            ..
        } => {
            request.url = set_query_param(&request.url, param, "0");
            request.url = set_query_param(&request.url, limit_param, &limit.to_string());
        }
        Pagination::Cursor { .. } | Pagination::NextLink { .. } => {}
    }
    Ok(request)
}

fn max_pages_error(pages: u32) -> RunError {
    RunError::upstream(
        "pagination_max_pages",
        format!("read {pages} pages (the action's max_pages) and there are more"),
        false,
    )
}

/// Sends `request` (built by the templates) and the pages after it; returns every page's
/// items in order.
pub fn run(
    plan: &Plan,
    pagination: &Pagination,
    config: &Value,
    request: Request,
    transport: &mut dyn Transport,
) -> Result<Value, RunError> {
    let max_pages = pagination.max_pages();
    if max_pages == 0 || max_pages > MAX_PAGES_CAP {
        return Err(RunError::invalid_definition(format!(
            "max_pages is {max_pages}; it must be 1 to {MAX_PAGES_CAP}"
        )));
    }
    let items_at = pagination.items();
    if !pointer::is_valid(items_at) {
        return Err(RunError::invalid_definition(format!(
            "the pagination's items {items_at:?} is not a JSON Pointer"
        )));
    }
    let mut strategy = Strategy::new(plan, pagination, config, &request.url)?;
    let mut request = first_request(pagination, request)?;
    let mut collected: Vec<Value> = Vec::new();
    let mut pages: u32 = 0;
    loop {
        let response = transport.send(request.clone())?;
        pages += 1;
        let mut body = response::read(&plan.errors, &response)?;
        let next = {
            let Some(Value::Array(items)) = pointer::get(&body, items_at) else {
                return Err(RunError::upstream(
                    "pagination_items_not_array",
                    format!("page {pages} has no list at `{items_at}`"),
                    false,
                ));
            };
            if items.is_empty() {
                break;
            }
            strategy.next(&body, items, &response)?
        };
        let items = match body.pointer_mut(items_at).map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        if collected.len().saturating_add(items.len()) > MAX_ITEMS {
            match pagination.on_max_pages() {
                OnMaxPages::Error => {
                    return Err(RunError::upstream(
                        "pagination_too_many_items",
                        format!("the pages read hold more than {MAX_ITEMS} items"),
                        false,
                    ));
                }
                OnMaxPages::Stop => {
                    let room = MAX_ITEMS - collected.len();
                    collected.extend(items.into_iter().take(room));
                    break;
                }
            }
        }
        collected.extend(items);
        let Some(next) = next else {
            break;
        };
        if pages >= max_pages {
            match pagination.on_max_pages() {
                OnMaxPages::Error => return Err(max_pages_error(pages)),
                OnMaxPages::Stop => break,
            }
        }
        request.url = strategy.follow(next, &request.url)?;
    }
    Ok(Value::Array(collected))
}

/// What a page says about the next one.
enum Next {
    /// The next page or offset number.
    Number(u64),
    /// The next cursor.
    Cursor(String),
    /// The next page's link, as the response wrote it.
    Link(String),
}

enum Strategy<'p> {
    Page {
        param: &'p str,
        page: u64,
    },
    Offset {
        param: &'p str,
        offset: u64,
    },
    Cursor {
        param: &'p str,
        at: CursorAt<'p>,
        has_more: Option<&'p str>,
        seen: HashSet<String>,
    },
    NextLink {
        from: LinkFrom<'p>,
        hosts: HostRules,
        visited: HashSet<String>,
    },
}

enum CursorAt<'p> {
    Body(&'p str),
    LastItem(&'p str),
}

enum LinkFrom<'p> {
    Header,
    Body(&'p str),
}

fn checked_pointer<'p>(what: &str, at: &'p str) -> Result<&'p str, RunError> {
    if pointer::is_valid(at) {
        Ok(at)
    } else {
        Err(RunError::invalid_definition(format!(
            "the pagination's {what} {at:?} is not a JSON Pointer"
        )))
    }
}

impl<'p> Strategy<'p> {
    fn new(
        plan: &Plan,
        pagination: &'p Pagination,
        config: &Value,
        first_url: &str,
    ) -> Result<Self, RunError> {
        Ok(match pagination {
            Pagination::Page { param, start, .. } => Strategy::Page {
                param,
                page: *start,
            },
            Pagination::Offset { param, .. } => Strategy::Offset { param, offset: 0 },
            Pagination::Cursor {
                param,
                cursor,
                cursor_from_last_item,
                has_more,
                ..
            } => {
                let at = match (cursor, cursor_from_last_item) {
                    (Some(at), None) => CursorAt::Body(checked_pointer("cursor", at)?),
                    (None, Some(at)) => {
                        CursorAt::LastItem(checked_pointer("cursor_from_last_item", at)?)
                    }
                    _ => {
                        return Err(RunError::invalid_definition(
                            "a cursor pagination needs exactly one of cursor and cursor_from_last_item",
                        ));
                    }
                };
                let has_more = match has_more {
                    Some(at) => Some(checked_pointer("has_more", at)?),
                    None => None,
                };
                Strategy::Cursor {
                    param,
                    at,
                    has_more,
                    seen: HashSet::new(),
                }
            }
            Pagination::NextLink { from, pointer, .. } => {
                let from = match (from, pointer) {
                    (LinkSource::Header, _) => LinkFrom::Header,
                    (LinkSource::Body, Some(at)) => LinkFrom::Body(checked_pointer("pointer", at)?),
                    (LinkSource::Body, None) => {
                        return Err(RunError::invalid_definition(
                            "a next_link pagination from the body needs a pointer",
                        ));
                    }
                };
                let mut visited = HashSet::new();
                visited.insert(normalize(first_url));
                Strategy::NextLink {
                    from,
                    hosts: HostRules::new(plan, config)?,
                    visited,
                }
            }
        })
    }

    /// What comes after a page with these (non-empty) items; `None` when it was the last.
    fn next(
        &mut self,
        body: &Value,
        items: &[Value],
        response: &Response,
    ) -> Result<Option<Next>, RunError> {
        let overflow = || RunError::invalid_definition("the page number overflows");
        Ok(match self {
            Strategy::Page { page, .. } => {
                Some(Next::Number(page.checked_add(1).ok_or_else(overflow)?))
            }
            // The next offset is past the items received, which is `limit` further unless
            // the API caps pages lower than asked (and then skips none).
            Strategy::Offset { offset, .. } => Some(Next::Number(
                u64::try_from(items.len())
                    .ok()
                    .and_then(|n| offset.checked_add(n))
                    .ok_or_else(overflow)?,
            )),
            Strategy::Cursor { at, has_more, .. } => {
                if let Some(has_more) = has_more
                    && pointer::get(body, has_more) == Some(&Value::Bool(false))
                {
                    return Ok(None);
                }
                let value = match at {
                    CursorAt::Body(at) => pointer::get(body, at),
                    CursorAt::LastItem(at) => items.last().and_then(|item| pointer::get(item, at)),
                };
                match value {
                    None | Some(Value::Null) => None,
                    Some(Value::String(text)) if text.is_empty() => None,
                    Some(Value::String(text)) => Some(Next::Cursor(text.clone())),
                    Some(Value::Number(n)) => Some(Next::Cursor(n.to_string())),
                    Some(_) => {
                        return Err(RunError::upstream(
                            "pagination_invalid_cursor",
                            "the next cursor is neither text nor a number",
                            false,
                        ));
                    }
                }
            }
            Strategy::NextLink { from, .. } => {
                let link = match from {
                    LinkFrom::Header => {
                        response.header_values("link").find_map(next_link_in_header)
                    }
                    LinkFrom::Body(at) => match pointer::get(body, at) {
                        None | Some(Value::Null) => None,
                        Some(Value::String(text)) => Some(text.clone()),
                        Some(_) => {
                            return Err(RunError::upstream(
                                "pagination_invalid_link",
                                format!("the next link at `{at}` is not text"),
                                false,
                            ));
                        }
                    },
                };
                link.filter(|link| !link.trim().is_empty()).map(Next::Link)
            }
        })
    }

    /// The URL of the next page, after `current`.
    fn follow(&mut self, next: Next, current: &str) -> Result<String, RunError> {
        match (self, next) {
            (Strategy::Page { param, page }, Next::Number(n)) => {
                *page = n;
                Ok(set_query_param(current, param, &n.to_string()))
            }
            (Strategy::Offset { param, offset }, Next::Number(n)) => {
                *offset = n;
                Ok(set_query_param(current, param, &n.to_string()))
            }
            (Strategy::Cursor { param, seen, .. }, Next::Cursor(cursor)) => {
                let url = set_query_param(current, param, &cursor);
                if !seen.insert(cursor) {
                    return Err(RunError::upstream(
                        "pagination_cursor_repeated",
                        "the upstream gave a cursor it had already given: following it would loop",
                        false,
                    ));
                }
                Ok(url)
            }
            (Strategy::NextLink { hosts, visited, .. }, Next::Link(link)) => {
                let url = normalize(&resolve(current, &link)?);
                hosts.check(&url)?;
                if !visited.insert(url.clone()) {
                    return Err(RunError::upstream(
                        "pagination_link_repeated",
                        "the next link is one already read: following it would loop",
                        false,
                    ));
                }
                Ok(url)
            }
            _ => Err(RunError::new(
                ConnectorErrorKind::Internal,
                "internal",
                "a pagination step does not fit its strategy",
                false,
            )),
        }
    }
}

/// `rel="next"`'s target in a `Link` header value (RFC 8288): `<url>; rel="next", <url>;
/// rel="last"`. A `rel` may hold several types (`rel="next last"`); names and types compare
/// case-insensitively.
pub fn next_link_in_header(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < bytes.len() && matches!(bytes[*i], b' ' | b'\t') {
            *i += 1;
        }
    };
    while i < bytes.len() {
        skip_ws(&mut i);
        if i < bytes.len() && bytes[i] == b',' {
            i += 1;
            continue;
        }
        if i >= bytes.len() {
            break;
        }
        if bytes[i] != b'<' {
            // Not a link: skip to the next one.
            while i < bytes.len() && bytes[i] != b',' {
                i += 1;
            }
            continue;
        }
        let start = i + 1;
        let end = start + value[start..].find('>')?;
        let target = &value[start..end];
        i = end + 1;
        let mut is_next = false;
        // Parameters: `; name=value` or `; name="quoted value"`, up to the `,` that ends the link.
        loop {
            skip_ws(&mut i);
            if i >= bytes.len() || bytes[i] == b',' {
                break;
            }
            if bytes[i] != b';' {
                i += 1;
                continue;
            }
            i += 1;
            skip_ws(&mut i);
            let name_start = i;
            while i < bytes.len() && !matches!(bytes[i], b'=' | b';' | b',' | b' ' | b'\t') {
                i += 1;
            }
            let name = &value[name_start..i];
            skip_ws(&mut i);
            let mut param = String::new();
            if i < bytes.len() && bytes[i] == b'=' {
                i += 1;
                skip_ws(&mut i);
                if i < bytes.len() && bytes[i] == b'"' {
                    i += 1;
                    let mut raw = Vec::new();
                    while i < bytes.len() && bytes[i] != b'"' {
                        if bytes[i] == b'\\' && i + 1 < bytes.len() {
                            i += 1;
                        }
                        raw.push(bytes[i]);
                        i += 1;
                    }
                    i += 1;
                    param = String::from_utf8_lossy(&raw).into_owned();
                } else {
                    let value_start = i;
                    while i < bytes.len() && !matches!(bytes[i], b';' | b',' | b' ' | b'\t') {
                        i += 1;
                    }
                    param = value[value_start..i].to_owned();
                }
            }
            if name.eq_ignore_ascii_case("rel")
                && param
                    .split_ascii_whitespace()
                    .any(|rel| rel.eq_ignore_ascii_case("next"))
            {
                is_next = true;
            }
        }
        if is_next {
            return Some(target.trim().to_owned());
        }
    }
    None
}

/// `url` with the query parameter `name` set to `value`: its first occurrence replaced (and
/// any other removed), or one added at the end. Both are encoded as template values are.
pub fn set_query_param(url: &str, name: &str, value: &str) -> String {
    let (url, fragment) = match url.find('#') {
        Some(i) => url.split_at(i),
        None => (url, ""),
    };
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut pair = String::new();
    encode(name, &mut pair);
    pair.push('=');
    encode(value, &mut pair);
    let mut pairs: Vec<&str> = Vec::new();
    let mut replaced = false;
    for existing in query.into_iter().flat_map(|query| query.split('&')) {
        if existing.is_empty() {
            continue;
        }
        let key = existing.split_once('=').map_or(existing, |(key, _)| key);
        if percent_decode(key) == name.as_bytes() {
            if !replaced {
                pairs.push(&pair);
                replaced = true;
            }
        } else {
            pairs.push(existing);
        }
    }
    if !replaced {
        pairs.push(&pair);
    }
    format!("{base}?{}{fragment}", pairs.join("&"))
}

fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

fn left_hosts(why: impl std::fmt::Display) -> RunError {
    RunError::new(
        ConnectorErrorKind::HttpDenied,
        "pagination_left_hosts",
        format!("the next link {why}"),
        false,
    )
}

fn invalid_link(why: &str) -> RunError {
    RunError::upstream(
        "pagination_invalid_link",
        format!("the next link {why}"),
        false,
    )
}

/// An absolute URL's scheme, authority (`host[:port]`, with any userinfo) and the rest
/// (path, query, fragment).
struct Parts<'u> {
    scheme: &'u str,
    authority: &'u str,
    rest: &'u str,
}

fn split_url(url: &str) -> Option<Parts<'_>> {
    let (scheme, after) = url.split_once("://")?;
    if !is_scheme(scheme) {
        return None;
    }
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    Some(Parts {
        scheme,
        authority: &after[..end],
        rest: &after[end..],
    })
}

/// The URL with its scheme and authority lowercase, as a URL parser would have them, so
/// that a link repeated in other case is still seen as repeated.
fn normalize(url: &str) -> String {
    match split_url(url) {
        Some(parts) => format!(
            "{}://{}{}",
            parts.scheme.to_ascii_lowercase(),
            parts.authority.to_ascii_lowercase(),
            parts.rest
        ),
        None => url.to_owned(),
    }
}

fn is_scheme(text: &str) -> bool {
    let mut bytes = text.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// The host of an authority, lowercase without a trailing dot and without its port; `None`
/// for userinfo, a percent-escape, or anything but a plain name or a bracketed IPv6 literal.
fn host_of(authority: &str) -> Option<String> {
    if authority.contains(['@', '%']) {
        return None;
    }
    let (host, port) = if authority.starts_with('[') {
        let close = authority.find(']')?;
        let host = &authority[..=close];
        if !host[1..close]
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.'))
        {
            return None;
        }
        (host, &authority[close + 1..])
    } else {
        match authority.find(':') {
            Some(i) => authority.split_at(i),
            None => (authority, ""),
        }
    };
    if let Some(digits) = port.strip_prefix(':') {
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    } else if !port.is_empty() {
        return None;
    }
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let plain = host.starts_with('[')
        || host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    (plain && !host.is_empty() && !host.starts_with('.')).then_some(host)
}

/// `link` resolved against `current` (the page's URL): absolute (`https://...`),
/// scheme-relative (`//host/...`), absolute path (`/...`), query (`?...`) or relative path.
/// The fragment is dropped; spaces and non-ASCII are percent-encoded.
pub fn resolve(current: &str, link: &str) -> Result<String, RunError> {
    let link = link.trim_matches([' ', '\t']);
    if link.bytes().any(|b| b.is_ascii_control() || b == b'\\') {
        return Err(invalid_link("holds a control character or a backslash"));
    }
    let link = link.split('#').next().unwrap_or_default();
    let mut cleaned = String::with_capacity(link.len());
    for c in link.chars() {
        if c == ' ' || !c.is_ascii() {
            let mut buffer = [0u8; 4];
            for b in c.encode_utf8(&mut buffer).bytes() {
                cleaned.push_str(&format!("%{b:02X}"));
            }
        } else {
            cleaned.push(c);
        }
    }
    let link = cleaned.as_str();
    let current_parts = split_url(current)
        .ok_or_else(|| RunError::invalid_definition("the request URL is not absolute"))?;
    // A scheme is what comes before a `:` that precedes any `/`, `?` or `#`.
    let scheme_end = link
        .find(':')
        .filter(|i| !link[..*i].contains(['/', '?', '#']) && is_scheme(&link[..*i]));
    if let Some(i) = scheme_end {
        if !link[i..].starts_with("://") {
            return Err(left_hosts("is not a web URL"));
        }
        return Ok(link.to_owned());
    }
    let origin = format!("{}://{}", current_parts.scheme, current_parts.authority);
    if link.starts_with("//") {
        return Ok(format!("{}:{link}", current_parts.scheme));
    }
    if link.starts_with('/') {
        return Ok(format!("{origin}{link}"));
    }
    let path_end = current_parts
        .rest
        .find(['?', '#'])
        .unwrap_or(current_parts.rest.len());
    let path = &current_parts.rest[..path_end];
    if link.starts_with('?') {
        let path = if path.is_empty() { "/" } else { path };
        return Ok(format!("{origin}{path}{link}"));
    }
    let directory = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    };
    Ok(format!("{origin}{directory}{link}"))
}

enum HostPattern {
    Any,
    Exact(String),
    Suffix(String),
}

/// Where a next link may go: https (or http when the base URL is http) on the base URL's
/// host or a declared host.
struct HostRules {
    allow_http: bool,
    patterns: Vec<HostPattern>,
}

impl HostRules {
    fn new(plan: &Plan, config: &Value) -> Result<Self, RunError> {
        let base = run::base_url(plan, config)?;
        let parts = split_url(&base)
            .ok_or_else(|| RunError::invalid_definition("the base URL is not absolute"))?;
        let mut patterns = Vec::new();
        if let Some(host) = host_of(parts.authority) {
            patterns.push(HostPattern::Exact(host));
        }
        for declared in &plan.hosts {
            // `{config.NAME}` stands for one DNS label, as in the base URL's host; a pattern
            // whose config is missing matches nothing.
            let Ok(expanded) = template::expand_base_url(&format!("https://{declared}"), config)
            else {
                continue;
            };
            let name = expanded.strip_prefix("https://").unwrap_or(&expanded);
            let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
            patterns.push(if name == "*" {
                HostPattern::Any
            } else if let Some(parent) = name.strip_prefix("*.") {
                HostPattern::Suffix(parent.to_owned())
            } else {
                HostPattern::Exact(name)
            });
        }
        Ok(HostRules {
            allow_http: parts.scheme.eq_ignore_ascii_case("http"),
            patterns,
        })
    }

    fn check(&self, url: &str) -> Result<(), RunError> {
        let parts = split_url(url).ok_or_else(|| left_hosts("is not an absolute web URL"))?;
        let scheme = parts.scheme.to_ascii_lowercase();
        if !(scheme == "https" || (scheme == "http" && self.allow_http)) {
            return Err(left_hosts(format!(
                "uses {scheme}, not the base URL's scheme"
            )));
        }
        let host = host_of(parts.authority)
            .ok_or_else(|| left_hosts("has an authority that is not a plain host name"))?;
        let is_ip = host.starts_with('[')
            || host
                .rsplit('.')
                .next()
                .is_some_and(|label| label.bytes().all(|b| b.is_ascii_digit()));
        let allowed = self.patterns.iter().any(|pattern| match pattern {
            HostPattern::Any => true,
            HostPattern::Exact(name) => *name == host,
            HostPattern::Suffix(parent) => {
                !is_ip
                    && host.len() > parent.len() + 1
                    && host.ends_with(parent.as_str())
                    && host.as_bytes()[host.len() - parent.len() - 1] == b'.'
            }
        });
        if allowed {
            Ok(())
        } else {
            Err(left_hosts(format!("goes to {host}, not a declared host")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_next_from_link_headers() {
        for (header, next) in [
            ("<https://a.test/2>; rel=\"next\"", Some("https://a.test/2")),
            (
                "<https://a.test/1>; rel=\"prev\", <https://a.test/3>; rel=\"next\"",
                Some("https://a.test/3"),
            ),
            (
                "<https://a.test/9>; rel=\"last\", <https://a.test/3?a=1,2>; title=\"x, y\"; REL=\"Last NEXT\"",
                Some("https://a.test/3?a=1,2"),
            ),
            ("<https://a.test/3>; rel=next", Some("https://a.test/3")),
            ("<https://a.test/3>; rel=\"nextish\"", None),
            ("<https://a.test/1>; rel=\"prev\"", None),
            (
                "garbage, <https://a.test/4>;rel=next",
                Some("https://a.test/4"),
            ),
            ("<https://a.test/5", None),
            ("", None),
            ("<>; rel=next", Some("")),
            (";;;,,<x>;\"", None),
        ] {
            assert_eq!(next_link_in_header(header).as_deref(), next, "{header:?}");
        }
    }

    #[test]
    fn sets_and_replaces_query_params() {
        assert_eq!(
            set_query_param("https://a.test/x", "page", "2"),
            "https://a.test/x?page=2"
        );
        assert_eq!(
            set_query_param("https://a.test/x?a=1&page=1&b=2&page=7", "page", "2"),
            "https://a.test/x?a=1&page=2&b=2"
        );
        assert_eq!(
            set_query_param("https://a.test/x?", "p a", "a&b"),
            "https://a.test/x?p%20a=a%26b"
        );
        assert_eq!(
            set_query_param("https://a.test/x?p%20a=1&flag", "p a", "2"),
            "https://a.test/x?p%20a=2&flag"
        );
    }

    #[test]
    fn resolves_links() {
        let current = "https://api.test/v1/items?page=1";
        for (link, url) in [
            ("https://other.test/x", "https://other.test/x"),
            ("//cdn.test/x", "https://cdn.test/x"),
            ("/v2/items?page=2", "https://api.test/v2/items?page=2"),
            ("?page=2", "https://api.test/v1/items?page=2"),
            ("more?page=2#top", "https://api.test/v1/more?page=2"),
            ("a b/é", "https://api.test/v1/a%20b/%C3%A9"),
        ] {
            assert_eq!(resolve(current, link).expect("resolves"), url, "{link:?}");
        }
        assert_eq!(
            resolve(current, "https:evil.test").expect_err("no").code,
            "pagination_left_hosts"
        );
        assert_eq!(
            resolve(current, "/a\r\nb").expect_err("no").code,
            "pagination_invalid_link"
        );
        assert_eq!(
            resolve(current, "https:\\\\evil.test")
                .expect_err("no")
                .code,
            "pagination_invalid_link"
        );
    }

    #[test]
    fn hosts_are_plain_names() {
        assert_eq!(host_of("API.test.:443").as_deref(), Some("api.test"));
        assert_eq!(host_of("[::1]:80").as_deref(), Some("[::1]"));
        for bad in [
            "api.test@evil.test",
            "a:b@evil",
            "evil%2etest",
            "a:80x",
            "",
            "[::1",
            "a b",
        ] {
            assert_eq!(host_of(bad), None, "{bad:?}");
        }
    }
}

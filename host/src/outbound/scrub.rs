//! Replaces every form of a grant's secrets with `***` in text and bytes, for responses that
//! reach the guest and for logs and outputs that leave the runtime.

use std::fmt;
use std::sync::Arc;

use memchr::memmem;
use url::form_urlencoded;

use crate::secrets::{REDACTED, Secret};

/// Redacts a fixed set of secret strings. Cheap to clone (shared patterns).
#[derive(Clone, Default)]
pub struct Scrubber {
    /// Distinct, non-empty needles.
    patterns: Arc<[Secret]>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("patterns", &self.patterns.len())
            .finish()
    }
}

impl Scrubber {
    /// A scrubber for `secrets` and the encodings under which a server or a connector is likely
    /// to repeat them: percent-encoding (query strings, form bodies) and JSON string escaping
    /// (a server echoing a header inside a JSON document).
    ///
    /// Every non-empty secret is scrubbed, however short: a short secret may mangle unrelated
    /// text, but leaking one is worse.
    pub fn new(secrets: impl IntoIterator<Item = Secret>) -> Scrubber {
        let mut patterns: Vec<Secret> = Vec::new();
        let mut push = |candidate: Secret| {
            if !candidate.is_empty() && !patterns.iter().any(|p| p.expose() == candidate.expose()) {
                patterns.push(candidate);
            }
        };
        for secret in secrets {
            let percent: String =
                form_urlencoded::byte_serialize(secret.expose().as_bytes()).collect();
            push(Secret::from(percent));
            if let Ok(json) = serde_json::to_string(secret.expose()) {
                let inner = json
                    .strip_prefix('"')
                    .and_then(|rest| rest.strip_suffix('"'))
                    .unwrap_or(&json);
                push(Secret::from(inner));
                // Some serializers (PHP's json_encode, ...) also escape "/", common in base64.
                push(Secret::from(inner.replace('/', "\\/")));
            }
            push(secret);
        }
        Scrubber {
            patterns: patterns.into(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn contains_secret(&self, haystack: &[u8]) -> bool {
        self.patterns
            .iter()
            .any(|p| memmem::find(haystack, p.expose().as_bytes()).is_some())
    }

    /// `bytes` with every occurrence of a secret replaced by `***`. Overlapping and adjacent
    /// occurrences (of the same or different secrets) merge into one `***`, so no fragment of
    /// a secret survives between two replacements.
    pub fn scrub_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let spans = self.spans(bytes);
        if spans.is_empty() {
            return bytes.to_vec();
        }
        let mut out = Vec::with_capacity(bytes.len());
        let mut cursor = 0;
        for (start, end) in spans {
            out.extend_from_slice(&bytes[cursor..start]);
            out.extend_from_slice(REDACTED.as_bytes());
            cursor = end;
        }
        out.extend_from_slice(&bytes[cursor..]);
        out
    }

    pub fn scrub_str(&self, text: &str) -> String {
        // Secrets are valid UTF-8, so every match starts and ends on a character boundary of
        // valid UTF-8 text, and so does the result; the lossy branch cannot change anything.
        match String::from_utf8(self.scrub_bytes(text.as_bytes())) {
            Ok(text) => text,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        }
    }

    /// Scrubs a `String` in place (no allocation when there is nothing to replace).
    pub fn scrub_string(&self, text: &mut String) {
        if self.contains_secret(text.as_bytes()) {
            *text = self.scrub_str(text);
        }
    }

    /// Scrubs a byte buffer in place (no allocation when there is nothing to replace).
    pub fn scrub_vec(&self, bytes: &mut Vec<u8>) {
        if self.contains_secret(bytes) {
            *bytes = self.scrub_bytes(bytes);
        }
    }

    /// Sorted, merged `[start, end)` ranges covered by any occurrence of any pattern.
    fn spans(&self, haystack: &[u8]) -> Vec<(usize, usize)> {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for pattern in self.patterns.iter() {
            let needle = pattern.expose().as_bytes();
            // Overlapping occurrences matter ("aaa" in "aaaa"), so step one byte, not a needle.
            let finder = memmem::Finder::new(needle);
            let mut from = 0;
            while let Some(offset) = finder.find(&haystack[from..]) {
                let start = from + offset;
                spans.push((start, start + needle.len()));
                from = start + 1;
            }
        }
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    fn scrubber(secrets: &[&str]) -> Scrubber {
        Scrubber::new(secrets.iter().map(|s| Secret::from(*s)))
    }

    #[test]
    fn replaces_every_occurrence() {
        let s = scrubber(&["tok123"]);
        assert_eq!(s.scrub_str("a tok123 b tok123"), "a *** b ***");
        assert_eq!(s.scrub_bytes(b"xtok123y"), b"x***y");
        assert_eq!(s.scrub_str("nothing here"), "nothing here");
    }

    #[test]
    fn merges_overlapping_and_adjacent_secrets() {
        let s = scrubber(&["abcd", "cdef"]);
        assert_eq!(s.scrub_str("xabcdefy"), "x***y");
        assert_eq!(s.scrub_str("abcdabcd"), "***");
        let s = scrubber(&["aa"]);
        assert_eq!(s.scrub_str("aaaaa!"), "***!");
    }

    #[test]
    fn scrubs_percent_and_json_encoded_forms() {
        let s = scrubber(&["p/a+s s\"w"]);
        assert_eq!(s.scrub_str("q=p%2Fa%2Bs+s%22w"), "q=***");
        assert_eq!(s.scrub_str(r#"{"h":"p/a+s s\"w"}"#), r#"{"h":"***"}"#);
        assert_eq!(s.scrub_str(r#"{"h":"p\/a+s s\"w"}"#), r#"{"h":"***"}"#);
    }

    #[test]
    fn ignores_empty_secrets_and_keeps_utf8() {
        let s = scrubber(&["", "ключ"]);
        assert_eq!(s.scrub_str("a ключ ü"), "a *** ü");
        let mut text = String::from("no secret");
        s.scrub_string(&mut text);
        assert_eq!(text, "no secret");
        assert!(!format!("{s:?}").contains("ключ"));
    }
}

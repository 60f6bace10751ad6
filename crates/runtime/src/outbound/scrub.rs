//! Replaces every form of a grant's secrets with `***` in text and bytes, for responses that
//! reach the guest and for logs and outputs that leave the runtime.

use std::fmt;
use std::sync::{Arc, RwLock};

use memchr::memmem;
use url::form_urlencoded;

use airlock_secrets::{REDACTED, Secret};

/// Redacts a set of secret strings. Cheap to clone, and clones share their patterns: a secret
/// added to one ([`Scrubber::add`]) is redacted by every clone. That is how the runtime's copy,
/// taken before the guest runs, also redacts an OAuth2 token the gate obtained mid-invocation.
#[derive(Clone, Default)]
pub struct Scrubber {
    /// Distinct, non-empty needles; replaced as a whole when secrets are added, so a scrub
    /// works on one consistent snapshot without holding the lock.
    patterns: Arc<RwLock<Arc<[Secret]>>>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scrubber")
            .field("patterns", &self.snapshot().len())
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
        let patterns = with_encodings(Vec::new(), secrets);
        Scrubber {
            patterns: Arc::new(RwLock::new(patterns.into())),
        }
    }

    /// Adds `secrets` (and their encodings) to this scrubber and every clone of it.
    pub fn add(&self, secrets: impl IntoIterator<Item = Secret>) {
        let mut patterns = self.patterns.write().unwrap_or_else(|p| p.into_inner());
        *patterns = with_encodings(patterns.to_vec(), secrets).into();
    }

    fn snapshot(&self) -> Arc<[Secret]> {
        // A poisoned lock still holds a whole pattern list: it is only ever replaced.
        self.patterns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn is_empty(&self) -> bool {
        self.snapshot().is_empty()
    }

    pub fn contains_secret(&self, haystack: &[u8]) -> bool {
        self.snapshot()
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
        for pattern in self.snapshot().iter() {
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

/// `patterns` plus each of `secrets` and the encodings under which a server or a connector is
/// likely to repeat it, without empty or duplicate needles.
fn with_encodings(
    mut patterns: Vec<Secret>,
    secrets: impl IntoIterator<Item = Secret>,
) -> Vec<Secret> {
    let mut push = |candidate: Secret| {
        if !candidate.is_empty() && !patterns.iter().any(|p| p.expose() == candidate.expose()) {
            patterns.push(candidate);
        }
    };
    for secret in secrets {
        let percent: String = form_urlencoded::byte_serialize(secret.expose().as_bytes()).collect();
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
    patterns
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

    #[test]
    fn added_secrets_reach_every_clone() {
        let s = scrubber(&["old-token"]);
        let copy = s.clone();
        s.add([Secret::from("new/token")]);
        assert_eq!(copy.scrub_str("old-token new/token"), "*** ***");
        assert_eq!(copy.scrub_str(r#""new\/token""#), r#""***""#);
        assert!(copy.contains_secret(b"new%2Ftoken"));
    }
}

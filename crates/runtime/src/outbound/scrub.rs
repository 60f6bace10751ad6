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
    /// to repeat them: percent-encoding (query strings, form bodies), JSON string escaping (a
    /// server echoing a header inside a JSON document) and base64 in both alphabets, padded or
    /// not, alone or inside longer encoded data (a server echoing the request encoded).
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
///
/// Each secret is taken as itself and as base64 ([`base64_forms`]: an upstream that echoes a
/// request back encoded, a token inside a JWT or a basic-auth blob); each of those forms is
/// then taken as itself, percent-encoded and JSON-escaped ([`escaped_forms`]).
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
        for encoded in base64_forms(secret.expose().as_bytes()) {
            escaped_forms(&encoded, &mut push);
        }
        escaped_forms(&secret, &mut push);
    }
    patterns
}

/// `text` as itself, percent-encoded (query strings, form bodies) and JSON-escaped (a server
/// echoing a header inside a JSON document), each handed to `push`.
fn escaped_forms(text: &Secret, push: &mut impl FnMut(Secret)) {
    let raw = text.expose();
    let percent: String = form_urlencoded::byte_serialize(raw.as_bytes()).collect();
    push(Secret::from(percent));
    if let Ok(json) = serde_json::to_string(raw) {
        let inner = json
            .strip_prefix('"')
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or(&json);
        push(Secret::from(inner));
        // Some serializers (PHP's json_encode, ...) also escape "/", common in base64.
        push(Secret::from(inner.replace('/', "\\/")));
    }
    push(text.clone());
}

/// Below this many characters an unaligned base64 core (see [`base64_forms`]) is not
/// searched for: too short to be specific, it would redact unrelated base64 text (a 6-byte
/// secret gives 6 characters, 36 bits).
const MIN_CORE_CHARS: usize = 6;

/// The base64 texts that reveal `secret`, in the standard and the URL-safe alphabets:
///
/// - the secret encoded on its own, padded and unpadded (an echo of the value itself);
/// - the characters that depend on nothing but the secret when it sits inside longer encoded
///   data (an echo of a whole header, a JSON body, a JWT claim): base64 turns 3 bytes into
///   4 characters, so the secret starts at one of 3 alignments, and at each the characters
///   whose 6 bits all come from the secret are the same whatever surrounds it. The one or
///   two boundary characters around this core carry a few bits of the secret mixed with its
///   neighbours' and are left; the core is what a reader could decode the secret from.
fn base64_forms(secret: &[u8]) -> Vec<Secret> {
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

    if secret.is_empty() {
        return Vec::new();
    }
    let mut forms = Vec::new();
    for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
        forms.push(Secret::from(engine.encode(secret)));
    }
    // Secret bits sit at [8 * lead, 8 * (lead + len)) of the encoded stream; character i
    // covers bits [6i, 6i + 6), so the core is the characters from ceil(8 * lead / 6) up to,
    // not including, floor(8 * (lead + len) / 6).
    let bits = |bytes: usize| bytes * 8;
    for lead in 0..3usize {
        let first = bits(lead).div_ceil(6);
        let end = bits(lead + secret.len()) / 6;
        if end <= first || end - first < MIN_CORE_CHARS {
            continue;
        }
        let mut shifted = zeroize::Zeroizing::new(vec![0u8; lead]);
        shifted.extend_from_slice(secret);
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = Secret::from(engine.encode(shifted.as_slice()));
            if let Some(core) = encoded.expose().get(first..end) {
                forms.push(Secret::from(core));
            }
        }
    }
    forms
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
pub(super) mod tests {
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

    /// Every base64 text of `bytes` a server might send: both alphabets, padded or not.
    fn encodings(bytes: &[u8]) -> Vec<String> {
        use base64::Engine as _;
        use base64::engine::general_purpose::{
            STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD,
        };
        [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD]
            .into_iter()
            .map(|engine| engine.encode(bytes))
            .collect()
    }

    /// Whatever any decoding of any stretch of `text` yields: every run of characters from
    /// either base64 alphabet, at each of the four character alignments, decoded leniently.
    pub(in crate::outbound) fn decodings(text: &str) -> Vec<Vec<u8>> {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let is_b64 = |c: char| c.is_ascii_alphanumeric() || "+/-_".contains(c);
        let mut out = Vec::new();
        for run in text.split(|c: char| !is_b64(c)).filter(|r| !r.is_empty()) {
            for skip in 0..4.min(run.len()) {
                let chars = &run[skip..];
                let usable = &chars[..chars.len() - chars.len() % 4];
                for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                    // Lenient: a run mixing alphabets decodes under neither, which is fine:
                    // then no reader gets bytes out of it either.
                    if let Ok(bytes) = engine.decode(usable) {
                        out.push(bytes);
                    }
                }
            }
        }
        out
    }

    /// Whether `haystack` holds any 4-byte stretch of `secret`.
    pub(in crate::outbound) fn reveals(haystack: &[u8], secret: &[u8]) -> bool {
        secret
            .windows(4)
            .any(|window| memmem::find(haystack, window).is_some())
    }

    #[test]
    fn scrubs_the_base64_of_a_secret_in_both_alphabets_padded_or_not() {
        // 23 bytes: the padded and unpadded forms differ; "?>" puts '+' and '/' in standard
        // base64 and '-' and '_' in the URL-safe one.
        let secret = "s3cret-T0ken/with+ch?>>";
        let s = scrubber(&[secret]);
        for encoded in encodings(secret.as_bytes()) {
            assert_eq!(
                s.scrub_str(&format!("x {encoded} y")),
                "x *** y",
                "{encoded}"
            );
            assert_eq!(
                s.scrub_str(&format!(r#"{{"echo":"{encoded}"}}"#)),
                r#"{"echo":"***"}"#,
                "{encoded}"
            );
            let percent: String = form_urlencoded::byte_serialize(encoded.as_bytes()).collect();
            assert_eq!(s.scrub_str(&format!("q={percent}")), "q=***", "{percent}");
            let json_slashes = encoded.replace('/', "\\/");
            assert_eq!(s.scrub_str(&json_slashes), "***", "{json_slashes}");
        }
        // Each length modulo 3 (1 and 2 leave padding, 0 none), short secrets included.
        for secret in ["p", "pw", "pwd", "hunter2", "hunter22", "hunter222"] {
            let s = scrubber(&[secret]);
            for encoded in encodings(secret.as_bytes()) {
                assert_eq!(
                    s.scrub_str(&format!("<{encoded}>")),
                    "<***>",
                    "{secret}: {encoded}"
                );
            }
        }
    }

    #[test]
    fn scrubs_a_secret_base64_encoded_inside_longer_data() {
        // An upstream that echoes the whole request (or a header, or a JSON body) encoded: the
        // secret sits at any byte offset, so at each of base64's three alignments.
        let secret = "s3cret-T0ken/with+ch?>>";
        let s = scrubber(&[secret]);
        for before in ["", "a", "ab", "Authorization: Bearer ", "{\"token\":\""] {
            for after in ["", "z", "\r\n", "\"}"] {
                let plain = format!("{before}{secret}{after}");
                for encoded in encodings(plain.as_bytes()) {
                    let scrubbed = s.scrub_str(&encoded);
                    assert!(scrubbed.contains("***"), "{plain:?}: {encoded}");
                    for bytes in decodings(&scrubbed) {
                        assert!(
                            !reveals(&bytes, secret.as_bytes()),
                            "{plain:?}: {scrubbed} still decodes to {}",
                            String::from_utf8_lossy(&bytes)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn leaves_unrelated_base64_alone() {
        let s = scrubber(&["s3cret-T0ken/with+ch?>>"]);
        for text in encodings(b"an unrelated payload, long enough to span many groups") {
            assert_eq!(s.scrub_str(&text), text);
        }
    }

    #[test]
    fn scrubs_the_base64_of_a_basic_auth_pair() {
        use crate::outbound::credential::{Credential, secret_forms};
        let credential = Credential::Basic {
            username: "alice".into(),
            password: Secret::from("p?>w0rd~~x"),
        };
        let s = Scrubber::new(secret_forms(&credential));
        for encoded in encodings(b"alice:p?>w0rd~~x") {
            assert_eq!(
                s.scrub_str(&format!("Basic {encoded}")),
                "Basic ***",
                "{encoded}"
            );
        }
        // Inside a longer encoded echo of the header, too.
        for encoded in encodings(b"Authorization: Basic alice:p?>w0rd~~x\r\n") {
            let scrubbed = s.scrub_str(&encoded);
            for bytes in decodings(&scrubbed) {
                assert!(!reveals(&bytes, b"p?>w0rd~~x"), "{scrubbed}");
            }
        }
    }

    #[test]
    fn added_secrets_reach_every_clone() {
        let s = scrubber(&["old-token"]);
        let copy = s.clone();
        s.add([Secret::from("new/token")]);
        assert_eq!(copy.scrub_str("old-token new/token"), "*** ***");
        assert_eq!(copy.scrub_str(r#""new\/token""#), r#""***""#);
        assert!(copy.contains_secret(b"new%2Ftoken"));
        assert_eq!(copy.scrub_str("bmV3L3Rva2Vu"), "***");
    }
}

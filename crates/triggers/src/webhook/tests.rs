//! Tests for the webhook verifiers, one file per scheme plus what they share and the fuzzing.
//!
//! Expected signatures are hard-coded, never computed by the code under test: the official
//! Standard Webhooks vector, GitHub's documented vector, and our own vectors computed
//! independently with Python's standard library (each file shows how).

mod fuzz;
mod general;
mod github;
mod standard;
mod stripe;

use http::{HeaderMap, HeaderName, HeaderValue};

/// Headers from (name, value) pairs, as a sender would send them (repeats are kept).
fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    map
}

/// What [`super::sign`] returned, as a header map.
fn to_map(pairs: Vec<(HeaderName, String)>) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(name, HeaderValue::from_str(&value).unwrap());
    }
    map
}

/// `map` with `name` set to `value` (replacing what was there).
fn with(mut map: HeaderMap, name: &str, value: &str) -> HeaderMap {
    map.insert(
        HeaderName::from_bytes(name.as_bytes()).unwrap(),
        HeaderValue::from_str(value).unwrap(),
    );
    map
}

/// `map` without `name`.
fn without(mut map: HeaderMap, name: &str) -> HeaderMap {
    assert!(map.remove(name).is_some(), "{name} was not there to remove");
    map
}

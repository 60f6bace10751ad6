//! JSON Pointers (RFC 6901): checked when a definition is saved, resolved by the runner.

use serde_json::Value;

/// Whether `pointer` is a JSON Pointer: empty (the whole document), or `/`-separated tokens
/// in which `~` only starts `~0` or `~1`.
pub fn is_valid(pointer: &str) -> bool {
    if pointer.is_empty() {
        return true;
    }
    if !pointer.starts_with('/') {
        return false;
    }
    let bytes = pointer.as_bytes();
    bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b != b'~' || matches!(bytes.get(i + 1), Some(b'0') | Some(b'1')))
}

/// The value at `pointer`, `None` when absent (or the pointer is malformed).
pub fn get<'v>(value: &'v Value, pointer: &str) -> Option<&'v Value> {
    value.pointer(pointer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_and_resolves_pointers() {
        for ok in ["", "/", "/a", "/a/0", "/a~0b/c~1d"] {
            assert!(is_valid(ok), "{ok:?}");
        }
        for bad in ["a", "/a~", "/a~2", "#/a"] {
            assert!(!is_valid(bad), "{bad:?}");
        }
        let doc = json!({"a/b": {"c~d": [1, 2]}});
        assert_eq!(get(&doc, "/a~1b/c~0d/1"), Some(&json!(2)));
        assert_eq!(get(&doc, "/missing"), None);
    }
}

//! `Secret` and `SecretBytes`: credentials in types that cannot be printed, logged or
//! serialized by accident, and that are overwritten when dropped.
//!
//! `Secret` is the only way a credential travels through the host: `Debug`, `Display` and
//! `Serialize` all print `***`, so a stray `{:?}` in a log line or an error cannot leak one.
//! The value is reachable only through [`Secret::expose`], which makes every real use greppable.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, Zeroizing};

/// What every redacted form of a secret prints.
pub const REDACTED: &str = "***";

/// A credential string. Redacted in `Debug`, `Display` and `Serialize`; overwritten on drop.
///
/// No `PartialEq`: comparing secrets with `==` is not constant-time, and nothing in the host
/// needs to compare them; code that really must can compare `expose()` explicitly.
#[derive(Clone, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The plain value. Call it only where the value leaves the host on purpose (the outbound
    /// gate attaching a credential) or to build a scrubber.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

/// Serializes as `"***"`: a secret that ends up in an API response or a log record by mistake
/// shows that it was there without showing what it was.
impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// Deserializes the plain value, so credentials can be read from a decrypted envelope or a
/// request body. (Serialization is deliberately not the inverse.)
impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Secret, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// `zeroize` writes through volatile stores the optimizer cannot drop, over the whole capacity.
/// Copies made by earlier reallocations or by callers of `expose()` are out of reach, which is
/// why this is hygiene, not a guarantee.
impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// Decrypted bytes (a credential on its way to the outbound gate). Redacted in `Debug`,
/// overwritten on drop; `Zeroizing<Vec<u8>>` alone would print its contents in `Debug`.
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    pub(crate) fn new(bytes: Vec<u8>) -> SecretBytes {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// The plain bytes, e.g. for `serde_json::from_slice` into a struct of [`Secret`]s.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn debug_display_and_serialize_are_redacted() {
        let secret = Secret::from("hunter2-very-secret".to_owned());
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{secret}"), "***");
        assert_eq!(serde_json::to_string(&secret).unwrap(), "\"***\"");
        assert_eq!(secret.expose(), "hunter2-very-secret");

        #[derive(Debug, Serialize)]
        struct Holder {
            token: Secret,
        }
        let holder = Holder { token: secret };
        assert!(!format!("{holder:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&holder).unwrap().contains("hunter2"));
    }

    #[test]
    fn secret_bytes_debug_is_redacted() {
        let bytes = SecretBytes::new(b"hunter2".to_vec());
        assert_eq!(format!("{bytes:?}"), "***");
        assert_eq!(bytes.expose(), b"hunter2");
    }

    #[test]
    fn deserializes_the_plain_value() {
        let secret: Secret = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(secret.expose(), "abc");
    }
}

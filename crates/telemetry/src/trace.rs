//! W3C Trace Context: the trace id a request brings (`traceparent`), kept with each run so
//! every step, on any process and after a replay, carries it, and the `traceparent` the
//! outbound gate sends upstream.

use std::fmt;

/// A trace id: 32 lowercase hex digits, not all zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TraceId(String);

impl TraceId {
    /// The trace id of a `traceparent` header (`00-<trace id>-<parent id>-<flags>`), if it
    /// is one. Versions other than `00` are read as `00` (the spec's rule for versions this
    /// reader does not know), `ff` and malformed headers are ignored.
    pub fn from_traceparent(header: &str) -> Option<TraceId> {
        let mut parts = header.trim().splitn(5, '-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let parent = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || !is_hex(version) || version == "ff" {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if parent.len() != 16 || !is_hex(parent) || parent.bytes().all(|b| b == b'0') {
            return None;
        }
        if flags.len() < 2 || !is_hex(&flags[..2]) {
            return None;
        }
        TraceId::parse(trace)
    }

    /// A stored trace id, checked.
    pub fn parse(hex: &str) -> Option<TraceId> {
        (hex.len() == 32 && is_hex(hex) && !hex.bytes().all(|b| b == b'0'))
            .then(|| TraceId(hex.to_owned()))
    }

    /// A new trace id.
    pub fn random() -> TraceId {
        let mut bytes = [0u8; 16];
        random_bytes(&mut bytes);
        if bytes.iter().all(|b| *b == 0) {
            bytes[15] = 1;
        }
        TraceId(hex(&bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Random bytes; without an entropy source, clock-derived ones, which still tell ids apart.
pub(crate) fn random_bytes(bytes: &mut [u8]) {
    if getrandom::fill(bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos())
            .to_be_bytes();
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = nanos[nanos.len() - 1 - (i % nanos.len())];
        }
    }
}

pub(crate) fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_valid_traceparents_and_ignores_the_rest() {
        let id = "4bf92f3577b34da6a3ce929d0e0e4736";
        let good = format!("00-{id}-00f067aa0ba902b7-01");
        assert_eq!(
            TraceId::from_traceparent(&good).map(|t| t.0),
            Some(id.to_owned())
        );
        // A future version may carry more fields.
        let future = format!("01-{id}-00f067aa0ba902b7-01-extra");
        assert!(TraceId::from_traceparent(&future).is_some());
        for bad in [
            format!("ff-{id}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{id}-0000000000000000-01"),
            format!("00-{}-00f067aa0ba902b7-01", id.to_uppercase()),
            format!("00-{id}-00f067aa0ba902b7-01-extra"),
            format!("00-{id}\r\nx-00f067aa0ba902b7-01"),
            "garbage".to_owned(),
            String::new(),
        ] {
            assert_eq!(TraceId::from_traceparent(&bad), None, "{bad}");
        }
    }
}

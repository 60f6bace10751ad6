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
        if getrandom::fill(&mut bytes).is_err() || bytes.iter().all(|b| *b == 0) {
            // No randomness: a clock-derived id still tells traces apart.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos());
            bytes = nanos.max(1).to_be_bytes();
        }
        TraceId(hex(&bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The `traceparent` of one outbound request in this trace: a fresh span id, and the
    /// sampled flag off (this build exports no spans, so it never claims to have sampled).
    pub fn child_traceparent(&self) -> String {
        let mut span = [0u8; 8];
        if getrandom::fill(&mut span).is_err() || span.iter().all(|b| *b == 0) {
            span = [0, 0, 0, 0, 0, 0, 0, 1];
        }
        format!("00-{}-{}-00", self.0, hex(&span))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex(bytes: &[u8]) -> String {
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

    #[test]
    fn children_keep_the_trace_and_get_fresh_spans() {
        let trace = TraceId::random();
        assert!(TraceId::parse(trace.as_str()).is_some());
        let a = trace.child_traceparent();
        let b = trace.child_traceparent();
        assert_ne!(a, b);
        assert_eq!(TraceId::from_traceparent(&a), Some(trace.clone()));
        assert!(a.ends_with("-00"), "{a}");
    }
}

//! The two error types: why a delivery was refused, and why a secret was.
//!
//! Their `Display` texts reach webhook senders (in the 401 problem) and tenants (when a secret
//! is refused), so they name headers and rules but never echo a signature or secret material.

/// Why a delivery was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// A header the scheme requires is absent.
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    /// A header is present but unusable: repeated, not visible ASCII, a delivery id of the
    /// wrong length (or, for Standard Webhooks, containing `.`), or not of the scheme's form.
    #[error("the {0} header is malformed")]
    MalformedHeader(&'static str),
    /// The timestamp is not a plain non-negative number of seconds.
    #[error("the signature timestamp is not a whole number of seconds since the Unix epoch")]
    BadTimestamp,
    /// The timestamp is more than [`super::TOLERANCE_SECS`] away from now.
    #[error("the signature timestamp is more than 300 seconds away from the current time")]
    TimestampOutOfTolerance,
    /// No signature in the request matched any of the trigger's secrets.
    #[error("no signature in the request matches this webhook's secret")]
    NoValidSignature,
    /// Stripe: the verified body has no top-level string `id`.
    #[error("the event has no id (a top-level JSON string)")]
    MissingDeliveryId,
    /// Stripe: the event's id is empty, too long, or not visible ASCII.
    #[error("the event's id must be 1 to 200 visible ASCII characters")]
    MalformedDeliveryId,
    /// The trigger has no secret to verify with (our fault).
    #[error("this webhook has no signing secret configured")]
    NoSecret,
    /// A stored secret does not parse (our fault).
    #[error("this webhook's signing secret is misconfigured")]
    BadSecret,
}

impl VerifyError {
    /// A stable snake_case reason for logs, counters and the 401 problem's detail.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::MalformedHeader(_) => "malformed_header",
            VerifyError::BadTimestamp => "bad_timestamp",
            VerifyError::TimestampOutOfTolerance => "timestamp_out_of_tolerance",
            VerifyError::NoValidSignature => "no_valid_signature",
            VerifyError::MissingDeliveryId => "missing_delivery_id",
            VerifyError::MalformedDeliveryId => "malformed_delivery_id",
            VerifyError::NoSecret => "no_secret",
            VerifyError::BadSecret => "bad_secret",
        }
    }

    /// true when the fault is ours (a stored secret that does not parse, or none at all), not
    /// the sender's: the ingest should log it loudly and answer 500 rather than 401.
    pub fn is_server_fault(&self) -> bool {
        matches!(self, VerifyError::NoSecret | VerifyError::BadSecret)
    }
}

/// Why a secret was refused (when a tenant supplies one, or when a stored one is used).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The secret is the empty string.
    #[error("the secret is empty")]
    Empty,
    /// Longer than the scheme allows.
    #[error("the secret is longer than {max} characters")]
    TooLong {
        /// The longest accepted, in characters.
        max: usize,
    },
    /// Shorter than the scheme allows.
    #[error("the secret is shorter than {min} characters")]
    TooShort {
        /// The shortest accepted, in characters.
        min: usize,
    },
    /// A character outside what the scheme allows (visible ASCII, and spaces for GitHub).
    #[error("the secret may only contain visible ASCII characters")]
    NotPrintable,
    /// Stripe secrets start with `whsec_` (for Standard Webhooks the prefix is optional).
    #[error("the secret must start with whsec_")]
    MissingPrefix,
    /// Standard Webhooks: the secret, after its optional `whsec_`, is not standard base64.
    #[error("the secret (after an optional whsec_) is not valid standard base64")]
    InvalidBase64,
    /// Standard Webhooks: the decoded key is not 24 to 64 bytes.
    #[error("the secret decodes to {len} bytes; Standard Webhooks requires 24 to 64")]
    WrongLength {
        /// The decoded length.
        len: usize,
    },
}

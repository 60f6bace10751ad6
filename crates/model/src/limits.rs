//! Per-tenant limits: the values an operator tunes per tenant, their defaults, the operator
//! caps they are validated against, and the wasmtime `ResourceLimiter` that enforces memory.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::hosts::HostPattern;

/// Everything one invocation of one tenant may consume. Defaults are documented in
/// `docs/limits.md`; [`TenantLimits::validate`] checks a value against [`LimitCaps`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TenantLimits {
    /// Wasm fuel per invocation (roughly one unit per wasm instruction).
    pub fuel: u64,
    /// Linear memory of the instance, in bytes (all memories and tables' growth together).
    pub memory_bytes: u64,
    /// Wall-clock budget of the whole invocation, host calls included.
    pub timeout_ms: u64,
    /// Outbound HTTP requests per invocation (every redirect hop counts).
    pub max_requests: u32,
    /// Bytes one request body may carry.
    pub max_request_body_bytes: u64,
    /// Bytes one response body may carry; the gate stops reading past it.
    pub max_response_body_bytes: u64,
    /// Request bytes the invocation may send in total.
    pub max_total_bytes_out: u64,
    /// Response bytes the invocation may receive in total.
    pub max_total_bytes_in: u64,
    /// Per-request timeout of outbound HTTP.
    pub request_timeout_ms: u64,
    /// Bytes of the input JSON.
    pub max_input_bytes: u64,
    /// Bytes of the output JSON.
    pub max_output_bytes: u64,
    /// Bytes of log lines and captured stdout/stderr kept per invocation, each line counted
    /// as its message plus a fixed overhead (`LOG_LINE_OVERHEAD_BYTES`); the rest is dropped.
    pub max_log_bytes: u64,
    /// Log lines (log import, stdout and stderr together) kept per invocation.
    pub max_log_lines: u32,
    /// Bytes of one state value.
    pub max_state_value_bytes: u64,
    /// State keys per tenant and connector.
    pub max_state_keys: u32,
    /// Invocations of this tenant running at once (pool slots it may hold); more wait in the
    /// tenant's own queue.
    pub max_concurrent_runs: u32,
    /// Hosts the tenant lets its connectors reach, intersected with each connector's
    /// declared hosts. `["*"]` defers entirely to the connector's declaration.
    pub allowed_hosts: Vec<String>,
}

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

impl Default for TenantLimits {
    fn default() -> Self {
        Self {
            fuel: 2_000_000_000,
            memory_bytes: 64 * MIB,
            timeout_ms: 30_000,
            max_requests: 50,
            max_request_body_bytes: 4 * MIB,
            max_response_body_bytes: 8 * MIB,
            max_total_bytes_out: 16 * MIB,
            max_total_bytes_in: 32 * MIB,
            request_timeout_ms: 10_000,
            max_input_bytes: MIB,
            max_output_bytes: MIB,
            max_log_bytes: 256 * KIB,
            max_log_lines: 1_000,
            max_state_value_bytes: 64 * KIB,
            max_state_keys: 1_000,
            max_concurrent_runs: 16,
            allowed_hosts: vec!["*".to_owned()],
        }
    }
}

/// The most an operator lets any tenant be granted. Limits above a cap are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitCaps {
    pub fuel: u64,
    pub memory_bytes: u64,
    pub timeout_ms: u64,
    pub max_requests: u32,
    pub max_body_bytes: u64,
    pub max_total_bytes: u64,
    pub request_timeout_ms: u64,
    pub max_input_bytes: u64,
    pub max_output_bytes: u64,
    pub max_log_bytes: u64,
    pub max_log_lines: u32,
    pub max_state_value_bytes: u64,
    pub max_state_keys: u32,
    /// Above the pool size a tenant's limit changes nothing: the pool bounds it.
    pub max_concurrent_runs: u32,
}

impl Default for LimitCaps {
    fn default() -> Self {
        Self {
            fuel: 100_000_000_000,
            memory_bytes: 512 * MIB,
            timeout_ms: 300_000,
            max_requests: 1_000,
            max_body_bytes: 64 * MIB,
            max_total_bytes: 256 * MIB,
            request_timeout_ms: 120_000,
            max_input_bytes: 16 * MIB,
            max_output_bytes: 16 * MIB,
            max_log_bytes: 4 * MIB,
            max_log_lines: 100_000,
            max_state_value_bytes: MIB,
            max_state_keys: 100_000,
            max_concurrent_runs: 256,
        }
    }
}

/// A limit that is zero where it must be positive, above its cap, or an unparsable host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("limit `{field}` {reason}")]
pub struct LimitError {
    pub field: &'static str,
    pub reason: String,
}

/// One numeric limit as [`TenantLimits::validate`] judges it: its name, its value, and the
/// least and greatest value it may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitBound {
    pub field: &'static str,
    pub value: u64,
    pub min: u64,
    pub max: u64,
}

impl TenantLimits {
    /// Every numeric field with its bounds under `caps`: the one table both validation and the
    /// OpenAPI document (`minimum`/`maximum` of each field) read. Zero is refused where it
    /// would make every invocation fail; it is allowed for counts a tenant may legitimately
    /// switch off (requests, state).
    pub fn bounds(&self, caps: &LimitCaps) -> Vec<LimitBound> {
        let checks: [(&'static str, u64, u64, bool); 16] = [
            ("fuel", self.fuel, caps.fuel, false),
            ("memory_bytes", self.memory_bytes, caps.memory_bytes, false),
            ("timeout_ms", self.timeout_ms, caps.timeout_ms, false),
            (
                "max_requests",
                self.max_requests.into(),
                caps.max_requests.into(),
                true,
            ),
            (
                "max_request_body_bytes",
                self.max_request_body_bytes,
                caps.max_body_bytes,
                true,
            ),
            (
                "max_response_body_bytes",
                self.max_response_body_bytes,
                caps.max_body_bytes,
                true,
            ),
            (
                "max_total_bytes_out",
                self.max_total_bytes_out,
                caps.max_total_bytes,
                true,
            ),
            (
                "max_total_bytes_in",
                self.max_total_bytes_in,
                caps.max_total_bytes,
                true,
            ),
            (
                "request_timeout_ms",
                self.request_timeout_ms,
                caps.request_timeout_ms,
                false,
            ),
            (
                "max_input_bytes",
                self.max_input_bytes,
                caps.max_input_bytes,
                false,
            ),
            (
                "max_output_bytes",
                self.max_output_bytes,
                caps.max_output_bytes,
                false,
            ),
            (
                "max_log_bytes",
                self.max_log_bytes,
                caps.max_log_bytes,
                true,
            ),
            (
                "max_log_lines",
                self.max_log_lines.into(),
                caps.max_log_lines.into(),
                true,
            ),
            (
                "max_state_value_bytes",
                self.max_state_value_bytes,
                caps.max_state_value_bytes,
                true,
            ),
            (
                "max_state_keys",
                self.max_state_keys.into(),
                caps.max_state_keys.into(),
                true,
            ),
            (
                "max_concurrent_runs",
                self.max_concurrent_runs.into(),
                caps.max_concurrent_runs.into(),
                false,
            ),
        ];
        checks
            .into_iter()
            .map(|(field, value, cap, zero_ok)| LimitBound {
                field,
                value,
                min: u64::from(!zero_ok),
                max: cap,
            })
            .collect()
    }

    /// Checks every field against `caps` (see [`TenantLimits::bounds`]) and every host pattern.
    pub fn validate(&self, caps: &LimitCaps) -> Result<(), LimitError> {
        for LimitBound {
            field,
            value,
            min,
            max,
        } in self.bounds(caps)
        {
            if value < min {
                return Err(LimitError {
                    field,
                    reason: "must be positive".into(),
                });
            }
            if value > max {
                return Err(LimitError {
                    field,
                    reason: format!("is {value}, above the cap of {max}"),
                });
            }
        }
        self.host_patterns()?;
        Ok(())
    }

    pub fn host_patterns(&self) -> Result<Vec<HostPattern>, LimitError> {
        self.allowed_hosts
            .iter()
            .map(|h| {
                h.parse::<HostPattern>().map_err(|e| LimitError {
                    field: "allowed_hosts",
                    reason: format!("has `{h}`: {e}"),
                })
            })
            .collect()
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn outbound(&self) -> OutboundLimits {
        OutboundLimits {
            max_requests: self.max_requests,
            max_request_body_bytes: self.max_request_body_bytes,
            max_response_body_bytes: self.max_response_body_bytes,
            max_total_bytes_out: self.max_total_bytes_out,
            max_total_bytes_in: self.max_total_bytes_in,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
        }
    }
}

/// Per-invocation caps (from the tenant's quotas).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundLimits {
    /// Requests per invocation, counting each redirect hop.
    pub max_requests: u32,
    pub max_request_body_bytes: u64,
    pub max_response_body_bytes: u64,
    /// Request body bytes sent over the whole invocation.
    pub max_total_bytes_out: u64,
    /// Response body bytes received over the whole invocation.
    pub max_total_bytes_in: u64,
    /// Wall-clock bound on one `send`: connecting, every redirect hop and the response body.
    pub request_timeout: Duration,
}

impl Default for OutboundLimits {
    fn default() -> OutboundLimits {
        const MIB: u64 = 1024 * 1024;
        OutboundLimits {
            max_requests: 100,
            max_request_body_bytes: 10 * MIB,
            max_response_body_bytes: 10 * MIB,
            max_total_bytes_out: 50 * MIB,
            max_total_bytes_in: 50 * MIB,
            request_timeout: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_the_default_caps() {
        TenantLimits::default()
            .validate(&LimitCaps::default())
            .expect("defaults are valid");
    }

    #[test]
    fn validate_refuses_values_above_caps_and_zero_where_positive_is_needed() {
        let caps = LimitCaps::default();
        let over = TenantLimits {
            timeout_ms: 300_001,
            ..TenantLimits::default()
        };
        assert_eq!(over.validate(&caps).map_err(|e| e.field), Err("timeout_ms"));
        let zero = TenantLimits {
            fuel: 0,
            ..TenantLimits::default()
        };
        assert_eq!(zero.validate(&caps).map_err(|e| e.field), Err("fuel"));
        let no_runs = TenantLimits {
            max_concurrent_runs: 0,
            ..TenantLimits::default()
        };
        assert_eq!(
            no_runs.validate(&caps).map_err(|e| e.field),
            Err("max_concurrent_runs")
        );
        let too_many_runs = TenantLimits {
            max_concurrent_runs: caps.max_concurrent_runs + 1,
            ..TenantLimits::default()
        };
        assert_eq!(
            too_many_runs.validate(&caps).map_err(|e| e.field),
            Err("max_concurrent_runs")
        );
        let too_many_lines = TenantLimits {
            max_log_lines: caps.max_log_lines + 1,
            ..TenantLimits::default()
        };
        assert_eq!(
            too_many_lines.validate(&caps).map_err(|e| e.field),
            Err("max_log_lines")
        );
        let no_requests = TenantLimits {
            max_requests: 0,
            ..TenantLimits::default()
        };
        assert!(no_requests.validate(&caps).is_ok());
        let bad_host = TenantLimits {
            allowed_hosts: vec!["https://x".into()],
            ..TenantLimits::default()
        };
        assert_eq!(
            bad_host.validate(&caps).map_err(|e| e.field),
            Err("allowed_hosts")
        );
    }
}

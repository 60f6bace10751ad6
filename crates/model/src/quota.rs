//! A tenant's quota: the runtime's per-invocation [`TenantLimits`] plus the service-level
//! counts (workflows, runs per hour), their defaults and caps, and their JSON form (one flat
//! object, as the API and the `tenants.limits` column hold it).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::limits::{LimitBound, LimitCaps, LimitError, TenantLimits};

pub const DEFAULT_MAX_WORKFLOWS: u32 = 50;
pub const MAX_WORKFLOWS_CAP: u32 = 200;
pub const DEFAULT_RUNS_PER_HOUR: u32 = 100;
pub const RUNS_PER_HOUR_CAP: u32 = 500;
/// Days an ended run keeps its input (webhook bodies included), outputs and logs.
pub const DEFAULT_RUN_DATA_DAYS: u32 = 30;
/// Days an ended run is kept at all (its dead letter, its idempotency key).
pub const DEFAULT_RUNS_DAYS: u32 = 90;
/// Days the access history (calls per subject, route and minute) is kept.
pub const DEFAULT_ACCESS_DAYS: u32 = 90;
/// Days an audit record is kept (the requirements' year).
pub const DEFAULT_AUDIT_DAYS: u32 = 365;
/// Items one `for_each` step may iterate over (its `max_items` may ask for fewer).
pub const DEFAULT_MAX_ITERATIONS: u32 = 1_000;
pub const MAX_ITERATIONS_CAP: u32 = crate::workflow::MAX_ITEMS_CAP;
/// The longest any of them may be set to.
pub const RETENTION_DAYS_CAP: u32 = 3650;

/// Everything an operator tunes per tenant. Read from the database on every invocation, so
/// a change applies to the next one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantQuota {
    pub runtime: TenantLimits,
    pub max_workflows: u32,
    pub runs_per_hour: u32,
    /// `retain_run_data_days`: see [`DEFAULT_RUN_DATA_DAYS`].
    pub run_data_days: u32,
    /// `retain_runs_days`: see [`DEFAULT_RUNS_DAYS`].
    pub runs_days: u32,
    /// `retain_access_days`: see [`DEFAULT_ACCESS_DAYS`].
    pub access_days: u32,
    /// `retain_audit_days`: see [`DEFAULT_AUDIT_DAYS`].
    pub audit_days: u32,
    /// `max_iterations`: see [`DEFAULT_MAX_ITERATIONS`].
    pub max_iterations: u32,
    /// Not a limit: whether the operator suspended the tenant. It travels with the quota
    /// because every path that must refuse a suspended tenant (tokens, run creation, cron,
    /// workers) reads the quota already; it is kept in its own column, never in the limits
    /// JSON, and neither serialized nor deserialized here.
    pub suspended: bool,
}

impl Default for TenantQuota {
    fn default() -> Self {
        Self {
            runtime: TenantLimits::default(),
            max_workflows: DEFAULT_MAX_WORKFLOWS,
            runs_per_hour: DEFAULT_RUNS_PER_HOUR,
            run_data_days: DEFAULT_RUN_DATA_DAYS,
            runs_days: DEFAULT_RUNS_DAYS,
            access_days: DEFAULT_ACCESS_DAYS,
            audit_days: DEFAULT_AUDIT_DAYS,
            max_iterations: DEFAULT_MAX_ITERATIONS,
            suspended: false,
        }
    }
}

impl TenantQuota {
    /// Checks every runtime limit against `caps` and the service counts against theirs.
    pub fn validate(&self, caps: &LimitCaps) -> Result<(), LimitError> {
        self.runtime.validate(caps)?;
        for LimitBound {
            field,
            value,
            min,
            max,
        } in self.count_bounds()
        {
            if value < min {
                return Err(LimitError {
                    field,
                    reason: format!("is {value}, below the minimum of {min}"),
                });
            }
            if value > max {
                return Err(LimitError {
                    field,
                    reason: format!("is {value}, above the cap of {max}"),
                });
            }
        }
        Ok(())
    }

    /// Every numeric field with its bounds under `caps`: the runtime's limits and the counts.
    pub fn bounds(&self, caps: &LimitCaps) -> Vec<LimitBound> {
        let mut bounds = self.runtime.bounds(caps);
        bounds.extend(self.count_bounds());
        bounds
    }

    fn count_bounds(&self) -> [LimitBound; 7] {
        let count = |field, value: u32, min: u32, cap: u32| LimitBound {
            field,
            value: value.into(),
            min: min.into(),
            max: cap.into(),
        };
        [
            count("max_workflows", self.max_workflows, 0, MAX_WORKFLOWS_CAP),
            count("runs_per_hour", self.runs_per_hour, 0, RUNS_PER_HOUR_CAP),
            count(
                "retain_run_data_days",
                self.run_data_days,
                1,
                RETENTION_DAYS_CAP,
            ),
            count("retain_runs_days", self.runs_days, 1, RETENTION_DAYS_CAP),
            count(
                "retain_access_days",
                self.access_days,
                1,
                RETENTION_DAYS_CAP,
            ),
            count("retain_audit_days", self.audit_days, 1, RETENTION_DAYS_CAP),
            count("max_iterations", self.max_iterations, 1, MAX_ITERATIONS_CAP),
        ]
    }
}

impl Serialize for TenantQuota {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut object = match serde_json::to_value(&self.runtime) {
            Ok(Value::Object(object)) => object,
            Ok(_) => Map::new(),
            Err(e) => return Err(serde::ser::Error::custom(e)),
        };
        object.insert("max_workflows".into(), self.max_workflows.into());
        object.insert("runs_per_hour".into(), self.runs_per_hour.into());
        object.insert("retain_run_data_days".into(), self.run_data_days.into());
        object.insert("retain_runs_days".into(), self.runs_days.into());
        object.insert("retain_access_days".into(), self.access_days.into());
        object.insert("retain_audit_days".into(), self.audit_days.into());
        object.insert("max_iterations".into(), self.max_iterations.into());
        object.serialize(serializer)
    }
}

/// One flat object; fields left out take their defaults, unknown fields are refused by name.
impl<'de> Deserialize<'de> for TenantQuota {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut object = Map::deserialize(deserializer)?;
        let mut count = |field: &str, default: u32| -> Result<u32, D::Error> {
            match object.remove(field) {
                None => Ok(default),
                Some(value) => u32::deserialize(value)
                    .map_err(|e| D::Error::custom(format!("field `{field}`: {e}"))),
            }
        };
        let max_workflows = count("max_workflows", DEFAULT_MAX_WORKFLOWS)?;
        let runs_per_hour = count("runs_per_hour", DEFAULT_RUNS_PER_HOUR)?;
        let run_data_days = count("retain_run_data_days", DEFAULT_RUN_DATA_DAYS)?;
        let runs_days = count("retain_runs_days", DEFAULT_RUNS_DAYS)?;
        let access_days = count("retain_access_days", DEFAULT_ACCESS_DAYS)?;
        let audit_days = count("retain_audit_days", DEFAULT_AUDIT_DAYS)?;
        let max_iterations = count("max_iterations", DEFAULT_MAX_ITERATIONS)?;
        let runtime = TenantLimits::deserialize(Value::Object(object)).map_err(D::Error::custom)?;
        Ok(Self {
            runtime,
            max_workflows,
            runs_per_hour,
            run_data_days,
            runs_days,
            access_days,
            audit_days,
            max_iterations,
            suspended: false,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;

    #[test]
    fn round_trips_as_one_flat_object_with_defaults() {
        let quota: TenantQuota =
            serde_json::from_str(r#"{"fuel": 5, "runs_per_hour": 7}"#).unwrap();
        assert_eq!(quota.runtime.fuel, 5);
        assert_eq!(quota.runs_per_hour, 7);
        assert_eq!(quota.max_workflows, DEFAULT_MAX_WORKFLOWS);
        let back: TenantQuota =
            serde_json::from_value(serde_json::to_value(&quota).unwrap()).unwrap();
        assert_eq!(back, quota);
        assert!(
            serde_json::from_str::<TenantQuota>(r#"{"fule": 5}"#)
                .unwrap_err()
                .to_string()
                .contains("fule")
        );
    }

    #[test]
    fn a_suspension_is_not_a_limit_and_cannot_be_set_as_one() {
        let quota = TenantQuota {
            suspended: true,
            ..TenantQuota::default()
        };
        let json = serde_json::to_value(&quota).unwrap();
        assert!(json.get("suspended").is_none(), "{json}");
        let back: TenantQuota = serde_json::from_value(json).unwrap();
        assert!(!back.suspended);
        assert!(serde_json::from_str::<TenantQuota>(r#"{"suspended": true}"#).is_err());
    }

    #[test]
    fn counts_are_capped() {
        let caps = LimitCaps::default();
        let quota = TenantQuota {
            runs_per_hour: 501,
            ..TenantQuota::default()
        };
        assert_eq!(
            quota.validate(&caps).map_err(|e| e.field),
            Err("runs_per_hour")
        );
        let quota = TenantQuota {
            max_workflows: 201,
            ..TenantQuota::default()
        };
        assert_eq!(
            quota.validate(&caps).map_err(|e| e.field),
            Err("max_workflows")
        );
        TenantQuota::default().validate(&caps).unwrap();
    }
}

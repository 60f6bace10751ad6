//! Runs per tenant per clock hour: the counter behind the `runs_per_hour` quota.

use sqlx::Row;

use super::{Store, StoreError, now_ms};

const HOUR_MS: i64 = 3_600_000;

/// Whether a run was admitted, and the hour's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunAdmission {
    Admitted {
        runs: i64,
    },
    /// The hour's quota is used up; `retry_after_s` is the time until the next hour.
    OverQuota {
        retry_after_s: u64,
    },
}

impl Store {
    /// Counts one run against the tenant's current hour in one statement: the increment
    /// happens only below `limit`, so concurrent callers never exceed it.
    pub async fn admit_run(&self, tenant_id: &str, limit: u32) -> Result<RunAdmission, StoreError> {
        let now = now_ms();
        let hour = now.div_euclid(HOUR_MS);
        let row = sqlx::query(
            "INSERT INTO usage_hours (tenant_id, hour, runs) SELECT $1, $2, 1 WHERE $3 > 0 \
             ON CONFLICT (tenant_id, hour) DO UPDATE SET runs = usage_hours.runs + 1 \
             WHERE usage_hours.runs < $3 RETURNING runs",
        )
        .bind(tenant_id)
        .bind(hour)
        .bind(i64::from(limit))
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(row) => RunAdmission::Admitted {
                runs: row.try_get("runs")?,
            },
            None => {
                let left_ms = (hour + 1) * HOUR_MS - now;
                RunAdmission::OverQuota {
                    retry_after_s: u64::try_from(left_ms / 1000 + 1).unwrap_or(1),
                }
            }
        })
    }

    /// Runs counted in the tenant's current hour.
    pub async fn runs_this_hour(&self, tenant_id: &str) -> Result<i64, StoreError> {
        let hour = now_ms().div_euclid(HOUR_MS);
        let row = sqlx::query("SELECT runs FROM usage_hours WHERE tenant_id = $1 AND hour = $2")
            .bind(tenant_id)
            .bind(hour)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get("runs")?,
            None => 0,
        })
    }
}

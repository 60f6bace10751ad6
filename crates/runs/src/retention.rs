//! [`Retention`]: the pruner that applies each tenant's retention policy (in its limits) to
//! its ended runs (`retain_run_data_days`, `retain_runs_days`), its access history
//! (`retain_access_days`) and its audit chain (`retain_audit_days`; the platform's chain
//! keeps the default year).
//!
//! Every process may run it: its statements pick rows by a horizon and change nothing a
//! second time, so two processes at once only repeat reads. Time comes from the pipeline's
//! clock, so tests move it.

use std::time::Duration;

use airlock_model::quota::DEFAULT_AUDIT_DAYS;
use airlock_store::{AuditPruned, Pruned};
use tokio_util::sync::CancellationToken;

use crate::background::Task;
use crate::{Runs, RunsError};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Runs per transaction: small enough that a batch holds its locks for milliseconds.
pub const PRUNE_BATCH: i64 = 500;

/// How often the pruner looks.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(600);

/// What one pass did, over every tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub tenants: u64,
    pub blanked: u64,
    pub removed: u64,
    /// Access-history minutes removed.
    pub access_minutes: u64,
    /// Revocations of tokens that have expired since (they are refused as expired anyway).
    pub revocations: u64,
    /// Audit records removed from the heads of their chains.
    pub audit_records: u64,
    pub batches: u64,
    pub longest_batch: Duration,
}

impl Runs {
    /// One pass of the pruner over every tenant, at the pipeline clock's time.
    pub async fn prune(&self) -> Result<PruneReport, RunsError> {
        let store = self.pipeline.store();
        let now = self.pipeline.clock().now_ms();
        let mut report = PruneReport::default();
        for tenant in store.list_tenants().await? {
            let quota = &tenant.quota;
            let horizon = |days: u32| now.saturating_sub(i64::from(days).saturating_mul(DAY_MS));
            let Pruned {
                blanked,
                removed,
                batches,
                longest_batch,
            } = store
                .prune_runs(
                    &tenant.id,
                    horizon(quota.run_data_days),
                    horizon(quota.runs_days),
                    PRUNE_BATCH,
                )
                .await?;
            let access_before = horizon(quota.access_days).div_euclid(60_000);
            report.access_minutes += store.prune_access(&tenant.id, access_before).await?;
            report.note_audit(
                &tenant.id,
                store
                    .prune_audit(&tenant.id, horizon(quota.audit_days), DAY_MS, PRUNE_BATCH)
                    .await?,
            );
            report.tenants += 1;
            report.blanked += blanked;
            report.removed += removed;
            report.batches += batches;
            report.longest_batch = report.longest_batch.max(longest_batch);
            if blanked + removed > 0 {
                tracing::info!(
                    tenant = %tenant.id,
                    blanked,
                    removed,
                    longest_batch_ms = longest_batch.as_millis() as u64,
                    "retention: ended runs pruned"
                );
            }
        }
        // The platform's chain (key rotations, tenant deletions): the default year.
        let platform_before =
            now.saturating_sub(i64::from(DEFAULT_AUDIT_DAYS).saturating_mul(DAY_MS));
        report.note_audit(
            "",
            store
                .prune_audit("", platform_before, DAY_MS, PRUNE_BATCH)
                .await?,
        );
        // A day past expiry: beyond any clock skew an issuer and this host may have.
        report.revocations = store
            .prune_revoked_tokens(now.saturating_sub(DAY_MS))
            .await?;
        self.metrics()
            .retention(report.blanked, report.removed, report.longest_batch);
        Ok(report)
    }
}

impl PruneReport {
    fn note_audit(&mut self, tenant: &str, pruned: AuditPruned) {
        self.audit_records += pruned.removed;
        self.batches += pruned.batches;
        self.longest_batch = self.longest_batch.max(pruned.longest_batch);
        if pruned.removed > 0 {
            tracing::info!(
                tenant,
                removed = pruned.removed,
                "retention: the oldest audit records pruned"
            );
        }
    }
}

/// The running pruner of this process.
pub struct Retention(Task);

impl std::fmt::Debug for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retention").finish_non_exhaustive()
    }
}

impl Retention {
    pub fn start(runs: Runs, period: Duration) -> Retention {
        Retention(Task::spawn(|stop| prune_every(runs, period, stop)))
    }

    /// Stops after the batch in hand.
    pub async fn shutdown(self) {
        self.0.stop().await;
    }
}

async fn prune_every(runs: Runs, period: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = runs.prune() => outcome,
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, "retention: a pruning pass failed; the next one retries");
        }
    }
}

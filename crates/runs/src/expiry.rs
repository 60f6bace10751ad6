//! [`KeyExpiry`]: the sweep that ends idempotency keys after their lifetime and removes the
//! claim-rotation rows of tenants gone quiet.
//!
//! Creation already ignores (and releases) a key whose run is past the lifetime, so the sweep
//! is not what makes expiry exact: it keeps the unique index from holding every key ever
//! used, and `run_tenants` from keeping every tenant that ever ran. Every process runs it;
//! its statements change nothing a second time, so several at once only repeat a read.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::Runs;
use crate::background::Task;

/// The sweep's period: a fraction of the lifetime (so a key outlives it by at most that),
/// between these bounds.
const MIN_PERIOD: Duration = Duration::from_millis(100);
const MAX_PERIOD: Duration = Duration::from_secs(60);

/// The running sweep of this process.
pub struct KeyExpiry(Task);

impl std::fmt::Debug for KeyExpiry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyExpiry").finish_non_exhaustive()
    }
}

impl KeyExpiry {
    pub fn start(runs: Runs) -> KeyExpiry {
        KeyExpiry(Task::spawn(|stop| sweep(runs, stop)))
    }

    /// Stops after the statement in hand.
    pub async fn shutdown(self) {
        self.0.stop().await;
    }
}

async fn sweep(runs: Runs, stop: CancellationToken) {
    let ttl = runs.options.idempotency_ttl;
    let period = (ttl / 4).clamp(MIN_PERIOD, MAX_PERIOD);
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(period) => {}
        }
        let store = runs.pipeline().store();
        let before = airlock_store::now_ms().saturating_sub(ttl_ms);
        let swept = async {
            let keys = store.expire_keys(before).await?;
            let tenants = store.remove_dormant_run_tenants(before).await?;
            Ok::<_, airlock_store::StoreError>((keys, tenants))
        };
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = swept => outcome,
        };
        match outcome {
            Ok((keys, tenants)) if keys > 0 || tenants.is_some_and(|n| n > 0) => {
                tracing::debug!(
                    keys,
                    tenants = tenants.unwrap_or(0),
                    "expired idempotency keys and dormant tenants"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "expiring idempotency keys failed"),
        }
    }
}

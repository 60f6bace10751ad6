//! Run creation: the one write every API enqueue and webhook delivery waits for.
//!
//! Every new run is a durable commit. On SQLite one connection writes, and a commit is a
//! flush of the write-ahead log, so runs created at the same moment are group-committed: one
//! task takes every creation waiting, inserts them in one transaction (up to [`MAX_BATCH`]),
//! commits once and answers them all. A run is answered only once its batch is committed;
//! if the batch fails, every run of it is refused.
//!
//! On PostgreSQL each creation is its own transaction on the pool: the server runs them in
//! parallel and groups their commits itself, and one task on one connection measured at
//! half the rate (480 against 850-954 webhook deliveries a second).
//!
//! The rules are one on both: a run whose key is taken answers with the run holding it,
//! before any limit is applied; then the tenant's `max_queued_runs`, then its
//! `runs_per_hour`; a run refused by them writes nothing. PostgreSQL applies them run by run
//! ([`RunInserts`]: the hourly count exact under concurrency, the queue cap soft); a SQLite
//! batch reads each count once and decides in memory (`batch.rs`), which its write lock
//! makes exact.

use std::sync::Arc;
use std::time::Duration;

use airlock_model::Clock;
use sqlx::AnyPool;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::runs::{RunInserts, Tx, notify_runs, run_by_key_in};
use crate::{DbKind, Enqueued, NewRun, StoreError, now_ms};

mod batch;
mod expiry;

/// The most runs one transaction inserts: bounds how long it holds the write lock.
const MAX_BATCH: usize = 128;

/// What creating a run needs of the store.
struct Context {
    writer: AnyPool,
    kind: DbKind,
    /// The run counter's clock: the hour of `runs_per_hour`.
    clock: Arc<dyn Clock>,
    wakeups: Arc<Notify>,
    /// The longest a batch may take before its runs are refused.
    deadline: Duration,
}

struct Pending {
    tenant_id: String,
    new: NewRun,
    reply: oneshot::Sender<Result<Enqueued, StoreError>>,
}

/// Creates runs: through the group-commit task on SQLite, directly on PostgreSQL. Cheap to
/// clone; the task ends when the last clone is dropped.
#[derive(Clone)]
pub(super) struct Enqueuer {
    context: Arc<Context>,
    /// SQLite's group-commit queue. Bounded: a run that finds it full is refused as
    /// [`StoreError::Busy`] (503 with Retry-After) rather than queued without bound.
    queue: Option<mpsc::Sender<Pending>>,
}

impl Enqueuer {
    pub(super) fn start(
        writer: AnyPool,
        kind: DbKind,
        capacity: usize,
        deadline: Duration,
        clock: Arc<dyn Clock>,
        wakeups: Arc<Notify>,
    ) -> Enqueuer {
        let context = Arc::new(Context {
            writer,
            kind,
            clock,
            wakeups,
            deadline,
        });
        let queue = (kind == DbKind::Sqlite).then(|| {
            let (queue, receiver) = mpsc::channel(capacity.max(1));
            tokio::spawn(group_commit(context.clone(), receiver));
            queue
        });
        Enqueuer { context, queue }
    }

    /// Creates the run, or finds the one holding its key, and answers once committed.
    pub(super) async fn create(
        &self,
        tenant_id: &str,
        new: NewRun,
    ) -> Result<Enqueued, StoreError> {
        let Some(queue) = &self.queue else {
            let mut results = create_in(&self.context, &[(tenant_id, &new)]).await?;
            self.context.wakeups.notify_waiters();
            return results.pop().unwrap_or(Err(StoreError::Conflict));
        };
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            tenant_id: tenant_id.to_owned(),
            new,
            reply,
        };
        match queue.try_send(pending) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(StoreError::Busy("the run creation queue is full"));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(stopped()),
        }
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

impl std::fmt::Debug for Enqueuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enqueuer")
            .field("kind", &self.context.kind)
            .field("batched", &self.queue.is_some())
            .finish()
    }
}

impl Enqueuer {
    /// Whether SQLite's group-commit task has ended: no run can be created then.
    pub(super) fn stopped(&self) -> bool {
        self.queue.as_ref().is_some_and(mpsc::Sender::is_closed)
    }
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the run creation task has stopped".into())
}

async fn group_commit(context: Arc<Context>, mut receiver: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let requests: Vec<(&str, &NewRun)> = batch
            .iter()
            .map(|p| (p.tenant_id.as_str(), &p.new))
            .collect();
        let outcome = create_in(&context, &requests).await;
        drop(requests);
        match outcome {
            Ok(results) => {
                context.wakeups.notify_waiters();
                for (pending, result) in batch.drain(..).zip(results) {
                    let _ = pending.reply.send(result);
                }
            }
            Err(error) => {
                tracing::warn!(%error, runs = batch.len(), "a run creation batch failed");
                let message = error.to_string();
                for pending in batch.drain(..) {
                    let _ = pending
                        .reply
                        .send(Err(StoreError::Unavailable(message.clone())));
                }
            }
        }
    }
}

/// One transaction for all of `requests`, each answered in order. A run refused by its
/// tenant's limits is answered so and writes nothing; any other failure fails them all.
///
/// The deadline covers everything but the commit: a commit given up on may still land, and
/// its runs would have been refused while they exist (a caller without a key would then
/// create a second one). A commit that hangs holds the task, its queue fills, and new runs
/// are refused as busy.
async fn create_in(
    context: &Context,
    requests: &[(&str, &NewRun)],
) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
    let statements = async {
        let mut tx: Tx<'static> = match context.kind {
            DbKind::Sqlite => context.writer.begin_with("BEGIN IMMEDIATE").await?,
            DbKind::Postgres => context.writer.begin().await?,
        };
        let (now, hour_now) = (now_ms(), context.clock.now_ms());
        let results = match context.kind {
            DbKind::Sqlite => batch::create_all(&mut tx, requests, now, hour_now).await?,
            DbKind::Postgres => create_each(&mut tx, requests, now, hour_now).await?,
        };
        if results
            .iter()
            .any(|r| matches!(r, Ok(Enqueued::Created(_))))
        {
            notify_runs(&mut tx, context.kind).await?;
        }
        Ok::<_, StoreError>((tx, results))
    };
    let (tx, results) = tokio::time::timeout(context.deadline, statements)
        .await
        .unwrap_or_else(|_| {
            Err(StoreError::Unavailable(format!(
                "creating runs took longer than {:?}",
                context.deadline
            )))
        })?;
    tx.commit().await?;
    Ok(results)
}

/// PostgreSQL: run by run ([`RunInserts`]): the hourly count a guarded statement, since
/// nothing stops another transaction from counting at the same moment; `max_queued_runs` a
/// plain count, so concurrent creations may pass it by up to their number (a soft cap).
async fn create_each(
    tx: &mut Tx<'_>,
    requests: &[(&str, &NewRun)],
    now: i64,
    hour_now: i64,
) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
    let mut inserts = RunInserts::new(now, hour_now);
    let mut results = Vec::with_capacity(requests.len());
    for &(tenant_id, new) in requests {
        let result = match inserts.insert(tx, tenant_id, new).await {
            Ok(Some(record)) => Ok(Enqueued::Created(record)),
            // The key is taken: by a run committed before, or by a concurrent transaction
            // that committed while the insert waited for it.
            Ok(None) => {
                let key = new.idempotency_key.as_deref().unwrap_or_default();
                match run_by_key_in(tx, tenant_id, key).await? {
                    Some(existing) => Ok(Enqueued::Existing(existing)),
                    None => Err(StoreError::Conflict),
                }
            }
            Err(refused @ (StoreError::LimitReached { .. } | StoreError::OverQuota { .. })) => {
                Err(refused)
            }
            Err(other) => return Err(other),
        };
        results.push(result);
    }
    inserts.finish(tx).await?;
    Ok(results)
}

//! Group-committed run creation. Every new run is a durable commit, and on SQLite one
//! writer serves them all, so runs created at once (API calls, webhook deliveries) are
//! inserted by one task in one transaction per batch: the hourly count, the tenant's queue
//! cap and the insert for each, one commit for all. A run is answered only once its batch is
//! committed; if the commit fails, every run of the batch is refused.

use std::sync::Arc;
use std::time::Duration;

use airlock_model::Clock;
use sqlx::AnyPool;
use tokio::sync::{Notify, mpsc, oneshot};

use super::runs::{Tx, insert_run, run_by_key_in};
use super::{DbKind, Enqueued, NewRun, StoreError, now_ms};

/// The most runs one transaction inserts: bounds how long it holds the write lock.
const MAX_BATCH: usize = 128;

struct Pending {
    tenant_id: String,
    new: NewRun,
    reply: oneshot::Sender<Result<Enqueued, StoreError>>,
}

/// What the task needs of the store.
struct Context {
    writer: AnyPool,
    kind: DbKind,
    /// The run counter's clock: the hour of `runs_per_hour`.
    clock: Arc<dyn Clock>,
    wakeups: Arc<Notify>,
    deadline: Duration,
}

/// The sending side of the task; it ends when the last store clone is dropped. Bounded: a
/// run that finds the queue full is refused as [`StoreError::Busy`] (503 with Retry-After).
#[derive(Debug, Clone)]
pub(super) struct Enqueuer {
    queue: mpsc::Sender<Pending>,
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
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        let context = Context {
            writer,
            kind,
            clock,
            wakeups,
            deadline,
        };
        tokio::spawn(group_commit(context, receiver));
        Enqueuer { queue }
    }

    /// Creates the run in the next batch and answers once it is committed.
    pub(super) async fn create(
        &self,
        tenant_id: &str,
        new: NewRun,
    ) -> Result<Enqueued, StoreError> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            tenant_id: tenant_id.to_owned(),
            new,
            reply,
        };
        match self.queue.try_send(pending) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(StoreError::Busy("the run creation queue is full"));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(StoreError::Unavailable(
                    "the run creation task has stopped".into(),
                ));
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Unavailable(
                "the run creation task has stopped".into(),
            ))
        })
    }
}

async fn group_commit(context: Context, mut receiver: mpsc::Receiver<Pending>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        // The same order in every process (a stable sort: a tenant's runs keep theirs), so
        // two batches on PostgreSQL lock tenant rows in the same order and never deadlock.
        batch.sort_by(|a, b| a.tenant_id.cmp(&b.tenant_id));
        let outcome = tokio::time::timeout(context.deadline, create_batch(&context, &batch))
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Unavailable(format!(
                    "a run creation batch took longer than {:?}",
                    context.deadline
                )))
            });
        match outcome {
            Ok(results) => {
                context.wakeups.notify_waiters();
                for (pending, result) in batch.drain(..).zip(results) {
                    let _ = pending.reply.send(result);
                }
            }
            Err(error) => {
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

/// One transaction for the batch. A run refused by its tenant's limits is answered so and
/// writes nothing; any other failure fails the batch.
async fn create_batch(
    context: &Context,
    batch: &[Pending],
) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
    let mut tx: Tx<'static> = match context.kind {
        DbKind::Sqlite => context.writer.begin_with("BEGIN IMMEDIATE").await?,
        DbKind::Postgres => context.writer.begin().await?,
    };
    let now = now_ms();
    let hour_now = context.clock.now_ms();
    let mut results = Vec::with_capacity(batch.len());
    for pending in batch {
        let tenant = pending.tenant_id.as_str();
        let result = match insert_run(&mut tx, tenant, &pending.new, now, hour_now).await {
            Ok(Some(record)) => Ok(Enqueued::Created(record)),
            // The key is taken: by a run of this batch, or one committed meanwhile.
            Ok(None) => {
                let key = pending.new.idempotency_key.as_deref().unwrap_or_default();
                match run_by_key_in(&mut tx, tenant, key).await? {
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
    if context.kind == DbKind::Postgres
        && results
            .iter()
            .any(|r| matches!(r, Ok(Enqueued::Created(_))))
    {
        sqlx::query(&format!(
            "SELECT pg_notify('{}', '')",
            super::runs::RUNS_CHANNEL
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(results)
}

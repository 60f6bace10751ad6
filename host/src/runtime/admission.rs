//! Admission: at most `pool_size` invocations run at once (one pool slot each); up to
//! `queue_capacity` more wait, each for at most `queue_timeout`; anything beyond is refused
//! with `overloaded` at once instead of piling up unbounded work.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{ErrorKind, InvokeError};

#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue_capacity: usize,
    queue_timeout: Duration,
}

impl Admission {
    pub fn new(slots: usize, queue_capacity: usize, queue_timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(slots)),
            waiting: AtomicUsize::new(0),
            queue_capacity,
            queue_timeout,
        }
    }

    pub async fn enter(&self) -> Result<OwnedSemaphorePermit, InvokeError> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let position = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _leave = LeaveQueue(&self.waiting);
        if position >= self.queue_capacity {
            return Err(InvokeError::new(
                ErrorKind::Overloaded,
                format!(
                    "all instance slots are busy and {} invocations are already waiting",
                    self.queue_capacity
                ),
            ));
        }
        match tokio::time::timeout(self.queue_timeout, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_closed)) => Err(InvokeError::new(
                ErrorKind::Overloaded,
                "the runtime is shutting down",
            )),
            Err(_elapsed) => Err(InvokeError::new(
                ErrorKind::Overloaded,
                format!(
                    "no instance slot became free within {} ms",
                    self.queue_timeout.as_millis()
                ),
            )),
        }
    }

    pub fn available(&self) -> usize {
        self.slots.available_permits()
    }
}

struct LeaveQueue<'a>(&'a AtomicUsize);

impl Drop for LeaveQueue<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn beyond_slots_callers_queue_then_are_refused() {
        let admission = Arc::new(Admission::new(1, 1, Duration::from_secs(60)));
        let held = admission.enter().await.expect("first slot");
        let queued = tokio::spawn({
            let admission = admission.clone();
            async move { admission.enter().await.map(drop) }
        });
        // Let the second caller take its place in the queue.
        while admission.waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let refused = admission.enter().await.expect_err("queue is full");
        assert_eq!(refused.kind, ErrorKind::Overloaded);
        drop(held);
        queued
            .await
            .expect("join")
            .expect("queued caller gets the slot once it is free");
    }

    #[tokio::test]
    async fn a_queued_caller_gives_up_after_the_queue_timeout() {
        let admission = Admission::new(1, 8, Duration::from_millis(20));
        let _held = admission.enter().await.expect("first slot");
        let error = admission.enter().await.expect_err("times out");
        assert_eq!(error.kind, ErrorKind::Overloaded);
        assert_eq!(admission.waiting.load(Ordering::SeqCst), 0);
    }
}

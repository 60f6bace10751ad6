//! [`Task`]: a process's background loop (the pruner, the key sweep, the notice sender) and
//! the token that stops it.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// One spawned loop that watches its stop token.
pub(crate) struct Task {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Task {
    /// Spawns `run` with the token it must watch, on the current tokio runtime.
    pub(crate) fn spawn<F, Fut>(run: F) -> Task
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(stop.clone()));
        Task {
            stop,
            task: Some(task),
        }
    }

    /// Cancels the token and waits for the loop to end (what it finishes first is its own
    /// to say).
    pub(crate) async fn stop(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

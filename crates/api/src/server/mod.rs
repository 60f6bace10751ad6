//! The HTTP/1.1 server under the API: our own accept loop on hyper, with the limits that keep
//! an anonymous client from wedging it (connection cap with a health-check reserve, header-read
//! and idle timeouts, requests in flight, request timeout), an accept loop that backs off on
//! EMFILE, and graceful shutdown with a bounded drain.
//!
//! hyper answers what it cannot parse itself (400, 431) with an empty body; [`io::ConnIo`]
//! turns those answers into problem documents.

mod io;
mod refusal;
mod service;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use io::{ConnIo, Phase};
use service::{ConnService, Shared};

/// Longest request target (path and query, or an absolute URI) the server accepts; longer is
/// 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Most header fields in one request; more is 431 (hyper's own limit, answered as a problem).
pub const MAX_HEADERS: usize = 100;
/// Largest request head (request line and headers); larger is 431. Also the largest read
/// hyper buffers at once.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long the accept loop waits after a failure that is not about one connection (EMFILE,
/// ENFILE, ENOBUFS): accepting again at once would only fail again, in a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one warning per this interval for a repeated accept failure or refusal.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The server's limits and timeouts (`Config::server_options`).
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
    pub max_connections: usize,
    pub health_connections: usize,
    pub max_requests_in_flight: usize,
    pub shutdown_grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            health_connections: 16,
            max_requests_in_flight: 1024,
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled; then stops accepting, lets
/// every connection finish its request in flight (keep-alive off) for up to
/// `options.shutdown_grace`, and drops what is left.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: ServerOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared::new(&options));
    let timeouts = io::Timeouts {
        header_read: options.header_read_timeout,
        idle: options.idle_timeout,
    };
    let mut builder = http1::Builder::new();
    builder
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEAD_BYTES)
        // The read buffer may take in a little more than its limit in one read; this bounds a
        // head that arrived whole.
        .max_header_size(MAX_HEAD_BYTES)
        // Our own timers in `ConnIo`: hyper's header-read timer also runs while a kept-alive
        // connection is idle, so it cannot tell the two timeouts apart.
        .header_read_timeout(None)
        // A client may shut down its write side once its request is sent (HTTP/1.1 allows
        // it). Without this hyper reads that EOF while the handler runs and drops the
        // connection, response unsent. With it hyper stops reading mid-message instead: a
        // request that is still incomplete meets the EOF where its head or body is read and
        // fails there, and the EOF after a response closes the connection, so a half-closed
        // connection holds its slot no longer than its request (the request timeout).
        .half_close(true);
    let mut health_builder = builder.clone();
    // A reserve connection answers one probe and closes: it is back for the next probe.
    health_builder.keep_alive(false);

    let open = Arc::new(AtomicUsize::new(0));
    let health_open = Arc::new(AtomicUsize::new(0));
    let tracker = TaskTracker::new();
    let abort = CancellationToken::new();
    let mut accept_warning = Throttled::default();
    let mut cap_warning = Throttled::default();

    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) if is_connection_error(&error) => continue,
            Err(error) => {
                accept_warning.warn(|suppressed| {
                    tracing::warn!(%error, suppressed, "cannot accept connections; backing off");
                });
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
                continue;
            }
        };
        let (slot, health_only) = if let Some(slot) = Slot::take(&open, options.max_connections) {
            (slot, false)
        } else if let Some(slot) = Slot::take(&health_open, options.health_connections) {
            (slot, true)
        } else {
            cap_warning.warn(|suppressed| {
                tracing::warn!(
                    max_connections = options.max_connections,
                    health_connections = options.health_connections,
                    suppressed,
                    "connection limit reached; closing new connections"
                );
            });
            drop(stream);
            continue;
        };
        let phase = Arc::new(Phase::default());
        let io = TokioIo::new(ConnIo::new(stream, phase.clone(), timeouts));
        let service = ConnService::new(router.clone(), shared.clone(), phase, health_only);
        let connection = if health_only {
            health_builder.serve_connection(io, service)
        } else {
            builder.serve_connection(io, service)
        };
        tracker.spawn(drive(connection, slot, shutdown.clone(), abort.clone()));
    }

    // Refuse new connections now instead of leaving them in the backlog during the drain.
    drop(listener);
    tracker.close();
    if tokio::time::timeout(options.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            connections = tracker.len(),
            "shutdown grace elapsed; dropping the connections still open"
        );
        abort.cancel();
        tracker.wait().await;
    }
    Ok(())
}

/// Runs one connection to its end; on shutdown asks it to finish its request in flight and
/// close, and drops it when `abort` is cancelled.
async fn drive(
    connection: http1::Connection<TokioIo<ConnIo<TcpStream>>, ConnService>,
    _slot: Slot,
    shutdown: CancellationToken,
    abort: CancellationToken,
) {
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                result = connection.as_mut() => result,
                () = abort.cancelled() => Ok(()),
            }
        }
    };
    if let Err(error) = result {
        // A client that went away, timed out, or sent what hyper could not parse: theirs.
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// One counted connection; gives its place back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>, limit: usize) -> Option<Slot> {
        // Only the accept loop increments, so a load then an add cannot overshoot.
        if count.load(Ordering::Acquire) >= limit {
            return None;
        }
        count.fetch_add(1, Ordering::AcqRel);
        Some(Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Failures of one incoming connection (it went away before we took it): accept the next.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset, Interrupted};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset | Interrupted
    )
}

/// Logs a repeated condition at most once per [`WARN_INTERVAL`], with how many times it was
/// not logged since.
#[derive(Debug, Default)]
struct Throttled {
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttled {
    fn warn(&mut self, log: impl FnOnce(u64)) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < WARN_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        log(self.suppressed);
        self.last = Some(now);
        self.suppressed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_logged_once_per_interval_with_the_count_it_skipped() {
        let mut throttled = Throttled::default();
        let mut logged = Vec::new();
        for _ in 0..5 {
            throttled.warn(|suppressed| logged.push(suppressed));
        }
        assert_eq!(logged, vec![0]);
        throttled.last = throttled
            .last
            .and_then(|last| last.checked_sub(WARN_INTERVAL));
        throttled.warn(|suppressed| logged.push(suppressed));
        assert_eq!(logged, vec![0, 4]);
    }

    #[test]
    fn running_out_of_file_descriptors_is_not_a_connection_error() {
        let emfile = std::io::Error::from_raw_os_error(24);
        let enfile = std::io::Error::from_raw_os_error(23);
        assert!(!is_connection_error(&emfile));
        assert!(!is_connection_error(&enfile));
        let aborted = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert!(is_connection_error(&aborted));
    }

    #[test]
    fn a_slot_is_refused_at_the_limit_and_given_back_on_drop() {
        let count = Arc::new(AtomicUsize::new(0));
        let first = Slot::take(&count, 1);
        assert!(first.is_some());
        assert!(Slot::take(&count, 1).is_none());
        drop(first);
        assert!(Slot::take(&count, 1).is_some());
    }
}

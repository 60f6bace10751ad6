//! One connection's socket as hyper sees it: the header-read and idle timeouts, and hyper's
//! bare refusals swapped for problem documents (see `refusal`).
//!
//! The timers live here rather than in hyper because hyper's `header_read_timeout` starts as
//! soon as it waits for a head, so it also closes a kept-alive connection that is merely idle:
//! it cannot give a slow head 10 s and an idle connection 60 s. Here the first byte of a
//! request starts the header-read timer, the end of a response starts the idle timer, and
//! while a request is being handled neither runs (the request timeout does).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::refusal;

#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// What the connection's service tells its socket: odd while a request is being handled,
/// even between requests. Both are polled by the connection's one task, so no ordering is
/// needed beyond the atomic itself.
#[derive(Debug, Default)]
pub(super) struct Phase {
    epoch: AtomicU32,
    /// A read left pending while the service ran. hyper does not read again on its own once
    /// the response is out (it waits for the socket), so the idle timer would never start:
    /// the end of the request wakes it.
    reader: AtomicWaker,
}

impl Phase {
    /// The service took a request.
    pub(super) fn start(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
    }

    /// The service produced its response.
    pub(super) fn finish(&self) {
        self.epoch.fetch_add(1, Ordering::Relaxed);
        self.reader.wake();
    }

    fn get(&self) -> u32 {
        self.epoch.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// For the rest of a request head (or the first byte of a new connection's).
    Head,
    /// Between requests on a kept-alive connection.
    Idle,
    /// For the service: no timer here.
    Service,
}

pub(super) struct ConnIo<T> {
    inner: T,
    phase: Arc<Phase>,
    /// The phase value last seen between requests.
    seen: u32,
    waiting: Waiting,
    /// The deadline of `waiting` must be set from now before the next wait (it is set lazily
    /// so that a request arriving whole in one read never touches the timer).
    rearm: bool,
    timeouts: Timeouts,
    deadline: Pin<Box<Sleep>>,
    /// A problem response being written in place of one of hyper's bare refusals.
    replacement: Option<(Vec<u8>, usize)>,
}

impl<T> ConnIo<T> {
    pub(super) fn new(inner: T, phase: Arc<Phase>, timeouts: Timeouts) -> Self {
        ConnIo {
            inner,
            phase,
            seen: 0,
            // A new connection has the header-read timeout to send its first request.
            waiting: Waiting::Head,
            rearm: false,
            timeouts,
            deadline: Box::pin(tokio::time::sleep(timeouts.header_read)),
            replacement: None,
        }
    }

    /// Follows the service's phase; whether a timer applies now.
    fn sync_phase(&mut self) -> bool {
        let phase = self.phase.get();
        if phase % 2 == 1 {
            self.waiting = Waiting::Service;
            return false;
        }
        if phase != self.seen {
            // A response was produced since we last looked: the connection is idle.
            self.seen = phase;
            self.wait_for(Waiting::Idle);
        }
        true
    }

    fn wait_for(&mut self, waiting: Waiting) {
        self.waiting = waiting;
        self.rearm = true;
    }

    /// Before returning `Pending`: an error if the current wait is over.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let limit = match self.waiting {
            Waiting::Head => self.timeouts.header_read,
            Waiting::Idle => self.timeouts.idle,
            Waiting::Service => return Poll::Pending,
        };
        if self.rearm {
            self.rearm = false;
            self.deadline.as_mut().reset(Instant::now() + limit);
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                match self.waiting {
                    Waiting::Head => "the request head was not received in time",
                    _ => "the connection was idle too long",
                },
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> ConnIo<T> {
    /// Writes what is left of a replacement response before anything else.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.replacement {
            if *written == bytes.len() {
                self.replacement = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// If `bytes` starts with a bare refusal of hyper's, takes it (reporting it written) and
    /// queues the problem response instead.
    fn take_refusal(&mut self, cx: &mut Context<'_>, bytes: &[u8]) -> Option<usize> {
        let (len, response) = refusal::replace(bytes)?;
        self.replacement = Some((response, 0));
        // Start writing now; what is left (or an error) comes out in the next write or flush.
        let _ = self.poll_replacement(cx);
        Some(len)
    }

    /// A write that cannot go on is bounded by the idle timer too (a client that does not
    /// read its response).
    fn pending_write<R>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<R>> {
        if self.sync_phase() {
            ready!(self.poll_deadline(cx))?;
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ConnIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let timed = this.sync_phase();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if timed && this.waiting == Waiting::Idle && buf.filled().len() > before {
                    // The first byte of the next request: it has the header-read timeout.
                    this.wait_for(Waiting::Head);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending if timed => {
                ready!(this.poll_deadline(cx))?;
                Poll::Pending
            }
            Poll::Pending => {
                this.phase.reader.register(cx.waker());
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ConnIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        if let Some(len) = this.take_refusal(cx, buf) {
            return Poll::Ready(Ok(len));
        }
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.pending_write(cx),
            ready => ready,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty())
            && let Some(len) = this.take_refusal(cx, first)
        {
            return Poll::Ready(Ok(len));
        }
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.pending_write(cx),
            ready => ready,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_replacement(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

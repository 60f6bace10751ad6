//! The invocation's log: lines from the `log` import and the guest's stdout and stderr, kept
//! up to the tenant's byte and line caps. Each line costs its message plus
//! [`LOG_LINE_OVERHEAD_BYTES`], so empty lines are not free: the log one invocation keeps is
//! bounded in memory and in its JSON form whatever the guest writes. Past a cap lines are
//! counted and dropped, never an error: a chatty guest loses its log tail, not its result.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogSource {
    Log,
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub source: LogSource,
    pub message: String,
}

/// What one kept line costs besides its message, counted against `max_log_bytes`: about
/// what a line takes stored (a `LogLine` with its `String`, ~40 bytes, plus the allocation)
/// and serialized (`{"level":"info","source":"stdout","message":""}`, 48 bytes).
pub const LOG_LINE_OVERHEAD_BYTES: u64 = 64;

/// What the invocation logged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logs {
    pub lines: Vec<LogLine>,
    /// Message bytes dropped because a log cap was reached.
    pub dropped_bytes: u64,
    /// Lines dropped because a log cap was reached.
    #[serde(default)]
    pub dropped_lines: u64,
}

#[derive(Debug, Default)]
struct Buffer {
    logs: Logs,
    /// Cost of the kept lines: message bytes plus the overhead of each line.
    bytes: u64,
    cap: u64,
    max_lines: usize,
    /// Partial lines written to stdout and stderr, waiting for their newline.
    partial: [Vec<u8>; 2],
}

impl Buffer {
    /// Whether not even an empty line fits any more.
    fn full(&self) -> bool {
        self.logs.lines.len() >= self.max_lines
            || self.bytes.saturating_add(LOG_LINE_OVERHEAD_BYTES) > self.cap
    }

    fn drop_lines(&mut self, lines: u64, bytes: u64) {
        self.logs.dropped_lines = self.logs.dropped_lines.saturating_add(lines);
        self.logs.dropped_bytes = self.logs.dropped_bytes.saturating_add(bytes);
    }

    fn push(&mut self, level: LogLevel, source: LogSource, message: String) {
        let len = message.len() as u64;
        let cost = len.saturating_add(LOG_LINE_OVERHEAD_BYTES);
        if self.logs.lines.len() >= self.max_lines || self.bytes.saturating_add(cost) > self.cap {
            self.drop_lines(1, len);
            return;
        }
        self.bytes += cost;
        self.logs.lines.push(LogLine {
            level,
            source,
            message,
        });
    }

    fn write_stream(&mut self, stream: usize, bytes: &[u8]) {
        // Once the log is full there is no point splitting or buffering lines either; the
        // lines are still counted, by their newlines.
        if self.full() {
            let newlines = memchr::memchr_iter(b'\n', bytes).count() as u64;
            self.drop_lines(newlines, bytes.len() as u64 - newlines);
            return;
        }
        let mut pending = std::mem::take(&mut self.partial[stream]);
        pending.extend_from_slice(bytes);
        let mut rest = pending.as_slice();
        while let Some(newline) = rest.iter().position(|&b| b == b'\n') {
            self.push_stream_line(stream, &rest[..newline]);
            rest = &rest[newline + 1..];
        }
        // A guest that never writes a newline must not grow the partial buffer without bound.
        if rest.len() as u64 > self.cap {
            self.push_stream_line(stream, rest);
            rest = &[];
        }
        self.partial[stream] = rest.to_vec();
    }

    fn push_stream_line(&mut self, stream: usize, line: &[u8]) {
        let (level, source) = if stream == 0 {
            (LogLevel::Info, LogSource::Stdout)
        } else {
            (LogLevel::Warn, LogSource::Stderr)
        };
        self.push(level, source, String::from_utf8_lossy(line).into_owned());
    }
}

/// A cloneable handle to one invocation's log buffer.
#[derive(Debug, Clone)]
pub struct LogSink(Arc<Mutex<Buffer>>);

impl LogSink {
    /// A log keeping at most `cap_bytes` (messages plus each line's overhead) in at most
    /// `max_lines` lines.
    pub fn new(cap_bytes: u64, max_lines: u32) -> Self {
        Self(Arc::new(Mutex::new(Buffer {
            cap: cap_bytes,
            max_lines: usize::try_from(max_lines).unwrap_or(usize::MAX),
            ..Buffer::default()
        })))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Buffer) -> R) -> R {
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    pub fn log(&self, level: LogLevel, message: String) {
        self.with(|b| b.push(level, LogSource::Log, message));
    }

    /// The guest's stdout (`stream == 0`) or stderr (`1`) as a WASI output stream.
    pub fn stream(&self, source: LogSource) -> CapturedStream {
        let index = usize::from(source == LogSource::Stderr);
        CapturedStream {
            sink: self.clone(),
            index,
        }
    }

    /// Flushes partial stdout/stderr lines and returns everything logged.
    pub fn finish(&self) -> Logs {
        self.with(|b| {
            for stream in 0..2 {
                let rest = std::mem::take(&mut b.partial[stream]);
                if !rest.is_empty() {
                    b.push_stream_line(stream, &rest);
                }
            }
            std::mem::take(&mut b.logs)
        })
    }
}

/// One of the guest's output streams, feeding the log buffer. It accepts every write so that
/// `println!` never fails inside the guest, and keeps only what fits under the cap.
#[derive(Debug, Clone)]
pub struct CapturedStream {
    sink: LogSink,
    index: usize,
}

impl IsTerminal for CapturedStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CapturedStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    /// Our own stream rather than the default adapter: wasmtime-wasi's `AsyncWriteStream`
    /// logs every chunk it writes at debug level (`worker writing: ...`), which put the
    /// guest's raw output, unscrubbed and uncapped, into the host's log.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

/// Most bytes a guest may write in one `write` call (and so the largest `write-zeroes` buffer
/// the host allocates for it); WASI's own streams allow 64 KiB too.
const WRITE_PERMIT_BYTES: usize = 64 * 1024;

/// Writes land in the log buffer at once: the stream never buffers, never blocks and never
/// fails, so readiness is immediate and a flush has nothing to do.
impl OutputStream for CapturedStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.sink.with(|b| b.write_stream(self.index, &bytes));
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT_BYTES)
    }
}

impl Pollable for CapturedStream {
    // What `#[async_trait]` expands to, written out to spare a dependency for one method.
    fn ready<'life0, 'async_trait>(
        &'life0 mut self,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(std::future::ready(()))
    }
}

impl AsyncWrite for CapturedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.sink.with(|b| b.write_stream(self.index, buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    const LINE: u64 = LOG_LINE_OVERHEAD_BYTES;

    #[test]
    fn the_wasi_stream_writes_into_the_log_at_once() {
        let sink = LogSink::new(2 * LINE + 10, 100);
        let mut out = sink.stream(LogSource::Stdout).p2_stream();
        assert_eq!(out.check_write().ok(), Some(WRITE_PERMIT_BYTES));
        out.write(Bytes::from_static(b"hello\nwor")).expect("write");
        out.write(Bytes::from_static(b"ld\nnot kept\n"))
            .expect("write");
        out.flush().expect("flush");
        let logs = sink.finish();
        let messages: Vec<_> = logs.lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["hello", "world"]);
        assert_eq!(logs.dropped_lines, 1);
    }

    #[tokio::test]
    async fn stdout_is_split_into_lines_and_the_cap_drops_the_tail() {
        let sink = LogSink::new(2 * LINE + 10, 100);
        let mut out = sink.stream(LogSource::Stdout);
        out.write_all(b"hello\nwor").await.expect("write");
        out.write_all(b"ld\n").await.expect("write");
        sink.log(LogLevel::Error, "this line does not fit".into());
        let logs = sink.finish();
        let messages: Vec<_> = logs.lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["hello", "world"]);
        assert_eq!(logs.lines[0].source, LogSource::Stdout);
        assert_eq!(logs.dropped_bytes, 22);
        assert_eq!(logs.dropped_lines, 1);
    }

    #[tokio::test]
    async fn a_line_without_newline_is_kept_on_finish_and_bounded_while_running() {
        let sink = LogSink::new(LINE + 8, 100);
        let mut err = sink.stream(LogSource::Stderr);
        err.write_all(b"partial").await.expect("write");
        let logs = sink.finish();
        assert_eq!(logs.lines[0].message, "partial");
        assert_eq!(logs.lines[0].level, LogLevel::Warn);

        let sink = LogSink::new(LINE + 4, 100);
        let mut out = sink.stream(LogSource::Stdout);
        out.write_all(&[b'x'; 100]).await.expect("write");
        let logs = sink.finish();
        assert_eq!(logs.dropped_bytes, 100);
        assert_eq!(logs.dropped_lines, 1);
    }

    #[tokio::test]
    async fn empty_lines_cost_their_overhead() {
        let sink = LogSink::new(10 * LINE, 1_000);
        for _ in 0..1_000 {
            sink.log(LogLevel::Info, String::new());
        }
        let mut out = sink.stream(LogSource::Stdout);
        out.write_all(&[b'\n'; 500]).await.expect("write");
        let logs = sink.finish();
        assert_eq!(logs.lines.len(), 10);
        assert_eq!(logs.dropped_lines, 990 + 500);
        assert_eq!(logs.dropped_bytes, 0);
    }

    #[tokio::test]
    async fn the_line_cap_holds_whatever_the_bytes() {
        let sink = LogSink::new(1 << 20, 3);
        for _ in 0..5 {
            sink.log(LogLevel::Info, "x".into());
        }
        let mut out = sink.stream(LogSource::Stdout);
        out.write_all(b"a\nb\nc").await.expect("write");
        let logs = sink.finish();
        assert_eq!(logs.lines.len(), 3);
        // Two log lines and two stdout lines, counted by their newlines; a full log does not
        // keep the partial "c" around to count it as a line, only its byte.
        assert_eq!(logs.dropped_lines, 4);
        assert_eq!(logs.dropped_bytes, 5);
    }

    #[test]
    fn the_serialized_log_is_bounded_by_the_caps() {
        let sink = LogSink::new(256 * 1024, 1_000_000);
        for _ in 0..1_000_000 {
            sink.log(LogLevel::Info, String::new());
        }
        let logs = sink.finish();
        let json = serde_json::to_string(&logs).expect("json");
        // Every kept line costs at least its overhead, which covers its JSON form.
        assert!(
            json.len() as u64 <= 256 * 1024 + 100,
            "{} bytes",
            json.len()
        );
        assert_eq!(logs.lines.len() as u64, 256 * 1024 / LINE);
    }
}

//! The invocation's log: lines from the `log` import and the guest's stdout and stderr, kept
//! up to the tenant's byte cap. Past the cap lines are counted and dropped, never an error:
//! a chatty guest loses its log tail, not its result.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

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

/// What the invocation logged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logs {
    pub lines: Vec<LogLine>,
    /// Bytes dropped because the log cap was reached.
    pub dropped_bytes: u64,
}

#[derive(Debug, Default)]
struct Buffer {
    logs: Logs,
    bytes: u64,
    cap: u64,
    /// Partial lines written to stdout and stderr, waiting for their newline.
    partial: [Vec<u8>; 2],
}

impl Buffer {
    fn push(&mut self, level: LogLevel, source: LogSource, message: String) {
        let len = message.len() as u64;
        if self.bytes.saturating_add(len) > self.cap {
            self.logs.dropped_bytes = self.logs.dropped_bytes.saturating_add(len);
            return;
        }
        self.bytes += len;
        self.logs.lines.push(LogLine {
            level,
            source,
            message,
        });
    }

    fn write_stream(&mut self, stream: usize, bytes: &[u8]) {
        // Once the cap is reached there is no point buffering partial lines either.
        if self.bytes >= self.cap {
            self.logs.dropped_bytes = self.logs.dropped_bytes.saturating_add(bytes.len() as u64);
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
    pub fn new(cap_bytes: u64) -> Self {
        Self(Arc::new(Mutex::new(Buffer {
            cap: cap_bytes,
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

    #[tokio::test]
    async fn stdout_is_split_into_lines_and_the_cap_drops_the_tail() {
        let sink = LogSink::new(10);
        let mut out = sink.stream(LogSource::Stdout);
        out.write_all(b"hello\nwor").await.expect("write");
        out.write_all(b"ld\n").await.expect("write");
        sink.log(LogLevel::Error, "this line does not fit".into());
        let logs = sink.finish();
        let messages: Vec<_> = logs.lines.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["hello", "world"]);
        assert_eq!(logs.lines[0].source, LogSource::Stdout);
        assert_eq!(logs.dropped_bytes, 22);
    }

    #[tokio::test]
    async fn a_line_without_newline_is_kept_on_finish_and_bounded_while_running() {
        let sink = LogSink::new(8);
        let mut err = sink.stream(LogSource::Stderr);
        err.write_all(b"partial").await.expect("write");
        let logs = sink.finish();
        assert_eq!(logs.lines[0].message, "partial");
        assert_eq!(logs.lines[0].level, LogLevel::Warn);

        let sink = LogSink::new(4);
        let mut out = sink.stream(LogSource::Stdout);
        out.write_all(&[b'x'; 100]).await.expect("write");
        assert_eq!(sink.finish().dropped_bytes, 100);
    }
}

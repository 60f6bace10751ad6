//! Logging into the invocation's log buffer through `cx.log()`.

use std::fmt;

use crate::host::Host;

/// Log levels; mirrors the WIT `level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Returned by [`Context::log`](crate::Context::log). Messages take `impl Display`, so
/// `cx.log().info(format_args!("fetched {n} issues"))` formats without an extra `String`.
#[derive(Clone, Copy)]
pub struct Log<'a> {
    host: &'a dyn Host,
}

impl<'a> Log<'a> {
    pub(crate) fn new(host: &'a dyn Host) -> Self {
        Log { host }
    }

    pub fn write(&self, level: Level, message: impl fmt::Display) {
        self.host.log(level, &message.to_string());
    }

    pub fn trace(&self, message: impl fmt::Display) {
        self.write(Level::Trace, message);
    }

    pub fn debug(&self, message: impl fmt::Display) {
        self.write(Level::Debug, message);
    }

    pub fn info(&self, message: impl fmt::Display) {
        self.write(Level::Info, message);
    }

    pub fn warn(&self, message: impl fmt::Display) {
        self.write(Level::Warn, message);
    }

    pub fn error(&self, message: impl fmt::Display) {
        self.write(Level::Error, message);
    }
}

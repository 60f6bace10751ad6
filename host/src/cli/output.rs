//! Everything the CLI prints goes through here. `println!` panics when the reader has gone
//! (`airlock manifest x.wasm | head -c 10`: EPIPE, "failed printing to stdout"); a command
//! line tool whose reader stopped listening should just stop, quietly, as `cat` does.

use std::fmt;
use std::io::{self, Write as _};

/// Exit status when the reader of stdout went away: 128 + SIGPIPE, what a shell reports for a
/// tool the signal killed (`set -o pipefail` still sees that the output was cut short).
pub const EXIT_BROKEN_PIPE: i32 = 128 + 13;

/// Writes to stdout (`line` adds a newline); exits quietly if nobody reads it anymore.
pub fn stdout(args: fmt::Arguments<'_>, line: bool) {
    let mut out = io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| if line { out.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| out.flush());
    if let Err(error) = written {
        gone(&error);
    }
}

/// Writes a line to stderr. A closed stderr is no reason to stop (nor to panic): the message
/// is dropped, except that a broken pipe there means the whole pipeline is going away.
pub fn stderr(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let written = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
    if let Err(error) = written
        && error.kind() == io::ErrorKind::BrokenPipe
    {
        std::process::exit(EXIT_BROKEN_PIPE);
    }
}

fn gone(error: &io::Error) -> ! {
    if error.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(EXIT_BROKEN_PIPE);
    }
    // Any other failure to write the output (a full disk behind a redirect) is a real error,
    // reported where it can still be seen.
    let _ = writeln!(io::stderr(), "error: cannot write the output: {error}");
    std::process::exit(i32::from(super::EXIT_SETUP));
}

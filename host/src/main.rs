//! The `airlock` binary.

use std::process::ExitCode;

use clap::Parser;

/// glibc's allocator was a tenth of the server's CPU under invoke load (free-list
/// consolidation across threads); mimalloc's per-thread heaps suit many short requests.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = airlock::cli::Cli::parse();
    airlock::cli::init_logging(cli.log_format);
    airlock::cli::run(cli)
}

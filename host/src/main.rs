//! The `airlock` binary.

use std::process::ExitCode;

use clap::Parser;

/// glibc's allocator was a tenth of the server's CPU under invoke load (free-list
/// consolidation across threads); mimalloc's per-thread heaps suit many short requests.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    airlock::cli::run(airlock::cli::Cli::parse())
}

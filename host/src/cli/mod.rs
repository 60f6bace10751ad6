//! The `airlock` command line: argument types and dispatch to each subcommand.

/// `println!` that exits quietly on a closed pipe instead of panicking (see `output`).
macro_rules! outln {
    ($($arg:tt)*) => { $crate::cli::output::stdout(format_args!($($arg)*), true) };
}

/// `print!` that exits quietly on a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::output::stdout(format_args!($($arg)*), false) };
}

/// `eprintln!` that never panics.
macro_rules! errln {
    ($($arg:tt)*) => { $crate::cli::output::stderr(format_args!($($arg)*)) };
}

mod audit;
mod bench;
mod connector;
mod invoke;
mod keys;
mod output;
mod serve;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "airlock",
    version,
    about = "Run connectors as sandboxed WebAssembly components"
)]
pub struct Cli {
    /// How log lines are written to stderr: `text` (coloured only on a terminal) or `json`
    /// (one object a line, for a log shipper). Levels: `AIRLOCK_LOG` (default `warn`;
    /// `info` has a line per run event and refused webhook).
    #[arg(
        long,
        global = true,
        env = "AIRLOCK_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the process's log subscriber: stderr, `AIRLOCK_LOG` levels, `format`.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIRLOCK_LOG")
        .unwrap_or_else(|_| "warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one action of a connector (component or declarative definition) in a fresh
    /// sandbox and print the result.
    Invoke(invoke::InvokeArgs),
    /// Print a connector's validated manifest (component or declarative definition).
    Manifest(ManifestArgs),
    /// Author connectors: start one from a template, or import an OpenAPI description.
    Connector(connector::ConnectorArgs),
    /// Measure isolated invocations against the on-demand allocator and a process spawn.
    Bench(bench::BenchArgs),
    /// Run the REST service (SQLite in the data directory by default).
    Serve(serve::ServeArgs),
    /// Issue bearer tokens for the REST service.
    Token(token::TokenArgs),
    /// Manage the credential encryption keys: rotate, re-encrypt, list and retire.
    Keys(keys::KeysArgs),
    /// Check the audit log's hash chains.
    Audit(audit::AuditArgs),
}

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// Path to the component (.wasm) or declarative definition (.json, .yaml, .yml).
    pub component: PathBuf,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Flags shared by every command that loads components.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Directory for precompiled components (speeds up repeated loads).
    #[arg(long, env = "AIRLOCK_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            errln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_SETUP);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Invoke(args) => invoke::run(args).await,
            Command::Manifest(args) => invoke::manifest(args).await,
            Command::Connector(args) => connector::run(args),
            Command::Bench(args) => bench::run(args).await,
            Command::Serve(args) => serve::run(args).await,
            Command::Token(args) => token::run(args).await,
            Command::Keys(args) => keys::run(args).await,
            Command::Audit(args) => audit::run(args).await,
        }
    })
}

/// Exit codes: 0 success, 1 the invocation failed (its kind is printed) or a `connector`
/// command could not do its work (the reason is printed), 2 bad arguments (clap's own), 3 the
/// component or the environment could not be set up.
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_SETUP: u8 = 3;

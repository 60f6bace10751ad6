//! `airlock bench`: the same-run benchmark of isolated invocations (see `crate::benchmark`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use super::{EXIT_FAILED, EXIT_SETUP};
use crate::benchmark::{self, Plan};

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Path to the component (.wasm).
    pub component: PathBuf,
    /// The action to time.
    pub action: String,
    /// The action's input as JSON.
    #[arg(long, default_value = "{}")]
    pub input: String,
    /// Timed invocations per scenario (after a warm-up).
    #[arg(long, default_value_t = 2_000)]
    pub iterations: usize,
    /// A compute-heavy action of the same component, timed with limits on and off.
    #[arg(long)]
    pub compute_action: Option<String>,
    /// Input of the compute-heavy action.
    #[arg(long, default_value = "{}")]
    pub compute_input: String,
    /// Timed invocations of the compute-heavy action per scenario.
    #[arg(long, default_value_t = 50)]
    pub compute_iterations: usize,
    /// The trivial process spawned as the baseline.
    #[arg(long, default_value = "/bin/true")]
    pub spawn: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: BenchArgs) -> ExitCode {
    let bytes = match std::fs::read(&args.component) {
        Ok(bytes) => bytes,
        Err(error) => {
            errln!("error: cannot read {}: {error}", args.component.display());
            return ExitCode::from(EXIT_SETUP);
        }
    };
    let plan = Plan {
        component: &bytes,
        action: &args.action,
        input: &args.input,
        iterations: args.iterations,
        compute: args
            .compute_action
            .as_deref()
            .map(|a| (a, args.compute_input.as_str())),
        compute_iterations: args.compute_iterations,
        spawn_program: &args.spawn,
    };
    match benchmark::run(&plan).await {
        Ok(report) if args.json => {
            outln!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            out!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            errln!("error: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

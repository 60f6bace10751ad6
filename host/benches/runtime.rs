//! `cargo bench -p airlock`: the runtime benchmark on the test guests, printing same-run
//! figures and ratios (see docs/performance.md). Set `AIRLOCK_BENCH_ITERATIONS` to change
//! the number of timed invocations per scenario (default 5000).

use std::path::Path;

use airlock::benchmark::{self, Plan};

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this as a quick smoke test.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let iterations = std::env::var("AIRLOCK_BENCH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke { 50 } else { 5_000 });
    let bytes = match std::fs::read(airlock_test_artifacts::HOSTILE) {
        Ok(bytes) => bytes,
        Err(error) => {
            eprintln!("cannot read the hostile guest: {error}");
            std::process::exit(1);
        }
    };
    let plan = Plan {
        component: &bytes,
        action: "echo",
        input: r#"{"n": 1}"#,
        iterations,
        compute: Some(("compute", r#"{"n": 5000000}"#)),
        compute_iterations: if smoke { 3 } else { 30 },
        spawn_program: Path::new("/bin/true"),
    };
    let report = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(benchmark::run(&plan)));
    match report {
        Ok(report) => print!("{report}"),
        Err(error) => {
            eprintln!("benchmark failed: {error}");
            std::process::exit(1);
        }
    }
}

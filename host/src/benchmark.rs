//! Same-run latency measurements behind `airlock bench` and `cargo bench`: isolated
//! invocations with the pooling allocator and `InstancePre`, the same on the on-demand
//! allocator, spawning a trivial process as the container-free baseline, and a compute-heavy
//! action with limits on and off.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;

use airlock_runtime::{EngineOptions, InvokeRequest, Runtime, RuntimeOptions, SharedComponent};

/// Latency percentiles of one scenario, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Distribution {
    pub iterations: usize,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

impl Distribution {
    pub fn from_samples(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let at = |q: f64| {
            let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples.get(index).copied().map_or(0.0, us)
        };
        let mean = if samples.is_empty() {
            0.0
        } else {
            samples.iter().copied().map(us).sum::<f64>() / samples.len() as f64
        };
        Self {
            iterations: samples.len(),
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            mean_us: mean,
        }
    }
}

/// A runtime for benchmarking: pooled or on-demand, limits enforced or not.
pub fn runtime(pooling: bool, enforce_limits: bool) -> Result<Runtime, String> {
    let engine = EngineOptions {
        pooling,
        enforce_limits,
        ..EngineOptions::default()
    };
    Runtime::new(RuntimeOptions {
        engine,
        ..RuntimeOptions::default()
    })
    .map_err(|e| e.to_string())
}

/// One runtime with its loaded component: a configuration under test.
pub type Target = (Runtime, SharedComponent);

/// Invocations per target per block when the pooled and on-demand allocators take turns.
///
/// Turns of one invocation each measured the neighbour as much as the target: an on-demand
/// instance maps and unmaps its memory, and that churn (page tables, TLB shootdowns, the
/// allocator's caches) slowed the pooled invocation right after it. On the 2-core CI machine,
/// same build and minute (issue 8): pooled p50 29-51 µs taking turns every invocation against
/// 17-28 µs in blocks of 250, and process spawn / pooled ~15× against ~30-48×. A block takes
/// 5-15 ms, far shorter than the minutes over which a shared machine's load drifts, so the
/// drift still lands on both targets (docs/performance.md).
pub const ALLOCATOR_BLOCK: usize = 250;

/// Invocations per target per block for limits on vs off: both run on the pooling allocator,
/// so they do not disturb each other, and one `compute` run takes milliseconds: turns of one
/// spread the (large) drift of a shared machine most evenly.
pub const COMPUTE_BLOCK: usize = 1;

/// Times `iterations` sequential invocations on each target after a warm-up of each, taking
/// turns between the targets in blocks of `block` invocations so that each sees the same
/// background load: on a shared machine that load drifts, and one long run per target would
/// turn the drift into a false ratio. The target that starts a round rotates (A B, B A, A B,
/// ...), so a load that rises or falls through the run weighs on every target alike. Every
/// invocation must succeed: a benchmark of failures would measure the wrong thing.
pub async fn invocations(
    targets: &[Target],
    action: &str,
    input: &str,
    iterations: usize,
    block: usize,
) -> Result<Vec<Distribution>, String> {
    let warmup = (iterations / 10).clamp(1, 200);
    for target in targets {
        for _ in 0..warmup {
            time_one(target, action, input).await?;
        }
    }
    let mut samples = vec![Vec::with_capacity(iterations); targets.len()];
    for (index, count) in turns(targets.len(), iterations, block) {
        let (Some(target), Some(taken)) = (targets.get(index), samples.get_mut(index)) else {
            continue;
        };
        for _ in 0..count {
            taken.push(time_one(target, action, input).await?);
        }
    }
    Ok(samples
        .into_iter()
        .map(Distribution::from_samples)
        .collect())
}

/// The order in which [`invocations`] times its targets: (target index, invocations in a row).
/// Rounds of one block per target, each round starting one target further on.
fn turns(targets: usize, iterations: usize, block: usize) -> Vec<(usize, usize)> {
    let block = block.max(1);
    let mut order = Vec::new();
    let mut done = 0;
    let mut round = 0;
    while done < iterations && targets > 0 {
        let count = block.min(iterations - done);
        for turn in 0..targets {
            order.push(((round + turn) % targets, count));
        }
        done += count;
        round += 1;
    }
    order
}

/// One invocation's wall-clock time, or why it failed.
async fn time_one(
    (runtime, component): &Target,
    action: &str,
    input: &str,
) -> Result<Duration, String> {
    let request = InvokeRequest::action("bench", action, input);
    let started = Instant::now();
    let outcome = runtime.invoke(component, request).await;
    let elapsed = started.elapsed();
    match outcome.result {
        Ok(_) => Ok(elapsed),
        Err(error) => Err(format!("invocation failed during the benchmark: {error}")),
    }
}

/// Times spawning `program` (a trivial process such as `/bin/true`) and waiting for it.
pub fn process_spawns(program: &Path, iterations: usize) -> Result<Distribution, String> {
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let started = Instant::now();
        let status = std::process::Command::new(program)
            .status()
            .map_err(|e| format!("cannot spawn {}: {e}", program.display()))?;
        samples.push(started.elapsed());
        if !status.success() {
            return Err(format!("{} exited with {status}", program.display()));
        }
    }
    Ok(Distribution::from_samples(samples))
}

/// One benchmark run's figures and the ratios the targets are stated in.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub pooled: Distribution,
    pub on_demand: Distribution,
    pub process_spawn: Distribution,
    /// Invocations per turn when pooled and on-demand take turns ([`ALLOCATOR_BLOCK`]).
    pub allocator_block: usize,
    /// On-demand p50 / pooled p50.
    pub on_demand_over_pooled: f64,
    /// Process-spawn p50 / pooled p50.
    pub spawn_over_pooled: f64,
    pub compute: Option<ComputeReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComputeReport {
    pub limits_on: Distribution,
    pub limits_off: Distribution,
    /// Limits-on p50 / limits-off p50: the cost of fuel metering and epoch checks.
    pub on_over_off: f64,
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan<'a> {
    pub component: &'a [u8],
    pub action: &'a str,
    pub input: &'a str,
    pub iterations: usize,
    /// A compute-heavy action of the same component and its input, for limits on vs off.
    pub compute: Option<(&'a str, &'a str)>,
    pub compute_iterations: usize,
    pub spawn_program: &'a Path,
}

pub async fn run(plan: &Plan<'_>) -> Result<Report, String> {
    let target = |pooling: bool, enforce: bool| async move {
        let runtime = runtime(pooling, enforce)?;
        let component = runtime
            .load(plan.component)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<Target, String>((runtime, component))
    };
    let allocators = [target(true, true).await?, target(false, true).await?];
    let [pooled, on_demand] = two(invocations(
        &allocators,
        plan.action,
        plan.input,
        plan.iterations,
        ALLOCATOR_BLOCK,
    )
    .await?)?;
    drop(allocators);
    let spawn_iterations = plan.iterations.min(2_000);
    let process_spawn = process_spawns(plan.spawn_program, spawn_iterations)?;
    let compute = match plan.compute {
        Some((action, input)) => {
            let limits = [target(true, true).await?, target(true, false).await?];
            let [limits_on, limits_off] = two(invocations(
                &limits,
                action,
                input,
                plan.compute_iterations,
                COMPUTE_BLOCK,
            )
            .await?)?;
            Some(ComputeReport {
                on_over_off: ratio(limits_on.p50_us, limits_off.p50_us),
                limits_on,
                limits_off,
            })
        }
        None => None,
    };
    Ok(Report {
        on_demand_over_pooled: ratio(on_demand.p50_us, pooled.p50_us),
        spawn_over_pooled: ratio(process_spawn.p50_us, pooled.p50_us),
        pooled,
        on_demand,
        process_spawn,
        allocator_block: ALLOCATOR_BLOCK,
        compute,
    })
}

fn two(distributions: Vec<Distribution>) -> Result<[Distribution; 2], String> {
    <[Distribution; 2]>::try_from(distributions)
        .map_err(|_| "expected two distributions".to_owned())
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { f64::NAN }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let row = |f: &mut std::fmt::Formatter<'_>, name: &str, d: &Distribution| {
            writeln!(
                f,
                "{name:<28} {:>7} iters  p50 {:>9.1} µs  p90 {:>9.1} µs  p99 {:>9.1} µs",
                d.iterations, d.p50_us, d.p90_us, d.p99_us
            )
        };
        row(f, "pooled + InstancePre", &self.pooled)?;
        row(f, "on-demand allocator", &self.on_demand)?;
        row(f, "process spawn", &self.process_spawn)?;
        writeln!(
            f,
            "(pooled and on-demand take turns in blocks of {} invocations)",
            self.allocator_block
        )?;
        writeln!(
            f,
            "on-demand / pooled (p50)    {:.2}x",
            self.on_demand_over_pooled
        )?;
        writeln!(
            f,
            "process spawn / pooled (p50) {:.1}x",
            self.spawn_over_pooled
        )?;
        if let Some(compute) = &self.compute {
            row(f, "compute, limits on", &compute.limits_on)?;
            row(f, "compute, limits off", &compute.limits_off)?;
            writeln!(f, "limits on / off (p50)       {:.3}x", compute.on_over_off)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_take_turns_in_blocks_and_the_first_turn_rotates() {
        assert_eq!(
            turns(2, 600, 250),
            [(0, 250), (1, 250), (1, 250), (0, 250), (0, 100), (1, 100)]
        );
        assert_eq!(
            turns(3, 2, 1),
            [(0, 1), (1, 1), (2, 1), (1, 1), (2, 1), (0, 1)]
        );
        assert_eq!(turns(2, 3, 0), turns(2, 3, 1));
        assert!(turns(0, 10, 5).is_empty() && turns(2, 0, 5).is_empty());
    }
}

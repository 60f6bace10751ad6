//! Attacks on CPU time and the call stack, plus `compute`, the terminating workload the
//! benchmark runs with limits on and off.

use std::hint::black_box;

use serde_json::json;

use crate::bindings::airlock::connector::types::ErrorKind;
use crate::input::Input;
use crate::{Outcome, error};

/// Loops forever. `black_box` keeps the loop observable, so the optimiser cannot delete it.
pub(crate) fn spin() -> Outcome {
    let mut x = black_box(0u64);
    loop {
        x = black_box(x.wrapping_add(1));
    }
}

/// Recurses until the stack runs out.
///
/// `mode` `"native"` (default) keeps every frame in wasm locals, so it exhausts the engine's
/// wasm stack (a stack-overflow trap). `"shadow"` gives each frame a 4 KiB address-taken buffer,
/// which lives on the shadow stack in linear memory instead (1 MiB, placed first, so running
/// past its bottom is an out-of-bounds access).
pub(crate) fn recurse(input: &Input) -> Outcome {
    let depth = match input.str("mode", "native")? {
        "native" => native_frame(0),
        "shadow" => shadow_frame(0),
        other => {
            return Err(error(
                ErrorKind::InvalidInput,
                format!("mode must be \"native\" or \"shadow\", not {other:?}"),
            ));
        }
    };
    // Never reached: the condition that ends the recursion is never true.
    Ok(json!({ "depth": depth }).to_string())
}

#[inline(never)]
fn native_frame(depth: u64) -> u64 {
    if black_box(depth) == u64::MAX {
        return depth;
    }
    // Using the result after the call keeps the recursion from becoming a loop.
    let deeper = native_frame(depth + 1);
    black_box(deeper).wrapping_add(depth)
}

#[inline(never)]
fn shadow_frame(depth: u64) -> u64 {
    let mut frame = [0u8; 4096];
    frame[0] = depth.to_le_bytes()[0];
    black_box(&mut frame);
    if black_box(depth) == u64::MAX {
        return depth;
    }
    let deeper = shadow_frame(depth + 1);
    black_box(deeper).wrapping_add(u64::from(frame[1]))
}

/// Sleeps `ms` (default 1,000) milliseconds through WASI's monotonic clock, holding its
/// instance slot without using CPU: a connector waiting on a slow upstream.
pub(crate) fn sleep(input: &Input) -> Outcome {
    let ms = input.u64("ms", 1_000)?;
    std::thread::sleep(std::time::Duration::from_millis(ms));
    Ok(json!({ "slept_ms": ms }).to_string())
}

/// `n` (default 5,000,000) rounds of xorshift64: CPU-bound, terminating, no allocation.
pub(crate) fn compute(input: &Input) -> Outcome {
    let n = input.u64("n", 5_000_000)?;
    Ok(json!({ "result": xorshift_rounds(n) }).to_string())
}

fn xorshift_rounds(n: u64) -> u64 {
    let mut x = black_box(0x9E37_79B9_7F4A_7C15u64);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    x
}

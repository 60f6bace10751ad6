//! Every limit and every named error: each test drives the hostile guest into one limit and
//! checks the kind, and would fail if the limit were not enforced.

use airlock::runtime::{ErrorKind, LogSource, TenantLimits};
use serde_json::json;

use crate::support::{error_kind, hostile, run, runtime};

fn limits() -> TenantLimits {
    TenantLimits::default()
}

#[tokio::test]
async fn a_spinning_guest_runs_out_of_fuel() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let limits = TenantLimits {
        fuel: 50_000_000,
        ..limits()
    };
    let outcome = run(&rt, &guest, "spin", json!({}), limits).await;
    assert_eq!(error_kind(&outcome), Some(ErrorKind::FuelExhausted));
    assert_eq!(outcome.stats.limit_hit, Some(ErrorKind::FuelExhausted));
    assert!(outcome.stats.fuel_used >= 50_000_000, "{:?}", outcome.stats);
}

#[tokio::test]
async fn a_spinning_guest_with_plenty_of_fuel_hits_the_wall_clock_timeout() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let limits = TenantLimits {
        fuel: 100_000_000_000,
        timeout_ms: 200,
        ..limits()
    };
    let outcome = run(&rt, &guest, "spin", json!({}), limits).await;
    assert_eq!(error_kind(&outcome), Some(ErrorKind::Timeout));
    assert!(outcome.stats.fuel_used > 0);
}

#[tokio::test]
async fn growing_memory_stops_at_the_tenant_limit() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let cap = 16 * 1024 * 1024;
    let limits = TenantLimits {
        memory_bytes: cap,
        ..limits()
    };
    let outcome = run(&rt, &guest, "grow_memory", json!({}), limits).await;
    // The guest sees memory.grow fail and returns how far it got: a success whose stats
    // still record the refused growth.
    let output = outcome
        .result
        .as_ref()
        .expect("the guest handles a failed memory.grow");
    let pages = output["pages"].as_u64().expect("pages");
    assert!(
        pages * 65536 <= cap,
        "grew to {pages} pages past the {cap}-byte cap"
    );
    assert!(
        pages * 65536 > cap / 2,
        "stopped at {pages} pages, far below the cap"
    );
    assert_eq!(outcome.stats.limit_hit, Some(ErrorKind::MemoryLimit));
    assert!(outcome.stats.peak_memory_bytes <= cap);
}

#[tokio::test]
async fn a_huge_allocation_is_a_memory_limit_error() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let limits = TenantLimits {
        memory_bytes: 32 * 1024 * 1024,
        ..limits()
    };
    let outcome = run(
        &rt,
        &guest,
        "alloc_huge",
        json!({"bytes": 256 * 1024 * 1024}),
        limits,
    )
    .await;
    assert_eq!(
        error_kind(&outcome),
        Some(ErrorKind::MemoryLimit),
        "{:?}",
        outcome.result
    );
}

#[tokio::test]
async fn the_same_allocation_succeeds_under_a_larger_limit() {
    // Control for the test above: the allocation itself is fine, only the limit refuses it.
    let rt = runtime();
    let guest = hostile(&rt).await;
    let limits = TenantLimits {
        memory_bytes: 512 * 1024 * 1024,
        ..limits()
    };
    let outcome = run(
        &rt,
        &guest,
        "alloc_huge",
        json!({"bytes": 256 * 1024 * 1024}),
        limits,
    )
    .await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
}

#[tokio::test]
async fn unbounded_recursion_is_a_guest_trap() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let outcome = run(&rt, &guest, "recurse", json!({}), limits()).await;
    let error = outcome.result.expect_err("stack overflow");
    assert_eq!(error.kind, ErrorKind::GuestTrap);
    assert!(error.message.contains("stack"), "{}", error.message);
}

#[tokio::test]
async fn a_panic_is_a_guest_trap() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let outcome = run(&rt, &guest, "panic", json!({}), limits()).await;
    assert_eq!(error_kind(&outcome), Some(ErrorKind::GuestTrap));
}

#[tokio::test]
async fn output_past_the_cap_is_output_too_large() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let limits = TenantLimits {
        max_output_bytes: 1024 * 1024,
        ..limits()
    };
    let outcome = run(
        &rt,
        &guest,
        "big_output",
        json!({"bytes": 2 * 1024 * 1024}),
        limits.clone(),
    )
    .await;
    assert_eq!(error_kind(&outcome), Some(ErrorKind::OutputTooLarge));
    let small = run(&rt, &guest, "big_output", json!({"bytes": 1000}), limits).await;
    assert!(small.result.is_ok(), "{:?}", small.result);
}

#[tokio::test]
async fn output_that_is_not_json_or_misses_its_schema_is_invalid_output() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let not_json = run(&rt, &guest, "bad_json", json!({}), limits()).await;
    assert_eq!(error_kind(&not_json), Some(ErrorKind::InvalidOutput));
    let bad_schema = run(&rt, &guest, "bad_schema", json!({}), limits()).await;
    let error = bad_schema.result.expect_err("schema violation");
    assert_eq!(error.kind, ErrorKind::InvalidOutput);
    assert_eq!(error.pointer.as_deref(), Some("/id"));
}

#[tokio::test]
async fn input_is_checked_before_the_guest_runs() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let ok = run(&rt, &guest, "echo", json!({"n": 3}), limits()).await;
    assert_eq!(ok.result.expect("valid input"), json!({"n": 3}));

    let wrong_type = run(&rt, &guest, "echo", json!({"n": "three"}), limits()).await;
    let error = wrong_type.result.expect_err("schema violation");
    assert_eq!(error.kind, ErrorKind::InvalidInput);
    assert_eq!(error.pointer.as_deref(), Some("/n"));
    assert_eq!(
        wrong_type.stats.fuel_used, 0,
        "the guest must not run on invalid input"
    );

    let request = airlock::runtime::InvokeRequest::action("t1", "echo", "{not json");
    let not_json = rt.invoke(&guest, request).await;
    assert_eq!(error_kind(&not_json), Some(ErrorKind::InvalidInput));

    let tiny = TenantLimits {
        max_input_bytes: 16,
        ..limits()
    };
    let too_big = run(
        &rt,
        &guest,
        "echo",
        json!({"n": 1, "padding": "x".repeat(64)}),
        tiny,
    )
    .await;
    assert_eq!(error_kind(&too_big), Some(ErrorKind::InvalidInput));
}

#[tokio::test]
async fn an_undeclared_action_is_unknown_action() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let outcome = run(&rt, &guest, "no_such_action", json!({}), limits()).await;
    assert_eq!(error_kind(&outcome), Some(ErrorKind::UnknownAction));
}

#[tokio::test]
async fn a_log_flood_is_truncated_at_the_cap_without_failing_the_invocation() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let cap = 64 * 1024;
    let limits = TenantLimits {
        max_log_bytes: cap,
        ..limits()
    };
    let outcome = run(&rt, &guest, "log_flood", json!({"count": 10_000}), limits).await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    let kept: u64 = outcome
        .logs
        .lines
        .iter()
        .map(|l| l.message.len() as u64)
        .sum();
    assert!(
        kept <= cap,
        "kept {kept} bytes of logs past the {cap}-byte cap"
    );
    assert!(kept > cap / 2, "kept only {kept} bytes");
    assert!(outcome.logs.dropped_bytes > 0);
}

/// Empty lines used to be free: 2,000,000 of them were all kept. Each line now costs its
/// overhead and the line cap holds, so the kept log is bounded and every drop is counted.
#[tokio::test]
async fn a_flood_of_empty_log_lines_is_bounded_and_counted() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let count = 2_000_000;
    let outcome = run(
        &rt,
        &guest,
        "log_flood",
        json!({"count": count, "message_bytes": 0, "stdout_lines": 0}),
        limits(),
    )
    .await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    let defaults = TenantLimits::default();
    let kept = outcome.logs.lines.len() as u64;
    assert_eq!(kept, u64::from(defaults.max_log_lines));
    assert_eq!(outcome.logs.dropped_lines, count - kept);
    let json = serde_json::to_string(&outcome.logs).expect("json");
    assert!(
        json.len() as u64 <= defaults.max_log_bytes,
        "{} bytes",
        json.len()
    );

    // Empty stdout lines are no cheaper.
    let outcome = run(
        &rt,
        &guest,
        "log_flood",
        json!({"count": 0, "message_bytes": 0, "stdout_lines": 100_000}),
        limits(),
    )
    .await;
    assert_eq!(
        outcome.logs.lines.len() as u64,
        u64::from(defaults.max_log_lines)
    );
    assert_eq!(outcome.logs.dropped_lines, 100_000 - kept);
}

/// With the host's log at debug level, wasmtime-wasi's stdout adapter logged every chunk the
/// guest wrote (`worker writing: b"..."`): 28 MB a minute, unscrubbed and past every cap. The
/// guest's stdout now goes only into its capped log.
#[tokio::test]
async fn the_guests_stdout_never_reaches_the_host_log() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let message_bytes = 517;
    let stdout_lines = 2_000;
    let recording = crate::api_canary::Recording::start();
    let outcome = run(
        &rt,
        &guest,
        "log_flood",
        json!({"count": 0, "message_bytes": message_bytes, "stdout_lines": stdout_lines}),
        limits(),
    )
    .await;
    let host_log = recording.text();
    drop(recording);
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    // The guest writes lines of `L`; no host event has a reason to hold a run of them.
    let raw = "L".repeat(64);
    assert!(
        !host_log.contains(&raw) && !host_log.contains("worker writing"),
        "the guest's stdout reached the host log ({} bytes of it)",
        host_log.len()
    );
    // The capture still has it, capped.
    let line = "L".repeat(message_bytes);
    let kept = outcome.logs.lines.len() as u64;
    assert!(kept > 0);
    assert!(
        outcome
            .logs
            .lines
            .iter()
            .all(|l| l.source == LogSource::Stdout && l.message == line)
    );
    let json = serde_json::to_string(&outcome.logs).expect("json");
    assert!(
        json.len() as u64 <= limits().max_log_bytes,
        "{} bytes",
        json.len()
    );
    assert_eq!(outcome.logs.dropped_lines, stdout_lines - kept);
}

/// A string that is not UTF-8 where the contract promises one is the guest's fault, as its
/// output or as an import's argument: `invalid_output`, never `internal`.
#[tokio::test]
async fn a_string_that_is_not_utf8_is_the_guests_fault() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let outcome = run(&rt, &guest, "bad_utf8", json!({"via": "output"}), limits()).await;
    assert_eq!(
        error_kind(&outcome),
        Some(ErrorKind::InvalidOutput),
        "{:?}",
        outcome.result
    );
    assert_eq!(outcome.stats.limit_hit, Some(ErrorKind::InvalidOutput));
    let outcome = run(&rt, &guest, "bad_utf8", json!({"via": "log"}), limits()).await;
    assert_eq!(
        error_kind(&outcome),
        Some(ErrorKind::InvalidOutput),
        "{:?}",
        outcome.result
    );
}

/// A refused state write the guest shrugged off, then a memory limit that stopped it: both
/// `error.kind` and `stats.limit_hit` name the memory limit.
#[tokio::test]
async fn the_limit_that_stopped_the_guest_is_the_limit_hit() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let limits = TenantLimits {
        memory_bytes: 32 * 1024 * 1024,
        ..limits()
    };
    let outcome = run(
        &rt,
        &guest,
        "state_then_alloc",
        json!({"value_bytes": 1_048_576, "bytes": 268_435_456}),
        limits,
    )
    .await;
    assert_eq!(
        error_kind(&outcome),
        Some(ErrorKind::MemoryLimit),
        "{:?}",
        outcome.result
    );
    assert_eq!(outcome.stats.limit_hit, Some(ErrorKind::MemoryLimit));
}

#[tokio::test]
async fn state_round_trips_and_its_caps_are_state_limit_errors() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let roundtrip = run(
        &rt,
        &guest,
        "state_roundtrip",
        json!({"value": "cursor-42"}),
        limits(),
    )
    .await;
    assert_eq!(
        roundtrip.result.expect("roundtrip")["value"],
        json!("cursor-42")
    );

    let few_keys = TenantLimits {
        max_state_keys: 10,
        ..limits()
    };
    let flood = run(
        &rt,
        &guest,
        "state_flood",
        json!({"count": 100, "value_bytes": 8}),
        few_keys,
    )
    .await;
    assert_eq!(
        error_kind(&flood),
        Some(ErrorKind::StateLimit),
        "{:?}",
        flood.result
    );

    let small_values = TenantLimits {
        max_state_value_bytes: 100,
        ..limits()
    };
    let big = run(
        &rt,
        &guest,
        "state_flood",
        json!({"count": 1, "value_bytes": 101}),
        small_values,
    )
    .await;
    assert_eq!(
        error_kind(&big),
        Some(ErrorKind::StateLimit),
        "{:?}",
        big.result
    );
}

#[tokio::test]
async fn every_outcome_carries_stats() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let outcome = run(&rt, &guest, "compute", json!({"n": 100_000}), limits()).await;
    assert!(outcome.result.is_ok(), "{:?}", outcome.result);
    let stats = &outcome.stats;
    assert!(stats.fuel_used > 100_000, "{stats:?}");
    assert!(stats.duration_us > 0);
    assert!(stats.peak_memory_bytes >= 65536);
    assert_eq!(stats.limit_hit, None);
}

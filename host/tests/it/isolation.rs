//! Isolation between invocations and tenants: fresh memory every time, state scoped by tenant.

use airlock::runtime::{InvokeRequest, TenantLimits};
use serde_json::json;

use crate::support::{hostile, run, runtime};

const PATTERN: &str = "TENANT-A-SECRET-PATTERN-7f3c";

#[tokio::test]
async fn a_second_tenant_never_sees_the_first_tenants_memory() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let input = |extra: serde_json::Value| {
        let mut v = json!({"pattern": PATTERN});
        if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
            v.extend(extra.clone());
        }
        v.to_string()
    };

    // Positive control: the scanner finds the pattern when it is in its own memory.
    let planted = rt
        .invoke(
            &guest,
            InvokeRequest::action("tenant-b", "read_pattern", input(json!({"plant": true}))),
        )
        .await;
    assert_eq!(
        planted.result.expect("scan")["found"],
        json!(true),
        "the scan must work"
    );

    // Several rounds, so tenant B lands on the pool slots tenant A just used.
    for round in 0..4 {
        let wrote = rt
            .invoke(
                &guest,
                InvokeRequest::action("tenant-a", "write_pattern", input(json!({}))),
            )
            .await;
        assert!(wrote.result.is_ok(), "{:?}", wrote.result);
        let read = rt
            .invoke(
                &guest,
                InvokeRequest::action("tenant-b", "read_pattern", input(json!({}))),
            )
            .await;
        let output = read.result.expect("scan");
        assert_eq!(
            output["found"],
            json!(false),
            "round {round}: tenant B found tenant A's bytes: {output}"
        );
        assert!(output["scanned_bytes"].as_u64().unwrap_or(0) >= 8 * 1024 * 1024);
    }
}

#[tokio::test]
async fn state_is_scoped_by_tenant() {
    let rt = runtime();
    let guest = hostile(&rt).await;
    let wrote = run(
        &rt,
        &guest,
        "state_roundtrip",
        json!({"key": "cursor", "value": "a-only"}),
        TenantLimits::default(),
    )
    .await;
    assert_eq!(wrote.result.expect("write")["value"], json!("a-only"));

    let same_tenant = run(
        &rt,
        &guest,
        "state_get",
        json!({"key": "cursor"}),
        TenantLimits::default(),
    )
    .await;
    assert_eq!(same_tenant.result.expect("read")["value"], json!("a-only"));

    let request = InvokeRequest::action(
        "other-tenant",
        "state_get",
        json!({"key": "cursor"}).to_string(),
    );
    let other = rt.invoke(&guest, request).await;
    assert_eq!(other.result.expect("read")["value"], json!(null));
}

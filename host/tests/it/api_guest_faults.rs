//! What a hostile guest does through the API stays its own fault: a string that is not UTF-8
//! is a 200 with `invalid_output` (never a 500), and a flood of empty log lines answers a
//! bounded log with the drop counted.

use serde_json::json;

use crate::api_support::{Db, TestServer, on_both_databases};

on_both_databases!(a_hostile_guests_faults_are_answered_as_its_own);

async fn a_hostile_guests_faults_are_answered_as_its_own(db: Db) {
    let Some(server) = TestServer::start(db).await else {
        return;
    };
    let admin = server.tenant("acme").await;
    let upload = server.upload(&admin, airlock_test_artifacts::HOSTILE).await;
    assert_eq!(upload.status, 201, "{}", upload.text);

    let bad = server
        .post(
            "/v1/connectors/hostile/actions/bad_utf8/invoke",
            &admin,
            json!({"input": {"via": "output"}}),
        )
        .await;
    assert_eq!(bad.status, 200, "{}", bad.text);
    assert_eq!(bad.body["ok"], json!(false));
    assert_eq!(
        bad.body["error"]["kind"],
        json!("invalid_output"),
        "{}",
        bad.text
    );
    assert_eq!(bad.body["stats"]["limit_hit"], json!("invalid_output"));

    let flood = server
        .post(
            "/v1/connectors/hostile/actions/log_flood/invoke",
            &admin,
            json!({"input": {"count": 200_000, "message_bytes": 0, "stdout_lines": 0}}),
        )
        .await;
    assert_eq!(flood.status, 200, "{}", flood.text);
    assert_eq!(flood.body["ok"], json!(true), "{}", flood.text);
    let lines = flood.body["logs"]["lines"].as_array().map_or(0, Vec::len);
    assert_eq!(lines, 1_000);
    assert_eq!(flood.body["logs"]["dropped_lines"], json!(199_000));
    assert!(flood.text.len() < 256 * 1024, "{} bytes", flood.text.len());
}

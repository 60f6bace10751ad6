//! The declarative runner: one component, shipped inside the host, that runs every
//! declarative connector. The host loads a definition's actions onto this component and hands
//! it, for each invocation, the plan of the action called (`invocation.declarative-plan`) and
//! the connection's config; everything else (the outbound gate, credentials, fuel, memory,
//! time, logs, stats) is what any code connector gets, because this is one.
//!
//! Its own manifest is never registered: the host derives each definition's manifest from
//! the definition itself.

use airlock_declarative::Plan;
use airlock_declarative::plan::TestPlan;
use airlock_declarative::run::{self, Request, Response, RunError, Transport};
use airlock_sdk::HttpError;
use airlock_sdk::prelude::*;

pub struct Runner;

impl Connector for Runner {
    fn definition() -> Definition {
        Definition::new("airlock-runner", env!("CARGO_PKG_VERSION"))
            .description("Runs declarative connectors")
            .action(
                Action::new("describe", describe)
                    .description("What this runner is; the host calls the definition's actions"),
            )
            .fallback(invoke)
    }

    fn test_connection(cx: &Context) -> Result<(), ConnectorError> {
        let Some(plan) = cx.declarative_plan() else {
            cx.log()
                .info("the definition declares no `test`: the connection was not checked");
            return Ok(());
        };
        let test: TestPlan = serde_json::from_str(&plan)
            .map_err(|e| ConnectorError::internal(format_args!("unreadable test plan: {e}")))?;
        run_plan(cx, &test.plan, &test.input).map(|_| ())
    }
}

airlock_sdk::export_connector!(Runner);

fn describe(_cx: &Context, _input: serde_json::Value) -> Result<serde_json::Value, ConnectorError> {
    Ok(serde_json::json!({"runner": env!("CARGO_PKG_VERSION")}))
}

fn invoke(cx: &Context, action: &str, input: &str) -> Result<String, ConnectorError> {
    let plan = cx.declarative_plan().ok_or_else(|| {
        ConnectorError::invalid_input(format_args!(
            "unknown action {action:?}: this component runs declarative connectors only"
        ))
    })?;
    let plan: Plan = serde_json::from_str(&plan)
        .map_err(|e| ConnectorError::internal(format_args!("unreadable plan: {e}")))?;
    let input: serde_json::Value = serde_json::from_str(input)
        .map_err(|e| ConnectorError::invalid_input(format_args!("input is not JSON: {e}")))?;
    let output = run_plan(cx, &plan, &input)?;
    Ok(output.to_string())
}

fn run_plan(
    cx: &Context,
    plan: &Plan,
    input: &serde_json::Value,
) -> Result<serde_json::Value, ConnectorError> {
    let config = cx.config();
    let mut transport = HostTransport { cx };
    run::run(plan, input, &config, &mut transport).map_err(connector_error)
}

fn connector_error(error: RunError) -> ConnectorError {
    ConnectorError::new(
        error.kind,
        format_args!("{}: {}", error.code, error.message),
        error.retryable,
    )
}

/// The host's `http` import as the runner's transport.
struct HostTransport<'c> {
    cx: &'c Context,
}

impl Transport for HostTransport<'_> {
    fn send(&mut self, request: Request) -> Result<Response, RunError> {
        let mut builder = self.cx.http().request(&request.method, request.url);
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        if let Some(body) = request.body {
            builder = builder.body(body);
        }
        let response = builder.send().map_err(transport_error)?;
        Ok(Response {
            status: response.status(),
            headers: response.headers().to_vec(),
            body: response.bytes().to_vec(),
        })
    }
}

fn transport_error(error: HttpError) -> RunError {
    let code = match &error {
        HttpError::Denied(_) => "http_denied",
        HttpError::Timeout => "timeout",
        HttpError::TooLarge(_) => "too_large",
        HttpError::TooManyRequests => "too_many_requests",
        HttpError::ConnectFailed(_) => "connect_failed",
        HttpError::InvalidRequest(_) => "invalid_request",
        HttpError::Other(_) => "transport",
    };
    let error = ConnectorError::from(error);
    RunError {
        kind: error.kind,
        code: code.to_owned(),
        message: error.message,
        retryable: error.retryable,
    }
}

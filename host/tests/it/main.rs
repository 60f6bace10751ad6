//! Integration tests of the runtime, the outbound gate and the CLI against real components
//! built once by `airlock-test-artifacts`, and real HTTP servers on loopback.

mod support;

mod access;
mod admission_share;
mod api;
mod api_canary;
mod api_config;
mod api_guest_faults;
mod api_isolation;
mod api_oauth;
mod api_openapi;
mod api_refusals;
mod api_server;
mod api_support;
mod audit;

mod breaker;
mod catalog;
mod chaos;
mod cli;
mod conditions;
mod connection_update;
mod connectors;
mod control_flow;
mod cron_locks;
mod dead_letter_webhook;
mod declarative;
mod engine;
mod http_credentials;
mod idempotency;
mod isolation;
mod keys;
mod limits;
mod loading;
mod metrics;
mod oidc;
mod openapi_prism;
mod outage;
mod outbound;
mod pipeline;
mod queue;
mod retention;
mod retries;
mod runs;
mod runs_support;
mod scheduling;
mod tenant_lifecycle;
mod tokens;
mod traces;
mod triggers;
mod upgrade;
mod usage;

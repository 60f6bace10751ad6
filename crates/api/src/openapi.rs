//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations, and the
//! problem responses those annotations name.
//!
//! The document must describe what the server answers, not what it means to answer:
//! `scripts/schemathesis` checks it against a live server in CI, and `tests/it/api_openapi.rs`
//! checks the facts a client relies on without it.

use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{Modify, Number, OpenApi};

use super::{
    access, auth, catalog, connections, connectors, error, health, invoke, lifecycle, names,
    notices, runs, tenants, triggers, workflows,
};
use airlock_model::LimitCaps;
use airlock_model::TenantQuota;

/// Every problem a route can answer, as a reusable response: a [`error::Problem`] served as
/// `application/problem+json` (never `application/json`). A route lists the ones it can
/// answer; what a status means on that route is said in the route's own description.
pub mod problem {
    #![allow(dead_code)] // Only their OpenAPI form is used: the server answers `ApiError`s.

    use utoipa::ToResponse;

    use super::error::Problem;

    /// `type` `bad-request`.
    #[derive(ToResponse)]
    #[response(
        description = "the request is malformed: a body that is not JSON, a path that is not UTF-8",
        content_type = "application/problem+json"
    )]
    pub struct BadRequest(Problem);

    /// `type` `unauthorized`.
    #[derive(ToResponse)]
    #[response(
        description = "no bearer token, or one that is not valid (signature, expiry, role and tenant)",
        content_type = "application/problem+json",
        headers(("WWW-Authenticate" = String, description = "`Bearer`"))
    )]
    pub struct Unauthorized(Problem);

    /// `type` `invalid-signature`.
    #[derive(ToResponse)]
    #[response(
        description = "a webhook delivery whose signature, timestamp or signing headers do not verify against the trigger's secret",
        content_type = "application/problem+json"
    )]
    pub struct BadSignature(Problem);

    /// `type` `forbidden`.
    #[derive(ToResponse)]
    #[response(
        description = "the token's role may not do this (operator routes need an operator token; tenant routes a tenant's token with a high enough role), or its tenant is suspended (`type` `tenant-suspended`)",
        content_type = "application/problem+json"
    )]
    pub struct Forbidden(Problem);

    /// `type` `not-found`.
    #[derive(ToResponse)]
    #[response(
        description = "no such resource in the caller's tenant",
        content_type = "application/problem+json"
    )]
    pub struct NotFound(Problem);

    /// `type` `conflict`.
    #[derive(ToResponse)]
    #[response(
        description = "a resource with this identity already exists",
        content_type = "application/problem+json"
    )]
    pub struct Conflict(Problem);

    /// `type` `payload-too-large`.
    #[derive(ToResponse)]
    #[response(
        description = "the body is larger than this route accepts",
        content_type = "application/problem+json"
    )]
    pub struct PayloadTooLarge(Problem);

    /// `type` `unsupported-media-type`.
    #[derive(ToResponse)]
    #[response(
        description = "the Content-Type is not the one this route reads",
        content_type = "application/problem+json"
    )]
    pub struct UnsupportedMediaType(Problem);

    /// `type` `validation` or `invalid-component`.
    #[derive(ToResponse)]
    #[response(
        description = "the body is well-formed but invalid; `field` names the field at fault when there is one",
        content_type = "application/problem+json"
    )]
    pub struct Unprocessable(Problem);

    /// `type` `quota-exceeded` (`quota` names it) or `too-many-requests`.
    #[derive(ToResponse)]
    #[response(
        description = "(`quota-exceeded`) a tenant quota is used up, `quota` names which: `runs_per_hour` (with Retry-After: seconds until the next hour), `max_workflows`, `max_queued_runs` or `max_triggers`; (`too-many-requests`, with Retry-After) the caller has as many requests of this kind in flight, or deliveries this minute, as it may",
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "seconds; sent with `runs_per_hour` and `too-many-requests`"))
    )]
    pub struct TooManyRequests(Problem);

    /// `type` `credential-refresh-failed`.
    #[derive(ToResponse)]
    #[response(
        description = "an OAuth2 connection's access token expired and could not be refreshed",
        content_type = "application/problem+json"
    )]
    pub struct BadGateway(Problem);

    /// `type` `unavailable`, `overloaded`, `queue-full` or `request-timeout`.
    #[derive(ToResponse)]
    #[response(
        description = "(`unavailable`) the database is unreachable or failing, or its circuit breaker is open; (`overloaded`) every instance slot is busy, or the server is at its limit of requests or connections; (`queue-full`) the run queue is past the operator's threshold; (`request-timeout`) the request did not finish within the server's limit",
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "seconds; sent with `unavailable`, `overloaded` and `queue-full`, not with `request-timeout`"))
    )]
    pub struct Unavailable(Problem);
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Airlock", description = "Multi-tenant connector runtime. Errors are RFC 9457 problem documents (`application/problem+json`)."),
    paths(
        tenants::create, tenants::list, tenants::show, tenants::show_limits, tenants::put_limits,
        tenants::patch_limits, lifecycle::suspend, lifecycle::resume, lifecycle::delete,
        lifecycle::export,
        connectors::upload, connectors::list, connectors::show, connectors::deprecate, connectors::undeprecate,
        catalog::publish, catalog::list, catalog::show, catalog::deprecate, catalog::undeprecate,
        connections::create, connections::list, connections::show, connections::update, connections::remove,
        connections::test,
        invoke::invoke, invoke::test_action, invoke::usage,
        workflows::create, workflows::list, workflows::show, workflows::update, workflows::remove,
        workflows::start_run,
        runs::list, runs::show, runs::iterations, runs::cancel, runs::replay, runs::dead_letters, runs::replay_many,
        runs::audit, runs::daily_usage, access::history,
        notices::put, notices::show, notices::remove, notices::notices, notices::test,
        triggers::create, triggers::list, triggers::show, triggers::pause, triggers::resume,
        triggers::rotate, triggers::remove, triggers::receive,
        health::healthz, health::readyz, health::openapi_json,
    ),
    components(
        schemas(
            error::Problem, auth::Role,
            tenants::CreateTenant, tenants::Tenant, tenants::Limits, tenants::LimitsPatch,
            connectors::ConnectorVersion, connectors::ConnectorSummary, connectors::VersionSummary,
            connectors::ComponentBytes,
            connectors::DefinitionDocument,
            connectors::DefinitionText,
            connections::CreateConnection, connections::UpdateConnection, connections::Connection,
            invoke::InvokeBody, invoke::InvokeResponse, invoke::TestActionResponse, invoke::ConnectorRef, invoke::Usage,
            workflows::CreateWorkflow, workflows::UpdateWorkflow, workflows::Workflow,
            workflows::WorkflowStep, workflows::RetryBody, workflows::StartRun,
            runs::Run, runs::RunStats, runs::StateName, runs::Step, runs::RunDetail, runs::Iteration, runs::IterationPage, runs::RunPage,
            runs::ReplayBody, runs::WorkflowVersion, runs::ReplayMany, runs::ReplayRefused, runs::ReplayReport,
            runs::AuditEntry, runs::DailyUsage, access::AccessEntry,
            notices::PutWebhook, notices::Webhook, notices::NoticeCounts, notices::Notice,
            notices::NoticeList, notices::NoticeState, notices::TestResult,
            triggers::CreateTrigger, triggers::RotateSecret, triggers::Trigger, triggers::TriggerKind,
            triggers::WebhookDetails, triggers::CronDetails, triggers::HookReceipt,
            health::Health,
        ),
        responses(
            problem::BadRequest, problem::Unauthorized, problem::BadSignature, problem::Forbidden,
            problem::NotFound,
            problem::Conflict, problem::PayloadTooLarge, problem::UnsupportedMediaType,
            problem::Unprocessable, problem::TooManyRequests, problem::BadGateway,
            problem::Unavailable,
        ),
    ),
    modifiers(&BearerAuth, &NamePatterns),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The names rule (`names.rs`, `airlock_contract::names`) as `pattern`s: a display name has
/// a character that is not whitespace and none the rule forbids; the other names and
/// references the server checks have none it forbids. Built from the rule's own table, so the
/// two cannot drift.
struct NamePatterns;

/// (schema, property, display name or only clean)
const NAME_FIELDS: &[(&str, &str, bool)] = &[
    ("CreateTenant", "name", true),
    ("CreateConnection", "name", true),
    ("CreateConnection", "connector", false),
    ("UpdateConnection", "name", true),
    ("CreateWorkflow", "name", true),
    ("UpdateWorkflow", "name", true),
    ("WorkflowStep", "connector", false),
    ("WorkflowStep", "version", false),
    ("WorkflowStep", "action", false),
    ("WorkflowStep", "connection", false),
];

impl Modify for NamePatterns {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let display = names::display_name_pattern();
        let clean = names::clean_pattern();
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        for (schema, property, is_display) in NAME_FIELDS {
            let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(*schema) else {
                continue;
            };
            if let Some(RefOr::T(Schema::Object(field))) = object.properties.get_mut(*property) {
                let pattern = if *is_display { &display } else { &clean };
                field.pattern = Some(pattern.clone());
            }
        }
    }
}

/// The document as the code declares it, before [`document`] adds this server's caps.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document this server serves: [`openapi`] with each numeric field of `Limits` bounded by
/// the least and greatest value this server accepts (its caps are configuration), so that a
/// value the document allows is a value the server takes.
pub fn document(caps: &LimitCaps) -> utoipa::openapi::OpenApi {
    let mut doc = openapi();
    let limits = doc
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("Limits"));
    if let Some(RefOr::T(Schema::Object(limits))) = limits {
        for bound in TenantQuota::default().bounds(caps) {
            if let Some(RefOr::T(Schema::Object(field))) = limits.properties.get_mut(bound.field) {
                field.minimum = Some(number(bound.min));
                field.maximum = Some(number(bound.max));
            }
        }
        // `PATCH` takes the same fields, each also as null (back to its default).
        let mut patch = limits.clone();
        patch.description = Some(
            "Some of a tenant's limits: each field as in `Limits`, or null to take it back to its default."
                .into(),
        );
        for property in patch.properties.values_mut() {
            let field = std::mem::replace(property, RefOr::T(Schema::default()));
            *property = RefOr::T(Schema::OneOf(
                OneOfBuilder::new()
                    .item(field)
                    .item(ObjectBuilder::new().schema_type(Type::Null))
                    .build(),
            ));
        }
        if let Some(components) = doc.components.as_mut() {
            components
                .schemas
                .insert("LimitsPatch".into(), RefOr::T(Schema::Object(patch)));
        }
    }
    doc
}

fn number(value: u64) -> Number {
    usize::try_from(value).map_or(Number::Float(value as f64), Number::UInt)
}

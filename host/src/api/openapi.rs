//! The OpenAPI document, generated from the handlers' `#[utoipa::path]` annotations.

use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use super::{auth, connections, connectors, error, health, invoke, tenants};

#[derive(OpenApi)]
#[openapi(
    info(title = "Airlock", description = "Multi-tenant connector runtime. Errors are RFC 9457 problem documents."),
    paths(
        tenants::create, tenants::list, tenants::show, tenants::show_limits, tenants::put_limits,
        connectors::upload, connectors::list, connectors::show, connectors::deprecate, connectors::undeprecate,
        connections::create, connections::list, connections::show, connections::remove, connections::test,
        invoke::invoke, invoke::usage,
        health::healthz, health::readyz, health::openapi_json,
    ),
    components(schemas(
        error::Problem, auth::Role,
        tenants::CreateTenant, tenants::Tenant, tenants::Limits,
        connectors::ConnectorVersion, connectors::ConnectorSummary, connectors::VersionSummary,
        connections::CreateConnection, connections::Connection,
        invoke::InvokeBody, invoke::InvokeResponse, invoke::ConnectorRef, invoke::Usage,
        health::Health,
    )),
    modifiers(&BearerAuth),
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

pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

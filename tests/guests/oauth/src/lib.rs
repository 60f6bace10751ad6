//! An OAuth2 connector for the host's token refresh tests: the host refreshes the access token
//! against `auth.example.test` and attaches it to requests for `api.example.test`; this code
//! never sees either token.

use airlock_sdk::prelude::*;
use serde_json::Value;

pub struct OAuth;

impl Connector for OAuth {
    fn definition() -> Definition {
        Definition::new("oauth", env!("CARGO_PKG_VERSION"))
            .description("Who am I, over an OAuth2 bearer token")
            // The host sends these scopes with every refresh.
            .auth(
                Auth::oauth2("https://auth.example.test/token")
                    .scope("profile")
                    .scope("email:read"),
            )
            .host("api.example.test")
            .action(
                Action::new("whoami", whoami)
                    .description("GET https://api.example.test/me and return its JSON"),
            )
    }
}

airlock_sdk::export_connector!(OAuth);

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WhoamiInput {}

fn whoami(cx: &Context, _input: WhoamiInput) -> Result<Value, ConnectorError> {
    cx.http()
        .get("https://api.example.test/me")
        .send()?
        .error_for_status()?
        .json()
}

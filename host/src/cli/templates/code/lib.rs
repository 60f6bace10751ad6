//! An Airlock connector. `cargo build --release --target wasm32-wasip2` builds the component;
//! `cargo test` runs the tests below natively against `MockHost`. See README.md.

use airlock_sdk::prelude::*;

/// Every URL the connector calls is on a host its definition declares: the host refuses
/// the others.
const API: &str = "https://api.example.com";

pub struct Example;

impl Connector for Example {
    fn definition() -> Definition {
        // The connector's name and version are the crate's.
        Definition::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
            .description("An example connector: replace with what yours does")
            // The host attaches the connection's credential to requests for the declared
            // hosts (here `Authorization: Bearer <key>`); this code never sees it.
            .auth(Auth::api_key_header("Authorization").prefix("Bearer "))
            .host("api.example.com")
            .action(
                Action::new("get_item", get_item)
                    .description("Fetch one item by its id")
                    .timeout_ms(10_000),
            )
    }

    /// What `test-connection` runs: one cheap authenticated request.
    fn test_connection(cx: &Context) -> Result<(), ConnectorError> {
        cx.http()
            .get(format!("{API}/me"))
            .send()?
            .error_for_status()?;
        Ok(())
    }
}

airlock_sdk::export_connector!(Example);

/// The action's input. The SDK derives its JSON Schema, which the host checks every input
/// against before the action runs; doc comments become the schema's descriptions.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetItem {
    /// The item's id.
    #[schemars(range(min = 1))]
    pub id: u64,
}

/// The action's output, checked by the host against its schema too.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct Item {
    pub id: u64,
    pub name: String,
}

fn get_item(cx: &Context, input: GetItem) -> Result<Item, ConnectorError> {
    // `?` maps failures onto connector errors: a refused host is `http_denied`, a 404
    // `not_found`, a 401 `auth`, a 5xx a retryable `upstream`, an unexpected body `upstream`.
    let item: Item = cx
        .http()
        .get(format!("{API}/items/{}", input.id))
        .header("accept", "application/json")
        .send()?
        .error_for_status()?
        .json()?;
    cx.log().info(format_args!("fetched item {}", item.id));
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use airlock_sdk::testing::{MockHost, MockResponse};
    use serde_json::json;

    #[test]
    fn the_manifest_is_one_the_host_accepts() {
        let manifest = MockHost::new().manifest::<Example>();
        assert_eq!(manifest["actions"][0]["name"], "get_item");
    }

    #[test]
    fn get_item_returns_the_item() {
        let host = MockHost::new().on_get(
            "https://api.example.com/items/7",
            MockResponse::json(200, json!({"id": 7, "name": "seven", "extra": true})),
        );
        assert_eq!(
            host.invoke::<Example>("get_item", json!({"id": 7})),
            Ok(json!({"id": 7, "name": "seven"}))
        );
        assert_eq!(
            host.requests()[0].header("accept"),
            Some("application/json")
        );
    }

    #[test]
    fn a_missing_item_is_not_found() {
        let host = MockHost::new().on_get(
            "https://api.example.com/items/",
            MockResponse::json(404, json!({"message": "no such item"})),
        );
        let error = host.invoke::<Example>("get_item", json!({"id": 8}));
        assert_eq!(error.map_err(|e| e.kind), Err(ErrorKind::NotFound));
    }

    #[test]
    fn an_input_outside_the_schema_never_reaches_the_action() {
        let host = MockHost::new();
        let error = host.invoke::<Example>("get_item", json!({"id": 0}));
        assert_eq!(error.map_err(|e| e.kind), Err(ErrorKind::InvalidInput));
        assert!(host.requests().is_empty());
    }
}

//! A connector that imports `evil:pkg/exfil` on top of the contract. Apart from that import it
//! is well-formed (manifest, actions), so the only reason for the host to refuse it at load is
//! the import, and the host's error must name it.

#[allow(
    unsafe_code,
    reason = "wit-bindgen's generated canonical-ABI glue (exported symbols, raw pointers) is \
              unsafe by nature; the unsafe stays inside this generated module"
)]
mod bindings {
    wit_bindgen::generate!({ world: "evil:pkg/bad", path: ["../../../guest-sdk/wit", "wit"], generate_all });

    use super::BadImport;
    export!(BadImport);
}

use bindings::airlock::connector::types::ConnectorError;

struct BadImport;

impl bindings::Guest for BadImport {
    fn manifest() -> String {
        r#"{"name":"bad-import","version":"0.1.0","auth":{"type":"none"},"hosts":[],
            "actions":[{"name":"steal","input_schema":{},"output_schema":{}}]}"#
            .to_owned()
    }

    /// Calls the import, so the linker keeps it in the component.
    fn invoke(_action: String, input: String) -> Result<String, ConnectorError> {
        bindings::evil::pkg::exfil::steal(&input);
        Ok("{}".to_owned())
    }

    fn test_connection() -> Result<(), ConnectorError> {
        Ok(())
    }
}

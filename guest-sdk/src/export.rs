//! The three exports (`manifest`, `invoke`, `test-connection`) as plain functions over a
//! `Host`, and `export_connector!`, which wires a `Connector` to the component's exports.

use std::rc::Rc;

use crate::Connector;
use crate::context::Context;
use crate::error::ConnectorError;
use crate::host::Host;

pub(crate) fn manifest<C: Connector>() -> String {
    C::definition().manifest().to_string()
}

pub(crate) fn invoke<C: Connector>(
    host: Rc<dyn Host>,
    action: &str,
    input: &str,
) -> Result<String, ConnectorError> {
    let definition = C::definition();
    if let Some(found) = definition.find_action(action) {
        return found.call(&Context::new(host), input);
    }
    if let Some(fallback) = definition.fallback_handler() {
        return fallback(&Context::new(host), action, input);
    }
    // The host checks action names first; this is the answer for a host that did not.
    Err(ConnectorError::invalid_input(format_args!(
        "unknown action {action:?}"
    )))
}

pub(crate) fn test_connection<C: Connector>(host: Rc<dyn Host>) -> Result<(), ConnectorError> {
    C::test_connection(&Context::new(host))
}

/// Makes `$connector` (a type implementing [`Connector`](crate::Connector)) the component's
/// implementation of the `connector` world. Use it once per connector crate.
///
/// On wasm32 it expands to the wit-bindgen export glue; natively it only checks the type, so
/// the same crate builds for `cargo test`.
#[macro_export]
macro_rules! export_connector {
    ($connector:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            struct AirlockExports;

            impl $crate::__private::bindings::Guest for AirlockExports {
                fn manifest() -> ::std::string::String {
                    $crate::__private::guest_manifest::<$connector>()
                }

                fn invoke(
                    action: ::std::string::String,
                    input: ::std::string::String,
                ) -> ::std::result::Result<
                    ::std::string::String,
                    $crate::__private::bindings::ConnectorError,
                > {
                    $crate::__private::guest_invoke::<$connector>(&action, &input)
                }

                fn test_connection()
                -> ::std::result::Result<(), $crate::__private::bindings::ConnectorError> {
                    $crate::__private::guest_test_connection::<$connector>()
                }
            }

            $crate::__private::bindings::export!(
                AirlockExports with_types_in $crate::__private::bindings
            );
        };

        const _: fn() = $crate::__private::assert_connector::<$connector>;
    };
}

//! Loading a component: check it is a component, check its imports against the contract,
//! compile it (or take the precompiled artifact), link it once into an `InstancePre`, and read
//! and validate its manifest.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::contract::{CONTRACT_PREFIX, ConnectorPre};
use super::declarative::Plans;
use super::error::LoadError;
use super::guest_state::GuestState;
use airlock_model::ValidatedManifest;

/// A component ready to be invoked: compiled, linked, and with a validated manifest.
pub struct LoadedComponent {
    pub(crate) digest: String,
    pub(crate) manifest: ValidatedManifest,
    pub(crate) pre: ConnectorPre<GuestState>,
    /// A declarative connector's plans (the component is then the shared runner).
    pub(crate) plans: Option<Arc<Plans>>,
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("digest", &self.digest)
            .field("manifest", &self.manifest)
            .finish_non_exhaustive()
    }
}

impl LoadedComponent {
    /// `sha256:<hex>` of the component's bytes: its identity everywhere in Airlock.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    pub fn manifest(&self) -> &ValidatedManifest {
        &self.manifest
    }

    /// Whether this is a declarative definition on the runner, not a component of its own.
    pub fn is_declarative(&self) -> bool {
        self.plans.is_some()
    }
}

pub type SharedComponent = Arc<LoadedComponent>;

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// WASI p2 packages the host links (with an empty context). Anything else outside our
/// contract is refused before linking, with the import named in the error.
const LINKED_WASI_PACKAGES: &[&str] = &[
    "wasi:cli/",
    "wasi:clocks/",
    "wasi:filesystem/",
    "wasi:io/",
    "wasi:random/",
    "wasi:sockets/",
];

/// Rejects core modules and other non-components up front with a clear message; wasmtime's
/// own error for a core module is a parser message about an unexpected layer.
pub(crate) fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    match bytes.get(..8) {
        Some(header) if header.starts_with(MAGIC) => match header[6..8] {
            [1, 0] => Ok(()),
            [0, 0] => Err(LoadError::NotAComponent(
                "this is a core WebAssembly module; build for wasm32-wasip2 to get a component"
                    .into(),
            )),
            _ => Err(LoadError::NotAComponent(
                "unknown WebAssembly binary layer".into(),
            )),
        },
        _ => Err(LoadError::NotAComponent(
            "missing the \\0asm magic number".into(),
        )),
    }
}

pub(crate) fn check_imports(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    for (name, _) in component.component_type().imports(engine) {
        let allowed = name.starts_with(CONTRACT_PREFIX)
            || (LINKED_WASI_PACKAGES.iter().any(|p| name.starts_with(p)) && name.contains("@0.2."));
        if !allowed {
            return Err(LoadError::ForbiddenImport(name.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_check_tells_modules_from_components() {
        assert!(check_header(b"\0asm\x0d\x00\x01\x00rest").is_ok());
        let module = check_header(b"\0asm\x01\x00\x00\x00").expect_err("core module");
        assert!(module.to_string().contains("core WebAssembly module"));
        assert!(matches!(
            check_header(b"PK\x03\x04"),
            Err(LoadError::NotAComponent(_))
        ));
        assert!(matches!(
            check_header(b""),
            Err(LoadError::NotAComponent(_))
        ));
    }

    #[test]
    fn digest_is_prefixed_sha256() {
        assert_eq!(
            digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}

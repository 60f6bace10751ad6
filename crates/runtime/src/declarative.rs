//! Declarative connectors: a definition (JSON) loaded onto the runner component the runtime
//! ships. The definition's derived manifest is what the host checks calls against; the runner
//! gets the called action's plan through `invocation.declarative-plan`.

use std::collections::HashMap;
use std::sync::Arc;

use super::Runtime;
use super::component::{self, LoadedComponent, SharedComponent};
use super::error::LoadError;
use airlock_declarative::plan::TestPlan;
use airlock_model::ValidatedManifest;

include!(concat!(env!("OUT_DIR"), "/runner.rs"));

/// How large an uploaded definition may be (a component's cap is the upload limit).
pub const MAX_DEFINITION_BYTES: usize = 4 * 1024 * 1024;

/// Each action's plan and the test call's, as the JSON text handed to the runner.
#[derive(Debug)]
pub(crate) struct Plans {
    pub(crate) actions: HashMap<String, Arc<str>>,
    pub(crate) test: Option<Arc<str>>,
}

/// Whether `bytes` are a declarative definition (JSON) rather than a component: the first
/// byte that is not whitespace opens an object. A component starts with `\0asm`.
pub fn is_definition(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

fn definition_error(reason: impl Into<String>) -> LoadError {
    LoadError::Definition(reason.into())
}

impl Runtime {
    /// Checks a definition, derives its manifest and plans, and puts them on the runner.
    pub(crate) async fn load_definition(&self, bytes: &[u8]) -> Result<SharedComponent, LoadError> {
        if bytes.len() > MAX_DEFINITION_BYTES {
            return Err(definition_error(format!(
                "the definition is {} bytes, more than the {MAX_DEFINITION_BYTES} allowed",
                bytes.len()
            )));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|_| definition_error("the definition is not UTF-8 text"))?;
        let compiled =
            airlock_declarative::compile_json(text).map_err(|e| definition_error(e.to_string()))?;
        let manifest = ValidatedManifest::parse(&compiled.manifest.to_string())?;
        let mut actions = HashMap::with_capacity(compiled.plans.len());
        for (name, plan) in &compiled.plans {
            actions.insert(name.clone(), serialize(plan)?);
        }
        let test = match &compiled.definition.test {
            Some(test) => {
                // Checked now, as every input is before a run: a test call that cannot pass
                // its own action's schema would only fail at the first test-connection.
                if let Some(action) = manifest.action(&test.action)
                    && let Err(violation) = action.check_input(&test.input)
                {
                    return Err(definition_error(format!(
                        "`test.input`{}: {}",
                        violation.pointer, violation.message
                    )));
                }
                let plan = compiled.plans.get(&test.action).cloned().ok_or_else(|| {
                    definition_error(format!("test.action `{}` is not an action", test.action))
                })?;
                Some(serialize(&TestPlan {
                    plan,
                    input: test.input.clone(),
                })?)
            }
            None => None,
        };
        let runner = Box::pin(self.load(RUNNER_WASM)).await?;
        Ok(Arc::new(LoadedComponent {
            digest: component::digest(bytes),
            manifest,
            pre: runner.pre.clone(),
            plans: Some(Arc::new(Plans { actions, test })),
        }))
    }
}

fn serialize<T: serde::Serialize>(value: &T) -> Result<Arc<str>, LoadError> {
    serde_json::to_string(value)
        .map(Arc::from)
        .map_err(|e| definition_error(format!("cannot serialize a plan: {e}")))
}

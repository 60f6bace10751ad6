//! The checks a definition passes when saved, and what the host derives from it.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::format::Definition;
use crate::plan::Plan;

/// A definition that passed every check: the manifest the host registers for it, and each
/// action's plan (as JSON, ready to hand to the runner).
#[derive(Debug, Clone)]
pub struct Compiled {
    pub definition: Definition,
    pub manifest: Value,
    pub plans: BTreeMap<String, Plan>,
}

/// Why a definition was refused: the field (a path such as `actions[2].endpoint`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefinitionError {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for DefinitionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for DefinitionError {}

pub fn compile(definition: Definition) -> Result<Compiled, DefinitionError> {
    let _ = definition;
    todo!("compile")
}

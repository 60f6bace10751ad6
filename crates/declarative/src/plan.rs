//! [`Plan`]: what the runner needs for one action, derived from the definition by
//! [`crate::compile`] and handed to the runner component by the host for each invocation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::format::{ActionDef, ErrorRule};

/// One action with the connector-wide parts it uses. Sent as JSON: the runner parses only
/// the action it runs, not the whole definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The definition's `base_url` template.
    pub base_url: String,
    /// The declared host patterns, `{config.NAME}` not yet expanded: a next-page link must
    /// stay on them.
    pub hosts: Vec<String>,
    /// The connector's headers overlaid with the action's (same name, case-insensitive: the
    /// action's).
    pub headers: BTreeMap<String, String>,
    /// The action's error rules, then the connector's.
    pub errors: Vec<ErrorRule>,
    pub action: ActionDef,
}

/// `test-connection`'s plan: the test call's action and its input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestPlan {
    pub plan: Plan,
    pub input: serde_json::Value,
}

//! A workflow's definition: an ordered list of steps, each one action of one connector, with
//! an input built by the host from the trigger payload and earlier steps' outputs.
//!
//! Input mapping: a step's `input` is a JSON template. Any object of exactly one member
//! `{"$from": "<pointer>"}` is replaced by the value at that RFC 6901 JSON Pointer into the
//! run's context, whose root has `trigger` (the run's input) and `steps` (each finished
//! step's output by step id): `/trigger/repo`, `/steps/fetch/items/0/id`; with a second
//! member `"default": v`, `v` stands in when nothing is there (a skipped step's output, an
//! optional field). An object of exactly one member `{"$literal": v}` stands for `v` as
//! written (to pass an object that itself has a `$from` member). Everything else is copied
//! as it is.
//!
//! A step with a `when` predicate ([`crate::predicate`]) runs only when it holds; otherwise
//! it is skipped (journaled as such, no output), and a later reference into it without a
//! `default` fails the step that makes it ([`MappingError::skipped_step`]).
//!
//! Checked at save ([`WorkflowSpec::validate`]): step ids, that every pointer names the
//! trigger or an *earlier* step, and that an object with a `$from` or `$literal` member has no
//! other member (`{"$from": "/trigger/a", "x": 1}` would otherwise be copied as it is, its
//! `$from` silently unused). Checked at run time ([`ActionStep::build_input`]): the
//! pointed-at value exists.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::manifest::RetryPolicy;
use crate::predicate::{Context, Predicate};

/// Steps in one workflow, counting those inside every `switch` branch and `for_each` body
/// (and the `switch` and `for_each` steps themselves).
pub const MAX_STEPS: usize = 100;
/// Lists nested in lists: a workflow's steps are depth 1, a branch's steps depth 2, and so on.
pub const MAX_NESTING: usize = 4;
/// Cases of one `switch`.
pub const MAX_CASES: usize = 16;
/// Parallel iterations one `for_each` may ask for (the tenant's `max_concurrent_runs`
/// bounds it further when it runs).
pub const MAX_CONCURRENCY: u32 = 64;
/// The most items a `for_each` may ask for with `max_items` (the tenant's `max_iterations`
/// bounds it further when it runs).
pub const MAX_ITEMS_CAP: u32 = 10_000;
/// The longest `sleep`.
pub const MAX_SLEEP_MS: u64 = 30 * 24 * 60 * 60 * 1000;
/// `matches` patterns in all of a workflow's conditions: a parsed version is cached by the
/// workers, so what its compiled patterns hold is bounded per version.
pub const MAX_WORKFLOW_PATTERNS: usize = 16;
/// Attempts of one step, whatever the manifest or the step asks for.
pub const MAX_ATTEMPTS_CAP: u32 = 10;
/// The longest wait between two attempts.
pub const MAX_BACKOFF_CAP_MS: u64 = 60 * 60 * 1000;
/// The policy of a step that names none and whose action's manifest declares none: one
/// attempt. The connector guide's contract: a connector leaves `retry` off for actions that
/// are not safe to repeat (creating things), so the host never repeats them on its own; a
/// workflow that knows better says so with the step's `retry`.
pub const NO_RETRY: RetryPolicy = RetryPolicy {
    max_attempts: 1,
    initial_backoff_ms: 1_000,
    max_backoff_ms: 60_000,
};

pub(crate) const FROM: &str = "$from";
const DEFAULT: &str = "default";

/// `{"$from": "<pointer>"}`, or with a `default` beside it.
fn is_reference(object: &Map<String, Value>) -> bool {
    object.contains_key(FROM)
        && (object.len() == 1 || (object.len() == 2 && object.contains_key(DEFAULT)))
}
const LITERAL: &str = "$literal";

/// What a workflow version runs. Immutable once saved: a change is a new version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    pub steps: Vec<StepSpec>,
    /// Steps run once when a run of this workflow goes dead, in a run of their own whose
    /// trigger is `{"run_id", "error", "failed_step", "trigger"}`. A handler's own death
    /// runs no handler.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<StepSpec>,
}

/// One step: an id, an optional condition, and what it does.
///
/// In JSON a step is one object: an action step has `connector` and `action`; the other
/// kinds have one member naming them (`switch`, `for_each`, `sleep`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawStep", into = "RawStep")]
pub struct StepSpec {
    /// Unique in its list: 1-64 of `a-z`, `0-9`, `_`, `-`, starting with a letter. A step
    /// inside a branch or a `for_each` body is named by its path, `route.paid.notify`.
    pub id: String,
    /// Run the step only when this holds (over the trigger and earlier steps); otherwise
    /// it is skipped.
    pub when: Option<Predicate>,
    pub kind: StepKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StepKind {
    Action(ActionStep),
    Switch(SwitchStep),
    ForEach(ForEachStep),
    Sleep(SleepStep),
}

/// An action of a connector, with its input mapping and retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct ActionStep {
    pub connector: String,
    /// A pinned connector version; absent: the newest not deprecated when the step runs.
    pub version: Option<String>,
    pub action: String,
    /// The connection (id) the step runs with, for connectors that need a credential.
    pub connection: Option<String>,
    /// The input template (see the module documentation). Absent: `{}`.
    pub input: Value,
    /// Overrides the action's manifest `retry` (absent in both: [`NO_RETRY`], one attempt);
    /// clamped by [`MAX_ATTEMPTS_CAP`] and [`MAX_BACKOFF_CAP_MS`].
    pub retry: Option<RetryPolicy>,
    /// The step's wall-clock budget; clamped by the tenant's `timeout_ms`.
    pub timeout_ms: Option<u64>,
}

/// One of several step lists, chosen by the first case whose `when` holds, else `default`.
/// Journaled as the step's output `{"branch": "<case id>"}` (`"default"` for the default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchStep {
    pub cases: Vec<Case>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default: Vec<StepSpec>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// Unique in its switch, not `default`; the same characters as a step id.
    pub id: String,
    pub when: Predicate,
    #[serde(default)]
    pub steps: Vec<StepSpec>,
}

/// A body of action steps run once per element of an array, `concurrency` at a time. Each
/// body step reads the element at `/item`; the step's output is the array of each
/// iteration's output (its last body step's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForEachStep {
    /// A template (usually `{"$from": "<pointer>"}`) that must build an array.
    pub items: Value,
    /// More items than this fails the step (`too_many_items`); absent: the tenant's
    /// `max_iterations`, which also bounds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_items: Option<u32>,
    /// Iterations at once; absent: 1. Bounded by the tenant's `max_concurrent_runs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    pub steps: Vec<StepSpec>,
}

/// A wait that holds no worker: the run goes back to the queue until it is over.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepStep {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// A template (usually `{"$from": "<pointer>"}`) that builds an RFC 3339 instant or
    /// milliseconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Value>,
}

/// A step as JSON holds it: every kind's members, one kind chosen.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    when: Option<Predicate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    connector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    connection: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    input: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    switch: Option<SwitchStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    for_each: Option<ForEachStep>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sleep: Option<SleepStep>,
}

impl TryFrom<RawStep> for StepSpec {
    type Error = String;

    fn try_from(raw: RawStep) -> Result<Self, String> {
        let id = raw.id;
        let action_members = [
            ("connector", raw.connector.is_some()),
            ("version", raw.version.is_some()),
            ("action", raw.action.is_some()),
            ("connection", raw.connection.is_some()),
            ("input", raw.input.is_some()),
            ("retry", raw.retry.is_some()),
            ("timeout_ms", raw.timeout_ms.is_some()),
        ];
        let kinds = [
            ("switch", raw.switch.is_some()),
            ("for_each", raw.for_each.is_some()),
            ("sleep", raw.sleep.is_some()),
        ];
        let named: Vec<&str> = kinds.iter().filter(|k| k.1).map(|k| k.0).collect();
        let kind = match (named.as_slice(), raw.switch, raw.for_each, raw.sleep) {
            ([], ..) => match (raw.connector, raw.action) {
                (Some(connector), Some(action)) => StepKind::Action(ActionStep {
                    connector,
                    version: raw.version,
                    action,
                    connection: raw.connection,
                    input: raw.input.unwrap_or_else(empty_object),
                    retry: raw.retry,
                    timeout_ms: raw.timeout_ms,
                }),
                _ => {
                    return Err(format!(
                        "step `{id}`: a step is an action (`connector` and `action`), a `switch`, a `for_each` or a `sleep`"
                    ));
                }
            },
            ([kind], switch, for_each, sleep) => {
                if let Some((member, _)) = action_members.iter().find(|m| m.1) {
                    return Err(format!(
                        "step `{id}`: a `{kind}` step has no `{member}` (that is an action step's)"
                    ));
                }
                match (switch, for_each, sleep) {
                    (Some(switch), ..) => StepKind::Switch(switch),
                    (_, Some(for_each), _) => StepKind::ForEach(for_each),
                    (.., Some(sleep)) => StepKind::Sleep(sleep),
                    _ => return Err(format!("step `{id}`: no kind")),
                }
            }
            (many, ..) => {
                return Err(format!(
                    "step `{id}`: a step is one kind, but it has {}",
                    many.join(" and ")
                ));
            }
        };
        Ok(StepSpec {
            id,
            when: raw.when,
            kind,
        })
    }
}

impl From<StepSpec> for RawStep {
    fn from(step: StepSpec) -> Self {
        let mut raw = RawStep {
            id: step.id,
            when: step.when,
            connector: None,
            version: None,
            action: None,
            connection: None,
            input: None,
            retry: None,
            timeout_ms: None,
            switch: None,
            for_each: None,
            sleep: None,
        };
        match step.kind {
            StepKind::Action(action) => {
                raw.connector = Some(action.connector);
                raw.version = action.version;
                raw.action = Some(action.action);
                raw.connection = action.connection;
                raw.input = Some(action.input);
                raw.retry = action.retry;
                raw.timeout_ms = action.timeout_ms;
            }
            StepKind::Switch(switch) => raw.switch = Some(switch),
            StepKind::ForEach(for_each) => raw.for_each = Some(for_each),
            StepKind::Sleep(sleep) => raw.sleep = Some(sleep),
        }
        raw
    }
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

/// Why a definition was refused at save. Names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct WorkflowError {
    pub field: String,
    pub reason: String,
}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> WorkflowError {
    WorkflowError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Why a step's input could not be built at run time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", match skipped_step {
    Some(step) => format!("input mapping: `{pointer}` reads step `{step}`, which was skipped or in a branch not taken (give the reference a `default`)"),
    None => format!("input mapping: nothing at `{pointer}`"),
})]
pub struct MappingError {
    pub pointer: String,
    /// The pointer reads a step that did not run (its `when` did not hold, or its branch
    /// was not taken).
    pub skipped_step: Option<String>,
}

/// What the checks of one list know: the ids a reference may name, the place of the list.
struct Scope<'a> {
    /// Full ids of the steps that ran (or may have) before, and the trigger.
    earlier: BTreeSet<String>,
    /// Inside a `for_each` body: `/item` may be read.
    in_body: bool,
    /// `steps[2].switch.cases[0].steps` and the like: where refusals point.
    path: String,
    /// `route.paid.`: what this list's step ids are prefixed with.
    prefix: String,
    depth: usize,
    counted: &'a mut usize,
}

impl WorkflowSpec {
    /// The structural checks that need no database: step counts, ids and nesting, pointers
    /// that name only the trigger or earlier steps, retry, timeout, sleep and iteration
    /// values.
    pub fn validate(&self) -> Result<(), WorkflowError> {
        if self.steps.is_empty() {
            return Err(refuse("steps", "a workflow needs at least one step"));
        }
        let patterns = self.patterns();
        if patterns > MAX_WORKFLOW_PATTERNS {
            return Err(refuse(
                "steps",
                format!(
                    "the conditions of a workflow have at most {MAX_WORKFLOW_PATTERNS} `matches` in all, got {patterns}"
                ),
            ));
        }
        let mut counted = 0;
        let mut scope = Scope {
            earlier: BTreeSet::new(),
            in_body: false,
            path: "steps".into(),
            prefix: String::new(),
            depth: 1,
            counted: &mut counted,
        };
        check_list(&self.steps, &mut scope)?;
        // The handler's steps read their own trigger (the dead run's facts) and each other.
        let mut handler = Scope {
            earlier: BTreeSet::new(),
            in_body: false,
            path: "on_failure".into(),
            prefix: String::new(),
            depth: 1,
            counted: &mut counted,
        };
        check_list(&self.on_failure, &mut handler)?;
        Ok(())
    }

    /// Every `matches` pattern of every condition, nested ones included.
    fn patterns(&self) -> usize {
        fn of(steps: &[StepSpec]) -> usize {
            steps
                .iter()
                .map(|step| {
                    let own = step.when.as_ref().map_or(0, Predicate::patterns);
                    own + match &step.kind {
                        StepKind::Switch(switch) => {
                            switch
                                .cases
                                .iter()
                                .map(|c| c.when.patterns() + of(&c.steps))
                                .sum::<usize>()
                                + of(&switch.default)
                        }
                        StepKind::ForEach(each) => of(&each.steps),
                        _ => 0,
                    }
                })
                .sum()
        }
        of(&self.steps) + of(&self.on_failure)
    }

    /// Every action step with the field path it is at (`steps[1].switch.cases[0].steps[0]`),
    /// nested ones included.
    pub fn actions(&self) -> Vec<(String, &ActionStep)> {
        fn walk<'a>(steps: &'a [StepSpec], path: &str, found: &mut Vec<(String, &'a ActionStep)>) {
            for (i, step) in steps.iter().enumerate() {
                let here = format!("{path}[{i}]");
                match &step.kind {
                    StepKind::Action(action) => found.push((here, action)),
                    StepKind::Switch(switch) => {
                        for (c, case) in switch.cases.iter().enumerate() {
                            walk(
                                &case.steps,
                                &format!("{here}.switch.cases[{c}].steps"),
                                found,
                            );
                        }
                        walk(&switch.default, &format!("{here}.switch.default"), found);
                    }
                    StepKind::ForEach(each) => {
                        walk(&each.steps, &format!("{here}.for_each.steps"), found);
                    }
                    StepKind::Sleep(_) => {}
                }
            }
        }
        let mut found = Vec::new();
        walk(&self.steps, "steps", &mut found);
        walk(&self.on_failure, "on_failure", &mut found);
        found
    }
}

fn check_list(steps: &[StepSpec], scope: &mut Scope<'_>) -> Result<(), WorkflowError> {
    if scope.depth > MAX_NESTING {
        return Err(refuse(
            scope.path.clone(),
            format!("step lists nest at most {MAX_NESTING} deep"),
        ));
    }
    let mut ids = BTreeSet::new();
    let list = scope.path.clone();
    for (i, step) in steps.iter().enumerate() {
        let at = |field: &str| format!("{list}[{i}].{field}");
        *scope.counted += 1;
        if *scope.counted > MAX_STEPS {
            return Err(refuse(
                "steps",
                format!(
                    "at most {MAX_STEPS} steps in a workflow, counting those in branches and for_each bodies"
                ),
            ));
        }
        check_step_id(&step.id).map_err(|reason| refuse(at("id"), reason))?;
        if !ids.insert(step.id.as_str()) {
            return Err(refuse(
                at("id"),
                format!("step id `{}` is used twice", step.id),
            ));
        }
        let full = format!("{}{}", scope.prefix, step.id);
        let references =
            |template: &Value, field: &str, scope: &Scope<'_>| -> Result<(), WorkflowError> {
                let mut pointers = Vec::new();
                collect_pointers(template, "", &mut pointers).map_err(|(path, reason)| {
                    refuse(
                        format!("{}{path}", at(field)),
                        format!("step `{full}`: {reason}"),
                    )
                })?;
                for (path, pointer) in pointers {
                    check_reference(pointer, &scope.earlier, scope.in_body).map_err(|reason| {
                        refuse(
                            format!("{}{path}", at(field)),
                            format!("step `{full}`: {reason}"),
                        )
                    })?;
                }
                Ok(())
            };
        if let Some(when) = &step.when {
            for pointer in when.pointers() {
                check_reference(pointer, &scope.earlier, scope.in_body)
                    .map_err(|reason| refuse(at("when"), format!("step `{full}`: {reason}")))?;
            }
        }
        match &step.kind {
            StepKind::Action(action) => {
                check_action(action, &at)?;
                references(&action.input, "input", scope)?;
            }
            StepKind::Sleep(sleep) => {
                if scope.in_body {
                    return Err(refuse(
                        at("sleep"),
                        "a for_each body holds action steps only",
                    ));
                }
                match (sleep.ms, &sleep.until) {
                    (Some(ms), None) if (1..=MAX_SLEEP_MS).contains(&ms) => {}
                    (Some(_), None) => {
                        return Err(refuse(
                            at("sleep.ms"),
                            format!("must be 1-{MAX_SLEEP_MS} (30 days)"),
                        ));
                    }
                    (None, Some(until)) => references(until, "sleep.until", scope)?,
                    _ => {
                        return Err(refuse(
                            at("sleep"),
                            "a sleep has exactly one of `ms` and `until`",
                        ));
                    }
                }
            }
            StepKind::Switch(switch) => {
                if scope.in_body {
                    return Err(refuse(
                        at("switch"),
                        "a for_each body holds action steps only",
                    ));
                }
                if switch.cases.is_empty() || switch.cases.len() > MAX_CASES {
                    return Err(refuse(
                        at("switch.cases"),
                        format!("a switch has 1-{MAX_CASES} cases"),
                    ));
                }
                let mut case_ids = BTreeSet::new();
                let mut inside = BTreeSet::new();
                for (c, case) in switch.cases.iter().enumerate() {
                    let field = at(&format!("switch.cases[{c}]"));
                    check_step_id(&case.id)
                        .map_err(|reason| refuse(format!("{field}.id"), reason))?;
                    if case.id == DEFAULT || !case_ids.insert(case.id.as_str()) {
                        return Err(refuse(
                            format!("{field}.id"),
                            format!("case id `{}` is `default` or used twice", case.id),
                        ));
                    }
                    for pointer in case.when.pointers() {
                        check_reference(pointer, &scope.earlier, scope.in_body).map_err(
                            |reason| {
                                refuse(format!("{field}.when"), format!("step `{full}`: {reason}"))
                            },
                        )?;
                    }
                    inside.extend(check_branch(
                        &case.steps,
                        scope,
                        format!("{field}.steps"),
                        format!("{full}.{}.", case.id),
                        &full,
                    )?);
                }
                inside.extend(check_branch(
                    &switch.default,
                    scope,
                    at("switch.default"),
                    format!("{full}.{DEFAULT}."),
                    &full,
                )?);
                // After the switch, a reference may name a step of any branch: one not
                // taken reads as skipped.
                scope.earlier.extend(inside);
            }
            StepKind::ForEach(each) => {
                if scope.in_body {
                    return Err(refuse(
                        at("for_each"),
                        "a for_each body holds action steps only",
                    ));
                }
                references(&each.items, "for_each.items", scope)?;
                if let Some(max) = each.max_items
                    && !(1..=MAX_ITEMS_CAP).contains(&max)
                {
                    return Err(refuse(
                        at("for_each.max_items"),
                        format!("must be 1-{MAX_ITEMS_CAP}"),
                    ));
                }
                if let Some(n) = each.concurrency
                    && !(1..=MAX_CONCURRENCY).contains(&n)
                {
                    return Err(refuse(
                        at("for_each.concurrency"),
                        format!("must be 1-{MAX_CONCURRENCY}"),
                    ));
                }
                if each.steps.is_empty() {
                    return Err(refuse(at("for_each.steps"), "a for_each body needs a step"));
                }
                let mut body = Scope {
                    earlier: scope.earlier.clone(),
                    in_body: true,
                    path: at("for_each.steps"),
                    prefix: format!("{full}."),
                    depth: scope.depth + 1,
                    counted: &mut *scope.counted,
                };
                check_list(&each.steps, &mut body)?;
            }
        }
        scope.earlier.insert(full);
    }
    Ok(())
}

/// Checks a branch's list; returns the full ids of its steps.
fn check_branch(
    steps: &[StepSpec],
    scope: &mut Scope<'_>,
    path: String,
    prefix: String,
    switch: &str,
) -> Result<BTreeSet<String>, WorkflowError> {
    let mut earlier = scope.earlier.clone();
    // Inside a branch the switch's decision has been journaled.
    earlier.insert(switch.to_owned());
    let before = earlier.clone();
    let mut branch = Scope {
        earlier,
        in_body: scope.in_body,
        path,
        prefix,
        depth: scope.depth + 1,
        counted: &mut *scope.counted,
    };
    check_list(steps, &mut branch)?;
    Ok(branch.earlier.difference(&before).cloned().collect())
}

fn check_action(action: &ActionStep, at: &dyn Fn(&str) -> String) -> Result<(), WorkflowError> {
    for (field, value) in [
        ("connector", Some(&action.connector)),
        ("action", Some(&action.action)),
        ("version", action.version.as_ref()),
        ("connection", action.connection.as_ref()),
    ] {
        if let Some(value) = value
            && (value.is_empty()
                || value.chars().count() > 200
                || !airlock_contract::names::is_clean(value))
        {
            return Err(refuse(
                at(field),
                "must be 1-200 characters without control, bidi or invisible characters",
            ));
        }
    }
    if let Some(retry) = &action.retry {
        if retry.max_attempts == 0 || retry.max_attempts > MAX_ATTEMPTS_CAP {
            return Err(refuse(
                at("retry.max_attempts"),
                format!("must be 1-{MAX_ATTEMPTS_CAP}"),
            ));
        }
        if retry.initial_backoff_ms > retry.max_backoff_ms {
            return Err(refuse(
                at("retry.initial_backoff_ms"),
                "must not exceed max_backoff_ms",
            ));
        }
    }
    if action.timeout_ms == Some(0) {
        return Err(refuse(at("timeout_ms"), "must be at least 1"));
    }
    Ok(())
}

impl ActionStep {
    /// The step's input: the template with every `$from` replaced from the context, every
    /// `$literal` unwrapped.
    pub fn build_input(&self, context: Context<'_>) -> Result<Value, MappingError> {
        build(&self.input, context)
    }

    /// The retry policy: the step's, else the action's (`declared`), else [`NO_RETRY`] (one
    /// attempt); clamped by the caps.
    pub fn retry_policy(&self, declared: Option<RetryPolicy>) -> RetryPolicy {
        let policy = self.retry.or(declared).unwrap_or(NO_RETRY);
        let max_backoff_ms = policy.max_backoff_ms.min(MAX_BACKOFF_CAP_MS);
        RetryPolicy {
            max_attempts: policy.max_attempts.clamp(1, MAX_ATTEMPTS_CAP),
            initial_backoff_ms: policy.initial_backoff_ms.min(max_backoff_ms),
            max_backoff_ms,
        }
    }
}

/// Builds any template (a `for_each`'s `items`, a `sleep`'s `until`) from the context.
pub fn build_template(template: &Value, context: Context<'_>) -> Result<Value, MappingError> {
    build(template, context)
}

/// Step ids appear in pointers (`/steps/<id>/...`) and idempotency keys, so they are kept
/// to characters that need no escaping in either.
fn check_step_id(id: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "step id `{id}` must be 1-64 of a-z, 0-9, `_`, `-`, starting with a letter"
        ))
    }
}

/// Every `$from` pointer in `template`, with the template path it was found at.
fn collect_pointers<'a>(
    template: &'a Value,
    path: &str,
    found: &mut Vec<(String, &'a str)>,
) -> Result<(), (String, String)> {
    match template {
        Value::Object(object) if is_reference(object) => match &object[FROM] {
            Value::String(pointer) => {
                found.push((path.to_owned(), pointer.as_str()));
                Ok(())
            }
            _ => Err((
                format!("{path}/$from"),
                "`$from` must be a JSON Pointer string".into(),
            )),
        },
        Value::Object(object) if object.len() == 1 && object.contains_key(LITERAL) => Ok(()),
        // A marker with company is neither a reference nor plain data: refused, so that a
        // typo or a misplaced key cannot turn a reference into a literal copy unnoticed.
        Value::Object(object) if object.contains_key(FROM) || object.contains_key(LITERAL) => {
            let marker = if object.contains_key(FROM) {
                FROM
            } else {
                LITERAL
            };
            let others: Vec<String> = object
                .keys()
                .filter(|key| {
                    key.as_str() != marker && !(marker == FROM && key.as_str() == DEFAULT)
                })
                .map(|key| format!("`{key}`"))
                .collect();
            let besides = if marker == FROM {
                " (besides an optional `default`)"
            } else {
                ""
            };
            Err((
                path.to_owned(),
                format!(
                    "`{marker}` must be the only member of its object{besides}, but it has {} beside it (to pass such an object as data, wrap it: {{\"$literal\": …}})",
                    others.join(", ")
                ),
            ))
        }
        Value::Object(object) => {
            for (key, value) in object {
                collect_pointers(value, &format!("{path}/{}", escape(key)), found)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, value) in items.iter().enumerate() {
                collect_pointers(value, &format!("{path}/{i}"), found)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A pointer must be RFC 6901 and start at the trigger, at an earlier step, or (inside a
/// `for_each` body) at the item.
fn check_reference(pointer: &str, earlier: &BTreeSet<String>, in_body: bool) -> Result<(), String> {
    let tokens = tokens(pointer).ok_or_else(|| {
        format!("`{pointer}` is not a JSON Pointer (RFC 6901: empty, or `/`-separated tokens with `~0`, `~1` escapes)")
    })?;
    match tokens.first().map(String::as_str) {
        Some("trigger") => Ok(()),
        Some("item") if in_body => Ok(()),
        Some("item") => Err(format!(
            "`{pointer}`: `/item` is read inside a for_each body only"
        )),
        Some("steps") => match tokens.get(1) {
            Some(id) if earlier.contains(id.as_str()) => Ok(()),
            Some(id) => Err(format!(
                "`{pointer}` names step `{id}`, which is not an earlier step"
            )),
            None => Err(format!("`{pointer}` must name a step: /steps/<id>/...")),
        },
        _ => Err(format!(
            "`{pointer}` must start with /trigger or /steps/<earlier step id>"
        )),
    }
}

/// The unescaped reference tokens of an RFC 6901 pointer; `None` if it is not one.
pub(crate) fn tokens(pointer: &str) -> Option<Vec<String>> {
    if pointer.is_empty() {
        return Some(Vec::new());
    }
    let rest = pointer.strip_prefix('/')?;
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c == '~' {
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return None,
                    }
                } else {
                    out.push(c);
                }
            }
            Some(out)
        })
        .collect()
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn build(template: &Value, context: Context<'_>) -> Result<Value, MappingError> {
    match template {
        Value::Object(object) if is_reference(object) => {
            let pointer = object[FROM].as_str().unwrap_or_default();
            if let Some(found) = resolve(pointer, context) {
                return Ok(found.clone());
            }
            if let Some(default) = object.get(DEFAULT) {
                return Ok(default.clone());
            }
            // Every step a reference may name ran before: one without an output was skipped
            // (or in a branch not taken).
            let skipped_step = tokens(pointer).and_then(|t| match t.as_slice() {
                [root, id, ..] if root == "steps" && context.step(id).is_none() => Some(id.clone()),
                _ => None,
            });
            Err(MappingError {
                pointer: pointer.to_owned(),
                skipped_step,
            })
        }
        Value::Object(object) if object.len() == 1 && object.contains_key(LITERAL) => {
            Ok(object[LITERAL].clone())
        }
        Value::Object(object) => object
            .iter()
            .map(|(key, value)| Ok((key.clone(), build(value, context)?)))
            .collect::<Result<Map<_, _>, _>>()
            .map(Value::Object),
        Value::Array(items) => items
            .iter()
            .map(|value| build(value, context))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        other => Ok(other.clone()),
    }
}

/// The value at `pointer` in the context, without building it.
pub(crate) fn resolve<'a>(pointer: &str, context: Context<'a>) -> Option<&'a Value> {
    resolve_tokens(&tokens(pointer)?, context)
}

/// [`resolve`] of a pointer already split into its tokens.
pub(crate) fn resolve_tokens<'a>(tokens: &[String], context: Context<'a>) -> Option<&'a Value> {
    let (root, rest) = match tokens.first().map(String::as_str) {
        Some("trigger") => (context.trigger, &tokens[1..]),
        Some("item") => (context.item?, &tokens[1..]),
        Some("steps") => (context.step(tokens.get(1)?)?, tokens.get(2..)?),
        _ => return None,
    };
    rest.iter().try_fold(root, |value, token| match value {
        Value::Object(object) => object.get(token),
        Value::Array(items) => {
            // RFC 6901: an array index is `0` or digits without a leading zero.
            if token == "0"
                || (!token.starts_with('0') && token.bytes().all(|b| b.is_ascii_digit()))
            {
                items.get(token.parse::<usize>().ok()?)
            } else {
                None
            }
        }
        _ => None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn spec(steps: Value) -> WorkflowSpec {
        serde_json::from_value(json!({ "steps": steps })).unwrap()
    }

    fn action(step: &StepSpec) -> &ActionStep {
        match &step.kind {
            StepKind::Action(action) => action,
            _ => panic!("an action step"),
        }
    }

    fn action_mut(step: &mut StepSpec) -> &mut ActionStep {
        match &mut step.kind {
            StepKind::Action(action) => action,
            _ => panic!("an action step"),
        }
    }

    fn step(id: &str, input: Value) -> Value {
        json!({"id": id, "connector": "c", "action": "a", "input": input})
    }

    #[test]
    fn builds_input_from_trigger_and_earlier_outputs() {
        let s = spec(json!([
            step("first", json!({})),
            step(
                "second",
                json!({
                    "repo": {"$from": "/trigger/repo"},
                    "id": {"$from": "/steps/first/items/1/id"},
                    "tilde": {"$from": "/trigger/a~1b~0c"},
                    "fixed": [1, {"$literal": {"$from": "/not/a/reference"}}],
                    "whole": {"$from": "/trigger"},
                })
            ),
        ]));
        s.validate().unwrap();
        let trigger = json!({"repo": "airlock", "a/b~c": true});
        let outputs =
            BTreeMap::from([("first".to_owned(), json!({"items": [{"id": 1}, {"id": 2}]}))]);
        let input = action(&s.steps[1])
            .build_input(Context::new(&trigger, &outputs))
            .unwrap();
        assert_eq!(
            input,
            json!({
                "repo": "airlock",
                "id": 2,
                "tilde": true,
                "fixed": [1, {"$from": "/not/a/reference"}],
                "whole": trigger,
            })
        );
    }

    #[test]
    fn a_missing_value_is_a_mapping_error_naming_the_pointer() {
        let s = spec(json!([step(
            "only",
            json!({"x": {"$from": "/trigger/items/01"}})
        )]));
        s.validate().unwrap();
        let error = action(&s.steps[0])
            .build_input(Context::new(&json!({"items": [1, 2]}), &BTreeMap::new()))
            .unwrap_err();
        assert_eq!(error.pointer, "/trigger/items/01");
    }

    #[test]
    fn references_must_name_the_trigger_or_an_earlier_step() {
        let later = spec(json!([
            step("first", json!({"x": {"$from": "/steps/second/y"}})),
            step("second", json!({})),
        ]));
        let error = later.validate().unwrap_err();
        assert_eq!(error.field, "steps[0].input/x");
        assert!(error.reason.contains("not an earlier step"), "{error}");

        let itself = spec(json!([step(
            "first",
            json!({"x": {"$from": "/steps/first"}})
        )]));
        assert!(itself.validate().is_err());
        let elsewhere = spec(json!([step("first", json!([{"$from": "/env/HOME"}]))]));
        assert_eq!(elsewhere.validate().unwrap_err().field, "steps[0].input/0");
        let bad_escape = spec(json!([step("first", json!({"$from": "/trigger/~2"}))]));
        assert!(bad_escape.validate().is_err());
        let not_text = spec(json!([step("first", json!({"$from": 3}))]));
        assert!(not_text.validate().is_err());
    }

    #[test]
    fn a_marker_with_other_members_is_refused_naming_the_step_and_the_key() {
        for (input, marker, path) in [
            (json!({"a": {"$from": "/trigger/x", "x": 1}}), "$from", "/a"),
            (
                json!([{"$literal": {"k": 1}, "extra": true}]),
                "$literal",
                "/0",
            ),
            (json!({"$from": "/trigger", "$literal": 2}), "$from", ""),
        ] {
            let s = spec(json!([step("fetch", json!({})), step("send", input)]));
            let error = s.validate().unwrap_err();
            assert_eq!(error.field, format!("steps[1].input{path}"), "{error}");
            assert!(error.reason.contains("step `send`"), "{error}");
            assert!(
                error
                    .reason
                    .contains(&format!("`{marker}` must be the only member")),
                "{error}"
            );
        }
        let error = spec(json!([step("a", json!({"$from": "/trigger/x", "x": 1}))]))
            .validate()
            .unwrap_err();
        assert!(error.reason.contains("`x`"), "{error}");
        // Inside a `$literal` everything is data, markers with company included.
        let literal = spec(json!([step(
            "a",
            json!({"$literal": {"$from": "/trigger", "x": 1}})
        )]));
        literal.validate().unwrap();
    }

    #[test]
    fn step_ids_are_checked_and_unique() {
        for bad in ["", "Upper", "9lives", "has space", "a/b", &"x".repeat(65)] {
            assert!(
                spec(json!([step(bad, json!({}))])).validate().is_err(),
                "{bad:?}"
            );
        }
        let twice = spec(json!([step("a", json!({})), step("a", json!({}))]));
        assert_eq!(twice.validate().unwrap_err().field, "steps[1].id");
        assert!(spec(json!([])).validate().is_err());
        let many: Vec<Value> = (0..=MAX_STEPS)
            .map(|i| step(&format!("s{i}"), json!({})))
            .collect();
        assert!(spec(Value::Array(many)).validate().is_err());
    }

    #[test]
    fn names_with_invisible_characters_are_refused() {
        let s = spec(json!([{"id": "a", "connector": "gith\u{200b}ub", "action": "x"}]));
        assert_eq!(s.validate().unwrap_err().field, "steps[0].connector");
    }

    #[test]
    fn retry_policy_prefers_the_step_then_the_manifest_and_is_clamped() {
        let mut s = spec(json!([step("a", json!({}))]));
        assert_eq!(action(&s.steps[0]).retry_policy(None), NO_RETRY);
        assert_eq!(action(&s.steps[0]).retry_policy(None).max_attempts, 1);
        let declared = RetryPolicy {
            max_attempts: 50,
            initial_backoff_ms: 10,
            max_backoff_ms: u64::MAX,
        };
        let clamped = action(&s.steps[0]).retry_policy(Some(declared));
        assert_eq!(clamped.max_attempts, MAX_ATTEMPTS_CAP);
        assert_eq!(clamped.max_backoff_ms, MAX_BACKOFF_CAP_MS);
        action_mut(&mut s.steps[0]).retry = Some(RetryPolicy {
            max_attempts: 2,
            initial_backoff_ms: 5,
            max_backoff_ms: 7,
        });
        assert_eq!(
            action(&s.steps[0])
                .retry_policy(Some(declared))
                .max_attempts,
            2
        );
        action_mut(&mut s.steps[0]).retry = Some(RetryPolicy {
            max_attempts: 0,
            initial_backoff_ms: 5,
            max_backoff_ms: 7,
        });
        assert_eq!(
            s.validate().unwrap_err().field,
            "steps[0].retry.max_attempts"
        );
    }

    #[test]
    fn branches_for_each_and_sleep_are_checked_naming_their_place() {
        let paid = json!({"eq": [{"$from": "/trigger/type"}, "paid"]});
        let refused = |steps: Value| spec(steps).validate().unwrap_err();
        // A step inside a branch reads the switch and its earlier siblings by full id;
        // a later step reads any branch's; a sibling branch is not earlier.
        let ok = spec(json!([
            {"id": "route", "switch": {"cases": [
                {"id": "paid", "when": paid, "steps": [
                    step("a", json!({"b": {"$from": "/steps/route/branch"}})),
                    step("b", json!({"x": {"$from": "/steps/route.paid.a"}})),
                ]},
            ], "default": [step("c", json!({}))]}},
            step("after", json!({"x": {"$from": "/steps/route.paid.b", "default": null},
                                 "y": {"$from": "/steps/route.default.c", "default": 0}})),
        ]));
        ok.validate().unwrap();
        let sibling = refused(json!([
            {"id": "route", "switch": {"cases": [
                {"id": "paid", "when": paid, "steps": [step("a", json!({}))]},
            ], "default": [step("c", json!({"x": {"$from": "/steps/route.paid.a"}}))]}},
        ]));
        assert_eq!(
            sibling.field, "steps[0].switch.default[0].input/x",
            "{sibling}"
        );
        let case_default = refused(json!([
            {"id": "r", "switch": {"cases": [{"id": "default", "when": true}]}},
        ]));
        assert_eq!(case_default.field, "steps[0].switch.cases[0].id");
        let no_cases = refused(json!([{"id": "r", "switch": {"cases": []}}]));
        assert_eq!(no_cases.field, "steps[0].switch.cases");
        // `/item` inside a body only; a body holds action steps only.
        let item_outside = refused(json!([step("a", json!({"x": {"$from": "/item"}}))]));
        assert!(
            item_outside.reason.contains("for_each body"),
            "{item_outside}"
        );
        let body = |inner: Value| {
            json!([{"id": "each", "for_each": {
            "items": {"$from": "/trigger/list"}, "steps": [inner]}}])
        };
        spec(body(step("send", json!({"to": {"$from": "/item/email"}}))))
            .validate()
            .unwrap();
        let nested = refused(body(json!({"id": "wait", "sleep": {"ms": 5}})));
        assert_eq!(nested.field, "steps[0].for_each.steps[0].sleep");
        let outside_ref = refused(json!([
            {"id": "each", "for_each": {"items": [1], "steps": [step("send", json!({}))]}},
            step("after", json!({"x": {"$from": "/steps/each.send"}})),
        ]));
        assert_eq!(outside_ref.field, "steps[1].input/x");
        let concurrency = refused(json!([{"id": "each", "for_each": {
            "items": [1], "concurrency": MAX_CONCURRENCY + 1, "steps": [step("s", json!({}))]}}]));
        assert_eq!(concurrency.field, "steps[0].for_each.concurrency");
        let items = refused(json!([{"id": "each", "for_each": {
            "items": [1], "max_items": 0, "steps": [step("s", json!({}))]}}]));
        assert_eq!(items.field, "steps[0].for_each.max_items");
        // A sleep has one of `ms` (bounded) and `until`.
        for (sleep, field) in [
            (json!({}), "steps[0].sleep"),
            (json!({"ms": 1, "until": "x"}), "steps[0].sleep"),
            (json!({"ms": 0}), "steps[0].sleep.ms"),
            (json!({"ms": MAX_SLEEP_MS + 1}), "steps[0].sleep.ms"),
            (
                json!({"until": {"$from": "/steps/nope"}}),
                "steps[0].sleep.until",
            ),
        ] {
            let error = refused(json!([{"id": "w", "sleep": sleep}]));
            assert_eq!(error.field, field, "{error}");
        }
    }

    #[test]
    fn nesting_and_the_expanded_step_count_are_capped() {
        let mut inner = step("leaf", json!({}));
        for depth in 0..MAX_NESTING {
            inner = json!({"id": format!("s{depth}"), "switch": {"cases": [
                {"id": "c", "when": true, "steps": [inner]}]}});
        }
        let error = spec(json!([inner])).validate().unwrap_err();
        assert!(error.reason.contains("nest"), "{error}");
        let many: Vec<Value> = (0..MAX_STEPS)
            .map(|i| step(&format!("s{i}"), json!({})))
            .collect();
        let counted = spec(json!([{"id": "r", "switch": {"cases": [
            {"id": "c", "when": true, "steps": many}]}}]));
        let error = counted.validate().unwrap_err();
        assert!(error.reason.contains("at most"), "{error}");
    }

    #[test]
    fn a_step_is_exactly_one_kind_and_round_trips() {
        for (bad, says) in [
            (json!({"id": "a"}), "a step is an action"),
            (json!({"id": "a", "connector": "c"}), "a step is an action"),
            (
                json!({"id": "a", "sleep": {"ms": 1}, "switch": {"cases": []}}),
                "one kind",
            ),
            (
                json!({"id": "a", "sleep": {"ms": 1}, "input": {}}),
                "`input`",
            ),
        ] {
            let error = serde_json::from_value::<WorkflowSpec>(json!({"steps": [bad]}))
                .unwrap_err()
                .to_string();
            assert!(error.contains(says), "{error}");
        }
        let source = json!({"steps": [
            {"id": "a", "connector": "c", "action": "x", "input": {}},
            {"id": "w", "sleep": {"ms": 5}},
            {"id": "r", "switch": {"cases": [{"id": "c", "when": true, "steps": []}]}},
        ]});
        let parsed: WorkflowSpec = serde_json::from_value(source.clone()).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), source);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let parsed: Result<WorkflowSpec, _> = serde_json::from_value(json!({
            "steps": [{"id": "a", "connector": "c", "action": "x", "inputs": {}}]
        }));
        assert!(parsed.is_err());
    }
}

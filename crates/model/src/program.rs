//! A workflow version lowered to what the worker runs: a flat list of nodes, each with the
//! index of the node that follows it, so a run's place is one number (`runs.next_step`) and
//! its journal one row per node (`run_steps.step_index`), whatever the nesting.
//!
//! A `switch` is a node that jumps to its chosen branch's first node; each branch's last
//! node jumps past the switch; a branch not taken is never visited, so it has no rows.
//! Jumps only go forward: a run visits increasing indices, and the row at its `next_step`
//! is the only one an attempt may overwrite. A `for_each` is one node: its iterations are
//! journaled apart, by item and body step (`run_items`), and its own row holds the array of
//! their outputs once all are done.

use serde_json::Value;

use crate::predicate::Predicate;
use crate::workflow::{ActionStep, SleepStep, StepKind, StepSpec, WorkflowSpec};

/// A workflow version ready to run.
#[derive(Debug, Clone)]
pub struct Program {
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
pub struct Node {
    /// The step's full id: `fetch`, `route.paid.notify` inside a branch.
    pub id: String,
    pub when: Option<Predicate>,
    pub op: Op,
    /// The node that follows this one (`nodes.len()`: the run ends).
    pub next: usize,
}

#[derive(Debug, Clone)]
pub enum Op {
    Action(ActionStep),
    Switch {
        /// Each case: its id, its condition, its first node (`None`: an empty branch,
        /// which goes on at the switch's `next`).
        cases: Vec<(String, Predicate, Option<usize>)>,
        default: Option<usize>,
    },
    ForEach {
        items: Value,
        max_items: Option<u32>,
        concurrency: Option<u32>,
        body: Vec<BodyStep>,
    },
    Sleep(SleepStep),
}

/// A step of a `for_each` body.
#[derive(Debug, Clone)]
pub struct BodyStep {
    /// `each.send`; an iteration's journal row adds the item's index.
    pub id: String,
    pub when: Option<Predicate>,
    pub action: ActionStep,
}

impl Program {
    /// Lowers a definition's steps (already validated).
    pub fn new(spec: &WorkflowSpec) -> Program {
        Program::of(&spec.steps)
    }

    /// Lowers a definition's `on_failure` steps: what a failure-handler run runs.
    pub fn handler(spec: &WorkflowSpec) -> Program {
        Program::of(&spec.on_failure)
    }

    fn of(steps: &[StepSpec]) -> Program {
        let mut nodes = Vec::new();
        let exits = lower(steps, "", &mut nodes);
        let end = nodes.len();
        for exit in exits {
            nodes[exit].next = end;
        }
        Program { nodes }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The index of the node with full id `id`; a `for_each` body step's id names its
    /// `for_each`.
    pub fn position(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|node| {
            node.id == id
                || matches!(&node.op, Op::ForEach { body, .. } if body.iter().any(|b| b.id == id))
        })
    }

    /// The `for_each` node and the body index of body step `id` (`each.send`); `None` for
    /// any other id.
    pub fn body_position(&self, id: &str) -> Option<(usize, usize)> {
        self.nodes
            .iter()
            .enumerate()
            .find_map(|(index, node)| match &node.op {
                Op::ForEach { body, .. } => body
                    .iter()
                    .position(|b| b.id == id)
                    .map(|body_index| (index, body_index)),
                _ => None,
            })
    }

    /// The body of the `for_each` at `index`, if that node is one.
    pub fn body(&self, index: usize) -> Option<&[BodyStep]> {
        match &self.nodes.get(index)?.op {
            Op::ForEach { body, .. } => Some(body),
            _ => None,
        }
    }

    /// Whether a run whose journal records `visited` goes on at `start` in this program:
    /// `visited` is each node it finished, in order, with the branch a `switch` took
    /// (`None` for any other node, or a switch that was skipped). Following the journal's
    /// decisions from the first node must pass exactly those nodes and arrive at `start`.
    pub fn leads_to(&self, visited: &[(usize, Option<&str>)], start: usize) -> bool {
        let mut at = 0;
        for (index, branch) in visited {
            let Some(node) = self.nodes.get(at).filter(|_| *index == at) else {
                return false;
            };
            at = match (&node.op, branch) {
                (Op::Switch { cases, default }, Some(branch)) => {
                    let first = if *branch == "default" {
                        *default
                    } else {
                        match cases.iter().find(|(id, ..)| id == branch) {
                            Some((_, _, first)) => *first,
                            None => return false,
                        }
                    };
                    first.unwrap_or(node.next)
                }
                _ => node.next,
            };
        }
        at == start
    }

    /// Whether the run ends after node `index`.
    pub fn ends_after(&self, index: usize) -> bool {
        self.nodes
            .get(index)
            .is_none_or(|node| node.next >= self.nodes.len())
    }
}

/// Appends `steps` (their ids prefixed with `prefix`) to `nodes`; returns the nodes whose
/// `next` is wherever the list goes on, which the caller knows.
fn lower(steps: &[StepSpec], prefix: &str, nodes: &mut Vec<Node>) -> Vec<usize> {
    let mut dangling: Vec<usize> = Vec::new();
    for step in steps {
        let start = nodes.len();
        for exit in dangling.drain(..) {
            nodes[exit].next = start;
        }
        let id = format!("{prefix}{}", step.id);
        let op = match &step.kind {
            StepKind::Action(action) => Op::Action(action.clone()),
            StepKind::Sleep(sleep) => Op::Sleep(sleep.clone()),
            StepKind::ForEach(each) => Op::ForEach {
                items: each.items.clone(),
                max_items: each.max_items,
                concurrency: each.concurrency,
                body: each
                    .steps
                    .iter()
                    .filter_map(|s| match &s.kind {
                        StepKind::Action(action) => Some(BodyStep {
                            id: format!("{id}.{}", s.id),
                            when: s.when.clone(),
                            action: action.clone(),
                        }),
                        _ => None,
                    })
                    .collect(),
            },
            StepKind::Switch(_) => Op::Switch {
                cases: Vec::new(),
                default: None,
            },
        };
        nodes.push(Node {
            id: id.clone(),
            when: step.when.clone(),
            op,
            next: usize::MAX,
        });
        // The node itself goes on at the continuation: after its step, or (a switch, an
        // empty branch, a skipped switch) past the switch.
        dangling.push(start);
        if let StepKind::Switch(switch) = &step.kind {
            let mut cases = Vec::with_capacity(switch.cases.len());
            for case in &switch.cases {
                let first = (!case.steps.is_empty()).then_some(nodes.len());
                dangling.extend(lower(&case.steps, &format!("{id}.{}.", case.id), nodes));
                cases.push((case.id.clone(), case.when.clone(), first));
            }
            let default = (!switch.default.is_empty()).then_some(nodes.len());
            dangling.extend(lower(&switch.default, &format!("{id}.default."), nodes));
            nodes[start].op = Op::Switch { cases, default };
        }
    }
    dangling
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // A failed unwrap is a failed test.
mod tests {
    use super::*;
    use serde_json::json;

    fn action(id: &str) -> Value {
        json!({"id": id, "connector": "c", "action": "a"})
    }

    #[test]
    fn a_switch_jumps_to_its_branch_and_every_branch_goes_on_past_it() {
        let spec: WorkflowSpec = serde_json::from_value(json!({"steps": [
            action("fetch"),
            {"id": "route", "switch": {
                "cases": [
                    {"id": "paid", "when": {"eq": [{"$from": "/trigger/t"}, "paid"]},
                     "steps": [action("notify"), action("log")]},
                    {"id": "void", "when": true, "steps": []},
                ],
                "default": [action("ignore")],
            }},
            action("after"),
        ]}))
        .unwrap();
        spec.validate().unwrap();
        let program = Program::new(&spec);
        let ids: Vec<&str> = program.nodes.iter().map(|n| n.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "fetch",
                "route",
                "route.paid.notify",
                "route.paid.log",
                "route.default.ignore",
                "after"
            ]
        );
        let next: Vec<usize> = program.nodes.iter().map(|n| n.next).collect();
        assert_eq!(next, [1, 5, 3, 5, 5, 6]);
        let Op::Switch { cases, default } = &program.nodes[1].op else {
            panic!("a switch")
        };
        assert_eq!(cases[0].2, Some(2));
        assert_eq!(cases[1].2, None, "an empty branch goes on past the switch");
        assert_eq!(*default, Some(4));
        assert!(program.ends_after(5));
        assert!(!program.ends_after(3));
        assert_eq!(program.position("route.paid.log"), Some(3));
        // The journal's path: fetch, then the switch took `paid`.
        let paid = [(0, None), (1, Some("paid"))];
        assert!(program.leads_to(&paid, 2));
        assert!(program.leads_to(&[(0, None), (1, Some("paid")), (2, None), (3, None)], 5));
        assert!(
            !program.leads_to(&paid, 4),
            "the default branch was not taken"
        );
        assert!(
            program.leads_to(&[(0, None), (1, Some("void"))], 5),
            "an empty branch"
        );
        assert!(
            program.leads_to(&[(0, None), (1, None)], 5),
            "a skipped switch"
        );
        assert!(!program.leads_to(&[(0, None), (1, Some("gone"))], 2));
        assert!(
            !program.leads_to(&[(1, None)], 2),
            "a journal that skips a node"
        );
    }

    #[test]
    fn a_switch_last_in_a_branch_and_last_in_the_workflow_ends_the_run() {
        let spec: WorkflowSpec = serde_json::from_value(json!({"steps": [
            {"id": "outer", "switch": {"cases": [
                {"id": "a", "when": true, "steps": [
                    {"id": "inner", "switch": {"cases": [
                        {"id": "b", "when": true, "steps": [action("deep")]},
                    ]}},
                ]},
            ]}},
        ]}))
        .unwrap();
        spec.validate().unwrap();
        let program = Program::new(&spec);
        let next: Vec<usize> = program.nodes.iter().map(|n| n.next).collect();
        assert_eq!(next, [3, 3, 3]);
        assert_eq!(program.nodes[2].id, "outer.a.inner.b.deep");
    }

    #[test]
    fn a_for_each_is_one_node_whose_body_ids_name_it() {
        let spec: WorkflowSpec = serde_json::from_value(json!({"steps": [
            {"id": "each", "for_each": {"items": {"$from": "/trigger/users"}, "concurrency": 4,
              "steps": [{"id": "send", "connector": "c", "action": "a",
                         "input": {"to": {"$from": "/item/email"}}}]}},
        ]}))
        .unwrap();
        spec.validate().unwrap();
        let program = Program::new(&spec);
        assert_eq!(program.len(), 1);
        assert_eq!(program.position("each.send"), Some(0));
        let Op::ForEach { body, .. } = &program.nodes[0].op else {
            panic!("a for_each")
        };
        assert_eq!(body[0].id, "each.send");
    }
}

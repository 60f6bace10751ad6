//! Generated predicates against generated documents: parsing never panics, whatever it is
//! given; what parses stays within the caps; evaluation never panics and obeys the logic
//! (`not not p` is `p`, `any [p, not p]` holds, `all [p, not p]` does not).
//!
//! CI runs proptest's default case count; the million:
//! `PROPTEST_CASES=1000000 cargo test --release -p airlock-model --test predicate_props`.

use std::collections::BTreeMap;

use airlock_model::predicate::{Context, MAX_NODES, Predicate};
use proptest::prelude::*;
use serde_json::{Value, json};

fn document() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        "[a-z@.]{0,12}".prop_map(Value::String),
        Just(json!("2026-12-07T10:00:00Z")),
        Just(json!("2026-12-07T11:00:00+01:00")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-c]", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn pointer() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/trigger".to_owned()),
        Just("/trigger/a".to_owned()),
        Just("/trigger/b/0".to_owned()),
        Just("/trigger/a/c".to_owned()),
        Just("/trigger/missing".to_owned()),
        Just("/steps/s/a".to_owned()),
        Just("/steps/gone".to_owned()),
        "/[a-z~/01]{0,10}",
    ]
}

fn operand() -> impl Strategy<Value = Value> {
    prop_oneof![
        document(),
        pointer().prop_map(|p| json!({"$from": p})),
        (pointer(), document()).prop_map(|(p, d)| json!({"$from": p, "default": d})),
        Just(json!({"$from": 5})),
    ]
}

fn predicate() -> impl Strategy<Value = Value> {
    let pattern = prop_oneof![
        Just("^a".to_owned()),
        Just("[0-9]+".to_owned()),
        Just("(a|b)*c".to_owned()),
        Just("(".to_owned()),
        Just("(a)\\1".to_owned()),
        "[a-z.*+?|()]{0,8}",
    ];
    let op = prop_oneof![
        Just("eq"),
        Just("ne"),
        Just("lt"),
        Just("le"),
        Just("gt"),
        Just("ge"),
        Just("in")
    ];
    let leaf = prop_oneof![
        1 => any::<bool>().prop_map(Value::Bool),
        8 => (op, operand(), operand()).prop_map(|(op, a, b)| json!({ op: [a, b] })),
        2 => pointer().prop_map(|p| json!({"exists": p})),
        2 => (operand(), pattern).prop_map(|(v, p)| json!({"matches": [v, p]})),
        1 => document(),
    ];
    leaf.prop_recursive(20, 300, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(|v| json!({"all": v})),
            prop::collection::vec(inner.clone(), 0..8).prop_map(|v| json!({"any": v})),
            inner.prop_map(|p| json!({"not": p})),
        ]
    })
}

proptest! {
    #[test]
    fn parsing_and_evaluation_never_panic_and_follow_the_logic(
        source in predicate(),
        trigger in document(),
        step in document(),
    ) {
        // About a quarter of what is generated parses; the rest tests the refusals.
        let Ok(parsed) = Predicate::parse(&source) else {
            return Ok(());
        };
        prop_assert!(parsed.pointers().len() <= MAX_NODES);
        let steps = BTreeMap::from([("s".to_owned(), step)]);
        let context = Context::new(&trigger, &steps);
        let value = parsed.eval(context);
        // Wrapping adds two levels, which may pass the depth cap: only then is it refused.
        for (wrapped, expected) in [
            (json!({"not": {"not": source}}), value),
            (json!({"any": [source, {"not": source}]}), true),
            (json!({"all": [source, {"not": source}]}), false),
        ] {
            if let Ok(wrapped) = Predicate::parse(&wrapped) {
                prop_assert_eq!(wrapped.eval(context), expected);
            }
        }
    }
}

//! Coverage of the OpenAPI importer on GitHub's REST description (`scripts/openapi-coverage`
//! installs it and sets `AIRLOCK_GITHUB_OPENAPI` to its path). Without the variable the test
//! says so and passes: the 13 MB description stays out of git.

use std::collections::BTreeMap;
use std::time::Instant;

use airlock_declarative::Definition;
use airlock_declarative::openapi::{ImportOptions, MAX_ACTION_SCHEMA_BYTES, import};
use serde_json::Value;

/// The share of GitHub's operations that must become actions.
const GOAL: f64 = 0.90;

/// `$ref`s with a string value (SCIM schemas have a property named `$ref`).
fn refs_left(value: &Value) -> usize {
    match value {
        Value::Object(map) => {
            usize::from(map.get("$ref").is_some_and(Value::is_string))
                + map.values().map(refs_left).sum::<usize>()
        }
        Value::Array(list) => list.iter().map(refs_left).sum(),
        _ => 0,
    }
}

#[test]
fn openapi_github_coverage() {
    let Ok(path) = std::env::var("AIRLOCK_GITHUB_OPENAPI") else {
        println!(
            "skipped: set AIRLOCK_GITHUB_OPENAPI to GitHub's api.github.com.json (scripts/openapi-coverage does)"
        );
        return;
    };
    let text = std::fs::read_to_string(&path).expect("read the description");
    let spec: Value = serde_json::from_str(&text).expect("the description is JSON");
    let options = ImportOptions::new("github", "0.1.0");

    let started = Instant::now();
    let imported = import(&spec, &options).expect("imports");
    let elapsed = started.elapsed();

    let definition_json = serde_json::to_string(&imported.definition).expect("serializes");
    let converted = imported.converted();
    let share = imported.share();
    println!("description:        {path}");
    println!("total operations:   {}", imported.total_operations);
    println!("selected:           {}", imported.selected_operations);
    println!("converted:          {converted}");
    println!("skipped:            {}", imported.skipped.len());
    println!(
        "share converted:    {:.1}% (goal {:.0}%)",
        share * 100.0,
        GOAL * 100.0
    );
    println!(
        "definition size:    {} bytes ({:.1} MB)",
        definition_json.len(),
        definition_json.len() as f64 / 1e6
    );
    println!("import time:        {elapsed:.2?}");
    println!("auth:               {}", imported.definition.auth);

    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for skipped in &imported.skipped {
        // Group by the reason's kind, not the parameter it names.
        let kind = skipped
            .reason
            .split('`')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        *reasons.entry(kind).or_default() += 1;
    }
    let mut reasons: Vec<(String, usize)> = reasons.into_iter().collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!("skipped by reason:");
    for (reason, count) in reasons.iter().take(10) {
        println!("  {count:5}  {reason}…");
    }
    for skipped in imported.skipped.iter().take(20) {
        println!("  - {}: {}", skipped.operation, skipped.reason);
    }

    let mut sizes: Vec<(usize, &str)> = imported
        .definition
        .actions
        .iter()
        .map(|a| {
            (
                serde_json::to_string(a).expect("serializes").len(),
                a.name.as_str(),
            )
        })
        .collect();
    sizes.sort_unstable_by(|a, b| b.cmp(a));
    println!("largest actions:");
    for (size, name) in sizes.iter().take(5) {
        println!("  {size:8}  {name}");
    }
    let cut = imported
        .notes
        .iter()
        .filter(|n| n.contains("to fit in"))
        .count();
    let recursive = imported
        .notes
        .iter()
        .filter(|n| n.contains("recursive schema"))
        .count();
    println!(
        "notes:              {} ({cut} actions cut to fit, {recursive} recursion cuts)",
        imported.notes.len()
    );
    println!("renamed parameters: {}", imported.renamed.len());

    if let Ok(dump) = std::env::var("AIRLOCK_OPENAPI_DUMP") {
        std::fs::write(&dump, &definition_json).expect("write the definition");
        std::fs::write(format!("{dump}.notes"), imported.notes.join("\n"))
            .expect("write the notes");
        println!("definition written to {dump} (notes in {dump}.notes)");
    }

    // The definition stands alone and round-trips.
    assert_eq!(
        refs_left(&serde_json::to_value(&imported.definition).expect("value")),
        0
    );
    let back: Definition = serde_json::from_str(&definition_json).expect("parses back");
    assert_eq!(back, imported.definition);
    for action in &imported.definition.actions {
        let schemas: usize = [
            &action.path_schema,
            &action.query_schema,
            &action.headers_schema,
            &action.body_schema,
            &action.output_schema,
        ]
        .iter()
        .filter_map(|s| s.as_ref())
        .map(|s| serde_json::to_string(s).expect("serializes").len())
        .sum();
        assert!(
            schemas <= MAX_ACTION_SCHEMA_BYTES,
            "{}: {schemas} bytes of schemas",
            action.name
        );
    }
    let issues = imported
        .definition
        .actions
        .iter()
        .find(|a| a.name == "issues_list_for_repo")
        .expect("issues/list-for-repo");
    assert!(
        issues
            .endpoint
            .starts_with("/repos/{owner}/{repo}/issues{?"),
        "{}",
        issues.endpoint
    );

    // Deterministic: a second import is byte for byte the same.
    let again = import(&spec, &options).expect("imports");
    assert_eq!(
        serde_json::to_string(&again.definition).expect("serializes"),
        definition_json
    );

    assert!(
        share >= GOAL,
        "only {:.1}% of the operations converted",
        share * 100.0
    );
}

//! Loading: only components that keep to the contract load, and compilation is cached.

use airlock::runtime::{LoadError, Runtime};

use crate::support::{options, runtime};

#[tokio::test]
async fn a_component_importing_outside_the_contract_is_rejected_naming_the_import() {
    let rt = runtime();
    let error = rt
        .load_file(airlock_test_artifacts::BAD_IMPORT.as_ref())
        .await
        .expect_err("forbidden import");
    match error {
        LoadError::ForbiddenImport(name) => assert!(name.starts_with("evil:"), "{name}"),
        other => panic!("expected ForbiddenImport, got {other}"),
    }
}

#[tokio::test]
async fn core_modules_and_garbage_are_not_components() {
    let rt = runtime();
    let module = wat::parse_str("(module)").expect("wat");
    let error = rt.load(&module).await.expect_err("core module");
    assert!(matches!(error, LoadError::NotAComponent(_)), "{error}");
    assert!(error.to_string().contains("wasm32-wasip2"));
    let garbage = rt.load(b"definitely not wasm").await.expect_err("garbage");
    assert!(matches!(garbage, LoadError::NotAComponent(_)), "{garbage}");
}

#[tokio::test]
async fn a_component_without_the_connector_exports_is_rejected() {
    let rt = runtime();
    let empty = wat::parse_str("(component)").expect("wat");
    let error = rt.load(&empty).await.expect_err("no exports");
    assert!(matches!(error, LoadError::MissingExport(_)), "{error}");
}

#[tokio::test]
async fn a_missing_file_is_a_read_error() {
    let rt = runtime();
    let error = rt
        .load_file("/nonexistent/connector.wasm".as_ref())
        .await
        .expect_err("missing");
    assert!(matches!(error, LoadError::Read { .. }), "{error}");
}

#[tokio::test]
async fn loading_reads_the_manifest_and_caches_the_compiled_component_on_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = options();
    opts.cache_dir = Some(dir.path().to_owned());
    let rt = Runtime::new(opts.clone()).expect("runtime");
    let loaded = rt
        .load_file(airlock_test_artifacts::CONNECTOR_TRANSFORM.as_ref())
        .await
        .expect("load");
    assert_eq!(loaded.manifest().manifest().name, "transform");
    assert!(loaded.digest().starts_with("sha256:"));
    assert_eq!(rt.compilations(), 1);
    let cached: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .collect();
    assert_eq!(cached.len(), 1, "one artifact per digest and engine");
    let name = cached[0].file_name().to_string_lossy().into_owned();
    assert!(
        name.starts_with(loaded.digest()) && name.ends_with(".cwasm"),
        "{name}"
    );

    // A second runtime (a restarted process) loads from the artifact.
    let again = Runtime::new(opts).expect("runtime");
    let reloaded = again
        .load_file(airlock_test_artifacts::CONNECTOR_TRANSFORM.as_ref())
        .await
        .expect("load");
    assert_eq!(reloaded.digest(), loaded.digest());
    assert_eq!(
        again.compilations(),
        0,
        "loaded from the artifact, not compiled"
    );

    // A corrupt artifact is discarded and the component recompiled, not trusted.
    std::fs::write(cached[0].path(), b"corrupt").expect("corrupt");
    let third = Runtime::new({
        let mut o = options();
        o.cache_dir = Some(dir.path().to_owned());
        o
    })
    .expect("runtime");
    third
        .load_file(airlock_test_artifacts::CONNECTOR_TRANSFORM.as_ref())
        .await
        .expect("recompiles");
    assert_eq!(third.compilations(), 1, "the corrupt artifact was not used");
    let rewritten = std::fs::read(cached[0].path()).expect("artifact written again");
    assert_ne!(rewritten, b"corrupt", "the corrupt artifact was replaced");
    assert!(
        rewritten.starts_with(b"\x7fELF"),
        "a compiled artifact again"
    );
}

#[tokio::test]
async fn concurrent_loads_of_one_component_compile_it_once() {
    // A process meeting a component it has not loaded, with many workers at once (after a
    // start, or an eviction): each of them compiled it before. An empty artifact cache, so
    // the one load that runs has to compile.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = options();
    opts.cache_dir = Some(dir.path().to_owned());
    let rt = std::sync::Arc::new(Runtime::new(opts).expect("runtime"));
    let bytes = std::fs::read(airlock_test_artifacts::CONNECTOR_TRANSFORM).expect("guest built");
    let loads: Vec<_> = (0..8)
        .map(|_| {
            let (rt, bytes) = (rt.clone(), bytes.clone());
            tokio::spawn(async move { rt.load(&bytes).await.map(|c| c.digest().to_owned()) })
        })
        .collect();
    let mut digests = Vec::new();
    for load in loads {
        digests.push(load.await.expect("task").expect("load"));
    }
    digests.dedup();
    assert_eq!(digests.len(), 1);
    assert_eq!(rt.compilations(), 1, "one compile for 8 concurrent loads");
}

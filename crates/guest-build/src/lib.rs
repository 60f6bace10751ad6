//! Building guest components from a build script: one nested `cargo build --profile guest
//! --target wasm32-wasip2` into `<workspace>/target/guests` (the outer cargo holds the lock
//! on its own target directory, so sharing it would deadlock), with the outer build's
//! environment kept out. Used by `tests/artifacts` (the test guests) and `airlock-runtime`
//! (the declarative runner it ships), the pattern of wasmtime's
//! `crates/test-programs/artifacts/build.rs`.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "wasm32-wasip2";
pub const PROFILE: &str = "guest";
/// The first eight bytes of a component: `\0asm`, then version 0x0d and layer 1.
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];

/// Builds `packages` for the guest target and returns the directory their `.wasm` files are
/// in (`<package with - as _>.wasm`), each checked to be a component.
pub fn build_components(workspace: &Path, packages: &[String]) -> PathBuf {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    check_target_installed(&rustc);
    let target_dir = workspace.join("target/guests");
    build(workspace, &target_dir, packages);
    let out = target_dir.join(TARGET).join(PROFILE);
    for package in packages {
        check_component(&wasm_path(&out, package));
    }
    out
}

/// Where the build puts `package`'s component.
pub fn wasm_path(out: &Path, package: &str) -> PathBuf {
    out.join(format!("{}.wasm", package.replace('-', "_")))
}

/// Fails with instructions when the compiler has no standard library for the guest target.
pub fn check_target_installed(rustc: &OsString) {
    let libdir = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    let has_std = libdir
        .and_then(|dir| fs::read_dir(dir).ok())
        .is_some_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
        });
    if !has_std {
        let toolchain = env::var("RUSTUP_TOOLCHAIN")
            .map(|t| format!(" --toolchain {t}"))
            .unwrap_or_default();
        fail(&format!(
            "the {TARGET} target is not installed for this compiler, so the guest components \
             cannot be built. Run `rustup target add {TARGET}{toolchain}` (or scripts/build-guests, \
             which does it), then build again."
        ));
    }
}

/// One `cargo build` for every guest, with the outer build's leaked environment removed.
pub fn build(workspace: &Path, target_dir: &Path, packages: &[String]) {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args([
            "build",
            "--profile",
            PROFILE,
            "--target",
            TARGET,
            "--target-dir",
        ])
        .arg(target_dir);
    for package in packages {
        cmd.args(["-p", package]);
    }
    for (name, _) in env::vars_os() {
        if name.to_str().is_some_and(leaks_into_nested_build) {
            cmd.env_remove(&name);
        }
    }
    // Cargo reads directives from this script's stdout; the nested cargo must not write there.
    cmd.stdout(std::io::stderr());
    eprintln!("running: {cmd:?}");
    match cmd.status() {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!(
            "building the guest components failed ({status}); the compiler's errors are above"
        )),
        Err(e) => fail(&format!("cannot run cargo: {e}")),
    }
}

/// Variables the outer cargo set, for this build script or for the host build, that would
/// change the nested one: flags and wrappers meant for the host target (`-C target-cpu=native`,
/// clippy-driver during `cargo clippy`), the outer target and build directories, and the
/// per-package values cargo hands build scripts (a stray `CARGO_CFG_UNIX` would tell the
/// guests' own build scripts that they target Unix).
///
/// Kept on purpose: `RUSTC` (same compiler), `RUSTC_WRAPPER` (sccache and the like), and
/// `CARGO_MAKEFLAGS`, so the nested cargo takes its jobs from the outer jobserver instead of
/// starting as many again on the same cores.
fn leaks_into_nested_build(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTDOCFLAGS",
        "CARGO_ENCODED_RUSTDOCFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET_DIR",
        "CARGO_BUILD_BUILD_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
        "CLIPPY_ARGS",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "NUM_JOBS",
        "OPT_LEVEL",
        "DEBUG",
        "PROFILE",
        "RUSTC_LINKER",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_CRATE_NAME",
    ];
    const PREFIXES: &[&str] = &[
        "CARGO_CFG_",
        "CARGO_FEATURE_",
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "DEP_",
        "__CARGO_",
    ];
    EXACT.contains(&name) || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// Fails unless `wasm` exists and is a component, not a core module.
pub fn check_component(wasm: &Path) {
    let bytes = fs::read(wasm).unwrap_or_else(|e| {
        fail(&format!(
            "the build did not produce {}: {e}",
            wasm.display()
        ))
    });
    if !bytes.starts_with(&COMPONENT_HEADER) {
        fail(&format!(
            "{} is not a component (it should be, when built for {TARGET})",
            wasm.display()
        ));
    }
}

pub fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1)
}

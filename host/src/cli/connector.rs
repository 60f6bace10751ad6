//! `airlock connector`: the authoring kit. `new` starts a connector from a template (a Rust
//! crate on `airlock-sdk`, or a declarative definition in YAML); `from-openapi` imports an
//! OpenAPI 3 description as a declarative definition. Both check what they write the way an
//! upload is checked, so what they produce loads.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

use super::EXIT_FAILED;
use airlock_core::definitions::{Syntax, canonical};
use airlock_declarative::openapi::{self, Import, ImportOptions};
use airlock_model::ValidatedManifest;

#[derive(Debug, Args)]
pub struct ConnectorArgs {
    #[command(subcommand)]
    pub command: ConnectorCommand,
}

#[derive(Debug, Subcommand)]
pub enum ConnectorCommand {
    /// Create a connector from a template (a Rust crate, or a declarative definition).
    ///
    /// Without --declarative: a directory NAME holding a Rust crate on airlock-sdk with one
    /// example action and its tests. With --declarative: NAME.yaml, a definition with one
    /// action and a config_schema. Refuses to overwrite anything.
    New(NewArgs),
    /// Import an OpenAPI 3 description as a declarative definition.
    ///
    /// Reads JSON or YAML, converts the selected operations, and checks the result as an
    /// upload would be checked. Prints the definition (or writes it with -o) and, on stderr,
    /// what was converted, skipped and why.
    FromOpenapi(FromOpenApiArgs),
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The connector's name (1-64 of a-z, 0-9, `-`, `_`, starting with a letter); also the
    /// crate's or the file's name.
    pub name: String,
    /// Write a declarative definition (NAME.yaml) instead of a Rust crate.
    #[arg(long)]
    pub declarative: bool,
    /// The directory to create it in.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct FromOpenApiArgs {
    /// The OpenAPI 3.0 or 3.1 document (.json, .yaml or .yml).
    pub spec: PathBuf,
    /// Which operations (repeatable): an operationId, `tag:NAME`, or a glob with `*` matched
    /// against the operationId and against `METHOD /path` (`GET /repos/*`). Default: all.
    #[arg(long = "select", value_name = "PATTERN")]
    pub select: Vec<String>,
    /// The connector's name (default: from `info.title`).
    #[arg(long)]
    pub name: Option<String>,
    /// The connector's version, MAJOR.MINOR.PATCH (default: `info.version` if it is one,
    /// else 0.1.0).
    #[arg(long)]
    pub version: Option<String>,
    /// The base URL instead of the document's `servers` (may hold `{config.NAME}`).
    #[arg(long)]
    pub base_url: Option<String>,
    /// The manifest's auth spec as JSON, instead of the one derived from the security
    /// schemes, e.g. '{"type": "api_key", "in": "header", "name": "X-Api-Key"}'.
    #[arg(long)]
    pub auth: Option<String>,
    /// Write the definition here instead of stdout: YAML when the name ends in .yaml or
    /// .yml, else JSON. Nothing is written when the import or its check fails.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

pub fn run(args: ConnectorArgs) -> ExitCode {
    let done = match args.command {
        ConnectorCommand::New(args) => new(&args),
        ConnectorCommand::FromOpenapi(args) => from_openapi(&args),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            errln!("error: {error}");
            ExitCode::from(EXIT_FAILED)
        }
    }
}

// ---------------------------------------------------------------------------------------
// from-openapi

fn from_openapi(args: &FromOpenApiArgs) -> Result<(), String> {
    let spec = read_document(&args.spec)?;
    let auth = match &args.auth {
        Some(text) => {
            Some(serde_json::from_str(text).map_err(|e| format!("--auth is not JSON: {e}"))?)
        }
        None => None,
    };
    let options = ImportOptions {
        name: args.name.clone().unwrap_or_default(),
        version: args.version.clone().unwrap_or_default(),
        select: args.select.clone(),
        base_url: args.base_url.clone(),
        auth,
    };
    let import = match openapi::import(&spec, &options) {
        Ok(import) => import,
        Err(error) => {
            if let openapi::ImportError::NoActions { skipped, .. } = &error {
                print_skipped(skipped);
            }
            return Err(format!("{}: {error}", args.spec.display()));
        }
    };
    print_summary(&import);

    let yaml = args.output.as_deref().is_some_and(is_yaml);
    let text = if yaml {
        serde_norway::to_string(&import.definition)
            .map_err(|e| format!("cannot write the definition as YAML: {e}"))?
    } else {
        serde_json::to_string_pretty(&import.definition)
            .map_err(|e| format!("cannot write the definition as JSON: {e}"))?
            + "\n"
    };
    // What is checked is what is written, read back as the service reads an upload.
    let syntax = if yaml { Syntax::Yaml } else { Syntax::Json };
    let actions = check_definition(text.as_bytes(), syntax)
        .map_err(|e| format!("the imported definition does not pass the upload checks: {e}"))?;
    errln!(
        "checked: `{}` {} with {actions} actions passes the checks of an upload",
        import.definition.name,
        import.definition.version
    );
    match &args.output {
        Some(path) => {
            fs::write(path, &text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            errln!("wrote {}", path.display());
        }
        None => out!("{text}"),
    }
    Ok(())
}

/// An OpenAPI document as JSON: YAML for `.yaml` and `.yml`, JSON for `.json`, and for any
/// other name whichever of the two parses.
fn read_document(path: &Path) -> Result<Value, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let as_json = || serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string());
    let as_yaml = || serde_norway::from_slice::<Value>(&bytes).map_err(|e| e.to_string());
    let parsed = match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => as_yaml().map_err(|e| format!("not valid YAML: {e}")),
        Some("json") => as_json().map_err(|e| format!("not valid JSON: {e}")),
        _ => as_json().or_else(|json| {
            as_yaml().map_err(|yaml| format!("neither JSON ({json}) nor YAML ({yaml})"))
        }),
    };
    parsed.map_err(|e| format!("{}: {e}", path.display()))
}

fn is_yaml(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("yaml" | "yml")
    )
}

fn print_summary(import: &Import) {
    errln!(
        "imported {} of {} selected operations ({} in the document) as `{}` {}",
        import.converted(),
        import.selected_operations,
        import.total_operations,
        import.definition.name,
        import.definition.version
    );
    print_skipped(&import.skipped);
    if !import.renamed.is_empty() {
        errln!("renamed ({}):", import.renamed.len());
        for renamed in &import.renamed {
            errln!(
                "  {}: {} parameter `{}` is `{}` in the template and the input",
                renamed.action,
                renamed.location,
                renamed.parameter,
                renamed.variable
            );
        }
    }
    if !import.notes.is_empty() {
        errln!("notes ({}):", import.notes.len());
        for note in &import.notes {
            errln!("  {note}");
        }
    }
}

fn print_skipped(skipped: &[openapi::Skipped]) {
    if skipped.is_empty() {
        return;
    }
    errln!("skipped ({}):", skipped.len());
    for skipped in skipped {
        errln!("  {}: {}", skipped.operation, skipped.reason);
    }
}

/// The checks an upload of a definition passes (`Runtime::load` on the service): its stored
/// form, its size, the definition's own checks, then the derived manifest's. The number of
/// actions when it passes.
fn check_definition(text: &[u8], syntax: Syntax) -> Result<usize, String> {
    let stored = canonical(text, syntax).map_err(|e| e.to_string())?;
    if stored.len() > airlock_runtime::MAX_DEFINITION_BYTES {
        return Err(format!(
            "the definition is {} bytes, more than the {} allowed",
            stored.len(),
            airlock_runtime::MAX_DEFINITION_BYTES
        ));
    }
    let stored = String::from_utf8(stored).map_err(|e| e.to_string())?;
    let compiled = airlock_declarative::compile_json(&stored).map_err(|e| e.to_string())?;
    let manifest =
        ValidatedManifest::parse(&compiled.manifest.to_string()).map_err(|e| e.to_string())?;
    Ok(manifest.manifest().actions.len())
}

// ---------------------------------------------------------------------------------------
// new

/// The templates, kept as files so the Rust one is compiled and its tests run by the CLI's
/// tests (`host/tests/it/cli.rs`).
const CARGO_TOML: &str = include_str!("templates/code/Cargo.toml.in");
const LIB_RS: &str = include_str!("templates/code/lib.rs");
const README: &str = include_str!("templates/code/README.md.in");
const GITIGNORE: &str = include_str!("templates/code/gitignore");
const DECLARATIVE: &str = include_str!("templates/declarative.yaml.in");

fn new(args: &NewArgs) -> Result<(), String> {
    airlock_contract::connector::check_name(&args.name)
        .map_err(|reason| format!("the connector name {:?}: {reason}", args.name))?;
    if args.declarative {
        new_declarative(args)
    } else {
        new_crate(args)
    }
}

fn new_declarative(args: &NewArgs) -> Result<(), String> {
    let text = fill(DECLARATIVE, &[("name", &args.name)]);
    // A template that does not pass is a bug of this binary, caught before anything is written.
    check_definition(text.as_bytes(), Syntax::Yaml)
        .map_err(|e| format!("the declarative template does not pass the checks: {e}"))?;
    let path = args.dir.join(format!("{}.yaml", args.name));
    write_new(&path, &text)?;
    errln!("created {}", path.display());
    errln!("next: airlock manifest {}", path.display());
    errln!(
        "      airlock invoke {} get_item --config '{{\"subdomain\": \"acme\"}}' --input '{{\"path\": {{\"id\": \"42\"}}}}'",
        path.display()
    );
    Ok(())
}

fn new_crate(args: &NewArgs) -> Result<(), String> {
    let root = args.dir.join(&args.name);
    if root.exists() {
        return Err(format!("{} already exists", root.display()));
    }
    let crate_name = args.name.replace('-', "_");
    let sdk = sdk_dependency(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk"));
    let values = [
        ("name", args.name.as_str()),
        ("crate", crate_name.as_str()),
        ("sdk", sdk.as_str()),
    ];
    fs::create_dir_all(&args.dir)
        .map_err(|e| format!("cannot create {}: {e}", args.dir.display()))?;
    // `create_dir`, not `_all`: it fails if the directory appeared meanwhile.
    fs::create_dir(&root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let files = [
        ("Cargo.toml", fill(CARGO_TOML, &values)),
        ("src/lib.rs", LIB_RS.to_owned()),
        ("README.md", fill(README, &values)),
        (".gitignore", GITIGNORE.to_owned()),
    ];
    for (name, text) in &files {
        let path = root.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        write_new(&path, text)?;
    }
    errln!("created {}", root.display());
    errln!(
        "next: cd {} && cargo test && cargo build --release --target wasm32-wasip2",
        root.display()
    );
    errln!("      airlock manifest target/wasm32-wasip2/release/{crate_name}.wasm");
    Ok(())
}

/// The `airlock-sdk` dependency line: this checkout's SDK by its absolute path when this
/// binary was built from a checkout that is still there, else the packaged crate.
fn sdk_dependency(checkout: &Path) -> String {
    match checkout.canonicalize() {
        Ok(path) if path.join("Cargo.toml").is_file() => {
            let path = path.to_string_lossy();
            format!("airlock-sdk = {{ path = {} }}", toml_string(&path))
        }
        _ => "# Point this at your copy of the SDK (`{ path = \"/path/to/airlock/guest-sdk\" }`)\n\
              # or at the packaged crate.\n\
              airlock-sdk = \"0.1\""
            .to_owned(),
    }
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// `template` with each `{{key}}` replaced by its value.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_owned(), |text, (key, value)| {
            text.replace(&format!("{{{{{key}}}}}"), value)
        })
}

/// Writes a file that must not exist yet.
fn write_new(path: &Path, text: &str) -> Result<(), String> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!("{} already exists", path.display()),
            _ => format!("cannot create {}: {e}", path.display()),
        })?;
    file.write_all(text.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_fill_every_placeholder() {
        let values = [("name", "acme-crm"), ("crate", "acme_crm"), ("sdk", "x")];
        for template in [CARGO_TOML, README, DECLARATIVE] {
            let filled = fill(template, &values);
            assert!(!filled.contains("{{"), "{filled}");
        }
    }

    #[test]
    fn the_declarative_template_passes_the_upload_checks() {
        let text = fill(DECLARATIVE, &[("name", "acme")]);
        assert_eq!(check_definition(text.as_bytes(), Syntax::Yaml), Ok(1));
    }

    #[test]
    fn the_sdk_is_this_checkout_s_or_the_packaged_crate() {
        let here = sdk_dependency(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk"));
        assert!(here.starts_with("airlock-sdk = { path = \"/"), "{here}");
        assert!(here.ends_with("guest-sdk\" }"), "{here}");
        let gone = sdk_dependency(Path::new("/nonexistent/guest-sdk"));
        assert!(gone.ends_with("airlock-sdk = \"0.1\""), "{gone}");
        assert!(gone.contains("Point this at your copy"), "{gone}");
    }

    #[test]
    fn toml_strings_are_escaped() {
        assert_eq!(toml_string(r#"C:\a "b""#), r#""C:\\a \"b\"""#);
        assert_eq!(toml_string("a\nb"), r#""a\u000Ab""#);
    }
}

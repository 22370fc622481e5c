//! Every schema in SpiceDB's public test scenarios (shared/conformance/spicedb/*.yaml) compiles,
//! and its canonical text compiles back to the same schema.

use std::path::PathBuf;

/// `shared/conformance/spicedb` in the nearest folder above the package that has it (beside
/// the repository, or beside a folder of worktrees).
fn conformance_dir() -> PathBuf {
    let here = PathBuf::from(manifest_dir());
    here.ancestors()
        .map(|a| a.join("shared/conformance/spicedb"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| here.join("../../../shared/conformance/spicedb"))
}

/// (file name, schema text) of every scenario, sorted by file name.
fn schemas() -> Vec<(String, String)> {
    let dir = conformance_dir();
    let mut out = Vec::new();
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: serde_yaml::Value = serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: invalid YAML: {e}", path.display()));
        let schema = doc
            .get("schema")
            .and_then(|s| s.as_str())
            .unwrap_or_else(|| panic!("{}: no `schema:` string", path.display()))
            .to_string();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        out.push((name, schema));
    }
    out.sort();
    out
}

#[test]
fn all_conformance_schemas_compile() {
    let schemas = schemas();
    assert_eq!(schemas.len(), 73, "expected the 73 SpiceDB scenario files");
    let mut failures = Vec::new();
    for (name, text) in &schemas {
        match dhow_schema::compile(text) {
            Ok(schema) => {
                let printed = schema.to_string();
                match dhow_schema::compile(&printed) {
                    Ok(again) if again == schema => {}
                    Ok(_) => failures.push(format!(
                        "{name}: printed schema compiles differently:\n{printed}"
                    )),
                    Err(e) => {
                        failures.push(format!("{name}: printed schema fails: {e}\n{printed}"))
                    }
                }
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        schemas.len(),
        failures.join("\n\n")
    );
}

/// The package's directory: cargo's value at run time (right even when a build from another
/// checkout shares the target dir), else the one compiled in.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}

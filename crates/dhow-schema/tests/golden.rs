//! Golden tests: each `tests/golden/*.zed` is compiled and the result compared with the
//! `.golden` file beside it: `OK` and the canonical printed schema, or `ERROR` and the error text.
//! Run with `UPDATE_GOLDEN=1` to rewrite the `.golden` files instead of comparing.

use std::path::{Path, PathBuf};

fn golden_dir() -> PathBuf {
    Path::new(&manifest_dir()).join("tests/golden")
}

/// (path, source) of every `.zed` case, sorted by name.
fn cases() -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = std::fs::read_dir(golden_dir())
        .expect("tests/golden exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("zed"))
        .map(|p| {
            let src = std::fs::read_to_string(&p).unwrap();
            (p, src)
        })
        .collect();
    out.sort();
    out
}

fn render(src: &str) -> String {
    match dhow_schema::compile(src) {
        Ok(schema) => format!("OK\n\n{schema}"),
        Err(err) => format!("ERROR\n\n{err}\n"),
    }
}

#[test]
fn golden_files_match() {
    let update = std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1");
    let mut mismatches = Vec::new();
    for (path, src) in cases() {
        let actual = render(&src);
        let golden = path.with_extension("golden");
        if update {
            std::fs::write(&golden, &actual).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != actual {
            mismatches.push(format!(
                "{}:\n--- expected\n{expected}\n--- actual\n{actual}",
                path.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} golden file(s) differ (UPDATE_GOLDEN=1 rewrites them):\n\n{}",
        mismatches.len(),
        mismatches.join("\n\n")
    );
}

#[test]
fn golden_cases_cover_successes_and_errors() {
    let cases = cases();
    let ok = cases
        .iter()
        .filter(|(_, s)| dhow_schema::compile(s).is_ok())
        .count();
    assert!(cases.len() >= 25, "only {} golden cases", cases.len());
    assert!(
        ok >= 10 && cases.len() - ok >= 15,
        "{ok} valid of {}",
        cases.len()
    );
    // Cases are named for what they expect.
    for (path, src) in &cases {
        let name = path.file_name().unwrap().to_string_lossy();
        assert_eq!(
            name.starts_with("ok_"),
            dhow_schema::compile(src).is_ok(),
            "{name}"
        );
    }
}

/// Every error kind has a golden case.
#[test]
fn golden_cases_cover_every_error_kind() {
    use dhow_schema::ErrorKind::*;
    let mut seen = std::collections::HashSet::new();
    for (_, src) in cases() {
        if let Err(e) = dhow_schema::compile(&src) {
            seen.extend(e.diagnostics().iter().map(|d| d.kind));
        }
    }
    for kind in [
        Syntax,
        RelationWithoutTypes,
        InvalidName,
        UnsupportedUseFlag,
        UseAfterDefinition,
        DuplicateDefinition,
        DuplicateMember,
        DuplicateAllowedType,
        UnknownType,
        UnknownSubjectRelation,
        UnknownMember,
        UnknownCaveat,
        ExpirationNotEnabled,
        ArrowOverPermission,
        ArrowOverWildcard,
        ArrowTargetMissing,
        TransitiveWildcard,
        PermissionCycle,
        InvalidCaveatType,
        InvalidCaveatParameters,
    ] {
        assert!(seen.contains(&kind), "no golden case reports {kind:?}");
    }
}

/// compile(print(s)) == s, and printing is a fixed point, for every valid golden input.
#[test]
fn round_trip_valid_goldens() {
    let mut checked = 0;
    for (path, src) in cases() {
        let Ok(schema) = dhow_schema::compile(&src) else {
            continue;
        };
        let printed = schema.to_string();
        let again = dhow_schema::compile(&printed).unwrap_or_else(|e| {
            panic!(
                "{}: printed schema does not compile: {e}\n{printed}",
                path.display()
            )
        });
        assert_eq!(again, schema, "{}: printed:\n{printed}", path.display());
        assert_eq!(again.to_string(), printed, "{}", path.display());
        checked += 1;
    }
    assert!(checked >= 10);
}

/// The package's directory: cargo's value at run time (right even when a build from another
/// checkout shares the target dir), else the one compiled in.
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
}

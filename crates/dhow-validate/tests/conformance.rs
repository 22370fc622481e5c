//! SpiceDB's public scenarios run in-process through this crate's runner (the same bar as the
//! workspace's `tests/` crate, which needs the server to build): every assertion passes,
//! caveated ones included, none is skipped, and Check, LookupResources, LookupSubjects and
//! Expand agree on every scenario, three-valued (allowed, denied, conditional with the same
//! missing parameters), without a context and with each context the file's assertions use.
//! The engine's own crates can be changed and proven against them without building RocksDB.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use dhow_engine::{
    CaveatContext, CheckRequest, Engine, ExpandNode, ExpandTree, Options, Permissionship,
};
use dhow_tuples::{MemSnapshot, ObjectRef, Subject};
use dhow_validate::{load_file, run, Backend, InProcess, Outcome, Report};

/// Every assertion passes (122 of them need caveats); none is skipped.
const PASSING: usize = 411;
const SKIPPED: usize = 0;
const FILES: usize = 73;

/// `shared/conformance/spicedb` in the nearest folder above the package that has it.
fn conformance_files() -> Vec<PathBuf> {
    let here = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    );
    let dir = here
        .ancestors()
        .map(|a| a.join("shared/conformance/spicedb"))
        .find(|p| p.is_dir())
        .unwrap_or_else(|| panic!("no shared/conformance/spicedb above {}", here.display()));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn spicedb_scenarios_pass() {
    let files = conformance_files();
    assert_eq!(files.len(), FILES, "conformance set changed size");
    let mut total = Report::default();
    for path in &files {
        let file = load_file(path).unwrap_or_else(|e| panic!("{e}"));
        let (outcome, report) = run(&file, &mut InProcess::new());
        if let Outcome::LoadFailed(msg) = outcome {
            panic!("{msg}");
        }
        total.merge(report);
    }
    let failures: Vec<&str> = total
        .lines
        .iter()
        .filter(|l| l.starts_with("FAIL"))
        .map(String::as_str)
        .collect();
    assert!(failures.is_empty(), "failures:\n{}", failures.join("\n"));
    assert_eq!(total.skipped, 0, "{}", total.summary());
    assert_eq!(
        (total.passed, total.skipped),
        (PASSING, SKIPPED),
        "{}",
        total.summary()
    );
}

fn or(a: Permissionship, b: Permissionship) -> Permissionship {
    use Permissionship::*;
    match (a, b) {
        (Allowed, _) | (_, Allowed) => Allowed,
        (Conditional { missing: mut x }, Conditional { missing: y }) => {
            x.extend(y);
            x.sort();
            x.dedup();
            Conditional { missing: x }
        }
        (c @ Conditional { .. }, Denied) | (Denied, c @ Conditional { .. }) => c,
        (Denied, Denied) => Denied,
    }
}

fn and(a: Permissionship, b: Permissionship) -> Permissionship {
    not(or(not(a), not(b)))
}

fn not(a: Permissionship) -> Permissionship {
    match a {
        Permissionship::Allowed => Permissionship::Denied,
        Permissionship::Denied => Permissionship::Allowed,
        c => c,
    }
}

/// Is `subject` in the userset `node` (three-valued, caveats evaluated with `context`),
/// following subject-set leaves with further expands?
fn expand_value(
    engine: &Engine,
    reader: &MemSnapshot<'_>,
    node: &ExpandNode,
    subject: &Subject,
    visiting: &mut HashSet<(ObjectRef, String)>,
    opts: &Options,
) -> Permissionship {
    let caveat = |c: Option<&dhow_tuples::CaveatRef>| match c {
        None => Permissionship::Allowed,
        Some(c) => engine
            .caveat_permissionship(c, opts.context.as_ref())
            .expect("caveat evaluates"),
    };
    let own = caveat(node.caveat.as_ref());
    if own == Permissionship::Denied {
        return own;
    }
    if subject.relation.as_deref() == Some(node.relation.as_str())
        && subject.object == node.resource
    {
        return own;
    }
    let value = match &node.tree {
        ExpandTree::Leaf(leaves) => leaves.iter().fold(Permissionship::Denied, |acc, l| {
            let s = &l.subject;
            let found = if s == subject
                || (s.is_wildcard()
                    && subject.relation.is_none()
                    && s.object.object_type == subject.object.object_type)
            {
                Permissionship::Allowed
            } else if let Some(rel) = &s.relation {
                let key = (s.object.clone(), rel.clone());
                if visiting.insert(key.clone()) {
                    let sub = engine
                        .expand(reader, &s.object, rel, opts.clone())
                        .expect("expand of a stored subject set");
                    let v = expand_value(engine, reader, &sub, subject, visiting, opts);
                    visiting.remove(&key);
                    v
                } else {
                    Permissionship::Denied
                }
            } else {
                Permissionship::Denied
            };
            if found == Permissionship::Denied {
                return acc;
            }
            or(acc, and(found, caveat(l.caveat.as_ref())))
        }),
        ExpandTree::Union(kids) => kids.iter().fold(Permissionship::Denied, |acc, k| {
            or(
                acc,
                expand_value(engine, reader, k, subject, visiting, opts),
            )
        }),
        ExpandTree::Intersection(kids) if kids.is_empty() => Permissionship::Denied,
        ExpandTree::Intersection(kids) => kids.iter().fold(Permissionship::Allowed, |acc, k| {
            and(
                acc,
                expand_value(engine, reader, k, subject, visiting, opts),
            )
        }),
        ExpandTree::Exclusion(a, b) => and(
            expand_value(engine, reader, a, subject, visiting, opts),
            not(expand_value(engine, reader, b, subject, visiting, opts)),
        ),
    };
    and(own, value)
}

#[test]
fn check_lookups_and_expand_agree() {
    let mut combinations = 0usize;
    let mut conditional = 0usize;
    let mut files_checked = 0;
    let mut caveated_files = 0;
    let mut disagreements = Vec::new();
    for path in conformance_files() {
        let file = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let mut backend = InProcess::new();
        let rels: Vec<_> = file.relationships.iter().map(|(_, r)| r.clone()).collect();
        backend
            .load(&file.schema, &rels)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (engine, store) = backend.parts().expect("loaded");
        let reader = store.latest();
        let schema = engine.schema().clone();
        // No context, and each context the assertions use.
        let mut contexts: BTreeSet<Option<CaveatContext>> = BTreeSet::from([None]);
        for a in &file.assertions {
            if let Some(c) = &a.context {
                contexts.insert(Some(CaveatContext::from_json(c).expect("context")));
            }
        }
        if !schema.caveats.is_empty() {
            caveated_files += 1;
        }
        let mut objects: BTreeSet<ObjectRef> = BTreeSet::new();
        let mut subjects: BTreeSet<Subject> = BTreeSet::new();
        for r in &rels {
            objects.insert(r.resource.clone());
            if !r.subject.is_wildcard() {
                objects.insert(r.subject.object.clone());
            }
            if r.subject.relation.is_some() {
                subjects.insert(r.subject.clone());
            }
        }
        for a in &file.assertions {
            objects.insert(a.resource.clone());
            objects.insert(a.subject.object.clone());
        }
        for t in schema.definitions.keys() {
            objects.insert(ObjectRef::new(t.clone(), "dhowstranger"));
        }
        objects.retain(|o| schema.definition(&o.object_type).is_some() && !o.is_wildcard());
        subjects.extend(
            objects
                .iter()
                .map(|o| Subject::object(o.object_type.clone(), o.object_id.clone())),
        );
        for context in &contexts {
            let mut opts = Options::now();
            opts.context = context.clone();
            for resource in &objects {
                let def = schema.definition(&resource.object_type).expect("retained");
                for perm in def.relations.keys().chain(def.permissions.keys()) {
                    let tree = engine
                        .expand(&reader, resource, perm, opts.clone())
                        .expect("expand");
                    for subject in &subjects {
                        combinations += 1;
                        let req =
                            CheckRequest::new(resource.clone(), perm.clone(), subject.clone());
                        let check = engine
                            .check(&reader, &req, opts.clone())
                            .expect("check")
                            .permissionship;
                        if check.is_conditional() {
                            conditional += 1;
                        }
                        let lr = engine
                            .lookup_found_resources(
                                &reader,
                                &resource.object_type,
                                perm,
                                subject,
                                opts.clone(),
                            )
                            .expect("lookup_resources")
                            .into_iter()
                            .find(|f| f.id == resource.object_id)
                            .map_or(Permissionship::Denied, |f| f.permissionship);
                        let ls = engine
                            .lookup_subject_set(
                                &reader,
                                resource,
                                perm,
                                &subject.object.object_type,
                                subject.relation.as_deref(),
                                opts.clone(),
                            )
                            .expect("lookup_subjects")
                            .membership(subject);
                        let ex = expand_value(
                            engine,
                            &reader,
                            &tree,
                            subject,
                            &mut HashSet::new(),
                            &opts,
                        );
                        if !(check == lr && lr == ls && ls == ex) {
                            disagreements.push(format!(
                                "{} (context {}): {resource}#{perm}@{subject}: check={check:?} \
                                 lookup_resources={lr:?} lookup_subjects={ls:?} expand={ex:?}",
                                path.display(),
                                context.as_ref().map_or("none".to_string(), |c| c.to_json())
                            ));
                        }
                    }
                }
            }
        }
        files_checked += 1;
    }
    assert!(
        disagreements.is_empty(),
        "{} disagreements out of {combinations}:\n{}",
        disagreements.len(),
        disagreements[..disagreements.len().min(40)].join("\n")
    );
    assert!(files_checked >= 73, "only {files_checked} files");
    assert!(
        caveated_files >= 20,
        "only {caveated_files} files with caveats"
    );
    assert!(combinations > 10_000, "only {combinations} combinations");
    assert!(conditional > 100, "only {conditional} conditional answers");
}

#[test]
fn a_wrong_assertion_fails() {
    // The runner must be able to fail: flip one known-true assertion.
    let text = "schema: |-\n  definition user {}\n  definition document {\n    relation viewer: user\n    permission view = viewer\n  }\nrelationships: |-\n  document:1#viewer@user:tom\nassertions:\n  assertTrue:\n    - document:1#view@user:ann\n  assertFalse:\n    - document:1#view@user:tom\n";
    let file = dhow_validate::load_str("inline.yaml", text, None).unwrap();
    let (_, report) = run(&file, &mut InProcess::new());
    assert_eq!((report.passed, report.failed), (0, 2), "{report}");
    assert!(
        report.lines[0].contains("expected allowed, got denied"),
        "{report}"
    );
}

#[test]
fn caveated_assertions_and_expected_relations_run() {
    let text = r#"schema: |-
  definition user {}
  caveat on_level(level int, required int) {
    level >= required
  }
  definition document {
    relation viewer: user | user with on_level | user:* with on_level
    relation banned: user | user with on_level
    permission view = viewer - banned
  }
relationships: |-
  document:1#viewer@user:tom[on_level:{"required":3}]
  document:1#viewer@user:ann
  document:2#viewer@user:*[on_level:{"required":1}]
  document:2#banned@user:bob
  document:2#banned@user:eve[on_level:{"required":5}]
assertions:
  assertTrue:
    - 'document:1#view@user:tom with {"level": 3}'
    - document:1#view@user:ann
  assertCaveated:
    - document:1#view@user:tom
    - document:2#view@user:zed
  assertFalse:
    - 'document:1#view@user:tom with {"level": 2}'
    - document:2#view@user:bob
validation:
  document:1#view:
    - "[user:ann] is <document:1#viewer>"
    - "[user:tom[...]] is <document:1#viewer>"
  document:2#view:
    - "[user:*[...] - {user:bob}] is <document:2#viewer>"
    - "[user:eve[...]] is <document:2#viewer>"
"#;
    let file = dhow_validate::load_str("inline.yaml", text, None).unwrap();
    let (_, report) = run(&file, &mut InProcess::new());
    assert_eq!((report.passed, report.failed), (8, 0), "{report}");

    // Without the marker the conditional subject is a failure, and so is a marker on an
    // unconditional one.
    let wrong = text
        .replace("[user:tom[...]] is", "[user:tom] is")
        .replace("[user:ann] is", "[user:ann[...]] is")
        .replace(
            "- document:1#view@user:ann\n  assertCaveated",
            "- document:1#view@user:tom\n  assertCaveated",
        );
    let file = dhow_validate::load_str("inline.yaml", &wrong, None).unwrap();
    let (_, report) = run(&file, &mut InProcess::new());
    assert_eq!((report.passed, report.failed), (6, 2), "{report}");
    assert!(
        report
            .lines
            .iter()
            .any(|l| l.contains("expected allowed, got conditional (missing level)")),
        "{report}"
    );
    assert!(
        report.lines.iter().any(
            |l| l.contains("expected [user:ann[...], user:tom], got [user:ann, user:tom[...]]")
        ),
        "{report}"
    );
}

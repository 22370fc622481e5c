//! SpiceDB's public scenarios run in-process through this crate's runner (the same bar as the
//! workspace's `tests/` crate, which needs the server to build): every caveat-free assertion
//! passes, and Check, LookupResources, LookupSubjects and Expand agree on every scenario. The
//! engine's own crates can be changed and proven against them without building RocksDB.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use dhow_engine::{CheckRequest, Engine, ExpandNode, ExpandTree, Options};
use dhow_tuples::{MemSnapshot, ObjectRef, Subject};
use dhow_validate::{load_file, run, Backend, InProcess, Outcome, Report};

/// Assertions that pass today (caveat-free ones); the 122 caveated ones are skipped.
const PASSING: usize = 289;
const SKIPPED: usize = 122;
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
    assert_eq!(
        (total.passed, total.skipped),
        (PASSING, SKIPPED),
        "{}",
        total.summary()
    );
}

/// Is `subject` in the userset `node`, following subject-set leaves with further expands?
fn expand_contains(
    engine: &Engine,
    reader: &MemSnapshot<'_>,
    node: &ExpandNode,
    subject: &Subject,
    visiting: &mut HashSet<(ObjectRef, String)>,
    opts: Options,
) -> bool {
    if subject.relation.as_deref() == Some(node.relation.as_str())
        && subject.object == node.resource
    {
        return true;
    }
    match &node.tree {
        ExpandTree::Leaf(subjects) => subjects.iter().any(|s| {
            if s == subject
                || (s.is_wildcard()
                    && subject.relation.is_none()
                    && s.object.object_type == subject.object.object_type)
            {
                return true;
            }
            let Some(rel) = &s.relation else {
                return false;
            };
            let key = (s.object.clone(), rel.clone());
            if !visiting.insert(key.clone()) {
                return false;
            }
            let sub = engine
                .expand(reader, &s.object, rel, opts.clone())
                .expect("expand of a stored subject set");
            let found = expand_contains(engine, reader, &sub, subject, visiting, opts.clone());
            visiting.remove(&key);
            found
        }),
        ExpandTree::Union(kids) => kids
            .iter()
            .any(|k| expand_contains(engine, reader, k, subject, visiting, opts.clone())),
        ExpandTree::Intersection(kids) => {
            !kids.is_empty()
                && kids
                    .iter()
                    .all(|k| expand_contains(engine, reader, k, subject, visiting, opts.clone()))
        }
        ExpandTree::Exclusion(a, b) => {
            expand_contains(engine, reader, a, subject, visiting, opts.clone())
                && !expand_contains(engine, reader, b, subject, visiting, opts)
        }
    }
}

#[test]
fn check_lookups_and_expand_agree() {
    let mut combinations = 0usize;
    let mut files_checked = 0;
    let mut disagreements = Vec::new();
    for path in conformance_files() {
        let file = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
        if file.relationships.iter().any(|(_, r)| r.caveat.is_some()) {
            continue;
        }
        let mut backend = InProcess::new();
        let rels: Vec<_> = file.relationships.iter().map(|(_, r)| r.clone()).collect();
        backend
            .load(&file.schema, &rels)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (engine, store) = backend.parts().expect("loaded");
        let reader = store.latest();
        let opts = Options::now();
        let schema = engine.schema().clone();
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
        for resource in &objects {
            let def = schema.definition(&resource.object_type).expect("retained");
            for perm in def.relations.keys().chain(def.permissions.keys()) {
                let tree = engine
                    .expand(&reader, resource, perm, opts.clone())
                    .expect("expand");
                for subject in &subjects {
                    combinations += 1;
                    let req = CheckRequest::new(resource.clone(), perm.clone(), subject.clone());
                    let check = engine
                        .check(&reader, &req, opts.clone())
                        .expect("check")
                        .allowed;
                    let lr = engine
                        .lookup_resources(
                            &reader,
                            &resource.object_type,
                            perm,
                            subject,
                            opts.clone(),
                        )
                        .expect("lookup_resources")
                        .contains(&resource.object_id);
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
                        .contains(subject);
                    let ex = expand_contains(
                        engine,
                        &reader,
                        &tree,
                        subject,
                        &mut HashSet::new(),
                        opts.clone(),
                    );
                    if !(check == lr && lr == ls && ls == ex) {
                        disagreements.push(format!(
                            "{}: {resource}#{perm}@{subject}: check={check} \
                             lookup_resources={lr} lookup_subjects={ls} expand={ex}",
                            path.display()
                        ));
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
    assert!(files_checked >= 53, "only {files_checked} files");
    assert!(combinations > 10_000, "only {combinations} combinations");
}

#[test]
fn a_wrong_assertion_fails() {
    // The runner must be able to fail: flip one known-true assertion.
    let text = "schema: |-\n  definition user {}\n  definition document {\n    relation viewer: user\n    permission view = viewer\n  }\nrelationships: |-\n  document:1#viewer@user:tom\nassertions:\n  assertTrue:\n    - document:1#view@user:ann\n  assertFalse:\n    - document:1#view@user:tom\n";
    let file = dhow_validate::load_str("inline.yaml", text, None).unwrap();
    let (_, report) = run(&file, &mut InProcess::new());
    assert_eq!((report.passed, report.failed), (0, 2), "{report}");
    assert!(
        report.lines[0].contains("expected true, got false"),
        "{report}"
    );
}

//! For every conformance scenario, Check, LookupResources, LookupSubjects and Expand must
//! agree over every resource × permission × subject built from the file's objects (as
//! SpiceDB's own suite does).

use std::collections::{BTreeSet, HashSet};

use dhow_engine::{CheckRequest, Engine, ExpandNode, ExpandTree, Options};
use dhow_tests::conformance_files;
use dhow_tuples::{MemSnapshot, ObjectRef, Subject};
use dhow_validate::{load_file, Backend, InProcess};

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
            if s == subject {
                return true;
            }
            if s.is_wildcard()
                && subject.relation.is_none()
                && s.object.object_type == subject.object.object_type
            {
                return true;
            }
            match &s.relation {
                Some(rel) => {
                    let key = (s.object.clone(), rel.clone());
                    if !visiting.insert(key.clone()) {
                        return false;
                    }
                    let sub = engine
                        .expand(reader, &s.object, rel, opts)
                        .expect("expand of a stored subject set");
                    let r = expand_contains(engine, reader, &sub, subject, visiting, opts);
                    visiting.remove(&key);
                    r
                }
                None => false,
            }
        }),
        ExpandTree::Union(kids) => kids
            .iter()
            .any(|k| expand_contains(engine, reader, k, subject, visiting, opts)),
        ExpandTree::Intersection(kids) => {
            !kids.is_empty()
                && kids
                    .iter()
                    .all(|k| expand_contains(engine, reader, k, subject, visiting, opts))
        }
        ExpandTree::Exclusion(a, b) => {
            expand_contains(engine, reader, a, subject, visiting, opts)
                && !expand_contains(engine, reader, b, subject, visiting, opts)
        }
    }
}

#[test]
fn check_lookup_and_expand_agree() {
    let mut files_checked = 0;
    let mut combinations = 0usize;
    let mut disagreements = Vec::new();
    for path in conformance_files() {
        let file = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
        if file.relationships.iter().any(|(_, r)| r.caveat.is_some()) {
            continue; // caveats are not evaluated yet
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

        // Objects: every resource and subject in the file, plus one stranger per type.
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
            let names: Vec<&String> = def.relations.keys().chain(def.permissions.keys()).collect();
            for perm in names {
                let tree = engine
                    .expand(&reader, resource, perm, opts)
                    .expect("expand");
                for subject in &subjects {
                    combinations += 1;
                    let req = CheckRequest::new(resource.clone(), perm.clone(), subject.clone());
                    let check = engine.check(&reader, &req, opts).expect("check").allowed;
                    let lr = engine
                        .lookup_resources(&reader, &resource.object_type, perm, subject, opts)
                        .expect("lookup_resources")
                        .contains(&resource.object_id);
                    let ls = engine
                        .lookup_subject_set(
                            &reader,
                            resource,
                            perm,
                            &subject.object.object_type,
                            subject.relation.as_deref(),
                            opts,
                        )
                        .expect("lookup_subjects")
                        .contains(subject);
                    let ex =
                        expand_contains(engine, &reader, &tree, subject, &mut HashSet::new(), opts);
                    if !(check == lr && lr == ls && ls == ex) {
                        disagreements.push(format!(
                            "{}: {resource}#{perm}@{subject}: check={check} lookup_resources={lr} \
                             lookup_subjects={ls} expand={ex}",
                            path.file_name().unwrap().to_string_lossy()
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
        disagreements
            .iter()
            .take(40)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        files_checked >= 53,
        "only {files_checked} files cross-checked"
    );
    assert!(combinations > 10_000, "only {combinations} combinations");
    eprintln!("cross-checked {combinations} combinations over {files_checked} files");
}

//! Running a loaded validation file against a backend: assertions and expected relations,
//! one report line per failure or skip, and the counts.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use dhow_engine::{CaveatContext, CheckRequest, Engine, FoundSubject, Options, Permissionship};
use dhow_tuples::{MemStore, ObjectRef, Relationship, Subject, WriteOp};

use crate::load::{AssertionKind, ValidationFile};

/// Where a validation file is run: in-process, or against a live server.
pub trait Backend {
    /// Replaces the schema and loads the relationships. Errors are reported as load failures.
    fn load(&mut self, schema: &str, relationships: &[Relationship]) -> Result<(), String>;
    /// Names of the object types the loaded schema defines.
    fn types(&self) -> Vec<String>;
    /// Does `subject` have `permission` on `resource`?
    fn check(
        &mut self,
        resource: &ObjectRef,
        permission: &str,
        subject: &Subject,
    ) -> Result<bool, String>;
    /// Does `subject` have `permission` on `resource` with the caveat `context`: allowed,
    /// denied, or conditional on missing context? The default asks [`Backend::check`], so a
    /// backend that cannot send a context or tell a conditional answer fails the assertions
    /// that need them.
    fn check_with_context(
        &mut self,
        resource: &ObjectRef,
        permission: &str,
        subject: &Subject,
        context: Option<&CaveatContext>,
    ) -> Result<Permissionship, String> {
        if context.is_some() {
            return Err("this backend cannot send a caveat context".to_string());
        }
        Ok(match self.check(resource, permission, subject)? {
            true => Permissionship::Allowed,
            false => Permissionship::Denied,
        })
    }
    /// The subjects of one type (and subject relation) with `permission` on `resource`.
    fn lookup_subjects(
        &mut self,
        resource: &ObjectRef,
        permission: &str,
        subject_type: &str,
        subject_relation: Option<&str>,
    ) -> Result<Vec<FoundSubject>, String>;
}

/// The engine over an in-memory store, in this process.
#[derive(Default)]
pub struct InProcess {
    state: Option<(Engine, MemStore)>,
}

impl InProcess {
    pub fn new() -> Self {
        Self::default()
    }

    /// The engine and store after `load`, for callers that want to query further.
    pub fn parts(&self) -> Option<(&Engine, &MemStore)> {
        self.state.as_ref().map(|(e, s)| (e, s))
    }

    fn parts_or_err(&self) -> Result<(&Engine, &MemStore), String> {
        self.parts().ok_or_else(|| "nothing loaded".to_string())
    }
}

impl Backend for InProcess {
    fn load(&mut self, schema: &str, relationships: &[Relationship]) -> Result<(), String> {
        let schema = dhow_schema::compile(schema).map_err(|e| format!("schema: {e}"))?;
        let engine = Engine::new(Arc::new(schema));
        for r in relationships {
            engine.validate_relationship(r).map_err(|e| e.to_string())?;
        }
        let mut store = MemStore::new();
        let ops: Vec<WriteOp> = relationships.iter().cloned().map(WriteOp::Touch).collect();
        store.write(&ops).map_err(|e| e.to_string())?;
        self.state = Some((engine, store));
        Ok(())
    }

    fn types(&self) -> Vec<String> {
        self.parts()
            .map(|(e, _)| e.schema().definitions.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn check(
        &mut self,
        resource: &ObjectRef,
        permission: &str,
        subject: &Subject,
    ) -> Result<bool, String> {
        self.check_with_context(resource, permission, subject, None)
            .map(|p| p.is_allowed())
    }

    fn check_with_context(
        &mut self,
        resource: &ObjectRef,
        permission: &str,
        subject: &Subject,
        context: Option<&CaveatContext>,
    ) -> Result<Permissionship, String> {
        let (engine, store) = self.parts_or_err()?;
        let mut req = CheckRequest::new(resource.clone(), permission, subject.clone());
        req.context = context.cloned();
        engine
            .check(&store.latest(), &req, Options::now())
            .map(|r| r.permissionship)
            .map_err(|e| e.to_string())
    }

    fn lookup_subjects(
        &mut self,
        resource: &ObjectRef,
        permission: &str,
        subject_type: &str,
        subject_relation: Option<&str>,
    ) -> Result<Vec<FoundSubject>, String> {
        let (engine, store) = self.parts_or_err()?;
        engine
            .lookup_subjects(
                &store.latest(),
                resource,
                permission,
                subject_type,
                subject_relation,
                Options::now(),
            )
            .map_err(|e| e.to_string())
    }
}

/// What happened to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The file could not be loaded (schema or relationships refused).
    LoadFailed(String),
    /// Assertions and expected relations ran.
    Ran,
}

/// The result of running one or more files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Files that could not be loaded.
    pub load_failures: usize,
    /// One line per failed or skipped assertion, and per load failure.
    pub lines: Vec<String>,
}

impl Report {
    /// Adds another report's counts and lines.
    pub fn merge(&mut self, other: Report) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.load_failures += other.load_failures;
        self.lines.extend(other.lines);
    }

    /// True when nothing failed and every file loaded.
    pub fn ok(&self) -> bool {
        self.failed == 0 && self.load_failures == 0
    }

    /// The closing line: `N passed, M failed` (plus `, K skipped` if any).
    pub fn summary(&self) -> String {
        let mut s = format!("{} passed, {} failed", self.passed, self.failed);
        if self.skipped > 0 {
            s.push_str(&format!(", {} skipped", self.skipped));
        }
        s
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.lines {
            writeln!(f, "{l}")?;
        }
        write!(f, "{}", self.summary())
    }
}

fn render(found: &[FoundSubject]) -> String {
    let items: Vec<String> = found
        .iter()
        .map(|f| {
            let marker = if f.missing.is_empty() { "" } else { "[...]" };
            if f.excluded.is_empty() {
                format!("{}{marker}", f.subject)
            } else {
                let ex: Vec<String> = f.excluded.iter().map(|s| s.to_string()).collect();
                format!("{}{marker} - {{{}}}", f.subject, ex.join(", "))
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// Found subjects with only whether they are conditional (a validation file marks that, not
/// which parameters are missing), sorted.
fn marked(found: &[FoundSubject]) -> Vec<FoundSubject> {
    let mut out: Vec<FoundSubject> = found
        .iter()
        .map(|f| FoundSubject {
            subject: f.subject.clone(),
            excluded: f.excluded.clone(),
            missing: if f.missing.is_empty() {
                Vec::new()
            } else {
                vec![crate::load::MARKER.to_string()]
            },
        })
        .collect();
    out.sort();
    out
}

fn describe(p: &Permissionship) -> String {
    match p {
        Permissionship::Allowed => "allowed".to_string(),
        Permissionship::Denied => "denied".to_string(),
        Permissionship::Conditional { missing } => {
            format!("conditional (missing {})", missing.join(", "))
        }
    }
}

/// Runs one loaded file on `backend`.
pub fn run(file: &ValidationFile, backend: &mut dyn Backend) -> (Outcome, Report) {
    let mut report = Report::default();
    let rels: Vec<Relationship> = file.relationships.iter().map(|(_, r)| r.clone()).collect();
    if let Err(e) = backend.load(&file.schema, &rels) {
        let msg = format!("LOAD FAILED {}: {e}", file.path);
        report.load_failures = 1;
        report.lines.push(msg.clone());
        return (Outcome::LoadFailed(msg), report);
    }
    for a in &file.assertions {
        let at = format!("{}:{}", file.path, a.line);
        let context = match a.context.as_deref().map(CaveatContext::from_json) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                report.failed += 1;
                report.lines.push(format!(
                    "FAIL {at}: {} {}: invalid context: {e}",
                    a.kind.key(),
                    a.text
                ));
                continue;
            }
        };
        let expected = match a.kind {
            AssertionKind::True => "allowed",
            AssertionKind::False => "denied",
            AssertionKind::Caveated => "conditional",
        };
        match backend.check_with_context(&a.resource, &a.permission, &a.subject, context.as_ref()) {
            Ok(got)
                if matches!(
                    (a.kind, &got),
                    (AssertionKind::True, Permissionship::Allowed)
                        | (AssertionKind::False, Permissionship::Denied)
                        | (AssertionKind::Caveated, Permissionship::Conditional { .. })
                ) =>
            {
                report.passed += 1
            }
            Ok(got) => {
                report.failed += 1;
                report.lines.push(format!(
                    "FAIL {at}: {} {}: expected {expected}, got {}",
                    a.kind.key(),
                    a.text,
                    describe(&got)
                ));
            }
            Err(e) => {
                report.failed += 1;
                report.lines.push(format!(
                    "FAIL {at}: {} {}: expected {expected}, got error: {e}",
                    a.kind.key(),
                    a.text
                ));
            }
        }
    }
    for ex in &file.expected {
        let at = format!("{}:{}", file.path, ex.line);
        let name = format!("{}#{}", ex.resource, ex.permission);
        // Compare over plain subjects of every type, and over each subject-set shape expected.
        let mut shapes: BTreeSet<(String, Option<String>)> =
            backend.types().into_iter().map(|t| (t, None)).collect();
        for s in &ex.subjects {
            shapes.insert((
                s.subject.object.object_type.clone(),
                s.subject.relation.clone(),
            ));
        }
        let mut got = Vec::new();
        let mut error = None;
        for (t, r) in &shapes {
            match backend.lookup_subjects(&ex.resource, &ex.permission, t, r.as_deref()) {
                Ok(found) => got.extend(found),
                Err(e) => error = Some(e),
            }
        }
        let got = marked(&got);
        let want = marked(&ex.subjects);
        match error {
            Some(e) => {
                report.failed += 1;
                report
                    .lines
                    .push(format!("FAIL {at}: validation {name}: got error: {e}"));
            }
            None if got == want => report.passed += 1,
            None => {
                report.failed += 1;
                report.lines.push(format!(
                    "FAIL {at}: validation {name}: expected {}, got {}",
                    render(&want),
                    render(&got)
                ));
            }
        }
    }
    (Outcome::Ran, report)
}

//! `dhow validate FILE...`: runs zed validation files in-process, or against a live server
//! through the gRPC API with `--endpoint`, and prints the failures and the counts.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use dhow_validate::{load_file, run as run_file, InProcess, Report};

use crate::commands::validate_remote::Remote;

/// Runs the files; exit code 0 when every file loaded and every assertion passed.
pub fn run(files: &[PathBuf], verbose: bool, endpoint: Option<&str>) -> ExitCode {
    let mut remote = match endpoint.map(Remote::connect).transpose() {
        Ok(r) => r,
        Err(e) => return e.report(),
    };
    let mut total = Report::default();
    // Printing stops quietly if stdout is closed (e.g. piped into `head`).
    let mut stdout = std::io::stdout().lock();
    for path in files {
        match load_file(path) {
            Ok(file) => {
                let (_, report) = match remote.as_mut() {
                    Some(r) => run_file(&file, r),
                    None => run_file(&file, &mut InProcess::new()),
                };
                total.merge(report);
            }
            Err(e) => {
                total.load_failures += 1;
                total.lines.push(format!("LOAD FAILED {e}"));
            }
        }
    }
    for line in &total.lines {
        if verbose || !line.starts_with("SKIP ") {
            let _ = writeln!(stdout, "{line}");
        }
    }
    if !verbose && total.skipped > 0 {
        let reasons: std::collections::BTreeSet<&str> = total
            .lines
            .iter()
            .filter(|l| l.starts_with("SKIP "))
            .filter_map(|l| l.rsplit(": ").next())
            .collect();
        let reasons: Vec<&str> = reasons.into_iter().collect();
        let _ = writeln!(
            stdout,
            "skipped {} ({}; --verbose lists them)",
            total.skipped,
            reasons.join("; ")
        );
    }
    if total.load_failures > 0 {
        let _ = writeln!(
            stdout,
            "{} file(s) could not be loaded",
            total.load_failures
        );
    }
    let _ = writeln!(stdout, "{}", total.summary());
    if total.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

//! The `dhow` binary. For now: `dhow validate FILE.yaml...`, which runs zed validation files
//! in-process. `serve` and the client commands arrive with the server.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dhow_validate::{load_file, run, InProcess, Report};

#[derive(Parser)]
#[command(
    name = "dhow",
    version,
    about = "Dhow: a Zanzibar-style authorization service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run zed validation files (schema, relationships, assertions, expected relations).
    Validate {
        /// Validation files (YAML, zed's format).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also print skipped assertions.
        #[arg(long)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { files, verbose } => validate(&files, verbose),
    }
}

fn validate(files: &[PathBuf], verbose: bool) -> ExitCode {
    let mut total = Report::default();
    for path in files {
        match load_file(path) {
            Ok(file) => {
                let (_, report) = run(&file, &mut InProcess::new());
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
            println!("{line}");
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
        println!(
            "skipped {} ({}; --verbose lists them)",
            total.skipped,
            reasons.join("; ")
        );
    }
    if total.load_failures > 0 {
        println!("{} file(s) could not be loaded", total.load_failures);
    }
    println!("{}", total.summary());
    if total.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

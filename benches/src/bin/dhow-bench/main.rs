//! `dhow-bench`: Dhow's end-to-end load generator against a running server or cluster
//! (`load`, `check`, `write`, `health`), kept out of the `dhow` binary that ships.

mod e2e;

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "dhow-bench",
    version,
    about = "End-to-end benchmark of a running Dhow server: load a synthetic data set, then time Check, Write or health calls"
)]
struct Cli {
    #[command(subcommand)]
    command: e2e::BenchCommand,
}

fn main() -> ExitCode {
    // Usage errors exit 1 like every local error (2 is kept for errors from the server).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 1 } else { 0 });
        }
    };
    match e2e::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

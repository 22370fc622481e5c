//! The `dhow` binary: clap definitions and dispatch over the `dhow` library (`serve`, the
//! client commands, `validate`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dhow::{commands, compact, serve, validate};

/// mimalloc for every Rust allocation of the binary (the server's read path allocates a lot of
/// small keys and relationships; glibc's malloc and free took about a quarter of its CPU).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "dhow",
    version,
    about = "Dhow: a Zanzibar-style authorization service",
    after_help = commands::AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run a Dhow node (a one-node cluster on ./data by default).
    Serve(serve::ServeArgs),
    #[command(flatten)]
    Client(commands::ClientCommand),
    /// Compact a stopped node's data dir fully (every column family rewritten into its last
    /// level) and print its size before and after. The node must not be running.
    Compact {
        /// The node's data dir (the one `serve --data-dir` was given).
        #[arg(long, value_name = "DIR", default_value = "./data")]
        data_dir: PathBuf,
    },
    /// Run zed validation files (schema, relationships, assertions, expected relations),
    /// in-process, or against a live server with --endpoint.
    Validate {
        /// Validation files (YAML, zed's format).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also print skipped assertions.
        #[arg(long)]
        verbose: bool,
        /// Run against the server at this gRPC address instead of in-process. Each file
        /// replaces the server's schema and deletes all its relationships: use a scratch
        /// server.
        #[arg(long, value_name = "URL")]
        endpoint: Option<String>,
    },
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
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Client(c) => commands::run(c),
        Command::Compact { data_dir } => compact::run(&data_dir),
        Command::Validate {
            files,
            verbose,
            endpoint,
        } => validate::run(&files, verbose, endpoint.as_deref()),
    }
}

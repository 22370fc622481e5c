//! The client commands of the `dhow` binary (zed-like: schema, rel, check, expand, lookups,
//! watch, cluster, health). Connecting, errors, exit codes and output are `dhow_client`'s; the
//! conversions to and from the wire are `dhow_wire`'s.

pub mod args;
mod audit;
mod cluster;
pub mod format;
mod health;
mod permission;
mod rel;
mod schema;
pub mod validate_remote;
mod watch;

use std::process::ExitCode;

use clap::Subcommand;

pub use audit::AuditArgs;
pub use cluster::ClusterCommand;
pub use health::HealthArgs;
pub use permission::{CheckArgs, ExpandArgs, LookupResourcesArgs, LookupSubjectsArgs};
pub use rel::RelCommand;
pub use schema::SchemaCommand;
pub use watch::WatchArgs;

/// The closing text of `dhow --help`: output conventions and exit codes.
pub const AFTER_HELP: &str = "Client commands reach the server at --endpoint (or DHOW_ENDPOINT; \
default http://127.0.0.1:50051). A write prints its consistency token on stdout; other commands \
print their results on stdout and `token: TOKEN` on stderr. Exit codes: 0 success (whatever a \
check answers), 1 local error (bad argument, unreadable file, unreachable endpoint), 2 error \
returned by the server.";

/// The client commands, flattened into the binary's top-level subcommands.
#[derive(Subcommand)]
pub enum ClientCommand {
    /// Write or read the schema.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Create, touch, delete, read, import and export relationships.
    #[command(subcommand, alias = "relationship")]
    Rel(RelCommand),
    /// Check whether a subject has a permission on a resource (prints true or false).
    Check(CheckArgs),
    /// Print the tree of subjects and rewrites that make up a permission of a resource.
    Expand(ExpandArgs),
    /// List the resources of a type on which a subject has a permission.
    #[command(alias = "lookup")]
    LookupResources(LookupResourcesArgs),
    /// List the subjects of a type that have a permission on a resource.
    LookupSubjects(LookupSubjectsArgs),
    /// Print relationship changes as they are committed (until Ctrl-C or --count).
    Watch(WatchArgs),
    /// Show and change the cluster's membership and leadership.
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Print the decision audit log of one or more nodes, merged by time.
    Audit(AuditArgs),
    /// Print the node's gRPC health; exit 0 only when SERVING (for probes).
    Health(HealthArgs),
}

/// Runs a client command to completion and reports its error, if any, on stderr.
pub fn run(cmd: ClientCommand) -> ExitCode {
    let result = match cmd {
        ClientCommand::Schema(c) => schema::run(c),
        ClientCommand::Rel(c) => rel::run(c),
        ClientCommand::Check(a) => permission::check(a),
        ClientCommand::Expand(a) => permission::expand(a),
        ClientCommand::LookupResources(a) => permission::lookup_resources(a),
        ClientCommand::LookupSubjects(a) => permission::lookup_subjects(a),
        ClientCommand::Watch(a) => watch::run(a),
        ClientCommand::Cluster(c) => cluster::run(c),
        ClientCommand::Audit(a) => audit::run(a),
        ClientCommand::Health(a) => health::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

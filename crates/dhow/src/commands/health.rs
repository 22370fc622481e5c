//! `dhow health`: the node's gRPC health (`grpc.health.v1`), for probes that have only the
//! `dhow` binary (the docker-compose healthcheck): prints the status and exits 0 only when it
//! is SERVING.

use clap::Args;
use dhow_client::{block_on, CliError, Conn, ConnArgs, Out};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

#[derive(Args)]
pub struct HealthArgs {
    /// The health entry to ask: "" (the node: SERVING while it can serve, that is has an
    /// established leader and no fault), `liveness` (SERVING while the process serves), or a
    /// service such as dhow.v1.PermissionService.
    #[arg(long, default_value = "")]
    pub service: String,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Prints the status; an error (exit code 2, or 1 when unreachable) unless it is SERVING.
pub fn run(a: HealthArgs) -> Result<(), CliError> {
    block_on(async {
        let c = Conn::connect(&a.conn).await?;
        let status = HealthClient::new(c.channel.clone())
            .check(HealthCheckRequest {
                service: a.service.clone(),
            })
            .await
            .map_err(|s| c.err(s))?
            .into_inner()
            .status;
        let status = ServingStatus::try_from(status).unwrap_or(ServingStatus::Unknown);
        Out::new().line(status.as_str_name())?;
        if status == ServingStatus::Serving {
            Ok(())
        } else {
            let what = if a.service.is_empty() {
                "the node".to_string()
            } else {
                format!("`{}`", a.service)
            };
            Err(c.err(tonic::Status::unavailable(format!(
                "{what} is {} (see `dhow cluster status`)",
                status.as_str_name()
            ))))
        }
    })?
}

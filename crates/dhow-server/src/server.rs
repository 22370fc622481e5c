//! Serving: the four `dhow.v1` services, gRPC health (`grpc.health.v1`) and server
//! reflection (v1 and v1alpha) on one listener, with message size limits, a default request
//! deadline, a tracing span per request and graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use dhow_node::Node;
use dhow_proto::v1::audit_service_server::AuditServiceServer;
use dhow_proto::v1::cluster_service_server::ClusterServiceServer;
use dhow_proto::v1::permission_service_server::PermissionServiceServer;
use dhow_proto::v1::relationship_service_server::RelationshipServiceServer;
use dhow_proto::v1::schema_service_server::SchemaServiceServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::Server;
use tonic_health::ServingStatus;

use crate::auth::{AuthLayer, Authenticator};
use crate::config::Config;
use crate::service::{
    AuditSvc, ClusterSvc, Limits, PermissionSvc, RelationshipSvc, SchemaSvc, State,
};

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The gRPC transport failed (listener, HTTP/2).
    #[error("gRPC transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The reflection service could not be built from the descriptor sets.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The `[auth]` settings do not load (a key file, a JWKS, a digest).
    #[error("authentication: {0}")]
    Auth(String),
    /// The TLS files do not load.
    #[error("{0}")]
    Tls(#[from] dhow_tls::TlsError),
    /// The audit log's directory cannot be opened.
    #[error("audit log {path}: {error}")]
    Audit {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
}

/// The fully-qualified names of the public services (for health and reflection).
pub const SERVICE_NAMES: [&str; 5] = [
    dhow_proto::v1::audit_service_server::SERVICE_NAME,
    dhow_proto::v1::cluster_service_server::SERVICE_NAME,
    dhow_proto::v1::permission_service_server::SERVICE_NAME,
    dhow_proto::v1::relationship_service_server::SERVICE_NAME,
    dhow_proto::v1::schema_service_server::SERVICE_NAME,
];

/// Serves the public API of `node` on `listener` until `shutdown` completes, then stops
/// accepting, marks every service NOT_SERVING, ends Watch streams and drains in-flight calls.
pub async fn serve<N: Node>(
    node: Arc<N>,
    config: &Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let auth = Arc::new(Authenticator::from_settings(&config.auth).map_err(ServerError::Auth)?);
    let tls = match (&config.tls_cert_file, &config.tls_key_file) {
        (Some(cert), Some(key)) => Some(dhow_tls::ReloadingTls::load(dhow_tls::TlsFiles {
            cert_file: cert.clone(),
            key_file: key.clone(),
            client_ca_file: config.tls_client_ca_file.clone(),
            require_client_cert: false,
        })?),
        _ => None,
    };
    if auth.is_open() {
        tracing::warn!(
            "no authentication configured: every caller may read, write and administer this node (loopback only, or insecure_allow_unauthenticated_public_access)"
        );
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let limits = Limits {
        max_updates_per_write: config.max_updates_per_write,
        max_preconditions_per_write: config.max_preconditions_per_write,
        max_check_bulk_items: config.max_check_bulk_items,
        max_lookup_subjects_results: config.max_lookup_subjects_results,
        consistency_timeout: config.consistency_timeout,
    };
    let fault = node.fault();
    let mut state = State::new(node, limits, stop_rx.clone());
    state.node_id = config.node.node_id;
    if config.audit.mode != dhow_audit::Mode::Off {
        let path = config.node.data_dir.join("audit");
        let log = dhow_audit::AuditLog::open(&path, config.audit.clone())
            .map_err(|error| ServerError::Audit { path, error })?;
        state.audit = Some(Arc::new(log));
    }
    let state = Arc::new(state);
    let max = config.max_message_bytes;

    let (health, health_svc) = tonic_health::server::health_reporter();
    for name in SERVICE_NAMES {
        health
            .set_service_status(name, ServingStatus::Serving)
            .await;
    }

    tokio::spawn(report_faults(fault, health.clone(), stop_rx));

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dhow_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dhow_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;

    let permission = PermissionServiceServer::new(PermissionSvc::new(state.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let relationship = RelationshipServiceServer::new(RelationshipSvc::new(state.clone()))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let cluster = ClusterServiceServer::new(ClusterSvc::new(state.clone()));
    let audit =
        AuditServiceServer::new(AuditSvc::new(state.clone())).max_encoding_message_size(max);
    let schema = SchemaServiceServer::new(SchemaSvc::new(state))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);

    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: draining gRPC calls");
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        for name in SERVICE_NAMES {
            health
                .set_service_status(name, ServingStatus::NotServing)
                .await;
        }
        let _ = stop_tx.send(true);
    };

    let addr = listener.local_addr().ok();
    tracing::info!(?addr, tls = tls.is_some(), "serving dhow.v1");
    let router = Server::builder()
        .timeout(config.request_timeout)
        .max_concurrent_streams(Some(config.max_concurrent_streams))
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(crate::config::KEEPALIVE_TIMEOUT))
        .trace_fn(|req| tracing::info_span!("grpc", method = %req.uri().path()))
        .layer(AuthLayer::new(auth))
        .add_service(health_svc)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(permission)
        .add_service(relationship)
        .add_service(schema)
        .add_service(cluster)
        .add_service(audit);
    match tls {
        Some(tls) => {
            router
                .serve_with_incoming_shutdown(
                    dhow_tls::tls_incoming(
                        dhow_node::listen::accept(listener, config.connections),
                        tls,
                    ),
                    signal,
                )
                .await?
        }
        None => {
            router
                .serve_with_incoming_shutdown(
                    dhow_node::listen::incoming(listener, config.connections),
                    signal,
                )
                .await?
        }
    }
    Ok(())
}

/// Health follows the node: NOT_SERVING (the server and every service) while the node reports
/// a fault (it cannot apply what is committed), SERVING again once it clears; ends when the
/// server stops (shutdown has the last word) or the node is gone.
async fn report_faults(
    mut fault: watch::Receiver<Option<String>>,
    health: tonic_health::server::HealthReporter,
    mut stopping: watch::Receiver<bool>,
) {
    let mut serving = true;
    loop {
        let now = fault.borrow_and_update().clone();
        if *stopping.borrow() {
            return;
        }
        let status = match &now {
            Some(why) => {
                tracing::error!(fault = %why, "this node cannot apply: health NOT_SERVING");
                ServingStatus::NotServing
            }
            None if !serving => {
                tracing::warn!("the node applies again: health SERVING");
                ServingStatus::Serving
            }
            None => ServingStatus::Serving,
        };
        serving = now.is_none();
        health.set_service_status("", status).await;
        for name in SERVICE_NAMES {
            health.set_service_status(name, status).await;
        }
        tokio::select! {
            changed = fault.changed() => if changed.is_err() { return },
            _ = stopping.changed() => return,
        }
    }
}

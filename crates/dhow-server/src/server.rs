//! Serving: the four `dhow.v1` services, gRPC health (`grpc.health.v1`) and server
//! reflection (v1 and v1alpha) on one listener, with message size limits, a default request
//! deadline, a tracing span per request, one log line per refused or failed call
//! (`calllog.rs`) and graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhow_node::{Leadership, Node};
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
use crate::calllog::CallLogLayer;
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

/// The health entry of liveness (`grpc.health.v1` service name `liveness`, as Kubernetes
/// suggests for a liveness probe beside a readiness one on the same port): SERVING while the
/// server runs, whatever the cluster does, NOT_SERVING only once it shuts down. A probe that
/// restarts the process must ask this one: `""` and the `dhow.v1` services are readiness
/// (NOT_SERVING without a leader), and restarting a node does not bring a quorum back.
pub const LIVENESS_SERVICE: &str = "liveness";

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
        request_timeout: config.request_timeout,
    };
    let fault = node.fault();
    let leadership = node.leadership();
    let election_timeout = node.election_timeout();
    let mut state = State::new(node, limits, stop_rx.clone());
    state.node_id = config.node.node_id;
    if config.check_cache_bytes > 0 {
        let cache = Arc::new(crate::checkcache::CheckCache::new(config.check_cache_bytes));
        crate::metrics::global().set_check_cache(cache.clone());
        state.check_cache = Some(dhow_engine::Shared(cache));
    }
    if config.audit.mode != dhow_audit::Mode::Off {
        let path = config.node.data_dir.join("audit");
        let log = dhow_audit::AuditLog::open(&path, config.audit.clone())
            .map_err(|error| ServerError::Audit { path, error })?;
        state.audit = Some(Arc::new(log));
    }
    let state = Arc::new(state);
    let max = config.max_message_bytes;

    // Health is right before the first call can ask: NOT_SERVING until a leader is
    // established (a one-node cluster elects itself before the server starts).
    let (health, health_svc) = tonic_health::server::health_reporter();
    let mut readiness = Readiness {
        grace: election_timeout,
        had_leader: false,
        leaderless_since: None,
    };
    let (why, _) = readiness.evaluate(
        fault.borrow().as_deref(),
        *leadership.borrow(),
        Instant::now(),
    );
    if let Some(reason) = &why {
        tracing::warn!(%reason, "health NOT_SERVING");
    }
    set_health(&health, status_of(&why)).await;
    health
        .set_service_status(LIVENESS_SERVICE, ServingStatus::Serving)
        .await;
    tokio::spawn(report_readiness(
        fault,
        leadership,
        readiness,
        why,
        health.clone(),
        stop_rx,
    ));

    // The error details (`google.rpc.ErrorInfo`, `BadRequest`, ... and `google.rpc.Status`)
    // too, so that grpcurl and other reflection clients decode the details of an error.
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dhow_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dhow_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
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
        // Stop the readiness task first, so that it cannot set SERVING again.
        let _ = stop_tx.send(true);
        set_health(&health, ServingStatus::NotServing).await;
        health
            .set_service_status(LIVENESS_SERVICE, ServingStatus::NotServing)
            .await;
    };

    let addr = listener.local_addr().ok();
    tracing::info!(?addr, tls = tls.is_some(), "serving dhow.v1");
    let router = Server::builder()
        .max_concurrent_streams(Some(config.max_concurrent_streams))
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(crate::config::KEEPALIVE_TIMEOUT))
        // The call's span: with tracing on, the RPC span of the trace (`telemetry.rs`).
        .trace_fn(crate::telemetry::rpc_span)
        // Outermost: every call that does not end OK is logged once, with its method, code
        // and reason, authentication's refusals included.
        .layer(CallLogLayer::new(Some(config.request_timeout)))
        // The server's deadline of every call but Import (`deadline.rs`); the call log,
        // outside it, logs a call it ends.
        .layer(crate::deadline::DeadlineLayer::new(config.request_timeout))
        // A request that does not decode is the client's error, not INTERNAL.
        .layer(tower::util::MapResponseLayer::new(
            crate::malformed::rewrite,
        ))
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

/// Why this node cannot serve, if it cannot (health NOT_SERVING meanwhile): a fault (it
/// cannot apply what is committed), a snapshot being restored, or no established leader
/// (writes and fully consistent reads would fail): at start until the first one is known,
/// later once none has been for longer than `grace` (one election timeout, so that a normal
/// election does not flap it).
struct Readiness {
    grace: Duration,
    /// A leader was established once since the server started.
    had_leader: bool,
    /// Since when no leader is established (after one was).
    leaderless_since: Option<Instant>,
}

impl Readiness {
    /// Why not serving now (`None`: serving), and when to look again if that may change
    /// without a new value from the node (the grace ends).
    fn evaluate(
        &mut self,
        fault: Option<&str>,
        leadership: Leadership,
        now: Instant,
    ) -> (Option<String>, Option<Instant>) {
        let mut wake = None;
        let leaderless = if leadership.established() {
            self.had_leader = true;
            self.leaderless_since = None;
            None
        } else if !self.had_leader {
            Some(if leadership.leader == 0 {
                "no leader known yet (the first election has not ended)".to_string()
            } else {
                format!(
                    "leader {} known, but no entry of its term committed here yet (a new leader, or this node is catching up)",
                    leadership.leader
                )
            })
        } else {
            let since = *self.leaderless_since.get_or_insert(now);
            if now.duration_since(since) < self.grace {
                wake = Some(since + self.grace);
                None
            } else if leadership.leader == 0 {
                Some(format!(
                    "no leader known for longer than {:?} (cut off from the majority, or an election that does not end)",
                    self.grace
                ))
            } else {
                Some(format!(
                    "leader {} known, but no entry of its term committed here for longer than {:?} (this node is behind, or the leader has no quorum)",
                    leadership.leader, self.grace
                ))
            }
        };
        let why = if let Some(f) = fault {
            Some(format!("this node cannot apply: {f}"))
        } else if let Some(index) = leadership.restoring {
            Some(format!("restoring the snapshot at {index}"))
        } else if leaderless.is_some() {
            leaderless
        } else if leadership.out_of_touch {
            Some(format!(
                "nothing heard from leader {} for two election timeouts (cut off from the cluster)",
                leadership.leader
            ))
        } else if leadership.behind {
            Some(format!(
                "behind leader {}: more than {} committed entries not applied here yet (catching up)",
                leadership.leader,
                dhow_raft::MAX_LAG_ENTRIES
            ))
        } else {
            None
        };
        (why, wake)
    }
}

/// Health follows the node (see [`Readiness`]): NOT_SERVING (the server and every service)
/// while it cannot serve, SERVING again once it can; each change logged once at warn with its
/// reason (a fault at error). Ends when the server stops (shutdown has the last word) or the
/// node is gone.
async fn report_readiness(
    mut fault: watch::Receiver<Option<String>>,
    mut leadership: watch::Receiver<Leadership>,
    mut readiness: Readiness,
    mut why: Option<String>,
    health: tonic_health::server::HealthReporter,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        let now_fault = fault.borrow_and_update().clone();
        let now_leadership = *leadership.borrow_and_update();
        if *stopping.borrow() {
            return;
        }
        let (now_why, wake) =
            readiness.evaluate(now_fault.as_deref(), now_leadership, Instant::now());
        if now_why != why {
            match (&now_why, now_fault.is_some()) {
                (Some(reason), true) => {
                    tracing::error!(%reason, "health NOT_SERVING");
                }
                (Some(reason), false) => {
                    tracing::warn!(%reason, "health NOT_SERVING");
                }
                (None, _) => {
                    let was = why.as_deref().unwrap_or_default();
                    tracing::warn!(
                        leader = now_leadership.leader,
                        was,
                        "health SERVING: a leader is established and the node applies"
                    );
                }
            }
            if now_why.is_some() != why.is_some() {
                set_health(&health, status_of(&now_why)).await;
            }
            why = now_why;
        }
        let grace_ends = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = fault.changed() => if changed.is_err() { return },
            changed = leadership.changed() => if changed.is_err() { return },
            _ = stopping.changed() => return,
            _ = grace_ends => {}
        }
    }
}

fn status_of(why: &Option<String>) -> ServingStatus {
    match why {
        Some(_) => ServingStatus::NotServing,
        None => ServingStatus::Serving,
    }
}

/// Sets the server's ("") and every public service's status.
async fn set_health(health: &tonic_health::server::HealthReporter, status: ServingStatus) {
    crate::metrics::global().set_serving(status == ServingStatus::Serving);
    health.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        health.set_service_status(name, status).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn led(leader: u64) -> Leadership {
        Leadership {
            leader,
            committed_in_term: leader != 0,
            ..Leadership::default()
        }
    }

    #[test]
    fn readiness_waits_for_the_first_leader_then_allows_one_election_timeout_without_one() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(1);
        let mut r = Readiness {
            grace,
            had_leader: false,
            leaderless_since: None,
        };
        // At start: not ready until a leader is established (no grace).
        let (why, wake) = r.evaluate(None, led(0), t0);
        assert!(why.unwrap().contains("no leader known yet"));
        assert_eq!(wake, None);
        let elected_not_committed = Leadership {
            leader: 2,
            committed_in_term: false,
            ..Leadership::default()
        };
        assert!(r.evaluate(None, elected_not_committed, t0).0.is_some());
        assert_eq!(r.evaluate(None, led(2), t0), (None, None));
        // The leader is lost: still serving within the grace, with a wake-up at its end.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(r.evaluate(None, led(0), t1), (None, Some(t1 + grace)));
        let (why, _) = r.evaluate(None, led(0), t1 + grace);
        assert!(why.unwrap().contains("no leader known for longer than"));
        // A leader again: serving, and the next loss starts a new grace.
        assert_eq!(r.evaluate(None, led(3), t1 + grace * 2), (None, None));
        let t2 = t1 + grace * 3;
        assert_eq!(r.evaluate(None, led(0), t2), (None, Some(t2 + grace)));
        // A fault or a restore wins, whatever the leader.
        let (why, _) = r.evaluate(Some("disk full"), led(3), t2);
        assert!(why.unwrap().contains("disk full"));
        let restoring = Leadership {
            restoring: Some(42),
            ..led(3)
        };
        let (why, _) = r.evaluate(None, restoring, t2);
        assert!(why.unwrap().contains("restoring the snapshot at 42"));
    }

    #[test]
    fn a_follower_behind_or_cut_off_from_its_leader_is_not_ready() {
        let t0 = Instant::now();
        let mut r = Readiness {
            grace: Duration::from_secs(1),
            had_leader: true,
            leaderless_since: None,
        };
        assert_eq!(r.evaluate(None, led(2), t0), (None, None));
        let behind = Leadership {
            behind: true,
            ..led(2)
        };
        let (why, _) = r.evaluate(None, behind, t0);
        assert!(why.unwrap().contains("behind leader 2"));
        let cut_off = Leadership {
            out_of_touch: true,
            ..led(2)
        };
        let (why, _) = r.evaluate(None, cut_off, t0);
        assert!(why.unwrap().contains("nothing heard from leader 2"));
        // Caught up and in touch again: serving.
        assert_eq!(r.evaluate(None, led(2), t0), (None, None));
    }
}

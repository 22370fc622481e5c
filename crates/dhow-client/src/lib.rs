//! The client side of Dhow's command-line tools (`dhow`'s client commands and `dhow-bench`):
//! connecting to a server, the shared flags (`--endpoint`, consistency), client errors and
//! their exit codes, tokens and output.
//!
//! Output conventions: results go to stdout. A write (schema write, rel create, touch, delete,
//! import) prints its consistency token alone on stdout, so `TOKEN=$(dhow rel create ...)`
//! works; every other command prints its token on stderr as `token: TOKEN` after its
//! results, so its stdout stays pipeable (`dhow rel export >backup.txt`). Exit codes: 0 on
//! success (whatever a check answers), 1 for a local error (bad argument, unreadable file,
//! unreachable endpoint), 2 when the server returns an error.

use std::fmt::Display;
use std::future::Future;
use std::io::{self, BufWriter, Stdout, Write};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use dhow_proto::v1 as pb;
use tonic::transport::{Channel, Endpoint};

/// The endpoint used when neither `--endpoint` nor `DHOW_ENDPOINT` is given.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50051";

/// Where the server is, and how to reach it: TLS for an `https://` endpoint (never
/// plaintext), and the bearer token that says who is asking.
#[derive(Args, Clone, Debug, Default)]
pub struct ConnArgs {
    /// The server's gRPC address (`http://host:port`, or `https://host:port` for TLS;
    /// `host:port` means http).
    #[arg(
        long,
        env = "DHOW_ENDPOINT",
        default_value = DEFAULT_ENDPOINT,
        value_name = "URL"
    )]
    pub endpoint: String,
    /// A bearer token sent as `authorization: Bearer TOKEN` (a preshared key or a JWT).
    #[arg(long, env = "DHOW_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The CA (PEM) that signs the server's certificate, for an https endpoint (default:
    /// none; give one, or --insecure).
    #[arg(long, env = "DHOW_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// With https: accept any server certificate (self-signed test setups). The connection is
    /// encrypted but the server is not authenticated.
    #[arg(long)]
    pub insecure: bool,
}

impl ConnArgs {
    /// The same credentials and trust for another endpoint.
    pub fn with_endpoint(&self, endpoint: &str) -> ConnArgs {
        ConnArgs {
            endpoint: endpoint.to_string(),
            ..self.clone()
        }
    }

    /// An endpoint with the token and CA of the environment (`DHOW_TOKEN`, `DHOW_TLS_CA`),
    /// for commands that take only `--endpoint`.
    pub fn from_env(endpoint: &str) -> ConnArgs {
        ConnArgs {
            endpoint: endpoint.to_string(),
            token: std::env::var("DHOW_TOKEN").ok().filter(|t| !t.is_empty()),
            tls_ca: std::env::var_os("DHOW_TLS_CA").map(Into::into),
            insecure: false,
        }
    }
}

/// Adds `authorization: Bearer TOKEN` to every call of a connection that has a token.
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

/// A channel whose calls carry the connection's bearer token.
pub type AuthChannel = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

/// How fresh a read must be. At most one of these; the default is minimize-latency.
#[derive(Args, Clone, Debug, Default)]
#[group(multiple = false)]
pub struct ConsistencyArgs {
    /// Evaluate at the serving node's newest revision, or at the cluster's newest.
    #[arg(long, value_enum, value_name = "MODE")]
    pub consistency: Option<ConsistencyMode>,
    /// Evaluate at a revision at least as new as TOKEN (e.g. the token of a write).
    #[arg(long, value_name = "TOKEN")]
    pub at_least_as_fresh: Option<String>,
    /// Evaluate at exactly the revision of TOKEN.
    #[arg(long, value_name = "TOKEN")]
    pub at_exact_snapshot: Option<String>,
}

/// The value of `--consistency`.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsistencyMode {
    /// The serving node's newest applied revision (may be stale); the default.
    MinimizeLatency,
    /// The newest revision committed by the cluster (a read through the leader).
    FullyConsistent,
}

impl ConsistencyArgs {
    /// The proto `Consistency`; `None` (the server's default, minimize latency) when no flag
    /// is given.
    pub fn to_proto(&self) -> Option<pb::Consistency> {
        use pb::consistency::Requirement;
        let token = |t: &String| pb::ConsistencyToken { token: t.clone() };
        let requirement = if let Some(t) = &self.at_least_as_fresh {
            Requirement::AtLeastAsFresh(token(t))
        } else if let Some(t) = &self.at_exact_snapshot {
            Requirement::AtExactSnapshot(token(t))
        } else {
            match self.consistency? {
                ConsistencyMode::MinimizeLatency => Requirement::MinimizeLatency(true),
                ConsistencyMode::FullyConsistent => Requirement::FullyConsistent(true),
            }
        };
        Some(pb::Consistency {
            requirement: Some(requirement),
        })
    }
}

/// An error of a client command.
#[derive(Debug)]
pub enum CliError {
    /// Bad input or a local failure (file, terminal): exit code 1.
    Local(String),
    /// The endpoint could not be reached: exit code 1.
    Connect { endpoint: String, message: String },
    /// The server returned an error: exit code 2.
    Server {
        endpoint: String,
        status: tonic::Status,
    },
    /// Stdout was closed (e.g. piped into `head`): stop quietly, exit code 0.
    BrokenPipe,
}

impl CliError {
    /// The one line printed on stderr (after `error: `).
    pub fn message(&self) -> String {
        match self {
            CliError::Local(m) => m.clone(),
            CliError::Connect { endpoint, message } => {
                format!("cannot reach the server at {endpoint}: {message}")
            }
            CliError::Server { endpoint, status } => status_message(endpoint, status),
            CliError::BrokenPipe => String::new(),
        }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Local(_) | CliError::Connect { .. } => 1,
            CliError::Server { .. } => 2,
            CliError::BrokenPipe => 0,
        }
    }

    /// Prints the error on stderr and returns the exit code.
    pub fn report(self) -> ExitCode {
        if !matches!(self, CliError::BrokenPipe) {
            eprintln!("error: {}", self.message());
        }
        ExitCode::from(self.exit_code())
    }
}

impl From<String> for CliError {
    fn from(m: String) -> Self {
        CliError::Local(m)
    }
}

/// The canonical upper-case name of a gRPC code, e.g. `FAILED_PRECONDITION`.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// `CODE: message (reason: REASON)`, with the endpoint when the server could not be reached.
pub fn status_message(endpoint: &str, status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let mut s = format!("{}: {}", code_name(status.code()), status.message().trim());
    if let Some(info) = status.get_details_error_info() {
        if !info.reason.is_empty() {
            s.push_str(&format!(" (reason: {})", info.reason));
        }
    }
    if matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
    ) {
        s.push_str(&format!(" (endpoint {endpoint})"));
    }
    s
}

/// Adds `http://` to an endpoint given as `host:port`.
pub fn normalize_endpoint(endpoint: &str) -> String {
    let e = endpoint.trim();
    if e.contains("://") {
        e.to_string()
    } else {
        format!("http://{e}")
    }
}

/// The innermost cause of an error: for a refused connection, `Connection refused (os error
/// 111)` rather than `transport error`.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// A connected gRPC channel, the token its calls carry, and the endpoint it reaches (for
/// error messages).
#[derive(Clone)]
pub struct Conn {
    pub endpoint: String,
    pub channel: Channel,
    bearer: Bearer,
}

impl Conn {
    /// Connects eagerly, so that an unreachable endpoint is reported as such. An `https://`
    /// endpoint is TLS, verified with `--tls-ca` (or not at all with `--insecure`); it is
    /// never sent in clear.
    pub async fn connect(args: &ConnArgs) -> Result<Conn, CliError> {
        let endpoint = args.endpoint.as_str();
        let uri = normalize_endpoint(endpoint);
        let bad = |e: String| CliError::Local(format!("invalid endpoint `{endpoint}`: {e}"));
        let bearer = match &args.token {
            Some(t) => Bearer(Some(format!("Bearer {}", t.trim()).parse().map_err(
                |_| CliError::Local("the token is not valid header text".into()),
            )?)),
            None => Bearer(None),
        };
        let tls = uri.starts_with("https://");
        if !tls && (args.tls_ca.is_some() || args.insecure) {
            return Err(CliError::Local(format!(
                "--tls-ca and --insecure need an https:// endpoint (got `{endpoint}`)"
            )));
        }
        // The connector below does TLS itself; tonic dials the address in plain form.
        let dial = if tls {
            uri.replacen("https://", "http://", 1)
        } else {
            uri.clone()
        };
        let ep = Endpoint::from_shared(dial)
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(5));
        let connected = if tls {
            let trust = match (&args.tls_ca, args.insecure) {
                (Some(ca), _) => dhow_tls::Trust::Ca(ca.clone()),
                (None, true) => dhow_tls::Trust::Insecure,
                (None, false) => {
                    return Err(CliError::Local(format!(
                        "{endpoint} is TLS: give the CA that signs its certificate with --tls-ca FILE (or DHOW_TLS_CA), or --insecure for a self-signed test server"
                    )))
                }
            };
            let config = dhow_tls::client_config(&trust, None)
                .map_err(|e| CliError::Local(e.to_string()))?;
            ep.connect_with_connector(dhow_tls::TlsConnector::new(config))
                .await
        } else {
            ep.connect().await
        };
        match connected {
            Ok(channel) => Ok(Conn {
                endpoint: uri,
                channel,
                bearer,
            }),
            Err(e) => Err(CliError::Connect {
                endpoint: uri,
                message: root_cause(&e),
            }),
        }
    }

    /// The channel with the bearer token on every call.
    pub fn authed(&self) -> AuthChannel {
        tonic::service::interceptor::InterceptedService::new(
            self.channel.clone(),
            self.bearer.clone(),
        )
    }

    /// Wraps a status returned by this connection's server.
    pub fn err(&self, status: tonic::Status) -> CliError {
        CliError::Server {
            endpoint: self.endpoint.clone(),
            status,
        }
    }

    pub fn schema(&self) -> pb::schema_service_client::SchemaServiceClient<AuthChannel> {
        pb::schema_service_client::SchemaServiceClient::new(self.authed())
    }

    pub fn relationships(
        &self,
    ) -> pb::relationship_service_client::RelationshipServiceClient<AuthChannel> {
        pb::relationship_service_client::RelationshipServiceClient::new(self.authed())
            .max_decoding_message_size(64 * 1024 * 1024)
    }

    pub fn cluster(&self) -> pb::cluster_service_client::ClusterServiceClient<AuthChannel> {
        pb::cluster_service_client::ClusterServiceClient::new(self.authed())
    }

    pub fn audit(&self) -> pb::audit_service_client::AuditServiceClient<AuthChannel> {
        pb::audit_service_client::AuditServiceClient::new(self.authed())
            .max_decoding_message_size(64 * 1024 * 1024)
    }

    pub fn permissions(
        &self,
    ) -> pb::permission_service_client::PermissionServiceClient<AuthChannel> {
        pb::permission_service_client::PermissionServiceClient::new(self.authed())
            .max_decoding_message_size(64 * 1024 * 1024)
    }
}

/// Runs a future on a fresh single-threaded runtime.
pub fn block_on<F: Future>(f: F) -> Result<F::Output, CliError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Local(format!("cannot start the async runtime: {e}")))?;
    Ok(rt.block_on(f))
}

/// The text of a token, or `(none)` when the server sent none.
pub fn token_text(t: Option<&pb::ConsistencyToken>) -> String {
    match t {
        Some(t) if !t.token.is_empty() => t.token.clone(),
        _ => "(none)".to_string(),
    }
}

/// Prints `token: TOKEN` on stderr (for reads, after their results).
pub fn print_read_token(t: Option<&pb::ConsistencyToken>) {
    eprintln!("token: {}", token_text(t));
}

/// Buffered stdout whose errors become [`CliError`]s instead of panics.
pub struct Out {
    w: BufWriter<Stdout>,
}

impl Out {
    pub fn new() -> Self {
        Out {
            w: BufWriter::new(io::stdout()),
        }
    }

    /// Writes one line.
    pub fn line(&mut self, s: impl Display) -> Result<(), CliError> {
        writeln!(self.w, "{s}").map_err(io_out_err)
    }

    /// Writes text as is.
    pub fn text(&mut self, s: &str) -> Result<(), CliError> {
        self.w.write_all(s.as_bytes()).map_err(io_out_err)
    }

    pub fn flush(&mut self) -> Result<(), CliError> {
        self.w.flush().map_err(io_out_err)
    }
}

impl Default for Out {
    fn default() -> Self {
        Self::new()
    }
}

fn io_out_err(e: io::Error) -> CliError {
    if e.kind() == io::ErrorKind::BrokenPipe {
        CliError::BrokenPipe
    } else {
        CliError::Local(format!("cannot write to stdout: {e}"))
    }
}

/// Reads a file argument, or stdin for `-`.
pub fn read_input(path: &std::path::Path) -> Result<String, CliError> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        io::Read::read_to_string(&mut io::stdin(), &mut s)
            .map_err(|e| CliError::Local(format!("cannot read stdin: {e}")))?;
        Ok(s)
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| CliError::Local(format!("cannot read {}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::consistency::Requirement;

    #[test]
    fn consistency_flags() {
        assert_eq!(ConsistencyArgs::default().to_proto(), None);
        let c = ConsistencyArgs {
            consistency: Some(ConsistencyMode::FullyConsistent),
            ..Default::default()
        };
        assert_eq!(
            c.to_proto().unwrap().requirement,
            Some(Requirement::FullyConsistent(true))
        );
        let c = ConsistencyArgs {
            consistency: Some(ConsistencyMode::MinimizeLatency),
            ..Default::default()
        };
        assert_eq!(
            c.to_proto().unwrap().requirement,
            Some(Requirement::MinimizeLatency(true))
        );
        let c = ConsistencyArgs {
            at_least_as_fresh: Some("abc".into()),
            ..Default::default()
        };
        assert_eq!(
            c.to_proto().unwrap().requirement,
            Some(Requirement::AtLeastAsFresh(pb::ConsistencyToken {
                token: "abc".into()
            }))
        );
        let c = ConsistencyArgs {
            at_exact_snapshot: Some("xyz".into()),
            ..Default::default()
        };
        assert_eq!(
            c.to_proto().unwrap().requirement,
            Some(Requirement::AtExactSnapshot(pb::ConsistencyToken {
                token: "xyz".into()
            }))
        );
    }

    #[test]
    fn endpoints_get_a_scheme() {
        assert_eq!(
            normalize_endpoint("localhost:50051"),
            "http://localhost:50051"
        );
        assert_eq!(normalize_endpoint("http://a:1"), "http://a:1");
        assert_eq!(normalize_endpoint("https://a:1"), "https://a:1");
    }

    #[test]
    fn status_messages() {
        let s = tonic::Status::failed_precondition("unknown relation `document#nope`");
        assert_eq!(
            status_message("http://x:1", &s),
            "FAILED_PRECONDITION: unknown relation `document#nope`"
        );
        let s = tonic::Status::unavailable("no quorum");
        assert_eq!(
            status_message("http://x:1", &s),
            "UNAVAILABLE: no quorum (endpoint http://x:1)"
        );
        use tonic_types::{ErrorDetails, StatusExt};
        let s = tonic::Status::with_error_details(
            tonic::Code::InvalidArgument,
            "bad resource type",
            ErrorDetails::with_error_info("INVALID_NAME", "dhow", []),
        );
        assert_eq!(
            status_message("http://x:1", &s),
            "INVALID_ARGUMENT: bad resource type (reason: INVALID_NAME)"
        );
        let e = CliError::Server {
            endpoint: "http://x:1".into(),
            status: s,
        };
        assert_eq!(e.exit_code(), 2);
        assert_eq!(CliError::Local("x".into()).exit_code(), 1);
    }

    #[test]
    fn token_texts() {
        assert_eq!(token_text(None), "(none)");
        assert_eq!(
            token_text(Some(&pb::ConsistencyToken { token: "".into() })),
            "(none)"
        );
        assert_eq!(
            token_text(Some(&pb::ConsistencyToken { token: "t1".into() })),
            "t1"
        );
    }
}

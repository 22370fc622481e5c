//! TLS for Dhow's gRPC ports and clients. Servers: a configuration loaded from PEM files and
//! loaded again when they change (certificate rotation without a restart), optional or
//! required client certificates checked against a CA, and an accept stream that hands tonic
//! finished TLS connections, each handshake on a task of its own so that a slow or silent
//! client never holds up the others. Clients: a connector for tonic channels over rustls
//! (a CA of one's own, or none checked for self-signed test setups). Nodes: the peer port's
//! certificates name their node (`DNS:node-<id>`), and a node checks that name, not a
//! network address, when it dials a peer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the files are looked at for changes (at most; only when a client connects).
const RECHECK: Duration = Duration::from_secs(2);

/// Where a TLS server finds its certificate, key and (for client certificates) CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain, PEM.
    pub cert_file: PathBuf,
    /// The server's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Client certificates signed by this CA (PEM) are asked for and verified.
    pub client_ca_file: Option<PathBuf>,
    /// Refuse clients without a certificate (the peer port); otherwise a certificate is
    /// optional (the public API, where a bearer token may identify the caller instead).
    pub require_client_cert: bool,
}

/// Why a TLS configuration could not be loaded; names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TLS: {file}: {message}")]
pub struct TlsError {
    pub file: String,
    pub message: String,
}

fn err(file: &Path, message: impl std::fmt::Display) -> TlsError {
    TlsError {
        file: file.display().to_string(),
        message: message.to_string(),
    }
}

/// The crypto provider of every TLS configuration Dhow builds (ring).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads every certificate of a PEM file.
pub fn read_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| err(file, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(file, e))?;
    if certs.is_empty() {
        return Err(err(file, "no certificate in the file"));
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn read_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(file).map_err(|e| err(file, e))
}

/// The CA certificates of a PEM file as a root store.
pub fn read_roots(file: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in read_certs(file)? {
        roots.add(c).map_err(|e| err(file, e))?;
    }
    Ok(roots)
}

fn build(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let certs = read_certs(&files.cert_file)?;
    let key = read_key(&files.key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(&files.cert_file, e))?;
    let builder = match &files.client_ca_file {
        Some(ca) => {
            let roots = Arc::new(read_roots(ca)?);
            let v = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let v = if files.require_client_cert {
                v
            } else {
                v.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(v.build().map_err(|e| err(ca, e))?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| err(&files.key_file, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// A server configuration that follows its files: looked at again, at most every two
/// seconds, when a client connects; a change is loaded, and a change that does not load is
/// logged and the previous configuration kept.
pub struct ReloadingTls {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    seen: Mutex<(Instant, Vec<Stamp>)>,
}

/// A file's modification time and length, as last seen (`None`: not readable).
type Stamp = Option<(SystemTime, u64)>;

impl ReloadingTls {
    /// Loads the files now; an error names the file and what is wrong.
    pub fn load(files: TlsFiles) -> Result<Arc<ReloadingTls>, TlsError> {
        let config = build(&files)?;
        let stamps = Self::stamps(&files);
        Ok(Arc::new(ReloadingTls {
            files,
            current: ArcSwap::from_pointee(config),
            seen: Mutex::new((Instant::now(), stamps)),
        }))
    }

    fn stamps(files: &TlsFiles) -> Vec<Stamp> {
        let mut paths = vec![&files.cert_file, &files.key_file];
        paths.extend(files.client_ca_file.as_ref());
        paths.into_iter().map(|p| stamp(p)).collect()
    }

    /// The configuration in force, after loading the files again if they changed.
    pub fn config(&self) -> Arc<ServerConfig> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.0.elapsed() >= RECHECK {
            seen.0 = Instant::now();
            let now = Self::stamps(&self.files);
            if now != seen.1 {
                match build(&self.files) {
                    Ok(c) => {
                        self.current.store(Arc::new(c));
                        seen.1 = now;
                        tracing::info!(cert = %self.files.cert_file.display(), "TLS certificate files changed: loaded again");
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "TLS files changed but do not load: keeping the previous ones")
                    }
                }
            }
        }
        self.current.load_full()
    }
}

/// TLS over the connections `accepted` yields (TCP_NODELAY and any limits are the caller's),
/// each handshake done on its own task with a deadline; a connection whose handshake fails is
/// logged and dropped. Ends when the stream is dropped or `accepted` ends.
pub fn tls_incoming<S, IO>(
    accepted: S,
    tls: Arc<ReloadingTls>,
) -> impl Stream<Item = std::io::Result<TlsStream<IO>>>
where
    S: Stream<Item = (IO, SocketAddr)> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut accepted = std::pin::pin!(accepted);
        loop {
            let (stream, peer) = tokio::select! {
                a = accepted.next() => match a {
                    Some(a) => a,
                    None => return,
                },
                _ = tx.closed() => return,
            };
            let acceptor = TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(s)) => {
                        let _ = tx.send(Ok(s)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The identities a certificate names, as Dhow matches them: `CN=<common name>` for each
/// common name of its subject, and `DNS:<name>`, `URI:<uri>` for its subject alternative
/// names. Empty for a certificate that does not parse.
pub fn certificate_identities(cert: &CertificateDer<'_>) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut out: Vec<String> = parsed
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok())
        .map(|cn| format!("CN={cn}"))
        .collect();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => out.push(format!("DNS:{d}")),
                GeneralName::URI(u) => out.push(format!("URI:{u}")),
                _ => {}
            }
        }
    }
    out
}

/// The name a node's certificate carries on the peer port: `node-<id>`.
pub fn node_name(id: u64) -> String {
    format!("node-{id}")
}

/// The node id a peer certificate names (`DNS:node-<id>`, or `DNS:node-<id>.<domain>`, or
/// `CN=node-<id>`); `None` when it names none or several different ones.
pub fn node_id_of(cert: &CertificateDer<'_>) -> Option<u64> {
    let mut found: Option<u64> = None;
    for id in certificate_identities(cert) {
        let name = id
            .strip_prefix("DNS:")
            .or_else(|| id.strip_prefix("CN="))
            .unwrap_or("");
        let label = name.split('.').next().unwrap_or("");
        if let Some(n) = label
            .strip_prefix("node-")
            .and_then(|n| n.parse::<u64>().ok())
        {
            if n == 0 || found.is_some_and(|f| f != n) {
                return None;
            }
            found = Some(n);
        }
    }
    found
}

/// Checks a peer's server certificate: signed by the cluster CA and naming the node dialed
/// (`node-<id>`), or any node when the id is not known yet (asking a peer for the cluster id).
#[derive(Debug)]
struct NodeServerVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    expect: Option<u64>,
}

impl rustls::client::danger::ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let id = match self.expect {
            Some(id) => id,
            None => node_id_of(end_entity).ok_or_else(|| {
                rustls::Error::General("the peer's certificate names no node (node-<id>)".into())
            })?,
        };
        let name = rustls_pki_types::ServerName::try_from(node_name(id))
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        self.inner
            .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any server certificate (`--insecure`, for self-signed test setups only): the
/// connection is encrypted but the server is not authenticated.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Which servers a client trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// Servers whose certificate a CA in this PEM file signed, for the host dialed.
    Ca(PathBuf),
    /// Any server (encrypted, not authenticated).
    Insecure,
}

/// A client configuration: trust as given, and optionally a certificate of one's own.
pub fn client_config(
    trust: &Trust,
    identity: Option<(&Path, &Path)>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(Path::new("(tls)"), e))?;
    let b = match trust {
        Trust::Ca(file) => b.with_root_certificates(read_roots(file)?),
        Trust::Insecure => b
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(provider()))),
    };
    let mut config = match identity {
        Some((cert, key)) => b
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|e| err(key, e))?,
        None => b.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The client configuration of a node dialing node `expect` (or any node when `None`) on
/// the peer port: the cluster CA, the node's name, and this node's own certificate.
pub fn node_client_config(
    ca_file: &Path,
    cert_file: &Path,
    key_file: &Path,
    expect: Option<u64>,
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = Arc::new(read_roots(ca_file)?);
    let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| err(ca_file, e))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(ca_file, e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeServerVerifier { inner, expect }))
        .with_client_auth_cert(read_certs(cert_file)?, read_key(key_file)?)
        .map_err(|e| err(key_file, e))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A connector for `tonic::transport::Endpoint::connect_with_connector`: TCP (NODELAY) to
/// the URI's host and port, then TLS with `config`, for the URI's host name (or `node-<id>`
/// for peers, whose verifier ignores the host).
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<rustls::ClientConfig>,
}

impl TlsConnector {
    pub fn new(config: Arc<rustls::ClientConfig>) -> Self {
        TlsConnector { config }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let config = self.config.clone();
        Box::pin(async move {
            let host = uri.host().ok_or("the endpoint has no host")?.to_string();
            let port = uri.port_u16().unwrap_or(443);
            let host_bare = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let tcp = TcpStream::connect((host_bare.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = rustls_pki_types::ServerName::try_from(host_bare)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

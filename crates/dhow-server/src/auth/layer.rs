//! The tower layer that runs before every handler: the method's required role, the caller's
//! credential (the `authorization` header, or the TLS client certificate tonic put in the
//! request's extensions), and the decision. A passed call carries its [`Identity`] in its
//! extensions; a refused one is answered here with its reason, and logged once (never with
//! the credential) by the call log around this layer (`calllog.rs`).

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use super::{required_role, AuthError, Authenticator, Identity};
use crate::error::ApiError;

/// Authenticates and authorizes every call with an [`Authenticator`].
#[derive(Clone)]
pub struct AuthLayer {
    auth: Arc<Authenticator>,
}

impl AuthLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        AuthLayer { auth }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the routes.
#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

fn decide<B>(auth: &Authenticator, req: &Request<B>) -> Result<Option<Identity>, AuthError> {
    let Some(role) = required_role(req.uri().path()) else {
        return Ok(None);
    };
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(|v| v.as_bytes());
    let certs = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs());
    let id = auth.authenticate(header, certs.as_deref().map(|c| c.as_slice()))?;
    // The audit log is also open to administrators.
    let admin_audits = role == super::Role::Audit && id.roles.contains(super::Role::Admin);
    if !id.roles.contains(role) && !admin_audits {
        return Err(AuthError {
            code: tonic::Code::PermissionDenied,
            reason: super::reason::ROLE_MISSING,
            message: format!(
                "{} may not call {}: it needs the `{}` role (it has: {})",
                id.name,
                req.uri().path(),
                role.name(),
                id.roles
            ),
            required_role: Some(role),
        });
    }
    Ok(Some(id))
}

impl<S, B> Service<Request<B>> for AuthService<S>
where
    S: Service<Request<B>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<Body>, S::Error>> + Send>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match decide(&self.auth, &req) {
            Ok(id) => {
                if let Some(id) = id {
                    req.extensions_mut().insert(id);
                }
                // The clone that was polled ready serves this call.
                let clone = self.inner.clone();
                let mut inner = std::mem::replace(&mut self.inner, clone);
                Box::pin(inner.call(req))
            }
            Err(e) => {
                let status = ApiError::from(e).into_status();
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

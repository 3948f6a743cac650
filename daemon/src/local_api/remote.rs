//! The view port (`--view-addr`) for `edgelbctl --node`: the read-only `/v1/...` views over
//! TLS, only to callers the API server authenticates and authorizes, as kube-rbac-proxy does.
//!
//! How a request gets here, and why it is built this way:
//! - `edgelbctl --node N` calls the API server's pod proxy,
//!   `/api/v1/namespaces/NS/pods/https:POD:PORT/proxy/v1/view`. The API server checks the
//!   caller's `get` on `pods/proxy`, then **removes the `Authorization` header** (its
//!   authentication filter deletes it after authenticating) and connects to the pod with no
//!   client certificate and without verifying ours (its proxy transport skips verification:
//!   pods are reached by IP). So the speaker cannot learn the caller from the proxied
//!   request itself; edgelbctl sends its bearer token a second time in
//!   [`TOKEN_HEADER`], which the proxy forwards like any other header. A direct caller
//!   (port-forward, in-cluster) may use `Authorization: Bearer` instead.
//! - The speaker asks the API server who the token is (`TokenReview`) and whether that user
//!   may `get` `pods/proxy` in the speaker's namespace (`SubjectAccessReview`): the same grant
//!   the pod proxy itself needs, so one Role serves both and a caller who could not go
//!   through the proxy cannot come straight to the port either.
//! - TLS with a certificate made at start keeps the token off the wire in clear between
//!   the API server and the node (the proxy does not verify it, so it protects against
//!   listening, not against a machine in the middle).
//!
//! Answers: 401 without a token or with one the API server does not accept, 403 when the
//! user may not, 503 when the API server cannot be asked, 429 when too many reviews are in
//! flight; the reason is in the body and the token never in a log. Decisions are kept a
//! short while by token hash ([`super::reviews`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::http::Reply;
use super::reviews::Reviews;
use super::view::LocalView;

/// The header edgelbctl sends its token in through the pod proxy (which removes
/// `Authorization`): `Bearer TOKEN`.
pub use edgelb_view::TOKEN_HEADER;

/// What a caller must be allowed: `get` on `pods/proxy` in the speaker's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// The speaker's namespace.
    pub namespace: String,
}

/// The bearer token of a request: [`TOKEN_HEADER`] first (through the pod proxy), else
/// `Authorization`.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    [TOKEN_HEADER, "authorization"].iter().find_map(|h| {
        let v = headers.get(*h)?.to_str().ok()?.trim();
        let (scheme, token) = v.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
    })
}

/// The `TokenReview` for a token.
pub fn token_review(token: &str) -> Value {
    json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": { "token": token },
    })
}

/// The `SubjectAccessReview` for the user a `TokenReview` returned (its `status.user`).
pub fn access_review(user: &Value, access: &Access) -> Value {
    let mut spec = json!({
        "user": user.get("username").cloned().unwrap_or(Value::Null),
        "resourceAttributes": {
            "namespace": access.namespace,
            "verb": "get",
            "resource": "pods",
            "subresource": "proxy",
        },
    });
    for (from, to) in [("uid", "uid"), ("groups", "groups"), ("extra", "extra")] {
        if let Some(v) = user.get(from) {
            spec[to] = v.clone();
        }
    }
    json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": spec,
    })
}

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No bearer token.
    #[error("no bearer token: send `{TOKEN_HEADER}: Bearer TOKEN` (edgelbctl does)")]
    NoToken,
    /// The API server does not accept the token.
    #[error("the API server does not accept this token{0}")]
    Unauthenticated(String),
    /// The user may not.
    #[error("{user} may not get pods/proxy in namespace {namespace}{reason}")]
    Forbidden {
        /// Who.
        user: String,
        /// Where.
        namespace: String,
        /// The authorizer's reason, if any (`: ...`).
        reason: String,
    },
    /// The reviews could not be made.
    #[error("cannot ask the API server: {0}")]
    Unavailable(String),
    /// Too many reviews in flight (see [`super::reviews`]).
    #[error("too many requests being authorized; try again")]
    Busy,
}

impl Refused {
    /// The HTTP status of the refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Refused::NoToken | Refused::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Refused::Forbidden { .. } => StatusCode::FORBIDDEN,
            Refused::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refused::Busy => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

async fn post(client: &kube::Client, path: &str, body: &Value) -> Result<Value, Refused> {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(body).map_err(|e| Refused::Unavailable(e.to_string()))?)
        .map_err(|e| Refused::Unavailable(e.to_string()))?;
    client
        .request::<Value>(req)
        .await
        .map_err(|e| Refused::Unavailable(crate::source::kube::short_error(&e.to_string())))
}

/// Who the token is, and whether they may: the user name when they may.
pub async fn authorize(
    client: &kube::Client,
    access: &Access,
    token: &str,
) -> Result<String, Refused> {
    let tr = post(
        client,
        "/apis/authentication.k8s.io/v1/tokenreviews",
        &token_review(token),
    )
    .await?;
    let status = &tr["status"];
    if status["authenticated"] != json!(true) {
        let why = status["error"]
            .as_str()
            .map(|e| format!(": {}", crate::source::kube::short_error(e)))
            .unwrap_or_default();
        return Err(Refused::Unauthenticated(why));
    }
    let user = &status["user"];
    let name = user["username"].as_str().unwrap_or_default().to_string();
    let sar = post(
        client,
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        &access_review(user, access),
    )
    .await?;
    if sar["status"]["allowed"] == json!(true) {
        return Ok(name);
    }
    Err(Refused::Forbidden {
        user: name,
        namespace: access.namespace.clone(),
        reason: sar["status"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
            .map(|r| format!(": {r}"))
            .unwrap_or_default(),
    })
}

/// A TLS acceptor with a self-signed certificate for `names` (made at every start; the pod
/// proxy does not verify it).
pub fn self_signed(names: Vec<String>) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let cert = rcgen::generate_simple_self_signed(names)?;
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

fn response(reply: Reply) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() = reply.status;
    if let Ok(v) = http::HeaderValue::from_str(reply.content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// Answers one request: the view section after the reviews (or their cached decision),
/// or the refusal.
pub async fn answer(
    client: &kube::Client,
    access: &Access,
    reviews: &Reviews,
    headers: &HeaderMap,
    method: &http::Method,
    path: &str,
    view: &watch::Receiver<LocalView>,
) -> Reply {
    if method != http::Method::GET {
        return Reply::text(StatusCode::METHOD_NOT_ALLOWED, "read-only: GET only\n");
    }
    let result = match bearer(headers) {
        None => Err(Refused::NoToken),
        Some(token) => reviews.authorize(client, access, &token).await,
    };
    match result {
        Ok(user) => {
            tracing::debug!(%user, path, "view served");
            let v = view.borrow().clone();
            super::server::route(path, &v)
        }
        Err(e) => {
            tracing::info!(path, refused = %e, "view refused");
            Reply::text(e.status(), format!("{e}\n"))
        }
    }
}

/// Serves the view port until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    client: kube::Client,
    access: Access,
    view: watch::Receiver<LocalView>,
) {
    let shared = Arc::new((client, access, view, Reviews::default()));
    loop {
        let (stream, peer): (_, SocketAddr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "view port: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let tls = tls.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(std::time::Duration::from_secs(10), tls.accept(stream))
                    .await
                {
                    Ok(Ok(s)) => s,
                    _ => {
                        tracing::debug!(%peer, "view port: TLS handshake failed");
                        return;
                    }
                };
            let service = service_fn(move |req: Request<Incoming>| {
                let shared = shared.clone();
                async move {
                    let (client, access, view, reviews) = &*shared;
                    let reply = answer(
                        client,
                        access,
                        reviews,
                        req.headers(),
                        req.method(),
                        req.uri().path(),
                        view,
                    )
                    .await;
                    Ok::<_, Infallible>(response(reply))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod tests;

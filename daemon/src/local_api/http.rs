//! A small read-only HTTP/1.1 server (hyper) shared by the local API (Unix socket) and the
//! metrics port (TCP). Only `GET` and `HEAD`; every other method gets 405. A client that
//! does not send its request head within 5 s is dropped, so a stuck peer holds no task.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

/// What a route answers: status, content type, body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn json(body: String) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: "application/json",
            body,
        }
    }

    /// A plain-text reply.
    pub fn text(status: StatusCode, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// 404 naming the path.
    pub fn not_found(path: &str) -> Reply {
        Reply::text(StatusCode::NOT_FOUND, format!("no such path: {path}\n"))
    }
}

/// A router: request path in, reply out.
pub type Handler = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

fn to_response(method: &Method, path: &str, handler: &Handler) -> Response<Full<Bytes>> {
    let reply = if method == Method::GET || method == Method::HEAD {
        handler(path)
    } else {
        Reply::text(StatusCode::METHOD_NOT_ALLOWED, "read-only: GET only\n")
    };
    let body = if method == Method::HEAD {
        Bytes::new()
    } else {
        Bytes::from(reply.body)
    };
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = reply.status;
    if let Ok(v) = http::HeaderValue::from_str(reply.content_type) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// Serves one connection until the client closes it.
pub async fn serve_connection<S>(stream: S, handler: Handler)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(to_response(req.method(), req.uri().path(), &handler)) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "local HTTP connection ended with an error");
    }
}

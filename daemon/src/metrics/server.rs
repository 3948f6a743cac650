//! The metrics port: `GET /metrics` (OpenMetrics text), `/healthz` (the process answers),
//! `/readyz` (200 once the first snapshot is applied, else 503), and nothing else. The port
//! is on the host network, open to anyone who reaches the node: the `/v1/...` views (peers,
//! ASNs, members, Services) are not served here but on the root-only Unix socket.

use std::net::SocketAddr;
use std::sync::Arc;

use http::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::Metrics;
use crate::local_api::http::{serve_connection, Handler, Reply};
use crate::local_api::view::LocalView;

/// The OpenMetrics content type `prometheus-client` encodes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Answers one path (pure apart from encoding the registry).
pub fn route(path: &str, metrics: &Metrics, view: &LocalView) -> Reply {
    match path {
        "/metrics" => Reply {
            status: StatusCode::OK,
            content_type: CONTENT_TYPE,
            body: metrics.encode(),
        },
        "/readyz" if view.ready => Reply::text(StatusCode::OK, "ready\n"),
        "/readyz" => Reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no snapshot applied yet\n",
        ),
        "/healthz" => Reply::text(StatusCode::OK, "ok\n"),
        _ => Reply::not_found(path),
    }
}

/// Binds the metrics port.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves the metrics port until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, rx: watch::Receiver<LocalView>) {
    let handler: Handler = Arc::new(move |path: &str| route(path, &metrics, &rx.borrow()));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, handler.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

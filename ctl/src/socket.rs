//! A client for a speaker's local API: one `GET` over its Unix socket (edgelbctl's default
//! source; the daemon's and the lab's tests read a live speaker with it too).

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use edgelb_view::LocalView;

/// Why a request to the local API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Cannot connect (no speaker, or no permission).
    #[error(
        "cannot connect to {path}: {error} (is edgelb-speaker running here, and are you root?)"
    )]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The error, in the message and not as a `source`, so that `{:#}` prints it once.
        error: std::io::Error,
    },
    /// HTTP failed.
    #[error("local API {path}: {message}")]
    Http {
        /// The socket.
        path: PathBuf,
        /// What happened.
        message: String,
    },
    /// The answer is not a view.
    #[error("local API {path}: the answer is not a view: {error}")]
    Decode {
        /// The socket.
        path: PathBuf,
        /// The error, in the message only (see `Connect`).
        error: serde_json::Error,
    },
}

/// `GET uri` on the socket; the body when the status is 2xx. Bounded by `timeout`.
pub async fn get(socket: &Path, uri: &str, timeout: Duration) -> Result<String, ClientError> {
    let http = |message: String| ClientError::Http {
        path: socket.to_path_buf(),
        message,
    };
    let work = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|error| ClientError::Connect {
                path: socket.to_path_buf(),
                error,
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http(e.to_string()))?;
        let conn = tokio::spawn(conn);
        let req = http::Request::get(uri)
            .header(http::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(|e| http(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| http(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| http(e.to_string()))?
            .to_bytes();
        conn.abort();
        let body = String::from_utf8_lossy(&body).into_owned();
        if !status.is_success() {
            return Err(http(format!("{status}: {}", body.trim())));
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| http(format!("no answer within {timeout:?}")))?
}

/// The whole view of the speaker behind `socket`.
pub async fn view(socket: &Path, timeout: Duration) -> Result<LocalView, ClientError> {
    let body = get(socket, "/v1/view", timeout).await?;
    serde_json::from_str(&body).map_err(|error| ClientError::Decode {
        path: socket.to_path_buf(),
        error,
    })
}

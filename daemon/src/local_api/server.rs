//! The local API on a Unix socket: `GET /v1/view` answers the whole [`LocalView`] as JSON,
//! `GET /v1/<section>` one part of it (`peers`, `announcements`, `interfaces`,
//! `policyRoutes`, `allocations`, `pools`, `members`, `services`, `nodePools`), `GET /healthz` `ok`.
//!
//! Owner-only: the socket's directory is created `0700` when we create it, and the socket
//! itself is set to `0600` right after `bind`, so only root (the speaker's user) connects.
//! The view is whatever the run loop last sent on the `watch` channel.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use http::StatusCode;
use tokio::net::UnixListener;
use tokio::sync::watch;

use super::http::{serve_connection, Handler, Reply};
use super::view::LocalView;

/// The default socket path.
pub use edgelb_view::DEFAULT_SOCKET;

/// Why the local API cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket's directory cannot be created.
    #[error("local API: cannot create directory {dir}: {source}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Something that is not a socket is in the way.
    #[error("local API: {path} exists and is not a socket; not removing it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// `bind` or `chmod` failed.
    #[error("local API: cannot listen on {path}: {source}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

/// Answers one path from a view (pure: the Unix socket and the authorized view port both use it).
pub fn route(path: &str, view: &LocalView) -> Reply {
    let section = match path.trim_end_matches('/') {
        "/healthz" => return Reply::text(StatusCode::OK, "ok\n"),
        "/v1/view" | "/v1" => None,
        p => match p.strip_prefix("/v1/") {
            Some(s) => Some(s),
            None => return Reply::not_found(path),
        },
    };
    let value = match serde_json::to_value(view) {
        Ok(v) => v,
        Err(e) => return Reply::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let value = match section {
        None => value,
        Some(s) => match value.get(s) {
            Some(v) => v.clone(),
            None => return Reply::not_found(path),
        },
    };
    match serde_json::to_string_pretty(&value) {
        Ok(body) => Reply::json(body + "\n"),
        Err(e) => Reply::text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A handler that answers from the latest view on `rx`.
pub fn view_handler(rx: watch::Receiver<LocalView>) -> Handler {
    Arc::new(move |path: &str| {
        // A copy (the long sections are shared), so that building the deferred sections
        // does not hold the channel's lock against the run loop's next publication.
        let view = rx.borrow().clone();
        route(path, &view)
    })
}

/// Binds the socket (replacing a stale socket file) with owner-only permissions.
pub fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|source| ServeError::Dir {
                dir: dir.to_path_buf(),
                source,
            })?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
                |source| ServeError::Dir {
                    dir: dir.to_path_buf(),
                    source,
                },
            )?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            std::fs::remove_file(path).map_err(|source| ServeError::Bind {
                path: path.to_path_buf(),
                source,
            })?;
        }
        Ok(_) => {
            return Err(ServeError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|source| ServeError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        ServeError::Bind {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(listener)
}

/// Serves the local API on `listener` until the task is dropped.
pub async fn serve(listener: UnixListener, rx: watch::Receiver<LocalView>) {
    let handler = view_handler(rx);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, handler.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "local API: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

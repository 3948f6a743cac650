//! The speaker's read-only local API for `edgelbctl`: [`view`] holds the JSON types (those of
//! the `edgelb-view` crate, which clients read, with sections built on request),
//! [`build`] the pure functions that fill them from the daemon's state, [`server`] the Unix
//! socket server (HTTP/1.1 `GET /v1/view`; the matching client is `edgelbctl::socket`), [`remote`] the
//! TLS view port for `edgelbctl --node`, open only to callers the API server authorizes
//! ([`reviews`] keeps its decisions a short while).
//!
//! Protocol (documented for scripts): connect to the socket (default
//! [`server::DEFAULT_SOCKET`]), send `GET /v1/view HTTP/1.1`, read one JSON [`view::LocalView`].
//! `curl --unix-socket /run/edgelb/speaker.sock http://x/v1/view` works too.

pub mod build;
pub mod http;
pub mod publish;
pub mod remote;
pub mod reviews;
pub mod server;
pub mod view;

#[cfg(test)]
mod tests;

pub use view::LocalView;

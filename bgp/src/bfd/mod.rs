//! BFD, Bidirectional Forwarding Detection (RFC 5880 asynchronous mode with Echo, RFC 5881 single
//! hop, RFC 5883 multihop), built like the BGP side: a packet codec, a sans-IO session state
//! machine, a thin tokio runtime.
//!
//! - [`packet`]: the Control packet and the reception checks that need no session.
//! - [`session`]: one session's state machine (§6.8): handshake, timers, Poll/Final.
//! - [`echo`]: the Echo function's packets and path (single-hop IPv4).
//! - [`socket`]: UDP receivers that report TTLs, per-session senders, Echo's packet socket.
//! - [`runtime`]: the [`Bfd`] handle and the task that runs every session.
//!
//! A BGP peer with BFD configured registers a session here and resets its BGP session when
//! BFD reports a failure (RFC 5882 §4.3, Cease subcode 10 "BFD Down", RFC 9384).
pub mod echo;
pub mod packet;
pub mod runtime;
pub mod session;
pub mod socket;

pub use packet::{ControlPacket, DecodeError, Diag, State};
pub use runtime::{Bfd, BfdStatus, Registration, RuntimeConfig, SessionKey, SessionParams};
pub use session::{SessionConfig, SessionStatus, StateChange};

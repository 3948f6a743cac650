//! edgelb-bgp: a BGP-4 speaker that announces routes and imports none.
//!
//! - [`packet`]: the wire format (RFC 4271, 4760, 6793, 2918, 4724, 8654, 1997, 8092),
//!   decode errors mapped to NOTIFICATIONs and RFC 7606 actions.
//! - [`config`]: speaker and peer configuration, validated.
//! - [`negotiate`]: our OPEN and the checks on the peer's (RFC 4271 §6.2).
//! - [`fsm`]: the RFC 4271 §8 session state machine, sans I/O.
//! - [`rib_out`]: Adj-RIB-Out diff and attribute grouping, pure.
//! - [`next_hop`]: the next hop of each family on a session (RFC 4760 §3, RFC 2545 §3).
//! - [`socket_options`]: TCP MD5, TTL/GTSM, user timeout (the one `unsafe` module).
//! - [`connection`]: listener and outgoing connections with those options.
//! - [`bfd`]: BFD (RFC 5880, 5881, 5883): codec, sans-IO sessions, runtime.
//! - `peer`: the task that runs one peer; [`speaker`]: the public [`Speaker`] API.
#![deny(unsafe_code)]

pub mod bfd;
pub mod config;
pub mod connection;
pub mod fsm;
pub mod negotiate;
pub mod next_hop;
pub mod packet;
mod peer;
pub mod rib_out;
pub mod socket_options;
pub mod speaker;
pub mod status;

pub use config::{
    BfdPeerConfig, GracefulRestartConfig, PeerConfig, PeerKey, Secret, SpeakerConfig,
};
pub use rib_out::{RouteAttrs, RouteTable};
pub use speaker::{Speaker, SpeakerError};
pub use status::{FamilyNotAnnounced, LastError, PeerEvent, PeerStatus};

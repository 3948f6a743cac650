//! edgelb-bgp: a BGP-4 speaker that announces routes and imports none.
//!
//! - [`packet`]: the wire format (RFC 4271, 4760, 6793, 2918, 4724, 8654, 1997, 8092),
//!   decode errors mapped to NOTIFICATIONs and RFC 7606 actions.
//! - [`config`]: speaker and peer configuration, validated.
//! - [`negotiate`]: our OPEN and the checks on the peer's (RFC 4271 §6.2).
//! - [`fsm`]: the RFC 4271 §8 session state machine, sans I/O.
#![deny(unsafe_code)]

pub mod config;
pub mod fsm;
pub mod negotiate;
pub mod packet;
pub mod socket_options;

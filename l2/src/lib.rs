//! edgelb-l2: gratuitous ARP and unsolicited NDP for IPs owned by this node.
//!
//! On a LAN without a BGP router a Service IP lives on one node at a time and moves between
//! nodes by telling the neighbours: gratuitous ARP for IPv4 (RFC 5227 §3, RFC 826) and
//! unsolicited neighbour advertisements with Override for IPv6 (RFC 4861 §7.2.6). The node
//! that owns an IP also answers ARP requests and neighbour solicitations for it (RFC 4861
//! §7.2.4), since the kernel does not (the address is not on the LAN interface).
//!
//! Layout: decisions are pure and tested without sockets — [`frame`] (parse and build),
//! [`respond`] (what to answer), [`schedule`] (when to announce), [`link`] (what changed on
//! an interface), [`bpf`] (the kernel filter); [`socket`] and `sys` are the thin socket
//! layer; the `Announcer` ties them together with one tokio task per interface.
#![deny(unsafe_code)]

mod announcer;
pub mod bpf;
pub mod frame;
pub mod link;
pub mod respond;
pub mod schedule;
pub mod socket;
pub mod stats;
mod sys;
mod worker;

pub use announcer::{Announcer, Config};
pub use pnet_base::MacAddr;
pub use schedule::Timetable;
pub use stats::{InterfaceStats, IpStats};

use std::net::IpAddr;
use std::time::Duration;

/// A problem with one interface; the others are served regardless.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InterfaceError {
    #[error("interface {interface:?}: not a valid interface name (1 to 15 bytes, no '/', ':' or spaces)")]
    InvalidName { interface: String },
    #[error("interface {interface:?} does not exist; it will be served when it appears")]
    NotFound { interface: String },
    #[error("interface {interface:?}: cannot open a packet socket (needs CAP_NET_RAW): {reason}")]
    Socket { interface: String, reason: String },
    #[error("interface {interface:?}: address {ip}: {reason}")]
    Address {
        interface: String,
        ip: IpAddr,
        reason: String,
    },
    #[error("interface {interface:?}: the new owned set was not applied within {waited:?}")]
    NotApplied { interface: String, waited: Duration },
}

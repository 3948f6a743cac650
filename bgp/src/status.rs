//! What a [`crate::Speaker`] lets its user observe about each peer: a snapshot
//! ([`PeerStatus`]) and a stream of events ([`PeerEvent`]).
use crate::fsm::{DownReason, State};
use crate::packet::{Family, Notification};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The last error of a session: the NOTIFICATION (code, subcode, text) or a transport error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastError {
    /// NOTIFICATION error code and subcode; `None` for a transport error.
    pub code: Option<(u8, u8)>,
    /// True when the peer sent the NOTIFICATION, false when we did.
    pub received: bool,
    pub text: String,
    pub at: Instant,
}

impl LastError {
    pub fn from_notification(n: &Notification, received: bool, at: Instant) -> LastError {
        LastError {
            code: Some((n.code, n.subcode)),
            received,
            text: n.to_string(),
            at,
        }
    }

    pub fn transport(text: String, at: Instant) -> LastError {
        LastError {
            code: None,
            received: false,
            text,
            at,
        }
    }

    pub fn from_down(reason: &DownReason, at: Instant) -> Option<LastError> {
        match reason {
            DownReason::Stopped => None,
            DownReason::NotificationSent(n) => Some(LastError::from_notification(n, false, at)),
            DownReason::NotificationReceived(n) => Some(LastError::from_notification(n, true, at)),
            DownReason::ConnectionLost => Some(LastError::transport("connection lost".into(), at)),
        }
    }
}

/// A snapshot of one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub address: IpAddr,
    pub description: String,
    pub state: State,
    /// Time since the session reached Established, while it is.
    pub uptime: Option<Duration>,
    pub established_at: Option<Instant>,
    pub last_error: Option<LastError>,
    /// Prefixes the peer has from us now.
    pub prefixes_sent: u64,
    /// Prefixes the peer announced to us (counted with `import` only).
    pub prefixes_received: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub updates_in: u64,
    pub updates_out: u64,
    /// How many times the session reached Established.
    pub established_count: u64,
    /// BFD towards this peer, when configured.
    pub bfd: Option<crate::bfd::BfdStatus>,
    /// Families negotiated on the session, while it is up.
    pub families: Vec<Family>,
    /// Negotiated families whose routes are not announced, and why.
    pub families_not_announced: Vec<FamilyNotAnnounced>,
    /// Prefixes of the peer's table it does not have from us: of a family the session did
    /// not negotiate or cannot announce, or that could not be encoded. Never counted as sent.
    pub prefixes_not_sent: u64,
    /// Both sides sent the graceful restart capability (RFC 4724), while up.
    pub graceful_restart: bool,
    /// Both sides set the N bit (RFC 8538), while up: stops that flush go as Hard Reset.
    pub graceful_notification: bool,
}

/// A negotiated family whose routes are not announced on a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyNotAnnounced {
    pub family: Family,
    pub reason: String,
}

impl PeerStatus {
    pub fn new(address: IpAddr, description: String) -> PeerStatus {
        PeerStatus {
            address,
            description,
            state: State::Idle,
            uptime: None,
            established_at: None,
            last_error: None,
            prefixes_sent: 0,
            prefixes_received: 0,
            messages_in: 0,
            messages_out: 0,
            updates_in: 0,
            updates_out: 0,
            established_count: 0,
            bfd: None,
            families: Vec::new(),
            families_not_announced: Vec::new(),
            prefixes_not_sent: 0,
            graceful_restart: false,
            graceful_notification: false,
        }
    }
}

/// Something that happened to a peer, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    Established {
        peer: IpAddr,
        at: Instant,
    },
    Down {
        peer: IpAddr,
        at: Instant,
        error: Option<LastError>,
    },
    /// UPDATEs for a change of the routes were written to the socket.
    RoutesSent {
        peer: IpAddr,
        at: Instant,
        announced: usize,
        withdrawn: usize,
        total: usize,
    },
    /// End-of-RIB (RFC 4724 §2) was written after the initial table.
    EndOfRib {
        peer: IpAddr,
        at: Instant,
        total: usize,
    },
    /// The families that are negotiated but not announced changed (empty: all announced).
    FamiliesNotAnnounced {
        peer: IpAddr,
        at: Instant,
        families: Vec<FamilyNotAnnounced>,
    },
}

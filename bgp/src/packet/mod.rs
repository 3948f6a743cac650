//! BGP-4 wire format (RFC 4271 §4) with the extensions edgelb speaks.
//!
//! These types are the contract between the codec (`packet/`) and the session layer: plain
//! data, no I/O. Negotiated capabilities that change the encoding travel in a
//! [`CodecContext`] value, never in globals. Framing (how long is the next message) is
//! separate from decoding (`framing.rs`).
use bytes::Bytes;
use ipnet::IpNet;
use std::net::{Ipv4Addr, Ipv6Addr};

mod as_path;
mod attribute;
pub mod error;
mod framing;
pub mod iana;
mod message;
mod notification;
mod open;
mod pack;
mod prefix;
mod reader;
mod update;

pub use error::{
    DecodeError, EncodeError, HeaderError, OpenError, RouteRefreshError, UpdateAction, UpdateError,
};
pub use framing::frame_len;
pub use notification::MAX_SHUTDOWN_MESSAGE_LEN;
pub use pack::{encode_announce, encode_withdraw};

/// Length of the fixed header: marker (16), length (2), type (1).
pub const HEADER_LEN: usize = 19;
/// Largest message without the Extended Message capability (RFC 4271 §4.1).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Largest message once both sides sent the Extended Message capability (RFC 8654).
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;
/// AS_TRANS (RFC 6793): what a 4-octet AS is replaced with in 2-octet fields.
pub const AS_TRANS: u16 = 23456;

/// What both sides negotiated that changes how messages are encoded or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecContext {
    /// Both sides sent the 4-octet AS capability: AS_PATH carries 4-octet ASNs.
    pub four_octet_as: bool,
    /// Both sides sent the Extended Message capability: messages up to 65535 octets.
    pub extended_message: bool,
}

impl CodecContext {
    /// Before OPENs are exchanged: 2-octet AS_PATH, 4096-octet messages.
    pub const PRE_OPEN: CodecContext = CodecContext {
        four_octet_as: false,
        extended_message: false,
    };

    pub fn max_message_len(&self) -> usize {
        if self.extended_message {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }
}

/// One BGP message (RFC 4271 §4).
// Messages live briefly between the socket and the session; boxing Update would only add an
// allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// Address family identifier (IANA "Address Family Numbers"); unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Afi(pub u16);
impl Afi {
    pub const IPV4: Afi = Afi(1);
    pub const IPV6: Afi = Afi(2);
}

/// Subsequent address family identifier (RFC 4760); unknown values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Safi(pub u8);
impl Safi {
    pub const UNICAST: Safi = Safi(1);
}

/// The address families edgelb announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Ipv4Unicast,
    Ipv6Unicast,
}

impl Family {
    pub fn afi_safi(self) -> (Afi, Safi) {
        match self {
            Family::Ipv4Unicast => (Afi::IPV4, Safi::UNICAST),
            Family::Ipv6Unicast => (Afi::IPV6, Safi::UNICAST),
        }
    }

    pub fn from_afi_safi(afi: Afi, safi: Safi) -> Option<Family> {
        match (afi, safi) {
            (Afi::IPV4, Safi::UNICAST) => Some(Family::Ipv4Unicast),
            (Afi::IPV6, Safi::UNICAST) => Some(Family::Ipv6Unicast),
            _ => None,
        }
    }

    pub fn of(prefix: &IpNet) -> Family {
        match prefix {
            IpNet::V4(_) => Family::Ipv4Unicast,
            IpNet::V6(_) => Family::Ipv6Unicast,
        }
    }
}

/// OPEN (RFC 4271 §4.2). Capabilities come from Optional Parameter type 2 (RFC 5492);
/// other optional parameters are kept raw in `other_params` so they round-trip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// Always 4 on encode; a decoded OPEN with another version is a decode error.
    pub version: u8,
    /// "My Autonomous System": AS_TRANS when the real ASN needs 4 octets.
    pub my_as: u16,
    /// Seconds; 0 or >= 3 (RFC 4271 §4.2), checked on decode.
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
    /// Optional parameters other than capabilities: (type, value).
    pub other_params: Vec<(u8, Bytes)>,
}

impl Open {
    /// The speaker's real ASN: the 4-octet AS capability when present, else `my_as`.
    pub fn asn(&self) -> u32 {
        self.capabilities
            .iter()
            .find_map(|c| match c {
                Capability::FourOctetAs(asn) => Some(*asn),
                _ => None,
            })
            .unwrap_or(u32::from(self.my_as))
    }
}

/// A capability advertised in OPEN (RFC 5492 and the RFCs each variant names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Capability {
    /// RFC 4760, code 1.
    Multiprotocol { afi: Afi, safi: Safi },
    /// RFC 2918, code 2.
    RouteRefresh,
    /// RFC 8654, code 6.
    ExtendedMessage,
    /// RFC 4724, code 64.
    GracefulRestart(GracefulRestart),
    /// RFC 6793, code 65.
    FourOctetAs(u32),
    /// Anything else (ADD-PATH, FQDN, enhanced route refresh, ...), kept as received.
    Unknown { code: u8, value: Bytes },
}

/// Graceful Restart capability value (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GracefulRestart {
    /// The R bit: this speaker has restarted.
    pub restart_state: bool,
    /// The N bit (RFC 8538); kept so it round-trips.
    pub notification: bool,
    /// 12 bits, seconds.
    pub restart_time: u16,
    pub families: Vec<GracefulRestartFamily>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartFamily {
    pub afi: Afi,
    pub safi: Safi,
    /// The F bit: forwarding state was preserved across the restart.
    pub forwarding_preserved: bool,
}

/// UPDATE (RFC 4271 §4.3). IPv4 unicast uses `withdrawn`/`nlri`; other families travel in
/// `attributes.mp_reach` / `attributes.mp_unreach` (RFC 4760).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    pub withdrawn: Vec<ipnet::Ipv4Net>,
    pub attributes: PathAttributes,
    pub nlri: Vec<ipnet::Ipv4Net>,
}

/// A decoded UPDATE and what RFC 7606 did with it ([`Update::decode`]).
///
/// `action` is `None` for a clean UPDATE, else the worst action over all its errors
/// (RFC 7606 §3(f)) with the error that called for it. A session reset never appears here:
/// it is the `Err` of the decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateDecode {
    pub update: Update,
    pub action: Option<(UpdateAction, DecodeError)>,
}

/// The path attributes of one UPDATE. Known attributes are typed; unknown optional ones are
/// kept raw in `unknown` (transitive ones pass decode unharmed, RFC 4271 §5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathAttributes {
    pub origin: Option<Origin>,
    /// The effective AS path: with a 2-octet session, AS_PATH and AS4_PATH are reconciled
    /// on decode (RFC 6793 §4.2.3) and split again on encode.
    pub as_path: Option<AsPath>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<Aggregator>,
    /// RFC 1997, in wire order.
    pub communities: Vec<Community>,
    /// RFC 8092, in wire order.
    pub large_communities: Vec<LargeCommunity>,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    pub unknown: Vec<RawAttribute>,
}

/// ORIGIN (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AsSegment {
    pub kind: AsSegmentKind,
    pub asns: Vec<u32>,
}

/// AS_PATH segment types (RFC 4271 §4.3, RFC 5065 for the confederation ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AsSegmentKind {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

/// AGGREGATOR (RFC 4271 §5.1.7; 4-octet ASN per RFC 6793, AS4_AGGREGATOR reconciled).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Aggregator {
    pub asn: u32,
    pub address: Ipv4Addr,
}

/// A standard community (RFC 1997): high 16 bits ASN, low 16 bits value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Community(pub u32);

/// A large community (RFC 8092).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LargeCommunity {
    pub global_admin: u32,
    pub local_data1: u32,
    pub local_data2: u32,
}

/// MP_REACH_NLRI (RFC 4760 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    pub afi: Afi,
    pub safi: Safi,
    pub next_hop: MpNextHop,
    /// Prefixes of `afi` (IPv4 prefixes for AFI 1, IPv6 for AFI 2).
    pub nlri: Vec<IpNet>,
}

/// MP_UNREACH_NLRI (RFC 4760 §4). Empty `withdrawn` is End-of-RIB for that family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    pub afi: Afi,
    pub safi: Safi,
    pub withdrawn: Vec<IpNet>,
}

/// Next hop in MP_REACH_NLRI: 4 octets (IPv4), 16 (IPv6 global) or 32 (global and
/// link-local, RFC 2545 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MpNextHop {
    V4(Ipv4Addr),
    V6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
}

/// An attribute kept as received: flags, type code, value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    pub flags: u8,
    pub code: u8,
    pub value: Bytes,
}

/// NOTIFICATION (RFC 4271 §4.5). Codes and subcodes are in [`iana`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Bytes,
}

/// ROUTE-REFRESH (RFC 2918 §3; the reserved octet is the RFC 7313 subtype).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: Afi,
    pub safi: Safi,
    pub subtype: u8,
}

//! Decode and encode errors, the NOTIFICATION each decode error maps to (RFC 4271 §6), and
//! the RFC 7606 action an UPDATE error calls for.
//!
//! Errors are layered like the NOTIFICATION codes: [`DecodeError`] names the message
//! (header, OPEN, UPDATE, ROUTE-REFRESH), the inner enum names the subcode and carries what
//! the Data field needs. [`DecodeError::notification`] is the only place that turns an error
//! into code, subcode and data.
use super::iana::{attr, error_code, header_subcode, open_subcode, update_subcode};
use super::Notification;
use bytes::Bytes;
use std::net::Ipv4Addr;

/// The highest BGP version we speak, sent in "Unsupported Version Number" (RFC 4271 §6.2).
pub const BGP_VERSION: u8 = 4;

/// ROUTE-REFRESH Message Error subcode "Invalid Message Length" (RFC 7313 §5).
pub const ROUTE_REFRESH_INVALID_LENGTH: u8 = 1;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message header: {0}")]
    MessageHeader(#[from] HeaderError),
    #[error("OPEN: {0}")]
    Open(#[from] OpenError),
    #[error("UPDATE: {0}")]
    Update(#[from] UpdateError),
    #[error("ROUTE-REFRESH: {0}")]
    RouteRefresh(#[from] RouteRefreshError),
}

/// Message Header Error (RFC 4271 §6.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("marker is not all ones")]
    ConnectionNotSynchronized,
    #[error("bad length {length} for message type {message_type}")]
    BadMessageLength { length: u16, message_type: u8 },
    #[error("unknown message type {message_type}")]
    BadMessageType { message_type: u8 },
}

/// OPEN Message Error (RFC 4271 §6.2, RFC 5492, RFC 7607, RFC 9072).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("unsupported version {version}")]
    UnsupportedVersion { version: u8 },
    /// RFC 7607: AS 0 in "My Autonomous System" or in the 4-octet AS capability.
    #[error("bad peer AS {asn}")]
    BadPeerAs { asn: u32 },
    #[error("bad BGP identifier {id}")]
    BadBgpIdentifier { id: Ipv4Addr },
    #[error("unsupported optional parameter type {param_type}")]
    UnsupportedOptionalParameter { param_type: u8 },
    #[error("unacceptable hold time {hold_time} s")]
    UnacceptableHoldTime { hold_time: u16 },
    /// Optional parameters or a capability whose lengths do not add up; no subcode fits, so
    /// the NOTIFICATION uses subcode 0 "Unspecific" as FRR does.
    #[error("malformed {field}: {reason}")]
    Malformed {
        field: &'static str,
        reason: &'static str,
    },
    /// A known capability with a value of the wrong size (RFC 5492 §3 leaves the subcode
    /// open; 0 "Unspecific" as above).
    #[error("capability {code} has length {length}, expected {expected}")]
    CapabilityLength {
        code: u8,
        length: usize,
        expected: &'static str,
    },
}

/// UPDATE Message Error (RFC 4271 §6.3) with the RFC 7606 action it calls for.
///
/// `attribute` fields hold the whole erroneous attribute (flags, type, length, value): the
/// Data field of the NOTIFICATION for these subcodes (RFC 4271 §6.3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpdateError {
    /// Withdrawn Routes Length or Total Path Attribute Length overruns the message.
    #[error("malformed attribute list: {reason}")]
    MalformedAttributeList { reason: &'static str },
    /// MP_REACH_NLRI or MP_UNREACH_NLRI seen twice (RFC 7606 §3(g)).
    #[error("attribute {code} appears more than once")]
    DuplicateMpAttribute { code: u8 },
    /// Any other attribute seen twice: later copies are discarded (RFC 7606 §3(g)).
    #[error("attribute {code} appears more than once; later copies discarded")]
    DuplicateAttribute { code: u8 },
    /// An attribute header or value overruns the Total Path Attribute Length (RFC 7606 §4).
    #[error("attribute overruns the path attributes at offset {offset}")]
    AttributeOverrun { offset: usize },
    #[error("unrecognized well-known attribute {code}")]
    UnrecognizedWellKnown { code: u8, attribute: Bytes },
    #[error("missing well-known attribute {code}")]
    MissingWellKnown { code: u8 },
    #[error("attribute {code} has flags {flags:#04x} conflicting with its type")]
    AttributeFlags {
        code: u8,
        flags: u8,
        attribute: Bytes,
    },
    #[error("attribute {code} has length {length}")]
    AttributeLength {
        code: u8,
        length: usize,
        attribute: Bytes,
    },
    #[error("invalid ORIGIN value {value}")]
    InvalidOrigin { value: u8, attribute: Bytes },
    #[error("invalid NEXT_HOP {next_hop}")]
    InvalidNextHop {
        next_hop: Ipv4Addr,
        attribute: Bytes,
    },
    #[error("optional attribute {code}: {reason}")]
    OptionalAttribute {
        code: u8,
        reason: &'static str,
        attribute: Bytes,
    },
    #[error("invalid network field in {field}: {reason}")]
    InvalidNetworkField {
        field: &'static str,
        reason: &'static str,
    },
    /// AS_PATH (code 2) or AS4_PATH (code 17) is syntactically wrong (RFC 7606 §7.2).
    #[error("malformed {}: {reason}", if *code == attr::AS4_PATH { "AS4_PATH" } else { "AS_PATH" })]
    MalformedAsPath { code: u8, reason: &'static str },
}

/// ROUTE-REFRESH Message Error (RFC 7313 §5).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteRefreshError {
    /// An enhanced route refresh (subtype 1 or 2) whose length is not 23; data = the message.
    #[error("invalid message length {length}")]
    InvalidMessageLength { length: usize, message: Bytes },
}

/// What RFC 7606 does with an UPDATE that has an error, from the least to the most drastic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UpdateAction {
    /// Drop the malformed attribute, use the rest of the UPDATE (RFC 7606 §2).
    AttributeDiscard,
    /// Take every prefix in the UPDATE as withdrawn (RFC 7606 §2).
    TreatAsWithdraw,
    /// Send the NOTIFICATION and close the session (RFC 4271 §6).
    SessionReset,
}

/// RFC 7606 §7 (and RFC 6793 §6 for AS4_*): the action for a malformed attribute `code`.
///
/// MP_REACH_NLRI/MP_UNREACH_NLRI: §7.11 allows "AFI/SAFI disable" or session reset; edgelb
/// resets. Attributes edgelb does not parse never get here (they are kept raw).
pub fn malformed_attribute_action(code: u8) -> UpdateAction {
    match code {
        attr::ATOMIC_AGGREGATE | attr::AGGREGATOR | attr::AS4_PATH | attr::AS4_AGGREGATOR => {
            UpdateAction::AttributeDiscard
        }
        attr::MP_REACH_NLRI | attr::MP_UNREACH_NLRI => UpdateAction::SessionReset,
        _ => UpdateAction::TreatAsWithdraw,
    }
}

impl UpdateError {
    /// The RFC 7606 action for this error.
    pub fn action(&self) -> UpdateAction {
        match self {
            UpdateError::MalformedAttributeList { .. }
            | UpdateError::DuplicateMpAttribute { .. }
            | UpdateError::UnrecognizedWellKnown { .. }
            | UpdateError::InvalidNetworkField { .. } => UpdateAction::SessionReset,
            UpdateError::DuplicateAttribute { .. } => UpdateAction::AttributeDiscard,
            UpdateError::AttributeOverrun { .. } | UpdateError::MissingWellKnown { .. } => {
                UpdateAction::TreatAsWithdraw
            }
            UpdateError::InvalidOrigin { .. } | UpdateError::InvalidNextHop { .. } => {
                UpdateAction::TreatAsWithdraw
            }
            // §3(c): flags conflicts are treat-as-withdraw unless the attribute's own rules
            // say otherwise (AS4_* discard, RFC 6793 §6; MP_* reset, our §7.11 choice).
            UpdateError::AttributeFlags { code, .. } => match malformed_attribute_action(*code) {
                UpdateAction::AttributeDiscard if !is_as4(*code) => UpdateAction::TreatAsWithdraw,
                action => action,
            },
            UpdateError::AttributeLength { code, .. }
            | UpdateError::OptionalAttribute { code, .. }
            | UpdateError::MalformedAsPath { code, .. } => malformed_attribute_action(*code),
        }
    }

    fn notification(&self) -> (u8, Bytes) {
        use update_subcode as s;
        match self {
            UpdateError::MalformedAttributeList { .. }
            | UpdateError::DuplicateMpAttribute { .. }
            | UpdateError::DuplicateAttribute { .. }
            | UpdateError::AttributeOverrun { .. } => (s::MALFORMED_ATTRIBUTE_LIST, Bytes::new()),
            UpdateError::UnrecognizedWellKnown { attribute, .. } => {
                (s::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE, attribute.clone())
            }
            UpdateError::MissingWellKnown { code } => (
                s::MISSING_WELL_KNOWN_ATTRIBUTE,
                Bytes::copy_from_slice(&[*code]),
            ),
            UpdateError::AttributeFlags { attribute, .. } => {
                (s::ATTRIBUTE_FLAGS_ERROR, attribute.clone())
            }
            UpdateError::AttributeLength { attribute, .. } => {
                (s::ATTRIBUTE_LENGTH_ERROR, attribute.clone())
            }
            UpdateError::InvalidOrigin { attribute, .. } => {
                (s::INVALID_ORIGIN_ATTRIBUTE, attribute.clone())
            }
            UpdateError::InvalidNextHop { attribute, .. } => {
                (s::INVALID_NEXT_HOP_ATTRIBUTE, attribute.clone())
            }
            UpdateError::OptionalAttribute { attribute, .. } => {
                (s::OPTIONAL_ATTRIBUTE_ERROR, attribute.clone())
            }
            UpdateError::InvalidNetworkField { .. } => (s::INVALID_NETWORK_FIELD, Bytes::new()),
            UpdateError::MalformedAsPath { .. } => (s::MALFORMED_AS_PATH, Bytes::new()),
        }
    }
}

fn is_as4(code: u8) -> bool {
    code == attr::AS4_PATH || code == attr::AS4_AGGREGATOR
}

impl DecodeError {
    /// The NOTIFICATION RFC 4271 §6 prescribes for this error (code, subcode, data).
    pub fn notification(&self) -> Notification {
        match self {
            DecodeError::MessageHeader(e) => {
                let (subcode, data) = match e {
                    HeaderError::ConnectionNotSynchronized => {
                        (header_subcode::CONNECTION_NOT_SYNCHRONIZED, Bytes::new())
                    }
                    HeaderError::BadMessageLength { length, .. } => (
                        header_subcode::BAD_MESSAGE_LENGTH,
                        Bytes::copy_from_slice(&length.to_be_bytes()),
                    ),
                    HeaderError::BadMessageType { message_type } => (
                        header_subcode::BAD_MESSAGE_TYPE,
                        Bytes::copy_from_slice(&[*message_type]),
                    ),
                };
                Notification::new(error_code::MESSAGE_HEADER, subcode, data)
            }
            DecodeError::Open(e) => {
                let (subcode, data) = match e {
                    OpenError::UnsupportedVersion { .. } => (
                        open_subcode::UNSUPPORTED_VERSION_NUMBER,
                        Bytes::copy_from_slice(&u16::from(BGP_VERSION).to_be_bytes()),
                    ),
                    OpenError::BadPeerAs { .. } => (open_subcode::BAD_PEER_AS, Bytes::new()),
                    OpenError::BadBgpIdentifier { .. } => {
                        (open_subcode::BAD_BGP_IDENTIFIER, Bytes::new())
                    }
                    OpenError::UnsupportedOptionalParameter { .. } => {
                        (open_subcode::UNSUPPORTED_OPTIONAL_PARAMETER, Bytes::new())
                    }
                    OpenError::UnacceptableHoldTime { .. } => {
                        (open_subcode::UNACCEPTABLE_HOLD_TIME, Bytes::new())
                    }
                    OpenError::Malformed { .. } | OpenError::CapabilityLength { .. } => {
                        (0, Bytes::new())
                    }
                };
                Notification::new(error_code::OPEN_MESSAGE, subcode, data)
            }
            DecodeError::Update(e) => {
                let (subcode, data) = e.notification();
                Notification::new(error_code::UPDATE_MESSAGE, subcode, data)
            }
            DecodeError::RouteRefresh(RouteRefreshError::InvalidMessageLength {
                message, ..
            }) => Notification::new(
                error_code::ROUTE_REFRESH_MESSAGE,
                ROUTE_REFRESH_INVALID_LENGTH,
                message.clone(),
            ),
        }
    }

    /// The RFC 7606 action: only UPDATE errors can be milder than a session reset.
    pub fn action(&self) -> UpdateAction {
        match self {
            DecodeError::Update(e) => e.action(),
            _ => UpdateAction::SessionReset,
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{message} of {length} octets exceeds the maximum message length {max}")]
    MessageTooLong {
        message: &'static str,
        length: usize,
        max: usize,
    },
    #[error("attribute {code} value of {length} octets exceeds 65535")]
    AttributeTooLong { code: u8, length: usize },
    #[error("AS path segment of {length} ASNs (must be 1..=255)")]
    AsSegmentLength { length: usize },
    #[error("capability {code} value of {length} octets exceeds 255")]
    CapabilityTooLong { code: u8, length: usize },
    #[error("optional parameter {param_type} value of {length} octets exceeds 65535")]
    OptionalParameterTooLong { param_type: u8, length: usize },
    #[error("prefix {prefix} does not belong to family {family:?}")]
    PrefixFamily {
        prefix: ipnet::IpNet,
        family: super::Family,
    },
    #[error("next hop {next_hop:?} cannot be used for family {family:?}")]
    NextHopFamily {
        next_hop: super::MpNextHop,
        family: super::Family,
    },
    #[error(
        "UPDATE for {family:?} with {prefixes} prefixes: its attributes leave no room for one"
    )]
    AttributesTooLong {
        family: super::Family,
        prefixes: usize,
    },
}

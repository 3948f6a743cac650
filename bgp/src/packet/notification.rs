//! NOTIFICATION (RFC 4271 §4.5) and the Cease data formats of RFC 4486 and RFC 9003.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Error code    | Error subcode |   Data (variable)             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
use super::iana::{cease_subcode, error_code};
use super::{Afi, Notification, Safi};
use bytes::{BufMut, Bytes, BytesMut};
use std::fmt;

/// Longest Shutdown Communication (RFC 9003 §2, which raised RFC 8203's 128 octets).
pub const MAX_SHUTDOWN_MESSAGE_LEN: usize = 255;

impl Notification {
    pub fn new(code: u8, subcode: u8, data: impl Into<Bytes>) -> Notification {
        Notification {
            code,
            subcode,
            data: data.into(),
        }
    }

    /// Cease / Administrative Shutdown with a Shutdown Communication (RFC 9003 §2): a length
    /// octet and UTF-8, cut to at most 255 octets on a character boundary.
    pub fn admin_shutdown(message: &str) -> Notification {
        Notification::new(
            error_code::CEASE,
            cease_subcode::ADMINISTRATIVE_SHUTDOWN,
            shutdown_data(message),
        )
    }

    /// Cease / Administrative Reset with a Shutdown Communication (RFC 9003 §2).
    pub fn admin_reset(message: &str) -> Notification {
        Notification::new(
            error_code::CEASE,
            cease_subcode::ADMINISTRATIVE_RESET,
            shutdown_data(message),
        )
    }

    /// The Shutdown Communication of an Administrative Shutdown or Reset (RFC 9003 §2), or
    /// `None` when there is none or it is not valid UTF-8 of the announced length.
    pub fn shutdown_message(&self) -> Option<String> {
        let is_admin = self.code == error_code::CEASE
            && (self.subcode == cease_subcode::ADMINISTRATIVE_SHUTDOWN
                || self.subcode == cease_subcode::ADMINISTRATIVE_RESET);
        if !is_admin {
            return None;
        }
        let (len, text) = self.data.split_first()?;
        let text = text.get(..usize::from(*len))?;
        std::str::from_utf8(text).ok().map(str::to_owned)
    }

    /// Whether this NOTIFICATION must flush our routes at a peer that negotiated the N bit
    /// (RFC 8538 §5, "Suggested Behavior" Hard Reset): Cease / Maximum Number of Prefixes
    /// Reached, Administrative Shutdown, Peer De-configured, Administrative Reset (where the
    /// RFC leaves it to the user, edgelb flushes: an operator's reset means it), Hard Reset
    /// itself, and BFD Down (RFC 9384, later than RFC 8538: the forwarding path is gone, so
    /// the routes must not stay). Every other NOTIFICATION keeps the routes for the restart
    /// time.
    pub fn must_flush(&self) -> bool {
        self.code == error_code::CEASE
            && matches!(
                self.subcode,
                cease_subcode::MAXIMUM_NUMBER_OF_PREFIXES_REACHED
                    | cease_subcode::ADMINISTRATIVE_SHUTDOWN
                    | cease_subcode::PEER_DE_CONFIGURED
                    | cease_subcode::ADMINISTRATIVE_RESET
                    | cease_subcode::HARD_RESET
                    | cease_subcode::BFD_DOWN
            )
    }

    /// This NOTIFICATION wrapped in Cease / Hard Reset (RFC 8538 §3): the data is the
    /// original code, subcode and data. A Hard Reset is returned as it is.
    pub fn hard_reset(&self) -> Notification {
        if self.code == error_code::CEASE && self.subcode == cease_subcode::HARD_RESET {
            return self.clone();
        }
        let mut data = BytesMut::with_capacity(2 + self.data.len());
        data.put_u8(self.code);
        data.put_u8(self.subcode);
        data.put_slice(&self.data);
        Notification::new(error_code::CEASE, cease_subcode::HARD_RESET, data.freeze())
    }

    /// Cease / Maximum Number of Prefixes Reached with the RFC 4486 §4 data: AFI (2),
    /// SAFI (1), the upper bound (4).
    pub fn max_prefixes_reached(afi: Afi, safi: Safi, limit: u32) -> Notification {
        let mut data = BytesMut::with_capacity(7);
        data.put_u16(afi.0);
        data.put_u8(safi.0);
        data.put_u32(limit);
        Notification::new(
            error_code::CEASE,
            cease_subcode::MAXIMUM_NUMBER_OF_PREFIXES_REACHED,
            data.freeze(),
        )
    }

    /// Body octets (after the header).
    pub(crate) fn encode_body(&self, out: &mut BytesMut) {
        out.put_u8(self.code);
        out.put_u8(self.subcode);
        out.put_slice(&self.data);
    }

    /// `body` is at least two octets (framing checked the minimum length).
    pub(crate) fn decode_body(body: &[u8]) -> Notification {
        let code = body.first().copied().unwrap_or(0);
        let subcode = body.get(1).copied().unwrap_or(0);
        let data = body
            .get(2..)
            .map(Bytes::copy_from_slice)
            .unwrap_or_default();
        Notification {
            code,
            subcode,
            data,
        }
    }
}

fn shutdown_data(message: &str) -> Bytes {
    let mut end = message.len().min(MAX_SHUTDOWN_MESSAGE_LEN);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let text = &message.as_bytes()[..end];
    let mut data = BytesMut::with_capacity(1 + text.len());
    // `end` <= 255, so the cast cannot truncate.
    data.put_u8(end as u8);
    data.put_slice(text);
    data.freeze()
}

/// Names of codes and subcodes (RFC 4271 §4.5, RFC 4486, RFC 6608, RFC 7313, RFC 5492).
fn names(code: u8, subcode: u8) -> (&'static str, Option<&'static str>) {
    let sub = |names: &[&'static str]| names.get(usize::from(subcode)).copied();
    match code {
        error_code::MESSAGE_HEADER => (
            "Message Header Error",
            sub(&[
                "Unspecific",
                "Connection Not Synchronized",
                "Bad Message Length",
                "Bad Message Type",
            ]),
        ),
        error_code::OPEN_MESSAGE => (
            "OPEN Message Error",
            sub(&[
                "Unspecific",
                "Unsupported Version Number",
                "Bad Peer AS",
                "Bad BGP Identifier",
                "Unsupported Optional Parameter",
                "Authentication Failure (deprecated)",
                "Unacceptable Hold Time",
                "Unsupported Capability",
            ]),
        ),
        error_code::UPDATE_MESSAGE => (
            "UPDATE Message Error",
            sub(&[
                "Unspecific",
                "Malformed Attribute List",
                "Unrecognized Well-known Attribute",
                "Missing Well-known Attribute",
                "Attribute Flags Error",
                "Attribute Length Error",
                "Invalid ORIGIN Attribute",
                "AS Routing Loop (deprecated)",
                "Invalid NEXT_HOP Attribute",
                "Optional Attribute Error",
                "Invalid Network Field",
                "Malformed AS_PATH",
            ]),
        ),
        error_code::HOLD_TIMER_EXPIRED => ("Hold Timer Expired", sub(&["Unspecific"])),
        error_code::FSM => (
            "Finite State Machine Error",
            sub(&[
                "Unspecified Error",
                "Unexpected Message in OpenSent State",
                "Unexpected Message in OpenConfirm State",
                "Unexpected Message in Established State",
            ]),
        ),
        error_code::CEASE => (
            "Cease",
            sub(&[
                "Unspecific",
                "Maximum Number of Prefixes Reached",
                "Administrative Shutdown",
                "Peer De-configured",
                "Administrative Reset",
                "Connection Rejected",
                "Other Configuration Change",
                "Connection Collision Resolution",
                "Out of Resources",
                "Hard Reset",
                "BFD Down",
            ]),
        ),
        error_code::ROUTE_REFRESH_MESSAGE => (
            "ROUTE-REFRESH Message Error",
            sub(&["Reserved", "Invalid Message Length"]),
        ),
        _ => ("Unknown Error", None),
    }
}

/// `Cease / Administrative Shutdown (6/2): "maintenance"`, or the data in hex.
impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (code, subcode) = names(self.code, self.subcode);
        write!(
            f,
            "{code} / {} ({}/{})",
            subcode.unwrap_or("Unknown Subcode"),
            self.code,
            self.subcode
        )?;
        if let Some(text) = self.shutdown_message() {
            write!(f, ": {text:?}")?;
        } else if !self.data.is_empty() {
            f.write_str(", data ")?;
            for b in self.data.iter() {
                write!(f, "{b:02x}")?;
            }
        }
        Ok(())
    }
}

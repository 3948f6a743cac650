//! Framing: how long is the next message in a byte stream (RFC 4271 §4.1, §6.1).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                                                               +
//! |                           Marker                              |
//! +                                                               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Length               |      Type     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! The session reads until [`frame_len`] returns `Some(n)`, then hands exactly `n` octets to
//! [`Message::decode`](super::Message::decode). Header errors are found here, before any
//! body is buffered, so a peer cannot make us wait for 65535 octets of garbage.
use super::error::{DecodeError, HeaderError};
use super::iana::message_type;
use super::{CodecContext, HEADER_LEN};

/// Length of the whole next message, `None` while fewer than [`HEADER_LEN`] octets are
/// buffered. Checks the marker, the length against the type's minimum and the negotiated
/// maximum, and the type (RFC 4271 §6.1, RFC 2918 §3, RFC 7313 §5, RFC 8654 §4).
pub fn frame_len(buf: &[u8], ctx: &CodecContext) -> Result<Option<usize>, DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if header[..16].iter().any(|b| *b != 0xff) {
        return Err(HeaderError::ConnectionNotSynchronized.into());
    }
    let length = u16::from_be_bytes([header[16], header[17]]);
    let message_type = header[18];
    let len = usize::from(length);
    let bad_length = || {
        DecodeError::from(HeaderError::BadMessageLength {
            length,
            message_type,
        })
    };
    if len < HEADER_LEN || len > ctx.max_message_len() {
        return Err(bad_length());
    }
    let length_ok = match message_type {
        message_type::OPEN => len >= 29,
        message_type::UPDATE => len >= 23,
        message_type::NOTIFICATION => len >= 21,
        message_type::KEEPALIVE => len == HEADER_LEN,
        // RFC 2918: exactly AFI, reserved, SAFI. A longer enhanced route refresh (RFC 7313
        // subtypes 1 and 2) passes here so decode can answer with the RFC 7313 error.
        message_type::ROUTE_REFRESH if len > 23 => match buf.get(HEADER_LEN + 2) {
            None => return Ok(None),
            Some(subtype) => is_enhanced_refresh(*subtype),
        },
        message_type::ROUTE_REFRESH => len == 23,
        _ => return Err(HeaderError::BadMessageType { message_type }.into()),
    };
    if !length_ok {
        return Err(bad_length());
    }
    Ok(Some(len))
}

/// RFC 7313 §3: the octet after the AFI is the subtype; 1 and 2 are BoRR and EoRR.
fn is_enhanced_refresh(subtype: u8) -> bool {
    matches!(subtype, 1 | 2)
}

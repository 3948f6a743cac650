//! Whole messages: the header (RFC 4271 §4.1), dispatch by type, KEEPALIVE (§4.4) and
//! ROUTE-REFRESH (RFC 2918 §3, RFC 7313 §3).
//!
//! ROUTE-REFRESH body:
//! ```text
//!  0       7      15      23      31
//! +-------+-------+-------+-------+
//! |      AFI      | Res.  | SAFI  |
//! +-------+-------+-------+-------+
//! ```
//! (RFC 7313 calls the reserved octet the Message Subtype.)
use super::error::{DecodeError, EncodeError, HeaderError, RouteRefreshError};
use super::framing::frame_len;
use super::iana::message_type;
use super::{
    Afi, CodecContext, Message, Notification, Open, RouteRefresh, Safi, Update, UpdateDecode,
    HEADER_LEN,
};
use bytes::{BufMut, Bytes, BytesMut};

impl Message {
    /// Decodes exactly one framed message (`frame` as long as [`frame_len`] said).
    ///
    /// Any error of an UPDATE, even one RFC 7606 downgrades, comes back as `Err`, so an
    /// UPDATE that is `Ok` is whole. Check [`DecodeError::action`]: only
    /// [`UpdateAction::SessionReset`](super::UpdateAction::SessionReset) calls for the
    /// NOTIFICATION; for the milder actions count the UPDATE and go on, or call
    /// [`Update::decode`] to get what could be decoded.
    pub fn decode(frame: &[u8], ctx: &CodecContext) -> Result<Message, DecodeError> {
        let (kind, body) = split(frame, ctx)?;
        Ok(match kind {
            message_type::OPEN => Message::Open(Open::decode_body(body)?),
            message_type::UPDATE => {
                let decoded = Update::decode_body(body, ctx)?;
                match decoded.action {
                    Some((_, e)) => return Err(e),
                    None => Message::Update(decoded.update),
                }
            }
            message_type::NOTIFICATION => Message::Notification(Notification::decode_body(body)),
            message_type::KEEPALIVE => Message::Keepalive,
            _ => Message::RouteRefresh(RouteRefresh::decode_frame(frame, body)?),
        })
    }

    /// Appends the encoded message to `out`; on error `out` is left as it was.
    pub fn encode(&self, ctx: &CodecContext, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = out.len();
        let (kind, name) = match self {
            Message::Open(_) => (message_type::OPEN, "OPEN"),
            Message::Update(_) => (message_type::UPDATE, "UPDATE"),
            Message::Notification(_) => (message_type::NOTIFICATION, "NOTIFICATION"),
            Message::Keepalive => (message_type::KEEPALIVE, "KEEPALIVE"),
            Message::RouteRefresh(_) => (message_type::ROUTE_REFRESH, "ROUTE-REFRESH"),
        };
        put_header(out, kind);
        let body = match self {
            Message::Open(open) => open.encode_body(out),
            Message::Update(update) => update.encode_body(ctx, out),
            Message::Notification(n) => {
                n.encode_body(out);
                Ok(())
            }
            Message::Keepalive => Ok(()),
            Message::RouteRefresh(rr) => {
                out.put_u16(rr.afi.0);
                out.put_u8(rr.subtype);
                out.put_u8(rr.safi.0);
                Ok(())
            }
        };
        let result = body.and_then(|()| finish(out, start, ctx, name));
        if result.is_err() {
            out.truncate(start);
        }
        result
    }
}

impl Update {
    /// Decodes one framed UPDATE and says what RFC 7606 did (see [`Update::decode_body`]).
    pub fn decode(frame: &[u8], ctx: &CodecContext) -> Result<UpdateDecode, DecodeError> {
        let (kind, body) = split(frame, ctx)?;
        if kind != message_type::UPDATE {
            return Err(HeaderError::BadMessageType { message_type: kind }.into());
        }
        Update::decode_body(body, ctx)
    }
}

impl RouteRefresh {
    /// A plain route refresh request (RFC 2918) for `afi`/`safi`.
    pub fn new(afi: Afi, safi: Safi) -> RouteRefresh {
        RouteRefresh {
            afi,
            safi,
            subtype: 0,
        }
    }

    fn decode_frame(frame: &[u8], body: &[u8]) -> Result<RouteRefresh, DecodeError> {
        // Framing let a longer message through only for the RFC 7313 subtypes 1 and 2.
        let [a0, a1, subtype, safi] = body else {
            return Err(RouteRefreshError::InvalidMessageLength {
                length: frame.len(),
                message: Bytes::copy_from_slice(frame),
            }
            .into());
        };
        Ok(RouteRefresh {
            afi: Afi(u16::from_be_bytes([*a0, *a1])),
            safi: Safi(*safi),
            subtype: *subtype,
        })
    }
}

/// Checks the header of a whole frame and splits off the body.
fn split<'a>(frame: &'a [u8], ctx: &CodecContext) -> Result<(u8, &'a [u8]), DecodeError> {
    let len = frame_len(frame, ctx)?;
    match (len, frame.get(HEADER_LEN..)) {
        (Some(len), Some(body)) if len == frame.len() => Ok((frame[HEADER_LEN - 1], body)),
        _ => {
            // The frame is not the length its header says: report the header's length.
            let length = frame
                .get(16..18)
                .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
            let message_type = frame.get(18).copied().unwrap_or(0);
            Err(HeaderError::BadMessageLength {
                length,
                message_type,
            }
            .into())
        }
    }
}

pub(crate) fn put_header(out: &mut BytesMut, kind: u8) {
    out.put_slice(&[0xff; 16]);
    out.put_u16(0);
    out.put_u8(kind);
}

/// Fills in the length of the message that starts at `start`, or says it is too long.
pub(crate) fn finish(
    out: &mut BytesMut,
    start: usize,
    ctx: &CodecContext,
    message: &'static str,
) -> Result<(), EncodeError> {
    let length = out.len() - start;
    let max = ctx.max_message_len();
    if length > max {
        return Err(EncodeError::MessageTooLong {
            message,
            length,
            max,
        });
    }
    // max <= 65535, so the cast cannot truncate.
    out[start + 16..start + 18].copy_from_slice(&(length as u16).to_be_bytes());
    Ok(())
}

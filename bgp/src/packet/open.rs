//! OPEN (RFC 4271 §4.2), Capabilities (RFC 5492) and Extended Optional Parameters Length
//! (RFC 9072).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+
//! |    Version    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     My Autonomous System      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Hold Time           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         BGP Identifier                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Opt Parm Len  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             Optional Parameters (variable)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!
//! Optional parameter: Type (1) | Length (1) | Value; with RFC 9072 (Opt Parm Len = 255 and
//! a first Type of 255) a 2-octet Extended Opt. Parm. Length follows and every parameter
//! has a 2-octet Length.
//! ```
use super::error::{DecodeError, EncodeError, OpenError, BGP_VERSION};
use super::iana::capability as cap;
use super::reader::Reader;
use super::{Afi, Capability, GracefulRestart, GracefulRestartFamily, Open, Safi, AS_TRANS};
use bytes::{BufMut, Bytes, BytesMut};
use std::net::Ipv4Addr;

/// Optional parameter type "Capabilities" (RFC 5492 §4).
const PARAM_CAPABILITIES: u8 = 2;
/// RFC 9072 §2: the Non-Ext OP Type that announces the extended form.
const PARAM_EXTENDED: u8 = 255;

impl Open {
    /// An OPEN for `asn`: "My Autonomous System" is `asn` or AS_TRANS when it needs four
    /// octets (RFC 6793 §4.1). Add [`Capability::FourOctetAs`] to `capabilities` yourself.
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, capabilities: Vec<Capability>) -> Open {
        Open {
            version: BGP_VERSION,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id,
            capabilities,
            other_params: Vec::new(),
        }
    }

    pub(crate) fn decode_body(body: &[u8]) -> Result<Open, DecodeError> {
        let malformed = |reason| OpenError::Malformed {
            field: "OPEN",
            reason,
        };
        let mut r = Reader::new(body);
        let (Some(version), Some(my_as), Some(hold_time), Some(id), Some(opt_len)) =
            (r.u8(), r.u16(), r.u16(), r.array::<4>(), r.u8())
        else {
            return Err(malformed("shorter than 10 octets").into());
        };
        if version != BGP_VERSION {
            return Err(OpenError::UnsupportedVersion { version }.into());
        }
        let mut open = Open {
            version,
            my_as,
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            capabilities: Vec::new(),
            other_params: Vec::new(),
        };
        // RFC 9072 §2: Non-Ext OP Len 255 followed by Non-Ext OP Type 255.
        let extended = opt_len == 255 && body.get(10) == Some(&PARAM_EXTENDED);
        let params = if extended {
            r.take(1);
            let len = r
                .u16()
                .ok_or(malformed("extended optional parameters length missing"))?;
            r.take(usize::from(len))
                .ok_or(malformed("optional parameters overrun the message"))?
        } else {
            r.take(usize::from(opt_len))
                .ok_or(malformed("optional parameters overrun the message"))?
        };
        if !r.is_empty() {
            return Err(malformed("octets after the optional parameters").into());
        }
        let mut p = Reader::new(params);
        while !p.is_empty() {
            let param_type = p.u8().ok_or(malformed("truncated parameter"))?;
            let len = if extended {
                p.u16()
            } else {
                p.u8().map(u16::from)
            };
            let len = len.ok_or(malformed("truncated parameter length"))?;
            let value = p
                .take(usize::from(len))
                .ok_or(malformed("parameter overruns"))?;
            if param_type != PARAM_CAPABILITIES {
                return Err(OpenError::UnsupportedOptionalParameter { param_type }.into());
            }
            decode_capabilities(value, &mut open.capabilities)?;
        }
        if open.hold_time == 1 || open.hold_time == 2 {
            return Err(OpenError::UnacceptableHoldTime {
                hold_time: open.hold_time,
            }
            .into());
        }
        if open.bgp_id.is_unspecified() {
            return Err(OpenError::BadBgpIdentifier { id: open.bgp_id }.into());
        }
        // RFC 7607 §2: AS 0 is a Bad Peer AS, in the header or the 4-octet AS capability.
        if open.my_as == 0 || open.asn() == 0 {
            return Err(OpenError::BadPeerAs { asn: open.asn() }.into());
        }
        Ok(open)
    }

    pub(crate) fn encode_body(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u8(self.version);
        out.put_u16(self.my_as);
        out.put_u16(self.hold_time);
        out.put_slice(&self.bgp_id.octets());
        // Capabilities grouped into parameters of at most 255 octets (RFC 5492 §4).
        let mut groups: Vec<BytesMut> = vec![BytesMut::new()];
        for c in &self.capabilities {
            let mut one = BytesMut::new();
            c.encode(&mut one)?;
            match groups.last_mut() {
                Some(g) if g.len() + one.len() <= 255 => g.put_slice(&one),
                _ => groups.push(one),
            }
        }
        let mut params: Vec<(u8, &[u8])> = groups
            .iter()
            .filter(|g| !g.is_empty())
            .map(|g| (PARAM_CAPABILITIES, &g[..]))
            .collect();
        params.extend(self.other_params.iter().map(|(t, v)| (*t, &v[..])));
        let short_len: usize = params.iter().map(|(_, v)| 2 + v.len()).sum();
        if short_len <= 255 && params.iter().all(|(_, v)| v.len() <= 255) {
            out.put_u8(short_len as u8);
            for (t, v) in params {
                out.put_u8(t);
                out.put_u8(v.len() as u8);
                out.put_slice(v);
            }
            return Ok(());
        }
        // RFC 9072 §2: one capabilities parameter, 2-octet lengths.
        let all_caps: Vec<u8> = groups.iter().flat_map(|g| g.iter().copied()).collect();
        let mut ext: Vec<(u8, &[u8])> = vec![(PARAM_CAPABILITIES, &all_caps[..])];
        ext.extend(self.other_params.iter().map(|(t, v)| (*t, &v[..])));
        let mut body = BytesMut::new();
        for (t, v) in ext {
            let len =
                u16::try_from(v.len()).map_err(|_| EncodeError::OptionalParameterTooLong {
                    param_type: t,
                    length: v.len(),
                })?;
            body.put_u8(t);
            body.put_u16(len);
            body.put_slice(v);
        }
        let len = u16::try_from(body.len()).map_err(|_| EncodeError::OptionalParameterTooLong {
            param_type: PARAM_CAPABILITIES,
            length: body.len(),
        })?;
        out.put_u8(255);
        out.put_u8(PARAM_EXTENDED);
        out.put_u16(len);
        out.put_slice(&body);
        Ok(())
    }
}

fn cap_len(code: u8, length: usize, expected: &'static str) -> DecodeError {
    OpenError::CapabilityLength {
        code,
        length,
        expected,
    }
    .into()
}

/// Capabilities inside one optional parameter (RFC 5492 §4):
/// Capability Code (1) | Capability Length (1) | Capability Value.
fn decode_capabilities(buf: &[u8], out: &mut Vec<Capability>) -> Result<(), DecodeError> {
    let malformed = |reason| OpenError::Malformed {
        field: "capability",
        reason,
    };
    let mut r = Reader::new(buf);
    while !r.is_empty() {
        let code = r.u8().ok_or(malformed("truncated"))?;
        let len = r.u8().ok_or(malformed("truncated length"))?;
        let value = r
            .take(usize::from(len))
            .ok_or(malformed("value overruns the parameter"))?;
        out.push(Capability::decode(code, value)?);
    }
    Ok(())
}

impl Capability {
    pub fn code(&self) -> u8 {
        match self {
            Capability::Multiprotocol { .. } => cap::MULTIPROTOCOL,
            Capability::RouteRefresh => cap::ROUTE_REFRESH,
            Capability::ExtendedMessage => cap::EXTENDED_MESSAGE,
            Capability::GracefulRestart(_) => cap::GRACEFUL_RESTART,
            Capability::FourOctetAs(_) => cap::FOUR_OCTET_AS,
            Capability::Unknown { code, .. } => *code,
        }
    }

    /// One capability value; unknown codes are kept as received.
    pub fn decode(code: u8, value: &[u8]) -> Result<Capability, DecodeError> {
        let len = value.len();
        let mut r = Reader::new(value);
        match code {
            // RFC 4760 §8: AFI (2) | Reserved (1) | SAFI (1).
            cap::MULTIPROTOCOL => match (len, r.u16(), r.u8(), r.u8()) {
                (4, Some(afi), Some(_), Some(safi)) => Ok(Capability::Multiprotocol {
                    afi: Afi(afi),
                    safi: Safi(safi),
                }),
                _ => Err(cap_len(code, len, "4")),
            },
            cap::ROUTE_REFRESH if len == 0 => Ok(Capability::RouteRefresh),
            cap::ROUTE_REFRESH => Err(cap_len(code, len, "0")),
            cap::EXTENDED_MESSAGE if len == 0 => Ok(Capability::ExtendedMessage),
            cap::EXTENDED_MESSAGE => Err(cap_len(code, len, "0")),
            // RFC 6793 §3.
            cap::FOUR_OCTET_AS => match (len, r.u32()) {
                (4, Some(asn)) => Ok(Capability::FourOctetAs(asn)),
                _ => Err(cap_len(code, len, "4")),
            },
            cap::GRACEFUL_RESTART => decode_graceful_restart(value),
            _ => Ok(Capability::Unknown {
                code,
                value: Bytes::copy_from_slice(value),
            }),
        }
    }

    /// Code, length, value.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let mut value = BytesMut::new();
        match self {
            Capability::Multiprotocol { afi, safi } => {
                value.put_u16(afi.0);
                value.put_u8(0);
                value.put_u8(safi.0);
            }
            Capability::RouteRefresh | Capability::ExtendedMessage => {}
            Capability::GracefulRestart(gr) => {
                let mut flags = 0u16;
                if gr.restart_state {
                    flags |= 0x8000;
                }
                if gr.notification {
                    flags |= 0x4000;
                }
                value.put_u16(flags | (gr.restart_time & 0x0fff));
                for f in &gr.families {
                    value.put_u16(f.afi.0);
                    value.put_u8(f.safi.0);
                    value.put_u8(if f.forwarding_preserved { 0x80 } else { 0 });
                }
            }
            Capability::FourOctetAs(asn) => value.put_u32(*asn),
            Capability::Unknown { value: v, .. } => value.put_slice(v),
        }
        let len = u8::try_from(value.len()).map_err(|_| EncodeError::CapabilityTooLong {
            code: self.code(),
            length: value.len(),
        })?;
        out.put_u8(self.code());
        out.put_u8(len);
        out.put_slice(&value);
        Ok(())
    }
}

/// RFC 4724 §3:
/// ```text
/// +--------------------------------------------------+
/// | Restart Flags (4 bits) | Restart Time (12 bits)  |
/// +--------------------------------------------------+
/// | AFI (16 bits) | SAFI (8 bits) | Flags for AF (8) |  repeated
/// +--------------------------------------------------+
/// ```
fn decode_graceful_restart(value: &[u8]) -> Result<Capability, DecodeError> {
    let len = value.len();
    let mut r = Reader::new(value);
    let head = r
        .u16()
        .ok_or(cap_len(cap::GRACEFUL_RESTART, len, "2 + 4n"))?;
    if !r.remaining().is_multiple_of(4) {
        return Err(cap_len(cap::GRACEFUL_RESTART, len, "2 + 4n"));
    }
    let mut families = Vec::with_capacity(r.remaining() / 4);
    while let (Some(afi), Some(safi), Some(flags)) = (r.u16(), r.u8(), r.u8()) {
        families.push(GracefulRestartFamily {
            afi: Afi(afi),
            safi: Safi(safi),
            forwarding_preserved: flags & 0x80 != 0,
        });
    }
    Ok(Capability::GracefulRestart(GracefulRestart {
        restart_state: head & 0x8000 != 0,
        notification: head & 0x4000 != 0,
        restart_time: head & 0x0fff,
        families,
    }))
}

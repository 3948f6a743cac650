//! Path attributes (RFC 4271 §4.3, §5) one by one: flags, length and value checks with the
//! error each RFC prescribes, and their encoding.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |O|T|P|E|unused |  Type Code    |  Length (1, or 2 if E)  | Value...
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//! The walk over the attribute list and the RFC 7606 bookkeeping live in `update.rs`.
use super::error::{EncodeError, UpdateError};
use super::iana::{attr, attr_flags};
use super::reader::Reader;
use super::{
    as_path, prefix, Afi, Aggregator, AsPath, CodecContext, Community, Family, LargeCommunity,
    MpNextHop, MpReach, MpUnreach, Origin, PathAttributes, RawAttribute, Safi,
};
use bytes::{BufMut, Bytes, BytesMut};
use std::net::{Ipv4Addr, Ipv6Addr};

const O: u8 = attr_flags::OPTIONAL;
const T: u8 = attr_flags::TRANSITIVE;
/// Flag bits kept for unknown attributes: Optional, Transitive, Partial. Extended Length is
/// an encoding detail and the low four bits are ignored on receipt (RFC 4271 §4.3).
const KEPT_FLAGS: u8 = O | T | attr_flags::PARTIAL;

/// The Optional and Transitive bits a recognized attribute must carry (RFC 4271 §5,
/// RFC 4760 §3-4, RFC 6793 §3, RFC 1997, RFC 8092).
pub(crate) fn expected_flags(code: u8) -> Option<u8> {
    match code {
        attr::ORIGIN
        | attr::AS_PATH
        | attr::NEXT_HOP
        | attr::LOCAL_PREF
        | attr::ATOMIC_AGGREGATE => Some(T),
        attr::MULTI_EXIT_DISC | attr::MP_REACH_NLRI | attr::MP_UNREACH_NLRI => Some(O),
        attr::AGGREGATOR
        | attr::COMMUNITIES
        | attr::AS4_PATH
        | attr::AS4_AGGREGATOR
        | attr::LARGE_COMMUNITIES => Some(O | T),
        _ => None,
    }
}

/// One received attribute: its parts and its whole octets (the NOTIFICATION data).
pub(crate) struct Attr<'a> {
    pub flags: u8,
    pub code: u8,
    pub value: &'a [u8],
    pub whole: &'a [u8],
}

/// Attributes as decoded, before AS4_PATH/AS4_AGGREGATOR are reconciled (RFC 6793 §4.2.3).
#[derive(Default)]
pub(crate) struct Decoded {
    pub attrs: PathAttributes,
    pub as4_path: Option<AsPath>,
    pub as4_aggregator: Option<Aggregator>,
}

impl Attr<'_> {
    fn whole(&self) -> Bytes {
        Bytes::copy_from_slice(self.whole)
    }
    fn length_error(&self) -> UpdateError {
        UpdateError::AttributeLength {
            code: self.code,
            length: self.value.len(),
            attribute: self.whole(),
        }
    }
    fn optional_error(&self, reason: &'static str) -> UpdateError {
        UpdateError::OptionalAttribute {
            code: self.code,
            reason,
            attribute: self.whole(),
        }
    }
    fn u32_value(&self) -> Result<u32, UpdateError> {
        let b: [u8; 4] = self.value.try_into().map_err(|_| self.length_error())?;
        Ok(u32::from_be_bytes(b))
    }
}

/// Decodes one attribute into `out`. The caller has already handled duplicates.
pub(crate) fn decode(
    a: &Attr<'_>,
    ctx: &CodecContext,
    out: &mut Decoded,
) -> Result<(), UpdateError> {
    let Some(expected) = expected_flags(a.code) else {
        if a.flags & O == 0 {
            return Err(UpdateError::UnrecognizedWellKnown {
                code: a.code,
                attribute: a.whole(),
            });
        }
        out.attrs.unknown.push(RawAttribute {
            flags: a.flags & KEPT_FLAGS,
            code: a.code,
            value: Bytes::copy_from_slice(a.value),
        });
        return Ok(());
    };
    if a.flags & (O | T) != expected {
        return Err(UpdateError::AttributeFlags {
            code: a.code,
            flags: a.flags,
            attribute: a.whole(),
        });
    }
    let attrs = &mut out.attrs;
    match a.code {
        // RFC 4271 §5.1.1.
        attr::ORIGIN => {
            let [value] = a.value else {
                return Err(a.length_error());
            };
            attrs.origin = Some(match value {
                0 => Origin::Igp,
                1 => Origin::Egp,
                2 => Origin::Incomplete,
                _ => {
                    return Err(UpdateError::InvalidOrigin {
                        value: *value,
                        attribute: a.whole(),
                    })
                }
            });
        }
        // RFC 4271 §5.1.2, RFC 6793 §4.
        attr::AS_PATH => {
            let asn_len = if ctx.four_octet_as { 4 } else { 2 };
            let path = as_path::decode(a.value, asn_len).map_err(|reason| {
                UpdateError::MalformedAsPath {
                    code: a.code,
                    reason,
                }
            })?;
            attrs.as_path = Some(path);
        }
        // RFC 4271 §5.1.3, §6.3: a syntactically wrong next hop.
        attr::NEXT_HOP => {
            let b: [u8; 4] = a.value.try_into().map_err(|_| a.length_error())?;
            let next_hop = Ipv4Addr::from(b);
            if next_hop.is_unspecified() || next_hop.is_broadcast() || next_hop.is_multicast() {
                return Err(UpdateError::InvalidNextHop {
                    next_hop,
                    attribute: a.whole(),
                });
            }
            attrs.next_hop = Some(next_hop);
        }
        attr::MULTI_EXIT_DISC => attrs.med = Some(a.u32_value()?),
        attr::LOCAL_PREF => attrs.local_pref = Some(a.u32_value()?),
        attr::ATOMIC_AGGREGATE if a.value.is_empty() => attrs.atomic_aggregate = true,
        attr::ATOMIC_AGGREGATE => return Err(a.length_error()),
        // RFC 4271 §5.1.7 with the 4-octet form of RFC 6793 §4.
        attr::AGGREGATOR => attrs.aggregator = Some(decode_aggregator(a, ctx.four_octet_as)?),
        // RFC 1997; RFC 7606 §7.8: a non-zero multiple of 4.
        attr::COMMUNITIES => {
            if a.value.is_empty() || !a.value.len().is_multiple_of(4) {
                return Err(a.length_error());
            }
            attrs.communities = a
                .value
                .chunks_exact(4)
                .map(|c| Community(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect();
        }
        // RFC 8092 §5: a non-zero multiple of 12.
        attr::LARGE_COMMUNITIES => {
            if a.value.is_empty() || !a.value.len().is_multiple_of(12) {
                return Err(a.length_error());
            }
            attrs.large_communities = a
                .value
                .chunks_exact(12)
                .map(|c| {
                    let w = |i: usize| u32::from_be_bytes([c[i], c[i + 1], c[i + 2], c[i + 3]]);
                    LargeCommunity {
                        global_admin: w(0),
                        local_data1: w(4),
                        local_data2: w(8),
                    }
                })
                .collect();
        }
        attr::MP_REACH_NLRI => decode_mp_reach(a, attrs)?,
        attr::MP_UNREACH_NLRI => decode_mp_unreach(a, attrs)?,
        // RFC 6793 §4.1: between two 4-octet speakers AS4_* are discarded without error.
        attr::AS4_PATH if ctx.four_octet_as => {}
        attr::AS4_AGGREGATOR if ctx.four_octet_as => {}
        attr::AS4_PATH => {
            let path =
                as_path::decode(a.value, 4).map_err(|reason| UpdateError::MalformedAsPath {
                    code: a.code,
                    reason,
                })?;
            // RFC 6793 §6: AS4_PATH must not carry confederation segments.
            if path.segments.iter().any(|s| s.kind.is_confed()) {
                return Err(UpdateError::MalformedAsPath {
                    code: a.code,
                    reason: "confederation segment in AS4_PATH",
                });
            }
            out.as4_path = Some(path);
        }
        attr::AS4_AGGREGATOR => out.as4_aggregator = Some(decode_aggregator(a, true)?),
        // expected_flags() admits only the codes above.
        _ => {}
    }
    Ok(())
}

fn decode_aggregator(a: &Attr<'_>, four_octet: bool) -> Result<Aggregator, UpdateError> {
    let mut r = Reader::new(a.value);
    let asn = match (a.value.len(), four_octet) {
        (8, true) => r.u32(),
        (6, false) => r.u16().map(u32::from),
        _ => None,
    };
    match (asn, r.array::<4>()) {
        (Some(asn), Some(addr)) => Ok(Aggregator {
            asn,
            address: Ipv4Addr::from(addr),
        }),
        _ => Err(a.length_error()),
    }
}

/// RFC 4760 §3:
/// ```text
/// +---------------------------------------------------------+
/// | Address Family Identifier (2 octets)                    |
/// | Subsequent Address Family Identifier (1 octet)          |
/// | Length of Next Hop Network Address (1 octet)            |
/// | Network Address of Next Hop (variable)                  |
/// | Reserved (1 octet)                                      |
/// | Network Layer Reachability Information (variable)       |
/// +---------------------------------------------------------+
/// ```
/// Families other than IPv4/IPv6 unicast are kept raw in `unknown`.
fn decode_mp_reach(a: &Attr<'_>, attrs: &mut PathAttributes) -> Result<(), UpdateError> {
    let mut r = Reader::new(a.value);
    let (Some(afi), Some(safi), Some(nh_len)) = (r.u16(), r.u8(), r.u8()) else {
        return Err(a.optional_error("shorter than AFI, SAFI and next hop length"));
    };
    let (afi, safi) = (Afi(afi), Safi(safi));
    if Family::from_afi_safi(afi, safi).is_none() {
        attrs.unknown.push(RawAttribute {
            flags: O,
            code: a.code,
            value: Bytes::copy_from_slice(a.value),
        });
        return Ok(());
    }
    let nh = r
        .take(usize::from(nh_len))
        .ok_or_else(|| a.optional_error("next hop overruns"))?;
    let v6 = |b: &[u8]| <[u8; 16]>::try_from(b).map(Ipv6Addr::from).ok();
    let next_hop = match (afi, nh.len()) {
        (Afi::IPV4, 4) => <[u8; 4]>::try_from(nh)
            .ok()
            .map(|b| MpNextHop::V4(Ipv4Addr::from(b))),
        // RFC 2545 §3 (and RFC 8950 for IPv4 NLRI): global, optionally link-local.
        (_, 16) => v6(nh).map(|global| MpNextHop::V6 {
            global,
            link_local: None,
        }),
        (_, 32) => match (v6(&nh[..16]), v6(&nh[16..])) {
            (Some(global), Some(ll)) => Some(MpNextHop::V6 {
                global,
                link_local: Some(ll),
            }),
            _ => None,
        },
        _ => None,
    }
    .ok_or_else(|| a.optional_error("next hop length does not fit the address family"))?;
    r.u8()
        .ok_or_else(|| a.optional_error("reserved octet missing"))?;
    let nlri = prefix::decode_mp(afi, r.rest()).map_err(|e| a.optional_error(e.reason()))?;
    attrs.mp_reach = Some(MpReach {
        afi,
        safi,
        next_hop,
        nlri,
    });
    Ok(())
}

/// RFC 4760 §4: AFI (2) | SAFI (1) | Withdrawn Routes (variable).
fn decode_mp_unreach(a: &Attr<'_>, attrs: &mut PathAttributes) -> Result<(), UpdateError> {
    let mut r = Reader::new(a.value);
    let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
        return Err(a.optional_error("shorter than AFI and SAFI"));
    };
    let (afi, safi) = (Afi(afi), Safi(safi));
    if Family::from_afi_safi(afi, safi).is_none() {
        attrs.unknown.push(RawAttribute {
            flags: O,
            code: a.code,
            value: Bytes::copy_from_slice(a.value),
        });
        return Ok(());
    }
    let withdrawn = prefix::decode_mp(afi, r.rest()).map_err(|e| a.optional_error(e.reason()))?;
    attrs.mp_unreach = Some(MpUnreach {
        afi,
        safi,
        withdrawn,
    });
    Ok(())
}

/// Writes one attribute: the value is written by `value`, then the length is filled in and
/// the Extended Length bit set only when the value exceeds 255 octets (unless `force_ext`).
pub(crate) fn put(
    out: &mut BytesMut,
    flags: u8,
    code: u8,
    force_ext: bool,
    value: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.put_u8(flags | attr_flags::EXTENDED_LENGTH);
    out.put_u8(code);
    out.put_u16(0);
    value(out)?;
    let len = out.len() - start - 4;
    let len16 =
        u16::try_from(len).map_err(|_| EncodeError::AttributeTooLong { code, length: len })?;
    if len > 255 || force_ext {
        out[start + 2..start + 4].copy_from_slice(&len16.to_be_bytes());
    } else {
        out[start] = flags & !attr_flags::EXTENDED_LENGTH;
        out[start + 2] = len as u8;
        out.copy_within(start + 4.., start + 3);
        out.truncate(out.len() - 1);
    }
    Ok(())
}

/// The MP_REACH_NLRI value up to (not including) the NLRI.
pub(crate) fn put_mp_reach_head(afi: Afi, safi: Safi, next_hop: &MpNextHop, out: &mut BytesMut) {
    out.put_u16(afi.0);
    out.put_u8(safi.0);
    match next_hop {
        MpNextHop::V4(a) => {
            out.put_u8(4);
            out.put_slice(&a.octets());
        }
        MpNextHop::V6 {
            global,
            link_local: None,
        } => {
            out.put_u8(16);
            out.put_slice(&global.octets());
        }
        MpNextHop::V6 {
            global,
            link_local: Some(ll),
        } => {
            out.put_u8(32);
            out.put_slice(&global.octets());
            out.put_slice(&ll.octets());
        }
    }
    out.put_u8(0);
}

/// All attributes but MP_REACH_NLRI / MP_UNREACH_NLRI, in type-code order; with a 2-octet
/// session AS4_PATH / AS4_AGGREGATOR are added when needed (RFC 6793 §4.2.2).
pub(crate) fn encode_common(
    attrs: &PathAttributes,
    ctx: &CodecContext,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let four = ctx.four_octet_as;
    if let Some(origin) = attrs.origin {
        put(out, T, attr::ORIGIN, false, |o| {
            o.put_u8(origin as u8);
            Ok(())
        })?;
    }
    if let Some(path) = &attrs.as_path {
        put(out, T, attr::AS_PATH, false, |o| {
            as_path::encode(path, four, false, o)
        })?;
    }
    if let Some(nh) = attrs.next_hop {
        put(out, T, attr::NEXT_HOP, false, |o| {
            o.put_slice(&nh.octets());
            Ok(())
        })?;
    }
    if let Some(med) = attrs.med {
        put(out, O, attr::MULTI_EXIT_DISC, false, |o| {
            o.put_u32(med);
            Ok(())
        })?;
    }
    if let Some(lp) = attrs.local_pref {
        put(out, T, attr::LOCAL_PREF, false, |o| {
            o.put_u32(lp);
            Ok(())
        })?;
    }
    if attrs.atomic_aggregate {
        put(out, T, attr::ATOMIC_AGGREGATE, false, |_| Ok(()))?;
    }
    if let Some(agg) = attrs.aggregator {
        put(out, O | T, attr::AGGREGATOR, false, |o| {
            match (four, u16::try_from(agg.asn)) {
                (true, _) => o.put_u32(agg.asn),
                (false, Ok(asn)) => o.put_u16(asn),
                (false, Err(_)) => o.put_u16(super::AS_TRANS),
            }
            o.put_slice(&agg.address.octets());
            Ok(())
        })?;
    }
    if !attrs.communities.is_empty() {
        put(out, O | T, attr::COMMUNITIES, false, |o| {
            attrs.communities.iter().for_each(|c| o.put_u32(c.0));
            Ok(())
        })?;
    }
    if !four {
        if let Some(path) = attrs.as_path.as_ref().filter(|p| as_path::needs_as4(p)) {
            put(out, O | T, attr::AS4_PATH, false, |o| {
                as_path::encode(path, true, true, o)
            })?;
        }
        if let Some(agg) = attrs.aggregator.filter(|a| a.asn > u32::from(u16::MAX)) {
            put(out, O | T, attr::AS4_AGGREGATOR, false, |o| {
                o.put_u32(agg.asn);
                o.put_slice(&agg.address.octets());
                Ok(())
            })?;
        }
    }
    if !attrs.large_communities.is_empty() {
        put(out, O | T, attr::LARGE_COMMUNITIES, false, |o| {
            for c in &attrs.large_communities {
                o.put_u32(c.global_admin);
                o.put_u32(c.local_data1);
                o.put_u32(c.local_data2);
            }
            Ok(())
        })?;
    }
    for raw in &attrs.unknown {
        put(out, raw.flags & KEPT_FLAGS, raw.code, false, |o| {
            o.put_slice(&raw.value);
            Ok(())
        })?;
    }
    Ok(())
}

/// Every attribute: MP_REACH_NLRI and MP_UNREACH_NLRI first (RFC 7606 §5.1), then the rest.
pub(crate) fn encode_all(
    attrs: &PathAttributes,
    ctx: &CodecContext,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    if let Some(mp) = &attrs.mp_reach {
        put(out, O, attr::MP_REACH_NLRI, false, |o| {
            put_mp_reach_head(mp.afi, mp.safi, &mp.next_hop, o);
            mp.nlri.iter().for_each(|p| prefix::encode(p, o));
            Ok(())
        })?;
    }
    if let Some(mp) = &attrs.mp_unreach {
        put(out, O, attr::MP_UNREACH_NLRI, false, |o| {
            o.put_u16(mp.afi.0);
            o.put_u8(mp.safi.0);
            mp.withdrawn.iter().for_each(|p| prefix::encode(p, o));
            Ok(())
        })?;
    }
    encode_common(attrs, ctx, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put_value(len: usize, force_ext: bool) -> BytesMut {
        let mut out = BytesMut::from(&b"x"[..]);
        put(&mut out, O | T, 99, force_ext, |o| {
            o.put_bytes(0xab, len);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn short_value_gets_a_one_octet_length() {
        assert_eq!(&put_value(2, false)[..], &[b'x', 0xc0, 99, 2, 0xab, 0xab]);
    }

    #[test]
    fn value_over_255_octets_gets_extended_length() {
        let out = put_value(256, false);
        assert_eq!(&out[..5], &[b'x', 0xd0, 99, 1, 0]);
        assert_eq!(out.len(), 1 + 4 + 256);
    }

    #[test]
    fn forced_extended_length_is_kept_for_short_values() {
        assert_eq!(&put_value(1, true)[..], &[b'x', 0xd0, 99, 0, 1, 0xab]);
    }

    #[test]
    fn value_over_65535_octets_is_refused() {
        let mut out = BytesMut::new();
        let err = put(&mut out, O, 99, false, |o| {
            o.put_bytes(0, 65536);
            Ok(())
        });
        assert_eq!(
            err,
            Err(EncodeError::AttributeTooLong {
                code: 99,
                length: 65536
            })
        );
    }
}

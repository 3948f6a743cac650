//! Packing many prefixes that share attributes into as few UPDATEs as fit (RFC 4271 §4.3,
//! RFC 4760 §3-4, RFC 8654 for the size). The attributes are encoded once per call; each
//! message is then header, attributes and as many prefixes as the maximum length allows.
//!
//! IPv4 unicast with an IPv4 next hop uses the NEXT_HOP attribute and the NLRI field;
//! everything else (IPv6, or IPv4 with an IPv6 next hop per RFC 8950) goes in
//! MP_REACH_NLRI, which is written first (RFC 7606 §5.1).
use super::attribute::{encode_common, put_mp_reach_head};
use super::error::EncodeError;
use super::iana::{attr, attr_flags, message_type};
use super::message::{finish, put_header};
use super::prefix::{self, encoded_len};
use super::{CodecContext, Family, MpNextHop, PathAttributes, HEADER_LEN};
use bytes::{BufMut, BytesMut};
use ipnet::IpNet;

/// Header, Withdrawn Routes Length and Total Path Attribute Length.
const UPDATE_FIXED: usize = HEADER_LEN + 4;
/// MP_(UN)REACH_NLRI attribute header with a 2-octet length.
const MP_ATTR_HEADER: usize = 4;

/// Appends UPDATEs announcing `prefixes` (all of `family`) with `attrs` and `next_hop`;
/// returns how many messages were written. `attrs.next_hop`, `mp_reach` and `mp_unreach`
/// are ignored: the next hop comes from `next_hop`. On error `out` is left as it was.
pub fn encode_announce(
    family: Family,
    attrs: &PathAttributes,
    next_hop: MpNextHop,
    prefixes: &[IpNet],
    ctx: &CodecContext,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    check_family(family, prefixes)?;
    let mut common = PathAttributes {
        next_hop: None,
        mp_reach: None,
        mp_unreach: None,
        ..attrs.clone()
    };
    let classic = match (family, next_hop) {
        (Family::Ipv4Unicast, MpNextHop::V4(nh)) => {
            common.next_hop = Some(nh);
            true
        }
        (Family::Ipv6Unicast, MpNextHop::V4(_)) => {
            return Err(EncodeError::NextHopFamily { next_hop, family })
        }
        _ => false,
    };
    let mut common_bytes = BytesMut::new();
    encode_common(&common, ctx, &mut common_bytes)?;
    let mut mp_head = BytesMut::new();
    if !classic {
        let (afi, safi) = family.afi_safi();
        put_mp_reach_head(afi, safi, &next_hop, &mut mp_head);
    }
    let mp_fixed = if classic {
        0
    } else {
        MP_ATTR_HEADER + mp_head.len()
    };
    let room = ctx
        .max_message_len()
        .saturating_sub(UPDATE_FIXED + common_bytes.len() + mp_fixed);

    let start_all = out.len();
    let mut messages = 0;
    let mut rest = prefixes;
    while !rest.is_empty() {
        let Some(n) = fitting(rest, room) else {
            out.truncate(start_all);
            return Err(EncodeError::AttributesTooLong {
                family,
                prefixes: prefixes.len(),
            });
        };
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let start = out.len();
        put_header(out, message_type::UPDATE);
        out.put_u16(0);
        let nlri_len: usize = chunk.iter().map(|p| encoded_len(p.prefix_len())).sum();
        if classic {
            put_len(out, common_bytes.len());
            out.put_slice(&common_bytes);
            chunk.iter().for_each(|p| prefix::encode(p, out));
        } else {
            put_len(out, mp_fixed + nlri_len + common_bytes.len());
            out.put_u8(attr_flags::OPTIONAL | attr_flags::EXTENDED_LENGTH);
            out.put_u8(attr::MP_REACH_NLRI);
            put_len(out, mp_head.len() + nlri_len);
            out.put_slice(&mp_head);
            chunk.iter().for_each(|p| prefix::encode(p, out));
            out.put_slice(&common_bytes);
        }
        if let Err(e) = finish(out, start, ctx, "UPDATE") {
            out.truncate(start_all);
            return Err(e);
        }
        messages += 1;
    }
    Ok(messages)
}

/// Appends UPDATEs withdrawing `prefixes` (all of `family`): the Withdrawn Routes field for
/// IPv4 unicast, MP_UNREACH_NLRI otherwise. Returns how many messages were written.
pub fn encode_withdraw(
    family: Family,
    prefixes: &[IpNet],
    ctx: &CodecContext,
    out: &mut BytesMut,
) -> Result<usize, EncodeError> {
    check_family(family, prefixes)?;
    let classic = family == Family::Ipv4Unicast;
    let mp_fixed = if classic { 0 } else { MP_ATTR_HEADER + 3 };
    let room = ctx
        .max_message_len()
        .saturating_sub(UPDATE_FIXED + mp_fixed);
    let start_all = out.len();
    let mut messages = 0;
    let mut rest = prefixes;
    while !rest.is_empty() {
        // room >= 4096 - 30 always holds one prefix of at most 17 octets.
        let n = fitting(rest, room).unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let start = out.len();
        put_header(out, message_type::UPDATE);
        let nlri_len: usize = chunk.iter().map(|p| encoded_len(p.prefix_len())).sum();
        if classic {
            put_len(out, nlri_len);
            chunk.iter().for_each(|p| prefix::encode(p, out));
            out.put_u16(0);
        } else {
            let (afi, safi) = family.afi_safi();
            out.put_u16(0);
            put_len(out, mp_fixed + nlri_len);
            out.put_u8(attr_flags::OPTIONAL | attr_flags::EXTENDED_LENGTH);
            out.put_u8(attr::MP_UNREACH_NLRI);
            put_len(out, 3 + nlri_len);
            out.put_u16(afi.0);
            out.put_u8(safi.0);
            chunk.iter().for_each(|p| prefix::encode(p, out));
        }
        if let Err(e) = finish(out, start, ctx, "UPDATE") {
            out.truncate(start_all);
            return Err(e);
        }
        messages += 1;
    }
    Ok(messages)
}

fn check_family(family: Family, prefixes: &[IpNet]) -> Result<(), EncodeError> {
    match prefixes.iter().find(|p| Family::of(p) != family) {
        Some(p) => Err(EncodeError::PrefixFamily { prefix: *p, family }),
        None => Ok(()),
    }
}

/// How many leading prefixes fit in `room` octets; `None` if not even one does.
fn fitting(prefixes: &[IpNet], room: usize) -> Option<usize> {
    let mut used = 0;
    for (i, p) in prefixes.iter().enumerate() {
        used += encoded_len(p.prefix_len());
        if used > room {
            return (i > 0).then_some(i);
        }
    }
    Some(prefixes.len())
}

/// A 2-octet length; every caller's value is bounded by the 65535-octet message maximum
/// (a longer message fails in `finish`), so saturating only ever hits an already-failing case.
fn put_len(out: &mut BytesMut, len: usize) {
    out.put_u16(u16::try_from(len).unwrap_or(u16::MAX));
}

//! UPDATE (RFC 4271 §4.3) with the error handling of RFC 7606.
//!
//! ```text
//! +-----------------------------------------------------+
//! |   Withdrawn Routes Length (2 octets)                |
//! +-----------------------------------------------------+
//! |   Withdrawn Routes (variable)                       |
//! +-----------------------------------------------------+
//! |   Total Path Attribute Length (2 octets)            |
//! +-----------------------------------------------------+
//! |   Path Attributes (variable)                        |
//! +-----------------------------------------------------+
//! |   Network Layer Reachability Information (variable) |
//! +-----------------------------------------------------+
//! ```
//!
//! Decoding walks every attribute even after an error, because RFC 7606 §3(f) wants the
//! most drastic action of all errors: a session reset returns `Err` at once, milder errors
//! are collected and the worst is reported in [`UpdateDecode::action`].
use super::attribute::{self, Attr, Decoded};
use super::error::{DecodeError, EncodeError, UpdateAction, UpdateError};
use super::iana::{attr, attr_flags};
use super::reader::Reader;
use super::{
    as_path, prefix, CodecContext, Family, MpUnreach, PathAttributes, Update, UpdateDecode,
    AS_TRANS,
};
use bytes::{BufMut, BytesMut};
use ipnet::IpNet;

impl Update {
    /// Decodes an UPDATE body (the octets after the 19-octet header).
    ///
    /// `Err` means the session must be reset with `err.notification()`. `Ok` may still
    /// carry a milder RFC 7606 outcome: with [`UpdateAction::TreatAsWithdraw`] every prefix
    /// in `update` must be taken as withdrawn; with [`UpdateAction::AttributeDiscard`] the
    /// faulty attributes are already left out.
    pub fn decode_body(body: &[u8], ctx: &CodecContext) -> Result<UpdateDecode, DecodeError> {
        let list_error = |reason| UpdateError::MalformedAttributeList { reason };
        let mut r = Reader::new(body);
        let withdrawn_len = r
            .u16()
            .ok_or(list_error("withdrawn routes length missing"))?;
        let withdrawn = r
            .take(usize::from(withdrawn_len))
            .ok_or(list_error("withdrawn routes length overruns the message"))?;
        let attrs_len = r
            .u16()
            .ok_or(list_error("total path attribute length missing"))?;
        let attrs = r.take(usize::from(attrs_len)).ok_or(list_error(
            "total path attribute length overruns the message",
        ))?;
        let nlri = r.rest();

        // RFC 7606 §5.3: prefixes that cannot be parsed leave no choice but a reset.
        let network = |field| {
            move |e: prefix::PrefixError| UpdateError::InvalidNetworkField {
                field,
                reason: e.reason(),
            }
        };
        let withdrawn = prefix::decode_ipv4(withdrawn).map_err(network("withdrawn routes"))?;
        let nlri = prefix::decode_ipv4(nlri).map_err(network("NLRI"))?;

        let mut worst: Option<UpdateError> = None;
        let mut note = |e: UpdateError| {
            if worst.as_ref().is_none_or(|w| e.action() > w.action()) {
                worst = Some(e);
            }
        };
        let (decoded, seen) = decode_attributes(attrs, ctx, &mut note)?;
        let attributes = reconcile_as4(decoded, ctx);

        // RFC 7606 §3(d): missing well-known mandatory attributes when there is NLRI. NEXT_HOP
        // is needed only for IPv4 NLRI outside MP_REACH_NLRI (RFC 4760 §3).
        if !nlri.is_empty() || attributes.mp_reach.is_some() {
            for code in [attr::ORIGIN, attr::AS_PATH] {
                if !seen[usize::from(code)] {
                    note(UpdateError::MissingWellKnown { code });
                }
            }
            if !nlri.is_empty() && !seen[usize::from(attr::NEXT_HOP)] {
                note(UpdateError::MissingWellKnown {
                    code: attr::NEXT_HOP,
                });
            }
        }
        let action = worst.map(|e| (e.action(), DecodeError::Update(e)));
        Ok(UpdateDecode {
            update: Update {
                withdrawn,
                attributes,
                nlri,
            },
            action,
        })
    }

    /// Body octets (after the header).
    pub(crate) fn encode_body(
        &self,
        ctx: &CodecContext,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        let too_long = |length| EncodeError::MessageTooLong {
            message: "UPDATE",
            length,
            max: ctx.max_message_len(),
        };
        let start = out.len();
        out.put_u16(0);
        for p in &self.withdrawn {
            prefix::encode(&IpNet::V4(*p), out);
        }
        let len = out.len() - start - 2;
        let len16 = u16::try_from(len).map_err(|_| too_long(len))?;
        out[start..start + 2].copy_from_slice(&len16.to_be_bytes());

        let start = out.len();
        out.put_u16(0);
        attribute::encode_all(&self.attributes, ctx, out)?;
        let len = out.len() - start - 2;
        let len16 = u16::try_from(len).map_err(|_| too_long(len))?;
        out[start..start + 2].copy_from_slice(&len16.to_be_bytes());

        for p in &self.nlri {
            prefix::encode(&IpNet::V4(*p), out);
        }
        Ok(())
    }

    /// The End-of-RIB marker of `family` (RFC 4724 §2): an empty UPDATE for IPv4 unicast,
    /// an MP_UNREACH_NLRI without withdrawn routes otherwise.
    pub fn end_of_rib(family: Family) -> Update {
        match family {
            Family::Ipv4Unicast => Update::default(),
            other => {
                let (afi, safi) = other.afi_safi();
                Update {
                    attributes: PathAttributes {
                        mp_unreach: Some(MpUnreach {
                            afi,
                            safi,
                            withdrawn: Vec::new(),
                        }),
                        ..PathAttributes::default()
                    },
                    ..Update::default()
                }
            }
        }
    }

    /// The family this UPDATE marks the End-of-RIB of (RFC 4724 §2), if it is one.
    pub fn is_end_of_rib(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        let a = &self.attributes;
        if *a == PathAttributes::default() {
            return Some(Family::Ipv4Unicast);
        }
        let unreach = a.mp_unreach.as_ref().filter(|m| m.withdrawn.is_empty())?;
        let only_unreach = PathAttributes {
            mp_unreach: a.mp_unreach.clone(),
            ..PathAttributes::default()
        };
        if *a != only_unreach {
            return None;
        }
        Family::from_afi_safi(unreach.afi, unreach.safi)
    }
}

/// Walks the attribute list. Session-reset errors return at once; milder ones go to `note`.
/// Returns the decoded attributes and which type codes appeared (even if malformed).
fn decode_attributes(
    buf: &[u8],
    ctx: &CodecContext,
    note: &mut impl FnMut(UpdateError),
) -> Result<(Decoded, [bool; 256]), DecodeError> {
    let mut out = Decoded::default();
    let mut seen = [false; 256];
    let mut offset = 0;
    while offset < buf.len() {
        let rest = &buf[offset..];
        let mut r = Reader::new(rest);
        let (Some(flags), Some(code)) = (r.u8(), r.u8()) else {
            note(UpdateError::AttributeOverrun { offset });
            break;
        };
        let extended = flags & attr_flags::EXTENDED_LENGTH != 0;
        let len = if extended {
            r.u16()
        } else {
            r.u8().map(u16::from)
        };
        let header = if extended { 4 } else { 3 };
        let Some(value) = len.and_then(|len| r.take(usize::from(len))) else {
            // RFC 7606 §4: treat-as-withdraw, unless the cut attribute is MP_(UN)REACH_NLRI,
            // whose prefixes we then cannot know (§5.3): reset.
            let e = UpdateError::AttributeLength {
                code,
                length: usize::from(len.unwrap_or(0)),
                attribute: bytes::Bytes::copy_from_slice(rest),
            };
            if e.action() == UpdateAction::SessionReset {
                return Err(e.into());
            }
            note(UpdateError::AttributeOverrun { offset });
            break;
        };
        let whole = &rest[..header + value.len()];
        offset += whole.len();
        if std::mem::replace(&mut seen[usize::from(code)], true) {
            // RFC 7606 §3(g).
            if code == attr::MP_REACH_NLRI || code == attr::MP_UNREACH_NLRI {
                return Err(UpdateError::DuplicateMpAttribute { code }.into());
            }
            note(UpdateError::DuplicateAttribute { code });
            continue;
        }
        let a = Attr {
            flags,
            code,
            value,
            whole,
        };
        if let Err(e) = attribute::decode(&a, ctx, &mut out) {
            if e.action() == UpdateAction::SessionReset {
                return Err(e.into());
            }
            note(e);
        }
    }
    Ok((out, seen))
}

/// RFC 6793 §4.2.3 on a 2-octet session: AS4_AGGREGATOR replaces an AGGREGATOR of AS_TRANS;
/// an AGGREGATOR of another ASN means AS4_PATH and AS4_AGGREGATOR are ignored; otherwise
/// AS_PATH and AS4_PATH are merged.
fn reconcile_as4(decoded: Decoded, ctx: &CodecContext) -> PathAttributes {
    let Decoded {
        mut attrs,
        as4_path,
        as4_aggregator,
    } = decoded;
    if ctx.four_octet_as {
        return attrs;
    }
    if let Some(agg) = attrs.aggregator.as_mut() {
        if agg.asn != u32::from(AS_TRANS) {
            return attrs;
        }
        if let Some(as4) = as4_aggregator {
            *agg = as4;
        }
    }
    if let Some(as4) = as4_path {
        if let Some(path) = attrs.as_path.take() {
            attrs.as_path = Some(as_path::reconcile(path, as4));
        }
    }
    attrs
}

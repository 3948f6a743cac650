//! AS_PATH and AS4_PATH segments (RFC 4271 §4.3, RFC 6793 §4) and the reconciliation of
//! the two on a session without the 4-octet AS capability (RFC 6793 §4.2.3).
//!
//! ```text
//! +-----------------+-----------------+-------------------------------+
//! | segment type(1) | segment len (1) | segment len ASNs, 2 or 4 each |  repeated
//! +-----------------+-----------------+-------------------------------+
//! ```
use super::error::EncodeError;
use super::reader::Reader;
use super::{AsPath, AsSegment, AsSegmentKind, AS_TRANS};
use bytes::{BufMut, BytesMut};

impl AsSegmentKind {
    fn from_wire(value: u8) -> Option<AsSegmentKind> {
        match value {
            1 => Some(AsSegmentKind::Set),
            2 => Some(AsSegmentKind::Sequence),
            3 => Some(AsSegmentKind::ConfedSequence),
            4 => Some(AsSegmentKind::ConfedSet),
            _ => None,
        }
    }

    pub fn is_confed(self) -> bool {
        matches!(
            self,
            AsSegmentKind::ConfedSequence | AsSegmentKind::ConfedSet
        )
    }
}

/// Segments with `asn_len`-octet ASNs. Malformed per RFC 7606 §7.2: unknown segment type,
/// zero segment length, overrun, or a single trailing octet.
pub(crate) fn decode(value: &[u8], asn_len: usize) -> Result<AsPath, &'static str> {
    let mut r = Reader::new(value);
    let mut segments = Vec::new();
    while !r.is_empty() {
        let (Some(kind), Some(count)) = (r.u8(), r.u8()) else {
            return Err("a single octet after the last segment");
        };
        let kind = AsSegmentKind::from_wire(kind).ok_or("unknown segment type")?;
        if count == 0 {
            return Err("segment of length zero");
        }
        let octets = r
            .take(usize::from(count) * asn_len)
            .ok_or("segment overruns the attribute")?;
        let asns = octets
            .chunks_exact(asn_len)
            .map(|c| c.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)))
            .collect();
        segments.push(AsSegment { kind, asns });
    }
    Ok(AsPath { segments })
}

/// Writes the segments with 4-octet ASNs, or 2-octet ones with AS_TRANS for ASNs that do
/// not fit (RFC 6793 §4.2.2). `skip_confed` leaves out confederation segments (AS4_PATH).
pub(crate) fn encode(
    path: &AsPath,
    four_octet: bool,
    skip_confed: bool,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    for seg in &path.segments {
        if skip_confed && seg.kind.is_confed() {
            continue;
        }
        let count = u8::try_from(seg.asns.len()).ok().filter(|c| *c > 0).ok_or(
            EncodeError::AsSegmentLength {
                length: seg.asns.len(),
            },
        )?;
        out.put_u8(seg.kind as u8);
        out.put_u8(count);
        for asn in &seg.asns {
            if four_octet {
                out.put_u32(*asn);
            } else {
                out.put_u16(u16::try_from(*asn).unwrap_or(AS_TRANS));
            }
        }
    }
    Ok(())
}

/// True when a 2-octet session must also send AS4_PATH (RFC 6793 §4.2.2).
pub(crate) fn needs_as4(path: &AsPath) -> bool {
    path.segments
        .iter()
        .flat_map(|s| s.asns.iter())
        .any(|asn| *asn > u32::from(u16::MAX))
}

/// Path length as RFC 6793 §4.2.3 counts it: a set counts 1, confederation segments 0.
fn count(path: &AsPath) -> usize {
    path.segments
        .iter()
        .map(|s| match s.kind {
            AsSegmentKind::Sequence => s.asns.len(),
            AsSegmentKind::Set => 1,
            AsSegmentKind::ConfedSequence | AsSegmentKind::ConfedSet => 0,
        })
        .sum()
}

/// RFC 6793 §4.2.3: when AS_PATH is at least as long as AS4_PATH, take the leading
/// `count(AS_PATH) - count(AS4_PATH)` ASes (and any confederation segments among them)
/// from AS_PATH and append AS4_PATH; otherwise AS4_PATH is ignored.
pub(crate) fn reconcile(as_path: AsPath, as4_path: AsPath) -> AsPath {
    let (n, n4) = (count(&as_path), count(&as4_path));
    if n < n4 {
        return as_path;
    }
    let mut needed = n - n4;
    let mut merged: Vec<AsSegment> = Vec::new();
    for seg in as_path.segments {
        if seg.kind.is_confed() {
            merged.push(seg);
            continue;
        }
        if needed == 0 {
            break;
        }
        match seg.kind {
            AsSegmentKind::Sequence => {
                let take = needed.min(seg.asns.len());
                needed -= take;
                merged.push(AsSegment {
                    kind: seg.kind,
                    asns: seg.asns[..take].to_vec(),
                });
            }
            _ => {
                needed -= 1;
                merged.push(seg);
            }
        }
    }
    let mut as4 = as4_path.segments.into_iter();
    if let Some(first) = as4.next() {
        match merged.last_mut() {
            // The cut AS_PATH sequence and the AS4_PATH sequence are one path: join them.
            Some(last)
                if last.kind == AsSegmentKind::Sequence
                    && first.kind == AsSegmentKind::Sequence
                    && last.asns.len() + first.asns.len() <= 255 =>
            {
                last.asns.extend(first.asns);
            }
            _ => merged.push(first),
        }
    }
    merged.extend(as4);
    AsPath { segments: merged }
}

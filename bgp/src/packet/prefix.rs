//! NLRI prefixes (RFC 4271 §4.3 "Network Layer Reachability Information", RFC 4760 §5).
//!
//! ```text
//! +---------------------------+
//! |   Length (1 octet)        |   prefix length in bits
//! +---------------------------+
//! |   Prefix (variable)       |   ceil(Length / 8) octets, trailing bits irrelevant
//! +---------------------------+
//! ```
use super::reader::Reader;
use super::Afi;
use bytes::BufMut;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a run of prefixes is not valid: the caller names the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrefixError {
    LengthTooLong,
    Truncated,
}

impl PrefixError {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            PrefixError::LengthTooLong => "prefix length exceeds the address size",
            PrefixError::Truncated => "prefix overruns the field",
        }
    }
}

/// Octets one prefix of `len` bits takes on the wire, length octet included.
pub(crate) fn encoded_len(prefix_len: u8) -> usize {
    1 + usize::from(prefix_len).div_ceil(8)
}

fn read_bits<const N: usize>(
    r: &mut Reader<'_>,
    max_bits: u8,
) -> Result<([u8; N], u8), PrefixError> {
    let bits = r.u8().ok_or(PrefixError::Truncated)?;
    if bits > max_bits {
        return Err(PrefixError::LengthTooLong);
    }
    let octets = r
        .take(usize::from(bits).div_ceil(8))
        .ok_or(PrefixError::Truncated)?;
    let mut addr = [0u8; N];
    addr[..octets.len()].copy_from_slice(octets);
    Ok((addr, bits))
}

fn ipv4(r: &mut Reader<'_>) -> Result<Ipv4Net, PrefixError> {
    let (addr, bits) = read_bits::<4>(r, 32)?;
    let net = Ipv4Net::new(Ipv4Addr::from(addr), bits).map_err(|_| PrefixError::LengthTooLong)?;
    Ok(net.trunc())
}

fn ipv6(r: &mut Reader<'_>) -> Result<Ipv6Net, PrefixError> {
    let (addr, bits) = read_bits::<16>(r, 128)?;
    let net = Ipv6Net::new(Ipv6Addr::from(addr), bits).map_err(|_| PrefixError::LengthTooLong)?;
    Ok(net.trunc())
}

/// All IPv4 prefixes in `buf` (withdrawn routes or NLRI of an UPDATE). Host bits are
/// cleared ("trailing bits irrelevant", RFC 4271 §4.3). The output never holds more
/// entries than `buf` has octets.
pub(crate) fn decode_ipv4(buf: &[u8]) -> Result<Vec<Ipv4Net>, PrefixError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(ipv4(&mut r)?);
    }
    Ok(out)
}

/// Prefixes of `afi` (1 or 2) inside MP_REACH_NLRI / MP_UNREACH_NLRI.
pub(crate) fn decode_mp(afi: Afi, buf: &[u8]) -> Result<Vec<IpNet>, PrefixError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while !r.is_empty() {
        let net = if afi == Afi::IPV6 {
            IpNet::V6(ipv6(&mut r)?)
        } else {
            IpNet::V4(ipv4(&mut r)?)
        };
        out.push(net);
    }
    Ok(out)
}

/// Appends one prefix; host bits are written as zero.
pub(crate) fn encode(prefix: &IpNet, out: &mut impl BufMut) {
    let bits = prefix.prefix_len();
    let n = usize::from(bits).div_ceil(8);
    out.put_u8(bits);
    match prefix.trunc() {
        IpNet::V4(p) => out.put_slice(&p.addr().octets()[..n]),
        IpNet::V6(p) => out.put_slice(&p.addr().octets()[..n]),
    }
}

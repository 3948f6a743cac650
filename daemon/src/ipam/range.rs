//! Address ranges of a pool: parsed from a CIDR (`192.0.2.0/28`) or an inclusive range
//! (`192.0.2.10-192.0.2.20`), as MetalLB accepts them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// An address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The Kubernetes name (`IPv4`, `IPv6`).
    pub fn as_k8s(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }
}

/// Why an address entry of a pool is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    /// Neither a CIDR nor a range of two addresses.
    #[error("{0:?} is not a CIDR or range")]
    Syntax(String),
    /// A range whose first address is after its last.
    #[error("{0:?}: first address is after the last")]
    Reversed(String),
    /// A range from an IPv4 to an IPv6 address.
    #[error("{0:?}: mixes IPv4 and IPv6")]
    MixedFamilies(String),
}

/// An inclusive range of addresses of one family, kept as integers for arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpRange {
    family: Family,
    first: u128,
    last: u128,
}

impl IpRange {
    /// Parses `a.b.c.d/len`, `x::/len` or `first-last` (spaces around `-` allowed).
    /// A CIDR with host bits set covers its whole network, as `ip route` would read it.
    pub fn parse(text: &str) -> Result<IpRange, RangeError> {
        let t = text.trim();
        if let Some((a, b)) = t.split_once('-') {
            let a: IpAddr = a
                .trim()
                .parse()
                .map_err(|_| RangeError::Syntax(text.to_string()))?;
            let b: IpAddr = b
                .trim()
                .parse()
                .map_err(|_| RangeError::Syntax(text.to_string()))?;
            if Family::of(&a) != Family::of(&b) {
                return Err(RangeError::MixedFamilies(text.to_string()));
            }
            let (first, last) = (to_u128(a), to_u128(b));
            if first > last {
                return Err(RangeError::Reversed(text.to_string()));
            }
            return Ok(IpRange {
                family: Family::of(&a),
                first,
                last,
            });
        }
        let net: ipnet::IpNet = t
            .parse()
            .map_err(|_| RangeError::Syntax(text.to_string()))?;
        let (first, last) = (to_u128(net.network()), to_u128(net.broadcast()));
        Ok(IpRange {
            family: Family::of(&net.addr()),
            first,
            last,
        })
    }

    /// A range of exactly one address.
    pub fn single(ip: IpAddr) -> IpRange {
        let v = to_u128(ip);
        IpRange {
            family: Family::of(&ip),
            first: v,
            last: v,
        }
    }

    /// The family of the range.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The first address.
    pub fn first(&self) -> IpAddr {
        from_u128(self.family, self.first)
    }

    /// The last address.
    pub fn last(&self) -> IpAddr {
        from_u128(self.family, self.last)
    }

    /// Whether `ip` lies in the range.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        Family::of(ip) == self.family && (self.first..=self.last).contains(&to_u128(*ip))
    }

    /// Whether two ranges share an address.
    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.family == other.family && self.first <= other.last && other.first <= self.last
    }

    /// The range as integers (first, last).
    pub fn bounds(&self) -> (u128, u128) {
        (self.first, self.last)
    }
}

/// An address as an integer (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of an integer in a family (IPv4 takes the low 32 bits).
pub fn from_u128(family: Family, v: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from((v & 0xffff_ffff) as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// MetalLB's "buggy" IPv4 addresses: ending in `.0` or `.255` (some old stacks treat them as
/// network or broadcast addresses whatever the prefix length).
pub fn is_buggy(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => matches!(v4.octets()[3], 0 | 255),
        IpAddr::V6(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn cidr_covers_its_whole_network() {
        let r = IpRange::parse("192.0.2.5/30").expect("valid");
        assert_eq!((r.first(), r.last()), (ip("192.0.2.4"), ip("192.0.2.7")));
    }

    #[test]
    fn range_with_spaces_parses() {
        let r = IpRange::parse("2001:db8::10 - 2001:db8::1f").expect("valid");
        assert!(r.contains(&ip("2001:db8::1a")));
        assert!(!r.contains(&ip("2001:db8::20")));
        assert!(!r.contains(&ip("192.0.2.1")));
    }

    #[test]
    fn bad_entries_are_named() {
        assert_eq!(
            IpRange::parse("10.0.0.300/24").unwrap_err().to_string(),
            "\"10.0.0.300/24\" is not a CIDR or range"
        );
        assert!(matches!(
            IpRange::parse("192.0.2.9-192.0.2.1"),
            Err(RangeError::Reversed(_))
        ));
        assert!(matches!(
            IpRange::parse("192.0.2.1-2001:db8::1"),
            Err(RangeError::MixedFamilies(_))
        ));
    }

    #[test]
    fn buggy_ips_are_dot_zero_and_dot_255_v4_only() {
        assert!(is_buggy(&ip("198.51.100.0")));
        assert!(is_buggy(&ip("198.51.100.255")));
        assert!(!is_buggy(&ip("198.51.100.1")));
        assert!(!is_buggy(&ip("2001:db8::ff")));
    }
}

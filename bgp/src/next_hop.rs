//! The next hop of each family on a session (RFC 4271 §5.1.3, RFC 4760 §3, RFC 2545 §3).
//!
//! A route goes out with our own address as next hop, which must be one the router can
//! forward to. The session's local address gives the next hop of its own family. The other
//! family takes an address of that family on the same interface as the session's local
//! address (the interface toward the peer). Never an IPv4-mapped IPv6 address
//! (`::ffff:a.b.c.d`): a router that installs one cannot forward to it. A family with no such
//! address has no next hop and is not announced ([`crate::PeerStatus::families_not_announced`]).
use crate::packet::Family;
use crate::rib_out::SessionRouteContext;
use std::net::{IpAddr, Ipv6Addr};

/// An address configured on an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceAddress {
    pub interface: String,
    pub address: IpAddr,
    /// Length of the subnet the address sits in.
    pub prefix_len: u8,
}

impl InterfaceAddress {
    fn covers(&self, a: IpAddr) -> bool {
        ipnet::IpNet::new(self.address, self.prefix_len)
            .map(|n| n.contains(&a))
            .unwrap_or(false)
    }
}

/// Our next hops for a session whose local address is `local`, given the host's interface
/// addresses. Pure.
pub fn session_next_hops(
    local: IpAddr,
    addresses: &[InterfaceAddress],
    ebgp: bool,
    local_as: u32,
) -> SessionRouteContext {
    let local = canonical(local);
    // The interface holding the address, else the one whose subnet covers it (a session
    // from 127.0.0.2 runs over `lo`, which lists only 127.0.0.1/8).
    let interface = addresses
        .iter()
        .find(|a| canonical(a.address) == local)
        .or_else(|| addresses.iter().find(|a| a.covers(local)))
        .map(|a| a.interface.as_str());
    let same_interface = || {
        addresses
            .iter()
            .filter(move |a| Some(a.interface.as_str()) == interface)
            .map(|a| a.address)
    };
    let first_v4 = || {
        same_interface().find_map(|a| match a {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
    };
    let first_global_v6 = || {
        same_interface().find_map(|a| match a {
            IpAddr::V6(v6) if usable_global_v6(v6) => Some(v6),
            _ => None,
        })
    };
    let (local_v4, local_v6, link_local_v6) = match local {
        IpAddr::V4(v4) => (Some(v4), first_global_v6(), None),
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            // A session over a link-local address (RFC 2545 §3): a global address of the
            // interface in the global field (the link-local one itself when there is none,
            // as for BGP unnumbered), the link-local one beside it.
            (first_v4(), first_global_v6().or(Some(v6)), Some(v6))
        }
        IpAddr::V6(v6) => (first_v4(), Some(v6), None),
    };
    SessionRouteContext {
        ebgp,
        local_as,
        local_v4,
        local_v6,
        link_local_v6,
    }
}

/// A global next hop: not link-local, not IPv4-mapped, not unspecified or multicast.
fn usable_global_v6(v6: Ipv6Addr) -> bool {
    !v6.is_unicast_link_local()
        && v6.to_ipv4_mapped().is_none()
        && !v6.is_unspecified()
        && !v6.is_multicast()
}

fn canonical(a: IpAddr) -> IpAddr {
    crate::connection::canonical(a)
}

/// Whether routes of `family` can be sent on a session with this context (a route that
/// sets its own next hop aside).
pub fn has_next_hop(ctx: &SessionRouteContext, family: Family) -> bool {
    match family {
        Family::Ipv4Unicast => ctx.local_v4.is_some(),
        Family::Ipv6Unicast => ctx.local_v6.is_some(),
    }
}

/// Why `family` has no next hop on a session from `local`, for status and logs.
pub fn missing_reason(family: Family, local: Option<IpAddr>) -> String {
    let (want, other) = match family {
        Family::Ipv4Unicast => ("IPv4", "IPv6"),
        Family::Ipv6Unicast => ("IPv6", "IPv4"),
    };
    match local {
        Some(l) => format!(
            "no {want} next hop: the session runs over {other} from {l} and that interface has no {want} address"
        ),
        None => format!("no {want} next hop: the session has no local address"),
    }
}

/// Every address of every interface of this host (its network namespace).
pub fn host_addresses() -> std::io::Result<Vec<InterfaceAddress>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(std::io::Error::from)?;
    Ok(addrs
        .filter_map(|ifa| {
            let sa = ifa.address?;
            let mask = ifa.netmask;
            let (address, prefix_len) = if let Some(v4) = sa.as_sockaddr_in() {
                let len = mask
                    .as_ref()
                    .and_then(|m| m.as_sockaddr_in())
                    .map_or(32, |m| u32::from(m.ip()).count_ones() as u8);
                (IpAddr::V4(v4.ip()), len)
            } else if let Some(v6) = sa.as_sockaddr_in6() {
                let len = mask
                    .as_ref()
                    .and_then(|m| m.as_sockaddr_in6())
                    .map_or(128, |m| u128::from(m.ip()).count_ones() as u8);
                (IpAddr::V6(v6.ip()), len)
            } else {
                return None;
            };
            Some(InterfaceAddress {
                interface: ifa.interface_name,
                address,
                prefix_len,
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn addrs(list: &[(&str, &str)]) -> Vec<InterfaceAddress> {
        list.iter()
            .map(|(i, a)| {
                let address: IpAddr = a.parse().unwrap();
                InterfaceAddress {
                    interface: i.to_string(),
                    address,
                    prefix_len: if address.is_ipv4() { 24 } else { 64 },
                }
            })
            .collect()
    }

    #[test]
    fn an_address_of_a_covered_subnet_finds_its_interface() {
        let host = addrs(&[("eth0", "192.0.2.1"), ("eth0", "2001:db8::1")]);
        let c = session_next_hops("192.0.2.7".parse().unwrap(), &host, true, 65002);
        assert_eq!(c.local_v6, Some("2001:db8::1".parse().unwrap()));
    }

    #[test]
    fn ipv6_over_ipv4_takes_the_global_ipv6_address_of_the_same_interface() {
        let host = addrs(&[
            ("lo", "127.0.0.1"),
            ("lo", "::1"),
            ("eth0", "192.0.2.2"),
            ("eth0", "fe80::2"),
            ("eth0", "2001:db8::2"),
            ("eth1", "2001:db8:1::2"),
        ]);
        let c = session_next_hops("192.0.2.2".parse().unwrap(), &host, true, 65002);
        assert_eq!(c.local_v4, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(c.local_v6, Some("2001:db8::2".parse().unwrap()));
        assert_eq!(c.link_local_v6, None);
    }

    #[test]
    fn ipv4_mapped_session_address_is_read_as_ipv4_and_never_used_as_ipv6_next_hop() {
        let host = addrs(&[("eth0", "192.0.2.2")]);
        let c = session_next_hops("::ffff:192.0.2.2".parse().unwrap(), &host, true, 65002);
        assert_eq!(c.local_v4, Some("192.0.2.2".parse().unwrap()));
        assert_eq!(
            c.local_v6, None,
            "no IPv6 on the interface: no IPv6 next hop"
        );
        assert!(!has_next_hop(&c, Family::Ipv6Unicast));
    }

    #[test]
    fn ipv4_over_ipv6_takes_the_ipv4_address_of_the_same_interface_or_none() {
        let host = addrs(&[("eth0", "2001:db8::2"), ("eth1", "198.51.100.2")]);
        let c = session_next_hops("2001:db8::2".parse().unwrap(), &host, false, 65002);
        assert_eq!(c.local_v6, Some("2001:db8::2".parse().unwrap()));
        assert_eq!(
            c.local_v4, None,
            "an address of another interface is not used"
        );
        let host = addrs(&[("eth0", "2001:db8::2"), ("eth0", "192.0.2.2")]);
        let c = session_next_hops("2001:db8::2".parse().unwrap(), &host, false, 65002);
        assert_eq!(c.local_v4, Some("192.0.2.2".parse().unwrap()));
    }

    #[test]
    fn link_local_session_keeps_the_link_local_beside_a_global_address() {
        let host = addrs(&[("eth0", "fe80::2"), ("eth0", "2001:db8::2")]);
        let c = session_next_hops("fe80::2".parse().unwrap(), &host, true, 65002);
        assert_eq!(c.link_local_v6, Some("fe80::2".parse().unwrap()));
        assert_eq!(c.local_v6, Some("2001:db8::2".parse().unwrap()));
    }

    #[test]
    fn host_addresses_include_loopback_with_its_prefix() {
        let all = host_addresses().unwrap();
        assert!(
            all.iter()
                .any(|a| a.address == IpAddr::V4(Ipv4Addr::LOCALHOST) && a.prefix_len == 8),
            "{all:?}"
        );
    }
}

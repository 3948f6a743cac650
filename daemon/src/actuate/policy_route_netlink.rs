//! Pure conversions between the planner's rules and routes and rtnetlink messages, and the
//! reading of dumped messages back into facts. No socket here: tested without root.
//!
//! Ownership is carried by the kernel objects themselves: every rule (`FRA_PROTOCOL`, since
//! Linux 4.17) and route (`rtm_protocol`) edgelb installs has protocol [`EDGELB_RTPROT`], so
//! a restarted speaker finds what it owns and never touches anything else.
use crate::plan::policy_route::{KernelRoute, LinkFacts, PlannedRoute, PlannedRule};
use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressHeaderFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::AddressFamily;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The route/rule protocol number that marks an object as edgelb's: 235 (0xEB, "EB" for
/// EdgeLB). Not in the kernel's `RTPROT_*` list (0-18, 42, 186-192 as of Linux 6.x), nor in
/// iproute2's `rt_protos` (adds 99 openr), nor FRR's `rt_protos.d/frr.conf` (186-197), nor
/// the numbers Calico (80), BIRD (12) or keepalived (18) use. `ip rule`/`ip route` show it
/// as `proto 235`; `echo "235 edgelb" > /etc/iproute2/rt_protos.d/edgelb.conf` names it.
pub const EDGELB_RTPROT: u8 = 235;

/// `RT_TABLE_UNSPEC`: the header's table when the real number (> 255) is in `RTA_TABLE`.
const TABLE_UNSPEC: u8 = 0;

fn family_of(addr: &IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn header_table(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(TABLE_UNSPEC)
}

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// `ip rule add from SRC lookup TABLE priority P proto 235`.
pub fn rule_message(rule: &PlannedRule) -> RuleMessage {
    let mut m = RuleMessage::default();
    m.header.family = family_of(&rule.src.addr());
    m.header.src_len = rule.src.prefix_len();
    m.header.table = header_table(rule.table);
    m.header.action = RuleAction::ToTable;
    m.attributes = vec![
        RuleAttribute::Priority(rule.priority),
        RuleAttribute::Source(rule.src.addr()),
        RuleAttribute::Table(rule.table),
        RuleAttribute::Protocol(RouteProtocol::Other(EDGELB_RTPROT)),
    ];
    m
}

/// What a dumped rule says, as far as we care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpedRule {
    /// Installed by edgelb (protocol 235).
    pub ours: bool,
    /// The table it looks up, if it is a `lookup` rule.
    pub lookup_table: Option<u32>,
    /// The rule in planner form when it has exactly the shape edgelb installs.
    pub planned: Option<PlannedRule>,
}

/// Reads a dumped rule.
pub fn read_rule(m: &RuleMessage) -> DumpedRule {
    let mut table = u32::from(m.header.table);
    let mut proto = 0u8;
    let mut priority = 0u32;
    let mut src = None;
    let mut other_selector = m.header.dst_len != 0 || m.header.tos != 0;
    for a in &m.attributes {
        match a {
            RuleAttribute::Table(t) => table = *t,
            RuleAttribute::Protocol(p) => proto = u8::from(*p),
            RuleAttribute::Priority(p) => priority = *p,
            RuleAttribute::Source(ip) => src = Some(*ip),
            RuleAttribute::FwMark(mark) if *mark != 0 => other_selector = true,
            RuleAttribute::L3MDev(true)
            | RuleAttribute::Destination(_)
            | RuleAttribute::Iifname(_)
            | RuleAttribute::Oifname(_)
            | RuleAttribute::Goto(_)
            | RuleAttribute::UidRange(_)
            | RuleAttribute::IpProtocol(_)
            | RuleAttribute::SourcePortRange(_)
            | RuleAttribute::DestinationPortRange(_) => other_selector = true,
            _ => {}
        }
    }
    let lookup = m.header.action == RuleAction::ToTable;
    let planned = match src {
        Some(ip) if lookup && !other_selector => {
            IpNet::new(ip, m.header.src_len)
                .ok()
                .map(|src| PlannedRule {
                    priority,
                    src,
                    table,
                })
        }
        _ => None,
    };
    DumpedRule {
        ours: proto == EDGELB_RTPROT,
        lookup_table: lookup.then_some(table),
        planned,
    }
}

/// `ip route replace DST [via GW] dev OIF [src PREFSRC] table TABLE proto 235`.
pub fn route_message(route: &PlannedRoute) -> RouteMessage {
    let mut m = RouteMessage::default();
    let dst = route.dst.addr();
    m.header.address_family = family_of(&dst);
    m.header.destination_prefix_length = route.dst.prefix_len();
    m.header.table = header_table(route.table);
    m.header.protocol = RouteProtocol::Other(EDGELB_RTPROT);
    m.header.kind = RouteType::Unicast;
    // As iproute2: IPv6 routes are always universe; IPv4 routes without gateway are link.
    m.header.scope = match (dst, route.gateway) {
        (IpAddr::V4(_), None) => RouteScope::Link,
        _ => RouteScope::Universe,
    };
    if route.dst.prefix_len() > 0 {
        m.attributes.push(RouteAttribute::Destination(dst.into()));
    }
    if let Some(gw) = route.gateway {
        m.attributes.push(RouteAttribute::Gateway(gw.into()));
    }
    m.attributes.push(RouteAttribute::Oif(route.oif));
    if let Some(src) = route.prefsrc {
        m.attributes.push(RouteAttribute::PrefSource(src.into()));
    }
    m.attributes.push(RouteAttribute::Table(route.table));
    m
}

/// What a dumped route says, as far as we care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpedRoute {
    /// Installed by edgelb (protocol 235).
    pub ours: bool,
    /// The route as facts (table, destination, gateway, output interface).
    pub kernel: KernelRoute,
    /// The route in planner form (needs an output interface).
    pub planned: Option<PlannedRoute>,
}

/// Reads a dumped route; `None` for families and kinds other than IPv4/IPv6 unicast.
pub fn read_route(m: &RouteMessage) -> Option<DumpedRoute> {
    let unspecified = match m.header.address_family {
        AddressFamily::Inet => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        AddressFamily::Inet6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => return None,
    };
    if m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(m.header.table);
    let mut dst = unspecified;
    let mut gateway = None;
    let mut oif = None;
    let mut prefsrc = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dst = route_addr(d)?,
            RouteAttribute::Gateway(g) => gateway = route_addr(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::PrefSource(s) => prefsrc = route_addr(s),
            _ => {}
        }
    }
    let dst = IpNet::new(dst, m.header.destination_prefix_length).ok()?;
    Some(DumpedRoute {
        ours: u8::from(m.header.protocol) == EDGELB_RTPROT,
        kernel: KernelRoute {
            table,
            dst,
            gateway,
            oif,
        },
        planned: oif.map(|oif| PlannedRoute {
            table,
            dst,
            gateway,
            oif,
            prefsrc,
        }),
    })
}

/// A link from a dumped `RTM_NEWLINK`, without addresses yet.
pub fn read_link(m: &LinkMessage) -> LinkFacts {
    let name = m
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default();
    LinkFacts {
        name,
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        addrs: Vec::new(),
    }
}

/// An address from a dumped `RTM_NEWADDR`: (link index, address/prefix). Addresses whose
/// duplicate address detection failed are skipped: the kernel will not use them.
pub fn read_address(m: &AddressMessage) -> Option<(u32, IpNet)> {
    if m.header.flags.contains(AddressHeaderFlags::Dadfailed) {
        return None;
    }
    let mut local = None;
    let mut address = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address on IPv4 (IFA_ADDRESS is the peer on
    // point-to-point links); IPv6 only sends IFA_ADDRESS.
    let ip = local.or(address)?;
    let net = IpNet::new(ip, m.header.prefix_len).ok()?;
    Some((m.header.index, net))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("test prefix")
    }

    #[test]
    fn a_rule_we_build_reads_back_as_ours_and_equal() {
        for (src, table) in [("10.0.0.3/32", 4), ("fd00::3/128", 100_000)] {
            let rule = PlannedRule {
                priority: 1000,
                src: net(src),
                table,
            };
            let read = read_rule(&rule_message(&rule));
            assert!(read.ours);
            assert_eq!(read.lookup_table, Some(table));
            assert_eq!(read.planned, Some(rule));
        }
    }

    #[test]
    fn a_foreign_rule_with_an_iif_is_not_ours_and_not_our_shape() {
        let mut m = rule_message(&PlannedRule {
            priority: 5,
            src: net("10.0.0.3/32"),
            table: 4,
        });
        m.attributes = vec![
            RuleAttribute::Iifname("eth0".into()),
            RuleAttribute::Source("10.0.0.3".parse().expect("ip")),
            RuleAttribute::Protocol(RouteProtocol::Boot),
        ];
        let read = read_rule(&m);
        assert!(!read.ours);
        assert_eq!(read.lookup_table, Some(4));
        assert_eq!(read.planned, None);
    }

    #[test]
    fn a_route_we_build_reads_back_as_ours_and_equal() {
        let routes = [
            PlannedRoute {
                table: 4,
                dst: net("0.0.0.0/0"),
                gateway: Some("10.0.0.1".parse().expect("ip")),
                oif: 3,
                prefsrc: None,
            },
            PlannedRoute {
                table: 70_000,
                dst: net("10.0.0.0/24"),
                gateway: None,
                oif: 3,
                prefsrc: Some("10.0.0.3".parse().expect("ip")),
            },
            PlannedRoute {
                table: 4,
                dst: net("::/0"),
                gateway: Some("fe80::1".parse().expect("ip")),
                oif: 3,
                prefsrc: None,
            },
        ];
        for r in routes {
            let read = read_route(&route_message(&r)).expect("unicast IP route");
            assert!(read.ours);
            assert_eq!(read.planned, Some(r.clone()));
            assert_eq!(read.kernel.table, r.table);
        }
    }

    /// Through the wire format and back, as the kernel would receive and echo it.
    fn wire<T: netlink_packet_core::Emitable + netlink_packet_core::Parseable<[u8]>>(m: &T) -> T {
        let mut buf = vec![0u8; m.buffer_len()];
        m.emit(&mut buf);
        T::parse(&buf[..]).expect("our own message parses")
    }

    fn arb_net() -> impl proptest::strategy::Strategy<Value = IpNet> {
        use proptest::prelude::*;
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(a, l)| IpNet::new(Ipv4Addr::from(a).into(), l)
                .map(|n| n.trunc())
                .expect("valid v4 prefix")),
            (any::<u128>(), 0u8..=128).prop_map(|(a, l)| IpNet::new(Ipv6Addr::from(a).into(), l)
                .map(|n| n.trunc())
                .expect("valid v6 prefix")),
        ]
    }

    proptest::proptest! {
        #[test]
        fn any_planned_rule_survives_the_wire_format(
            a in proptest::prelude::any::<u32>(),
            v6 in proptest::prelude::any::<bool>(),
            priority in 1u32..=32765,
            table in proptest::prelude::any::<u32>(),
        ) {
            let src = if v6 {
                IpNet::from(IpAddr::V6(Ipv6Addr::from(u128::from(a) << 64)))
            } else {
                IpNet::from(IpAddr::V4(Ipv4Addr::from(a)))
            };
            let rule = PlannedRule { priority, src, table };
            let read = read_rule(&wire(&rule_message(&rule)));
            proptest::prop_assert!(read.ours);
            proptest::prop_assert_eq!(read.planned, Some(rule));
        }

        #[test]
        fn any_planned_route_survives_the_wire_format(
            dst in arb_net(),
            table in proptest::prelude::any::<u32>(),
            oif in 1u32..,
            with_gw in proptest::prelude::any::<bool>(),
        ) {
            let (gateway, prefsrc) = match (dst.addr(), with_gw) {
                (IpAddr::V4(_), true) => (Some("10.0.0.1".parse().expect("ip")), None),
                (IpAddr::V4(_), false) => (None, Some("10.0.0.3".parse().expect("ip"))),
                (IpAddr::V6(_), true) => (Some("fe80::1".parse().expect("ip")), None),
                (IpAddr::V6(_), false) => (None, None),
            };
            let route = PlannedRoute { table, dst, gateway, oif, prefsrc };
            let read = read_route(&wire(&route_message(&route))).expect("unicast IP route");
            proptest::prop_assert!(read.ours);
            proptest::prop_assert_eq!(read.planned, Some(route));
        }
    }

    #[test]
    fn the_ipv4_subnet_route_has_link_scope_and_the_default_route_universe() {
        let subnet = route_message(&PlannedRoute {
            table: 4,
            dst: net("10.0.0.0/24"),
            gateway: None,
            oif: 3,
            prefsrc: None,
        });
        assert_eq!(subnet.header.scope, RouteScope::Link);
        let default = route_message(&PlannedRoute {
            table: 4,
            dst: net("0.0.0.0/0"),
            gateway: Some("10.0.0.1".parse().expect("ip")),
            oif: 3,
            prefsrc: None,
        });
        assert_eq!(default.header.scope, RouteScope::Universe);
    }
}

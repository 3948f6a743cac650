//! What to answer to a frame: a pure decision from the frame, the owned set and our MAC.
use crate::frame::{self, Incoming, ALL_NODES};
use pnet_base::MacAddr;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An answer to send on the interface the question came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// ARP reply: `ip` is at our MAC, sent unicast to `to_mac`/`to_ip` (RFC 826).
    Arp {
        ip: Ipv4Addr,
        to_mac: MacAddr,
        to_ip: Ipv4Addr,
    },
    /// Neighbour advertisement for `target` (RFC 4861 §7.2.4).
    Na {
        target: Ipv6Addr,
        dst: Ipv6Addr,
        dst_mac: MacAddr,
        solicited: bool,
    },
}

impl Answer {
    /// The owned address this answer speaks for.
    pub fn ip(&self) -> IpAddr {
        match self {
            Answer::Arp { ip, .. } => IpAddr::V4(*ip),
            Answer::Na { target, .. } => IpAddr::V6(*target),
        }
    }

    /// The frame to send, from `mac`.
    pub fn to_frame(&self, mac: MacAddr) -> Vec<u8> {
        match *self {
            Answer::Arp { ip, to_mac, to_ip } => frame::arp_reply(mac, ip, to_mac, to_ip),
            Answer::Na {
                target,
                dst,
                dst_mac,
                solicited,
            } => frame::neighbor_advert(mac, target, dst, dst_mac, solicited),
        }
    }
}

/// Decides the answer to `incoming`, received on an interface whose MAC is `mac` and on
/// which this node owns `owned`. `None` for anything that is not a question about an owned
/// address from another host.
pub fn answer(incoming: &Incoming, owned: &BTreeSet<IpAddr>, mac: MacAddr) -> Option<Answer> {
    match *incoming {
        Incoming::ArpRequest {
            eth_src,
            sender_mac,
            sender_ip,
            target_ip,
        } => {
            if eth_src == mac || sender_mac == mac || !is_host_mac(sender_mac) {
                return None;
            }
            // A gratuitous ARP (sender = target) announces, it does not ask (RFC 5227 §2.4).
            if sender_ip == target_ip || !owned.contains(&IpAddr::V4(target_ip)) {
                return None;
            }
            // An ARP probe (sender 0.0.0.0, RFC 5227 §2.1.1) gets the answer the kernel
            // gives: unicast to the prober, target IP 0.0.0.0, so it sees the conflict.
            Some(Answer::Arp {
                ip: target_ip,
                to_mac: sender_mac,
                to_ip: sender_ip,
            })
        }
        Incoming::NeighborSolicit {
            eth_src,
            src,
            target,
            source_ll,
            ..
        } => {
            if eth_src == mac || source_ll == Some(mac) || !is_host_mac(eth_src) {
                return None;
            }
            if !owned.contains(&IpAddr::V6(target)) {
                return None;
            }
            if src.is_unspecified() {
                // Duplicate address detection: defend to all-nodes, S clear (§7.2.4).
                return Some(Answer::Na {
                    target,
                    dst: ALL_NODES,
                    dst_mac: frame::multicast_mac(&ALL_NODES),
                    solicited: false,
                });
            }
            Some(Answer::Na {
                target,
                dst: src,
                dst_mac: source_ll.filter(|m| is_host_mac(*m)).unwrap_or(eth_src),
                solicited: true,
            })
        }
    }
}

/// A unicast, non-zero MAC: the only kind a host can have.
fn is_host_mac(m: MacAddr) -> bool {
    !m.is_multicast() && !m.is_zero()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAC: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x0a);
    const PEER: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x0b);
    const OWNED4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
    const CLIENT4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

    fn owned() -> BTreeSet<IpAddr> {
        [
            IpAddr::V4(OWNED4),
            IpAddr::V6("2001:db8::100".parse().expect("v6")),
        ]
        .into_iter()
        .collect()
    }

    fn arp(sender_mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Incoming {
        Incoming::ArpRequest {
            eth_src: sender_mac,
            sender_mac,
            sender_ip,
            target_ip,
        }
    }

    fn ns(src: &str, target: &str, source_ll: Option<MacAddr>) -> Incoming {
        Incoming::NeighborSolicit {
            eth_src: PEER,
            src: src.parse().expect("v6"),
            dst: "ff02::1:ff00:100".parse().expect("v6"),
            target: target.parse().expect("v6"),
            source_ll,
        }
    }

    #[test]
    fn an_arp_request_for_an_owned_ip_gets_a_unicast_reply_to_the_requester() {
        assert_eq!(
            answer(&arp(PEER, CLIENT4, OWNED4), &owned(), MAC),
            Some(Answer::Arp {
                ip: OWNED4,
                to_mac: PEER,
                to_ip: CLIENT4
            })
        );
    }

    #[test]
    fn an_arp_request_for_an_ip_not_owned_gets_nothing() {
        let other = Ipv4Addr::new(192, 0, 2, 101);
        assert_eq!(answer(&arp(PEER, CLIENT4, other), &owned(), MAC), None);
        assert_eq!(
            answer(&arp(PEER, CLIENT4, OWNED4), &BTreeSet::new(), MAC),
            None
        );
    }

    #[test]
    fn our_own_frames_are_never_answered() {
        assert_eq!(answer(&arp(MAC, CLIENT4, OWNED4), &owned(), MAC), None);
        let mut relayed = arp(PEER, CLIENT4, OWNED4);
        if let Incoming::ArpRequest { sender_mac, .. } = &mut relayed {
            *sender_mac = MAC;
        }
        assert_eq!(answer(&relayed, &owned(), MAC), None);
    }

    #[test]
    fn a_gratuitous_arp_for_an_owned_ip_is_not_answered() {
        assert_eq!(answer(&arp(PEER, OWNED4, OWNED4), &owned(), MAC), None);
    }

    #[test]
    fn an_arp_from_a_multicast_or_zero_sender_mac_is_not_answered() {
        let bcast = MacAddr::broadcast();
        assert_eq!(answer(&arp(bcast, CLIENT4, OWNED4), &owned(), MAC), None);
        assert_eq!(
            answer(&arp(MacAddr::zero(), CLIENT4, OWNED4), &owned(), MAC),
            None
        );
    }

    #[test]
    fn an_arp_probe_for_an_owned_ip_is_answered_to_the_prober_with_target_zero() {
        let a = answer(&arp(PEER, Ipv4Addr::UNSPECIFIED, OWNED4), &owned(), MAC);
        assert_eq!(
            a,
            Some(Answer::Arp {
                ip: OWNED4,
                to_mac: PEER,
                to_ip: Ipv4Addr::UNSPECIFIED
            })
        );
    }

    #[test]
    fn a_solicitation_for_an_owned_ip_gets_a_solicited_advert_to_its_source_ll() {
        let other = MacAddr(0x02, 0, 0, 0, 0, 0x0c);
        let a = answer(
            &ns("2001:db8::10", "2001:db8::100", Some(other)),
            &owned(),
            MAC,
        );
        assert_eq!(
            a,
            Some(Answer::Na {
                target: "2001:db8::100".parse().expect("v6"),
                dst: "2001:db8::10".parse().expect("v6"),
                dst_mac: other,
                solicited: true,
            })
        );
    }

    #[test]
    fn a_solicitation_without_source_ll_is_answered_to_the_ethernet_source() {
        let a = answer(&ns("2001:db8::10", "2001:db8::100", None), &owned(), MAC);
        assert!(matches!(a, Some(Answer::Na { dst_mac, .. }) if dst_mac == PEER));
    }

    #[test]
    fn a_dad_solicitation_for_an_owned_ip_is_defended_to_all_nodes_without_s() {
        let a = answer(&ns("::", "2001:db8::100", None), &owned(), MAC);
        assert_eq!(
            a,
            Some(Answer::Na {
                target: "2001:db8::100".parse().expect("v6"),
                dst: ALL_NODES,
                dst_mac: MacAddr(0x33, 0x33, 0, 0, 0, 1),
                solicited: false,
            })
        );
    }

    #[test]
    fn a_solicitation_for_an_ip_not_owned_or_from_ourselves_gets_nothing() {
        assert_eq!(
            answer(&ns("2001:db8::10", "2001:db8::101", None), &owned(), MAC),
            None
        );
        assert_eq!(
            answer(
                &ns("2001:db8::10", "2001:db8::100", Some(MAC)),
                &owned(),
                MAC
            ),
            None
        );
    }

    fn any_mac() -> impl Strategy<Value = MacAddr> {
        prop_oneof![
            Just(MAC),
            Just(PEER),
            Just(MacAddr::broadcast()),
            Just(MacAddr::zero()),
            any::<[u8; 6]>().prop_map(|o| MacAddr::new(o[0], o[1], o[2], o[3], o[4], o[5])),
        ]
    }

    fn any_v4() -> impl Strategy<Value = Ipv4Addr> {
        prop_oneof![
            Just(OWNED4),
            Just(CLIENT4),
            Just(Ipv4Addr::UNSPECIFIED),
            any::<u32>().prop_map(Ipv4Addr::from),
        ]
    }

    fn any_v6() -> impl Strategy<Value = Ipv6Addr> {
        prop_oneof![
            Just("2001:db8::100".parse().expect("v6")),
            Just(Ipv6Addr::UNSPECIFIED),
            any::<u128>().prop_map(Ipv6Addr::from),
        ]
    }

    fn any_incoming() -> impl Strategy<Value = Incoming> {
        prop_oneof![
            (any_mac(), any_mac(), any_v4(), any_v4()).prop_map(|(e, s, si, ti)| {
                Incoming::ArpRequest {
                    eth_src: e,
                    sender_mac: s,
                    sender_ip: si,
                    target_ip: ti,
                }
            }),
            (
                any_mac(),
                any_v6(),
                any_v6(),
                proptest::option::of(any_mac())
            )
                .prop_map(|(e, src, target, ll)| Incoming::NeighborSolicit {
                    eth_src: e,
                    src,
                    dst: crate::frame::solicited_node(&target),
                    target,
                    source_ll: ll,
                }),
        ]
    }

    proptest! {
        #[test]
        fn an_answer_is_only_ever_for_an_owned_address_to_another_host(
            incoming in any_incoming()
        ) {
            if let Some(a) = answer(&incoming, &owned(), MAC) {
                prop_assert!(owned().contains(&a.ip()));
                let (eth_src, to) = match (incoming, a) {
                    (Incoming::ArpRequest { eth_src, .. }, Answer::Arp { to_mac, .. }) => (eth_src, to_mac),
                    (Incoming::NeighborSolicit { eth_src, .. }, Answer::Na { dst_mac, .. }) => (eth_src, dst_mac),
                    _ => return Err(TestCaseError::fail("answer of the other family")),
                };
                prop_assert_ne!(eth_src, MAC);
                prop_assert_ne!(to, MAC);
            }
        }
    }

    #[test]
    fn an_ipv4_owned_address_does_not_make_us_answer_for_an_ipv6_one_or_back() {
        let only_v4: BTreeSet<IpAddr> = [IpAddr::V4(OWNED4)].into_iter().collect();
        assert_eq!(
            answer(&ns("2001:db8::10", "2001:db8::100", None), &only_v4, MAC),
            None
        );
    }
}

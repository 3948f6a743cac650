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

    #[test]
    fn an_ipv4_owned_address_does_not_make_us_answer_for_an_ipv6_one_or_back() {
        let only_v4: BTreeSet<IpAddr> = [IpAddr::V4(OWNED4)].into_iter().collect();
        assert_eq!(
            answer(&ns("2001:db8::10", "2001:db8::100", None), &only_v4, MAC),
            None
        );
    }
}

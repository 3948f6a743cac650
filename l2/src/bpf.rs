//! The kernel-side filter: classic BPF attached to the packet socket so that only ARP
//! requests (not announcements) and ICMPv6 neighbour solicitations, not sent by this host,
//! reach user space. Everything else (all the IP traffic of a busy node, the other nodes'
//! gratuitous ARP) is dropped in the kernel, before any copy.
//!
//! The program is plain data; `run` below interprets the few instructions it uses so the
//! tests check what the kernel will do without a socket.

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

const LD_W_ABS: u16 = 0x20; // BPF_LD | BPF_W | BPF_ABS
const LD_H_ABS: u16 = 0x28; // BPF_LD | BPF_H | BPF_ABS
const LD_B_ABS: u16 = 0x30; // BPF_LD | BPF_B | BPF_ABS
const JEQ_K: u16 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JEQ_X: u16 = 0x1d; // BPF_JMP | BPF_JEQ | BPF_X
const TAX: u16 = 0x07; // BPF_MISC | BPF_TAX
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// `SKF_AD_OFF + SKF_AD_PKTTYPE`: loads the packet type (linux/filter.h).
const AD_PKTTYPE: u32 = 0xffff_f000 + 4;
/// `PACKET_OUTGOING` (linux/if_packet.h): a frame this host sends.
pub const PACKET_OUTGOING: u32 = 4;
/// `PACKET_OTHERHOST`: unicast to another MAC, seen only in promiscuous mode.
pub const PACKET_OTHERHOST: u32 = 3;
const ETH_P_ARP: u32 = 0x0806;
const ETH_P_IPV6: u32 = 0x86dd;
const ARP_REQUEST: u32 = 1;
const IPPROTO_ICMPV6: u32 = 58;
const ND_NEIGHBOR_SOLICIT: u32 = 135;
/// Bytes of an accepted frame handed to user space (all of it, for any MTU).
const ACCEPT: u32 = 0x0004_0000;

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// ```text
/// 0  ld   pkttype
/// 1  jeq  #OUTGOING      -> 17 (drop)  sent by this host
/// 2  jeq  #OTHERHOST     -> 17 (drop)  unicast to another host (promiscuous mode): the
///                                      kernel's own ARP ignores these too
/// 3  ldh  [12]                         ethertype
/// 4  jeq  #0x0806        else -> 11
/// 5  ldh  [20]                         ARP operation
/// 6  jeq  #1             else -> 17    a reply answers nobody's question of ours
/// 7  ld   [28]                         sender protocol address
/// 8  tax
/// 9  ld   [38]                         target protocol address
/// 10 jeq  x -> 17        else -> 16    sender = target: a gratuitous ARP announces, it
///                                      does not ask (RFC 5227 §2.4)
/// 11 jeq  #0x86dd        else -> 17
/// 12 ldb  [20]                         IPv6 next header (no extension headers: RFC 4861
/// 13 jeq  #58            else -> 17    messages carry none in practice)
/// 14 ldb  [54]                         ICMPv6 type
/// 15 jeq  #135 -> 16     else -> 17
/// 16 ret  #ACCEPT
/// 17 ret  #0
/// ```
/// Replies and gratuitous ARP are dropped in the kernel because another node taking over
/// thousands of IPs sends two of them per IP within a second: woken for each, the L2 task
/// of every other node overflowed its receive queue (and lost real questions) in the
/// 10 000-IP cluster run of issue 16, for frames it never answers ([`crate::respond`]).
pub const PROGRAM: [Insn; 18] = [
    insn(LD_W_ABS, 0, 0, AD_PKTTYPE),
    insn(JEQ_K, 15, 0, PACKET_OUTGOING),
    insn(JEQ_K, 14, 0, PACKET_OTHERHOST),
    insn(LD_H_ABS, 0, 0, 12),
    insn(JEQ_K, 0, 6, ETH_P_ARP),
    insn(LD_H_ABS, 0, 0, 20),
    insn(JEQ_K, 0, 10, ARP_REQUEST),
    insn(LD_W_ABS, 0, 0, 28),
    insn(TAX, 0, 0, 0),
    insn(LD_W_ABS, 0, 0, 38),
    insn(JEQ_X, 6, 5, 0),
    insn(JEQ_K, 0, 5, ETH_P_IPV6),
    insn(LD_B_ABS, 0, 0, 20),
    insn(JEQ_K, 0, 3, IPPROTO_ICMPV6),
    insn(LD_B_ABS, 0, 0, 54),
    insn(JEQ_K, 0, 1, ND_NEIGHBOR_SOLICIT),
    insn(RET_K, 0, 0, ACCEPT),
    insn(RET_K, 0, 0, 0),
];

/// The program in socket2's form, for `SO_ATTACH_FILTER`.
pub fn socket_filter() -> Vec<socket2::SockFilter> {
    PROGRAM
        .iter()
        .map(|i| socket2::SockFilter::new(i.code, i.jt, i.jf, i.k))
        .collect()
}

/// Runs `program` over `frame` as the kernel would; returns the number of bytes accepted
/// (0 = dropped). Only the instructions used above are understood; any other one drops,
/// as does a load past the end of the frame (the kernel's rule).
pub fn run(program: &[Insn], frame: &[u8], pkttype: u32) -> u32 {
    let mut acc: u32 = 0;
    let mut x: u32 = 0;
    let mut pc = 0usize;
    while let Some(i) = program.get(pc) {
        pc += 1;
        let load = |at: u32, width: usize| -> Option<u32> {
            let at = usize::try_from(at).ok()?;
            let bytes = frame.get(at..at.checked_add(width)?)?;
            Some(bytes.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)))
        };
        match i.code {
            LD_W_ABS if i.k == AD_PKTTYPE => acc = pkttype,
            LD_W_ABS => match load(i.k, 4) {
                Some(v) => acc = v,
                None => return 0,
            },
            LD_H_ABS => match load(i.k, 2) {
                Some(v) => acc = v,
                None => return 0,
            },
            LD_B_ABS => match load(i.k, 1) {
                Some(v) => acc = v,
                None => return 0,
            },
            JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
            JEQ_X => pc += usize::from(if acc == x { i.jt } else { i.jf }),
            TAX => x = acc,
            RET_K => return i.k,
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame;
    use pnet_base::MacAddr;
    use std::net::Ipv4Addr;

    const MAC: MacAddr = MacAddr(0x02, 0, 0, 0, 0, 0x0b);
    const HOST: u32 = 0;
    const BROADCAST: u32 = 1;

    #[test]
    fn arp_requests_from_others_pass_and_their_announcements_do_not() {
        let req = frame::arp_request(
            MAC,
            Ipv4Addr::new(192, 0, 2, 10),
            Ipv4Addr::new(192, 0, 2, 1),
        );
        assert_eq!(run(&PROGRAM, &req, BROADCAST), ACCEPT);
        let probe = frame::arp_request(MAC, Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(
            run(&PROGRAM, &probe, BROADCAST),
            ACCEPT,
            "an ARP probe asks"
        );
        for form in [frame::GarpForm::Request, frame::GarpForm::Reply] {
            let garp = frame::gratuitous_arp(MAC, Ipv4Addr::new(192, 0, 2, 1), form);
            assert_eq!(run(&PROGRAM, &garp, BROADCAST), 0, "{form:?}");
        }
        let reply = frame::arp_reply(
            MAC,
            Ipv4Addr::new(192, 0, 2, 1),
            MacAddr(0x02, 0, 0, 0, 0, 0x0c),
            Ipv4Addr::new(192, 0, 2, 10),
        );
        assert_eq!(run(&PROGRAM, &reply, HOST), 0);
    }

    proptest::proptest! {
        /// The kernel filter passes exactly the ARP frames the responder answers: never
        /// drops a question we would answer, and the frames it passes are requests that
        /// are not announcements.
        #[test]
        fn the_filter_passes_every_arp_question_the_responder_answers(
            sender in proptest::prelude::any::<u32>(),
            target in proptest::prelude::any::<u32>(),
            same in proptest::prelude::any::<bool>(),
            op in 0u8..4,
        ) {
            let sender = Ipv4Addr::from(sender);
            let target = if same { sender } else { Ipv4Addr::from(target) };
            let mut f = frame::arp_request(MAC, sender, target);
            f[21] = op;
            let owned: std::collections::BTreeSet<std::net::IpAddr> = [target.into()].into();
            let answered = frame::parse(&f)
                .ok()
                .and_then(|p| crate::respond::answer(&p, &owned, MacAddr(0x02, 0, 0, 0, 0, 0x0d)))
                .is_some();
            let passed = run(&PROGRAM, &f, BROADCAST) == ACCEPT;
            proptest::prop_assert!(!answered || passed, "a question we answer was filtered");
            proptest::prop_assert_eq!(passed, op == 1 && sender != target);
        }
    }

    #[test]
    fn neighbor_solicitations_pass_and_advertisements_do_not() {
        let ns = frame::neighbor_solicit(
            MAC,
            "2001:db8::10".parse().expect("v6"),
            "2001:db8::100".parse().expect("v6"),
        );
        assert_eq!(run(&PROGRAM, &ns, 2), ACCEPT);
        let na = frame::neighbor_advert(
            MAC,
            "2001:db8::100".parse().expect("v6"),
            frame::ALL_NODES,
            frame::multicast_mac(&frame::ALL_NODES),
            false,
        );
        assert_eq!(run(&PROGRAM, &na, 2), 0);
    }

    #[test]
    fn frames_this_host_sends_are_dropped() {
        let req = frame::arp_request(
            MAC,
            Ipv4Addr::new(192, 0, 2, 10),
            Ipv4Addr::new(192, 0, 2, 1),
        );
        assert_eq!(run(&PROGRAM, &req, PACKET_OUTGOING), 0);
    }

    #[test]
    fn frames_unicast_to_another_host_are_dropped() {
        let req = frame::arp_request(
            MAC,
            Ipv4Addr::new(192, 0, 2, 10),
            Ipv4Addr::new(192, 0, 2, 1),
        );
        assert_eq!(run(&PROGRAM, &req, PACKET_OTHERHOST), 0);
    }

    #[test]
    fn ipv4_traffic_and_short_frames_are_dropped() {
        let mut ipv4 = vec![0u8; 60];
        ipv4[12] = 0x08;
        assert_eq!(run(&PROGRAM, &ipv4, HOST), 0);
        assert_eq!(run(&PROGRAM, &[0u8; 10], HOST), 0);
        let mut short_v6 = vec![0u8; 30];
        short_v6[12] = 0x86;
        short_v6[13] = 0xdd;
        assert_eq!(run(&PROGRAM, &short_v6, HOST), 0);
    }

    #[test]
    fn every_jump_lands_inside_the_program() {
        for (pc, i) in PROGRAM.iter().enumerate() {
            if i.code == JEQ_K || i.code == JEQ_X {
                assert!(pc + 1 + usize::from(i.jt) < PROGRAM.len());
                assert!(pc + 1 + usize::from(i.jf) < PROGRAM.len());
            }
        }
        assert_eq!(PROGRAM.last().map(|i| i.code), Some(RET_K));
    }
}

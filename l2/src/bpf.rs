//! The kernel-side filter: classic BPF attached to the packet socket so that only ARP and
//! ICMPv6 neighbour solicitations, not sent by this host, reach user space. Everything else
//! (all the IP traffic of a busy node) is dropped in the kernel, before any copy.
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
const RET_K: u16 = 0x06; // BPF_RET | BPF_K

/// `SKF_AD_OFF + SKF_AD_PKTTYPE`: loads the packet type (linux/filter.h).
const AD_PKTTYPE: u32 = 0xffff_f000 + 4;
/// `PACKET_OUTGOING` (linux/if_packet.h): a frame this host sends.
pub const PACKET_OUTGOING: u32 = 4;
/// `PACKET_OTHERHOST`: unicast to another MAC, seen only in promiscuous mode.
pub const PACKET_OTHERHOST: u32 = 3;
const ETH_P_ARP: u32 = 0x0806;
const ETH_P_IPV6: u32 = 0x86dd;
const IPPROTO_ICMPV6: u32 = 58;
const ND_NEIGHBOR_SOLICIT: u32 = 135;
/// Bytes of an accepted frame handed to user space (all of it, for any MTU).
const ACCEPT: u32 = 0x0004_0000;

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// ```text
/// 0  ld   pkttype
/// 1  jeq  #OUTGOING      -> 11 (drop)  sent by this host
/// 2  jeq  #OTHERHOST     -> 11 (drop)  unicast to another host (promiscuous mode): the
///                                      kernel's own ARP ignores these too
/// 3  ldh  [12]                         ethertype
/// 4  jeq  #0x0806        -> 10 (accept)
/// 5  jeq  #0x86dd        else -> 11
/// 6  ldb  [20]                         IPv6 next header (no extension headers: RFC 4861
/// 7  jeq  #58            else -> 11    messages carry none in practice)
/// 8  ldb  [54]                         ICMPv6 type
/// 9  jeq  #135 -> 10     else -> 11
/// 10 ret  #ACCEPT
/// 11 ret  #0
/// ```
pub const PROGRAM: [Insn; 12] = [
    insn(LD_W_ABS, 0, 0, AD_PKTTYPE),
    insn(JEQ_K, 9, 0, PACKET_OUTGOING),
    insn(JEQ_K, 8, 0, PACKET_OTHERHOST),
    insn(LD_H_ABS, 0, 0, 12),
    insn(JEQ_K, 5, 0, ETH_P_ARP),
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
    fn arp_requests_and_replies_from_others_pass() {
        let req = frame::arp_request(
            MAC,
            Ipv4Addr::new(192, 0, 2, 10),
            Ipv4Addr::new(192, 0, 2, 1),
        );
        assert_eq!(run(&PROGRAM, &req, BROADCAST), ACCEPT);
        let garp = frame::gratuitous_arp(MAC, Ipv4Addr::new(192, 0, 2, 1), frame::GarpForm::Reply);
        assert_eq!(run(&PROGRAM, &garp, BROADCAST), ACCEPT);
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
            if i.code == JEQ_K {
                assert!(pc + 1 + usize::from(i.jt) < PROGRAM.len());
                assert!(pc + 1 + usize::from(i.jf) < PROGRAM.len());
            }
        }
        assert_eq!(PROGRAM.last().map(|i| i.code), Some(RET_K));
    }
}

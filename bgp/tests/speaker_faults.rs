//! Three interop faults, each reproduced over loopback TCP (issue 13): an IPv6 route over an
//! IPv4 session got an IPv4-mapped next hop; routes of a family without a next hop were
//! counted as sent (and later withdrawn) though never written; two idle connections from
//! the peer's address locked the real peer out for minutes. The same faults against real
//! routers in network namespaces: `tests/tests/bgp_faults.rs`.
#![allow(clippy::unwrap_used)]
mod support;

use edgelb_bgp::fsm::State;
use edgelb_bgp::packet::{frame_len, CodecContext, Family, Message, MpNextHop, HEADER_LEN};
use edgelb_bgp::{RouteAttrs, RouteTable};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::speaker::{active, connect_from, ip, passive, port, speaker, status, wait_for};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn table(prefixes: &[&str]) -> RouteTable {
    prefixes
        .iter()
        .map(|p| (p.parse().unwrap(), Arc::new(RouteAttrs::default())))
        .collect()
}

/// OPEN from AS 65002 with Multiprotocol IPv4 and IPv6 unicast and 4-octet AS.
fn open_bytes() -> Vec<u8> {
    let caps: Vec<u8> = vec![
        1, 4, 0, 1, 0, 1, // MP IPv4 unicast
        1, 4, 0, 2, 0, 1, // MP IPv6 unicast
        65, 4, 0, 0, 0xfd, 0xea, // 4-octet AS 65002
    ];
    let mut body = vec![4, 0xfd, 0xea, 0, 90, 192, 0, 2, 99];
    body.push(caps.len() as u8 + 2);
    body.extend_from_slice(&[2, caps.len() as u8]);
    body.extend_from_slice(&caps);
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((HEADER_LEN + body.len()) as u16).to_be_bytes());
    m.push(1);
    m.extend_from_slice(&body);
    m
}

fn keepalive_bytes() -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&19u16.to_be_bytes());
    m.push(4);
    m
}

/// The first MP_REACH next hop of `family` the speaker sends (bounded by a timeout).
async fn first_next_hop(stream: &mut TcpStream, want: Family) -> Option<MpNextHop> {
    let ctx = CodecContext {
        four_octet_as: true,
        extended_message: false,
    };
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        while let Ok(Some(len)) = frame_len(&buf, &ctx) {
            if buf.len() < len {
                break;
            }
            let frame: Vec<u8> = buf.drain(..len).collect();
            if let Ok(Message::Update(u)) = Message::decode(&frame, &ctx) {
                if let Some(mp) = u.attributes.mp_reach {
                    if Family::from_afi_safi(mp.afi, mp.safi) == Some(want) {
                        return Some(mp.next_hop);
                    }
                }
            }
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, stream.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test]
async fn ipv6_route_over_an_ipv4_session_gets_an_ipv6_next_hop_never_an_ipv4_mapped_one() {
    let mut s = speaker(1, Some("127.0.0.1:0"));
    let port = port(&s);
    let mut p = passive("127.0.0.2", 65001, 65002);
    p.families = vec![Family::Ipv4Unicast, Family::Ipv6Unicast];
    s.set_peer(p).unwrap();
    s.set_routes(&ip("127.0.0.2"), table(&["2001:db8:ff::1/128"]))
        .unwrap();
    let mut c = connect_from("127.0.0.2", SocketAddr::new(ip("127.0.0.1"), port)).await;
    c.write_all(&open_bytes()).await.unwrap();
    c.write_all(&keepalive_bytes()).await.unwrap();
    let nh = first_next_hop(&mut c, Family::Ipv6Unicast).await;
    // The session runs over `lo`, whose IPv6 address is ::1.
    match nh {
        Some(MpNextHop::V6 { global, .. }) => {
            assert!(
                global.to_ipv4_mapped().is_none(),
                "IPv4-mapped next hop {global}: a router cannot forward to it"
            );
            assert_eq!(global, "::1".parse::<std::net::Ipv6Addr>().unwrap());
        }
        other => panic!("no IPv6 route with an IPv6 next hop: {other:?}"),
    }
}

#[tokio::test]
async fn ipv4_routes_over_an_ipv6_session_count_as_sent_only_when_the_peer_has_them() {
    let mut a = speaker(1, Some("[::1]:0"));
    let mut pa = passive("::1", 65001, 65002);
    pa.import = true;
    pa.families = vec![Family::Ipv4Unicast, Family::Ipv6Unicast];
    a.set_peer(pa).unwrap();
    let mut b = speaker(2, None);
    let mut pb = active("::1", port(&a), None, 65002, 65001);
    pb.families = vec![Family::Ipv4Unicast, Family::Ipv6Unicast];
    b.set_peer(pb).unwrap();
    b.set_routes(
        &ip("::1"),
        table(&["198.51.100.1/32", "198.51.100.2/32", "2001:db8:ff::1/128"]),
    )
    .unwrap();
    wait_for("B established", &b, ip("::1"), |s| {
        s.state == State::Established && s.prefixes_sent > 0
    })
    .await;
    // Whatever B says it sent, A must have: the IPv4 routes get the IPv4 address of the
    // interface toward the peer (127.0.0.1 on lo) as next hop.
    wait_for("A has all three", &a, ip("::1"), |s| {
        s.prefixes_received == 3
    })
    .await;
    let sb = status(&b, ip("::1"));
    assert_eq!(sb.prefixes_sent, 3, "{sb:?}");
    assert_eq!(sb.prefixes_not_sent, 0, "{sb:?}");
    assert!(sb.families_not_announced.is_empty(), "{sb:?}");
}

#[tokio::test]
async fn two_idle_connections_from_the_peer_address_do_not_lock_the_peer_out() {
    let mut a = speaker(1, Some("127.0.0.1:0"));
    a.set_peer(passive("127.0.0.2", 65001, 65002)).unwrap();
    let to = SocketAddr::new(ip("127.0.0.1"), port(&a));
    // Two connections from the peer's own address that never send an OPEN.
    let _idle1 = connect_from("127.0.0.2", to).await;
    let _idle2 = connect_from("127.0.0.2", to).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let mut b = speaker(2, None);
    b.set_peer(active(
        "127.0.0.1",
        to.port(),
        Some("127.0.0.2"),
        65002,
        65001,
    ))
    .unwrap();
    wait_for("the real peer established", &a, ip("127.0.0.2"), |s| {
        s.state == State::Established
    })
    .await;
    eprintln!(
        "real peer Established {:?} after it started, past two idle connections",
        started.elapsed()
    );
}

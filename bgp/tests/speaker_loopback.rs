//! Two real `Speaker`s over loopback TCP: one announces, the other imports and counts.
//! No router daemon needed; the interop tests against FRR, BIRD and GoBGP are in `tests/`.
#![allow(clippy::unwrap_used)]
mod support;

use edgelb_bgp::fsm::State;
use edgelb_bgp::packet::{Community, Family};
use edgelb_bgp::{PeerConfig, RouteAttrs, RouteTable, Secret, Speaker};
use ipnet::{IpNet, Ipv4Net};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use support::speaker::{active, ip, passive, port, speaker, wait_for};

const A: &str = "127.0.0.1";
const B: &str = "127.0.0.2";

fn table(n: u32, attrs: Arc<RouteAttrs>) -> RouteTable {
    (0..n)
        .map(|i| {
            (
                IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0xc612_0000 + i), 32).unwrap()),
                attrs.clone(),
            )
        })
        .collect()
}

/// A: listens, passive, imports. B: connects from 127.0.0.2, announces.
fn pair(
    password_a: Option<&str>,
    password_b: Option<&str>,
    max: Option<u32>,
) -> (Speaker, Speaker) {
    pair_with(
        |pa| {
            pa.password = password_a.map(Secret::new);
            pa.max_prefixes = max;
        },
        |pb| pb.password = password_b.map(Secret::new),
    )
}

/// Like [`pair`], with each side's config adjusted by a closure.
fn pair_with(
    edit_a: impl FnOnce(&mut PeerConfig),
    edit_b: impl FnOnce(&mut PeerConfig),
) -> (Speaker, Speaker) {
    let mut a = speaker(1, Some("127.0.0.1:0"));
    let mut pa = passive(B, 65001, 65002);
    pa.import = true;
    pa.hold_time = 9;
    edit_a(&mut pa);
    a.set_peer(pa).unwrap();

    let mut b = speaker(2, None);
    let mut pb = active(A, port(&a), Some(B), 65002, 65001);
    pb.hold_time = 9;
    edit_b(&mut pb);
    b.set_peer(pb).unwrap();
    (a, b)
}

#[tokio::test]
async fn routes_arrive_change_and_are_withdrawn() {
    let (a, b) = pair(None, None, None);
    let attrs = Arc::new(RouteAttrs {
        communities: vec![Community(0xfde8_0001)],
        ..RouteAttrs::default()
    });
    b.set_routes(&ip(A), table(10_000, attrs.clone())).unwrap();
    let st = wait_for("10000 prefixes at A", &a, ip(B), |s| {
        s.prefixes_received == 10_000
    })
    .await;
    assert_eq!(st.state, State::Established);
    let sb = wait_for("B sent", &b, ip(A), |s| s.prefixes_sent == 10_000).await;
    // Packing: far fewer UPDATEs than prefixes (End-of-RIB included).
    assert!(
        sb.updates_out < 100,
        "{} UPDATEs for 10000 prefixes",
        sb.updates_out
    );
    eprintln!("10000 prefixes in {} UPDATEs", sb.updates_out);

    // Only the difference: withdraw half.
    b.set_routes(&ip(A), table(5_000, attrs)).unwrap();
    wait_for("5000 prefixes at A", &a, ip(B), |s| {
        s.prefixes_received == 5_000
    })
    .await;

    // Graceful shutdown: A hears Cease / Administrative Shutdown with the message.
    b.shutdown("maintenance").await;
    let st = wait_for("A sees shutdown", &a, ip(B), |s| {
        s.state != State::Established
    })
    .await;
    let err = st.last_error.expect("an error is recorded");
    assert_eq!(err.code, Some((6, 2)));
    assert!(err.received);
    assert!(err.text.contains("maintenance"), "{}", err.text);
}

#[tokio::test]
async fn max_prefix_ends_the_session_with_cease_1() {
    let (a, b) = pair(None, None, Some(5));
    b.set_routes(&ip(A), table(10, Arc::new(RouteAttrs::default())))
        .unwrap();
    let st = wait_for("B sees Cease 6/1", &b, ip(A), |s| {
        s.last_error
            .as_ref()
            .is_some_and(|e| e.code == Some((6, 1)))
    })
    .await;
    assert!(st.last_error.unwrap().received);
    drop(a);
}

#[tokio::test]
async fn md5_with_matching_keys_comes_up() {
    let (a, _b) = pair(Some("s3cret"), Some("s3cret"), None);
    wait_for("established with MD5", &a, ip(B), |s| {
        s.state == State::Established
    })
    .await;
}

#[tokio::test]
async fn md5_with_wrong_key_stays_down() {
    let (a, b) = pair(Some("right"), Some("wrong"), None);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_ne!(a.peers()[0].state, State::Established);
    assert_ne!(b.peers()[0].state, State::Established);
    assert_eq!(a.peers()[0].established_count, 0);
}

#[tokio::test]
async fn soft_change_keeps_the_session_and_reset_change_restarts_it() {
    let (mut a, mut b) = pair(None, None, None);
    b.set_routes(&ip(A), table(3, Arc::new(RouteAttrs::default())))
        .unwrap();
    wait_for("up", &a, ip(B), |s| s.prefixes_received == 3).await;
    let mut cfg = PeerConfig::new(ip(A), 65002, 65001);
    cfg.port = a.local_addr().unwrap().port();
    cfg.source_address = Some(ip(B));
    cfg.hold_time = 9;
    cfg.connect_retry = Duration::from_millis(200);
    cfg.connect_retry_max = Duration::from_secs(1);
    // Neither ASN, address, port nor password: no reset, whatever else changes.
    cfg.description = "changed".into();
    cfg.max_prefixes = Some(100);
    cfg.hold_time = 30;
    cfg.ebgp_multihop = Some(2);
    cfg.families = vec![Family::Ipv4Unicast, Family::Ipv6Unicast];
    b.set_peer(cfg.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sb = b.peers().remove(0);
    assert_eq!(sb.description, "changed");
    assert_eq!(
        sb.established_count, 1,
        "a soft change must not reset the session"
    );
    assert_eq!(sb.state, State::Established);
    assert_eq!(a.peers()[0].established_count, 1);

    // A new password resets: A's old session ends with Cease / Other Configuration Change
    // (RFC 4486), and once B has the key too the session returns over MD5 with the routes.
    let mut pa = PeerConfig::new(ip(B), 65001, 65002);
    pa.passive = true;
    pa.import = true;
    pa.hold_time = 9;
    pa.password = Some(Secret::new("new-key"));
    a.set_peer(pa).unwrap();
    let sb = wait_for("B hears 6/6", &b, ip(A), |s| {
        s.last_error
            .as_ref()
            .is_some_and(|e| e.code == Some((6, 6)))
    })
    .await;
    assert!(sb.last_error.unwrap().received);
    cfg.password = Some(Secret::new("new-key"));
    b.set_peer(cfg).unwrap();
    let st = wait_for("back over MD5", &a, ip(B), |s| {
        s.state == State::Established && s.prefixes_received == 3
    })
    .await;
    assert_eq!(st.established_count, 1, "a fresh peer task after the reset");
}

#[tokio::test]
async fn ipv6_routes_travel_over_an_ipv4_session() {
    // Families come from the config: an IPv4 peer announcing IPv6 needs both.
    let mut a = speaker(1, Some("127.0.0.1:0"));
    let mut pa = passive(B, 65001, 65001);
    pa.import = true;
    pa.families = vec![Family::Ipv4Unicast, Family::Ipv6Unicast];
    a.set_peer(pa).unwrap();
    let mut b = speaker(2, None);
    let mut pb = active(A, port(&a), Some(B), 65001, 65001);
    pb.families = vec![Family::Ipv4Unicast, Family::Ipv6Unicast];
    b.set_peer(pb).unwrap();
    let mut t = RouteTable::new();
    t.insert(
        "2001:db8::1/128".parse().unwrap(),
        Arc::new(RouteAttrs {
            local_pref: Some(200),
            ..Default::default()
        }),
    );
    t.insert(
        "198.51.100.1/32".parse().unwrap(),
        Arc::new(RouteAttrs::default()),
    );
    b.set_routes(&ip(A), t).unwrap();
    wait_for("both families", &a, ip(B), |s| s.prefixes_received == 2).await;
}

#[tokio::test]
async fn simultaneous_connections_settle_on_one_session() {
    // Both speakers listen and both connect: a connection collision (RFC 4271 §6.8).
    let mut a = speaker(1, Some("127.0.0.1:0"));
    let mut b = speaker(2, Some("127.0.0.2:0"));
    let mut pa = PeerConfig::new(ip(B), 65001, 65002);
    pa.port = port(&b);
    pa.source_address = Some(ip(A));
    pa.import = true;
    let mut pb = PeerConfig::new(ip(A), 65002, 65001);
    pb.port = port(&a);
    pb.source_address = Some(ip(B));
    pb.import = true;
    a.set_peer(pa).unwrap();
    b.set_peer(pb).unwrap();
    a.set_routes(&ip(B), table(2, Arc::new(RouteAttrs::default())))
        .unwrap();
    b.set_routes(&ip(A), table(3, Arc::new(RouteAttrs::default())))
        .unwrap();
    wait_for("A has B's routes", &a, ip(B), |s| s.prefixes_received == 3).await;
    wait_for("B has A's routes", &b, ip(A), |s| s.prefixes_received == 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (sa, sb) = (a.peers().remove(0), b.peers().remove(0));
    assert_eq!(
        (sa.state, sb.state),
        (State::Established, State::Established)
    );
    // One session survived on each side and stayed up.
    assert_eq!(sa.established_count, 1, "{sa:?}");
    assert_eq!(sb.established_count, 1, "{sb:?}");
    eprintln!(
        "collision: A last error {:?}, B last error {:?}",
        sa.last_error, sb.last_error
    );
}

#[tokio::test]
async fn gtsm_accepts_ttl_255_and_drops_ttl_1() {
    // Loopback does not decrement the TTL: what B sends is what A's IP_MINTTL sees.
    let (a, _b) = pair_with(|pa| pa.gtsm = true, |pb| pb.gtsm = true);
    wait_for("GTSM on both sides", &a, ip(B), |s| {
        s.state == State::Established
    })
    .await;

    // B is eBGP without GTSM: it sends with TTL 1, which A's GTSM check (RFC 5082) drops.
    // (B's first segment, its OPEN, may arrive before A sets IP_MINTTL on the accepted
    // socket; nothing after it does, so A never sees the KEEPALIVE it needs.)
    let (a, b) = pair_with(|pa| pa.gtsm = true, |_| {});
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sa = a.peers().remove(0);
    assert_ne!(sa.state, State::Established, "{sa:?}");
    assert_eq!(sa.established_count, 0);
    assert!(sa.messages_in <= 1, "{sa:?}");
    drop(b);
}

#[tokio::test]
async fn removing_a_peer_sends_cease_3_and_leaves_the_others_alone() {
    let mut a = speaker(1, Some("127.0.0.1:0"));
    let port = port(&a);
    let mut others = Vec::new();
    for (i, addr) in ["127.0.0.2", "127.0.0.3"].into_iter().enumerate() {
        a.set_peer(passive(addr, 65001, 65002)).unwrap();
        let mut s = speaker(10 + i as u8, None);
        s.set_peer(active(A, port, Some(addr), 65002, 65001))
            .unwrap();
        others.push(s);
    }
    for addr in ["127.0.0.2", "127.0.0.3"] {
        wait_for("both up", &a, ip(addr), |s| s.state == State::Established).await;
    }
    a.remove_peer(&ip("127.0.0.2")).unwrap();
    let st = wait_for("B hears Peer De-configured", &others[0], ip(A), |s| {
        s.last_error
            .as_ref()
            .is_some_and(|e| e.code == Some((6, 3)))
    })
    .await;
    assert!(st.last_error.unwrap().received);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peers = a.peers();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].address, ip("127.0.0.3"));
    assert_eq!(
        (peers[0].state, peers[0].established_count),
        (State::Established, 1)
    );
    assert!(a.remove_peer(&ip("127.0.0.2")).is_err());
}

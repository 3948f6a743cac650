//! Two real `Speaker`s over loopback TCP: one announces, the other imports and counts.
//! No router daemon needed; the interop tests against FRR, BIRD and GoBGP are in `tests/`.
#![allow(clippy::unwrap_used)]
use edgelb_bgp::fsm::State;
use edgelb_bgp::packet::{Community, Family};
use edgelb_bgp::{PeerConfig, PeerStatus, RouteAttrs, RouteTable, Secret, Speaker, SpeakerConfig};
use ipnet::{IpNet, Ipv4Net};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

const A: &str = "127.0.0.1";
const B: &str = "127.0.0.2";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

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

async fn wait_for(
    what: &str,
    speaker: &Speaker,
    peer: IpAddr,
    f: impl Fn(&PeerStatus) -> bool,
) -> PeerStatus {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let st = speaker
            .peers()
            .into_iter()
            .find(|p| p.address == peer)
            .expect("peer configured");
        if f(&st) {
            return st;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}: {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A: listens, passive, imports. B: connects from 127.0.0.2, announces.
fn pair(
    password_a: Option<&str>,
    password_b: Option<&str>,
    max: Option<u32>,
) -> (Speaker, Speaker) {
    let mut a = Speaker::new(SpeakerConfig {
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        listen: Some("127.0.0.1:0".parse().unwrap()),
    })
    .unwrap();
    let port = a.local_addr().unwrap().port();
    let mut pa = PeerConfig::new(ip(B), 65001, 65002);
    pa.passive = true;
    pa.import = true;
    pa.max_prefixes = max;
    pa.hold_time = 9;
    pa.password = password_a.map(Secret::new);
    a.set_peer(pa).unwrap();

    let mut b = Speaker::new(SpeakerConfig {
        router_id: Ipv4Addr::new(192, 0, 2, 2),
        listen: None,
    })
    .unwrap();
    let mut pb = PeerConfig::new(ip(A), 65002, 65001);
    pb.port = port;
    pb.source_address = Some(ip(B));
    pb.hold_time = 9;
    pb.connect_retry = Duration::from_millis(200);
    pb.connect_retry_max = Duration::from_secs(1);
    pb.password = password_b.map(Secret::new);
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
    let (a, mut b) = pair(None, None, None);
    b.set_routes(&ip(A), table(3, Arc::new(RouteAttrs::default())))
        .unwrap();
    wait_for("up", &a, ip(B), |s| s.prefixes_received == 3).await;
    let mut cfg = PeerConfig::new(ip(A), 65002, 65001);
    cfg.port = a.local_addr().unwrap().port();
    cfg.source_address = Some(ip(B));
    cfg.hold_time = 9;
    cfg.connect_retry = Duration::from_millis(200);
    cfg.connect_retry_max = Duration::from_secs(1);
    cfg.description = "changed".into();
    cfg.max_prefixes = Some(100);
    b.set_peer(cfg.clone()).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sb = b.peers().remove(0);
    assert_eq!(sb.description, "changed");
    assert_eq!(
        sb.established_count, 1,
        "a soft change must not reset the session"
    );
    assert_eq!(sb.state, State::Established);

    // The hold time is in the OPEN: changing it restarts the session, routes are re-sent.
    cfg.hold_time = 12;
    b.set_peer(cfg).unwrap();
    let st = wait_for("A sees the reset", &a, ip(B), |s| {
        s.established_count >= 2 && s.prefixes_received == 3
    })
    .await;
    assert_eq!(st.state, State::Established);
}

#[tokio::test]
async fn ipv6_routes_travel_over_an_ipv4_session() {
    // Families come from the config: an IPv4 peer announcing IPv6 needs both.
    let mut a = Speaker::new(SpeakerConfig {
        router_id: Ipv4Addr::new(192, 0, 2, 1),
        listen: Some("127.0.0.1:0".parse().unwrap()),
    })
    .unwrap();
    let port = a.local_addr().unwrap().port();
    let mut pa = PeerConfig::new(ip(B), 65001, 65001);
    pa.passive = true;
    pa.import = true;
    pa.families = vec![Family::Ipv4Unicast, Family::Ipv6Unicast];
    a.set_peer(pa).unwrap();
    let mut b = Speaker::new(SpeakerConfig {
        router_id: Ipv4Addr::new(192, 0, 2, 2),
        listen: None,
    })
    .unwrap();
    let mut pb = PeerConfig::new(ip(A), 65001, 65001);
    pb.port = port;
    pb.source_address = Some(ip(B));
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

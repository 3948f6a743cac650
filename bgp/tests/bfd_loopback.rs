//! Two BFD runtimes talking over loopback (distinct ports, one namespace): the sessions
//! come up, agree on timers, and one side notices the other's silence within the
//! detection time. Timing bounds are generous: the machine may be loaded.
use edgelb_bgp::bfd::{
    Bfd, BfdStatus, RuntimeConfig, SessionConfig, SessionKey, SessionParams, State,
};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use tokio::sync::watch;

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn params(local: IpAddr, port: u16, ms: u64) -> SessionParams {
    SessionParams {
        timers: SessionConfig {
            desired_min_tx: Duration::from_millis(ms),
            required_min_rx: Duration::from_millis(ms),
            detect_mult: 3,
            passive: false,
        },
        local: Some(local),
        minimum_ttl: 254,
        peer_port: Some(port),
    }
}

async fn wait_for(
    rx: &mut watch::Receiver<BfdStatus>,
    what: impl Fn(&BfdStatus) -> bool,
    limit: Duration,
) -> BfdStatus {
    let r = tokio::time::timeout(limit, rx.wait_for(|s| what(s)))
        .await
        .map(|r| r.map(|s| s.clone()));
    match r {
        Ok(Ok(s)) => s,
        _ => panic!(
            "BFD status never matched within {limit:?}: {:?}",
            *rx.borrow()
        ),
    }
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn two_runtimes_come_up_and_detect_silence_within_the_detection_time() {
    let (pa, pb) = (free_port(), free_port());
    let a = Bfd::spawn(RuntimeConfig {
        single_hop_port: pa,
        multihop_port: free_port(),
    });
    let b = Bfd::spawn(RuntimeConfig {
        single_hop_port: pb,
        multihop_port: free_port(),
    });
    let (_ra, mut sa) = a.register(
        SessionKey {
            peer: ip(12),
            multihop: false,
        },
        params(ip(11), pb, 50),
    );
    let (rb, mut sb) = b.register(
        SessionKey {
            peer: ip(11),
            multihop: false,
        },
        params(ip(12), pa, 50),
    );
    let up = |s: &BfdStatus| s.state() == Some(State::Up);
    wait_for(&mut sa, up, Duration::from_secs(10)).await;
    wait_for(&mut sb, up, Duration::from_secs(10)).await;
    // The Poll Sequence to the fast timers ends; detection = 3 × 50 ms.
    let st = wait_for(
        &mut sa,
        |s| s.session.and_then(|x| x.detection_time) == Some(Duration::from_millis(150)),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(st.failures, 0);

    // B goes silent without a word (runtime dropped: no AdminDown from a dropped runtime).
    drop(rb);
    drop(sb);
    // Removing a session says AdminDown, which is not a failure (RFC 5882 §3.2).
    let st = wait_for(
        &mut sa,
        |s| s.state() == Some(State::Down),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(st.failures, 0, "AdminDown is not a failure: {st:?}");
    assert!(st.last_change.is_some_and(|c| c.peer_admin_down));
}

#[tokio::test]
async fn a_silent_peer_is_a_failure_detected_in_about_the_detection_time() {
    let (pa, pb) = (free_port(), free_port());
    let a = Bfd::spawn(RuntimeConfig {
        single_hop_port: pa,
        multihop_port: free_port(),
    });
    let b = Bfd::spawn(RuntimeConfig {
        single_hop_port: pb,
        multihop_port: free_port(),
    });
    let (_ra, mut sa) = a.register(
        SessionKey {
            peer: ip(22),
            multihop: false,
        },
        params(ip(21), pb, 50),
    );
    let (rb, mut sb) = b.register(
        SessionKey {
            peer: ip(21),
            multihop: false,
        },
        params(ip(22), pa, 50),
    );
    let up = |s: &BfdStatus| s.state() == Some(State::Up);
    wait_for(&mut sa, up, Duration::from_secs(10)).await;
    wait_for(&mut sb, up, Duration::from_secs(10)).await;
    wait_for(
        &mut sa,
        |s| s.session.and_then(|x| x.detection_time) == Some(Duration::from_millis(150)),
        Duration::from_secs(5),
    )
    .await;
    // Dropping B's runtime aborts its task: silence (the registration's AdminDown goes
    // nowhere).
    std::mem::forget(rb);
    drop(b);
    let started = Instant::now();
    let st = wait_for(&mut sa, |s| s.failures == 1, Duration::from_secs(5)).await;
    let took = started.elapsed();
    println!("BFD 3 x 50 ms: silence detected after {took:?}");
    assert_eq!(st.state(), Some(State::Down));
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn a_packet_below_ttl_255_is_not_taken_on_a_single_hop_session() {
    // A session whose peer never answers with TTL 255 never comes up: send from a plain
    // socket with TTL 64 to the runtime's single-hop port.
    let pa = free_port();
    let a = Bfd::spawn(RuntimeConfig {
        single_hop_port: pa,
        multihop_port: free_port(),
    });
    let (_ra, mut sa) = a.register(
        SessionKey {
            peer: ip(32),
            multihop: false,
        },
        params(ip(31), free_port(), 50),
    );
    let s = std::net::UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 32), 0)).expect("bind");
    s.set_ttl(64).expect("ttl");
    let down = edgelb_bgp::bfd::ControlPacket {
        diag: edgelb_bgp::bfd::Diag::None,
        state: State::Down,
        poll: false,
        fin: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discr: 77,
        your_discr: 0,
        desired_min_tx: 1_000_000,
        required_min_rx: 50_000,
        required_min_echo_rx: 0,
        auth: None,
    };
    for _ in 0..3 {
        s.send_to(&down.to_vec(), (Ipv4Addr::new(127, 0, 0, 1), pa))
            .expect("send");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sa.borrow_and_update().session.map(|x| x.remote_discr),
        Some(0)
    );
    // The same packet with TTL 255 is taken: the session goes to Init.
    s.set_ttl(255).expect("ttl");
    s.send_to(&down.to_vec(), (Ipv4Addr::new(127, 0, 0, 1), pa))
        .expect("send");
    wait_for(
        &mut sa,
        |s| s.state() == Some(State::Init),
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn multihop_sessions_come_up_on_their_port_and_check_the_minimum_ttl() {
    let (pa, pb) = (free_port(), free_port());
    let a = Bfd::spawn(RuntimeConfig {
        single_hop_port: free_port(),
        multihop_port: pa,
    });
    let b = Bfd::spawn(RuntimeConfig {
        single_hop_port: free_port(),
        multihop_port: pb,
    });
    let key = |peer| SessionKey {
        peer,
        multihop: true,
    };
    let (_ra, mut sa) = a.register(key(ip(42)), params(ip(41), pb, 50));
    let (_rb, mut sb) = b.register(key(ip(41)), params(ip(42), pa, 50));
    let up = |s: &BfdStatus| s.state() == Some(State::Up);
    wait_for(&mut sa, up, Duration::from_secs(10)).await;
    wait_for(&mut sb, up, Duration::from_secs(10)).await;

    // RFC 5883: below the configured minimum TTL (254 here) a packet is not taken; at it,
    // it is (a single-hop session would want 255).
    let pc = free_port();
    let c = Bfd::spawn(RuntimeConfig {
        single_hop_port: free_port(),
        multihop_port: pc,
    });
    let (_rc, mut sc) = c.register(key(ip(44)), params(ip(43), free_port(), 50));
    let s = std::net::UdpSocket::bind((Ipv4Addr::new(127, 0, 0, 44), 0)).expect("bind");
    let down = edgelb_bgp::bfd::ControlPacket {
        diag: edgelb_bgp::bfd::Diag::None,
        state: State::Down,
        poll: false,
        fin: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discr: 78,
        your_discr: 0,
        desired_min_tx: 1_000_000,
        required_min_rx: 50_000,
        required_min_echo_rx: 0,
        auth: None,
    };
    s.set_ttl(253).expect("ttl");
    for _ in 0..3 {
        s.send_to(&down.to_vec(), (Ipv4Addr::new(127, 0, 0, 1), pc))
            .expect("send");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sc.borrow_and_update().session.map(|x| x.remote_discr),
        Some(0)
    );
    s.set_ttl(254).expect("ttl");
    s.send_to(&down.to_vec(), (Ipv4Addr::new(127, 0, 0, 1), pc))
        .expect("send");
    wait_for(
        &mut sc,
        |s| s.state() == Some(State::Init),
        Duration::from_secs(5),
    )
    .await;
}

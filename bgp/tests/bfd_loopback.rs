//! Two BFD runtimes talking over loopback (distinct ports, one namespace): the sessions
//! come up, agree on timers, and one side notices the other's silence within the
//! detection time. Timing bounds are generous: the machine may be loaded.
mod support;

use edgelb_bgp::bfd::{BfdStatus, SessionKey, State};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use support::bfd::{down_packet, free_port, ip, pair, params, runtime, wait_for, wait_up_at};

const UP: Duration = Duration::from_secs(10);

#[tokio::test]
async fn two_runtimes_come_up_and_detect_silence_within_the_detection_time() {
    let (mut a, mut b) = pair(11, 12, false, 50);
    // The Poll Sequence to the fast timers ends; detection = 3 × 50 ms.
    wait_up_at(&mut a.status, 50, UP).await;
    wait_up_at(&mut b.status, 50, UP).await;
    assert_eq!(a.status.borrow().failures, 0);

    // B's client goes away: removing a session says AdminDown, which is not a failure
    // (RFC 5882 §3.2).
    drop(b.registration);
    drop(b.status);
    let st = wait_for(
        &mut a.status,
        |s| s.state() == Some(State::Down),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(st.failures, 0, "AdminDown is not a failure: {st:?}");
    assert!(st.last_change.is_some_and(|c| c.peer_admin_down));
}

#[tokio::test]
async fn a_silent_peer_is_a_failure_detected_in_about_the_detection_time() {
    let (mut a, mut b) = pair(21, 22, false, 50);
    wait_up_at(&mut a.status, 50, UP).await;
    wait_up_at(&mut b.status, 50, UP).await;
    // Dropping B's runtime aborts its task: silence (the registration's AdminDown goes
    // nowhere).
    std::mem::forget(b.registration);
    drop(b.bfd);
    let started = Instant::now();
    let st = wait_for(&mut a.status, |s| s.failures == 1, Duration::from_secs(5)).await;
    let took = started.elapsed();
    println!("BFD 3 x 50 ms: silence detected after {took:?}");
    assert_eq!(st.state(), Some(State::Down));
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// Sends a Down packet from 127.0.0.`from` to the runtime's `port` three times with TTL
/// `below` (not taken: the session learns no remote discriminator), then once with `at`
/// (taken: the session goes to Init).
async fn ttl_check(multihop: bool, from: u8, below: u32, at: u32) {
    let (bfd, port) = runtime(multihop);
    let key = SessionKey {
        peer: ip(from),
        multihop,
    };
    let (_reg, mut st) = bfd.register(key, params(ip(from - 1), free_port(), 50));
    let s = std::net::UdpSocket::bind((Ipv4Addr::new(127, 0, 0, from), 0)).expect("bind");
    let down = down_packet(77).to_vec();
    s.set_ttl(below).expect("ttl");
    for _ in 0..3 {
        s.send_to(&down, (Ipv4Addr::LOCALHOST, port)).expect("send");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        st.borrow_and_update().session.map(|x| x.remote_discr),
        Some(0),
        "a packet with TTL {below} was taken"
    );
    s.set_ttl(at).expect("ttl");
    s.send_to(&down, (Ipv4Addr::LOCALHOST, port)).expect("send");
    wait_for(
        &mut st,
        |s: &BfdStatus| s.state() == Some(State::Init),
        Duration::from_secs(5),
    )
    .await;
}

#[tokio::test]
async fn a_packet_below_ttl_255_is_not_taken_on_a_single_hop_session() {
    // A session whose peer never answers with TTL 255 never comes up (RFC 5881 §5).
    ttl_check(false, 32, 64, 255).await;
}

#[tokio::test]
async fn multihop_sessions_come_up_on_their_port_and_check_the_minimum_ttl() {
    let (mut a, mut b) = pair(41, 42, true, 50);
    wait_for(&mut a.status, support::bfd::is_up, UP).await;
    wait_for(&mut b.status, support::bfd::is_up, UP).await;
    // RFC 5883: below the configured minimum TTL (254 here) a packet is not taken; at it,
    // it is (a single-hop session would want 255).
    ttl_check(true, 44, 253, 254).await;
}

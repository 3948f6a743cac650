//! BFD runtimes over loopback: free ports, session parameters, a connected pair of
//! runtimes, status waits with a deadline and a hand-made Control packet.
#![allow(dead_code)]
use edgelb_bgp::bfd::{
    Bfd, BfdStatus, ControlPacket, Diag, Registration, RuntimeConfig, SessionConfig, SessionKey,
    SessionParams, State,
};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use tokio::sync::watch;

/// 127.0.0.`last`.
pub fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// A UDP port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A runtime on free ports; returns it with the port of `multihop`'s kind (where its peer
/// must send).
pub fn runtime(multihop: bool) -> (Bfd, u16) {
    let (single, multi) = (free_port(), free_port());
    let bfd = Bfd::spawn(RuntimeConfig {
        single_hop_port: single,
        multihop_port: multi,
    });
    (bfd, if multihop { multi } else { single })
}

/// `ms` both ways, multiplier 3, from `local`, to the peer's `port`.
pub fn params(local: IpAddr, port: u16, ms: u64) -> SessionParams {
    SessionParams {
        timers: SessionConfig {
            desired_min_tx: Duration::from_millis(ms),
            required_min_rx: Duration::from_millis(ms),
            detect_mult: 3,
            passive: false,
            echo: None,
        },
        local: Some(local),
        minimum_ttl: 254,
        peer_port: Some(port),
    }
}

/// One side of a [`pair`].
pub struct Side {
    pub bfd: Bfd,
    pub registration: Registration,
    pub status: watch::Receiver<BfdStatus>,
}

/// Two runtimes with one session to each other: A on 127.0.0.`a`, B on 127.0.0.`b`, `ms`
/// both ways.
pub fn pair(a: u8, b: u8, multihop: bool, ms: u64) -> (Side, Side) {
    let (ra, pa) = runtime(multihop);
    let (rb, pb) = runtime(multihop);
    let key = |peer| SessionKey { peer, multihop };
    let (reg_a, sa) = ra.register(key(ip(b)), params(ip(a), pb, ms));
    let (reg_b, sb) = rb.register(key(ip(a)), params(ip(b), pa, ms));
    (
        Side {
            bfd: ra,
            registration: reg_a,
            status: sa,
        },
        Side {
            bfd: rb,
            registration: reg_b,
            status: sb,
        },
    )
}

pub fn is_up(s: &BfdStatus) -> bool {
    s.state() == Some(State::Up)
}

/// Waits until `what` holds; panics with the last status after `limit`.
pub async fn wait_for(
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

/// Waits until the session is Up with the detection time of `ms` × 3 (the Poll Sequence to
/// the configured timers has ended).
pub async fn wait_up_at(rx: &mut watch::Receiver<BfdStatus>, ms: u64, limit: Duration) {
    let detect = Some(Duration::from_millis(3 * ms));
    wait_for(
        rx,
        |s| is_up(s) && s.session.and_then(|x| x.detection_time) == detect,
        limit,
    )
    .await;
}

/// A Down Control packet from discriminator `my_discr` (a peer starting a session).
pub fn down_packet(my_discr: u32) -> ControlPacket {
    ControlPacket {
        diag: Diag::None,
        state: State::Down,
        poll: false,
        fin: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_discr,
        your_discr: 0,
        desired_min_tx: 1_000_000,
        required_min_rx: 50_000,
        required_min_echo_rx: 0,
        auth: None,
    }
}

//! Real `Speaker`s over loopback TCP: construction, peer configs with a fast retry, status
//! polling with a deadline, and raw connections from a chosen source address.
#![allow(dead_code, clippy::unwrap_used)]
use edgelb_bgp::{PeerConfig, PeerStatus, Speaker, SpeakerConfig};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

/// How long any wait for a peer status may take: bounded, generous for a loaded machine.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A speaker with router id 192.0.2.`id`, listening on `listen` (`"127.0.0.1:0"`) or not.
pub fn speaker(id: u8, listen: Option<&str>) -> Speaker {
    Speaker::new(SpeakerConfig {
        router_id: Ipv4Addr::new(192, 0, 2, id),
        listen: listen.map(|l| l.parse().unwrap()),
    })
    .unwrap()
}

/// The port a listening speaker got.
pub fn port(s: &Speaker) -> u16 {
    s.local_addr().unwrap().port()
}

/// A peer that waits for `peer` to connect.
pub fn passive(peer: &str, local_as: u32, remote_as: u32) -> PeerConfig {
    let mut p = PeerConfig::new(ip(peer), local_as, remote_as);
    p.passive = true;
    p
}

/// A peer that connects to `peer`:`port` (from `source` when given), retrying every 200 ms
/// up to 1 s so tests do not wait for the production backoff.
pub fn active(
    peer: &str,
    port: u16,
    source: Option<&str>,
    local_as: u32,
    remote_as: u32,
) -> PeerConfig {
    let mut p = PeerConfig::new(ip(peer), local_as, remote_as);
    p.port = port;
    p.source_address = source.map(ip);
    p.connect_retry = Duration::from_millis(200);
    p.connect_retry_max = Duration::from_secs(1);
    p
}

pub fn status(s: &Speaker, peer: IpAddr) -> PeerStatus {
    s.peers()
        .into_iter()
        .find(|p| p.address == peer)
        .expect("peer configured")
}

/// Polls `peer`'s status every 20 ms until `f` holds; panics naming `what` after [`WAIT`].
pub async fn wait_for(
    what: &str,
    s: &Speaker,
    peer: IpAddr,
    f: impl Fn(&PeerStatus) -> bool,
) -> PeerStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let st = status(s, peer);
        if f(&st) {
            return st;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw TCP connection to `to` from address `from`.
pub async fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let sock = if to.is_ipv4() {
        TcpSocket::new_v4().unwrap()
    } else {
        TcpSocket::new_v6().unwrap()
    };
    sock.bind(SocketAddr::new(ip(from), 0)).unwrap();
    sock.connect(to).await.unwrap()
}

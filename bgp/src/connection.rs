//! TCP transport for sessions: the listening socket, outgoing connections, and the socket
//! options each peer's configuration asks for (RFC 2385 MD5, TTL / RFC 5082 GTSM,
//! `TCP_USER_TIMEOUT` so a dead connection cannot outlive the hold time).
use crate::config::PeerConfig;
use crate::socket_options;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Why the transport could not be set up; names the peer or address and the step.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("peer {peer}: {step}: {source}")]
    Peer {
        peer: IpAddr,
        step: &'static str,
        source: io::Error,
    },
}

/// The peer address in the form used to dispatch connections: IPv4 for v4-mapped IPv6.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

/// A listening socket; `[::]` listens for IPv4 as well (dual stack).
pub fn listen(addr: SocketAddr) -> Result<TcpListener, TransportError> {
    let err = |source| TransportError::Listen { addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
    socket.set_reuse_address(true).map_err(err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(false).map_err(err)?;
    }
    socket.set_nonblocking(true).map_err(err)?;
    socket.bind(&addr.into()).map_err(err)?;
    socket.listen(128).map_err(err)?;
    TcpListener::from_std(socket.into()).map_err(err)
}

/// Sets (or removes) the MD5 key for `peer` on the listener, so its SYNs are accepted.
pub fn set_listener_md5(
    listener: &TcpListener,
    peer: &PeerConfig,
    remove: bool,
) -> Result<(), TransportError> {
    let sock = SockRef::from(listener);
    let is_v6 = listener.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    let key = if remove {
        None
    } else {
        peer.password.as_ref().map(|p| p.expose().as_bytes())
    };
    if key.is_none() && !remove {
        return Ok(());
    }
    socket_options::set_md5_key(&sock, is_v6, peer.address, key).map_err(|source| {
        TransportError::Peer {
            peer: peer.address,
            step: "set TCP MD5 key on the listener",
            source,
        }
    })
}

/// TTL, GTSM, user timeout and no-delay: everything but MD5, on an open socket.
fn apply_options(
    sock: &Socket,
    is_v6: bool,
    peer: &PeerConfig,
    user_timeout: Duration,
) -> Result<(), TransportError> {
    let err = |step| {
        move |source| TransportError::Peer {
            peer: peer.address,
            step,
            source,
        }
    };
    socket_options::set_ttl(sock, is_v6, peer.outgoing_ttl()).map_err(err("set TTL"))?;
    if let Some(min) = peer.minimum_incoming_ttl() {
        socket_options::set_min_ttl(sock, is_v6, min).map_err(err("set minimum TTL (GTSM)"))?;
    }
    socket_options::set_user_timeout(sock, user_timeout).map_err(err("set TCP_USER_TIMEOUT"))?;
    sock.set_tcp_nodelay(true).map_err(err("set TCP_NODELAY"))?;
    Ok(())
}

/// The user timeout for a peer: its hold time (or 90 s with hold time 0).
pub fn user_timeout(peer: &PeerConfig) -> Duration {
    Duration::from_secs(if peer.hold_time == 0 {
        90
    } else {
        u64::from(peer.hold_time)
    })
}

/// Connects to `peer`: a fresh socket with the source address bound and MD5 set before
/// `connect()` (RFC 2385 signs the SYN already).
pub async fn connect(peer: PeerConfig) -> Result<TcpStream, TransportError> {
    let remote = SocketAddr::new(peer.address, peer.port);
    let err = |step| {
        move |source| TransportError::Peer {
            peer: peer.address,
            step,
            source,
        }
    };
    let is_v6 = remote.is_ipv6();
    let sock = Socket::new(
        Domain::for_address(remote),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .map_err(err("socket"))?;
    sock.set_nonblocking(true)
        .map_err(err("set non-blocking"))?;
    if let Some(pw) = &peer.password {
        socket_options::set_md5_key(&sock, is_v6, peer.address, Some(pw.expose().as_bytes()))
            .map_err(err("set TCP MD5 key"))?;
    }
    apply_options(&sock, is_v6, &peer, user_timeout(&peer))?;
    if let Some(src) = peer.source_address {
        sock.bind(&SocketAddr::new(src, 0).into())
            .map_err(err("bind source address"))?;
    }
    let std_stream: std::net::TcpStream = sock.into();
    let socket = TcpSocket::from_std_stream(std_stream);
    socket.connect(remote).await.map_err(err("connect"))
}

/// Applies the peer's options to a connection it made to us.
pub fn prepare_accepted(stream: &TcpStream, peer: &PeerConfig) -> Result<(), TransportError> {
    let sock = SockRef::from(stream);
    let is_v6 = stream.local_addr().map(|a| a.is_ipv6()).unwrap_or(false);
    apply_options(&sock, is_v6, peer, user_timeout(peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_addresses_dispatch_as_ipv4() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(canonical(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    #[tokio::test]
    async fn connect_with_md5_to_a_listener_with_the_same_key() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut peer = PeerConfig::new("127.0.0.1".parse().unwrap(), 65001, 65001);
        peer.port = port;
        peer.password = Some(crate::config::Secret::new("s3cret"));
        set_listener_md5(&listener, &peer, false).unwrap();
        let (client, server) = tokio::join!(connect(peer.clone()), listener.accept());
        let client = client.unwrap();
        let (server, from) = server.unwrap();
        assert_eq!(canonical(from.ip()), peer.address);
        prepare_accepted(&server, &peer).unwrap();
        drop(client);
    }

    #[tokio::test]
    async fn md5_mismatch_never_connects() {
        let listener = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut peer = PeerConfig::new("127.0.0.1".parse().unwrap(), 65001, 65001);
        peer.port = port;
        peer.password = Some(crate::config::Secret::new("right"));
        set_listener_md5(&listener, &peer, false).unwrap();
        peer.password = Some(crate::config::Secret::new("wrong"));
        let attempt = tokio::time::timeout(Duration::from_millis(1500), connect(peer)).await;
        // The SYN with a wrong signature is dropped by the listener's kernel: no connection.
        assert!(
            !matches!(attempt, Ok(Ok(_))),
            "connected with a wrong MD5 key"
        );
    }
}

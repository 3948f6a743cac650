//! BFD's UDP sockets (RFC 5881 §4, RFC 5883 §5): receivers on the well-known ports that
//! report each packet's TTL (hop limit), and per-session senders bound to a source port in
//! 49152–65535 sending with TTL 255.
use nix::sys::socket::{self, sockopt, ControlMessageOwned, MsgFlags, SockaddrStorage};
use socket2::{Domain, Protocol, Socket, Type};
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Single-hop Control packets (RFC 5881 §4).
pub const SINGLE_HOP_PORT: u16 = 3784;
/// Multihop Control packets (RFC 5883 §5).
pub const MULTIHOP_PORT: u16 = 4784;
/// The source port range of RFC 5881 §4 (and RFC 5883).
pub const SOURCE_PORTS: std::ops::RangeInclusive<u16> = 49152..=65535;
/// TTL / hop limit of every packet we send (RFC 5881 §5).
pub const SEND_TTL: u8 = 255;

/// One received datagram.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub data: Vec<u8>,
    pub from: SocketAddr,
    /// TTL (IPv4) or hop limit (IPv6); 0 when the kernel did not say.
    pub ttl: u8,
}

/// A receiving socket on `port` for one address family, reporting TTLs.
pub fn receiver(v6: bool, port: u16) -> io::Result<UdpSocket> {
    let (domain, addr) = if v6 {
        (
            Domain::IPV6,
            SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port),
        )
    } else {
        (
            Domain::IPV4,
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        )
    };
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if v6 {
        s.set_only_v6(true)?;
        socket::setsockopt(&s, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
    } else {
        socket::setsockopt(&s, sockopt::Ipv4RecvTtl, &true).map_err(io::Error::from)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// A sending socket for one session: bound to `local` (or the unspecified address of the
/// peer's family) and a source port from [`SOURCE_PORTS`], tried from `start` on.
pub fn sender(peer: IpAddr, local: Option<IpAddr>, start: u16) -> io::Result<UdpSocket> {
    let v6 = peer.is_ipv6();
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let ip = local.unwrap_or(if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if v6 {
        s.set_only_v6(true)?;
    }
    crate::socket_options::set_ttl(&s, v6, SEND_TTL)?;
    s.set_nonblocking(true)?;
    let span = u32::from(SOURCE_PORTS.end() - SOURCE_PORTS.start()) + 1;
    let mut last = io::Error::new(io::ErrorKind::AddrInUse, "no free BFD source port");
    for i in 0..span.min(512) {
        let offset = (u32::from(start) + i * 7919) % span;
        let port = SOURCE_PORTS.start() + offset as u16;
        match s.bind(&SocketAddr::new(ip, port).into()) {
            Ok(()) => return UdpSocket::from_std(s.into()),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// A packet socket on one interface for BFD Echo ([`super::echo`]): sends whole Ethernet
/// frames and receives only IPv4 UDP datagrams to port 3785 (a classic BPF filter, so the
/// kernel does not copy every other packet of the interface to us). Received frames are
/// read by a thread of its own ([`EchoLink::spawn_reader`]): blocking reads with a timeout
/// need no `unsafe` registration of a raw packet socket with the async reactor.
pub struct EchoLink {
    socket: std::sync::Arc<Socket>,
    to: nix::sys::socket::LinkAddr,
}

/// Stops an [`EchoLink`]'s reader thread when dropped (within its read timeout).
pub struct EchoReader(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for EchoReader {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `udp dst port 3785` over Ethernet/IPv4, first fragments only (offsets from the
/// Ethernet header of a `SOCK_RAW` packet socket).
fn echo_filter() -> [socket2::SockFilter; 9] {
    use socket2::SockFilter as F;
    const LDB_ABS: u16 = 0x30;
    const LDH_ABS: u16 = 0x28;
    const LDH_IND: u16 = 0x48;
    const LDXB_MSH: u16 = 0xb1;
    const JEQ: u16 = 0x15;
    const JSET: u16 = 0x45;
    const RET: u16 = 0x06;
    [
        F::new(LDB_ABS, 0, 0, 14 + 9), // IP protocol
        F::new(JEQ, 0, 6, 17),         // UDP, else drop
        F::new(LDH_ABS, 0, 0, 14 + 6), // flags and fragment offset
        F::new(JSET, 4, 0, 0x1fff),    // a later fragment: drop
        F::new(LDXB_MSH, 0, 0, 14),    // X = IP header length
        F::new(LDH_IND, 0, 0, 14 + 2), // UDP destination port
        F::new(JEQ, 0, 1, u32::from(super::echo::ECHO_PORT)),
        F::new(RET, 0, 0, 256), // take (Echo frames are short)
        F::new(RET, 0, 0, 0),   // drop
    ]
}

impl EchoLink {
    /// Opens the socket on interface `ifindex` (needs CAP_NET_RAW).
    pub fn open(ifindex: usize) -> io::Result<EchoLink> {
        use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType};
        let to = super::echo::link_addr(ifindex).map_err(io::Error::other)?;
        let fd = socket::socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthIp,
        )
        .map_err(io::Error::from)?;
        let s = Socket::from(fd);
        s.attach_filter(&echo_filter())?;
        socket::bind(s.as_raw_fd(), &to).map_err(io::Error::from)?;
        s.set_read_timeout(Some(std::time::Duration::from_millis(200)))?;
        Ok(EchoLink {
            socket: std::sync::Arc::new(s),
            to,
        })
    }

    /// Sends one frame now (never waits: a lost Echo packet is what detection is for).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        socket::sendto(
            self.socket.as_raw_fd(),
            frame,
            &self.to,
            MsgFlags::MSG_DONTWAIT,
        )
        .map(|_| ())
        .map_err(io::Error::from)
    }

    /// Reads frames on a thread until the returned guard is dropped or `to` is closed.
    pub fn spawn_reader(&self, to: tokio::sync::mpsc::Sender<Vec<u8>>) -> io::Result<EchoReader> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sock, flag) = (self.socket.clone(), stop.clone());
        std::thread::Builder::new()
            .name("bfd-echo".into())
            .spawn(move || {
                let mut buf = [0u8; 512];
                while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                    match socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                        Ok(n) => {
                            let frame = buf.get(..n).map(<[u8]>::to_vec).unwrap_or_default();
                            if to.blocking_send(frame).is_err() {
                                return;
                            }
                        }
                        // The read timeout: look at the stop flag again.
                        Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                        Err(e) => {
                            tracing::debug!(error = %e, "BFD Echo receive failed");
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                    }
                }
            })?;
        Ok(EchoReader(stop))
    }
}

/// Waits for and reads one datagram with its TTL.
pub async fn recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    loop {
        socket.readable().await?;
        match socket.try_io(Interest::READABLE, || recv_now(socket, buf)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

fn recv_now(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Datagram> {
    let mut cmsg = nix::cmsg_space!(libc::c_int);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = socket::recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let mut ttl = 0u8;
    for c in msg.cmsgs().map_err(io::Error::from)? {
        match c {
            ControlMessageOwned::Ipv4Ttl(t) | ControlMessageOwned::Ipv6HopLimit(t) => {
                ttl = u8::try_from(t).unwrap_or(0);
            }
            _ => {}
        }
    }
    let len = msg.bytes;
    let from = msg
        .address
        .and_then(|a| {
            a.as_sockaddr_in()
                .map(|v4| SocketAddr::from((v4.ip(), v4.port())))
                .or_else(|| {
                    a.as_sockaddr_in6()
                        .map(|v6| SocketAddr::from((v6.ip(), v6.port())))
                })
        })
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "datagram without a source"))?;
    let data = iov[0].get(..len).map(<[u8]>::to_vec).unwrap_or_default();
    Ok(Datagram { data, from, ttl })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn receiver_reports_the_ttl_and_sender_uses_255_from_a_high_port() {
        let rx = receiver(false, 0).expect("receiver");
        let port = rx.local_addr().expect("addr").port();
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let tx = sender(lo, Some(lo), 50_000).expect("sender");
        let from = tx.local_addr().expect("addr");
        assert!(SOURCE_PORTS.contains(&from.port()));
        tx.send_to(b"hello", SocketAddr::new(lo, port))
            .await
            .expect("send");
        let mut buf = [0u8; 64];
        let d = recv(&rx, &mut buf).await.expect("recv");
        assert_eq!(d.data, b"hello");
        assert_eq!(d.from, from);
        assert_eq!(d.ttl, 255);
    }

    #[tokio::test]
    async fn senders_for_many_sessions_get_distinct_source_ports() {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let a = sender(lo, Some(lo), 1).expect("a");
        let b = sender(lo, Some(lo), 1).expect("b");
        assert_ne!(a.local_addr().ok(), b.local_addr().ok());
    }
}

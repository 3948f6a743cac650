//! The thin socket layer: one `AF_PACKET` socket per interface under tokio's `AsyncFd`, and
//! the IPv6 multicast memberships that let solicitations for owned addresses in.
//!
//! `pnet`'s datalink channel blocks on receive and cannot carry a kernel filter, so the
//! socket is opened here (socket2) and only frames go through `pnet_packet`. Needs only
//! `CAP_NET_RAW`.
use crate::{bpf, sys};
use nix::sys::socket::LinkAddr;
use socket2::{Domain, Protocol, Socket, Type};
use std::collections::BTreeMap;
use std::io;
use std::net::Ipv6Addr;
use std::os::fd::{AsFd, AsRawFd};
use tokio::io::unix::AsyncFd;

const ETH_P_ALL: u16 = 0x0003;
/// Room for a burst of questions (about 1 500 minimum-size frames at ~700 bytes of kernel
/// accounting each). Beyond `rmem_max` only with `CAP_NET_ADMIN`; without it the kernel's
/// limit applies, which is still correct, only less tolerant of bursts.
const RECEIVE_BUFFER: usize = 1 << 20;

/// A packet socket bound to one interface that sees only what [`bpf::PROGRAM`] accepts.
#[derive(Debug)]
pub struct PacketSocket {
    fd: AsyncFd<Socket>,
}

impl PacketSocket {
    /// Opens, filters, then binds: the filter is in place before the first frame arrives.
    pub fn open(ifindex: u32) -> io::Result<PacketSocket> {
        let socket = Socket::new(
            Domain::PACKET,
            Type::RAW.nonblocking().cloexec(),
            Some(Protocol::from(0)),
        )?;
        socket.attach_filter(&bpf::socket_filter())?;
        if nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::RcvBufForce,
            &RECEIVE_BUFFER,
        )
        .is_err()
        {
            socket.set_recv_buffer_size(RECEIVE_BUFFER)?;
        }
        sys::bind_packet(socket.as_fd(), ifindex, ETH_P_ALL)?;
        Ok(PacketSocket {
            fd: sys::register(socket)?,
        })
    }

    /// Receives one frame; returns its length and packet type (`PACKET_HOST`, ...).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, u8)> {
        loop {
            let mut guard = self.fd.readable().await?;
            let res = guard.try_io(|fd| {
                nix::sys::socket::recvfrom::<LinkAddr>(fd.get_ref().as_raw_fd(), buf)
                    .map_err(io::Error::from)
            });
            if let Ok(res) = res {
                let (len, addr) = res?;
                return Ok((len, addr.map(|a| a.pkttype()).unwrap_or(0)));
            }
        }
    }

    /// Receives one frame if one is queued, without waiting.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<(usize, u8)>> {
        match nix::sys::socket::recvfrom::<LinkAddr>(self.fd.get_ref().as_raw_fd(), buf) {
            Ok((len, addr)) => Ok(Some((len, addr.map(|a| a.pkttype()).unwrap_or(0)))),
            Err(nix::errno::Errno::EAGAIN) => Ok(None),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Frames the kernel dropped since the last call because the receive queue was full.
    pub fn take_drops(&self) -> io::Result<u32> {
        sys::packet_drops(self.fd.get_ref().as_fd())
    }

    /// Sends one whole Ethernet frame out of the bound interface.
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            if let Ok(res) = guard.try_io(|fd| fd.get_ref().send(frame)) {
                let sent = res?;
                if sent != frame.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("sent {sent} of {} bytes", frame.len()),
                    ));
                }
                return Ok(());
            }
        }
    }
}

/// IPv6 multicast memberships on one interface (`IPV6_JOIN_GROUP`). The kernel then
/// accepts frames to the group's MAC and reports the membership by MLD, so snooping
/// switches forward solicitations to us. It works without the address being configured.
#[derive(Debug)]
pub struct Groups {
    ifindex: u32,
    /// Each socket holds as many groups as the kernel lets one socket hold (`optmem_max`).
    sockets: Vec<Socket>,
    joined: BTreeMap<Ipv6Addr, usize>,
}

impl Groups {
    pub fn new(ifindex: u32) -> Groups {
        Groups {
            ifindex,
            sockets: Vec::new(),
            joined: BTreeMap::new(),
        }
    }

    fn new_socket() -> io::Result<Socket> {
        Socket::new(Domain::IPV6, Type::DGRAM.cloexec(), Some(Protocol::UDP))
    }

    /// Joins `group` unless already joined.
    pub fn join(&mut self, group: Ipv6Addr) -> io::Result<()> {
        if self.joined.contains_key(&group) {
            return Ok(());
        }
        if self.sockets.is_empty() {
            self.sockets.push(Self::new_socket()?);
        }
        let last = self.sockets.len() - 1;
        let result = self.sockets[last].join_multicast_v6(&group, self.ifindex);
        let index = match result {
            Ok(()) => last,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS) | Some(libc::ENOMEM)) => {
                let s = Self::new_socket()?;
                s.join_multicast_v6(&group, self.ifindex)?;
                self.sockets.push(s);
                self.sockets.len() - 1
            }
            Err(e) => return Err(e),
        };
        self.joined.insert(group, index);
        Ok(())
    }

    /// Leaves `group` if joined.
    pub fn leave(&mut self, group: &Ipv6Addr) -> io::Result<()> {
        match self.joined.remove(group) {
            Some(i) => match self.sockets.get(i) {
                Some(s) => s.leave_multicast_v6(group, self.ifindex),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// The groups joined now.
    pub fn joined(&self) -> impl Iterator<Item = &Ipv6Addr> {
        self.joined.keys()
    }
}

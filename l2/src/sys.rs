//! The calls no safe wrapper offers: binding a packet socket to an interface, reading its
//! drop counter, and registering a socket with tokio's reactor.
//!
//! Neither socket2 nor nix 0.31 can build a `sockaddr_ll` safely, so this module fills one
//! in and calls `bind(2)` itself, turning `-1` into `io::Error::last_os_error()`. Tokio 1.54
//! made `AsyncFd::register` unsafe (the caller promises the descriptor stays the same).
#![allow(unsafe_code)]

use socket2::Socket;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use tokio::io::unix::AsyncFd;

/// Binds a packet socket to `ifindex`, receiving frames of `protocol` (host order, e.g.
/// `ETH_P_ALL`). Until this call the socket (opened with protocol 0) receives nothing, so
/// no frame from another interface slips in before the bind (packet(7)).
pub fn bind_packet(fd: BorrowedFd<'_>, ifindex: u32, protocol: u16) -> io::Result<()> {
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::sa_family_t;
    addr.sll_protocol = protocol.to_be();
    addr.sll_ifindex = ifindex;
    let len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_ll that lives across the call, `len` is its size,
    // and `fd` is an open descriptor borrowed for the call.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast::<libc::sockaddr>(),
            len,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Hands `socket` to tokio's reactor.
pub fn register(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its descriptor and always returns that same one from
    // `as_raw_fd`; the `AsyncFd` owns the `Socket`, so the descriptor stays open and refers
    // to the same socket until the `AsyncFd` is dropped.
    let registered = unsafe { AsyncFd::register(socket) }?;
    Ok(registered)
}

/// Frames the kernel dropped for this packet socket (its receive queue was full) since the
/// last call: `PACKET_STATISTICS` (packet(7)) returns and resets the counters.
pub fn packet_drops(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `stats` is a valid tpacket_stats and `len` its size, both live across the
    // call; the kernel writes at most `len` bytes; `fd` is open for the call.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&mut stats as *mut libc::tpacket_stats).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(stats.tp_drops)
}

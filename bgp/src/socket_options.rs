//! Socket options for BGP transport security and liveness, Linux only.
//!
//! This is the one module allowed `unsafe`: `TCP_MD5SIG`, `IP_MINTTL` and
//! `IPV6_MINHOPCOUNT` are wrapped by neither `nix` nor `socket2`, so they go through
//! `libc::setsockopt`. Every call checks the return value and turns `-1` into
//! [`io::Error::last_os_error`] (a silently ignored MD5 failure would leave a session that
//! never comes up, with nothing in the logs). What `socket2` does safely (TTL, hop limit,
//! `TCP_USER_TIMEOUT`) goes through `socket2`.
#![allow(unsafe_code)]

use socket2::Socket;
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Largest TCP MD5 key the kernel takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MD5_MAX_KEY_LEN: usize = 80;

/// `struct __kernel_sockaddr_storage`: 128 octets, pointer aligned.
#[repr(C, align(8))]
struct SockaddrStorage([u8; 128]);

/// `struct tcp_md5sig` from `<linux/tcp.h>` (the `libc` crate does not define it).
#[repr(C)]
struct TcpMd5Sig {
    tcpm_addr: SockaddrStorage,
    tcpm_flags: u8,
    tcpm_prefixlen: u8,
    tcpm_keylen: u16,
    tcpm_ifindex: libc::c_int,
    tcpm_key: [u8; MD5_MAX_KEY_LEN],
}

/// Writes `addr` as a `sockaddr_in` (on an IPv4 socket) or `sockaddr_in6` (on an IPv6
/// socket; IPv4 addresses become v4-mapped, which the kernel files under AF_INET).
fn sockaddr_for(addr: IpAddr, socket_is_v6: bool) -> SockaddrStorage {
    let mut s = [0u8; 128];
    match (addr, socket_is_v6) {
        (IpAddr::V4(v4), false) => {
            let family = libc::AF_INET as u16;
            s[0..2].copy_from_slice(&family.to_ne_bytes());
            // sin_port stays 0; sin_addr at offset 4.
            s[4..8].copy_from_slice(&v4.octets());
        }
        (addr, _) => {
            let v6 = match addr {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            let family = libc::AF_INET6 as u16;
            s[0..2].copy_from_slice(&family.to_ne_bytes());
            // sin6_port 0, sin6_flowinfo 0; sin6_addr at offset 8.
            s[8..24].copy_from_slice(&v6.octets());
        }
    }
    SockaddrStorage(s)
}

fn setsockopt<T>(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<T>())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "option value too large"))?;
    // SAFETY: `value` points to a live, initialised `T` of `len` bytes for the duration of
    // the call; the kernel only reads it. The fd is owned by `socket` and open.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            len,
        )
    };
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Sets (or with `key == None` removes) the TCP MD5 signature key (RFC 2385) for `peer` on
/// `socket`. On a listening socket it applies to connections accepted from `peer`; on a
/// connecting socket it must be set before `connect()`.
pub fn set_md5_key(
    socket: &Socket,
    socket_is_v6: bool,
    peer: IpAddr,
    key: Option<&[u8]>,
) -> io::Result<()> {
    let key = key.unwrap_or(&[]);
    if key.len() > MD5_MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "TCP MD5 key of {} octets exceeds {MD5_MAX_KEY_LEN}",
                key.len()
            ),
        ));
    }
    let mut sig = TcpMd5Sig {
        tcpm_addr: sockaddr_for(peer, socket_is_v6),
        tcpm_flags: 0,
        tcpm_prefixlen: 0,
        tcpm_keylen: key.len() as u16,
        tcpm_ifindex: 0,
        tcpm_key: [0; MD5_MAX_KEY_LEN],
    };
    sig.tcpm_key[..key.len()].copy_from_slice(key);
    setsockopt(socket, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// TTL (IPv4) or unicast hop limit (IPv6) of outgoing packets: 1 for directly connected
/// eBGP, N for ebgp-multihop, 255 for GTSM (RFC 5082 §3).
pub fn set_ttl(socket: &Socket, socket_is_v6: bool, ttl: u8) -> io::Result<()> {
    if socket_is_v6 {
        socket.set_unicast_hops_v6(u32::from(ttl))?;
        // A dual-stack socket talking to an IPv4 peer uses the IPv4 TTL.
        match socket.set_ttl_v4(u32::from(ttl)) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(()),
            Err(e) => Err(e),
        }
    } else {
        socket.set_ttl_v4(u32::from(ttl))
    }
}

/// GTSM receive check (RFC 5082 §3): drop packets that arrive with a TTL (hop limit) below
/// `min`, using `IP_MINTTL` / `IPV6_MINHOPCOUNT`. On an IPv6 socket both are set, so a
/// v4-mapped peer is checked as well.
pub fn set_min_ttl(socket: &Socket, socket_is_v6: bool, min: u8) -> io::Result<()> {
    let value = libc::c_int::from(min);
    if socket_is_v6 {
        setsockopt(socket, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &value)?;
        match setsockopt(socket, libc::IPPROTO_IP, libc::IP_MINTTL, &value) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(()),
            Err(e) => Err(e),
        }
    } else {
        setsockopt(socket, libc::IPPROTO_IP, libc::IP_MINTTL, &value)
    }
}

/// `TCP_USER_TIMEOUT`: the kernel drops the connection when sent data stays unacknowledged
/// this long, so a dead peer cannot keep a session past its hold time.
pub fn set_user_timeout(socket: &Socket, timeout: Duration) -> io::Result<()> {
    socket.set_tcp_user_timeout(Some(timeout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, Type};

    #[test]
    fn tcp_md5sig_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
        assert_eq!(std::mem::offset_of!(TcpMd5Sig, tcpm_key), 136);
    }

    #[test]
    fn md5_key_is_accepted_on_ipv4_and_ipv6_sockets() {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        set_md5_key(&s, false, "192.0.2.1".parse().unwrap(), Some(b"secret")).unwrap();
        set_md5_key(&s, false, "192.0.2.1".parse().unwrap(), None).unwrap();
        let s = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).unwrap();
        set_md5_key(&s, true, "2001:db8::1".parse().unwrap(), Some(b"secret")).unwrap();
        set_md5_key(&s, true, "192.0.2.1".parse().unwrap(), Some(b"secret")).unwrap();
    }

    #[test]
    fn md5_key_error_is_reported_not_swallowed() {
        // An IPv6 address on an IPv4 socket is rejected by the kernel (EINVAL).
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        let long = [b'x'; MD5_MAX_KEY_LEN + 1];
        assert!(set_md5_key(&s, false, "192.0.2.1".parse().unwrap(), Some(&long)).is_err());
        assert!(set_md5_key(&s, true, "2001:db8::1".parse().unwrap(), Some(b"k")).is_err());
    }

    #[test]
    fn ttl_and_min_ttl_are_set() {
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        set_ttl(&s, false, 1).unwrap();
        assert_eq!(s.ttl_v4().unwrap(), 1);
        set_min_ttl(&s, false, 255).unwrap();
        let s6 = Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).unwrap();
        set_ttl(&s6, true, 255).unwrap();
        assert_eq!(s6.unicast_hops_v6().unwrap(), 255);
        set_min_ttl(&s6, true, 254).unwrap();
        set_user_timeout(&s6, Duration::from_secs(9)).unwrap();
        assert_eq!(s6.tcp_user_timeout().unwrap(), Some(Duration::from_secs(9)));
    }
}

//! The gossip address flag. The DaemonSet can only substitute the node's IP
//! (`$(NODE_IP)` from `status.hostIP`), and `$(NODE_IP):7946` is no socket address when that
//! IP is IPv6 (`2001:db8::10:7946` even parses as another IPv6 address). So the flag takes a
//! bare IP, with the port from `--member-port`, as well as `IP:PORT` and `[IPv6]:PORT`.

use std::net::{IpAddr, SocketAddr};

/// The member port when `--member-addr` names none.
pub const DEFAULT_MEMBER_PORT: u16 = 7946;

/// Parses `--member-addr`: `192.0.2.10`, `2001:db8::10`, `[2001:db8::10]` (port `port`), or
/// `192.0.2.10:7946`, `[2001:db8::10]:7946`.
pub fn parse_member_addr(text: &str, port: u16) -> Result<SocketAddr, String> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        if let Ok(ip) = inner.parse::<std::net::Ipv6Addr>() {
            return Ok(SocketAddr::new(IpAddr::V6(ip), port));
        }
    }
    text.parse::<SocketAddr>().map_err(|_| {
        format!(
            "{text:?} is not an IP address, IP:PORT or [IPv6]:PORT (with an IPv6 node IP pass the IP alone and --member-port)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_v6_bracketed_and_with_port() {
        let p = |t: &str| parse_member_addr(t, 7946).map(|a| a.to_string());
        assert_eq!(p("192.0.2.10").as_deref(), Ok("192.0.2.10:7946"));
        assert_eq!(p("192.0.2.10:8000").as_deref(), Ok("192.0.2.10:8000"));
        assert_eq!(p("2001:db8::10").as_deref(), Ok("[2001:db8::10]:7946"));
        assert_eq!(p("[2001:db8::10]").as_deref(), Ok("[2001:db8::10]:7946"));
        assert_eq!(
            p("[2001:db8::10]:8000").as_deref(),
            Ok("[2001:db8::10]:8000")
        );
        assert!(p("node-a:7946").is_err());
        assert!(p("192.0.2.10:99999").is_err());
    }
}

//! Configuration of the speaker and of each peer, validated before it reaches a session.
//!
//! A [`PeerConfig`] change restarts the session only when it touches the ASNs, the address,
//! the port or the password ([`PeerConfig::needs_reset`]). Everything else applies without a
//! reset: TTL and GTSM on the live socket at once, what the OPEN carries (hold time,
//! families, graceful restart, router id) and how to connect (source, passive, retry) from
//! the next connection on, the rest (description, max prefixes, import) at once.
use crate::packet::Family;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// The well-known BGP port (RFC 4271 §8.2.1).
pub const BGP_PORT: u16 = 179;

/// A password that never reaches a log: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    /// The secret itself; call only where it is handed to the kernel.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Identifies a peer inside a [`crate::Speaker`]: its address (one session per address).
pub type PeerKey = IpAddr;

/// Speaker-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpeakerConfig {
    /// BGP identifier (RFC 4271 §4.2, RFC 6286) used unless a peer overrides it.
    pub router_id: Ipv4Addr,
    /// Where to accept connections from passive and active peers; `None` accepts none
    /// (every peer must then be active). `[::]:179` accepts IPv4 and IPv6.
    pub listen: Option<SocketAddr>,
}

impl SpeakerConfig {
    /// Listens on `[::]:179` (IPv4 and IPv6) with the given BGP identifier.
    pub fn new(router_id: Ipv4Addr) -> SpeakerConfig {
        SpeakerConfig {
            router_id,
            listen: Some(SocketAddr::new(
                IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                BGP_PORT,
            )),
        }
    }
}

/// Graceful restart as restarting speaker (RFC 4724 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    /// Seconds the peer should keep our routes after the session drops (12 bits).
    pub restart_time: u16,
    /// Set the R bit: this speaker has just restarted.
    pub restarting: bool,
    /// Set the F bit for every family: forwarding state survives a restart (true for
    /// edgelb, whose data plane is the kernel and the service proxies).
    pub forwarding_preserved: bool,
    /// Set the N bit (RFC 8538 §2): with a peer that sets it too, a NOTIFICATION keeps our
    /// routes like a dropped connection does, and a stop that must flush them is sent as
    /// Cease / Hard Reset.
    pub notification: bool,
}

impl GracefulRestartConfig {
    /// A restart time with F and N set and R clear (the speaker did not just restart).
    pub fn new(restart_time: u16) -> GracefulRestartConfig {
        GracefulRestartConfig {
            restart_time,
            restarting: false,
            forwarding_preserved: true,
            notification: true,
        }
    }
}

/// One configured neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: IpAddr,
    /// TCP port of the peer, [`BGP_PORT`] by default.
    pub port: u16,
    pub local_as: u32,
    pub remote_as: u32,
    /// Overrides [`SpeakerConfig::router_id`] for this peer.
    pub router_id: Option<Ipv4Addr>,
    /// Local address to bind outgoing connections to.
    pub source_address: Option<IpAddr>,
    /// Proposed hold time in seconds: 0 or at least 3 (RFC 4271 §4.2). Default 90.
    pub hold_time: u16,
    /// Keepalive interval in seconds; a third of the negotiated hold time when `None`.
    pub keepalive: Option<u16>,
    /// How long a connection waits for the peer's OPEN before it is closed (the OpenSent
    /// hold timer, [`crate::negotiate::DEFAULT_OPEN_WAIT`]).
    pub open_wait: Duration,
    /// First ConnectRetry interval; it doubles per failed attempt up to `connect_retry_max`.
    pub connect_retry: Duration,
    pub connect_retry_max: Duration,
    /// Never connect, only accept the peer's connection.
    pub passive: bool,
    /// TCP MD5 signature key (RFC 2385).
    pub password: Option<Secret>,
    /// eBGP multihop: TTL of our packets. eBGP defaults to TTL 1 (directly connected).
    pub ebgp_multihop: Option<u8>,
    /// GTSM (RFC 5082): send with TTL 255 and require incoming TTL >= 255 - (hops - 1).
    pub gtsm: bool,
    pub graceful_restart: Option<GracefulRestartConfig>,
    /// Families to announce; negotiated with the peer's Multiprotocol capabilities.
    pub families: Vec<Family>,
    /// With `import`, end the session with Cease / Maximum Number of Prefixes Reached
    /// (RFC 4486) when the peer announces more than this many prefixes.
    pub max_prefixes: Option<u32>,
    /// Count the peer's prefixes (still not installed anywhere). Announce-only when false:
    /// received UPDATEs are framed, counted and dropped.
    pub import: bool,
    /// Free text for people; never resets a session.
    pub description: String,
    /// BFD for this peer: a BFD failure takes the BGP session down at once.
    pub bfd: Option<BfdPeerConfig>,
}

/// BFD towards one peer (RFC 5880 timers; RFC 5881 single hop or RFC 5883 multihop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdPeerConfig {
    pub timers: crate::bfd::SessionConfig,
    /// RFC 5883 multihop (UDP 4784, TTL checked against `minimum_ttl`) instead of
    /// single hop (UDP 3784, TTL 255).
    pub multihop: bool,
    /// Multihop only: the smallest TTL accepted.
    pub minimum_ttl: u8,
}

impl PeerConfig {
    /// A peer with the defaults: port 179, hold 90 s, active, the address's own family.
    pub fn new(address: IpAddr, local_as: u32, remote_as: u32) -> PeerConfig {
        let family = match address {
            IpAddr::V4(_) => Family::Ipv4Unicast,
            IpAddr::V6(_) => Family::Ipv6Unicast,
        };
        PeerConfig {
            address,
            port: BGP_PORT,
            local_as,
            remote_as,
            router_id: None,
            source_address: None,
            hold_time: 90,
            keepalive: None,
            open_wait: crate::negotiate::DEFAULT_OPEN_WAIT,
            connect_retry: Duration::from_secs(5),
            connect_retry_max: Duration::from_secs(120),
            passive: false,
            password: None,
            ebgp_multihop: None,
            gtsm: false,
            graceful_restart: None,
            families: vec![family],
            max_prefixes: None,
            import: false,
            description: String::new(),
            bfd: None,
        }
    }

    pub fn is_ebgp(&self) -> bool {
        self.local_as != self.remote_as
    }

    /// Rejects values no session could run with.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let peer = self.address;
        if self.hold_time == 1 || self.hold_time == 2 {
            return Err(ConfigError::HoldTime {
                peer,
                value: self.hold_time,
            });
        }
        if let Some(k) = self.keepalive {
            if self.hold_time != 0 && (k == 0 || k >= self.hold_time) {
                return Err(ConfigError::Keepalive {
                    peer,
                    value: k,
                    hold: self.hold_time,
                });
            }
        }
        if self.local_as == 0 || self.remote_as == 0 {
            return Err(ConfigError::Asn {
                peer,
                local: self.local_as,
                remote: self.remote_as,
            });
        }
        if self.families.is_empty() {
            return Err(ConfigError::NoFamily { peer });
        }
        if self.connect_retry.is_zero() || self.connect_retry > self.connect_retry_max {
            return Err(ConfigError::ConnectRetry {
                peer,
                base: self.connect_retry,
                max: self.connect_retry_max,
            });
        }
        if let Some(pw) = &self.password {
            if pw.expose().is_empty() || pw.expose().len() > crate::socket_options::MD5_MAX_KEY_LEN
            {
                return Err(ConfigError::PasswordLength {
                    peer,
                    len: pw.expose().len(),
                });
            }
        }
        if self.gtsm && self.ebgp_multihop.is_some() {
            return Err(ConfigError::GtsmAndMultihop { peer });
        }
        if self.open_wait.is_zero() {
            return Err(ConfigError::OpenWait { peer });
        }
        if self.ebgp_multihop == Some(0) {
            return Err(ConfigError::Multihop { peer });
        }
        if let Some(gr) = self.graceful_restart {
            if gr.restart_time > 0x0fff {
                return Err(ConfigError::RestartTime {
                    peer,
                    value: gr.restart_time,
                });
            }
        }
        if let Some(b) = &self.bfd {
            let t = &b.timers;
            if t.detect_mult == 0
                || t.desired_min_tx.is_zero()
                || t.required_min_rx.is_zero()
                || b.minimum_ttl == 0
            {
                return Err(ConfigError::Bfd { peer });
            }
        }
        if let Some(src) = self.source_address {
            if src.is_ipv4() != peer.is_ipv4() {
                return Err(ConfigError::SourceFamily {
                    peer,
                    source_address: src,
                });
            }
        }
        Ok(())
    }

    /// True when going from `self` to `new` must restart the session: a different peer
    /// (address, port, ASNs) or a different TCP MD5 key, which no live connection can take.
    pub fn needs_reset(&self, new: &PeerConfig) -> bool {
        self.address != new.address
            || self.port != new.port
            || self.local_as != new.local_as
            || self.remote_as != new.remote_as
            || self.password != new.password
    }

    /// TTL (hop limit) of outgoing packets: 255 with GTSM, the multihop value, 1 for
    /// eBGP, 64 (the system default) for iBGP.
    pub fn outgoing_ttl(&self) -> u8 {
        if self.gtsm {
            255
        } else if let Some(n) = self.ebgp_multihop {
            n
        } else if self.is_ebgp() {
            1
        } else {
            64
        }
    }

    /// With GTSM (RFC 5082 §3): the smallest TTL accepted from a directly connected peer.
    pub fn minimum_incoming_ttl(&self) -> Option<u8> {
        self.gtsm.then_some(255)
    }
}

/// A configuration a session cannot run with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("peer {peer}: hold_time {value} is invalid: it must be 0 or at least 3 seconds (RFC 4271 §4.2)")]
    HoldTime { peer: IpAddr, value: u16 },
    #[error(
        "peer {peer}: keepalive {value} is invalid with hold_time {hold}: it must be at least 1 and below the hold time"
    )]
    Keepalive { peer: IpAddr, value: u16, hold: u16 },
    #[error("peer {peer}: ASN 0 is reserved (local_as {local}, remote_as {remote})")]
    Asn {
        peer: IpAddr,
        local: u32,
        remote: u32,
    },
    #[error("peer {peer}: families is empty")]
    NoFamily { peer: IpAddr },
    #[error("peer {peer}: connect_retry {base:?} must be non-zero and at most connect_retry_max {max:?}")]
    ConnectRetry {
        peer: IpAddr,
        base: Duration,
        max: Duration,
    },
    #[error("peer {peer}: password length {len} is invalid: TCP MD5 keys are 1 to 80 octets")]
    PasswordLength { peer: IpAddr, len: usize },
    #[error("peer {peer}: gtsm and ebgp_multihop exclude each other")]
    GtsmAndMultihop { peer: IpAddr },
    #[error("peer {peer}: open_wait must not be zero")]
    OpenWait { peer: IpAddr },
    #[error("peer {peer}: ebgp_multihop 0 is invalid")]
    Multihop { peer: IpAddr },
    #[error("peer {peer}: graceful restart time {value} exceeds 4095 seconds (12 bits)")]
    RestartTime { peer: IpAddr, value: u16 },
    #[error("peer {peer}: BFD needs a non-zero detect multiplier, intervals and minimum TTL")]
    Bfd { peer: IpAddr },
    #[error("peer {peer}: source_address {source_address} is of another address family")]
    SourceFamily {
        peer: IpAddr,
        source_address: IpAddr,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerConfig {
        PeerConfig::new("192.0.2.1".parse().unwrap(), 65001, 65002)
    }

    #[test]
    fn speaker_listens_dual_stack_on_179_by_default() {
        let c = SpeakerConfig::new(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(c.listen, Some("[::]:179".parse().unwrap()));
    }

    #[test]
    fn secret_debug_prints_stars() {
        let mut p = peer();
        p.password = Some(Secret::new("hunter2"));
        let text = format!("{p:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("***"));
    }

    #[test]
    fn hold_time_one_and_two_are_rejected() {
        for h in [1, 2] {
            let mut p = peer();
            p.hold_time = h;
            assert_eq!(
                p.validate(),
                Err(ConfigError::HoldTime {
                    peer: p.address,
                    value: h
                })
            );
        }
        for h in [0, 3, 90, 65535] {
            let mut p = peer();
            p.hold_time = h;
            assert_eq!(p.validate(), Ok(()));
        }
    }

    #[test]
    fn only_asn_address_port_and_password_reset() {
        let old = peer();
        let mut new = old.clone();
        new.description = "edge".into();
        new.max_prefixes = Some(10);
        new.import = true;
        new.hold_time = 30;
        new.gtsm = true;
        new.families = vec![Family::Ipv4Unicast, Family::Ipv6Unicast];
        new.source_address = Some("192.0.2.9".parse().unwrap());
        new.router_id = Some(Ipv4Addr::new(192, 0, 2, 9));
        assert!(!old.needs_reset(&new));
        for change in [
            |p: &mut PeerConfig| p.port = 1179,
            |p: &mut PeerConfig| p.local_as = 64999,
            |p: &mut PeerConfig| p.remote_as = 64999,
            |p: &mut PeerConfig| p.address = "192.0.2.77".parse().unwrap(),
        ] {
            let mut n = old.clone();
            change(&mut n);
            assert!(old.needs_reset(&n));
        }
        new.password = Some(Secret::new("x"));
        assert!(old.needs_reset(&new));
    }

    #[test]
    fn ebgp_sends_ttl_one_unless_multihop_or_gtsm() {
        let mut p = peer();
        assert_eq!(p.outgoing_ttl(), 1);
        p.ebgp_multihop = Some(4);
        assert_eq!(p.outgoing_ttl(), 4);
        p.ebgp_multihop = None;
        p.gtsm = true;
        assert_eq!(p.outgoing_ttl(), 255);
        assert_eq!(p.minimum_incoming_ttl(), Some(255));
    }
}

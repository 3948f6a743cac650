//! The OPEN exchange (RFC 4271 §4.2, §6.2): the OPEN we send, the checks on the OPEN we
//! receive, and what the two together negotiate.
use crate::config::{GracefulRestartConfig, PeerConfig};
use crate::packet::iana::{capability, error_code, open_subcode};
use crate::packet::{
    Capability, CodecContext, Family, GracefulRestart, GracefulRestartFamily, Message,
    Notification, Open, AS_TRANS,
};
use bytes::Bytes;
use std::net::Ipv4Addr;
use std::time::Duration;

/// How long a connection may wait for the peer's OPEN by default. RFC 4271 §8.2.2 suggests a
/// "large" hold time of 4 minutes here, but a connection that never sends an OPEN would then
/// hold one of the peer's two connection slots for 4 minutes and lock the real peer out;
/// a router sends its OPEN as soon as the TCP connection is up (a DelayOpen peer at the
/// latest when it receives ours), so a short wait loses nothing.
pub const DEFAULT_OPEN_WAIT: Duration = Duration::from_secs(20);

/// What one session needs to know to run the OPEN exchange and its timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_as: u32,
    pub remote_as: u32,
    pub router_id: Ipv4Addr,
    /// Proposed hold time, seconds (0 or >= 3, validated in [`PeerConfig::validate`]).
    pub hold_time: u16,
    pub keepalive: Option<u16>,
    pub connect_retry: Duration,
    pub connect_retry_max: Duration,
    pub passive: bool,
    pub families: Vec<Family>,
    pub graceful_restart: Option<GracefulRestartConfig>,
    /// Hold timer of OpenSent: how long to wait for the peer's OPEN.
    pub open_wait: Duration,
}

impl SessionConfig {
    pub fn from_peer(peer: &PeerConfig, speaker_router_id: Ipv4Addr) -> SessionConfig {
        SessionConfig {
            local_as: peer.local_as,
            remote_as: peer.remote_as,
            router_id: peer.router_id.unwrap_or(speaker_router_id),
            hold_time: peer.hold_time,
            keepalive: peer.keepalive,
            connect_retry: peer.connect_retry,
            connect_retry_max: peer.connect_retry_max,
            passive: peer.passive,
            families: peer.families.clone(),
            graceful_restart: peer.graceful_restart,
            open_wait: peer.open_wait,
        }
    }

    /// Our OPEN: 4-octet AS (RFC 6793), one Multiprotocol capability per family (RFC 4760),
    /// route refresh (RFC 2918), extended messages (RFC 8654), graceful restart (RFC 4724).
    pub fn open(&self) -> Message {
        let mut capabilities: Vec<Capability> = self
            .families
            .iter()
            .map(|f| {
                let (afi, safi) = f.afi_safi();
                Capability::Multiprotocol { afi, safi }
            })
            .collect();
        capabilities.push(Capability::RouteRefresh);
        capabilities.push(Capability::ExtendedMessage);
        capabilities.push(Capability::FourOctetAs(self.local_as));
        if let Some(gr) = self.graceful_restart {
            capabilities.push(Capability::GracefulRestart(GracefulRestart {
                restart_state: gr.restarting,
                notification: gr.notification,
                restart_time: gr.restart_time & 0x0fff,
                families: self
                    .families
                    .iter()
                    .map(|f| {
                        let (afi, safi) = f.afi_safi();
                        GracefulRestartFamily {
                            afi,
                            safi,
                            forwarding_preserved: gr.forwarding_preserved,
                        }
                    })
                    .collect(),
            }));
        }
        Message::Open(Open {
            version: 4,
            my_as: u16::try_from(self.local_as).unwrap_or(AS_TRANS),
            hold_time: self.hold_time,
            bgp_id: self.router_id,
            capabilities,
            other_params: Vec::new(),
        })
    }
}

/// What both OPENs together decided (RFC 4271 §4.2 and the capability RFCs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedSession {
    /// Seconds; 0 means no hold timer and no keepalives.
    pub hold_time: u16,
    /// Seconds between our KEEPALIVEs; 0 when `hold_time` is 0.
    pub keepalive: u16,
    pub four_octet_as: bool,
    pub extended_message: bool,
    /// Families both sides announced (IPv4 unicast when the peer sent no Multiprotocol
    /// capability, RFC 4760 §8).
    pub families: Vec<Family>,
    pub peer_asn: u32,
    pub peer_id: Ipv4Addr,
    pub route_refresh: bool,
    /// The peer's graceful restart capability, if it sent one.
    pub peer_graceful_restart: Option<GracefulRestart>,
    /// Both sides sent the graceful restart capability (RFC 4724 §3): the peer may keep our
    /// routes when the session ends without a NOTIFICATION.
    pub graceful_restart: bool,
    /// Both sides set the N bit (RFC 8538 §2): a NOTIFICATION other than Cease / Hard Reset
    /// keeps the routes too, so a stop that must flush them sends a Hard Reset.
    pub graceful_notification: bool,
}

impl NegotiatedSession {
    pub fn codec_context(&self) -> CodecContext {
        CodecContext {
            four_octet_as: self.four_octet_as,
            extended_message: self.extended_message,
        }
    }
}

fn open_error(subcode: u8, data: Bytes) -> Notification {
    Notification {
        code: error_code::OPEN_MESSAGE,
        subcode,
        data,
    }
}

/// Checks the peer's OPEN against our configuration (RFC 4271 §6.2) and negotiates.
/// An error is the NOTIFICATION to send.
pub fn negotiate(cfg: &SessionConfig, open: &Open) -> Result<NegotiatedSession, Notification> {
    if open.version != 4 {
        // Data: the largest version we support, 2 octets (RFC 4271 §6.2).
        return Err(open_error(
            open_subcode::UNSUPPORTED_VERSION_NUMBER,
            Bytes::from_static(&[0, 4]),
        ));
    }
    let peer_asn = open.asn();
    if peer_asn != cfg.remote_as {
        return Err(open_error(open_subcode::BAD_PEER_AS, Bytes::new()));
    }
    if open.hold_time == 1 || open.hold_time == 2 {
        return Err(open_error(
            open_subcode::UNACCEPTABLE_HOLD_TIME,
            Bytes::new(),
        ));
    }
    // RFC 6286 §2.2: non-zero; inside one AS, different from ours.
    let ibgp = cfg.local_as == cfg.remote_as;
    if open.bgp_id.is_unspecified() || (ibgp && open.bgp_id == cfg.router_id) {
        return Err(open_error(open_subcode::BAD_BGP_IDENTIFIER, Bytes::new()));
    }

    let mut peer_families = Vec::new();
    let mut four_octet_as = false;
    let mut extended_message = false;
    let mut route_refresh = false;
    let mut peer_graceful_restart = None;
    for cap in &open.capabilities {
        match cap {
            Capability::Multiprotocol { afi, safi } => {
                if let Some(f) = Family::from_afi_safi(*afi, *safi) {
                    peer_families.push(f);
                }
            }
            Capability::FourOctetAs(_) => four_octet_as = true,
            Capability::ExtendedMessage => extended_message = true,
            Capability::RouteRefresh => route_refresh = true,
            Capability::GracefulRestart(gr) => peer_graceful_restart = Some(gr.clone()),
            Capability::Unknown { .. } => {}
        }
    }
    let saw_multiprotocol = open
        .capabilities
        .iter()
        .any(|c| matches!(c, Capability::Multiprotocol { .. }));
    if !saw_multiprotocol {
        peer_families.push(Family::Ipv4Unicast);
    }
    let families: Vec<Family> = cfg
        .families
        .iter()
        .copied()
        .filter(|f| peer_families.contains(f))
        .collect();
    if families.is_empty() {
        // RFC 5492 §5: the data lists the capabilities we needed: our Multiprotocol ones.
        let mut data = Vec::new();
        for f in &cfg.families {
            let (afi, safi) = f.afi_safi();
            data.extend_from_slice(&[capability::MULTIPROTOCOL, 4]);
            data.extend_from_slice(&afi.0.to_be_bytes());
            data.extend_from_slice(&[0, safi.0]);
        }
        return Err(open_error(
            open_subcode::UNSUPPORTED_CAPABILITY,
            Bytes::from(data),
        ));
    }

    let hold_time = cfg.hold_time.min(open.hold_time);
    let keepalive = negotiated_keepalive(cfg.keepalive, hold_time);
    let graceful_restart = cfg.graceful_restart.is_some() && peer_graceful_restart.is_some();
    let graceful_notification = graceful_restart
        && cfg.graceful_restart.is_some_and(|g| g.notification)
        && peer_graceful_restart
            .as_ref()
            .is_some_and(|g: &GracefulRestart| g.notification);
    Ok(NegotiatedSession {
        hold_time,
        keepalive,
        four_octet_as,
        extended_message,
        families,
        peer_asn,
        peer_id: open.bgp_id,
        route_refresh,
        peer_graceful_restart,
        graceful_restart,
        graceful_notification,
    })
}

/// Seconds between KEEPALIVEs for a negotiated hold time: the configured interval when it is
/// below the hold time (RFC 4271 §4.4 only suggests a third), else a third of it; 0 with no
/// hold timer.
pub fn negotiated_keepalive(configured: Option<u16>, hold_time: u16) -> u16 {
    if hold_time == 0 {
        return 0;
    }
    let third = (hold_time / 3).max(1);
    match configured {
        Some(k) if k > 0 && k < hold_time => k,
        _ => third,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::packet::Afi;
    use crate::packet::Safi;

    pub(crate) fn config() -> SessionConfig {
        SessionConfig {
            local_as: 65001,
            remote_as: 65002,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            hold_time: 90,
            keepalive: None,
            connect_retry: Duration::from_secs(5),
            connect_retry_max: Duration::from_secs(60),
            passive: false,
            families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
            graceful_restart: None,
            open_wait: DEFAULT_OPEN_WAIT,
        }
    }

    pub(crate) fn peer_open(asn: u32, hold_time: u16, id: [u8; 4]) -> Open {
        Open {
            version: 4,
            my_as: u16::try_from(asn).unwrap_or(AS_TRANS),
            hold_time,
            bgp_id: Ipv4Addr::from(id),
            capabilities: vec![
                Capability::Multiprotocol {
                    afi: Afi::IPV4,
                    safi: Safi::UNICAST,
                },
                Capability::FourOctetAs(asn),
                Capability::RouteRefresh,
            ],
            other_params: Vec::new(),
        }
    }

    #[test]
    fn hold_time_is_the_smaller_and_keepalive_a_third() {
        let n = negotiate(&config(), &peer_open(65002, 30, [192, 0, 2, 2])).unwrap();
        assert_eq!((n.hold_time, n.keepalive), (30, 10));
        assert_eq!(n.families, vec![Family::Ipv4Unicast]);
        assert!(n.four_octet_as && n.route_refresh && !n.extended_message);
    }

    #[test]
    fn hold_time_zero_disables_keepalives() {
        let n = negotiate(&config(), &peer_open(65002, 0, [192, 0, 2, 2])).unwrap();
        assert_eq!((n.hold_time, n.keepalive), (0, 0));
    }

    #[test]
    fn hold_time_below_three_is_rejected_with_subcode_6() {
        for h in [1, 2] {
            let err = negotiate(&config(), &peer_open(65002, h, [192, 0, 2, 2])).unwrap_err();
            assert_eq!((err.code, err.subcode), (2, 6));
        }
    }

    #[test]
    fn wrong_peer_as_is_bad_peer_as() {
        let err = negotiate(&config(), &peer_open(65003, 90, [192, 0, 2, 2])).unwrap_err();
        assert_eq!((err.code, err.subcode), (2, 2));
    }

    #[test]
    fn four_octet_peer_as_is_read_from_the_capability() {
        let mut cfg = config();
        cfg.remote_as = 4_200_000_000;
        let n = negotiate(&cfg, &peer_open(4_200_000_000, 90, [192, 0, 2, 2])).unwrap();
        assert_eq!(n.peer_asn, 4_200_000_000);
    }

    #[test]
    fn zero_or_own_identifier_in_ibgp_is_bad_bgp_identifier() {
        let err = negotiate(&config(), &peer_open(65002, 90, [0, 0, 0, 0])).unwrap_err();
        assert_eq!((err.code, err.subcode), (2, 3));
        let mut cfg = config();
        cfg.remote_as = 65001;
        let err = negotiate(&cfg, &peer_open(65001, 90, [192, 0, 2, 1])).unwrap_err();
        assert_eq!((err.code, err.subcode), (2, 3));
        // eBGP may share the identifier (RFC 6286 §2.2).
        assert!(negotiate(&config(), &peer_open(65002, 90, [192, 0, 2, 1])).is_ok());
    }

    #[test]
    fn no_common_family_is_unsupported_capability() {
        let mut cfg = config();
        cfg.families = vec![Family::Ipv6Unicast];
        let err = negotiate(&cfg, &peer_open(65002, 90, [192, 0, 2, 2])).unwrap_err();
        assert_eq!((err.code, err.subcode), (2, 7));
        assert_eq!(&err.data[..], &[1, 4, 0, 2, 0, 1]);
    }

    #[test]
    fn peer_without_multiprotocol_speaks_ipv4_unicast() {
        let mut open = peer_open(65002, 90, [192, 0, 2, 2]);
        open.capabilities.clear();
        let n = negotiate(&config(), &open).unwrap();
        assert_eq!(n.families, vec![Family::Ipv4Unicast]);
        assert!(!n.four_octet_as);
    }

    #[test]
    fn our_open_carries_as_trans_and_graceful_restart() {
        let mut cfg = config();
        cfg.local_as = 4_200_000_001;
        cfg.graceful_restart = Some(GracefulRestartConfig {
            restart_time: 120,
            restarting: false,
            forwarding_preserved: true,
            notification: true,
        });
        let Message::Open(open) = cfg.open() else {
            panic!("not an OPEN")
        };
        assert_eq!(open.my_as, AS_TRANS);
        assert_eq!(open.asn(), 4_200_000_001);
        let gr = open
            .capabilities
            .iter()
            .find_map(|c| match c {
                Capability::GracefulRestart(g) => Some(g.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(gr.restart_time, 120);
        assert!(gr.notification && !gr.restart_state);
        assert_eq!(gr.families.len(), 2);
        assert!(gr.families.iter().all(|f| f.forwarding_preserved));
    }
}

#[cfg(test)]
mod keepalive_tests {
    use super::negotiated_keepalive;

    #[test]
    fn configured_keepalive_below_the_hold_time_is_kept_else_a_third() {
        assert_eq!(negotiated_keepalive(Some(20), 30), 20);
        assert_eq!(negotiated_keepalive(Some(30), 30), 10);
        assert_eq!(negotiated_keepalive(Some(60), 9), 3);
        assert_eq!(negotiated_keepalive(None, 90), 30);
        assert_eq!(negotiated_keepalive(None, 3), 1);
        assert_eq!(negotiated_keepalive(Some(5), 0), 0);
    }
}

//! What the announcer reports, per interface and owned address.
use crate::link::LinkState;
use crate::InterfaceError;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

/// One interface given to the announcer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InterfaceStats {
    pub interface: String,
    /// The interface as last seen; `None` while it does not exist.
    pub link: Option<LinkState>,
    /// Why the interface cannot be served right now, if it cannot.
    pub error: Option<InterfaceError>,
    /// Frames that passed the kernel filter.
    pub frames_received: u64,
    /// Frames read and found not to be a question for us (malformed, foreign, not owned).
    pub frames_ignored: u64,
    /// ARP requests and neighbour solicitations answered.
    pub requests_answered: u64,
    /// Frames that could not be sent.
    pub send_errors: u64,
    /// Receive errors on the socket.
    pub receive_errors: u64,
    /// Frames the kernel dropped because the announcer did not read fast enough.
    pub receive_drops: u64,
    pub ips: Vec<IpStats>,
}

/// One owned address on one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpStats {
    pub ip: IpAddr,
    /// When the announcer was told it owns `ip` (here, since it was last not owned).
    pub owned_since: SystemTime,
    /// The first announcement sent since `owned_since`: the failover moment on the wire.
    pub first_announced: Option<SystemTime>,
    pub last_announced: Option<SystemTime>,
    /// Announcement rounds sent (one round = both ARP forms, or one NA).
    pub announcements: u64,
    pub requests_answered: u64,
    /// Frames for this address that could not be sent.
    pub send_errors: u64,
    /// Why solicitations for it may not arrive (an IPv6 group that could not be joined).
    pub error: Option<String>,
}

/// The mutable record a worker keeps; `snapshot` gives the public form.
#[derive(Debug)]
pub(crate) struct Record {
    pub interface: String,
    pub link: Option<LinkState>,
    pub error: Option<InterfaceError>,
    pub frames_received: u64,
    pub frames_ignored: u64,
    pub requests_answered: u64,
    pub send_errors: u64,
    pub receive_errors: u64,
    pub receive_drops: u64,
    pub ips: BTreeMap<IpAddr, IpStats>,
}

impl Record {
    pub fn new(interface: &str) -> Record {
        Record {
            interface: interface.to_string(),
            link: None,
            error: None,
            frames_received: 0,
            frames_ignored: 0,
            requests_answered: 0,
            send_errors: 0,
            receive_errors: 0,
            receive_drops: 0,
            ips: BTreeMap::new(),
        }
    }

    pub fn owned(&mut self, ip: IpAddr, at: SystemTime) {
        self.ips.entry(ip).or_insert(IpStats {
            ip,
            owned_since: at,
            first_announced: None,
            last_announced: None,
            announcements: 0,
            requests_answered: 0,
            send_errors: 0,
            error: None,
        });
    }

    pub fn released(&mut self, ip: &IpAddr) {
        self.ips.remove(ip);
    }

    pub fn announced(&mut self, ip: &IpAddr, at: SystemTime) {
        if let Some(s) = self.ips.get_mut(ip) {
            s.first_announced.get_or_insert(at);
            s.last_announced = Some(at);
            s.announcements += 1;
        }
    }

    pub fn answered(&mut self, ip: &IpAddr) {
        self.requests_answered += 1;
        if let Some(s) = self.ips.get_mut(ip) {
            s.requests_answered += 1;
        }
    }

    pub fn send_failed(&mut self, ip: &IpAddr) {
        self.send_errors += 1;
        if let Some(s) = self.ips.get_mut(ip) {
            s.send_errors += 1;
        }
    }

    pub fn ip_error(&mut self, ip: &IpAddr, error: Option<String>) {
        if let Some(s) = self.ips.get_mut(ip) {
            s.error = error;
        }
    }

    pub fn snapshot(&self) -> InterfaceStats {
        InterfaceStats {
            interface: self.interface.clone(),
            link: self.link,
            error: self.error.clone(),
            frames_received: self.frames_received,
            frames_ignored: self.frames_ignored,
            requests_answered: self.requests_answered,
            send_errors: self.send_errors,
            receive_errors: self.receive_errors,
            receive_drops: self.receive_drops,
            ips: self.ips.values().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn first_announced_is_kept_and_last_announced_moves() {
        let ip: IpAddr = "192.0.2.100".parse().expect("ip");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let mut r = Record::new("eth0");
        r.owned(ip, t0);
        r.announced(&ip, t0 + Duration::from_millis(1));
        r.announced(&ip, t0 + Duration::from_millis(500));
        let s = r.snapshot();
        assert_eq!(
            s.ips[0].first_announced,
            Some(t0 + Duration::from_millis(1))
        );
        assert_eq!(
            s.ips[0].last_announced,
            Some(t0 + Duration::from_millis(500))
        );
        assert_eq!(s.ips[0].announcements, 2);
    }

    #[test]
    fn a_released_then_owned_again_address_starts_a_fresh_record() {
        let ip: IpAddr = "2001:db8::100".parse().expect("ip");
        let t0 = SystemTime::UNIX_EPOCH;
        let mut r = Record::new("eth0");
        r.owned(ip, t0);
        r.announced(&ip, t0);
        r.released(&ip);
        r.owned(ip, t0 + Duration::from_secs(5));
        let s = r.snapshot();
        assert_eq!(s.ips[0].first_announced, None);
        assert_eq!(s.ips[0].owned_since, t0 + Duration::from_secs(5));
    }

    #[test]
    fn answers_for_unknown_addresses_count_only_on_the_interface() {
        let mut r = Record::new("eth0");
        r.answered(&"192.0.2.1".parse().expect("ip"));
        assert_eq!(r.snapshot().requests_answered, 1);
        assert!(r.snapshot().ips.is_empty());
    }
}

//! What the announcer reports, per interface and owned address.
//!
//! The per-address list is handed out shared ([`InterfaceStats::ips`]) and made again only
//! when an address is owned, released, first announced or gets an error: a speaker reads the
//! statistics every view publication, and with 10 000 owned addresses a fresh copy per read
//! would be periodic work that grows with the cluster (issue 17). Counters that move on
//! every frame are kept per interface.
use crate::link::LinkState;
use crate::InterfaceError;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

/// One interface given to the announcer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
    /// Announcement rounds sent (one round = both ARP forms, or one NA), every address.
    pub announcements: u64,
    /// The owned addresses in address order. The same allocation (`Arc::ptr_eq`) as the
    /// previous read's while none was owned, released, first announced or failed since.
    pub ips: Arc<[IpStats]>,
}

/// One owned address on one interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpStats {
    pub ip: IpAddr,
    /// When the announcer was told it owns `ip` (here, since it was last not owned).
    pub owned_since: SystemTime,
    /// The first announcement sent since `owned_since`: the failover moment on the wire.
    pub first_announced: Option<SystemTime>,
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
    pub announcements: u64,
    pub ips: BTreeMap<IpAddr, IpStats>,
    /// `ips` as last handed out; dropped when `ips` changes.
    shared: Option<Arc<[IpStats]>>,
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
            announcements: 0,
            ips: BTreeMap::new(),
            shared: None,
        }
    }

    pub fn owned(&mut self, ip: IpAddr, at: SystemTime) {
        if let std::collections::btree_map::Entry::Vacant(e) = self.ips.entry(ip) {
            e.insert(IpStats {
                ip,
                owned_since: at,
                first_announced: None,
                error: None,
            });
            self.shared = None;
        }
    }

    pub fn released(&mut self, ip: &IpAddr) {
        if self.ips.remove(ip).is_some() {
            self.shared = None;
        }
    }

    pub fn announced(&mut self, ip: &IpAddr, at: SystemTime) {
        if let Some(s) = self.ips.get_mut(ip) {
            self.announcements += 1;
            if s.first_announced.is_none() {
                s.first_announced = Some(at);
                self.shared = None;
            }
        }
    }

    pub fn answered(&mut self) {
        self.requests_answered += 1;
    }

    pub fn send_failed(&mut self) {
        self.send_errors += 1;
    }

    pub fn ip_error(&mut self, ip: &IpAddr, error: Option<String>) {
        if let Some(s) = self.ips.get_mut(ip) {
            if s.error != error {
                s.error = error;
                self.shared = None;
            }
        }
    }

    pub fn snapshot(&mut self) -> InterfaceStats {
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
            announcements: self.announcements,
            ips: Arc::clone(
                self.shared
                    .get_or_insert_with(|| self.ips.values().cloned().collect()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn first_announced_is_kept_and_rounds_are_counted_on_the_interface() {
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
        assert_eq!(s.announcements, 2);
    }

    #[test]
    fn the_address_list_is_shared_until_an_address_changes() {
        let (a, b): (IpAddr, IpAddr) = (
            "192.0.2.1".parse().expect("ip"),
            "192.0.2.2".parse().expect("ip"),
        );
        let t0 = SystemTime::UNIX_EPOCH;
        let mut r = Record::new("eth0");
        r.owned(a, t0);
        r.announced(&a, t0);
        let first = r.snapshot().ips;
        // Repeated rounds, answers, failed sends and a second ownership notice of the same
        // address leave the list as it was: the same allocation is handed out.
        r.announced(&a, t0 + Duration::from_secs(1));
        r.answered();
        r.send_failed();
        r.owned(a, t0 + Duration::from_secs(2));
        r.ip_error(&a, None);
        let again = r.snapshot();
        assert!(Arc::ptr_eq(&first, &again.ips));
        assert_eq!(
            (
                again.announcements,
                again.requests_answered,
                again.send_errors
            ),
            (2, 1, 1)
        );
        // Each change of the list makes a new one.
        let mut seen = vec![first];
        let changes: [&dyn Fn(&mut Record); 4] = [
            &|r| r.owned(b, t0),
            &|r| r.announced(&b, t0),
            &|r| r.ip_error(&b, Some("no group".into())),
            &|r| r.released(&a),
        ];
        for change in changes {
            change(&mut r);
            let next = r.snapshot().ips;
            assert!(!Arc::ptr_eq(seen.last().expect("one"), &next));
            seen.push(next);
        }
        let last = seen.last().expect("one");
        assert_eq!(last.len(), 1);
        assert_eq!(last[0].ip, b);
        assert_eq!(last[0].first_announced, Some(t0));
        assert_eq!(last[0].error.as_deref(), Some("no group"));
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
    fn answers_count_on_the_interface_not_as_an_address_change() {
        let mut r = Record::new("eth0");
        r.answered();
        assert_eq!(r.snapshot().requests_answered, 1);
        assert!(r.snapshot().ips.is_empty());
    }
}

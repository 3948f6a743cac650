//! What an interface looks like now (index, MAC, up), and what changed since last time.
//!
//! The announcer polls `getifaddrs(3)` (a netlink dump under the hood, so it sees the
//! network namespace of the process, unlike a `/sys` that may be mounted for another one).
//! Polling was chosen over a netlink event socket to keep this library free of the
//! netlink stack and of its state machine (missed events, resyncs after `ENOBUFS`); a
//! link event is acted on within one poll interval (100 ms by default), which is
//! invisible next to a link's own negotiation time. The comparison is a pure function.
use nix::net::if_::InterfaceFlags;
use pnet_base::MacAddr;
use std::io;

/// The state of one interface that matters for announcing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkState {
    pub ifindex: u32,
    pub mac: MacAddr,
    /// Administratively up with carrier (`IFF_UP` and `IFF_LOWER_UP`): frames can leave.
    pub up: bool,
    /// Operationally up (`IFF_RUNNING`). The kernel sets it from its link-watch work, up to
    /// a second after the carrier, and only then activates the queueing discipline; frames
    /// sent between the two may be dropped silently, so both edges trigger an announcement.
    pub running: bool,
}

/// Looks `name` up in this network namespace; `Ok(None)` when it does not exist.
pub fn lookup(name: &str) -> io::Result<Option<LinkState>> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    for a in addrs {
        if a.interface_name != name {
            continue;
        }
        let Some(link) = a.address.as_ref().and_then(|s| s.as_link_addr()) else {
            continue;
        };
        let octets = link.addr().unwrap_or([0; 6]);
        let up = a.flags.contains(InterfaceFlags::IFF_UP)
            && a.flags.contains(InterfaceFlags::IFF_LOWER_UP);
        let running = up && a.flags.contains(InterfaceFlags::IFF_RUNNING);
        let ifindex = u32::try_from(link.ifindex()).unwrap_or(0);
        return Ok(Some(LinkState {
            ifindex,
            mac: MacAddr::new(
                octets[0], octets[1], octets[2], octets[3], octets[4], octets[5],
            ),
            up,
            running,
        }));
    }
    Ok(None)
}

/// What the announcer must do after a poll.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkChange {
    /// Nothing that matters changed.
    Same,
    /// The interface exists now (it did not, or it was replaced: new ifindex): open a
    /// socket, join groups, announce everything.
    Opened,
    /// Gone: close the socket and wait for it to come back.
    Gone,
    /// Same interface, new MAC or back up: announce everything again.
    Reannounce,
    /// Went down: nothing can be sent until it is up again.
    Down,
}

/// Compares two polls of one interface.
pub fn compare(before: Option<&LinkState>, now: Option<&LinkState>) -> LinkChange {
    match (before, now) {
        (None, None) => LinkChange::Same,
        (Some(_), None) => LinkChange::Gone,
        (None, Some(_)) => LinkChange::Opened,
        (Some(b), Some(n)) if b.ifindex != n.ifindex => LinkChange::Opened,
        (Some(b), Some(n)) if n.up && (!b.up || b.mac != n.mac || (n.running && !b.running)) => {
            LinkChange::Reannounce
        }
        (Some(b), Some(n)) if b.up && !n.up => LinkChange::Down,
        _ => LinkChange::Same,
    }
}

/// A name the kernel could accept for an interface (`dev_valid_name`): 1 to 15 bytes, no
/// `/`, `:` or whitespace, not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(ifindex: u32, last: u8, up: bool) -> LinkState {
        LinkState {
            ifindex,
            mac: MacAddr::new(2, 0, 0, 0, 0, last),
            up,
            running: up,
        }
    }

    #[test]
    fn an_interface_that_appears_is_opened_and_one_that_vanishes_is_gone() {
        assert_eq!(compare(None, Some(&st(3, 1, true))), LinkChange::Opened);
        assert_eq!(compare(Some(&st(3, 1, true)), None), LinkChange::Gone);
        assert_eq!(compare(None, None), LinkChange::Same);
    }

    #[test]
    fn a_replaced_interface_with_a_new_index_is_opened_again() {
        assert_eq!(
            compare(Some(&st(3, 1, true)), Some(&st(7, 1, true))),
            LinkChange::Opened
        );
    }

    #[test]
    fn link_up_or_a_new_mac_while_up_reannounces() {
        assert_eq!(
            compare(Some(&st(3, 1, false)), Some(&st(3, 1, true))),
            LinkChange::Reannounce
        );
        assert_eq!(
            compare(Some(&st(3, 1, true)), Some(&st(3, 2, true))),
            LinkChange::Reannounce
        );
    }

    #[test]
    fn carrier_then_operstate_up_announce_twice() {
        let down = st(3, 1, false);
        let carrier = LinkState {
            up: true,
            running: false,
            ..down
        };
        let running = st(3, 1, true);
        assert_eq!(compare(Some(&down), Some(&carrier)), LinkChange::Reannounce);
        assert_eq!(
            compare(Some(&carrier), Some(&running)),
            LinkChange::Reannounce
        );
        assert_eq!(compare(Some(&running), Some(&running)), LinkChange::Same);
    }

    #[test]
    fn link_down_is_reported_and_a_new_mac_while_down_waits_for_up() {
        assert_eq!(
            compare(Some(&st(3, 1, true)), Some(&st(3, 1, false))),
            LinkChange::Down
        );
        assert_eq!(
            compare(Some(&st(3, 1, false)), Some(&st(3, 2, false))),
            LinkChange::Same
        );
    }

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        assert!(valid_name("eth0"));
        assert!(valid_name("enp0s31f6.100"));
        for bad in ["", "a/b", "sixteen-chars-xx", "..", "a b", "a:b"] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_loopback_interface_is_found_and_a_missing_one_is_none() {
        let lo = lookup("lo").expect("getifaddrs");
        assert!(lo.is_some_and(|l| l.ifindex > 0));
        assert_eq!(lookup("nosuchif0").expect("getifaddrs"), None);
    }
}

//! What an interface looks like now (index, MAC, up), and what changed since last time.
//!
//! The announcer polls one interface by name: one `RTM_GETLINK` request for that name (no
//! dump) on a netlink route socket the worker keeps open, answered by the kernel with that
//! one link or `ENODEV`. Netlink sees the network namespace of the calling thread, unlike a
//! `/sys` that may be mounted for another one. The cost of a poll does not grow with the
//! number of interfaces on the node (a `getifaddrs(3)` did: it dumps every link, with its
//! statistics, and every address, to read one link); `IFLA_EXT_MASK` also tells the kernel
//! to skip VF information and statistics we do not read.
//!
//! Polling was chosen over a netlink event subscription (`RTNLGRP_LINK`) to keep a state
//! machine out of the worker (missed events, resyncs after `ENOBUFS`): a poll cannot miss a
//! change, only see it up to one interval late (100 ms by default), which is invisible next
//! to a link's own negotiation time. The request and its answer take microseconds, like the
//! call they replace, so the worker makes them in place rather than on another thread; a
//! receive timeout bounds the wait should the kernel ever not answer. The comparison of two
//! polls is a pure function.
use netlink_packet_core::{
    ErrorBuffer, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
    ParseableParametrized, NLMSG_ERROR, NLM_F_REQUEST,
};
use netlink_packet_route::link::{
    LinkAttribute, LinkExtentMask, LinkFlags, LinkHeader, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use pnet_base::MacAddr;
use std::io;
use std::time::Duration;

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

/// The answer to one link request is a few hundred bytes to a few KiB (no VF information,
/// no statistics); a larger one is reported as truncated rather than misread.
const ANSWER_BUFFER: usize = 32 * 1024;

/// The kernel answers a link request before `send` returns; this only bounds the wait
/// should it ever not.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(1);

/// Datagrams read while waiting for the answer before giving up (the socket joins no
/// group, so anything else is a stale answer to an earlier request).
const MAX_DATAGRAMS: usize = 8;

/// `struct nlmsghdr` and `struct ifinfomsg`, the fixed parts before payload and attributes.
const NETLINK_HEADER: usize = 16;
const LINK_HEADER: usize = 16;

/// Looks interfaces up by name, one netlink request per lookup, on a socket it keeps open
/// (reopened after any error, so a stale answer never pairs with a later request).
#[derive(Debug)]
pub struct Links {
    socket: Option<Socket>,
    seq: u32,
    buf: Vec<u8>,
}

impl Default for Links {
    fn default() -> Self {
        Self::new()
    }
}

impl Links {
    /// Opens nothing yet: the socket is opened by the first lookup, in the namespace of
    /// the thread that makes it.
    pub fn new() -> Self {
        Self {
            socket: None,
            seq: 0,
            buf: Vec::new(),
        }
    }

    /// Looks `name` up in this network namespace; `Ok(None)` when it does not exist (or
    /// has no link-layer address, as `getifaddrs` reported it).
    pub fn lookup(&mut self, name: &str) -> io::Result<Option<LinkState>> {
        if !valid_name(name) {
            return Ok(None); // the kernel holds no interface by that name
        }
        let answer = self.ask(name);
        if answer.is_err() {
            self.socket = None;
        }
        answer
    }

    fn ask(&mut self, name: &str) -> io::Result<Option<LinkState>> {
        let socket = match self.socket.take() {
            Some(s) => s,
            None => open().map_err(|e| context(name, "cannot open a netlink socket", &e))?,
        };
        let socket = self.socket.insert(socket);
        self.seq = self.seq.wrapping_add(1);
        let request = request(name, self.seq);
        let sent = socket
            .send(&request, 0)
            .map_err(|e| context(name, "cannot send the link request", &e))?;
        if sent != request.len() {
            return Err(invalid(name, "the link request was sent in part"));
        }
        if self.buf.capacity() < ANSWER_BUFFER {
            self.buf = Vec::with_capacity(ANSWER_BUFFER);
        }
        for _ in 0..MAX_DATAGRAMS {
            self.buf.clear();
            let len = socket
                .recv(&mut self.buf, libc::MSG_TRUNC)
                .map_err(|e| context(name, "cannot read the link answer", &e))?;
            if len > self.buf.len() {
                return Err(invalid(
                    name,
                    &format!("the link answer ({len} bytes) did not fit in {ANSWER_BUFFER}"),
                ));
            }
            match parse_answer(name, self.seq, &self.buf)? {
                Answer::NotOurs => continue,
                Answer::Missing => return Ok(None),
                Answer::Found(state) => return Ok(Some(state)),
            }
        }
        Err(invalid(name, "no answer to the link request"))
    }
}

/// One lookup on a socket of its own (tools and one-off checks; the announcer keeps a
/// [`Links`] per interface).
pub fn lookup(name: &str) -> io::Result<Option<LinkState>> {
    Links::new().lookup(name)
}

fn open() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket2::SockRef::from(&socket).set_read_timeout(Some(ANSWER_TIMEOUT))?;
    Ok(socket)
}

/// `RTM_GETLINK` for one interface by name: no `NLM_F_DUMP`, so the kernel looks the name
/// up and answers with that link alone.
fn request(name: &str, seq: u32) -> Vec<u8> {
    let mut link = LinkMessage::default();
    link.attributes.push(LinkAttribute::IfName(name.to_owned()));
    link.attributes.push(LinkAttribute::ExtMask(vec![
        LinkExtentMask::Vf,
        LinkExtentMask::SkipStats,
    ]));
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST;
    header.sequence_number = seq;
    let mut message = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::GetLink(link)),
    );
    message.finalize();
    let mut buf = vec![0; message.buffer_len()];
    message.serialize(&mut buf);
    buf
}

/// What one datagram says about the request numbered `seq`.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Nothing about this request (a stale answer to an earlier one).
    NotOurs,
    /// The kernel has no such interface (or it has no link-layer address).
    Missing,
    Found(LinkState),
}

/// Reads the answer to request `seq` for `name` out of one datagram. Never panics: a
/// truncated or odd message is an error naming the interface.
fn parse_answer(name: &str, seq: u32, datagram: &[u8]) -> io::Result<Answer> {
    let mut rest = datagram;
    while !rest.is_empty() {
        let message = NetlinkBuffer::new_checked(rest)
            .map_err(|e| invalid(name, &format!("malformed netlink message: {e}")))?;
        let length = message.length() as usize; // checked: header <= length <= rest.len()
        if message.sequence_number() == seq {
            let payload = rest.get(NETLINK_HEADER..length).unwrap_or_default();
            return match message.message_type() {
                libc::RTM_NEWLINK => parse_link(name, payload),
                NLMSG_ERROR => parse_error(name, payload),
                other => Err(invalid(
                    name,
                    &format!("unexpected netlink message type {other}"),
                )),
            };
        }
        rest = rest.get(length.next_multiple_of(4)..).unwrap_or_default();
    }
    Ok(Answer::NotOurs)
}

fn parse_error(name: &str, payload: &[u8]) -> io::Result<Answer> {
    let error = ErrorBuffer::new_checked(payload)
        .map_err(|e| invalid(name, &format!("malformed netlink error: {e}")))?;
    match error.code() {
        Some(code) if code.get() == -libc::ENODEV => Ok(Answer::Missing),
        Some(code) => {
            let errno = code.get().checked_neg().unwrap_or(libc::EIO);
            Err(context(
                name,
                "link request refused",
                &io::Error::from_raw_os_error(errno),
            ))
        }
        None => Err(invalid(
            name,
            "the link request was acknowledged without an answer",
        )),
    }
}

/// An `RTM_NEWLINK` payload: the header's index and flags, the name (checked: the kernel
/// also finds a link by one of its alternative names, `getifaddrs` did not) and the
/// address (the first six bytes, zero-padded, as `getifaddrs` reported them).
fn parse_link(name: &str, payload: &[u8]) -> io::Result<Answer> {
    let header = LinkHeader::parse(payload)
        .map_err(|e| invalid(name, &format!("malformed link message: {e}")))?;
    let mut ifname = None;
    let mut address = None;
    for nla in NlasIterator::new(payload.get(LINK_HEADER..).unwrap_or_default()) {
        let nla = nla.map_err(|e| invalid(name, &format!("malformed link attribute: {e}")))?;
        if nla.kind() != libc::IFLA_IFNAME && nla.kind() != libc::IFLA_ADDRESS {
            continue;
        }
        let attribute = LinkAttribute::parse_with_param(&nla, header.interface_family)
            .map_err(|e| invalid(name, &format!("malformed link attribute: {e}")))?;
        match attribute {
            LinkAttribute::IfName(n) => ifname = Some(n),
            LinkAttribute::Address(a) => address = Some(a),
            _ => {}
        }
    }
    if ifname.as_deref() != Some(name) {
        return Ok(Answer::Missing); // found by an alternative name: not this interface
    }
    let Some(address) = address else {
        return Ok(Answer::Missing);
    };
    let mut octets = [0u8; 6];
    for (o, a) in octets.iter_mut().zip(&address) {
        *o = *a;
    }
    let flags = header.flags;
    let up = flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp);
    Ok(Answer::Found(LinkState {
        ifindex: header.index,
        mac: MacAddr::new(
            octets[0], octets[1], octets[2], octets[3], octets[4], octets[5],
        ),
        up,
        running: up && flags.contains(LinkFlags::Running),
    }))
}

fn invalid(name: &str, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("interface {name:?}: {what}"),
    )
}

fn context(name: &str, what: &str, e: &io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("interface {name:?}: {what}: {e}"))
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

    /// A kernel answer: `RTM_NEWLINK` for `name` or an `NLMSG_ERROR` with `errno`.
    fn answer(seq: u32, link: Option<(&str, u32, LinkFlags, &[u8])>, errno: i32) -> Vec<u8> {
        let payload = match link {
            Some((name, index, flags, address)) => {
                let mut m = LinkMessage::default();
                m.header.index = index;
                m.header.flags = flags;
                m.attributes.push(LinkAttribute::Mtu(1500));
                m.attributes.push(LinkAttribute::IfName(name.to_owned()));
                m.attributes.push(LinkAttribute::Address(address.to_vec()));
                NetlinkPayload::from(RouteNetlinkMessage::NewLink(m))
            }
            None => {
                let mut e = netlink_packet_core::ErrorMessage::default();
                e.code = std::num::NonZeroI32::new(-errno);
                NetlinkPayload::Error(e)
            }
        };
        let mut header = NetlinkHeader::default();
        header.sequence_number = seq;
        let mut message = NetlinkMessage::new(header, payload);
        message.finalize();
        let mut buf = vec![0; message.buffer_len()];
        message.serialize(&mut buf);
        buf
    }

    const MAC: [u8; 6] = [2, 0, 0, 0, 0x17, 1];

    #[test]
    fn an_answer_gives_index_mac_and_flags() {
        let all = LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Running;
        let got = parse_answer("eth0", 7, &answer(7, Some(("eth0", 4, all, &MAC)), 0));
        let want = LinkState {
            ifindex: 4,
            mac: MacAddr::new(2, 0, 0, 0, 0x17, 1),
            up: true,
            running: true,
        };
        assert_eq!(got.expect("parsed"), Answer::Found(want));
        let no_carrier = LinkFlags::Up | LinkFlags::Running;
        let got = parse_answer(
            "eth0",
            7,
            &answer(7, Some(("eth0", 4, no_carrier, &MAC)), 0),
        );
        let down = LinkState {
            up: false,
            running: false,
            ..want
        };
        assert_eq!(got.expect("parsed"), Answer::Found(down));
    }

    #[test]
    fn enodev_is_missing_and_another_error_names_the_interface() {
        let missing = parse_answer("eth9", 3, &answer(3, None, libc::ENODEV));
        assert_eq!(missing.expect("parsed"), Answer::Missing);
        let err = parse_answer("eth9", 3, &answer(3, None, libc::EPERM)).expect_err("EPERM");
        assert_eq!(err.raw_os_error(), None);
        assert!(err.to_string().contains("\"eth9\""), "{err}");
        assert_eq!(err.kind(), io::Error::from_raw_os_error(libc::EPERM).kind());
    }

    #[test]
    fn another_name_no_address_or_a_stale_answer_are_not_this_interface() {
        let up = LinkFlags::Up | LinkFlags::LowerUp;
        let alt = answer(5, Some(("eth0", 4, up, &MAC)), 0);
        assert_eq!(
            parse_answer("altname0", 5, &alt).expect("parsed"),
            Answer::Missing
        );
        let mut no_address = LinkMessage::default();
        no_address
            .attributes
            .push(LinkAttribute::IfName("tun0".into()));
        let mut header = NetlinkHeader::default();
        header.sequence_number = 5;
        let mut m = NetlinkMessage::new(
            header,
            NetlinkPayload::from(RouteNetlinkMessage::NewLink(no_address)),
        );
        m.finalize();
        let mut buf = vec![0; m.buffer_len()];
        m.serialize(&mut buf);
        assert_eq!(
            parse_answer("tun0", 5, &buf).expect("parsed"),
            Answer::Missing
        );
        // An answer to request 4 followed by the answer to 5, in one datagram.
        let mut both = answer(4, None, libc::ENODEV);
        both.extend(answer(5, Some(("eth0", 4, up, &MAC)), 0));
        assert!(matches!(
            parse_answer("eth0", 5, &both),
            Ok(Answer::Found(_))
        ));
        assert_eq!(
            parse_answer("eth0", 6, &both).expect("parsed"),
            Answer::NotOurs
        );
    }

    #[test]
    fn every_truncation_of_an_answer_is_an_error_naming_the_interface() {
        let up = LinkFlags::Up | LinkFlags::LowerUp;
        let full = answer(9, Some(("eth0", 4, up, &MAC)), 0);
        for len in 1..full.len() {
            match parse_answer("eth0", 9, &full[..len]) {
                Ok(a) => panic!("{len} of {} bytes read as {a:?}", full.len()),
                Err(e) => assert!(e.to_string().contains("\"eth0\""), "{e}"),
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn no_datagram_makes_the_parser_panic(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256),
            seq in 0u32..4,
        ) {
            let _ = parse_answer("eth0", seq, &bytes);
        }

        #[test]
        fn no_corruption_of_a_real_answer_makes_the_parser_panic(
            at in 0usize..64, byte in proptest::num::u8::ANY, cut in 0usize..64,
        ) {
            let up = LinkFlags::Up | LinkFlags::LowerUp;
            let mut bytes = answer(1, Some(("eth0", 4, up, &MAC)), 0);
            if let Some(b) = bytes.get_mut(at) {
                *b = byte;
            }
            bytes.truncate(bytes.len().saturating_sub(cut));
            let _ = parse_answer("eth0", 1, &bytes);
        }
    }

    #[test]
    fn the_request_asks_for_one_link_by_name_without_a_dump() {
        let req = request("eth0", 42);
        let buf = NetlinkBuffer::new_checked(&req[..]).expect("a netlink message");
        assert_eq!(buf.message_type(), libc::RTM_GETLINK);
        assert_eq!(buf.flags(), NLM_F_REQUEST);
        assert_eq!(buf.sequence_number(), 42);
        let msg = <LinkMessage as netlink_packet_core::Parseable<[u8]>>::parse(buf.payload())
            .expect("a link message");
        assert!(msg
            .attributes
            .contains(&LinkAttribute::IfName("eth0".into())));
        assert!(msg
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::ExtMask(m)
            if m.contains(&LinkExtentMask::Vf) && m.contains(&LinkExtentMask::SkipStats))));
    }

    #[test]
    fn the_loopback_interface_is_found_and_a_missing_one_is_none() {
        let mut links = Links::new();
        let lo = links.lookup("lo").expect("lookup lo");
        assert!(lo.is_some_and(|l| l.ifindex > 0));
        assert_eq!(links.lookup("nosuchif0").expect("lookup nosuchif0"), None);
    }
}

//! When to announce each owned address: a pure timetable; time comes in as a value.
//!
//! Announcements are repeated because a single frame can be lost and because some hosts
//! rate-limit updates; RFC 5227 §2.3 sends two announcements 2 s apart, RFC 4861 §7.2.6
//! allows up to MAX_NEIGHBOR_ADVERTISEMENT (3) unsolicited advertisements. The defaults are
//! denser at the start so that a client that missed the first frame still moves within 0.5 s.
//!
//! Paced: at most [`Timetable::batch`] addresses per [`Timetable::batch_gap`] per interface,
//! first announcements before repeats. A node taking over 10 000 addresses at once sent
//! 20 000 frames in one go (and as many again at each repeat): more than a veth's or a host's
//! input backlog holds (`net.core.netdev_max_backlog`, 1000 by default), so the frames that
//! shared the path with them (gossip heartbeats too) were dropped, and the task sending them
//! did not yield for as long. Paced, the default moves ~25 000 addresses a second.
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

/// Offsets from the moment an address becomes owned (or its link comes back) at which it
/// is announced, plus an optional refresh after the last one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timetable {
    /// IPv4: each step sends the request and the reply form of gratuitous ARP.
    pub arp: Vec<Duration>,
    /// IPv6: each step sends one unsolicited neighbour advertisement with Override.
    pub ndp: Vec<Duration>,
    /// Announce again every `refresh` after the last step; `None` (the default) stops.
    pub refresh: Option<Duration>,
    /// At most this many addresses are announced at once (at least 1)...
    pub batch: usize,
    /// ...and the next ones this long after.
    pub batch_gap: Duration,
}

impl Default for Timetable {
    fn default() -> Self {
        let ms = Duration::from_millis;
        Timetable {
            arp: vec![ms(0), ms(500), ms(1000), ms(2000)],
            ndp: vec![ms(0), ms(1000), ms(2000)],
            refresh: None,
            batch: 128,
            batch_gap: ms(5),
        }
    }
}

impl Timetable {
    fn steps(&self, ip: &IpAddr) -> &[Duration] {
        match ip {
            IpAddr::V4(_) => &self.arp,
            IpAddr::V6(_) => &self.ndp,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    start: Instant,
    /// Index of the next step to send; `steps.len()` once all are sent.
    next_step: usize,
    last_sent: Option<Instant>,
}

/// The announcement timetable of one interface.
///
/// Every address with something still to send has one key in `due` (when, address), so
/// the earliest moment is the first key: [`Schedule::next_due`] is O(log N), which the L2
/// worker asks on every turn of its loop, at rest too (each link poll, each frame), and
/// [`Schedule::take_due`] reads only the addresses that are due (O(due + batch log N)),
/// not every owned one.
#[derive(Clone, Debug)]
pub struct Schedule {
    table: Timetable,
    entries: BTreeMap<IpAddr, Entry>,
    /// (due, address) of every entry that has something due, ever.
    due: BTreeSet<(Instant, IpAddr)>,
    /// After a full batch, nothing more is taken before this.
    paused_until: Option<Instant>,
}

/// The largest address: every key (t, ip) with t <= now sorts at or before (now, this).
const LAST_ADDRESS: IpAddr = IpAddr::V6(Ipv6Addr::new(
    0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
));

impl Schedule {
    pub fn new(table: Timetable) -> Schedule {
        Schedule {
            table,
            entries: BTreeMap::new(),
            due: BTreeSet::new(),
            paused_until: None,
        }
    }

    /// Starts the timetable of `ip` at `now` unless it is already running.
    pub fn own(&mut self, ip: IpAddr, now: Instant) {
        if self.entries.contains_key(&ip) {
            return;
        }
        let e = Entry {
            start: now,
            next_step: 0,
            last_sent: None,
        };
        self.entries.insert(ip, e);
        self.index(ip, None, &e);
    }

    /// Forgets `ip`: nothing more is sent for it.
    pub fn disown(&mut self, ip: &IpAddr) {
        if let Some(e) = self.entries.remove(ip) {
            if let Some(at) = due_at(&self.table, ip, &e) {
                self.due.remove(&(at, *ip));
            }
        }
    }

    /// Starts every address's timetable again at `now` (link up, new MAC, new interface).
    pub fn restart(&mut self, now: Instant) {
        self.due.clear();
        for (ip, e) in &mut self.entries {
            e.start = now;
            e.next_step = 0;
            if let Some(at) = due_at(&self.table, ip, e) {
                self.due.insert((at, *ip));
            }
        }
    }

    /// Moves `ip`'s key from `was` (its due moment before a change) to what `e` says now.
    fn index(&mut self, ip: IpAddr, was: Option<Instant>, e: &Entry) {
        if let Some(at) = was {
            self.due.remove(&(at, ip));
        }
        if let Some(at) = due_at(&self.table, &ip, e) {
            self.due.insert((at, ip));
        }
    }

    /// The earliest moment something is due, if anything ever is (not before the pause
    /// after a full batch).
    pub fn next_due(&self) -> Option<Instant> {
        let (due, _) = self.due.first()?;
        Some(self.paused_until.map_or(*due, |p| (*due).max(p)))
    }

    /// Takes at most a batch of the addresses due at `now` (first announcements first,
    /// then repeats, each in address order) and advances their timetables; after a full
    /// batch nothing more is due for the batch gap. Steps missed while late are skipped,
    /// not sent in a burst.
    pub fn take_due(&mut self, now: Instant) -> Vec<IpAddr> {
        if self.paused_until.is_some_and(|p| now < p) {
            return Vec::new();
        }
        self.paused_until = None;
        let batch = self.table.batch.max(1);
        let mut first = Vec::new();
        let mut again = Vec::new();
        for (_, ip) in self.due.range(..=(now, LAST_ADDRESS)) {
            match self.entries.get(ip) {
                Some(e) if e.next_step == 0 => first.push(*ip),
                Some(_) => again.push(*ip),
                None => {}
            }
        }
        smallest(&mut first, batch);
        smallest(&mut again, batch - first.len());
        first.append(&mut again);
        for ip in &first {
            let Some(mut e) = self.entries.get(ip).copied() else {
                continue;
            };
            let was = due_at(&self.table, ip, &e);
            let steps = self.table.steps(ip);
            e.last_sent = Some(now);
            while e.next_step < steps.len() && e.start + steps[e.next_step] <= now {
                e.next_step += 1;
            }
            self.entries.insert(*ip, e);
            self.index(*ip, was, &e);
        }
        if first.len() == batch {
            self.paused_until = Some(now + self.table.batch_gap);
        }
        first
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// When `e` (of `ip`) next has something to send: its next step, else the refresh after
/// the last one sent, else never.
fn due_at(table: &Timetable, ip: &IpAddr, e: &Entry) -> Option<Instant> {
    match table.steps(ip).get(e.next_step) {
        Some(offset) => Some(e.start + *offset),
        None => {
            let refresh = table.refresh?;
            Some(e.last_sent.unwrap_or(e.start) + refresh)
        }
    }
}

/// Keeps the `n` smallest addresses of `ips`, in order (O(len), then O(n log n)).
fn smallest(ips: &mut Vec<IpAddr>, n: usize) {
    if n == 0 {
        ips.clear();
        return;
    }
    if ips.len() > n {
        ips.select_nth_unstable(n - 1);
        ips.truncate(n);
    }
    ips.sort_unstable();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The `i`-th test address, IPv4 or IPv6.
    fn addr(i: usize, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16))
        } else {
            IpAddr::V4(std::net::Ipv4Addr::from(0xc633_0000u32 + i as u32))
        }
    }

    fn v4(i: usize) -> IpAddr {
        addr(i, false)
    }

    /// The default timetable paced at `batch` addresses per 5 ms.
    fn paced(batch: usize) -> Timetable {
        Timetable {
            batch,
            batch_gap: ms(5),
            ..Timetable::default()
        }
    }

    /// A schedule on `table` owning `ips` since `t0`.
    fn owning(table: Timetable, ips: impl IntoIterator<Item = IpAddr>, t0: Instant) -> Schedule {
        let mut s = Schedule::new(table);
        for a in ips {
            s.own(a, t0);
        }
        s
    }

    /// Runs the schedule from `t0` to `t0 + until`, ticking at every due moment, and
    /// returns the offsets at which `addr` was sent.
    fn run(s: &mut Schedule, t0: Instant, until: Duration, addr: IpAddr) -> Vec<Duration> {
        let mut sent = Vec::new();
        while let Some(at) = s.next_due() {
            if at > t0 + until {
                break;
            }
            for a in s.take_due(at) {
                if a == addr {
                    sent.push(at - t0);
                }
            }
        }
        sent
    }

    /// The offsets at which the only address of a default schedule started at `t0` is sent
    /// within `until`.
    fn sent_alone(a: &str, table: Timetable, until: Duration) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut s = owning(table, [ip(a)], t0);
        run(&mut s, t0, until, ip(a))
    }

    #[test]
    fn ipv4_is_announced_at_0_half_1_and_2_seconds_by_default() {
        let sent = sent_alone("192.0.2.100", Timetable::default(), Duration::from_secs(60));
        assert_eq!(sent, vec![ms(0), ms(500), ms(1000), ms(2000)]);
        let t0 = Instant::now();
        let mut s = owning(Timetable::default(), [ip("192.0.2.100")], t0);
        run(&mut s, t0, Duration::from_secs(60), ip("192.0.2.100"));
        assert_eq!(s.next_due(), None, "no refresh by default");
    }

    #[test]
    fn ipv6_is_announced_three_times_one_second_apart_by_default() {
        let sent = sent_alone(
            "2001:db8::100",
            Timetable::default(),
            Duration::from_secs(60),
        );
        assert_eq!(sent, vec![ms(0), ms(1000), ms(2000)]);
    }

    #[test]
    fn an_address_already_owned_is_not_restarted_by_owning_it_again() {
        let t0 = Instant::now();
        let mut s = owning(Timetable::default(), [ip("192.0.2.100")], t0);
        assert_eq!(s.take_due(t0), vec![ip("192.0.2.100")]);
        s.own(ip("192.0.2.100"), t0 + ms(100));
        assert_eq!(s.take_due(t0 + ms(100)), Vec::<IpAddr>::new());
        assert_eq!(s.next_due(), Some(t0 + ms(500)));
    }

    #[test]
    fn a_disowned_address_is_never_due_again() {
        let t0 = Instant::now();
        let mut s = owning(Timetable::default(), [ip("192.0.2.100")], t0);
        s.take_due(t0);
        s.disown(&ip("192.0.2.100"));
        assert_eq!(s.next_due(), None);
        assert!(s.take_due(t0 + ms(600)).is_empty());
    }

    #[test]
    fn restart_sends_everything_again_at_once_and_repeats_the_timetable() {
        let t0 = Instant::now();
        let mut s = owning(Timetable::default(), [ip("192.0.2.100")], t0);
        let _ = run(&mut s, t0, Duration::from_secs(5), ip("192.0.2.100"));
        let t1 = t0 + Duration::from_secs(10);
        s.restart(t1);
        let sent = run(&mut s, t1, Duration::from_secs(60), ip("192.0.2.100"));
        assert_eq!(sent, vec![ms(0), ms(500), ms(1000), ms(2000)]);
    }

    #[test]
    fn refresh_repeats_after_the_last_step_when_configured() {
        let table = Timetable {
            refresh: Some(Duration::from_secs(10)),
            ..Timetable::default()
        };
        let sent = sent_alone("192.0.2.100", table, Duration::from_secs(25));
        assert_eq!(
            sent,
            vec![ms(0), ms(500), ms(1000), ms(2000), ms(12000), ms(22000)]
        );
    }

    #[test]
    fn steps_missed_while_late_are_sent_once_not_in_a_burst() {
        let t0 = Instant::now();
        let mut s = owning(Timetable::default(), [ip("192.0.2.100")], t0);
        assert_eq!(s.take_due(t0 + ms(1200)).len(), 1);
        assert_eq!(s.next_due(), Some(t0 + ms(2000)));
    }

    #[test]
    fn a_batch_is_capped_and_the_rest_follows_after_the_gap() {
        let t0 = Instant::now();
        let mut s = owning(paced(2), (0..5).map(v4), t0);
        assert_eq!(s.take_due(t0), vec![v4(0), v4(1)]);
        assert_eq!(s.next_due(), Some(t0 + ms(5)));
        assert!(s.take_due(t0 + ms(1)).is_empty(), "paused");
        assert_eq!(s.take_due(t0 + ms(5)), vec![v4(2), v4(3)]);
        assert_eq!(s.take_due(t0 + ms(10)), vec![v4(4)]);
        assert_eq!(
            s.next_due(),
            Some(t0 + ms(500)),
            "not paused after a short batch"
        );
    }

    #[test]
    fn first_announcements_go_before_repeats() {
        let t0 = Instant::now();
        let mut s = owning(paced(2), [v4(0), v4(1)], t0);
        assert_eq!(s.take_due(t0).len(), 2);
        // Both repeats are due at 500 ms, when two new addresses arrive.
        let t1 = t0 + ms(500);
        s.own(v4(7), t1);
        s.own(v4(8), t1);
        assert_eq!(s.take_due(t1), vec![v4(7), v4(8)]);
        assert_eq!(s.take_due(t1 + ms(5)), vec![v4(0), v4(1)]);
    }

    /// The schedule as it was before the due index: every question scans every address.
    /// The reference [`Schedule`] must agree with, answer for answer.
    struct Scan {
        table: Timetable,
        entries: BTreeMap<IpAddr, Entry>,
        paused_until: Option<Instant>,
    }

    impl Scan {
        fn own(&mut self, ip: IpAddr, now: Instant) {
            self.entries.entry(ip).or_insert(Entry {
                start: now,
                next_step: 0,
                last_sent: None,
            });
        }

        fn restart(&mut self, now: Instant) {
            for e in self.entries.values_mut() {
                e.start = now;
                e.next_step = 0;
            }
        }

        fn next_due(&self) -> Option<Instant> {
            let due = self
                .entries
                .iter()
                .filter_map(|(ip, e)| due_at(&self.table, ip, e))
                .min()?;
            Some(self.paused_until.map_or(due, |p| due.max(p)))
        }

        fn take_due(&mut self, now: Instant) -> Vec<IpAddr> {
            if self.paused_until.is_some_and(|p| now < p) {
                return Vec::new();
            }
            self.paused_until = None;
            let batch = self.table.batch.max(1);
            let mut first = Vec::new();
            let mut again = Vec::new();
            for (ip, e) in &self.entries {
                if due_at(&self.table, ip, e).is_none_or(|at| at > now) {
                    continue;
                }
                if e.next_step == 0 {
                    first.push(*ip);
                    if first.len() == batch {
                        break;
                    }
                } else if again.len() < batch {
                    again.push(*ip);
                }
            }
            let room = batch - first.len();
            first.extend(again.into_iter().take(room));
            for ip in &first {
                let Some(e) = self.entries.get_mut(ip) else {
                    continue;
                };
                let steps = self.table.steps(ip);
                e.last_sent = Some(now);
                while e.next_step < steps.len() && e.start + steps[e.next_step] <= now {
                    e.next_step += 1;
                }
            }
            if first.len() == batch {
                self.paused_until = Some(now + self.table.batch_gap);
            }
            first
        }
    }

    /// One thing done to both schedules in the property below.
    #[derive(Clone, Debug)]
    enum Op {
        Own(usize, bool),
        Disown(usize, bool),
        Restart,
        /// Time passes by this many ms, then due addresses are taken.
        Take(u64),
        /// Time moves to the next due moment (or by 1 ms), then due addresses are taken.
        TakeNext,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..40, any::<bool>()).prop_map(|(i, v6)| Op::Own(i, v6)),
            2 => (0usize..40, any::<bool>()).prop_map(|(i, v6)| Op::Disown(i, v6)),
            1 => Just(Op::Restart),
            3 => (0u64..700).prop_map(Op::Take),
            3 => Just(Op::TakeNext),
        ]
    }

    proptest! {
        /// The due index changes nothing: for any sequence of owning, disowning, restarts
        /// and time passing, with any pace and with or without a refresh, the indexed
        /// schedule answers `next_due` and `take_due` exactly as the scanning one did.
        #[test]
        fn the_due_index_answers_exactly_as_the_full_scan_did(
            ops in proptest::collection::vec(op(), 1..300),
            batch in 1usize..6,
            gap_ms in 0u64..10,
            refresh in proptest::option::of(1u64..3000),
        ) {
            let t0 = Instant::now();
            let table = Timetable {
                batch,
                batch_gap: ms(gap_ms),
                refresh: refresh.map(ms),
                ..Timetable::default()
            };
            let mut indexed = Schedule::new(table.clone());
            let mut scan = Scan { table, entries: BTreeMap::new(), paused_until: None };
            let mut now = t0;
            for op in ops {
                match op {
                    Op::Own(i, v6) => {
                        indexed.own(addr(i, v6), now);
                        scan.own(addr(i, v6), now);
                    }
                    Op::Disown(i, v6) => {
                        indexed.disown(&addr(i, v6));
                        scan.entries.remove(&addr(i, v6));
                    }
                    Op::Restart => {
                        indexed.restart(now);
                        scan.restart(now);
                    }
                    Op::Take(dt) => {
                        now += ms(dt);
                        prop_assert_eq!(indexed.take_due(now), scan.take_due(now));
                    }
                    Op::TakeNext => {
                        now = scan.next_due().map_or(now + ms(1), |at| at.max(now));
                        prop_assert_eq!(indexed.take_due(now), scan.take_due(now));
                    }
                }
                prop_assert_eq!(indexed.next_due(), scan.next_due());
                prop_assert_eq!(indexed.len(), scan.entries.len());
                prop_assert_eq!(indexed.due.len(), indexed.entries.iter()
                    .filter(|(ip, e)| due_at(&indexed.table, ip, e).is_some()).count(),
                    "one key per address with something due");
            }
        }

        /// Paced: no take exceeds the batch, a full batch is followed by the gap, every
        /// address gets its first announcement within `ceil(n / batch) - 1` gaps, and (the
        /// timetable being sparse enough for the pace) no step is lost.
        #[test]
        fn pacing_caps_every_burst_and_loses_no_announcement(
            n in 1usize..300, batch in 1usize..40, gap_ms in 1u64..5, v6 in any::<bool>()
        ) {
            let t0 = Instant::now();
            let gap = ms(gap_ms);
            let table = Timetable { batch, batch_gap: gap, ..Timetable::default() };
            let mut s = owning(table, (0..n).map(|i| addr(i, v6)), t0);
            let mut first: BTreeMap<IpAddr, Instant> = BTreeMap::new();
            let mut count = 0;
            let mut last_full: Option<Instant> = None;
            while let Some(at) = s.next_due() {
                let taken = s.take_due(at);
                prop_assert!(!taken.is_empty(), "next_due promised something at {:?}", at - t0);
                prop_assert!(taken.len() <= batch);
                if let Some(f) = last_full {
                    prop_assert!(at >= f + gap, "a batch within the gap of a full one");
                }
                last_full = (taken.len() == batch).then_some(at);
                for ip in taken {
                    first.entry(ip).or_insert(at);
                    count += 1;
                }
            }
            let rounds = n.div_ceil(batch) as u32;
            for (ip, at) in &first {
                prop_assert!(*at - t0 <= gap * (rounds - 1), "{} first sent after {:?}", ip, *at - t0);
            }
            prop_assert_eq!(first.len(), n);
            if gap * rounds < ms(500) {
                let per = if v6 { 3 } else { 4 };
                prop_assert_eq!(count, n * per);
            }
        }

        /// The latest ownership wins: whatever the order of owning, disowning and time
        /// passing, only addresses owned at that moment are ever taken, and an address
        /// owned again starts its timetable afresh (its first announcement comes first).
        #[test]
        fn only_addresses_owned_now_are_taken(
            ops in proptest::collection::vec((0usize..3, 0usize..20, 0u64..30), 1..200)
        ) {
            let t0 = Instant::now();
            let mut s = Schedule::new(paced(3));
            let mut owned = std::collections::BTreeSet::new();
            let mut now = t0;
            for (op, i, dt) in ops {
                match op {
                    0 => { s.own(v4(i), now); owned.insert(v4(i)); }
                    1 => { s.disown(&v4(i)); owned.remove(&v4(i)); }
                    _ => {
                        now += ms(dt);
                        for ip in s.take_due(now) {
                            prop_assert!(owned.contains(&ip), "{} taken but not owned", ip);
                        }
                    }
                }
            }
        }

        #[test]
        fn every_owned_address_is_due_exactly_len_steps_times(
            n in 1usize..50, v6 in any::<bool>()
        ) {
            let mut s = owning(Timetable::default(), (0..n).map(|i| addr(i, v6)), Instant::now());
            let mut count = 0;
            while let Some(at) = s.next_due() {
                count += s.take_due(at).len();
            }
            let per = if v6 { 3 } else { 4 };
            prop_assert_eq!(count, n * per);
        }
    }
}

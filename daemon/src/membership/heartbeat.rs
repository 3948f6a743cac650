//! Owner heartbeats: a failure detector beside SWIM for the members that own L2 IPs.
//!
//! SWIM finds any failed member, but only after a probe period, the indirect probes and a
//! suspicion that a live member may refute: about 400 ms on a LAN ([`super::Timings::lan`]),
//! slower than VRRP tuned to 0.1 s adverts (about 300 ms). The members that matter for an
//! L2 failover are few: the owner of an IP and the nodes ranked next for it. So an owner
//! sends a small signed heartbeat every `heartbeat_interval` (25 ms) straight to the next
//! ranked nodes of its IPs (its successors), each heartbeat saying "declare me down if you
//! hear nothing from me for `timeout`" (300 ms). A successor that hears nothing for that
//! long declares the owner down in the SWIM view, which gossips the verdict at once to
//! everyone (a confirmed failure, as if the suspicion timer had run out): every speaker
//! then elects the same new owner, which announces. The owner's heartbeats stop being
//! needed when it stops owning or the successor changes; it then sends a release, and a
//! successor stops watching.
//!
//! A live owner that is starved of CPU sends late, and a starved owner cannot be told
//! from a frozen one within one timeout; the timeout therefore adapts to what each owner
//! showed lately, as the phi-accrual detector (Hayashibara et al., 2004) adapts to the
//! arrival distribution: it is twice the longest gap seen between its heartbeats (or the
//! longest delay its own loop reports in them), with the sender's 300 ms as the floor, and
//! that worst gap halves every [`DECAY`]. A gap counts up to the floor only, so the timeout
//! never exceeds twice the floor (beyond that SWIM decides anyway) and one freeze (a gap that
//! ended in a "down" verdict, or that the watcher slept through) cannot leave an owner
//! watched with a timeout of seconds. A quiet owner keeps the 300 ms; an owner seen
//! stalling for 150 ms gets 300 ms until it has been regular again for a while. Past
//! about 400 ms SWIM's own suspicion declares it down anyway.
//!
//! Only a member that asked to be watched (sent a heartbeat) can be declared down this
//! way, and only while it is a live member under the same identity; a watcher whose own
//! loop was starved does not count the time it slept against anyone (the late heartbeats
//! are read first, then each watch gets a fresh timeout). A member declared down while
//! alive learns it from the gossip, rejoins under a new generation and announces its IPs
//! again (see [`super::MembershipEvent::LostContact`]).
//!
//! [`Watches`] is the watcher's bookkeeping, pure (time is an argument).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::SpeakerId;

/// The payload of a heartbeat frame ([`super::auth::FrameKind::Heartbeat`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's identity (a watch follows one generation).
    pub id: SpeakerId,
    /// Declare the sender down after this long without a heartbeat; 0: stop watching.
    pub timeout_ms: u32,
    /// The longest its own heartbeat tick ran late lately (its scheduling delay).
    pub late_ms: u32,
}

impl Heartbeat {
    /// A heartbeat asking to be watched for `timeout`.
    pub fn watch_me(id: SpeakerId, timeout: Duration, late: Duration) -> Heartbeat {
        Heartbeat {
            id,
            timeout_ms: millis(timeout).max(1),
            late_ms: millis(late),
        }
    }

    /// A heartbeat that ends the watch (no longer an owner the receiver succeeds).
    pub fn release(id: SpeakerId) -> Heartbeat {
        Heartbeat {
            id,
            timeout_ms: 0,
            late_ms: 0,
        }
    }
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// How long a worst gap takes to count half as much.
pub const DECAY: Duration = Duration::from_secs(20);

/// A worst case that fades: the largest value seen, halved every [`DECAY`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorstGap {
    worst: Duration,
    since: Option<Instant>,
}

impl WorstGap {
    /// The value at `now`, decayed.
    pub fn at(&self, now: Instant) -> Duration {
        let Some(since) = self.since else {
            return Duration::ZERO;
        };
        let halvings = now.saturating_duration_since(since).as_secs_f64() / DECAY.as_secs_f64();
        self.worst.mul_f64(0.5f64.powf(halvings))
    }

    /// Records `gap` seen at `now`.
    pub fn saw(&mut self, gap: Duration, now: Instant) {
        let current = self.at(now);
        if gap >= current {
            self.worst = gap;
            self.since = Some(now);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Watch {
    id: SpeakerId,
    last_heard: Instant,
    /// The sender's floor.
    floor: Duration,
    /// Gaps between its heartbeats and the delays it reported.
    worst: WorstGap,
    /// The timeout in force since the last heartbeat.
    timeout: Duration,
}

/// The members a watcher watches, by node name.
#[derive(Clone, Debug, Default)]
pub struct Watches {
    by_node: BTreeMap<String, Watch>,
}

impl Watches {
    /// A heartbeat arrived at `now`. A heartbeat from an older generation than the one
    /// watched is ignored; a release ends the watch.
    pub fn heard(&mut self, hb: &Heartbeat, now: Instant) {
        if let Some(w) = self.by_node.get(&hb.id.node) {
            if w.id.generation > hb.id.generation {
                return;
            }
        }
        if hb.timeout_ms == 0 {
            self.by_node.remove(&hb.id.node);
            return;
        }
        let floor = Duration::from_millis(u64::from(hb.timeout_ms));
        let late = Duration::from_millis(u64::from(hb.late_ms));
        let w = self
            .by_node
            .entry(hb.id.node.clone())
            .or_insert_with(|| Watch {
                id: hb.id.clone(),
                last_heard: now,
                floor,
                worst: WorstGap::default(),
                timeout: floor,
            });
        if w.id != hb.id {
            // A newer generation: a new member, with no history.
            *w = Watch {
                id: hb.id.clone(),
                last_heard: now,
                floor,
                worst: WorstGap::default(),
                timeout: floor,
            };
        }
        let gap = now.saturating_duration_since(w.last_heard);
        w.worst.saw(gap.min(floor), now);
        w.worst.saw(late.min(floor), now);
        w.last_heard = now;
        w.floor = floor;
        w.timeout = floor.max(w.worst.at(now) * 2);
    }

    /// The member is down or gone by other means: stop watching it.
    pub fn forget(&mut self, id: &SpeakerId) {
        if self
            .by_node
            .get(&id.node)
            .is_some_and(|w| w.id.generation <= id.generation)
        {
            self.by_node.remove(&id.node);
        }
    }

    /// Our own loop was starved until `now`: the heartbeats that could arrive were read,
    /// the time asleep is nobody's fault, so every watch starts a fresh timeout.
    pub fn grace(&mut self, now: Instant) {
        for w in self.by_node.values_mut() {
            w.last_heard = w.last_heard.max(now);
        }
    }

    /// When the next watch runs out, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_node
            .values()
            .map(|w| w.last_heard + w.timeout)
            .min()
    }

    /// The members silent past their timeout at `now`, removed from the watches.
    pub fn take_expired(&mut self, now: Instant) -> Vec<SpeakerId> {
        let expired: Vec<String> = self
            .by_node
            .iter()
            .filter(|(_, w)| w.last_heard + w.timeout <= now)
            .map(|(n, _)| n.clone())
            .collect();
        expired
            .into_iter()
            .filter_map(|n| self.by_node.remove(&n).map(|w| w.id))
            .collect()
    }

    /// The nodes watched now.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.by_node.keys().map(String::as_str)
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(node: &str, generation: u64) -> SpeakerId {
        SpeakerId {
            node: node.into(),
            addr: "192.0.2.1:7946".parse().expect("literal"),
            generation,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_watched_member_silent_for_its_timeout_is_expired_once() {
        let t0 = Instant::now();
        let mut w = Watches::default();
        w.heard(&Heartbeat::watch_me(id("a", 1), ms(200), ms(0)), t0);
        w.heard(
            &Heartbeat::watch_me(id("a", 1), ms(200), ms(0)),
            t0 + ms(25),
        );
        assert_eq!(w.next_deadline(), Some(t0 + ms(225)));
        assert!(w.take_expired(t0 + ms(224)).is_empty());
        assert_eq!(w.take_expired(t0 + ms(225)), vec![id("a", 1)]);
        assert!(w.take_expired(t0 + ms(500)).is_empty(), "expired once");
        assert!(w.is_empty());
    }

    #[test]
    fn a_release_ends_the_watch_and_an_old_generation_is_ignored() {
        let t0 = Instant::now();
        let mut w = Watches::default();
        w.heard(&Heartbeat::watch_me(id("a", 2), ms(200), ms(0)), t0);
        w.heard(&Heartbeat::release(id("a", 1)), t0 + ms(10));
        assert_eq!(w.nodes().collect::<Vec<_>>(), vec!["a"], "stale release");
        w.heard(&Heartbeat::release(id("a", 2)), t0 + ms(20));
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn forgetting_a_member_down_by_other_means_ends_its_watch_but_not_a_newer_ones() {
        let t0 = Instant::now();
        let mut w = Watches::default();
        w.heard(&Heartbeat::watch_me(id("a", 3), ms(200), ms(0)), t0);
        w.forget(&id("a", 2));
        assert!(
            !w.is_empty(),
            "a down older generation leaves the new one watched"
        );
        w.forget(&id("a", 3));
        assert!(w.is_empty());
    }

    #[test]
    fn a_starved_watcher_gives_every_watch_a_fresh_timeout() {
        let t0 = Instant::now();
        let mut w = Watches::default();
        w.heard(&Heartbeat::watch_me(id("a", 1), ms(200), ms(0)), t0);
        // Asleep for 500 ms: on waking, the grace comes before the check.
        w.grace(t0 + ms(500));
        assert!(w.take_expired(t0 + ms(500)).is_empty());
        assert_eq!(w.next_deadline(), Some(t0 + ms(700)));
    }

    #[test]
    fn an_owner_seen_stalling_gets_twice_its_worst_gap_which_fades() {
        let t0 = Instant::now();
        let mut w = Watches::default();
        let hb = Heartbeat::watch_me(id("a", 1), ms(200), ms(0));
        w.heard(&hb, t0);
        w.heard(&hb, t0 + ms(150));
        assert_eq!(w.next_deadline(), Some(t0 + ms(150) + ms(300)));
        // Regular again for two decay periods: a quarter of the worst gap, the floor rules.
        let later = t0 + ms(150) + 2 * DECAY;
        for i in 0..=(2 * DECAY.as_millis() as u64 / 25) {
            w.heard(&hb, t0 + ms(150 + 25 * i));
        }
        w.heard(&hb, later);
        assert_eq!(w.next_deadline(), Some(later + ms(200)));
        // A delay the sender reports counts like a gap.
        w.heard(
            &Heartbeat::watch_me(id("a", 1), ms(200), ms(180)),
            later + ms(25),
        );
        assert_eq!(w.next_deadline(), Some(later + ms(25) + ms(360)));
    }

    #[test]
    fn a_gap_counts_up_to_the_floor_so_one_freeze_does_not_leave_a_timeout_of_seconds() {
        let t0 = Instant::now();
        let mut w = Watches::default();
        let hb = Heartbeat::watch_me(id("a", 1), ms(200), ms(0));
        w.heard(&hb, t0);
        // The watcher slept through 3 s (grace): the time asleep is no gap of the owner's.
        w.grace(t0 + ms(3000));
        w.heard(&hb, t0 + ms(3000));
        assert_eq!(w.next_deadline(), Some(t0 + ms(3000) + ms(200)));
        // The owner says it was 2.9 s late: it counts as the floor, not as 2.9 s.
        let reported = Heartbeat::watch_me(id("a", 1), ms(200), ms(2900));
        w.heard(&reported, t0 + ms(3025));
        assert_eq!(w.next_deadline(), Some(t0 + ms(3025) + ms(400)));
    }

    proptest! {
        /// Whatever the order of heartbeats, a member is expired only after hearing
        /// nothing from it for its whole timeout, which is never below the floor and
        /// never below twice a gap it showed.
        #[test]
        fn a_member_heard_within_its_timeout_is_never_expired(
            gaps in proptest::collection::vec(0u64..300, 1..60),
            floor in 2u64..400,
        ) {
            let t0 = Instant::now();
            let mut w = Watches::default();
            let mut t = t0;
            let mut last = t0;
            let mut worst = 0;
            w.heard(&Heartbeat::watch_me(id("a", 1), ms(floor), ms(0)), t);
            for g in gaps {
                t += ms(g);
                let deadline = w.next_deadline().expect("watched");
                prop_assert!(deadline >= last + ms(floor).max(ms(worst)));
                let expired = w.take_expired(t);
                prop_assert_eq!(!expired.is_empty(), t >= deadline);
                if !expired.is_empty() {
                    break;
                }
                w.heard(&Heartbeat::watch_me(id("a", 1), ms(floor), ms(0)), t);
                worst = worst.max(g);
                last = t;
            }
        }
    }
}

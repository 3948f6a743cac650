//! When this node may start answering for an L2 IP it won: at once when it takes over
//! from a node that failed or left, after a short hold when the IP may still be answered
//! for by a live node (a move-back to a better-ranked node that returned, a restart, a
//! speaker that resumed from a freeze or found the others again).
//!
//! Two nodes answering ARP/NDP for one IP split its clients between them. In a failover
//! the old owner is gone, so the next one answers and announces at once. In a move the old
//! owner is alive and releases the IP when its own view shows the newcomer, usually a gossip
//! round later; the newcomer holds back for [`HOLD`] meanwhile and then announces, so the
//! two never answer at the same moment. Clients keep their neighbour entry for the old
//! owner, which still serves the IP (every node does, through kube-proxy), until the
//! announcement moves them: the move loses no connection.
//!
//! Pure: time comes in as a value.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::plan::l2::{L2Plan, Owner};

/// How long a node waits before answering for an IP another live node may still answer
/// for: the old owner must have seen the newcomer by then. A gossip round (100 ms) plus a
/// loaded node's scheduling delay would do for a restart; a node that was cut off and
/// comes back under a renewed identity is seen by some members only ~600 ms after it saw
/// them (foca accepts the new identity late while it holds the old one down: 620 ms twice
/// in `speaker_l2`'s healed partition, where 250 ms left two nodes answering for 300 ms).
/// The hold costs no connection (the old owner serves meanwhile), only a later move.
pub const HOLD: Duration = Duration::from_millis(1000);

/// IPs won but not answered for yet, each until when.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Takeover {
    held: BTreeMap<IpAddr, Instant>,
}

/// Why an IP is not answered for yet (for `edgelbctl explain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// Answered for from this moment on, if still won.
    pub until: Instant,
}

impl Takeover {
    /// Removes from `plan.owned` the IPs this node newly won that a live node may still
    /// answer for, until their hold ends. `answering` is what this node answers for now,
    /// `before` the owners of the previous plan, `live` whether a node is a live member.
    /// Newly won IPs whose previous owner (in `before`) is another node that is no longer
    /// live are a failover: never held.
    pub fn filter(
        &mut self,
        plan: &mut L2Plan,
        answering: &BTreeSet<IpAddr>,
        before: &[Owner],
        live: impl Fn(&str) -> bool,
        me: &str,
        now: Instant,
    ) {
        let won: BTreeSet<IpAddr> = plan.owned.values().flatten().copied().collect();
        self.held.retain(|ip, _| won.contains(ip));
        // Who owned each IP before, indexed once and only when some IP is new: a takeover
        // of thousands of IPs looked each up in the whole list (10 000 x 3 000 compares).
        let mut previous_owner: Option<HashMap<IpAddr, Option<&str>>> = None;
        for ip in &won {
            if answering.contains(ip) || self.held.contains_key(ip) {
                continue;
            }
            let previous = previous_owner
                .get_or_insert_with(|| {
                    let mut m = HashMap::with_capacity(before.len());
                    for o in before {
                        m.entry(o.ip).or_insert(o.node.as_deref());
                    }
                    m
                })
                .get(ip)
                .copied()
                .flatten();
            let failover = previous.is_some_and(|p| p != me && !live(p));
            if !failover {
                self.held.insert(*ip, now + HOLD);
            }
        }
        self.held.retain(|_, until| *until > now);
        for ips in plan.owned.values_mut() {
            ips.retain(|ip| !self.held.contains_key(ip));
        }
        plan.owned.retain(|_, ips| !ips.is_empty());
    }

    /// This node may have been replaced without knowing it (it stalled, was declared
    /// down, or was cut off): stop answering for everything, and answer again (announcing
    /// afresh) after the hold, if still won, once the others have seen it back.
    pub fn hold_all(&mut self, answering: &BTreeSet<IpAddr>, now: Instant) {
        for ip in answering {
            self.held.insert(*ip, now + HOLD);
        }
    }

    /// When the next hold ends.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.values().min().copied()
    }

    /// Every IP held, with when its hold ends (for `edgelbctl explain`).
    pub fn held_ips(&self) -> impl Iterator<Item = (IpAddr, Instant)> + '_ {
        self.held.iter().map(|(ip, until)| (*ip, *until))
    }

    /// Whether `ip` is held, and until when.
    pub fn held(&self, ip: &IpAddr) -> Option<Held> {
        self.held.get(ip).map(|until| Held { until: *until })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::ObjectKey;
    use proptest::prelude::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn plan(ips: &[u8]) -> L2Plan {
        let mut p = L2Plan::default();
        if !ips.is_empty() {
            p.owned
                .insert("eth0".into(), ips.iter().map(|l| ip(*l)).collect());
        }
        p
    }

    fn owner(last: u8, node: Option<&str>) -> Owner {
        Owner {
            service: ObjectKey::new("default", "web"),
            ip: ip(last),
            node: node.map(std::sync::Arc::from),
        }
    }

    fn owned(p: &L2Plan) -> Vec<IpAddr> {
        p.owned.values().flatten().copied().collect()
    }

    #[test]
    fn an_ip_taken_from_a_failed_owner_is_answered_at_once() {
        let t0 = Instant::now();
        let mut t = Takeover::default();
        let mut p = plan(&[100]);
        let before = [owner(100, Some("node-1"))];
        t.filter(&mut p, &BTreeSet::new(), &before, |_| false, "node-0", t0);
        assert_eq!(owned(&p), vec![ip(100)]);
        assert_eq!(t.next_due(), None);
    }

    #[test]
    fn an_ip_moving_back_from_a_live_owner_is_held_then_answered() {
        let t0 = Instant::now();
        let mut t = Takeover::default();
        let before = [owner(100, Some("node-1"))];
        let mut p = plan(&[100]);
        t.filter(&mut p, &BTreeSet::new(), &before, |_| true, "node-0", t0);
        assert!(owned(&p).is_empty(), "held while node-1 may answer");
        assert_eq!(t.held(&ip(100)), Some(Held { until: t0 + HOLD }));
        let mut p = plan(&[100]);
        t.filter(
            &mut p,
            &BTreeSet::new(),
            &before,
            |_| true,
            "node-0",
            t0 + HOLD - Duration::from_millis(1),
        );
        assert!(owned(&p).is_empty());
        let mut p = plan(&[100]);
        t.filter(
            &mut p,
            &BTreeSet::new(),
            &before,
            |_| true,
            "node-0",
            t0 + HOLD,
        );
        assert_eq!(owned(&p), vec![ip(100)]);
        assert_eq!(t.next_due(), None);
    }

    #[test]
    fn a_restart_or_a_new_ip_waits_for_whoever_may_answer_but_an_answered_ip_never_does() {
        let t0 = Instant::now();
        let mut t = Takeover::default();
        // First plan after a start: no previous owner known.
        let mut p = plan(&[100, 101]);
        let answering: BTreeSet<IpAddr> = [ip(101)].into();
        t.filter(&mut p, &answering, &[], |_| true, "node-0", t0);
        assert_eq!(owned(&p), vec![ip(101)]);
        assert!(t.held(&ip(100)).is_some());
    }

    #[test]
    fn after_a_stall_everything_is_released_and_announced_again_after_the_hold() {
        let t0 = Instant::now();
        let mut t = Takeover::default();
        let answering: BTreeSet<IpAddr> = [ip(100)].into();
        t.hold_all(&answering, t0);
        let before = [owner(100, Some("node-0"))];
        let mut p = plan(&[100]);
        t.filter(&mut p, &answering, &before, |_| true, "node-0", t0);
        assert!(owned(&p).is_empty(), "released during the hold");
        let mut p = plan(&[100]);
        t.filter(
            &mut p,
            &BTreeSet::new(),
            &before,
            |_| true,
            "node-0",
            t0 + HOLD,
        );
        assert_eq!(owned(&p), vec![ip(100)]);
    }

    #[test]
    fn an_ip_lost_during_its_hold_is_forgotten() {
        let t0 = Instant::now();
        let mut t = Takeover::default();
        let mut p = plan(&[100]);
        t.filter(&mut p, &BTreeSet::new(), &[], |_| true, "node-0", t0);
        let mut p = plan(&[]);
        t.filter(&mut p, &BTreeSet::new(), &[], |_| true, "node-0", t0);
        assert_eq!(t.next_due(), None);
    }

    proptest! {
        /// The filter only ever removes IPs from the plan, never adds one, and an IP this
        /// node already answers for is never withheld (no flap for a steady owner).
        #[test]
        fn the_filter_only_withholds_ips_not_answered_for(
            won in proptest::collection::btree_set(0u8..32, 0..16),
            answering in proptest::collection::btree_set(0u8..32, 0..16),
            live_mask in any::<u32>(),
            prev in proptest::collection::vec((0u8..32, 0u8..4), 0..32),
        ) {
            let t0 = Instant::now();
            let names = ["node-0", "node-1", "node-2", "node-3"];
            let before: Vec<Owner> = prev.iter().map(|(l, n)| owner(*l, Some(names[*n as usize]))).collect();
            let answering: BTreeSet<IpAddr> = answering.iter().map(|l| ip(*l)).collect();
            let won_v: Vec<u8> = won.iter().copied().collect();
            let mut p = plan(&won_v);
            let mut t = Takeover::default();
            let live = |n: &str| names.iter().position(|x| *x == n).is_some_and(|i| live_mask & (1 << i) != 0);
            t.filter(&mut p, &answering, &before, live, "node-0", t0);
            let kept: BTreeSet<IpAddr> = owned(&p).into_iter().collect();
            let won_ips: BTreeSet<IpAddr> = won.iter().map(|l| ip(*l)).collect();
            prop_assert!(kept.is_subset(&won_ips));
            for a in answering.intersection(&won_ips) {
                prop_assert!(kept.contains(a));
            }
        }
    }
}

//! L2: plans this node's owned IPs ([`crate::plan::l2`], incrementally), holds back the
//! ones a live node may still answer for ([`crate::plan::takeover`]), and converges the
//! [`L2Actuator`] to the plan. One concern: from (snapshot, allocation, members, guard) to
//! the IPs answered on each interface.
//!
//! A re-plan where nothing changed (the members, interfaces, denied IPs and holds as they
//! were: a tick at rest) does no pass over the IPs: the planner says the plan stands, and
//! the last plan, actuator state and heartbeat targets are kept (issue 17).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use super::guard::L2Guard;
use crate::actuate::l2::L2Actuator;
use crate::ipam::Assignments;
use crate::plan::l2::{L2Node, L2Plan, L2Requests, Members};
use crate::plan::l2_incremental::{L2Planner, Replanned};
use crate::plan::takeover::Takeover;
use crate::snapshot::Snapshot;

/// How many of the nodes ranked next for each owned IP get our owner heartbeats: the first
/// takes over when we fail; the second covers a first that fails with us.
const HEARTBEAT_SUCCESSORS: usize = 2;

/// What an apply changed, for its log line.
#[derive(Debug, Default, PartialEq, Eq)]
struct OwnedChange {
    owned: usize,
    added: usize,
    removed: usize,
    /// Up to [`OwnedChange::EXAMPLES`] of the added IPs (`ip@interface`).
    examples: Vec<String>,
}

impl OwnedChange {
    const EXAMPLES: usize = 4;

    fn between(
        old: &BTreeMap<String, BTreeSet<IpAddr>>,
        new: &BTreeMap<String, BTreeSet<IpAddr>>,
    ) -> OwnedChange {
        let empty = BTreeSet::new();
        let mut c = OwnedChange::default();
        for (i, ips) in new {
            let before = old.get(i).unwrap_or(&empty);
            c.owned += ips.len();
            for ip in ips.difference(before) {
                c.added += 1;
                if c.examples.len() < Self::EXAMPLES {
                    c.examples.push(format!("{ip}@{i}"));
                }
            }
            c.removed += before.difference(ips).count();
        }
        c.removed += old
            .iter()
            .filter(|(i, _)| !new.contains_key(*i))
            .map(|(_, ips)| ips.len())
            .sum::<usize>();
        c
    }
}

/// The L2 planner and actuator.
pub struct L2Announcer {
    actuator: L2Actuator,
    plan: L2Plan,
    planner: L2Planner,
    /// IPs won but held back while another live node may still answer for them.
    takeover: Takeover,
    /// Whom this node sends owner heartbeats to (made with each new plan).
    heartbeat_targets: BTreeSet<String>,
    /// Every IP was released ([`L2Announcer::hold_all`]): the next apply must run in full.
    released: bool,
}

impl L2Announcer {
    /// An announcer owning nothing yet.
    pub fn new() -> L2Announcer {
        L2Announcer {
            actuator: L2Actuator::new(edgelb_l2::Config::default()),
            plan: L2Plan::default(),
            planner: L2Planner::default(),
            takeover: Takeover::default(),
            heartbeat_targets: BTreeSet::new(),
            released: false,
        }
    }

    /// Re-plans, evaluates the split-brain `guard` on the planner's requests, and applies.
    /// With `new_inputs` false only the members or interfaces changed (or a hold ended):
    /// the planner re-elects only for the nodes that changed, and when nothing changed
    /// that the plan, the guard's verdicts or the holds read, nothing is done. The IPs the
    /// guard denies (no quorum in their scope) are not owned, whoever won them.
    pub async fn apply(
        &mut self,
        snap: &Snapshot,
        a: &Assignments,
        me: &L2Node,
        guard: &mut L2Guard,
        new_inputs: bool,
    ) {
        let now = Instant::now();
        let (members, may_own) = (guard.members(), guard.may_own());
        let replanned = if new_inputs {
            None
        } else {
            self.planner.replan_members(me, members, may_own)
        };
        let replanned = match replanned {
            Some(r) => r,
            None => Replanned::Changed(self.planner.plan(snap, a, me, members, may_own)),
        };
        let empty = L2Requests::default();
        let (requests, generation) = self.planner.requests().unwrap_or((&empty, 0));
        let denied_changed = guard.evaluate(snap, me, requests, generation, now);
        let mut plan = match replanned {
            Replanned::Changed(plan) => plan,
            Replanned::Same if !denied_changed && !self.released && !self.hold_ended(now) => {
                return;
            }
            Replanned::Same => self.planner.last_plan().unwrap_or_default(),
        };
        self.released = false;
        let (members, may_own, denied) = (guard.members(), guard.may_own(), guard.denied());
        if !denied.is_empty() {
            for ips in plan.owned.values_mut() {
                ips.retain(|ip| !denied.contains(ip));
            }
            plan.owned.retain(|_, ips| !ips.is_empty());
            plan.unplaced.retain(|ip| !denied.contains(ip));
        }
        let live = |n: &str| match members {
            Members::Static => true,
            Members::Gossip(live) => live.contains_key(n),
        };
        self.takeover.filter(
            &mut plan,
            &self.answering(),
            &self.plan.owners,
            live,
            &me.name,
            now,
        );
        for ip in &plan.unplaced {
            tracing::warn!(%ip, "won the election but no interface can announce it");
        }
        if let Some(errors) = self.actuator.apply(&plan).await {
            // Counts and a few examples, not every owned IP: at 10 000 IPs a line listing
            // them all was ~200 KB, written on every change of ownership.
            let change = OwnedChange::between(&self.plan.owned, &plan.owned);
            // `may_own` false: the join wait, or the guard denies IPs (no quorum in
            // their scope).
            let may_own = may_own && denied.is_empty();
            tracing::info!(
                owned = change.owned,
                added = change.added,
                removed = change.removed,
                examples = ?change.examples,
                may_own,
                denied = denied.len(),
                "l2 applied"
            );
            for e in errors {
                tracing::warn!(error = %e, "l2 apply");
            }
        }
        self.plan = plan;
        self.heartbeat_targets = if self.plan.owned.values().all(BTreeSet::is_empty) {
            BTreeSet::new()
        } else {
            self.planner.successors(&me.name, HEARTBEAT_SUCCESSORS)
        };
    }

    /// The IPs answered for now.
    fn answering(&self) -> BTreeSet<IpAddr> {
        self.actuator.owned().into_values().flatten().collect()
    }

    /// This node may have been replaced without knowing it: releases every IP now; they
    /// are owned (and announced) again when the hold ends ([`Takeover::hold_all`]) and the
    /// next [`L2Announcer::apply`] runs. False when nothing was answered for.
    pub fn hold_all(&mut self) -> bool {
        let answering = self.answering();
        if answering.is_empty() {
            return false;
        }
        tracing::warn!(
            ips = answering.len(),
            "we may have been replaced: releasing our L2 IPs, announcing them again after the hold"
        );
        self.takeover.hold_all(&answering, Instant::now());
        self.released = true;
        true
    }

    /// The IPs this node won and waits to answer for (a live node may still answer for
    /// them: the handoff), each with when it will.
    pub fn held(&self) -> Vec<(IpAddr, Instant)> {
        self.takeover.held_ips().collect()
    }

    /// Whether a hold has ended, so that a re-plan would answer for more.
    pub fn hold_ended(&self, now: Instant) -> bool {
        self.takeover.next_due().is_some_and(|t| t <= now)
    }

    /// Whom this node sends owner heartbeats to: the nodes ranked next for the IPs it
    /// answers for ([`crate::membership::heartbeat`]); nobody when it answers for none.
    pub fn heartbeat_targets(&self) -> &BTreeSet<String> {
        &self.heartbeat_targets
    }

    /// The actuator (owned IPs and stats).
    pub fn actuator(&self) -> &L2Actuator {
        &self.actuator
    }

    /// The last plan.
    pub fn plan(&self) -> &L2Plan {
        &self.plan
    }

    /// The actuator, for the graceful stop.
    pub fn into_actuator(self) -> L2Actuator {
        self.actuator
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn plan(entries: &[(u8, u8)]) -> BTreeMap<String, BTreeSet<IpAddr>> {
        let mut m: BTreeMap<String, BTreeSet<IpAddr>> = BTreeMap::new();
        for (i, last) in entries {
            m.entry(format!("eth{i}"))
                .or_default()
                .insert(IpAddr::from([192, 0, 2, *last]));
        }
        m
    }

    proptest! {
        /// The log line's counts are the set differences, per interface.
        #[test]
        fn the_change_counts_what_was_added_and_removed(
            old in proptest::collection::vec((0u8..3, any::<u8>()), 0..60),
            new in proptest::collection::vec((0u8..3, any::<u8>()), 0..60),
        ) {
            let (old, new) = (plan(&old), plan(&new));
            let flat = |m: &BTreeMap<String, BTreeSet<IpAddr>>| -> BTreeSet<(String, IpAddr)> {
                m.iter().flat_map(|(i, ips)| ips.iter().map(move |ip| (i.clone(), *ip))).collect()
            };
            let (o, n) = (flat(&old), flat(&new));
            let c = OwnedChange::between(&old, &new);
            prop_assert_eq!(c.owned, n.len());
            prop_assert_eq!(c.added, n.difference(&o).count());
            prop_assert_eq!(c.removed, o.difference(&n).count());
            prop_assert_eq!(c.examples.len(), c.added.min(OwnedChange::EXAMPLES));
        }
    }
}

//! Allocation after a few changes, without re-checking every Service.
//!
//! [`IncrementalAllocator`] keeps what the last run ended with (its snapshot, outcomes, who
//! holds each IP, the first-free scan position of every pool) and, for a new snapshot,
//! re-checks only:
//!
//! - the Services added, removed or edited since the last snapshot (an edit is an object
//!   for the key that differs from the last one; the snapshots' persistent maps are diffed,
//!   which skips every node the changes did not touch);
//! - the Services whose last outcome was a failure (a freed address may now serve them);
//! - the Services of a namespace whose labels changed (`serviceAllocation.namespaceSelectors`);
//! - and, transitively, every Service that holds an IP one of those holds (Services sharing
//!   an IP are re-checked together, in key order, as the full run would).
//!
//! A change to the valid pools (any `IPAddressPool` edit that changes what the allocator
//! sees, including which node pools a scoped pool serves) or to the node pools' names or
//! labels (which pools each Service selects) falls back to a full run from the last
//! outcomes. A Service's node-pool keys are re-checked together, as one Service.
//!
//! Why this equals [`super::allocate`] on the same snapshot and the last outcomes: a Service
//! that is not re-checked had an IP set of its own in the last run, with the same request,
//! pools and `serviceAllocation` verdicts; pass 1 of a full run keeps exactly those IPs
//! (each in the pool it came from) because the only other Services that can hold them are
//! its sharers, which are not re-checked either and were compatible with it. So the full
//! run's pass 1 differs from the last run's end only on the re-checked Services, whose
//! kept IPs are disjoint from the others', and pass 2 sees the same used addresses in both:
//! the first-free scan gives the same addresses because a pool's scan position is moved
//! back to every address freed since. The property test in `tests.rs` checks it over
//! random sequences of adds, removals, edits and pool edits.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use super::pool::PoolView;
use super::range::{to_u128, Family};
use super::{
    cursor_slot, first_pass, fresh, keys_of, selected_node_pools, AllocationKey, Assignments,
    Cursor, Holder, Outcome, Pending, Run, Selection,
};
use crate::nodepool::{NodePoolView, POOL_CLOUD_CLASS};
use crate::snapshot::{ObjectKey, Snapshot};
use imbl::ordmap::DiffItem;

/// How an update was computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateKind {
    /// Every Service was checked: the first run, or the pools changed.
    Full,
    /// Only this many Services were checked.
    Incremental {
        /// Services re-checked (changed, failed before, or sharing an IP with those).
        rechecked: usize,
    },
}

/// What one update changed, restricted to the Services it looked at:
/// `status::changes::diff(&before, &after)` equals the diff of the whole results.
#[derive(Clone, Debug, PartialEq)]
pub struct Update {
    /// How it was computed.
    pub kind: UpdateKind,
    /// The previous outcomes of the Services re-checked or removed.
    pub before: Assignments,
    /// The new outcomes of the Services re-checked.
    pub after: Assignments,
}

/// Allocation kept across snapshots; see the module documentation.
#[derive(Debug)]
pub struct IncrementalAllocator {
    snap: Snapshot,
    assignments: Assignments,
    used: HashMap<IpAddr, Holder>,
    shared: HashMap<Arc<str>, BTreeSet<IpAddr>>,
    cursors: Vec<Cursor>,
    /// Services whose outcome is an error: re-checked on every update.
    failed: BTreeSet<ObjectKey>,
    /// IPs a failed allocation still holds for the rest of its run (kept in pass 1 for one
    /// family, then pass 2 could not complete it), as the full run holds them.
    phantom: HashMap<AllocationKey, Vec<IpAddr>>,
    /// Which node pools each Service selects.
    select: Selection,
}

impl IncrementalAllocator {
    /// A full run: the result is `allocate(snap, previous)`.
    pub fn new(snap: &Snapshot, previous: &Assignments) -> IncrementalAllocator {
        IncrementalAllocator::new_with(selected_node_pools, snap, previous)
    }

    /// A full run with the node pools of each Service given by `select`: the result is
    /// `allocate_with(select, snap, previous)`.
    pub fn new_with(
        select: Selection,
        snap: &Snapshot,
        previous: &Assignments,
    ) -> IncrementalAllocator {
        let mut me = IncrementalAllocator {
            select,
            snap: snap.clone(),
            assignments: Assignments::default(),
            used: HashMap::new(),
            shared: HashMap::new(),
            cursors: Vec::new(),
            failed: BTreeSet::new(),
            phantom: HashMap::new(),
        };
        me.recheck(snap, snap.services.keys(), previous);
        me
    }

    /// The current outcomes.
    pub fn assignments(&self) -> &Assignments {
        &self.assignments
    }

    /// The snapshot of the last run.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snap
    }

    /// The Services whose outcome is an error.
    pub fn failed(&self) -> &BTreeSet<ObjectKey> {
        &self.failed
    }

    /// Allocates for `snap`; the result (see [`IncrementalAllocator::assignments`]) equals
    /// `allocate(snap, &last)` where `last` is the result before the call.
    pub fn update(&mut self, snap: &Snapshot) -> Update {
        let _span = tracing::debug_span!("allocate_update").entered();
        if snap.allocation_pools != self.snap.allocation_pools
            || node_pools_changed(&self.snap, snap)
        {
            let before = std::mem::take(&mut self.assignments);
            *self = IncrementalAllocator::new_with(self.select, snap, &before);
            return Update {
                kind: UpdateKind::Full,
                before,
                after: self.assignments.clone(),
            };
        }
        let (mut dirty, removed) = self.changed_services(snap);

        // Sharers of an IP are re-checked together.
        let mut visited: BTreeSet<ObjectKey> = dirty.union(&removed).cloned().collect();
        let mut stack: Vec<ObjectKey> = visited.iter().cloned().collect();
        while let Some(k) = stack.pop() {
            for ip in self.held(&k) {
                let Some(h) = self.used.get(&ip) else {
                    continue;
                };
                for u in &h.users {
                    if visited.insert(u.clone()) {
                        dirty.insert(u.clone());
                        stack.push(u.clone());
                    }
                }
            }
        }

        // Release what they hold and set their outcomes aside.
        let mut before = Assignments::default();
        for k in dirty.iter().chain(&removed) {
            for ip in self.held(k) {
                self.release(&ip);
            }
            self.phantom.retain(|a, _| a.service != *k);
            self.failed.remove(k);
            let akeys: Vec<AllocationKey> = self
                .assignments
                .of_service(k)
                .map(|(a, _)| a.clone())
                .collect();
            for akey in akeys {
                if let Some(o) = self.assignments.outcomes.remove(&akey) {
                    before.outcomes.insert(akey, o);
                }
            }
        }
        dirty.retain(|k| snap.services.contains_key(k));
        self.recheck(snap, dirty.iter(), &before);
        let after = Assignments {
            outcomes: dirty
                .iter()
                .flat_map(|k| {
                    self.assignments
                        .of_service(k)
                        .map(|(a, o)| (a.clone(), o.clone()))
                })
                .collect(),
        };
        Update {
            kind: UpdateKind::Incremental {
                rechecked: dirty.len(),
            },
            before,
            after,
        }
    }

    /// Services added or replaced (and those of namespaces whose labels changed), and
    /// Services removed, since the last snapshot; plus the last failures.
    fn changed_services(&self, snap: &Snapshot) -> (BTreeSet<ObjectKey>, BTreeSet<ObjectKey>) {
        let mut dirty = self.failed.clone();
        let mut removed = BTreeSet::new();
        if std::ptr::eq(&**snap, &*self.snap) {
            return (dirty, removed);
        }
        // The maps share every node the change did not touch (snapshots of one store), and
        // the diff skips shared nodes: O(changes x log n), not a walk of every Service. A
        // Service replaced by an equal one (a resync) is not a change.
        for item in self.snap.services.diff(&snap.services) {
            match item {
                DiffItem::Add(k, _) | DiffItem::Update { new: (k, _), .. } => {
                    dirty.insert(k.clone());
                }
                DiffItem::Remove(k, _) => {
                    removed.insert(k.clone());
                }
            }
        }
        if snap.namespace_labels != self.snap.namespace_labels {
            let namespaces: BTreeSet<&Arc<str>> = snap
                .namespace_labels
                .keys()
                .chain(self.snap.namespace_labels.keys())
                .filter(|ns| snap.namespace_labels.get(*ns) != self.snap.namespace_labels.get(*ns))
                .collect();
            for ns in namespaces {
                let from = ObjectKey {
                    namespace: ns.clone(),
                    name: "".into(),
                };
                dirty.extend(
                    snap.services
                        .range(from..)
                        .take_while(|(k, _)| k.namespace == *ns)
                        .map(|(k, _)| k.clone()),
                );
            }
        }
        (dirty, removed)
    }

    /// The IPs a Service holds in the tables, over all its keys: their IPs, or what each
    /// kept before failing.
    fn held(&self, k: &ObjectKey) -> Vec<IpAddr> {
        self.assignments
            .of_service(k)
            .flat_map(|(akey, o)| match o {
                Ok(a) => a.ips.clone(),
                Err(_) => self.phantom.get(akey).cloned().unwrap_or_default(),
            })
            .collect()
    }

    /// Frees an IP (all its holders are being re-checked) and moves the first-free scan of
    /// every pool holding it back to it.
    fn release(&mut self, ip: &IpAddr) {
        let Some(holder) = self.used.remove(ip) else {
            return;
        };
        if let Some(s) = holder.sharing {
            if let Some(set) = self.shared.get_mut(&s.key) {
                set.remove(ip);
                if set.is_empty() {
                    self.shared.remove(&s.key);
                }
            }
        }
        rewind(&self.snap.allocation_pools, &mut self.cursors, ip);
    }

    /// Passes 1 and 2 over `keys` (in key order), with the tables as they are; records the
    /// outcomes, failures and phantom holdings.
    fn recheck<'k>(
        &mut self,
        snap: &Snapshot,
        keys: impl Iterator<Item = &'k ObjectKey>,
        previous: &Assignments,
    ) {
        let pools = &snap.allocation_pools;
        let mut run = Run::new(pools);
        run.used = std::mem::take(&mut self.used);
        run.shared = std::mem::take(&mut self.shared);
        if self.cursors.len() == run.cursors.len() {
            run.cursors = std::mem::take(&mut self.cursors);
        }
        let mut pending: Vec<Pending> = Vec::new();
        for key in keys {
            let Some(svc) = snap.services.get(key) else {
                continue;
            };
            let akeys = match keys_of(self.select, snap, key, svc) {
                Ok(k) => k,
                Err(e) => {
                    self.record(AllocationKey::cluster(key.clone()), Err(e), None);
                    continue;
                }
            };
            for akey in akeys {
                let prev = previous.outcomes.get(&akey);
                if let Some(outcome) = first_pass(&mut run, snap, &akey, svc, prev, &mut pending) {
                    self.record(akey, outcome, None);
                }
            }
        }
        for (akey, req, serves, kept) in pending {
            let kept_ips = kept.as_ref().map(|(_, ips)| ips.clone());
            let outcome = fresh(&mut run, &akey, &req, &serves, kept);
            self.record(akey, outcome, kept_ips);
        }
        self.used = run.used;
        self.shared = run.shared;
        self.cursors = run.cursors;
        self.snap = snap.clone();
    }

    fn record(&mut self, akey: AllocationKey, outcome: Outcome, kept: Option<Vec<IpAddr>>) {
        if outcome.is_err() {
            self.failed.insert(akey.service.clone());
            if let Some(ips) = kept {
                self.phantom.insert(akey.clone(), ips);
            }
        }
        self.assignments.outcomes.insert(akey, outcome);
    }
}

/// Whether what decides which node pools a Service selects, and which of them get an IP,
/// changed: the node pools' names, labels and cloud class annotation. A node joining or
/// leaving a pool is not such a change (unless it changes the labels a label-only pool's
/// nodes share).
fn node_pools_changed(before: &Snapshot, after: &Snapshot) -> bool {
    fn shape(v: &NodePoolView) -> (&BTreeMap<String, String>, Option<&String>) {
        (&v.labels, v.annotations.get(POOL_CLOUD_CLASS))
    }
    !before
        .node_pools
        .iter()
        .map(|(n, v)| (n, shape(v)))
        .eq(after.node_pools.iter().map(|(n, v)| (n, shape(v))))
}

/// Moves the first-free scan of every pool holding `ip` back to it, so that "everything
/// before the scan position is used" stays true after `ip` is freed.
fn rewind(pools: &[PoolView], cursors: &mut [Cursor], ip: &IpAddr) {
    let family = Family::of(ip);
    let n = to_u128(*ip);
    for (idx, pool) in pools.iter().enumerate() {
        if !pool.contains(ip) {
            continue;
        }
        let Some(r) = pool
            .ranges
            .iter()
            .position(|r| r.family() == family && r.contains(ip))
        else {
            continue;
        };
        let Some(c) = cursors.get_mut(cursor_slot(idx, family)) else {
            continue;
        };
        let earlier = match pool.ranges.get(c.range) {
            None => true,
            Some(cr) => (r, n) < (c.range, c.next.unwrap_or(cr.bounds().0)),
        };
        if earlier {
            *c = Cursor {
                range: r,
                next: Some(n),
            };
        }
    }
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;

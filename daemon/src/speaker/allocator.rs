//! Allocation across snapshots, as the run loops use it: sticky, incremental, and in
//! cluster mode deferring to the leader's record on followers.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::ipam::{
    selected_node_pools, split_by_node_pool, status_ips, Allocation, AllocationKey, Assignments,
    IncrementalAllocator, Outcome,
};
use crate::snapshot::{ObjectKey, Snapshot};
use crate::status::changes::{diff, Change};
use imbl::ordmap::DiffItem;

/// Allocation across snapshots: keeps the previous result so that IPs stay put, and
/// re-checks only the Services that changed (see `ipam::incremental`).
#[derive(Debug, Default)]
pub struct Allocator {
    inner: Option<IncrementalAllocator>,
    /// A follower's Services whose record it could not take at the last step (the
    /// allocator refused it): looked at again on every step, as a record can become
    /// acceptable without changing (a sharer that may share again, a freed IP).
    disagreeing: BTreeSet<ObjectKey>,
}

impl Allocator {
    /// Allocates for `snap`; the first run is seeded from the Services' status so that a
    /// restart never moves an IP. Returns the result and what changed, each change logged.
    pub fn step(&mut self, snap: &Snapshot) -> (Assignments, Vec<Change>) {
        let changes = match &mut self.inner {
            Some(inc) => {
                let u = inc.update(snap);
                tracing::debug!(kind = ?u.kind, "allocated");
                diff(&u.before, &u.after)
            }
            None => {
                let seed = Assignments::from_status(snap);
                let inc = IncrementalAllocator::new(snap, &seed);
                let changes = diff(&seed, inc.assignments());
                self.inner = Some(inc);
                changes
            }
        };
        log_changes(&changes, "allocation");
        (self.current(), changes)
    }

    /// A follower's step (cluster mode, not holding the Lease): as [`Allocator::step`], then
    /// wherever a Service that changed in this snapshot has a status (the leader's record)
    /// naming other IPs than this speaker's own result, the leader's IPs are taken and the
    /// rest re-allocated around them. Two speakers that saw Services arrive in a different
    /// order can otherwise hold different IPs for them; the leader's record settles it, as
    /// MetalLB's speakers announce what its controller wrote.
    pub fn step_following(&mut self, snap: &Snapshot) -> (Assignments, Vec<Change>) {
        let mut changed = match &self.inner {
            Some(inc) => changed_services(inc.snapshot(), snap),
            // The first run is seeded from the status already; what of the record it
            // could not take (two Services on one IP they may not share) is looked at
            // again on the next steps, as any refused record is.
            None => {
                let (mine, changes) = self.step(snap);
                let all: BTreeSet<ObjectKey> = snap.services.keys().cloned().collect();
                self.disagreeing = status_disagreements(&mine, snap, &all)
                    .into_iter()
                    .map(|(k, _)| k.service)
                    .collect();
                return (mine, changes);
            }
        };
        let (mut mine, mut changes) = self.step(snap);
        // Also held against the record: a Service this step moved without a change of its
        // own (a sharer's unrecorded allocation took its IP), one that fails while its
        // record holds IPs (another Service's unrecorded allocation holds them), and one
        // whose record was refused before. Else this speaker could stop announcing what
        // the record still gives a Service, for good.
        changed.extend(changes.iter().map(|c| c.key().service.clone()));
        if let Some(inc) = &self.inner {
            changed.extend(inc.failed().iter().cloned());
        }
        changed.append(&mut self.disagreeing);
        let mut looked_at = changed.clone();
        // Each Service is taken from the record at most once per step (a record the
        // allocator refuses, e.g. an IP outside every pool, stays refused).
        let mut taken_from_record: BTreeSet<ObjectKey> = BTreeSet::new();
        loop {
            changed.retain(|k| !taken_from_record.contains(k));
            let theirs = status_disagreements(&mine, snap, &changed);
            if theirs.is_empty() {
                break;
            }
            taken_from_record.extend(theirs.iter().map(|(k, _)| k.service.clone()));
            let inc = follow_record(snap, &mine, theirs);
            let adopted = diff(&mine, inc.assignments());
            log_changes(&adopted, "took the leader's allocation");
            // Whoever the new run moved is looked at again.
            changed = adopted.iter().map(|c| c.key().service.clone()).collect();
            looked_at.extend(changed.iter().cloned());
            self.inner = Some(inc);
            changes.extend(adopted);
            mine = self.current();
        }
        self.disagreeing = status_disagreements(&mine, snap, &looked_at)
            .into_iter()
            .map(|(k, _)| k.service)
            .collect();
        (mine, changes)
    }

    /// Whether it has not allocated yet (its first step seeds from the record).
    pub fn is_idle(&self) -> bool {
        self.inner.is_none()
    }

    fn current(&self) -> Assignments {
        self.inner
            .as_ref()
            .map(|i| i.assignments().clone())
            .unwrap_or_default()
    }
}

/// A full run from `mine` with the record's IPs (`theirs`) in place of this speaker's own
/// for those Services. The record wins: an IP of ours that the record gives another Service
/// is re-allocated, never kept against the record, unless our outcome for it is recorded
/// too (two Services the record lets share an IP keep sharing it).
fn follow_record(
    snap: &Snapshot,
    mine: &Assignments,
    theirs: Vec<(AllocationKey, Vec<IpAddr>)>,
) -> IncrementalAllocator {
    let taken: BTreeSet<IpAddr> = theirs
        .iter()
        .flat_map(|(_, ips)| ips.iter().copied())
        .collect();
    let mut seed = mine.clone();
    let against: Vec<AllocationKey> = seed
        .outcomes
        .iter()
        .filter(|(k, o)| {
            matches!(o, Ok(a) if a.ips.iter().any(|ip| taken.contains(ip)))
                && !is_recorded(snap, k, o)
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in against {
        seed.outcomes.remove(&k);
    }
    for (key, ips) in theirs {
        seed.outcomes.insert(
            key,
            Ok(Allocation {
                pool: "".into(),
                ips,
            }),
        );
    }
    IncrementalAllocator::new(snap, &seed)
}

fn log_changes(changes: &[Change], what: &str) {
    for c in changes {
        let service = c.key().service.to_string();
        match c {
            Change::Failed { .. } => {
                tracing::warn!(%service, reason = c.reason(), message = %c.message(), "{what}")
            }
            _ => {
                tracing::info!(%service, reason = c.reason(), message = %c.message(), "{what}")
            }
        }
    }
}

/// Services added or changed between two snapshots. Snapshots of one store share every
/// map node a change did not touch, and the diff skips those: O(changes x log n).
fn changed_services(before: &Snapshot, after: &Snapshot) -> BTreeSet<ObjectKey> {
    before
        .services
        .diff(&after.services)
        .filter_map(|item| match item {
            DiffItem::Add(k, _) | DiffItem::Update { new: (k, _), .. } => Some(k.clone()),
            DiffItem::Remove(..) => None,
        })
        .collect()
}

/// Among `keys`, the Services whose status lists IPs that differ (as a set) from this
/// speaker's successful allocation; with the status's IPs. A Service without status IPs
/// has no record to follow and is left out.
pub fn status_disagreements(
    mine: &Assignments,
    snap: &Snapshot,
    keys: &BTreeSet<ObjectKey>,
) -> Vec<(AllocationKey, Vec<IpAddr>)> {
    let mut out = Vec::new();
    for key in keys {
        let Some(svc) = snap.services.get(key) else {
            continue;
        };
        let mut recorded = status_ips(svc);
        if recorded.is_empty() {
            continue;
        }
        recorded.sort();
        recorded.dedup();
        // With node pools the record is the union over the pools.
        let mut own: Vec<IpAddr> = match mine.merged(key) {
            Some(Ok(a)) => a.ips,
            _ => Vec::new(),
        };
        own.sort();
        own.dedup();
        if own != recorded {
            out.extend(split_by_node_pool(
                selected_node_pools,
                snap,
                key,
                svc,
                status_ips(svc),
            ));
        }
    }
    out
}

/// What a speaker announces in cluster mode: only the allocations the record (the
/// Services' status, written by the Lease holder) already shows, as MetalLB's speakers
/// announce only what its controller wrote. Every speaker, the leader included, announces
/// the same IPs, and two Services are never announced with one IP as long as the record
/// does not give them one (which only the fenced writer could). A node pool's allocation
/// counts as recorded when the record (the union over the Service's pools) lists all its
/// IPs.
///
/// Made from `a` by removing what is not recorded, not by collecting what is: at rest
/// (everything recorded) the result is `a` itself, every node shared, so a cluster-mode
/// speaker does not hold a second copy of every outcome, and comparing two results skips
/// the shared nodes.
pub fn recorded_only(snap: &Snapshot, a: &Assignments) -> Assignments {
    let unrecorded: Vec<&AllocationKey> = a
        .outcomes
        .iter()
        .filter(|(key, outcome)| !is_recorded(snap, key, outcome))
        .map(|(k, _)| k)
        .collect();
    let mut outcomes = a.outcomes.clone();
    for key in unrecorded {
        outcomes.remove(key);
    }
    Assignments { outcomes }
}

/// Whether `outcome` is an allocation the record already shows: the Service's status
/// lists exactly its IPs (as a set). A node pool's allocation is one part of the record
/// (the status is the union over the Service's pools): recorded when the status lists all
/// its IPs.
pub fn is_recorded(snap: &Snapshot, key: &AllocationKey, outcome: &Outcome) -> bool {
    let Ok(alloc) = outcome else { return false };
    let Some(svc) = snap.services.get(&key.service) else {
        return false;
    };
    let mut recorded = status_ips(svc);
    recorded.sort();
    recorded.dedup();
    let mut own = alloc.ips.clone();
    own.sort();
    own.dedup();
    if key.node_pool.is_some() {
        !own.is_empty() && own.iter().all(|ip| recorded.binary_search(ip).is_ok())
    } else {
        recorded == own
    }
}

#[cfg(test)]
#[path = "allocator_tests.rs"]
mod tests;

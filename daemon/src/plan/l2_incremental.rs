//! The L2 plan across runs: re-elects only what changed since the last plan.
//!
//! [`L2Planner::plan`] gives the same plan as [`super::l2::plan`] on the same inputs. It
//! keeps the last election view, requests and results, and:
//!
//! - when the requests are those of the last plan (always so for
//!   [`L2Planner::replan_members`]) and a few nodes changed (a member joined, left or
//!   gossiped new interfaces; a Node changed), it re-elects incrementally per node ([`ElectionView::reelect_after_change_owned`]:
//!   only the IPs that node owned are elected in full);
//! - when the requests changed (a Service, its endpoints or its IPs) and no node did, it
//!   re-elects only the IPs whose requests changed, with the last view;
//! - otherwise (both changed, or many nodes at once) it elects everything.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::election::{Candidate, ElectionRequest, ElectionResult, ElectionView, ModeKind};
use crate::ipam::Assignments;
use crate::plan::l2::{assemble, candidates, requests, L2Node, L2Plan, L2Requests, Members};
use crate::snapshot::Snapshot;

/// Node changes re-elected one after another before a full election is cheaper.
const MAX_NODE_STEPS: usize = 4;

/// How the last plan was computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L2PlanKind {
    /// Everything elected.
    Full,
    /// Nothing changed that the election reads: the last results stand.
    Reused,
    /// This many nodes changed, each re-elected incrementally.
    NodesChanged(usize),
    /// This many IPs had new requests and were re-elected.
    RequestsChanged(usize),
}

struct Last {
    snap: Snapshot,
    reqs: L2Requests,
    view: ElectionView,
    results: Vec<ElectionResult>,
}

/// The L2 planner with memory; see the module documentation.
#[derive(Default)]
pub struct L2Planner {
    last: Option<Last>,
    kind: Option<L2PlanKind>,
}

impl std::fmt::Debug for L2Planner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("L2Planner")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl L2Planner {
    /// How the last plan was computed (`None` before the first).
    pub fn last_kind(&self) -> Option<L2PlanKind> {
        self.kind
    }

    /// Plans the L2 ownership of `me` for a new snapshot or allocation: the same as
    /// [`super::l2::plan`] on these inputs.
    pub fn plan(
        &mut self,
        snap: &Snapshot,
        assignments: &Assignments,
        me: &L2Node,
        members: &Members,
        may_own: bool,
    ) -> L2Plan {
        let _span = tracing::debug_span!("l2_plan").entered();
        let cands = candidates(snap, me, members);
        let reqs = requests(snap, assignments);
        let (last, kind) = match self.last.take() {
            None => (full(snap, reqs, cands), L2PlanKind::Full),
            Some(last) => step(last, snap, reqs, cands),
        };
        let plan = assemble(&last.reqs, &last.results, me, may_own);
        self.last = Some(last);
        self.kind = Some(kind);
        plan
    }

    /// Plans again for new members (or interfaces, or split-brain guard) with the snapshot
    /// and allocation of the last [`L2Planner::plan`]: the same as `l2::plan` on those.
    /// `None` before the first plan.
    pub fn replan_members(
        &mut self,
        me: &L2Node,
        members: &Members,
        may_own: bool,
    ) -> Option<L2Plan> {
        let _span = tracing::debug_span!("l2_replan_members").entered();
        let last = self.last.take()?;
        let cands = candidates(&last.snap, me, members);
        let snap = last.snap.clone();
        let (last, kind) = nodes_changed(last, &snap, cands);
        let plan = assemble(&last.reqs, &last.results, me, may_own);
        self.last = Some(last);
        self.kind = Some(kind);
        Some(plan)
    }
}

fn full(snap: &Snapshot, reqs: L2Requests, cands: Vec<Candidate>) -> Last {
    let view = ElectionView::new(cands);
    let results = view.elect_many(&reqs.requests);
    Last {
        snap: snap.clone(),
        reqs,
        view,
        results,
    }
}

fn step(
    last: Last,
    snap: &Snapshot,
    reqs: L2Requests,
    cands: Vec<Candidate>,
) -> (Last, L2PlanKind) {
    if reqs == last.reqs {
        return nodes_changed(last, snap, cands);
    }
    if !changed_nodes(last.view.candidates(), &cands).is_empty() {
        return (full(snap, reqs, cands), L2PlanKind::Full);
    }
    let (results, n) = reelect_changed(&last.view, &last.reqs.requests, last.results, &reqs);
    (
        Last {
            snap: snap.clone(),
            reqs,
            view: last.view,
            results,
        },
        L2PlanKind::RequestsChanged(n),
    )
}

/// Same requests as `last`: re-elect for the nodes that changed.
fn nodes_changed(last: Last, snap: &Snapshot, cands: Vec<Candidate>) -> (Last, L2PlanKind) {
    let changed = changed_nodes(last.view.candidates(), &cands);
    match changed.len() {
        0 => (
            Last {
                snap: snap.clone(),
                ..last
            },
            L2PlanKind::Reused,
        ),
        n if n <= MAX_NODE_STEPS => {
            let Last {
                reqs,
                view,
                results,
                ..
            } = last;
            let (view, results) = node_steps(view, &reqs.requests, results, &cands, &changed);
            (
                Last {
                    snap: snap.clone(),
                    reqs,
                    view,
                    results,
                },
                L2PlanKind::NodesChanged(n),
            )
        }
        _ => (full(snap, last.reqs, cands), L2PlanKind::Full),
    }
}

/// Names of the nodes that differ between two candidate lists (both sorted by name).
fn changed_nodes<'c>(
    old: impl Iterator<Item = &'c Candidate>,
    new: &'c [Candidate],
) -> Vec<String> {
    let old: BTreeMap<&str, &Candidate> = old.map(|c| (c.node.as_str(), c)).collect();
    let new_by: BTreeMap<&str, &Candidate> = new.iter().map(|c| (c.node.as_str(), c)).collect();
    let mut out: Vec<String> = Vec::new();
    for (name, c) in &new_by {
        if old.get(name) != Some(c) {
            out.push(name.to_string());
        }
    }
    for name in old.keys() {
        if !new_by.contains_key(name) {
            out.push(name.to_string());
        }
    }
    out
}

/// Applies the node changes one at a time, each through the incremental re-election: the
/// view after step `i` has the new state of the first `i` changed nodes.
fn node_steps(
    view: ElectionView,
    requests: &[ElectionRequest],
    mut results: Vec<ElectionResult>,
    target: &[Candidate],
    changed: &[String],
) -> (ElectionView, Vec<ElectionResult>) {
    let mut current: BTreeMap<String, Candidate> = if changed.len() > 1 {
        view.candidates()
            .map(|c| (c.node.clone(), c.clone()))
            .collect()
    } else {
        BTreeMap::new()
    };
    let target_by: HashMap<&str, &Candidate> =
        target.iter().map(|c| (c.node.as_str(), c)).collect();
    let mut view = view;
    for (i, name) in changed.iter().enumerate() {
        match target_by.get(name.as_str()) {
            Some(c) => current.insert(name.clone(), (*c).clone()),
            None => current.remove(name),
        };
        view = if i + 1 == changed.len() {
            ElectionView::new(target.iter().cloned())
        } else {
            ElectionView::new(current.values().cloned())
        };
        results = view.reelect_after_change_owned(requests, results, name);
    }
    (view, results)
}

type GroupKey = (IpAddr, ModeKind);

fn groups(requests: &[ElectionRequest]) -> BTreeMap<GroupKey, Vec<&ElectionRequest>> {
    let mut out: BTreeMap<GroupKey, Vec<&ElectionRequest>> = BTreeMap::new();
    for r in requests {
        out.entry((r.ip, r.mode.kind())).or_default().push(r);
    }
    out
}

/// Results for `reqs` with the same view: the last result of every IP whose requests are
/// unchanged, a new election for the others. Returns the results and how many were new.
fn reelect_changed(
    view: &ElectionView,
    old_requests: &[ElectionRequest],
    old_results: Vec<ElectionResult>,
    reqs: &L2Requests,
) -> (Vec<ElectionResult>, usize) {
    let old_groups = groups(old_requests);
    let new_groups = groups(&reqs.requests);
    let mut stale: Vec<ElectionRequest> = Vec::new();
    for (key, group) in &new_groups {
        if old_groups.get(key) != Some(group) {
            stale.extend(group.iter().map(|r| (*r).clone()));
        }
    }
    let mut fresh: HashMap<GroupKey, ElectionResult> = view
        .elect_many(&stale)
        .into_iter()
        .map(|r| ((r.ip, r.mode), r))
        .collect();
    let n = fresh.len();
    let mut old: HashMap<GroupKey, ElectionResult> = old_results
        .into_iter()
        .map(|r| ((r.ip, r.mode), r))
        .collect();
    let results = new_groups
        .keys()
        .filter_map(|key| fresh.remove(key).or_else(|| old.remove(key)))
        .collect();
    (results, n)
}

#[cfg(test)]
#[path = "l2_incremental_tests.rs"]
mod tests;

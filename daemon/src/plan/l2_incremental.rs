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
//!   rebuilds the requests of those Services only (the others' are moved over) and
//!   re-elects only their IPs, with the last view;
//! - otherwise (both changed, or many nodes at once) it elects everything.
//!
//! [`L2Planner::replan_members`] with nothing changed that the plan reads (a tick at rest)
//! says so without assembling a plan: O(nodes), not O(IPs). The requests it keeps are
//! shared with the split-brain guard ([`L2Planner::requests`]), and per allocation it keeps
//! only what it compares (the Service and slices by identity, the pool and IPs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::election::{Candidate, ElectionRequest, ElectionResult, ElectionView};
use crate::ipam::{AllocationKey, Assignments, Outcome};
use crate::plan::l2::{assemble, candidates, requests_of, L2Node, L2Plan, L2Requests, Members};
use crate::service::ServiceFacts;
use crate::snapshot::{Slice, Snapshot};

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

/// What [`L2Planner::replan_members`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replanned {
    /// Nothing the plan reads changed: the last plan stands.
    Same,
    /// The plan for the new members.
    Changed(L2Plan),
}

struct Last {
    snap: Snapshot,
    /// This node and whether it may own, as the last plan was assembled for.
    me: L2Node,
    may_own: bool,
    reqs: L2Requests,
    /// What each allocation's requests were built from, in key order.
    inputs: Vec<ServiceInputs>,
    view: ElectionView,
    results: Vec<ElectionResult>,
}

/// What the requests of one allocation depend on, besides the advertisements and pools:
/// only what [`ServiceInputs::same`] compares, kept for every allocation between plans.
struct ServiceInputs {
    key: AllocationKey,
    /// The Service by identity (held, so its address is never reused), and its slices.
    svc: Option<Arc<ServiceFacts>>,
    /// Almost always one slice and one IP: kept inline, not in a heap block per Service.
    slices: SmallVec<[Arc<Slice>; 1]>,
    outcome: Option<(Arc<str>, SmallVec<[IpAddr; 1]>)>,
    /// How many requests it gave (consecutive in `L2Requests`).
    count: usize,
}

impl ServiceInputs {
    fn new(
        key: &AllocationKey,
        svc: Option<&Arc<ServiceFacts>>,
        slices: &[Arc<Slice>],
        outcome: &Outcome,
        count: usize,
    ) -> ServiceInputs {
        ServiceInputs {
            key: key.clone(),
            svc: svc.cloned(),
            slices: SmallVec::from(slices),
            outcome: outcome
                .as_ref()
                .ok()
                .map(|a| (a.pool.clone(), SmallVec::from(a.ips.as_slice()))),
            count,
        }
    }

    fn same(
        &self,
        svc: Option<&Arc<ServiceFacts>>,
        slices: &[Arc<Slice>],
        outcome: &Outcome,
    ) -> bool {
        let svc_same = match (&self.svc, svc) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let outcome_same = match (&self.outcome, outcome) {
            (Some((pool, ips)), Ok(a)) => *pool == a.pool && ips.as_slice() == a.ips.as_slice(),
            (None, Err(_)) => true,
            _ => false,
        };
        svc_same && outcome_same && self.slices.as_slice() == slices
    }
}

/// The L2 planner with memory; see the module documentation.
#[derive(Default)]
pub struct L2Planner {
    last: Option<Last>,
    kind: Option<L2PlanKind>,
    /// Changes whenever the requests may have (see [`L2Planner::requests`]).
    generation: u64,
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
        let (mut last, kind, new_requests) = match self.last.take() {
            None => {
                let (reqs, inputs) = all_requests(snap, assignments);
                let last = full(snap, reqs, inputs, cands);
                (last, L2PlanKind::Full, true)
            }
            Some(last) => step(last, snap, assignments, cands),
        };
        if new_requests {
            self.generation += 1;
        }
        last.me = me.clone();
        last.may_own = may_own;
        let plan = assemble(&last.reqs, &last.results, me, may_own);
        self.last = Some(last);
        self.kind = Some(kind);
        plan
    }

    /// Plans again for new members (or interfaces, or the join wait) with the snapshot
    /// and allocation of the last [`L2Planner::plan`]: the same as `l2::plan` on those, or
    /// [`Replanned::Same`] when neither the candidates nor `me` nor `may_own` changed (no
    /// pass over the IPs). `None` before the first plan.
    pub fn replan_members(
        &mut self,
        me: &L2Node,
        members: &Members,
        may_own: bool,
    ) -> Option<Replanned> {
        let _span = tracing::debug_span!("l2_replan_members").entered();
        let last = self.last.take()?;
        let cands = candidates(&last.snap, me, members);
        let snap = last.snap.clone();
        let (mut last, kind) = nodes_changed(last, &snap, cands);
        let same = kind == L2PlanKind::Reused && last.me == *me && last.may_own == may_own;
        let out = if same {
            Replanned::Same
        } else {
            last.me = me.clone();
            last.may_own = may_own;
            Replanned::Changed(assemble(&last.reqs, &last.results, me, may_own))
        };
        self.last = Some(last);
        self.kind = Some(kind);
        Some(out)
    }

    /// The last plan assembled again (`None` before the first): what
    /// [`Replanned::Same`] stands for.
    pub fn last_plan(&self) -> Option<L2Plan> {
        let last = self.last.as_ref()?;
        Some(assemble(&last.reqs, &last.results, &last.me, last.may_own))
    }

    /// The requests of the last plan and their generation, which changes whenever they may
    /// have: what the split-brain guard computes its scopes for (one copy for both).
    pub fn requests(&self) -> Option<(&L2Requests, u64)> {
        self.last.as_ref().map(|l| (&l.reqs, self.generation))
    }
}

impl L2Planner {
    /// The nodes ranked next ([`ElectionView::successors`], `k` per IP) for the IPs of
    /// the last plan that `owner` owns: whom an owner heartbeats to.
    pub fn successors(&self, owner: &str, k: usize) -> std::collections::BTreeSet<String> {
        let Some(last) = &self.last else {
            return Default::default();
        };
        last.results
            .iter()
            .filter(|r| r.owner().is_some_and(|o| &**o == owner))
            .flat_map(|r| last.view.successors(r, k))
            .map(|n| n.to_string())
            .collect()
    }
}

fn full(
    snap: &Snapshot,
    reqs: L2Requests,
    inputs: Vec<ServiceInputs>,
    cands: Vec<Candidate>,
) -> Last {
    let view = ElectionView::new(cands);
    let results = view.elect_many(&reqs.requests);
    Last {
        snap: snap.clone(),
        // Set by the caller, which knows them.
        me: L2Node::default(),
        may_own: false,
        reqs,
        inputs,
        view,
        results,
    }
}

/// Every request, with what each allocation's requests came from.
fn all_requests(snap: &Snapshot, assignments: &Assignments) -> (L2Requests, Vec<ServiceInputs>) {
    let mut reqs = L2Requests::default();
    let mut inputs = Vec::with_capacity(assignments.outcomes.len());
    for (akey, outcome) in &assignments.outcomes {
        let n = requests_of(snap, akey, outcome, &mut reqs);
        let slices = snap
            .endpoint_slices
            .get(&akey.service)
            .map_or(&[][..], Vec::as_slice);
        inputs.push(ServiceInputs::new(
            akey,
            snap.services.get(&akey.service),
            slices,
            outcome,
            n,
        ));
    }
    reqs.shrink_to_fit();
    (reqs, inputs)
}

fn step(
    last: Last,
    snap: &Snapshot,
    assignments: &Assignments,
    cands: Vec<Candidate>,
) -> (Last, L2PlanKind, bool) {
    let Last {
        snap: last_snap,
        me,
        may_own,
        reqs: last_reqs,
        inputs: last_inputs,
        view,
        results,
    } = last;
    let Some((reqs, inputs, stale)) =
        update_requests(&last_snap, snap, assignments, last_reqs, last_inputs)
    else {
        let (reqs, inputs) = all_requests(snap, assignments);
        return (full(snap, reqs, inputs, cands), L2PlanKind::Full, true);
    };
    let last = Last {
        snap: last_snap,
        me,
        may_own,
        reqs,
        inputs,
        view,
        results,
    };
    // No request changed: the requests (and their generation) stand.
    if stale.is_empty() {
        let (last, kind) = nodes_changed(last, snap, cands);
        return (last, kind, false);
    }
    if !changed_nodes(last.view.candidates(), &cands).is_empty() {
        return (
            full(snap, last.reqs, last.inputs, cands),
            L2PlanKind::Full,
            true,
        );
    }
    let (results, n) = reelect_stale(&last.view, &last.reqs.requests, last.results, &stale);
    (
        Last {
            snap: snap.clone(),
            results,
            ..last
        },
        L2PlanKind::RequestsChanged(n),
        true,
    )
}

/// The requests for the new inputs, moving over those of every allocation whose inputs are
/// unchanged, and the IPs whose requests changed. `None` when the advertisements or pools
/// changed (every request may have).
fn update_requests(
    last_snap: &Snapshot,
    snap: &Snapshot,
    assignments: &Assignments,
    last_reqs: L2Requests,
    last_inputs: Vec<ServiceInputs>,
) -> Option<(L2Requests, Vec<ServiceInputs>, HashSet<IpAddr>)> {
    // Node pool membership decides which endpoints count for a per-pool allocation.
    if snap.l2_advertisements != last_snap.l2_advertisements
        || snap.pools != last_snap.pools
        || snap.node_pools != last_snap.node_pools
    {
        return None;
    }
    let mut stale: HashSet<IpAddr> = HashSet::new();
    let mut reqs = L2Requests::default();
    let mut inputs = Vec::with_capacity(assignments.outcomes.len());
    let mut old = last_inputs.into_iter().peekable();
    let mut old_reqs = last_reqs.requests.into_iter();
    let mut old_svcs = last_reqs.services.into_iter();
    // Drops `count` old requests (of a Service changed or gone); their IPs are stale.
    fn drop_old<R: Iterator<Item = ElectionRequest>, S: Iterator>(
        count: usize,
        reqs: &mut R,
        svcs: &mut S,
        stale: &mut HashSet<IpAddr>,
    ) {
        for _ in 0..count {
            svcs.next();
            if let Some(r) = reqs.next() {
                stale.insert(r.ip);
            }
        }
    }
    let mut services = snap.services.iter().peekable();
    let mut slices_of = snap.endpoint_slices.iter().peekable();
    for (akey, outcome) in &assignments.outcomes {
        while old.peek().is_some_and(|o| o.key < *akey) {
            if let Some(o) = old.next() {
                drop_old(o.count, &mut old_reqs, &mut old_svcs, &mut stale);
            }
        }
        while services.peek().is_some_and(|(k, _)| *k < &akey.service) {
            services.next();
        }
        while slices_of.peek().is_some_and(|(k, _)| *k < &akey.service) {
            slices_of.next();
        }
        let svc = services
            .peek()
            .filter(|(k, _)| **k == akey.service)
            .map(|(_, s)| *s);
        let slices = slices_of
            .peek()
            .filter(|(k, _)| **k == akey.service)
            .map_or(&[][..], |(_, v)| v.as_slice());
        let prev = old.next_if(|o| o.key == *akey);
        match prev {
            Some(o) if o.same(svc, slices, outcome) => {
                for _ in 0..o.count {
                    if let (Some(r), Some(sv)) = (old_reqs.next(), old_svcs.next()) {
                        reqs.requests.push(r);
                        reqs.services.push(sv);
                    }
                }
                inputs.push(o);
            }
            prev => {
                if let Some(o) = prev {
                    drop_old(o.count, &mut old_reqs, &mut old_svcs, &mut stale);
                }
                let from = reqs.requests.len();
                let n = requests_of(snap, akey, outcome, &mut reqs);
                stale.extend(reqs.requests[from..].iter().map(|r| r.ip));
                inputs.push(ServiceInputs::new(akey, svc, slices, outcome, n));
            }
        }
    }
    for o in old {
        drop_old(o.count, &mut old_reqs, &mut old_svcs, &mut stale);
    }
    reqs.shrink_to_fit();
    Some((reqs, inputs, stale))
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
                me,
                may_own,
                reqs,
                inputs,
                view,
                results,
                ..
            } = last;
            let (view, results) = node_steps(view, &reqs.requests, results, &cands, &changed);
            (
                Last {
                    snap: snap.clone(),
                    me,
                    may_own,
                    reqs,
                    inputs,
                    view,
                    results,
                },
                L2PlanKind::NodesChanged(n),
            )
        }
        _ => (full(snap, last.reqs, last.inputs, cands), L2PlanKind::Full),
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

/// Results for the requests with the same view: a new election for every IP in `stale`
/// (all its requests, including those of unchanged Services sharing it), the last result
/// for the others. Returns the results (sorted, as `elect_many` gives them) and how many
/// were elected.
fn reelect_stale(
    view: &ElectionView,
    requests: &[ElectionRequest],
    old_results: Vec<ElectionResult>,
    stale: &HashSet<IpAddr>,
) -> (Vec<ElectionResult>, usize) {
    let todo: Vec<ElectionRequest> = requests
        .iter()
        .filter(|r| stale.contains(&r.ip))
        .cloned()
        .collect();
    let fresh = view.elect_many(&todo);
    let n = fresh.len();
    let kept = old_results.into_iter().filter(|r| !stale.contains(&r.ip));
    // Merge two sorted runs by (IP, mode).
    let mut out = Vec::with_capacity(requests.len());
    let mut fresh = fresh.into_iter().peekable();
    for r in kept {
        while fresh
            .peek()
            .is_some_and(|f| (f.ip, f.mode) < (r.ip, r.mode))
        {
            out.extend(fresh.next());
        }
        out.push(r);
    }
    out.extend(fresh);
    (out, n)
}

#[cfg(test)]
#[path = "l2_incremental_tests.rs"]
mod tests;

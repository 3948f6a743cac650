//! The L2 planner: which IPs this node owns and on which interface it announces them
//! (gratuitous ARP, RFC 826 / RFC 5227; unsolicited NA, RFC 4861 7.2.6).
//!
//! For each IP of each Service covered by a valid `L2Advertisement`, the election
//! ([`crate::election`]) picks one owner among the eligible, live nodes; this node owns the
//! IPs it wins, on the first up interface (of the advertisement's list, when it has one)
//! whose subnet contains the IP, else on the interface that carries the node's address.
//! The split-brain guard ([`crate::election::may_own_l2`]) is an input: a node that may not
//! own owns nothing.
//!
//! Pure: no I/O, no clock.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::election::{
    Candidate, ElectionRequest, ElectionView, InterfaceFacts, Mode, ModeKind, NodeName,
    RequestTerms,
};
use crate::ipam::AllocationKey;
use crate::ipam::Assignments;
use crate::plan::endpoints::{has_ready_endpoint_for, is_local, ready_nodes_for};
use crate::plan::{coverage, node_floor};
use crate::snapshot::{ObjectKey, Snapshot};

/// Who is alive, as the membership says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Members {
    /// No gossip configured: every Node of the snapshot counts as live with unknown
    /// interfaces (single-node or externally coordinated setups).
    Static,
    /// Live members by node name, with the interfaces each last gossiped.
    Gossip(BTreeMap<String, Vec<InterfaceFacts>>),
}

/// This node as the L2 planner needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct L2Node {
    /// Node name.
    pub name: String,
    /// The host's interfaces now (fresher than what the gossip carries).
    pub interfaces: Vec<InterfaceFacts>,
    /// The node's addresses (to find the default interface).
    pub addresses: Vec<IpAddr>,
}

/// One elected IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// The Service.
    pub service: ObjectKey,
    /// The IP.
    pub ip: IpAddr,
    /// The owner, `None` when no node is eligible.
    pub node: Option<NodeName>,
}

/// What this node must do in L2 mode.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct L2Plan {
    /// Interface -> IPs this node owns there.
    pub owned: BTreeMap<String, BTreeSet<IpAddr>>,
    /// The owner of every L2 IP (for status, events and `edgelbctl`).
    pub owners: Vec<Owner>,
    /// IPs this node won but has no interface for.
    pub unplaced: Vec<IpAddr>,
}

/// Any address, so that a node with unknown interfaces passes the interface checks.
fn unknown_interfaces() -> Vec<InterfaceFacts> {
    vec![InterfaceFacts {
        name: "*".into(),
        up: true,
        subnets: ["0.0.0.0/0", "::/0"]
            .iter()
            .filter_map(|s| s.parse::<IpNet>().ok())
            .collect(),
    }]
}

/// The election candidates: every Node of the snapshot, live per `members`. A Node
/// without a `Ready` condition (standalone files) counts as ready.
pub fn candidates(snap: &Snapshot, me: &L2Node, members: &Members) -> Vec<Candidate> {
    snap.nodes
        .iter()
        .map(|(name, view)| {
            let node = &view.node;
            let (live, interfaces) = if **name == *me.name {
                (true, me.interfaces.clone())
            } else {
                match members {
                    Members::Static => (true, unknown_interfaces()),
                    Members::Gossip(live) => match live.get(&**name) {
                        Some(i) => (true, i.clone()),
                        None => (false, Vec::new()),
                    },
                }
            };
            Candidate {
                node: name.to_string(),
                labels: node.metadata.labels.clone().unwrap_or_default(),
                ready: node_floor::ready(node),
                network_unavailable: node_floor::network_unavailable(node),
                excluded_label: node_floor::excluded_by_label(node),
                node_pool: view.node_pool.clone(),
                live,
                interfaces,
            }
        })
        .collect()
}

/// Plans the L2 ownership of node `me`.
pub fn plan(
    snap: &Snapshot,
    assignments: &Assignments,
    me: &L2Node,
    members: &Members,
    may_own: bool,
) -> L2Plan {
    let view = ElectionView::new(candidates(snap, me, members));
    let reqs = requests(snap, assignments);
    let results = view.elect_many(&reqs.requests);
    assemble(&reqs, &results, me, may_own)
}

/// The election requests of every L2 IP, and the (Service, IP) each came from.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct L2Requests {
    /// One per IP and covering advertisement, in Service key order.
    pub requests: Vec<ElectionRequest>,
    /// The Service and IP of each request, in the same order.
    pub services: Vec<(ObjectKey, IpAddr)>,
}

impl L2Requests {
    /// Drops the spare capacity the pushes left (up to half of each `Vec`): the planner
    /// keeps the requests until the next snapshot, one per IP.
    pub fn shrink_to_fit(&mut self) {
        self.requests.shrink_to_fit();
        self.services.shrink_to_fit();
    }
}

/// What the election must decide for the snapshot and allocation (it does not depend on
/// the membership).
pub fn requests(snap: &Snapshot, assignments: &Assignments) -> L2Requests {
    let mut out = L2Requests::default();
    for (akey, outcome) in &assignments.outcomes {
        requests_of(snap, akey, outcome, &mut out);
    }
    out
}

/// Appends the requests of one allocation outcome; returns how many. A per-node-pool
/// allocation is elected among that pool's nodes only (`pool`), with endpoints counted as
/// [`has_ready_endpoint_for`] says.
pub fn requests_of(
    snap: &Snapshot,
    akey: &AllocationKey,
    outcome: &crate::ipam::Outcome,
    out: &mut L2Requests,
) -> usize {
    let service = &akey.service;
    let Ok(alloc) = outcome else { return 0 };
    let Some(svc) = snap.services.get(service) else {
        return 0;
    };
    let local = is_local(svc);
    if !local && !has_ready_endpoint_for(snap, akey, svc) {
        return 0;
    }
    let local_endpoints = local.then(|| ready_nodes_for(snap, akey));
    let before = out.requests.len();
    let covering: Vec<_> = coverage::l2_covering(snap, &alloc.pool)
        .map(|c| &c.object.spec)
        .collect();
    if covering.is_empty() {
        return 0;
    }
    // One request per IP however many advertisements cover it: a node is eligible when
    // any of them selects it (their selectors are alternatives, as in MetalLB), on any
    // interface one of them lists (none listed by one: any interface).
    let node_selectors = coverage::any_of(covering.iter().map(|s| s.node_selectors.as_slice()));
    let interfaces = if covering.iter().any(|s| s.interfaces.is_empty()) {
        None
    } else {
        let mut all: Vec<String> = covering.iter().flat_map(|s| s.interfaces.clone()).collect();
        all.sort();
        all.dedup();
        Some(all)
    };
    // One set of terms for all the Service's IPs.
    let terms = Arc::new(RequestTerms {
        mode: Mode::L2 { interfaces },
        node_selectors,
        pool: akey.node_pool.as_deref().map(String::from),
        local_endpoints,
    });
    for ip in &alloc.ips {
        out.requests.push(ElectionRequest::new(*ip, terms.clone()));
        out.services.push((service.clone(), *ip));
    }
    out.requests.len() - before
}

/// The plan from the election results of `reqs`.
pub fn assemble(
    reqs: &L2Requests,
    results: &[crate::election::ElectionResult],
    me: &L2Node,
    may_own: bool,
) -> L2Plan {
    // Results are sorted by (IP, mode): a lookup is a bisection, not a 10 000-entry index.
    let result_of = |ip: IpAddr| {
        results
            .binary_search_by(|r| (r.ip, r.mode).cmp(&(ip, ModeKind::L2)))
            .ok()
            .map(|i| &results[i])
    };
    let mut out = L2Plan::default();
    // The pairs of one Service are consecutive; only several advertisements covering one
    // IP repeat a pair, so duplicates are found among the Service's own pairs.
    let mut current: Option<&ObjectKey> = None;
    let mut seen: Vec<IpAddr> = Vec::new();
    for (service, ip) in &reqs.services {
        if current != Some(service) {
            current = Some(service);
            seen.clear();
        }
        if seen.contains(ip) {
            continue;
        }
        seen.push(*ip);
        let node = result_of(*ip).and_then(|r| r.owner().cloned());
        out.owners.push(Owner {
            service: service.clone(),
            ip: *ip,
            node,
        });
    }
    if !may_own {
        return out;
    }
    // The IPs this node owns, each with the interface list of its first request (`None`
    // until one is seen). A map, not a list searched per request: a node that owns most
    // IPs (one of three nodes, or the last one up) made that a pass over its IPs for every
    // request, ~10^7 comparisons at 10 000 IPs on every change.
    let mut mine: BTreeMap<IpAddr, Option<Option<&Vec<String>>>> = results
        .iter()
        .filter(|r| r.mode == ModeKind::L2 && r.owner().map(|o| &**o) == Some(me.name.as_str()))
        .map(|r| (r.ip, None))
        .collect();
    for q in &reqs.requests {
        if let Mode::L2 { interfaces } = q.mode() {
            if let Some(first @ None) = mine.get_mut(&q.ip) {
                *first = Some(interfaces.as_ref());
            }
        }
    }
    for (ip, allowed) in mine {
        let allowed = allowed.flatten();
        match interface_for(me, ip, allowed.map(Vec::as_slice)) {
            Some(name) => {
                out.owned.entry(name).or_default().insert(ip);
            }
            None => out.unplaced.push(ip),
        }
    }
    out
}

/// The interface to announce `ip` on: an up one whose subnet contains it, else the one
/// carrying the node's address; restricted to `allowed` when given.
pub fn interface_for(me: &L2Node, ip: IpAddr, allowed: Option<&[String]>) -> Option<String> {
    let ok = |i: &&InterfaceFacts| i.up && allowed.is_none_or(|a| a.contains(&i.name));
    let mut ifaces: Vec<&InterfaceFacts> = me.interfaces.iter().filter(ok).collect();
    ifaces.sort_by(|a, b| a.name.cmp(&b.name));
    ifaces
        .iter()
        .find(|i| i.subnets.iter().any(|s| s.contains(&ip)))
        .or_else(|| {
            ifaces.iter().find(|i| {
                i.subnets
                    .iter()
                    .any(|s| me.addresses.iter().any(|a| s.contains(a)))
            })
        })
        .map(|i| i.name.clone())
}

#[cfg(test)]
#[path = "l2_tests.rs"]
mod tests;

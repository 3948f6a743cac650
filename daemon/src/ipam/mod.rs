//! IP allocation (IPAM): pure, sticky, deterministic.
//!
//! `allocate(&Snapshot, &previous) -> Assignments` gives every Service of ours either its IPs
//! or a reason it has none. It runs in two passes over Services in key order:
//!
//! 1. **keep**: every IP a Service already had (from the previous run or, after a restart, its
//!    `status.loadBalancer.ingress`) is kept while it is still valid for the Service's
//!    request, inside an eligible pool, and not taken by an earlier Service;
//! 2. **allocate**: the rest get requested IPs or the first free IPs of the first eligible
//!    pool (priority, then name), families per `ipFamilies` / `ipFamilyPolicy`.
//!
//! Keeping before allocating is what makes an IP in use never move by accident: a new
//! Service can never take an address another Service is using, whatever the key order.
//!
//! Node pools (SPEC.md, "Node pools and regions"): a Service whose
//! `service.openyurt.io/nodepool-labelselector` selects node pools gets one allocation per
//! selected pool, keyed by [`AllocationKey::node_pool`]; a Service without it one
//! cluster-wide allocation (`node_pool: None`). Which pools a Service selects is a
//! [`Selection`] function, so that the allocator stays pure and tests can give pools as
//! input. A per-pool key is served only by `IPAddressPool`s scoped to that node pool
//! ([`pool::PoolView::node_pools`]), a cluster-wide key only by unscoped ones. Keep and
//! allocate are otherwise the same, per key, in key order.

mod incremental;
pub mod pool;
pub mod range;
pub mod request;

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use self::pool::PoolView;
use self::range::{from_u128, is_buggy, Family};
use self::request::{request_of, Request, Sharing};
use crate::service::ServiceFacts;
use crate::snapshot::{ObjectKey, Snapshot};
use imbl::OrdMap;

pub use self::incremental::{IncrementalAllocator, Update, UpdateKind};

/// What one allocation is for: a Service, and (with node pools) one node pool of it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AllocationKey {
    /// The Service.
    pub service: ObjectKey,
    /// The node pool, or `None` for one allocation for the whole cluster.
    pub node_pool: Option<Arc<str>>,
}

impl AllocationKey {
    /// The cluster-wide key of a Service.
    pub fn cluster(service: ObjectKey) -> AllocationKey {
        AllocationKey {
            service,
            node_pool: None,
        }
    }
}

/// Which node pools a Service is exposed in: `Ok(None)` without a node-pool selector (one
/// cluster-wide allocation), `Ok(Some(pools))` (sorted) with one, or why its selector is
/// wrong. A plain function, not a closure: the incremental allocator keeps it across runs.
pub type Selection = fn(&Snapshot, &ServiceFacts) -> Result<Option<Vec<Arc<str>>>, String>;

/// The allocation keys of a Service, in key order, or why it has none.
pub fn keys_of(
    select: Selection,
    snap: &Snapshot,
    key: &ObjectKey,
    svc: &ServiceFacts,
) -> Result<Vec<AllocationKey>, AllocationError> {
    // A cloud class's entry points are its cloud load balancers' (crate::cloud_lb): no IP
    // from a pool, and no IP of its status read back as a record.
    if !crate::nodepool::is_self_announced_class(svc.class()) {
        return Ok(Vec::new());
    }
    match select(snap, svc) {
        Ok(None) => Ok(vec![AllocationKey::cluster(key.clone())]),
        Ok(Some(pools)) if pools.is_empty() => Err(AllocationError::NoNodePoolSelected),
        Ok(Some(pools)) => {
            // Pools behind a cloud load balancer (NodePool annotation) get its address,
            // not an IP (crate::cloud_lb); an invalid annotation gets nothing.
            let mut keys: Vec<AllocationKey> = pools
                .into_iter()
                .filter(|p| crate::nodepool::is_self_announced_in(svc, snap.node_pools.get(p)))
                .map(|p| AllocationKey {
                    service: key.clone(),
                    node_pool: Some(p),
                })
                .collect();
            keys.sort();
            keys.dedup();
            Ok(keys)
        }
        Err(message) => Err(AllocationError::BadNodePoolSelector { message }),
    }
}

/// IPs given to a Service, all from one pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocation {
    /// The pool the IPs come from (empty when seeded from a Service status, not yet checked).
    pub pool: Arc<str>,
    /// One IP per family, in the Service's family order.
    pub ips: Vec<IpAddr>,
}

/// Why a Service has no IP. Each names the IP, pool or annotation at fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    /// An annotation that cannot be read.
    #[error("annotation {annotation}: {value:?} is not a comma-separated list of IP addresses")]
    BadAnnotation {
        /// Annotation name.
        annotation: String,
        /// Its value.
        value: String,
    },
    /// `spec.loadBalancerIP` is not an address.
    #[error("spec.loadBalancerIP: {value:?} is not an IP address")]
    BadLoadBalancerIp {
        /// The value.
        value: String,
    },
    /// `spec.ipFamilies` names an unknown family.
    #[error("spec.ipFamilies: {value:?} is not IPv4 or IPv6")]
    BadIpFamily {
        /// The value.
        value: String,
    },
    /// `spec.ipFamilyPolicy` is unknown.
    #[error(
        "spec.ipFamilyPolicy: {value:?} is not SingleStack, PreferDualStack or RequireDualStack"
    )]
    BadIpFamilyPolicy {
        /// The value.
        value: String,
    },
    /// A requested IP of a family the Service does not use.
    #[error("requested IP {ip} is {family}, but the Service's ipFamilies/ipFamilyPolicy allow only {allowed}")]
    RequestedIpWrongFamily {
        /// The IP.
        ip: IpAddr,
        /// Its family.
        family: &'static str,
        /// What the Service allows, e.g. `IPv6`.
        allowed: String,
    },
    /// A requested IP in no pool.
    #[error("requested IP {ip} is not in any IPAddressPool")]
    RequestedIpOutsidePools {
        /// The IP.
        ip: IpAddr,
    },
    /// A requested IP outside the requested pool.
    #[error("requested IP {ip} is not in the requested IPAddressPool {pool:?}")]
    RequestedIpNotInPool {
        /// The IP.
        ip: IpAddr,
        /// The pool.
        pool: String,
    },
    /// Requested IPs from two pools.
    #[error("requested IPs {first} and {second} are in different pools ({first_pool:?}, {second_pool:?}); all IPs of a Service come from one pool")]
    RequestedIpsInDifferentPools {
        /// First IP.
        first: IpAddr,
        /// Its pool.
        first_pool: String,
        /// Second IP.
        second: IpAddr,
        /// Its pool.
        second_pool: String,
    },
    /// A requested IP another Service holds, and sharing is not possible.
    #[error("requested IP {ip} is already used by {by}: {why}")]
    RequestedIpInUse {
        /// The IP.
        ip: IpAddr,
        /// A Service holding it.
        by: ObjectKey,
        /// Why it cannot be shared.
        why: String,
    },
    /// `edgelb.io/address-pool` names no valid pool.
    #[error("IPAddressPool {pool:?} does not exist or is invalid")]
    UnknownPool {
        /// The pool.
        pool: String,
    },
    /// The pool's `serviceAllocation` does not cover this Service.
    #[error("IPAddressPool {pool:?} does not serve this Service (spec.serviceAllocation)")]
    PoolNotAllowed {
        /// The pool.
        pool: String,
    },
    /// The Service's node-pool selector cannot be read.
    #[error("{message}")]
    BadNodePoolSelector {
        /// What is wrong, naming the annotation.
        message: String,
    },
    /// The Service's node-pool selector matches no node pool.
    #[error("annotation service.openyurt.io/nodepool-labelselector selects no node pool")]
    NoNodePoolSelected,
    /// No pool scoped to the node pool serves this Service.
    #[error("no IPAddressPool with autoAssign scoped to node pool {node_pool:?} (spec.nodePools / spec.nodePoolSelectors) serves this Service")]
    NoPoolForNodePool {
        /// The node pool.
        node_pool: String,
    },
    /// Requested IPs, none in a pool scoped to the node pool.
    #[error("none of the requested IPs is in an IPAddressPool scoped to node pool {node_pool:?}")]
    RequestedIpsNotInNodePool {
        /// The node pool.
        node_pool: String,
    },
    /// No pool may be used automatically by this Service.
    #[error("no IPAddressPool with autoAssign serves this Service")]
    NoEligiblePool,
    /// Eligible pools exist but none has the families the Service requires.
    #[error("no eligible IPAddressPool has {families} addresses")]
    NoPoolForFamily {
        /// e.g. `IPv4 and IPv6`.
        families: String,
    },
    /// Every eligible pool is full.
    #[error("no free address in IPAddressPool {pools}")]
    PoolsExhausted {
        /// The pools tried, comma-separated.
        pools: String,
    },
    /// The IP the Service had is no longer in any pool serving it. It is not replaced on its
    /// own (an IP in use never moves by accident): restore the range, or request an IP.
    #[error(
        "IP {ip} was removed from its IPAddressPool while in use; restore it or request another IP"
    )]
    IpRemovedFromPool {
        /// The IP.
        ip: IpAddr,
    },
}

/// The outcome of one allocation.
pub type Outcome = Result<Allocation, AllocationError>;

/// Every allocation outcome, keyed by Service (and node pool).
///
/// A persistent map: the allocator, the announcers, the view and the status writer each
/// hold the same result for free (a clone shares every node), and comparing two results
/// that share nodes skips those (`==` and [`OrdMap::diff`] are O(changes x log n)).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Assignments {
    /// Outcomes in key order.
    pub outcomes: OrdMap<AllocationKey, Outcome>,
}

impl Assignments {
    /// The cluster-wide outcome of a Service.
    pub fn get(&self, service: &ObjectKey) -> Option<&Outcome> {
        self.outcomes.get(&AllocationKey::cluster(service.clone()))
    }

    /// Every outcome of a Service: its cluster-wide one, or one per node pool, in key order.
    pub fn of_service<'a>(
        &'a self,
        service: &ObjectKey,
    ) -> impl Iterator<Item = (&'a AllocationKey, &'a Outcome)> + 'a {
        let service = service.clone();
        self.outcomes
            .range(AllocationKey::cluster(service.clone())..)
            .take_while(move |(k, _)| k.service == service)
    }

    /// The IPs of a Service, empty when it has none.
    pub fn ips(&self, service: &ObjectKey) -> &[IpAddr] {
        match self.get(service) {
            Some(Ok(a)) => &a.ips,
            _ => &[],
        }
    }

    /// The outcome the Service's `status.loadBalancer` shows: its cluster-wide outcome, or
    /// for a Service with node pools the union of its pools' IPs in key (node pool) order,
    /// pools named together; the first error when no pool has an IP.
    pub fn merged(&self, service: &ObjectKey) -> Option<Outcome> {
        let mut ips: Vec<IpAddr> = Vec::new();
        let mut pools: Vec<&str> = Vec::new();
        let mut first_err = None;
        for (_, o) in self.of_service(service) {
            match o {
                Ok(a) => {
                    ips.extend(a.ips.iter().copied());
                    pools.push(&a.pool);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match (pools.is_empty(), first_err) {
            (true, Some(e)) => Some(Err(e.clone())),
            (true, None) => None,
            (false, _) => Some(Ok(Allocation {
                pool: pools.join(",").into(),
                ips,
            })),
        }
    }

    /// What the cluster already says: the IPs in each Service's `status.loadBalancer`,
    /// split between its node pools ([`split_by_node_pool`]). The leader seeds its first run
    /// with this so that a restart never moves an IP.
    pub fn from_status(snap: &Snapshot) -> Assignments {
        Assignments::from_status_with(selected_node_pools, snap)
    }

    /// [`Assignments::from_status`] with the node pools of each Service given by `select`.
    pub fn from_status_with(select: Selection, snap: &Snapshot) -> Assignments {
        let mut outcomes = OrdMap::new();
        for (key, svc) in &snap.services {
            let ips = status_ips(svc);
            if ips.is_empty() {
                continue;
            }
            for (akey, ips) in split_by_node_pool(select, snap, key, svc, ips) {
                outcomes.insert(
                    akey,
                    Ok(Allocation {
                        pool: "".into(),
                        ips,
                    }),
                );
            }
        }
        Assignments { outcomes }
    }
}

/// Recorded IPs of a Service (its status, the union over its node pools) given back to its
/// allocation keys: all to the cluster-wide key; with node pools, each IP to the first pool
/// (in key order) that an `IPAddressPool` scoped to it and holding the IP serves. IPs no
/// key can hold are left out (the allocation then finds them free or gone).
pub fn split_by_node_pool(
    select: Selection,
    snap: &Snapshot,
    key: &ObjectKey,
    svc: &ServiceFacts,
    ips: Vec<IpAddr>,
) -> Vec<(AllocationKey, Vec<IpAddr>)> {
    let keys = match keys_of(select, snap, key, svc) {
        Ok(k) => k,
        Err(_) => vec![AllocationKey::cluster(key.clone())],
    };
    if let [only] = keys.as_slice() {
        if only.node_pool.is_none() {
            return vec![(only.clone(), ips)];
        }
    }
    let mut out: Vec<(AllocationKey, Vec<IpAddr>)> =
        keys.into_iter().map(|k| (k, Vec::new())).collect();
    for ip in ips {
        let holder = out.iter_mut().find(|(k, _)| {
            snap.allocation_pools
                .iter()
                .any(|p| p.serves_node_pool(k.node_pool.as_deref()) && p.contains(&ip))
        });
        if let Some((_, held)) = holder {
            held.push(ip);
        }
    }
    out.retain(|(_, ips)| !ips.is_empty());
    out
}

/// The IPs a Service's status records (`status.loadBalancer.ingress[].ip`), in order;
/// entries that are not IPs (hostnames) are skipped.
pub fn status_ips(svc: &ServiceFacts) -> Vec<IpAddr> {
    svc.ingress.iter().filter_map(|i| i.ip()).collect()
}

/// Who holds an IP during one run. Kept per used IP for as long as the allocator lives (every
/// speaker, the leader twice), so it is small: the sharing terms, which few IPs have, boxed,
/// and the one holder most IPs have inline (48 B and no allocation instead of 96 B and one).
#[derive(Debug)]
struct Holder {
    sharing: Option<Box<Sharing>>,
    users: smallvec::SmallVec<[ObjectKey; 1]>,
}

/// Why `candidate` may not join `holder`, or `None` when it may.
fn share_conflict(holder: &Holder, candidate: Option<&Sharing>) -> Option<String> {
    let (Some(have), Some(want)) = (&holder.sharing, candidate) else {
        return Some(
            "the IP is not shared (edgelb.io/allow-shared-ip unset on one of them)".into(),
        );
    };
    if have.key != want.key {
        return Some(format!(
            "sharing key {:?} differs from {:?}",
            want.key, have.key
        ));
    }
    if have.local != want.local {
        return Some("externalTrafficPolicy differs".into());
    }
    if have.local && have.selector != want.selector {
        return Some("externalTrafficPolicy is Local and the pod selectors differ".into());
    }
    want.ports
        .iter()
        .find(|p| have.ports.contains(p))
        .map(|(proto, port)| format!("port {proto}/{port} is already exposed on it"))
}

/// The first-free-address scan of one pool and family: it only moves forward during a run,
/// because addresses only become more used during a run.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    range: usize,
    next: Option<u128>,
}

struct Run<'a> {
    pools: &'a [PoolView],
    by_name: HashMap<&'a str, usize>,
    /// No pool restricts which Services it serves (`serviceAllocation` selectors unset).
    all_open: bool,
    used: HashMap<IpAddr, Holder>,
    /// IPs held under each sharing key, in address order (a Service joining a shared IP
    /// takes the lowest compatible one, whatever the order its holders came in).
    shared: HashMap<Arc<str>, BTreeSet<IpAddr>>,
    /// One cursor per (pool, family), at `pool * 2 + family`.
    cursors: Vec<Cursor>,
}

impl<'a> Run<'a> {
    fn new(pools: &'a [PoolView]) -> Run<'a> {
        Run {
            pools,
            by_name: {
                let mut m = HashMap::with_capacity(pools.len());
                for (i, p) in pools.iter().enumerate() {
                    m.entry(&*p.name).or_insert(i);
                }
                m
            },
            all_open: pools
                .iter()
                .all(|p| p.serves_all() && p.node_pools.is_none()),
            used: HashMap::new(),
            shared: HashMap::new(),
            cursors: vec![Cursor::default(); pools.len() * 2],
        }
    }

    /// The position of a pool by name (the first, should two share a name).
    fn pool_index(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    fn conflict(&self, ip: &IpAddr, sharing: Option<&Sharing>) -> Option<(ObjectKey, String)> {
        let holder = self.used.get(ip)?;
        let why = share_conflict(holder, sharing)?;
        // The lowest key, not the first to come: the same holder however it was built.
        Some((
            holder
                .users
                .iter()
                .min()
                .cloned()
                .unwrap_or_else(|| ObjectKey::new("", "")),
            why,
        ))
    }

    fn take(&mut self, ip: IpAddr, key: &ObjectKey, sharing: Option<&Sharing>) {
        let holder = self.used.entry(ip).or_insert_with(|| Holder {
            sharing: None,
            users: smallvec::SmallVec::new(),
        });
        match (&mut holder.sharing, sharing) {
            (Some(have), Some(want)) => have.ports.extend(want.ports.iter().cloned()),
            (slot @ None, Some(want)) if holder.users.is_empty() => {
                *slot = Some(Box::new(want.clone()));
                self.shared.entry(want.key.clone()).or_default().insert(ip);
            }
            _ => {}
        }
        holder.users.push(key.clone());
    }

    /// Whether the scan of a pool and family has passed its last range (nothing free left
    /// in this run), so a full pool costs nothing to skip.
    fn exhausted(&self, pool_idx: usize, family: Family) -> bool {
        self.cursors
            .get(cursor_slot(pool_idx, family))
            .is_none_or(|c| c.range >= self.pools[pool_idx].ranges.len())
    }

    /// The first free address of a family in a pool, without taking it.
    fn peek_free(&mut self, pool_idx: usize, family: Family) -> Option<IpAddr> {
        let pool = &self.pools[pool_idx];
        let cursor = self.cursors.get_mut(cursor_slot(pool_idx, family))?;
        while let Some(range) = pool.ranges.get(cursor.range) {
            let (first, last) = range.bounds();
            if range.family() != family {
                cursor.range += 1;
                cursor.next = None;
                continue;
            }
            let n = cursor.next.unwrap_or(first);
            if n > last {
                cursor.range += 1;
                cursor.next = None;
                continue;
            }
            let ip = from_u128(family, n);
            if (pool.avoid_buggy_ips && is_buggy(&ip)) || self.used.contains_key(&ip) {
                match n.checked_add(1) {
                    Some(next) => cursor.next = Some(next),
                    None => {
                        cursor.range += 1;
                        cursor.next = None;
                    }
                }
                continue;
            }
            return Some(ip);
        }
        None
    }

    /// An address of `family` in pool `idx` for a Service: a compatible shared one first.
    fn pick(
        &mut self,
        idx: usize,
        family: Family,
        sharing: Option<&Sharing>,
        taken: &[IpAddr],
    ) -> Option<IpAddr> {
        if let Some(s) = sharing {
            let pool = &self.pools[idx];
            let found = self
                .shared
                .get(&s.key)
                .into_iter()
                .flatten()
                .copied()
                .find(|ip| {
                    Family::of(ip) == family
                        && pool.contains(ip)
                        && !taken.contains(ip)
                        && self
                            .used
                            .get(ip)
                            .is_some_and(|h| share_conflict(h, Some(s)).is_none())
                });
            if found.is_some() {
                return found;
            }
        }
        self.peek_free(idx, family)
    }
}

fn cursor_slot(pool_idx: usize, family: Family) -> usize {
    pool_idx * 2 + usize::from(family == Family::V6)
}

fn family_list(families: &[Family]) -> String {
    families
        .iter()
        .map(|f| f.as_k8s())
        .collect::<Vec<_>>()
        .join(" and ")
}

/// Gives every Service of `snap` its IPs, keeping those of `previous` that are still valid.
///
/// This is the reference: [`IncrementalAllocator`] gives the same result from the previous
/// run's state, re-checking only what changed.
pub fn allocate(snap: &Snapshot, previous: &Assignments) -> Assignments {
    allocate_with(selected_node_pools, snap, previous)
}

/// The daemon's [`Selection`]: `service.openyurt.io/nodepool-labelselector` over the
/// snapshot's node pools ([`crate::nodepool::selected_node_pools`]).
pub fn selected_node_pools(
    snap: &Snapshot,
    svc: &ServiceFacts,
) -> Result<Option<Vec<Arc<str>>>, String> {
    crate::nodepool::selected_node_pools(svc, &snap.node_pools).map_err(|e| e.to_string())
}

/// [`allocate`] with the node pools of each Service given by `select`.
pub fn allocate_with(select: Selection, snap: &Snapshot, previous: &Assignments) -> Assignments {
    let mut run = Run::new(&snap.allocation_pools);
    run.used.reserve(snap.services.len());
    // Two runs in key order (pass 1's outcomes, pass 2's): collected, then built into the
    // map in one go rather than inserted one by one.
    let mut outcomes: Vec<(AllocationKey, Outcome)> = Vec::with_capacity(snap.services.len());
    let mut pending: Vec<Pending> = Vec::new();

    // Pass 1: keep what is still valid.
    for (key, svc) in &snap.services {
        let akeys = match keys_of(select, snap, key, svc) {
            Ok(k) => k,
            Err(e) => {
                outcomes.push((AllocationKey::cluster(key.clone()), Err(e)));
                continue;
            }
        };
        for akey in akeys {
            let prev = previous.outcomes.get(&akey);
            if let Some(outcome) = first_pass(&mut run, snap, &akey, svc, prev, &mut pending) {
                outcomes.push((akey, outcome));
            }
        }
    }

    // Pass 2: allocate the rest, in key order.
    for (akey, req, serves, kept) in pending {
        let outcome = fresh(&mut run, &akey, &req, &serves, kept);
        outcomes.push((akey, outcome));
    }
    Assignments {
        outcomes: outcomes.into_iter().collect(),
    }
}

/// Pass 1 for one Service: its outcome when it is decided (kept, or refused), else `None`
/// with what pass 2 must finish pushed to `pending`.
fn first_pass(
    run: &mut Run<'_>,
    snap: &Snapshot,
    akey: &AllocationKey,
    svc: &ServiceFacts,
    prev: Option<&Outcome>,
    pending: &mut Vec<Pending>,
) -> Option<Outcome> {
    let key = &akey.service;
    let req = match request_of(svc) {
        Ok(r) => r,
        Err(e) => return Some(Err(e)),
    };
    let labels = &svc.labels;
    let ns_labels = snap.namespace_labels.get(&key.namespace);
    let node_pool = akey.node_pool.as_deref();
    let serves: Vec<bool> = if run.all_open {
        vec![node_pool.is_none(); run.pools.len()]
    } else {
        run.pools
            .iter()
            .map(|p| p.serves_node_pool(node_pool) && p.serves(&key.namespace, ns_labels, labels))
            .collect()
    };
    let mut req = req;
    if node_pool.is_some() && !req.requested.is_empty() {
        // One Service, one IP per region: each node pool takes the requested IPs that
        // its own scoped pools hold.
        let all = std::mem::take(&mut req.requested);
        req.requested = all
            .iter()
            .copied()
            .filter(|ip| (0..run.pools.len()).any(|i| serves[i] && run.pools[i].contains(ip)))
            .collect();
        if req.requested.is_empty() {
            return Some(Err(AllocationError::RequestedIpsNotInNodePool {
                node_pool: node_pool.unwrap_or_default().to_string(),
            }));
        }
    }
    let (prev_ips, prev_pool) = previous_ips(prev, &req);
    match keep(run, &req, &serves, &prev_ips, prev_pool) {
        Keep::Nothing => {
            pending.push((akey.clone(), req, serves, None));
            None
        }
        Keep::Removed(ip) => Some(Err(AllocationError::IpRemovedFromPool { ip })),
        Keep::Ips(idx, ips) => {
            for ip in &ips {
                run.take(*ip, key, req.sharing.as_ref());
            }
            if req
                .required()
                .iter()
                .all(|f| ips.iter().any(|ip| Family::of(ip) == *f))
            {
                Some(Ok(Allocation {
                    pool: run.pools[idx].name.clone(),
                    ips,
                }))
            } else {
                pending.push((akey.clone(), req, serves, Some((idx, ips))));
                None
            }
        }
    }
}

/// What pass 1 may keep of a previous outcome: its IPs and pool, or an IP removed from its
/// pool (reported again until the range comes back).
fn previous_ips<'p>(prev: Option<&'p Outcome>, req: &Request) -> (Vec<IpAddr>, &'p str) {
    match prev {
        Some(Ok(a)) => (a.ips.clone(), &a.pool),
        Some(Err(AllocationError::IpRemovedFromPool { ip })) if req.requested.is_empty() => {
            (vec![*ip], "")
        }
        _ => (Vec::new(), ""),
    }
}

/// A Service left for pass 2: key, request, which pools serve it, and what pass 1 kept.
type Pending = (
    AllocationKey,
    Request,
    Vec<bool>,
    Option<(usize, Vec<IpAddr>)>,
);

enum Keep {
    Nothing,
    Removed(IpAddr),
    Ips(usize, Vec<IpAddr>),
}

/// Which previous IPs stay. A changed request (other IPs, pool or families) keeps nothing;
/// an IP no longer in any pool is reported, not replaced.
///
/// Each IP stays in the pool it came from (`prev_pool`) while that pool still holds it and
/// serves the Service, so that a re-run with nothing changed gives the same outcome even
/// where pools overlap.
fn keep(run: &Run<'_>, req: &Request, serves: &[bool], prev: &[IpAddr], prev_pool: &str) -> Keep {
    if prev.is_empty() {
        return Keep::Nothing;
    }
    let prev_idx = run.pool_index(prev_pool);
    // Requested IPs must all be among the previous ones; a previous IP beside them is fine
    // only for a family the request leaves open (dual-stack completed from the pool).
    let requested_families: Vec<Family> = req.requested.iter().map(Family::of).collect();
    if !req.requested.iter().all(|r| prev.contains(r))
        || prev
            .iter()
            .any(|ip| !req.requested.contains(ip) && requested_families.contains(&Family::of(ip)))
    {
        return Keep::Nothing;
    }
    let mut pool_idx = None;
    let mut kept = Vec::new();
    for ip in prev {
        if !req.wanted().contains(&Family::of(ip))
            || kept
                .iter()
                .any(|k: &IpAddr| Family::of(k) == Family::of(ip))
        {
            return Keep::Nothing;
        }
        let in_pool = |i: &usize| run.pools[*i].contains(ip);
        let found = match &req.pool {
            Some(name) => run.pool_index(name).filter(in_pool),
            None => prev_idx
                .filter(|i| in_pool(i) && serves[*i])
                .or_else(|| (0..run.pools.len()).find(|i| in_pool(i) && serves[*i])),
        };
        let Some(idx) = found else {
            if (0..run.pools.len()).any(|i| in_pool(&i)) {
                return Keep::Nothing; // still in a pool, but the Service now asks elsewhere
            }
            return Keep::Removed(*ip);
        };
        if pool_idx.is_some_and(|p| p != idx) || (req.pool.is_some() && !serves[idx]) {
            return Keep::Nothing;
        }
        if run.conflict(ip, req.sharing.as_ref()).is_some() {
            return Keep::Nothing;
        }
        pool_idx = Some(idx);
        kept.push(*ip);
    }
    match pool_idx {
        Some(idx) => Keep::Ips(idx, kept),
        None => Keep::Nothing,
    }
}

/// Requested IPs, or the first free ones of the first eligible pool.
fn fresh(
    run: &mut Run<'_>,
    akey: &AllocationKey,
    req: &Request,
    serves: &[bool],
    kept: Option<(usize, Vec<IpAddr>)>,
) -> Outcome {
    let key = &akey.service;
    let named = match &req.pool {
        Some(name) => {
            let idx = run
                .pool_index(name)
                .ok_or_else(|| AllocationError::UnknownPool { pool: name.clone() })?;
            if !serves[idx] {
                return Err(AllocationError::PoolNotAllowed { pool: name.clone() });
            }
            Some(idx)
        }
        None => None,
    };

    let (mut ips, fixed_pool) = match kept {
        Some((idx, ips)) => (ips, Some(idx)),
        None if !req.requested.is_empty() => {
            let idx = requested_pool(run, req, serves, named)?;
            for ip in &req.requested {
                if let Some((by, why)) = run.conflict(ip, req.sharing.as_ref()) {
                    return Err(AllocationError::RequestedIpInUse { ip: *ip, by, why });
                }
            }
            (req.requested.clone(), Some(idx))
        }
        None => (Vec::new(), named),
    };

    // Candidate pools, in order, without collecting them: most runs stop at the first.
    let pools = run.pools;
    let is_candidate = |i: usize| match fixed_pool {
        Some(idx) => i == idx,
        None => pools[i].auto_assign && serves[i],
    };
    let has_families =
        |pools: &[PoolView], i: usize| req.required().iter().all(|f| pools[i].has_family(*f));
    if !(0..pools.len()).any(is_candidate) {
        return Err(match &akey.node_pool {
            Some(np) if fixed_pool.is_none() => AllocationError::NoPoolForNodePool {
                node_pool: np.to_string(),
            },
            _ => AllocationError::NoEligiblePool,
        });
    }
    if !(0..pools.len()).any(|i| is_candidate(i) && has_families(pools, i)) {
        return Err(AllocationError::NoPoolForFamily {
            families: family_list(req.required()),
        });
    }
    for idx in 0..pools.len() {
        if !is_candidate(idx) || !has_families(pools, idx) {
            continue;
        }
        let full = req.sharing.is_none()
            && req
                .required()
                .iter()
                .any(|f| !ips.iter().any(|ip| Family::of(ip) == *f) && run.exhausted(idx, *f));
        if full {
            continue;
        }
        let mut got = ips.clone();
        let mut ok = true;
        for family in req.wanted() {
            if got.iter().any(|ip| Family::of(ip) == *family) {
                continue;
            }
            let required = req.required().contains(family);
            match run.pick(idx, *family, req.sharing.as_ref(), &got) {
                Some(ip) => got.push(ip),
                None if required => {
                    ok = false;
                    break;
                }
                None => {}
            }
        }
        if ok {
            got.sort_by_key(|ip| req.families.iter().position(|f| *f == Family::of(ip)));
            for ip in &got {
                if !ips.contains(ip) {
                    run.take(*ip, key, req.sharing.as_ref());
                }
            }
            ips = got;
            // Requested IPs were not taken yet: take them now.
            for ip in &req.requested {
                if !run.used.get(ip).is_some_and(|h| h.users.contains(key)) {
                    run.take(*ip, key, req.sharing.as_ref());
                }
            }
            return Ok(Allocation {
                pool: run.pools[idx].name.clone(),
                ips,
            });
        }
    }
    Err(AllocationError::PoolsExhausted {
        pools: (0..pools.len())
            .filter(|i| is_candidate(*i) && has_families(pools, *i))
            .map(|i| format!("{:?}", pools[i].name))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The one pool all requested IPs are in, or why there is none.
fn requested_pool(
    run: &Run<'_>,
    req: &Request,
    serves: &[bool],
    named: Option<usize>,
) -> Result<usize, AllocationError> {
    let mut chosen: Option<(usize, IpAddr)> = None;
    for ip in &req.requested {
        let family = Family::of(ip);
        if !req.wanted().contains(&family) {
            return Err(AllocationError::RequestedIpWrongFamily {
                ip: *ip,
                family: family.as_k8s(),
                allowed: family_list(req.wanted()),
            });
        }
        let idx = match named {
            Some(idx) if run.pools[idx].contains(ip) => idx,
            Some(idx) => {
                return Err(AllocationError::RequestedIpNotInPool {
                    ip: *ip,
                    pool: run.pools[idx].name.to_string(),
                })
            }
            None => {
                let containing: Vec<usize> = (0..run.pools.len())
                    .filter(|i| run.pools[*i].contains(ip))
                    .collect();
                match containing.iter().find(|i| serves[**i]) {
                    Some(i) => *i,
                    None => match containing.first() {
                        Some(i) => {
                            return Err(AllocationError::PoolNotAllowed {
                                pool: run.pools[*i].name.to_string(),
                            })
                        }
                        None => return Err(AllocationError::RequestedIpOutsidePools { ip: *ip }),
                    },
                }
            }
        };
        if let Some((first_idx, first)) = chosen {
            if first_idx != idx {
                return Err(AllocationError::RequestedIpsInDifferentPools {
                    first,
                    first_pool: run.pools[first_idx].name.to_string(),
                    second: *ip,
                    second_pool: run.pools[idx].name.to_string(),
                });
            }
        }
        chosen = Some((idx, *ip));
    }
    chosen
        .map(|(i, _)| i)
        .ok_or(AllocationError::NoEligiblePool)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod nodepool_tests;

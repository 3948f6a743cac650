//! Election: which node announces each LoadBalancer IP. Pure: no clock, no I/O.
//!
//! For every IP the eligible nodes are those that
//! 1. may announce at all (the floor: Node `Ready`, no `NetworkUnavailable`,
//!    no `node.kubernetes.io/exclude-from-external-load-balancers` label),
//! 2. belong to the IP's node pool and match the advertisement's node selectors,
//! 3. are live members of the gossip membership,
//! 4. have an announcing interface up,
//! 5. with `externalTrafficPolicy: Local`, run a ready endpoint of the Service,
//! 6. in L2 mode, carry a subnet containing the IP on an up announcing
//!    interface (a node in another region or with a dead NIC never wins an IP
//!    it cannot serve).
//!
//! L2: one owner per IP by rendezvous hashing ([`rendezvous`]); every speaker
//! with the same view computes the same owner, and a leaving node moves only
//! its own IPs. BGP: every eligible node announces (ECMP at the router).
//! Every excluded node carries the first reason that excluded it, in the order
//! above, for `edgelbctl`.
//!
//! Services sharing an IP share its owner: the election is keyed by the IP,
//! and requests for the same IP and mode are merged (a node must be eligible
//! for every one of them), so one result, one owner.

mod incremental;
pub mod quorum;
pub mod rendezvous;
pub mod selector;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

pub use quorum::{may_own_l2, QuorumView};
pub use selector::{NodeSelector, SelectorOperator, SelectorRequirement};

/// A node name, cheap to clone into many results.
pub type NodeName = Arc<str>;

/// What a node reports about one of its announcing interfaces (gossiped).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InterfaceFacts {
    /// Interface name, e.g. `eth0`.
    pub name: String,
    /// Whether the link is up with carrier.
    pub up: bool,
    /// The subnets configured on it (address with prefix length).
    pub subnets: Vec<IpNet>,
}

/// One node as the election sees it; the daemon builds it from the Node
/// object and the membership.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The Kubernetes node name.
    pub node: String,
    /// The Node's labels, for the advertisements' node selectors.
    pub labels: BTreeMap<String, String>,
    /// The Node's `Ready` condition is `True`.
    pub ready: bool,
    /// The Node's `NetworkUnavailable` condition is `True`.
    pub network_unavailable: bool,
    /// The Node carries `node.kubernetes.io/exclude-from-external-load-balancers`.
    pub excluded_label: bool,
    /// The node pool (region) the node belongs to, if any.
    pub node_pool: Option<String>,
    /// The membership sees the node's speaker alive (or suspect).
    pub live: bool,
    /// The node's interfaces as it last gossiped them.
    pub interfaces: Vec<InterfaceFacts>,
}

/// How an IP is announced.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// ARP/NDP from one owner; `interfaces` restricts the announcing
    /// interfaces (`None`: any interface of the node).
    L2 {
        /// The advertisement's interface list.
        interfaces: Option<Vec<String>>,
    },
    /// BGP from every eligible node.
    Bgp,
}

/// The kind of a [`Mode`], the second half of a result's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ModeKind {
    /// Layer 2 (one owner).
    L2,
    /// BGP (all eligible nodes).
    Bgp,
}

impl Mode {
    /// The kind of this mode.
    pub fn kind(&self) -> ModeKind {
        match self {
            Mode::L2 { .. } => ModeKind::L2,
            Mode::Bgp => ModeKind::Bgp,
        }
    }
}

/// One IP to elect for, with what restricts its nodes. The terms are those of the
/// IP's Service and advertisements, the same for each of its IPs: shared (a planner keeps
/// one request per IP, 10 000 of them, between plans).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionRequest {
    /// The LoadBalancer IP.
    pub ip: IpAddr,
    /// What restricts its nodes.
    pub terms: Arc<RequestTerms>,
}

/// What restricts the nodes that may announce an IP (the same for every IP of a Service
/// under the same advertisements).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestTerms {
    /// How it is announced.
    pub mode: Mode,
    /// The advertisement's node selectors (any of them; empty: all nodes).
    pub node_selectors: Vec<NodeSelector>,
    /// The node pool that exposes the IP (`None`: every pool).
    pub pool: Option<String>,
    /// `Some(nodes)` for `externalTrafficPolicy: Local`: the nodes that run a
    /// ready endpoint of the Service; `None` for `Cluster`.
    pub local_endpoints: Option<BTreeSet<String>>,
}

impl ElectionRequest {
    /// A request for `ip` on `terms`.
    pub fn new(ip: IpAddr, terms: Arc<RequestTerms>) -> ElectionRequest {
        ElectionRequest { ip, terms }
    }

    /// How it is announced.
    pub fn mode(&self) -> &Mode {
        &self.terms.mode
    }
}

/// Why a node may not announce an IP. Serialized as the camelCase codes that
/// `edgelbctl` shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExclusionReason {
    /// The node carries `node.kubernetes.io/exclude-from-external-load-balancers`.
    ExcludedByLabel,
    /// The Node is not `Ready`.
    NodeNotReady,
    /// The Node's `NetworkUnavailable` condition is `True`.
    NetworkUnavailable,
    /// The node is not in the IP's node pool.
    NotInPool,
    /// The node matches none of the advertisement's node selectors.
    SelectorMismatch,
    /// The node's speaker is not a live member of the gossip.
    NotLive,
    /// None of the node's announcing interfaces is up.
    NicDown,
    /// `externalTrafficPolicy: Local` and no ready endpoint on the node.
    NoLocalEndpoints,
    /// L2: no up announcing interface carries a subnet containing the IP.
    SubnetNotLocal,
}

impl ExclusionReason {
    /// The code as `edgelbctl` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            ExclusionReason::ExcludedByLabel => "excludedByLabel",
            ExclusionReason::NodeNotReady => "nodeNotReady",
            ExclusionReason::NetworkUnavailable => "networkUnavailable",
            ExclusionReason::NotInPool => "notInPool",
            ExclusionReason::SelectorMismatch => "selectorMismatch",
            ExclusionReason::NotLive => "notLive",
            ExclusionReason::NicDown => "nicDown",
            ExclusionReason::NoLocalEndpoints => "noLocalEndpoints",
            ExclusionReason::SubnetNotLocal => "subnetNotLocal",
        }
    }
}

/// One excluded node and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exclusion {
    /// The node.
    #[serde(serialize_with = "serialize_name")]
    pub node: NodeName,
    /// The first reason that excluded it.
    pub reason: ExclusionReason,
}

fn serialize_name<S: Serializer>(name: &NodeName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(name)
}

/// The outcome for one IP and mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElectionResult {
    /// The IP.
    pub ip: IpAddr,
    /// L2 or BGP.
    pub mode: ModeKind,
    /// The announcing nodes: at most one for L2, every eligible node (sorted
    /// by name) for BGP. Empty when no node is eligible. Shared between the
    /// IPs of one class in BGP mode (1 000 owners x 10 000 IPs would
    /// otherwise be ten million names).
    pub owners: Arc<[NodeName]>,
    /// Exclusions shared by every IP of the same advertisement class
    /// (labels, pool, selectors, liveness, NIC); shared to keep memory flat.
    shared_exclusions: Arc<[Exclusion]>,
    /// Exclusions that depend on this IP (local endpoints, subnet).
    own_exclusions: Vec<Exclusion>,
}

impl ElectionResult {
    /// Every excluded node with its reason.
    pub fn exclusions(&self) -> impl Iterator<Item = &Exclusion> {
        self.shared_exclusions
            .iter()
            .chain(self.own_exclusions.iter())
    }

    /// Why `node` was excluded, if it was.
    pub fn exclusion_of(&self, node: &str) -> Option<ExclusionReason> {
        self.exclusions()
            .find(|e| &*e.node == node)
            .map(|e| e.reason)
    }

    /// The single L2 owner, if any.
    pub fn owner(&self) -> Option<&NodeName> {
        self.owners.first()
    }
}

struct ExclusionList<'a>(&'a ElectionResult);

impl Serialize for ExclusionList<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.exclusions())
    }
}

impl Serialize for ElectionResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let owners: Vec<&str> = self.owners.iter().map(|n| &**n).collect();
        let mut st = s.serialize_struct("ElectionResult", 4)?;
        st.serialize_field("ip", &self.ip)?;
        st.serialize_field("mode", &self.mode)?;
        st.serialize_field("owners", &owners)?;
        st.serialize_field("excluded", &ExclusionList(self))?;
        st.end()
    }
}

struct NodeEntry {
    name: NodeName,
    /// `[name]`: the owners of every L2 result this node wins, shared (one allocation
    /// per node, not per IP).
    alone: Arc<[NodeName]>,
    key: u64,
    candidate: Candidate,
}

/// The nodes of one view, indexed for repeated elections.
pub struct ElectionView {
    nodes: Vec<NodeEntry>,
}

/// The class-level verdict for every node: what does not depend on the IP.
struct ClassFilter {
    status: Vec<Option<ExclusionReason>>,
    ok: Vec<usize>,
    /// Names of the `ok` nodes: the BGP owners when no per-IP check applies.
    ok_names: Arc<[NodeName]>,
    excluded: Arc<[Exclusion]>,
}

type ClassKey<'r> = (&'r [NodeSelector], Option<&'r str>, &'r Mode);

/// The terms of `r` that do not depend on the IP or the Service's endpoints.
fn class_key(r: &ElectionRequest) -> ClassKey<'_> {
    let t = &r.terms;
    (&t.node_selectors, t.pool.as_deref(), &t.mode)
}

impl ElectionView {
    /// Index `candidates`. A node name given twice keeps its first entry.
    pub fn new(candidates: impl IntoIterator<Item = Candidate>) -> Self {
        let mut nodes: Vec<NodeEntry> = candidates
            .into_iter()
            .map(|c| {
                let name: NodeName = Arc::from(c.node.as_str());
                NodeEntry {
                    alone: Arc::from([name.clone()]),
                    name,
                    key: rendezvous::node_key(&c.node),
                    candidate: c,
                }
            })
            .collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        nodes.dedup_by(|later, first| later.name == first.name);
        ElectionView { nodes }
    }

    /// The candidates of the view, sorted by node name (one per name).
    pub fn candidates(&self) -> impl Iterator<Item = &Candidate> {
        self.nodes.iter().map(|n| &n.candidate)
    }

    /// Number of nodes in the view.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the view has no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The `k` nodes ranked next after the owner of an L2 `result` of this view: the
    /// eligible nodes (none of the result's exclusions) other than the owner, best
    /// rendezvous score first. The first is the node that owns the IP should the owner
    /// go; the owner heartbeats to these ([`crate::membership::heartbeat`]).
    pub fn successors(&self, result: &ElectionResult, k: usize) -> Vec<NodeName> {
        if result.mode != ModeKind::L2 || k == 0 {
            return Vec::new();
        }
        let excluded: std::collections::HashSet<&str> =
            result.exclusions().map(|e| &*e.node).collect();
        let owner = result.owner().map(|o| &**o);
        let eligible = self
            .nodes
            .iter()
            .map(|n| &*n.name)
            .filter(|n| !excluded.contains(n) && Some(*n) != owner);
        rendezvous_order(result.ip, eligible)
            .into_iter()
            .take(k)
            .map(NodeName::from)
            .collect()
    }

    /// Elect for one request alone.
    pub fn elect(&self, request: &ElectionRequest) -> ElectionResult {
        let class = self.class_filter(class_key(request));
        self.elect_one(request, &class)
    }

    /// Elect for every request; one result per (IP, mode kind), sorted by
    /// IP then mode. Requests for the same IP and mode (Services sharing an
    /// IP) are merged: a node must be eligible for each of them.
    pub fn elect_many(&self, requests: &[ElectionRequest]) -> Vec<ElectionResult> {
        let groups = group_requests(requests);
        let mut classes: HashMap<ClassKey<'_>, ClassFilter> = HashMap::new();
        let mut out = Vec::with_capacity(groups.len());
        for ((ip, kind), group) in groups {
            for r in &group {
                let key = class_key(r);
                classes.entry(key).or_insert_with(|| self.class_filter(key));
            }
            let group_classes: Vec<Option<&ClassFilter>> =
                group.iter().map(|r| classes.get(&class_key(r))).collect();
            match (group.as_slice(), group_classes.as_slice()) {
                ([single], [Some(class)]) => out.push(self.elect_one(single, class)),
                _ => out.push(self.elect_merged(ip, kind, &group, &group_classes)),
            }
        }
        out
    }

    fn class_filter(&self, (selectors, pool, mode): ClassKey<'_>) -> ClassFilter {
        let mut status = Vec::with_capacity(self.nodes.len());
        let mut ok = Vec::new();
        let mut excluded = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let s = class_status(&n.candidate, selectors, pool, mode);
            match s {
                None => ok.push(i),
                Some(reason) => excluded.push(Exclusion {
                    node: n.name.clone(),
                    reason,
                }),
            }
            status.push(s);
        }
        let ok_names = ok.iter().map(|&i| self.nodes[i].name.clone()).collect();
        ClassFilter {
            status,
            ok,
            ok_names,
            excluded: excluded.into(),
        }
    }

    fn elect_one(&self, request: &ElectionRequest, class: &ClassFilter) -> ElectionResult {
        if request.terms.mode == Mode::Bgp && request.terms.local_endpoints.is_none() {
            // BGP checks nothing per IP without a Local traffic policy.
            return ElectionResult {
                ip: request.ip,
                mode: ModeKind::Bgp,
                owners: class.ok_names.clone(),
                shared_exclusions: class.excluded.clone(),
                own_exclusions: Vec::new(),
            };
        }
        let ip_key = rendezvous::ip_key(request.ip);
        let mut own = Vec::new();
        let mut owners = Vec::new();
        let mut best: Option<(u64, &NodeEntry)> = None;
        for &i in &class.ok {
            let n = &self.nodes[i];
            if let Some(reason) = ip_status(&n.candidate, request) {
                own.push(Exclusion {
                    node: n.name.clone(),
                    reason,
                });
                continue;
            }
            consider(&mut best, &mut owners, request.mode().kind(), ip_key, n);
        }
        finish(
            request.ip,
            request.mode().kind(),
            best,
            owners,
            class.excluded.clone(),
            own,
        )
    }

    fn elect_merged(
        &self,
        ip: IpAddr,
        kind: ModeKind,
        group: &[&ElectionRequest],
        classes: &[Option<&ClassFilter>],
    ) -> ElectionResult {
        let ip_key = rendezvous::ip_key(ip);
        let mut own = Vec::new();
        let mut owners = Vec::new();
        let mut best: Option<(u64, &NodeEntry)> = None;
        for (i, n) in self.nodes.iter().enumerate() {
            let reason = group.iter().zip(classes).find_map(|(r, c)| {
                let class_reason = match c {
                    Some(c) => c.status.get(i).copied().flatten(),
                    None => {
                        let (selectors, pool, mode) = class_key(r);
                        class_status(&n.candidate, selectors, pool, mode)
                    }
                };
                class_reason.or_else(|| ip_status(&n.candidate, r))
            });
            match reason {
                Some(reason) => own.push(Exclusion {
                    node: n.name.clone(),
                    reason,
                }),
                None => consider(&mut best, &mut owners, kind, ip_key, n),
            }
        }
        finish(ip, kind, best, owners, Arc::from(Vec::new()), own)
    }
}

type Groups<'r> = BTreeMap<(IpAddr, ModeKind), Vec<&'r ElectionRequest>>;

/// Requests by (IP, mode kind): Services sharing an IP land in one group.
fn group_requests(requests: &[ElectionRequest]) -> Groups<'_> {
    let mut groups: Groups<'_> = BTreeMap::new();
    for r in requests {
        groups.entry((r.ip, r.mode().kind())).or_default().push(r);
    }
    groups
}

fn consider<'n>(
    best: &mut Option<(u64, &'n NodeEntry)>,
    owners: &mut Vec<NodeName>,
    kind: ModeKind,
    ip_key: u64,
    n: &'n NodeEntry,
) {
    match kind {
        ModeKind::Bgp => owners.push(n.name.clone()),
        ModeKind::L2 => {
            let s = rendezvous::score(ip_key, n.key);
            let wins = match best {
                None => true,
                Some((bs, bn)) => rendezvous::beats(s, &n.name, *bs, &bn.name),
            };
            if wins {
                *best = Some((s, n));
            }
        }
    }
}

fn finish(
    ip: IpAddr,
    mode: ModeKind,
    best: Option<(u64, &NodeEntry)>,
    mut owners: Vec<NodeName>,
    shared_exclusions: Arc<[Exclusion]>,
    own_exclusions: Vec<Exclusion>,
) -> ElectionResult {
    let owners = match best {
        Some((_, n)) if owners.is_empty() => n.alone.clone(),
        Some((_, n)) => {
            owners.push(n.name.clone());
            owners.into()
        }
        None => owners.into(),
    };
    ElectionResult {
        ip,
        mode,
        owners,
        shared_exclusions,
        own_exclusions,
    }
}

/// The interfaces a node may announce from in `mode`.
fn announcing<'c>(c: &'c Candidate, mode: &'c Mode) -> impl Iterator<Item = &'c InterfaceFacts> {
    let only: Option<&Vec<String>> = match mode {
        Mode::L2 { interfaces } => interfaces.as_ref(),
        Mode::Bgp => None,
    };
    c.interfaces
        .iter()
        .filter(move |i| only.is_none_or(|names| names.contains(&i.name)))
}

/// The checks that do not depend on the IP, in reporting order: the first rule that
/// excludes the node names the reason.
fn class_status(
    c: &Candidate,
    selectors: &[NodeSelector],
    pool: Option<&str>,
    mode: &Mode,
) -> Option<ExclusionReason> {
    excluded_by_label(c)
        .or_else(|| not_ready(c))
        .or_else(|| network_unavailable(c))
        .or_else(|| not_in_pool(c, pool))
        .or_else(|| selector_mismatch(c, selectors))
        .or_else(|| not_live(c))
        .or_else(|| nic_down(c, mode))
}

/// The checks that depend on the IP or its Service, in reporting order.
fn ip_status(c: &Candidate, r: &ElectionRequest) -> Option<ExclusionReason> {
    no_local_endpoints(c, r).or_else(|| subnet_not_local(c, r))
}

/// The node opted out with `node.kubernetes.io/exclude-from-external-load-balancers`.
fn excluded_by_label(c: &Candidate) -> Option<ExclusionReason> {
    c.excluded_label.then_some(ExclusionReason::ExcludedByLabel)
}

/// The Node is not `Ready`.
fn not_ready(c: &Candidate) -> Option<ExclusionReason> {
    (!c.ready).then_some(ExclusionReason::NodeNotReady)
}

/// The Node's network is not configured (`NetworkUnavailable`).
fn network_unavailable(c: &Candidate) -> Option<ExclusionReason> {
    c.network_unavailable
        .then_some(ExclusionReason::NetworkUnavailable)
}

/// The IP belongs to another node pool.
fn not_in_pool(c: &Candidate, pool: Option<&str>) -> Option<ExclusionReason> {
    pool.filter(|p| c.node_pool.as_deref() != Some(*p))
        .map(|_| ExclusionReason::NotInPool)
}

/// None of the advertisement's node selectors matches the node.
fn selector_mismatch(c: &Candidate, selectors: &[NodeSelector]) -> Option<ExclusionReason> {
    (!selector::matches_any(selectors, &c.labels)).then_some(ExclusionReason::SelectorMismatch)
}

/// The node's speaker is not a live member of the gossip.
fn not_live(c: &Candidate) -> Option<ExclusionReason> {
    (!c.live).then_some(ExclusionReason::NotLive)
}

/// None of the node's announcing interfaces is up.
fn nic_down(c: &Candidate, mode: &Mode) -> Option<ExclusionReason> {
    (!announcing(c, mode).any(|i| i.up)).then_some(ExclusionReason::NicDown)
}

/// `externalTrafficPolicy: Local` and no ready endpoint on the node.
fn no_local_endpoints(c: &Candidate, r: &ElectionRequest) -> Option<ExclusionReason> {
    r.terms
        .local_endpoints
        .as_ref()
        .filter(|nodes| !nodes.contains(&c.node))
        .map(|_| ExclusionReason::NoLocalEndpoints)
}

/// L2: no up announcing interface of the node carries a subnet containing the IP.
fn subnet_not_local(c: &Candidate, r: &ElectionRequest) -> Option<ExclusionReason> {
    if !matches!(r.mode(), Mode::L2 { .. }) {
        return None;
    }
    let local =
        announcing(c, r.mode()).any(|i| i.up && i.subnets.iter().any(|net| net.contains(&r.ip)));
    (!local).then_some(ExclusionReason::SubnetNotLocal)
}

/// `names` in rendezvous order for `ip`, best first: the order in which they would own
/// the IP in L2 mode were each eligible.
fn rendezvous_order<'n>(ip: IpAddr, names: impl IntoIterator<Item = &'n str>) -> Vec<&'n str> {
    let ip_key = rendezvous::ip_key(ip);
    let mut ranked: Vec<(u64, &str)> = names
        .into_iter()
        .map(|n| (rendezvous::score(ip_key, rendezvous::node_key(n)), n))
        .collect();
    ranked.sort_by(|(sa, na), (sb, nb)| {
        if rendezvous::beats(*sa, na, *sb, nb) {
            std::cmp::Ordering::Less
        } else if rendezvous::beats(*sb, nb, *sa, na) {
            std::cmp::Ordering::Greater
        } else {
            std::cmp::Ordering::Equal
        }
    });
    ranked.into_iter().map(|(_, n)| n).collect()
}

/// Why an L2 IP is where it is (`edgelbctl explain`): every one of `nodes`, in the
/// rendezvous order of the result's IP, with the reason the election skipped it (`None`:
/// eligible). The owner is the first eligible node; each node ranked above it carries
/// the reason it was passed over.
pub fn ranking<'n>(
    result: &ElectionResult,
    nodes: impl IntoIterator<Item = &'n str>,
) -> Vec<(&'n str, Option<ExclusionReason>)> {
    rendezvous_order(result.ip, nodes)
        .into_iter()
        .map(|n| (n, result.exclusion_of(n)))
        .collect()
}

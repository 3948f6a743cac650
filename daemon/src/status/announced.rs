//! Which node announces each Service, and how: the text of the `AnnouncedBy` Event (the
//! writer of record posts it once per change, see `status::writer`).
//!
//! Pure: the leader runs the same election every speaker runs ([`crate::election`]) over
//! its own view; L2 IPs have one owner, BGP IPs every eligible node.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use crate::api::annotations::ALLOW_SHARED_IP;
use crate::election::{
    Candidate, ElectionRequest, ElectionResult, ElectionView, Mode, ModeKind, RequestTerms,
};
use crate::ipam::{AllocationKey, Assignments, Outcome};
use crate::plan::endpoints::{has_ready_endpoint_for, is_local, ready_nodes_for};
use crate::plan::{coverage, l2};
use crate::snapshot::{ObjectKey, Snapshot};
use crate::speaker::is_recorded;

/// The Event reason.
pub const REASON: &str = "AnnouncedBy";

/// The election of every IP of every Service, per mode (the results of an IP shared by
/// Services are the same for each), in allocation order. A Service without a result has no
/// ready endpoint (`Cluster`) or no valid advertisement covering its pool.
///
/// The L2 requests are the L2 planner's own ([`l2::requests_of`]) and the BGP ones follow
/// the same coverage rule ([`coverage::bgp_covering`]), so what `edgelbctl explain` and the
/// `AnnouncedBy` Events say is what the planners do.
pub fn service_elections(
    snap: &Snapshot,
    a: &Assignments,
    candidates: Vec<Candidate>,
) -> BTreeMap<ObjectKey, Vec<ElectionResult>> {
    elections(snap, a.outcomes.iter(), candidates, |_| true)
}

/// The elections of the requests of `requesters` (allocation outcomes in key order),
/// kept for the Services `wanted` accepts. Each result depends on every request for its IP,
/// so `requesters` must hold every outcome naming an IP of a wanted Service.
fn elections<'a>(
    snap: &Snapshot,
    requesters: impl Iterator<Item = (&'a AllocationKey, &'a Outcome)>,
    candidates: Vec<Candidate>,
    wanted: impl Fn(&ObjectKey) -> bool,
) -> BTreeMap<ObjectKey, Vec<ElectionResult>> {
    let view = ElectionView::new(candidates);
    let mut reqs = l2::L2Requests::default();
    for (akey, outcome) in requesters {
        if !has_requests(snap, akey) {
            continue;
        }
        l2::requests_of(snap, akey, outcome, &mut reqs);
        bgp_requests_of(snap, akey, outcome, &mut reqs);
    }
    let results = view.elect_many(&reqs.requests);
    let mut by_ip: HashMap<IpAddr, Vec<&ElectionResult>> = HashMap::new();
    for r in &results {
        by_ip.entry(r.ip).or_default().push(r);
    }
    let mut out: BTreeMap<ObjectKey, Vec<ElectionResult>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for (service, ip) in reqs.services {
        if !wanted(&service) {
            continue;
        }
        for r in by_ip.get(&ip).into_iter().flatten() {
            if seen.insert((service.clone(), ip, r.mode)) {
                out.entry(service.clone()).or_default().push((*r).clone());
            }
        }
    }
    out
}

/// Which Services share each recorded IP (what cluster mode announces, see
/// [`crate::speaker::recorded_only`]), kept across the writer's passes so that a change
/// elects again only the Services it touches and those sharing an IP with them.
///
/// The recorded outcomes themselves are read from the allocation of record each pass (a
/// persistent map shared with the allocator), not copied. Only Services that may share an
/// IP (`edgelb.io/allow-shared-ip`) are kept: in an allocation a Service without a sharing
/// key holds its IPs alone, so nothing else requests with them.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    by_ip: HashMap<IpAddr, Holders>,
    /// The recorded IPs of each Service in `by_ip`.
    held: HashMap<ObjectKey, Vec<IpAddr>>,
}

/// The Services holding one IP, in key order: nearly always one, so a sorted `Vec` (one
/// small allocation) rather than a `BTreeSet` (a whole B-tree leaf per IP).
#[derive(Clone, Debug, Default)]
struct Holders(Vec<ObjectKey>);

impl Holders {
    fn insert(&mut self, key: ObjectKey) {
        if let Err(i) = self.0.binary_search(&key) {
            self.0.insert(i, key);
        }
    }

    fn remove(&mut self, key: &ObjectKey) {
        if let Ok(i) = self.0.binary_search(key) {
            self.0.remove(i);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn iter(&self) -> std::slice::Iter<'_, ObjectKey> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a Holders {
    type Item = &'a ObjectKey;
    type IntoIter = std::slice::Iter<'a, ObjectKey>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// Whether a Service may share its IPs with others (the allocator lets only Services with
/// a sharing key share).
fn may_share(snap: &Snapshot, key: &ObjectKey) -> bool {
    snap.services
        .get(key)
        .and_then(|svc| svc.annotation(ALLOW_SHARED_IP))
        .is_some_and(|k| !k.is_empty())
}

/// The recorded outcomes of one Service in `a` (see [`is_recorded`]).
fn recorded_of<'a>(
    snap: &'a Snapshot,
    a: &'a Assignments,
    key: &ObjectKey,
) -> impl Iterator<Item = (&'a AllocationKey, &'a Outcome)> + 'a {
    outcomes_of(a, key).filter(move |(k, o)| is_recorded(snap, k, o))
}

impl Recorded {
    /// From every Service of `snap` and outcome of `a`.
    pub fn full(snap: &Snapshot, a: &Assignments) -> Recorded {
        let mut r = Recorded::default();
        for key in snap.services.keys() {
            r.take_in(snap, a, key);
        }
        r
    }

    /// Keeps the recorded IPs of `key` if it may share them; returns them.
    fn take_in(&mut self, snap: &Snapshot, a: &Assignments, key: &ObjectKey) -> Vec<IpAddr> {
        if !may_share(snap, key) {
            return Vec::new();
        }
        let ips: Vec<IpAddr> = recorded_of(snap, a, key)
            .flat_map(|(_, o)| ips_of(o).iter().copied())
            .collect();
        for ip in &ips {
            self.by_ip.entry(*ip).or_default().insert(key.clone());
        }
        if !ips.is_empty() {
            self.held.insert(key.clone(), ips.clone());
        }
        ips
    }

    /// Takes in the Services `keys` (their object, slices or outcome changed; gone ones
    /// are dropped) and returns the Services whose text may differ now: `keys` and every
    /// Service that shared an IP with one of them, before or after.
    pub fn update(
        &mut self,
        snap: &Snapshot,
        a: &Assignments,
        keys: &BTreeSet<ObjectKey>,
    ) -> BTreeSet<ObjectKey> {
        let mut touched = keys.clone();
        for key in keys {
            for ip in self.held.remove(key).unwrap_or_default() {
                if let Some(holders) = self.by_ip.get_mut(&ip) {
                    holders.remove(key);
                    touched.extend(holders.iter().cloned());
                    if holders.is_empty() {
                        self.by_ip.remove(&ip);
                    }
                }
            }
            for ip in self.take_in(snap, a, key) {
                touched.extend(self.by_ip.get(&ip).into_iter().flatten().cloned());
            }
        }
        touched
    }

    /// The `AnnouncedBy` text of each of `keys` that has one (as [`announcements`] over
    /// the recorded outcomes of `a` says), electing only their IPs.
    pub fn announcements_of(
        &self,
        snap: &Snapshot,
        a: &Assignments,
        candidates: Vec<Candidate>,
        keys: &BTreeSet<ObjectKey>,
    ) -> BTreeMap<ObjectKey, String> {
        // Every holder of an IP of a wanted Service requests with it (merged elections).
        let mut requesters: BTreeSet<&ObjectKey> = keys.iter().collect();
        for key in keys {
            for ip in self.held.get(key).into_iter().flatten() {
                requesters.extend(self.by_ip.get(ip).into_iter().flatten());
            }
        }
        let outcomes = requesters.into_iter().flat_map(|k| recorded_of(snap, a, k));
        elections(snap, outcomes, candidates, |k| keys.contains(k))
            .into_iter()
            .map(|(service, results)| (service, text(&results)))
            .collect()
    }
}

/// The outcomes of one Service (one per node pool it is allocated in), in key order.
pub fn outcomes_of<'a>(
    a: &'a Assignments,
    service: &ObjectKey,
) -> impl Iterator<Item = (&'a AllocationKey, &'a Outcome)> + 'a {
    let service = service.clone();
    a.outcomes
        .range(AllocationKey::cluster(service.clone())..)
        .take_while(move |(k, _)| k.service == service)
}

fn ips_of(outcome: &Outcome) -> &[IpAddr] {
    match outcome {
        Ok(a) => &a.ips,
        Err(_) => &[],
    }
}

/// Whether the Service may be announced at all: `Local`, or `Cluster` with a ready
/// endpoint somewhere (the same gate as [`l2::requests_of`]).
fn has_requests(snap: &Snapshot, akey: &AllocationKey) -> bool {
    snap.services
        .get(&akey.service)
        .is_some_and(|svc| is_local(svc) || has_ready_endpoint_for(snap, akey, svc))
}

/// Appends the BGP election requests of one allocation outcome: one per IP, for the
/// `BGPAdvertisement`s that cover its pool.
fn bgp_requests_of(
    snap: &Snapshot,
    akey: &AllocationKey,
    outcome: &Outcome,
    out: &mut l2::L2Requests,
) {
    let service = &akey.service;
    let Ok(alloc) = outcome else { return };
    let Some(svc) = snap.services.get(service) else {
        return;
    };
    let local_endpoints: Option<std::collections::BTreeSet<String>> =
        is_local(svc).then(|| ready_nodes_for(snap, akey));
    let covering: Vec<_> = coverage::bgp_covering(snap, &alloc.pool)
        .map(|c| c.object.spec.node_selectors.as_slice())
        .collect();
    if covering.is_empty() {
        return;
    }
    // One request per IP: a node announces when any covering advertisement selects it,
    // as the BGP planner does.
    let node_selectors = coverage::any_of(covering);
    let terms = std::sync::Arc::new(RequestTerms {
        mode: Mode::Bgp,
        node_selectors,
        pool: akey.node_pool.as_deref().map(String::from),
        local_endpoints,
    });
    for ip in &alloc.ips {
        out.requests.push(ElectionRequest::new(*ip, terms.clone()));
        out.services.push((service.clone(), *ip));
    }
}

/// Per Service, one line per (IP, mode): `192.0.2.100 by node-1 (L2)` or
/// `198.51.100.10 by node-0, node-1 (BGP)`; `... by no node (L2)` when none is eligible.
pub fn announcements(
    snap: &Snapshot,
    a: &Assignments,
    candidates: Vec<Candidate>,
) -> BTreeMap<ObjectKey, String> {
    service_elections(snap, a, candidates)
        .into_iter()
        .map(|(service, results)| (service, text(&results)))
        .collect()
}

/// One line per (IP, mode), joined by `; `.
fn text(results: &[ElectionResult]) -> String {
    let lines: Vec<String> = results
        .iter()
        .map(|r| {
            let who = if r.owners.is_empty() {
                "no node".to_string()
            } else {
                r.owners.iter().map(|n| &**n).collect::<Vec<_>>().join(", ")
            };
            let mode = match r.mode {
                ModeKind::L2 => "L2",
                ModeKind::Bgp => "BGP",
            };
            format!("{} by {who} ({mode})", r.ip)
        })
        .collect();
    lines.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{L2Advertisement, L2AdvertisementSpec};
    use crate::election::InterfaceFacts;
    use crate::fixtures;
    use crate::ipam::allocate;
    use crate::snapshot::{Object, Selection, Store};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const NS: &str = "edgelb-system";

    fn candidate(node: &str, live: bool) -> Candidate {
        Candidate {
            node: node.into(),
            labels: Default::default(),
            ready: true,
            network_unavailable: false,
            excluded_label: false,
            node_pool: None,
            live,
            interfaces: vec![InterfaceFacts {
                name: "eth0".into(),
                up: true,
                subnets: vec!["192.0.2.0/24".parse().unwrap()],
            }],
        }
    }

    pub(crate) fn snapshot() -> (Snapshot, Assignments) {
        let mut store = Store::default();
        store.apply(
            Object::IPAddressPool(fixtures::pool(NS, "lan", &["192.0.2.100/32"])),
            NS,
        );
        store.apply(Object::Service(fixtures::service("default", "web", 80)), NS);
        store.apply(
            Object::EndpointSlice(k8s_openapi::api::discovery::v1::EndpointSlice {
                metadata: ObjectMeta {
                    name: Some("web-1".into()),
                    namespace: Some("default".into()),
                    labels: Some(BTreeMap::from([(
                        "kubernetes.io/service-name".to_string(),
                        "web".to_string(),
                    )])),
                    ..Default::default()
                },
                address_type: "IPv4".into(),
                endpoints: Some(vec![Default::default()]),
                ports: None,
            }),
            NS,
        );
        store.apply(
            Object::L2Advertisement(L2Advertisement {
                metadata: ObjectMeta {
                    name: Some("l2".into()),
                    namespace: Some(NS.into()),
                    ..Default::default()
                },
                spec: L2AdvertisementSpec::default(),
                status: None,
            }),
            NS,
        );
        let snap = store.snapshot(&Selection::default());
        let a = allocate(&snap, &Assignments::default());
        (snap, a)
    }

    #[test]
    fn the_text_names_the_owner_and_follows_it() {
        let (snap, a) = snapshot();
        let all = vec![candidate("node-a", true), candidate("node-b", true)];
        let now = announcements(&snap, &a, all.clone());
        let text = now[&ObjectKey::new("default", "web")].clone();
        assert!(text.starts_with("192.0.2.100 by node-"), "{text}");
        assert!(text.ends_with("(L2)"), "{text}");
        assert_eq!(announcements(&snap, &a, all), now, "same view, same text");
        let (owner, other) = if text.contains("node-a") {
            ("node-a", "node-b")
        } else {
            ("node-b", "node-a")
        };
        let after = announcements(
            &snap,
            &a,
            vec![candidate(owner, false), candidate(other, true)],
        );
        assert_eq!(
            after[&ObjectKey::new("default", "web")],
            format!("192.0.2.100 by {other} (L2)"),
            "the new owner is named"
        );
    }
}

//! The per-(Service, node pool) entry point: what each `PoolService`'s
//! `status.loadBalancer` and condition say, and what the Service's union is made of.
//!
//! Two sources fill it, one per pool: a cloud-class Service reads the cloud in every pool;
//! a self-announced Service reads its allocation, except in pools annotated with
//! `edgelb.io/cloud-load-balancer-class` ([`crate::nodepool::pool_source`]), which sit
//! behind a cloud load balancer (one Service, one region behind a cloud ELB and one
//! announced by BGP):
//!
//! - **Self-announced classes**: the allocation outcome of the key
//!   `AllocationKey { service, node_pool: Some(pool) }` (its IPs, or the error that names
//!   the pool).
//! - **Cloud classes** ([`crate::nodepool::CLOUD_CLASSES`]): the [`CloudReports`] the
//!   cloud load-balancer driver publishes on a [`CloudSender`]; this module only reads them.
//!
//! A PoolService of a cloud class also carries [`CLOUD_FINALIZER`] while the driver says it
//! holds cloud resources for it ([`CloudReports::holds`]); the fan-out removes it once the
//! PoolService is being deleted and the driver, synced for this term, no longer holds any
//! ([`CloudReports::released`]). Pure, apart from the watch channel type.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::LoadBalancerIngress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::pass_through::frontend_of;
use super::service::desired_ingress;
use crate::api::openyurt::{PoolService, POOLSERVICE_API_VERSION};
use crate::ipam::{AllocationKey, Assignments};
use crate::nodepool::{is_self_announced_class, pool_source, PoolSource};
use crate::service::ServiceFacts;
use crate::snapshot::{ObjectKey, Snapshot};

/// A Service and one of its node pools.
pub type PoolKey = (ObjectKey, Arc<str>);

/// The condition type edgelb keeps on each PoolService: whether its pool has an address.
pub const CONDITION: &str = "edgelb.io/AddressAssigned";
/// Reason of `True`: the pool's self-announced IPs are allocated.
pub const ASSIGNED: &str = "Assigned";
/// Reason of `False`: the allocation for the pool failed (the message says why, naming it).
pub const ALLOCATION_FAILED: &str = "AllocationFailed";
/// Reason of `False`: nothing decided for the pool yet.
pub const PENDING: &str = "Pending";
/// Reason of `True` for a cloud class: the cloud load balancer has an address.
pub const CLOUD_ASSIGNED: &str = "CloudAssigned";
/// Reason of `False` for a cloud class the driver has not reported on (yet).
pub const CLOUD_PENDING: &str = "CloudPending";
/// Reason of `False`: the pool's `edgelb.io/cloud-load-balancer-class` names no known class.
pub const INVALID_POOL_CLASS: &str = "InvalidNodePoolClass";
/// The PoolService finalizer of a cloud class: the PoolService stays while the cloud load
/// balancer's resources for its pool exist.
pub const CLOUD_FINALIZER: &str = "edgelb.io/cloud-resources";
/// The field manager of PoolService status applies.
pub const FIELD_MANAGER: &str = "edgelb";

/// What the cloud driver reports for one (Service, pool) of a cloud class.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CloudEntry {
    /// The cloud load balancer's addresses, ipMode already decided (use
    /// [`super::pass_through::decide`] with `Frontend::ProxyingLoadBalancer`). Empty: none yet.
    pub ingress: Vec<LoadBalancerIngress>,
    /// Why there is no address (CamelCase, e.g. `Provisioning`, `QuotaExceeded`); read only
    /// while `ingress` is empty. Empty means [`CLOUD_PENDING`].
    pub reason: String,
    /// A sentence for the condition; it should name the pool.
    pub message: String,
    /// The driver holds (or is about to create) cloud resources for this pool. Set it before
    /// the first create call and wait for [`CLOUD_FINALIZER`] on the PoolService in the
    /// snapshot before creating; clear it (or drop the entry) only once deletion converged.
    pub holds_resources: bool,
}

/// Everything the cloud driver reports, published whole on a [`CloudSender`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CloudReports {
    /// The driver has looked at the cloud in the current term: until then no
    /// [`CLOUD_FINALIZER`] is removed (an empty map would look like "nothing held").
    pub synced: bool,
    /// Per (Service, pool).
    pub entries: BTreeMap<PoolKey, CloudEntry>,
}

impl CloudReports {
    /// Whether cloud resources are held for this pool (the PoolService keeps its finalizer).
    pub fn holds(&self, key: &PoolKey) -> bool {
        self.entries.get(key).is_some_and(|e| e.holds_resources)
    }

    /// Whether a deleting PoolService of this pool may lose [`CLOUD_FINALIZER`].
    pub fn released(&self, key: &PoolKey) -> bool {
        self.synced && !self.holds(key)
    }

    /// The Services whose entries differ between two reports.
    pub fn changed_services(&self, other: &CloudReports) -> Vec<ObjectKey> {
        let mut out: Vec<ObjectKey> = Vec::new();
        let mut push = |k: &PoolKey| {
            if out.last() != Some(&k.0) {
                out.push(k.0.clone());
            }
        };
        for (k, e) in &self.entries {
            if other.entries.get(k) != Some(e) {
                push(k);
            }
        }
        for k in other.entries.keys() {
            if !self.entries.contains_key(k) {
                push(k);
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The cloud driver's end of the channel.
pub type CloudSender = watch::Sender<Arc<CloudReports>>;
/// The reading end (the writer of record and the fan-out).
pub type CloudSource = watch::Receiver<Arc<CloudReports>>;

/// A new channel, empty and not synced.
pub fn channel() -> (CloudSender, CloudSource) {
    watch::channel(Arc::new(CloudReports::default()))
}

/// A source nobody fills (no cloud driver): always empty, never changes.
pub fn no_cloud() -> CloudSource {
    channel().1
}

/// One pool's entry point and why it has none.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolEntry {
    /// The pool's addresses (empty: none).
    pub ingress: Vec<LoadBalancerIngress>,
    /// The condition's reason.
    pub reason: String,
    /// The condition's message (names Service and pool).
    pub message: String,
}

impl PoolEntry {
    /// The PoolService's condition: `True` while the pool has an address.
    pub fn condition(&self, now: Time, generation: Option<i64>) -> Condition {
        Condition {
            type_: CONDITION.into(),
            status: if self.ingress.is_empty() {
                "False"
            } else {
                "True"
            }
            .into(),
            reason: self.reason.clone(),
            message: self.message.clone(),
            last_transition_time: now,
            observed_generation: generation,
        }
    }
}

/// The node pools a self-announced Service selects when one of them has an entry point that
/// is not an IP of ours (a pool behind a cloud load balancer, or one whose cloud class is
/// invalid): its ingress is then the union of every selected pool's entry ([`union`] of
/// [`of_service`]). `None` for a cloud class or when every selected pool announces itself.
/// The selection is parsed once and handed out, so callers do not parse it again.
pub fn pools_with_a_cloud_entry(snap: &Snapshot, svc: &ServiceFacts) -> Option<Vec<Arc<str>>> {
    if is_cloud(svc) {
        return None;
    }
    let selected = crate::nodepool::selected_node_pools(svc, &snap.node_pools)
        .ok()
        .flatten()?;
    selected
        .iter()
        .any(|p| pool_source(svc, snap.node_pools.get(p)) != PoolSource::SelfAnnounced)
        .then_some(selected)
}

/// The per-(Service, pool) status map.
pub type PoolIngress = BTreeMap<PoolKey, PoolEntry>;

/// Whether the Service's entry points come from the cloud driver.
pub fn is_cloud(svc: &ServiceFacts) -> bool {
    !is_self_announced_class(svc.class())
}

/// The entry of one pool of a Service.
pub fn entry(
    snap: &Snapshot,
    a: &Assignments,
    cloud: &CloudReports,
    key: &ObjectKey,
    svc: &ServiceFacts,
    pool: &Arc<str>,
) -> PoolEntry {
    match pool_source(svc, snap.node_pools.get(pool)) {
        PoolSource::SelfAnnounced => {}
        PoolSource::Cloud(_) => return cloud_entry(cloud, key, pool),
        PoolSource::Invalid(why) => {
            return PoolEntry {
                ingress: Vec::new(),
                reason: INVALID_POOL_CLASS.into(),
                message: format!("Service {key}: no entry point in node pool {pool}: {why}"),
            }
        }
    }
    let akey = AllocationKey {
        service: key.clone(),
        node_pool: Some(pool.clone()),
    };
    match a.outcomes.get(&akey) {
        Some(o @ Ok(al)) => {
            let ingress = desired_ingress(svc, Some(o), frontend_of(snap, &al.pool));
            let ips: Vec<String> = ingress.iter().filter_map(|i| i.ip.clone()).collect();
            PoolEntry {
                message: format!(
                    "Service {key}, node pool {pool}: IP {} from IPAddressPool {}, announced by the pool's nodes",
                    ips.join(", "),
                    al.pool
                ),
                ingress,
                reason: ASSIGNED.into(),
            }
        }
        Some(Err(e)) => PoolEntry {
            ingress: Vec::new(),
            reason: ALLOCATION_FAILED.into(),
            message: format!("Service {key}: no IP for node pool {pool}: {e}"),
        },
        None => PoolEntry {
            ingress: Vec::new(),
            reason: PENDING.into(),
            message: match a.get(key) {
                // A Service-wide error (e.g. its node-pool selector): it applies to every pool.
                Some(Err(e)) => format!("Service {key}: no IP for node pool {pool}: {e}"),
                _ => format!("Service {key}: no IP decided for node pool {pool} yet"),
            },
        },
    }
}

fn cloud_entry(cloud: &CloudReports, key: &ObjectKey, pool: &Arc<str>) -> PoolEntry {
    match cloud.entries.get(&(key.clone(), pool.clone())) {
        Some(e) if !e.ingress.is_empty() => PoolEntry {
            ingress: e.ingress.clone(),
            reason: CLOUD_ASSIGNED.into(),
            message: if e.message.is_empty() {
                format!("Service {key}, node pool {pool}: cloud load balancer ready")
            } else {
                e.message.clone()
            },
        },
        Some(e) => PoolEntry {
            ingress: Vec::new(),
            reason: if e.reason.is_empty() {
                CLOUD_PENDING.into()
            } else {
                e.reason.clone()
            },
            message: if e.message.is_empty() {
                format!("Service {key}, node pool {pool}: cloud load balancer has no address yet")
            } else {
                e.message.clone()
            },
        },
        None => PoolEntry {
            ingress: Vec::new(),
            reason: CLOUD_PENDING.into(),
            message: format!(
                "Service {key}, node pool {pool}: no report from the cloud load-balancer driver yet"
            ),
        },
    }
}

/// A Service's pools with their entries, in pool-name order.
pub fn of_service(
    snap: &Snapshot,
    a: &Assignments,
    cloud: &CloudReports,
    key: &ObjectKey,
    svc: &ServiceFacts,
    pools: &[Arc<str>],
) -> Vec<(Arc<str>, PoolEntry)> {
    let mut pools = pools.to_vec();
    pools.sort();
    pools.dedup();
    pools
        .into_iter()
        .map(|p| {
            let e = entry(snap, a, cloud, key, svc, &p);
            (p, e)
        })
        .collect()
}

/// The Service's ingress: the union over its pools in pool-name order (duplicates once).
pub fn union<'a>(entries: impl IntoIterator<Item = &'a PoolEntry>) -> Vec<LoadBalancerIngress> {
    let mut out: Vec<LoadBalancerIngress> = Vec::new();
    for e in entries {
        for i in &e.ingress {
            if !out.contains(i) {
                out.push(i.clone());
            }
        }
    }
    out
}

/// A cloud-class Service's ingress from the driver's reports: the union over the pools it
/// reported on, in pool-name order.
pub fn cloud_union(cloud: &CloudReports, key: &ObjectKey) -> Vec<LoadBalancerIngress> {
    let from = (key.clone(), Arc::<str>::from(""));
    union(
        cloud
            .entries
            .range(from..)
            .take_while(|((s, _), _)| s == key)
            .map(|(k, _)| cloud_entry(cloud, &k.0, &k.1))
            .collect::<Vec<_>>()
            .iter(),
    )
}

/// What a PoolService's status says now: its ingress and our condition.
pub fn current(ps: &PoolService) -> (Vec<LoadBalancerIngress>, Option<&Condition>) {
    let st = ps.status.as_ref();
    let ingress = st
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.clone())
        .unwrap_or_default();
    let cond = st.and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION));
    (ingress, cond)
}

/// Whether a PoolService already shows `want`.
pub fn shows(ps: &PoolService, want: &PoolEntry) -> bool {
    let (ingress, cond) = current(ps);
    ingress == want.ingress
        && cond.is_some_and(|c| {
            c.status
                == if want.ingress.is_empty() {
                    "False"
                } else {
                    "True"
                }
                && c.reason == want.reason
                && c.message == want.message
        })
}

/// The server-side-apply body of a PoolService's status (ours: the ingress list and our
/// condition; the conditions list is keyed by type, so others' conditions stay).
pub fn apply_body(name: &str, entry: &PoolEntry, now: Time, generation: Option<i64>) -> Value {
    let lb = if entry.ingress.is_empty() {
        json!({})
    } else {
        json!({ "ingress": entry.ingress })
    };
    json!({
        "apiVersion": POOLSERVICE_API_VERSION,
        "kind": "PoolService",
        "metadata": { "name": name },
        "status": { "loadBalancer": lb, "conditions": [entry.condition(now, generation)] },
    })
}

#[cfg(test)]
#[path = "pool_ingress_tests.rs"]
mod tests;

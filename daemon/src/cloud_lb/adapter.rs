//! The thin adapter: the snapshot -> one [`PlanInput`] per wanted PoolService of a cloud
//! class, planned by the cloud crate's pure planner. No I/O; the driver acts on the result.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use edgelb_cloud::ens::EnsProfile;
use edgelb_cloud::model::{Desired, Ownership, Target};
use edgelb_cloud::plan::{
    plan, resource_name, PlanError, PlanInput, PoolNode, Profile, ServicePort, TrafficPolicy,
    ANNOTATION_LB_ID,
};

use super::CloudConfig;
use crate::api::openyurt::PoolService;
use crate::nodepool::{is_self_announced_class, is_self_announced_in};
use crate::plan::node_floor;
use crate::service::ServiceFacts;
use crate::snapshot::{NodeView, ObjectKey, Snapshot, SnapshotData};
use crate::status::pool_services::{has_cloud_finalizer, is_ours, owner_of, plan as fan_out};

/// The pool annotation naming the ENS node (edge region) a pool's load balancer lives in.
pub const ANNOTATION_REGION: &str = "alibabacloud.com/ens-region-id";

/// One wanted PoolService of a cloud class and its plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// The Service it stands for.
    pub service: ObjectKey,
    /// The node pool.
    pub pool: Arc<str>,
    /// The name of everything we create for it (kept by the sweep even when planning fails).
    pub name: String,
    /// The desired cloud state, or why there is none (names the object and field).
    pub outcome: Result<Desired, PlanError>,
    /// The PoolService carries `edgelb.io/cloud-resources`: only then may anything be created
    /// (a delete in between would otherwise leak what we create).
    pub finalized: bool,
}

/// A PoolService of ours of a cloud class that is going (being deleted, or no longer
/// wanted): what we made for it must be deleted before its finalizer goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Doomed {
    pub service: ObjectKey,
    pub pool: Arc<str>,
    pub name: String,
    /// What to delete, from the snapshot; `None` when its region cannot be known (the
    /// pool is gone and no `--elb-region`).
    pub target: Option<Target>,
}

/// What the driver should keep, from one snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Work {
    /// By PoolService key.
    pub planned: BTreeMap<ObjectKey, Planned>,
    /// By PoolService key.
    pub doomed: BTreeMap<ObjectKey, Doomed>,
}

impl Work {
    /// Names the sweep must leave alone (the doomed ones are deleted by their own job). A
    /// PoolService that names a user's load balancer keeps nothing under our name: what we
    /// created before the annotation came is a leftover.
    pub fn kept_names(&self) -> BTreeSet<&str> {
        self.planned
            .values()
            .filter(|p| {
                !matches!(&p.outcome, Ok(d) if matches!(d.target.ownership, Ownership::UserManaged { .. }))
            })
            .map(|p| p.name.as_str())
            .chain(self.doomed.values().map(|d| d.name.as_str()))
            .collect()
    }

    /// Regions the wanted load balancers live in.
    pub fn regions(&self) -> BTreeSet<String> {
        self.planned
            .values()
            .filter_map(|p| p.outcome.as_ref().ok())
            .map(|d| d.network.region.clone())
            .collect()
    }
}

/// Every wanted (Service, pool) whose PoolService is of a cloud class, planned.
pub fn work(snap: &Snapshot, cfg: &CloudConfig) -> Work {
    let wanted = fan_out(snap).wanted;
    let wanted_keys: BTreeSet<&ObjectKey> = wanted.values().collect();
    let cloud: Vec<(ObjectKey, ObjectKey, Arc<str>, &PoolService, &ServiceFacts)> = wanted
        .iter()
        .filter_map(|((svc_key, pool), ps_key)| {
            let ps = snap.pool_services.get(ps_key)?;
            let svc = snap.services.get(svc_key)?;
            // The pool's source: every pool of a cloud-class Service, and the pools annotated
            // with a cloud class of a self-announced one.
            (!is_self_announced_in(svc, snap.node_pools.get(pool))
                && ps.metadata.deletion_timestamp.is_none()
                && !svc.deleting)
                .then(|| (ps_key.clone(), svc_key.clone(), pool.clone(), &**ps, &**svc))
        })
        .collect();
    // Who names which user-managed load balancer (for the sharing rule).
    let mut by_lb: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (_, svc_key, _, ps, _) in &cloud {
        if let Some(id) = user_lb_id(ps) {
            by_lb
                .entry(id.as_str())
                .or_default()
                .insert(svc_key.to_string());
        }
    }
    let mut out = Work::default();
    for (ps_key, svc_key, pool, ps, svc) in &cloud {
        let mut input = plan_input(snap, cfg, svc, pool, ps);
        if let Some(id) = input.pool_service_annotations.get(ANNOTATION_LB_ID) {
            let me = svc_key.to_string();
            input.sharing_services = by_lb
                .get(id.as_str())
                .into_iter()
                .flatten()
                .filter(|s| **s != me)
                .cloned()
                .collect();
        }
        out.planned.insert(
            ps_key.clone(),
            Planned {
                service: svc_key.clone(),
                pool: pool.clone(),
                name: resource_name(&input),
                outcome: plan(&EnsProfile, &input),
                finalized: has_cloud_finalizer(ps),
            },
        );
    }
    // Ours, of a cloud class, and going.
    for (ps_key, ps) in &snap.pool_services {
        if out.planned.contains_key(ps_key)
            || !is_ours(ps, &snap.selection)
            // A self-announced Service's PoolService is the cloud's only if its pool was (the
            // finalizer goes on before anything is created).
            || (is_self_announced_class(ps.spec.load_balancer_class.as_deref())
                && !has_cloud_finalizer(ps))
        {
            continue;
        }
        let going = ps.metadata.deletion_timestamp.is_some() || !wanted_keys.contains(ps_key);
        let Some((svc_key, pool)) = owner_of(ps).filter(|_| going) else {
            continue;
        };
        let name = format!(
            "k8s/{}/{}/{}/{}",
            svc_key.name, svc_key.namespace, pool, cfg.cluster
        );
        let target = delete_target(snap, cfg, &svc_key, &pool, ps, &name);
        out.doomed.insert(
            ps_key.clone(),
            Doomed {
                service: svc_key,
                pool,
                name,
                target,
            },
        );
    }
    out
}

/// What to delete for a PoolService that is going, from what the snapshot still has: the
/// plan's own target while its Service and pool are there, else the name in the pool's (or
/// the configured) region, or the user's load balancer with the pool's nodes' instances.
fn delete_target(
    snap: &Snapshot,
    cfg: &CloudConfig,
    svc_key: &ObjectKey,
    pool: &Arc<str>,
    ps: &PoolService,
    name: &str,
) -> Option<Target> {
    if let Some(svc) = snap.services.get(svc_key) {
        if let Ok(d) = plan(&EnsProfile, &plan_input(snap, cfg, svc, pool, ps)) {
            return Some(d.target);
        }
    }
    let region = snap
        .node_pools
        .get(pool)
        .and_then(|p| p.annotations.get(ANNOTATION_REGION).cloned())
        .or_else(|| cfg.region.clone())?;
    let ownership = match user_lb_id(ps) {
        Some(id) => Ownership::UserManaged {
            lb_id: id.clone(),
            manage_listeners: false,
        },
        None => Ownership::Managed,
    };
    let owned_backends = pool_nodes(snap, pool)
        .filter_map(|v| v.node.spec.as_ref()?.provider_id.as_deref())
        .filter_map(|p| EnsProfile.instance_id(p))
        .collect();
    Some(Target {
        name: name.to_string(),
        region,
        ownership,
        owned_backends,
        listener_keys: BTreeSet::new(),
        shared_with: Vec::new(),
    })
}

/// The user's load balancer a PoolService names (`...-loadbalancer-id`), if any.
fn user_lb_id(ps: &PoolService) -> Option<&String> {
    ps.metadata.annotations.as_ref()?.get(ANNOTATION_LB_ID)
}

/// The pool's member Nodes that the snapshot has (the backends' source, planned or
/// deleted).
fn pool_nodes<'a>(snap: &'a SnapshotData, pool: &str) -> impl Iterator<Item = &'a NodeView> {
    snap.node_pools
        .get(pool)
        .into_iter()
        .flat_map(|p| p.nodes.iter())
        .filter_map(|n| snap.nodes.get(n))
}

/// The planner's input for one (Service, pool), from the snapshot.
pub fn plan_input(
    snap: &SnapshotData,
    cfg: &CloudConfig,
    svc: &ServiceFacts,
    pool: &str,
    ps: &PoolService,
) -> PlanInput {
    let key = &svc.key;
    let ports = svc
        .ports
        .iter()
        .map(|p| ServicePort {
            name: p
                .name
                .as_deref()
                .map_or_else(|| p.port.to_string(), str::to_string),
            port: u16::try_from(p.port).unwrap_or(0),
            protocol: p.protocol.as_deref().unwrap_or("TCP").to_string(),
            node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
        })
        .collect();
    let traffic_policy = if svc.local {
        TrafficPolicy::Local
    } else {
        TrafficPolicy::Cluster
    };
    let endpoints = ready_endpoints_by_node(snap, key);
    let nodes = pool_nodes(snap, pool)
        .map(|v| PoolNode {
            name: v.node.metadata.name.clone().unwrap_or_default(),
            provider_id: v
                .node
                .spec
                .as_ref()
                .and_then(|s| s.provider_id.clone())
                .filter(|p| !p.is_empty()),
            ready: node_floor::ready(&v.node),
            ready_endpoints: endpoints
                .get(v.node.metadata.name.as_deref().unwrap_or_default())
                .copied()
                .unwrap_or(0),
        })
        .collect();
    let mut pool_annotations = snap
        .node_pools
        .get(pool)
        .map(|p| p.annotations.clone())
        .unwrap_or_default();
    if let Some(region) = &cfg.region {
        pool_annotations
            .entry(ANNOTATION_REGION.to_string())
            .or_insert_with(|| region.clone());
    }
    PlanInput {
        namespace: key.namespace.to_string(),
        service: key.name.to_string(),
        pool: pool.to_string(),
        cluster: cfg.cluster.clone(),
        ports,
        traffic_policy,
        nodes,
        service_annotations: svc.annotations.to_map(),
        pool_annotations,
        pool_service_annotations: ps.metadata.annotations.clone().unwrap_or_default(),
        sharing_services: Vec::new(),
    }
}

/// Ready endpoints of a Service per node (EndpointSlices' `nodeName`; `ready` unset counts
/// as ready, as the API documents).
fn ready_endpoints_by_node(snap: &SnapshotData, svc: &ObjectKey) -> BTreeMap<String, u32> {
    let mut out: BTreeMap<String, u32> = BTreeMap::new();
    for slice in snap.endpoint_slices.get(svc).into_iter().flatten() {
        for (node, count) in slice.ready_nodes.iter() {
            *out.entry(node.to_string()).or_default() += count;
        }
    }
    out
}

/// Whether `name` is one we create for `cluster`: `k8s/<service>/<namespace>/<pool>/<cluster>`.
pub fn is_our_name(name: &str, cluster: &str) -> bool {
    let parts: Vec<&str> = name.split('/').collect();
    parts.len() == 5
        && parts[0] == "k8s"
        && parts[4] == cluster
        && parts[1..4].iter().all(|p| !p.is_empty())
}

#[cfg(test)]
#[path = "adapter_tests.rs"]
mod tests;

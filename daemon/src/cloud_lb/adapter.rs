//! The thin adapter: the snapshot -> one [`PlanInput`] per wanted PoolService of a cloud
//! class, planned by the cloud crate's pure planner. No I/O; the driver acts on the result.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use edgelb_cloud::ens::EnsProfile;
use edgelb_cloud::model::Desired;
use edgelb_cloud::plan::{
    plan, resource_name, PlanError, PlanInput, PoolNode, ServicePort, TrafficPolicy,
    ANNOTATION_LB_ID,
};
use k8s_openapi::api::core::v1::Service;

use super::CloudConfig;
use crate::api::openyurt::PoolService;
use crate::nodepool::is_self_announced_class;
use crate::plan::node_floor;
use crate::snapshot::{ObjectKey, Snapshot, SnapshotData};
use crate::status::pool_services::plan as fan_out;

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
}

/// What the driver should keep, from one snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Work {
    /// By PoolService key.
    pub planned: BTreeMap<ObjectKey, Planned>,
}

impl Work {
    /// Names the sweep must leave alone.
    pub fn kept_names(&self) -> BTreeSet<&str> {
        self.planned.values().map(|p| p.name.as_str()).collect()
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
    let cloud: Vec<(ObjectKey, ObjectKey, Arc<str>, &PoolService, &Service)> = wanted
        .into_iter()
        .filter_map(|((svc_key, pool), ps_key)| {
            let ps = snap.pool_services.get(&ps_key)?;
            let svc = snap.services.get(&svc_key)?;
            (!is_self_announced_class(ps.spec.load_balancer_class.as_deref()))
                .then_some((ps_key, svc_key, pool, &**ps, &**svc))
        })
        .collect();
    // Who names which user-managed load balancer (for the sharing rule).
    let mut by_lb: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (_, svc_key, _, ps, _) in &cloud {
        if let Some(id) = ps
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_LB_ID))
        {
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
            },
        );
    }
    out
}

fn annotations(a: &Option<BTreeMap<String, String>>) -> BTreeMap<String, String> {
    a.clone().unwrap_or_default()
}

/// The planner's input for one (Service, pool), from the snapshot.
pub fn plan_input(
    snap: &SnapshotData,
    cfg: &CloudConfig,
    svc: &Service,
    pool: &str,
    ps: &PoolService,
) -> PlanInput {
    let key = ObjectKey::of(svc);
    let spec = svc.spec.clone().unwrap_or_default();
    let ports = spec
        .ports
        .iter()
        .flatten()
        .map(|p| ServicePort {
            name: p.name.clone().unwrap_or_else(|| p.port.to_string()),
            port: u16::try_from(p.port).unwrap_or(0),
            protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
            node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
        })
        .collect();
    let traffic_policy = match spec.external_traffic_policy.as_deref() {
        Some("Local") => TrafficPolicy::Local,
        _ => TrafficPolicy::Cluster,
    };
    let endpoints = ready_endpoints_by_node(snap, &key);
    let nodes = snap
        .node_pools
        .get(pool)
        .map(|p| p.nodes.clone())
        .unwrap_or_default()
        .iter()
        .filter_map(|n| snap.nodes.get(n))
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
        service_annotations: annotations(&svc.metadata.annotations),
        pool_annotations,
        pool_service_annotations: annotations(&ps.metadata.annotations),
        sharing_services: Vec::new(),
    }
}

/// Ready endpoints of a Service per node (EndpointSlices' `nodeName`; `ready` unset counts
/// as ready, as the API documents).
fn ready_endpoints_by_node(snap: &SnapshotData, svc: &ObjectKey) -> BTreeMap<String, u32> {
    let mut out: BTreeMap<String, u32> = BTreeMap::new();
    for slice in snap.endpoint_slices.get(svc).into_iter().flatten() {
        for ep in slice.endpoints.iter().flatten() {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if let (true, Some(node)) = (ready, &ep.node_name) {
                *out.entry(node.clone()).or_default() += 1;
            }
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

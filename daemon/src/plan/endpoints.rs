//! Which nodes have ready endpoints of a Service, from its EndpointSlices (pure).
//!
//! `externalTrafficPolicy: Local` lets only nodes with a ready local endpoint announce (BGP)
//! or own (L2) an IP; `Cluster` lets every eligible node, but only while the Service has at
//! least one ready endpoint anywhere, so that no node attracts traffic nobody can serve
//! (what MetalLB does too).
//!
//! Node pools: an allocation for one node pool is announced only by that pool's nodes, and
//! with `openyurt.io/topologyKeys: openyurt.io/nodepool` the pool's entry point counts only
//! endpoints on the pool's nodes (OpenYurt's service topology keeps the traffic there):
//! `Cluster` needs a ready endpoint in the pool, `Local` a ready endpoint on the node,
//! which is in the pool.

use std::collections::BTreeSet;

use crate::ipam::AllocationKey;
use crate::service::ServiceFacts;
use crate::snapshot::{ObjectKey, Snapshot};

/// The OpenYurt service topology annotation.
pub const TOPOLOGY_KEYS: &str = "openyurt.io/topologyKeys";

/// The topology key that keeps traffic inside the node pool.
pub const NODEPOOL_TOPOLOGY: &str = "openyurt.io/nodepool";

/// Whether the Service keeps traffic inside the node pool (`openyurt.io/topologyKeys`
/// lists `openyurt.io/nodepool`; the value is a comma-separated list, as OpenYurt reads it).
pub fn pool_topology(svc: &ServiceFacts) -> bool {
    svc.annotation(TOPOLOGY_KEYS)
        .is_some_and(|v| v.split(',').any(|k| k.trim() == NODEPOOL_TOPOLOGY))
}

/// Whether `node` is in `node_pool` (by the snapshot's one rule, `node_pool_of`).
pub fn in_pool(snap: &Snapshot, node: &str, node_pool: &str) -> bool {
    snap.nodes
        .get(node)
        .is_some_and(|v| v.node_pool.as_deref() == Some(node_pool))
}

/// Whether the allocation has a ready endpoint that counts for it: in its node pool when
/// the Service keeps traffic inside the pool, else anywhere.
pub fn has_ready_endpoint_for(snap: &Snapshot, akey: &AllocationKey, svc: &ServiceFacts) -> bool {
    match &akey.node_pool {
        Some(np) if pool_topology(svc) => ready_nodes(snap, &akey.service)
            .iter()
            .any(|n| in_pool(snap, n, np)),
        _ => has_ready_endpoint(snap, &akey.service),
    }
}

/// The ready-endpoint nodes that count for the allocation with `externalTrafficPolicy:
/// Local` (those of its node pool, for a per-pool allocation).
pub fn ready_nodes_for(snap: &Snapshot, akey: &AllocationKey) -> BTreeSet<String> {
    ready_nodes(snap, &akey.service)
        .into_iter()
        .filter(|n| {
            akey.node_pool
                .as_deref()
                .is_none_or(|np| in_pool(snap, n, np))
        })
        .map(String::from)
        .collect()
}

/// Whether `node` may announce the allocation: in its node pool (if it has one), and by
/// the traffic policy ([`node_may_serve`], endpoints counted as [`has_ready_endpoint_for`]).
pub fn node_may_serve_key(
    snap: &Snapshot,
    akey: &AllocationKey,
    svc: &ServiceFacts,
    node: &str,
) -> bool {
    if let Some(np) = &akey.node_pool {
        if !in_pool(snap, node, np) {
            return false;
        }
    }
    if is_local(svc) {
        ready_nodes(snap, &akey.service).contains(node)
    } else {
        has_ready_endpoint_for(snap, akey, svc)
    }
}

/// Whether the Service uses `externalTrafficPolicy: Local`.
pub fn is_local(svc: &ServiceFacts) -> bool {
    svc.local
}

/// The nodes that host a ready endpoint of the Service. An endpoint whose `ready` condition
/// is unset counts as ready, as the EndpointSlice API says consumers must interpret it.
pub fn ready_nodes<'a>(snap: &'a Snapshot, service: &ObjectKey) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    for slice in snap.endpoint_slices.get(service).into_iter().flatten() {
        out.extend(slice.ready_nodes.iter().map(|(n, _)| &**n));
    }
    out
}

/// Whether the Service has a ready endpoint anywhere (with or without a node name).
pub fn has_ready_endpoint(snap: &Snapshot, service: &ObjectKey) -> bool {
    snap.endpoint_slices
        .get(service)
        .into_iter()
        .flatten()
        .any(|s| s.any_ready)
}

/// Whether `node` may serve the Service by its traffic policy: Local needs a ready
/// endpoint on `node`, Cluster a ready endpoint anywhere.
pub fn node_may_serve(
    snap: &Snapshot,
    service: &ObjectKey,
    svc: &ServiceFacts,
    node: &str,
) -> bool {
    if is_local(svc) {
        ready_nodes(snap, service).contains(node)
    } else {
        has_ready_endpoint(snap, service)
    }
}

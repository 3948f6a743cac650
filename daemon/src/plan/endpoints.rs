//! Which nodes have ready endpoints of a Service, from its EndpointSlices (pure).
//!
//! `externalTrafficPolicy: Local` lets only nodes with a ready local endpoint announce (BGP)
//! or own (L2) an IP; `Cluster` lets every eligible node, but only while the Service has at
//! least one ready endpoint anywhere, so that no node attracts traffic nobody can serve
//! (what MetalLB does too).

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Service;

use crate::snapshot::{ObjectKey, Snapshot};

/// Whether the Service uses `externalTrafficPolicy: Local`.
pub fn is_local(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
        == Some("Local")
}

/// The nodes that host a ready endpoint of the Service. An endpoint whose `ready` condition
/// is unset counts as ready, as the EndpointSlice API says consumers must interpret it.
pub fn ready_nodes<'a>(snap: &'a Snapshot, service: &ObjectKey) -> BTreeSet<&'a str> {
    let mut out = BTreeSet::new();
    for slice in snap.endpoint_slices.get(service).into_iter().flatten() {
        for ep in slice.endpoints.iter().flatten() {
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if let (true, Some(node)) = (ready, ep.node_name.as_deref()) {
                out.insert(node);
            }
        }
    }
    out
}

/// Whether the Service has a ready endpoint anywhere (with or without a node name).
pub fn has_ready_endpoint(snap: &Snapshot, service: &ObjectKey) -> bool {
    snap.endpoint_slices
        .get(service)
        .into_iter()
        .flatten()
        .flat_map(|s| s.endpoints.iter().flatten())
        .any(|ep| ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
}

/// Whether `node` may serve the Service by its traffic policy: Local needs a ready
/// endpoint on `node`, Cluster a ready endpoint anywhere.
pub fn node_may_serve(snap: &Snapshot, service: &ObjectKey, svc: &Service, node: &str) -> bool {
    if is_local(svc) {
        ready_nodes(snap, service).contains(node)
    } else {
        has_ready_endpoint(snap, service)
    }
}

//! What the store keeps of the Kubernetes objects it holds many of (Services,
//! EndpointSlices, Nodes, Namespaces): everything but the fields no decision, status write
//! or view reads and that are large in a real cluster. `metadata.managedFields` (often
//! larger than the rest of the object), the `kubectl.kubernetes.io/last-applied-configuration`
//! annotation (a copy of the object), an EndpointSlice's per-endpoint `targetRef` and
//! `hints` and its controller's annotations, and a Node's `status.images` (every image
//! on the node) cost memory per object and are never read. Fields someone may read later
//! (labels, other annotations, addresses, ports, conditions) are kept.

use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::snapshot::Object;

/// The annotation `kubectl apply` (client side) keeps a copy of the object in.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Any object as the store keeps it (the kinds below are slimmed, the others kept whole).
/// Idempotent.
pub fn object(o: &mut Object) {
    match o {
        Object::Service(s) => service(s),
        Object::EndpointSlice(s) => endpoint_slice(s),
        Object::Node(n) => node(n),
        Object::Namespace(n) => namespace(n),
        _ => {}
    }
}

/// Drops what no decision reads from any object's metadata.
pub fn meta(m: &mut ObjectMeta) {
    m.managed_fields = None;
    if let Some(a) = &mut m.annotations {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            m.annotations = None;
        }
    }
}

/// A Service as the store keeps it.
pub fn service(svc: &mut Service) {
    meta(&mut svc.metadata);
}

/// An EndpointSlice as the kube source holds it until the store takes what decisions read
/// of it ([`crate::snapshot::Slice`]): its endpoints' node, readiness, addresses and zone,
/// its ports, and the label naming its Service.
pub fn endpoint_slice(slice: &mut EndpointSlice) {
    meta(&mut slice.metadata);
    // The EndpointSlice controller's bookkeeping (`endpoints.kubernetes.io/last-change-trigger-time`).
    slice.metadata.annotations = None;
    for ep in slice.endpoints.iter_mut().flatten() {
        ep.target_ref = None;
        ep.hints = None;
        ep.deprecated_topology = None;
    }
}

/// A Node as the store keeps it (labels, addresses, conditions, provider ID; no images).
pub fn node(node: &mut Node) {
    meta(&mut node.metadata);
    if let Some(status) = &mut node.status {
        status.images = None;
    }
}

/// A Namespace as the store keeps it (its labels are what is read).
pub fn namespace(ns: &mut Namespace) {
    meta(&mut ns.metadata);
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerImage, NodeStatus};
    use k8s_openapi::api::discovery::v1::Endpoint;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use std::collections::BTreeMap;

    #[test]
    fn unread_fields_are_dropped_and_read_ones_kept() {
        let mut svc = crate::fixtures::service("default", "web", 80);
        svc.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        svc.metadata.annotations = Some(BTreeMap::from([
            (LAST_APPLIED.to_string(), "{...}".to_string()),
            ("edgelb.io/address-pool".to_string(), "lan".to_string()),
        ]));
        let before = svc.clone();
        service(&mut svc);
        assert_eq!(svc.metadata.managed_fields, None);
        assert_eq!(
            svc.metadata.annotations,
            Some(BTreeMap::from([(
                "edgelb.io/address-pool".to_string(),
                "lan".to_string()
            )]))
        );
        assert_eq!((svc.spec, svc.status), (before.spec, before.status));

        let mut slice = crate::fixtures::endpoint_slice("default", "web", "web-1", ["n1".into()]);
        slice.endpoints.as_mut().expect("endpoints")[0].target_ref = Some(Default::default());
        let labels = slice.metadata.labels.clone();
        endpoint_slice(&mut slice);
        let ep: &Endpoint = &slice.endpoints.as_ref().expect("endpoints")[0];
        assert_eq!(ep.target_ref, None);
        assert_eq!(ep.node_name.as_deref(), Some("n1"));
        assert_eq!(ep.conditions.as_ref().and_then(|c| c.ready), Some(true));
        assert_eq!(slice.metadata.labels, labels);

        let mut n = crate::fixtures::node("n1", &[("zone", "a")]);
        n.status = Some(NodeStatus {
            images: Some(vec![ContainerImage::default()]),
            ..Default::default()
        });
        node(&mut n);
        assert_eq!(n.status.as_ref().and_then(|s| s.images.as_ref()), None);
        assert!(n.metadata.labels.is_some());
    }
}

//! The floor no announcement crosses, in any mode: a Node that opts out of external load
//! balancers, is not `Ready`, or has `NetworkUnavailable` announces nothing. Conditions a
//! Node does not report pass (a standalone file may list Nodes without status).

use k8s_openapi::api::core::v1::Node;

use crate::election::ExclusionReason;

/// The first floor reason that applies to `node`, in the election's reporting order.
pub fn node_floor(node: &Node) -> Option<ExclusionReason> {
    if excluded_by_label(node) {
        Some(ExclusionReason::ExcludedByLabel)
    } else if !ready(node) {
        Some(ExclusionReason::NodeNotReady)
    } else if network_unavailable(node) {
        Some(ExclusionReason::NetworkUnavailable)
    } else {
        None
    }
}

/// The Node carries `node.kubernetes.io/exclude-from-external-load-balancers` (any value).
pub fn excluded_by_label(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key("node.kubernetes.io/exclude-from-external-load-balancers"))
}

/// `Ready` is `True`, or not reported.
pub fn ready(node: &Node) -> bool {
    condition(node, "Ready").unwrap_or(true)
}

/// `NetworkUnavailable` is `True`.
pub fn network_unavailable(node: &Node) -> bool {
    condition(node, "NetworkUnavailable").unwrap_or(false)
}

fn condition(node: &Node, kind: &str) -> Option<bool> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status == "True")
}

//! `IPAddressPool`: the addresses LoadBalancer IPs are allocated from (MetalLB's kind of the
//! same name).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::status::ObjectStatus;

/// A set of addresses that LoadBalancer IPs are allocated from.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[kube(
    group = "edgelb.io",
    version = "v1alpha1",
    kind = "IPAddressPool",
    namespaced,
    status = "ObjectStatus",
    shortname = "ippool",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Auto Assign","type":"boolean","jsonPath":".spec.autoAssign"}"#,
    printcolumn = r#"{"name":"Avoid Buggy IPs","type":"boolean","jsonPath":".spec.avoidBuggyIPs"}"#,
    printcolumn = r#"{"name":"Addresses","type":"string","jsonPath":".spec.addresses"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// The addresses of the pool: CIDRs (`192.0.2.0/28`, `2001:db8::/120`) or inclusive
    /// ranges (`192.0.2.10-192.0.2.20`). IPv4 and IPv6 may be mixed for dual-stack.
    #[x_kube(validation = Rule::new("size(self) > 0").message("spec.addresses must not be empty"))]
    pub addresses: Vec<String>,
    /// Whether Services without an explicit request may get addresses from this pool
    /// (default `true`). With `false` a Service must name the pool or an IP of it.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    /// Skip IPv4 addresses ending in `.0` and `.255`, which some old client stacks drop.
    #[serde(default, rename = "avoidBuggyIPs")]
    pub avoid_buggy_ips: bool,
    /// Restricts the pool to some namespaces or Services, and orders pools by priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
    /// Scopes the pool to node pools (regions): its addresses then go only to the per-pool
    /// allocations of Services that select those node pools
    /// (`service.openyurt.io/nodepool-labelselector`), and are announced only by nodes of the
    /// pool they were allocated for. Matched against the node pool's labels (the OpenYurt
    /// `NodePool`'s labels); any selector suffices. Empty with `nodePools` empty: the pool
    /// is cluster-wide and serves only Services without a node-pool selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_pool_selectors: Vec<LabelSelector>,
    /// Node pools (by name) the pool is scoped to, beside `nodePoolSelectors` (either
    /// suffices): the short form for "this range is region X's LAN".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_pools: Vec<String>,
}

impl IPAddressPoolSpec {
    /// Whether the pool is scoped to node pools (`nodePools` or `nodePoolSelectors` set).
    pub fn is_node_pool_scoped(&self) -> bool {
        !self.node_pools.is_empty() || !self.node_pool_selectors.is_empty()
    }
}

/// Which Services a pool serves, and in which order pools are tried.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower numbers are tried first; pools without a priority come after all that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 2147483647))]
    pub priority: Option<i32>,
    /// Namespaces (by name) whose Services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces (by labels) whose Services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Services (by labels) that may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

fn default_true() -> bool {
    true
}

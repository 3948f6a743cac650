//! `PolicyRoute` (`edgelb.io/v1alpha1`, cluster-scoped): source-based policy routes that make
//! an edge instance with a public and a private NIC answer load-balanced traffic (which
//! arrives on the private NIC through the ELB) out of the private NIC.
//!
//! What it replaces, per node and by hand (SPEC, "ENS policy routes"):
//!
//! ```text
//! ip rule add from 10.0.0.3 lookup 4 priority 1000
//! ip route add default via 10.0.0.1 dev eth1 table 4
//! ```
//!
//! One object selects nodes (label selector and/or node pools) and says which interface,
//! routing table, rule priority and gateway to use. A node may override the gateway and the
//! table for itself with the annotations [`GATEWAY_ANNOTATION`] and [`TABLE_ANNOTATION`]
//! (suffix `.<policy-route-name>` to address one object only; the suffixed key wins; an
//! annotation name is at most 63 characters, so this works for object names up to 42).
//!
//! The speaker of each selected node reports its outcome as a condition of type
//! `Installed.<node-name>` ([`node_condition_type`]), so every speaker owns its own entry of
//! the `conditions` list under server-side apply (the list is a map keyed by `type`).
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Node annotation: gateway(s) for this node, e.g. `10.0.0.1` or `10.0.0.1,fd00::1`
/// (at most one per family). Overrides `spec.gateways`.
pub const GATEWAY_ANNOTATION: &str = "edgelb.io/policy-route-gateway";

/// Node annotation: routing table number for this node, e.g. `4`. Overrides `spec.table`.
pub const TABLE_ANNOTATION: &str = "edgelb.io/policy-route-table";

/// Rule priority used when `spec.priority` is unset: after the kernel's `local` rule (0),
/// well before `main` (32766), and clear of the low numbers that tools tend to pick.
pub const DEFAULT_PRIORITY: u32 = 1000;

/// The condition type a node's speaker writes for its outcome: `Installed.<node>`.
pub fn node_condition_type(node: &str) -> String {
    format!("Installed.{node}")
}

/// Desired policy routes for a set of nodes.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "edgelb.io",
    version = "v1alpha1",
    kind = "PolicyRoute",
    plural = "policyroutes",
    shortname = "epr",
    status = "PolicyRouteStatus",
    printcolumn = r#"{"name":"Table","type":"integer","jsonPath":".spec.table"}"#,
    printcolumn = r#"{"name":"Interface","type":"string","jsonPath":".spec.interface"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRouteSpec {
    /// Nodes whose labels match this selector. Unset or empty selects every node (still
    /// narrowed by `nodePools` when that is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<LabelSelector>,

    /// Node pools (OpenYurt `NodePool` names, or the value of the node's
    /// `apps.openyurt.io/nodepool` / `topology.kubernetes.io/region` label) whose nodes are
    /// selected. Empty: no pool restriction. Combined with `nodeSelector` by AND.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_pools: Vec<String>,

    /// Name of the private interface, e.g. `eth1`. Unset: the interface that carries the
    /// node's InternalIP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,

    /// Routing table number for the rules' lookup and the routes (`ip rule ... lookup
    /// TABLE`). 0 (unspec), 253 (default), 254 (main) and 255 (local) are refused, and so
    /// is a table that rules not installed by edgelb already look up.
    #[schemars(range(min = 1, max = 4294967295u32))]
    pub table: u32,

    /// Priority of the rules (`ip rule ... priority N`), 1 to 32765 so they come after the
    /// `local` rule and before `main`. Default 1000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32765))]
    pub priority: Option<u32>,

    /// Explicit gateways, at most one per address family. A family listed in `ipFamilies`
    /// without one here is auto-detected: the gateway of a route through the interface (as a
    /// DHCP client installs it), never guessed. Each must lie in a subnet connected to the
    /// interface (an IPv6 link-local gateway is always on-link).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<IpAddr>,

    /// Address families to route. Default `[IPv4]`. For each family, every global address
    /// of the interface gets a rule `from ADDR lookup TABLE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_families: Vec<IpFamily>,
}

/// An IP address family, spelled as in a Service's `ipFamilies`.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, JsonSchema,
)]
pub enum IpFamily {
    /// IPv4.
    IPv4,
    /// IPv6.
    IPv6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(addr: &IpAddr) -> IpFamily {
        match addr {
            IpAddr::V4(_) => IpFamily::IPv4,
            IpAddr::V6(_) => IpFamily::IPv6,
        }
    }
}

impl PolicyRouteSpec {
    /// The rule priority in effect.
    pub fn effective_priority(&self) -> u32 {
        self.priority.unwrap_or(DEFAULT_PRIORITY)
    }

    /// The families in effect (`[IPv4]` when unset), sorted and without duplicates.
    pub fn effective_families(&self) -> Vec<IpFamily> {
        let mut f = if self.ip_families.is_empty() {
            vec![IpFamily::IPv4]
        } else {
            self.ip_families.clone()
        };
        f.sort();
        f.dedup();
        f
    }
}

/// What the speakers report.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRouteStatus {
    /// One condition per selected node, type `Installed.<node>`: `True` when the node's
    /// rules and routes are in place, `False` with a reason (`UnknownInterface`,
    /// `ReservedTable`, `TableInUse`, `GatewayNotOnLink`, `NoGateway`, ...) and a message
    /// naming the node and the problem; nothing is installed on that node then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

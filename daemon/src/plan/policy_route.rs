//! The policy-route planner: from the `PolicyRoute` objects and this node's facts (labels,
//! annotations, links, addresses, the kernel's own routes), the source-based rules and the
//! per-table routes this node must have, and one condition per selected object.
//!
//! For a private interface `eth1` with `10.0.0.3/24`, table 4 and gateway `10.0.0.1`:
//!
//! ```text
//! rule   from 10.0.0.3/32 lookup 4 priority 1000
//! route  default via 10.0.0.1 dev eth1 table 4
//! route  10.0.0.0/24 dev eth1 scope link src 10.0.0.3 table 4   (on-link replies)
//! ```
//!
//! Pure: no I/O, no clock. The actuator (`actuate::policy_route`) gathers the kernel facts
//! and installs the result. Bad input for a node (unknown interface, reserved table, table
//! used by foreign rules, gateway off-link, ...) yields a `False` condition naming the node
//! and the problem and nothing at all for that object on that node; every other object is
//! planned as usual.
use crate::api::policy_route::{
    node_condition_type, IpFamily, PolicyRouteSpec, GATEWAY_ANNOTATION, TABLE_ANNOTATION,
};
use crate::selector;
use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Tables the kernel reserves: `unspec` (0), `default` (253), `main` (254), `local` (255).
pub const RESERVED_TABLES: [u32; 4] = [0, 253, 254, 255];

/// Highest rule priority that still comes before the kernel's `main` rule (32766).
pub const MAX_PRIORITY: u32 = 32765;

/// Everything the planner reads, as plain data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyRouteInput {
    /// Every `PolicyRoute` object (name and spec), in any order.
    pub routes: Vec<NamedPolicyRoute>,
    /// This node.
    pub node: NodeFacts,
    /// This node's links and their addresses.
    pub links: Vec<LinkFacts>,
    /// Routes in the kernel not installed by edgelb (any table): where auto gateways come from.
    pub kernel_routes: Vec<KernelRoute>,
    /// Tables that rules not installed by edgelb look up: refused as ours.
    pub foreign_rule_tables: BTreeSet<u32>,
}

/// A `PolicyRoute` object's name and spec.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedPolicyRoute {
    /// `metadata.name`.
    pub name: String,
    /// `spec`.
    pub spec: PolicyRouteSpec,
}

/// What the planner needs to know about this node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeFacts {
    /// Node name.
    pub name: String,
    /// Node labels.
    pub labels: BTreeMap<String, String>,
    /// The node pool the node belongs to, if any.
    pub pool: Option<String>,
    /// Node annotations (for the per-node gateway and table overrides).
    pub annotations: BTreeMap<String, String>,
    /// The node's `InternalIP` addresses from its status.
    pub internal_ips: Vec<IpAddr>,
}

/// One network interface of this node.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkFacts {
    /// Interface name.
    pub name: String,
    /// Interface index.
    pub index: u32,
    /// Administratively and operationally able to carry routes (`IFF_UP`).
    pub up: bool,
    /// Addresses with their prefix length.
    pub addrs: Vec<IpNet>,
}

/// A route found in the kernel (not ours).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelRoute {
    /// Routing table.
    pub table: u32,
    /// Destination.
    pub dst: IpNet,
    /// Gateway, if any.
    pub gateway: Option<IpAddr>,
    /// Output interface index, if any.
    pub oif: Option<u32>,
}

/// A rule `from SRC lookup TABLE priority PRIORITY`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlannedRule {
    /// Rule priority.
    pub priority: u32,
    /// Source address as a host prefix (`/32` or `/128`).
    pub src: IpNet,
    /// Table looked up.
    pub table: u32,
}

/// A route in one of our tables.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PlannedRoute {
    /// Routing table.
    pub table: u32,
    /// Destination (`0.0.0.0/0`, `::/0`, or the interface's subnet).
    pub dst: IpNet,
    /// Gateway (default routes); `None` for the on-link subnet route.
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: u32,
    /// Preferred source (the subnet route of IPv4, as the kernel's own one has).
    pub prefsrc: Option<IpAddr>,
}

impl PlannedRule {
    /// The address family.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.src.addr())
    }
}

impl PlannedRoute {
    /// The address family.
    pub fn family(&self) -> IpFamily {
        IpFamily::of(&self.dst.addr())
    }
}

/// Why a node's routes for an object are, or are not, installed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reason {
    /// Everything planned.
    Installed,
    /// A node annotation override does not parse.
    BadAnnotation,
    /// The node selector has an unknown operator or misses values.
    BadSelector,
    /// Table 0, 253, 254 or 255.
    ReservedTable,
    /// Rules not installed by edgelb already look up the table, or the table already holds
    /// a route (not ours) to a destination we need.
    TableInUse,
    /// Another `PolicyRoute` on this node already uses the table.
    TableConflict,
    /// Priority 0 or above 32765.
    BadPriority,
    /// Two explicit gateways of one family.
    BadGateways,
    /// No interface with that name, or none carries the InternalIP.
    UnknownInterface,
    /// The interface is down.
    InterfaceDown,
    /// The interface has no global address of a requested family.
    NoAddress,
    /// The gateway lies in no subnet of the interface.
    GatewayNotOnLink,
    /// No gateway given and none found in the kernel's routes through the interface.
    NoGateway,
}

impl Reason {
    /// The CamelCase reason written in the condition.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Installed => "Installed",
            Reason::BadAnnotation => "BadAnnotation",
            Reason::BadSelector => "BadSelector",
            Reason::ReservedTable => "ReservedTable",
            Reason::TableInUse => "TableInUse",
            Reason::TableConflict => "TableConflict",
            Reason::BadPriority => "BadPriority",
            Reason::BadGateways => "BadGateways",
            Reason::UnknownInterface => "UnknownInterface",
            Reason::InterfaceDown => "InterfaceDown",
            Reason::NoAddress => "NoAddress",
            Reason::GatewayNotOnLink => "GatewayNotOnLink",
            Reason::NoGateway => "NoGateway",
        }
    }
}

/// The outcome of one `PolicyRoute` on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeCondition {
    /// The `PolicyRoute` name.
    pub policy_route: String,
    /// This node's name.
    pub node: String,
    /// Why (and whether: only `Reason::Installed` means installed).
    pub reason: Reason,
    /// A sentence naming the node and the problem or what is installed.
    pub message: String,
    /// The table the object uses on this node (after the node's annotation), when it could
    /// be read; every planned rule and route of the object is in this table.
    pub table: Option<u32>,
    /// The priority of the object's rules.
    pub priority: u32,
}

impl NodeCondition {
    /// True when the node's rules and routes for this object are planned.
    pub fn installed(&self) -> bool {
        self.reason == Reason::Installed
    }

    /// The Kubernetes condition (`Installed.<node>`) for the object's status.
    pub fn to_condition(&self, observed_generation: Option<i64>, now: Time) -> Condition {
        Condition {
            type_: node_condition_type(&self.node),
            status: if self.installed() { "True" } else { "False" }.to_string(),
            reason: self.reason.as_str().to_string(),
            message: self.message.clone(),
            observed_generation,
            last_transition_time: now,
        }
    }
}

/// What this node must have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyRoutePlan {
    /// Rules, sorted, without duplicates.
    pub rules: Vec<PlannedRule>,
    /// Routes, sorted, without duplicates.
    pub routes: Vec<PlannedRoute>,
    /// One per `PolicyRoute` that selects this node, sorted by object name.
    pub conditions: Vec<NodeCondition>,
}

/// Plans this node's policy rules and routes. Objects are taken in name order, so when two
/// claim one table the first name wins and the other gets `TableConflict`.
pub fn plan(input: &PolicyRouteInput) -> PolicyRoutePlan {
    let mut objects: Vec<&NamedPolicyRoute> = input.routes.iter().collect();
    objects.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rules = BTreeSet::new();
    let mut routes = BTreeSet::new();
    let mut conditions = Vec::new();
    let mut claimed: BTreeMap<u32, &str> = BTreeMap::new();
    for obj in objects {
        if !selects(&obj.spec, &input.node) {
            continue;
        }
        let node = &input.node.name;
        let table = table_for(&obj.name, &obj.spec, &input.node).ok();
        let priority = obj.spec.effective_priority();
        let condition = match plan_one(obj, input, &claimed) {
            Ok(one) => {
                claimed.insert(one.table, &obj.name);
                let message = format!(
                    "node {node}: {} rule(s) and {} route(s) in table {} via {} on {}",
                    one.rules.len(),
                    one.routes.len(),
                    one.table,
                    one.gateways,
                    one.link
                );
                rules.extend(one.rules);
                routes.extend(one.routes);
                NodeCondition {
                    policy_route: obj.name.clone(),
                    node: node.clone(),
                    reason: Reason::Installed,
                    message,
                    table,
                    priority,
                }
            }
            Err((reason, problem)) => NodeCondition {
                policy_route: obj.name.clone(),
                node: node.clone(),
                reason,
                message: format!("node {node}: {problem}; nothing installed on this node"),
                table,
                priority,
            },
        };
        conditions.push(condition);
    }
    PolicyRoutePlan {
        rules: rules.into_iter().collect(),
        routes: routes.into_iter().collect(),
        conditions,
    }
}

/// Whether the object selects the node: its selector (empty = all) AND its pools (empty = all).
/// A selector with problems still "selects" so that the node reports `BadSelector`.
fn selects(spec: &PolicyRouteSpec, node: &NodeFacts) -> bool {
    if !spec.node_pools.is_empty()
        && !node
            .pool
            .as_ref()
            .is_some_and(|p| spec.node_pools.contains(p))
    {
        return false;
    }
    match &spec.node_selector {
        None => true,
        Some(sel) if !selector::problems(sel).is_empty() => true,
        Some(sel) => selector::matches(sel, &node.labels),
    }
}

/// The result for one object on this node.
struct One {
    table: u32,
    link: String,
    gateways: String,
    rules: Vec<PlannedRule>,
    routes: Vec<PlannedRoute>,
}

type Problem = (Reason, String);

fn plan_one(
    obj: &NamedPolicyRoute,
    input: &PolicyRouteInput,
    claimed: &BTreeMap<u32, &str>,
) -> Result<One, Problem> {
    let spec = &obj.spec;
    let node = &input.node;
    if let Some(sel) = &spec.node_selector {
        if let Some((field, msg)) = selector::problems(sel).into_iter().next() {
            return Err((Reason::BadSelector, format!("nodeSelector.{field}: {msg}")));
        }
    }
    let table = table_for(&obj.name, spec, node)?;
    if RESERVED_TABLES.contains(&table) {
        return Err((
            Reason::ReservedTable,
            format!("table {table} is reserved by the kernel (0, 253, 254, 255)"),
        ));
    }
    if input.foreign_rule_tables.contains(&table) {
        return Err((
            Reason::TableInUse,
            format!("table {table} is already looked up by rules not installed by edgelb"),
        ));
    }
    if let Some(other) = claimed.get(&table) {
        return Err((
            Reason::TableConflict,
            format!("table {table} is already used by PolicyRoute {other} on this node"),
        ));
    }
    let priority = spec.effective_priority();
    if priority == 0 || priority > MAX_PRIORITY {
        return Err((
            Reason::BadPriority,
            format!("priority {priority} is outside 1..={MAX_PRIORITY}"),
        ));
    }
    let explicit = gateways_for(&obj.name, spec, node)?;
    let link = find_link(spec, input)?;
    if !link.up {
        return Err((
            Reason::InterfaceDown,
            format!("interface {} is down", link.name),
        ));
    }
    let mut rules = Vec::new();
    let mut routes = BTreeMap::new();
    let mut gws = Vec::new();
    for family in spec.effective_families() {
        let addrs: Vec<IpNet> = link
            .addrs
            .iter()
            .filter(|a| IpFamily::of(&a.addr()) == family && is_global(&a.addr()))
            .copied()
            .collect();
        if addrs.is_empty() {
            return Err((
                Reason::NoAddress,
                format!("interface {} has no global {family:?} address", link.name),
            ));
        }
        let gw = match explicit.get(&family) {
            Some(gw) => {
                if !on_link(gw, link) {
                    return Err((
                        Reason::GatewayNotOnLink,
                        format!("gateway {gw} is in no subnet of interface {}", link.name),
                    ));
                }
                *gw
            }
            None => auto_gateway(family, link, &input.kernel_routes).ok_or_else(|| {
                (
                    Reason::NoGateway,
                    format!(
                        "no {family:?} gateway given and no route through interface {} has one; \
                         set spec.gateways or the annotation {GATEWAY_ANNOTATION}",
                        link.name
                    ),
                )
            })?,
        };
        gws.push(gw.to_string());
        let default = match family {
            IpFamily::IPv4 => IpNet::V4(Default::default()),
            IpFamily::IPv6 => IpNet::V6(Default::default()),
        };
        routes.insert(
            default,
            PlannedRoute {
                table,
                dst: default,
                gateway: Some(gw),
                oif: link.index,
                prefsrc: None,
            },
        );
        for a in &addrs {
            rules.push(PlannedRule {
                priority,
                src: IpNet::from(a.addr()),
                table,
            });
            let subnet = a.trunc();
            // One route per subnet; with several addresses in it, the lowest is the source.
            let candidate = PlannedRoute {
                table,
                dst: subnet,
                gateway: None,
                oif: link.index,
                prefsrc: (family == IpFamily::IPv4).then(|| a.addr()),
            };
            routes
                .entry(subnet)
                .and_modify(|r: &mut PlannedRoute| {
                    if candidate.prefsrc < r.prefsrc {
                        *r = candidate.clone();
                    }
                })
                .or_insert(candidate);
        }
    }
    // A route the kernel already has in that table, not ours, would be overwritten.
    for r in routes.values() {
        if let Some(k) = input
            .kernel_routes
            .iter()
            .find(|k| k.table == table && k.dst == r.dst)
        {
            return Err((
                Reason::TableInUse,
                format!(
                    "table {table} already has a route to {} not installed by edgelb",
                    k.dst
                ),
            ));
        }
    }
    rules.sort();
    rules.dedup();
    Ok(One {
        table,
        link: link.name.clone(),
        gateways: gws.join(","),
        rules,
        routes: routes.into_values().collect(),
    })
}

/// Looks up an annotation: the per-object key `KEY.<name>` wins over `KEY`.
fn annotation<'a>(node: &'a NodeFacts, key: &str, name: &str) -> Option<(String, &'a str)> {
    let specific = format!("{key}.{name}");
    if let Some(v) = node.annotations.get(&specific) {
        return Some((specific, v));
    }
    node.annotations
        .get(key)
        .map(|v| (key.to_string(), v.as_str()))
}

fn table_for(name: &str, spec: &PolicyRouteSpec, node: &NodeFacts) -> Result<u32, Problem> {
    match annotation(node, TABLE_ANNOTATION, name) {
        None => Ok(spec.table),
        Some((key, v)) => v.trim().parse::<u32>().map_err(|_| {
            (
                Reason::BadAnnotation,
                format!("annotation {key}: {v:?} is not a table number"),
            )
        }),
    }
}

/// Explicit gateways by family: from the node annotation if present, else the spec.
fn gateways_for(
    name: &str,
    spec: &PolicyRouteSpec,
    node: &NodeFacts,
) -> Result<BTreeMap<IpFamily, IpAddr>, Problem> {
    let (field, list) = match annotation(node, GATEWAY_ANNOTATION, name) {
        Some((key, v)) => {
            let mut list = Vec::new();
            for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let gw = part.parse::<IpAddr>().map_err(|_| {
                    (
                        Reason::BadAnnotation,
                        format!("annotation {key}: {part:?} is not an IP address"),
                    )
                })?;
                list.push(gw);
            }
            (format!("annotation {key}"), list)
        }
        None => ("spec.gateways".to_string(), spec.gateways.clone()),
    };
    let mut by_family = BTreeMap::new();
    for gw in list {
        if let Some(first) = by_family.insert(IpFamily::of(&gw), gw) {
            return Err((
                Reason::BadGateways,
                format!("{field}: two gateways of one family ({first} and {gw})"),
            ));
        }
    }
    Ok(by_family)
}

fn find_link<'a>(
    spec: &PolicyRouteSpec,
    input: &'a PolicyRouteInput,
) -> Result<&'a LinkFacts, Problem> {
    match &spec.interface {
        Some(name) => input
            .links
            .iter()
            .filter(|l| &l.name == name)
            .min_by_key(|l| l.index)
            .ok_or_else(|| {
                (
                    Reason::UnknownInterface,
                    format!("no interface named {name:?}"),
                )
            }),
        None => input
            .links
            .iter()
            .filter(|l| {
                l.addrs
                    .iter()
                    .any(|a| input.node.internal_ips.contains(&a.addr()))
            })
            .min_by_key(|l| l.index)
            .ok_or_else(|| {
                let ips: Vec<String> = input
                    .node
                    .internal_ips
                    .iter()
                    .map(|i| i.to_string())
                    .collect();
                (
                    Reason::UnknownInterface,
                    format!(
                        "no interface carries the node's InternalIP [{}]",
                        ips.join(", ")
                    ),
                )
            }),
    }
}

/// Global unicast for our purpose: not loopback, not unspecified, not IPv6 link-local.
fn is_global(addr: &IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => !a.is_loopback() && !a.is_unspecified(),
        IpAddr::V6(a) => {
            !a.is_loopback() && !a.is_unspecified() && (a.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

/// A gateway is on-link when a subnet of the interface contains it (and it is not the
/// subnet's own address), or when it is an IPv6 link-local address.
fn on_link(gw: &IpAddr, link: &LinkFacts) -> bool {
    if let IpAddr::V6(a) = gw {
        if (a.segments()[0] & 0xffc0) == 0xfe80 {
            return true;
        }
    }
    link.addrs
        .iter()
        .any(|a| a.contains(gw) && a.addr() != *gw && is_global(gw))
}

/// The gateway of a kernel route through the interface: default routes first, then the main
/// table, then by table, destination and gateway, so the choice is deterministic.
fn auto_gateway(family: IpFamily, link: &LinkFacts, routes: &[KernelRoute]) -> Option<IpAddr> {
    routes
        .iter()
        .filter(|r| r.oif == Some(link.index) && IpFamily::of(&r.dst.addr()) == family)
        .filter_map(|r| r.gateway.filter(|gw| on_link(gw, link)).map(|gw| (r, gw)))
        .min_by_key(|(r, gw)| (r.dst.prefix_len(), r.table != 254, r.table, r.dst, *gw))
        .map(|(_, gw)| gw)
}

#[cfg(test)]
#[path = "policy_route_tests.rs"]
mod tests;

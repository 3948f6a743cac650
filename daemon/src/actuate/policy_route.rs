//! The policy-route actuator: converges the kernel's rules and routes to a
//! [`PolicyRoutePlan`] over rtnetlink, in the network namespace of the thread that creates it.
//!
//! - **Ownership** lives in the kernel objects: every rule and route edgelb installs carries
//!   protocol [`EDGELB_RTPROT`] (235). `apply` lists rules and routes, adds what is missing,
//!   and removes only objects with protocol 235 that the plan no longer wants; everything else
//!   is left alone. A restarted speaker therefore adopts its own objects instead of
//!   duplicating them, and [`PolicyRouteActuator::cleanup`] (`edgelb-speaker cleanup`)
//!   removes exactly what edgelb installed.
//! - **Rules** are added plainly, `EEXIST` counting as success: the kernel ignores
//!   `NLM_F_REPLACE` for rules and would insert a duplicate (STYLE.md, "Pitfalls").
//! - **Routes** are installed with replace (one route per table and destination).
//! - **Deletes** treat `ESRCH`/`ENOENT` as success: someone else got there first.
//! - **Events**: [`watch_changes`] subscribes to link, address, route and rule notifications
//!   and says "re-plan" when the node's addresses, links or foreign routes/rules change.
//!
//! Order inside `apply`: routes are replaced before rules point at them, and stale rules are
//! removed before their routes, so a table a rule looks up is never half-filled.
pub use super::policy_route_netlink::EDGELB_RTPROT;
use super::policy_route_netlink::{
    read_address, read_link, read_route, read_rule, route_message, rule_message,
};
use crate::plan::policy_route::{
    KernelRoute, LinkFacts, NamedPolicyRoute, NodeFacts, PlannedRoute, PlannedRule,
    PolicyRouteInput, PolicyRoutePlan,
};
use futures::TryStreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::rule::RuleMessage;
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::{Handle, IpVersion, MulticastGroup};
use std::collections::{BTreeMap, BTreeSet};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

/// Errors of the actuator, naming the operation and the object.
#[derive(Debug, thiserror::Error)]
pub enum ActuateError {
    /// The netlink socket could not be opened or bound.
    #[error("opening the rtnetlink socket: {0}")]
    Socket(#[from] std::io::Error),
    /// The kernel refused a request.
    #[error("netlink {op} {object}: {source}")]
    Netlink {
        /// What we asked (`dump rules`, `add rule`, `replace route`, ...).
        op: &'static str,
        /// The object, as `ip` would print it.
        object: String,
        /// The kernel's answer.
        source: rtnetlink::Error,
    },
}

/// What one `apply` changed, and what the kernel refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Rules added.
    pub rules_added: usize,
    /// Rules removed.
    pub rules_removed: usize,
    /// Routes added or replaced.
    pub routes_replaced: usize,
    /// Routes removed.
    pub routes_removed: usize,
    /// Changes the kernel refused, each naming the object and the error. One refusal does
    /// not stop the others; the rules of a table whose route was refused are not added.
    pub failed: Vec<String>,
    /// Tables whose wanted route or rule the kernel refused, with the first refusal: what
    /// the plan wants there is not (all) installed.
    pub refused_tables: BTreeMap<u32, String>,
}

impl ApplyReport {
    fn refused(&mut self, error: ActuateError) {
        warn!(%error, "kernel refused a policy-route change");
        self.failed.push(error.to_string());
    }

    /// A wanted route or rule of `table` was refused.
    fn refused_in(&mut self, table: u32, error: ActuateError) {
        self.refused_tables
            .entry(table)
            .or_insert_with(|| error.to_string());
        self.refused(error);
    }

    /// True when anything was changed.
    pub fn changed(&self) -> bool {
        self.rules_added + self.rules_removed + self.routes_replaced + self.routes_removed > 0
    }
}

/// What the kernel says, as the planner's input needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KernelFacts {
    /// Links with their addresses.
    pub links: Vec<LinkFacts>,
    /// Unicast routes in every table that are not ours.
    pub kernel_routes: Vec<KernelRoute>,
    /// Tables looked up by rules that are not ours (including 253, 254, 255).
    pub foreign_rule_tables: BTreeSet<u32>,
}

impl KernelFacts {
    /// The planner's input: these facts plus the objects and this node.
    pub fn into_input(self, routes: Vec<NamedPolicyRoute>, node: NodeFacts) -> PolicyRouteInput {
        PolicyRouteInput {
            routes,
            node,
            links: self.links,
            kernel_routes: self.kernel_routes,
            foreign_rule_tables: self.foreign_rule_tables,
        }
    }
}

/// Converges rules and routes with protocol 235 to a plan.
pub struct PolicyRouteActuator {
    handle: Handle,
    connection: JoinHandle<()>,
}

impl Drop for PolicyRouteActuator {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(m.raw_code().abs()),
        _ => None,
    }
}

const EEXIST: i32 = 17;
const ENOENT: i32 = 2;
const ESRCH: i32 = 3;

fn show_rule(r: &PlannedRule) -> String {
    format!("from {} lookup {} priority {}", r.src, r.table, r.priority)
}

fn show_route(r: &PlannedRoute) -> String {
    match r.gateway {
        Some(gw) => format!("{} via {gw} oif {} table {}", r.dst, r.oif, r.table),
        None => format!("{} oif {} table {}", r.dst, r.oif, r.table),
    }
}

impl PolicyRouteActuator {
    /// Opens an rtnetlink socket in the calling thread's network namespace. Needs a tokio
    /// runtime (the socket's task is spawned on it).
    pub fn new() -> Result<Self, ActuateError> {
        let (connection, handle, _) = rtnetlink::new_connection()?;
        Ok(PolicyRouteActuator {
            handle,
            connection: tokio::spawn(connection),
        })
    }

    async fn dump_rules(&self) -> Result<Vec<RuleMessage>, ActuateError> {
        let mut out = Vec::new();
        for v in [IpVersion::V4, IpVersion::V6] {
            let mut s = self.handle.rule().get(v).execute();
            while let Some(m) = s.try_next().await.map_err(|source| ActuateError::Netlink {
                op: "dump",
                object: "rules".into(),
                source,
            })? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Every route of every table, both families (a non-strict dump ignores the filter).
    async fn dump_routes(&self) -> Result<Vec<RouteMessage>, ActuateError> {
        let mut out = Vec::new();
        let requests = [
            rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
            rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
        ];
        for req in requests {
            let mut s = self.handle.route().get(req).execute();
            while let Some(m) = s.try_next().await.map_err(|source| ActuateError::Netlink {
                op: "dump",
                object: "routes".into(),
                source,
            })? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Links, addresses, foreign routes and the tables foreign rules look up.
    pub async fn observe(&self) -> Result<KernelFacts, ActuateError> {
        let dump_err = |object: &str| {
            let object = object.to_string();
            move |source| ActuateError::Netlink {
                op: "dump",
                object,
                source,
            }
        };
        let mut links: BTreeMap<u32, LinkFacts> = BTreeMap::new();
        let mut s = self.handle.link().get().execute();
        while let Some(m) = s.try_next().await.map_err(dump_err("links"))? {
            let l = read_link(&m);
            links.insert(l.index, l);
        }
        let mut s = self.handle.address().get().execute();
        while let Some(m) = s.try_next().await.map_err(dump_err("addresses"))? {
            if let Some((index, net)) = read_address(&m) {
                if let Some(l) = links.get_mut(&index) {
                    l.addrs.push(net);
                }
            }
        }
        let kernel_routes = self
            .dump_routes()
            .await?
            .iter()
            .filter_map(read_route)
            .filter(|r| !r.ours)
            .map(|r| r.kernel)
            .collect();
        let foreign_rule_tables = self
            .dump_rules()
            .await?
            .iter()
            .map(read_rule)
            .filter(|r| !r.ours)
            .filter_map(|r| r.lookup_table)
            .collect();
        Ok(KernelFacts {
            links: links.into_values().collect(),
            kernel_routes,
            foreign_rule_tables,
        })
    }

    /// Lists our rules and routes, adds what the plan lacks, removes ours it no longer
    /// wants; changes nothing when the kernel already matches.
    pub async fn apply(&mut self, plan: &PolicyRoutePlan) -> Result<ApplyReport, ActuateError> {
        let mut report = ApplyReport::default();
        let want_rules: BTreeSet<&PlannedRule> = plan.rules.iter().collect();
        let want_routes: BTreeMap<_, &PlannedRoute> =
            plan.routes.iter().map(|r| ((r.table, r.dst), r)).collect();

        // Our routes, by (table, destination); the planner never plans two for one key.
        let mut have_routes: BTreeMap<_, Vec<(Option<PlannedRoute>, RouteMessage)>> =
            BTreeMap::new();
        for m in self.dump_routes().await? {
            if let Some(r) = read_route(&m).filter(|r| r.ours) {
                have_routes
                    .entry((r.kernel.table, r.kernel.dst))
                    .or_default()
                    .push((r.planned, m));
            }
        }
        let mut have_rules: Vec<(Option<PlannedRule>, RuleMessage)> = Vec::new();
        for m in self.dump_rules().await? {
            let r = read_rule(&m);
            if r.ours {
                have_rules.push((r.planned, m));
            }
        }

        // 1. Routes: replace what is missing or different.
        let mut refused_tables = BTreeSet::new();
        for (key, want) in &want_routes {
            let same = have_routes
                .get(key)
                .is_some_and(|v| v.len() == 1 && v[0].0.as_ref() == Some(*want));
            if same {
                continue;
            }
            let result = self
                .handle
                .route()
                .add(route_message(want))
                .replace()
                .execute()
                .await;
            match result {
                Ok(()) => {
                    info!(route = %show_route(want), "policy route installed");
                    report.routes_replaced += 1;
                }
                Err(source) => {
                    refused_tables.insert(want.table);
                    report.refused_in(
                        want.table,
                        ActuateError::Netlink {
                            op: "replace route",
                            object: show_route(want),
                            source,
                        },
                    );
                }
            }
        }
        // 2. Rules: add what is missing.
        let have_rule_set: BTreeSet<&PlannedRule> =
            have_rules.iter().filter_map(|(p, _)| p.as_ref()).collect();
        for want in &want_rules {
            if have_rule_set.contains(want) || refused_tables.contains(&want.table) {
                continue;
            }
            let mut req = self.handle.rule().add();
            *req.message_mut() = rule_message(want);
            match req.execute().await {
                Ok(()) => {
                    info!(rule = %show_rule(want), "policy rule installed");
                    report.rules_added += 1;
                }
                Err(e) if errno(&e) == Some(EEXIST) => {
                    debug!(rule = %show_rule(want), "rule exists")
                }
                Err(source) => report.refused_in(
                    want.table,
                    ActuateError::Netlink {
                        op: "add rule",
                        object: show_rule(want),
                        source,
                    },
                ),
            }
        }
        // 3. Rules: remove ours that are not wanted (and duplicates of wanted ones).
        let mut kept: BTreeSet<&PlannedRule> = BTreeSet::new();
        for (planned, m) in &have_rules {
            let keep = planned
                .as_ref()
                .is_some_and(|p| want_rules.contains(p) && kept.insert(p));
            if keep {
                continue;
            }
            let object = planned.as_ref().map_or("(unknown shape)".into(), show_rule);
            match self.delete_rule(m.clone(), &object).await {
                Ok(()) => {
                    info!(rule = %object, "policy rule removed");
                    report.rules_removed += 1;
                }
                Err(e) => report.refused(e),
            }
        }
        // 4. Routes: remove ours whose key is not wanted, or that differ from the wanted one
        //    (left over next to it; e.g. IPv6 keeps several metrics under one key).
        for (key, list) in have_routes {
            for (planned, m) in list {
                let wanted = want_routes
                    .get(&key)
                    .is_some_and(|w| planned.as_ref() == Some(*w));
                if wanted {
                    continue;
                }
                let object = planned
                    .as_ref()
                    .map_or(format!("{} table {}", key.1, key.0), show_route);
                match self.delete_route(m, &object).await {
                    Ok(()) => {
                        info!(route = %object, "policy route removed");
                        report.routes_removed += 1;
                    }
                    Err(e) => report.refused(e),
                }
            }
        }
        Ok(report)
    }

    async fn delete_rule(&self, m: RuleMessage, object: &str) -> Result<(), ActuateError> {
        match self.handle.rule().del(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ENOENT | ESRCH)) => Ok(()),
            Err(source) => Err(ActuateError::Netlink {
                op: "delete rule",
                object: object.to_string(),
                source,
            }),
        }
    }

    async fn delete_route(&self, m: RouteMessage, object: &str) -> Result<(), ActuateError> {
        match self.handle.route().del(m).execute().await {
            Ok(()) => Ok(()),
            Err(e) if matches!(errno(&e), Some(ENOENT | ESRCH)) => Ok(()),
            Err(source) => Err(ActuateError::Netlink {
                op: "delete route",
                object: object.to_string(),
                source,
            }),
        }
    }

    /// Removes every rule and route edgelb installed (protocol 235), and nothing else.
    pub async fn cleanup(&mut self) -> Result<ApplyReport, ActuateError> {
        self.apply(&PolicyRoutePlan::default()).await
    }
}

/// "Re-plan needed" notifications from the kernel; the socket closes on drop.
pub struct ChangeWatch {
    rx: mpsc::Receiver<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl ChangeWatch {
    /// Waits for the next change. Several changes in a row collapse into one wake-up.
    /// `None` when the netlink socket is gone.
    pub async fn changed(&mut self) -> Option<()> {
        self.rx.recv().await
    }
}

impl Drop for ChangeWatch {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Whether a notification can change the plan: any link or address change; a route or rule
/// change that is not ours (our own changes would otherwise wake us in a loop).
fn relevant(msg: &RouteNetlinkMessage) -> bool {
    match msg {
        RouteNetlinkMessage::NewLink(_)
        | RouteNetlinkMessage::DelLink(_)
        | RouteNetlinkMessage::NewAddress(_)
        | RouteNetlinkMessage::DelAddress(_) => true,
        RouteNetlinkMessage::NewRoute(m) | RouteNetlinkMessage::DelRoute(m) => {
            read_route(m).is_some_and(|r| !r.ours)
        }
        RouteNetlinkMessage::NewRule(m) | RouteNetlinkMessage::DelRule(m) => !read_rule(m).ours,
        _ => false,
    }
}

/// Subscribes to link, address, route and rule notifications of the calling thread's network
/// namespace. Subscribe before the first `observe` so no change falls in between.
pub fn watch_changes() -> Result<ChangeWatch, ActuateError> {
    let groups = [
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
        MulticastGroup::Ipv4Route,
        MulticastGroup::Ipv6Route,
        MulticastGroup::Ipv4Rule,
        MulticastGroup::Ipv6Rule,
    ];
    let (connection, _handle, mut messages) = rtnetlink::new_multicast_connection(&groups)?;
    let (tx, rx) = mpsc::channel(1);
    let conn_task = tokio::spawn(connection);
    let pump = tokio::spawn(async move {
        use futures::StreamExt;
        while let Some((msg, _)) = messages.next().await {
            if let NetlinkPayload::InnerMessage(inner) = &msg.payload {
                if relevant(inner) {
                    // A full channel already holds a pending wake-up: nothing is lost.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(()) {
                        return;
                    }
                }
            }
        }
    });
    Ok(ChangeWatch {
        rx,
        tasks: vec![conn_task, pump],
    })
}

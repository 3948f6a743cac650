//! The policy-route task: keeps this node's rules and routes converged while the speaker runs.
//!
//! ```text
//!  daemon ──watch(PolicyRouteConfig)──► run ──► observe ─► plan (pure) ─► apply
//!                                        ▲                      │
//!        kernel link/addr/route/rule ────┘                      └──watch(conditions)──► status
//!        events (watch_changes), resync timer
//! ```
//!
//! Level-triggered: every wake-up (new objects, a netlink event, the resync timer) observes
//! the kernel afresh, plans from scratch and applies the difference. A failed apply is
//! logged and retried after `retry`; the loop ends when the config sender is dropped. It
//! never removes anything on the way out: a restarting speaker must not cut traffic, and
//! removal is what deleting the objects or `edgelb-speaker cleanup` is for.
use super::policy_route::{watch_changes, ActuateError, ApplyReport, PolicyRouteActuator};
use crate::plan::policy_route::{
    plan, NamedPolicyRoute, NodeCondition, NodeFacts, PlannedRoute, PlannedRule,
};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// What the daemon hands the task: every `PolicyRoute` object and this node's facts.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyRouteConfig {
    /// Every `PolicyRoute` object.
    pub routes: Vec<NamedPolicyRoute>,
    /// This node (name, labels, pool, annotations, InternalIPs).
    pub node: NodeFacts,
}

/// What the task publishes after every successful pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskReport {
    /// Successful passes so far (for metrics, and to see the task is alive and not looping).
    pub passes: u64,
    /// What the last pass changed.
    pub last: ApplyReport,
    /// One condition per object that selects this node (for the status writer).
    pub conditions: Vec<NodeCondition>,
    /// The rules the last pass planned (installed unless their table is in
    /// `last.refused_tables`); each belongs to the installed condition of its table.
    pub rules: Vec<PlannedRule>,
    /// The routes the last pass planned, likewise.
    pub routes: Vec<PlannedRoute>,
    /// Interface names by index, as the last pass saw them (to name the routes' devices).
    pub links: BTreeMap<u32, String>,
}

/// The outcome of one successful pass.
struct Pass {
    report: ApplyReport,
    conditions: Vec<NodeCondition>,
    rules: Vec<PlannedRule>,
    routes: Vec<PlannedRoute>,
    links: BTreeMap<u32, String>,
}

/// Timing of the task.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// Re-converge at least this often, events or not (someone may have deleted our route
    /// with a tool whose notification we do not act on).
    pub resync: Duration,
    /// Wait this long before retrying a failed pass.
    pub retry: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            resync: Duration::from_secs(60),
            retry: Duration::from_secs(1),
        }
    }
}

/// Runs until `config`'s sender is dropped; publishes a [`TaskReport`] after every
/// successful pass. Must run on the thread (network namespace) whose routes it manages.
/// Fails only when the netlink sockets cannot be opened.
pub async fn run(
    mut config: watch::Receiver<PolicyRouteConfig>,
    report: watch::Sender<TaskReport>,
    timing: Timing,
) -> Result<(), ActuateError> {
    // Subscribe before the first observation so no change falls in between.
    let mut changes = watch_changes()?;
    let mut actuator = PolicyRouteActuator::new()?;
    loop {
        let cfg = config.borrow_and_update().clone();
        let wait = match pass(&mut actuator, cfg).await {
            Ok(done) => {
                // A refused change is retried soon, like a failed pass.
                let wait = if done.report.failed.is_empty() {
                    timing.resync
                } else {
                    timing.retry
                };
                report.send_modify(|r| {
                    r.passes += 1;
                    r.last = done.report;
                    r.conditions = done.conditions;
                    r.rules = done.rules;
                    r.routes = done.routes;
                    r.links = done.links;
                });
                wait
            }
            Err(error) => {
                warn!(%error, "policy routes not converged; retrying");
                timing.retry
            }
        };
        tokio::select! {
            event = changes.changed() => {
                if event.is_none() {
                    // The event socket died: fall back to the timer, with a fresh socket.
                    changes = watch_changes()?;
                }
            }
            update = config.changed() => {
                if update.is_err() {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// One observe, plan, apply pass; returns what changed, the conditions and the plan.
async fn pass(
    actuator: &mut PolicyRouteActuator,
    cfg: PolicyRouteConfig,
) -> Result<Pass, ActuateError> {
    let facts = actuator.observe().await?;
    let links = facts
        .links
        .iter()
        .map(|l| (l.index, l.name.clone()))
        .collect();
    let plan = plan(&facts.into_input(cfg.routes, cfg.node));
    let report = actuator.apply(&plan).await?;
    if report.changed() {
        info!(
            rules_added = report.rules_added,
            rules_removed = report.rules_removed,
            routes_replaced = report.routes_replaced,
            routes_removed = report.routes_removed,
            "policy routes converged"
        );
    }
    for c in plan.conditions.iter().filter(|c| !c.installed()) {
        warn!(policy_route = %c.policy_route, reason = c.reason.as_str(), "{}", c.message);
    }
    Ok(Pass {
        report,
        conditions: plan.conditions,
        rules: plan.rules,
        routes: plan.routes,
        links,
    })
}

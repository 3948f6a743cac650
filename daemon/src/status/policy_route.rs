//! Each speaker's own entry in a `PolicyRoute`'s status: the condition `Installed.<node>`
//! saying whether this node's rules and routes for the object are in place, and if not why.
//!
//! Every speaker writes (leader or not), but only its own node's condition, by server-side
//! apply on the status subresource with its own field manager ([`field_manager`]). The CRD
//! makes `status.conditions` a map-list keyed by `type` (`x-kubernetes-list-type: map`), so
//! each manager owns exactly its entry and speakers never overwrite one another. When an
//! object stops selecting the node, the speaker applies an empty list: the API server then
//! drops the entry this manager owned, and no other.
//!
//! The decision is pure ([`updates`]); [`PolicyRouteStatusWriter`] applies only what differs
//! from the object as the snapshot carries it, and not again before the watch delivers it.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::Client;
use serde_json::{json, Value};

use super::conditions::same;
use super::writer::Written;
use crate::actuate::policy_route_task::TaskReport;
use crate::api::policy_route::{node_condition_type, PolicyRoute};
use crate::snapshot::Snapshot;

/// The field manager of `node`'s speaker: one per node, so entries never collide.
pub fn field_manager(node: &str) -> String {
    format!("edgelb-speaker-{node}")
}

/// This node's condition for one `PolicyRoute`: `Some` to apply, `None` to drop ours.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConditionUpdate {
    /// The object (cluster-scoped).
    pub name: String,
    /// The condition, or `None` when the object no longer selects this node.
    pub condition: Option<Condition>,
}

impl NodeConditionUpdate {
    /// The server-side apply body: only this node's entry (or none, to release it).
    pub fn apply_body(&self) -> Value {
        let conditions: Vec<&Condition> = self.condition.iter().collect();
        json!({
            "apiVersion": crate::api::API_VERSION,
            "kind": "PolicyRoute",
            "status": { "conditions": conditions },
        })
    }
}

/// The condition this node wants on `pr`, from the task's last report: the planner's
/// outcome, turned `False`/`KernelRefused` when the kernel refused the object's table.
/// `lastTransitionTime` is kept while the status does not change.
fn wanted(
    pr: &PolicyRoute,
    name: &str,
    report: &TaskReport,
    existing: Option<&Condition>,
    now: &Time,
) -> Option<Condition> {
    let c = report.conditions.iter().find(|c| c.policy_route == name)?;
    let mut cond = c.to_condition(pr.metadata.generation, now.clone());
    let refused = c
        .table
        .filter(|_| c.installed())
        .and_then(|t| report.last.refused_tables.get(&t));
    if let Some(error) = refused {
        cond.status = "False".into();
        cond.reason = "KernelRefused".into();
        cond.message = format!("node {}: the kernel refused: {error}", c.node);
    }
    if let Some(e) = existing.filter(|e| e.status == cond.status) {
        cond.last_transition_time = e.last_transition_time.clone();
    }
    Some(cond)
}

/// Every `PolicyRoute` whose `Installed.<node>` condition differs from what the task
/// reports (added, changed, or to be dropped because the object no longer selects the
/// node). Nothing before the task's first pass: an empty report means "not known yet",
/// not "select nothing".
pub fn updates(
    snap: &Snapshot,
    node: &str,
    report: &TaskReport,
    now: &Time,
) -> Vec<NodeConditionUpdate> {
    if report.passes == 0 {
        return Vec::new();
    }
    let ty = node_condition_type(node);
    let mut out = Vec::new();
    for (key, pr) in &snap.policy_routes {
        let existing = pr
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == ty));
        let want = wanted(pr, &key.name, report, existing, now);
        let unchanged = match (&want, existing) {
            (Some(w), Some(e)) => same(w, e),
            (None, None) => true,
            _ => false,
        };
        if !unchanged {
            out.push(NodeConditionUpdate {
                name: key.name.to_string(),
                condition: want,
            });
        }
    }
    out
}

/// Applies this node's `PolicyRoute` conditions.
pub struct PolicyRouteStatusWriter {
    api: Api<PolicyRoute>,
    node: String,
    manager: String,
    timeout: Duration,
    /// What we last applied per object, so a write is not repeated before the watch
    /// delivers the object with it.
    applied: HashMap<String, Option<Condition>>,
}

impl PolicyRouteStatusWriter {
    /// A writer for `node`'s speaker; each write bounded by `timeout`.
    pub fn new(client: Client, node: &str, timeout: Duration) -> PolicyRouteStatusWriter {
        PolicyRouteStatusWriter {
            api: Api::all(client),
            node: node.to_string(),
            manager: field_manager(node),
            timeout,
            applied: HashMap::new(),
        }
    }

    /// Applies the conditions that differ; a failed write is counted and retried on the
    /// next call (the desired state is recomputed, never queued).
    pub async fn write(&mut self, snap: &Snapshot, report: &TaskReport, now: Time) -> Written {
        let mut out = Written::default();
        let todo = updates(snap, &self.node, report, &now);
        self.applied
            .retain(|name, _| todo.iter().any(|u| &u.name == name));
        for up in todo {
            let repeat = match (self.applied.get(&up.name), &up.condition) {
                (Some(Some(a)), Some(w)) => same(a, w),
                (Some(None), None) => true,
                _ => false,
            };
            if repeat {
                continue;
            }
            let params = PatchParams::apply(&self.manager).force();
            let patch = Patch::Apply(up.apply_body());
            let call = self.api.patch_status(&up.name, &params, &patch);
            match tokio::time::timeout(self.timeout, call).await {
                Ok(Ok(_)) => {
                    tracing::info!(policy_route = %up.name, node = %self.node, reason = up.condition.as_ref().map_or("removed", |c| c.reason.as_str()), "policy-route condition written");
                    out.conditions += 1;
                    self.applied.insert(up.name, up.condition);
                }
                Ok(Err(error)) => {
                    tracing::warn!(policy_route = %up.name, %error, "policy-route condition not written; retrying");
                    out.failed += 1;
                }
                Err(_) => {
                    tracing::warn!(policy_route = %up.name, timeout = ?self.timeout, "policy-route condition write timed out; retrying");
                    out.failed += 1;
                }
            }
        }
        out
    }
}

#[cfg(test)]
#[path = "policy_route_tests.rs"]
mod tests;

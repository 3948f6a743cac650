//! Keeps this node's ENS policy routes converged while the speaker runs (issue 6).
//!
//! The snapshot is turned into the task's input by a pure function; the task itself
//! (`actuate::policy_route_task`) observes the kernel, plans and applies, and re-converges on
//! netlink events. It touches only rules and routes marked with edgelb's protocol number, so
//! running it on a node without `PolicyRoute` objects removes only what edgelb left behind.
use crate::actuate::policy_route_task::{run, PolicyRouteConfig, TaskReport, Timing};
use crate::plan::bgp::NodeFacts as BgpNodeFacts;
use crate::plan::policy_route::{NamedPolicyRoute, NodeFacts};
use crate::snapshot::Snapshot;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the policy-route task needs from a snapshot: every `PolicyRoute` and this node.
pub fn config_from_snapshot(snap: &Snapshot, node: &str) -> PolicyRouteConfig {
    let routes = snap
        .policy_routes
        .iter()
        .map(|(key, pr)| NamedPolicyRoute {
            name: key.name.to_string(),
            spec: pr.spec.clone(),
        })
        .collect();
    let view = snap.nodes.get(node);
    let facts = BgpNodeFacts::from_snapshot(snap, node, &[]);
    PolicyRouteConfig {
        routes,
        node: NodeFacts {
            name: node.to_string(),
            labels: facts.labels,
            pool: view.and_then(|v| v.node_pool.clone()),
            annotations: view
                .and_then(|v| v.node.metadata.annotations.clone())
                .unwrap_or_default(),
            internal_ips: facts.addresses,
        },
    }
}

/// The running policy-route task; stopped (leaving the kernel as it is) on drop.
pub struct PolicyRoutes {
    config: watch::Sender<PolicyRouteConfig>,
    report: watch::Receiver<TaskReport>,
    task: JoinHandle<()>,
}

impl PolicyRoutes {
    /// Starts the task in this process's network namespace.
    pub fn start() -> PolicyRoutes {
        let (config, config_rx) = watch::channel(PolicyRouteConfig::default());
        let (report_tx, report) = watch::channel(TaskReport::default());
        let task = tokio::spawn(async move {
            if let Err(error) = run(config_rx, report_tx, Timing::default()).await {
                tracing::error!(%error, "policy routes: cannot open netlink; not managed");
            }
        });
        PolicyRoutes {
            config,
            report,
            task,
        }
    }

    /// Hands the task the objects of a new snapshot; wakes it only when they changed.
    pub fn update(&self, snap: &Snapshot, node: &str) {
        let next = config_from_snapshot(snap, node);
        self.config.send_if_modified(|cur| {
            if *cur == next {
                return false;
            }
            *cur = next;
            true
        });
    }

    /// The task's last report (passes, last changes, one condition per selecting object).
    pub fn report(&self) -> TaskReport {
        self.report.borrow().clone()
    }

    /// Waits for the task's next report; never returns once the task has ended (so a
    /// `select!` over it does not spin).
    pub async fn changed(&mut self) {
        if self.report.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for PolicyRoutes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::policy_route::PolicyRoute;
    use crate::snapshot::{Object, Selection, Store};
    use k8s_openapi::api::core::v1::Node;

    fn yaml<T: serde::de::DeserializeOwned>(s: &str) -> T {
        serde_norway::from_str(s).expect("test YAML")
    }

    #[test]
    fn config_carries_every_policy_route_and_this_nodes_facts() {
        let mut store = Store::default();
        let node: Node = yaml(
            "metadata: {name: edge-1, labels: {apps.openyurt.io/nodepool: hz}, annotations: {edgelb.io/policy-route-table: '7'}}\n\
             status: {addresses: [{type: InternalIP, address: 192.0.2.3}, {type: Hostname, address: edge-1}]}",
        );
        let pr: PolicyRoute = yaml(
            "apiVersion: edgelb.io/v1alpha1\nkind: PolicyRoute\nmetadata: {name: ens}\nspec: {table: 4}",
        );
        store.apply(Object::Node(node), "edgelb-system");
        store.apply(Object::PolicyRoute(pr), "edgelb-system");
        let snap = store.snapshot(&Selection::default());

        let cfg = config_from_snapshot(&snap, "edge-1");
        assert_eq!(cfg.routes.len(), 1);
        assert_eq!(cfg.routes[0].name, "ens");
        assert_eq!(cfg.routes[0].spec.table, 4);
        assert_eq!(cfg.node.name, "edge-1");
        assert_eq!(cfg.node.pool.as_deref(), Some("hz"));
        assert_eq!(
            cfg.node
                .annotations
                .get("edgelb.io/policy-route-table")
                .map(String::as_str),
            Some("7")
        );
        assert_eq!(
            cfg.node.internal_ips,
            vec!["192.0.2.3".parse::<std::net::IpAddr>().unwrap()]
        );

        // Another node sees the same objects but its own (absent) facts.
        let other = config_from_snapshot(&snap, "edge-2");
        assert_eq!(other.routes.len(), 1);
        assert!(other.node.internal_ips.is_empty());
        assert_eq!(other.node.pool, None);
    }
}

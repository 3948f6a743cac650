//! L2: plans this node's owned IPs ([`crate::plan::l2`], incrementally) and converges the
//! [`L2Actuator`] to the plan. One concern: from (snapshot, allocation, members, guard) to
//! the IPs answered on each interface.

use crate::actuate::l2::L2Actuator;
use crate::ipam::Assignments;
use crate::plan::l2::{L2Node, L2Plan, Members};
use crate::plan::l2_incremental::L2Planner;
use crate::snapshot::Snapshot;

/// The L2 planner and actuator.
pub struct L2Announcer {
    actuator: L2Actuator,
    plan: L2Plan,
    planner: L2Planner,
}

impl L2Announcer {
    /// An announcer owning nothing yet.
    pub fn new() -> L2Announcer {
        L2Announcer {
            actuator: L2Actuator::new(edgelb_l2::Config::default()),
            plan: L2Plan::default(),
            planner: L2Planner::default(),
        }
    }

    /// Re-plans and applies. With `new_inputs` false only the members or interfaces
    /// changed, and the planner re-elects only for the nodes that changed.
    pub async fn apply(
        &mut self,
        snap: &Snapshot,
        a: &Assignments,
        me: &L2Node,
        members: &Members,
        may_own: bool,
        new_inputs: bool,
    ) {
        let replanned = if new_inputs {
            None
        } else {
            self.planner.replan_members(me, members, may_own)
        };
        let plan = replanned.unwrap_or_else(|| self.planner.plan(snap, a, me, members, may_own));
        for ip in &plan.unplaced {
            tracing::warn!(%ip, "won the election but no interface can announce it");
        }
        if let Some(errors) = self.actuator.apply(&plan).await {
            let owned: Vec<String> = plan
                .owned
                .iter()
                .flat_map(|(i, ips)| ips.iter().map(move |ip| format!("{ip}@{i}")))
                .collect();
            tracing::info!(owned = ?owned, may_own, "l2 applied");
            for e in errors {
                tracing::warn!(error = %e, "l2 apply");
            }
        }
        self.plan = plan;
    }

    /// The actuator (owned IPs and stats).
    pub fn actuator(&self) -> &L2Actuator {
        &self.actuator
    }

    /// The last plan.
    pub fn plan(&self) -> &L2Plan {
        &self.plan
    }

    /// The actuator, for the graceful stop.
    pub fn into_actuator(self) -> L2Actuator {
        self.actuator
    }
}

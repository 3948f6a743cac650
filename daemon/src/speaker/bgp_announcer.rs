//! BGP: plans this node's sessions and routes ([`crate::plan::bgp`]) and converges the
//! [`BgpActuator`] to the plan. One concern: from (snapshot, allocation, node facts) to the
//! sessions and route tables.

use edgelb_bgp::{Speaker, SpeakerConfig, SpeakerError};
use std::net::{Ipv4Addr, SocketAddr};

use crate::actuate::bgp::BgpActuator;
use crate::ipam::Assignments;
use crate::plan::bgp::{self as bgp_plan, BgpDefaults, NodeFacts};
use crate::snapshot::Snapshot;

/// The BGP planner's settings and the actuator.
pub struct BgpAnnouncer {
    actuator: BgpActuator,
    defaults: BgpDefaults,
}

impl BgpAnnouncer {
    /// Starts the BGP speaker (listening on `listen`, if given).
    pub fn start(
        listen: Option<SocketAddr>,
        defaults: BgpDefaults,
    ) -> Result<BgpAnnouncer, SpeakerError> {
        // Every peer carries its own router id from the plan; this one is never sent.
        let speaker = Speaker::new(SpeakerConfig {
            router_id: Ipv4Addr::UNSPECIFIED,
            listen,
        })?;
        Ok(BgpAnnouncer {
            actuator: BgpActuator::new(speaker),
            defaults,
        })
    }

    /// Plans and applies; problems and errors are logged.
    pub fn apply(&mut self, snap: &Snapshot, a: &Assignments, me: &NodeFacts) {
        let plan = bgp_plan::plan(snap, a, me, &self.defaults);
        for p in &plan.problems {
            tracing::warn!(problem = %p, "bgp plan");
        }
        let (done, errors) = self.actuator.apply(&plan);
        for e in errors {
            tracing::warn!(error = %e, "bgp apply");
        }
        if done != Default::default() {
            let routes: usize = plan.peers.values().map(|p| p.routes.len()).sum();
            tracing::info!(
                peers = plan.peers.len(),
                routes,
                peers_set = done.peers_set,
                peers_removed = done.peers_removed,
                tables_set = done.tables_set,
                "bgp applied"
            );
        }
    }

    /// The actuator (peer status and tables).
    pub fn actuator(&self) -> &BgpActuator {
        &self.actuator
    }

    /// The actuator, for the graceful stop.
    pub fn into_actuator(self) -> BgpActuator {
        self.actuator
    }
}

//! BGP: plans this node's sessions and routes ([`crate::plan::bgp`]) and converges the
//! [`BgpActuator`] to the plan. One concern: from (snapshot, allocation, node facts) to the
//! sessions and route tables.

use edgelb_bgp::{Speaker, SpeakerConfig, SpeakerError};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crate::actuate::bgp::BgpActuator;
use crate::ipam::Assignments;
use crate::plan::bgp::{self as bgp_plan, BgpDefaults, NodeFacts};
use crate::snapshot::Snapshot;

/// What a stop of the speaker (SIGTERM, SIGINT) does to BGP peers with graceful restart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BgpStop {
    /// A planned restart (RFC 4724 §4.1): the sessions close without a NOTIFICATION, the
    /// routers keep our routes for the restart time, the next start sets the R bit.
    #[default]
    Restart,
    /// Withdraw: Cease / Administrative Shutdown (a Hard Reset with RFC 8538 peers).
    Withdraw,
}

/// The BGP planner's settings and the actuator.
pub struct BgpAnnouncer {
    actuator: BgpActuator,
    defaults: BgpDefaults,
    stop: BgpStop,
    restart_marker: Option<PathBuf>,
}

impl BgpAnnouncer {
    /// Starts the BGP speaker (listening on `listen`, if given). A fresh restart marker
    /// ([`super::restart_marker`]) gives graceful restart peers the R bit.
    pub fn start(
        listen: Option<SocketAddr>,
        mut defaults: BgpDefaults,
        stop: BgpStop,
        restart_marker: Option<PathBuf>,
    ) -> Result<BgpAnnouncer, SpeakerError> {
        if let Some(path) = &restart_marker {
            defaults.restarting = super::restart_marker::read(path, SystemTime::now());
            if defaults.restarting {
                tracing::info!(marker = %path.display(), "back from a planned restart: graceful restart peers get the R bit");
            }
        }
        // Every peer carries its own router id from the plan; this one is never sent.
        let speaker = Speaker::new(SpeakerConfig {
            router_id: Ipv4Addr::UNSPECIFIED,
            listen,
        })?;
        Ok(BgpAnnouncer {
            actuator: BgpActuator::new(speaker),
            defaults,
            stop,
            restart_marker,
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

    /// The graceful stop of BGP: with [`BgpStop::Restart`] and peers with graceful restart,
    /// a planned restart (the marker written, no NOTIFICATION to those peers); otherwise
    /// Cease / Administrative Shutdown (RFC 8203) to every peer. Bounded by
    /// [`edgelb_bgp::speaker::SHUTDOWN_TIMEOUT`].
    pub async fn stop(self) {
        let restart_time = self.actuator.graceful_restart_time();
        match (self.stop, restart_time) {
            (BgpStop::Restart, Some(t)) => {
                if let Some(path) = &self.restart_marker {
                    let window = Duration::from_secs(u64::from(t));
                    if let Err(e) = super::restart_marker::write(path, SystemTime::now(), window) {
                        tracing::warn!(marker = %path.display(), error = %e, "cannot write the graceful restart marker");
                    }
                }
                tracing::info!(
                    restart_time_s = t,
                    "planned restart: graceful restart peers keep our routes"
                );
                self.actuator.shutdown_for_restart().await;
            }
            _ => self.actuator.shutdown("edgelb-speaker stopping").await,
        }
    }
}

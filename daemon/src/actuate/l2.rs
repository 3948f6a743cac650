//! Drives an [`edgelb_l2::Announcer`] to an [`L2Plan`]: the whole owned set per interface,
//! handed over only when it changed (the announcer announces new IPs at once and stops
//! answering for removed ones before `set_owned` returns).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use edgelb_l2::{Announcer, Config, InterfaceError, InterfaceStats};

use crate::plan::l2::L2Plan;

/// The L2 actuator.
pub struct L2Actuator {
    announcer: Announcer,
    applied: Option<BTreeMap<String, BTreeSet<IpAddr>>>,
}

impl L2Actuator {
    /// An actuator that owns nothing yet.
    pub fn new(config: Config) -> L2Actuator {
        L2Actuator {
            announcer: Announcer::new(config),
            applied: None,
        }
    }

    /// Converges to `desired`; returns `None` when nothing changed, else the problems.
    pub async fn apply(&mut self, desired: &L2Plan) -> Option<Vec<InterfaceError>> {
        if self.applied.as_ref() == Some(&desired.owned) {
            return None;
        }
        let errors = self.announcer.set_owned(desired.owned.clone()).await;
        self.applied = Some(desired.owned.clone());
        Some(errors)
    }

    /// What is owned now, per interface.
    pub fn owned(&self) -> BTreeMap<String, BTreeSet<IpAddr>> {
        self.applied.clone().unwrap_or_default()
    }

    /// Per-interface statistics (for the local API and metrics).
    pub fn stats(&self) -> Vec<InterfaceStats> {
        self.announcer.stats()
    }

    /// Keeps answering but announces nothing more (planned handoff, see
    /// [`Announcer::go_quiet`]).
    pub async fn go_quiet(&mut self) -> Vec<InterfaceError> {
        self.announcer.go_quiet().await
    }

    /// Stops answering everywhere.
    pub async fn shutdown(self) {
        self.announcer.shutdown().await
    }
}

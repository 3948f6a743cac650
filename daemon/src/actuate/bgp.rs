//! Drives an [`edgelb_bgp::Speaker`] to a [`BgpPlan`]: removes peers that are gone, sets a
//! peer only when its configuration differs from what was applied, hands each peer its whole
//! route table (the speaker sends only the difference).
//!
//! A change that does not touch a peer's ASN, address or auth (e.g. only routes or the
//! description) never resets its session: [`edgelb_bgp::PeerConfig::needs_reset`] decides
//! inside the speaker, and identical configurations are not even passed on.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use edgelb_bgp::{PeerConfig, PeerStatus, RouteTable, Speaker, SpeakerError};

use crate::plan::bgp::BgpPlan;

/// What one `apply` did, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Peers added or whose configuration changed.
    pub peers_set: usize,
    /// Peers removed.
    pub peers_removed: usize,
    /// Peers whose route table changed.
    pub tables_set: usize,
}

/// The BGP actuator: owns the speaker and remembers what it handed over.
pub struct BgpActuator {
    speaker: Speaker,
    configs: BTreeMap<IpAddr, PeerConfig>,
    tables: BTreeMap<IpAddr, Arc<RouteTable>>,
}

impl BgpActuator {
    /// Wraps a started speaker (with no peers yet).
    pub fn new(speaker: Speaker) -> BgpActuator {
        BgpActuator {
            speaker,
            configs: BTreeMap::new(),
            tables: BTreeMap::new(),
        }
    }

    /// Converges the speaker to `desired`. Idempotent: a second call with the same plan
    /// changes nothing. Errors name the peer; other peers are still applied.
    pub fn apply(&mut self, desired: &BgpPlan) -> (Applied, Vec<SpeakerError>) {
        let mut done = Applied::default();
        let mut errors = Vec::new();
        let gone: Vec<IpAddr> = self
            .configs
            .keys()
            .filter(|a| !desired.peers.contains_key(a))
            .copied()
            .collect();
        for addr in gone {
            self.configs.remove(&addr);
            self.tables.remove(&addr);
            match self.speaker.remove_peer(&addr) {
                Ok(()) => done.peers_removed += 1,
                Err(e) => errors.push(e),
            }
        }
        for (addr, p) in &desired.peers {
            if self.configs.get(addr) != Some(&p.config) {
                match self.speaker.set_peer(p.config.clone()) {
                    Ok(()) => {
                        done.peers_set += 1;
                        self.configs.insert(*addr, p.config.clone());
                    }
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                }
            }
            let same = self
                .tables
                .get(addr)
                .is_some_and(|t| Arc::ptr_eq(t, &p.routes) || **t == *p.routes);
            if !same {
                match self.speaker.set_routes_shared(addr, p.routes.clone()) {
                    Ok(()) => {
                        done.tables_set += 1;
                        self.tables.insert(*addr, p.routes.clone());
                    }
                    Err(e) => errors.push(e),
                }
            }
        }
        (done, errors)
    }

    /// Every peer's status (for the local API and metrics).
    pub fn peers(&self) -> Vec<PeerStatus> {
        self.speaker.peers()
    }

    /// The route table handed to each peer (for the local API).
    pub fn tables(&self) -> &BTreeMap<IpAddr, Arc<RouteTable>> {
        &self.tables
    }

    /// The speaker, e.g. to subscribe to peer events.
    pub fn speaker(&self) -> &Speaker {
        &self.speaker
    }

    /// Cease / Administrative Shutdown (RFC 8203) to every peer; returns within
    /// [`edgelb_bgp::speaker::SHUTDOWN_TIMEOUT`].
    pub async fn shutdown(self, message: &str) {
        self.speaker.shutdown(message).await
    }

    /// A planned restart: no NOTIFICATION to peers with graceful restart, which keep our
    /// routes for the restart time; Cease to the others. Returns within
    /// [`edgelb_bgp::speaker::SHUTDOWN_TIMEOUT`].
    pub async fn shutdown_for_restart(self) {
        self.speaker.shutdown_for_restart().await
    }

    /// The longest restart time among the peers with graceful restart; `None` without any.
    pub fn graceful_restart_time(&self) -> Option<u16> {
        self.configs
            .values()
            .filter_map(|c| c.graceful_restart.map(|g| g.restart_time))
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::bgp::PeerPlan;
    use crate::snapshot::ObjectKey;
    use edgelb_bgp::{RouteAttrs, SpeakerConfig};

    fn plan_with(peers: &[(&str, u32, &[&str])]) -> BgpPlan {
        let mut out = BgpPlan::default();
        for (addr, asn, prefixes) in peers {
            let a: IpAddr = addr.parse().unwrap();
            let mut c = PeerConfig::new(a, 64512, *asn);
            // Port 9 on loopback: connects fail fast, the sessions never come up.
            c.port = 9;
            let table: RouteTable = prefixes
                .iter()
                .map(|p| (p.parse().unwrap(), Arc::new(RouteAttrs::default())))
                .collect();
            out.peers.insert(
                a,
                PeerPlan {
                    object: ObjectKey::new("ns", addr),
                    config: c,
                    routes: Arc::new(table),
                },
            );
        }
        out
    }

    fn actuator() -> BgpActuator {
        BgpActuator::new(
            Speaker::new(SpeakerConfig {
                router_id: "192.0.2.250".parse().unwrap(),
                listen: None,
            })
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn apply_sets_only_differences_and_is_idempotent() {
        let mut act = actuator();
        let p1 = plan_with(&[
            ("127.0.0.2", 64500, &["198.51.100.1/32"]),
            ("127.0.0.3", 64500, &[]),
        ]);
        let (done, errs) = act.apply(&p1);
        assert!(errs.is_empty());
        assert_eq!(
            done,
            Applied {
                peers_set: 2,
                peers_removed: 0,
                tables_set: 2
            }
        );
        assert_eq!(act.apply(&p1).0, Applied::default());
        // Only routes change: no peer is set again (so no session reset).
        let p2 = plan_with(&[
            ("127.0.0.2", 64500, &["198.51.100.2/32"]),
            ("127.0.0.3", 64500, &[]),
        ]);
        assert_eq!(
            act.apply(&p2).0,
            Applied {
                peers_set: 0,
                peers_removed: 0,
                tables_set: 1
            }
        );
        // One peer goes, one changes its ASN.
        let p3 = plan_with(&[("127.0.0.2", 64501, &["198.51.100.2/32"])]);
        assert_eq!(
            act.apply(&p3).0,
            Applied {
                peers_set: 1,
                peers_removed: 1,
                tables_set: 0
            }
        );
        assert_eq!(act.peers().len(), 1);
        act.shutdown("test").await;
    }
}

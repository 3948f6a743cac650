//! What the API has recorded, read fresh by a new leader before it writes: the IPs in the
//! status of every Service of ours. The leader's allocator starts from the record, and only
//! once its own snapshot (the watch) shows the same record, so a leader whose watch lags
//! behind the last leader's writes cannot hand out an IP that is already recorded.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams};
use kube::Client;

use crate::ipam::status_ips;
use crate::service::ServiceFacts;
use crate::snapshot::{is_ours, ObjectKey, Selection, Snapshot};

/// The recorded IPs per Service (ours, with at least one IP), each list sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Record {
    ips: BTreeMap<ObjectKey, Vec<IpAddr>>,
}

fn sorted(mut ips: Vec<IpAddr>) -> Vec<IpAddr> {
    ips.sort();
    ips.dedup();
    ips
}

impl Record {
    /// The record of `services` (those `sel` makes ours).
    pub fn of<'a>(services: impl IntoIterator<Item = &'a ServiceFacts>, sel: &Selection) -> Record {
        let ips = services
            .into_iter()
            .filter(|s| is_ours(s, sel))
            .filter_map(|s| {
                let ips = sorted(status_ips(s));
                (!ips.is_empty()).then(|| (s.key.clone(), ips))
            })
            .collect();
        Record { ips }
    }

    /// Services recorded.
    pub fn len(&self) -> usize {
        self.ips.len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty()
    }

    /// The first recorded Service that `snap` does not show with the recorded IPs, if any:
    /// while there is one, the snapshot is behind the record.
    pub fn behind(&self, snap: &Snapshot) -> Option<&ObjectKey> {
        self.ips
            .iter()
            .find(|(k, ips)| {
                snap.services
                    .get(*k)
                    .is_none_or(|svc| sorted(status_ips(svc)) != **ips)
            })
            .map(|(k, _)| k)
    }
}

/// A consistent read (from etcd, not a cache: no `resourceVersion`) of every Service, in
/// pages of 500, within `timeout`.
pub async fn read(client: &Client, sel: &Selection, timeout: Duration) -> Result<Record, String> {
    let api: Api<Service> = Api::all(client.clone());
    let all = async {
        let mut services = Vec::new();
        let mut lp = ListParams::default().limit(500);
        loop {
            let page = api.list(&lp).await.map_err(|e| e.to_string())?;
            let next = page.metadata.continue_.clone().filter(|c| !c.is_empty());
            // What the record reads of each, not the objects (a list of 10 000).
            services.extend(page.items.iter().map(ServiceFacts::unshared));
            match next {
                Some(c) => lp = lp.continue_token(&c),
                None => break,
            }
        }
        Ok::<_, String>(services)
    };
    match tokio::time::timeout(timeout, all).await {
        Ok(Ok(services)) => Ok(Record::of(&services, sel)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("timed out".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::service;
    use crate::snapshot::{Object, Store};
    use k8s_openapi::api::core::v1::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};

    fn with_ip(mut svc: Service, ip: &str) -> Service {
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some(ip.into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
        svc
    }

    #[test]
    fn a_snapshot_is_behind_until_it_shows_every_recorded_ip() {
        let sel = Selection::default();
        let fresh = [
            with_ip(service("default", "a", 80), "192.0.2.1"),
            service("default", "b", 80),
        ];
        let fresh: Vec<ServiceFacts> = fresh.iter().map(ServiceFacts::unshared).collect();
        let record = Record::of(&fresh, &sel);
        assert_eq!(record.len(), 1, "only Services with IPs");
        let mut store = Store::default();
        store.apply(
            Object::Service(service("default", "a", 80)),
            "edgelb-system",
        );
        assert_eq!(
            record.behind(&store.snapshot(&sel)),
            Some(&ObjectKey::new("default", "a"))
        );
        store.apply(
            Object::Service(with_ip(service("default", "a", 80), "192.0.2.1")),
            "edgelb-system",
        );
        assert_eq!(record.behind(&store.snapshot(&sel)), None);
    }
}

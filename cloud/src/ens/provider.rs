//! The ENS provider: observation by name (or the user's id) and each neutral action as its
//! OpenAPI calls.
//!
//! Fewer Describes: which instances carry which name comes from one paged
//! `DescribeLoadBalancers` and one paged `DescribeEnsEipAddresses` per ENS node (the
//! [`Listing`]), shared by every observation of that node until it is older than
//! [`EnsProvider::listing_max_age`] or one of our own writes made it uncertain; what an
//! instance looks like now is read by id (`DescribeLoadBalancerAttribute`, its listeners
//! only once it is Active, the named EIPs by `AllocationId`), so states in transition are
//! always fresh. A create that returned the new id patches the listing instead of
//! re-listing the node.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::api;
use super::client::{rng, EnsClient, EnsError};
use crate::model::{
    Action, LbStatus, ListenerStatus, Observed, ObservedEip, ObservedLb, ObservedListener,
    Ownership, Target,
};
use crate::provider::LoadBalancerProvider;
use rand::RngExt;

/// How long a node's listing serves observations when none of our writes changed it (a
/// duplicate made by a crashed writer of record is found at the latest this late).
pub const LISTING_MAX_AGE: Duration = Duration::from_secs(5);

/// The names of one ENS node's load balancers and EIPs, as last listed.
#[derive(Clone, Debug)]
struct Listing {
    lbs: Vec<ObservedLb>,
    /// (name, EIP)
    eips: Vec<(String, ObservedEip)>,
    at: Instant,
    /// The node's generation when the listing was asked for (an uncertain write since
    /// makes it stale).
    generation: u64,
}

/// One ENS node's listing: fetched by one caller at a time, the others wait and share it.
#[derive(Default)]
struct Slot {
    generation: Mutex<u64>,
    /// Shared with the observations reading it (a region holds every ELB and EIP: an
    /// observation looks up one name, it does not need a copy of all).
    listing: tokio::sync::Mutex<Option<Arc<Listing>>>,
}

/// ENS ELBs and EIPs of one account.
#[derive(Clone)]
pub struct EnsProvider {
    client: EnsClient,
    listing_max_age: Duration,
    slots: Arc<Mutex<BTreeMap<String, Arc<Slot>>>>,
}

impl std::fmt::Debug for EnsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnsProvider")
            .field("client", &self.client)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EnsProvider {
    pub fn new(client: EnsClient) -> EnsProvider {
        EnsProvider {
            client,
            listing_max_age: LISTING_MAX_AGE,
            slots: Arc::default(),
        }
    }

    pub fn client(&self) -> &EnsClient {
        &self.client
    }

    /// How long a node's listing is reused (default [`LISTING_MAX_AGE`]).
    pub fn listing_max_age(mut self, age: Duration) -> EnsProvider {
        self.listing_max_age = age;
        self
    }

    fn slot(&self, region: &str) -> Arc<Slot> {
        lock(&self.slots)
            .entry(region.to_string())
            .or_default()
            .clone()
    }

    /// The node's listing, reused while fresh and certain, else listed again (`fresh`:
    /// always listed again, for the sweep).
    async fn listing(&self, region: &str, fresh: bool) -> Result<Arc<Listing>, EnsError> {
        let slot = self.slot(region);
        let mut held = slot.listing.lock().await;
        let generation = *lock(&slot.generation);
        if let Some(l) = held.as_ref() {
            if !fresh && l.generation == generation && l.at.elapsed() < self.listing_max_age {
                return Ok(Arc::clone(l));
            }
        }
        let at = Instant::now();
        let lbs = api::load_balancers_in(&self.client, region).await?;
        let eips = api::eips(&self.client, region).await?;
        let l = Arc::new(Listing {
            lbs,
            eips,
            at,
            generation,
        });
        *held = Some(Arc::clone(&l));
        Ok(l)
    }

    /// One of our writes may have changed the node's names in a way we cannot tell
    /// (failed, retried or without a client token): the next observation lists again.
    fn uncertain(&self, region: &str) {
        *lock(&self.slot(region).generation) += 1;
    }

    /// Our write whose effect we know: the listing is patched (when it is current).
    async fn patch(&self, region: &str, f: impl FnOnce(&mut Listing)) {
        let slot = self.slot(region);
        let mut held = slot.listing.lock().await;
        if let Some(l) = held.as_mut() {
            // Copied only when an observation still holds the listing being patched.
            f(Arc::make_mut(l));
        }
    }

    /// Names of every load balancer and EIP in one ENS node (sorted, deduplicated): the
    /// driver's sweep keeps those a PoolService still wants and deletes the rest of its own
    /// (`k8s/<service>/<namespace>/<pool>/<cluster>` with its cluster). Always listed
    /// afresh (and the listing kept for the observations that follow).
    pub async fn names_in_region(&self, region: &str) -> Result<BTreeSet<String>, EnsError> {
        let l = self.listing(region, true).await?;
        let mut names: BTreeSet<String> = l.lbs.iter().map(|lb| lb.name.clone()).collect();
        names.extend(l.eips.iter().map(|(name, _)| name.clone()));
        Ok(names)
    }
}

/// Picks the EIP bound to `lb_id` (else the first) and calls the others duplicates.
fn split_eips(
    mut named: Vec<ObservedEip>,
    lb_id: Option<&str>,
) -> (Option<ObservedEip>, Vec<ObservedEip>) {
    named.sort_by(|a, b| a.allocation_id.cmp(&b.allocation_id));
    let pos = named
        .iter()
        .position(|e| lb_id.is_some() && e.instance_id.as_deref() == lb_id)
        .unwrap_or(0);
    if named.is_empty() {
        return (None, named);
    }
    let first = named.remove(pos);
    (Some(first), named)
}

/// Reads the health check of each Running listener we may change (one Describe call each;
/// stopped ones get theirs at creation and are read once started).
async fn with_health(
    c: &EnsClient,
    target: &Target,
    lb_id: &str,
    mut listeners: Vec<ObservedListener>,
) -> Result<Vec<ObservedListener>, EnsError> {
    let ours = match &target.ownership {
        Ownership::Managed => true,
        Ownership::UserManaged {
            manage_listeners, ..
        } => *manage_listeners,
    };
    for l in &mut listeners {
        let key = (l.protocol, l.port);
        if ours && l.status == ListenerStatus::Running && target.listener_keys.contains(&key) {
            l.health = Some(api::listener_health(c, lb_id, key).await?);
        }
    }
    Ok(listeners)
}

/// A create whose first attempt took effect before its answer was lost comes back as
/// "already exists" on the retry: the effect is there (the next observation confirms it).
fn already_done(r: Result<(), EnsError>) -> Result<(), EnsError> {
    match r {
        Err(e) if e.code().is_some_and(|c| c.contains("AlreadyExist")) => Ok(()),
        other => other,
    }
}

impl LoadBalancerProvider for EnsProvider {
    type Error = EnsError;

    async fn observe(&self, target: &Target) -> Result<Observed, EnsError> {
        let c = &self.client;
        let mut obs = Observed::default();
        match &target.ownership {
            Ownership::Managed => {
                let listing = self.listing(&target.region, false).await?;
                let mut lbs: Vec<ObservedLb> = listing
                    .lbs
                    .iter()
                    .filter(|lb| lb.name == target.name)
                    .cloned()
                    .collect();
                // The oldest id is adopted; later ones (a crash mid-create) are duplicates.
                lbs.sort_by(|a, b| a.id.cmp(&b.id));
                let mut lbs = lbs.into_iter();
                if let Some(first) = lbs.next() {
                    if let Some(attr) = api::load_balancer(c, &first.id).await? {
                        // Listeners exist only on an Active instance.
                        if attr.lb.status == LbStatus::Active {
                            obs.listeners = with_health(
                                c,
                                target,
                                &first.id,
                                api::listeners(c, &first.id).await?,
                            )
                            .await?;
                        }
                        obs.backends = attr.backends.into_iter().collect();
                        obs.lb = Some(attr.lb);
                    }
                }
                obs.duplicate_lbs = lbs.collect();
                let ids: Vec<&str> = listing
                    .eips
                    .iter()
                    .filter(|(name, _)| name == &target.name)
                    .map(|(_, e)| e.allocation_id.as_str())
                    .collect();
                let named: Vec<ObservedEip> = api::eips_by_id(c, &target.region, &ids)
                    .await?
                    .into_iter()
                    .filter(|(name, _)| name == &target.name)
                    .map(|(_, e)| e)
                    .collect();
                let (eip, dups) = split_eips(named, obs.lb.as_ref().map(|l| l.id.as_str()));
                obs.eip = eip;
                obs.duplicate_eips = dups;
            }
            Ownership::UserManaged { lb_id, .. } => {
                if let Some(attr) = api::load_balancer(c, lb_id).await? {
                    obs.backends = attr.backends.into_iter().collect();
                    obs.listeners =
                        with_health(c, target, lb_id, api::listeners(c, lb_id).await?).await?;
                    obs.lb = Some(attr.lb);
                    obs.eip = api::eip_of_instance(c, lb_id).await?;
                }
            }
        }
        Ok(obs)
    }

    async fn execute(&self, target: &Target, action: &Action) -> Result<(), EnsError> {
        let c = &self.client;
        match action {
            Action::CreateLoadBalancer {
                name,
                network,
                spec,
            } => {
                // One token per attempt of this call: retries inside `call` reuse it, so the
                // id returned is the only instance this call made.
                let token = format!("{:032x}", rng().random::<u128>());
                match api::create_load_balancer(c, name, network, spec, &token).await {
                    Ok(id) => {
                        let lb = ObservedLb {
                            id,
                            name: name.clone(),
                            status: LbStatus::Creating,
                            address: None,
                        };
                        self.patch(&network.region, |l| {
                            if !l.lbs.iter().any(|x| x.id == lb.id) {
                                l.lbs.push(lb);
                            }
                        })
                        .await;
                        Ok(())
                    }
                    Err(e) => {
                        self.uncertain(&network.region);
                        Err(e)
                    }
                }
            }
            Action::ReleaseLoadBalancer { lb_id } => {
                let r = api::release(c, lb_id).await;
                self.forget(&target.region, lb_id, &r).await;
                r
            }
            Action::CreateListener { lb_id, key, spec } => {
                api::create_listener(c, lb_id, *key, spec, &target.name).await
            }
            Action::SetListenerHealthCheck { lb_id, key, spec } => {
                api::set_listener_health(c, lb_id, *key, spec).await
            }
            Action::StartListener { lb_id, key } => {
                api::listener_call(c, "StartLoadBalancerListener", lb_id, *key).await
            }
            Action::DeleteListener { lb_id, key } => {
                match api::listener_call(c, "DeleteLoadBalancerListener", lb_id, *key).await {
                    Err(e) if e.not_found() => Ok(()),
                    other => other,
                }
            }
            Action::AddBackends { lb_id, backends } => {
                let list: Vec<_> = backends
                    .iter()
                    .map(|(id, w)| (id.clone(), Some(*w)))
                    .collect();
                already_done(api::backend_call(c, "AddBackendServers", lb_id, &list).await)
            }
            Action::SetBackendWeights { lb_id, backends } => {
                let list: Vec<_> = backends
                    .iter()
                    .map(|(id, w)| (id.clone(), Some(*w)))
                    .collect();
                api::backend_call(c, "SetBackendServers", lb_id, &list).await
            }
            Action::RemoveBackends { lb_id, server_ids } => {
                let list: Vec<_> = server_ids.iter().map(|id| (id.clone(), None)).collect();
                api::backend_call(c, "RemoveBackendServers", lb_id, &list).await
            }
            Action::CreateEip {
                name,
                region,
                bandwidth,
            } => {
                // No client token: a retried create may have made two; list again.
                let r = api::create_eip(c, name, region, *bandwidth).await.map(drop);
                self.uncertain(region);
                r
            }
            Action::AssociateEip {
                allocation_id,
                lb_id,
            } => api::associate_eip(c, allocation_id, lb_id).await,
            Action::UnassociateEip { allocation_id } => {
                api::unassociate_eip(c, allocation_id).await
            }
            Action::ReleaseEip { allocation_id } => {
                let r = api::release(c, allocation_id).await;
                self.forget(&target.region, allocation_id, &r).await;
                r
            }
        }
    }
}

impl EnsProvider {
    /// After a release: gone from the listing, or the listing is uncertain.
    async fn forget(&self, region: &str, id: &str, r: &Result<(), EnsError>) {
        if r.is_ok() {
            self.patch(region, |l| {
                l.lbs.retain(|x| x.id != id);
                l.eips.retain(|(_, e)| e.allocation_id != id);
            })
            .await;
        } else {
            self.uncertain(region);
        }
    }
}

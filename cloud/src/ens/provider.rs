//! The ENS provider: observation by name (or the user's id) and each neutral action as its
//! OpenAPI calls.

use super::api;
use super::client::{rng, EnsClient, EnsError};
use crate::model::{Action, Observed, ObservedEip, Ownership, Target};
use crate::provider::LoadBalancerProvider;
use rand::RngExt;

/// ENS ELBs and EIPs of one account.
#[derive(Clone, Debug)]
pub struct EnsProvider {
    client: EnsClient,
}

impl EnsProvider {
    pub fn new(client: EnsClient) -> EnsProvider {
        EnsProvider { client }
    }

    pub fn client(&self) -> &EnsClient {
        &self.client
    }

    /// Names of every load balancer and EIP in one ENS node (sorted, deduplicated): the
    /// driver's sweep keeps those a PoolService still wants and deletes the rest of its own
    /// (`k8s/<service>/<namespace>/<pool>/<cluster>` with its cluster).
    pub async fn names_in_region(
        &self,
        region: &str,
    ) -> Result<std::collections::BTreeSet<String>, EnsError> {
        let mut names: std::collections::BTreeSet<String> =
            api::load_balancers_in(&self.client, region)
                .await?
                .into_iter()
                .map(|lb| lb.name)
                .collect();
        names.extend(
            api::eips(&self.client, region)
                .await?
                .into_iter()
                .map(|(name, _)| name),
        );
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
                let mut lbs = api::load_balancers_named(c, &target.region, &target.name).await?;
                // The oldest id is adopted; later ones (a crash mid-create) are duplicates.
                lbs.sort_by(|a, b| a.id.cmp(&b.id));
                let mut lbs = lbs.into_iter();
                if let Some(first) = lbs.next() {
                    if let Some(attr) = api::load_balancer(c, &first.id).await? {
                        obs.backends = attr.backends.into_iter().collect();
                        obs.listeners = api::listeners(c, &first.id).await?;
                        obs.lb = Some(attr.lb);
                    }
                }
                obs.duplicate_lbs = lbs.collect();
                let named: Vec<ObservedEip> = api::eips(c, &target.region)
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
                    obs.listeners = api::listeners(c, lb_id).await?;
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
                // One token per attempt of this call: retries inside `call` reuse it.
                let token = format!("{:032x}", rng().random::<u128>());
                api::create_load_balancer(c, name, network, spec, &token)
                    .await
                    .map(drop)
            }
            Action::ReleaseLoadBalancer { lb_id } => api::release(c, lb_id).await,
            Action::CreateListener {
                lb_id,
                key,
                backend_port,
            } => api::create_listener(c, lb_id, *key, *backend_port, &target.name).await,
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
            } => api::create_eip(c, name, region, *bandwidth).await.map(drop),
            Action::AssociateEip {
                allocation_id,
                lb_id,
            } => api::associate_eip(c, allocation_id, lb_id).await,
            Action::UnassociateEip { allocation_id } => {
                api::unassociate_eip(c, allocation_id).await
            }
            Action::ReleaseEip { allocation_id } => api::release(c, allocation_id).await,
        }
    }
}

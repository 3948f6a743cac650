//! One speaker at a time writes to the API: the holder of a `coordination.k8s.io/v1` Lease.
//!
//! The decision is pure ([`decide`]); [`Leadership::tick`] reads the Lease, then creates,
//! renews or takes it over with an optimistic-concurrency `replace` (the `resourceVersion`
//! we read), so two speakers racing for an expired Lease cannot both win: the loser gets
//! 409 Conflict and follows. Any API error means "not leader" for this tick: a speaker that
//! cannot reach the API server cannot write anyway, and must not believe it leads after its
//! Lease may have passed to another.
//!
//! Every speaker, leader or follower, learns the holder on each round ([`Leadership::holder`])
//! for its local view; it is unknown after an API error or a lost race (until the next read).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use kube::Client;

/// What to do with the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// There is none: create it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Another held it but let it expire: take over.
    TakeOver,
    /// Another holds it.
    Follow {
        /// Its holder.
        holder: String,
    },
}

/// Decides from the Lease as read (pure; `now` is given).
pub fn decide(
    lease: Option<&Lease>,
    me: &str,
    now: Timestamp,
    default_duration: Duration,
) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.unwrap_or_default();
    if holder == me {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let secs = spec
        .lease_duration_seconds
        .map_or(default_duration.as_secs() as i64, i64::from);
    let expired = match spec.renew_time.or(spec.acquire_time) {
        Some(MicroTime(t)) => t + SignedDuration::from_secs(secs) < now,
        None => true,
    };
    if expired {
        Decision::TakeOver
    } else {
        Decision::Follow { holder }
    }
}

/// The Lease a speaker writes.
fn lease_spec(
    me: &str,
    now: Timestamp,
    duration: Duration,
    previous: Option<&LeaseSpec>,
) -> LeaseSpec {
    let same_holder = previous.and_then(|p| p.holder_identity.as_deref()) == Some(me);
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(i32::try_from(duration.as_secs()).unwrap_or(i32::MAX)),
        acquire_time: if same_holder {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if same_holder || previous.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..Default::default()
    }
}

/// What one round found.
enum Round {
    /// We hold the Lease.
    Lead,
    /// Another holds it (its name when read; `None` after losing a race to an unknown one).
    Follow(Option<String>),
}

/// Leader election over one Lease.
pub struct Leadership {
    api: Api<Lease>,
    name: String,
    me: String,
    duration: Duration,
    leader: bool,
    api_reachable: bool,
    holder: Option<String>,
}

impl Leadership {
    /// Election for `me` over Lease `namespace/name`, each term lasting `duration`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        me: &str,
        duration: Duration,
    ) -> Leadership {
        Leadership {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            me: me.to_string(),
            duration,
            leader: false,
            api_reachable: false,
            holder: None,
        }
    }

    /// Whether the last tick made or kept us leader.
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// The Lease holder as the last tick found (or made) it: this node when it leads, the
    /// other node when it follows; `None` when unknown (API error, lost race, no tick yet).
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref()
    }

    /// Whether the last tick reached the API server (the split-brain guard's second way).
    pub fn api_reachable(&self) -> bool {
        self.api_reachable
    }

    /// One round: read, decide, write. Call it every `duration / 3`.
    pub async fn tick(&mut self, now: Timestamp) -> bool {
        let result = self.round(now).await;
        self.api_reachable = result.is_ok();
        let (leader, holder) = match result {
            Ok(Round::Lead) => (true, Some(self.me.clone())),
            Ok(Round::Follow(holder)) => (false, holder),
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "lease round failed; not leading this round");
                (false, None)
            }
        };
        if holder != self.holder {
            tracing::info!(lease = %self.name, holder = holder.as_deref().unwrap_or("<unknown>"), "lease holder");
        }
        self.holder = holder;
        if leader != self.leader {
            tracing::info!(lease = %self.name, me = %self.me, leader, "leadership changed");
        }
        self.leader = leader;
        leader
    }

    async fn round(&self, now: Timestamp) -> Result<Round, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        match decide(current.as_ref(), &self.me, now, self.duration) {
            Decision::Follow { holder } => Ok(Round::Follow(Some(holder))),
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(lease_spec(&self.me, now, self.duration, None)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Round::Lead),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(Round::Follow(None)),
                    Err(e) => Err(e),
                }
            }
            Decision::Renew | Decision::TakeOver => {
                let Some(mut lease) = current else {
                    return Ok(Round::Follow(None));
                };
                lease.spec = Some(lease_spec(
                    &self.me,
                    now,
                    self.duration,
                    lease.spec.as_ref(),
                ));
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(Round::Lead),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(Round::Follow(None)),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;

//! One speaker at a time writes to the API: the holder of a `coordination.k8s.io/v1` Lease,
//! and only while its hold is *fenced*: valid, by its own monotonic clock, for longer than
//! any write it starts could take.
//!
//! The rules are client-go's leader election, with time as a value in a pure state machine
//! ([`Elector`]) and the API round trips in a task of their own ([`Leadership::spawn`]),
//! which never waits behind a status write:
//!
//! - **Expiry by local observation.** A follower judges another's Lease expired when *it*
//!   has seen the same `resourceVersion` for `leaseDurationSeconds` on its own monotonic
//!   clock, never by comparing the holder's `renewTime` with its wall clock, so skewed
//!   clocks cannot steal a Lease. Every write is an optimistic-concurrency `replace` of the
//!   version read, so two speakers racing for an expired Lease cannot both win (409).
//! - **Renew deadline.** The leader's fence ends `renew_deadline` after it *sent* its last
//!   successful renewal; `lease_duration > renew_deadline > retry_period`. Followers see that
//!   renewal no earlier than it was sent and wait `lease_duration` from then, so the leader
//!   stops writing `lease_duration - renew_deadline` before anyone else could take over.
//! - **Fence before every write.** A write may start only if it would time out before the
//!   fence ends ([`Fence::permits`]). A new term (an [`Fence::epoch`]) starts whenever the
//!   fence had lapsed, so the writer re-reads what is recorded before writing again.
//! - **A hold outlives a lapse.** The fence's [`Fence::tenure`] counts this speaker's holds
//!   of the Lease: it moves when another holder is seen or when this speaker creates or
//!   takes the Lease over, not when a renewal that was late keeps the same hold (same
//!   `acquireTime` and `leaseTransitions`: nobody else held it meanwhile). What a hold owes
//!   (Events of its status writes) is kept over such a lapse and posted once it writes again.
//! - **Release on stop.** [`LeaderHandle::release`] closes the fence, then clears the holder
//!   and shortens the Lease to one second, so the next speaker takes over at its next retry.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

/// Lease timings (client-go's names and defaults: 15 s, 10 s, 2 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimings {
    /// How long a Lease holds without renewal (`leaseDurationSeconds`).
    pub lease_duration: Duration,
    /// How long after its last renewal a leader still writes.
    pub renew_deadline: Duration,
    /// How often every speaker reads (and the leader renews) the Lease.
    pub retry_period: Duration,
}

/// Why timings are refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("lease timings must satisfy lease duration ({lease_duration:?}) > renew deadline ({renew_deadline:?}) > retry period ({retry_period:?}) > 0, with whole seconds of lease duration")]
pub struct TimingsError {
    lease_duration: Duration,
    renew_deadline: Duration,
    retry_period: Duration,
}

impl LeaseTimings {
    /// Timings for a Lease of `lease_duration`: renew deadline 2/3 of it, retry period 2/15
    /// (15 s gives client-go's 15 s / 10 s / 2 s).
    pub fn for_duration(lease_duration: Duration) -> Result<LeaseTimings, TimingsError> {
        LeaseTimings {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration * 2 / 15,
        }
        .checked()
    }

    /// The timings, if they satisfy client-go's rule.
    pub fn checked(self) -> Result<LeaseTimings, TimingsError> {
        let ok = self.lease_duration > self.renew_deadline
            && self.renew_deadline > self.retry_period
            && !self.retry_period.is_zero()
            && self.lease_duration.as_secs() >= 1
            && self.lease_duration.subsec_nanos() == 0;
        if ok {
            Ok(self)
        } else {
            Err(TimingsError {
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            })
        }
    }

    /// The timeout of each Lease request: half the renew deadline, so that one slow round
    /// still leaves time for another before the fence ends.
    pub fn request_timeout(&self) -> Duration {
        self.renew_deadline / 2
    }
}

impl Default for LeaseTimings {
    fn default() -> Self {
        LeaseTimings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// What the state machine needs of a Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// `holderIdentity` (empty: released or never held).
    pub holder: String,
    /// `metadata.resourceVersion`: changes on every write, renewals included.
    pub version: String,
    /// `leaseDurationSeconds` as the holder wrote it.
    pub duration: Duration,
    /// `acquireTime` (as serialized) and `leaseTransitions`: together they name one hold.
    pub acquired: Option<String>,
    pub transitions: i32,
}

impl LeaseView {
    /// The view of `lease`; a Lease without a duration counts as `default_duration`.
    pub fn of(lease: &Lease, default_duration: Duration) -> LeaseView {
        let spec = lease.spec.as_ref();
        LeaseView {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default(),
            version: lease.metadata.resource_version.clone().unwrap_or_default(),
            duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .map_or(default_duration, |s| {
                    Duration::from_secs(u64::try_from(s).unwrap_or(0))
                }),
            acquired: spec
                .and_then(|s| s.acquire_time.as_ref())
                .and_then(|t| serde_json::to_string(t).ok()),
            transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0),
        }
    }
}

/// What to do after a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// There is no Lease: create it.
    Create,
    /// We hold it: renew (replace this version).
    Renew,
    /// It is released or expired by our observation: take it (replace this version).
    TakeOver,
    /// Another holds it.
    Follow,
}

/// The fenced state every writer checks before each write.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Fence {
    /// The current term, counted from 1; a new one starts whenever the fence had lapsed.
    pub epoch: u64,
    /// This speaker's hold of the Lease, counted from 1: a new one when another holder is
    /// seen or this speaker acquires the Lease anew; a lapse that the same hold renews (a
    /// new `epoch`) keeps it.
    pub tenure: u64,
    /// Until when this speaker may write (monotonic); `None` when it does not lead.
    pub until: Option<Instant>,
    /// The holder as last read (this node while it leads); `None` when unknown.
    pub holder: Option<String>,
    /// Whether the last Lease round reached the API server.
    pub api_reachable: bool,
    /// When the API server last answered a Lease request (monotonic).
    pub contact: Option<Instant>,
}

impl Fence {
    /// Whether a write started at `now` that may take up to `write_timeout` ends inside the
    /// fence.
    pub fn permits(&self, now: Instant, write_timeout: Duration) -> bool {
        self.until.is_some_and(|u| now + write_timeout < u)
    }

    /// How long a write started at `now` may take (its timeout): what is left of the fence,
    /// at most `max`; `None` when less than `min` is left (or the fence is closed).
    pub fn write_budget(&self, now: Instant, min: Duration, max: Duration) -> Option<Duration> {
        let left = self.until?.checked_duration_since(now)?;
        (left >= min).then(|| left.min(max))
    }

    /// Whether this speaker leads at `now`.
    pub fn leads(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }
}

/// What was observed of the Lease, on this speaker's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Observed {
    view: LeaseView,
    /// When this version was first seen here.
    since: Instant,
}

/// The leader-election state machine (pure: every input carries its time).
#[derive(Clone, Debug)]
pub struct Elector {
    me: String,
    timings: LeaseTimings,
    observed: Option<Observed>,
    fence: Fence,
    /// `acquireTime` and `leaseTransitions` of this speaker's current hold, as last written.
    held: Option<(Option<String>, i32)>,
}

impl Elector {
    /// A follower that has seen nothing yet.
    pub fn new(me: &str, timings: LeaseTimings) -> Elector {
        Elector {
            me: me.to_string(),
            timings,
            observed: None,
            fence: Fence::default(),
            held: None,
        }
    }

    /// The fence now.
    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// A read at `now` found `lease` (`None`: there is none). Decides what to write.
    pub fn on_read(&mut self, lease: Option<LeaseView>, now: Instant) -> Action {
        self.fence.api_reachable = true;
        self.fence.contact = Some(now);
        let Some(view) = lease else {
            self.observed = None;
            self.fence.holder = None;
            return Action::Create;
        };
        if self.observed.as_ref().map(|o| &o.view.version) != Some(&view.version) {
            self.observed = Some(Observed {
                view: view.clone(),
                since: now,
            });
        }
        if view.holder == self.me {
            return Action::Renew;
        }
        self.fence.until = None;
        if self.held.take().is_some() {
            // Released or held by another: this hold is over, whatever comes next.
            self.fence.tenure += 1;
        }
        if view.holder.is_empty() {
            self.fence.holder = None;
            return Action::TakeOver;
        }
        self.fence.holder = Some(view.holder.clone());
        let seen_since = self.observed.as_ref().map_or(now, |o| o.since);
        if now >= seen_since + view.duration {
            Action::TakeOver
        } else {
            Action::Follow
        }
    }

    /// Our create, renewal or take-over sent at `sent` succeeded; `written` is the Lease
    /// as the server returned it, seen at `now`.
    pub fn on_written(&mut self, sent: Instant, written: LeaseView, now: Instant) {
        if !self.fence.leads(sent) {
            self.fence.epoch += 1;
        }
        let hold = (written.acquired.clone(), written.transitions);
        if self.held.as_ref() != Some(&hold) {
            self.fence.tenure += 1;
            self.held = Some(hold);
        }
        self.fence.until = Some(sent + self.timings.renew_deadline);
        self.fence.holder = Some(self.me.clone());
        self.fence.api_reachable = true;
        self.fence.contact = Some(now);
        self.observed = Some(Observed {
            view: written,
            since: now,
        });
    }

    /// Our write was refused with 409: another wrote the Lease since we read it, so it
    /// may hold it now. Stop writing at once.
    pub fn on_conflict(&mut self) {
        self.fence.until = None;
        self.fence.holder = None;
    }

    /// A request failed or timed out: the fence runs out by itself.
    pub fn on_error(&mut self) {
        self.fence.api_reachable = false;
    }

    /// We released the Lease (or are about to): stop writing.
    pub fn on_release(&mut self) {
        self.fence.until = None;
        self.fence.holder = None;
    }
}

/// The Lease a speaker writes when it creates, renews or takes it over.
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

/// The released Lease: no holder, one second, so the next speaker takes over at once.
fn released_spec(now: Timestamp, previous: Option<&LeaseSpec>) -> LeaseSpec {
    LeaseSpec {
        holder_identity: None,
        lease_duration_seconds: Some(1),
        acquire_time: Some(MicroTime(now)),
        renew_time: Some(MicroTime(now)),
        lease_transitions: previous.and_then(|p| p.lease_transitions),
        ..Default::default()
    }
}

/// Leader election over one Lease: the API side of an [`Elector`].
pub struct Leadership {
    api: Api<Lease>,
    name: String,
    me: String,
    timings: LeaseTimings,
    elector: Elector,
    /// The Lease as last read or written (what a write replaces).
    current: Option<Lease>,
}

/// What went wrong in one request.
enum RoundError {
    Conflict,
    Other(String),
}

impl Leadership {
    /// Election for `me` over Lease `namespace/name`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        me: &str,
        timings: LeaseTimings,
    ) -> Leadership {
        Leadership {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            me: me.to_string(),
            timings,
            elector: Elector::new(me, timings),
            current: None,
        }
    }

    /// The fence after the last round.
    pub fn fence(&self) -> &Fence {
        &self.elector.fence
    }

    async fn timed<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, RoundError> {
        match tokio::time::timeout(self.timings.request_timeout(), f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => Err(RoundError::Conflict),
            Ok(Err(e)) => Err(RoundError::Other(e.to_string())),
            Err(_) => Err(RoundError::Other("timed out".into())),
        }
    }

    /// One round: read, decide, maybe write. Run it every retry period.
    pub async fn round(&mut self) {
        let before = self.elector.fence.clone();
        let result = self.try_round().await;
        match result {
            Ok(()) => {}
            Err(RoundError::Conflict) => {
                tracing::info!(lease = %self.name, "lease changed under us; following");
                self.elector.on_conflict();
                self.current = None;
            }
            Err(RoundError::Other(e)) => {
                tracing::warn!(lease = %self.name, error = %e, "lease round failed; the fence runs out unless a later round renews");
                self.elector.on_error();
            }
        }
        let after = &self.elector.fence;
        if after.holder != before.holder {
            tracing::info!(lease = %self.name, holder = after.holder.as_deref().unwrap_or("<unknown>"), "lease holder");
        }
        if after.epoch != before.epoch {
            tracing::info!(lease = %self.name, me = %self.me, epoch = after.epoch, "leading: new term");
        }
    }

    async fn try_round(&mut self) -> Result<(), RoundError> {
        // While leading, renew the version we wrote last without reading it first (one
        // round trip; a 409 means another wrote it, and the next round reads).
        if self.elector.fence.leads(Instant::now()) {
            if let Some(mut lease) = self.current.clone() {
                if LeaseView::of(&lease, self.timings.lease_duration).holder == self.me {
                    lease.spec = Some(lease_spec(
                        &self.me,
                        Timestamp::now(),
                        self.timings.lease_duration,
                        lease.spec.as_ref(),
                    ));
                    let sent = Instant::now();
                    let written = self
                        .timed(self.api.replace(&self.name, &PostParams::default(), &lease))
                        .await?;
                    self.written(sent, written);
                    return Ok(());
                }
            }
        }
        let read = self.timed(self.api.get_opt(&self.name)).await?;
        let view = read
            .as_ref()
            .map(|l| LeaseView::of(l, self.timings.lease_duration));
        self.current = read;
        match self.elector.on_read(view, Instant::now()) {
            Action::Follow => Ok(()),
            Action::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(lease_spec(
                        &self.me,
                        Timestamp::now(),
                        self.timings.lease_duration,
                        None,
                    )),
                };
                let sent = Instant::now();
                let written = self
                    .timed(self.api.create(&PostParams::default(), &lease))
                    .await?;
                self.written(sent, written);
                Ok(())
            }
            Action::Renew | Action::TakeOver => {
                let Some(mut lease) = self.current.clone() else {
                    return Ok(());
                };
                lease.spec = Some(lease_spec(
                    &self.me,
                    Timestamp::now(),
                    self.timings.lease_duration,
                    lease.spec.as_ref(),
                ));
                let sent = Instant::now();
                let written = self
                    .timed(self.api.replace(&self.name, &PostParams::default(), &lease))
                    .await?;
                self.written(sent, written);
                Ok(())
            }
        }
    }

    fn written(&mut self, sent: Instant, lease: Lease) {
        let view = LeaseView::of(&lease, self.timings.lease_duration);
        self.elector.on_written(sent, view, Instant::now());
        self.current = Some(lease);
    }

    /// Closes the fence and, if this speaker holds the Lease, hands it back: no holder,
    /// one second left. Bounded by the request timeout.
    pub async fn release(&mut self) {
        let held = self.elector.fence.until.is_some();
        self.elector.on_release();
        if !held {
            return;
        }
        let Some(mut lease) = self.current.clone() else {
            return;
        };
        if LeaseView::of(&lease, self.timings.lease_duration).holder != self.me {
            return;
        }
        lease.spec = Some(released_spec(Timestamp::now(), lease.spec.as_ref()));
        match self
            .timed(self.api.replace(&self.name, &PostParams::default(), &lease))
            .await
        {
            Ok(_) => tracing::info!(lease = %self.name, "lease released"),
            Err(RoundError::Conflict) => {
                tracing::info!(lease = %self.name, "lease changed before release")
            }
            Err(RoundError::Other(e)) => {
                tracing::warn!(lease = %self.name, error = %e, "cannot release the lease; it expires by itself")
            }
        }
    }

    /// Runs the rounds on a task of their own; the handle exposes the fence.
    pub fn spawn(self) -> LeaderHandle {
        let (tx, rx) = watch::channel(Fence::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let task = tokio::spawn(self.run(tx, stop_rx));
        LeaderHandle {
            fence: rx,
            stop: Some(stop_tx),
            task: Some(task),
        }
    }

    async fn run(mut self, tx: watch::Sender<Fence>, mut stop: oneshot::Receiver<()>) {
        loop {
            self.round().await;
            tx.send_if_modified(|f| {
                let changed = *f != self.elector.fence;
                *f = self.elector.fence.clone();
                changed
            });
            tokio::select! {
                () = tokio::time::sleep(self.timings.retry_period) => {}
                _ = &mut stop => break,
            }
        }
        // Close the fence for the writer first, then hand the Lease back.
        tx.send_modify(|f| {
            f.until = None;
            f.holder = None;
        });
        self.release().await;
    }
}

/// A running [`Leadership`]: a watch of the fence, and release on stop.
pub struct LeaderHandle {
    fence: watch::Receiver<Fence>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl LeaderHandle {
    /// The fence as the Lease task last set it; writers check it before every write.
    pub fn fence(&self) -> watch::Receiver<Fence> {
        self.fence.clone()
    }

    /// Whether this speaker leads now.
    pub fn is_leader(&self) -> bool {
        self.fence.borrow().leads(Instant::now())
    }

    /// The Lease holder as last read (for the local view).
    pub fn holder(&self) -> Option<String> {
        self.fence.borrow().holder.clone()
    }

    /// Whether the last Lease round reached the API server.
    pub fn api_reachable(&self) -> bool {
        self.fence.borrow().api_reachable
    }

    /// Stops renewing, closes the fence and releases the Lease if held (bounded: the
    /// Lease request timeout). Stop the status writer first so no write is in flight.
    pub async fn release(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LeaderHandle {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(test)]
#[path = "leader_tests.rs"]
mod tests;

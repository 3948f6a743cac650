//! The seam: "the cloud load balancer of one PoolService" — observe, ensure, delete.
//!
//! A provider implements two things: `observe` (read everything carrying the target's name,
//! or the user's instance) and `execute` (one neutral [`Action`] as its API's calls). The
//! converge loop (`ensure`, `delete`) is shared: observe → pure diff → execute → again,
//! until the diff is empty, the cloud is mid-transition past the round budget, or a call
//! fails. Nothing is remembered between rounds, so a crash anywhere is repaired by the
//! next `ensure` finding the named instances again.

use std::future::Future;
use std::time::Duration;

use crate::diff::{diff, diff_delete, ingress};
use crate::model::{Action, Desired, Observed, Target};

/// The pause between looks at a cloud mid-transition doubles up to this many times
/// [`ConvergeOptions::poll`].
pub const POLL_BACKOFF_CAP: u32 = 4;

/// How long one `ensure`/`delete` keeps going before handing back (and being requeued).
#[derive(Clone, Debug)]
pub struct ConvergeOptions {
    pub max_rounds: usize,
    /// First pause between rounds when the cloud is mid-transition (Creating,
    /// Associating); doubled while it stays so, up to [`POLL_BACKOFF_CAP`] times.
    pub poll: Duration,
}

impl Default for ConvergeOptions {
    fn default() -> Self {
        ConvergeOptions {
            max_rounds: 20,
            poll: Duration::from_millis(500),
        }
    }
}

/// What one `ensure` or `delete` did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Every call made, in order (for Events and metrics).
    pub actions: Vec<Action>,
    pub rounds: usize,
    pub converged: bool,
    /// Why the last round could not finish (the cloud mid-transition).
    pub waiting: Option<String>,
    /// The address clients use, once there is one.
    pub ingress: Option<String>,
    /// The last observation (for `edgelbctl elb`).
    pub observed: Observed,
}

/// A failed observation or call, with the action it belonged to.
#[derive(Debug, thiserror::Error)]
pub enum ConvergeError<E: std::error::Error + 'static> {
    #[error("observing {target}: {source}")]
    Observe { target: String, source: E },
    #[error("{action} for {target}: {source}")]
    Execute {
        target: String,
        action: String,
        source: E,
        report: Box<Report>,
    },
}

/// One cloud's load balancer API behind the neutral model.
pub trait LoadBalancerProvider: Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Reads the target's load balancer, listeners, backends and EIP.
    fn observe(
        &self,
        target: &Target,
    ) -> impl Future<Output = Result<Observed, Self::Error>> + Send;

    /// Makes one call (or the few one neutral action needs, e.g. batches of backends).
    fn execute(
        &self,
        target: &Target,
        action: &Action,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Creates or converges the load balancer to `desired`.
    fn ensure(
        &self,
        desired: &Desired,
        opts: &ConvergeOptions,
    ) -> impl Future<Output = Result<Report, ConvergeError<Self::Error>>> + Send {
        async move {
            converge(
                self,
                &desired.target,
                opts,
                |obs| diff(desired, obs),
                |obs| ingress(desired, obs),
            )
            .await
        }
    }

    /// Removes what we made for `target` (never a user's instance).
    fn delete(
        &self,
        target: &Target,
        opts: &ConvergeOptions,
    ) -> impl Future<Output = Result<Report, ConvergeError<Self::Error>>> + Send {
        async move { converge(self, target, opts, |obs| diff_delete(target, obs), |_| None).await }
    }
}

async fn converge<P: LoadBalancerProvider + ?Sized>(
    provider: &P,
    target: &Target,
    opts: &ConvergeOptions,
    step_of: impl Fn(&Observed) -> crate::model::Step + Send,
    ingress_of: impl Fn(&Observed) -> Option<String> + Send,
) -> Result<Report, ConvergeError<P::Error>> {
    let mut report = Report::default();
    let mut poll = opts.poll;
    for round in 0..opts.max_rounds.max(1) {
        report.rounds = round + 1;
        let observed = provider
            .observe(target)
            .await
            .map_err(|source| ConvergeError::Observe {
                target: target.name.clone(),
                source,
            })?;
        let step = step_of(&observed);
        report.ingress = ingress_of(&observed);
        report.waiting = step.waiting.clone();
        report.observed = observed;
        if step.converged() {
            report.converged = true;
            return Ok(report);
        }
        for action in &step.actions {
            tracing::info!(target = %target.name, action = action.verb(), "cloud call");
            if let Err(source) = provider.execute(target, action).await {
                return Err(ConvergeError::Execute {
                    target: target.name.clone(),
                    action: action.verb().to_string(),
                    source,
                    report: Box::new(report),
                });
            }
            report.actions.push(action.clone());
        }
        if step.actions.is_empty() {
            // The cloud is mid-transition: look again, less often the longer it takes
            // (each look is several Describe calls).
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(opts.poll * POLL_BACKOFF_CAP);
        } else {
            poll = opts.poll;
        }
    }
    Ok(report)
}

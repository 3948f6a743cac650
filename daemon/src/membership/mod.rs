//! Gossip membership between speakers: SWIM (Das, Gupta and Motivala, 2002)
//! through the `foca` crate, over UDP on the node addresses, every datagram
//! authenticated with HMAC-SHA256 ([`auth`]).
//!
//! foca does no I/O; [`task`] is its runtime: one tokio task owns the socket,
//! the foca state and the timers, and talks to the rest of the daemon through
//! a command channel, an event channel and a shared snapshot. In the daemon that
//! task runs on a thread and current-thread runtime of its own
//! ([`MembershipConfig::own_thread`]): with 10 000 L2 IPs, the work of moving them
//! (planning, announcing, publishing) held the shared runtime long enough that
//! heartbeats went out late and live owners were declared down, which moved the
//! IPs again.
//!
//! ```text
//!  MembershipHandle ──commands──►  membership task  ──events──► daemon loop
//!   members()/quorum() ◄─snapshot─┘   │   ▲
//!                                      ▼   │ UDP (sealed frames)
//!                                    other speakers
//! ```
//!
//! Each member also gossips its [`MemberFacts`] (announcing interfaces,
//! carrier, subnets) as foca custom broadcasts so that every speaker can run
//! the same election. A stopping speaker says goodbye: it sends a signed
//! goodbye frame straight to every live member and then leaves the SWIM
//! cluster, so the others declare it down at once instead of after a failure
//! detection period.

pub mod addr;
pub mod auth;
pub mod facts;
pub mod heartbeat;
pub mod identity;
mod phase;
pub mod rotation;
mod task;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};

pub use auth::{AuthError, GossipKey, Keyring};
pub use facts::MemberFacts;
pub use identity::SpeakerId;
pub use rotation::{KeyRotation, KeySource};

use crate::election::{InterfaceFacts, QuorumView};

/// Failure-detector timings.
///
/// Defaults ([`Timings::lan`]) aim at an unplanned L2 failover (crash of the
/// owner to the new owner's gratuitous ARP) of p50 <= 500 ms and p99 <= 1 s
/// on a LAN, without declaring a live but CPU-starved member down:
/// - `probe_period` 100 ms: each member probes one other per period, in a
///   shuffled round robin, so with N-1 members probing, a crashed member is
///   first probed about two thirds of a period after the crash (3 members:
///   each of the two others probes it every other period) and at the latest
///   after two periods. foca decides a probe failed at the end of the period,
///   so the period is paid once in full.
/// - `probe_rtt` 40 ms: LAN round trips are well under a millisecond; 40 ms
///   absorbs the scheduling delay of a loaded node (tens of ms on a busy
///   2-core host), and leaves 60 ms for the indirect probes (SWIM section
///   3.1) before the period ends. A datagram that arrived while the task was
///   starved is read before any due timer fires ([`task`]), so a late ack is
///   not mistaken for a lost one.
/// - `suspect_to_down_after`: 3 x log10 N probe periods, at least 1 s (the floor holds
///   up to ~2000 members). A new suspicion is gossiped at once, the suspect included
///   (the "buddy system" of Lifeguard, Dadgar et al. 2018), and foca refutes a suspicion
///   of itself at once with a gossip round, so a live member refutes within a round trip
///   plus its own scheduling delay. To be declared down, a live member must miss its
///   direct and indirect probes (stalled for ~60-100 ms) and then not refute for 1 s.
///   The floor was 250 ms while SWIM also found crashed L2 owners; the owners now have
///   their heartbeats (below), which find a crash, a cut or a freeze within 175 ms, so
///   SWIM only has to find the members that own nothing, where a second does not move
///   traffic, and must never take a starved owner down. The load test's nice-10 member
///   (a tenth of a busy thread's CPU share) was declared down by SWIM in 1 of 3 runs at
///   250 ms and in 2 of 10 at 500 ms on the 2-core lab machine at load 11-15. A CPU
///   limit on the speaker could still stall it that long, which is why the manifests set
///   none. hashicorp/memberlist's LAN profile (4 x log10 N seconds) is similar.
/// - A member we declare down is gossiped at once too, so the next owner
///   hears it within a round trip instead of at the next gossip round.
///
/// Expected SWIM detection of a crash with 3 members: ~70 ms until probed, 100 ms to
/// fail direct and indirect probes, 1 s suspicion, ~1 ms to spread: ~1.2 s; the worst
/// case ~1.3 s. (With the 250 ms floor `daemon/tests/speaker_l2.rs` measured
/// kill to the new owner's gratuitous ARP at p50 420 ms / p99 560 ms.)
/// `membership::tests::live_members_under_cpu_load_are_never_declared_down`
/// checks that these numbers do not declare starved members down.
///
/// The owners of L2 IPs are watched more closely by their successors ([`heartbeat`]):
/// a heartbeat every 25 ms; after 75 ms of silence (three heartbeats) the successor probes
/// the owner from a socket of its own. A live owner answers the probe (or sends its next
/// heartbeat) as soon as it runs; on a live node whose speaker died the kernel answers
/// "port unreachable", and the owner is declared down at once: a SIGKILLed speaker is
/// replaced 50-75 ms after it died. A node that is gone or cut off, and a frozen or
/// starved speaker, answer nothing: declared down after 175 ms of silence (seven
/// heartbeats; more for an owner seen stalling lately, up to 450 ms). With the probe the
/// watcher asks two of the owner's other watchers whether they hear it (SWIM's indirect
/// probe); one that heard its heartbeat within the probe delay vouches for it, so a
/// watcher cut off from a live owner does not take its IPs ([`heartbeat`]).
///
/// Why 175 ms: a link cut or a freeze is served again ~25 ms after the verdict (the last
/// heartbeat came ~12 ms before the fault on average, the verdict is gossiped at once, the
/// new owner's first gratuitous ARP and the client's next try follow), so 175 ms gives a
/// median of ~200 ms, under tuned VRRP's ~310-370 ms (0.1 s adverts, measured in the same
/// bench runs); 225 ms gave ~250 ms. What keeps a live owner up at 175 ms is not the floor
/// alone: a frozen and a starved process cannot be told apart from outside, only by how
/// long they last, and the timeout adapts to each owner (twice the worst gap it showed or
/// the worst lateness it reported, that worst halving every 20 s), so an owner whose host
/// gets busy is given more time before it goes silent for long; an owner whose node is
/// under CPU pressure (`/proc/pressure/cpu`) reports it as lateness and gets up to 450 ms
/// before it has shown any gap (a freshly restarted owner has no history); a watcher that was itself
/// starved gives every watch a fresh silence; a vouch covers a watcher-side loss. The
/// load test (`live_members_under_cpu_load_are_never_declared_down`, nice-0 owners on a
/// 2-core machine with 4 busy threads) and the 3000-5000 IP lab test
/// (`daemon/tests/speaker_l2_scale.rs`) check that these numbers declare no live member
/// down. (History: 200 ms with no probe and no adaptation let a fresh-clone CI run see a
/// live owner declared down once in 20 s; 300 ms made the failover as slow as VRRP.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How often a member probes another.
    pub probe_period: Duration,
    /// How long to wait for a direct ack before indirect probes.
    pub probe_rtt: Duration,
    /// How many members relay an indirect probe.
    pub indirect_probes: usize,
    /// How long a suspect may refute before it is declared down.
    pub suspect_to_down_after: Duration,
    /// Gossip period (updates are also piggybacked on probes).
    pub gossip_period: Duration,
    /// How many times each update is retransmitted.
    pub max_transmissions: u8,
    /// How long a down member is remembered (and counted as known for the
    /// quorum, see [`crate::election::quorum`]).
    pub remove_down_after: Duration,
    /// How often a member alone in its view re-announces itself to the
    /// seeds, and how often own facts are re-disseminated.
    pub rejoin_period: Duration,
    /// Re-disseminate our facts this often even without change, so that a
    /// member who missed them converges.
    pub facts_refresh: Duration,
    /// How often an owner sends its successors a heartbeat ([`heartbeat`]).
    pub heartbeat_interval: Duration,
    /// A successor probes an owner silent for this long.
    pub heartbeat_probe_after: Duration,
    /// A successor declares a silent owner down after this long.
    pub heartbeat_timeout: Duration,
}

impl Timings {
    /// Sub-second failure detection on a LAN of about `expected_members`.
    pub fn lan(expected_members: usize) -> Self {
        let probe_period = Duration::from_millis(100);
        let scale = (expected_members.max(1) as f64).log10();
        let suspicion = probe_period
            .mul_f64(3.0 * scale)
            .max(Duration::from_millis(1000));
        let max_tx = (4.0 * ((expected_members + 1) as f64).log10().ceil()).clamp(6.0, 15.0);
        Timings {
            probe_period,
            probe_rtt: Duration::from_millis(40),
            indirect_probes: 3,
            suspect_to_down_after: suspicion,
            gossip_period: Duration::from_millis(100),
            max_transmissions: max_tx as u8,
            remove_down_after: Duration::from_secs(15 * 60),
            rejoin_period: Duration::from_millis(500),
            facts_refresh: Duration::from_secs(5),
            heartbeat_interval: Duration::from_millis(25),
            heartbeat_probe_after: Duration::from_millis(75),
            heartbeat_timeout: Duration::from_millis(175),
        }
    }

    /// The foca configuration for these timings.
    fn foca_config(&self) -> Result<foca::Config, MembershipError> {
        let bad = |field: &'static str, value: String| MembershipError::Config { field, value };
        if self.probe_rtt >= self.probe_period || self.probe_rtt.is_zero() {
            return Err(bad(
                "probe_rtt",
                format!(
                    "{:?} (must be > 0 and < probe_period {:?})",
                    self.probe_rtt, self.probe_period
                ),
            ));
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_timeout < 2 * self.heartbeat_interval
        {
            return Err(bad(
                "heartbeat_timeout",
                format!(
                    "{:?} (must be at least two heartbeat_interval {:?}, which must be > 0)",
                    self.heartbeat_timeout, self.heartbeat_interval
                ),
            ));
        }
        if self.suspect_to_down_after.is_zero() || self.gossip_period.is_zero() {
            return Err(bad("suspect_to_down_after/gossip_period", "zero".into()));
        }
        // The periodic rounds move to the nearest heartbeat tick (`phase`): a period that
        // is not a whole number of intervals would become the nearest one that is.
        let step = self.heartbeat_interval.as_nanos();
        for (field, period) in [
            ("probe_period", self.probe_period),
            ("gossip_period", self.gossip_period),
        ] {
            if period.as_nanos() % step != 0 {
                return Err(bad(
                    field,
                    format!(
                        "{period:?} (must be a whole number of heartbeat_interval {:?})",
                        self.heartbeat_interval
                    ),
                ));
            }
        }
        let indirect = NonZeroUsize::new(self.indirect_probes)
            .ok_or_else(|| bad("indirect_probes", "0".into()))?;
        let max_tx = NonZeroU8::new(self.max_transmissions)
            .ok_or_else(|| bad("max_transmissions", "0".into()))?;
        let one = NonZeroUsize::MIN;
        let three = NonZeroUsize::new(3).unwrap_or(one);
        Ok(foca::Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: indirect,
            max_transmissions: max_tx,
            suspect_to_down_after: self.suspect_to_down_after,
            remove_down_after: Some(self.remove_down_after),
            max_packet_size: NonZeroUsize::new(MAX_PAYLOAD).unwrap_or(one),
            notify_down_members: true,
            periodic_announce: Some(foca::PeriodicParams {
                frequency: Duration::from_secs(10),
                num_members: one,
            }),
            periodic_announce_to_down_members: Some(foca::PeriodicParams {
                frequency: Duration::from_secs(5),
                num_members: NonZeroUsize::new(2).unwrap_or(one),
            }),
            periodic_gossip: Some(foca::PeriodicParams {
                frequency: self.gossip_period,
                num_members: three,
            }),
        })
    }
}

/// foca payload limit: with our 37 bytes of header and tag a datagram stays
/// under 1400 bytes, below a 1500-byte MTU with IPv6 and tunnel headers
/// (RFC 8085 section 3.2).
const MAX_PAYLOAD: usize = 1400 - auth::HEADER_LEN - auth::TAG_LEN;

/// How to start the membership.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// This node's name.
    pub node: String,
    /// Local address to bind the gossip socket to.
    pub bind: SocketAddr,
    /// The address other speakers reach us at (the node address and gossip
    /// port); usually equal to `bind`.
    pub advertise: SocketAddr,
    /// Gossip addresses of some other speakers to join through.
    pub seeds: Vec<SocketAddr>,
    /// Authentication keys (from a Secret).
    pub keys: Keyring,
    /// Failure-detector timings.
    pub timings: Timings,
    /// Our announcing interfaces, as first published.
    pub interfaces: Vec<InterfaceFacts>,
    /// The generation of our identity; `None`: the start time in ms.
    pub generation: Option<u64>,
    /// Run on a thread and runtime of its own (the daemon): no other work of the process
    /// (moving thousands of L2 IPs, planning, publishing) can hold back a heartbeat, a probe
    /// or an ack; only the OS scheduler can. False: a task of the caller's runtime (tests
    /// that freeze a member by blocking that runtime, as SIGSTOP freezes a process).
    pub own_thread: bool,
}

/// Why a member went down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownReason {
    /// It said goodbye (graceful stop).
    Left,
    /// The failure detector declared it down.
    Failed,
}

/// What the membership tells the daemon.
#[derive(Clone, Debug, PartialEq)]
pub enum MembershipEvent {
    /// A member became live.
    MemberUp {
        /// The member.
        id: SpeakerId,
    },
    /// A member was declared down.
    MemberDown {
        /// The member.
        id: SpeakerId,
        /// Goodbye or failure.
        reason: DownReason,
        /// When this speaker declared it down (wall clock, for events and
        /// the failover histogram).
        at: SystemTime,
        /// The same moment on the monotonic clock.
        at_instant: Instant,
    },
    /// A member published new facts.
    FactsChanged {
        /// The new facts.
        facts: MemberFacts,
    },
    /// This speaker may have been replaced without knowing it: other members may have
    /// taken over and announced its L2 IPs meanwhile, so it must announce them again.
    LostContact {
        /// How this speaker found out.
        reason: LostContact,
    },
}

/// How a speaker found out it may have been replaced ([`MembershipEvent::LostContact`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LostContact {
    /// Its own loop did not run for longer than the heartbeat timeout (frozen, stopped,
    /// starved): its successors may have declared it down.
    Stalled(Duration),
    /// The others declared it down; it rejoined under a new generation.
    DeclaredDown,
    /// It was alone (cut off) and found the others again.
    Reconnected,
}

/// A member's health as this speaker sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Answers probes.
    Alive,
    /// Missed a probe; still counted as live until declared down.
    Suspect,
    /// Declared down (failed or left).
    Down,
}

/// One member in a snapshot.
#[derive(Clone, Debug, PartialEq)]
pub struct MemberSnapshot {
    /// The identity.
    pub id: SpeakerId,
    /// Its health.
    pub health: Health,
    /// Whether it left on purpose (only meaningful when down).
    pub left: bool,
    /// The newest facts it published, if any arrived.
    pub facts: Option<MemberFacts>,
    /// Whether this is the local speaker.
    pub is_self: bool,
}

/// Datagram and failure-detector counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MembershipStats {
    /// Datagrams that passed authentication.
    pub accepted: u64,
    /// Datagrams dropped for a missing, unknown or wrong signature.
    pub rejected_auth: u64,
    /// Authenticated datagrams that foca or the goodbye decoder refused.
    pub rejected_payload: u64,
    /// Datagrams sent.
    pub sent: u64,
    /// Events dropped because the event channel was full.
    pub events_dropped: u64,
    /// Times our own probes turned a live member into a suspect.
    pub suspected: u64,
    /// Times our own suspicion timer declared a member down.
    pub declared_down: u64,
    /// Times a watched owner's heartbeats stopped and we declared it down.
    pub heartbeat_down: u64,
    /// Probes sent to silent owners.
    pub heartbeat_probes: u64,
    /// Silent owners another member vouched for (it heard them: indirect probes).
    pub heartbeat_vouched: u64,
    /// The longest silence of a watched owner that ended with a heartbeat (ms).
    pub longest_heartbeat_silence_ms: u64,
    /// Member snapshots published ([`MembershipHandle::members`]): one each time a
    /// member's identity, health, departure or facts changed, never at rest.
    pub snapshots_published: u64,
}

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    rejected_auth: AtomicU64,
    rejected_payload: AtomicU64,
    sent: AtomicU64,
    events_dropped: AtomicU64,
    suspected: AtomicU64,
    declared_down: AtomicU64,
    heartbeat_down: AtomicU64,
    heartbeat_probes: AtomicU64,
    heartbeat_vouched: AtomicU64,
    longest_heartbeat_silence_ms: AtomicU64,
    snapshots_published: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> MembershipStats {
        MembershipStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            rejected_auth: self.rejected_auth.load(Ordering::Relaxed),
            rejected_payload: self.rejected_payload.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            events_dropped: self.events_dropped.load(Ordering::Relaxed),
            suspected: self.suspected.load(Ordering::Relaxed),
            declared_down: self.declared_down.load(Ordering::Relaxed),
            heartbeat_down: self.heartbeat_down.load(Ordering::Relaxed),
            heartbeat_probes: self.heartbeat_probes.load(Ordering::Relaxed),
            heartbeat_vouched: self.heartbeat_vouched.load(Ordering::Relaxed),
            longest_heartbeat_silence_ms: self.longest_heartbeat_silence_ms.load(Ordering::Relaxed),
            snapshots_published: self.snapshots_published.load(Ordering::Relaxed),
        }
    }
}

/// Errors of the membership.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Binding the gossip socket failed.
    #[error("membership: cannot bind gossip socket {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A timing or size setting is invalid.
    #[error("membership config: field {field} has invalid value {value}")]
    Config {
        /// The field.
        field: &'static str,
        /// The value.
        value: String,
    },
    /// The membership task is gone (stopped or crashed).
    #[error("membership task has stopped")]
    Stopped,
    /// foca refused an operation.
    #[error("membership: foca: {0}")]
    Foca(String),
    /// The membership's own thread or runtime could not start.
    #[error("membership: cannot start its thread: {0}")]
    Thread(String),
}

enum Command {
    UpdateFacts(Vec<InterfaceFacts>),
    SetKeys(Keyring),
    SetSeeds(Vec<SocketAddr>),
    SetTimings(foca::Config),
    SetHeartbeatTargets(BTreeSet<String>),
    Leave(oneshot::Sender<()>),
}

/// The running membership. Dropping it without [`MembershipHandle::leave`]
/// stops the task without a goodbye, as a crash would.
pub struct MembershipHandle {
    commands: mpsc::Sender<Command>,
    snapshot: Arc<Mutex<Vec<MemberSnapshot>>>,
    counters: Arc<Counters>,
    local: SpeakerId,
    task: tokio::task::AbortHandle,
}

/// Entry point.
pub struct Membership;

impl Membership {
    /// Bind the socket, join through the seeds and run the gossip.
    pub async fn start(
        config: MembershipConfig,
    ) -> Result<(MembershipHandle, mpsc::Receiver<MembershipEvent>), MembershipError> {
        let (commands, command_rx) = mpsc::channel(64);
        let (events_tx, events) = mpsc::channel(4096);
        let snapshot = Arc::new(Mutex::new(Vec::new()));
        let counters = Arc::new(Counters::default());
        let own_thread = config.own_thread;
        let start =
            task::MembershipTask::start(config, events_tx, snapshot.clone(), counters.clone());
        let (local, task) = if own_thread {
            on_own_thread(start, command_rx).await?
        } else {
            let started = start.await?;
            let local = started.local_id();
            (local, tokio::spawn(started.run(command_rx)).abort_handle())
        };
        Ok((
            MembershipHandle {
                commands,
                snapshot,
                counters,
                local,
                task,
            },
            events,
        ))
    }
}

/// Starts the task on a new thread with a current-thread runtime of its own; the thread
/// ends when the task does (left, or aborted by dropping the handle). The thread inherits
/// the caller's scheduling priority.
async fn on_own_thread(
    start: impl std::future::Future<Output = Result<task::MembershipTask, MembershipError>>
        + Send
        + 'static,
    command_rx: mpsc::Receiver<Command>,
) -> Result<(SpeakerId, tokio::task::AbortHandle), MembershipError> {
    type Started = Result<(SpeakerId, tokio::task::AbortHandle), MembershipError>;
    let (ready_tx, ready_rx) = oneshot::channel::<Started>();
    let spawned = std::thread::Builder::new()
        .name("membership".into())
        .spawn(move || {
            // Sockets and timers only: no signal or child-process driver to poll on every
            // one of the thread's wake-ups.
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(MembershipError::Thread(e.to_string())));
                    return;
                }
            };
            rt.block_on(async move {
                let started = match start.await {
                    Ok(started) => started,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let local = started.local_id();
                let task = tokio::spawn(started.run(command_rx));
                if ready_tx.send(Ok((local, task.abort_handle()))).is_err() {
                    task.abort();
                }
                let _ = task.await;
            });
        });
    if let Err(e) = spawned {
        return Err(MembershipError::Thread(e.to_string()));
    }
    ready_rx
        .await
        .map_err(|_| MembershipError::Thread("the membership thread ended at start".into()))?
}

impl MembershipHandle {
    /// Our own identity (its generation grows when we rejoin).
    pub fn local_id(&self) -> SpeakerId {
        self.members()
            .into_iter()
            .find(|m| m.is_self)
            .map_or_else(|| self.local.clone(), |m| m.id)
    }

    /// Every member this speaker knows (itself included), with health and facts.
    pub fn members(&self) -> Vec<MemberSnapshot> {
        self.snapshot
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The counts the split-brain guard needs ([`crate::election::may_own_l2`]).
    pub fn quorum(&self, api_reachable: bool) -> QuorumView {
        let members = self.members();
        let live = members.iter().filter(|m| m.health != Health::Down).count();
        let failed = members
            .iter()
            .filter(|m| m.health == Health::Down && !m.left)
            .count();
        QuorumView {
            live_members: live,
            known_members: live + failed,
            api_reachable,
        }
    }

    /// Datagram counters.
    pub fn stats(&self) -> MembershipStats {
        self.counters.snapshot()
    }

    /// Publish new facts about our interfaces.
    pub async fn update_facts(
        &self,
        interfaces: Vec<InterfaceFacts>,
    ) -> Result<(), MembershipError> {
        self.commands
            .send(Command::UpdateFacts(interfaces))
            .await
            .map_err(|_| MembershipError::Stopped)
    }

    /// Replace the keyring (the gossip Secret changed).
    pub async fn set_keys(&self, keys: Keyring) -> Result<(), MembershipError> {
        self.commands
            .send(Command::SetKeys(keys))
            .await
            .map_err(|_| MembershipError::Stopped)
    }

    /// Replace the seeds (cluster mode: the Node list changed). Addresses that were not
    /// seeds before are announced to at once, so a new node's speaker is found without
    /// waiting for it to find us; the list is also what a lone member rejoins through.
    pub async fn set_seeds(&self, seeds: Vec<SocketAddr>) -> Result<(), MembershipError> {
        self.commands
            .send(Command::SetSeeds(seeds))
            .await
            .map_err(|_| MembershipError::Stopped)
    }

    /// New timings for a cluster that grew or shrank (the suspicion timeout and the
    /// retransmissions scale with log N, see [`Timings::lan`]). Only the foca settings
    /// change; a bad value is refused here and the running ones stay.
    pub async fn set_timings(&self, timings: &Timings) -> Result<(), MembershipError> {
        let config = timings.foca_config()?;
        self.commands
            .send(Command::SetTimings(config))
            .await
            .map_err(|_| MembershipError::Stopped)
    }

    /// The nodes this speaker sends owner heartbeats to (the successors of the L2 IPs it
    /// owns, [`heartbeat`]); empty when it owns none. Nodes dropped from the set are told
    /// to stop watching.
    pub async fn set_heartbeat_targets(
        &self,
        nodes: BTreeSet<String>,
    ) -> Result<(), MembershipError> {
        self.commands
            .send(Command::SetHeartbeatTargets(nodes))
            .await
            .map_err(|_| MembershipError::Stopped)
    }

    /// Say goodbye and stop: the others declare us down at once.
    pub async fn leave(self) -> Result<(), MembershipError> {
        let (done, wait) = oneshot::channel();
        self.commands
            .send(Command::Leave(done))
            .await
            .map_err(|_| MembershipError::Stopped)?;
        wait.await.map_err(|_| MembershipError::Stopped)
    }
}

impl Drop for MembershipHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

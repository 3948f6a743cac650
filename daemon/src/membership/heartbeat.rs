//! Owner heartbeats: a failure detector beside SWIM for the members that own L2 IPs.
//!
//! SWIM finds any failed member, but only after a probe period, the indirect probes and a
//! suspicion that a live member may refute (about 1.2 s, [`super::Timings::lan`]), slower
//! than VRRP tuned to 0.1 s adverts (about 300 ms). The members that matter for an L2
//! failover are few: the owner of an IP and the nodes ranked next for it. So an owner
//! sends a small signed heartbeat every `heartbeat_interval` (25 ms) straight to the next
//! ranked nodes of its IPs (its successors), each heartbeat saying "declare me down if you
//! hear nothing from me for `timeout`" (175 ms) and naming the nodes it heartbeats to. The
//! owner's heartbeats stop being needed when it stops owning or the successor changes; it
//! then sends a release, and a successor stops watching.
//!
//! Silence alone does not decide at once. After `probe_after` (75 ms) of silence the
//! successor probes the owner ([`Action::Probe`]) from a socket of its own, connected to
//! the owner's gossip address:
//! - a live owner, however starved, answers with a heartbeat as soon as it runs again,
//!   which starts a new silence;
//! - on a live node whose speaker is gone (killed, crashed, restarting) nothing listens on
//!   the port and the kernel answers "port unreachable": the owner is declared down at
//!   once ([`DownCause::Refused`]), 50-75 ms after it died;
//! - a node that is gone or cut off, and a frozen or starved speaker, answer nothing: the
//!   owner is declared down when its whole timeout has passed in silence, and never before
//!   the probe has had the time it would have had if sent on time
//!   ([`DownCause::Silent`]).
//!
//! Indirect probes (SWIM's ping-req, Das et al. 2002 §4.2): with the direct probe the
//! successor also asks up to [`ASK_OTHERS`] other members about the owner ([`AskAbout`]),
//! first the other nodes the owner's heartbeats name ([`whom_to_ask`]): only they hear it
//! first-hand, and with more than three nodes the other live members mostly do not. One
//! that heard the owner's heartbeat itself within the probe delay vouches for it
//! ([`Vouch`], with how long ago), and the silence counts from then: a watcher cut off
//! from a live owner (a lossy or asymmetric path, a flooded queue on its side) does not
//! take its IPs while another member hears it. A vouch is first-hand evidence only (the
//! voucher's own last heartbeat from that identity, never one it was told about nor its
//! own grace), so a dead, frozen or cut-off owner, whom nobody hears, is declared down
//! exactly as before, and a refused probe (its port closed) is not overruled.
//!
//! A declared-down owner is declared down in the SWIM view, which gossips the verdict at
//! once to everyone (a confirmed failure, as if the suspicion timer had run out): every
//! speaker then elects the same new owner, which announces.
//!
//! # Timing budget (link cut or freeze, quiet LAN)
//!
//! The last heartbeat before the fault came 0-25 ms before it (12.5 ms on average); the
//! watcher probes and asks at 75 ms of silence (no answer: nobody hears the owner), and
//! declares it down at 175 ms of silence; the verdict, the election and the new owner's
//! first gratuitous ARP take about 10-20 ms more, a client's next attempt a few ms: a
//! median of ~200 ms from the fault to a served client, and ~225 ms at worst without
//! load (it was ~250 ms with a 225 ms timeout, measured; tuned VRRP with 0.1 s adverts
//! measured ~310-370 ms in the same runs). A SIGKILL is found by the probe at 75 ms.
//!
//! # Why a live owner is not declared down at 175 ms
//!
//! A frozen process and a starved one cannot be told apart from outside, only by how
//! long they last; 175 ms (seven heartbeats) is the floor for an owner that has been
//! regular, and four things keep a live owner up:
//! - the timeout adapts to what each owner showed lately, as the phi-accrual detector
//!   (Hayashibara et al., 2004) adapts to the arrival distribution: it is twice the longest
//!   gap seen between its heartbeats (or the longest delay its own loop reports in them),
//!   with the sender's 175 ms as the floor, and that worst gap halves every [`DECAY`]. An
//!   owner whose host gets busy shows longer gaps (and reports its own late ticks) before
//!   it shows a long one: one seen stalling for 100 ms gets 200 ms, 150 ms gets 300 ms. A
//!   gap counts up to [`GAP_CAP`] (225 ms) only, so the timeout never exceeds 450 ms and one
//!   freeze cannot leave an owner watched with a timeout of seconds;
//! - an owner on a node under CPU pressure says so before it stalls: it reports
//!   [`pressure_allowance`] of its node's `/proc/pressure/cpu` as its lateness, up to
//!   225 ms from 80 % (a timeout of 450 ms), nothing below 20 %;
//! - a live owner answers the probe as soon as it runs;
//! - a watcher that was itself starved gives every watch a fresh silence (below);
//! - a watcher cut off from a live owner hears a vouch from another watcher.
//!
//! Only a member that asked to be watched (sent a heartbeat) can be declared down this
//! way, and only while it is a live member under the same identity; a watcher whose own
//! loop was starved does not count the time it slept against anyone (the late heartbeats
//! are read first, then each watch starts a fresh silence). A member declared down while
//! alive learns it from the gossip, rejoins under a new generation and announces its IPs
//! again (see [`super::MembershipEvent::LostContact`]).
//!
//! [`Watches`] is the watcher's bookkeeping and decision, pure (time is an argument).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::SpeakerId;

/// The payload of a heartbeat frame ([`super::auth::FrameKind::Heartbeat`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The sender's identity (a watch follows one generation).
    pub id: SpeakerId,
    /// Declare the sender down after this long without a heartbeat; 0: stop watching.
    pub timeout_ms: u32,
    /// The longest its own heartbeat tick ran late lately (its scheduling delay).
    pub late_ms: u32,
    /// The nodes the sender heartbeats to (at most [`NAMED_WATCHERS`]): the members that
    /// hear it first-hand, so the ones a watcher asks about it ([`AskAbout`]). The last
    /// field, so that a speaker that predates it reads the rest and ignores it, and one
    /// that knows it reads an older heartbeat as naming nobody ([`Heartbeat::decode`]).
    pub watchers: Vec<String>,
}

/// How many of its watchers an owner names in each heartbeat: a watcher asks
/// [`ASK_OTHERS`] of them, and 8 names keep a heartbeat well inside one small datagram.
pub const NAMED_WATCHERS: usize = 8;

/// A heartbeat as speakers before [`Heartbeat::watchers`] sent it.
#[derive(Deserialize)]
struct HeartbeatV1 {
    id: SpeakerId,
    timeout_ms: u32,
    late_ms: u32,
}

impl Heartbeat {
    /// A heartbeat asking to be watched for `timeout`.
    pub fn watch_me(id: SpeakerId, timeout: Duration, late: Duration) -> Heartbeat {
        Heartbeat {
            id,
            timeout_ms: millis(timeout).max(1),
            late_ms: millis(late),
            watchers: Vec::new(),
        }
    }

    /// Names the nodes this heartbeat goes to (the first [`NAMED_WATCHERS`]).
    pub fn naming<'a>(mut self, watchers: impl IntoIterator<Item = &'a String>) -> Heartbeat {
        self.watchers = watchers.into_iter().take(NAMED_WATCHERS).cloned().collect();
        self
    }

    /// Encodes `watch_me(id, timeout, late).naming(watchers)` onto the end of `out`,
    /// borrowing the identity and the names: an owner sends one every heartbeat interval.
    pub fn encode_watch_me(
        id: &SpeakerId,
        timeout: Duration,
        late: Duration,
        watchers: &BTreeSet<String>,
        out: Vec<u8>,
    ) -> postcard::Result<Vec<u8>> {
        let hb = WatchMe {
            id,
            timeout_ms: millis(timeout).max(1),
            late_ms: millis(late),
            watchers: Named(watchers),
        };
        postcard::to_extend(&hb, out)
    }

    /// A heartbeat that ends the watch (no longer an owner the receiver succeeds).
    pub fn release(id: SpeakerId) -> Heartbeat {
        Heartbeat {
            id,
            timeout_ms: 0,
            late_ms: 0,
            watchers: Vec::new(),
        }
    }

    /// Reads a heartbeat, also one of a speaker that does not name its watchers yet.
    pub fn decode(payload: &[u8]) -> Option<Heartbeat> {
        if let Ok(hb) = postcard::from_bytes::<Heartbeat>(payload) {
            return Some(hb);
        }
        let old = postcard::from_bytes::<HeartbeatV1>(payload).ok()?;
        Some(Heartbeat {
            id: old.id,
            timeout_ms: old.timeout_ms,
            late_ms: old.late_ms,
            watchers: Vec::new(),
        })
    }
}

/// [`Heartbeat`] as [`Heartbeat::encode_watch_me`] writes it: the same fields in the same
/// order, so the same bytes.
#[derive(Serialize)]
struct WatchMe<'a> {
    id: &'a SpeakerId,
    timeout_ms: u32,
    late_ms: u32,
    watchers: Named<'a>,
}

/// The first [`NAMED_WATCHERS`] nodes of a set, written as a sequence of names.
struct Named<'a>(&'a BTreeSet<String>);

impl Serialize for Named<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().take(NAMED_WATCHERS))
    }
}

/// Whom a watcher of the silent `owner` asks about it ([`AskAbout`]): first the other
/// members the owner says it heartbeats to (they hear it first-hand, so only they can
/// vouch), then, should it name fewer than [`ASK_OTHERS`] (an older speaker names
/// nobody), other live members in `live` order. Never the owner, never `me`, each once,
/// only live members.
pub fn whom_to_ask<'a>(
    named: &[String],
    live: &'a [(String, std::net::SocketAddr)],
    me: &str,
    owner: &str,
) -> Vec<&'a (String, std::net::SocketAddr)> {
    let eligible = |m: &&(String, std::net::SocketAddr)| m.0 != me && m.0 != owner;
    let mut chosen: Vec<&(String, std::net::SocketAddr)> = named
        .iter()
        .filter_map(|n| live.iter().find(|m| m.0 == *n))
        .filter(eligible)
        .take(ASK_OTHERS)
        .collect();
    for m in live.iter().filter(eligible) {
        if chosen.len() >= ASK_OTHERS {
            break;
        }
        if !chosen.iter().any(|c| c.0 == m.0) {
            chosen.push(m);
        }
    }
    chosen
}

/// The node's CPU pressure at which an owner asks for no extra time...
pub const PRESSURE_CALM: f64 = 20.0;
/// ...and at which it asks for the whole [`GAP_CAP`] (a timeout of 450 ms).
pub const PRESSURE_BUSY: f64 = 80.0;

/// The scheduling delay an owner reports for its node's CPU pressure `some_avg10` (the
/// share of the last 10 s in which some task waited for a CPU, in %, from
/// `/proc/pressure/cpu`): none up to [`PRESSURE_CALM`], [`GAP_CAP`] from [`PRESSURE_BUSY`],
/// linear between. A watcher doubles what an owner reports ([`Watches::heard`]), so an
/// owner on a busy node is given up to 450 ms before it has shown a single long gap: on
/// the 2-core lab machine at load ~10 (pressure ~90 %) a speaker taking over 1000 IPs
/// right after its restart (no gap seen yet) stalled 178 ms, just over the 175 ms floor;
/// on a quiet node the floor holds and failover stays fast.
pub fn pressure_allowance(some_avg10: f64) -> Duration {
    if !some_avg10.is_finite() || some_avg10 <= PRESSURE_CALM {
        return Duration::ZERO;
    }
    let share = ((some_avg10 - PRESSURE_CALM) / (PRESSURE_BUSY - PRESSURE_CALM)).min(1.0);
    GAP_CAP.mul_f64(share)
}

/// `some avg10` of a `/proc/pressure/cpu` text (`some avg10=1.23 avg60=... total=...`).
pub fn parse_cpu_pressure(text: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with("some "))?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("avg10="))?
        .parse()
        .ok()
}

/// How many other members a watcher asks about a silent owner ([`AskAbout`]).
pub const ASK_OTHERS: usize = 2;

/// The payload of an indirect probe ([`super::auth::FrameKind::AskAbout`]): `asker`, whose
/// watch of `about` fell silent, asks whether the receiver heard `about` lately.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AskAbout {
    /// The watcher asking (answered at its gossip address).
    pub asker: SpeakerId,
    /// The silent owner.
    pub about: SpeakerId,
}

/// The answer to an [`AskAbout`] ([`super::auth::FrameKind::Vouch`]), sent only by a
/// member that heard a heartbeat of `about` itself, `heard_ms_ago` before sending this.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vouch {
    /// The member vouching.
    pub voucher: SpeakerId,
    /// The owner it heard.
    pub about: SpeakerId,
    /// How long before this answer it heard the owner.
    pub heard_ms_ago: u32,
}

fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

/// How long a worst gap takes to count half as much.
pub const DECAY: Duration = Duration::from_secs(20);

/// A gap (or reported delay) counts up to this or the sender's floor, whichever is
/// larger: an owner seen stalling is given at most twice this (450 ms), and one freeze
/// (a gap that ended in a verdict, or one the watcher slept through) cannot leave it
/// watched with a timeout of seconds. Above the 175 ms floor so that an owner seen
/// stalling keeps the 450 ms it had when the floor was 225 ms.
pub const GAP_CAP: Duration = Duration::from_millis(225);

/// A worst case that fades: the largest value seen, halved every [`DECAY`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorstGap {
    worst: Duration,
    since: Option<Instant>,
}

impl WorstGap {
    /// The value at `now`, decayed.
    pub fn at(&self, now: Instant) -> Duration {
        let Some(since) = self.since else {
            return Duration::ZERO;
        };
        let halvings = now.saturating_duration_since(since).as_secs_f64() / DECAY.as_secs_f64();
        self.worst.mul_f64(0.5f64.powf(halvings))
    }

    /// Records `gap` seen at `now`.
    pub fn saw(&mut self, gap: Duration, now: Instant) {
        let current = self.at(now);
        if gap >= current {
            self.worst = gap;
            self.since = Some(now);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Watch {
    id: SpeakerId,
    /// The start of the current silence (a heartbeat, a vouch, or our own grace).
    last_heard: Instant,
    /// The last heartbeat of its own we received (what we may vouch for).
    heartbeat_at: Instant,
    /// The sender's floor.
    floor: Duration,
    /// Gaps between its heartbeats and the delays it reported.
    worst: WorstGap,
    /// The timeout in force since the last heartbeat.
    timeout: Duration,
    /// When the current silence was probed.
    probed_at: Option<Instant>,
    /// A probe found its port closed: the process is gone.
    refused: bool,
    /// Whom it last said it heartbeats to ([`Heartbeat::watchers`]).
    watchers: Vec<String>,
}

impl Watch {
    fn new(id: SpeakerId, floor: Duration, now: Instant) -> Watch {
        Watch {
            id,
            last_heard: now,
            heartbeat_at: now,
            floor,
            worst: WorstGap::default(),
            timeout: floor,
            probed_at: None,
            refused: false,
            watchers: Vec::new(),
        }
    }

    /// When this watch next needs a decision: at once once refused; else the probe
    /// moment of this silence; else its timeout, and never before the probe has had the
    /// time it would have had if sent on time (a late check probes late, and waits).
    fn deadline(&self, probe_after: Duration) -> Instant {
        if self.refused {
            return self.last_heard;
        }
        let timeout = self.last_heard + self.timeout;
        if probe_after >= self.timeout {
            return timeout;
        }
        match self.probed_at {
            None => self.last_heard + probe_after,
            Some(p) => timeout.max(p + (self.timeout - probe_after)),
        }
    }
}

/// What a watcher does about a silent owner ([`Watches::due`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Silent for the probe delay: ask it directly, once per silence. A live owner answers
    /// with a heartbeat as soon as it runs; the kernel of a node whose speaker is gone
    /// answers with "port unreachable" ([`Watches::refused`]).
    Probe(SpeakerId),
    /// Declare it down in the SWIM view.
    Down(SpeakerId, DownCause),
}

/// Why a watched owner is declared down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownCause {
    /// Nothing heard for its whole timeout (crashed node, cut link, frozen or starved
    /// process: they cannot be told apart from outside, only by how long they last).
    Silent,
    /// The probe found no process behind its port (the speaker died on a live node).
    Refused,
}

/// The members a watcher watches, by node name.
#[derive(Clone, Debug)]
pub struct Watches {
    by_node: BTreeMap<String, Watch>,
    /// Silence after which an owner is probed.
    probe_after: Duration,
}

impl Watches {
    /// No watch yet; owners silent for `probe_after` get probed.
    pub fn new(probe_after: Duration) -> Watches {
        Watches {
            by_node: BTreeMap::new(),
            probe_after,
        }
    }

    /// A heartbeat arrived at `now`. A heartbeat from an older generation than the one
    /// watched is ignored; a release ends the watch. Returns the silence it ended, if it
    /// continued a watch.
    pub fn heard(&mut self, hb: &Heartbeat, now: Instant) -> Option<Duration> {
        if let Some(w) = self.by_node.get(&hb.id.node) {
            if w.id.generation > hb.id.generation {
                return None;
            }
        }
        if hb.timeout_ms == 0 {
            self.by_node.remove(&hb.id.node);
            return None;
        }
        let floor = Duration::from_millis(u64::from(hb.timeout_ms));
        let late = Duration::from_millis(u64::from(hb.late_ms));
        let mut fresh = false;
        // Looked up before inserting: the node's name is copied once per watch, not per
        // heartbeat.
        if !self.by_node.contains_key(&hb.id.node) {
            self.by_node
                .insert(hb.id.node.clone(), Watch::new(hb.id.clone(), floor, now));
            fresh = true;
        }
        let w = self.by_node.get_mut(&hb.id.node)?;
        if w.id != hb.id {
            // A newer generation: a new member, with no history.
            *w = Watch::new(hb.id.clone(), floor, now);
            fresh = true;
        }
        let gap = now.saturating_duration_since(w.last_heard);
        let cap = floor.max(GAP_CAP);
        w.worst.saw(gap.min(cap), now);
        w.worst.saw(late.min(cap), now);
        w.last_heard = now;
        w.heartbeat_at = now;
        w.floor = floor;
        w.timeout = floor.max(w.worst.at(now) * 2);
        w.probed_at = None;
        w.refused = false;
        if w.watchers != hb.watchers {
            w.watchers.clone_from(&hb.watchers);
        }
        (!fresh).then_some(gap)
    }

    /// A probe of `id` was answered by "port unreachable": its speaker is gone. Only the
    /// watch of that very identity is affected.
    pub fn refused(&mut self, id: &SpeakerId) {
        if let Some(w) = self.by_node.get_mut(&id.node) {
            if w.id == *id {
                w.refused = true;
            }
        }
    }

    /// When we last received a heartbeat of `id` itself, if we watch that identity and it
    /// was at most `within` before `now` (what an [`AskAbout`] may be answered with).
    pub fn heard_within(&self, id: &SpeakerId, now: Instant, within: Duration) -> Option<Duration> {
        let w = self.by_node.get(&id.node).filter(|w| w.id == *id)?;
        let ago = now.saturating_duration_since(w.heartbeat_at);
        (ago <= within).then_some(ago)
    }

    /// Another member heard `id` itself at `heard_at` ([`Vouch`]): the silence counts from
    /// then, if that is later than what we know, and the owner may be probed again. Only
    /// that very identity's watch is affected, and a refusal stands (its port was closed
    /// after anything a voucher heard, or the port is someone else's now).
    pub fn vouched(&mut self, id: &SpeakerId, heard_at: Instant) -> bool {
        let Some(w) = self.by_node.get_mut(&id.node).filter(|w| w.id == *id) else {
            return false;
        };
        if w.refused || heard_at <= w.last_heard {
            return false;
        }
        w.last_heard = heard_at;
        w.probed_at = None;
        true
    }

    /// The member is down or gone by other means: stop watching it.
    pub fn forget(&mut self, id: &SpeakerId) {
        if self
            .by_node
            .get(&id.node)
            .is_some_and(|w| w.id.generation <= id.generation)
        {
            self.by_node.remove(&id.node);
        }
    }

    /// Our own loop was starved until `now`: the heartbeats that could arrive were read,
    /// the time asleep is nobody's fault, so every watch starts a fresh silence (a probe
    /// sent meanwhile may be sent again; a refusal stands).
    pub fn grace(&mut self, now: Instant) {
        for w in self.by_node.values_mut() {
            if w.last_heard < now {
                w.last_heard = now;
                w.probed_at = None;
            }
        }
    }

    /// When the next watch needs a decision, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_node
            .values()
            .map(|w| w.deadline(self.probe_after))
            .min()
    }

    /// What to do at `now`: probe the owners silent for the probe delay (once per
    /// silence), declare down those refused or silent past their timeout after a probe
    /// (their watch ends).
    pub fn due(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        let mut ended = Vec::new();
        let probe_after = self.probe_after;
        for (node, w) in &mut self.by_node {
            let probes = probe_after < w.timeout;
            if w.refused {
                actions.push(Action::Down(w.id.clone(), DownCause::Refused));
                ended.push(node.clone());
            } else if probes && w.probed_at.is_none() {
                if w.last_heard + probe_after <= now {
                    w.probed_at = Some(now);
                    actions.push(Action::Probe(w.id.clone()));
                }
            } else if w.deadline(probe_after) <= now {
                actions.push(Action::Down(w.id.clone(), DownCause::Silent));
                ended.push(node.clone());
            }
        }
        for node in ended {
            self.by_node.remove(&node);
        }
        actions
    }

    /// The nodes the watched `id` last said it heartbeats to (empty if not watched).
    pub fn watchers_of(&self, id: &SpeakerId) -> &[String] {
        self.by_node
            .get(&id.node)
            .filter(|w| w.id == *id)
            .map_or(&[], |w| w.watchers.as_slice())
    }

    /// Whether `node` is watched under identity `id` (a probe answer is for that watch).
    pub fn watches(&self, id: &SpeakerId) -> bool {
        self.by_node.get(&id.node).is_some_and(|w| w.id == *id)
    }

    /// The nodes watched now.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.by_node.keys().map(String::as_str)
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.by_node.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_watch_me_is_the_heartbeat_it_stands_for() {
        let id = SpeakerId {
            node: "node-a".into(),
            addr: "192.0.2.1:7946".parse().expect("literal"),
            generation: 1_765_000_000_123,
        };
        for n in [0, 1, 3, NAMED_WATCHERS, NAMED_WATCHERS + 3] {
            let targets: BTreeSet<String> = (0..n).map(|i| format!("node-{i}")).collect();
            let (timeout, late) = (Duration::from_millis(175), Duration::from_micros(4_700));
            let want = Heartbeat::watch_me(id.clone(), timeout, late).naming(&targets);
            let bytes = Heartbeat::encode_watch_me(&id, timeout, late, &targets, vec![9, 9])
                .expect("encodes");
            assert_eq!(bytes[..2], [9, 9], "appended to what was there");
            assert_eq!(
                bytes[2..],
                postcard::to_allocvec(&want).expect("encodes")[..]
            );
            assert_eq!(Heartbeat::decode(&bytes[2..]), Some(want));
        }
    }
    use proptest::prelude::*;

    fn id(node: &str, generation: u64) -> SpeakerId {
        SpeakerId {
            node: node.into(),
            addr: "192.0.2.1:7946".parse().expect("literal"),
            generation,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Watches that never probe: the timeout alone decides.
    fn no_probes() -> Watches {
        Watches::new(Duration::MAX)
    }

    /// The members `due` declares down at `now`.
    fn downs(w: &mut Watches, now: Instant) -> Vec<SpeakerId> {
        w.due(now)
            .into_iter()
            .filter_map(|a| match a {
                Action::Down(id, _) => Some(id),
                Action::Probe(_) => None,
            })
            .collect()
    }

    #[test]
    fn a_watched_member_silent_for_its_timeout_is_expired_once() {
        let t0 = Instant::now();
        let mut w = no_probes();
        w.heard(&Heartbeat::watch_me(id("a", 1), ms(200), ms(0)), t0);
        w.heard(
            &Heartbeat::watch_me(id("a", 1), ms(200), ms(0)),
            t0 + ms(25),
        );
        assert_eq!(w.next_deadline(), Some(t0 + ms(225)));
        assert!(downs(&mut w, t0 + ms(224)).is_empty());
        assert_eq!(downs(&mut w, t0 + ms(225)), vec![id("a", 1)]);
        assert!(downs(&mut w, t0 + ms(500)).is_empty(), "expired once");
        assert!(w.is_empty());
    }

    #[test]
    fn a_silent_owner_is_probed_once_then_declared_down_at_its_timeout() {
        let t0 = Instant::now();
        let mut w = Watches::new(ms(100));
        let hb = Heartbeat::watch_me(id("a", 1), ms(200), ms(0));
        w.heard(&hb, t0);
        assert_eq!(w.next_deadline(), Some(t0 + ms(100)));
        assert!(w.due(t0 + ms(99)).is_empty());
        assert_eq!(w.due(t0 + ms(100)), vec![Action::Probe(id("a", 1))]);
        assert_eq!(w.next_deadline(), Some(t0 + ms(200)));
        assert!(w.due(t0 + ms(150)).is_empty(), "probed once per silence");
        assert_eq!(
            w.due(t0 + ms(200)),
            vec![Action::Down(id("a", 1), DownCause::Silent)]
        );
    }

    #[test]
    fn an_answered_probe_starts_a_new_silence() {
        let t0 = Instant::now();
        let mut w = Watches::new(ms(100));
        let hb = Heartbeat::watch_me(id("a", 1), ms(200), ms(0));
        w.heard(&hb, t0);
        assert_eq!(w.due(t0 + ms(100)), vec![Action::Probe(id("a", 1))]);
        // The starved owner ran at 180 ms and answered: alive, a new silence.
        assert_eq!(w.heard(&hb, t0 + ms(180)), Some(ms(180)));
        assert!(w.due(t0 + ms(200)).is_empty());
        // Twice the 180 ms gap (capped at the floor): 360 ms from now.
        assert_eq!(w.due(t0 + ms(280)), vec![Action::Probe(id("a", 1))]);
        assert!(w.due(t0 + ms(539)).is_empty());
        assert_eq!(downs(&mut w, t0 + ms(540)), vec![id("a", 1)]);
    }

    #[test]
    fn a_refused_probe_declares_down_at_once_but_only_that_identity() {
        let t0 = Instant::now();
        let mut w = Watches::new(ms(100));
        w.heard(&Heartbeat::watch_me(id("a", 2), ms(200), ms(0)), t0);
        assert_eq!(w.due(t0 + ms(100)), vec![Action::Probe(id("a", 2))]);
        // A refusal about an older identity changes nothing.
        w.refused(&id("a", 1));
        assert_eq!(w.next_deadline(), Some(t0 + ms(200)));
        w.refused(&id("a", 2));
        assert_eq!(w.next_deadline(), Some(t0));
        // The watcher's own starvation does not undo the evidence.
        w.grace(t0 + ms(400));
        assert_eq!(
            w.due(t0 + ms(400)),
            vec![Action::Down(id("a", 2), DownCause::Refused)]
        );
        assert!(w.is_empty());
    }

    #[test]
    fn a_vouch_restarts_the_silence_from_when_the_voucher_heard_the_owner() {
        let t0 = Instant::now();
        let mut w = Watches::new(ms(100));
        let hb = Heartbeat::watch_me(id("a", 1), ms(200), ms(0));
        w.heard(&hb, t0);
        assert_eq!(w.due(t0 + ms(100)), vec![Action::Probe(id("a", 1))]);
        // Another member heard it at 90 ms: silent since then, probed again at 190 ms.
        assert!(w.vouched(&id("a", 1), t0 + ms(90)));
        assert!(w.due(t0 + ms(189)).is_empty());
        assert_eq!(w.due(t0 + ms(190)), vec![Action::Probe(id("a", 1))]);
        assert!(w.due(t0 + ms(289)).is_empty());
        assert_eq!(downs(&mut w, t0 + ms(290)), vec![id("a", 1)]);
    }

    #[test]
    fn a_vouch_is_for_one_identity_never_older_than_what_we_know_and_never_beats_a_refusal() {
        let t0 = Instant::now();
        let mut w = Watches::new(ms(100));
        w.heard(
            &Heartbeat::watch_me(id("a", 2), ms(200), ms(0)),
            t0 + ms(50),
        );
        assert!(!w.vouched(&id("a", 1), t0 + ms(120)), "another identity");
        assert!(!w.vouched(&id("b", 2), t0 + ms(120)), "not watched");
        assert!(!w.vouched(&id("a", 2), t0 + ms(40)), "older than our own");
        assert_eq!(w.due(t0 + ms(150)), vec![Action::Probe(id("a", 2))]);
        w.refused(&id("a", 2));
        assert!(!w.vouched(&id("a", 2), t0 + ms(149)));
        assert_eq!(
            w.due(t0 + ms(150)),
            vec![Action::Down(id("a", 2), DownCause::Refused)]
        );
    }

    #[test]
    fn only_heartbeats_of_our_own_are_vouched_for() {
        let t0 = Instant::now();
        let mut w = Watches::new(ms(100));
        w.heard(&Heartbeat::watch_me(id("a", 1), ms(200), ms(0)), t0);
        assert_eq!(
            w.heard_within(&id("a", 1), t0 + ms(60), ms(100)),
            Some(ms(60))
        );
        assert_eq!(w.heard_within(&id("a", 1), t0 + ms(101), ms(100)), None);
        assert_eq!(w.heard_within(&id("a", 2), t0 + ms(10), ms(100)), None);
        // Neither our own grace nor a vouch we received is first-hand evidence.
        w.grace(t0 + ms(150));
        w.vouched(&id("a", 1), t0 + ms(160));
        assert_eq!(w.heard_within(&id("a", 1), t0 + ms(170), ms(100)), None);
    }

    fn member(node: &str, port: u16) -> (String, std::net::SocketAddr) {
        (
            node.into(),
            std::net::SocketAddr::from(([192, 0, 2, 9], port)),
        )
    }

    #[test]
    fn the_owners_other_watchers_are_asked_first_not_the_first_live_members() {
        // Seven nodes; the owner "o" heartbeats to "w1" and "w5": the first live members
        // in view order ("x2", "x3") never hear it, so only "w5" can vouch to "w1".
        let live: Vec<_> = ["o", "x2", "x3", "w1", "x4", "w5", "x6"]
            .iter()
            .zip(1u16..)
            .map(|(n, p)| member(n, p))
            .collect();
        let named = vec!["w1".to_string(), "w5".to_string()];
        let asked: Vec<&str> = whom_to_ask(&named, &live, "w1", "o")
            .iter()
            .map(|m| m.0.as_str())
            .collect();
        assert_eq!(asked, vec!["w5", "x2"], "the other watcher, then one more");
        // An older owner names nobody: the first live others, as before.
        let asked: Vec<&str> = whom_to_ask(&[], &live, "w1", "o")
            .iter()
            .map(|m| m.0.as_str())
            .collect();
        assert_eq!(asked, vec!["x2", "x3"]);
        // A named watcher that is not a live member is not asked.
        let named = vec!["gone".to_string(), "w1".to_string(), "x6".to_string()];
        let asked: Vec<&str> = whom_to_ask(&named, &live, "w1", "o")
            .iter()
            .map(|m| m.0.as_str())
            .collect();
        assert_eq!(asked, vec!["x6", "x2"]);
    }

    #[test]
    fn a_heartbeat_names_its_watchers_and_one_of_an_older_speaker_still_reads() {
        let names: Vec<String> = (0..12).map(|i| format!("n{i}")).collect();
        let hb = Heartbeat::watch_me(id("a", 1), ms(175), ms(3)).naming(&names);
        assert_eq!(hb.watchers.len(), NAMED_WATCHERS);
        let bytes = postcard::to_allocvec(&hb).expect("encode");
        assert_eq!(Heartbeat::decode(&bytes), Some(hb.clone()));
        // What a speaker before the watcher list sent: the same fields, nothing after.
        #[derive(Serialize)]
        struct V1 {
            id: SpeakerId,
            timeout_ms: u32,
            late_ms: u32,
        }
        let old = postcard::to_allocvec(&V1 {
            id: id("a", 1),
            timeout_ms: 225,
            late_ms: 3,
        })
        .expect("encode");
        let read = Heartbeat::decode(&old).expect("an older heartbeat reads");
        assert_eq!((read.timeout_ms, read.late_ms), (225, 3));
        assert!(read.watchers.is_empty());
        // And an older speaker reads ours (postcard ignores what follows its fields).
        #[derive(Deserialize, Debug, PartialEq)]
        struct OldReader {
            id: SpeakerId,
            timeout_ms: u32,
            late_ms: u32,
        }
        let seen: OldReader = postcard::from_bytes(&bytes).expect("read by an older speaker");
        assert_eq!((seen.timeout_ms, seen.late_ms), (175, 3));
        assert_eq!(Heartbeat::decode(&bytes[..3]), None, "garbage is refused");
    }

    #[test]
    fn a_watch_remembers_whom_the_owner_names() {
        let t0 = Instant::now();
        let mut w = Watches::new(ms(75));
        let named = ["b".to_string(), "c".to_string()];
        w.heard(
            &Heartbeat::watch_me(id("a", 1), ms(175), ms(0)).naming(&named),
            t0,
        );
        assert_eq!(w.watchers_of(&id("a", 1)), &named[..]);
        assert!(w.watchers_of(&id("a", 2)).is_empty(), "another identity");
    }

    #[test]
    fn a_busy_node_asks_for_more_time_and_a_calm_one_for_none() {
        let text = "some avg10=93.74 avg60=91.83 avg300=96.07 total=25807440689\n\
                    full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n";
        assert_eq!(parse_cpu_pressure(text), Some(93.74));
        assert_eq!(parse_cpu_pressure("full avg10=1.00\n"), None);
        assert_eq!(parse_cpu_pressure(""), None);
        assert_eq!(pressure_allowance(0.0), Duration::ZERO);
        assert_eq!(pressure_allowance(PRESSURE_CALM), Duration::ZERO);
        assert_eq!(pressure_allowance(50.0), GAP_CAP / 2);
        assert_eq!(pressure_allowance(93.74), GAP_CAP);
        assert_eq!(pressure_allowance(f64::NAN), Duration::ZERO);
        // Reported as lateness, it doubles into the watcher's timeout: 450 ms when busy.
        let t0 = Instant::now();
        let mut w = Watches::new(ms(75));
        let busy = Heartbeat::watch_me(id("a", 1), ms(175), pressure_allowance(93.74));
        w.heard(&busy, t0);
        w.heard(&busy, t0 + ms(25));
        assert_eq!(w.next_deadline(), Some(t0 + ms(25) + ms(75)), "probe first");
        assert_eq!(w.due(t0 + ms(100)), vec![Action::Probe(id("a", 1))]);
        assert!(w.due(t0 + ms(25) + ms(449)).is_empty());
        assert_eq!(downs(&mut w, t0 + ms(25) + ms(450)), vec![id("a", 1)]);
    }

    #[test]
    fn a_release_ends_the_watch_and_an_old_generation_is_ignored() {
        let t0 = Instant::now();
        let mut w = no_probes();
        w.heard(&Heartbeat::watch_me(id("a", 2), ms(200), ms(0)), t0);
        w.heard(&Heartbeat::release(id("a", 1)), t0 + ms(10));
        assert_eq!(w.nodes().collect::<Vec<_>>(), vec!["a"], "stale release");
        w.heard(&Heartbeat::release(id("a", 2)), t0 + ms(20));
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn forgetting_a_member_down_by_other_means_ends_its_watch_but_not_a_newer_ones() {
        let t0 = Instant::now();
        let mut w = no_probes();
        w.heard(&Heartbeat::watch_me(id("a", 3), ms(200), ms(0)), t0);
        w.forget(&id("a", 2));
        assert!(
            !w.is_empty(),
            "a down older generation leaves the new one watched"
        );
        w.forget(&id("a", 3));
        assert!(w.is_empty());
    }

    #[test]
    fn a_starved_watcher_gives_every_watch_a_fresh_timeout() {
        let t0 = Instant::now();
        let mut w = Watches::new(ms(100));
        w.heard(&Heartbeat::watch_me(id("a", 1), ms(200), ms(0)), t0);
        // Asleep for 500 ms: on waking, the grace comes before the check.
        w.grace(t0 + ms(500));
        assert!(w.due(t0 + ms(500)).is_empty());
        assert_eq!(
            w.next_deadline(),
            Some(t0 + ms(600)),
            "probe after the grace"
        );
    }

    #[test]
    fn an_owner_seen_stalling_gets_twice_its_worst_gap_which_fades() {
        let t0 = Instant::now();
        let mut w = no_probes();
        let hb = Heartbeat::watch_me(id("a", 1), ms(200), ms(0));
        w.heard(&hb, t0);
        w.heard(&hb, t0 + ms(150));
        assert_eq!(w.next_deadline(), Some(t0 + ms(150) + ms(300)));
        // Regular again for two decay periods: a quarter of the worst gap, the floor rules.
        let later = t0 + ms(150) + 2 * DECAY;
        for i in 0..=(2 * DECAY.as_millis() as u64 / 25) {
            w.heard(&hb, t0 + ms(150 + 25 * i));
        }
        w.heard(&hb, later);
        assert_eq!(w.next_deadline(), Some(later + ms(200)));
        // A delay the sender reports counts like a gap.
        w.heard(
            &Heartbeat::watch_me(id("a", 1), ms(200), ms(180)),
            later + ms(25),
        );
        assert_eq!(w.next_deadline(), Some(later + ms(25) + ms(360)));
    }

    #[test]
    fn a_gap_counts_up_to_the_cap_so_one_freeze_does_not_leave_a_timeout_of_seconds() {
        let t0 = Instant::now();
        let mut w = no_probes();
        let hb = Heartbeat::watch_me(id("a", 1), ms(175), ms(0));
        w.heard(&hb, t0);
        // The watcher slept through 3 s (grace): the time asleep is no gap of the owner's.
        w.grace(t0 + ms(3000));
        w.heard(&hb, t0 + ms(3000));
        assert_eq!(w.next_deadline(), Some(t0 + ms(3000) + ms(175)));
        // The owner says it was 2.9 s late: it counts as the cap (225 ms), not as 2.9 s.
        let reported = Heartbeat::watch_me(id("a", 1), ms(175), ms(2900));
        w.heard(&reported, t0 + ms(3025));
        assert_eq!(w.next_deadline(), Some(t0 + ms(3025) + 2 * GAP_CAP));
        // A floor above the cap caps at the floor.
        let mut w = no_probes();
        let slow = Heartbeat::watch_me(id("b", 1), ms(300), ms(2900));
        w.heard(&slow, t0);
        assert_eq!(w.next_deadline(), Some(t0 + ms(600)));
    }

    /// One step of a watcher's life in the property below.
    #[derive(Clone, Debug)]
    enum Step {
        /// A heartbeat (or probe answer) arrives after this many ms.
        Heard(u64),
        /// The watcher checks after this many ms.
        Check(u64),
        /// A probe is refused after this many ms.
        Refused(u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u64..300).prop_map(Step::Heard),
            (0u64..300).prop_map(Step::Check),
            (0u64..300).prop_map(Step::Refused),
        ]
    }

    proptest! {
        /// Whatever the order of heartbeats and checks, a member is expired only after
        /// hearing nothing from it for its whole timeout, which is never below the floor
        /// and never below twice the gap it just showed (capped at the floor; older gaps
        /// fade).
        #[test]
        fn a_member_heard_within_its_timeout_is_never_expired(
            gaps in proptest::collection::vec(0u64..300, 1..60),
            floor in 2u64..400,
        ) {
            let t0 = Instant::now();
            let mut w = no_probes();
            let mut t = t0;
            let mut last = t0;
            let mut previous = 0;
            w.heard(&Heartbeat::watch_me(id("a", 1), ms(floor), ms(0)), t);
            for g in gaps {
                t += ms(g);
                let deadline = w.next_deadline().expect("watched");
                // The gap just seen counts in full (up to the floor), twice; older ones fade.
                prop_assert!(deadline >= last + ms(floor).max(ms(2 * previous.min(floor))));
                let expired = downs(&mut w, t);
                prop_assert_eq!(!expired.is_empty(), t >= deadline);
                if !expired.is_empty() {
                    break;
                }
                w.heard(&Heartbeat::watch_me(id("a", 1), ms(floor), ms(0)), t);
                previous = g;
                last = t;
            }
        }

        /// Indirect probes: a vouch is evidence of life at a moment, never more. A silent
        /// owner is declared down no earlier than its floor after the latest evidence (its
        /// own heartbeat or a vouch we accepted), and an owner that died after its last
        /// heartbeat, vouched for only up to then (nobody can hear it later), is still
        /// declared down within its timeout (the floor, or twice the longest gap it showed,
        /// capped) plus two checks.
        #[test]
        fn vouches_delay_a_verdict_only_up_to_the_latest_evidence(
            gaps in proptest::collection::vec(0u64..120, 1..10),
            vouches in proptest::collection::vec((any::<bool>(), 0u64..500), 0..40),
            floor in 50u64..300,
            probe_after in 20u64..150,
        ) {
            let t0 = Instant::now();
            let mut w = Watches::new(ms(probe_after));
            let hb = Heartbeat::watch_me(id("a", 1), ms(floor), ms(0));
            let mut t = t0;
            w.heard(&hb, t);
            let longest = gaps.iter().copied().max().unwrap_or(0);
            for g in gaps {
                t += ms(g);
                w.heard(&hb, t);
            }
            // The timeout in force: the floor, or twice the longest gap (capped).
            let timeout = floor.max(2 * longest.min(floor.max(GAP_CAP.as_millis() as u64)));
            let died = t;
            let mut evidence = died;
            let mut vouches = vouches.into_iter();
            let mut down_at = None;
            while t < died + ms(5 * timeout) {
                t += ms(10);
                if let Some((after_death, ago)) = vouches.next() {
                    // A voucher heard it at most `ago` ago; after its death only if the
                    // case says so (then it was alive after all: evidence moves on).
                    let heard_at = t.checked_sub(ms(ago)).unwrap_or(t0).max(t0);
                    let heard_at = if after_death { heard_at } else { heard_at.min(died) };
                    if w.vouched(&id("a", 1), heard_at) {
                        evidence = evidence.max(heard_at);
                    }
                }
                for a in w.due(t) {
                    if let Action::Down(_, cause) = a {
                        prop_assert_eq!(cause, DownCause::Silent);
                        prop_assert!(t >= evidence + ms(floor), "down {:?} after evidence", t - evidence);
                        down_at = Some(t);
                    }
                }
                if down_at.is_some() {
                    break;
                }
            }
            if evidence == died {
                let at = down_at.expect("a dead owner is declared down");
                prop_assert!(at <= died + ms(timeout + 20), "down {:?} after death", at - died);
            }
        }

        /// With probes: a live owner (heard, never refused) is declared down only after its
        /// whole timeout of silence, and only after one probe of that silence; a probe
        /// comes no earlier than the probe delay; a refusal declares down at the next
        /// check, whatever the silence.
        #[test]
        fn probes_come_first_and_only_silence_or_a_refusal_declares_down(
            steps in proptest::collection::vec(step(), 1..80),
            floor in 50u64..400,
            probe_after in 1u64..400,
        ) {
            let t0 = Instant::now();
            let mut w = Watches::new(ms(probe_after));
            let hb = Heartbeat::watch_me(id("a", 1), ms(floor), ms(0));
            w.heard(&hb, t0);
            let (mut t, mut last, mut probes, mut refused) = (t0, t0, 0, false);
            let mut probed_at = None;
            for s in steps {
                match s {
                    Step::Heard(g) => {
                        t += ms(g);
                        w.heard(&hb, t);
                        (last, probes, refused, probed_at) = (t, 0, false, None);
                    }
                    Step::Refused(g) => {
                        t += ms(g);
                        w.refused(&id("a", 1));
                        refused = true;
                    }
                    Step::Check(g) => {
                        t += ms(g);
                        for a in w.due(t) {
                            match a {
                                Action::Probe(_) => {
                                    prop_assert!(t >= last + ms(probe_after));
                                    probes += 1;
                                    probed_at = Some(t);
                                    prop_assert_eq!(probes, 1, "one probe per silence");
                                }
                                Action::Down(_, DownCause::Refused) => prop_assert!(refused),
                                Action::Down(_, DownCause::Silent) => {
                                    prop_assert!(!refused);
                                    prop_assert!(t >= last + ms(floor));
                                    if probe_after < floor {
                                        // The probe had its whole window to be answered.
                                        let p = probed_at.expect("probed before down");
                                        prop_assert!(t >= p + ms(floor - probe_after));
                                    }
                                }
                            }
                        }
                        if w.is_empty() {
                            break;
                        }
                        if refused {
                            prop_assert!(false, "a refusal is acted on at the next check");
                        }
                    }
                }
            }
        }
    }
}

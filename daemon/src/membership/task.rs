//! The membership task: foca's runtime (socket, timers, notifications).
//!
//! One task owns everything; nothing here blocks: datagrams go out with
//! `try_send_to` (a full socket buffer drops a datagram, which SWIM tolerates
//! like any loss), events with `try_send` (counted when dropped; the snapshot
//! stays authoritative).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::iter;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foca::{AccumulatingRuntime, Foca, Member, OwnedNotification, PostcardCodec, State, Timer};
use rand::rngs::{SmallRng, SysRng};
use rand::SeedableRng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::auth::FrameKind;
use super::facts::{self, FactsBook, FactsHandler, FactsState, MemberFacts};
use super::heartbeat::{
    parse_cpu_pressure, pressure_allowance, whom_to_ask, Action, AskAbout, DownCause, Heartbeat,
    Vouch, Watches, WorstGap,
};
use super::phase;
use super::{
    Command, Counters, DownReason, Health, Keyring, LostContact, MemberSnapshot, MembershipConfig,
    MembershipError, MembershipEvent, SpeakerId, Timings,
};
use crate::election::InterfaceFacts;

type SwimState = Foca<SpeakerId, PostcardCodec, SmallRng, FactsHandler>;

/// Goodbye frames are sent this many times: a lost goodbye only costs a
/// failure-detection period, but two copies make that rare.
const GOODBYE_COPIES: usize = 2;

/// Datagrams read from the socket before due timers fire.
const DRAIN_MAX: usize = 64;

/// The deadline of a sleep with nothing to wait for (no timer, no watch): out of reach.
const IDLE: Duration = Duration::from_secs(86_400 * 365 * 30);

pub(super) struct MembershipTask {
    swim: SwimState,
    runtime: AccumulatingRuntime<SpeakerId>,
    socket: UdpSocket,
    keys: Keyring,
    seeds: Vec<SocketAddr>,
    /// Addresses of members known before we were left alone; announced to
    /// (with the seeds) until someone answers.
    rejoin_addrs: Vec<SocketAddr>,
    /// Set when every other member went down (see [`Self::reset`]).
    reset_pending: bool,
    /// Failed members of the view dropped by [`Self::reset`]: still shown
    /// (down) so that the quorum keeps counting them until they are back.
    remembered_down: Vec<SpeakerId>,
    foca_config: foca::Config,
    timings: Timings,
    timers: BTreeMap<(Instant, u64), Timer<SpeakerId>>,
    timer_seq: u64,
    book: FactsBook,
    own_facts: MemberFacts,
    left: HashSet<SpeakerId>,
    /// Events wait here until the snapshot reflects them, so a consumer
    /// that reads `members()` on an event sees the change.
    pending: Vec<MembershipEvent>,
    events: mpsc::Sender<MembershipEvent>,
    snapshot: Arc<Mutex<Vec<MemberSnapshot>>>,
    counters: Arc<Counters>,
    /// Nodes we send owner heartbeats to ([`super::heartbeat`]).
    heartbeat_targets: BTreeSet<String>,
    /// Owners we watch for their heartbeats.
    watches: Watches,
    /// When our heartbeat tick last ran (a late tick means we were starved).
    last_beat: Instant,
    /// How late our heartbeat tick ran lately (told to the watchers).
    late: WorstGap,
    /// What our node's CPU pressure asks for ([`pressure_allowance`]), and when read.
    pressure: Duration,
    pressure_read: Option<Instant>,
    /// Set by a view reset; the next time we are connected we found the others again.
    reconnecting: bool,
    /// Probes whose target's port was closed come back here ([`probe`]).
    refused_tx: mpsc::UnboundedSender<SpeakerId>,
    refused_rx: mpsc::UnboundedReceiver<SpeakerId>,
    /// Kept between uses: the heartbeat's payload, and the frame last sealed.
    beat_payload: Vec<u8>,
    frame: Vec<u8>,
}

impl MembershipTask {
    pub(super) async fn start(
        config: MembershipConfig,
        events: mpsc::Sender<MembershipEvent>,
        snapshot: Arc<Mutex<Vec<MemberSnapshot>>>,
        counters: Arc<Counters>,
    ) -> Result<Self, MembershipError> {
        let foca_config = config.timings.foca_config()?;
        let socket =
            UdpSocket::bind(config.bind)
                .await
                .map_err(|source| MembershipError::Bind {
                    addr: config.bind,
                    source,
                })?;
        let generation = config.generation.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        });
        // Port 0 in the advertised address means "the port we were given".
        let mut advertise = config.advertise;
        if advertise.port() == 0 {
            let bound = socket
                .local_addr()
                .map_err(|source| MembershipError::Bind {
                    addr: config.bind,
                    source,
                })?;
            advertise.set_port(bound.port());
        }
        let id = SpeakerId {
            node: config.node.clone(),
            addr: advertise,
            generation,
        };
        let book = FactsBook::default();
        let (refused_tx, refused_rx) = mpsc::unbounded_channel();
        let watches = Watches::new(config.timings.heartbeat_probe_after);
        let swim = Foca::with_custom_broadcast(
            id.clone(),
            foca_config.clone(),
            seeded_rng(),
            PostcardCodec,
            FactsHandler { book: book.clone() },
        );
        let own_facts = MemberFacts {
            node: config.node,
            generation,
            version: 1,
            interfaces: config.interfaces,
        };
        let mut task = MembershipTask {
            swim,
            runtime: AccumulatingRuntime::new(),
            socket,
            keys: config.keys,
            seeds: config.seeds,
            rejoin_addrs: Vec::new(),
            reset_pending: false,
            remembered_down: Vec::new(),
            foca_config,
            timings: config.timings,
            timers: BTreeMap::new(),
            timer_seq: 0,
            book,
            own_facts,
            left: HashSet::new(),
            pending: Vec::new(),
            events,
            snapshot,
            counters,
            heartbeat_targets: BTreeSet::new(),
            watches,
            last_beat: Instant::now(),
            late: WorstGap::default(),
            pressure: Duration::ZERO,
            pressure_read: None,
            reconnecting: false,
            refused_tx,
            refused_rx,
            beat_payload: Vec::new(),
            frame: Vec::new(),
        };
        task.publish_own_facts();
        task.announce_to_seeds();
        task.flush();
        Ok(task)
    }

    pub(super) fn local_id(&self) -> SpeakerId {
        self.swim.identity().clone()
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf = vec![0u8; 64 * 1024];
        let mut rejoin = tokio::time::interval(self.timings.rejoin_period);
        let mut refresh = tokio::time::interval(self.timings.facts_refresh);
        self.last_beat = Instant::now();
        // The heartbeat tick on the wall clock's phase ([`super::phase`]): every node's
        // ticks and heartbeats fall in one window, read in fewer wake-ups.
        let mut beat = std::pin::pin!(tokio::time::sleep(self.until_beat(Duration::ZERO)));
        // The two deadlines sleep in futures kept across iterations, replaced only when the
        // deadline moves: most events (a heartbeat sent, an ack) move neither.
        let idle = tokio::time::Instant::now() + IDLE;
        let mut timer_sleep = std::pin::pin!(tokio::time::sleep_until(idle));
        let mut watch_sleep = std::pin::pin!(tokio::time::sleep_until(idle));
        loop {
            let next_timer = self
                .timers
                .keys()
                .next()
                .map_or(idle, |(at, _)| (*at).into());
            if timer_sleep.deadline() != next_timer {
                timer_sleep.set(tokio::time::sleep_until(next_timer));
            }
            let watch_deadline = self.watches.next_deadline().map_or(idle, Into::into);
            if watch_sleep.deadline() != watch_deadline {
                watch_sleep.set(tokio::time::sleep_until(watch_deadline));
            }
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_datagram(&buf[..len], from),
                    Err(e) => warn!(error = %e, "gossip socket receive failed"),
                },
                () = &mut timer_sleep => {
                    // A starved task wakes with acks waiting and probe timers
                    // due: read the acks first, or a slow node would suspect
                    // healthy peers (Lifeguard's local health, in its
                    // simplest form).
                    self.drain_socket(&mut buf);
                    self.fire_due_timers();
                }
                command = commands.recv() => match command {
                    None => return,
                    Some(Command::UpdateFacts(interfaces)) => self.update_facts(interfaces),
                    Some(Command::SetKeys(keys)) => {
                        info!(current_key = keys.current_id(), "gossip keys replaced");
                        self.keys = keys;
                    }
                    Some(Command::SetSeeds(seeds)) => self.set_seeds(seeds),
                    Some(Command::SetTimings(config)) => self.set_timings(config),
                    Some(Command::SetHeartbeatTargets(nodes)) => self.set_heartbeat_targets(nodes),
                    Some(Command::Leave(done)) => {
                        self.leave();
                        let _ = done.send(());
                        return;
                    }
                },
                _ = rejoin.tick() => {
                    if self.swim.num_members() == 0 {
                        self.announce_to_seeds();
                    }
                }
                _ = refresh.tick() => self.publish_own_facts(),
                () = &mut beat => {
                    let late = beat.deadline().elapsed();
                    self.drain_socket(&mut buf);
                    self.on_beat(late);
                    let next = self.until_beat(self.timings.heartbeat_interval / 2);
                    beat.as_mut().reset(tokio::time::Instant::now() + next);
                }
                () = &mut watch_sleep => {
                    self.drain_socket(&mut buf);
                    self.check_watches();
                }
                Some(id) = self.refused_rx.recv() => {
                    // Read what the owner may have said meanwhile before acting.
                    self.drain_socket(&mut buf);
                    self.watches.refused(&id);
                    self.check_watches();
                }
            }
            self.flush();
        }
    }

    fn on_datagram(&mut self, frame: &[u8], from: SocketAddr) {
        let (kind, payload) = match self.keys.open(frame) {
            Ok(opened) => opened,
            Err(e) => {
                Counters::bump(&self.counters.rejected_auth);
                debug!(peer = %from, error = %e, "gossip datagram rejected");
                return;
            }
        };
        Counters::bump(&self.counters.accepted);
        match kind {
            FrameKind::Swim => {
                if let Err(e) = self.swim.handle_data(payload, &mut self.runtime) {
                    Counters::bump(&self.counters.rejected_payload);
                    debug!(peer = %from, error = %e, "gossip payload refused");
                }
            }
            FrameKind::Goodbye => self.on_goodbye(payload, from),
            FrameKind::Heartbeat => self.on_heartbeat(payload, from),
            FrameKind::Probe => self.on_probe(payload, from),
            FrameKind::AskAbout => self.on_ask_about(payload, from),
            FrameKind::Vouch => self.on_vouch(payload, from),
        }
    }

    /// An owner's heartbeat: watch it (or stop, on a release) while it is a live member
    /// under that identity at that address.
    fn on_heartbeat(&mut self, payload: &[u8], from: SocketAddr) {
        let Some(hb) = Heartbeat::decode(payload) else {
            Counters::bump(&self.counters.rejected_payload);
            return;
        };
        let live = self.swim.iter_members().any(|m| *m.id() == hb.id);
        if hb.id.addr != from || !live {
            debug!(peer = %from, node = %hb.id.node, "heartbeat from a non-member ignored");
            return;
        }
        if let Some(gap) = self.watches.heard(&hb, Instant::now()) {
            self.counters
                .longest_heartbeat_silence_ms
                .fetch_max(gap.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// A successor probes us: answer at once with a heartbeat (or a release, if it is no
    /// longer one of our targets), to its gossip address. The probe comes from another
    /// port of that member's address (its own socket, so that it sees "port unreachable"
    /// if we are gone).
    fn on_probe(&mut self, payload: &[u8], from: SocketAddr) {
        let Ok(prober) = postcard::from_bytes::<SpeakerId>(payload) else {
            Counters::bump(&self.counters.rejected_payload);
            return;
        };
        let live = self.swim.iter_members().any(|m| *m.id() == prober);
        if prober.addr.ip() != from.ip() || !live {
            debug!(peer = %from, node = %prober.node, "probe from a non-member ignored");
            return;
        }
        let me = self.swim.identity().clone();
        let hb = if self.heartbeat_targets.contains(&prober.node) {
            let late = self.lateness(Instant::now());
            Heartbeat::watch_me(me, self.timings.heartbeat_timeout, late)
                .naming(&self.heartbeat_targets)
        } else {
            Heartbeat::release(me)
        };
        match postcard::to_allocvec(&hb) {
            Ok(payload) => {
                let frame = self.keys.seal(FrameKind::Heartbeat, &payload);
                self.send_raw(&frame, prober.addr);
            }
            Err(e) => warn!(error = %e, "encoding a probe answer"),
        }
    }

    /// Another watcher asks whether we heard `about` ourselves lately: answer only with
    /// first-hand evidence, a heartbeat of that identity within the probe delay.
    fn on_ask_about(&mut self, payload: &[u8], from: SocketAddr) {
        let Ok(ask) = postcard::from_bytes::<AskAbout>(payload) else {
            Counters::bump(&self.counters.rejected_payload);
            return;
        };
        let live = self.swim.iter_members().any(|m| *m.id() == ask.asker);
        if ask.asker.addr != from || !live {
            debug!(peer = %from, node = %ask.asker.node, "indirect probe from a non-member ignored");
            return;
        }
        let Some(ago) = self.watches.heard_within(
            &ask.about,
            Instant::now(),
            self.timings.heartbeat_probe_after,
        ) else {
            return;
        };
        let vouch = Vouch {
            voucher: self.swim.identity().clone(),
            about: ask.about,
            heard_ms_ago: u32::try_from(ago.as_millis()).unwrap_or(u32::MAX),
        };
        match postcard::to_allocvec(&vouch) {
            Ok(payload) => {
                let frame = self.keys.seal(FrameKind::Vouch, &payload);
                self.send_raw(&frame, ask.asker.addr);
            }
            Err(e) => warn!(error = %e, "encoding a vouch"),
        }
    }

    /// A member heard an owner we find silent: its silence counts from then.
    fn on_vouch(&mut self, payload: &[u8], from: SocketAddr) {
        let Ok(v) = postcard::from_bytes::<Vouch>(payload) else {
            Counters::bump(&self.counters.rejected_payload);
            return;
        };
        let live = self.swim.iter_members().any(|m| *m.id() == v.voucher);
        if v.voucher.addr != from || !live || v.voucher.node == v.about.node {
            debug!(peer = %from, node = %v.voucher.node, "vouch from a non-member ignored");
            return;
        }
        let now = Instant::now();
        let heard_at = now
            .checked_sub(Duration::from_millis(u64::from(v.heard_ms_ago)))
            .unwrap_or(now);
        if self.watches.vouched(&v.about, heard_at) {
            Counters::bump(&self.counters.heartbeat_vouched);
            debug!(owner = %v.about.node, voucher = %v.voucher.node, ago_ms = v.heard_ms_ago, "silent owner vouched for");
        }
    }

    /// Asks a few other live members, the owner's other watchers first ([`whom_to_ask`]),
    /// whether they hear the silent owner `id` ([`AskAbout`]); any that does vouches for it.
    fn ask_others(&mut self, id: &SpeakerId) {
        let me = self.swim.identity().clone();
        let live: Vec<(String, SocketAddr)> = self
            .swim
            .iter_members()
            .map(|m| (m.id().node.clone(), m.id().addr))
            .collect();
        let others: Vec<SocketAddr> =
            whom_to_ask(self.watches.watchers_of(id), &live, &me.node, &id.node)
                .into_iter()
                .map(|m| m.1)
                .collect();
        debug!(owner = %id.node, asked = others.len(), "asking others about a silent owner");
        if others.is_empty() {
            return;
        }
        let ask = AskAbout {
            asker: me,
            about: id.clone(),
        };
        match postcard::to_allocvec(&ask) {
            Ok(payload) => {
                let frame = self.keys.seal(FrameKind::AskAbout, &payload);
                for to in others {
                    self.send_raw(&frame, to);
                }
            }
            Err(e) => warn!(error = %e, "encoding an indirect probe"),
        }
    }

    /// Probes a silent owner from a socket of its own ([`probe`]).
    fn send_probe(&mut self, id: SpeakerId) {
        let me = self.swim.identity().clone();
        let payload = match postcard::to_allocvec(&me) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "encoding a probe");
                return;
            }
        };
        Counters::bump(&self.counters.heartbeat_probes);
        let frame = self.keys.seal(FrameKind::Probe, &payload);
        let refused = self.refused_tx.clone();
        let wait = self.timings.heartbeat_timeout;
        tokio::spawn(async move {
            if probe(me.addr.ip(), id.addr, &frame, wait).await {
                let _ = refused.send(id);
            }
        });
    }

    /// Time until the next heartbeat tick, at least `at_least` from now.
    fn until_beat(&self, at_least: Duration) -> Duration {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        phase::until_aligned(since_epoch, self.timings.heartbeat_interval, at_least)
    }

    /// The heartbeat tick, `late` after its deadline: notices our own starvation (a late
    /// tick), then sends a heartbeat to every target that is a live member.
    fn on_beat(&mut self, late: Duration) {
        let now = Instant::now();
        // The gap a tick one interval after the last would have had: the thresholds below
        // do not depend on where the phase put this deadline.
        let gap = self.timings.heartbeat_interval + late;
        self.last_beat = now;
        if gap > self.timings.heartbeat_timeout / 2 {
            // Late heartbeats were read just before: the rest of the time asleep was ours.
            self.watches.grace(now);
        }
        if gap > self.timings.heartbeat_timeout {
            warn!(stalled_ms = gap.as_millis() as u64, "the membership did not run for longer than the heartbeat timeout; others may have taken over");
            self.emit(MembershipEvent::LostContact {
                reason: LostContact::Stalled(gap),
            });
        }
        if gap <= self.timings.heartbeat_timeout {
            // Scheduling delay; a longer stall is reported as lost contact, not as jitter.
            self.late
                .saw(gap.saturating_sub(self.timings.heartbeat_interval), now);
        }
        let late = self.lateness(now);
        if self.heartbeat_targets.is_empty() {
            return;
        }
        // Encoded and sealed into buffers kept for the next beat, sent without a list.
        let mut payload = std::mem::take(&mut self.beat_payload);
        payload.clear();
        match Heartbeat::encode_watch_me(
            self.swim.identity(),
            self.timings.heartbeat_timeout,
            late,
            &self.heartbeat_targets,
            payload,
        ) {
            Ok(encoded) => self.beat_payload = encoded,
            Err(e) => {
                warn!(error = %e, "encoding a heartbeat");
                return;
            }
        }
        self.keys
            .seal_into(FrameKind::Heartbeat, &self.beat_payload, &mut self.frame);
        for m in self.swim.iter_members() {
            if self.heartbeat_targets.contains(&m.id().node) {
                self.send_raw(&self.frame, m.id().addr);
            }
        }
    }

    /// The scheduling delay our heartbeats report: the worst lateness of our own tick
    /// lately, or what our node's CPU pressure asks for, whichever is more. The pressure is
    /// read at most once a second (a small procfs read; none where there is no such file).
    fn lateness(&mut self, now: Instant) -> Duration {
        if self
            .pressure_read
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1))
        {
            self.pressure_read = Some(now);
            self.pressure = std::fs::read_to_string("/proc/pressure/cpu")
                .ok()
                .and_then(|t| parse_cpu_pressure(&t))
                .map_or(Duration::ZERO, pressure_allowance);
        }
        self.late.at(now).max(self.pressure)
    }

    /// Sends `hb` (`copies` times) to the live members among `nodes`.
    fn send_heartbeat(&mut self, nodes: &BTreeSet<String>, hb: &Heartbeat, copies: usize) {
        if nodes.is_empty() {
            return;
        }
        let payload = match postcard::to_allocvec(hb) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "encoding a heartbeat");
                return;
            }
        };
        let frame = self.keys.seal(FrameKind::Heartbeat, &payload);
        let addrs: Vec<SocketAddr> = self
            .swim
            .iter_members()
            .filter(|m| nodes.contains(&m.id().node))
            .map(|m| m.id().addr)
            .collect();
        for _ in 0..copies {
            for a in &addrs {
                self.send_raw(&frame, *a);
            }
        }
    }

    /// New heartbeat targets: the new ones hear from us at once (their watch starts now),
    /// the dropped ones are told to stop watching.
    fn set_heartbeat_targets(&mut self, nodes: BTreeSet<String>) {
        if nodes == self.heartbeat_targets {
            return;
        }
        let me = self.swim.identity().clone();
        let dropped: BTreeSet<String> =
            self.heartbeat_targets.difference(&nodes).cloned().collect();
        let added: BTreeSet<String> = nodes.difference(&self.heartbeat_targets).cloned().collect();
        debug!(targets = ?nodes, "heartbeat targets");
        self.send_heartbeat(&dropped, &Heartbeat::release(me.clone()), GOODBYE_COPIES);
        let late = self.lateness(Instant::now());
        let hb = Heartbeat::watch_me(me, self.timings.heartbeat_timeout, late).naming(&nodes);
        self.send_heartbeat(&added, &hb, 1);
        self.heartbeat_targets = nodes;
    }

    /// Acts on the watches ([`Watches::due`]): probes the owners silent for the probe
    /// delay; declares down those whose probe was refused or that stayed silent for their
    /// timeout (unless we ourselves were starved: then the watches start afresh), and
    /// gossips the verdict at once.
    fn check_watches(&mut self) {
        let now = Instant::now();
        let beat_late = now.saturating_duration_since(self.last_beat);
        if beat_late > self.timings.heartbeat_timeout / 2 {
            self.watches.grace(now);
        }
        let mut declared = 0;
        for action in self.watches.due(now) {
            let (id, cause) = match action {
                Action::Probe(id) => {
                    debug!(node = %id.node, "owner silent: probing it, and asking the others");
                    self.ask_others(&id);
                    self.send_probe(id);
                    continue;
                }
                Action::Down(id, cause) => (id, cause),
            };
            let live = self.swim.iter_members().any(|m| *m.id() == id);
            if !live {
                continue;
            }
            match cause {
                DownCause::Silent => {
                    warn!(node = %id.node, "owner heartbeats stopped and its probe was not answered: declared down")
                }
                DownCause::Refused => {
                    warn!(node = %id.node, "owner silent and its gossip port closed: declared down")
                }
            }
            if let Err(e) =
                self.swim
                    .apply_many(iter::once(Member::down(id)), true, &mut self.runtime)
            {
                warn!(error = %e, "declaring a silent owner down");
                continue;
            }
            declared += 1;
        }
        if declared == 0 {
            return;
        }
        self.counters
            .heartbeat_down
            .fetch_add(declared, std::sync::atomic::Ordering::Relaxed);
        if let Err(e) = self.swim.gossip(&mut self.runtime) {
            debug!(error = %e, "gossiping a heartbeat verdict");
        }
    }

    /// A member says it is leaving: declare it down now.
    fn on_goodbye(&mut self, payload: &[u8], from: SocketAddr) {
        let Ok(id) = postcard::from_bytes::<SpeakerId>(payload) else {
            Counters::bump(&self.counters.rejected_payload);
            return;
        };
        let known = self.swim.iter_membership_state().any(|m| *m.id() == id);
        if !known || id.addr != from {
            debug!(peer = %from, node = %id.node, "goodbye from an unknown identity ignored");
            return;
        }
        info!(node = %id.node, "member says goodbye");
        self.left.insert(id.clone());
        let update = Member::down(id);
        if let Err(e) = self
            .swim
            .apply_many(iter::once(update), true, &mut self.runtime)
        {
            warn!(error = %e, "applying a goodbye failed");
        }
    }

    /// Handle the datagrams already queued on the socket, at most
    /// [`DRAIN_MAX`] (a flood must not starve the timers).
    fn drain_socket(&mut self, buf: &mut [u8]) {
        for _ in 0..DRAIN_MAX {
            match self.socket.try_recv_from(buf) {
                Ok((len, from)) => self.on_datagram(&buf[..len], from),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!(error = %e, "gossip socket receive failed");
                    return;
                }
            }
        }
    }

    /// Fire the due foca timers. Our own failure detector acts only here
    /// (a failed probe makes a suspect, a suspicion timer a down member):
    /// such a verdict is gossiped at once, so that the suspect can refute it
    /// and the others act on a failure without waiting for a gossip round.
    fn fire_due_timers(&mut self) {
        let before: Vec<(SpeakerId, State)> = self
            .swim
            .iter_membership_state()
            .map(|m| (m.id().clone(), m.state()))
            .collect();
        let now = Instant::now();
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let timer = entry.remove();
            if let Err(e) = self.swim.handle_timer(timer, &mut self.runtime) {
                debug!(error = %e, "foca timer");
            }
        }
        let (mut suspected, mut down) = (0, 0);
        for m in self.swim.iter_membership_state() {
            let was = before.iter().find(|(id, _)| id == m.id()).map(|(_, s)| *s);
            match (was, m.state()) {
                (Some(State::Alive), State::Suspect) => suspected += 1,
                (Some(State::Alive | State::Suspect), State::Down) => down += 1,
                _ => {}
            }
        }
        if suspected + down == 0 {
            return;
        }
        self.counters
            .suspected
            .fetch_add(suspected, std::sync::atomic::Ordering::Relaxed);
        self.counters
            .declared_down
            .fetch_add(down, std::sync::atomic::Ordering::Relaxed);
        debug!(
            suspected,
            down, "failure detector verdict, gossiped at once"
        );
        if let Err(e) = self.swim.gossip(&mut self.runtime) {
            debug!(error = %e, "gossiping a verdict");
        }
    }

    fn update_facts(&mut self, interfaces: Vec<InterfaceFacts>) {
        if interfaces == self.own_facts.interfaces {
            return;
        }
        self.own_facts.interfaces = interfaces;
        self.own_facts.version += 1;
        self.publish_own_facts();
    }

    /// (Re)disseminate our facts and push them out at once.
    fn publish_own_facts(&mut self) {
        match facts::encode(&self.own_facts) {
            Ok(data) => {
                if let Err(e) = self.swim.add_broadcast(&data) {
                    warn!(error = %e, "own facts do not fit a gossip datagram");
                }
            }
            Err(e) => warn!(error = %e, "encoding own facts"),
        }
        if let Err(e) = self.swim.broadcast(&mut self.runtime) {
            debug!(error = %e, "broadcasting facts");
        }
    }

    /// New seeds; announces to those that are new.
    fn set_seeds(&mut self, seeds: Vec<SocketAddr>) {
        let new: Vec<SocketAddr> = seeds
            .iter()
            .filter(|a| !self.seeds.contains(a))
            .copied()
            .collect();
        self.seeds = seeds;
        if new.is_empty() {
            return;
        }
        info!(new = ?new, seeds = self.seeds.len(), "gossip seeds updated");
        self.announce_to(&new);
    }

    /// New foca timings; kept for a view reset too.
    fn set_timings(&mut self, config: foca::Config) {
        match self.swim.set_config(config.clone()) {
            Ok(()) => {
                info!(
                    suspect_to_down_after = ?config.suspect_to_down_after,
                    max_transmissions = config.max_transmissions.get(),
                    "gossip timings resized"
                );
                self.foca_config = config;
            }
            Err(e) => warn!(error = %e, "foca refused the new timings; the old ones stay"),
        }
    }

    fn announce_to_seeds(&mut self) {
        let mut targets = self.seeds.clone();
        targets.extend(self.rejoin_addrs.iter().filter(|a| !self.seeds.contains(a)));
        self.announce_to(&targets);
    }

    fn announce_to(&mut self, targets: &[SocketAddr]) {
        let me = self.swim.identity().addr;
        for &seed in targets {
            if seed == me {
                continue;
            }
            // foca accepts an Announce addressed to any identity at its
            // address, so the seed's name and generation need not be known.
            let placeholder = SpeakerId {
                node: String::new(),
                addr: seed,
                generation: 0,
            };
            if let Err(e) = self.swim.announce(placeholder, &mut self.runtime) {
                debug!(seed = %seed, error = %e, "announce");
            }
        }
    }

    /// Every other member is down: most likely we are the one cut off. Drop
    /// our view (its "down" verdicts about the majority are stale and, once
    /// the link heals, SWIM would spread them: a confirmed failure overrides
    /// an alive member) and come back as a new identity, announcing to the
    /// seeds and every address we knew until someone answers.
    fn reset(&mut self) {
        for m in self.swim.iter_membership_state() {
            if !self.rejoin_addrs.contains(&m.id().addr) {
                self.rejoin_addrs.push(m.id().addr);
            }
            let remembered = self.remembered_down.iter().any(|r| r.addr == m.id().addr);
            if !self.left.contains(m.id()) && !remembered {
                self.remembered_down.push(m.id().clone());
            }
        }
        let old = self.swim.identity().clone();
        let new = SpeakerId {
            generation: old.generation.saturating_add(1),
            ..old
        };
        info!(node = %new.node, generation = new.generation, "membership view reset");
        self.swim = Foca::with_custom_broadcast(
            new.clone(),
            self.foca_config.clone(),
            seeded_rng(),
            PostcardCodec,
            FactsHandler {
                book: self.book.clone(),
            },
        );
        // Timers and queued datagrams belong to the old instance.
        self.timers.clear();
        self.runtime = AccumulatingRuntime::new();
        self.left.clear();
        self.watches = Watches::new(self.timings.heartbeat_probe_after);
        self.reconnecting = true;
        self.own_facts.generation = new.generation;
        self.own_facts.version = 1;
        self.publish_own_facts();
        self.announce_to_seeds();
        while let Some((to, data)) = self.runtime.to_send() {
            let frame = self.keys.seal(FrameKind::Swim, &data);
            self.send_raw(&frame, to.addr);
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers.insert((now + after, self.timer_seq), timer);
        }
    }

    fn leave(&mut self) {
        let me = self.swim.identity().clone();
        match postcard::to_allocvec(&me) {
            Ok(payload) => {
                let frame = self.keys.seal(FrameKind::Goodbye, &payload);
                let peers: Vec<SocketAddr> =
                    self.swim.iter_members().map(|m| m.id().addr).collect();
                for _ in 0..GOODBYE_COPIES {
                    for peer in &peers {
                        self.send_raw(&frame, *peer);
                    }
                }
            }
            Err(e) => warn!(error = %e, "encoding goodbye"),
        }
        if let Err(e) = self.swim.leave_cluster(&mut self.runtime) {
            warn!(error = %e, "leaving the SWIM cluster");
        }
        self.flush();
        info!(node = %me.node, "left the membership");
    }

    fn send_raw(&self, frame: &[u8], to: SocketAddr) {
        match self.socket.try_send_to(frame, to) {
            Ok(_) => Counters::bump(&self.counters.sent),
            Err(e) => debug!(peer = %to, error = %e, "gossip send failed"),
        }
    }

    /// Carry out what foca asked for, then publish events and the snapshot.
    fn flush(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            self.keys.seal_into(FrameKind::Swim, &data, &mut self.frame);
            self.send_raw(&self.frame, to.addr);
        }
        let now = Instant::now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers.insert((now + after, self.timer_seq), timer);
        }
        while let Some(note) = self.runtime.to_notify() {
            self.on_notification(note);
        }
        if self.reset_pending {
            self.reset_pending = false;
            self.reset();
        }
        let changed: Vec<String> = {
            let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut book.changed)
        };
        for node in &changed {
            if *node == self.own_facts.node {
                continue;
            }
            let facts = self
                .book
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .by_node
                .get(node)
                .cloned();
            if let Some(facts) = facts {
                self.emit(MembershipEvent::FactsChanged { facts });
            }
        }
        // Health (alive/suspect) changes without a notification: look after every event.
        self.publish_snapshot();
        self.send_pending_events();
    }

    fn on_notification(&mut self, note: OwnedNotification<SpeakerId>) {
        match note {
            OwnedNotification::MemberUp(id) => {
                info!(node = %id.node, addr = %id.addr, "member up");
                self.left.remove(&id);
                self.emit(MembershipEvent::MemberUp { id });
                // A newcomer has none of our facts yet.
                self.publish_own_facts();
            }
            OwnedNotification::MemberDown(id) => {
                let reason = if self.left.contains(&id) {
                    DownReason::Left
                } else {
                    DownReason::Failed
                };
                info!(node = %id.node, addr = %id.addr, ?reason, "member down");
                self.watches.forget(&id);
                self.emit(MembershipEvent::MemberDown {
                    id,
                    reason,
                    at: SystemTime::now(),
                    at_instant: Instant::now(),
                });
            }
            OwnedNotification::Rename(old, new) => {
                debug!(old = ?old, new = ?new, "member identity renewed");
                self.left.remove(&old);
            }
            OwnedNotification::Rejoin(id) => {
                warn!(
                    generation = id.generation,
                    "we were declared down; rejoined with a new generation"
                );
                self.own_facts.generation = id.generation;
                self.own_facts.version = 1;
                self.publish_own_facts();
                self.emit(MembershipEvent::LostContact {
                    reason: LostContact::DeclaredDown,
                });
            }
            OwnedNotification::Defunct => warn!("our identity was declared down"),
            OwnedNotification::Active => {
                info!("joined the membership");
                if std::mem::take(&mut self.reconnecting) {
                    // The member that answered our announce knows us now; the others would
                    // learn our new identity only when we happen to probe or gossip them, and
                    // an owner that has not seen us keeps answering for an IP we take back
                    // after the takeover hold: tell them at once.
                    if let Err(e) = self.swim.gossip(&mut self.runtime) {
                        debug!(error = %e, "gossiping our return");
                    }
                    self.emit(MembershipEvent::LostContact {
                        reason: LostContact::Reconnected,
                    });
                }
            }
            OwnedNotification::Idle => {
                info!("no other live member: starting afresh under a new generation");
                self.reset_pending = true;
            }
        }
    }

    fn emit(&mut self, event: MembershipEvent) {
        self.pending.push(event);
    }

    fn send_pending_events(&mut self) {
        for event in self.pending.drain(..) {
            if self.events.try_send(event).is_err() {
                Counters::bump(&self.counters.events_dropped);
            }
        }
    }

    /// Publishes the member snapshot if it differs from the one published: the loop calls
    /// this after every event, and at rest (heartbeats, probes, acks) nothing in it changes,
    /// so the comparison (no copy, no allocation) is all it costs then.
    fn publish_snapshot(&self) {
        let book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        {
            let published = self.snapshot.lock().unwrap_or_else(|p| p.into_inner());
            if same_members(self.snapshot_entries(&book), &published) {
                return;
            }
        }
        let mut members: Vec<MemberSnapshot> = self
            .snapshot_entries(&book)
            .map(|e| e.to_snapshot())
            .collect();
        drop(book);
        // Ourselves first, the others by address: foca reorders its members every probe
        // round, and an order that follows it would be a change at rest.
        if let Some(others) = members.get_mut(1..) {
            others.sort_unstable_by_key(|m| m.id.addr);
        }
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = members;
        Counters::bump(&self.counters.snapshots_published);
    }

    /// The members as the snapshot shows them, borrowed: ourselves first, then foca's view,
    /// then the failed members a view reset dropped ([`Self::remembered_down`]) whose
    /// address no one else in it has.
    fn snapshot_entries<'a>(
        &'a self,
        book: &'a FactsState,
    ) -> impl Iterator<Item = Entry<'a>> + 'a {
        let me = self.swim.identity();
        let own = iter::once(Entry {
            id: me,
            health: Health::Alive,
            left: false,
            facts: Some(&self.own_facts),
            is_self: true,
        });
        // The newest facts of the node, even from an older generation: a renewed identity
        // republishes within milliseconds, and showing none meanwhile would make the
        // election see its NIC down and move IPs.
        let others = self.swim.iter_membership_state().map(move |m| Entry {
            id: m.id(),
            health: match m.state() {
                State::Alive => Health::Alive,
                State::Suspect => Health::Suspect,
                State::Down => Health::Down,
            },
            left: self.left.contains(m.id()),
            facts: book.by_node.get(&m.id().node),
            is_self: false,
        });
        let remembered = self
            .remembered_down
            .iter()
            .filter(move |r| {
                r.addr != me.addr
                    && !self
                        .swim
                        .iter_membership_state()
                        .any(|m| m.id().addr == r.addr)
            })
            .map(|r| Entry {
                id: r,
                health: Health::Down,
                left: false,
                facts: None,
                is_self: false,
            });
        own.chain(others).chain(remembered)
    }
}

/// One member of the snapshot, borrowed from the task's state.
struct Entry<'a> {
    id: &'a SpeakerId,
    health: Health,
    left: bool,
    facts: Option<&'a MemberFacts>,
    is_self: bool,
}

impl Entry<'_> {
    fn is(&self, m: &MemberSnapshot) -> bool {
        *self.id == m.id
            && self.health == m.health
            && self.left == m.left
            && self.facts == m.facts.as_ref()
            && self.is_self == m.is_self
    }

    fn to_snapshot(&self) -> MemberSnapshot {
        MemberSnapshot {
            id: self.id.clone(),
            health: self.health,
            left: self.left,
            facts: self.facts.cloned(),
            is_self: self.is_self,
        }
    }
}

/// Whether `entries` are the members of `published` (ourselves first, the others sorted by
/// address, as [`MembershipTask::publish_snapshot`] leaves it), in any order. Addresses are
/// unique among the others (foca keeps one identity per address, and a remembered member
/// is shown only when no one else has its address); were they not, a member would not be
/// found and the snapshot be published again, which is the cost this saves, not an error.
fn same_members<'a>(
    entries: impl Iterator<Item = Entry<'a>>,
    published: &[MemberSnapshot],
) -> bool {
    let Some((me, others)) = published.split_first() else {
        return false;
    };
    let mut count = 0;
    for e in entries {
        let shown = if e.is_self {
            Some(me)
        } else {
            others
                .binary_search_by_key(&e.id.addr, |m| m.id.addr)
                .ok()
                .and_then(|i| others.get(i))
        };
        if !shown.is_some_and(|m| e.is(m)) {
            return false;
        }
        count += 1;
    }
    count == published.len()
}

/// foca's random choices (whom to probe, gossip to) seeded from the OS; should the OS have
/// no entropy to give, the clock and pid still make each speaker's sequence its own.
fn seeded_rng() -> SmallRng {
    SmallRng::try_from_rng(&mut SysRng).unwrap_or_else(|_| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        SmallRng::seed_from_u64(nanos ^ u64::from(std::process::id()))
    })
}

/// Sends `frame` to `target` from a socket of its own, bound to `local` (our gossip
/// address, so the owner knows the prober) when possible, connected, so that the kernel's
/// "port unreachable" reaches us: true when it does within `wait` (no process behind the
/// owner's port: its speaker is gone). Anything else (an answer goes to our gossip socket;
/// silence; any error) is false, and the timeout decides.
async fn probe(local: std::net::IpAddr, target: SocketAddr, frame: &[u8], wait: Duration) -> bool {
    let any: std::net::IpAddr = if target.is_ipv4() {
        std::net::Ipv4Addr::UNSPECIFIED.into()
    } else {
        std::net::Ipv6Addr::UNSPECIFIED.into()
    };
    let socket = match UdpSocket::bind((local, 0)).await {
        Ok(s) => s,
        Err(_) => match UdpSocket::bind((any, 0)).await {
            Ok(s) => s,
            Err(e) => {
                debug!(error = %e, "probe socket");
                return false;
            }
        },
    };
    if socket.connect(target).await.is_err() || socket.send(frame).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    let refused = |r: std::io::Result<usize>| matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused);
    let until = tokio::time::Instant::now() + wait;
    while let Ok(r) = tokio::time::timeout_at(until, socket.recv(&mut buf)).await {
        if refused(r) {
            return true;
        }
    }
    false
}

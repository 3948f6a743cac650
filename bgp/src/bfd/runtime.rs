//! The thin tokio runtime around [`Session`]s: sockets, timers, demultiplexing.
//!
//! ```text
//!   Bfd handle (Clone) ──mpsc: Command (set, remove)──────┐
//!   receiver tasks, one per (family, single/multihop) ─────┤ mpsc: Datagram
//!                                                         ▼
//!               runtime task: sessions by local discriminator, one timer set
//!                 │ each session: a UDP socket (source port 49152–65535, TTL 255)
//!                 ▼
//!               watch<BfdStatus> per session ──► the client (a BGP peer task)
//! ```
//!
//! Demultiplexing (RFC 5880 §6.8.6, RFC 5881 §4, RFC 5883 §5): a packet with a Your
//! Discriminator goes to that session; one without goes to the session of its source
//! address and hop mode. Single-hop packets must arrive with TTL 255 (RFC 5881 §5);
//! multihop packets with at least the session's minimum TTL. Everything else is dropped.
//!
//! Echo ([`super::echo`]): a session that wants it gets a path (interface, MACs) found when
//! it asks, and one packet socket per interface, shared, carries every session's Echo
//! packets out and back; returned packets go to the session named in their payload.
//! The runtime ends when the last handle is dropped; its receiver tasks with it.
use super::echo::{self, EchoPath};
use super::packet::{ControlPacket, State};
use super::session::{Input, Output, Session, SessionConfig, SessionStatus, StateChange, Timer};
use super::socket::{self, Datagram, EchoLink, MULTIHOP_PORT, SEND_TTL, SINGLE_HOP_PORT};
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Where the runtime listens; the well-known ports unless a test shares one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub single_hop_port: u16,
    pub multihop_port: u16,
}

impl Default for RuntimeConfig {
    fn default() -> RuntimeConfig {
        RuntimeConfig {
            single_hop_port: SINGLE_HOP_PORT,
            multihop_port: MULTIHOP_PORT,
        }
    }
}

/// One session per peer address and hop mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionKey {
    pub peer: IpAddr,
    pub multihop: bool,
}

/// How to run one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionParams {
    pub timers: SessionConfig,
    /// Source address of our packets; the kernel's choice when `None`.
    pub local: Option<IpAddr>,
    /// Multihop only: packets with a lower TTL are dropped (RFC 5883 §5 leaves the check to
    /// configuration; MetalLB's default is 254).
    pub minimum_ttl: u8,
    /// The peer's port, when not the well-known one (tests sharing a namespace).
    pub peer_port: Option<u16>,
}

/// What a client sees of its session.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BfdStatus {
    /// `None` until the runtime has taken the session.
    pub session: Option<SessionStatus>,
    /// How many times the session went from Up to Down by a failure (RFC 5882 §3.2): a
    /// counter, so a client that reads late still sees each one.
    pub failures: u64,
    /// The last state change.
    pub last_change: Option<StateChange>,
    /// Why the session cannot run (a socket that could not be opened).
    pub error: Option<String>,
    /// Why the Echo function is configured but not running (no path to the peer); the
    /// session then runs on Control packets alone.
    pub echo_error: Option<String>,
}

impl BfdStatus {
    pub fn state(&self) -> Option<State> {
        self.session.map(|s| s.state)
    }
}

enum Command {
    Set {
        key: SessionKey,
        params: SessionParams,
        status: watch::Sender<BfdStatus>,
        owner: u64,
    },
    /// Remove the session if `owner` still holds it (a restarted client may have taken it).
    Remove(SessionKey, u64),
}

/// A task handle that aborts the task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A handle on the BFD runtime; cheap to clone. The runtime opens no socket until a
/// session needs one.
#[derive(Clone)]
pub struct Bfd {
    commands: mpsc::UnboundedSender<Command>,
    /// Registration numbers: which client holds a session.
    owners: Arc<AtomicU64>,
    _task: Arc<AbortOnDrop>,
}

/// A client's hold on one session: dropping it removes the session (sending AdminDown),
/// unless another registration has taken the same key since.
pub struct Registration {
    /// Only the command channel: a registration does not keep the runtime alive.
    commands: mpsc::UnboundedSender<Command>,
    key: SessionKey,
    owner: u64,
    params: SessionParams,
}

impl Registration {
    pub fn key(&self) -> SessionKey {
        self.key
    }

    pub fn params(&self) -> SessionParams {
        self.params
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Remove(self.key, self.owner));
    }
}

impl Bfd {
    /// Starts the runtime task. Needs a tokio runtime.
    pub fn spawn(cfg: RuntimeConfig) -> Bfd {
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(Runtime::new(cfg).run(rx));
        Bfd {
            commands: tx,
            owners: Arc::new(AtomicU64::new(1)),
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    /// Adds a session or changes one (timers through a Poll Sequence, §6.8.3). The
    /// receiver follows it; dropping the [`Registration`] ends it, telling the peer
    /// AdminDown (RFC 5882 §3.2: not a failure).
    pub fn register(
        &self,
        key: SessionKey,
        params: SessionParams,
    ) -> (Registration, watch::Receiver<BfdStatus>) {
        let (status, rx) = watch::channel(BfdStatus::default());
        let owner = self.owners.fetch_add(1, Ordering::Relaxed);
        let _ = self.commands.send(Command::Set {
            key,
            params,
            status,
            owner,
        });
        let reg = Registration {
            commands: self.commands.clone(),
            key,
            owner,
            params,
        };
        (reg, rx)
    }
}

struct Entry {
    key: SessionKey,
    owner: u64,
    params: SessionParams,
    session: Session,
    socket: Option<UdpSocket>,
    dest: SocketAddr,
    status: watch::Sender<BfdStatus>,
    timers: [Option<Instant>; 4],
    /// Where Echo packets go while the session runs Echo.
    echo: Option<EchoPath>,
    echo_sequence: u64,
}

fn timer_index(t: Timer) -> usize {
    match t {
        Timer::Transmit => 0,
        Timer::Detect => 1,
        Timer::EchoTransmit => 2,
        Timer::EchoDetect => 3,
    }
}

const TIMERS: [Timer; 4] = [
    Timer::Transmit,
    Timer::Detect,
    Timer::EchoTransmit,
    Timer::EchoDetect,
];

/// A packet socket for Echo on one interface, with the task reading it and how many
/// sessions use it.
struct Link {
    link: EchoLink,
    users: usize,
    _reader: socket::EchoReader,
}

struct Runtime {
    cfg: RuntimeConfig,
    sessions: HashMap<u32, Entry>,
    by_key: HashMap<SessionKey, u32>,
    /// (deadline, discriminator, timer index): the earliest first.
    timers: BTreeSet<(Instant, u32, usize)>,
    /// Receiver tasks by (IPv6, multihop).
    receivers: HashMap<(bool, bool), AbortOnDrop>,
    datagrams_tx: mpsc::Sender<(bool, Datagram)>,
    datagrams_rx: mpsc::Receiver<(bool, Datagram)>,
    /// Echo sockets by interface index; returned Echo frames.
    links: HashMap<usize, Link>,
    echo_tx: mpsc::Sender<Vec<u8>>,
    echo_rx: mpsc::Receiver<Vec<u8>>,
    rng: u64,
    buf: Vec<u8>,
}

impl Runtime {
    fn new(cfg: RuntimeConfig) -> Runtime {
        let (tx, rx) = mpsc::channel(1024);
        let (echo_tx, echo_rx) = mpsc::channel(1024);
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ (u64::from(std::process::id()) << 32);
        Runtime {
            cfg,
            sessions: HashMap::new(),
            by_key: HashMap::new(),
            timers: BTreeSet::new(),
            receivers: HashMap::new(),
            datagrams_tx: tx,
            datagrams_rx: rx,
            links: HashMap::new(),
            echo_tx,
            echo_rx,
            rng: seed | 1,
            buf: Vec::with_capacity(64),
        }
    }

    fn random(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        loop {
            let next = self.timers.first().map(|(t, _, _)| *t);
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(Command::Set { key, params, status, owner }) => {
                        self.set(key, params, status, owner)
                    }
                    Some(Command::Remove(key, owner)) => self.remove(key, owner),
                    None => return,
                },
                Some((multihop, d)) = self.datagrams_rx.recv() => self.received(multihop, d),
                Some(frame) = self.echo_rx.recv() => self.echo_returned(&frame),
                () = sleep_until(next) => self.fire(),
            }
        }
    }

    fn set(
        &mut self,
        key: SessionKey,
        params: SessionParams,
        status: watch::Sender<BfdStatus>,
        owner: u64,
    ) {
        if let Some(&discr) = self.by_key.get(&key) {
            let dest = SocketAddr::new(key.peer, self.dest_port(&key, &params));
            let seed = self.random() as u16;
            let Some(e) = self.sessions.get_mut(&discr) else {
                return;
            };
            // The new receiver starts where the old one was (failure count included).
            status.send_replace(e.status.borrow().clone());
            e.status = status;
            e.owner = owner;
            let timers_changed = e.params.timers != params.timers;
            if e.params.local != params.local {
                e.socket = open_sender(&key, &params, seed, &e.status);
            }
            e.params = params;
            e.dest = dest;
            if timers_changed {
                self.feed(discr, Input::Reconfigure(params.timers));
            }
            self.publish(discr);
            return;
        }
        let error = self.ensure_receiver(key.peer.is_ipv6(), key.multihop).err();
        let discr = loop {
            let d = self.random() as u32;
            if d != 0 && !self.sessions.contains_key(&d) {
                break d;
            }
        };
        let seed = self.random();
        let socket = open_sender(&key, &params, seed as u16, &status);
        if let Some(e) = error {
            status.send_modify(|s| s.error = Some(e));
        }
        let entry = Entry {
            key,
            owner,
            params,
            session: Session::new(params.timers, discr, seed),
            socket,
            dest: SocketAddr::new(key.peer, self.dest_port(&key, &params)),
            status,
            timers: [None; 4],
            echo: None,
            echo_sequence: 0,
        };
        self.sessions.insert(discr, entry);
        self.by_key.insert(key, discr);
        tracing::info!(peer = %key.peer, multihop = key.multihop, discr, "BFD session added");
        let out = match self.sessions.get_mut(&discr) {
            Some(e) => e.session.start(),
            None => Vec::new(),
        };
        self.apply(discr, out);
        self.publish(discr);
    }

    fn dest_port(&self, key: &SessionKey, params: &SessionParams) -> u16 {
        params.peer_port.unwrap_or(if key.multihop {
            MULTIHOP_PORT
        } else {
            SINGLE_HOP_PORT
        })
    }

    fn remove(&mut self, key: SessionKey, owner: u64) {
        let Some(&discr) = self.by_key.get(&key) else {
            return;
        };
        if self.sessions.get(&discr).is_some_and(|e| e.owner != owner) {
            return;
        }
        self.by_key.remove(&key);
        let out = match self.sessions.get_mut(&discr) {
            Some(e) => e.session.handle(Input::AdminDown),
            None => Vec::new(),
        };
        // Only the AdminDown packet matters now; no timer survives the session.
        for o in out {
            if let Output::Send(p) = o {
                self.send(discr, &p);
            }
        }
        self.release_echo(discr);
        if let Some(e) = self.sessions.remove(&discr) {
            for t in e.timers.iter().enumerate() {
                if let (i, Some(at)) = t {
                    self.timers.remove(&(*at, discr, i));
                }
            }
        }
        tracing::info!(peer = %key.peer, multihop = key.multihop, "BFD session removed");
    }

    fn ensure_receiver(&mut self, v6: bool, multihop: bool) -> Result<(), String> {
        if self.receivers.contains_key(&(v6, multihop)) {
            return Ok(());
        }
        let port = if multihop {
            self.cfg.multihop_port
        } else {
            self.cfg.single_hop_port
        };
        let sock = socket::receiver(v6, port).map_err(|e| {
            let fam = if v6 { "IPv6" } else { "IPv4" };
            format!("cannot listen for BFD on {fam} UDP port {port}: {e}")
        })?;
        let tx = self.datagrams_tx.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 512];
            loop {
                match socket::recv(&sock, &mut buf).await {
                    Ok(d) => {
                        if tx.send((multihop, d)).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "BFD receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
        self.receivers.insert((v6, multihop), AbortOnDrop(task));
        Ok(())
    }

    /// Demultiplexes one datagram to its session (module doc) and feeds it.
    fn received(&mut self, multihop: bool, d: Datagram) {
        let p = match ControlPacket::decode(&d.data) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(from = %d.from, error = %e, "BFD packet discarded");
                return;
            }
        };
        let peer = crate::connection::canonical(d.from.ip());
        let discr = if p.your_discr != 0 {
            p.your_discr
        } else {
            match self.by_key.get(&SessionKey { peer, multihop }) {
                Some(&d) => d,
                None => {
                    tracing::debug!(from = %d.from, "BFD packet for no session");
                    return;
                }
            }
        };
        let Some(e) = self.sessions.get(&discr) else {
            return;
        };
        if e.key.peer != peer || e.key.multihop != multihop {
            tracing::debug!(from = %d.from, discr, "BFD packet from the wrong address");
            return;
        }
        let min_ttl = if multihop {
            e.params.minimum_ttl
        } else {
            SEND_TTL
        };
        if d.ttl < min_ttl {
            tracing::debug!(from = %d.from, ttl = d.ttl, min_ttl, "BFD packet below the minimum TTL");
            return;
        }
        self.feed(discr, Input::Received(p));
        self.publish(discr);
    }

    fn fire(&mut self) {
        let now = Instant::now();
        while let Some(&(at, discr, i)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, discr, i));
            if let Some(e) = self.sessions.get_mut(&discr) {
                e.timers[i] = None;
            }
            let t = TIMERS[i];
            self.feed(discr, Input::TimerExpired(t));
            if matches!(t, Timer::Detect | Timer::EchoDetect) {
                self.publish(discr);
            }
        }
    }

    fn feed(&mut self, discr: u32, input: Input) {
        let out = match self.sessions.get_mut(&discr) {
            Some(e) => e.session.handle(input),
            None => return,
        };
        self.apply(discr, out);
    }

    fn apply(&mut self, discr: u32, out: Vec<Output>) {
        for o in out {
            match o {
                Output::Send(p) => self.send(discr, &p),
                Output::SetTimer(t, d) => self.set_timer(discr, t, Some(Instant::now() + d)),
                Output::StopTimer(t) => self.set_timer(discr, t, None),
                Output::SendEcho => self.send_echo(discr),
                Output::EchoWanted(true) => {
                    let ok = self.take_echo(discr);
                    self.feed(discr, Input::EchoPath(ok));
                    self.publish(discr);
                }
                Output::EchoWanted(false) => self.release_echo(discr),
                Output::StateChanged(c) => {
                    let Some(e) = self.sessions.get(&discr) else {
                        continue;
                    };
                    tracing::info!(peer = %e.key.peer, from = %c.from, to = %c.to, diag = %c.diag, "BFD state change");
                    e.status.send_modify(|s| {
                        s.last_change = Some(c);
                        if c.is_failure() {
                            s.failures += 1;
                        }
                    });
                }
            }
        }
    }

    fn set_timer(&mut self, discr: u32, t: Timer, at: Option<Instant>) {
        let i = timer_index(t);
        let Some(e) = self.sessions.get_mut(&discr) else {
            return;
        };
        if let Some(old) = e.timers[i].take() {
            self.timers.remove(&(old, discr, i));
        }
        if let Some(at) = at {
            e.timers[i] = Some(at);
            self.timers.insert((at, discr, i));
        }
    }

    fn send(&mut self, discr: u32, p: &ControlPacket) {
        let Some(e) = self.sessions.get(&discr) else {
            return;
        };
        let Some(sock) = &e.socket else { return };
        self.buf.clear();
        p.encode(&mut self.buf);
        if let Err(err) = sock.try_send_to(&self.buf, e.dest) {
            // UDP: a lost packet is what BFD is built to tolerate.
            tracing::debug!(peer = %e.dest, error = %err, "BFD send failed");
        }
    }

    /// Finds the Echo path of a session and opens (or shares) its interface's socket; the
    /// reason it cannot goes to the session's status.
    fn take_echo(&mut self, discr: u32) -> bool {
        let Some(e) = self.sessions.get(&discr) else {
            return false;
        };
        let peer = e.key.peer;
        let local = e
            .params
            .local
            .or_else(|| {
                e.socket
                    .as_ref()
                    .and_then(|s| s.local_addr().ok())
                    .map(|a| a.ip())
            })
            .filter(|ip| !ip.is_unspecified())
            .or_else(|| route_source(peer));
        let found = if e.key.multihop {
            Err("Echo is single hop only (RFC 5883 §3)".to_string())
        } else {
            match local {
                Some(local) => echo::resolve(peer, local),
                None => Err(format!("no local address toward {peer}")),
            }
        };
        let opened = found.and_then(|path| {
            if let Some(l) = self.links.get_mut(&path.ifindex) {
                l.users += 1;
                return Ok(path);
            }
            let link = EchoLink::open(path.ifindex)
                .map_err(|err| format!("cannot open the Echo socket (CAP_NET_RAW): {err}"))?;
            let reader = link
                .spawn_reader(self.echo_tx.clone())
                .map_err(|err| format!("cannot start the Echo reader: {err}"))?;
            self.links.insert(
                path.ifindex,
                Link {
                    link,
                    users: 1,
                    _reader: reader,
                },
            );
            Ok(path)
        });
        let Some(e) = self.sessions.get_mut(&discr) else {
            return false;
        };
        match opened {
            Ok(path) => {
                tracing::info!(peer = %peer, ifindex = path.ifindex, "BFD Echo running");
                e.echo = Some(path);
                e.status.send_modify(|s| s.echo_error = None);
                true
            }
            Err(err) => {
                tracing::warn!(peer = %peer, error = %err, "BFD Echo not running: Control packets alone detect failures");
                e.status.send_modify(|s| s.echo_error = Some(err));
                false
            }
        }
    }

    fn release_echo(&mut self, discr: u32) {
        let Some(path) = self.sessions.get_mut(&discr).and_then(|e| e.echo.take()) else {
            return;
        };
        if let Some(l) = self.links.get_mut(&path.ifindex) {
            l.users = l.users.saturating_sub(1);
            if l.users == 0 {
                self.links.remove(&path.ifindex);
            }
        }
    }

    fn send_echo(&mut self, discr: u32) {
        let ip_id = self.random() as u16;
        let Some(e) = self.sessions.get_mut(&discr) else {
            return;
        };
        let Some(path) = e.echo else { return };
        e.echo_sequence += 1;
        let frame = echo::frame(&path, discr, e.echo_sequence, ip_id);
        if let Some(l) = self.links.get(&path.ifindex) {
            if let Err(err) = l.link.send(&frame) {
                tracing::debug!(peer = %e.key.peer, error = %err, "BFD Echo send failed");
            }
        }
    }

    /// An Echo frame from a packet socket: ours, back through the peer, goes to its session.
    fn echo_returned(&mut self, frame: &[u8]) {
        let Some(r) = echo::parse_returned(frame) else {
            return;
        };
        let ours = self
            .sessions
            .get(&r.discriminator)
            .and_then(|e| e.echo)
            .is_some_and(|p| p.local == r.local);
        if ours {
            self.feed(r.discriminator, Input::EchoReceived);
        }
    }

    /// Publishes the session's view when it changed (state, timers, discriminators).
    fn publish(&self, discr: u32) {
        if let Some(e) = self.sessions.get(&discr) {
            let now = e.session.status();
            e.status.send_if_modified(|s| {
                if s.session == Some(now) {
                    false
                } else {
                    s.session = Some(now);
                    true
                }
            });
        }
    }
}

fn open_sender(
    key: &SessionKey,
    params: &SessionParams,
    seed: u16,
    status: &watch::Sender<BfdStatus>,
) -> Option<UdpSocket> {
    match socket::sender(key.peer, params.local, seed) {
        Ok(s) => Some(s),
        Err(e) => {
            let msg = format!("cannot open a BFD socket to {}: {e}", key.peer);
            tracing::warn!("{msg}");
            status.send_modify(|s| s.error = Some(msg));
            None
        }
    }
}

/// The source address the kernel picks toward `peer` (a connected UDP socket sends
/// nothing).
fn route_source(peer: IpAddr) -> Option<IpAddr> {
    let any: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = std::net::UdpSocket::bind(any).ok()?;
    s.connect(SocketAddr::new(peer, SINGLE_HOP_PORT)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

//! The task that runs one peer: it owns the session FSM, the TCP connection(s), the timers
//! and the Adj-RIB-Out, and carries out the FSM's outputs.
//!
//! ```text
//!   Speaker ──watch: PeerConfig────────┐
//!           ──watch: Arc<RouteTable>───┤
//!           ──watch: stop(Notification)┤
//!   listener ──mpsc: accepted TcpStream┤
//!                                      ▼
//!                     peer task (one per peer, this file)
//!                     main: Conn { Session, TcpStream, timers, buffers }
//!                     extra: Option<Conn>   (incoming connection during a collision)
//!                                      │
//!                     Arc<Mutex<PeerStatus>>, broadcast<PeerEvent>  ──► Speaker users
//! ```
//!
//! Reads go through [`frame_len`] into a buffer that never holds more than one message
//! plus one read; writes are coalesced into one buffer per connection and written once per
//! loop turn. A connection collision (RFC 4271 §6.8) is the one time two connections exist.
use crate::config::PeerConfig;
use crate::connection;
use crate::fsm::{collision_keeps, Direction, Input, Output, Session, State, Timer};
use crate::negotiate::SessionConfig;
use crate::packet::iana::message_type;
use crate::packet::{
    encode_announce, encode_withdraw, frame_len, CodecContext, Family, Message, Notification,
    Update, UpdateAction, HEADER_LEN,
};
use crate::rib_out::{self, RouteTable, SessionRouteContext};
use crate::status::{LastError, PeerEvent, PeerStatus};
use bytes::BytesMut;
use ipnet::IpNet;
use std::collections::HashSet;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

/// Prefixes a peer may announce with `import` and no `max_prefixes`: a bound on memory.
pub const IMPORT_HARD_LIMIT: u32 = 1_000_000;
/// How long closing a connection may wait to flush the last NOTIFICATION.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes read per `read` call at most.
const READ_CHUNK: usize = 64 * 1024;

/// What the Speaker hands a peer task.
pub(crate) struct PeerInputs {
    pub config: watch::Receiver<PeerConfig>,
    pub routes: watch::Receiver<Arc<RouteTable>>,
    pub stop: watch::Receiver<Option<Notification>>,
    pub incoming: mpsc::Receiver<TcpStream>,
    pub status: Arc<Mutex<PeerStatus>>,
    pub events: broadcast::Sender<PeerEvent>,
    pub router_id: Ipv4Addr,
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<TcpStream, connection::TransportError>> + Send>>;

/// One TCP connection and the FSM that runs on it.
struct Conn {
    session: Session,
    direction: Option<Direction>,
    stream: Option<TcpStream>,
    timers: [Option<Instant>; 4],
    rbuf: BytesMut,
    wbuf: BytesMut,
    ctx: CodecContext,
    /// Set on the Established output; the table is sent once collisions are settled.
    just_established: bool,
}

impl Conn {
    fn new(session: Session) -> Conn {
        Conn {
            session,
            direction: None,
            stream: None,
            timers: [None; 4],
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            ctx: CodecContext::PRE_OPEN,
            just_established: false,
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.timers.iter().flatten().min().copied()
    }
}

fn timer_index(t: Timer) -> usize {
    match t {
        Timer::ConnectRetry => 0,
        Timer::Hold => 1,
        Timer::Keepalive => 2,
        Timer::IdleHold => 3,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Which {
    Main,
    Extra,
}

/// Reads into `buf` from `stream`, or never completes without a stream.
async fn read_from(stream: &mut Option<TcpStream>, buf: &mut BytesMut) -> std::io::Result<usize> {
    match stream {
        Some(s) => {
            buf.reserve(READ_CHUNK);
            s.read_buf(buf).await
        }
        None => std::future::pending().await,
    }
}

async fn connect_done(
    f: &mut Option<ConnectFuture>,
) -> Result<TcpStream, connection::TransportError> {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

pub(crate) struct PeerTask {
    cfg: PeerConfig,
    scfg: SessionConfig,
    inputs: PeerInputs,
    main: Conn,
    extra: Option<Conn>,
    connecting: Option<ConnectFuture>,
    /// Connections closing: flushed (bounded) and dropped at the end of the loop turn.
    closing: Vec<(TcpStream, BytesMut)>,
    routes: Arc<RouteTable>,
    sent: Arc<RouteTable>,
    rib_in: HashSet<IpNet>,
    events: Vec<PeerEvent>,
}

impl PeerTask {
    pub(crate) fn new(cfg: PeerConfig, inputs: PeerInputs) -> PeerTask {
        let scfg = SessionConfig::from_peer(&cfg, inputs.router_id);
        let routes = inputs.routes.borrow().clone();
        PeerTask {
            main: Conn::new(Session::new(scfg.clone())),
            scfg,
            cfg,
            inputs,
            extra: None,
            connecting: None,
            closing: Vec::new(),
            routes,
            sent: Arc::new(RouteTable::new()),
            rib_in: HashSet::new(),
            events: Vec::new(),
        }
    }

    /// Runs until stopped (or until the Speaker is dropped).
    pub(crate) async fn run(mut self) {
        self.feed(Which::Main, Input::ManualStart);
        loop {
            // Collisions first: settling one may establish a session that then sends its
            // table, and everything encoded must be written before waiting again.
            self.settle_collision();
            self.flush().await;
            self.settle_collision();
            self.flush().await;
            self.publish();
            let deadline = [
                self.main.next_deadline(),
                self.extra.as_ref().and_then(Conn::next_deadline),
            ]
            .into_iter()
            .flatten()
            .min();
            let mut no_stream = None;
            let mut no_buf = BytesMut::new();
            let (extra_stream, extra_buf) = match &mut self.extra {
                Some(c) => (&mut c.stream, &mut c.rbuf),
                None => (&mut no_stream, &mut no_buf),
            };
            tokio::select! {
                biased;
                changed = self.inputs.stop.changed() => {
                    let n = match changed {
                        Ok(()) => self.inputs.stop.borrow().clone(),
                        Err(_) => None,
                    };
                    self.stop(n).await;
                    return;
                }
                accepted = self.inputs.incoming.recv() => match accepted {
                    Some(stream) => self.accept(stream),
                    None => { self.stop(None).await; return; }
                },
                changed = self.inputs.config.changed() => {
                    if changed.is_ok() {
                        let new = self.inputs.config.borrow().clone();
                        self.soft_reconfigure(new);
                    }
                }
                changed = self.inputs.routes.changed() => {
                    if changed.is_ok() {
                        self.routes = self.inputs.routes.borrow_and_update().clone();
                        self.sync_routes();
                    }
                }
                r = connect_done(&mut self.connecting) => {
                    self.connecting = None;
                    match r {
                        Ok(stream) => {
                            self.main.stream = Some(stream);
                            self.main.direction = Some(Direction::Outgoing);
                            self.main.rbuf.clear();
                            self.main.wbuf.clear();
                            self.main.ctx = CodecContext::PRE_OPEN;
                            self.feed(Which::Main, Input::TcpConnected(Direction::Outgoing));
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "connect failed");
                            self.set_error(LastError::transport(e.to_string(), std::time::Instant::now()));
                            self.feed(Which::Main, Input::TcpFailed);
                        }
                    }
                }
                r = read_from(&mut self.main.stream, &mut self.main.rbuf) => self.on_read(Which::Main, r),
                r = read_from(extra_stream, extra_buf) => self.on_read(Which::Extra, r),
                () = sleep_until(deadline) => self.fire_timers(),
            }
        }
    }

    fn conn(&mut self, which: Which) -> Option<&mut Conn> {
        match which {
            Which::Main => Some(&mut self.main),
            Which::Extra => self.extra.as_mut(),
        }
    }

    /// Feeds one event to a connection's FSM and carries out its outputs.
    fn feed(&mut self, which: Which, input: Input) {
        let now = std::time::Instant::now();
        let Some(conn) = self.conn(which) else { return };
        let outputs = conn.session.handle(input, now);
        for output in outputs {
            self.apply(which, output);
        }
        self.update_status();
    }

    fn apply(&mut self, which: Which, output: Output) {
        match output {
            Output::Connect => {
                if which == Which::Main {
                    self.connecting = Some(Box::pin(connection::connect(self.cfg.clone())));
                }
            }
            Output::SendMessage(m) => self.send(which, &m),
            Output::CloseConnection => {
                if which == Which::Main {
                    self.connecting = None;
                }
                let Some(conn) = self.conn(which) else { return };
                let wbuf = std::mem::take(&mut conn.wbuf);
                conn.rbuf = BytesMut::new();
                if let Some(stream) = conn.stream.take() {
                    self.closing.push((stream, wbuf));
                }
            }
            Output::SetTimer(t, d) => {
                if let Some(conn) = self.conn(which) {
                    conn.timers[timer_index(t)] = Some(Instant::now() + d);
                }
            }
            Output::StopTimer(t) => {
                if let Some(conn) = self.conn(which) {
                    conn.timers[timer_index(t)] = None;
                }
            }
            Output::Established(n) => {
                // The peer's first UPDATEs may be in the same read as its KEEPALIVE: start
                // counting now; our table goes out once collisions are settled.
                if which == Which::Main {
                    self.rib_in.clear();
                }
                if let Some(conn) = self.conn(which) {
                    conn.ctx = n.codec_context();
                    conn.just_established = true;
                }
            }
            Output::Down(reason) => {
                if which == Which::Main {
                    let now = std::time::Instant::now();
                    let error = LastError::from_down(&reason, now);
                    tracing::info!(?reason, "session down");
                    if let Some(e) = &error {
                        self.set_error(e.clone());
                    }
                    self.sent = Arc::new(RouteTable::new());
                    self.rib_in.clear();
                    self.events.push(PeerEvent::Down {
                        peer: self.cfg.address,
                        at: now,
                        error,
                    });
                }
            }
            Output::RouteRefresh(family) => {
                // RFC 2918: send the whole Adj-RIB-Out of that family again.
                if which == Which::Main && self.main.session.state() == State::Established {
                    let empty = RouteTable::new();
                    let d = rib_out::diff(&empty, &self.routes, &[family]);
                    self.encode_diff(&d);
                }
            }
        }
    }

    fn send(&mut self, which: Which, m: &Message) {
        let Some(conn) = self.conn(which) else { return };
        if conn.stream.is_none() {
            return;
        }
        if let Err(e) = m.encode(&conn.ctx, &mut conn.wbuf) {
            tracing::error!(error = %e, "cannot encode message");
            return;
        }
        if which == Which::Main {
            self.with_status(|s| s.messages_out += 1);
        }
    }

    fn on_read(&mut self, which: Which, r: std::io::Result<usize>) {
        match r {
            Ok(0) | Err(_) => {
                if let Err(e) = &r {
                    tracing::debug!(error = %e, ?which, "read failed");
                }
                self.feed(which, Input::TcpFailed);
            }
            Ok(_) => self.process_frames(which),
        }
    }

    /// Decodes every whole message in the read buffer and feeds it to the FSM.
    fn process_frames(&mut self, which: Which) {
        loop {
            let Some(conn) = self.conn(which) else { return };
            if conn.stream.is_none() {
                return;
            }
            let len = match frame_len(&conn.rbuf, &conn.ctx) {
                Ok(Some(len)) if conn.rbuf.len() >= len => len,
                Ok(_) => return,
                Err(e) => {
                    self.feed(which, Input::DecodeFailed(e.notification()));
                    return;
                }
            };
            let frame = conn.rbuf.split_to(len).freeze();
            let ctx = conn.ctx;
            let input = self.decode(which, &frame, &ctx);
            if let Some(input) = input {
                self.feed(which, input);
            }
        }
    }

    /// One framed message to an FSM input. Announce-only peers' UPDATEs are counted and not
    /// decoded: they only restart the hold timer.
    fn decode(&mut self, which: Which, frame: &[u8], ctx: &CodecContext) -> Option<Input> {
        let is_update = frame.get(HEADER_LEN - 1) == Some(&message_type::UPDATE);
        if which == Which::Main {
            self.with_status(|s| {
                s.messages_in += 1;
                if is_update {
                    s.updates_in += 1;
                }
            });
        }
        if is_update && !self.cfg.import {
            return Some(Input::MessageReceived(Message::Update(Update::default())));
        }
        match Message::decode(frame, ctx) {
            Ok(Message::Update(u)) => {
                if which == Which::Main && self.main.session.state() == State::Established {
                    if let Some(n) = self.import(&u) {
                        return Some(Input::Reset(n));
                    }
                }
                Some(Input::MessageReceived(Message::Update(u)))
            }
            Ok(m) => Some(Input::MessageReceived(m)),
            // RFC 7606: a milder UPDATE error is counted and the UPDATE dropped; it still
            // shows the peer is alive.
            Err(e) if e.action() != UpdateAction::SessionReset => {
                tracing::debug!(error = %e, "UPDATE dropped (RFC 7606)");
                Some(Input::MessageReceived(Message::Update(Update::default())))
            }
            Err(e) => {
                tracing::info!(error = %e, "decode error");
                Some(Input::DecodeFailed(e.notification()))
            }
        }
    }

    /// Counts the peer's prefixes; returns the Cease to send when over the limit (RFC 4486).
    fn import(&mut self, u: &Update) -> Option<Notification> {
        for p in &u.withdrawn {
            self.rib_in.remove(&IpNet::V4(*p));
        }
        if let Some(mp) = &u.attributes.mp_unreach {
            mp.withdrawn.iter().for_each(|p| {
                self.rib_in.remove(p);
            });
        }
        let limit = self.cfg.max_prefixes.unwrap_or(IMPORT_HARD_LIMIT);
        let announced = u.nlri.iter().map(|p| IpNet::V4(*p));
        let mp = u
            .attributes
            .mp_reach
            .iter()
            .flat_map(|m| m.nlri.iter().copied());
        let mut over = None;
        for p in announced.chain(mp) {
            self.rib_in.insert(p);
            if self.rib_in.len() > limit as usize {
                let (afi, safi) = Family::of(&p).afi_safi();
                over = Some(Notification::max_prefixes_reached(afi, safi, limit));
                break;
            }
        }
        let count = self.rib_in.len() as u64;
        self.with_status(|s| s.prefixes_received = count);
        over
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        for which in [Which::Main, Which::Extra] {
            for t in Timer::ALL {
                let due = match self.conn(which) {
                    Some(c) => c.timers[timer_index(t)].is_some_and(|d| d <= now),
                    None => false,
                };
                if due {
                    if let Some(c) = self.conn(which) {
                        c.timers[timer_index(t)] = None;
                    }
                    self.feed(which, Input::TimerExpired(t));
                }
            }
        }
    }

    /// A connection the listener accepted from this peer's address.
    fn accept(&mut self, stream: TcpStream) {
        if let Err(e) = connection::prepare_accepted(&stream, &self.cfg) {
            tracing::warn!(error = %e, "dropping incoming connection");
            return;
        }
        match self.main.session.state() {
            State::Idle | State::Connect | State::Active => {
                self.connecting = None;
                self.main.stream = Some(stream);
                self.main.direction = Some(Direction::Incoming);
                self.main.rbuf.clear();
                self.main.wbuf.clear();
                self.main.ctx = CodecContext::PRE_OPEN;
                self.feed(Which::Main, Input::TcpConnected(Direction::Incoming));
            }
            _ if self.extra.is_none() => {
                tracing::info!(
                    "second connection from the peer: collision candidate (RFC 4271 §6.8)"
                );
                let mut conn = Conn::new(Session::for_incoming(self.scfg.clone()));
                conn.stream = Some(stream);
                conn.direction = Some(Direction::Incoming);
                self.extra = Some(conn);
                self.feed(Which::Extra, Input::TcpConnected(Direction::Incoming));
            }
            _ => tracing::info!("third connection from the peer dropped"),
        }
    }

    /// Connection collision (RFC 4271 §6.8): once both connections received an OPEN, keep
    /// the one opened by the speaker with the higher BGP identifier; an Established session
    /// always wins over a new connection.
    fn settle_collision(&mut self) {
        while let Some(extra) = &self.extra {
            let es = extra.session.state();
            let ms = self.main.session.state();
            if es == State::Idle {
                self.extra = None;
                continue;
            }
            let main_alive = matches!(
                ms,
                State::OpenSent | State::OpenConfirm | State::Established
            );
            if !main_alive {
                self.promote();
                continue;
            }
            match (ms, es) {
                (State::Established, State::OpenConfirm) => {
                    self.feed(Which::Extra, Input::CollisionDump)
                }
                (State::OpenSent | State::OpenConfirm, State::Established) => {
                    self.feed(Which::Main, Input::CollisionDump);
                }
                (State::OpenConfirm, State::OpenConfirm) => {
                    let remote_id = extra
                        .session
                        .negotiated()
                        .map(|n| n.peer_id)
                        .unwrap_or(Ipv4Addr::UNSPECIFIED);
                    let keep = collision_keeps(
                        self.scfg.router_id,
                        self.scfg.local_as,
                        remote_id,
                        self.scfg.remote_as,
                    );
                    tracing::info!(?keep, "connection collision resolved");
                    if self.main.direction == Some(keep) {
                        self.feed(Which::Extra, Input::CollisionDump);
                    } else {
                        self.feed(Which::Main, Input::CollisionDump);
                    }
                }
                _ => break,
            }
        }
        if self.main.just_established {
            self.main.just_established = false;
            self.on_established();
        }
    }

    /// The extra connection becomes the session; the old one is gone.
    fn promote(&mut self) {
        if let Some(extra) = self.extra.take() {
            self.connecting = None;
            let old = std::mem::replace(&mut self.main, extra);
            if let Some(stream) = old.stream {
                self.closing.push((stream, old.wbuf));
            }
            self.update_status();
        }
    }

    /// The session is up: the whole table, then End-of-RIB per family (RFC 4724 §2).
    fn on_established(&mut self) {
        let now = std::time::Instant::now();
        tracing::info!("session established");
        self.sent = Arc::new(RouteTable::new());
        self.with_status(|s| s.established_count += 1);
        self.events.push(PeerEvent::Established {
            peer: self.cfg.address,
            at: now,
        });
        self.sync_routes();
        let families = self.families();
        for f in families {
            self.send(Which::Main, &Message::Update(Update::end_of_rib(f)));
            self.with_status(|s| s.updates_out += 1);
        }
        let total = rib_out::count(&self.sent, &self.families());
        self.events.push(PeerEvent::EndOfRib {
            peer: self.cfg.address,
            at: now,
            total,
        });
    }

    fn families(&self) -> Vec<Family> {
        self.main
            .session
            .negotiated()
            .map(|n| n.families.clone())
            .unwrap_or_default()
    }

    /// Sends the difference between what the peer has and what it should have.
    fn sync_routes(&mut self) {
        if self.main.session.state() != State::Established || self.main.just_established {
            return;
        }
        let families = self.families();
        let d = rib_out::diff(&self.sent, &self.routes, &families);
        self.sent = self.routes.clone();
        let total = rib_out::count(&self.sent, &families) as u64;
        self.with_status(|s| s.prefixes_sent = total);
        if d.is_empty() {
            return;
        }
        self.encode_diff(&d);
        self.events.push(PeerEvent::RoutesSent {
            peer: self.cfg.address,
            at: std::time::Instant::now(),
            announced: d.announced_count(),
            withdrawn: d.withdrawn_count(),
            total: total as usize,
        });
    }

    fn route_context(&self) -> SessionRouteContext {
        let local: Option<SocketAddr> = self.main.stream.as_ref().and_then(|s| s.local_addr().ok());
        let local_ip = local.map(|a| connection::canonical(a.ip()));
        let (mut v4, mut v6, mut ll) = (None, None, None);
        match local_ip {
            Some(IpAddr::V4(a)) => v4 = Some(a),
            Some(IpAddr::V6(a)) if a.is_unicast_link_local() => ll = Some(a),
            Some(IpAddr::V6(a)) => v6 = Some(a),
            None => {}
        }
        SessionRouteContext {
            ebgp: self.cfg.is_ebgp(),
            local_as: self.cfg.local_as,
            local_v4: v4,
            local_v6: v6,
            link_local_v6: ll,
        }
    }

    fn encode_diff(&mut self, d: &rib_out::RibDiff) {
        let rctx = self.route_context();
        let ctx = self.main.ctx;
        let mut updates = 0usize;
        for (family, prefixes) in &d.withdraw {
            match encode_withdraw(*family, prefixes, &ctx, &mut self.main.wbuf) {
                Ok(n) => updates += n,
                Err(e) => tracing::error!(error = %e, "cannot encode withdrawals"),
            }
        }
        for a in &d.announce {
            let (attrs, next_hop) = match rib_out::path_attributes(&a.attrs, a.family, &rctx) {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, prefixes = a.prefixes.len(), "routes not sent");
                    continue;
                }
            };
            match encode_announce(
                a.family,
                &attrs,
                next_hop,
                &a.prefixes,
                &ctx,
                &mut self.main.wbuf,
            ) {
                Ok(n) => updates += n,
                Err(e) => tracing::error!(error = %e, "cannot encode announcements"),
            }
        }
        self.with_status(|s| {
            s.updates_out += updates as u64;
            s.messages_out += updates as u64;
        });
    }

    /// Configuration changes that keep the session (the Speaker restarts the task for the
    /// others, see [`PeerConfig::needs_reset`]).
    fn soft_reconfigure(&mut self, new: PeerConfig) {
        if new.import != self.cfg.import {
            self.rib_in.clear();
        }
        let description = new.description.clone();
        self.cfg = new;
        self.with_status(|s| s.description = description);
    }

    /// Writes what each connection has buffered; a write error is a TCP failure.
    async fn flush(&mut self) {
        for which in [Which::Main, Which::Extra] {
            let Some(conn) = self.conn(which) else {
                continue;
            };
            if conn.wbuf.is_empty() {
                continue;
            }
            let Some(stream) = conn.stream.as_mut() else {
                conn.wbuf.clear();
                continue;
            };
            let result = stream.write_all(&conn.wbuf).await;
            conn.wbuf.clear();
            if let Err(e) = result {
                tracing::debug!(error = %e, "write failed");
                self.feed(which, Input::TcpFailed);
            }
        }
        for (mut stream, wbuf) in std::mem::take(&mut self.closing) {
            let close = async {
                let _ = stream.write_all(&wbuf).await;
                let _ = stream.shutdown().await;
            };
            let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, close).await;
        }
    }

    /// Publishes the events of this turn; "sent" events carry the time the write finished.
    fn publish(&mut self) {
        let now = std::time::Instant::now();
        for mut e in self.events.drain(..) {
            if let PeerEvent::RoutesSent { at, .. } | PeerEvent::EndOfRib { at, .. } = &mut e {
                *at = now;
            }
            let _ = self.inputs.events.send(e);
        }
    }

    /// ManualStop on every connection, flushed within a bound.
    async fn stop(&mut self, n: Option<Notification>) {
        self.feed(Which::Main, Input::ManualStop(n.clone()));
        if self.extra.is_some() {
            self.feed(Which::Extra, Input::ManualStop(n));
        }
        self.flush().await;
        self.publish();
        self.update_status();
    }

    fn set_error(&self, e: LastError) {
        self.with_status(|s| s.last_error = Some(e));
    }

    fn with_status(&self, f: impl FnOnce(&mut PeerStatus)) {
        if let Ok(mut s) = self.inputs.status.lock() {
            f(&mut s);
        }
    }

    fn update_status(&self) {
        let state = self.main.session.state();
        let at = self.main.session.established_at();
        self.with_status(|s| {
            s.state = state;
            s.established_at = at;
            if state != State::Established {
                s.prefixes_sent = 0;
            }
        });
    }
}

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
mod conn;
mod routes;

use crate::bfd::{Bfd, BfdStatus, Registration, SessionKey, SessionParams};
use crate::config::PeerConfig;
use crate::connection;
use crate::fsm::{collision_keeps, Direction, Input, Output, Session, State, Timer};
use crate::negotiate::SessionConfig;
use crate::packet::iana::message_type;
use crate::packet::{
    frame_len, CodecContext, Family, Message, Notification, Update, UpdateAction, HEADER_LEN,
};
use crate::rib_out::{self, RouteTable};
use crate::status::{LastError, PeerEvent, PeerStatus};
use bytes::BytesMut;
use conn::{
    bfd_changed, connect_done, read_from, sleep_until, timer_index, write_timeout, Conn,
    ConnectFuture, Which,
};
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

/// Prefixes a peer may announce with `import` and no `max_prefixes`: a bound on memory.
pub const IMPORT_HARD_LIMIT: u32 = 1_000_000;
/// How long closing a connection may wait to flush the last NOTIFICATION.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// How a peer task is told to stop.
#[derive(Debug, Clone)]
pub(crate) enum Stop {
    /// Send this NOTIFICATION (as Hard Reset where RFC 8538 asks).
    Notify(Notification),
    /// A planned restart of the speaker ([`Input::RestartStop`]).
    Restart,
}

/// What the Speaker hands a peer task.
pub(crate) struct PeerInputs {
    pub config: watch::Receiver<PeerConfig>,
    pub routes: watch::Receiver<Arc<RouteTable>>,
    pub stop: watch::Receiver<Option<Stop>>,
    pub incoming: mpsc::Receiver<TcpStream>,
    pub status: Arc<Mutex<PeerStatus>>,
    pub events: broadcast::Sender<PeerEvent>,
    pub router_id: Ipv4Addr,
    pub bfd: Bfd,
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
    /// Our next hops on the current session; `None` until computed after Established.
    route_ctx: Option<rib_out::SessionRouteContext>,
    /// A session reached Established since the task started: the R bit (RFC 4724 §3, "has
    /// restarted") is no longer true of later sessions.
    restart_done: bool,
    /// The BFD session while `cfg.bfd` asks for one; dropping it ends the session.
    bfd: Option<(Registration, watch::Receiver<BfdStatus>)>,
    /// BFD failures already acted on (the runtime counts them).
    bfd_failures: u64,
}

impl PeerTask {
    pub(crate) fn new(cfg: PeerConfig, inputs: PeerInputs) -> PeerTask {
        let scfg = session_config(&cfg, inputs.router_id, false);
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
            route_ctx: None,
            restart_done: false,
            bfd: None,
            bfd_failures: 0,
        }
    }

    /// Runs until stopped (or until the Speaker is dropped).
    pub(crate) async fn run(mut self) {
        self.sync_bfd();
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
                    let how = match changed {
                        Ok(()) => self.inputs.stop.borrow().clone(),
                        Err(_) => None,
                    };
                    self.stop(how).await;
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
                changed = bfd_changed(&mut self.bfd) => self.on_bfd(changed.is_ok()),
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
                    // A dead connection may not outlive the negotiated hold time either.
                    if let (Some(stream), true) = (&conn.stream, n.hold_time > 0) {
                        let t = Duration::from_secs(u64::from(n.hold_time));
                        if let Err(e) = crate::socket_options::set_user_timeout(
                            &socket2::SockRef::from(stream),
                            t,
                        ) {
                            tracing::warn!(error = %e, "cannot set TCP_USER_TIMEOUT");
                        }
                    }
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
                    self.route_ctx = None;
                    self.rib_in.clear();
                    self.events.push(PeerEvent::Down {
                        peer: self.cfg.address,
                        at: now,
                        error,
                    });
                }
            }
            Output::RouteRefresh(family) => {
                // RFC 2918: send the whole Adj-RIB-Out of that family again (what the peer
                // has from us, nothing more).
                if which == Which::Main && self.main.session.state() == State::Established {
                    let empty = RouteTable::new();
                    let d = rib_out::diff(&empty, &self.sent, &[family]);
                    let ctx = self.route_context();
                    self.encode_diff(&d, &ctx);
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
        // With our own connection attempt in flight, both may succeed (the peer may be
        // accepting ours right now): keep both and let §6.8 choose, on both sides alike.
        let connecting = self.main.session.state() == State::Connect && self.connecting.is_some();
        match self.main.session.state() {
            State::Idle | State::Connect | State::Active if !connecting => {
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
            _ => self.replace_silent_extra(stream),
        }
    }

    /// A third connection from the peer's address. The second one gives way to it when it
    /// has not sent an OPEN yet: a connection that stays silent must not lock the real peer
    /// out (each one is also bounded by the OPEN wait, [`PeerConfig::open_wait`]). Otherwise
    /// the new one is dropped.
    fn replace_silent_extra(&mut self, stream: TcpStream) {
        let silent = self
            .extra
            .as_ref()
            .is_some_and(|c| c.session.state() == State::OpenSent);
        if !silent {
            tracing::info!("third connection from the peer dropped");
            return;
        }
        tracing::info!("connection from the peer without an OPEN replaced by a new one");
        self.feed(
            Which::Extra,
            Input::Reset(Notification::new(
                crate::packet::iana::error_code::CEASE,
                crate::packet::iana::cease_subcode::CONNECTION_REJECTED,
                Vec::new(),
            )),
        );
        self.extra = None;
        let mut conn = Conn::new(Session::for_incoming(self.scfg.clone()));
        conn.stream = Some(stream);
        conn.direction = Some(Direction::Incoming);
        self.extra = Some(conn);
        self.feed(Which::Extra, Input::TcpConnected(Direction::Incoming));
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
            let main_connecting = ms == State::Connect && self.connecting.is_some();
            if main_connecting && es != State::Established {
                break;
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

    /// Configuration changes that keep the session (the Speaker restarts the task for the
    /// others, see [`PeerConfig::needs_reset`]).
    fn soft_reconfigure(&mut self, new: PeerConfig) {
        if new.import != self.cfg.import {
            self.rib_in.clear();
        }
        let ttl_changed = new.outgoing_ttl() != self.cfg.outgoing_ttl()
            || new.minimum_incoming_ttl() != self.cfg.minimum_incoming_ttl();
        if ttl_changed {
            for conn in std::iter::once(&self.main).chain(self.extra.as_ref()) {
                if let Some(stream) = &conn.stream {
                    if let Err(e) = connection::apply_ttl(stream, &new) {
                        tracing::warn!(error = %e, "cannot change TTL on the live connection");
                    }
                }
            }
        }
        // What the OPEN says (hold time, families, graceful restart, router id) and how to
        // connect take effect with the next connection; this one keeps its negotiation.
        self.scfg = session_config(&new, self.inputs.router_id, self.restart_done);
        self.main.session.reconfigure(self.scfg.clone());
        if let Some(extra) = &mut self.extra {
            extra.session.reconfigure(self.scfg.clone());
        }
        let description = new.description.clone();
        self.cfg = new;
        self.with_status(|s| s.description = description);
        self.sync_bfd();
        // A lower limit applies at once (RFC 4486), not at the peer's next UPDATE.
        if let Some(limit) = self.cfg.max_prefixes.filter(|_| self.cfg.import) {
            if self.rib_in.len() > limit as usize && self.main.session.state() == State::Established
            {
                let (afi, safi) = self
                    .rib_in
                    .iter()
                    .next()
                    .map(|p| Family::of(p).afi_safi())
                    .unwrap_or(Family::Ipv4Unicast.afi_safi());
                self.feed(
                    Which::Main,
                    Input::Reset(Notification::max_prefixes_reached(afi, safi, limit)),
                );
            }
        }
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
            // A peer that stops reading must not stall this task (hold timer, stop) for
            // longer than the hold time; TCP_USER_TIMEOUT does not fire while it ACKs.
            let limit = write_timeout(conn.session.negotiated().map(|n| n.hold_time));
            let result = tokio::time::timeout(limit, stream.write_all(&conn.wbuf)).await;
            conn.wbuf.clear();
            let failed = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some(format!("write blocked for {limit:?}")),
            };
            if let Some(e) = failed {
                tracing::info!(error = %e, "write failed");
                self.set_error(LastError::transport(e, std::time::Instant::now()));
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

    /// ManualStop (or RestartStop) on every connection, flushed within a bound.
    async fn stop(&mut self, how: Option<Stop>) {
        let input = match how {
            Some(Stop::Restart) => Input::RestartStop,
            Some(Stop::Notify(n)) => Input::ManualStop(Some(n)),
            None => Input::ManualStop(None),
        };
        self.feed(Which::Main, input.clone());
        if self.extra.is_some() {
            self.feed(Which::Extra, input);
        }
        self.flush().await;
        self.publish();
        self.update_status();
    }

    /// Registers, changes or ends the BFD session to match `cfg.bfd`.
    fn sync_bfd(&mut self) {
        let want = self.cfg.bfd.map(|b| {
            let key = SessionKey {
                peer: self.cfg.address,
                multihop: b.multihop,
            };
            let params = SessionParams {
                timers: b.timers,
                local: self.cfg.source_address,
                minimum_ttl: b.minimum_ttl,
                peer_port: None,
            };
            (key, params)
        });
        let current = self.bfd.as_ref().map(|(r, _)| (r.key(), r.params()));
        if current == want {
            return;
        }
        // Drop the old registration first: a changed key must end the old session.
        if current.map(|c| c.0) != want.map(|w| w.0) {
            self.bfd = None;
        }
        match want {
            Some((key, params)) => {
                let (reg, rx) = self.inputs.bfd.register(key, params);
                self.bfd_failures = rx.borrow().failures;
                self.bfd = Some((reg, rx));
            }
            None => {
                self.bfd = None;
                self.with_status(|s| s.bfd = None);
            }
        }
    }

    /// A BFD status change: a new failure takes the BGP session down at once (RFC 5882
    /// §4.3); it then reconnects like after any other failure.
    fn on_bfd(&mut self, alive: bool) {
        let Some((_, rx)) = &mut self.bfd else { return };
        if !alive {
            tracing::warn!("BFD runtime gone");
            self.bfd = None;
            return;
        }
        let st = rx.borrow_and_update().clone();
        let new_failure = st.failures > self.bfd_failures;
        self.bfd_failures = st.failures;
        self.with_status(|s| s.bfd = Some(st.clone()));
        if new_failure {
            tracing::info!(change = ?st.last_change, "BFD down: closing the BGP session");
            self.feed(Which::Main, Input::BfdDown);
            if self.extra.is_some() {
                self.feed(Which::Extra, Input::BfdDown);
            }
        }
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
        let negotiated = self.main.session.negotiated();
        let families = negotiated.map(|n| n.families.clone()).unwrap_or_default();
        let gr = negotiated.is_some_and(|n| n.graceful_restart);
        let n_bit = negotiated.is_some_and(|n| n.graceful_notification);
        let table = self.routes.len() as u64;
        self.with_status(|s| {
            s.state = state;
            s.established_at = at;
            s.families = families;
            s.graceful_restart = gr;
            s.graceful_notification = n_bit;
            if state != State::Established {
                s.prefixes_sent = 0;
                s.prefixes_not_sent = table;
                s.families_not_announced.clear();
            }
        });
    }
}

/// The session configuration of a peer; the R bit only until a session of this task was
/// established (RFC 4724 §3: it says the speaker has just restarted).
fn session_config(cfg: &PeerConfig, router_id: Ipv4Addr, restart_done: bool) -> SessionConfig {
    let mut scfg = SessionConfig::from_peer(cfg, router_id);
    if restart_done {
        if let Some(gr) = &mut scfg.graceful_restart {
            gr.restarting = false;
        }
    }
    scfg
}

//! The BGP session finite state machine (RFC 4271 §8), sans I/O.
//!
//! [`Session::handle`] takes one [`Input`] (an RFC 4271 §8.1 event) and the current time and
//! returns the [`Output`]s the caller carries out in order: connect, send, close, arm or stop
//! a timer, report the session up or down. It never reads a clock, a socket or a timer
//! itself, so every transition is a plain unit test.
//!
//! Deviations from the RFC text, on purpose:
//! - After a session goes down the FSM re-starts by itself (AutomaticStart, event 3) after an
//!   IdleHold delay that doubles with each consecutive failure (§8.1.1 DampPeerOscillations).
//!   The ConnectRetry interval backs off the same way: [`retry_delay`].
//! - A connection accepted while Idle but enabled (waiting out the IdleHold delay) is taken:
//!   the peer decided to try, there is no reason to make it wait.
//! - Connection collisions (§6.8) need two connections; the peer task runs one `Session` per
//!   connection and decides with [`collision_keeps`], then dumps the loser with
//!   [`Input::CollisionDump`].
use crate::negotiate::{negotiate, NegotiatedSession, SessionConfig};
use crate::packet::iana::{cease_subcode, error_code, fsm_subcode};
use crate::packet::{Family, Message, Notification};
use bytes::Bytes;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// RFC 4271 §8.2.2 states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// The timers the FSM arms through [`Output::SetTimer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
    /// Delay before an automatic restart after the session went down (§8.1.1).
    IdleHold,
}

impl Timer {
    pub const ALL: [Timer; 4] = [
        Timer::ConnectRetry,
        Timer::Hold,
        Timer::Keepalive,
        Timer::IdleHold,
    ];
}

/// Who opened the TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// We connected to the peer (event 16, Tcp_CR_Acked).
    Outgoing,
    /// The peer connected to us (event 17, TcpConnectionConfirmed).
    Incoming,
}

/// Events (RFC 4271 §8.1). Short-lived, so a large `Message` inline costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Event 1 (or 5 for a passive peer).
    ManualStart,
    /// Event 2: send this NOTIFICATION (Cease / Administrative Shutdown when `None`) and stay
    /// down until the next `ManualStart`.
    ManualStop(Option<Notification>),
    /// Events 16 / 17.
    TcpConnected(Direction),
    /// Event 18: the connection (or the attempt) failed or was closed by the peer.
    TcpFailed,
    /// Events 19 to 28.
    MessageReceived(Message),
    /// Events 21, 22, 28 (BGPHeaderErr, BGPOpenMsgErr, UpdateMsgErr): the NOTIFICATION the
    /// decode error maps to.
    DecodeFailed(Notification),
    /// A local decision to reset the session with this NOTIFICATION (for example Cease /
    /// Maximum Number of Prefixes Reached, RFC 4486); the session restarts after IdleHold.
    Reset(Notification),
    /// Events 9 (ConnectRetry), 10 (Hold), 11 (Keepalive) and 13 (IdleHold).
    TimerExpired(Timer),
    /// Event 23, OpenCollisionDump: this connection lost the collision resolution (§6.8).
    CollisionDump,
    /// A planned restart of this speaker (RFC 4724 §4.1): where graceful restart was
    /// negotiated the connection is closed without a NOTIFICATION, so the peer keeps our
    /// routes for the restart time; elsewhere it is a `ManualStop(None)`.
    RestartStop,
    /// BFD declared the path down (RFC 5882 §4.3): close with Cease / BFD Down (RFC 9384)
    /// at once, then restart after IdleHold like any other failure.
    BfdDown,
}

/// Why a session left OpenSent, OpenConfirm or Established (or an attempt was stopped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// `ManualStop`.
    Stopped,
    /// We sent this NOTIFICATION (an error we found, hold timer expiry, collision).
    NotificationSent(Notification),
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// The TCP connection failed or the peer closed it without a NOTIFICATION.
    ConnectionLost,
}

/// What the caller must do, in order.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Start an outgoing TCP connection; answer with `TcpConnected` or `TcpFailed`.
    Connect,
    SendMessage(Message),
    /// Flush what was sent, then close the connection (or abandon the connect attempt).
    CloseConnection,
    SetTimer(Timer, Duration),
    StopTimer(Timer),
    Established(NegotiatedSession),
    Down(DownReason),
    /// The peer asked for our routes again (RFC 2918).
    RouteRefresh(Family),
}

/// ConnectRetry / IdleHold delay after `failures` consecutive failures: `base` doubled per
/// failure, at most `cap`. Deterministic: no jitter, so tests and operators can predict it.
pub fn retry_delay(base: Duration, cap: Duration, failures: u32) -> Duration {
    let factor = 1u32 << failures.min(16);
    base.checked_mul(factor).unwrap_or(cap).min(cap)
}

/// Connection collision (RFC 4271 §6.8, RFC 6286 §2.3): which connection survives. The one
/// opened by the speaker with the higher BGP identifier; with equal identifiers (possible
/// in eBGP), by the speaker with the higher AS number.
pub fn collision_keeps(
    local_id: Ipv4Addr,
    local_as: u32,
    remote_id: Ipv4Addr,
    remote_as: u32,
) -> Direction {
    let local = (u32::from(local_id), local_as);
    let remote = (u32::from(remote_id), remote_as);
    if local > remote {
        Direction::Outgoing
    } else {
        Direction::Incoming
    }
}

/// One BGP session: the §8 state machine for one connection to one peer.
#[derive(Debug, Clone)]
pub struct Session {
    cfg: SessionConfig,
    /// A new configuration waiting for the next connection (the running one keeps what its
    /// OPEN said).
    pending: Option<SessionConfig>,
    state: State,
    /// Set by ManualStart, cleared by ManualStop: whether to (re)start automatically.
    enabled: bool,
    /// Consecutive failures since the last Established; drives [`retry_delay`].
    failures: u32,
    negotiated: Option<NegotiatedSession>,
    established_at: Option<Instant>,
}

impl Session {
    pub fn new(cfg: SessionConfig) -> Session {
        Session {
            cfg,
            pending: None,
            state: State::Idle,
            enabled: false,
            failures: 0,
            negotiated: None,
            established_at: None,
        }
    }

    /// A session for a second, incoming connection during a collision: enabled, but it
    /// never connects out and never restarts by itself.
    pub fn for_incoming(mut cfg: SessionConfig) -> Session {
        cfg.passive = true;
        let mut s = Session::new(cfg);
        s.enabled = true;
        s
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    /// What the OPEN exchange negotiated, from OpenConfirm on.
    pub fn negotiated(&self) -> Option<&NegotiatedSession> {
        self.negotiated.as_ref()
    }

    /// When the session reached Established, while it is.
    pub fn established_at(&self) -> Option<Instant> {
        self.established_at
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Takes a new configuration without a reset: at once while there is no connection,
    /// otherwise with the next connection's OPEN.
    pub fn reconfigure(&mut self, cfg: SessionConfig) {
        match self.state {
            State::Idle | State::Connect | State::Active => self.cfg = cfg,
            State::OpenSent | State::OpenConfirm | State::Established => self.pending = Some(cfg),
        }
    }

    fn apply_pending(&mut self) {
        if let Some(cfg) = self.pending.take() {
            self.cfg = cfg;
        }
    }

    fn retry(&self) -> Duration {
        retry_delay(
            self.cfg.connect_retry,
            self.cfg.connect_retry_max,
            self.failures,
        )
    }

    /// Feeds one event; returns what to do.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        use Input as I;
        use State as S;
        match (self.state, input) {
            // ---- Idle ----
            // Event 1 / 5: ManualStart (passive: ManualStart_with_PassiveTcpEstablishment).
            (S::Idle, I::ManualStart) => {
                self.enabled = true;
                self.failures = 0;
                out.push(Output::StopTimer(Timer::IdleHold));
                self.start(&mut out);
            }
            // Event 13: IdleHoldTimer_Expires -> event 3 AutomaticStart.
            (S::Idle, I::TimerExpired(Timer::IdleHold)) if self.enabled => self.start(&mut out),
            // Event 17 while waiting out IdleHold: take the peer's connection.
            (S::Idle, I::TcpConnected(Direction::Incoming)) if self.enabled => {
                out.push(Output::StopTimer(Timer::IdleHold));
                self.connected(&mut out);
            }
            (S::Idle, I::TcpConnected(_)) => out.push(Output::CloseConnection),
            (S::Idle, I::ManualStop(_) | I::RestartStop) => {
                self.enabled = false;
                out.push(Output::StopTimer(Timer::IdleHold));
            }
            (S::Idle, _) => {}

            // ---- Connect and Active ----
            // Event 9: ConnectRetryTimer_Expires: the attempt took too long; try again.
            (S::Connect, I::TimerExpired(Timer::ConnectRetry)) => {
                self.failures = self.failures.saturating_add(1);
                out.push(Output::CloseConnection);
                out.push(Output::Connect);
                out.push(Output::SetTimer(Timer::ConnectRetry, self.retry()));
            }
            (S::Active, I::TimerExpired(Timer::ConnectRetry)) => {
                if self.cfg.passive {
                    return out;
                }
                self.state = S::Connect;
                out.push(Output::Connect);
                out.push(Output::SetTimer(Timer::ConnectRetry, self.retry()));
            }
            // Events 16 / 17: Tcp_CR_Acked, TcpConnectionConfirmed.
            (S::Connect | S::Active, I::TcpConnected(_)) => {
                out.push(Output::StopTimer(Timer::ConnectRetry));
                self.connected(&mut out);
            }
            // Event 18 in Connect: wait ConnectRetry, then try again from Active.
            (S::Connect, I::TcpFailed) => {
                self.failures = self.failures.saturating_add(1);
                out.push(Output::SetTimer(Timer::ConnectRetry, self.retry()));
                self.state = S::Active;
            }
            (S::Active, I::TcpFailed) => {}
            // Event 2: ManualStop.
            (S::Connect | S::Active, I::ManualStop(_) | I::RestartStop) => {
                self.enabled = false;
                out.push(Output::StopTimer(Timer::ConnectRetry));
                out.push(Output::CloseConnection);
                self.state = S::Idle;
                out.push(Output::Down(DownReason::Stopped));
            }
            (S::Connect | S::Active, _) => {}

            // ---- OpenSent ----
            // Event 19: BGPOpen.
            (S::OpenSent, I::MessageReceived(Message::Open(open))) => {
                match negotiate(&self.cfg, &open) {
                    Ok(n) => {
                        out.push(Output::SendMessage(Message::Keepalive));
                        self.arm_session_timers(&n, &mut out);
                        self.negotiated = Some(n);
                        self.state = S::OpenConfirm;
                    }
                    Err(notification) => self.fail(notification, &mut out),
                }
            }
            // Event 18 in OpenSent: back to Active, wait ConnectRetry (§8.2.2).
            (S::OpenSent, I::TcpFailed) => {
                self.failures = self.failures.saturating_add(1);
                out.push(Output::StopTimer(Timer::Hold));
                out.push(Output::CloseConnection);
                out.push(Output::Down(DownReason::ConnectionLost));
                if self.enabled {
                    out.push(Output::SetTimer(Timer::ConnectRetry, self.retry()));
                    self.state = S::Active;
                } else {
                    self.state = S::Idle;
                }
            }
            // Events 25 (NotifMsg) and 24 (NotifMsgVerErr) in OpenSent, OpenConfirm, Established.
            (
                S::OpenSent | S::OpenConfirm | S::Established,
                I::MessageReceived(Message::Notification(n)),
            ) => {
                self.go_idle(DownReason::NotificationReceived(n), &mut out);
            }
            // Event 27 and other unexpected messages in OpenSent: FSM error (RFC 6608).
            (S::OpenSent, I::MessageReceived(_)) => {
                self.fail(fsm_error(fsm_subcode::UNEXPECTED_IN_OPENSENT), &mut out);
            }

            // ---- OpenConfirm ----
            // Event 26: KeepAliveMsg.
            (S::OpenConfirm, I::MessageReceived(Message::Keepalive)) => {
                self.state = S::Established;
                self.failures = 0;
                self.established_at = Some(now);
                if let Some(n) = &self.negotiated {
                    if n.hold_time > 0 {
                        out.push(Output::SetTimer(Timer::Hold, secs(n.hold_time)));
                    }
                    out.push(Output::Established(n.clone()));
                }
            }
            (S::OpenConfirm, I::MessageReceived(_)) => {
                self.fail(fsm_error(fsm_subcode::UNEXPECTED_IN_OPENCONFIRM), &mut out);
            }

            // ---- Established ----
            // Events 26 (KeepAliveMsg) and 27 (UpdateMsg): restart the hold timer.
            (S::Established, I::MessageReceived(Message::Keepalive | Message::Update(_))) => {
                self.restart_hold(&mut out);
            }
            (S::Established, I::MessageReceived(Message::RouteRefresh(rr))) => {
                self.restart_hold(&mut out);
                if let Some(f) = Family::from_afi_safi(rr.afi, rr.safi) {
                    if self
                        .negotiated
                        .as_ref()
                        .is_some_and(|n| n.families.contains(&f))
                    {
                        out.push(Output::RouteRefresh(f));
                    }
                }
            }
            // Event 19 in Established: an OPEN here is an FSM error (RFC 6608).
            (S::Established, I::MessageReceived(Message::Open(_))) => {
                self.fail(fsm_error(fsm_subcode::UNEXPECTED_IN_ESTABLISHED), &mut out);
            }

            // ---- events shared by the states with a connection ----
            // Event 11: KeepaliveTimer_Expires.
            (S::OpenConfirm | S::Established, I::TimerExpired(Timer::Keepalive)) => {
                out.push(Output::SendMessage(Message::Keepalive));
                if let Some(n) = &self.negotiated {
                    if n.keepalive > 0 {
                        out.push(Output::SetTimer(Timer::Keepalive, secs(n.keepalive)));
                    }
                }
            }
            // Event 10: HoldTimer_Expires: NOTIFICATION Hold Timer Expired (4/0).
            (S::OpenSent | S::OpenConfirm | S::Established, I::TimerExpired(Timer::Hold)) => {
                let n = Notification {
                    code: error_code::HOLD_TIMER_EXPIRED,
                    subcode: 0,
                    data: Bytes::new(),
                };
                self.fail(n, &mut out);
            }
            (S::OpenConfirm | S::Established, I::TcpFailed) => {
                self.go_idle(DownReason::ConnectionLost, &mut out);
            }
            (S::OpenSent | S::OpenConfirm | S::Established, I::DecodeFailed(n) | I::Reset(n)) => {
                self.fail(n, &mut out);
            }
            // Event 23: OpenCollisionDump: Cease / Connection Collision Resolution.
            (S::OpenSent | S::OpenConfirm | S::Established, I::CollisionDump) => {
                let n = cease(cease_subcode::CONNECTION_COLLISION_RESOLUTION);
                self.fail(n, &mut out);
            }
            (S::OpenSent | S::OpenConfirm | S::Established, I::BfdDown) => {
                self.fail(cease(cease_subcode::BFD_DOWN), &mut out);
            }
            (S::OpenSent | S::OpenConfirm | S::Established, I::RestartStop)
                if self.negotiated.as_ref().is_some_and(|n| n.graceful_restart) =>
            {
                self.enabled = false;
                self.go_idle(DownReason::Stopped, &mut out);
            }
            (S::OpenSent | S::OpenConfirm | S::Established, I::ManualStop(n)) => {
                self.stop_with(n, &mut out);
            }
            (S::OpenSent | S::OpenConfirm | S::Established, I::RestartStop) => {
                self.stop_with(None, &mut out);
            }
            (S::OpenSent | S::OpenConfirm | S::Established, _) => {}
        }
        out
    }

    /// AutomaticStart / ManualStart: connect (active) or wait for the peer (passive).
    fn start(&mut self, out: &mut Vec<Output>) {
        if self.cfg.passive {
            self.state = State::Active;
        } else {
            self.state = State::Connect;
            out.push(Output::Connect);
            out.push(Output::SetTimer(Timer::ConnectRetry, self.retry()));
        }
    }

    /// A TCP connection is up: send OPEN, arm the OPEN wait as hold timer (§8.2.2 asks for
    /// a large one; ours is short, see [`crate::negotiate::DEFAULT_OPEN_WAIT`]), OpenSent.
    fn connected(&mut self, out: &mut Vec<Output>) {
        self.apply_pending();
        out.push(Output::SendMessage(self.cfg.open()));
        out.push(Output::SetTimer(Timer::Hold, self.cfg.open_wait));
        self.state = State::OpenSent;
    }

    fn arm_session_timers(&self, n: &NegotiatedSession, out: &mut Vec<Output>) {
        if n.hold_time > 0 {
            out.push(Output::SetTimer(Timer::Hold, secs(n.hold_time)));
            out.push(Output::SetTimer(Timer::Keepalive, secs(n.keepalive)));
        } else {
            out.push(Output::StopTimer(Timer::Hold));
        }
    }

    fn restart_hold(&self, out: &mut Vec<Output>) {
        if let Some(n) = &self.negotiated {
            if n.hold_time > 0 {
                out.push(Output::SetTimer(Timer::Hold, secs(n.hold_time)));
            }
        }
    }

    /// ManualStop: `n` (Cease / Administrative Shutdown by default), as a Hard Reset where
    /// RFC 8538 asks for one.
    fn stop_with(&mut self, n: Option<Notification>, out: &mut Vec<Output>) {
        self.enabled = false;
        let n = n.unwrap_or_else(|| cease(cease_subcode::ADMINISTRATIVE_SHUTDOWN));
        let n = self.as_sent(n);
        out.push(Output::SendMessage(Message::Notification(n)));
        self.go_idle(DownReason::Stopped, out);
    }

    /// The NOTIFICATION as it goes on the wire: wrapped in Cease / Hard Reset (RFC 8538 §3)
    /// when both sides set the N bit and `n` must flush our routes at the peer.
    fn as_sent(&self, n: Notification) -> Notification {
        let n_bit = self
            .negotiated
            .as_ref()
            .is_some_and(|x| x.graceful_notification);
        if n_bit && n.must_flush() {
            n.hard_reset()
        } else {
            n
        }
    }

    /// Sends `n` and goes down.
    fn fail(&mut self, n: Notification, out: &mut Vec<Output>) {
        let n = self.as_sent(n);
        out.push(Output::SendMessage(Message::Notification(n.clone())));
        self.go_idle(DownReason::NotificationSent(n), out);
    }

    /// Leaves the connection: stop timers, close, report, and schedule the automatic
    /// restart when still enabled.
    fn go_idle(&mut self, reason: DownReason, out: &mut Vec<Output>) {
        for t in [Timer::ConnectRetry, Timer::Hold, Timer::Keepalive] {
            out.push(Output::StopTimer(t));
        }
        out.push(Output::CloseConnection);
        out.push(Output::Down(reason));
        self.state = State::Idle;
        self.negotiated = None;
        self.established_at = None;
        self.apply_pending();
        if self.enabled {
            let delay = self.retry();
            self.failures = self.failures.saturating_add(1);
            out.push(Output::SetTimer(Timer::IdleHold, delay));
        }
    }
}

fn secs(s: u16) -> Duration {
    Duration::from_secs(u64::from(s))
}

fn fsm_error(subcode: u8) -> Notification {
    Notification {
        code: error_code::FSM,
        subcode,
        data: Bytes::new(),
    }
}

fn cease(subcode: u8) -> Notification {
    Notification {
        code: error_code::CEASE,
        subcode,
        data: Bytes::new(),
    }
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;

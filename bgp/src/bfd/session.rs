//! One BFD session in asynchronous mode (RFC 5880 §6), sans I/O.
//!
//! [`Session::handle`] takes one [`Input`] (a received, decoded Control packet, a timer
//! expiry, an administrative change) and returns the [`Output`]s the runtime carries out in
//! order: send a packet, arm or stop a timer, report a state change. It reads no clock and
//! no socket; randomness (the §6.8.7 jitter) comes from a seed given at creation.
//!
//! What it follows:
//! - §6.8.6 reception (the checks that need session state; the packet-level ones are in
//!   [`super::packet`]), the Down/Init/Up three-way handshake, diagnostics.
//! - §6.8.7 transmission: interval = max(DesiredMinTx, RemoteMinRx) reduced by 0–25 %
//!   jitter (10–25 % with Detect Mult 1); nothing while passive and the peer is unknown,
//!   nothing when the peer's RequiredMinRx is zero; a Final answers every Poll at once.
//! - §6.8.3 timer changes: a DesiredMinTx of at least one second while not Up; a change while Up runs a Poll Sequence, and an increased DesiredMinTx (or a reduced
//!   RequiredMinRx for the detection time) takes effect only once it ends.
//! - §6.8.4: detection time = the peer's Detect Mult × max(our RequiredMinRx, its
//!   DesiredMinTx).
//!
//! - §6.4 / §6.8.9 Echo, when configured: while Up and the peer accepts Echo (a non-zero
//!   Required Min Echo RX Interval), Echo packets go out every max(our Echo interval, the
//!   peer's), jittered like Control packets; none back for Detect Mult intervals takes the
//!   session Down with diagnostic 2 (Echo Function Failed). The runtime finds the path
//!   ([`Output::EchoWanted`] → [`Input::EchoPath`]) and carries the packets. We advertise a
//!   Required Min Echo RX of zero: we ask the peer for no Echo packets, so the node's own
//!   forwarding settings never matter. Control timers stay as configured (§6.8.3 only
//!   suggests slowing them; as FRR, we leave that to the user).
//!
//! Not implemented: Demand mode (never requested; a peer's D bit is recorded and ignored,
//! which §6.6 permits while we do not ask for it), authentication (a packet with the A bit
//! is discarded, §6.8.6).
use super::packet::{ControlPacket, Diag, State};
use std::time::Duration;

/// While not Up, DesiredMinTx is at least this (RFC 5880 §6.8.3).
pub const SLOW_TX: Duration = Duration::from_secs(1);

/// What the user configures (RFC 5880 §6.8.1 bfd.DesiredMinTxInterval,
/// bfd.RequiredMinRxInterval, bfd.DetectMult, and the passive role of §6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionConfig {
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub detect_mult: u8,
    pub passive: bool,
    /// The Echo function (§6.4): our Echo transmit interval; `None`, off.
    pub echo: Option<Duration>,
}

impl Default for SessionConfig {
    /// MetalLB's and FRR's defaults: 300 ms both ways, multiplier 3, active.
    fn default() -> SessionConfig {
        SessionConfig {
            desired_min_tx: Duration::from_millis(300),
            required_min_rx: Duration::from_millis(300),
            detect_mult: 3,
            passive: false,
            echo: None,
        }
    }
}

/// The session's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Periodic transmission (§6.8.7).
    Transmit,
    /// Detection time (§6.8.4).
    Detect,
    /// Periodic Echo transmission (§6.8.9).
    EchoTransmit,
    /// No Echo packet back for this long: the path is down.
    EchoDetect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A packet that passed [`ControlPacket::decode`] and the runtime's demultiplexing.
    Received(ControlPacket),
    TimerExpired(Timer),
    /// Take the session to AdminDown (diagnostic 7) and tell the peer.
    AdminDown,
    /// Leave AdminDown for Down.
    AdminUp,
    /// New timers: applied through a Poll Sequence while Up.
    Reconfigure(SessionConfig),
    /// The runtime's answer to [`Output::EchoWanted`]`(true)`: whether Echo packets can be
    /// sent (a path to the peer was found).
    EchoPath(bool),
    /// One of our Echo packets came back.
    EchoReceived,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(ControlPacket),
    SetTimer(Timer, Duration),
    StopTimer(Timer),
    StateChanged(StateChange),
    /// Send one Echo packet.
    SendEcho,
    /// Echo should run (`true`: find the path and answer with [`Input::EchoPath`]) or no
    /// longer (`false`: release it).
    EchoWanted(bool),
}

/// A change of bfd.SessionState.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateChange {
    pub from: State,
    pub to: State,
    pub diag: Diag,
    /// The peer said AdminDown: per RFC 5882 §3.2 a client should not treat this as a
    /// failure of the path.
    pub peer_admin_down: bool,
}

impl StateChange {
    /// An Up session lost, in a way the client must act on (RFC 5882 §3.2).
    pub fn is_failure(&self) -> bool {
        self.from == State::Up && self.to == State::Down && !self.peer_admin_down
    }
}

/// A view of the session for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionStatus {
    pub state: State,
    pub remote_state: State,
    pub local_diag: Diag,
    pub local_discr: u32,
    pub remote_discr: u32,
    /// The interval our packets are sent at now (before jitter).
    pub tx_interval: Duration,
    /// How long without a packet before the session goes down; `None` until the peer's
    /// timers are known.
    pub detection_time: Option<Duration>,
    /// The Echo function is running: its interval (before jitter).
    pub echo_interval: Option<Duration>,
}

#[derive(Debug, Clone)]
pub struct Session {
    cfg: SessionConfig,
    state: State,
    remote_state: State,
    local_discr: u32,
    remote_discr: u32,
    local_diag: Diag,
    /// Microseconds, as on the wire. RFC 5880 §6.8.1 initialises it to 1.
    remote_min_rx: u32,
    remote_desired_tx: u32,
    remote_detect_mult: u8,
    /// What our packets say now (bfd.DesiredMinTxInterval, bfd.RequiredMinRxInterval).
    adv_tx: u32,
    adv_rx: u32,
    /// What is in force for our sending and the detection time (they lag behind `adv_*`
    /// during a Poll Sequence, §6.8.3).
    used_tx: u32,
    used_rx: u32,
    /// A Poll Sequence (§6.5) is in progress: our packets carry P until a Final comes.
    poll: bool,
    /// bfd.RemoteMinRxEchoInterval, microseconds.
    remote_min_echo_rx: u32,
    /// Echo asked of the runtime ([`Output::EchoWanted`]), the path it found, Echo running.
    echo_wanted: bool,
    echo_path: bool,
    echo_active: bool,
    rng: u64,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn from_micros(us: u32) -> Duration {
    Duration::from_micros(u64::from(us))
}

impl Session {
    /// A session in Down. `local_discr` must be non-zero and unique in the runtime;
    /// `seed` drives the jitter. The runtime then feeds `TimerExpired(Transmit)` (or calls
    /// [`Session::start`]) to begin sending.
    pub fn new(cfg: SessionConfig, local_discr: u32, seed: u64) -> Session {
        let adv_tx = micros(cfg.desired_min_tx.max(SLOW_TX));
        let adv_rx = micros(cfg.required_min_rx);
        Session {
            cfg,
            state: State::Down,
            remote_state: State::Down,
            local_discr,
            remote_discr: 0,
            local_diag: Diag::None,
            remote_min_rx: 1,
            remote_desired_tx: 0,
            remote_detect_mult: 0,
            adv_tx,
            adv_rx,
            used_tx: adv_tx,
            used_rx: adv_rx,
            poll: false,
            remote_min_echo_rx: 0,
            echo_wanted: false,
            echo_path: false,
            echo_active: false,
            rng: seed | 1,
        }
    }

    /// The first outputs: arm the transmit timer (an active session sends at once).
    pub fn start(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        if self.may_send() {
            self.send(false, &mut out);
        }
        self.arm_transmit(&mut out);
        out
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &SessionConfig {
        &self.cfg
    }

    pub fn local_discr(&self) -> u32 {
        self.local_discr
    }

    pub fn remote_discr(&self) -> u32 {
        self.remote_discr
    }

    pub fn polling(&self) -> bool {
        self.poll
    }

    pub fn status(&self) -> SessionStatus {
        SessionStatus {
            state: self.state,
            remote_state: self.remote_state,
            local_diag: self.local_diag,
            local_discr: self.local_discr,
            remote_discr: self.remote_discr,
            tx_interval: self.tx_interval(),
            detection_time: self.detection_time(),
            echo_interval: self.echo_active.then(|| self.echo_interval()),
        }
    }

    /// §6.8.7: the larger of what we want and what the peer can take.
    pub fn tx_interval(&self) -> Duration {
        from_micros(self.used_tx.max(self.remote_min_rx))
    }

    /// §6.8.9: not faster than the peer can loop them back.
    pub fn echo_interval(&self) -> Duration {
        self.cfg
            .echo
            .unwrap_or_default()
            .max(from_micros(self.remote_min_echo_rx))
    }

    /// How long without an Echo packet back before the path counts as down.
    fn echo_detection_time(&self) -> Duration {
        self.echo_interval() * u32::from(self.cfg.detect_mult.max(1))
    }

    /// §6.8.4, asynchronous mode.
    pub fn detection_time(&self) -> Option<Duration> {
        if self.remote_detect_mult == 0 {
            return None;
        }
        let interval = u64::from(self.used_rx.max(self.remote_desired_tx));
        Some(Duration::from_micros(
            interval * u64::from(self.remote_detect_mult),
        ))
    }

    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Received(p) => self.receive(p, &mut out),
            Input::TimerExpired(Timer::Transmit) => {
                if self.may_send() {
                    self.send(false, &mut out);
                }
                self.arm_transmit(&mut out);
            }
            Input::TimerExpired(Timer::Detect) => self.detect_expired(&mut out),
            Input::AdminDown => {
                if self.state != State::AdminDown {
                    out.push(Output::StopTimer(Timer::Detect));
                    self.change(
                        State::AdminDown,
                        Diag::AdministrativelyDown,
                        false,
                        &mut out,
                    );
                }
            }
            Input::AdminUp => {
                if self.state == State::AdminDown {
                    self.change(State::Down, Diag::None, false, &mut out);
                }
            }
            Input::Reconfigure(cfg) => {
                self.cfg = cfg;
                self.readvertise(&mut out);
            }
            Input::EchoPath(ok) => self.echo_path = ok && self.echo_wanted,
            Input::TimerExpired(Timer::EchoTransmit) => {
                if self.echo_active {
                    out.push(Output::SendEcho);
                    let d = self.jittered(self.echo_interval());
                    out.push(Output::SetTimer(Timer::EchoTransmit, d));
                }
            }
            Input::EchoReceived => {
                if self.echo_active {
                    out.push(Output::SetTimer(
                        Timer::EchoDetect,
                        self.echo_detection_time(),
                    ));
                }
            }
            Input::TimerExpired(Timer::EchoDetect) => {
                if self.echo_active && self.state == State::Up {
                    self.change(State::Down, Diag::EchoFunctionFailed, false, &mut out);
                }
            }
        }
        self.update_echo(&mut out);
        out
    }

    /// RFC 5880 §6.8.6, from "If the A bit is set" on.
    fn receive(&mut self, p: ControlPacket, out: &mut Vec<Output>) {
        // We run no authentication: a packet that carries it is not for us.
        if p.auth.is_some() {
            return;
        }
        let interval_before = self.tx_interval();
        self.remote_discr = p.my_discr;
        self.remote_state = p.state;
        self.remote_min_rx = p.required_min_rx;
        self.remote_desired_tx = p.desired_min_tx;
        self.remote_detect_mult = p.detect_mult;
        self.remote_min_echo_rx = p.required_min_echo_rx;
        if p.fin && self.poll {
            self.poll = false;
            self.used_tx = self.adv_tx;
            self.used_rx = self.adv_rx;
        }
        if self.state == State::AdminDown {
            return;
        }
        // The peer may now expect packets sooner than our timer is set for (§6.8.7: the
        // interval follows bfd.RemoteMinRxInterval): re-arm rather than let its detection
        // time run out.
        if self.tx_interval() < interval_before {
            self.arm_transmit(out);
        }
        if let Some(d) = self.detection_time() {
            out.push(Output::SetTimer(Timer::Detect, d));
        }
        if p.state == State::AdminDown {
            if self.state != State::Down {
                self.change(State::Down, Diag::NeighborSignaledSessionDown, true, out);
            }
        } else {
            match (self.state, p.state) {
                (State::Down, State::Down) => self.change(State::Init, Diag::None, false, out),
                (State::Down, State::Init) => self.change(State::Up, Diag::None, false, out),
                (State::Init, State::Init | State::Up) => {
                    self.change(State::Up, Diag::None, false, out)
                }
                (State::Up, State::Down) => {
                    self.change(State::Down, Diag::NeighborSignaledSessionDown, false, out)
                }
                _ => {}
            }
        }
        if p.poll {
            self.send(true, out);
        }
    }

    fn detect_expired(&mut self, out: &mut Vec<Output>) {
        // §6.8.1: a detection time without packets forgets the peer.
        self.remote_discr = 0;
        self.remote_state = State::Down;
        self.remote_min_rx = 1;
        self.remote_desired_tx = 0;
        self.remote_detect_mult = 0;
        self.remote_min_echo_rx = 0;
        if matches!(self.state, State::Init | State::Up) {
            self.change(State::Down, Diag::ControlDetectionTimeExpired, false, out);
        }
    }

    /// Starts or stops the Echo function as the state, the peer's Required Min Echo RX and
    /// the runtime's path allow (§6.8.9: never to a peer that wants none).
    fn update_echo(&mut self, out: &mut Vec<Output>) {
        let wanted =
            self.cfg.echo.is_some() && self.state == State::Up && self.remote_min_echo_rx != 0;
        if wanted != self.echo_wanted {
            self.echo_wanted = wanted;
            self.echo_path = false;
            out.push(Output::EchoWanted(wanted));
        }
        let active = wanted && self.echo_path;
        if active && !self.echo_active {
            self.echo_active = true;
            out.push(Output::SendEcho);
            let d = self.jittered(self.echo_interval());
            out.push(Output::SetTimer(Timer::EchoTransmit, d));
            out.push(Output::SetTimer(
                Timer::EchoDetect,
                self.echo_detection_time(),
            ));
        } else if !active && self.echo_active {
            self.echo_active = false;
            out.push(Output::StopTimer(Timer::EchoTransmit));
            out.push(Output::StopTimer(Timer::EchoDetect));
        }
    }

    /// Moves to `to`, reports it, advertises the timers that go with the new state and
    /// tells the peer at once (a state change is not held back until the next tick).
    fn change(&mut self, to: State, diag: Diag, peer_admin_down: bool, out: &mut Vec<Output>) {
        let from = self.state;
        self.state = to;
        self.local_diag = diag;
        if to != State::Up {
            self.poll = false;
        }
        out.push(Output::StateChanged(StateChange {
            from,
            to,
            diag,
            peer_admin_down,
        }));
        self.readvertise(out);
        if self.may_send() || to == State::AdminDown {
            self.send(false, out);
        }
    }

    /// Recomputes the advertised timers (§6.8.3): slow (at least 1 s) DesiredMinTx while not
    /// Up; while Up a change starts a Poll Sequence.
    fn readvertise(&mut self, out: &mut Vec<Output>) {
        let tx = if self.state == State::Up {
            micros(self.cfg.desired_min_tx)
        } else {
            micros(self.cfg.desired_min_tx.max(SLOW_TX))
        };
        let rx = micros(self.cfg.required_min_rx);
        if tx == self.adv_tx && rx == self.adv_rx {
            return;
        }
        self.adv_tx = tx;
        self.adv_rx = rx;
        if self.state == State::Up && self.remote_discr != 0 {
            // An increased DesiredMinTx and a reduced RequiredMinRx wait for the Final.
            self.used_tx = self.used_tx.min(tx);
            self.used_rx = self.used_rx.max(rx);
            self.poll = true;
            self.send(false, out);
            self.arm_transmit(out);
        } else {
            self.used_tx = tx;
            self.used_rx = rx;
        }
    }

    /// §6.8.7: not while passive and the peer is unknown; not when the peer wants none.
    fn may_send(&self) -> bool {
        if self.cfg.passive && self.remote_discr == 0 {
            return false;
        }
        self.remote_min_rx != 0
    }

    fn packet(&self, fin: bool) -> ControlPacket {
        ControlPacket {
            diag: self.local_diag,
            state: self.state,
            poll: !fin && self.poll,
            fin,
            cpi: false,
            demand: false,
            detect_mult: self.cfg.detect_mult,
            my_discr: self.local_discr,
            your_discr: self.remote_discr,
            desired_min_tx: self.adv_tx,
            required_min_rx: self.adv_rx,
            required_min_echo_rx: 0,
            auth: None,
        }
    }

    fn send(&self, fin: bool, out: &mut Vec<Output>) {
        out.push(Output::Send(self.packet(fin)));
    }

    fn arm_transmit(&mut self, out: &mut Vec<Output>) {
        let d = self.jittered(self.tx_interval());
        out.push(Output::SetTimer(Timer::Transmit, d));
    }

    /// §6.8.7: 75 to 100 % of the interval, 75 to 90 % with a Detect Mult of 1.
    fn jittered(&mut self, interval: Duration) -> Duration {
        // xorshift64: enough to decorrelate sessions, no global state.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        let min_cut = if self.cfg.detect_mult == 1 { 10 } else { 0 };
        let cut = min_cut + (x % (25 - min_cut + 1));
        interval.mul_f64(1.0 - cut as f64 / 100.0)
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;

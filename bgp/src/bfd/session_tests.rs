use super::*;
use crate::bfd::packet::Auth;
use proptest::prelude::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn cfg(tx: u64, rx: u64, mult: u8) -> SessionConfig {
    SessionConfig {
        desired_min_tx: ms(tx),
        required_min_rx: ms(rx),
        detect_mult: mult,
        passive: false,
        echo: None,
    }
}

fn sent(out: &[Output]) -> Vec<ControlPacket> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(p) => Some(p.clone()),
            _ => None,
        })
        .collect()
}

fn changes(out: &[Output]) -> Vec<StateChange> {
    out.iter()
        .filter_map(|o| match o {
            Output::StateChanged(c) => Some(*c),
            _ => None,
        })
        .collect()
}

fn timer(out: &[Output], t: Timer) -> Option<Duration> {
    out.iter().rev().find_map(|o| match o {
        Output::SetTimer(x, d) if *x == t => Some(*d),
        _ => None,
    })
}

/// A peer's packet with the given state and timers.
fn peer(state: State, your: u32, tx_us: u32, rx_us: u32, mult: u8) -> ControlPacket {
    ControlPacket {
        diag: Diag::None,
        state,
        poll: false,
        fin: false,
        cpi: false,
        demand: false,
        detect_mult: mult,
        my_discr: 99,
        your_discr: your,
        desired_min_tx: tx_us,
        required_min_rx: rx_us,
        required_min_echo_rx: 0,
        auth: None,
    }
}

/// Two sessions wired back to back: every packet one sends reaches the other at once.
/// Returns each side's state changes.
fn exchange(a: &mut Session, b: &mut Session, first: Vec<Output>) -> (Vec<State>, Vec<State>) {
    let mut seen = (Vec::new(), Vec::new());
    let mut queue: Vec<(bool, ControlPacket)> =
        sent(&first).into_iter().map(|p| (true, p)).collect();
    let mut turns = 0;
    while let Some((from_a, p)) = queue.pop() {
        turns += 1;
        assert!(turns < 100, "the sessions never settle");
        let (to, log) = if from_a {
            (&mut *b, &mut seen.1)
        } else {
            (&mut *a, &mut seen.0)
        };
        let out = to.handle(Input::Received(p));
        log.extend(changes(&out).iter().map(|c| c.to));
        queue.extend(sent(&out).into_iter().map(|p| (!from_a, p)));
    }
    seen
}

fn up_pair(ca: SessionConfig, cb: SessionConfig) -> (Session, Session) {
    let mut a = Session::new(ca, 1, 11);
    let mut b = Session::new(cb, 2, 22);
    let _ = b.start();
    let first = a.start();
    exchange(&mut a, &mut b, first);
    (a, b)
}

#[test]
fn three_way_handshake_goes_down_init_up() {
    let mut a = Session::new(cfg(100, 100, 3), 1, 1);
    let out = a.start();
    let p = &sent(&out)[0];
    assert_eq!((p.state, p.your_discr, p.my_discr), (State::Down, 0, 1));
    let out = a.handle(Input::Received(peer(State::Down, 0, 1_000_000, 100_000, 3)));
    assert_eq!(changes(&out)[0].to, State::Init);
    assert_eq!(sent(&out)[0].state, State::Init);
    assert_eq!(sent(&out)[0].your_discr, 99);
    let out = a.handle(Input::Received(peer(State::Up, 1, 1_000_000, 100_000, 3)));
    assert_eq!(changes(&out)[0].to, State::Up);
    assert_eq!(a.state(), State::Up);
}

#[test]
fn two_sessions_reach_up_and_poll_down_to_their_fast_timers() {
    let (a, b) = up_pair(cfg(50, 50, 3), cfg(100, 100, 3));
    assert_eq!((a.state(), b.state()), (State::Up, State::Up));
    assert!(
        !a.polling() && !b.polling(),
        "Final ends each Poll Sequence"
    );
    // A sends at max(50, B's 100) ms; B at max(100, 50) ms.
    assert_eq!(a.tx_interval(), ms(100));
    assert_eq!(b.tx_interval(), ms(100));
    // A's detection time: B's mult 3 × max(A's rx 50, B's tx 100).
    assert_eq!(a.detection_time(), Some(ms(300)));
}

#[test]
fn desired_min_tx_is_at_least_one_second_while_not_up() {
    let mut a = Session::new(cfg(50, 50, 3), 1, 1);
    let out = a.start();
    assert_eq!(sent(&out)[0].desired_min_tx, 1_000_000);
    assert_eq!(sent(&out)[0].required_min_rx, 50_000);
    let t = timer(&out, Timer::Transmit).expect("transmit armed");
    assert!(t >= ms(750) && t <= ms(1000), "{t:?}");
}

#[test]
fn going_up_polls_with_the_fast_interval() {
    let mut a = Session::new(cfg(50, 50, 3), 1, 1);
    let _ = a.start();
    let _ = a.handle(Input::Received(peer(State::Down, 0, 1_000_000, 50_000, 3)));
    let out = a.handle(Input::Received(peer(State::Up, 1, 1_000_000, 50_000, 3)));
    let p = sent(&out).pop().expect("a packet on going Up");
    assert!(p.poll);
    assert_eq!(p.desired_min_tx, 50_000);
    assert!(a.polling());
    // The decrease applies at once.
    assert_eq!(a.tx_interval(), ms(50));
    let mut fin = peer(State::Up, 1, 50_000, 50_000, 3);
    fin.fin = true;
    let _ = a.handle(Input::Received(fin));
    assert!(!a.polling());
}

#[test]
fn poll_is_answered_with_final_at_once() {
    let (mut a, _) = up_pair(cfg(100, 100, 3), cfg(100, 100, 3));
    let mut p = peer(State::Up, 1, 200_000, 200_000, 3);
    p.poll = true;
    let out = a.handle(Input::Received(p));
    let answer = sent(&out);
    assert_eq!(answer.len(), 1);
    assert!(answer[0].fin && !answer[0].poll);
}

#[test]
fn increased_tx_takes_effect_only_after_final() {
    let (mut a, _) = up_pair(cfg(100, 100, 3), cfg(100, 100, 3));
    let out = a.handle(Input::Reconfigure(cfg(500, 100, 3)));
    assert!(sent(&out)[0].poll);
    assert_eq!(sent(&out)[0].desired_min_tx, 500_000);
    assert_eq!(a.tx_interval(), ms(100), "old interval until the Final");
    let mut fin = peer(State::Up, 1, 100_000, 100_000, 3);
    fin.fin = true;
    let _ = a.handle(Input::Received(fin));
    assert_eq!(a.tx_interval(), ms(500));
}

#[test]
fn reduced_rx_keeps_the_old_detection_time_until_final() {
    let (mut a, _) = up_pair(cfg(100, 300, 3), cfg(100, 100, 3));
    assert_eq!(a.detection_time(), Some(ms(900)));
    let _ = a.handle(Input::Reconfigure(cfg(100, 100, 3)));
    assert_eq!(a.detection_time(), Some(ms(900)));
    let mut fin = peer(State::Up, 1, 100_000, 100_000, 3);
    fin.fin = true;
    let _ = a.handle(Input::Received(fin));
    assert_eq!(a.detection_time(), Some(ms(300)));
}

#[test]
fn detection_time_expiry_takes_an_up_session_down_with_diag_1() {
    let (mut a, _) = up_pair(cfg(100, 100, 3), cfg(100, 100, 3));
    let out = a.handle(Input::TimerExpired(Timer::Detect));
    let c = changes(&out)[0];
    assert_eq!((c.from, c.to), (State::Up, State::Down));
    assert_eq!(c.diag, Diag::ControlDetectionTimeExpired);
    assert!(c.is_failure());
    let p = &sent(&out)[0];
    assert_eq!((p.state, p.diag.code(), p.your_discr), (State::Down, 1, 0));
    assert_eq!(p.desired_min_tx, 1_000_000, "back to slow timers");
}

#[test]
fn every_valid_packet_rearms_the_detection_timer() {
    let (mut a, _) = up_pair(cfg(100, 100, 3), cfg(100, 100, 5));
    let out = a.handle(Input::Received(peer(State::Up, 1, 100_000, 100_000, 5)));
    assert_eq!(timer(&out, Timer::Detect), Some(ms(500)));
}

#[test]
fn peer_down_is_a_failure_and_peer_admin_down_is_not() {
    let (mut a, _) = up_pair(cfg(100, 100, 3), cfg(100, 100, 3));
    let out = a.handle(Input::Received(peer(State::Down, 1, 1_000_000, 100_000, 3)));
    let c = changes(&out)[0];
    assert_eq!(c.diag, Diag::NeighborSignaledSessionDown);
    assert!(c.is_failure());

    let (mut a, _) = up_pair(cfg(100, 100, 3), cfg(100, 100, 3));
    let out = a.handle(Input::Received(peer(
        State::AdminDown,
        1,
        1_000_000,
        100_000,
        3,
    )));
    let c = changes(&out)[0];
    assert_eq!(
        (c.to, c.diag),
        (State::Down, Diag::NeighborSignaledSessionDown)
    );
    assert!(c.peer_admin_down && !c.is_failure());
}

#[test]
fn admin_down_says_diag_7_and_ignores_the_peer() {
    let (mut a, _) = up_pair(cfg(100, 100, 3), cfg(100, 100, 3));
    let out = a.handle(Input::AdminDown);
    assert!(out.contains(&Output::StopTimer(Timer::Detect)));
    let p = &sent(&out)[0];
    assert_eq!(
        (p.state, p.diag),
        (State::AdminDown, Diag::AdministrativelyDown)
    );
    let out = a.handle(Input::Received(peer(State::Up, 1, 100_000, 100_000, 3)));
    assert!(changes(&out).is_empty());
    assert_eq!(a.state(), State::AdminDown);
    let out = a.handle(Input::AdminUp);
    assert_eq!(changes(&out)[0].to, State::Down);
}

#[test]
fn passive_session_is_silent_until_the_peer_speaks() {
    let mut c = cfg(100, 100, 3);
    c.passive = true;
    let mut a = Session::new(c, 1, 1);
    assert!(sent(&a.start()).is_empty());
    assert!(sent(&a.handle(Input::TimerExpired(Timer::Transmit))).is_empty());
    let out = a.handle(Input::Received(peer(State::Down, 0, 1_000_000, 100_000, 3)));
    assert_eq!(sent(&out)[0].state, State::Init);
    assert!(!sent(&a.handle(Input::TimerExpired(Timer::Transmit))).is_empty());
}

#[test]
fn a_peer_that_wants_no_packets_gets_none() {
    let mut a = Session::new(cfg(100, 100, 3), 1, 1);
    let _ = a.start();
    let _ = a.handle(Input::Received(peer(State::Down, 0, 1_000_000, 0, 3)));
    assert!(sent(&a.handle(Input::TimerExpired(Timer::Transmit))).is_empty());
}

#[test]
fn packets_with_authentication_are_discarded() {
    let mut a = Session::new(cfg(100, 100, 3), 1, 1);
    let _ = a.start();
    let mut p = peer(State::Down, 0, 1_000_000, 100_000, 3);
    p.auth = Some(Auth {
        auth_type: 1,
        data: vec![1, b'x'],
    });
    assert!(a.handle(Input::Received(p)).is_empty());
    assert_eq!(a.remote_discr(), 0);
}

#[test]
fn we_advertise_no_echo_reception() {
    let mut a = Session::new(cfg(100, 100, 3), 1, 1);
    assert_eq!(sent(&a.start())[0].required_min_echo_rx, 0);
}

proptest! {
    #[test]
    fn jitter_stays_within_rfc_bounds(seed in any::<u64>(), mult in 1u8..=10, tx in 10u64..2000) {
        let mut a = Session::new(cfg(tx, tx, mult), 1, seed);
        let interval = a.tx_interval();
        for _ in 0..20 {
            let out = a.handle(Input::TimerExpired(Timer::Transmit));
            let t = timer(&out, Timer::Transmit).expect("re-armed");
            let low = interval.mul_f64(0.75);
            let high = if mult == 1 { interval.mul_f64(0.90) } else { interval };
            prop_assert!(t >= low - Duration::from_micros(1) && t <= high, "{t:?} of {interval:?}");
        }
    }

    #[test]
    fn any_two_configurations_come_up_and_agree_on_timers(
        tx_a in 10u64..3000, rx_a in 10u64..3000, m_a in 1u8..=20,
        tx_b in 10u64..3000, rx_b in 10u64..3000, m_b in 1u8..=20,
        passive_b in any::<bool>(),
    ) {
        let mut cb = cfg(tx_b, rx_b, m_b);
        cb.passive = passive_b;
        let (a, b) = up_pair(cfg(tx_a, rx_a, m_a), cb);
        prop_assert_eq!((a.state(), b.state()), (State::Up, State::Up));
        prop_assert!(!a.polling() && !b.polling());
        prop_assert_eq!(a.tx_interval(), ms(tx_a.max(rx_b)));
        prop_assert_eq!(a.detection_time(), Some(ms(rx_a.max(tx_b)) * u32::from(m_b)));
    }

    #[test]
    fn no_packet_sequence_breaks_the_invariants(
        packets in proptest::collection::vec((0u8..4, any::<bool>(), any::<bool>(), 0u32..3, 1u8..5), 0..40),
    ) {
        let mut a = Session::new(cfg(100, 100, 3), 1, 7);
        let _ = a.start();
        for (st, poll, fin, your, mult) in packets {
            let mut p = peer(State::Down, your, 100_000, 100_000, mult);
            p.state = match st { 0 => State::AdminDown, 1 => State::Down, 2 => State::Init, _ => State::Up };
            p.poll = poll;
            p.fin = fin;
            let out = a.handle(Input::Received(p));
            for s in sent(&out) {
                prop_assert!(!(s.poll && s.fin), "P and F never together");
                prop_assert_eq!(s.my_discr, 1);
                prop_assert!(s.state != State::Up || s.your_discr != 0);
                if s.state != State::Up {
                    prop_assert!(s.desired_min_tx >= 1_000_000);
                }
            }
            if poll {
                prop_assert!(sent(&out).iter().any(|s| s.fin));
            }
        }
    }
}

#[test]
fn a_peer_lowering_its_min_rx_gets_packets_at_the_new_rate_at_once() {
    // Up at 300 ms both ways; the peer then asks for 50 ms (its Poll). Our transmit timer
    // must not wait out the old 300 ms interval: the peer's detection time is already
    // computed from 50 ms once it has our Final.
    let (mut a, _) = up_pair(cfg(50, 300, 3), cfg(300, 300, 3));
    assert_eq!(a.tx_interval(), ms(300));
    let mut p = peer(State::Up, 1, 50_000, 50_000, 3);
    p.poll = true;
    let out = a.handle(Input::Received(p));
    assert_eq!(a.tx_interval(), ms(50));
    let t = timer(&out, Timer::Transmit).expect("transmit re-armed");
    assert!(t <= ms(50), "{t:?}");
}

/// A session of ours (Echo every `echo` ms when set) brought Up by a peer that accepts Echo
/// at `peer_echo_us`; returns the outputs of the packet that made it Up.
fn up_with_echo(echo: Option<u64>, peer_echo_us: u32) -> (Session, Vec<Output>) {
    let mut c = cfg(1000, 1000, 3);
    c.echo = echo.map(ms);
    let mut s = Session::new(c, 7, 1);
    s.start();
    let mut p = peer(State::Init, 7, 1_000_000, 1_000_000, 3);
    p.required_min_echo_rx = peer_echo_us;
    let out = s.handle(Input::Received(p));
    assert_eq!(s.state(), State::Up);
    (s, out)
}

fn has(out: &[Output], o: &Output) -> bool {
    out.iter().any(|x| x == o)
}

#[test]
fn echo_runs_only_when_configured_up_and_accepted_by_the_peer() {
    // Not configured: never asked for.
    let (_, out) = up_with_echo(None, 50_000);
    assert!(!out.iter().any(|o| matches!(o, Output::EchoWanted(_))));
    // Configured, but the peer wants no Echo (RFC 5880 §6.8.9: MUST NOT send).
    let (_, out) = up_with_echo(Some(100), 0);
    assert!(!has(&out, &Output::EchoWanted(true)));
    // Configured and accepted: the runtime is asked for a path; Echo starts once it has one,
    // at max(ours, the peer's) with jitter, detection 3 intervals.
    let (mut s, out) = up_with_echo(Some(100), 150_000);
    assert!(has(&out, &Output::EchoWanted(true)));
    assert!(!has(&out, &Output::SendEcho), "no path yet");
    let out = s.handle(Input::EchoPath(true));
    assert!(has(&out, &Output::SendEcho));
    let tx = timer(&out, Timer::EchoTransmit).expect("echo timer");
    assert!(tx >= ms(112) && tx <= ms(150), "{tx:?}");
    assert_eq!(timer(&out, Timer::EchoDetect), Some(ms(450)));
    assert_eq!(s.status().echo_interval, Some(ms(150)));
    let out = s.handle(Input::TimerExpired(Timer::EchoTransmit));
    assert!(has(&out, &Output::SendEcho));
    let out = s.handle(Input::EchoReceived);
    assert_eq!(timer(&out, Timer::EchoDetect), Some(ms(450)));
}

#[test]
fn echo_packets_not_coming_back_take_the_session_down_as_a_failure() {
    let (mut s, _) = up_with_echo(Some(100), 50_000);
    s.handle(Input::EchoPath(true));
    let out = s.handle(Input::TimerExpired(Timer::EchoDetect));
    let c = changes(&out);
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].to, c[0].diag),
        (State::Down, Diag::EchoFunctionFailed)
    );
    assert!(c[0].is_failure());
    assert_eq!(
        sent(&out)[0].diag,
        Diag::EchoFunctionFailed,
        "the peer is told why"
    );
    assert!(has(&out, &Output::EchoWanted(false)));
    assert!(has(&out, &Output::StopTimer(Timer::EchoTransmit)));
    assert_eq!(s.status().echo_interval, None);
}

#[test]
fn no_path_means_no_echo_and_no_echo_failure() {
    let (mut s, _) = up_with_echo(Some(100), 50_000);
    let out = s.handle(Input::EchoPath(false));
    assert!(!has(&out, &Output::SendEcho));
    // A stray expiry (a timer never armed) changes nothing.
    let out = s.handle(Input::TimerExpired(Timer::EchoDetect));
    assert!(changes(&out).is_empty());
    assert_eq!(s.state(), State::Up);
}

#[test]
fn we_never_ask_the_peer_for_echo_packets() {
    let (mut s, _) = up_with_echo(Some(100), 50_000);
    let out = s.handle(Input::TimerExpired(Timer::Transmit));
    assert!(sent(&out).iter().all(|p| p.required_min_echo_rx == 0));
}

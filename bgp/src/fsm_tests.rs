//! Transitions of the session FSM, driven event by event without I/O.
use super::*;
use crate::negotiate::tests::{config, peer_open};
use crate::packet::{Afi, RouteRefresh, Safi, Update};

fn t0() -> Instant {
    Instant::now()
}

fn sent(out: &[Output]) -> Vec<&Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::SendMessage(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn notification(out: &[Output]) -> Option<(u8, u8)> {
    sent(out).into_iter().find_map(|m| match m {
        Message::Notification(n) => Some((n.code, n.subcode)),
        _ => None,
    })
}

fn timer(out: &[Output], t: Timer) -> Option<Duration> {
    out.iter().find_map(|o| match o {
        Output::SetTimer(x, d) if *x == t => Some(*d),
        _ => None,
    })
}

/// A session driven to `state` with the default config.
fn session_in(state: State) -> Session {
    let mut s = Session::new(config());
    let now = t0();
    s.handle(Input::ManualStart, now);
    if state == State::Connect {
        return s;
    }
    s.handle(Input::TcpConnected(Direction::Outgoing), now);
    if state == State::OpenSent {
        return s;
    }
    s.handle(
        Input::MessageReceived(Message::Open(peer_open(65002, 9, [192, 0, 2, 2]))),
        now,
    );
    if state == State::OpenConfirm {
        return s;
    }
    s.handle(Input::MessageReceived(Message::Keepalive), now);
    assert_eq!(s.state(), State::Established);
    s
}

#[test]
fn manual_start_connects_and_arms_connect_retry() {
    let mut s = Session::new(config());
    let out = s.handle(Input::ManualStart, t0());
    assert_eq!(s.state(), State::Connect);
    assert!(out.contains(&Output::Connect));
    assert_eq!(
        timer(&out, Timer::ConnectRetry),
        Some(Duration::from_secs(5))
    );
}

#[test]
fn passive_start_waits_in_active_without_connecting() {
    let mut cfg = config();
    cfg.passive = true;
    let mut s = Session::new(cfg);
    let out = s.handle(Input::ManualStart, t0());
    assert_eq!(s.state(), State::Active);
    assert!(!out.contains(&Output::Connect));
    let out = s.handle(Input::TimerExpired(Timer::ConnectRetry), t0());
    assert!(out.is_empty());
    assert_eq!(s.state(), State::Active);
}

#[test]
fn tcp_connected_sends_open_and_waits_for_the_peer_open_only_briefly() {
    let mut s = session_in(State::Connect);
    let out = s.handle(Input::TcpConnected(Direction::Outgoing), t0());
    assert_eq!(s.state(), State::OpenSent);
    assert!(matches!(sent(&out)[..], [Message::Open(_)]));
    assert_eq!(
        timer(&out, Timer::Hold),
        Some(crate::negotiate::DEFAULT_OPEN_WAIT)
    );
    assert!(out.contains(&Output::StopTimer(Timer::ConnectRetry)));
}

#[test]
fn incoming_connection_in_active_is_accepted() {
    let mut cfg = config();
    cfg.passive = true;
    let mut s = Session::new(cfg);
    s.handle(Input::ManualStart, t0());
    let out = s.handle(Input::TcpConnected(Direction::Incoming), t0());
    assert_eq!(s.state(), State::OpenSent);
    assert!(matches!(sent(&out)[..], [Message::Open(_)]));
}

#[test]
fn connect_failure_goes_active_then_retries() {
    let mut s = session_in(State::Connect);
    let out = s.handle(Input::TcpFailed, t0());
    assert_eq!(s.state(), State::Active);
    assert_eq!(
        timer(&out, Timer::ConnectRetry),
        Some(Duration::from_secs(10))
    );
    let out = s.handle(Input::TimerExpired(Timer::ConnectRetry), t0());
    assert_eq!(s.state(), State::Connect);
    assert!(out.contains(&Output::Connect));
}

#[test]
fn connect_retry_backoff_doubles_up_to_the_cap() {
    let mut s = session_in(State::Connect);
    let mut delays = Vec::new();
    for _ in 0..6 {
        let out = s.handle(Input::TcpFailed, t0());
        delays.push(timer(&out, Timer::ConnectRetry).unwrap().as_secs());
        s.handle(Input::TimerExpired(Timer::ConnectRetry), t0());
    }
    assert_eq!(delays, vec![10, 20, 40, 60, 60, 60]);
}

#[test]
fn retry_delay_is_deterministic_and_saturates() {
    let base = Duration::from_secs(3);
    let cap = Duration::from_secs(120);
    assert_eq!(retry_delay(base, cap, 0), Duration::from_secs(3));
    assert_eq!(retry_delay(base, cap, 1), Duration::from_secs(6));
    assert_eq!(retry_delay(base, cap, 5), Duration::from_secs(96));
    assert_eq!(retry_delay(base, cap, 6), cap);
    assert_eq!(retry_delay(base, cap, u32::MAX), cap);
    assert_eq!(retry_delay(Duration::MAX, cap, 3), cap);
}

#[test]
fn connect_retry_expiry_in_connect_abandons_and_reconnects() {
    let mut s = session_in(State::Connect);
    let out = s.handle(Input::TimerExpired(Timer::ConnectRetry), t0());
    assert_eq!(s.state(), State::Connect);
    let close = out
        .iter()
        .position(|o| *o == Output::CloseConnection)
        .unwrap();
    let connect = out.iter().position(|o| *o == Output::Connect).unwrap();
    assert!(close < connect);
}

#[test]
fn valid_open_sends_keepalive_and_negotiates_timers() {
    let mut s = session_in(State::OpenSent);
    let out = s.handle(
        Input::MessageReceived(Message::Open(peer_open(65002, 30, [192, 0, 2, 2]))),
        t0(),
    );
    assert_eq!(s.state(), State::OpenConfirm);
    assert_eq!(sent(&out), vec![&Message::Keepalive]);
    assert_eq!(timer(&out, Timer::Hold), Some(Duration::from_secs(30)));
    assert_eq!(timer(&out, Timer::Keepalive), Some(Duration::from_secs(10)));
}

#[test]
fn keepalive_is_a_third_of_the_negotiated_hold_time() {
    let s = session_in(State::OpenConfirm);
    let n = s.negotiated().unwrap();
    assert_eq!((n.hold_time, n.keepalive), (9, 3));
}

#[test]
fn hold_time_1_in_open_is_rejected_with_subcode_6() {
    let mut s = session_in(State::OpenSent);
    let out = s.handle(
        Input::MessageReceived(Message::Open(peer_open(65002, 1, [192, 0, 2, 2]))),
        t0(),
    );
    assert_eq!(notification(&out), Some((2, 6)));
    assert_eq!(s.state(), State::Idle);
    assert!(out.contains(&Output::CloseConnection));
}

#[test]
fn bad_peer_as_sends_2_2_and_goes_idle() {
    let mut s = session_in(State::OpenSent);
    let out = s.handle(
        Input::MessageReceived(Message::Open(peer_open(64999, 90, [192, 0, 2, 2]))),
        t0(),
    );
    assert_eq!(notification(&out), Some((2, 2)));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Down(DownReason::NotificationSent(n)) if n.subcode == 2)));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn hold_time_zero_arms_neither_hold_nor_keepalive() {
    let mut s = session_in(State::OpenSent);
    let out = s.handle(
        Input::MessageReceived(Message::Open(peer_open(65002, 0, [192, 0, 2, 2]))),
        t0(),
    );
    assert_eq!(timer(&out, Timer::Hold), None);
    assert_eq!(timer(&out, Timer::Keepalive), None);
    assert!(out.contains(&Output::StopTimer(Timer::Hold)));
    let out = s.handle(Input::MessageReceived(Message::Keepalive), t0());
    assert_eq!(timer(&out, Timer::Hold), None);
    assert_eq!(s.state(), State::Established);
}

#[test]
fn unexpected_message_in_opensent_is_fsm_error_5_1() {
    let mut s = session_in(State::OpenSent);
    let out = s.handle(Input::MessageReceived(Message::Keepalive), t0());
    assert_eq!(notification(&out), Some((5, 1)));
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn update_in_openconfirm_is_fsm_error_5_2() {
    let mut s = session_in(State::OpenConfirm);
    let out = s.handle(
        Input::MessageReceived(Message::Update(Update::default())),
        t0(),
    );
    assert_eq!(notification(&out), Some((5, 2)));
}

#[test]
fn open_in_established_is_fsm_error_5_3() {
    let mut s = session_in(State::Established);
    let out = s.handle(
        Input::MessageReceived(Message::Open(peer_open(65002, 9, [192, 0, 2, 2]))),
        t0(),
    );
    assert_eq!(notification(&out), Some((5, 3)));
}

#[test]
fn keepalive_in_openconfirm_establishes_and_reports() {
    let mut s = session_in(State::OpenConfirm);
    let now = t0();
    let out = s.handle(Input::MessageReceived(Message::Keepalive), now);
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.established_at(), Some(now));
    let n = out
        .iter()
        .find_map(|o| match o {
            Output::Established(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(n.peer_id, Ipv4Addr::new(192, 0, 2, 2));
    assert_eq!(n.peer_asn, 65002);
}

#[test]
fn hold_timer_expiry_sends_notification_4_0() {
    for state in [State::OpenSent, State::OpenConfirm, State::Established] {
        let mut s = session_in(state);
        let out = s.handle(Input::TimerExpired(Timer::Hold), t0());
        assert_eq!(notification(&out), Some((4, 0)), "{state:?}");
        assert_eq!(s.state(), State::Idle);
    }
}

#[test]
fn keepalive_timer_sends_keepalive_and_rearms() {
    let mut s = session_in(State::Established);
    let out = s.handle(Input::TimerExpired(Timer::Keepalive), t0());
    assert_eq!(sent(&out), vec![&Message::Keepalive]);
    assert_eq!(timer(&out, Timer::Keepalive), Some(Duration::from_secs(3)));
}

#[test]
fn update_and_keepalive_restart_the_hold_timer() {
    let mut s = session_in(State::Established);
    for m in [Message::Keepalive, Message::Update(Update::default())] {
        let out = s.handle(Input::MessageReceived(m), t0());
        assert_eq!(
            out,
            vec![Output::SetTimer(Timer::Hold, Duration::from_secs(9))]
        );
    }
}

#[test]
fn notification_received_goes_idle_without_answering() {
    for state in [State::OpenSent, State::OpenConfirm, State::Established] {
        let mut s = session_in(state);
        let n = Notification {
            code: 6,
            subcode: 2,
            data: Bytes::new(),
        };
        let out = s.handle(
            Input::MessageReceived(Message::Notification(n.clone())),
            t0(),
        );
        assert_eq!(s.state(), State::Idle, "{state:?}");
        assert!(sent(&out).is_empty());
        assert!(out.contains(&Output::Down(DownReason::NotificationReceived(n))));
        assert!(out.contains(&Output::CloseConnection));
    }
}

#[test]
fn session_down_restarts_after_idle_hold() {
    let mut s = session_in(State::Established);
    let out = s.handle(Input::TcpFailed, t0());
    assert_eq!(s.state(), State::Idle);
    assert_eq!(timer(&out, Timer::IdleHold), Some(Duration::from_secs(5)));
    let out = s.handle(Input::TimerExpired(Timer::IdleHold), t0());
    assert_eq!(s.state(), State::Connect);
    assert!(out.contains(&Output::Connect));
}

#[test]
fn repeated_session_failures_back_off() {
    let mut s = session_in(State::Connect);
    let mut delays = Vec::new();
    for _ in 0..4 {
        s.handle(Input::TcpConnected(Direction::Outgoing), t0());
        let out = s.handle(
            Input::MessageReceived(Message::Open(peer_open(1, 90, [192, 0, 2, 2]))),
            t0(),
        );
        delays.push(timer(&out, Timer::IdleHold).unwrap().as_secs());
        s.handle(Input::TimerExpired(Timer::IdleHold), t0());
    }
    assert_eq!(delays, vec![5, 10, 20, 40]);
}

#[test]
fn manual_stop_sends_cease_admin_shutdown_and_stays_down() {
    let mut s = session_in(State::Established);
    let msg = Notification {
        code: 6,
        subcode: 2,
        data: Bytes::from_static(b"\x03bye"),
    };
    let out = s.handle(Input::ManualStop(Some(msg.clone())), t0());
    assert_eq!(sent(&out), vec![&Message::Notification(msg)]);
    assert!(out.contains(&Output::Down(DownReason::Stopped)));
    assert_eq!(timer(&out, Timer::IdleHold), None);
    // The notification goes out before the connection closes.
    let send = out
        .iter()
        .position(|o| matches!(o, Output::SendMessage(_)))
        .unwrap();
    let close = out
        .iter()
        .position(|o| *o == Output::CloseConnection)
        .unwrap();
    assert!(send < close);
    assert!(s
        .handle(Input::TimerExpired(Timer::IdleHold), t0())
        .is_empty());
    assert_eq!(
        s.handle(Input::TcpConnected(Direction::Incoming), t0()),
        vec![Output::CloseConnection]
    );
}

#[test]
fn manual_stop_without_message_sends_6_2() {
    let mut s = session_in(State::OpenConfirm);
    let out = s.handle(Input::ManualStop(None), t0());
    assert_eq!(notification(&out), Some((6, 2)));
}

#[test]
fn reset_for_max_prefix_sends_cease_1_and_restarts() {
    let mut s = session_in(State::Established);
    let n = Notification {
        code: 6,
        subcode: 1,
        data: Bytes::new(),
    };
    let out = s.handle(Input::Reset(n), t0());
    assert_eq!(notification(&out), Some((6, 1)));
    assert!(timer(&out, Timer::IdleHold).is_some());
}

#[test]
fn decode_error_sends_its_notification() {
    let mut s = session_in(State::Established);
    let n = Notification {
        code: 1,
        subcode: 2,
        data: Bytes::from_static(&[0, 5]),
    };
    let out = s.handle(Input::DecodeFailed(n.clone()), t0());
    assert_eq!(sent(&out), vec![&Message::Notification(n)]);
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn collision_dump_sends_cease_7() {
    let mut s = session_in(State::OpenConfirm);
    let out = s.handle(Input::CollisionDump, t0());
    assert_eq!(notification(&out), Some((6, 7)));
}

#[test]
fn collision_keeps_the_connection_of_the_higher_identifier() {
    let low = Ipv4Addr::new(192, 0, 2, 1);
    let high = Ipv4Addr::new(192, 0, 2, 200);
    assert_eq!(
        collision_keeps(high, 65001, low, 65002),
        Direction::Outgoing
    );
    assert_eq!(
        collision_keeps(low, 65001, high, 65002),
        Direction::Incoming
    );
    // Equal identifiers (eBGP, RFC 6286 §2.3): the higher AS number wins.
    assert_eq!(collision_keeps(low, 65003, low, 65002), Direction::Outgoing);
    assert_eq!(collision_keeps(low, 65001, low, 65002), Direction::Incoming);
}

#[test]
fn incoming_session_for_collision_never_connects_out() {
    let mut s = Session::for_incoming(config());
    let out = s.handle(Input::TcpConnected(Direction::Incoming), t0());
    assert_eq!(s.state(), State::OpenSent);
    assert!(!out.contains(&Output::Connect));
}

#[test]
fn route_refresh_for_a_negotiated_family_asks_for_the_routes() {
    let mut s = session_in(State::Established);
    let rr = RouteRefresh {
        afi: Afi::IPV4,
        safi: Safi::UNICAST,
        subtype: 0,
    };
    let out = s.handle(Input::MessageReceived(Message::RouteRefresh(rr)), t0());
    assert!(out.contains(&Output::RouteRefresh(Family::Ipv4Unicast)));
    let rr = RouteRefresh {
        afi: Afi::IPV6,
        safi: Safi::UNICAST,
        subtype: 0,
    };
    let out = s.handle(Input::MessageReceived(Message::RouteRefresh(rr)), t0());
    assert!(!out.iter().any(|o| matches!(o, Output::RouteRefresh(_))));
}

#[test]
fn tcp_failure_in_opensent_waits_in_active() {
    let mut s = session_in(State::OpenSent);
    let out = s.handle(Input::TcpFailed, t0());
    assert_eq!(s.state(), State::Active);
    assert!(timer(&out, Timer::ConnectRetry).is_some());
    assert!(out.contains(&Output::Down(DownReason::ConnectionLost)));
}

#[test]
fn idle_ignores_messages_and_timers() {
    let mut s = Session::new(config());
    for i in [
        Input::MessageReceived(Message::Keepalive),
        Input::TimerExpired(Timer::Hold),
        Input::TimerExpired(Timer::IdleHold),
        Input::TcpFailed,
    ] {
        assert!(s.handle(i, t0()).is_empty());
        assert_eq!(s.state(), State::Idle);
    }
}

#[test]
fn reconfigure_keeps_the_session_and_takes_effect_with_the_next_open() {
    let mut s = session_in(State::Established);
    let mut cfg = config();
    cfg.hold_time = 30;
    s.reconfigure(cfg);
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.negotiated().unwrap().hold_time, 9);
    s.handle(Input::TcpFailed, t0());
    s.handle(Input::TimerExpired(Timer::IdleHold), t0());
    let out = s.handle(Input::TcpConnected(Direction::Outgoing), t0());
    let Some(Message::Open(open)) = sent(&out).first().copied() else {
        panic!("no OPEN: {out:?}")
    };
    assert_eq!(open.hold_time, 30);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn input() -> impl Strategy<Value = Input> {
        let open = (
            prop::sample::select(vec![65002u32, 65003]),
            0u16..12,
            any::<bool>(),
        )
            .prop_map(|(asn, hold, zero_id)| {
                Message::Open(peer_open(
                    asn,
                    hold,
                    if zero_id {
                        [0, 0, 0, 0]
                    } else {
                        [192, 0, 2, 2]
                    },
                ))
            });
        let message = prop_oneof![
            open,
            Just(Message::Keepalive),
            Just(Message::Update(Update::default())),
            Just(Message::Notification(Notification {
                code: 6,
                subcode: 2,
                data: Bytes::new()
            })),
            Just(Message::RouteRefresh(RouteRefresh {
                afi: Afi::IPV4,
                safi: Safi::UNICAST,
                subtype: 0
            })),
        ];
        prop_oneof![
            Just(Input::ManualStart),
            Just(Input::ManualStop(None)),
            Just(Input::TcpConnected(Direction::Outgoing)),
            Just(Input::TcpConnected(Direction::Incoming)),
            Just(Input::TcpFailed),
            message.prop_map(Input::MessageReceived),
            Just(Input::DecodeFailed(Notification {
                code: 1,
                subcode: 1,
                data: Bytes::new()
            })),
            Just(Input::CollisionDump),
            prop::sample::select(Timer::ALL.to_vec()).prop_map(Input::TimerExpired),
        ]
    }

    proptest! {
        /// Any event sequence: no panic, Established only with a negotiated session, a
        /// NOTIFICATION is always followed by closing the connection, and every timer set
        /// has a non-zero duration below the cap.
        #[test]
        fn any_event_sequence_keeps_the_invariants(inputs in prop::collection::vec(input(), 0..60)) {
            let mut s = Session::new(config());
            for i in inputs {
                let out = s.handle(i, t0());
                if s.state() == State::Established || s.state() == State::OpenConfirm {
                    prop_assert!(s.negotiated().is_some());
                }
                if let Some(p) = out.iter().position(|o| matches!(o, Output::SendMessage(Message::Notification(_)))) {
                    prop_assert!(out[p..].contains(&Output::CloseConnection), "{out:?}");
                    prop_assert_eq!(s.state(), State::Idle);
                }
                for o in &out {
                    if let Output::SetTimer(_, d) = o {
                        prop_assert!(!d.is_zero() && *d <= Duration::from_secs(240), "{o:?}");
                    }
                }
            }
        }
    }
}

/// An Established session where both sides sent graceful restart, with the N bit on both
/// sides when `n_bit`.
fn graceful_session(n_bit: bool) -> Session {
    let mut cfg = config();
    let mut gr = crate::config::GracefulRestartConfig::new(30);
    gr.notification = n_bit;
    cfg.graceful_restart = Some(gr);
    let mut s = Session::new(cfg);
    let now = t0();
    s.handle(Input::ManualStart, now);
    s.handle(Input::TcpConnected(Direction::Outgoing), now);
    let mut open = peer_open(65002, 9, [192, 0, 2, 2]);
    open.capabilities
        .push(crate::packet::Capability::GracefulRestart(
            crate::packet::GracefulRestart {
                restart_state: false,
                notification: true,
                restart_time: 120,
                families: Vec::new(),
            },
        ));
    s.handle(Input::MessageReceived(Message::Open(open)), now);
    s.handle(Input::MessageReceived(Message::Keepalive), now);
    assert_eq!(s.state(), State::Established);
    s
}

#[test]
fn restart_stop_with_graceful_restart_closes_without_notification() {
    let mut s = graceful_session(false);
    let out = s.handle(Input::RestartStop, t0());
    assert_eq!(notification(&out), None, "{out:?}");
    assert!(out.contains(&Output::CloseConnection));
    assert!(out.contains(&Output::Down(DownReason::Stopped)));
    assert_eq!(s.state(), State::Idle);
    assert_eq!(
        timer(&out, Timer::IdleHold),
        None,
        "a stopped session stays down"
    );
}

#[test]
fn restart_stop_without_graceful_restart_is_an_administrative_shutdown() {
    let mut s = session_in(State::Established);
    let out = s.handle(Input::RestartStop, t0());
    assert_eq!(notification(&out), Some((6, 2)));
}

#[test]
fn with_the_n_bit_a_stop_that_must_flush_is_sent_as_hard_reset() {
    let mut s = graceful_session(true);
    assert!(s.negotiated().unwrap().graceful_notification);
    let out = s.handle(
        Input::ManualStop(Some(Notification::admin_shutdown("bye"))),
        t0(),
    );
    let n = sent(&out)
        .into_iter()
        .find_map(|m| match m {
            Message::Notification(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!((n.code, n.subcode), (6, 9));
    // RFC 8538 §3: the data carries the original code, subcode and data.
    assert_eq!(&n.data[..2], &[6, 2]);
    assert_eq!(&n.data[2..], &Notification::admin_shutdown("bye").data[..]);
}

#[test]
fn with_the_n_bit_a_collision_or_hold_expiry_is_not_wrapped() {
    let mut s = graceful_session(true);
    let out = s.handle(Input::TimerExpired(Timer::Hold), t0());
    assert_eq!(notification(&out), Some((4, 0)));
    let mut s = graceful_session(true);
    let out = s.handle(Input::CollisionDump, t0());
    assert_eq!(notification(&out), Some((6, 7)));
}

#[test]
fn without_the_peer_n_bit_a_stop_is_a_plain_cease() {
    let mut s = graceful_session(false);
    assert!(!s.negotiated().unwrap().graceful_notification);
    let out = s.handle(Input::ManualStop(None), t0());
    assert_eq!(notification(&out), Some((6, 2)));
}

#[test]
fn with_the_n_bit_bfd_down_is_a_hard_reset() {
    let mut s = graceful_session(true);
    let out = s.handle(Input::BfdDown, t0());
    assert_eq!(notification(&out), Some((6, 9)));
}

#[test]
fn bfd_down_closes_an_established_session_with_cease_10_and_restarts() {
    let mut s = session_in(State::Established);
    let out = s.handle(Input::BfdDown, t0());
    assert_eq!(
        notification(&out),
        Some((error_code::CEASE, cease_subcode::BFD_DOWN))
    );
    assert!(out.contains(&Output::CloseConnection));
    assert_eq!(s.state(), State::Idle);
    assert!(
        timer(&out, Timer::IdleHold).is_some(),
        "reconnects normally"
    );
}

#[test]
fn bfd_down_without_a_connection_changes_nothing() {
    let mut s = session_in(State::Connect);
    assert!(s.handle(Input::BfdDown, t0()).is_empty());
    assert_eq!(s.state(), State::Connect);
}

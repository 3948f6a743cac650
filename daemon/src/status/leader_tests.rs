use super::*;
use crate::mock_api::{scripted, status_error, Call};
use proptest::prelude::*;
use serde_json::json;
use std::collections::BinaryHeap;

const T: LeaseTimings = LeaseTimings {
    lease_duration: Duration::from_secs(15),
    renew_deadline: Duration::from_secs(10),
    retry_period: Duration::from_secs(2),
};

fn view(holder: &str, version: &str) -> LeaseView {
    LeaseView {
        holder: holder.into(),
        version: version.into(),
        duration: T.lease_duration,
        acquired: Some("t0".into()),
        transitions: 0,
    }
}

/// A Lease view of a hold acquired at `acquired` after `transitions` changes of holder.
fn hold(holder: &str, version: &str, acquired: &str, transitions: i32) -> LeaseView {
    LeaseView {
        acquired: Some(acquired.into()),
        transitions,
        ..view(holder, version)
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[test]
fn timings_follow_client_go_rule() {
    assert_eq!(LeaseTimings::for_duration(secs(15.0)), Ok(T));
    assert!(LeaseTimings::for_duration(secs(3.0)).is_ok());
    let bad = LeaseTimings {
        renew_deadline: secs(15.0),
        ..T
    };
    let e = bad
        .checked()
        .expect_err("deadline must be below the duration");
    assert!(e.to_string().contains("renew deadline"), "{e}");
}

#[test]
fn expiry_is_judged_by_local_observation_not_the_holders_clock() {
    let t0 = Instant::now();
    let mut e = Elector::new("a", T);
    assert_eq!(e.on_read(Some(view("b", "7")), t0), Action::Follow);
    // The same version for almost the Lease duration: still b's.
    assert_eq!(
        e.on_read(Some(view("b", "7")), t0 + secs(14.9)),
        Action::Follow
    );
    // b renewed (new version): the clock starts again, whatever renewTime says.
    assert_eq!(
        e.on_read(Some(view("b", "8")), t0 + secs(14.95)),
        Action::Follow
    );
    assert_eq!(
        e.on_read(Some(view("b", "8")), t0 + secs(29.0)),
        Action::Follow
    );
    assert_eq!(
        e.on_read(Some(view("b", "8")), t0 + secs(29.95)),
        Action::TakeOver
    );
    assert_eq!(e.fence().holder.as_deref(), Some("b"));
    assert!(!e.fence().leads(t0 + secs(30.0)));
    // Released: taken at once.
    let mut f = Elector::new("a", T);
    assert_eq!(f.on_read(Some(view("", "9")), t0), Action::TakeOver);
    assert_eq!(f.on_read(None, t0), Action::Create);
}

#[test]
fn the_fence_ends_at_the_renew_deadline_from_the_send_and_a_lapse_starts_a_new_term() {
    let t0 = Instant::now();
    let mut e = Elector::new("a", T);
    assert_eq!(e.on_read(None, t0), Action::Create);
    e.on_written(t0 + secs(0.1), view("a", "1"), t0 + secs(3.0));
    let f = e.fence().clone();
    assert_eq!(f.epoch, 1);
    assert_eq!(
        f.until,
        Some(t0 + secs(10.1)),
        "from the send, not the answer"
    );
    assert!(f.permits(t0 + secs(4.0), secs(5.0)));
    assert!(
        !f.permits(t0 + secs(5.2), secs(5.0)),
        "a write that could outlast the fence is not started"
    );
    assert_eq!(
        f.write_budget(t0 + secs(8.1), secs(0.3), secs(5.0)),
        Some(secs(2.0)),
        "a write's timeout is what is left of the fence"
    );
    assert_eq!(f.write_budget(t0 + secs(9.9), secs(0.3), secs(5.0)), None);
    // Renewed in time: same term.
    assert_eq!(
        e.on_read(Some(view("a", "1")), t0 + secs(4.0)),
        Action::Renew
    );
    e.on_written(t0 + secs(4.0), view("a", "2"), t0 + secs(4.1));
    assert_eq!(e.fence().epoch, 1);
    // Renewed after a lapse: a new term (the writer re-reads the record).
    e.on_written(t0 + secs(20.0), view("a", "3"), t0 + secs(20.1));
    assert_eq!(e.fence().epoch, 2);
    e.on_conflict();
    assert!(
        !e.fence().leads(t0 + secs(20.2)),
        "a conflict stops writing at once"
    );
}

/// A late renewal of the same hold (same `acquireTime`, `leaseTransitions`) starts a new
/// epoch but keeps the tenure, so what the hold owes survives the lapse; another holder
/// seen, or the Lease acquired anew, ends the tenure.
#[test]
fn a_lapse_renewed_by_the_same_hold_keeps_the_tenure_another_holder_ends_it() {
    let t0 = Instant::now();
    let mut e = Elector::new("a", T);
    assert_eq!(e.on_read(None, t0), Action::Create);
    e.on_written(t0, hold("a", "1", "t0", 0), t0);
    assert_eq!((e.fence().epoch, e.fence().tenure), (1, 1));
    // The renewal came 15 s late: the fence lapsed, the Lease still names this hold.
    assert_eq!(
        e.on_read(Some(hold("a", "1", "t0", 0)), t0 + secs(15.0)),
        Action::Renew
    );
    e.on_written(t0 + secs(15.0), hold("a", "2", "t0", 0), t0 + secs(15.1));
    assert_eq!((e.fence().epoch, e.fence().tenure), (2, 1), "same hold");
    // Another holder is seen: the hold is over at once, before anything is written.
    assert_eq!(
        e.on_read(Some(hold("b", "3", "t1", 1)), t0 + secs(40.0)),
        Action::Follow
    );
    assert_eq!(e.fence().tenure, 2);
    // Taken over later: a new hold (its acquire time and transitions changed).
    assert_eq!(
        e.on_read(Some(hold("b", "3", "t1", 1)), t0 + secs(56.0)),
        Action::TakeOver
    );
    e.on_written(t0 + secs(56.0), hold("a", "4", "t2", 2), t0 + secs(56.1));
    assert_eq!((e.fence().epoch, e.fence().tenure), (3, 3));
    // Released by someone and taken again with the same transitions count: a new
    // acquire time, so a new hold too.
    assert_eq!(
        e.on_read(Some(hold("", "5", "t3", 2)), t0 + secs(80.0)),
        Action::TakeOver
    );
    assert_eq!(e.fence().tenure, 4);
    e.on_written(t0 + secs(80.0), hold("a", "6", "t4", 2), t0 + secs(80.1));
    assert_eq!((e.fence().epoch, e.fence().tenure), (4, 5));
}

/// One event of the simulation, ordered by time (earliest first).
#[derive(Debug, PartialEq, Eq)]
struct Ev {
    at: Duration,
    who: usize,
    what: Step,
}

#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Start a round: the read reaches the server after the first delay.
    Read,
    /// The read's answer arrives.
    ReadAnswer(Option<(String, u64)>),
    /// Our write reaches the server (sent at `sent`, replacing `base`, `None`: create).
    Land { sent: Duration, base: Option<u64> },
    /// The write's answer arrives.
    WriteAnswer { sent: Duration, ok: Option<u64> },
}

impl Ord for Ev {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        o.at.cmp(&self.at).then(o.who.cmp(&self.who))
    }
}
impl PartialOrd for Ev {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// Speakers on one Lease, every request and answer delayed at random (unbounded by the
/// timings), some speakers paused for long stretches; returns each speaker's leading
/// intervals on the common clock.
fn simulate(
    delays: &[u64],
    pauses: &[(usize, u64, u64)],
    n: usize,
) -> Vec<Vec<(Duration, Duration)>> {
    let base = Instant::now();
    let mut delay = delays.iter().cycle().map(|ms| Duration::from_millis(*ms));
    let mut server: Option<(String, u64)> = None;
    let mut electors: Vec<Elector> = (0..n).map(|i| Elector::new(&format!("n{i}"), T)).collect();
    let mut led: Vec<Vec<(Duration, Duration)>> = vec![Vec::new(); n];
    let mut q = BinaryHeap::new();
    for who in 0..n {
        q.push(Ev {
            at: Duration::from_millis(who as u64 * 300),
            who,
            what: Step::Read,
        });
    }
    let paused = |who: usize, at: Duration| {
        pauses.iter().find(|(w, from, len)| {
            *w % n == who
                && at >= Duration::from_millis(*from)
                && at < Duration::from_millis(from + len)
        })
    };
    let record =
        |led: &mut Vec<Vec<(Duration, Duration)>>, who: usize, e: &Elector, now: Duration| {
            // The fence as it stands from `now`: leading until its end (cut short later if a
            // conflict or a read of another holder closes it).
            if let Some(until) = e.fence().until {
                let end = until.saturating_duration_since(base);
                if end > now {
                    led[who].push((now, end));
                }
            }
        };
    let close = |led: &mut Vec<Vec<(Duration, Duration)>>, who: usize, now: Duration| {
        if let Some(last) = led[who].last_mut() {
            if last.1 > now {
                last.1 = now;
            }
        }
    };
    while let Some(ev) = q.pop() {
        if ev.at > Duration::from_secs(200) {
            break;
        }
        let who = ev.who;
        // A paused speaker handles its event when it resumes (its clock kept running).
        if let Some((_, from, len)) = paused(who, ev.at) {
            let _ = from;
            q.push(Ev {
                at: Duration::from_millis(from + len),
                ..ev
            });
            continue;
        }
        let now = base + ev.at;
        match ev.what {
            Step::Read => {
                let d = delay.next().unwrap_or_default();
                let seen = server.clone();
                q.push(Ev {
                    at: ev.at + d + delay.next().unwrap_or_default(),
                    who,
                    what: Step::ReadAnswer(seen),
                });
            }
            Step::ReadAnswer(seen) => {
                let lease = seen.as_ref().map(|(h, v)| view(h, &v.to_string()));
                let action = electors[who].on_read(lease, now);
                if electors[who].fence().until.is_none() {
                    close(&mut led, who, ev.at);
                }
                let base_version = seen.map(|(_, v)| v);
                match action {
                    Action::Follow => {
                        q.push(Ev {
                            at: ev.at + T.retry_period,
                            who,
                            what: Step::Read,
                        });
                    }
                    Action::Create | Action::Renew | Action::TakeOver => {
                        let sent = ev.at;
                        q.push(Ev {
                            at: ev.at + delay.next().unwrap_or_default(),
                            who,
                            what: Step::Land {
                                sent,
                                base: base_version,
                            },
                        });
                    }
                }
            }
            Step::Land { sent, base: b } => {
                let current = server.as_ref().map(|(_, v)| *v);
                let ok = if current == b {
                    let v = current.unwrap_or(0) + 1;
                    server = Some((format!("n{who}"), v));
                    Some(v)
                } else {
                    None
                };
                q.push(Ev {
                    at: ev.at + delay.next().unwrap_or_default(),
                    who,
                    what: Step::WriteAnswer { sent, ok },
                });
            }
            Step::WriteAnswer { sent, ok } => {
                match ok {
                    Some(v) => {
                        electors[who].on_written(
                            base + sent,
                            view(&format!("n{who}"), &v.to_string()),
                            now,
                        );
                        close(&mut led, who, ev.at);
                        record(&mut led, who, &electors[who], ev.at);
                    }
                    None => {
                        electors[who].on_conflict();
                        close(&mut led, who, ev.at);
                    }
                }
                q.push(Ev {
                    at: ev.at + T.retry_period,
                    who,
                    what: Step::Read,
                });
            }
        }
    }
    led
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Whatever the delays and pauses, no two speakers' fences are ever open at once, and
    /// one closes at least `lease_duration - renew_deadline` before another opens.
    #[test]
    fn never_two_leaders(
        delays in proptest::collection::vec(prop_oneof![0u64..300, 0u64..12_000], 1..40),
        pauses in proptest::collection::vec((0usize..3, 0u64..150_000, 0u64..40_000), 0..6),
        n in 2usize..4,
    ) {
        let led = simulate(&delays, &pauses, n);
        let all: Vec<(Duration, Duration, usize)> = led
            .iter()
            .enumerate()
            .flat_map(|(who, iv)| iv.iter().map(move |(a, b)| (*a, *b, who)))
            .collect();
        for (i, (s1, e1, a)) in all.iter().enumerate() {
            for (s2, e2, b) in &all[i + 1..] {
                if a == b {
                    continue;
                }
                let gap = T.lease_duration - T.renew_deadline;
                prop_assert!(
                    *s2 >= *e1 + gap || *s1 >= *e2 + gap,
                    "n{a} led {s1:?}..{e1:?}, n{b} {s2:?}..{e2:?}"
                );
            }
        }
    }
}

#[test]
fn without_delays_someone_leads_and_keeps_leading() {
    let led = simulate(&[5], &[], 3);
    let leaders: Vec<usize> = (0..3).filter(|i| !led[*i].is_empty()).collect();
    assert_eq!(leaders.len(), 1, "{led:?}");
    let iv = &led[leaders[0]];
    assert!(iv.len() > 50, "renewed every retry period: {}", iv.len());
}

const URL: &str = "/apis/coordination.k8s.io/v1/namespaces/edgelb-system/leases";

fn lease(holder: &str, rv: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("edgelb".into()),
            resource_version: Some(rv.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(995).expect("ts"))),
            acquire_time: Some(MicroTime(Timestamp::from_second(900).expect("ts"))),
            lease_transitions: Some(2),
            ..Default::default()
        }),
    }
}

fn leadership(client: Client) -> Leadership {
    Leadership::new(client, "edgelb-system", "edgelb", "node-a", T)
}

#[tokio::test]
async fn missing_lease_is_created_and_we_lead() {
    let (client, server) = scripted(vec![
        Call::new(
            "GET",
            format!("{URL}/edgelb"),
            404,
            status_error(404, "NotFound"),
        ),
        Call::new(
            "POST",
            format!("{URL}?"),
            201,
            serde_json::to_value(lease("node-a", "1")).expect("json"),
        )
        .check_body(|b| {
            assert_eq!(b["metadata"]["name"], "edgelb");
            assert_eq!(b["spec"]["holderIdentity"], "node-a");
            assert_eq!(b["spec"]["leaseDurationSeconds"], 15);
            assert_eq!(b["spec"]["leaseTransitions"], 0);
            assert!(b["spec"]["renewTime"].is_string());
        }),
    ]);
    let mut l = leadership(client);
    l.round().await;
    assert!(l.fence().leads(Instant::now()));
    assert_eq!(l.fence().epoch, 1);
    assert_eq!(
        l.fence().holder.as_deref(),
        Some("node-a"),
        "the leader names itself"
    );
    server.await.expect("every call came");
}

#[tokio::test]
async fn a_fresh_lease_of_another_node_is_followed_without_writing() {
    let (client, server) = scripted(vec![Call::new(
        "GET",
        format!("{URL}/edgelb"),
        200,
        serde_json::to_value(lease("node-b", "7")).expect("json"),
    )]);
    let mut l = leadership(client);
    assert_eq!(l.fence().holder, None, "unknown before the first round");
    l.round().await;
    assert!(!l.fence().leads(Instant::now()));
    assert_eq!(
        l.fence().holder.as_deref(),
        Some("node-b"),
        "a follower names the holder"
    );
    server.await.expect("every call came");
}

#[tokio::test]
async fn a_released_lease_is_taken_over_with_its_resource_version_and_a_conflict_loses() {
    let (client, server) = scripted(vec![
        Call::new(
            "GET",
            format!("{URL}/edgelb"),
            200,
            serde_json::to_value(lease("", "7")).expect("json"),
        ),
        Call::new(
            "PUT",
            format!("{URL}/edgelb?"),
            409,
            status_error(409, "Conflict"),
        )
        .check_body(|b| {
            assert_eq!(
                b["metadata"]["resourceVersion"], "7",
                "optimistic concurrency"
            );
            assert_eq!(b["spec"]["holderIdentity"], "node-a");
            assert_eq!(b["spec"]["leaseTransitions"], 3);
        }),
    ]);
    let mut l = leadership(client);
    l.round().await;
    assert!(
        !l.fence().leads(Instant::now()),
        "another speaker won the race"
    );
    assert_eq!(
        l.fence().holder,
        None,
        "the winner is not known until the next read"
    );
    server.await.expect("every call came");
}

#[tokio::test]
async fn renewing_keeps_acquire_time_an_api_error_keeps_the_fence_and_release_hands_it_back() {
    let (client, server) = scripted(vec![
        Call::new(
            "GET",
            format!("{URL}/edgelb"),
            200,
            serde_json::to_value(lease("node-a", "7")).expect("json"),
        ),
        Call::new(
            "PUT",
            format!("{URL}/edgelb?"),
            200,
            serde_json::to_value(lease("node-a", "8")).expect("json"),
        )
        .check_body(|b| {
            assert_eq!(b["spec"]["acquireTime"], "1970-01-01T00:15:00.000000Z");
            assert_eq!(b["spec"]["leaseTransitions"], 2);
        }),
        Call::new(
            "PUT",
            format!("{URL}/edgelb?"),
            500,
            status_error(500, "InternalError"),
        ),
        Call::new("PUT", format!("{URL}/edgelb?"), 200, json!({})).check_body(|b| {
            assert_eq!(b["metadata"]["resourceVersion"], "8");
            assert!(b["spec"].get("holderIdentity").is_none(), "{b}");
            assert_eq!(b["spec"]["leaseDurationSeconds"], 1);
        }),
    ]);
    let mut l = leadership(client);
    l.round().await;
    assert!(l.fence().leads(Instant::now()));
    l.round().await;
    assert!(!l.fence().api_reachable);
    assert!(
        l.fence().leads(Instant::now()),
        "one failed renewal (no read while leading): the fence runs until the renew deadline"
    );
    l.release().await;
    assert!(!l.fence().leads(Instant::now()));
    server.await.expect("every call came");
}

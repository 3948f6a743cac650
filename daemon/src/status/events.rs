//! Events (`events.k8s.io/v1`) that tell the truth, posted by the writer of record.
//!
//! Each Event's name is derived from what it says (the Service's UID, reason and note), so
//! "already reported" is recorded in the API itself: a new leader that would post the same
//! Event again gets 409 and leaves it alone, whatever the last leader got to post. A true
//! repeat (the same thing happening again, which the writer knows because it saw the
//! state change in between) bumps the Event's `series` instead of adding another Event.
//!
//! **Posting is retried, within bounds** ([`RETRY`]): a request that times out, a 5xx, a
//! 429 or a broken connection is tried again after a backoff, at most [`Retry::attempts`]
//! times, then the error goes to the caller (which logs it, or queues the Event again).
//! Retrying is safe because the name is fixed: a create that timed out but was stored
//! answers 409 on the retry, and the Event's `eventTime` (ours, to the microsecond) tells
//! that apart from an earlier report. The series patch sets absolute values, so a repeated
//! patch is the same patch. The status writer's retries stop once its Lease fence closes
//! ([`post_report`]); the other callers' retries end within the policy's bound. A report the
//! writer could not post keeps its `eventTime` and is posted later as [`Report::tried`]:
//! an Event of that very try already stored is then recognized, not counted twice.
//!
//! **A new leader does not post its predecessor's Events.** A leader killed (or frozen past
//! its Lease) between a status write and its `IPAllocated` never sends that Event, and the
//! next leader, which finds the IP already in the record, reports nothing: like MetalLB's
//! controller, which emits `IPAllocated` when it assigns an IP and not when it restarts and
//! finds the assignment in the Service's status. Events are a log of what a leader did,
//! not state a new leader reconciles: re-posting on every take-over would make a fresh
//! `IPAllocated` (new `eventTime`) for IPs assigned long ago once the old Event expired
//! (the API server's `--event-ttl`, 1 h by default). The status is the record.

use std::hash::Hasher;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

/// The reporting controller of every Event.
pub const CONTROLLER: &str = "edgelb.io/speaker";

/// One Event to post about a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// `IPAllocated`, `AllocationFailed`, `IPReleased`, `AnnouncedBy`.
    pub reason: &'static str,
    /// `Normal` or `Warning`.
    pub type_: &'static str,
    /// `Allocate` or `Announce`.
    pub action: &'static str,
    /// What happened, for people.
    pub note: String,
}

/// A note about a record change and the `eventTime` it is posted with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub note: Note,
    pub at: Timestamp,
    /// An earlier post of this very report may be stored (a try that timed out): an
    /// existing Event with the same reporter and `eventTime` is that post.
    pub tried: bool,
}

impl Report {
    /// A report of `note` first posted now.
    pub fn now(note: Note) -> Report {
        Report {
            note,
            at: Timestamp::now(),
            tried: false,
        }
    }
}

/// How often a request of a post is tried, and the waits between tries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all (the first included); at least 1.
    pub attempts: u32,
    /// The wait before the second try; each further wait doubles.
    pub first_backoff: Duration,
    /// No wait is longer.
    pub max_backoff: Duration,
}

/// The policy of every Event post: 4 tries, waits 250 ms, 500 ms, 1 s. With the writer's
/// 5 s timeout per try, a post gives up after 21.75 s at most.
pub const RETRY: Retry = Retry {
    attempts: 4,
    first_backoff: Duration::from_millis(250),
    max_backoff: Duration::from_secs(2),
};

impl Retry {
    /// The wait before try `next` (0-based: try 0 has none); `None` when no try is left.
    pub fn backoff(&self, next: u32) -> Option<Duration> {
        match next {
            0 => Some(Duration::ZERO),
            n if n >= self.attempts.max(1) => None,
            n => Some(
                self.first_backoff
                    .saturating_mul(1u32.checked_shl(n - 1).unwrap_or(u32::MAX))
                    .min(self.max_backoff),
            ),
        }
    }
}

/// Why one request of a post failed, and whether trying again may help.
#[derive(Debug)]
enum Failure {
    /// No answer within the timeout (it may still have been applied).
    TimedOut,
    /// The API server's (or the transport's) answer.
    Api(kube::Error),
}

impl Failure {
    /// Timeouts, 5xx, 429 and transport errors (the API server restarting, a connection
    /// reset): the server may answer next time. Other answers (403, 422, ...) will not change.
    fn is_transient(&self) -> bool {
        match self {
            Failure::TimedOut => true,
            Failure::Api(kube::Error::Api(s)) => s.code >= 500 || s.code == 429,
            Failure::Api(
                kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_),
            ) => true,
            Failure::Api(_) => false,
        }
    }

    /// An API answer with this HTTP status.
    fn is_code(&self, code: u16) -> bool {
        matches!(self, Failure::Api(kube::Error::Api(s)) if s.code == code)
    }

    fn text(&self, what: &str) -> String {
        match self {
            Failure::TimedOut => format!("{what}: timed out"),
            Failure::Api(e) => format!("{what}: {e}"),
        }
    }
}

/// Whether a post may still try again (the status writer: while it leads).
pub type MayRetry<'a> = &'a (dyn Fn() -> bool + Send + Sync);

/// Runs `request` (each try bounded by `timeout`) until it succeeds, fails for good,
/// `policy` has no try left or `may_retry` says no. Also says whether a try that failed
/// transiently came first (its effect may have been applied all the same).
async fn retried<T, F, Fut>(
    policy: Retry,
    timeout: Duration,
    may_retry: MayRetry<'_>,
    mut request: F,
) -> (Result<T, Failure>, bool)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut uncertain = false;
    let mut next = 0;
    loop {
        let result = match tokio::time::timeout(timeout, request()).await {
            Ok(Ok(v)) => return (Ok(v), uncertain),
            Ok(Err(e)) => Failure::Api(e),
            Err(_) => Failure::TimedOut,
        };
        next += 1;
        let wait = policy.backoff(next);
        match wait {
            Some(wait) if result.is_transient() && may_retry() => {
                tracing::debug!(error = ?result, try_ = next, ?wait, "Event request failed; trying again");
                uncertain = true;
                tokio::time::sleep(wait).await;
            }
            _ => return (Err(result), uncertain),
        }
    }
}

/// How a post ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Posted {
    /// A new Event.
    Created,
    /// The same Event existed (posted by this or an earlier leader): nothing written.
    AlreadyReported,
    /// A true repeat: the existing Event's series now counts this many.
    Repeated(i32),
}

/// The Event's name: the object's name and a hash of what the Event says about this very
/// object (its kind and UID), so the same report always has the same name.
pub fn event_name(regarding: &ObjectReference, note: &Note) -> String {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0, 0);
    for part in [
        regarding.kind.as_deref().unwrap_or_default(),
        regarding.uid.as_deref().unwrap_or_default(),
        note.reason,
        &note.note,
    ] {
        h.write(part.as_bytes());
        h.write_u8(0);
    }
    let name: String = regarding
        .name
        .as_deref()
        .unwrap_or("object")
        .chars()
        .take(200)
        .collect();
    // 253 characters at most.
    format!("{name}.{:016x}", h.finish())
}

/// Where an Event about `regarding` lives: its namespace, `default` for cluster-scoped
/// objects.
fn event_namespace(regarding: &ObjectReference) -> String {
    regarding
        .namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// The Event object for `note` about `regarding`, reported by `instance` at `now`.
pub fn event(regarding: &ObjectReference, note: &Note, instance: &str, now: Timestamp) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(regarding, note)),
            namespace: Some(event_namespace(regarding)),
            ..Default::default()
        },
        event_time: Some(MicroTime(now)),
        action: Some(note.action.into()),
        reason: Some(note.reason.into()),
        note: Some(note.note.chars().take(1024).collect()),
        type_: Some(note.type_.into()),
        regarding: Some(regarding.clone()),
        reporting_controller: Some(CONTROLLER.into()),
        reporting_instance: Some(instance.chars().take(128).collect()),
        ..Default::default()
    }
}

/// Posts a report of a record change about `regarding` (an existing Event of another post
/// is a true repeat) while `may_retry` allows; see [`post_about`].
pub async fn post_report(
    client: &Client,
    instance: &str,
    regarding: &ObjectReference,
    report: &Report,
    timeout: Duration,
    may_retry: MayRetry<'_>,
) -> Result<Posted, String> {
    post_with(
        client,
        instance,
        regarding,
        &report.note,
        true,
        timeout,
        RETRY,
        report.at,
        report.tried,
        may_retry,
    )
    .await
}

/// Posts `note` about `regarding`. `repeat`: the writer saw the state change away and
/// back since it last reported this, so an existing Event is a true repeat (series
/// bumped); otherwise an existing Event means it was already reported. Each request is
/// bounded by `timeout` and retried by [`RETRY`].
pub async fn post_about(
    client: &Client,
    instance: &str,
    regarding: &ObjectReference,
    note: &Note,
    repeat: bool,
    timeout: Duration,
) -> Result<Posted, String> {
    post_with(
        client,
        instance,
        regarding,
        note,
        repeat,
        timeout,
        RETRY,
        Timestamp::now(),
        false,
        &|| true,
    )
    .await
}

/// [`post_about`] with its policy and clock as values; `tried`: an earlier try of this
/// very post (same `now`) may be stored.
#[allow(clippy::too_many_arguments)]
async fn post_with(
    client: &Client,
    instance: &str,
    regarding: &ObjectReference,
    note: &Note,
    repeat: bool,
    timeout: Duration,
    policy: Retry,
    now: Timestamp,
    tried: bool,
    may_retry: MayRetry<'_>,
) -> Result<Posted, String> {
    let api: Api<Event> = Api::namespaced(client.clone(), &event_namespace(regarding));
    let ev = event(regarding, note, instance, now);
    let name = ev.metadata.name.clone().unwrap_or_default();
    let what = format!("Event {name}");
    let (post_params, patch_params) = (PostParams::default(), PatchParams::default());
    let (created, uncertain) =
        retried(policy, timeout, may_retry, || api.create(&post_params, &ev)).await;
    let uncertain = uncertain || tried;
    match created {
        Ok(_) => return Ok(Posted::Created),
        Err(e) if e.is_code(409) => {}
        Err(e) => return Err(e.text(&what)),
    }
    if !repeat && !uncertain {
        return Ok(Posted::AlreadyReported);
    }
    let existing = retried(policy, timeout, may_retry, || api.get(&name))
        .await
        .0
        .map_err(|e| e.text(&what))?;
    // A try that timed out (or failed with 5xx) was stored after all: the 409 is our own.
    if uncertain && same_report(&existing, &ev) {
        return Ok(Posted::Created);
    }
    if !repeat {
        return Ok(Posted::AlreadyReported);
    }
    let count = existing.series.map_or(1, |s| s.count) + 1;
    let series = EventSeries {
        count,
        last_observed_time: MicroTime(now),
    };
    let body = Patch::Merge(json!({ "series": series }));
    retried(policy, timeout, may_retry, || {
        api.patch(&name, &patch_params, &body)
    })
    .await
    .0
    .map(|_| Posted::Repeated(count))
    .map_err(|e| e.text(&format!("{what} series")))
}

/// `stored` is the very Event `posted` (same reporter, same `eventTime` to the microsecond
/// the API keeps), not an earlier report of the same thing.
fn same_report(stored: &Event, posted: &Event) -> bool {
    let micros = |e: &Event| e.event_time.as_ref().map(|t| serde_json::to_value(t).ok());
    stored.reporting_instance == posted.reporting_instance && micros(stored) == micros(posted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::service;
    use crate::mock_api::{scripted, status_error, Call};
    use k8s_openapi::api::core::v1::Service;
    use kube::Resource;

    fn svc() -> Service {
        let mut s = service("default", "web", 80);
        s.metadata.uid = Some("uid-1".into());
        s
    }

    fn allocated(ip: &str) -> Note {
        Note {
            reason: "IPAllocated",
            type_: "Normal",
            action: "Allocate",
            note: format!("assigned IP {ip} from pool lan"),
        }
    }

    fn name(s: &Service, n: &Note) -> String {
        event_name(&s.object_ref(&()), n)
    }

    #[test]
    fn the_name_follows_what_is_said_about_which_object() {
        let a = name(&svc(), &allocated("192.0.2.1"));
        assert!(a.starts_with("web."), "{a}");
        assert_eq!(a, name(&svc(), &allocated("192.0.2.1")), "stable");
        assert_ne!(a, name(&svc(), &allocated("192.0.2.2")), "another note");
        let mut again = svc();
        again.metadata.uid = Some("uid-2".into());
        assert_ne!(
            a,
            name(&again, &allocated("192.0.2.1")),
            "a re-created Service"
        );
    }

    const URL: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

    /// A create answered with an API error.
    fn post_answer(code: u16, reason: &str) -> Call {
        Call::new("POST", format!("{URL}?"), code, status_error(code, reason))
    }

    #[tokio::test]
    async fn a_new_event_then_an_old_one_left_alone_then_a_true_repeat_counted() {
        let ev_name = name(&svc(), &allocated("192.0.2.1"));
        let (client, server) = scripted(vec![
            Call::new("POST", format!("{URL}?"), 201, json!({})).check_body(|b| {
                assert_eq!(b["reason"], "IPAllocated");
                assert_eq!(b["note"], "assigned IP 192.0.2.1 from pool lan");
                assert_eq!(b["regarding"]["name"], "web");
                assert_eq!(b["regarding"]["uid"], "uid-1");
                assert_eq!(b["reportingInstance"], "node-b");
                assert_eq!(b["reportingController"], CONTROLLER);
                assert!(b["eventTime"].is_string());
            }),
            post_answer(409, "AlreadyExists"),
            post_answer(409, "AlreadyExists"),
            Call::new(
                "GET",
                format!("{URL}/{ev_name}"),
                200,
                serde_json::to_value(event(
                    &svc().object_ref(&()),
                    &allocated("192.0.2.1"),
                    "node-a",
                    Timestamp::now(),
                ))
                .expect("json"),
            ),
            Call::new("PATCH", format!("{URL}/{ev_name}?"), 200, json!({})).check_body(|b| {
                assert_eq!(b["series"]["count"], 2);
                assert!(b["series"]["lastObservedTime"].is_string());
            }),
        ]);
        let t = Duration::from_secs(2);
        let note = allocated("192.0.2.1");
        assert_eq!(
            post_about(&client, "node-b", &svc().object_ref(&()), &note, false, t).await,
            Ok(Posted::Created)
        );
        assert_eq!(
            post_about(&client, "node-b", &svc().object_ref(&()), &note, false, t).await,
            Ok(Posted::AlreadyReported)
        );
        assert_eq!(
            post_about(&client, "node-b", &svc().object_ref(&()), &note, true, t).await,
            Ok(Posted::Repeated(2))
        );
        server.await.expect("every call came");
    }

    /// A policy fast enough for tests.
    const FAST: Retry = Retry {
        attempts: 3,
        first_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    };

    async fn post_fast(
        client: &Client,
        note: &Note,
        repeat: bool,
        t: Duration,
        now: Timestamp,
    ) -> Result<Posted, String> {
        post_with(
            client,
            "node-b",
            &svc().object_ref(&()),
            note,
            repeat,
            t,
            FAST,
            now,
            false,
            &|| true,
        )
        .await
    }

    /// A report posted again because its first post may have been stored (the writer's
    /// fence lapsed mid-post): the Event of that very post (same reporter, same
    /// `eventTime`) is recognized and not counted twice; an Event of another report of the
    /// same change is a true repeat; a report that was never tried creates its Event.
    #[tokio::test]
    async fn a_report_posted_again_recognizes_its_own_event() {
        let note = allocated("192.0.2.1");
        let ev_name = name(&svc(), &note);
        let at = Timestamp::now();
        let stored = |when: Timestamp| {
            serde_json::to_value(event(&svc().object_ref(&()), &note, "node-b", when))
                .expect("json")
        };
        let earlier = at - k8s_openapi::jiff::SignedDuration::from_secs(3600);
        let (client, server) = scripted(vec![
            post_answer(409, "AlreadyExists"),
            Call::new("GET", format!("{URL}/{ev_name}"), 200, stored(at)),
            post_answer(409, "AlreadyExists"),
            Call::new("GET", format!("{URL}/{ev_name}"), 200, stored(earlier)),
            Call::new("PATCH", format!("{URL}/{ev_name}?"), 200, json!({}))
                .check_body(|b| assert_eq!(b["series"]["count"], 2)),
            Call::new("POST", format!("{URL}?"), 201, json!({}))
                .check_body(move |b| assert_eq!(b["eventTime"], json!(MicroTime(at)))),
        ]);
        let t = Duration::from_secs(2);
        let again = Report {
            note: note.clone(),
            at,
            tried: true,
        };
        let post = |r: Report| {
            let client = client.clone();
            async move { post_report(&client, "node-b", &svc().object_ref(&()), &r, t, &|| true).await }
        };
        assert_eq!(
            post(again.clone()).await,
            Ok(Posted::Created),
            "its own Event"
        );
        assert_eq!(
            post(again.clone()).await,
            Ok(Posted::Repeated(2)),
            "another's"
        );
        let first = Report {
            tried: false,
            ..again
        };
        assert_eq!(
            post(first).await,
            Ok(Posted::Created),
            "with its own eventTime"
        );
        server.await.expect("every call came");
    }

    /// The first report of an allocation now, with a 2 s timeout per try.
    async fn post_first_report(client: &Client) -> Result<Posted, String> {
        post_fast(
            client,
            &allocated("192.0.2.1"),
            false,
            Duration::from_secs(2),
            Timestamp::now(),
        )
        .await
    }

    #[tokio::test]
    async fn a_post_answered_with_503_is_tried_again_and_created() {
        let (client, server) = scripted(vec![
            post_answer(503, "ServiceUnavailable"),
            Call::new("POST", format!("{URL}?"), 201, json!({})),
        ]);
        let got = post_first_report(&client).await;
        assert_eq!(got, Ok(Posted::Created));
        server.await.expect("every call came");
    }

    /// The first create timed out but was stored: the retry's 409 is that very Event (same
    /// reporter and eventTime), so it counts as created, and no series is bumped even for a
    /// true repeat. (Paused clock: the server answers the first try at 150 ms, after the
    /// client gave up on it at 100 ms and sent the second.)
    #[tokio::test(start_paused = true)]
    async fn a_create_that_timed_out_but_was_stored_counts_once() {
        let now = Timestamp::now();
        let note = allocated("192.0.2.1");
        let ev_name = name(&svc(), &note);
        let stored = event(&svc().object_ref(&()), &note, "node-b", now);
        let (client, server) = scripted(vec![
            Call::new("POST", format!("{URL}?"), 201, json!({})).after(Duration::from_millis(150)),
            post_answer(409, "AlreadyExists"),
            Call::new(
                "GET",
                format!("{URL}/{ev_name}"),
                200,
                serde_json::to_value(&stored).expect("json"),
            ),
        ]);
        let got = post_fast(&client, &note, true, Duration::from_millis(100), now).await;
        assert_eq!(got, Ok(Posted::Created));
        server.await.expect("every call came");
    }

    /// After a timeout, a 409 for an Event another leader posted earlier is still that
    /// earlier report: left alone, or counted as a true repeat.
    #[tokio::test]
    async fn after_a_timeout_an_earlier_report_is_told_apart_from_ours() {
        let earlier = Timestamp::now();
        let now = earlier + std::time::Duration::from_secs(5);
        let note = allocated("192.0.2.1");
        let ev_name = name(&svc(), &note);
        let stored = serde_json::to_value(event(&svc().object_ref(&()), &note, "node-a", earlier))
            .expect("json");
        let (client, server) = scripted(vec![
            post_answer(504, "Timeout"),
            post_answer(409, "AlreadyExists"),
            Call::new("GET", format!("{URL}/{ev_name}"), 200, stored.clone()),
            post_answer(504, "Timeout"),
            post_answer(409, "AlreadyExists"),
            Call::new("GET", format!("{URL}/{ev_name}"), 200, stored),
            Call::new("PATCH", format!("{URL}/{ev_name}?"), 200, json!({})).check_body(|b| {
                assert_eq!(b["series"]["count"], 2);
            }),
        ]);
        let t = Duration::from_secs(2);
        assert_eq!(
            post_fast(&client, &note, false, t, now).await,
            Ok(Posted::AlreadyReported)
        );
        assert_eq!(
            post_fast(&client, &note, true, t, now).await,
            Ok(Posted::Repeated(2))
        );
        server.await.expect("every call came");
    }

    /// The policy's tries and no more; the last error is reported.
    #[tokio::test]
    async fn a_post_gives_up_after_the_last_try_with_the_last_error() {
        let calls = (0..FAST.attempts)
            .map(|_| post_answer(500, "InternalError"))
            .collect();
        let (client, server) = scripted(calls);
        let got = post_first_report(&client).await;
        server.await.expect("every call came");
        let err = got.expect_err("gave up");
        assert!(err.contains("InternalError"), "{err}");
    }

    /// A writer that no longer leads does not try again.
    #[tokio::test]
    async fn no_retry_once_the_writer_no_longer_leads() {
        let (client, server) = scripted(vec![post_answer(503, "ServiceUnavailable")]);
        let report = Report::now(allocated("192.0.2.1"));
        let got = post_report(
            &client,
            "node-b",
            &svc().object_ref(&()),
            &report,
            Duration::from_secs(2),
            &|| false,
        )
        .await;
        let err = got.expect_err("not retried");
        assert!(err.contains("ServiceUnavailable"), "{err}");
        server.await.expect("every call came");
    }

    /// An answer that will not change (403) is not tried again.
    #[tokio::test]
    async fn a_refused_post_is_not_tried_again() {
        let (client, server) = scripted(vec![post_answer(403, "Forbidden")]);
        let got = post_first_report(&client).await;
        let err = got.expect_err("refused");
        assert!(err.contains("Forbidden"), "{err}");
        server.await.expect("every call came");
    }

    #[test]
    fn the_shipped_policy_waits_250_500_1000_ms_then_gives_up() {
        let waits: Vec<_> = (0..=RETRY.attempts).map(|n| RETRY.backoff(n)).collect();
        let ms = Duration::from_millis;
        assert_eq!(
            waits,
            [
                Some(ms(0)),
                Some(ms(250)),
                Some(ms(500)),
                Some(ms(1000)),
                None
            ]
        );
    }

    proptest::proptest! {
        /// Exactly `attempts` tries (at least one), the waits grow and never pass the cap,
        /// and huge try numbers neither overflow nor panic.
        #[test]
        fn backoff_is_bounded_and_grows(attempts in 0u32..40, first in 0u64..5_000, extra in 0u64..60_000, probe in 0u32..u32::MAX) {
            let p = Retry {
                attempts,
                first_backoff: Duration::from_millis(first),
                max_backoff: Duration::from_millis(first + extra),
            };
            let tries = (0..=attempts.max(1) + 1).take_while(|n| p.backoff(*n).is_some()).count();
            proptest::prop_assert_eq!(tries as u32, attempts.max(1));
            let mut last = Duration::ZERO;
            for n in 0..attempts.max(1) {
                let w = p.backoff(n).expect("a try left");
                proptest::prop_assert!(w >= last && w <= p.max_backoff);
                last = w;
            }
            proptest::prop_assert_eq!(p.backoff(probe).is_some(), probe < attempts.max(1));
        }
    }
}

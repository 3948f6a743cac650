use super::*;
use crate::fixtures::{pool, service};
use crate::mock_api::{scripted, status_error, Call};
use crate::snapshot::{Object, Store};
use k8s_openapi::api::core::v1::{LoadBalancerStatus, ServiceStatus};
use serde_json::{json, Value};

const NS: &str = "edgelb-system";
pub(crate) const LIST: &str = "/api/v1/services?&limit=500";
const SVC_STATUS: &str =
    "/api/v1/namespaces/default/services/web/status?&force=true&fieldManager=edgelb";
const POOL_STATUS: &str =
    "/apis/edgelb.io/v1alpha1/namespaces/edgelb-system/ipaddresspools/lan/status?&force=true&fieldManager=edgelb";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events?";

fn web(rv: &str, ip: Option<&str>) -> Service {
    recorded("web", rv, ip)
}

/// Service `default/<name>` at version `rv`, its status (the record) naming `ip`.
pub(crate) fn recorded(name: &str, rv: &str, ip: Option<&str>) -> Service {
    let mut s = service("default", name, 80);
    s.metadata.resource_version = Some(rv.into());
    s.metadata.uid = Some(format!("uid-{name}"));
    if let Some(ip) = ip {
        s.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some(ip.into()),
                    ip_mode: Some("VIP".into()),
                    ..Default::default()
                }]),
            }),
            ..Default::default()
        });
    }
    s
}

pub(crate) fn store(services: Vec<Service>) -> Store {
    let mut store = Store::default();
    store.apply(
        Object::IPAddressPool(pool(NS, "lan", &["192.0.2.0/30"])),
        NS,
    );
    for s in services {
        store.apply(Object::Service(s), NS);
    }
    store
}

pub(crate) fn list(items: Vec<Service>) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "100"}, "items": items})
}

fn leading(epoch: u64) -> Fence {
    Fence {
        epoch,
        tenure: 1,
        until: Some(Instant::now() + Duration::from_secs(60)),
        holder: Some("node-a".into()),
        api_reachable: true,
        contact: None,
    }
}

pub(crate) fn config() -> WriterConfig {
    WriterConfig {
        concurrency: 1,
        ..WriterConfig::new("node-a", Selection::default())
    }
}

async fn settle(w: &WriterHandle, until: impl Fn(&WriterStats) -> bool) -> WriterStats {
    let mut rx = w.watch_stats();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if until(&rx.borrow_and_update()) {
                break;
            }
            rx.changed().await.expect("writer running");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("writer did not settle: {:?}", w.stats()));
    w.stats()
}

/// Waits until the published allocation of record satisfies `until`.
async fn allocated(w: &WriterHandle, until: impl Fn(Option<&Allocated>) -> bool) {
    let mut rx = w.allocated();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !until(rx.borrow_and_update().as_ref()) {
            rx.changed().await.expect("writer running");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("allocation not published: {:?}", w.allocated().borrow()));
}

/// The IPs of `web` in a published allocation of `snap`.
fn web_ips(a: Option<&Allocated>, snap: &Snapshot) -> Option<Vec<IpAddr>> {
    let a = a.filter(|a| a.snap.same_as(snap))?;
    Some(
        a.assignments
            .ips(&ObjectKey::new("default", "web"))
            .to_vec(),
    )
}

/// `web`'s status written with 192.0.2.0 (its version then 6).
fn status_written() -> Call {
    Call::new(
        "PATCH",
        SVC_STATUS,
        200,
        serde_json::to_value(web("6", Some("192.0.2.0"))).expect("json"),
    )
}

pub(crate) fn condition_call() -> Call {
    Call::new("PATCH", POOL_STATUS, 200, json!({}))
        .check_body(|b| assert_eq!(b["status"]["conditions"][0]["type"], "Valid"))
}

/// A new leader reads the record, then writes the status with the Service's version as a
/// precondition, then one `IPAllocated` Event; once the watch shows the status nothing is
/// written again, and nothing is kept once the Service is gone. The allocation of each
/// snapshot is published while it leads (its run loop announces from it), and withdrawn
/// when the fence closes.
#[tokio::test]
async fn a_term_reads_the_record_then_writes_fenced_with_a_precondition_and_one_event() {
    let (client, server) = scripted(vec![
        Call::new("GET", LIST, 200, list(vec![web("5", None)])),
        status_written().with_body(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "resourceVersion": "5"},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.0", "ipMode": "VIP"}]}}
        })),
        Call::new("POST", EVENTS, 201, json!({})).check_body(|b| {
            assert_eq!(b["reason"], "IPAllocated");
            assert_eq!(b["note"], "assigned IP 192.0.2.0 from pool lan");
            assert_eq!(b["reportingInstance"], "node-a");
        }),
        condition_call(),
    ]);
    let (fence_tx, fence) = watch::channel(leading(1));
    let w = WriterHandle::spawn(client, config(), fence);
    let mut st = store(vec![web("5", None)]);
    let first = st.snapshot(&Selection::default());
    w.submit(first.clone(), vec![]);
    let s = settle(&w, |s| {
        s.services == 1 && s.conditions == 1 && s.pending == 0
    })
    .await;
    assert_eq!((s.events, s.terms, s.failed), (1, 1, 0));
    let ip: IpAddr = "192.0.2.0".parse().expect("ip");
    allocated(&w, |a| web_ips(a, &first) == Some(vec![ip])).await;
    // The watch delivers the written status: nothing more to write.
    st.apply(Object::Service(web("6", Some("192.0.2.0"))), NS);
    let shown = st.snapshot(&Selection::default());
    w.submit(shown.clone(), vec![]);
    allocated(&w, |a| web_ips(a, &shown) == Some(vec![ip])).await;
    // The Service goes away: nothing is kept for it.
    st.delete("Service", &ObjectKey::new("default", "web"));
    let gone = st.snapshot(&Selection::default());
    w.submit(gone.clone(), vec![]);
    let s = settle(&w, |s| s.tracked <= 1).await;
    assert_eq!(s.services, 1);
    allocated(&w, |a| web_ips(a, &gone) == Some(vec![])).await;
    // The fence closes: the run loop allocates on its own again.
    fence_tx.send_replace(Fence::default());
    allocated(&w, |a| a.is_none()).await;
    drop(fence_tx);
    w.stop().await;
    server.await.expect("every call came");
}

/// The last leader recorded an IP that this speaker's watch has not shown yet: the new
/// leader waits for its snapshot to show the record, then has nothing to write (and posts
/// no Event again).
#[tokio::test]
async fn a_new_leader_waits_for_its_snapshot_to_show_the_record() {
    let (client, server) = scripted(vec![
        Call::new("GET", LIST, 200, list(vec![web("9", Some("192.0.2.3"))])),
        condition_call(),
    ]);
    let (_fence_tx, fence) = watch::channel(leading(4));
    let w = WriterHandle::spawn(client, config(), fence);
    let mut st = store(vec![web("5", None)]);
    w.submit(st.snapshot(&Selection::default()), vec![]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.stats().services, 0, "behind the record: no write");
    st.apply(Object::Service(web("9", Some("192.0.2.3"))), NS);
    w.submit(st.snapshot(&Selection::default()), vec![]);
    let s = settle(&w, |s| s.conditions == 1 && s.pending == 0).await;
    assert_eq!(
        (s.services, s.events),
        (0, 0),
        "the record is kept as it is"
    );
    w.stop().await;
    server.await.expect("every call came");
}

/// While the fence does not permit, nothing is read or written.
#[tokio::test]
async fn no_write_without_the_fence() {
    let (client, server) = scripted(vec![]);
    let closed = Fence {
        epoch: 1,
        tenure: 1,
        until: Some(Instant::now() + Duration::from_secs(1)),
        ..Fence::default()
    };
    let cfg = WriterConfig {
        write_timeout: Duration::from_secs(5),
        ..config()
    };
    let (_fence_tx, fence) = watch::channel(closed);
    let w = WriterHandle::spawn(client, cfg, fence);
    let st = store(vec![web("5", None)]);
    w.submit(st.snapshot(&Selection::default()), vec![]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.stats().services, 0);
    w.stop().await;
    server.await.expect("no call came");
}

/// A 409 whose fresh read shows IPs another writer recorded: the record changed under
/// us, so the term starts over from a fresh read and keeps that IP.
#[tokio::test]
async fn a_conflict_with_a_foreign_record_starts_the_term_over() {
    let (client, server) = scripted(vec![
        Call::new("GET", LIST, 200, list(vec![web("5", None)])),
        Call::new("PATCH", SVC_STATUS, 409, status_error(409, "Conflict")),
        Call::new(
            "GET",
            "/api/v1/namespaces/default/services/web",
            200,
            serde_json::to_value(web("7", Some("192.0.2.2"))).expect("json"),
        ),
        Call::new("GET", LIST, 200, list(vec![web("7", Some("192.0.2.2"))])),
        condition_call(),
    ]);
    let (_fence_tx, fence) = watch::channel(leading(1));
    let w = WriterHandle::spawn(client, config(), fence);
    let mut st = store(vec![web("5", None)]);
    w.submit(st.snapshot(&Selection::default()), vec![]);
    let s = settle(&w, |s| s.terms == 2).await;
    assert_eq!(s.conflicts, 1);
    // Started over: nothing is published until it allocates again, from the fresh record.
    assert!(w.allocated().borrow().is_none());
    st.apply(Object::Service(web("7", Some("192.0.2.2"))), NS);
    let snap = st.snapshot(&Selection::default());
    w.submit(snap.clone(), vec![]);
    let s = settle(&w, |s| s.conditions == 1 && s.pending == 0).await;
    assert_eq!(s.services, 0, "the foreign record is kept");
    let ip: IpAddr = "192.0.2.2".parse().expect("ip");
    allocated(&w, |a| web_ips(a, &snap) == Some(vec![ip])).await;
    w.stop().await;
    server.await.expect("every call came");
}

/// Runs one term over `objects` (no Services) and expects `calls` after the record read.
async fn one_term(
    objects: Vec<Object>,
    calls: Vec<Call>,
    until: impl Fn(&WriterStats) -> bool,
) -> WriterStats {
    let mut all = vec![Call::new("GET", LIST, 200, list(vec![]))];
    all.extend(calls);
    let (client, server) = scripted(all);
    let (_fence_tx, fence) = watch::channel(leading(1));
    let w = WriterHandle::spawn(client, config(), fence);
    let mut store = Store::default();
    for o in objects {
        store.apply(o, NS);
    }
    w.submit(store.snapshot(&Selection::default()), vec![]);
    let s = settle(&w, |s| until(s) && s.pending == 0).await;
    w.stop().await;
    server.await.expect("every call came");
    s
}

#[tokio::test]
async fn conditions_of_a_valid_and_an_invalid_pool_are_applied_with_a_warning_for_the_invalid() {
    let url = |n: &str| {
        format!("/apis/edgelb.io/v1alpha1/namespaces/{NS}/ipaddresspools/{n}/status?&force=true&fieldManager=edgelb")
    };
    let s = one_term(
        vec![
            Object::IPAddressPool(pool(NS, "bad", &["10.0.0.300/24"])),
            Object::IPAddressPool(pool(NS, "good", &["192.0.2.0/30"])),
        ],
        vec![
            Call::new("PATCH", url("bad"), 200, json!({})).check_body(|b| {
                let c = &b["status"]["conditions"][0];
                assert_eq!(b["kind"], "IPAddressPool");
                assert_eq!(
                    (&c["type"], &c["status"], &c["reason"]),
                    (&json!("Valid"), &json!("False"), &json!("InvalidSpec"))
                );
                assert_eq!(
                    c["message"],
                    "spec.addresses[0]: \"10.0.0.300/24\" is not a CIDR or range"
                );
            }),
            // Valid=False also gets a Warning Event on the pool, naming field and value.
            Call::new(
                "POST",
                format!("/apis/events.k8s.io/v1/namespaces/{NS}/events?"),
                201,
                json!({}),
            )
            .check_body(|b| {
                assert_eq!(b["type"], "Warning");
                assert_eq!(b["reason"], "InvalidSpec");
                assert_eq!(b["regarding"]["kind"], "IPAddressPool");
                assert_eq!(b["regarding"]["apiVersion"], "edgelb.io/v1alpha1");
                assert_eq!(b["regarding"]["name"], "bad");
                assert_eq!(
                    b["note"],
                    "spec.addresses[0]: \"10.0.0.300/24\" is not a CIDR or range"
                );
            }),
            Call::new("PATCH", url("good"), 200, json!({})).check_body(|b| {
                assert_eq!(b["status"]["conditions"][0]["status"], "True");
                assert_eq!(b["status"]["conditions"][0]["message"], "spec accepted");
            }),
        ],
        |s| s.conditions == 2,
    )
    .await;
    assert_eq!((s.conditions, s.events, s.failed), (2, 1, 0));
}

/// A `PolicyRoute` (cluster-scoped) that does not decode gets `Valid=False` on its own
/// status URL (no namespace in the path) and a Warning Event.
#[tokio::test]
async fn an_undecodable_policy_route_gets_valid_false_and_a_warning() {
    let raw = json!({"apiVersion": "edgelb.io/v1alpha1", "kind": "PolicyRoute",
        "metadata": {"name": "r", "uid": "u-1", "generation": 4},
        "spec": {"table": 4, "gateways": ["10.0.0.1.5"]}});
    let crate::source::decode::Lenient::Undecodable(object) =
        crate::source::decode::decode::<crate::api::PolicyRoute>(raw)
    else {
        panic!("decoded");
    };
    let s =
        one_term(
            vec![Object::Undecodable {
                kind: "PolicyRoute",
                object,
            }],
            vec![
            Call::new(
                "PATCH",
                "/apis/edgelb.io/v1alpha1/policyroutes/r/status?&force=true&fieldManager=edgelb",
                200,
                json!({}),
            )
            .check_body(|b| {
                let c = &b["status"]["conditions"][0];
                assert_eq!(c["type"], "Valid");
                assert_eq!(c["status"], "False");
                assert_eq!(c["observedGeneration"], 4);
                assert_eq!(
                    c["message"],
                    "spec.gateways[0]: \"10.0.0.1.5\" cannot be read: invalid IP address syntax"
                );
            }),
            Call::new("POST", "/apis/events.k8s.io/v1/namespaces/default/events?", 201, json!({}))
                .check_body(|b| {
                    assert_eq!(b["type"], "Warning");
                    assert_eq!(b["regarding"]["kind"], "PolicyRoute");
                    assert_eq!(b["regarding"]["uid"], "u-1");
                }),
        ],
            |s| s.conditions == 1,
        )
        .await;
    assert_eq!((s.conditions, s.events, s.failed), (1, 1, 0));
}

/// The fence of `epoch` open, in hold `tenure`.
pub(crate) fn held(epoch: u64, tenure: u64) -> Fence {
    Fence {
        tenure,
        ..leading(epoch)
    }
}

/// The IPAllocated Event of `web` on 192.0.2.0, posted with an `eventTime` before `before`
/// (the time of its first try, not of its late post).
fn owed_event(before: Arc<std::sync::Mutex<Option<Timestamp>>>) -> Call {
    Call::new("POST", EVENTS, 201, json!({})).check_body(move |b| {
        assert_eq!(b["reason"], "IPAllocated");
        assert_eq!(b["note"], "assigned IP 192.0.2.0 from pool lan");
        let at: Timestamp = b["eventTime"]
            .as_str()
            .expect("eventTime")
            .parse()
            .expect("a time");
        let renewed = before
            .lock()
            .expect("lock")
            .expect("posted after the renewal");
        assert!(at < renewed, "first eventTime kept: {at} vs {renewed}");
    })
}

/// Runs a term whose fence lapses while `web`'s status write (to 192.0.2.0) is in flight,
/// then renews it as `renewed` with `web` recorded as `record` and shown so; `calls` are
/// expected after the second record read. Returns the stats once settled.
async fn lapse_during_the_write(
    renewed: Fence,
    record: Service,
    calls: impl FnOnce(Arc<std::sync::Mutex<Option<Timestamp>>>) -> Vec<Call>,
) -> WriterStats {
    let (fence_tx, fence) = watch::channel(held(1, 1));
    let fence_tx = Arc::new(fence_tx);
    let lapse = fence_tx.clone();
    let renewed_at = Arc::new(std::sync::Mutex::new(None));
    let mut script = vec![
        Call::new("GET", LIST, 200, list(vec![web("5", None)])),
        // The Lease renewal is late: the fence lapses while the write is in flight.
        status_written().check_body(move |_| {
            lapse.send_replace(Fence {
                until: None,
                ..held(1, 1)
            });
        }),
        Call::new("GET", LIST, 200, list(vec![record.clone()])),
        condition_call(),
    ];
    script.extend(calls(renewed_at.clone()));
    let (client, server) = scripted(script);
    let w = WriterHandle::spawn(client, config(), fence);
    let mut st = store(vec![web("5", None)]);
    w.submit(st.snapshot(&Selection::default()), vec![]);
    // The write ended after the lapse: the term is over, what it owes is kept.
    let s = settle(&w, |s| s.tracked == 1 && s.pending == 0).await;
    assert_eq!((s.events, s.terms), (0, 1));
    // The watch shows the record; then the renewal lands.
    st.apply(Object::Service(record), NS);
    w.submit(st.snapshot(&Selection::default()), vec![]);
    *renewed_at.lock().expect("lock") = Some(Timestamp::now());
    fence_tx.send_replace(renewed);
    let s = settle(&w, |s| s.terms == 2 && s.conditions == 1 && s.pending == 0).await;
    w.stop().await;
    server.await.expect("every call came");
    s
}

/// The fence lapses between a status write and its Event, and the same hold of the Lease
/// renews it (a new epoch, the same tenure): the new term reads the record, and once the
/// snapshot shows the write the owed `IPAllocated` is posted, with its first `eventTime`.
#[tokio::test]
async fn an_event_owed_over_a_lapse_is_posted_when_the_same_hold_writes_again() {
    let s = lapse_during_the_write(held(2, 1), web("6", Some("192.0.2.0")), |renewed| {
        vec![owed_event(renewed)]
    })
    .await;
    assert_eq!((s.events, s.services, s.failed), (1, 0, 0));
    assert_eq!(
        s.tracked, 1,
        "only the condition applied is kept: the debt is paid"
    );
}

/// The same lapse, but the Lease was acquired anew (another held it meanwhile): the
/// Events of the hold that ended are not posted.
#[tokio::test]
async fn what_a_hold_that_ended_owed_is_not_posted() {
    let s = lapse_during_the_write(held(2, 2), web("6", Some("192.0.2.0")), |_| vec![]).await;
    assert_eq!((s.events, s.tracked), (0, 1));
}

/// The same hold renews, but meanwhile the Service's record names another IP: the owed
/// "assigned IP 192.0.2.0" would be stale, and is dropped.
#[tokio::test]
async fn an_owed_event_is_not_posted_once_the_service_holds_another_ip() {
    let s = lapse_during_the_write(held(2, 1), web("8", Some("192.0.2.1")), |_| vec![]).await;
    assert_eq!((s.events, s.services, s.tracked), (0, 0, 1));
}

/// A status write without an answer (timed out) may have landed: when the snapshot shows
/// it, its `IPAllocated` is posted without writing the status again.
#[tokio::test]
async fn a_write_in_doubt_that_landed_gets_its_event() {
    let (client, server) = scripted(vec![
        Call::new("GET", LIST, 200, list(vec![web("5", None)])),
        status_written().after(Duration::from_millis(1500)),
        condition_call(),
        Call::new("POST", EVENTS, 201, json!({})).check_body(|b| {
            assert_eq!(b["reason"], "IPAllocated");
            assert_eq!(b["note"], "assigned IP 192.0.2.0 from pool lan");
        }),
    ]);
    let cfg = WriterConfig {
        write_timeout: Duration::from_secs(1),
        retry: Duration::from_secs(30),
        ..config()
    };
    let (_fence_tx, fence) = watch::channel(held(1, 1));
    let w = WriterHandle::spawn(client, cfg, fence);
    let mut st = store(vec![web("5", None)]);
    w.submit(st.snapshot(&Selection::default()), vec![]);
    let s = settle(&w, |s| s.failed == 1).await;
    assert_eq!(s.events, 0, "no answer, no Event yet");
    // The watch shows the write landed after all.
    st.apply(Object::Service(web("6", Some("192.0.2.0"))), NS);
    w.submit(st.snapshot(&Selection::default()), vec![]);
    let s = settle(&w, |s| s.events == 1 && s.conditions == 1 && s.pending == 0).await;
    assert_eq!((s.services, s.failed), (0, 1), "no second status write");
    w.stop().await;
    server.await.expect("every call came");
}

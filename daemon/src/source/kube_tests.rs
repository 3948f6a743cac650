use std::time::Duration;

use super::*;
use crate::fixtures::{pool, service};
use crate::mock_api::{scripted, status_error, Call};
use crate::snapshot::ObjectKey;
use serde_json::json;

const NS: &str = "edgelb-system";

fn ev(kind: &'static str, event: watcher::Event<Object>) -> Update {
    Update::Event { kind, event }
}

fn svc(name: &str) -> Object {
    Object::Service(service("default", name, 80))
}

#[test]
fn nothing_is_ready_until_every_kind_is_listed() {
    let mut f = Feeder::new(NS, 2);
    f.handle(ev("Service", watcher::Event::Init));
    f.handle(ev("Service", watcher::Event::InitApply(svc("a"))));
    f.handle(ev("Service", watcher::Event::InitDone));
    assert!(!f.ready());
    f.handle(ev("IPAddressPool", watcher::Event::Init));
    f.handle(ev("IPAddressPool", watcher::Event::InitDone));
    assert!(f.ready());
    assert_eq!(f.store.services().len(), 1);
}

#[test]
fn a_relist_is_swapped_in_whole_at_init_done() {
    let mut f = Feeder::new(NS, 1);
    for e in [
        watcher::Event::Init,
        watcher::Event::InitApply(svc("a")),
        watcher::Event::InitApply(svc("b")),
        watcher::Event::InitDone,
    ] {
        f.handle(ev("Service", e));
    }
    assert!(f.take_dirty());
    // Reconnect: the re-list is buffered; until InitDone the old objects stay.
    f.handle(ev("Service", watcher::Event::Init));
    f.handle(ev("Service", watcher::Event::InitApply(svc("b"))));
    assert_eq!(f.store.services().len(), 2);
    assert!(!f.take_dirty(), "a half re-list changes nothing");
    f.handle(ev("Service", watcher::Event::InitDone));
    assert_eq!(
        f.store
            .services()
            .iter()
            .map(|(k, _)| k.to_string())
            .collect::<Vec<_>>(),
        vec!["default/b"]
    );
    assert!(f.take_dirty());
}

#[test]
fn apply_delete_and_errors() {
    let mut f = Feeder::new(NS, 1);
    f.handle(ev(
        "IPAddressPool",
        watcher::Event::Apply(Object::IPAddressPool(pool(NS, "p", &["192.0.2.0/30"]))),
    ));
    f.handle(ev("Service", watcher::Event::Apply(svc("a"))));
    f.handle(ev("Service", watcher::Event::Delete(svc("a"))));
    assert!(f.store.services().is_empty());
    assert_eq!(f.store.pools.len(), 1);
    assert!(f.take_dirty());
    f.handle(Update::Error {
        kind: "Service",
        message: "connection refused".into(),
    });
    assert!(!f.take_dirty(), "an error changes nothing");
    assert_eq!(f.store.pools.len(), 1);
}

fn service_json(name: &str) -> serde_json::Value {
    let mut v = serde_json::to_value(service("default", name, 80)).expect("json");
    v["metadata"]["resourceVersion"] = json!("5");
    v
}

#[tokio::test]
async fn a_failing_watch_keeps_the_last_snapshot() {
    let (client, server) = scripted(vec![
        Call::new("GET", "/api/v1/services?&limit=500", 200, json!({
            "apiVersion": "v1", "kind": "ServiceList", "metadata": {"resourceVersion": "5"},
            "items": [service_json("web")]
        })),
        Call::new(
            "GET",
            "/api/v1/services?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=5",
            500,
            status_error(500, "InternalError"),
        ),
    ]);
    let (tx, mut rx) = watch::channel(Snapshot::default());
    let task = tokio::spawn(run_streams(
        vec![stream(
            Api::<Lenient<Service>>::all(client),
            "Service",
            Object::Service,
        )],
        Selection::default(),
        tx,
    ));
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("first snapshot")
        .expect("sender");
    assert!(rx
        .borrow_and_update()
        .services
        .contains_key(&ObjectKey::new("default", "web")));
    server.await.expect("list and watch were called");
    // The watch failed (and the retries fail: the server is gone). Nothing new is published.
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), rx.changed())
            .await
            .is_err()
    );
    assert!(
        rx.borrow()
            .services
            .contains_key(&ObjectKey::new("default", "web")),
        "last snapshot in force"
    );
    task.abort();
}

fn pool_json(name: &str, addresses: &[&str], priority: serde_json::Value) -> serde_json::Value {
    let mut v = serde_json::to_value(pool(NS, name, addresses)).expect("json");
    v["metadata"]["resourceVersion"] = json!("5");
    v["metadata"]["generation"] = json!(2);
    v["spec"]["serviceAllocation"] = json!({ "priority": priority });
    v
}

/// A pool the API server accepts (the schema said `format: int32`, which it does not
/// enforce) but that `i32` cannot hold used to fail the whole list of pools, so the speaker
/// never published a snapshot. Now that pool alone is invalid, naming field and value, and
/// the other pool allocates.
#[tokio::test]
async fn an_undecodable_object_is_invalid_alone_and_the_speaker_still_allocates() {
    let list = |kind: &str, items: Vec<serde_json::Value>| json!({"apiVersion": "v1", "kind": kind, "metadata": {"resourceVersion": "5"}, "items": items});
    let pending = |uri: &str| {
        // The watch after the list: answered with nothing new, then the script ends.
        Call::new("GET", uri, 200, json!({}))
    };
    let pools_uri = format!("/apis/edgelb.io/v1alpha1/namespaces/{NS}/ipaddresspools");
    let (pools_client, pools_server) = scripted(vec![
        Call::new(
            "GET",
            format!("{pools_uri}?&limit=500"),
            200,
            list(
                "IPAddressPoolList",
                vec![
                    pool_json("bad", &["198.51.100.0/30"], json!(3_000_000_000u64)),
                    pool_json("good", &["192.0.2.0/30"], json!(1)),
                ],
            ),
        ),
        pending(&format!(
            "{pools_uri}?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=5"
        )),
    ]);
    let (svc_client, svc_server) = scripted(vec![
        Call::new(
            "GET",
            "/api/v1/services?&limit=500",
            200,
            list("ServiceList", vec![service_json("web")]),
        ),
        pending("/api/v1/services?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion=5"),
    ]);
    let (tx, mut rx) = watch::channel(Snapshot::default());
    let task = tokio::spawn(run_streams(
        vec![
            stream(
                Api::<Lenient<Service>>::all(svc_client),
                "Service",
                Object::Service,
            ),
            stream(
                Api::<Lenient<IPAddressPool>>::namespaced(pools_client, NS),
                "IPAddressPool",
                Object::IPAddressPool,
            ),
        ],
        Selection::default(),
        tx,
    ));
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("a snapshot is published although one pool does not decode")
        .expect("sender");
    let snap = rx.borrow_and_update().clone();
    let bad = &snap.pools[&ObjectKey::new(NS, "bad")];
    assert!(!bad.is_valid());
    assert_eq!(bad.problems[0].field, "spec.serviceAllocation.priority");
    assert!(
        bad.problems[0]
            .message
            .starts_with("3000000000 cannot be read"),
        "{}",
        bad.problems[0].message
    );
    assert_eq!(bad.object.metadata.generation, Some(2));
    assert!(snap.pools[&ObjectKey::new(NS, "good")].is_valid());
    let a = crate::ipam::allocate(&snap, &crate::ipam::Assignments::default());
    assert_eq!(
        a.ips(&ObjectKey::new("default", "web")),
        &["192.0.2.0".parse::<std::net::IpAddr>().expect("ip")]
    );
    // The leader writes Valid=False with field and value on the bad pool.
    let ups = crate::status::conditions::updates(
        &snap,
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("ts"),
        ),
    );
    let bad_up = ups
        .iter()
        .find(|u| u.key.name.as_ref() == "bad")
        .expect("condition for the bad pool");
    assert_eq!(bad_up.conditions[0].status, "False");
    assert!(bad_up.conditions[0]
        .message
        .contains("spec.serviceAllocation.priority: 3000000000 cannot be read"));
    task.abort();
    let _ = (pools_server.await, svc_server.await);
}

/// Backoff: a list that keeps failing is retried ever more slowly, although the watcher
/// emits `Init` (an `Ok`) before each try, which used to reset kube's backoff every time.
#[tokio::test(start_paused = true)]
async fn a_list_that_keeps_failing_is_retried_with_growing_delays() {
    use kube::runtime::watcher::Error as WError;
    use std::sync::{Arc, Mutex};
    let tries: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
    let t = tries.clone();
    // Each poll: Init, then a failed list, as the watcher does for a 403.
    let events = futures::stream::iter(0..8).flat_map(move |_| {
        t.lock().expect("lock").push(tokio::time::Instant::now());
        futures::stream::iter(vec![
            Ok(watcher::Event::<()>::Init),
            Err(WError::NoResourceVersion),
        ])
    });
    let start = tokio::time::Instant::now();
    let n = with_backoff(events.boxed(), DefaultBackoff::default())
        .count()
        .await;
    assert_eq!(n, 16);
    let gaps: Vec<Duration> = tries
        .lock()
        .expect("lock")
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    assert!(gaps.len() == 7, "{gaps:?}");
    // 0.8 s doubling with jitter, capped at 30 s: the last gaps are far above the first.
    assert!(gaps[6] >= Duration::from_secs(20), "{gaps:?}");
    assert!(gaps[0] < Duration::from_secs(3), "{gaps:?}");
    assert!(start.elapsed() >= Duration::from_secs(60), "{gaps:?}");
}

/// An error is logged when it changes, not at every retry; progress clears it.
#[test]
fn the_same_error_is_remembered_once_per_kind() {
    let mut f = Feeder::new(NS, 1);
    for _ in 0..3 {
        f.handle(Update::Error {
            kind: "Service",
            message: "forbidden".into(),
        });
    }
    assert_eq!(f.errors.len(), 1);
    f.handle(ev("Service", watcher::Event::Init));
    assert_eq!(f.errors.len(), 1, "Init is no progress");
    f.handle(ev("Service", watcher::Event::InitDone));
    assert!(f.errors.is_empty());
    let long = "x".repeat(10_000);
    assert!(short_error(&long).len() < 400);
}

/// The speaker works without OpenYurt: a NodePool kind that is not served counts as listed
/// and empty; once served, its objects count; when it goes away again, they are gone.
#[test]
fn an_absent_optional_kind_counts_as_listed_and_empty() {
    use crate::fixtures::node_pool;
    let mut f = Feeder::new(NS, 2);
    f.handle(ev("Service", watcher::Event::Init));
    f.handle(ev("Service", watcher::Event::InitDone));
    assert!(!f.ready());
    f.handle(Update::Absent { kind: "NodePool" });
    assert!(
        f.ready(),
        "an absent optional kind does not hold the speaker back"
    );
    assert!(f.take_dirty());
    f.handle(Update::Absent { kind: "NodePool" });
    assert!(!f.take_dirty(), "a repeated absence changes nothing");
    f.handle(ev("NodePool", watcher::Event::Init));
    f.handle(ev(
        "NodePool",
        watcher::Event::InitApply(Object::NodePool(node_pool("np", &[], &[]))),
    ));
    f.handle(ev("NodePool", watcher::Event::InitDone));
    assert_eq!(f.store.node_pool_objects.len(), 1);
    assert!(f.take_dirty());
    f.handle(Update::Absent { kind: "NodePool" });
    assert!(
        f.store.node_pool_objects.is_empty(),
        "a removed CRD empties the kind"
    );
    assert!(f.take_dirty());
}

#[test]
fn only_a_not_found_is_an_absence() {
    let status = |code| {
        Box::new(kube::core::Status {
            code,
            ..Default::default()
        })
    };
    assert!(is_not_found(&watcher::Error::InitialListFailed(
        kube::Error::Api(status(404))
    )));
    assert!(!is_not_found(&watcher::Error::InitialListFailed(
        kube::Error::Api(status(403))
    )));
    assert!(is_not_found(&watcher::Error::WatchError(status(404))));
    assert!(!is_not_found(&watcher::Error::NoResourceVersion));
}

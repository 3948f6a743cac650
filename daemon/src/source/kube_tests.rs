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
            Api::<Service>::all(client),
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

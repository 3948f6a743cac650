use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::watch;

use super::*;
use crate::mock_api::{scripted, Call};
use crate::snapshot::{Object, ObjectKey, Selection};
use crate::status::writer::tests::{condition_call, config, held, list, recorded, store, LIST};
use crate::status::writer::WriterHandle;

const NS: &str = "edgelb-system";

fn web(rv: &str) -> Object {
    Object::Service(recorded("web", rv, Some("192.0.2.0")))
}

fn ips_of(a: &Assignments, name: &str) -> Vec<IpAddr> {
    a.ips(&ObjectKey::new("default", name)).to_vec()
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

/// The leader's loop shows snapshots from its writer's allocation of record; when the
/// writer task ends, the watch keeps the last allocation it published (the sender is
/// gone, the value stays), and the loop must take over with its own allocator: it goes on
/// showing every new snapshot, a Service added after the writer ended included.
#[tokio::test]
async fn the_leaders_loop_shows_new_snapshots_after_its_writer_task_ended() {
    // A real writer (its API scripted): it reads the record, finds nothing to write but
    // the pool's condition, and publishes its allocation while the fence is open.
    let (client, server) = scripted(vec![
        Call::new(
            "GET",
            LIST,
            200,
            list(vec![recorded("web", "5", Some("192.0.2.0"))]),
        ),
        condition_call(),
    ]);
    let (_fence_tx, fence) = watch::channel(held(1, 1));
    let w = WriterHandle::spawn(client, config(), fence);
    let mut rx = w.allocated();
    let mut store = store(vec![recorded("web", "5", Some("192.0.2.0"))]);
    let first = store.snapshot(&Selection::default());

    let mut shown = Shown::default();
    // Before the writer publishes, the loop shows from its own allocator.
    let own = shown
        .snapshot(&first, rx.borrow().is_some())
        .expect("shown");
    assert_eq!(ips_of(&own, "web"), [ip("192.0.2.0")]);
    w.submit(first.clone(), vec![]);
    let rec = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            rx.changed().await.expect("writer running");
            if let Some(rec) = rx.borrow_and_update().clone() {
                break rec;
            }
        }
    })
    .await
    .expect("the writer publishes its allocation");
    assert!(rec.snap.same_as(&first));
    let a = shown
        .published(Some(&first), Published::Now(Some(rec)))
        .expect("shown from the record");
    assert_eq!(ips_of(&a, "web"), [ip("192.0.2.0")]);
    // While the writer publishes, a new snapshot waits for its allocation of record.
    store.apply(web("6"), NS);
    let second = store.snapshot(&Selection::default());
    assert!(shown.snapshot(&second, rx.borrow().is_some()).is_none());

    // The writer task ends (stopped here; a panic ends it the same way).
    w.stop().await;
    server.await.expect("every call came");
    let ended = tokio::time::timeout(Duration::from_secs(5), rx.changed())
        .await
        .expect("the watch tells");
    assert!(ended.is_err(), "the sender is gone");
    assert!(
        rx.borrow().is_some(),
        "the last published allocation stays in the watch"
    );
    // The snapshot the loop was waiting for is shown, from its own allocator.
    let a = shown
        .published(Some(&second), Published::Ended)
        .expect("shown by the loop's own allocator");
    assert_eq!(ips_of(&a, "web"), [ip("192.0.2.0")]);
    assert!(!shown.writer_runs());
    // New snapshots go on being shown, though the watch still holds an allocation: a
    // Service recorded after the writer ended, then one gone.
    store.apply(Object::Service(recorded("api", "7", Some("192.0.2.1"))), NS);
    let third = store.snapshot(&Selection::default());
    let a = shown
        .snapshot(&third, rx.borrow().is_some())
        .expect("a new snapshot is shown");
    assert_eq!(ips_of(&a, "api"), [ip("192.0.2.1")]);
    assert_eq!(ips_of(&a, "web"), [ip("192.0.2.0")]);
    store.delete("Service", &ObjectKey::new("default", "web"));
    let fourth = store.snapshot(&Selection::default());
    let a = shown
        .snapshot(&fourth, rx.borrow().is_some())
        .expect("shown");
    assert!(ips_of(&a, "web").is_empty());
    assert_eq!(ips_of(&a, "api"), [ip("192.0.2.1")]);
}

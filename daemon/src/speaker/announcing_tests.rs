//! Announcing with its gossip key in a Secret: the gossip starts once a snapshot holds the
//! Secret, follows a replaced key, and refuses a speaker keyed from another Secret. Real
//! gossip on loopback; no L2 or BGP work (the snapshots hold no Service).

use std::time::{Duration, Instant};

use super::*;
use crate::membership::{Health, Keyring};
use crate::snapshot::{Redacted, Selection};

const SECRET: &str = "edgelb-memberlist";

fn snapshot_with_key(key: &str) -> Snapshot {
    let yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {SECRET}, namespace: edgelb-system}}\n\
         stringData: {{key: {key}}}\n"
    );
    let loaded = crate::source::file::parse(&yaml);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let sel = Selection::default();
    crate::source::file::store_of(&loaded, &sel.namespace).snapshot(&sel)
}

fn config(peers: Vec<SocketAddr>, key: KeySource) -> AnnounceConfig {
    AnnounceConfig {
        gossip: Some(GossipConfig {
            addr: "127.0.0.1:0".parse().expect("literal"),
            peers,
            key,
        }),
        ..Default::default()
    }
}

fn live_others(a: &Announcing) -> Vec<String> {
    let mut v: Vec<String> = a
        .view_parts()
        .members
        .into_iter()
        .filter(|m| !m.is_self && m.health != Health::Down)
        .map(|m| m.id.node)
        .collect();
    v.sort();
    v
}

fn membership(a: &Announcing) -> &crate::membership::MembershipHandle {
    a.gossip.as_ref().and_then(|g| g.handle()).expect("gossip")
}

fn gossip_addr(a: &Announcing) -> SocketAddr {
    a.gossip
        .as_ref()
        .and_then(|g| g.handle())
        .expect("the gossip runs")
        .local_id()
        .addr
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_keyed_from_a_secret_starts_with_it_and_follows_a_replaced_key() {
    let (k1, k2) = (
        "first-key-0123456789abcdef0123456789",
        "second-key-fedcba9876543210fedcba987",
    );
    let none = Assignments::default();
    let secret = || KeySource::Secret(SECRET.into());
    let mut a = Announcing::start("node-a", &config(vec![], secret()))
        .await
        .expect("starts");
    // No Secret yet: no gossip, no L2.
    a.step(&Snapshot::default(), &none).await;
    assert!(
        a.gossip.as_ref().and_then(|g| g.handle()).is_none(),
        "gossip started without its key"
    );
    assert!(!a.guard.may_own());
    a.step(&snapshot_with_key(k1), &none).await;
    let seed = gossip_addr(&a);
    let mut b = Announcing::start("node-b", &config(vec![seed], secret()))
        .await
        .expect("starts");
    b.step(&snapshot_with_key(k1), &none).await;
    // Keyed from another Secret's value: refused.
    let mut c = Announcing::start("node-c", &config(vec![seed], secret()))
        .await
        .expect("starts");
    c.step(
        &snapshot_with_key("other-key-0123456789abcdef01234567"),
        &none,
    )
    .await;
    // A key file with the same text as the Secret's: admitted (same key id and bytes).
    let file = KeySource::Bytes(Redacted(format!("{k1}\n").into_bytes()));
    let d = Announcing::start("node-d", &config(vec![seed], file))
        .await
        .expect("starts");
    let joined = vec!["node-b".to_string(), "node-d".into()];
    let b_sees = vec!["node-a".to_string(), "node-d".into()];
    wait_for("a to see b and d, b to see a and d", || {
        live_others(&a) == joined && live_others(&b) == b_sees
    })
    .await;
    wait_for("c's datagrams to be refused", || {
        a.gossip
            .as_ref()
            .and_then(|g| g.handle())
            .is_some_and(|m| m.stats().rejected_auth > 0)
    })
    .await;
    assert!(live_others(&c).is_empty());
    assert!(!live_others(&a).contains(&"node-c".to_string()));

    // c stops knocking; then the Secret's key is replaced and a and b see it. Both keep
    // sending with k1 for now, so d (on a key file, never rotated) stays in.
    drop(c);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = membership(&a).stats();
    a.step(&snapshot_with_key(k2), &none).await;
    b.step(&snapshot_with_key(k2), &none).await;
    let applied = a
        .gossip
        .as_ref()
        .and_then(|g| g.keys_applied())
        .cloned()
        .expect("keys applied");
    let k2_ring = Keyring::from_plain_key(k2.as_bytes()).expect("key");
    assert!(
        applied.accepts(k2_ring.current()),
        "the new key is accepted at once"
    );
    assert_ne!(applied.current(), k2_ring.current(), "k1 is still sent");
    tokio::time::sleep(Duration::from_millis(800)).await;
    a.tick().await;
    assert_eq!(live_others(&a), joined, "d (still on k1) stays in");
    let after = membership(&a).stats();
    assert_eq!(
        after.rejected_auth, before.rejected_auth,
        "a datagram of b or d was refused during the change"
    );
    drop(d);
}

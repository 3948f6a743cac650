use super::*;
use crate::mock_api::{scripted, status_error, Call};
use serde_json::json;

const DUR: Duration = Duration::from_secs(15);

fn ts(s: i64) -> Timestamp {
    Timestamp::from_second(s).expect("ts")
}

fn lease(holder: &str, renewed: i64) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some("edgelb".into()),
            resource_version: Some("7".into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(ts(renewed))),
            acquire_time: Some(MicroTime(ts(renewed - 100))),
            lease_transitions: Some(2),
            ..Default::default()
        }),
    }
}

#[test]
fn decisions() {
    let now = ts(1_000);
    assert_eq!(decide(None, "a", now, DUR), Decision::Create);
    assert_eq!(
        decide(Some(&lease("a", 990)), "a", now, DUR),
        Decision::Renew
    );
    assert_eq!(
        decide(Some(&lease("b", 990)), "a", now, DUR),
        Decision::Follow { holder: "b".into() }
    );
    assert_eq!(
        decide(Some(&lease("b", 980)), "a", now, DUR),
        Decision::TakeOver,
        "15 s passed"
    );
    assert_eq!(
        decide(Some(&lease("", 999)), "a", now, DUR),
        Decision::TakeOver
    );
}

const URL: &str = "/apis/coordination.k8s.io/v1/namespaces/edgelb-system/leases";

#[tokio::test]
async fn missing_lease_is_created_and_we_lead() {
    let (client, server) = scripted(vec![
        Call::new(
            "GET",
            format!("{URL}/edgelb"),
            404,
            status_error(404, "NotFound"),
        ),
        Call::new("POST", format!("{URL}?"), 201, json!({})).check_body(|b| {
            assert_eq!(b["metadata"]["name"], "edgelb");
            assert_eq!(b["spec"]["holderIdentity"], "node-a");
            assert_eq!(b["spec"]["leaseDurationSeconds"], 15);
            assert_eq!(b["spec"]["leaseTransitions"], 0);
            assert_eq!(b["spec"]["renewTime"], "1970-01-01T00:16:40.000000Z");
        }),
    ]);
    let mut l = Leadership::new(client, "edgelb-system", "edgelb", "node-a", DUR);
    assert!(l.tick(ts(1_000)).await);
    assert!(l.is_leader());
    assert_eq!(l.holder(), Some("node-a"), "the leader names itself");
    server.await.expect("every call came");
}

#[tokio::test]
async fn a_fresh_lease_of_another_node_is_followed_without_writing() {
    let (client, server) = scripted(vec![Call::new(
        "GET",
        format!("{URL}/edgelb"),
        200,
        serde_json::to_value(lease("node-b", 995)).expect("json"),
    )]);
    let mut l = Leadership::new(client, "edgelb-system", "edgelb", "node-a", DUR);
    assert_eq!(l.holder(), None, "unknown before the first round");
    assert!(!l.tick(ts(1_000)).await);
    assert_eq!(l.holder(), Some("node-b"), "a follower names the holder");
    server.await.expect("every call came");
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_with_its_resource_version_and_a_conflict_loses() {
    let (client, server) = scripted(vec![
        Call::new(
            "GET",
            format!("{URL}/edgelb"),
            200,
            serde_json::to_value(lease("node-b", 900)).expect("json"),
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
            assert_eq!(b["spec"]["acquireTime"], "1970-01-01T00:16:40.000000Z");
        }),
    ]);
    let mut l = Leadership::new(client, "edgelb-system", "edgelb", "node-a", DUR);
    assert!(!l.tick(ts(1_000)).await, "another speaker won the race");
    assert_eq!(
        l.holder(),
        None,
        "the winner is not known until the next read"
    );
    server.await.expect("every call came");
}

#[tokio::test]
async fn renewing_keeps_acquire_time_and_an_api_error_means_not_leading() {
    let (client, server) = scripted(vec![
        Call::new(
            "GET",
            format!("{URL}/edgelb"),
            200,
            serde_json::to_value(lease("node-a", 995)).expect("json"),
        ),
        Call::new("PUT", format!("{URL}/edgelb?"), 200, json!({})).check_body(|b| {
            assert_eq!(b["spec"]["acquireTime"], "1970-01-01T00:14:55.000000Z");
            assert_eq!(b["spec"]["renewTime"], "1970-01-01T00:16:40.000000Z");
            assert_eq!(b["spec"]["leaseTransitions"], 2);
        }),
        Call::new(
            "GET",
            format!("{URL}/edgelb"),
            500,
            status_error(500, "InternalError"),
        ),
    ]);
    let mut l = Leadership::new(client, "edgelb-system", "edgelb", "node-a", DUR);
    assert!(l.tick(ts(1_000)).await);
    assert_eq!(l.holder(), Some("node-a"));
    assert!(!l.tick(ts(1_005)).await);
    assert!(!l.is_leader());
    assert_eq!(l.holder(), None, "unknown when the API cannot be read");
    server.await.expect("every call came");
}

use super::*;
use crate::actuate::policy_route::ApplyReport;
use crate::mock_api::{scripted, status_error, Call};
use crate::plan::policy_route::{NodeCondition, Reason};
use crate::snapshot::{Object, Selection, Store};
use k8s_openapi::jiff::Timestamp;

fn at(s: i64) -> Time {
    Time(Timestamp::from_second(s).expect("ts"))
}

/// `PolicyRoute`s `ens` (generation 3) and `old`, each with the given status YAML.
fn snap(ens_status: &str, old_status: &str) -> Snapshot {
    let mut store = Store::default();
    for (name, status) in [("ens", ens_status), ("old", old_status)] {
        let pr: PolicyRoute = serde_norway::from_str(&format!(
            "apiVersion: edgelb.io/v1alpha1\nkind: PolicyRoute\n\
             metadata: {{name: {name}, generation: 3}}\nspec: {{table: 4}}\n{status}"
        ))
        .expect("test YAML");
        store.apply(Object::PolicyRoute(pr), "edgelb-system");
    }
    store.snapshot(&Selection::default())
}

fn cond(node: &str, name: &str, reason: Reason, message: &str) -> NodeCondition {
    NodeCondition {
        policy_route: name.into(),
        node: node.into(),
        reason,
        message: message.into(),
        table: Some(4),
        priority: 1000,
    }
}

/// A report after one pass in which only `ens` selects `node`.
fn report(node: &str, reason: Reason, message: &str) -> TaskReport {
    TaskReport {
        passes: 1,
        conditions: vec![cond(node, "ens", reason, message)],
        ..TaskReport::default()
    }
}

/// What the API server answers a successful apply with (the object; its status is not read).
fn reply(name: &str) -> Value {
    json!({"apiVersion": "edgelb.io/v1alpha1", "kind": "PolicyRoute",
           "metadata": {"name": name}, "spec": {"table": 4}})
}

fn url(name: &str, node: &str) -> String {
    format!(
        "/apis/edgelb.io/v1alpha1/policyroutes/{name}/status?&force=true&fieldManager=edgelb-speaker-{node}"
    )
}

const INSTALLED_MSG: &str = "node edge-1: 1 rule(s) and 2 route(s) in table 4 via 10.0.0.1 on eth1";

#[tokio::test]
async fn a_node_applies_only_its_own_condition_with_its_own_field_manager_once() {
    let s = snap("", "");
    let (client, server) = scripted(vec![Call::new(
        "PATCH",
        url("ens", "edge-1"),
        200,
        reply("ens"),
    )
    .with_body(json!({
        "apiVersion": "edgelb.io/v1alpha1", "kind": "PolicyRoute",
        "status": {"conditions": [{
            "type": "Installed.edge-1", "status": "True", "reason": "Installed",
            "message": INSTALLED_MSG, "observedGeneration": 3,
            "lastTransitionTime": "2023-11-14T22:13:20Z"}]}
    }))]);
    let mut w = PolicyRouteStatusWriter::new(client, "edge-1", Duration::from_secs(2));
    let r = report("edge-1", Reason::Installed, INSTALLED_MSG);
    let out = w.write(&s, &r, at(1_700_000_000)).await;
    assert_eq!(
        out,
        Written {
            conditions: 1,
            ..Default::default()
        }
    );
    // The watch has not delivered the object yet, and the report only counted a pass.
    let mut later = r.clone();
    later.passes = 7;
    assert_eq!(
        w.write(&s, &later, at(1_700_000_100)).await,
        Written::default()
    );
    server.await.expect("every call came");
}

#[tokio::test]
async fn two_speakers_write_their_own_entries_side_by_side() {
    // edge-2's entry is already there; edge-1 writes only its own, under its own manager.
    let s = snap(
        "status: {conditions: [{type: Installed.edge-2, status: 'False', reason: UnknownInterface, \
         message: 'node edge-2: no interface named \"eth1\"; nothing installed on this node', \
         observedGeneration: 3, lastTransitionTime: '2023-11-14T00:00:00Z'}]}",
        "",
    );
    let (client, server) = scripted(vec![Call::new(
        "PATCH",
        url("ens", "edge-1"),
        200,
        reply("ens"),
    )
    .check_body(|b| {
        let list = b["status"]["conditions"].as_array().expect("list");
        assert_eq!(list.len(), 1, "only our own entry: {b}");
        assert_eq!(list[0]["type"], "Installed.edge-1");
    })]);
    let mut w = PolicyRouteStatusWriter::new(client, "edge-1", Duration::from_secs(2));
    let out = w
        .write(
            &s,
            &report("edge-1", Reason::Installed, INSTALLED_MSG),
            at(1_700_000_000),
        )
        .await;
    assert_eq!(out.conditions, 1);
    server.await.expect("every call came");

    // edge-2's speaker finds its entry as it wants it: no call at all.
    let (client, server) = scripted(vec![]);
    let mut w2 = PolicyRouteStatusWriter::new(client, "edge-2", Duration::from_secs(2));
    let r2 = report(
        "edge-2",
        Reason::UnknownInterface,
        "node edge-2: no interface named \"eth1\"; nothing installed on this node",
    );
    assert_eq!(
        w2.write(&s, &r2, at(1_700_000_000)).await,
        Written::default()
    );
    server.await.expect("no call expected");
}

#[test]
fn a_change_of_reason_keeps_the_transition_time_and_a_change_of_status_moves_it() {
    let s = snap(
        "status: {conditions: [{type: Installed.edge-1, status: 'False', reason: NoGateway, \
         message: old, observedGeneration: 3, lastTransitionTime: '2023-11-14T00:00:00Z'}]}",
        "",
    );
    let now = at(1_700_000_000);
    let ups = updates(
        &s,
        "edge-1",
        &report("edge-1", Reason::TableInUse, "m"),
        &now,
    );
    assert_eq!(ups.len(), 1);
    let c = ups[0].condition.as_ref().expect("condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "TableInUse")
    );
    assert_eq!(c.last_transition_time, at(1_699_920_000), "still False");

    let ups = updates(
        &s,
        "edge-1",
        &report("edge-1", Reason::Installed, "ok"),
        &now,
    );
    let c = ups[0].condition.as_ref().expect("condition");
    assert_eq!(c.status, "True");
    assert_eq!(c.last_transition_time, now, "False -> True is a transition");

    // The kernel refused the object's table: False, KernelRefused, with the kernel's words.
    let mut r = report("edge-1", Reason::Installed, "ok");
    r.last = ApplyReport {
        refused_tables: [(4, "netlink replace route x: Invalid argument".into())].into(),
        ..ApplyReport::default()
    };
    let ups = updates(&s, "edge-1", &r, &now);
    let c = ups[0].condition.as_ref().expect("condition");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "KernelRefused")
    );
    assert_eq!(
        c.message,
        "node edge-1: the kernel refused: netlink replace route x: Invalid argument"
    );
}

#[test]
fn nothing_is_written_before_the_first_pass() {
    let s = snap(
        "status: {conditions: [{type: Installed.edge-1, status: 'True', reason: Installed, \
         message: x, lastTransitionTime: '2023-11-14T00:00:00Z'}]}",
        "",
    );
    assert!(updates(&s, "edge-1", &TaskReport::default(), &at(1_700_000_000)).is_empty());
}

#[tokio::test]
async fn an_object_that_no_longer_selects_the_node_loses_only_our_entry() {
    // `old` carries our entry (and edge-2's) but the report has no condition for it.
    let s = snap(
        "",
        "status: {conditions: [\
         {type: Installed.edge-1, status: 'True', reason: Installed, message: x, lastTransitionTime: '2023-11-14T00:00:00Z'}, \
         {type: Installed.edge-2, status: 'True', reason: Installed, message: y, lastTransitionTime: '2023-11-14T00:00:00Z'}]}",
    );
    let (client, server) = scripted(vec![
        Call::new("PATCH", url("ens", "edge-1"), 200, reply("ens")),
        Call::new(
            "PATCH",
            url("old", "edge-1"),
            500,
            status_error(500, "InternalError"),
        ),
        Call::new("PATCH", url("old", "edge-1"), 200, reply("old")).with_body(json!({
            "apiVersion": "edgelb.io/v1alpha1", "kind": "PolicyRoute",
            "status": {"conditions": []}
        })),
    ]);
    let mut w = PolicyRouteStatusWriter::new(client, "edge-1", Duration::from_secs(2));
    let r = report("edge-1", Reason::Installed, INSTALLED_MSG);
    let first = w.write(&s, &r, at(1_700_000_000)).await;
    assert_eq!((first.conditions, first.failed), (1, 1));
    // The failed removal is retried; `ens` is not written again.
    let second = w.write(&s, &r, at(1_700_000_010)).await;
    assert_eq!((second.conditions, second.failed), (1, 0));
    server.await.expect("every call came");
}

//! The running speaker owns the ENS policy routes of its node (issue 6): a `PolicyRoute` in
//! the standalone file is installed (protocol 235) and removed again when the object goes.
mod speaker_support;

use std::time::Duration;

use edgelb_tests::lab::netns::veth;
use edgelb_tests::lab::{self, wait_until, Netns};
use speaker_support::{cluster_yaml, write_atomic, Dir, SpeakerProc};

const POLICY_ROUTE: &str = "---\napiVersion: edgelb.io/v1alpha1\nkind: PolicyRoute\n\
    metadata: {name: ens}\nspec: {interface: eth1, table: 4, gateways: [\"198.51.100.1\"]}\n";

/// Rules marked with edgelb's protocol (iproute2 here does not filter rules by protocol)
/// and every route of table 4 (only edgelb puts routes there in this test).
fn ours(ns: &Netns) -> anyhow::Result<(String, String)> {
    let rules: String = ns
        .ip(&["rule", "show"])?
        .lines()
        .filter(|l| l.contains("proto 235"))
        .map(|l| format!("{l}\n"))
        .collect();
    let routes = ns.ip(&["route", "show", "table", "4"])?;
    Ok((rules, routes))
}

#[test]
fn the_speaker_installs_a_policy_route_from_the_file_and_removes_it_with_the_object(
) -> anyhow::Result<()> {
    if !lab::enabled("speaker_policy_route") {
        return Ok(());
    }
    let dir = Dir::new("speaker-pr")?;
    let node = Netns::new("prn")?;
    let public = Netns::new("prp")?;
    let private = Netns::new("prv")?;
    veth(&node, "eth0", &public, "eth0")?;
    veth(&node, "eth1", &private, "eth0")?;
    node.addr("eth0", "203.0.113.3/24")?;
    node.addr("eth1", "198.51.100.3/24")?;
    node.ip(&["route", "add", "default", "via", "203.0.113.1"])?;
    // A foreign rule that must survive everything.
    node.ip(&[
        "rule",
        "add",
        "from",
        "192.0.2.9",
        "lookup",
        "100",
        "priority",
        "900",
    ])?;

    let nodes = [("edge-1", "198.51.100.3")];
    let file = dir.path("cluster.yaml");
    write_atomic(
        &file,
        &cluster_yaml(&nodes, "192.0.2.240/28", &[], POLICY_ROUTE),
    )?;
    let socket = dir.path("speaker.sock").to_string_lossy().into_owned();
    let mut speaker = SpeakerProc::start(
        &node,
        "edge-1",
        &file,
        dir.path("speaker.log"),
        &["--socket", &socket],
    )?;

    let t0 = std::time::Instant::now();
    let (rules, routes) = wait_until(
        "the speaker to install the policy route",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let (rules, routes) = ours(&node)?;
            Ok((rules.contains("from 198.51.100.3 lookup 4")
                && routes.contains("default via 198.51.100.1 dev eth1"))
            .then_some((rules, routes)))
        },
    )
    .map_err(|e| e.context(speaker.logs()))?;
    eprintln!("installed {:?} after start:\n{rules}{routes}", t0.elapsed());

    // The object goes: the speaker removes what it installed, and only that.
    write_atomic(&file, &cluster_yaml(&nodes, "192.0.2.240/28", &[], ""))?;
    wait_until(
        "the speaker to remove the policy route",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let (rules, routes) = ours(&node)?;
            Ok((rules.trim().is_empty() && routes.trim().is_empty()).then_some(()))
        },
    )
    .map_err(|e| e.context(speaker.logs()))?;
    let all = node.ip(&["rule", "show"])?;
    assert!(
        all.contains("from 192.0.2.9 lookup 100"),
        "foreign rule removed:\n{all}"
    );
    speaker.terminate(Duration::from_secs(5))?;
    Ok(())
}

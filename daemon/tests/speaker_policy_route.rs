//! The running speaker owns the ENS policy routes of its node (issue 6): a `PolicyRoute` in
//! the standalone file is installed (protocol 235) and removed again when the object goes.
//! Its local API (`GET /v1/policyRoutes`, what `edgelbctl routes` prints) lists exactly the
//! rules and routes netlink shows, and names the reason of an object it refused.
mod speaker_support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use edgelb_daemon::local_api::view::PolicyRouteView;
use edgelb_tests::lab::netns::veth;
use edgelb_tests::lab::{self, wait_until, Netns};
use speaker_support::{cluster_yaml, write_atomic, Dir, SpeakerProc};

const POLICY_ROUTE: &str = "---\napiVersion: edgelb.io/v1alpha1\nkind: PolicyRoute\n\
    metadata: {name: ens}\nspec: {interface: eth1, table: 4, gateways: [\"198.51.100.1\"]}\n\
    ---\napiVersion: edgelb.io/v1alpha1\nkind: PolicyRoute\n\
    metadata: {name: reserved}\nspec: {interface: eth1, table: 255}\n";

/// A rule as (priority, from, table) and a route as (table, dst, gateway, dev).
type Rules = BTreeSet<(u32, String, u32)>;
type Routes = BTreeSet<(u32, String, Option<String>, String)>;

/// `GET /v1/policyRoutes` on the speaker's socket.
fn api_routes(socket: &Path) -> anyhow::Result<Vec<PolicyRouteView>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = rt.block_on(edgelbctl::socket::get(
        socket,
        "/v1/policyRoutes",
        Duration::from_secs(2),
    ))?;
    serde_json::from_str(&body).context("policyRoutes JSON")
}

/// The view's rules and routes, as sets comparable with netlink's.
fn view_sets(view: &[PolicyRouteView]) -> (Rules, Routes) {
    let rules = view
        .iter()
        .flat_map(|o| &o.rules)
        .map(|r| (r.priority, r.from.clone(), r.table))
        .collect();
    let routes = view
        .iter()
        .flat_map(|o| &o.routes)
        .map(|r| (r.table, r.dst.clone(), r.gateway.clone(), r.dev.clone()))
        .collect();
    (rules, routes)
}

/// Netlink's rules with protocol 235 and routes of table 4 (`ip -j`), in the view's
/// notation (host prefixes with their length, `0.0.0.0/0` for `default`).
fn netlink_sets(ns: &Netns) -> anyhow::Result<(Rules, Routes)> {
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().map(str::to_string);
    let rules: Vec<serde_json::Value> = serde_json::from_str(&ns.ip(&["-j", "rule", "show"])?)?;
    let mut out_rules = Rules::new();
    for r in rules.iter().filter(|r| r["protocol"] == "235") {
        let src = text(r, "src").context("rule without src")?;
        let len = r["srclen"].as_u64().unwrap_or(32);
        let table = text(r, "table").context("rule without table")?.parse()?;
        let priority = r["priority"].as_u64().context("rule without priority")?;
        out_rules.insert((u32::try_from(priority)?, format!("{src}/{len}"), table));
    }
    let routes: Vec<serde_json::Value> =
        serde_json::from_str(&ns.ip(&["-j", "route", "show", "table", "4"])?)?;
    let mut out_routes = Routes::new();
    for r in &routes {
        let dst = match text(r, "dst").context("route without dst")?.as_str() {
            "default" => "0.0.0.0/0".to_string(),
            d => d.to_string(),
        };
        let dev = text(r, "dev").context("route without dev")?;
        out_routes.insert((4, dst, text(r, "gateway"), dev));
    }
    Ok((out_rules, out_routes))
}

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

    // The local API shows what netlink shows, and why the other object installs nothing.
    let socket_path = Path::new(&socket);
    let view = wait_until(
        "the local API to list the installed policy route",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let v = api_routes(socket_path)?;
            Ok((v.len() == 2 && v.iter().any(|o| o.installed())).then_some(v))
        },
    )
    .map_err(|e| e.context(speaker.logs()))?;
    let (view_rules, view_routes) = view_sets(&view);
    let (nl_rules, nl_routes) = netlink_sets(&node)?;
    eprintln!("view: {view_rules:?} {view_routes:?}\nnetlink: {nl_rules:?} {nl_routes:?}");
    assert_eq!(view_rules, nl_rules, "rules: view vs netlink");
    assert_eq!(view_routes, nl_routes, "routes: view vs netlink");
    assert_eq!(view_rules.len(), 1);
    assert_eq!(view_routes.len(), 2);
    let ens = &view[0];
    assert_eq!(
        (
            ens.name.as_str(),
            ens.table,
            ens.priority,
            ens.state.as_str()
        ),
        ("ens", Some(4), 1000, "Installed")
    );
    let reserved = &view[1];
    assert_eq!(
        (reserved.name.as_str(), reserved.state.as_str()),
        ("reserved", "ReservedTable")
    );
    assert!(reserved.rules.is_empty() && reserved.routes.is_empty());
    assert!(
        reserved.message.contains("edge-1") && reserved.message.contains("255"),
        "{}",
        reserved.message
    );

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
    wait_until(
        "the local API to list no policy route",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || Ok(api_routes(socket_path)?.is_empty().then_some(())),
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

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgelb_bgp::{PeerConfig, PeerStatus, RouteAttrs, RouteTable, Secret, Speaker, SpeakerConfig};

use super::build::*;
use super::server::route;
use super::view::*;
use crate::ipam::{allocate, Assignments};
use crate::snapshot::{Selection, Snapshot};
use crate::source::file::{parse, store_of};

const PASSWORD: &str = "n0t-in-any-view-7f3a";

fn lab_yaml() -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  type: LoadBalancer
  loadBalancerClass: edgelb.io/speaker
  externalTrafficPolicy: Local
  ports: [{{port: 80, protocol: TCP}}]
---
apiVersion: edgelb.io/v1alpha1
kind: IPAddressPool
metadata: {{name: lan, namespace: edgelb-system}}
spec:
  addresses: ["192.0.2.0/30", "192.0.2.8-192.0.2.9"]
---
apiVersion: v1
kind: Node
metadata: {{name: n1}}
---
apiVersion: v1
kind: Node
metadata: {{name: n2}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{{addresses: ["10.1.0.5"], nodeName: n1, conditions: {{ready: true}}}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: bgp, namespace: edgelb-system}}
stringData: {{password: {PASSWORD}}}
---
apiVersion: edgelb.io/v1alpha1
kind: BGPPeer
metadata: {{name: router, namespace: edgelb-system}}
spec:
  myASN: 64512
  peerASN: 64500
  peerAddress: 127.0.0.1
  passwordSecret: {{name: bgp}}
---
apiVersion: edgelb.io/v1alpha1
kind: BGPAdvertisement
metadata: {{name: all, namespace: edgelb-system}}
spec: {{}}
"#
    )
}

fn lab() -> (Snapshot, Assignments) {
    let loaded = parse(&lab_yaml());
    assert_eq!(loaded.errors, vec![]);
    let snap = store_of(&loaded, "edgelb-system").snapshot(&Selection::default());
    let a = allocate(&snap, &Assignments::default());
    (snap, a)
}

fn view_of(snap: &Snapshot, a: &Assignments, peers: Vec<PeerView>) -> LocalView {
    LocalView {
        api: VIEW_API.into(),
        node: "n1".into(),
        version: "0.1.0".into(),
        generated_at: 1_000,
        ready: true,
        peers,
        allocations: allocations_view(a).into(),
        pools: pools_view(snap, a).into(),
        services: services_view(snap, a, &Default::default(), &[]).into(),
        ..LocalView::default()
    }
}

#[test]
fn pools_count_size_used_and_failures() {
    let (snap, a) = lab();
    let pools = pools_view(&snap, &a);
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].name, "lan");
    assert_eq!(pools[0].size, 6, "a /30 (4) and a two-address range");
    assert_eq!(pools[0].used, 1);
    assert_eq!(pools[0].failures, 0);
    let allocs = allocations_view(&a);
    assert_eq!(allocs[0].service, "default/web");
    assert_eq!(allocs[0].pool.as_deref(), Some("lan"));
    assert_eq!(allocs[0].ips.len(), 1);
}

#[test]
fn exhausted_pools_are_each_named_in_failures() {
    let e = crate::ipam::AllocationError::PoolsExhausted {
        pools: "\"a\", \"b\"".into(),
    };
    assert_eq!(failed_pools(&e), vec!["a", "b"]);
    assert!(failed_pools(&crate::ipam::AllocationError::NoEligiblePool).is_empty());
}

/// A node of the lab as the election sees it: Ready, with or without a live speaker.
fn candidate(node: &str, live: bool) -> crate::election::Candidate {
    crate::election::Candidate {
        node: node.into(),
        labels: BTreeMap::new(),
        ready: true,
        network_unavailable: false,
        excluded_label: false,
        node_pool: None,
        live,
        interfaces: vec![crate::election::InterfaceFacts {
            name: "eth0".into(),
            up: true,
            subnets: vec!["192.0.2.0/24".parse().expect("net")],
        }],
    }
}

fn excluded(services: &[ServiceView]) -> BTreeMap<String, Option<String>> {
    assert_eq!(services.len(), 1);
    services[0]
        .candidates
        .iter()
        .map(|c| (c.node.clone(), c.excluded.clone()))
        .collect()
}

/// `explain` shows the election's own reasons: with `Local`, the node without an endpoint
/// is `noLocalEndpoints`; a node whose speaker is gone is `notLive` (the earlier check);
/// a Service the election never saw says why for every node.
#[test]
fn explain_names_the_elections_reason_for_each_excluded_node() {
    use crate::status::announced::service_elections;
    let (snap, a) = lab();
    let both = service_elections(
        &snap,
        &a,
        vec![candidate("n1", true), candidate("n2", true)],
    );
    let services = services_view(&snap, &a, &both, &[]);
    assert_eq!(services[0].traffic_policy, "Local");
    let by_node = excluded(&services);
    assert_eq!(by_node["n1"], None);
    assert_eq!(by_node["n2"].as_deref(), Some("noLocalEndpoints"));

    let n2_gone = service_elections(
        &snap,
        &a,
        vec![candidate("n1", true), candidate("n2", false)],
    );
    let by_node = excluded(&services_view(&snap, &a, &n2_gone, &[]));
    assert_eq!(by_node["n1"], None);
    assert_eq!(by_node["n2"].as_deref(), Some("notLive"));

    let n1_gone = service_elections(
        &snap,
        &a,
        vec![candidate("n1", false), candidate("n2", true)],
    );
    let by_node = excluded(&services_view(&snap, &a, &n1_gone, &[]));
    assert_eq!(by_node["n1"].as_deref(), Some("notLive"));
    assert_eq!(by_node["n2"].as_deref(), Some("noLocalEndpoints"));

    let by_node = excluded(&services_view(&snap, &a, &BTreeMap::new(), &[]));
    assert_eq!(by_node["n1"].as_deref(), Some("noAdvertisement"));
    assert_eq!(by_node["n2"].as_deref(), Some("noAdvertisement"));
}

/// For an L2 IP `explain` gets the IP's ranking from the same election: every node in
/// the IP's rendezvous order with the election's reason for skipping it, the owner the
/// first without one, and the handoff when this node holds the IP back.
#[test]
fn explain_ranks_the_nodes_of_each_l2_ip_and_shows_the_handoff() {
    use crate::status::announced::service_elections;
    let yaml = lab_yaml()
        .replace("kind: BGPAdvertisement", "kind: L2Advertisement")
        .replace(
            "externalTrafficPolicy: Local",
            "externalTrafficPolicy: Cluster",
        );
    let loaded = parse(&yaml);
    assert_eq!(loaded.errors, vec![]);
    let snap = store_of(&loaded, "edgelb-system").snapshot(&Selection::default());
    let a = allocate(&snap, &Assignments::default());
    for gone in ["n1", "n2"] {
        let live = if gone == "n1" { "n2" } else { "n1" };
        let elections = service_elections(
            &snap,
            &a,
            vec![candidate(gone, false), candidate(live, true)],
        );
        let services = services_view(&snap, &a, &elections, &[]);
        let [ip] = services[0].ips.as_slice() else {
            panic!("one L2 IP: {:?}", services[0].ips);
        };
        assert_eq!(ip.owner.as_deref(), Some(live));
        assert_eq!(ip.ranked.len(), 2);
        for c in &ip.ranked {
            let want = (c.node == gone).then(|| "notLive".to_string());
            assert_eq!(c.excluded, want, "{c:?}");
        }
        assert_eq!(ip.handoff_until_ms, None);
        let held: Vec<(std::net::IpAddr, u64)> =
            vec![(ip.ip.parse().expect("ip"), 1_700_000_000_250)];
        let services = services_view(&snap, &a, &elections, &held);
        assert_eq!(services[0].ips[0].handoff_until_ms, Some(1_700_000_000_250));
    }
    // Both live: the same order, nobody skipped; the owner is ranked first.
    let elections = service_elections(
        &snap,
        &a,
        vec![candidate("n1", true), candidate("n2", true)],
    );
    let ip = &services_view(&snap, &a, &elections, &[])[0].ips[0];
    assert!(ip.ranked.iter().all(|c| c.excluded.is_none()));
    assert_eq!(ip.owner.as_ref(), Some(&ip.ranked[0].node));
}

#[test]
fn peer_view_turns_instants_into_unix_seconds() {
    let now = Instant::now();
    let wall = UNIX_EPOCH + Duration::from_secs(10_000);
    let mut p = PeerStatus::new("198.51.100.1".parse().expect("ip"), "router".into());
    p.state = edgelb_bgp::fsm::State::Established;
    p.established_at = now.checked_sub(Duration::from_secs(300));
    p.last_error = Some(edgelb_bgp::LastError {
        code: Some((6, 4)),
        received: true,
        text: "Cease/Administrative Reset".into(),
        at: now.checked_sub(Duration::from_secs(400)).expect("instant"),
    });
    p.prefixes_sent = 2;
    p.updates_out = 3;
    let v = peer_view(&p, Some("edgelb-system/router"), now, wall);
    assert_eq!(v.state, "Established");
    assert!(v.is_up());
    assert_eq!(v.established_since, Some(9_700));
    assert_eq!(v.last_error_at, Some(9_600));
    assert_eq!(
        v.last_error.as_deref(),
        Some("received NOTIFICATION 6/4: Cease/Administrative Reset")
    );
    assert_eq!(v.name, "edgelb-system/router");
    p.state = edgelb_bgp::fsm::State::Active;
    assert_eq!(peer_view(&p, None, now, wall).established_since, None);
    assert_eq!(peer_view(&p, None, now, wall).name, "router");
}

#[test]
fn bgp_announcements_list_established_peers_whose_table_covers_the_ip() {
    let (_, a) = lab();
    let ip = a
        .outcomes
        .values()
        .next()
        .and_then(|o| o.as_ref().ok())
        .expect("allocated")
        .ips[0];
    let p1: IpAddr = "198.51.100.1".parse().expect("ip");
    let p2: IpAddr = "198.51.100.2".parse().expect("ip");
    let mut table = RouteTable::new();
    table.insert(
        ipnet::IpNet::new(ip, 32).expect("net"),
        Arc::new(RouteAttrs::default()),
    );
    let tables = BTreeMap::from([(p1, Arc::new(table.clone())), (p2, Arc::new(table))]);
    let anns = bgp_announcements("n1", &a, &tables, &BTreeSet::from([p1]));
    assert_eq!(anns.len(), 1);
    assert_eq!(anns[0].mode, Mode::Bgp);
    assert_eq!(anns[0].peers, vec!["198.51.100.1"]);
    assert_eq!(anns[0].prefix, Some(format!("{ip}/32")));
    assert_eq!(anns[0].service, "default/web");
    let mut anns = anns;
    let mut since = SinceTracker::default();
    since.stamp(&mut anns, 50);
    assert_eq!(anns[0].since, Some(50));
    anns[0].since = None;
    since.stamp(&mut anns, 90);
    assert_eq!(anns[0].since, Some(50), "still announced: keeps its start");
    since.stamp(&mut [], 100);
    anns[0].since = None;
    since.stamp(&mut anns, 120);
    assert_eq!(anns[0].since, Some(120), "announced again: a new start");
}

#[test]
fn routes_answer_the_view_its_sections_and_404() {
    let (snap, a) = lab();
    let view = view_of(&snap, &a, vec![]);
    let whole = route("/v1/view", &view);
    assert_eq!(whole.status, http::StatusCode::OK);
    let back: LocalView = serde_json::from_str(&whole.body).expect("json");
    assert_eq!(back, view);
    let pools = route("/v1/pools", &view);
    let pools: Vec<PoolView> = serde_json::from_str(&pools.body).expect("json");
    assert_eq!(pools, *view.pools);
    assert_eq!(
        route("/v1/nothing", &view).status,
        http::StatusCode::NOT_FOUND
    );
    assert_eq!(route("/metrics", &view).status, http::StatusCode::NOT_FOUND);
    assert_eq!(route("/healthz", &view).body, "ok\n");
}

/// What a client reads (`edgelb_view::LocalView`, plain lists) is the speaker's view
/// (deferred sections) byte for byte: read and written back, the JSON does not change.
#[test]
fn the_wire_view_reads_and_writes_back_the_speakers_json_unchanged() {
    let (snap, a) = lab();
    let mut view = view_of(&snap, &a, vec![]);
    let services = view_of(&snap, &a, vec![]).services.to_vec();
    assert!(!services.is_empty() && !view.allocations.is_empty());
    view.services = Section::deferred(move || services.clone());
    view.leader = Some("node-a".into());
    let served = serde_json::to_string(&view).expect("json");
    let read: edgelb_view::LocalView = serde_json::from_str(&served).expect("wire");
    assert_eq!(read.allocations, *view.allocations);
    assert_eq!(read.services, *view.services);
    assert_eq!(serde_json::to_string(&read).expect("json"), served);
    let back: LocalView = serde_json::from_str(&served).expect("speaker's type");
    assert_eq!(back, view);
}

/// The password sits in the snapshot (Secret) and in the running speaker's peer config;
/// neither the view nor any section of it may carry it.
#[tokio::test]
async fn bgp_password_never_appears_in_the_view() {
    let (snap, a) = lab();
    let mut speaker = Speaker::new(SpeakerConfig {
        router_id: "192.0.2.1".parse().expect("id"),
        listen: None,
    })
    .expect("speaker");
    let mut cfg = PeerConfig::new("127.0.0.1".parse().expect("ip"), 64512, 64500);
    cfg.passive = true;
    cfg.password = Some(Secret::new(PASSWORD));
    cfg.description = "edgelb-system/router".into();
    speaker.set_peer(cfg).expect("peer");
    let peers = speaker
        .peers()
        .iter()
        .map(|p| peer_view(p, None, Instant::now(), SystemTime::now()))
        .collect();
    let view = view_of(&snap, &a, peers);
    assert_eq!(view.peers.len(), 1);
    for path in [
        "/v1/view",
        "/v1/peers",
        "/v1/pools",
        "/v1/allocations",
        "/v1/services",
    ] {
        let body = route(path, &view).body;
        assert!(!body.contains(PASSWORD), "{path} leaks the password");
    }
    assert!(!serde_norway::to_string(&view)
        .expect("yaml")
        .contains(PASSWORD));
    speaker.shutdown("test done").await;
}

#[tokio::test]
async fn unix_socket_is_owner_only_and_serves_the_latest_view() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("edgelb-local-api-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let sock = dir.join("sub").join("speaker.sock");
    let listener = super::server::bind(&sock).expect("bind");
    let mode = std::fs::metadata(&sock).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let dmode = std::fs::metadata(sock.parent().expect("dir"))
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dmode, 0o700);
    let (snap, a) = lab();
    let (tx, rx) = tokio::sync::watch::channel(LocalView::default());
    let task = tokio::spawn(super::server::serve(listener, rx));
    let t = Duration::from_secs(5);
    let first = edgelbctl::socket::view(&sock, t).await.expect("view");
    assert_eq!(first, edgelb_view::LocalView::default());
    let view = view_of(&snap, &a, vec![]);
    tx.send(view.clone()).expect("send");
    let read = edgelbctl::socket::view(&sock, t).await.expect("view");
    let want = serde_json::to_value(&view).expect("json");
    assert_eq!(serde_json::to_value(&read).expect("json"), want);
    let err = edgelbctl::socket::get(&sock, "/v1/nope", t)
        .await
        .expect_err("404");
    assert!(err.to_string().contains("404"), "{err}");
    // A second speaker start replaces the stale socket file.
    task.abort();
    let _again = super::server::bind(&sock).expect("rebind over a stale socket");
    // ...but never a regular file.
    let file = dir.join("file");
    std::fs::write(&file, "x").expect("write");
    assert!(matches!(
        super::server::bind(&file),
        Err(super::server::ServeError::NotASocket { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The planner's output for two objects (one installed in table 4, one on a reserved table)
/// becomes one view per object: the installed one with its rule and routes (device names
/// from the task's link list), the other with its reason and nothing else; a table the
/// kernel refused turns `Installed` into `KernelRefused` with the kernel's answer.
#[test]
fn policy_routes_view_groups_the_plan_by_object_and_says_why_not() {
    use crate::actuate::policy_route_task::TaskReport;
    use crate::api::policy_route::PolicyRouteSpec;
    use crate::plan::policy_route::{
        plan, LinkFacts, NamedPolicyRoute, NodeFacts, PolicyRouteInput,
    };
    let spec = |table: u32, priority: Option<u32>| PolicyRouteSpec {
        node_selector: None,
        node_pools: vec![],
        interface: Some("eth1".into()),
        table,
        priority,
        gateways: vec!["10.0.0.1".parse().expect("ip")],
        ip_families: vec![],
    };
    let input = PolicyRouteInput {
        routes: vec![
            NamedPolicyRoute {
                name: "mgmt".into(),
                spec: spec(254, Some(900)),
            },
            NamedPolicyRoute {
                name: "ens".into(),
                spec: spec(4, None),
            },
        ],
        node: NodeFacts {
            name: "edge-1".into(),
            ..Default::default()
        },
        links: vec![LinkFacts {
            name: "eth1".into(),
            index: 3,
            up: true,
            addrs: vec!["10.0.0.3/24".parse().expect("net")],
        }],
        kernel_routes: vec![],
        foreign_rule_tables: BTreeSet::new(),
    };
    let p = plan(&input);
    let mut report = TaskReport {
        passes: 1,
        conditions: p.conditions,
        rules: p.rules,
        routes: p.routes,
        links: [(3, "eth1".to_string())].into(),
        ..TaskReport::default()
    };
    let v = policy_routes_view(&report);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].name, "ens");
    assert_eq!((v[0].table, v[0].priority), (Some(4), 1000));
    assert_eq!(v[0].state, "Installed");
    assert!(v[0].installed());
    assert_eq!(
        v[0].rules,
        vec![PolicyRuleView {
            priority: 1000,
            from: "10.0.0.3/32".into(),
            to: "all".into(),
            table: 4
        }]
    );
    assert_eq!(
        v[0].routes,
        vec![
            PolicyRouteEntryView {
                dst: "0.0.0.0/0".into(),
                gateway: Some("10.0.0.1".into()),
                dev: "eth1".into(),
                table: 4
            },
            PolicyRouteEntryView {
                dst: "10.0.0.0/24".into(),
                gateway: None,
                dev: "eth1".into(),
                table: 4
            },
        ]
    );
    assert_eq!(v[1].name, "mgmt");
    assert_eq!((v[1].table, v[1].priority), (Some(254), 900));
    assert_eq!(v[1].state, "ReservedTable");
    assert!(
        v[1].message.contains("table 254 is reserved"),
        "{}",
        v[1].message
    );
    assert!(v[1].rules.is_empty() && v[1].routes.is_empty());

    report
        .last
        .refused_tables
        .insert(4, "netlink replace route ...: File exists".into());
    let v = policy_routes_view(&report);
    assert_eq!(v[0].state, "KernelRefused");
    assert!(!v[0].installed());
    assert_eq!(v[0].message, "netlink replace route ...: File exists");
    assert_eq!(
        v[1].state, "ReservedTable",
        "a refused table is not another's"
    );
}

/// The publisher runs the election from the speaker's candidates; with the same snapshot
/// and new candidates (a member died) the view follows at once (the cache is keyed by all
/// three inputs).
#[test]
fn the_published_view_carries_the_elections_reasons_and_follows_the_candidates() {
    use super::publish::{Publisher, ViewParts};
    let (snap, a) = lab();
    let (p, rx) = Publisher::new("n1", Arc::new(crate::metrics::Metrics::new()));
    let publish = |live_n2: bool| {
        p.publish(ViewParts {
            last: Some((&snap, &a)),
            candidates: vec![candidate("n1", true), candidate("n2", live_n2)],
            ..ViewParts::default()
        });
        excluded(&rx.borrow().services)
    };
    assert_eq!(publish(true)["n2"].as_deref(), Some("noLocalEndpoints"));
    assert_eq!(publish(false)["n2"].as_deref(), Some("notLive"));
    assert_eq!(publish(false)["n2"].as_deref(), Some("notLive"));
    assert_eq!(publish(true)["n2"].as_deref(), Some("noLocalEndpoints"));
}

/// The indexed lookup of [`bgp_announcements`] finds what a scan of each table finds: the
/// first prefix in table order that covers the IP (prefixes of every length, two families).
mod covering {
    use super::*;
    use crate::ipam::{Allocation, AllocationKey};
    use crate::snapshot::ObjectKey;
    use proptest::prelude::*;

    fn scan(
        a: &Assignments,
        tables: &BTreeMap<IpAddr, Arc<RouteTable>>,
    ) -> Vec<(String, Option<String>, Vec<String>)> {
        let mut out = Vec::new();
        for o in a.outcomes.values() {
            let Ok(al) = o else { continue };
            for ip in &al.ips {
                let mut peers = Vec::new();
                let mut prefix = None;
                for (peer, table) in tables {
                    if let Some(net) = table.keys().find(|n| n.contains(ip)) {
                        prefix.get_or_insert(net.to_string());
                        peers.push(peer.to_string());
                    }
                }
                if prefix.is_some() {
                    out.push((ip.to_string(), prefix, peers));
                }
            }
        }
        out
    }

    fn ip_of(v4: bool, x: u32) -> IpAddr {
        if v4 {
            IpAddr::from(std::net::Ipv4Addr::from(0xC612_0000 | (x & 0xffff)))
        } else {
            IpAddr::from(std::net::Ipv6Addr::from(
                0x2001_0db8_0000_0000_0000_0000_0000_0000u128 | u128::from(x & 0xffff),
            ))
        }
    }

    proptest! {
        #[test]
        fn indexed_lookup_equals_a_scan(
            ips in proptest::collection::vec((any::<bool>(), any::<u32>()), 1..40),
            routes in proptest::collection::vec(
                (0usize..3, any::<bool>(), any::<u32>(), 0u8..=32), 0..60),
        ) {
            let mut a = Assignments::default();
            for (i, (v4, x)) in ips.iter().enumerate() {
                a.outcomes.insert(
                    AllocationKey::cluster(ObjectKey::new("ns", &format!("s{i}"))),
                    Ok(Allocation { pool: "p".into(), ips: vec![ip_of(*v4, *x)] }),
                );
            }
            let peers: Vec<IpAddr> = (1..=3)
                .map(|i| IpAddr::from(std::net::Ipv4Addr::new(192, 0, 2, i)))
                .collect();
            let mut tables: BTreeMap<IpAddr, RouteTable> = BTreeMap::new();
            for (peer, v4, x, len) in routes {
                let len = if v4 { 16 + len / 2 } else { 112 + len / 2 };
                let net = ipnet::IpNet::new(ip_of(v4, x), len).expect("len").trunc();
                tables
                    .entry(peers[peer])
                    .or_default()
                    .insert(net, Arc::new(RouteAttrs::default()));
            }
            let tables: BTreeMap<IpAddr, Arc<RouteTable>> =
                tables.into_iter().map(|(k, v)| (k, Arc::new(v))).collect();
            let all: BTreeSet<IpAddr> = peers.iter().copied().collect();
            let got: Vec<_> = bgp_announcements("n1", &a, &tables, &all)
                .into_iter()
                .map(|x| (x.ip, x.prefix, x.peers))
                .collect();
            prop_assert_eq!(got, scan(&a, &tables));
        }
    }
}

/// Publications at rest share the Service-sized sections; a change rebuilds what depends
/// on it (and only that).
#[test]
fn sections_are_rebuilt_only_when_their_inputs_change() {
    use super::publish::{Publisher, SectionBuilds, ViewParts};
    let (snap, a) = lab();
    let ip = a.ips(&crate::snapshot::ObjectKey::new("default", "web"))[0];
    let peer: IpAddr = "127.0.0.1".parse().expect("ip");
    let mut table = RouteTable::new();
    table.insert(
        ipnet::IpNet::new(ip, 32).expect("net"),
        Arc::new(RouteAttrs::default()),
    );
    let tables = BTreeMap::from([(peer, Arc::new(table))]);
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let (publisher, rx) = Publisher::new("n1", metrics.clone());
    let owned_bgp = || {
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix("edgelb_owned_ips{mode=\"BGP\"} "))
            .map(str::to_string)
    };
    fn parts<'a>(
        snap: &'a Snapshot,
        a: &'a Assignments,
        tables: &'a BTreeMap<IpAddr, Arc<RouteTable>>,
        live: bool,
    ) -> ViewParts<'a> {
        ViewParts {
            last: Some((snap, a)),
            bgp_tables: Some(tables),
            candidates: vec![candidate("n1", live)],
            ..ViewParts::default()
        }
    }
    publisher.publish(parts(&snap, &a, &tables, true));
    let all_once = SectionBuilds {
        announcements: 1,
        allocations: 1,
        pools: 1,
        services: 1,
    };
    assert_eq!(publisher.section_builds(), all_once);
    let first = rx.borrow().clone();
    assert_eq!(first.announcements.len(), 1);
    assert_eq!(owned_bgp().as_deref(), Some("1"));
    for _ in 0..5 {
        publisher.publish(parts(&snap, &a, &tables, true));
    }
    assert_eq!(publisher.section_builds(), all_once, "nothing changed");
    assert_eq!(rx.borrow().announcements.id(), first.announcements.id());

    // Another allocation: every section reads it.
    let mut other = a.clone();
    other.outcomes.remove(&crate::ipam::AllocationKey::cluster(
        crate::snapshot::ObjectKey::new("default", "web"),
    ));
    publisher.publish(parts(&snap, &other, &tables, true));
    assert_eq!(
        publisher.section_builds(),
        SectionBuilds {
            announcements: 2,
            allocations: 2,
            pools: 2,
            services: 2,
        }
    );
    assert!(rx.borrow().announcements.is_empty());
    assert_eq!(owned_bgp().as_deref(), Some("0"));
    // Only the candidates change: only the Services' section.
    publisher.publish(parts(&snap, &other, &tables, false));
    assert_eq!(publisher.section_builds().services, 3);
    assert_eq!(publisher.section_builds().announcements, 2);
}

/// The publication rule: the first publication is due; a pending change is shown at once
/// after a quiet spell and at most every `CHANGES_EVERY` in a burst; with nothing pending,
/// only the periodic refresh is due.
mod publication_rule {
    use super::super::publish::{publication_due, CHANGES_EVERY, TICK_EVERY};
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_change_waits_only_for_the_spacing_and_nothing_else_for_the_tick(
            last_ms in 0u64..2_000,
            change_ms in proptest::option::of(0u64..2_000),
            now_ms in 0u64..4_000,
            pending in any::<bool>(),
        ) {
            let t0 = Instant::now();
            let at = |ms: u64| t0 + Duration::from_millis(ms);
            // A change is shown by a publication: it is never later than the last one.
            let change_ms = change_ms.map(|c| c.min(last_ms));
            let now = at(now_ms.max(last_ms));
            let due = publication_due(now, Some(at(last_ms)), change_ms.map(at), pending);
            let since_last = now - at(last_ms);
            let since_change = change_ms.map(|c| now - at(c));
            let expected = since_last >= TICK_EVERY
                || (pending && since_change.is_none_or(|d| d >= CHANGES_EVERY));
            prop_assert_eq!(due, expected);
            prop_assert!(publication_due(now, None, change_ms.map(at), pending));
            if pending {
                // Pending never makes a publication less due.
                prop_assert!(due || !publication_due(now, Some(at(last_ms)), change_ms.map(at), false));
            }
        }
    }

    /// A burst of changes through the run loop's rule (`changed()`, then publish if it says so)
    /// builds the Service-sized sections about once per `CHANGES_EVERY`, not once per
    /// change, and the last change is shown once the spacing has passed.
    #[test]
    fn a_burst_of_changes_builds_the_sections_at_most_once_per_spacing() {
        use super::super::publish::{Publisher, ViewParts};
        let (snap, a) = lab();
        let mut other = a.clone();
        other.outcomes.remove(&crate::ipam::AllocationKey::cluster(
            crate::snapshot::ObjectKey::new("default", "web"),
        ));
        let (publisher, rx) = Publisher::new("n1", Arc::new(crate::metrics::Metrics::new()));
        let parts = |a| ViewParts {
            last: Some((&snap, a)),
            ..ViewParts::default()
        };
        const CHANGES: usize = 200;
        let started = Instant::now();
        for i in 0..CHANGES {
            if publisher.changed() {
                publisher.publish(parts(if i % 2 == 0 { &a } else { &other }));
            }
        }
        let took = started.elapsed();
        let builds = publisher.section_builds().allocations;
        let bound = 1 + (took.as_millis() / CHANGES_EVERY.as_millis()) as u64 + 1;
        assert!(
            builds <= bound,
            "{CHANGES} changes in {took:?} built the sections {builds} times (at most {bound})"
        );
        // The last change (`other`: one allocation fewer) is pending, shown when the
        // spacing has passed, as the run loop's tick does.
        std::thread::sleep(CHANGES_EVERY);
        assert!(publisher.due(), "a pending change is due after the spacing");
        publisher.publish(parts(&other));
        assert_eq!(rx.borrow().allocations.len(), other.outcomes.len());
        assert_eq!(other.outcomes.len() + 1, a.outcomes.len());
    }
}

#[test]
fn an_l2_ip_owned_on_two_interfaces_is_one_announcement_since_the_earlier() {
    use edgelb_l2::{InterfaceStats, IpStats};
    let (_, a) = lab();
    let key = crate::snapshot::ObjectKey::new("default", "web");
    let ip = a.ips(&key)[0];
    let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
    let on = |interface: &str, since: u64| InterfaceStats {
        interface: interface.into(),
        ips: Arc::from(vec![IpStats {
            ip,
            owned_since: t(since),
            first_announced: None,
            error: None,
        }]),
        ..InterfaceStats::default()
    };
    let anns = l2_announcements("n1", &a, &[on("eth0", 200), on("eth1", 100)]);
    assert_eq!(anns.len(), 1, "{anns:?}");
    assert_eq!(anns[0].ip, ip.to_string());
    assert_eq!(anns[0].service, "default/web");
    assert_eq!(anns[0].mode, Mode::L2);
    assert_eq!(anns[0].interfaces, ["eth0", "eth1"]);
    assert_eq!(anns[0].since, Some(100));
    assert!(l2_announcements("n1", &a, &[]).is_empty());
}

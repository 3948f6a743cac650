//! Golden tables from a fixed view: what an operator sees, byte for byte.
use edgelb_view::*;
use edgelbctl::cli::{render, service_key, Command, EXIT_CHECK_FAILED, EXIT_OK};
use edgelbctl::format::{age, Output};

const NOW: u64 = 1_000_000;

fn view() -> LocalView {
    LocalView {
        api: VIEW_API.into(),
        node: "edge-1".into(),
        version: "0.1.0".into(),
        generated_at: NOW,
        ready: true,
        leader: Some("edge-2".into()),
        members: vec![
            MemberView {
                name: "edge-1".into(),
                health: Health::Alive,
                since: Some(NOW - 3600),
                node_pool: Some("hz".into()),
            },
            MemberView {
                name: "edge-2".into(),
                health: Health::Suspect,
                since: Some(NOW - 4),
                node_pool: None,
            },
        ],
        peers: vec![
            PeerView {
                address: "198.51.100.1".into(),
                name: "edgelb-system/tor-a".into(),
                state: "Established".into(),
                established_since: Some(NOW - 300),
                prefixes_sent: 2,
                messages_in: 12,
                messages_out: 14,
                updates_out: 3,
                established_count: 2,
                bfd: Some("Up".into()),
                ..PeerView::default()
            },
            PeerView {
                address: "198.51.100.2".into(),
                name: "edgelb-system/tor-b".into(),
                state: "Active".into(),
                last_error: Some("connection lost".into()),
                last_error_at: Some(NOW - 75),
                established_count: 1,
                ..PeerView::default()
            },
        ],
        announcements: vec![AnnouncementView {
            ip: "203.0.113.10".into(),
            service: "default/web".into(),
            pool: "public".into(),
            node_pool: None,
            mode: Mode::Bgp,
            owner: "edge-1".into(),
            since: Some(NOW - 250),
            prefix: Some("203.0.113.10/32".into()),
            peers: vec!["198.51.100.1".into()],
            interfaces: vec![],
        }],
        interfaces: vec![],
        policy_routes: vec![
            PolicyRouteView {
                name: "ens".into(),
                table: Some(4),
                priority: 1000,
                state: "Installed".into(),
                message: "node edge-1: 1 rule(s) and 2 route(s) in table 4 via 10.0.0.1 on eth1"
                    .into(),
                rules: vec![PolicyRuleView {
                    priority: 1000,
                    from: "10.0.0.3/32".into(),
                    to: "all".into(),
                    table: 4,
                }],
                routes: vec![
                    PolicyRouteEntryView {
                        dst: "0.0.0.0/0".into(),
                        gateway: Some("10.0.0.1".into()),
                        dev: "eth1".into(),
                        table: 4,
                    },
                    PolicyRouteEntryView {
                        dst: "10.0.0.0/24".into(),
                        gateway: None,
                        dev: "eth1".into(),
                        table: 4,
                    },
                ],
            },
            PolicyRouteView {
                name: "mgmt".into(),
                table: Some(254),
                priority: 900,
                state: "ReservedTable".into(),
                message: "node edge-1: table 254 is reserved by the kernel (0, 253, 254, 255); \
                          nothing installed on this node"
                    .into(),
                rules: vec![],
                routes: vec![],
            },
        ],
        allocations: vec![
            AllocationView {
                service: "default/web".into(),
                node_pool: None,
                pool: Some("public".into()),
                ips: vec!["203.0.113.10".into()],
                error: None,
            },
            AllocationView {
                service: "default/db".into(),
                node_pool: None,
                pool: None,
                ips: vec![],
                error: Some("no free address in IPAddressPool \"public\"".into()),
            },
        ],
        pools: vec![PoolView {
            name: "public".into(),
            addresses: vec!["203.0.113.10/32".into()],
            size: 1,
            used: 1,
            failures: 1,
            auto_assign: true,
            error: None,
        }]
        .into(),
        services: vec![ServiceView {
            service: "default/web".into(),
            node_pool: None,
            traffic_policy: "Local".into(),
            candidates: vec![
                CandidateView {
                    node: "edge-1".into(),
                    excluded: None,
                },
                CandidateView {
                    node: "edge-2".into(),
                    excluded: Some("noLocalEndpoints".into()),
                },
            ],
            ips: vec![],
        }],
        cloud: None,
        node_pools: vec![],
    }
}

fn show(c: Command, o: Output) -> (String, u8) {
    render(&c, &view(), o, false).expect("render")
}

#[test]
fn ages_print_like_kubectl() {
    let cases = [
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (200, "3m20s"),
        (300, "5m"),
        (900, "15m"),
        (3 * 3600 + 600, "3h10m"),
        (10 * 3600, "10h"),
        (3 * 86_400 + 4 * 3600, "3d4h"),
        (40 * 86_400, "40d"),
        (800 * 86_400, "2y70d"),
    ];
    let now = 100_000_000;
    for (s, want) in cases {
        assert_eq!(age(now, Some(now - s)), want, "{s} s");
    }
    assert_eq!(age(NOW, None), "<none>");
    assert_eq!(
        age(NOW, Some(NOW + 10)),
        "0s",
        "a clock ahead never gives a negative age"
    );
}

#[test]
fn peers_table_golden() {
    let (t, code) = show(Command::Peers { check: false }, Output::Table);
    assert_eq!(code, EXIT_OK);
    assert_eq!(t, "\
PEER           NAME                  STATE         BFD      UPTIME   SENT   RECEIVED   LAST-ERROR
198.51.100.1   edgelb-system/tor-a   Established   Up       5m       2      0          <none>
198.51.100.2   edgelb-system/tor-b   Active        <none>   <none>   0      0          connection lost (75s ago)
");
}

#[test]
fn a_family_not_announced_is_shown_before_the_last_error() {
    let mut v = view();
    v.peers[0].families_not_announced = vec![FamilyNotAnnouncedView {
        family: "ipv6-unicast".into(),
        reason: "no IPv6 next hop".into(),
    }];
    v.peers[0].prefixes_not_sent = 3;
    let (t, _) = render(&Command::Peers { check: false }, &v, Output::Wide, false).expect("render");
    let line = t.lines().nth(1).expect("first peer");
    assert!(
        line.ends_with("ipv6-unicast not announced: no IPv6 next hop"),
        "{t}"
    );
    assert!(line.contains(" 3 "), "{t}");
}

#[test]
fn peers_wide_golden() {
    let (t, _) = show(Command::Peers { check: false }, Output::Wide);
    assert_eq!(t, "\
PEER           NAME                  STATE         BFD      UPTIME   SENT   RECEIVED   NOT-SENT   MSGS-IN   MSGS-OUT   UPDATES-OUT   FLAPS   GR   LAST-ERROR
198.51.100.1   edgelb-system/tor-a   Established   Up       5m       2      0          0          12        14         3             1       no   <none>
198.51.100.2   edgelb-system/tor-b   Active        <none>   <none>   0      0          0          0         0          0             1       no   connection lost (75s ago)
");
}

#[test]
fn check_exits_non_zero_when_a_peer_is_down() {
    assert_eq!(
        show(Command::Peers { check: true }, Output::Table).1,
        EXIT_CHECK_FAILED
    );
    let mut v = view();
    v.peers.truncate(1);
    assert_eq!(
        render(&Command::Peers { check: true }, &v, Output::Json, false)
            .expect("render")
            .1,
        EXIT_OK
    );
}

#[test]
fn colour_only_when_asked_and_columns_stay_aligned() {
    let plain = render(
        &Command::Peers { check: false },
        &view(),
        Output::Table,
        false,
    )
    .expect("r")
    .0;
    let col = render(
        &Command::Peers { check: false },
        &view(),
        Output::Table,
        true,
    )
    .expect("r")
    .0;
    assert!(!plain.contains('\x1b'));
    assert!(col.contains("\x1b[32mEstablished\x1b[0m"));
    assert!(col.contains("\x1b[31mActive\x1b[0m"));
    let stripped = col
        .replace("\x1b[32m", "")
        .replace("\x1b[31m", "")
        .replace("\x1b[0m", "");
    assert_eq!(stripped, plain);
}

#[test]
fn announcements_pools_routes_members_golden() {
    assert_eq!(
        show(Command::Announcements, Output::Table).0,
        "\
IP             SERVICE       POOL     MODE   OWNER    AGE
203.0.113.10   default/web   public   BGP    edge-1   4m10s
"
    );
    assert_eq!(
        show(Command::Announcements, Output::Wide).0,
        "\
IP             SERVICE       POOL     MODE   OWNER    AGE     PREFIX            TO
203.0.113.10   default/web   public   BGP    edge-1   4m10s   203.0.113.10/32   198.51.100.1
"
    );
    assert_eq!(
        show(Command::Pools, Output::Table).0,
        "\
NAME     SIZE   USED   FAILURES   AUTO-ASSIGN   STATE
public   1      1      1          true          Valid
"
    );
    assert_eq!(
        show(Command::Routes, Output::Table).0,
        "\
NAME   TABLE   KIND     PRIORITY   FROM          TO            GATEWAY    DEV      STATE
ens    4       rule     1000       10.0.0.3/32   all           <none>     <none>   Installed
ens    4       route    <none>     <none>        0.0.0.0/0     10.0.0.1   eth1     Installed
ens    4       route    <none>     <none>        10.0.0.0/24   <none>     eth1     Installed
mgmt   254     <none>   <none>     <none>        <none>        <none>     <none>   ReservedTable
"
    );
    let (wide, _) = show(Command::Routes, Output::Wide);
    let last = wide.lines().last().unwrap_or_default();
    assert!(
        last.ends_with("ReservedTable   node edge-1: table 254 is reserved by the kernel (0, 253, 254, 255); nothing installed on this node"),
        "{wide}"
    );
    let (j, _) = show(Command::Routes, Output::Json);
    let back: Vec<PolicyRouteView> = serde_json::from_str(&j).expect("json");
    assert_eq!(back, view().policy_routes);
    assert_eq!(
        show(Command::Members, Output::Table).0,
        "\
NAME     HEALTH    AGE   LEADER
edge-1   Alive     60m   <none>
edge-2   Suspect   4s    *
"
    );
}

/// An invalid pool shows as invalid with its reason, without `-o wide`.
#[test]
fn an_invalid_pool_is_shown_invalid_with_the_reason() {
    let mut v = view();
    std::sync::Arc::make_mut(&mut v.pools).push(PoolView {
        name: "typo".into(),
        addresses: vec![],
        size: 0,
        used: 0,
        failures: 0,
        auto_assign: false,
        error: Some("spec.addresses[0]: \"10.0.0.300/24\" is not a CIDR or range".into()),
    });
    assert_eq!(
        edgelbctl::format::pools_table(&v, false),
        "\
NAME     SIZE   USED   FAILURES   AUTO-ASSIGN   STATE     REASON
public   1      1      1          true          Valid     <none>
typo     0      0      0          false         Invalid   spec.addresses[0]: \"10.0.0.300/24\" is not a CIDR or range
"
    );
}

#[test]
fn status_golden() {
    assert_eq!(
        show(Command::Status, Output::Table).0,
        "\
Node:           edge-1
Version:        0.1.0
Ready:          true
Leader:         edge-2
Members:        2 (1 alive)
BGP peers:      1/2 established
Announcements:  1 (BGP 1, L2 0)
L2 interfaces:  0 (0 up)
Policy routes:  2 (1 installed)
Allocations:    2 (1 failed)
"
    );
}

#[test]
fn explain_golden_and_unknown_service() {
    let (t, code) = show(
        Command::Explain {
            target: "svc/web".into(),
            service_namespace: "default".into(),
        },
        Output::Table,
    );
    assert_eq!(code, EXIT_OK);
    assert_eq!(
        t,
        "\
Service:         default/web
Traffic policy:  Local
IPs:             203.0.113.10 (pool public)
Candidates:
  NODE     ELIGIBLE   EXCLUDED-BECAUSE
  edge-1   yes        <none>
  edge-2   no         noLocalEndpoints
Announced by edge-1:
  IP             MODE   OWNER    SINCE   TO
  203.0.113.10   BGP    edge-1   4m10s   198.51.100.1
"
    );
    let (t, code) = show(
        Command::Explain {
            target: "svc/default/db".into(),
            service_namespace: "x".into(),
        },
        Output::Table,
    );
    assert_eq!(code, EXIT_OK);
    assert!(
        t.contains("IPs:             <none>: no free address in IPAddressPool \"public\""),
        "{t}"
    );
    let (_, code) = show(
        Command::Explain {
            target: "svc/nope".into(),
            service_namespace: "default".into(),
        },
        Output::Table,
    );
    assert_eq!(code, EXIT_CHECK_FAILED);
    assert_eq!(service_key("svc/web", "prod").as_deref(), Some("prod/web"));
    assert_eq!(service_key("service/a/b", "prod").as_deref(), Some("a/b"));
    assert_eq!(service_key("svc/", "prod"), None);
}

/// `explain` says why an L2 IP is where it is: the nodes in the IP's rendezvous order,
/// why each one ranked above the owner was skipped, who is next, and the handoff this node
/// waits for.
#[test]
fn explain_ranks_the_nodes_of_an_l2_ip_and_says_why_each_was_skipped() {
    let mut v = view();
    let mut services = v.services.to_vec();
    let ranked = |node: &str, why: Option<&str>| CandidateView {
        node: node.into(),
        excluded: why.map(str::to_string),
    };
    services[0].ips = vec![IpRankView {
        ip: "192.0.2.100".into(),
        owner: Some("edge-3".into()),
        ranked: vec![
            ranked("edge-2", Some("notLive")),
            ranked("edge-4", Some("excludedByLabel")),
            ranked("edge-3", None),
            ranked("edge-1", None),
            ranked("edge-5", Some("notInPool")),
        ],
        handoff_until_ms: Some(1_700_000_000_250),
    }];
    v.services = services;
    let (t, code) = render(
        &Command::Explain {
            target: "svc/web".into(),
            service_namespace: "default".into(),
        },
        &v,
        Output::Table,
        false,
    )
    .expect("render");
    assert_eq!(code, EXIT_OK);
    assert!(
        t.contains(
            "\
L2 IP 192.0.2.100: owner edge-3
  RANK   NODE     WHY
  1      edge-2   skipped: notLive
  2      edge-4   skipped: excludedByLabel
  3      edge-3   owner
  4      edge-1   next if the owner goes
  5      edge-5   skipped: notInPool
  waiting for handoff: edge-1 won it but does not answer yet; the previous owner is alive and lets go first (the takeover hold)
"
        ),
        "{t}"
    );
    // JSON carries the same, with the hold's end.
    let (j, _) = render(
        &Command::Explain {
            target: "svc/web".into(),
            service_namespace: "default".into(),
        },
        &v,
        Output::Json,
        false,
    )
    .expect("render");
    let e: serde_json::Value = serde_json::from_str(&j).expect("json");
    assert_eq!(e["ips"][0]["ranked"][0]["excluded"], "notLive");
    assert_eq!(e["ips"][0]["owner"], "edge-3");
    assert_eq!(e["ips"][0]["handoffUntilMs"], 1_700_000_000_250u64);
    // Without L2 IPs, no ranking is printed.
    let (t, _) = show(
        Command::Explain {
            target: "svc/web".into(),
            service_namespace: "default".into(),
        },
        Output::Table,
    );
    assert!(!t.contains("L2 IP"), "{t}");
}

#[test]
fn json_and_yaml_are_the_view_sections() {
    let (j, _) = show(Command::Peers { check: false }, Output::Json);
    let peers: Vec<PeerView> = serde_json::from_str(&j).expect("json");
    assert_eq!(peers, view().peers);
    let (y, _) = show(Command::Status, Output::Yaml);
    let back: LocalView = serde_norway::from_str(&y).expect("yaml");
    assert_eq!(back, view());
    let (j, _) = show(
        Command::Explain {
            target: "svc/web".into(),
            service_namespace: "default".into(),
        },
        Output::Json,
    );
    let e: serde_json::Value = serde_json::from_str(&j).expect("json");
    assert_eq!(e["candidates"][1]["node"], "edge-2");
    assert_eq!(e["announcements"][0]["peers"][0], "198.51.100.1");
}

/// `elb`: one line per (Service, pool) cloud load balancer; without a driver, why none.
#[test]
fn elb_shows_each_pools_load_balancer_eip_listeners_backends_and_error() {
    let mut v = view();
    let none = render(&Command::Elb, &v, Output::Table, false)
        .expect("render")
        .0;
    assert!(none.contains("--elb-credentials-secret"), "{none}");
    v.cloud = Some(CloudView {
        active: true,
        problem: None,
        load_balancers: vec![
            CloudLbView {
                service: "web/cube".into(),
                pool: "np-hz".into(),
                pool_service: "web/cube-np-hz".into(),
                name: "k8s/cube/web/np-hz/c1".into(),
                load_balancer: Some("lb-1".into()),
                status: Some("Active".into()),
                eip: Some("47.0.0.1".into()),
                listeners: vec!["tcp/80 -> 30080 Running".into()],
                backends: vec!["i-1:100".into(), "i-2:100".into()],
                converged: true,
                ..CloudLbView::default()
            },
            CloudLbView {
                service: "web/shop".into(),
                pool: "np-hz".into(),
                last_error: Some(
                    "CreateLoadBalancer for k8s/shop/web/np-hz/c1: Throttling.User".into(),
                ),
                ..CloudLbView::default()
            },
        ],
        deleting: vec!["k8s/old/web/np-hz/c1 (cn-hz)".into()],
        calls: vec![],
    });
    let t = render(&Command::Elb, &v, Output::Table, false)
        .expect("render")
        .0;
    let lines: Vec<&str> = t.lines().collect();
    assert!(
        lines[0].starts_with("SERVICE") && lines[0].contains("LAST-ERROR"),
        "{t}"
    );
    assert!(
        lines[1].contains("web/cube")
            && lines[1].contains("lb-1")
            && lines[1].contains("47.0.0.1")
            && lines[1].contains("tcp/80 -> 30080 Running")
            && lines[1].contains("i-1:100,i-2:100")
            && lines[1].contains("Converged"),
        "{t}"
    );
    assert!(
        lines[2].contains("web/shop")
            && lines[2].contains("Error")
            && lines[2].contains("Throttling.User"),
        "{t}"
    );
    assert!(t.contains("deleting: k8s/old/web/np-hz/c1"), "{t}");
    let j = render(&Command::Elb, &v, Output::Json, false)
        .expect("render")
        .0;
    let back: Option<CloudView> = serde_json::from_str(&j).expect("json");
    assert_eq!(back, v.cloud);
}

/// A Service with two node pools: `nodepools` lists the pools and their members, the
/// announcements carry the node pool, and `explain` shows each pool on its own (IPs or why
/// none, candidates, what this node announces).
fn pooled_view() -> LocalView {
    let mut v = view();
    v.node_pools = vec![
        NodePoolView {
            name: "np-chengdu".into(),
            source: "node label".into(),
            labels: [(
                "apps.openyurt.io/nodepool".to_string(),
                "np-chengdu".to_string(),
            )]
            .into(),
            nodes: vec!["cd-1".into()],
        },
        NodePoolView {
            name: "np-hefei".into(),
            source: "NodePool".into(),
            labels: [("k8s-svc".to_string(), "cube".to_string())].into(),
            nodes: vec!["edge-1".into(), "edge-2".into()],
        },
    ];
    let mut allocations = v.allocations.to_vec();
    allocations.extend([
        AllocationView {
            service: "default/cube".into(),
            node_pool: Some("np-chengdu".into()),
            pool: None,
            ips: vec![],
            error: Some(
                "no IPAddressPool with autoAssign scoped to node pool \"np-chengdu\"".into(),
            ),
        },
        AllocationView {
            service: "default/cube".into(),
            node_pool: Some("np-hefei".into()),
            pool: Some("hefei-lan".into()),
            ips: vec!["192.0.2.100".into()],
            error: None,
        },
    ]);
    v.allocations = allocations;
    let mut services = v.services.to_vec();
    for (np, nodes) in [
        ("np-chengdu", vec![("cd-1", None)]),
        (
            "np-hefei",
            vec![("edge-1", None), ("edge-2", Some("notInPool"))],
        ),
    ] {
        services.push(ServiceView {
            service: "default/cube".into(),
            node_pool: Some(np.into()),
            traffic_policy: "Cluster".into(),
            candidates: nodes
                .into_iter()
                .map(|(n, why): (&str, Option<&str>)| CandidateView {
                    node: n.into(),
                    excluded: why.map(str::to_string),
                })
                .collect(),
            ips: vec![],
        });
    }
    v.services = services;
    let mut anns = v.announcements.clone();
    anns.insert(
        0,
        AnnouncementView {
            ip: "192.0.2.100".into(),
            service: "default/cube".into(),
            pool: "hefei-lan".into(),
            node_pool: Some("np-hefei".into()),
            mode: Mode::L2,
            owner: "edge-1".into(),
            since: Some(NOW - 30),
            prefix: None,
            peers: vec![],
            interfaces: vec!["eth0".into()],
        },
    );
    v.announcements = anns;
    v
}

#[test]
fn node_pools_announcements_and_explain_pool_by_pool() {
    let v = pooled_view();
    let show = |c: Command, o: Output| render(&c, &v, o, false).expect("render");
    let (t, code) = show(Command::Nodepools, Output::Table);
    assert_eq!(code, EXIT_OK);
    assert_eq!(
        t,
        "\
NAME         SOURCE       NODES   MEMBERS                  ENTRY-POINTS
np-chengdu   node label   1       cd-1                     0
np-hefei     NodePool     2       edge-1,edge-2(Suspect)   1
"
    );
    let (t, _) = show(Command::Nodepools, Output::Wide);
    assert!(
        t.lines()
            .nth(2)
            .is_some_and(|l| l.ends_with("1              k8s-svc=cube")),
        "{t}"
    );
    assert_eq!(
        show(Command::Announcements, Output::Table).0,
        "\
IP             SERVICE        NODE-POOL   POOL        MODE   OWNER    AGE
203.0.113.10   default/web    <none>      public      BGP    edge-1   4m10s
192.0.2.100    default/cube   np-hefei    hefei-lan   L2     edge-1   30s
"
    );
    let (t, code) = show(
        Command::Explain {
            target: "svc/cube".into(),
            service_namespace: "default".into(),
        },
        Output::Table,
    );
    assert_eq!(code, EXIT_OK);
    assert_eq!(
        t,
        "\
Service:         default/cube
Node pools:      2
Node pool np-chengdu:
  Traffic policy:  Cluster
  IPs:             <none> [node pool np-chengdu]: no IPAddressPool with autoAssign scoped to node pool \"np-chengdu\"
  Candidates:
    NODE   ELIGIBLE   EXCLUDED-BECAUSE
    cd-1   yes        <none>
  Announced by edge-1:
    <nothing>
Node pool np-hefei:
  Traffic policy:  Cluster
  IPs:             192.0.2.100 (pool hefei-lan) [node pool np-hefei]
  Candidates:
    NODE     ELIGIBLE   EXCLUDED-BECAUSE
    edge-1   yes        <none>
    edge-2   no         notInPool
  Announced by edge-1:
    IP            MODE   OWNER    SINCE   TO
    192.0.2.100   L2     edge-1   30s     eth0
"
    );
    let (j, _) = show(
        Command::Explain {
            target: "svc/cube".into(),
            service_namespace: "default".into(),
        },
        Output::Json,
    );
    let e: serde_json::Value = serde_json::from_str(&j).expect("json");
    assert_eq!(e["nodePools"][1]["nodePool"], "np-hefei");
    assert_eq!(e["nodePools"][1]["allocations"][0]["ips"][0], "192.0.2.100");
    let (j, _) = show(Command::Nodepools, Output::Json);
    let back: Vec<NodePoolView> = serde_json::from_str(&j).expect("json");
    assert_eq!(back, v.node_pools);
}

//! Tests of the policy-route planner: examples of each rule, then properties.
use super::*;
use crate::api::policy_route::PolicyRouteSpec;
use proptest::prelude::*;

fn net(s: &str) -> IpNet {
    s.parse().expect("test prefix")
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

fn spec(table: u32) -> PolicyRouteSpec {
    PolicyRouteSpec {
        node_selector: None,
        node_pools: vec![],
        interface: Some("eth1".into()),
        table,
        priority: None,
        gateways: vec![],
        ip_families: vec![],
    }
}

/// The ENS example: public eth0 with the main default route, private eth1 10.0.0.3/24 whose
/// DHCP client installed `default via 10.0.0.1 dev eth1 metric 200`.
fn ens(specs: Vec<(&str, PolicyRouteSpec)>) -> PolicyRouteInput {
    PolicyRouteInput {
        routes: specs
            .into_iter()
            .map(|(n, s)| NamedPolicyRoute {
                name: n.into(),
                spec: s,
            })
            .collect(),
        node: NodeFacts {
            name: "edge-1".into(),
            internal_ips: vec![ip("10.0.0.3")],
            ..Default::default()
        },
        links: vec![
            LinkFacts {
                name: "eth0".into(),
                index: 2,
                up: true,
                addrs: vec![net("203.0.113.10/24")],
            },
            LinkFacts {
                name: "eth1".into(),
                index: 3,
                up: true,
                addrs: vec![net("10.0.0.3/24"), net("fd00::3/64"), net("fe80::3/64")],
            },
        ],
        kernel_routes: vec![
            KernelRoute {
                table: 254,
                dst: net("0.0.0.0/0"),
                gateway: Some(ip("203.0.113.1")),
                oif: Some(2),
            },
            KernelRoute {
                table: 254,
                dst: net("0.0.0.0/0"),
                gateway: Some(ip("10.0.0.1")),
                oif: Some(3),
            },
        ],
        foreign_rule_tables: [254, 255, 253].into(),
    }
}

#[test]
fn ens_example_gives_one_rule_a_default_route_and_the_subnet_route() {
    let p = plan(&ens(vec![("pr", spec(4))]));
    assert_eq!(
        p.rules,
        vec![PlannedRule {
            priority: 1000,
            src: net("10.0.0.3/32"),
            table: 4
        }]
    );
    assert_eq!(
        p.routes,
        vec![
            PlannedRoute {
                table: 4,
                dst: net("0.0.0.0/0"),
                gateway: Some(ip("10.0.0.1")),
                oif: 3,
                prefsrc: None
            },
            PlannedRoute {
                table: 4,
                dst: net("10.0.0.0/24"),
                gateway: None,
                oif: 3,
                prefsrc: Some(ip("10.0.0.3"))
            },
        ]
    );
    assert_eq!(p.conditions.len(), 1);
    assert!(p.conditions[0].installed(), "{:?}", p.conditions[0]);
}

#[test]
fn ipv6_family_uses_global_addresses_only_and_accepts_a_link_local_gateway() {
    let mut s = spec(4);
    s.ip_families = vec![IpFamily::IPv6];
    s.gateways = vec![ip("fe80::1")];
    let p = plan(&ens(vec![("pr", s)]));
    assert_eq!(p.rules.len(), 1);
    assert_eq!(p.rules[0].src, net("fd00::3/128"));
    assert!(p
        .routes
        .iter()
        .any(|r| r.dst == net("::/0") && r.gateway == Some(ip("fe80::1"))));
    assert!(p.routes.iter().any(|r| r.dst == net("fd00::/64")));
}

#[test]
fn interface_defaults_to_the_one_carrying_the_internal_ip() {
    let mut s = spec(4);
    s.interface = None;
    let p = plan(&ens(vec![("pr", s)]));
    assert!(p.routes.iter().all(|r| r.oif == 3));
    assert!(p.conditions[0].installed());
}

fn only_condition(p: &PolicyRoutePlan) -> &NodeCondition {
    assert_eq!(p.conditions.len(), 1, "{:?}", p.conditions);
    &p.conditions[0]
}

#[test]
fn bad_inputs_install_nothing_and_name_node_and_problem() {
    let cases: Vec<(PolicyRouteSpec, Reason, &str)> = vec![
        (
            PolicyRouteSpec {
                interface: Some("eth9".into()),
                ..spec(4)
            },
            Reason::UnknownInterface,
            "eth9",
        ),
        (spec(254), Reason::ReservedTable, "table 254"),
        (spec(0), Reason::ReservedTable, "table 0"),
        (
            PolicyRouteSpec {
                gateways: vec![ip("192.0.2.1")],
                ..spec(4)
            },
            Reason::GatewayNotOnLink,
            "192.0.2.1",
        ),
        (
            PolicyRouteSpec {
                priority: Some(32766),
                ..spec(4)
            },
            Reason::BadPriority,
            "32766",
        ),
        (
            PolicyRouteSpec {
                ip_families: vec![IpFamily::IPv6],
                ..spec(4)
            },
            Reason::NoGateway,
            "IPv6",
        ),
    ];
    for (s, reason, word) in cases {
        let p = plan(&ens(vec![("pr", s.clone())]));
        let c = only_condition(&p);
        assert_eq!(c.reason, reason, "{s:?}");
        assert!(c.message.contains("edge-1"), "{}", c.message);
        assert!(c.message.contains(word), "{}", c.message);
        assert!(p.rules.is_empty() && p.routes.is_empty(), "{p:?}");
    }
}

#[test]
fn a_table_looked_up_by_foreign_rules_is_refused() {
    let mut input = ens(vec![("pr", spec(4))]);
    input.foreign_rule_tables.insert(4);
    let p = plan(&input);
    assert_eq!(only_condition(&p).reason, Reason::TableInUse);
    assert!(p.rules.is_empty() && p.routes.is_empty());
}

#[test]
fn a_foreign_route_to_the_same_destination_in_the_table_is_refused_but_others_are_fine() {
    let mut input = ens(vec![("pr", spec(4))]);
    input.kernel_routes.push(KernelRoute {
        table: 4,
        dst: net("198.51.100.0/24"),
        gateway: None,
        oif: Some(2),
    });
    assert!(plan(&input).conditions[0].installed());
    input.kernel_routes.push(KernelRoute {
        table: 4,
        dst: net("0.0.0.0/0"),
        gateway: Some(ip("10.0.0.1")),
        oif: Some(3),
    });
    let p = plan(&input);
    assert_eq!(only_condition(&p).reason, Reason::TableInUse);
    assert!(p.rules.is_empty() && p.routes.is_empty());
}

#[test]
fn second_object_on_the_same_table_gets_table_conflict_and_the_first_still_works() {
    let mut b = spec(4);
    b.interface = Some("eth0".into());
    b.gateways = vec![ip("203.0.113.1")];
    let p = plan(&ens(vec![("b", b), ("a", spec(4))]));
    assert_eq!(p.conditions[0].policy_route, "a");
    assert!(p.conditions[0].installed());
    assert_eq!(p.conditions[1].reason, Reason::TableConflict);
    assert!(p.routes.iter().all(|r| r.oif == 3));
}

#[test]
fn node_annotations_override_table_and_gateway_and_the_specific_key_wins() {
    let mut input = ens(vec![("pr", spec(4))]);
    input
        .node
        .annotations
        .insert(TABLE_ANNOTATION.into(), "7".into());
    input
        .node
        .annotations
        .insert(format!("{TABLE_ANNOTATION}.pr"), "8".into());
    input
        .node
        .annotations
        .insert(GATEWAY_ANNOTATION.into(), "10.0.0.254".into());
    let p = plan(&input);
    assert!(p.rules.iter().all(|r| r.table == 8));
    assert_eq!(
        only_condition(&p).table,
        Some(8),
        "the condition names the table used"
    );
    assert_eq!(only_condition(&p).priority, 1000);
    assert!(p
        .routes
        .iter()
        .any(|r| r.gateway == Some(ip("10.0.0.254")) && r.table == 8));

    input
        .node
        .annotations
        .insert(GATEWAY_ANNOTATION.into(), "not-an-ip".into());
    let p = plan(&input);
    assert_eq!(only_condition(&p).reason, Reason::BadAnnotation);
    assert!(p.rules.is_empty());
}

#[test]
fn objects_for_other_pools_or_labels_do_not_select_the_node() {
    let mut s = spec(4);
    s.node_pools = vec!["hangzhou".into()];
    let mut input = ens(vec![("pr", s)]);
    assert!(plan(&input).conditions.is_empty());
    input.node.pool = Some("hangzhou".into());
    assert!(plan(&input).conditions[0].installed());
}

#[test]
fn a_down_interface_is_reported_and_gets_nothing() {
    let mut input = ens(vec![("pr", spec(4))]);
    input.links[1].up = false;
    let p = plan(&input);
    assert_eq!(only_condition(&p).reason, Reason::InterfaceDown);
    assert!(p.routes.is_empty());
}

// ---- properties ----

fn arb_link(index: u32) -> impl Strategy<Value = LinkFacts> {
    // Link i mostly holds addresses of subnet i; sometimes of another one.
    let home = index as u8;
    let subnet = prop_oneof![4 => Just(home), 1 => 0u8..3];
    let v4 = (
        subnet.clone(),
        1u8..6,
        prop::sample::select(vec![24u8, 24, 28, 30]),
    )
        .prop_map(|(s, h, l)| net(&format!("10.0.{s}.{h}/{l}")));
    let v6 = (
        subnet.prop_map(u16::from),
        1u16..6,
        prop::sample::select(vec![64u8, 120]),
    )
        .prop_map(|(s, h, l)| net(&format!("fd00:{s}::{h}/{l}")));
    let ll = Just(net("fe80::5/64"));
    (
        prop::collection::vec(prop_oneof![3 => v4, 2 => v6, 1 => ll], 1..5),
        prop::bool::weighted(0.1),
    )
        .prop_map(move |(addrs, down)| LinkFacts {
            name: format!("eth{index}"),
            index: index + 2,
            up: !down,
            addrs,
        })
}

fn arb_gw() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..3, 1u8..6).prop_map(|(s, h)| ip(&format!("10.0.{s}.{h}"))),
        (0u16..3, 1u16..6).prop_map(|(s, h)| ip(&format!("fd00:{s}::{h}"))),
        Just(ip("fe80::1")),
        Just(ip("192.0.2.1")),
    ]
}

fn arb_spec() -> impl Strategy<Value = PolicyRouteSpec> {
    // Mostly valid values, so that most cases plan something and the properties bite.
    let table = prop_oneof![8 => prop::sample::select(vec![4u32, 5, 1000]), 1 => prop::sample::select(vec![0u32, 253, 254, 255])];
    let iface = prop_oneof![8 => prop::option::of(prop::sample::select(vec!["eth0", "eth1", "eth2"])), 1 => Just(Some("eth7"))];
    let priority = prop_oneof![6 => Just(None), 2 => prop::sample::select(vec![10u32, 32765]).prop_map(Some), 1 => prop::sample::select(vec![0u32, 40000]).prop_map(Some)];
    let gateways = prop_oneof![3 => Just(vec![]), 2 => prop::collection::vec(arb_gw(), 1..3)];
    let fams = prop_oneof![3 => Just(vec![]), 2 => prop::collection::vec(prop::sample::select(vec![IpFamily::IPv4, IpFamily::IPv6]), 1..3)];
    let pools = prop_oneof![4 => Just(vec![]), 1 => prop::collection::vec(prop::sample::select(vec!["a", "b"]), 1..2)];
    (table, iface, priority, gateways, fams, pools).prop_map(
        |(table, iface, priority, gateways, fams, pools)| PolicyRouteSpec {
            node_selector: None,
            node_pools: pools.into_iter().map(String::from).collect(),
            interface: iface.map(String::from),
            table,
            priority,
            gateways,
            ip_families: fams,
        },
    )
}

fn arb_input() -> impl Strategy<Value = PolicyRouteInput> {
    let links = (arb_link(0), arb_link(1), arb_link(2)).prop_map(|(a, b, c)| vec![a, b, c]);
    // Routes as DHCP clients install them: a default route per link through `.6` of a subnet.
    let kroutes = prop::collection::vec(
        (
            prop::sample::select(vec![254u32, 100]),
            any::<bool>(),
            prop::bool::weighted(0.2),
            0u32..3,
        )
            .prop_map(|(table, v6, elsewhere, i)| {
                let s = if elsewhere { (i + 1) % 3 } else { i };
                let oif = i + 2;
                KernelRoute {
                    table,
                    dst: net(if v6 { "::/0" } else { "0.0.0.0/0" }),
                    gateway: Some(if v6 {
                        ip(&format!("fd00:{s}::6"))
                    } else {
                        ip(&format!("10.0.{s}.6"))
                    }),
                    oif: Some(oif),
                }
            }),
        0..8,
    );
    let specs = prop::collection::vec(arb_spec(), 0..4);
    let annotations = prop::collection::btree_map(
        prop::sample::select(vec![
            TABLE_ANNOTATION.to_string(),
            GATEWAY_ANNOTATION.to_string(),
            format!("{TABLE_ANNOTATION}.r1"),
        ]),
        prop::sample::select(vec!["4", "6", "254", "x", "10.0.0.1", "10.0.1.1,fd00::1"])
            .prop_map(String::from),
        0..2,
    );
    let annotations = prop_oneof![3 => Just(BTreeMap::new()), 1 => annotations];
    (
        links,
        kroutes,
        specs,
        annotations,
        prop_oneof![3 => Just(BTreeSet::new()), 1 => prop::collection::btree_set(prop::sample::select(vec![4u32, 5, 1000]), 1..2)],
        prop::option::of(prop::sample::select(vec!["a", "b"])),
    )
        .prop_map(|(links, kernel_routes, specs, annotations, foreign, pool)| {
            let mut foreign_rule_tables = foreign;
            let internal = links[1].addrs.first().map_or(ip("10.0.1.1"), |a| a.addr());
            foreign_rule_tables.extend([253, 254, 255]);
            PolicyRouteInput {
                routes: specs
                    .into_iter()
                    .enumerate()
                    .map(|(i, spec)| NamedPolicyRoute {
                        name: format!("r{i}"),
                        spec,
                    })
                    .collect(),
                node: NodeFacts {
                    name: "n1".into(),
                    labels: Default::default(),
                    pool: pool.map(String::from),
                    annotations,
                    internal_ips: vec![internal],
                },
                links,
                kernel_routes,
                foreign_rule_tables,
            }
        })
}

proptest! {
    #[test]
    fn plan_is_deterministic_and_ignores_input_order(input in arb_input()) {
        let p = plan(&input);
        prop_assert_eq!(&p, &plan(&input));
        let mut shuffled = input.clone();
        shuffled.routes.reverse();
        shuffled.links.reverse();
        shuffled.kernel_routes.reverse();
        prop_assert_eq!(&p, &plan(&shuffled));
    }

    #[test]
    fn every_rule_table_has_a_default_route_of_its_family(input in arb_input()) {
        let p = plan(&input);
        for r in &p.rules {
            prop_assert!(p.routes.iter().any(|rt| rt.table == r.table
                && rt.dst.prefix_len() == 0
                && rt.family() == r.family()
                && rt.gateway.is_some()), "{:?} has no default route in {:?}", r, p.routes);
        }
    }

    #[test]
    fn reserved_and_foreign_tables_are_never_used(input in arb_input()) {
        let p = plan(&input);
        for t in p.rules.iter().map(|r| r.table).chain(p.routes.iter().map(|r| r.table)) {
            prop_assert!(!RESERVED_TABLES.contains(&t));
            prop_assert!(!input.foreign_rule_tables.contains(&t));
        }
    }

    #[test]
    fn nothing_is_planned_for_an_object_with_bad_input(input in arb_input()) {
        let p = plan(&input);
        // Tables of installed objects only; each table belongs to one object.
        let installed: Vec<&NodeCondition> = p.conditions.iter().filter(|c| c.installed()).collect();
        let tables: BTreeSet<u32> = p.rules.iter().map(|r| r.table).chain(p.routes.iter().map(|r| r.table)).collect();
        prop_assert_eq!(tables.len(), installed.len(), "{:?} vs {:?}", tables, p.conditions);
        if installed.is_empty() {
            prop_assert!(p.rules.is_empty() && p.routes.is_empty());
        }
        for c in &p.conditions {
            prop_assert!(c.message.contains("n1"));
        }
        // An installed object names its table, and every planned rule and route in that
        // table is the object's (the view groups them by it).
        let named: BTreeSet<u32> = installed.iter().filter_map(|c| c.table).collect();
        prop_assert_eq!(named, tables);
    }

    #[test]
    fn rules_and_routes_use_the_links_own_addresses_and_on_link_gateways(input in arb_input()) {
        let p = plan(&input);
        for r in &p.rules {
            prop_assert!(input.links.iter().any(|l| l.up && l.addrs.iter().any(|a| a.addr() == r.src.addr())));
            prop_assert!(r.priority >= 1 && r.priority <= MAX_PRIORITY);
        }
        for rt in &p.routes {
            let link = input.links.iter().find(|l| l.index == rt.oif);
            prop_assert!(link.is_some());
            if let (Some(gw), Some(link)) = (rt.gateway, link) {
                prop_assert!(on_link(&gw, link));
            }
        }
    }
}

/// Inputs that are valid by construction: eth1 with 1 to 4 addresses of 10.0.1.0/24 (and
/// maybe fd00:1::/64), a table outside the reserved ones, a priority in range, the gateway
/// explicit or from a DHCP-style kernel route.
fn arb_valid() -> impl Strategy<Value = (PolicyRouteInput, Vec<IpAddr>)> {
    (
        prop::collection::btree_set(1u8..=250, 1..5),
        prop::collection::btree_set(1u16..=250, 0..3),
        prop_oneof![1u32..=252, 256u32..=u32::MAX],
        1u32..=MAX_PRIORITY,
        any::<bool>(),
    )
        .prop_map(|(hosts4, hosts6, table, priority, explicit)| {
            let mut addrs: Vec<IpNet> = hosts4
                .iter()
                .map(|h| net(&format!("10.0.1.{h}/24")))
                .collect();
            addrs.extend(hosts6.iter().map(|h| net(&format!("fd00:1::{h:x}/64"))));
            let mut families = vec![IpFamily::IPv4];
            let mut gws = vec![ip("10.0.1.254")];
            if !hosts6.is_empty() {
                families.push(IpFamily::IPv6);
                gws.push(ip("fe80::1"));
            }
            let spec = PolicyRouteSpec {
                table,
                priority: Some(priority),
                gateways: if explicit { gws.clone() } else { vec![] },
                ip_families: families,
                ..spec(table)
            };
            let kernel_routes = gws
                .iter()
                .map(|gw| KernelRoute {
                    table: 254,
                    dst: net(if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" }),
                    gateway: Some(*gw),
                    oif: Some(3),
                })
                .collect();
            let input = PolicyRouteInput {
                routes: vec![NamedPolicyRoute {
                    name: "pr".into(),
                    spec,
                }],
                node: NodeFacts {
                    name: "n1".into(),
                    ..Default::default()
                },
                links: vec![LinkFacts {
                    name: "eth1".into(),
                    index: 3,
                    up: true,
                    addrs,
                }],
                kernel_routes,
                foreign_rule_tables: [253, 254, 255].into(),
            };
            (input, gws)
        })
}

proptest! {
    #[test]
    fn a_valid_object_gets_one_rule_per_address_and_a_default_route_per_family(
        (input, gws) in arb_valid()
    ) {
        let p = plan(&input);
        prop_assert!(only_condition(&p).installed(), "{:?}", p.conditions);
        let addrs = &input.links[0].addrs;
        prop_assert_eq!(p.rules.len(), addrs.len());
        for a in addrs {
            prop_assert!(p.rules.iter().any(|r| r.src.addr() == a.addr()));
        }
        for gw in &gws {
            prop_assert!(p.routes.iter().any(|r| r.dst.prefix_len() == 0 && r.gateway == Some(*gw)));
        }
        // One default route and one subnet route per family, all in the object's table.
        prop_assert_eq!(p.routes.len(), 2 * gws.len());
        let table = input.routes[0].spec.table;
        prop_assert!(p.routes.iter().all(|r| r.table == table && r.oif == 3));
    }
}

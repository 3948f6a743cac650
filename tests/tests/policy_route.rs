//! ENS policy routes on a real kernel (issue 6): the reply path proved by TCP (IPv4 and
//! IPv6), idempotence and adoption after a restart, foreign objects kept, bad input refused
//! with a condition, and removal. The lab is in `policy_route_common`.
mod policy_route_common;

use anyhow::Context;
use edgelb_daemon::actuate::policy_route::ApplyReport;
use edgelb_daemon::plan::policy_route::Reason;
use edgelb_tests::lab;
use policy_route_common::*;

#[test]
fn replies_to_lb_traffic_leave_by_the_private_nic_only_with_the_policy_route() -> anyhow::Result<()>
{
    if !lab::enabled("policy_route") {
        return Ok(());
    }
    let t = topology()?;
    serve(&t.node, NODE_PRIVATE, 8080)?;
    let before = connect_from_lb(&t.lb, NODE_PRIVATE, 8080);
    assert!(
        before.is_err(),
        "without a policy route the SYN-ACK must leave by the public NIC and be lost: {before:?}"
    );

    let (p, report) = converge(&t.node, Some(spec()))?;
    assert!(p.conditions[0].installed(), "{:?}", p.conditions);
    assert_eq!(report.rules_added, 1, "{report:?}");
    let d = dump(&t.node)?;
    eprintln!("installed:\n{}", ours(&d).join("\n"));
    assert!(
        d.contains(&format!("from {NODE_PRIVATE} lookup {TABLE} proto 235")),
        "{d}"
    );
    assert!(
        d.contains(&format!(
            "default via 198.51.100.1 dev eth1 table {TABLE} proto 235"
        )),
        "{d}"
    );

    let greeting = connect_from_lb(&t.lb, NODE_PRIVATE, 8080).context("with the policy route")?;
    assert_eq!(greeting, "hello from the private NIC\n");

    cleanup(&t.node)?;
    assert!(
        connect_from_lb(&t.lb, NODE_PRIVATE, 8080).is_err(),
        "cleanup must remove the route"
    );
    Ok(())
}

#[test]
fn apply_is_idempotent_adopts_after_restart_and_cleanup_keeps_foreign_objects() -> anyhow::Result<()>
{
    if !lab::enabled("policy_route") {
        return Ok(());
    }
    let t = topology()?;
    // Foreign objects: a rule at our priority for another table, and a route in our table.
    t.node.ip(&[
        "rule",
        "add",
        "from",
        "192.0.2.99",
        "lookup",
        "200",
        "priority",
        "1000",
    ])?;
    t.node.ip(&[
        "route",
        "add",
        "192.0.2.128/25",
        "via",
        "198.51.100.1",
        "dev",
        "eth1",
        "table",
        &TABLE.to_string(),
    ])?;
    let baseline = dump(&t.node)?;

    let (_, first) = converge(&t.node, Some(spec()))?;
    assert_eq!(
        first,
        ApplyReport {
            rules_added: 1,
            rules_removed: 0,
            routes_replaced: 2,
            routes_removed: 0,
            failed: vec![],
            refused_tables: Default::default(),
        }
    );
    let after_first = dump(&t.node)?;
    assert_eq!(ours(&after_first).len(), 3, "{after_first}");

    // A second pass by a fresh actuator (a restarted speaker) changes nothing.
    let (_, second) = converge(&t.node, Some(spec()))?;
    assert!(!second.changed(), "{second:?}");
    assert_eq!(
        dump(&t.node)?,
        after_first,
        "netlink dump changed on re-apply"
    );

    // Foreign objects survived.
    assert!(
        after_first.contains("from 192.0.2.99 lookup 200"),
        "{after_first}"
    );
    assert!(after_first.contains("192.0.2.128/25 via 198.51.100.1 dev eth1 table 100"));

    // Removing the object removes ours; cleanup afterwards has nothing left to do.
    let (p, removed) = converge(&t.node, None)?;
    assert!(p.conditions.is_empty());
    assert_eq!(
        removed,
        ApplyReport {
            rules_added: 0,
            rules_removed: 1,
            routes_replaced: 0,
            routes_removed: 2,
            failed: vec![],
            refused_tables: Default::default(),
        }
    );
    assert_eq!(
        dump(&t.node)?,
        baseline,
        "removal must restore the kernel exactly"
    );
    assert!(!cleanup(&t.node)?.changed());
    Ok(())
}

#[test]
fn cleanup_removes_all_ours_and_nothing_else() -> anyhow::Result<()> {
    if !lab::enabled("policy_route") {
        return Ok(());
    }
    let t = topology()?;
    t.node
        .ip(&["rule", "add", "from", "192.0.2.99", "lookup", "200"])?;
    let baseline = dump(&t.node)?;
    converge(&t.node, Some(spec()))?;
    assert_eq!(ours(&dump(&t.node)?).len(), 3);
    let report = cleanup(&t.node)?;
    assert_eq!((report.rules_removed, report.routes_removed), (1, 2));
    assert_eq!(dump(&t.node)?, baseline);
    Ok(())
}

#[test]
fn a_table_used_by_a_foreign_rule_gets_a_condition_and_nothing_is_installed() -> anyhow::Result<()>
{
    if !lab::enabled("policy_route") {
        return Ok(());
    }
    let t = topology()?;
    t.node.ip(&[
        "rule",
        "add",
        "from",
        "198.51.100.77",
        "lookup",
        &TABLE.to_string(),
    ])?;
    let baseline = dump(&t.node)?;
    let (p, report) = converge(&t.node, Some(spec()))?;
    let c = &p.conditions[0];
    eprintln!("condition: {} {}", c.reason.as_str(), c.message);
    assert_eq!(c.reason, Reason::TableInUse);
    assert!(c.message.contains("edge-1") && c.message.contains("table 100"));
    assert!(!report.changed());
    assert_eq!(dump(&t.node)?, baseline);

    // An unknown interface, likewise.
    let mut bad = spec();
    bad.table = 101;
    bad.interface = Some("eth9".into());
    let (p, report) = converge(&t.node, Some(bad))?;
    assert_eq!(p.conditions[0].reason, Reason::UnknownInterface);
    assert!(!report.changed());
    assert_eq!(dump(&t.node)?, baseline);
    Ok(())
}

#[test]
fn speaker_cleanup_command_removes_ours_and_keeps_foreign_objects() -> anyhow::Result<()> {
    if !lab::enabled("policy_route") {
        return Ok(());
    }
    let bin = speaker_binary()?;
    let t = topology()?;
    t.node.ip(&[
        "route",
        "add",
        "192.0.2.128/25",
        "via",
        "198.51.100.1",
        "dev",
        "eth1",
        "table",
        "100",
    ])?;
    t.node
        .ip(&["rule", "add", "from", "192.0.2.99", "lookup", "200"])?;
    let baseline = dump(&t.node)?;
    converge(&t.node, Some(spec()))?;
    assert_eq!(ours(&dump(&t.node)?).len(), 3);
    let bin = bin.to_string_lossy().into_owned();
    let out = t.node.run(&[bin.as_str(), "cleanup"])?;
    eprintln!("edgelb-speaker cleanup: {}", out.trim());
    assert!(
        out.contains("removed 1 policy rule(s) and 2 route(s)"),
        "{out}"
    );
    assert_eq!(dump(&t.node)?, baseline);
    Ok(())
}

#[test]
fn dual_stack_ipv6_replies_leave_by_the_private_nic_and_reapply_changes_nothing(
) -> anyhow::Result<()> {
    if !lab::enabled("policy_route") {
        return Ok(());
    }
    let t = topology()?;
    // IPv6 beside IPv4: the same shape, 2001:db8:1::/64 private, 2001:db8:3::/64 public,
    // the LB in 2001:db8:2::/64 behind the private router; main default by the public NIC.
    t.node.addr("eth1", "2001:db8:1::10/64")?;
    t.node.addr("eth0", "2001:db8:3::10/64")?;
    t.private_router.addr("down0", "2001:db8:1::1/64")?;
    t.private_router.addr("up0", "2001:db8:2::1/64")?;
    t.public_router.addr("down0", "2001:db8:3::1/64")?;
    t.lb.addr("eth0", "2001:db8:2::10/64")?;
    t.lb.ip(&["-6", "route", "add", "default", "via", "2001:db8:2::1"])?;
    t.private_router
        .sysctl("net.ipv6.conf.all.forwarding", "1")?;
    t.public_router
        .sysctl("net.ipv6.conf.all.forwarding", "0")?;
    t.node.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "2001:db8:3::1",
        "dev",
        "eth0",
    ])?;
    serve(&t.node, "2001:db8:1::10", 8081)?;
    let before = connect_from_lb(&t.lb, "2001:db8:1::10", 8081);
    assert!(
        before.is_err(),
        "IPv6 reply must be lost without the policy route: {before:?}"
    );

    let mut s = spec();
    s.ip_families = vec![
        edgelb_daemon::api::policy_route::IpFamily::IPv4,
        edgelb_daemon::api::policy_route::IpFamily::IPv6,
    ];
    s.gateways = vec!["2001:db8:1::1".parse()?];
    let (p, first) = converge(&t.node, Some(s.clone()))?;
    assert!(p.conditions[0].installed(), "{:?}", p.conditions);
    assert_eq!(
        (first.rules_added, first.routes_replaced),
        (2, 4),
        "{first:?}"
    );
    let d = dump(&t.node)?;
    eprintln!("installed:\n{}", ours(&d).join("\n"));
    assert!(
        d.contains("from 2001:db8:1::10 lookup 100 proto 235"),
        "{d}"
    );
    assert!(
        d.contains("default via 2001:db8:1::1 dev eth1 table 100 proto 235"),
        "{d}"
    );
    assert!(
        d.contains("2001:db8:1::/64 dev eth1 table 100 proto 235"),
        "{d}"
    );
    let greeting = connect_from_lb(&t.lb, "2001:db8:1::10", 8081).context("IPv6 with the route")?;
    assert_eq!(greeting, "hello from the private NIC\n");

    let (_, second) = converge(&t.node, Some(s))?;
    assert!(!second.changed(), "{second:?}");
    assert_eq!(dump(&t.node)?, d);
    let removed = cleanup(&t.node)?;
    assert_eq!((removed.rules_removed, removed.routes_removed), (2, 4));
    assert!(ours(&dump(&t.node)?).is_empty());
    assert!(connect_from_lb(&t.lb, "2001:db8:1::10", 8081).is_err());
    Ok(())
}

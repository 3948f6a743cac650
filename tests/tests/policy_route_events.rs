//! ENS policy routes on a real kernel (issue 6), what happens over time: the speaker's task
//! follows an address and a gateway change (printed, asserted under a second), does not
//! wake on its own changes, and a change the kernel refuses does not stop the others.
mod policy_route_common;

use anyhow::Context;
use edgelb_daemon::actuate::policy_route::PolicyRouteActuator;
use edgelb_daemon::actuate::policy_route_task::{run, PolicyRouteConfig, TaskReport, Timing};
use edgelb_daemon::plan::policy_route::{plan, NamedPolicyRoute, PlannedRoute, PlannedRule};
use edgelb_tests::lab::{self, wait_until};
use policy_route_common::*;
use std::time::{Duration, Instant};

#[test]
fn rules_follow_an_address_or_gateway_change_on_the_private_nic_within_a_second(
) -> anyhow::Result<()> {
    if !lab::enabled("policy_route") {
        return Ok(());
    }
    let t = topology()?;
    // As systemd's defaults: deleting the primary address promotes the secondary instead of
    // flushing every address of the subnet.
    t.node
        .sysctl("net.ipv4.conf.eth1.promote_secondaries", "1")?;
    let path = format!("/run/netns/{}", t.node.name());
    // The product's task, as the speaker runs it; the config names the interface, since
    // the node's InternalIP (the default) would go with the old address.
    let mut s = spec();
    s.interface = Some("eth1".into());
    let config = PolicyRouteConfig {
        routes: vec![NamedPolicyRoute {
            name: "ens".into(),
            spec: s,
        }],
        node: node_facts(),
    };
    let (config_tx, config_rx) = tokio::sync::watch::channel(config);
    let (report_tx, report_rx) = tokio::sync::watch::channel(TaskReport::default());
    let status = report_rx.clone();
    let passes = move || report_rx.borrow().passes;
    let speaker = std::thread::spawn(move || -> anyhow::Result<()> {
        enter(&path)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let timing = Timing {
            resync: Duration::from_secs(60),
            retry: Duration::from_millis(200),
        };
        Ok(rt.block_on(run(config_rx, report_tx, timing))?)
    });
    let rule = |addr: &str| format!("from {addr} lookup {TABLE} proto 235");
    wait_until(
        "the first rule",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            Ok(t.node
                .ip(&["rule", "show"])?
                .contains(&rule(NODE_PRIVATE))
                .then_some(()))
        },
    )?;

    // Our own changes do not wake the loop again: idle means idle.
    std::thread::sleep(Duration::from_millis(300));
    let settled = passes();
    std::thread::sleep(Duration::from_millis(700));
    let idle = passes() - settled;
    eprintln!("speaker passes while idle for 700 ms: {idle}");
    let conditions = status.borrow().conditions.clone();
    assert!(
        conditions.len() == 1 && conditions[0].installed(),
        "{conditions:?}"
    );
    assert!(
        idle <= 1,
        "the speaker re-planned {idle} times with nothing changing"
    );

    let start = Instant::now();
    t.node
        .ip(&["addr", "add", "198.51.100.20/24", "dev", "eth1"])?;
    t.node
        .ip(&["addr", "del", &format!("{NODE_PRIVATE}/24"), "dev", "eth1"])?;
    let elapsed = wait_until(
        "the rule to follow the new address",
        Duration::from_secs(10),
        Duration::from_millis(5),
        || {
            let rules = t.node.ip(&["rule", "show"])?;
            Ok(
                (rules.contains(&rule("198.51.100.20")) && !rules.contains(&rule(NODE_PRIVATE)))
                    .then(|| start.elapsed()),
            )
        },
    )?;
    eprintln!("policy rule followed the address change in {elapsed:?}");
    eprintln!("{}", ours(&dump(&t.node)?).join("\n"));

    // The DHCP client moves the private NIC's gateway: the auto gateway follows.
    let start = Instant::now();
    t.node.ip(&[
        "route",
        "replace",
        "default",
        "via",
        "198.51.100.2",
        "dev",
        "eth1",
        "metric",
        "200",
    ])?;
    let gw_elapsed = wait_until(
        "the default route of table 100 to follow the gateway",
        Duration::from_secs(10),
        Duration::from_millis(5),
        || {
            let table = t.node.ip(&["route", "show", "table", &TABLE.to_string()])?;
            Ok(table
                .contains("default via 198.51.100.2 dev eth1 proto 235")
                .then(|| start.elapsed()))
        },
    )?;
    eprintln!("policy route followed the gateway change in {gw_elapsed:?}");
    drop(config_tx);
    speaker
        .join()
        .map_err(|_| anyhow::anyhow!("speaker thread panicked"))??;
    assert!(
        elapsed < Duration::from_secs(1),
        "rules took {elapsed:?} to follow the address"
    );
    assert!(
        gw_elapsed < Duration::from_secs(1),
        "routes took {gw_elapsed:?} to follow the gateway"
    );
    // The subnet route's source followed too.
    let table = t.node.ip(&["route", "show", "table", &TABLE.to_string()])?;
    assert!(table.contains("src 198.51.100.20"), "{table}");
    Ok(())
}

#[test]
fn a_route_the_kernel_refuses_is_reported_and_does_not_stop_the_others() -> anyhow::Result<()> {
    if !lab::enabled("policy_route") {
        return Ok(());
    }
    let t = topology()?;
    let report = in_ns(&t.node, || async {
        let mut act = PolicyRouteActuator::new()?;
        let routes = vec![NamedPolicyRoute {
            name: "ens".into(),
            spec: spec(),
        }];
        let facts = act.observe().await?;
        let eth1 = facts
            .links
            .iter()
            .find(|l| l.name == "eth1")
            .context("eth1")?
            .index;
        let mut p = plan(&facts.into_input(routes, node_facts()));
        // Past the planner's checks, as if the link had changed in between: a gateway that
        // is on no connected subnet, which the kernel refuses (ENETUNREACH).
        p.routes.push(PlannedRoute {
            table: 101,
            dst: "0.0.0.0/0".parse()?,
            gateway: Some("192.0.2.77".parse()?),
            oif: eth1,
            prefsrc: None,
        });
        p.rules.push(PlannedRule {
            priority: 1001,
            src: "198.51.100.10/32".parse()?,
            table: 101,
        });
        Ok(act.apply(&p).await?)
    })?;
    eprintln!("refused: {:?}", report.failed);
    assert_eq!(report.failed.len(), 1, "{report:?}");
    assert!(report.failed[0].contains("192.0.2.77"), "{report:?}");
    assert_eq!((report.rules_added, report.routes_replaced), (1, 2));
    let d = dump(&t.node)?;
    assert!(d.contains("lookup 100 proto 235"), "{d}");
    assert!(
        !d.contains("lookup 101"),
        "no rule for the refused table: {d}"
    );
    Ok(())
}

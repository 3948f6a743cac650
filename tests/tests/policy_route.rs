//! ENS policy routes on a real kernel (issue 6): a node with a public and a private NIC, each
//! a veth to its own router namespace, and a load-balancer namespace behind the private
//! router. The actuator runs in-process on a thread that entered the node namespace.
//!
//! ```text
//!  lb 192.0.2.10 ── priv router ── 198.51.100.10 eth1 [node] eth0 203.0.113.10 ── pub router
//!                   (forwards)                          main: default via 203.0.113.1
//! ```
//!
//! The public router does not forward, so a reply that leaves by eth0 is lost: only the
//! policy route makes a TCP connection from the LB namespace succeed. `rp_filter` is 0 on
//! the node so the SYN is accepted either way and the test proves the route, not a sysctl.
use anyhow::Context;
use edgelb_daemon::actuate::policy_route::{watch_changes, ApplyReport, PolicyRouteActuator};
use edgelb_daemon::api::policy_route::PolicyRouteSpec;
use edgelb_daemon::plan::policy_route::{
    plan, NamedPolicyRoute, NodeFacts, PolicyRoutePlan, Reason,
};
use edgelb_tests::lab::{self, netns::veth, wait_until, Netns};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const NODE_PRIVATE: &str = "198.51.100.10";
const TABLE: u32 = 100;

/// Runs `f` on a fresh thread inside namespace `ns`, on a current-thread tokio runtime. A
/// netlink socket belongs to the namespace of the thread that creates it.
fn in_ns<F, Fut, T>(ns: &Netns, f: F) -> anyhow::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = anyhow::Result<T>>,
    T: Send + 'static,
{
    let path = format!("/run/netns/{}", ns.name());
    let inner = path.clone();
    std::thread::spawn(move || -> anyhow::Result<T> {
        enter(&inner)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(f())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in {path} panicked"))?
}

fn enter(path: &str) -> anyhow::Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {path}"))
}

struct Topology {
    node: Netns,
    lb: Netns,
    _private_router: Netns,
    _public_router: Netns,
}

fn topology() -> anyhow::Result<Topology> {
    let node = Netns::new("node")?;
    let privr = Netns::new("privr")?;
    let pubr = Netns::new("pubr")?;
    let lb = Netns::new("lb")?;
    veth(&node, "eth0", &pubr, "down0")?;
    veth(&node, "eth1", &privr, "down0")?;
    veth(&lb, "eth0", &privr, "up0")?;
    node.addr("eth0", "203.0.113.10/24")?;
    node.addr("eth1", &format!("{NODE_PRIVATE}/24"))?;
    pubr.addr("down0", "203.0.113.1/24")?;
    privr.addr("down0", "198.51.100.1/24")?;
    privr.addr("up0", "192.0.2.1/24")?;
    lb.addr("eth0", "192.0.2.10/24")?;
    lb.ip(&["route", "add", "default", "via", "192.0.2.1"])?;
    privr.sysctl("net.ipv4.ip_forward", "1")?;
    pubr.sysctl("net.ipv4.ip_forward", "0")?;
    for ns in [&node, &privr] {
        for dev in ["all", "default"] {
            ns.sysctl(&format!("net.ipv4.conf.{dev}.rp_filter"), "0")?;
        }
    }
    for dev in ["eth0", "eth1"] {
        node.sysctl(&format!("net.ipv4.conf.{dev}.rp_filter"), "0")?;
    }
    // The public NIC carries the default route; the private NIC's DHCP-style default route has
    // a worse metric, so the main table never uses it: this is where the auto gateway comes from.
    node.ip(&[
        "route",
        "add",
        "default",
        "via",
        "203.0.113.1",
        "dev",
        "eth0",
    ])?;
    node.ip(&[
        "route",
        "add",
        "default",
        "via",
        "198.51.100.1",
        "dev",
        "eth1",
        "metric",
        "200",
    ])?;
    // The kernel adds the links' IPv6 link-local addresses on its own, a moment later: wait
    // for them so that before/after dumps compare only what the test did.
    wait_until(
        "link-local addresses of eth0 and eth1",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let local = node.ip(&["-6", "route", "show", "table", "local"])?;
            Ok((local.matches("local fe80::").count() == 2).then_some(()))
        },
    )?;
    Ok(Topology {
        node,
        lb,
        _private_router: privr,
        _public_router: pubr,
    })
}

fn spec() -> PolicyRouteSpec {
    PolicyRouteSpec {
        node_selector: None,
        node_pools: vec![],
        interface: None, // the interface that carries the node's InternalIP
        table: TABLE,
        priority: Some(1000),
        gateways: vec![],
        ip_families: vec![],
    }
}

fn node_facts() -> NodeFacts {
    NodeFacts {
        name: "edge-1".into(),
        internal_ips: vec![NODE_PRIVATE.parse().expect("ip")],
        ..Default::default()
    }
}

/// One speaker pass in the node namespace: a fresh actuator (as after a restart) observes,
/// plans and applies. Returns the plan and what changed.
fn converge(
    node: &Netns,
    spec: Option<PolicyRouteSpec>,
) -> anyhow::Result<(PolicyRoutePlan, ApplyReport)> {
    in_ns(node, move || async move {
        let mut act = PolicyRouteActuator::new()?;
        let routes = spec
            .into_iter()
            .map(|spec| NamedPolicyRoute {
                name: "ens".into(),
                spec,
            })
            .collect();
        let input = act.observe().await?.into_input(routes, node_facts());
        let p = plan(&input);
        let report = act.apply(&p).await?;
        Ok((p, report))
    })
}

fn cleanup(node: &Netns) -> anyhow::Result<ApplyReport> {
    in_ns(node, || async {
        let mut act = PolicyRouteActuator::new()?;
        Ok(act.cleanup().await?)
    })
}

/// The kernel's rules and routes of every table, as `ip` dumps them.
fn dump(ns: &Netns) -> anyhow::Result<String> {
    Ok(format!(
        "{}\n{}\n{}\n{}",
        ns.ip(&["-4", "rule", "show"])?,
        ns.ip(&["-6", "rule", "show"])?,
        ns.ip(&["-4", "route", "show", "table", "all"])?,
        ns.ip(&["-6", "route", "show", "table", "all"])?
    ))
}

fn ours(dump: &str) -> Vec<&str> {
    dump.lines().filter(|l| l.contains("proto 235")).collect()
}

/// A TCP server on the node's private address that answers one line per connection.
fn serve(node: &Netns, port: u16) -> anyhow::Result<()> {
    let path = format!("/run/netns/{}", node.name());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || -> anyhow::Result<()> {
        enter(&path)?;
        let l = TcpListener::bind((NODE_PRIVATE, port))?;
        l.set_nonblocking(true)?;
        let _ = ready_tx.send(());
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(b"hello from the private NIC\n");
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .context("server did not start")
}

/// Connects from the LB namespace to the node's private address; Ok(greeting) or Err.
fn connect_from_lb(lb: &Netns, port: u16) -> anyhow::Result<String> {
    let path = format!("/run/netns/{}", lb.name());
    std::thread::spawn(move || -> anyhow::Result<String> {
        enter(&path)?;
        let addr: SocketAddr = format!("{NODE_PRIVATE}:{port}").parse()?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

#[test]
fn replies_to_lb_traffic_leave_by_the_private_nic_only_with_the_policy_route() -> anyhow::Result<()>
{
    if !lab::enabled("policy_route") {
        return Ok(());
    }
    let t = topology()?;
    serve(&t.node, 8080)?;
    let before = connect_from_lb(&t.lb, 8080);
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

    let greeting = connect_from_lb(&t.lb, 8080).context("with the policy route")?;
    assert_eq!(greeting, "hello from the private NIC\n");

    cleanup(&t.node)?;
    assert!(
        connect_from_lb(&t.lb, 8080).is_err(),
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
            routes_removed: 0
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
            routes_removed: 2
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
fn rules_follow_an_address_change_on_the_private_nic_within_a_second() -> anyhow::Result<()> {
    if !lab::enabled("policy_route") {
        return Ok(());
    }
    let t = topology()?;
    // As systemd's defaults: deleting the primary address promotes the secondary instead of
    // flushing every address of the subnet.
    t.node
        .sysctl("net.ipv4.conf.eth1.promote_secondaries", "1")?;
    let path = format!("/run/netns/{}", t.node.name());
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    // The speaker loop: watch, observe, plan, apply; again on every change.
    let speaker = std::thread::spawn(move || -> anyhow::Result<()> {
        enter(&path)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let mut watch = watch_changes()?;
            let mut act = PolicyRouteActuator::new()?;
            let routes = vec![NamedPolicyRoute {
                name: "ens".into(),
                spec: spec(),
            }];
            loop {
                let mut node = node_facts();
                // The node's InternalIP follows the private NIC's address, as the kubelet's would.
                let facts = act.observe().await?;
                if let Some(l) = facts.links.iter().find(|l| l.name == "eth1") {
                    node.internal_ips = l.addrs.iter().map(|a| a.addr()).collect();
                }
                let p = plan(&facts.into_input(routes.clone(), node));
                act.apply(&p).await?;
                tokio::select! {
                    _ = watch.changed() => {}
                    _ = &mut stop_rx => return Ok(()),
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        })
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
    let _ = stop_tx.send(());
    speaker
        .join()
        .map_err(|_| anyhow::anyhow!("speaker thread panicked"))??;
    assert!(
        elapsed < Duration::from_secs(1),
        "rules took {elapsed:?} to follow the address"
    );
    // The subnet route's source followed too.
    let table = t.node.ip(&["route", "show", "table", &TABLE.to_string()])?;
    assert!(table.contains("src 198.51.100.20"), "{table}");
    Ok(())
}

/// `target/<profile>/edgelb-speaker`, beside this test's `deps/` folder. `cargo test
/// --workspace` builds it before any test runs; alone, build it first
/// (`cargo build -p edgelb-daemon`).
fn speaker_binary() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .context("test binary has no target dir")?;
    let bin = dir.join("edgelb-speaker");
    anyhow::ensure!(
        bin.exists(),
        "{} missing: run `cargo build -p edgelb-daemon` or `cargo test --workspace`",
        bin.display()
    );
    Ok(bin)
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
fn dual_stack_installs_ipv6_rules_and_routes_idempotently() -> anyhow::Result<()> {
    if !lab::enabled("policy_route") {
        return Ok(());
    }
    let t = topology()?;
    t.node.addr("eth1", "2001:db8:1::10/64")?;
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
    let (_, second) = converge(&t.node, Some(s))?;
    assert!(!second.changed(), "{second:?}");
    assert_eq!(dump(&t.node)?, d);
    let removed = cleanup(&t.node)?;
    assert_eq!((removed.rules_removed, removed.routes_removed), (2, 4));
    assert!(ours(&dump(&t.node)?).is_empty());
    Ok(())
}

//! The policy-route lab shared by `policy_route.rs` and `policy_route_events.rs`: a node with
//! a public and a private NIC, each a veth to its own router namespace, and a load-balancer
//! namespace behind the private router. The actuator runs in-process on a thread that
//! entered the node namespace.
//!
//! ```text
//!  lb 192.0.2.10 ── priv router ── 198.51.100.10 eth1 [node] eth0 203.0.113.10 ── pub router
//!                   (forwards)                          main: default via 203.0.113.1
//! ```
//!
//! The public router does not forward, so a reply that leaves by eth0 is lost: only the
//! policy route makes a TCP connection from the LB namespace succeed. `rp_filter` is 0 on
//! the node so the SYN is accepted either way and the test proves the route, not a sysctl.
#![allow(dead_code)] // each test file uses a part

use anyhow::Context;
use edgelb_daemon::actuate::policy_route::{ApplyReport, PolicyRouteActuator};
use edgelb_daemon::api::policy_route::PolicyRouteSpec;
use edgelb_daemon::plan::policy_route::{plan, NamedPolicyRoute, NodeFacts, PolicyRoutePlan};
use edgelb_tests::lab::{netns::veth, wait_until, Netns};
use std::future::Future;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

pub const NODE_PRIVATE: &str = "198.51.100.10";

pub const TABLE: u32 = 100;

/// Runs `f` on a fresh thread inside namespace `ns`, on a current-thread tokio runtime. A
/// netlink socket belongs to the namespace of the thread that creates it.
pub fn in_ns<F, Fut, T>(ns: &Netns, f: F) -> anyhow::Result<T>
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

pub fn enter(path: &str) -> anyhow::Result<()> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {path}"))?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering {path}"))
}

pub struct Topology {
    pub node: Netns,
    pub lb: Netns,
    pub private_router: Netns,
    pub public_router: Netns,
}

pub fn topology() -> anyhow::Result<Topology> {
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
        private_router: privr,
        public_router: pubr,
    })
}

pub fn spec() -> PolicyRouteSpec {
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

pub fn node_facts() -> NodeFacts {
    NodeFacts {
        name: "edge-1".into(),
        internal_ips: vec![NODE_PRIVATE.parse().expect("ip")],
        ..Default::default()
    }
}

/// One speaker pass in the node namespace: a fresh actuator (as after a restart) observes,
/// plans and applies. Returns the plan and what changed.
pub fn converge(
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

pub fn cleanup(node: &Netns) -> anyhow::Result<ApplyReport> {
    in_ns(node, || async {
        let mut act = PolicyRouteActuator::new()?;
        Ok(act.cleanup().await?)
    })
}

/// The kernel's rules and routes of every table, as `ip` dumps them.
pub fn dump(ns: &Netns) -> anyhow::Result<String> {
    Ok(format!(
        "{}\n{}\n{}\n{}",
        ns.ip(&["-4", "rule", "show"])?,
        ns.ip(&["-6", "rule", "show"])?,
        ns.ip(&["-4", "route", "show", "table", "all"])?,
        ns.ip(&["-6", "route", "show", "table", "all"])?
    ))
}

pub fn ours(dump: &str) -> Vec<&str> {
    dump.lines().filter(|l| l.contains("proto 235")).collect()
}

/// A TCP server on a node address that answers one line per connection.
pub fn serve(node: &Netns, addr: &str, port: u16) -> anyhow::Result<()> {
    let ip: std::net::IpAddr = addr.parse()?;
    let path = format!("/run/netns/{}", node.name());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || -> anyhow::Result<()> {
        enter(&path)?;
        let l = TcpListener::bind((ip, port))?;
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

/// Connects from the LB namespace to a node address; Ok(greeting) or Err.
pub fn connect_from_lb(lb: &Netns, addr: &str, port: u16) -> anyhow::Result<String> {
    let addr = SocketAddr::new(addr.parse()?, port);
    let path = format!("/run/netns/{}", lb.name());
    std::thread::spawn(move || -> anyhow::Result<String> {
        enter(&path)?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        Ok(buf)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("client thread panicked"))?
}

/// `target/<profile>/edgelb-speaker`, beside this test's `deps/` folder. `cargo test
/// --workspace` builds it before any test runs; alone, build it first
/// (`cargo build -p edgelb-daemon`).
pub fn speaker_binary() -> anyhow::Result<std::path::PathBuf> {
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

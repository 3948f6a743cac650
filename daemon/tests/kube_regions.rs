//! Issue 14 end to end: one Service, two node pools in two regions, each region with its
//! own LAN, FRR router and two nodes, against a real API server (tests/src/kube: the shipped
//! CRDs, manifests and RBAC, each speaker run as the DaemonSet's pod with the shipped
//! ServiceAccount's token, inside its node's network namespace).
//!
//! ```text
//!  client-a --eth1-- router-a (FRR+zebra, AS 64500) --eth2====eth2-- router-b (AS 64501) --eth1-- client-b
//!                      | eth0 10.1.0.1                                 | eth0 10.2.0.1
//!                   LAN a 10.1.0.0/24                               LAN b 10.2.0.0/24
//!                  kr-a1 .11   kr-a2 .12                           kr-b1 .11   kr-b2 .12
//! ```
//!
//! The routers carry only static routes between the LANs (the gossip crosses regions through
//! them); they do not peer with each other, so what a router learns by BGP comes from its own
//! region's speakers only. OpenYurt NodePools `np-a`/`np-b` (label `k8s-svc=cube`), one
//! `IPAddressPool` per region scoped to its node pool (one by `nodePoolSelectors`, one by
//! `nodePools`), one `BGPPeer` per region selected by `apps.openyurt.io/nodepool`, and Service
//! `cube` with `service.openyurt.io/nodepool-labelselector: k8s-svc=cube` and ready endpoints
//! in both regions. Every node holds both Service IPs locally with a TCP server behind them
//! (what kube-proxy makes of a LoadBalancer Service), answering with its region's name.
//!
//! Asserted: each router's `show ip bgp json` holds exactly its region's /32 with next hops
//! exactly its region's nodes; a client behind each router reaches the Service in its region;
//! the region-a node its client's flow goes to is killed (speaker SIGKILLed, then its link
//! cut): router a keeps only the other region-a node, the client's gap is printed and bounded,
//! while region b's route, next hops and client never change (sampled throughout); NodePool
//! `np-a` relabelled (`k8s-svc=other`): router a withdraws the IP within [`RELABEL_BOUND`]
//! (measured, printed), the Service's ingress keeps only region b's IP, region b untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

mod speaker_support;

use edgelb_daemon::api::openyurt::NodePool;
use edgelb_daemon::api::{BGPAdvertisement, BGPPeer, IPAddressPool};
use edgelb_tests::kube::objects::{self, then_clean, Cleanup};
use edgelb_tests::kube::{self as harness, deploy, Cluster, NodeSpec, Speaker, SYSTEM_NAMESPACE};
use edgelb_tests::lab::traffic::{Prober, TcpServer};
use edgelb_tests::lab::{self, wait_until, BgpRouter, Frr, FrrConfig, Lan, ListenRange, Netns};

const TEST: &str = "kube_regions::two_regions_one_service";
const NS: &str = "kr-cube";
const SVC: &str = "cube";
const PORT: u16 = 80;
const NODE_AS: u32 = 64512;
const WAIT: Duration = Duration::from_secs(60);
/// The bound stated for a region's failover gap seen by its client: the killed speaker's
/// session closes (FRR withdraws its path at once) and zebra moves the flow to the other
/// node; measured ~0.1 s on an idle machine, the bound leaves room for a loaded CI host.
const FAILOVER_BOUND: Duration = Duration::from_secs(5);
/// The bound stated for a relabelled pool's IP to leave its router: one NodePool watch
/// event, a snapshot, the allocation (the IP released), the speakers' BGP UPDATE.
const RELABEL_BOUND: Duration = Duration::from_secs(10);

/// One region: its LAN, router, client and node pool.
struct Region {
    name: &'static str,
    pool: &'static str,
    /// The first three octets of the LAN (`.1` the router, `.11`/`.12` the nodes).
    lan: &'static str,
    /// The first three octets of the client's link to the router (`.1` router, `.2` client).
    client_net: &'static str,
    /// The router's end of the link between the routers.
    core: &'static str,
    /// The other region's LANs, routed over the core link.
    other: &'static str,
    other_core: &'static str,
    router_as: u32,
    /// The region's IPAddressPool and its one address.
    ip_pool: &'static str,
    vip: &'static str,
}

const REGIONS: [Region; 2] = [
    Region {
        name: "a",
        pool: "np-a",
        lan: "10.1.0",
        client_net: "10.1.1",
        core: "10.0.0.1",
        other: "10.2.0.0/16",
        other_core: "10.0.0.2",
        router_as: 64500,
        ip_pool: "kr-a",
        vip: "198.51.100.10",
    },
    Region {
        name: "b",
        pool: "np-b",
        lan: "10.2.0",
        client_net: "10.2.1",
        core: "10.0.0.2",
        other: "10.1.0.0/16",
        other_core: "10.0.0.1",
        router_as: 64501,
        ip_pool: "kr-b",
        vip: "203.0.113.10",
    },
];

impl Region {
    fn router_ip(&self) -> String {
        format!("{}.1", self.lan)
    }
    fn client_ip(&self) -> String {
        format!("{}.2", self.client_net)
    }
    /// (Node name, address) of the region's two nodes.
    fn nodes(&self) -> [(String, String); 2] {
        [1, 2].map(|i| (format!("kr-{}{i}", self.name), format!("{}.1{i}", self.lan)))
    }
    fn prefix(&self) -> String {
        format!("{}/32", self.vip)
    }
    fn reply(&self) -> String {
        format!("region-{}\n", self.name)
    }
}

/// A region's namespaces and processes. Field order is drop order: servers and FRR stop
/// before their namespaces go.
struct RegionLab {
    _servers: Vec<TcpServer>,
    frr: Frr,
    /// (node name, address, namespace, its bridge port on the LAN).
    nodes: Vec<(String, String, Netns, String)>,
    client: Netns,
    router: Netns,
    lan: Lan,
}

fn region_lab(r: &Region) -> anyhow::Result<RegionLab> {
    let mut lan = Lan::new()?;
    let router = Netns::new(&format!("r{}", r.name))?;
    let client = Netns::new(&format!("c{}", r.name))?;
    lan.attach(&router, "eth0")?;
    router.addr("eth0", &format!("{}/24", r.router_ip()))?;
    lab::netns::veth(&router, "eth1", &client, "eth0")?;
    router.addr("eth1", &format!("{}.1/24", r.client_net))?;
    router.sysctl("net.ipv4.ip_forward", "1")?;
    client.addr("eth0", &format!("{}/24", r.client_ip()))?;
    client.ip(&[
        "route",
        "add",
        "default",
        "via",
        &format!("{}.1", r.client_net),
    ])?;
    let mut nodes = Vec::new();
    let mut servers = Vec::new();
    for (i, (name, ip)) in r.nodes().into_iter().enumerate() {
        let ns = Netns::new(&format!("n{}{i}", r.name))?;
        let port = lan.attach(&ns, "eth0")?;
        ns.addr("eth0", &format!("{ip}/24"))?;
        ns.ip(&["route", "add", "default", "via", &r.router_ip()])?;
        // Every Service IP is local on every node, as kube-proxy (IPVS) makes them: only
        // the routers' BGP routes decide which region's nodes a client reaches.
        for any in &REGIONS {
            ns.ip(&["addr", "add", &format!("{}/32", any.vip), "dev", "lo"])?;
        }
        let listen: SocketAddr = format!("0.0.0.0:{PORT}").parse()?;
        servers.push(TcpServer::start(ns.name(), listen, &r.reply())?);
        nodes.push((name, ip, ns, port));
    }
    let frr = Frr::start_with_zebra(
        &router,
        FrrConfig::new(r.router_ip().parse()?, r.router_as)
            .listen_range(ListenRange::new(&format!("{}.0/24", r.lan), NODE_AS)),
    )?;
    frr.configure(&[
        &format!("router bgp {}", r.router_as),
        "address-family ipv4 unicast",
        "maximum-paths 8",
    ])?;
    Ok(RegionLab {
        _servers: servers,
        frr,
        nodes,
        client,
        router,
        lan,
    })
}

/// Links the two routers and routes each region's networks to the other (static routes:
/// no BGP between them).
fn link_routers(a: &RegionLab, b: &RegionLab) -> anyhow::Result<()> {
    lab::netns::veth(&a.router, "eth2", &b.router, "eth2")?;
    for (l, r) in [(a, &REGIONS[0]), (b, &REGIONS[1])] {
        l.router.addr("eth2", &format!("{}/30", r.core))?;
        l.router
            .ip(&["route", "add", r.other, "via", r.other_core])?;
    }
    Ok(())
}

/// `show ip bgp json`: each prefix with the next hops of its valid paths.
type Rib = BTreeMap<String, BTreeSet<String>>;

fn parse_rib(out: &str) -> anyhow::Result<Rib> {
    let v: serde_json::Value =
        serde_json::from_str(out).with_context(|| format!("show ip bgp json: {out}"))?;
    let mut rib = Rib::new();
    for (prefix, paths) in v["routes"].as_object().into_iter().flatten() {
        let hops = rib.entry(prefix.clone()).or_default();
        for p in paths.as_array().into_iter().flatten() {
            if p["valid"].as_bool() != Some(true) {
                continue;
            }
            for h in p["nexthops"].as_array().into_iter().flatten() {
                if let Some(ip) = h["ip"].as_str() {
                    hops.insert(ip.to_string());
                }
            }
        }
    }
    Ok(rib)
}

fn rib(frr: &Frr) -> anyhow::Result<Rib> {
    parse_rib(&frr.vtysh("show ip bgp json")?)
}

fn want_rib(r: &Region, hops: &[&str]) -> Rib {
    let mut want = Rib::new();
    want.insert(
        r.prefix(),
        hops.iter().map(|h| h.to_string()).collect::<BTreeSet<_>>(),
    );
    want
}

/// Waits until `frr`'s RIB is exactly `want`; returns how long it took.
fn wait_rib(frr: &Frr, what: &str, want: &Rib, timeout: Duration) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut last = Rib::new();
    wait_until(what, timeout, Duration::from_millis(10), || {
        last = rib(frr)?;
        Ok((&last == want).then_some(()))
    })
    .with_context(|| format!("{what}: want {want:?}, last {last:?}"))?;
    Ok(t.elapsed())
}

/// The next hop the router's kernel (zebra's ECMP route) picks for the client's flows.
fn client_next_hop(lab: &RegionLab, r: &Region) -> anyhow::Result<String> {
    let out = lab
        .router
        .ip(&["route", "get", r.vip, "from", &r.client_ip(), "iif", "eth1"])?;
    let mut words = out.split_whitespace();
    while let Some(w) = words.next() {
        if w == "via" {
            return words
                .next()
                .map(str::to_string)
                .context("`via` without address");
        }
    }
    bail!("no `via` in `ip route get`: {out}")
}

/// One reading of a router's RIB: when (since the probers started) and what (or why not).
type Sample = (Duration, Result<Rib, String>);

/// Region b's RIB sampled every ~50 ms on a thread until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(frr_dir: std::path::PathBuf, started: Instant) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (flag, log) = (stop.clone(), samples.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let at = started.elapsed();
                let got = vtysh(&frr_dir, "show ip bgp json")
                    .and_then(|o| parse_rib(&o))
                    .map_err(|e| format!("{e:#}"));
                if let Ok(mut v) = log.lock() {
                    v.push((at, got));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Sampler {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.samples.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// vtysh against the bgpd whose run directory is `dir` (for the sampler thread).
fn vtysh(dir: &std::path::Path, command: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("vtysh")
        .arg("--vty_socket")
        .arg(dir)
        .args(["-d", "bgpd", "-c", command])
        .stdin(std::process::Stdio::null())
        .output()
        .context("running vtysh")?;
    ensure!(
        out.status.success(),
        "vtysh {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The Service's ingress IPs, in status order.
async fn ingress(api: &Api<Service>) -> anyhow::Result<Vec<String>> {
    Ok(objects::ingress(api, SVC)
        .await?
        .into_iter()
        .map(|(ip, _)| ip)
        .collect())
}

async fn label_pool(client: &Client, r: &Region, svc_label: &str) -> anyhow::Result<()> {
    let body = json!({"apiVersion": "apps.openyurt.io/v1beta1", "kind": "NodePool",
        "metadata": {"name": r.pool, "labels": {"k8s-svc": svc_label, "kr-region": r.name}},
        "spec": {"type": "Edge"}});
    Api::<NodePool>::all(client.clone())
        .patch(
            r.pool,
            &PatchParams::apply("kube-regions-test").force(),
            &Patch::Apply(&body),
        )
        .await
        .with_context(|| format!("NodePool {}", r.pool))?;
    Ok(())
}

/// The cluster side: NodePools, Nodes, scoped pools, a BGPPeer per region, the Service.
async fn objects(client: &Client) -> anyhow::Result<()> {
    let pp = PostParams::default();
    deploy::apply_dir(client, &harness::workspace().join("tests/fixtures")).await?;
    let sys = SYSTEM_NAMESPACE;
    for r in &REGIONS {
        label_pool(client, r, "cube").await?;
        for (name, ip) in r.nodes() {
            harness::create_node(
                client,
                &name,
                ip.parse()?,
                &[("apps.openyurt.io/nodepool", r.pool)],
            )
            .await?;
        }
        Api::<BGPPeer>::namespaced(client.clone(), sys)
            .create(
                &pp,
                &serde_json::from_value(json!({
                    "apiVersion": "edgelb.io/v1alpha1", "kind": "BGPPeer",
                    "metadata": {"name": format!("kr-router-{}", r.name)},
                    "spec": {"myASN": NODE_AS, "peerASN": r.router_as,
                             "peerAddress": r.router_ip(),
                             "nodeSelectors": [{"matchLabels": {"apps.openyurt.io/nodepool": r.pool}}]}}))?,
            )
            .await?;
    }
    // One pool scoped by the NodePool's labels, the other by its name.
    let ips: Api<IPAddressPool> = Api::namespaced(client.clone(), sys);
    ips.create(
        &pp,
        &serde_json::from_value(json!({
            "apiVersion": "edgelb.io/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": REGIONS[0].ip_pool},
            "spec": {"addresses": [REGIONS[0].prefix()],
                     "nodePoolSelectors": [{"matchLabels": {"kr-region": "a"}}]}}))?,
    )
    .await?;
    ips.create(
        &pp,
        &serde_json::from_value(json!({
            "apiVersion": "edgelb.io/v1alpha1", "kind": "IPAddressPool",
            "metadata": {"name": REGIONS[1].ip_pool},
            "spec": {"addresses": [REGIONS[1].prefix()], "nodePools": [REGIONS[1].pool]}}))?,
    )
    .await?;
    Api::<BGPAdvertisement>::namespaced(client.clone(), sys)
        .create(
            &pp,
            &serde_json::from_value(json!({
                "apiVersion": "edgelb.io/v1alpha1", "kind": "BGPAdvertisement",
                "metadata": {"name": "kr-all"},
                "spec": {"ipAddressPools": [REGIONS[0].ip_pool, REGIONS[1].ip_pool]}}))?,
        )
        .await?;
    objects::create_namespace(client, NS).await?;
    let svc = objects::lb_service(
        NS,
        SVC,
        json!({"metadata": {"annotations": {
                   "service.openyurt.io/nodepool-labelselector": "k8s-svc=cube",
                   "openyurt.io/topologyKeys": "openyurt.io/nodepool"}},
               "spec": {"externalTrafficPolicy": "Cluster", "selector": {"app": SVC}}}),
    )?;
    Api::<Service>::namespaced(client.clone(), NS)
        .create(&pp, &svc)
        .await?;
    let endpoints: Vec<serde_json::Value> = REGIONS
        .iter()
        .enumerate()
        .flat_map(|(ri, r)| {
            r.nodes()
                .into_iter()
                .enumerate()
                .map(move |(ni, (name, _))| {
                    json!({"addresses": [format!("10.244.{ri}.{}", ni + 2)], "nodeName": name,
                           "conditions": {"ready": true}})
                })
        })
        .collect();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{SVC}-1"), "namespace": NS,
                     "labels": {"kubernetes.io/service-name": SVC}},
        "addressType": "IPv4", "endpoints": endpoints,
        "ports": [{"port": 8080, "protocol": "TCP"}]}))?;
    Api::<EndpointSlice>::namespaced(client.clone(), NS)
        .create(&pp, &slice)
        .await?;
    Ok(())
}

/// Prints a figure and appends it to `target/tmp/figures/kube-regions.txt`.
fn figure(line: String) {
    lab::figure("kube-regions", &format!("kube_regions: {line}"));
}

async fn scenario(cluster: &Cluster, client: &Client) -> anyhow::Result<()> {
    let mut labs = Vec::new();
    for r in &REGIONS {
        labs.push(region_lab(r)?);
    }
    link_routers(&labs[0], &labs[1])?;
    objects(client).await?;
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_edgelb-speaker"));
    let mut speakers: Vec<Speaker> = Vec::new();
    let t_start = Instant::now();
    for l in &labs {
        for (name, ip, ns, _) in &l.nodes {
            let spec = NodeSpec {
                name: name.clone(),
                ip: ip.parse::<IpAddr>()?,
                extra_args: vec!["--lease-seconds=6".into()],
            };
            speakers.push(Speaker::deploy(cluster, ns, &spec, binary).await?);
        }
    }
    let result = checks(client, &labs, &mut speakers, t_start).await;
    if result.is_err() {
        for s in &speakers {
            eprintln!(
                "--- speaker {}:\n{}",
                s.node,
                lab::router::tail(&s.logs(), 40)
            );
        }
        for l in &labs {
            eprintln!("--- FRR:\n{}", lab::router::tail(&l.frr.logs(), 30));
        }
    }
    // The Service carries the fan-out's finalizer: delete it while the speakers run.
    let cleaned = delete_service(client).await;
    drop(speakers);
    result?;
    cleaned
}

async fn checks(
    client: &Client,
    labs: &[RegionLab],
    speakers: &mut [Speaker],
    t_start: Instant,
) -> anyhow::Result<()> {
    let (ra, rb) = (&REGIONS[0], &REGIONS[1]);
    let (la, lb) = (&labs[0], &labs[1]);
    let services: Api<Service> = Api::namespaced(client.clone(), NS);

    // 1. Each region's IP in the Service's status (node pool name order).
    let want_ingress = vec![ra.vip.to_string(), rb.vip.to_string()];
    harness::eventually(
        "both regions' IPs in the Service's status",
        WAIT,
        || async { Ok((ingress(&services).await? == want_ingress).then_some(())) },
    )
    .await
    .with_context(|| format!("ingress: {:?}", ingress_now(&services)))?;
    figure(format!(
        "both IPs in status.loadBalancer.ingress {:?} after the speakers started (load {})",
        t_start.elapsed(),
        lab::load()
    ));

    // 2. Each router learns exactly its region's IP, from exactly its region's nodes.
    let hops = |r: &Region| r.nodes().map(|(_, ip)| ip);
    let (ha, hb) = (hops(ra), hops(rb));
    let want_a = want_rib(ra, &[&ha[0], &ha[1]]);
    let want_b = want_rib(rb, &[&hb[0], &hb[1]]);
    wait_rib(
        &la.frr,
        "router a: its region's IP from both a nodes",
        &want_a,
        WAIT,
    )?;
    wait_rib(
        &lb.frr,
        "router b: its region's IP from both b nodes",
        &want_b,
        WAIT,
    )?;
    figure(format!(
        "router a {want_a:?}, router b {want_b:?} after {:?}",
        t_start.elapsed()
    ));
    for (l, r) in [(la, ra), (lb, rb)] {
        wait_until(
            "zebra installs the ECMP route",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                let out = l.router.ip(&["route", "show", &r.prefix()])?;
                Ok((out.matches("nexthop via").count() == 2).then_some(()))
            },
        )?;
    }

    // 3. A client per region reaches the Service, in its own region.
    let target =
        |r: &Region| -> anyhow::Result<SocketAddr> { Ok(format!("{}:{PORT}", r.vip).parse()?) };
    let every = Duration::from_millis(20);
    let timeout = Duration::from_millis(300);
    let probe_a = Prober::start(la.client.name(), target(ra)?, &ra.reply(), every, timeout);
    let probe_b = Prober::start(lb.client.name(), target(rb)?, &rb.reply(), every, timeout);
    let started = probe_a.started;
    for (p, r) in [(&probe_a, ra), (&probe_b, rb)] {
        wait_until(
            &format!("client {} reaches the Service", r.name),
            Duration::from_secs(10),
            Duration::from_millis(20),
            || Ok(p.attempts().iter().any(|a| a.error.is_none()).then_some(())),
        )?;
    }
    let sampler = Sampler::start(lb.frr.dir().to_path_buf(), started);
    std::thread::sleep(Duration::from_millis(500));

    // 4. Kill the region-a node the client's flow goes to.
    let victim_ip = client_next_hop(la, ra)?;
    let victim = la
        .nodes
        .iter()
        .position(|(_, ip, _, _)| *ip == victim_ip)
        .with_context(|| format!("router a forwards to {victim_ip}, not a region-a node"))?;
    let (victim_name, _, _, victim_port) = &la.nodes[victim];
    let survivor = &la.nodes[1 - victim].1;
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let holder_before = lease_holder(&leases).await?;
    let kill_at = probe_a.now();
    let sp = speakers
        .iter_mut()
        .find(|s| s.node == *victim_name)
        .context("no speaker for the victim")?;
    sp.process.signal(libc::SIGKILL)?;
    sp.process.wait_exit(Duration::from_secs(5))?;
    la.lan.switch().ip(&["link", "set", victim_port, "down"])?;
    let withdrawn = wait_rib(
        &la.frr,
        "router a keeps only the surviving region-a node",
        &want_rib(ra, &[survivor]),
        Duration::from_secs(30),
    )?;
    wait_until(
        "client a connects again after the kill",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            Ok(probe_a
                .attempts()
                .iter()
                .any(|a| a.at > kill_at + withdrawn && a.error.is_none())
                .then_some(()))
        },
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let gap_a = probe_a.window(
        kill_at.saturating_sub(Duration::from_millis(100)),
        probe_a.now(),
    );
    figure(format!(
        "failover in region a: killed {victim_name} (the client's next hop {victim_ip}; Lease \
         holder {holder_before}); router a's path from it gone {withdrawn:?} after the kill; \
         client a: {gap_a} (load {})",
        lab::load()
    ));
    ensure!(
        gap_a.max_gap < FAILOVER_BOUND,
        "client a's gap {:?} is over the stated bound {FAILOVER_BOUND:?}: {:?}",
        gap_a.max_gap,
        gap_a.errors
    );
    ensure!(
        client_next_hop(la, ra)? == *survivor,
        "router a does not forward to the surviving node {survivor}"
    );

    // 5. Relabel np-a: its IP leaves router a; a writer of record must hold the Lease first
    //    (the killed node may have held it).
    let t = Instant::now();
    let holder = harness::eventually("a live speaker holds the Lease", WAIT, || async {
        let h = lease_holder(&leases).await?;
        Ok((!h.is_empty() && !h.contains(victim_name.as_str())).then_some(h))
    })
    .await?;
    figure(format!(
        "Lease held by {holder} ({:?} after the failover check)",
        t.elapsed()
    ));
    let relabel_at = probe_a.now();
    let t = Instant::now();
    label_pool(client, ra, "other").await?;
    let gone = wait_rib(
        &la.frr,
        "router a withdraws region a's IP after the relabel",
        &Rib::new(),
        RELABEL_BOUND,
    )?;
    figure(format!(
        "np-a relabelled (k8s-svc=other): router a withdrew {} {gone:?} after the patch \
         (bound {RELABEL_BOUND:?}; load {})",
        ra.prefix(),
        lab::load()
    ));
    harness::eventually("the Service keeps only region b's IP", WAIT, || async {
        Ok((ingress(&services).await? == [rb.vip.to_string()]).then_some(()))
    })
    .await?;
    figure(format!(
        "status.loadBalancer.ingress = [{}] {:?} after the patch",
        rb.vip,
        t.elapsed()
    ));
    wait_until(
        "client a no longer reaches the Service",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let a = probe_a.attempts();
            Ok(a.last()
                .filter(|l| l.at > relabel_at + gone && l.error.is_some())
                .map(|_| ()))
        },
    )?;
    std::thread::sleep(Duration::from_millis(500));

    // 6. Region b never moved: its route, next hops and client, sampled throughout.
    let samples = sampler.stop();
    let end = probe_b.now();
    let attempts_a = probe_a.stop();
    let whole_b = probe_b.window(Duration::ZERO, end);
    let _ = probe_b.stop();
    let bad: Vec<_> = samples
        .iter()
        .filter(|(_, s)| s.as_ref().map(|r| *r != want_b).unwrap_or(true))
        .take(5)
        .collect();
    figure(format!(
        "region b throughout ({:?}): {} samples of router b's RIB, {} differ; client b: {whole_b}",
        end,
        samples.len(),
        bad.len()
    ));
    ensure!(
        bad.is_empty() && samples.len() >= 10,
        "router b's RIB moved while region a failed over / was relabelled: {bad:?}"
    );
    ensure!(
        whole_b.failed == 0,
        "client b lost connections while region a failed over / was relabelled: {:?}",
        whole_b.errors
    );
    ensure!(
        attempts_a.iter().any(|a| a.error.is_none()),
        "client a never connected"
    );
    Ok(())
}

async fn lease_holder(leases: &Api<Lease>) -> anyhow::Result<String> {
    Ok(leases
        .get_opt("edgelb-leader")
        .await?
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .unwrap_or_default())
}

/// The Service's ingress right now, for messages (best effort).
fn ingress_now(services: &Api<Service>) -> String {
    let services = services.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()
            .and_then(|rt| rt.block_on(ingress(&services)).ok())
    })
    .join()
    .ok()
    .flatten()
    .map(|i| format!("{i:?}"))
    .unwrap_or_default()
}

async fn delete_service(client: &Client) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let _ = services.delete(SVC, &DeleteParams::default()).await;
    harness::eventually("the Service gone (finalizer removed)", WAIT, || async {
        Ok(services.get_opt(SVC).await?.is_none().then_some(()))
    })
    .await
}

/// Deletes what the scenario created and waits until it is gone.
async fn cleanup(client: &Client) -> anyhow::Result<()> {
    let sys = Some(SYSTEM_NAMESPACE);
    let mut c = Cleanup::new()
        .add::<Namespace>(client, None, NS)
        .add::<BGPAdvertisement>(client, sys, "kr-all")
        .add::<Lease>(client, sys, "edgelb-leader");
    for r in &REGIONS {
        c = c
            .add::<IPAddressPool>(client, sys, r.ip_pool)
            .add::<BGPPeer>(client, sys, &format!("kr-router-{}", r.name))
            .add::<NodePool>(client, None, r.pool);
        for (n, _) in r.nodes() {
            c = c.add::<Node>(client, None, &n);
        }
    }
    c.run(WAIT).await
}

#[tokio::test]
async fn two_regions_one_service() -> anyhow::Result<()> {
    if !lab::enabled(TEST) {
        return Ok(());
    }
    let Some(cluster) = Cluster::shared(TEST)? else {
        return Ok(());
    };
    let client = cluster.admin_client().await?;
    then_clean(TEST, scenario(cluster, &client), cleanup(&client)).await?;
    speaker_support::audit::speaker_requests_were_granted_and_listed(cluster)
}

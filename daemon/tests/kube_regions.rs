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
//! A second Service, `cube-l2`, is the same with one IP on each region's LAN announced by L2
//! (`L2Advertisement`; one owner elected per node pool, answering ARP); nodes have
//! kube-proxy's strictARP settings, so only the owner answers.
//!
//! Asserted: each router's `show ip bgp json` holds exactly its region's /32 with next hops
//! exactly its region's nodes; exactly one node of each region answers ARP for its region's
//! LAN IP; a client behind each router reaches both Services in its own region; region a's
//! L2 owner is killed (speaker SIGKILLed, then its link cut), client a's source picked so
//! that its BGP flow goes to that node too: router a keeps only the other region-a node's
//! path, the survivor answers for the LAN IP, both clients' gaps are printed and bounded by
//! [`FAILOVER_BOUND`], while region b's route, next hops, L2 owner (the MAC in router b's
//! ARP cache) and clients never change (sampled throughout); NodePool `np-a` relabelled
//! (`k8s-svc=other`): router a withdraws the IP within [`RELABEL_BOUND`] (measured,
//! printed), nobody answers ARP for region a's LAN IP any more, both Services' ingress keep
//! only region b's IP, region b untouched.

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

use speaker_support::l2;

use edgelb_daemon::api::openyurt::NodePool;
use edgelb_daemon::api::{BGPAdvertisement, BGPPeer, IPAddressPool, L2Advertisement};
use edgelb_tests::kube::objects::{self, then_clean, Cleanup};
use edgelb_tests::kube::{self as harness, deploy, Cluster, NodeSpec, Speaker, SYSTEM_NAMESPACE};
use edgelb_tests::lab::traffic::{Prober, TcpServer};
use edgelb_tests::lab::{self, wait_until, BgpRouter, Frr, FrrConfig, Lan, ListenRange, Netns};

const TEST: &str = "kube_regions::two_regions_one_service";
const NS: &str = "kr-cube";
const SVC: &str = "cube";
/// The same Service announced by L2 (an IP on each region's LAN, one owner per region).
const SVC_L2: &str = "cube-l2";
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
    /// The region's LAN pool (L2) and its one address.
    l2_pool: &'static str,
    l2_vip: &'static str,
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
        l2_pool: "kr-a-lan",
        l2_vip: "10.1.0.100",
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
        l2_pool: "kr-b-lan",
        l2_vip: "10.2.0.100",
    },
];

impl Region {
    fn router_ip(&self) -> String {
        format!("{}.1", self.lan)
    }
    /// The client's addresses: the hash of (source, destination) picks the router's ECMP
    /// next hop, so the test can pick a source whose flow goes to a given node.
    fn client_ips(&self) -> Vec<String> {
        (2..8).map(|i| format!("{}.{i}", self.client_net)).collect()
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
    for ip in r.client_ips() {
        client.addr("eth0", &format!("{ip}/24"))?;
    }
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
        // Every Service IP is local on every node, as kube-proxy (IPVS, strictARP) makes
        // them: only the routers' BGP routes and the L2 owner's ARP answers decide which
        // node a client reaches.
        for dev in ["all", "eth0"] {
            ns.sysctl(&format!("net.ipv4.conf.{dev}.arp_ignore"), "1")?;
            ns.sysctl(&format!("net.ipv4.conf.{dev}.arp_announce"), "2")?;
        }
        for any in &REGIONS {
            for vip in [any.vip, any.l2_vip] {
                ns.ip(&["addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
            }
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

/// The next hop the router's kernel (zebra's ECMP route) picks for the client's flows from
/// `source`.
fn client_next_hop(lab: &RegionLab, r: &Region, source: &str) -> anyhow::Result<String> {
    let out = lab
        .router
        .ip(&["route", "get", r.vip, "from", source, "iif", "eth1"])?;
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

/// What region b looks like from its router: the BGP RIB and the MAC its kernel holds for
/// the L2 IP (the owner's, refreshed by client b's traffic and by any gratuitous ARP).
type View = (Rib, String);

/// One reading: when (since the probers started) and what (or why not).
type Sample = (Duration, Result<View, String>);

/// Region b's view sampled every ~50 ms on a thread until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    fn start(lab: &RegionLab, r: &Region, started: Instant) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (flag, log) = (stop.clone(), samples.clone());
        let (dir, router, ip) = (
            lab.frr.dir().to_path_buf(),
            lab.router.name().to_string(),
            r.l2_vip,
        );
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let at = started.elapsed();
                let got = vtysh(&dir, "show ip bgp json")
                    .and_then(|o| parse_rib(&o))
                    .and_then(|rib| Ok((rib, neigh_mac_in(&router, ip)?)))
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

/// The MAC namespace `ns`'s kernel holds for `ip` on eth0 ("" when none).
fn neigh_mac_in(ns: &str, ip: &str) -> anyhow::Result<String> {
    let out = lab::netns::host(&["ip", "-n", ns, "neigh", "show", ip, "dev", "eth0"])?;
    let mut words = out.split_whitespace();
    Ok(words
        .find(|w| *w == "lladdr")
        .and_then(|_| words.next())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default())
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

/// A Service's ingress IPs, in status order.
async fn ingress(api: &Api<Service>, name: &str) -> anyhow::Result<Vec<String>> {
    Ok(objects::ingress(api, name)
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
    // Per region: a BGP pool and a LAN (L2) pool, each scoped to the region's node pool
    // (one region by the NodePool's labels, the other by its name); each Service picks its
    // kind of pool by label.
    let ips: Api<IPAddressPool> = Api::namespaced(client.clone(), sys);
    for (i, r) in REGIONS.iter().enumerate() {
        let scope = if i == 0 {
            json!({"nodePoolSelectors": [{"matchLabels": {"kr-region": r.name}}]})
        } else {
            json!({"nodePools": [r.pool]})
        };
        for (name, ip, mode) in [(r.ip_pool, r.vip, "bgp"), (r.l2_pool, r.l2_vip, "l2")] {
            let mut spec = json!({"addresses": [format!("{ip}/32")],
                "serviceAllocation": {"serviceSelectors": [{"matchLabels": {"kr-mode": mode}}]}});
            for (k, v) in scope.as_object().into_iter().flatten() {
                spec[k] = v.clone();
            }
            ips.create(
                &pp,
                &serde_json::from_value(json!({
                    "apiVersion": "edgelb.io/v1alpha1", "kind": "IPAddressPool",
                    "metadata": {"name": name}, "spec": spec}))?,
            )
            .await?;
        }
    }
    Api::<L2Advertisement>::namespaced(client.clone(), sys)
        .create(
            &pp,
            &serde_json::from_value(json!({
                "apiVersion": "edgelb.io/v1alpha1", "kind": "L2Advertisement",
                "metadata": {"name": "kr-lan"},
                "spec": {"ipAddressPools": [REGIONS[0].l2_pool, REGIONS[1].l2_pool]}}))?,
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
    for (name, mode) in [(SVC, "bgp"), (SVC_L2, "l2")] {
        create_service(client, name, mode).await?;
    }
    Ok(())
}

/// A Service of both node pools (`k8s-svc=cube`), endpoints on every node.
async fn create_service(client: &Client, name: &str, mode: &str) -> anyhow::Result<()> {
    let pp = PostParams::default();
    let svc = objects::lb_service(
        NS,
        name,
        json!({"metadata": {"labels": {"kr-mode": mode}, "annotations": {
                   "service.openyurt.io/nodepool-labelselector": "k8s-svc=cube",
                   "openyurt.io/topologyKeys": "openyurt.io/nodepool"}},
               "spec": {"externalTrafficPolicy": "Cluster", "selector": {"app": name}}}),
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
                .map(move |(ni, (node, _))| {
                    json!({"addresses": [format!("10.244.{ri}.{}", ni + 2)], "nodeName": node,
                           "conditions": {"ready": true}})
                })
        })
        .collect();
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": format!("{name}-1"), "namespace": NS,
                     "labels": {"kubernetes.io/service-name": name}},
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
    // Region a's second node first: it usually takes the Lease, and it is the L2 owner the
    // rendezvous hash picks for region a's IP, so the kill below usually also moves the
    // writer of record while region b is sampled (the figure names the holder).
    for l in &labs {
        for (name, ip, ns, _) in l.nodes.iter().rev() {
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

    // 1. Each region's IP in each Service's status (node pool name order).
    for (name, want) in [(SVC, [ra.vip, rb.vip]), (SVC_L2, [ra.l2_vip, rb.l2_vip])] {
        let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        harness::eventually(
            &format!("both regions' IPs in {name}'s status"),
            WAIT,
            || async { Ok((ingress(&services, name).await? == want).then_some(())) },
        )
        .await
        .with_context(|| format!("{SVC} ingress: {:?}", ingress_now(&services)))?;
    }
    figure(format!(
        "both IPs of both Services in status.loadBalancer.ingress {:?} after the speakers \
         started (load {})",
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
    // L2: exactly one node answers ARP for each region's LAN IP, a node of that region.
    let mut owners = Vec::new();
    for (l, r) in [(la, ra), (lb, rb)] {
        let macs: Vec<String> = l
            .nodes
            .iter()
            .map(|(_, _, ns, _)| l2::mac_of(ns, "eth0").map(|m| m.to_ascii_lowercase()))
            .collect::<anyhow::Result<_>>()?;
        let mut last = Vec::new();
        let owner = wait_until(
            &format!("one region-{} node answers ARP for {}", r.name, r.l2_vip),
            WAIT,
            Duration::from_millis(100),
            || {
                last = l2::arp_answers(&l.router, r.l2_vip)?;
                Ok(match last.as_slice() {
                    [one] => macs.iter().position(|m| m == one),
                    _ => None,
                })
            },
        )
        .with_context(|| format!("ARP answers {last:?}, the region's nodes {macs:?}"))?;
        owners.push((owner, macs));
    }
    figure(format!(
        "L2 owners: {} in region a, {} in region b, after {:?}",
        la.nodes[owners[0].0].0,
        lb.nodes[owners[1].0].0,
        t_start.elapsed()
    ));

    // 3. The victim: region a's L2 owner. Client a's source is picked so that router a's
    //    ECMP hash sends its BGP flow to that node too.
    let victim = owners[0].0;
    let (victim_name, victim_ip, _, victim_port) = &la.nodes[victim];
    let survivor = &la.nodes[1 - victim].1;
    let survivor_mac = owners[0].1[1 - victim].clone();
    let mut source = None;
    for ip in ra.client_ips() {
        la.client.ip(&[
            "route",
            "replace",
            "default",
            "via",
            &format!("{}.1", ra.client_net),
            "src",
            &ip,
        ])?;
        let hop = client_next_hop(la, ra, &ip)?;
        if hop == *victim_ip {
            source = Some(ip);
            break;
        }
    }
    let source = source.with_context(|| {
        format!(
            "no client address of {:?} hashes to {victim_ip}",
            ra.client_ips()
        )
    })?;

    // 4. A client per region reaches both Services, in its own region.
    let target = |ip: &str| -> anyhow::Result<SocketAddr> { Ok(format!("{ip}:{PORT}").parse()?) };
    let every = Duration::from_millis(20);
    let timeout = Duration::from_millis(300);
    let probe = |l: &RegionLab, r: &Region, ip: &str| -> anyhow::Result<Prober> {
        Ok(Prober::start(
            l.client.name(),
            target(ip)?,
            &r.reply(),
            every,
            timeout,
        ))
    };
    let probe_a = probe(la, ra, ra.vip)?;
    let probe_a_l2 = probe(la, ra, ra.l2_vip)?;
    let probe_b = probe(lb, rb, rb.vip)?;
    let probe_b_l2 = probe(lb, rb, rb.l2_vip)?;
    for (p, what) in [
        (&probe_a, "client a reaches cube (BGP)"),
        (&probe_a_l2, "client a reaches cube-l2 (L2)"),
        (&probe_b, "client b reaches cube (BGP)"),
        (&probe_b_l2, "client b reaches cube-l2 (L2)"),
    ] {
        wait_until(
            what,
            Duration::from_secs(10),
            Duration::from_millis(20),
            || Ok(p.attempts().iter().any(|a| a.error.is_none()).then_some(())),
        )?;
    }
    let owner_b_mac = owners[1].1[owners[1].0].clone();
    let want_view_b: View = (want_b.clone(), owner_b_mac);
    let sampler = Sampler::start(lb, rb, probe_b.started);
    std::thread::sleep(Duration::from_millis(500));

    // 5. Kill it: the speaker SIGKILLed, then the node's link cut (the node is gone).
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let holder_before = lease_holder(&leases).await?;
    let (kill_a, kill_a_l2) = (probe_a.now(), probe_a_l2.now());
    let killed = Instant::now();
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
    let router_a = la.router.name().to_string();
    wait_until(
        "router a's kernel holds the survivor's MAC for region a's LAN IP",
        Duration::from_secs(30),
        Duration::from_millis(10),
        || Ok((neigh_mac_in(&router_a, ra.l2_vip)? == survivor_mac).then_some(())),
    )?;
    let taken_over = killed.elapsed();
    for (p, at, what) in [
        (&probe_a, kill_a, "client a connects to cube again"),
        (&probe_a_l2, kill_a_l2, "client a connects to cube-l2 again"),
    ] {
        wait_until(
            what,
            Duration::from_secs(30),
            Duration::from_millis(20),
            || {
                Ok(p.attempts()
                    .iter()
                    .any(|a| a.at > at + taken_over && a.error.is_none())
                    .then_some(()))
            },
        )?;
    }
    std::thread::sleep(Duration::from_secs(1));
    let back = Duration::from_millis(100);
    let gap_a = probe_a.window(kill_a.saturating_sub(back), probe_a.now());
    let gap_a_l2 = probe_a_l2.window(kill_a_l2.saturating_sub(back), probe_a_l2.now());
    figure(format!(
        "failover in region a: killed {victim_name} (L2 owner and client a's BGP next hop, \
         from source {source}; Lease holder {holder_before}); router a's path from it gone \
         {withdrawn:?} after the kill, the survivor's MAC in router a's ARP cache {taken_over:?}; \
         BGP client a: {gap_a}; L2 client a: {gap_a_l2} (load {})",
        lab::load()
    ));
    for (w, what) in [(&gap_a, "BGP"), (&gap_a_l2, "L2")] {
        ensure!(
            w.max_gap < FAILOVER_BOUND,
            "{what} client a's gap {:?} is over the stated bound {FAILOVER_BOUND:?}: {:?}",
            w.max_gap,
            w.errors
        );
    }
    ensure!(
        client_next_hop(la, ra, &source)? == *survivor,
        "router a does not forward to the surviving node {survivor}"
    );

    // 6. Relabel np-a: its IPs leave region a; a writer of record must hold the Lease
    //    first (the killed node may have held it).
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
    for (name, ip) in [(SVC, rb.vip), (SVC_L2, rb.l2_vip)] {
        harness::eventually(
            &format!("{name} keeps only region b's IP"),
            WAIT,
            || async { Ok((ingress(&services, name).await? == [ip.to_string()]).then_some(())) },
        )
        .await?;
    }
    figure(format!(
        "both Services' ingress = region b's IP only {:?} after the patch",
        t.elapsed()
    ));
    wait_until(
        "client a no longer reaches cube",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let a = probe_a.attempts();
            Ok(a.last()
                .filter(|l| l.at > relabel_at + gone && l.error.is_some())
                .map(|_| ()))
        },
    )?;
    wait_until(
        "nobody answers ARP for region a's LAN IP",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            Ok(l2::arp_answers(&la.router, ra.l2_vip)?
                .is_empty()
                .then_some(()))
        },
    )?;
    figure(format!(
        "no ARP answer for {} {:?} after the patch",
        ra.l2_vip,
        t.elapsed()
    ));
    std::thread::sleep(Duration::from_millis(500));

    // 7. Region b never moved: its route, next hops, L2 owner and clients, sampled
    //    throughout.
    let samples = sampler.stop();
    let end = probe_b.now();
    let attempts_a = probe_a.stop();
    drop(probe_a_l2);
    let whole_b = probe_b.window(Duration::ZERO, end);
    let whole_b_l2 = probe_b_l2.window(Duration::ZERO, end);
    drop((probe_b, probe_b_l2));
    let bad: Vec<_> = samples
        .iter()
        .filter(|(_, s)| s.as_ref().map(|v| *v != want_view_b).unwrap_or(true))
        .take(5)
        .collect();
    figure(format!(
        "region b throughout ({end:?}): {} samples of router b's RIB and ARP cache, {} differ; \
         BGP client b: {whole_b}; L2 client b: {whole_b_l2}",
        samples.len(),
        bad.len()
    ));
    ensure!(
        bad.is_empty() && samples.len() >= 10,
        "router b's view moved while region a failed over / was relabelled (want \
         {want_view_b:?}): {bad:?}"
    );
    for (w, what) in [(&whole_b, "BGP"), (&whole_b_l2, "L2")] {
        ensure!(
            w.failed == 0,
            "{what} client b lost connections while region a failed over / was relabelled: {:?}",
            w.errors
        );
    }
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
            .and_then(|rt| rt.block_on(ingress(&services, SVC)).ok())
    })
    .join()
    .ok()
    .flatten()
    .map(|i| format!("{i:?}"))
    .unwrap_or_default()
}

async fn delete_service(client: &Client) -> anyhow::Result<()> {
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    for name in [SVC, SVC_L2] {
        let _ = services.delete(name, &DeleteParams::default()).await;
    }
    harness::eventually("the Services gone (finalizer removed)", WAIT, || async {
        let left = [
            services.get_opt(SVC).await?.is_some(),
            services.get_opt(SVC_L2).await?.is_some(),
        ];
        Ok((!left.contains(&true)).then_some(()))
    })
    .await
}

/// Deletes what the scenario created and waits until it is gone.
async fn cleanup(client: &Client) -> anyhow::Result<()> {
    let sys = Some(SYSTEM_NAMESPACE);
    let mut c = Cleanup::new()
        .add::<Namespace>(client, None, NS)
        .add::<BGPAdvertisement>(client, sys, "kr-all")
        .add::<L2Advertisement>(client, sys, "kr-lan")
        .add::<Lease>(client, sys, "edgelb-leader");
    for r in &REGIONS {
        c = c
            .add::<IPAddressPool>(client, sys, r.ip_pool)
            .add::<IPAddressPool>(client, sys, r.l2_pool)
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

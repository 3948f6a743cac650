//! End to end in namespaces, driven by the real daemon against the real API server: a
//! client's TCP connections to the EIP of the emulated ENS load balancer reach the pod behind
//! the Service's NodePort, and with `edgelb.io/pass-through: "true"` (ingress `ipMode: Proxy`)
//! a client inside the cluster (a pod's namespace) reaches the Service through the load
//! balancer's address too: its connection leaves the node, enters the load balancer and comes
//! back to the NodePort from the load balancer's side (the node holds no local route to the
//! EIP, so nothing short-circuits it).
//!
//! ```text
//!  LAN 192.0.2.0/24 (bridge in its own namespace)
//!   ├─ "ktn" node 192.0.2.51: the speaker (as deployed), NodePort proxy -> pod, forwards pods
//!   │    └─ veth ── "ktp" pod 10.244.7.2 (server :8080, default via 10.244.7.1)
//!   ├─ "ktc" cloud 192.0.2.50: EIP/LB pools as local routes, the emulator's data plane
//!   └─ "ktx" client 192.0.2.60: route to the EIPs via 192.0.2.50
//! ```
//!
//! There is no kube-proxy here (and no iptables in the lab), so the node's NodePort is a
//! userspace proxy to the pod, kube-proxy's oldest mode; it records who connected to it.

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use kube::Client;
use serde_json::json;

use edgelb_tests::kube::forward::in_netns;
use edgelb_tests::kube::{self as harness, Cluster};
use edgelb_tests::lab::{netns::veth, Lan, Netns};
use support::cluster::{self as cloud, REGION, WAIT};
use support::Emulator;

const TEST: &str = "kube_elb_traffic::clients_reach_the_pods_through_the_cloud_load_balancer";
const NS: &str = "kt-elb";
const NODE: &str = "kt-node";
const NODE_IP: &str = "192.0.2.51";
const CLOUD_IP: &str = "192.0.2.50";
const CLIENT_IP: &str = "192.0.2.60";
const POD: &str = "10.244.7.2:8080";
const POOL: &str = "np-kt";
const CREDENTIALS: &str = "kt-elb-credentials";
/// The emulator's default address pools (`--lb-pool`, `--eip-pool`).
const POOLS: [&str; 2] = ["10.99.0.0/24", "10.98.0.0/24"];

/// Who connected to the node's NodePort, in order.
type Peers = Arc<Mutex<Vec<SocketAddr>>>;

fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 4096];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// The node's NodePort: accepts in the node's namespace, dials the pod from a thread in that
/// namespace, copies both ways; until `stop`.
fn node_port_proxy(
    node: &str,
    port: u16,
    pod: SocketAddr,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<Peers> {
    let listener = in_netns(node, move || {
        let l = TcpListener::bind(("0.0.0.0", port))?;
        l.set_nonblocking(true)?;
        Ok(l)
    })?;
    let peers = Peers::default();
    let seen = peers.clone();
    let ns = node.to_string();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let Ok((down, peer)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            seen.lock().unwrap().push(peer);
            let _ = down.set_nonblocking(false);
            let Ok(up) = in_netns(&ns, move || {
                Ok(TcpStream::connect_timeout(&pod, Duration::from_secs(3))?)
            }) else {
                continue;
            };
            let (d2, u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
            std::thread::spawn(move || pump(down, up));
            std::thread::spawn(move || pump(u2, d2));
        }
    });
    Ok(peers)
}

/// The pod's server: answers each connection with `pod <its address>` and closes.
fn pod_server(pod_ns: &str, at: SocketAddr, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let l = in_netns(pod_ns, move || {
        let l = TcpListener::bind(at)?;
        l.set_nonblocking(true)?;
        Ok(l)
    })?;
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.write_all(format!("pod {at}").as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    Ok(())
}

/// One TCP exchange from inside `ns`: what the far end said.
fn ask(ns: &str, to: SocketAddr) -> anyhow::Result<String> {
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(3))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
}

struct Lab {
    _lan: Lan,
    node: Netns,
    pod: Netns,
    cloud: Netns,
    client: Netns,
}

fn lab() -> anyhow::Result<Lab> {
    let mut lan = Lan::new()?;
    let node = lan.join("ktn", &format!("{NODE_IP}/24"))?;
    let cloud = lan.join("ktc", &format!("{CLOUD_IP}/24"))?;
    let client = lan.join("ktx", &format!("{CLIENT_IP}/24"))?;
    let pod = Netns::new("ktp")?;
    veth(&node, "pod0", &pod, "eth0")?;
    node.addr("pod0", "10.244.7.1/24")?;
    pod.addr("eth0", "10.244.7.2/24")?;
    pod.ip(&["route", "add", "default", "via", "10.244.7.1"])?;
    node.sysctl("net.ipv4.ip_forward", "1")?;
    cloud.ip(&["route", "add", "10.244.7.0/24", "via", NODE_IP])?;
    for p in POOLS {
        cloud.ip(&["route", "add", "local", p, "dev", "lo"])?;
        client.ip(&["route", "add", p, "via", CLOUD_IP])?;
        node.ip(&["route", "add", p, "via", CLOUD_IP])?;
    }
    Ok(Lab {
        _lan: lan,
        node,
        pod,
        cloud,
        client,
    })
}

async fn scenario(
    cluster: &Cluster,
    client: &Client,
    lab: &Lab,
    emu: &Emulator,
) -> anyhow::Result<()> {
    cloud::prepare(client, NS, CREDENTIALS).await?;
    cloud::cloud_node(client, NODE, NODE_IP, POOL, REGION, "i-kt1").await?;
    cloud::ens_pool(client, POOL, REGION, json!({"k8s-svc": "web"})).await?;
    let services: Api<Service> = Api::namespaced(client.clone(), NS);
    let ports = json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]);
    services
        .create(
            &PostParams::default(),
            &cloud::cloud_service(
                NS,
                "web",
                "k8s-svc=web",
                json!({"edgelb.io/pass-through": "true"}),
                ports,
            )?,
        )
        .await?;
    let node_port = services.get("web").await?.spec.unwrap().ports.unwrap()[0]
        .node_port
        .context("no nodePort allocated")?;
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_exit = StopOnDrop(stop.clone());
    let pod: SocketAddr = POD.parse()?;
    pod_server(lab.pod.name(), pod, stop.clone())?;
    let peers = node_port_proxy(
        lab.node.name(),
        u16::try_from(node_port)?,
        pod,
        stop.clone(),
    )?;

    let (speaker, _to_emu) = cloud::cloud_speaker(
        cluster,
        &lab.node,
        NODE,
        NODE_IP,
        CREDENTIALS,
        "kt-cluster",
        emu.addr,
        100,
        &[],
    )
    .await?;
    let result = traffic(&services, lab, &peers).await;
    speaker.log_if_failed(result)
}

struct StopOnDrop(Arc<AtomicBool>);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn traffic(services: &Api<Service>, lab: &Lab, peers: &Peers) -> anyhow::Result<()> {
    // The EIP in the Service's status, with ipMode Proxy (pass-through asked for).
    let t = std::time::Instant::now();
    let (eip, mode) = harness::eventually("the EIP in the Service's status", WAIT, || async {
        let s = services.get("web").await?;
        let ing = s
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .unwrap_or_default();
        Ok(ing
            .first()
            .and_then(|i| Some((i.ip.clone()?, i.ip_mode.clone().unwrap_or_default()))))
    })
    .await?;
    eprintln!("ingress {eip} ({mode}) after {:?}", t.elapsed());
    ensure!(
        mode == "Proxy",
        "ipMode {mode:?}, want Proxy with pass-through"
    );
    let to = SocketAddr::new(eip.parse()?, 80);

    // An outside client: every connection reaches the pod, each arriving at the NodePort
    // from the load balancer's side.
    let (client, node, pod) = (lab.client.name(), lab.node.name(), lab.pod.name());
    harness::eventually("a first answer through the EIP", WAIT, || async {
        Ok(ask(client, to).ok())
    })
    .await?;
    for i in 0..20 {
        let answer = ask(client, to).with_context(|| format!("connection {i} to {to}"))?;
        ensure!(answer == format!("pod {POD}"), "connection {i}: {answer:?}");
    }
    // In-cluster: the pod's own namespace, to the EIP. The node has no local route to it:
    // the connection goes out to the load balancer and comes back.
    let route = lab.node.ip(&["route", "get", &eip])?;
    ensure!(
        route.contains(&format!("via {CLOUD_IP}")) && !route.starts_with("local"),
        "the node routes {eip} as {route:?}, not via the load balancer"
    );
    let before = peers.lock().unwrap().len();
    for i in 0..10 {
        let answer = ask(pod, to).with_context(|| format!("in-cluster connection {i}"))?;
        ensure!(answer == format!("pod {POD}"), "in-cluster {i}: {answer:?}");
    }
    let seen = peers.lock().unwrap().clone();
    ensure!(
        seen.len() >= before + 10,
        "{} NodePort connections",
        seen.len()
    );
    let cloud: IpAddr = CLOUD_IP.parse()?;
    ensure!(
        seen.iter().all(|p| p.ip() == cloud),
        "a NodePort connection came from elsewhere than the load balancer: {seen:?}"
    );
    println!(
        "through the emulated ENS load balancer {to}: 20 outside + 10 in-cluster (pass-through, ipMode {mode}) \
         connections reached {POD}; the NodePort saw {} connections, all from the LB ({CLOUD_IP}); node {node}",
        seen.len()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reach_the_pods_through_the_cloud_load_balancer() -> anyhow::Result<()> {
    let Some((cluster, client)) = harness::cluster_for(TEST).await? else {
        return Ok(());
    };
    let lab = lab()?;
    let emu = Emulator::start(&["--dataplane-netns", lab.cloud.name()]);
    emu.register(&[("i-kt1", NODE_IP)]);
    cloud::bounded(
        TEST,
        Duration::from_secs(150),
        scenario(cluster, &client, &lab, &emu),
        cloud::cleanup(&client, NS, CREDENTIALS, &[POOL], &[NODE]),
    )
    .await
}

//! Graceful restart of the real `edgelb-speaker` binary, with a client's traffic through a
//! router that installs BGP routes in its kernel (FRR bgpd + zebra):
//!
//! ```text
//!   client 203.0.113.2 ── router (FRR zebra+bgpd, AS 64500) ── node-0 192.0.2.10 (edgelb-speaker)
//!                         203.0.113.1 | 192.0.2.1                 198.51.100.10/32 local, TCP :8080
//! ```
//!
//! A client opens a TCP connection to the Service IP every 10 ms the whole time.
//! 1. Planned restart (SIGTERM, the shipped default `--bgp-stop=restart`): the router keeps
//!    the route, marked stale, while no speaker runs; the next speaker (same `--socket`
//!    directory, so it finds the `bgp-restart` marker) sends the R bit, its table and
//!    End-of-RIB. **No client connection fails.**
//! 2. Control: the same stop with `--bgp-stop=withdraw` withdraws at once, and the client
//!    does see failed connections: the probe can see a gap.
//! 3. Crash (SIGKILL) with `gracefulRestartTime: 5s`: the router keeps the route about 5 s,
//!    then withdraws it from its RIB and its kernel.
//!
//! The same planned restart as deployed (API server, shipped DaemonSet, RBAC and
//! ServiceAccount token; the pod replaced as a rolling update does): the second test.
//!
//! Figures go to `target/tmp/figures/graceful_restart.txt`.
mod speaker_support;

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use edgelb_tests::lab::frr::BfdProfile;
use edgelb_tests::lab::traffic::{Prober, TcpServer, Window};
use edgelb_tests::lab::{self, netns::veth, wait_until, Frr, FrrConfig, Neighbor, Netns};
use speaker_support::{cluster_yaml, write_atomic, Dir, SpeakerProc, Svc};

const NODE: &str = "192.0.2.10";
const ROUTER: &str = "192.0.2.1";
const SVC_IP: &str = "198.51.100.10";
const PREFIX: &str = "198.51.100.10/32";
const PORT: u16 = 8080;

fn yaml(restart_time: &str) -> String {
    yaml_with(restart_time, "")
}

/// The cluster file; `extra_peer` is appended to the BGPPeer's spec (e.g. `, bfdProfile: x`)
/// and a BFDProfile `fast` (MetalLB's defaults, 3 x 300 ms) is always there.
fn yaml_with(restart_time: &str, extra_peer: &str) -> String {
    let peers = format!(
        "---\napiVersion: edgelb.io/v1alpha1\nkind: BFDProfile\n\
         metadata: {{name: fast, namespace: edgelb-system}}\nspec: {{}}\n\
         ---\napiVersion: edgelb.io/v1alpha1\nkind: BGPPeer\n\
         metadata: {{name: router, namespace: edgelb-system}}\n\
         spec: {{myASN: 64512, peerASN: 64500, peerAddress: \"{ROUTER}\", holdTime: 9s, \
         enableGracefulRestart: true, gracefulRestartTime: {restart_time}{extra_peer}}}\n\
         ---\napiVersion: edgelb.io/v1alpha1\nkind: BGPAdvertisement\n\
         metadata: {{name: all, namespace: edgelb-system}}\nspec: {{}}\n"
    );
    cluster_yaml(
        &[("node-0", NODE)],
        "198.51.100.10-198.51.100.19",
        &[Svc {
            name: "web",
            ip: SVC_IP,
            local: false,
            endpoints: vec!["node-0"],
        }],
        &peers,
    )
}

fn figure(line: &str) {
    lab::figure("graceful_restart", line);
}

/// The router's paths for the Service prefix: (present, stale).
fn bgp_path(frr: &Frr) -> anyhow::Result<Option<bool>> {
    let out = frr.vtysh(&format!("show bgp ipv4 unicast {PREFIX} json"))?;
    let v: serde_json::Value = serde_json::from_str(&out).context("FRR prefix JSON")?;
    Ok(v["paths"]
        .as_array()
        .and_then(|p| p.first())
        .map(|p| p["stale"].as_bool() == Some(true)))
}

/// The route in the router's kernel (installed by zebra).
fn kernel_route(router: &Netns) -> anyhow::Result<bool> {
    let out = router.ip(&["route", "show", PREFIX])?;
    Ok(out.contains("via 192.0.2.10"))
}

/// What FRR says of the neighbour's graceful restart: (End-of-RIB received for IPv4
/// unicast, the R bit in the peer's last OPEN, the whole JSON for messages).
fn gr_info(frr: &Frr) -> anyhow::Result<(bool, bool, String)> {
    let out = frr.vtysh(&format!("show bgp neighbors {NODE} json"))?;
    let v: serde_json::Value = serde_json::from_str(&out).context("FRR neighbor JSON")?;
    let gr = &v[NODE]["gracefulRestartInfo"];
    let eor = gr["ipv4Unicast"]["endOfRibStatus"]["endOfRibRecv"].as_bool() == Some(true);
    let r_bit = gr["rBit"].as_bool() == Some(true);
    Ok((eor, r_bit, gr.to_string()))
}

/// The namespaces, and the Service's TCP server on the node (`target`).
struct Lab {
    // The server first: dropped before its namespace.
    _server: TcpServer,
    target: SocketAddr,
    _client: Netns,
    router: Netns,
    node: Netns,
    client_name: String,
}

fn lab() -> anyhow::Result<Lab> {
    let client = Netns::new("cl")?;
    let router = Netns::new("rt")?;
    let node = Netns::new("n")?;
    veth(&router, "eth0", &node, "eth0")?;
    veth(&router, "eth1", &client, "eth0")?;
    router.addr("eth0", &format!("{ROUTER}/24"))?;
    router.addr("eth1", "203.0.113.1/24")?;
    router.sysctl("net.ipv4.ip_forward", "1")?;
    node.addr("eth0", &format!("{NODE}/24"))?;
    node.ip(&["route", "add", "default", "via", ROUTER])?;
    // The Service IP is local on the node, as kube-proxy's IPVS interface makes it.
    node.ip(&["addr", "add", &format!("{SVC_IP}/32"), "dev", "lo"])?;
    client.addr("eth0", "203.0.113.2/24")?;
    client.ip(&["route", "add", "default", "via", "203.0.113.1"])?;
    let target: SocketAddr = format!("{SVC_IP}:{PORT}").parse()?;
    Ok(Lab {
        _server: TcpServer::start(node.name(), target, "ok\n")?,
        target,
        client_name: client.name().to_string(),
        _client: client,
        router,
        node,
    })
}

/// FRR (zebra + bgpd) on the router with the node as its neighbour.
fn router(lab: &Lab) -> anyhow::Result<Frr> {
    Frr::start_with_zebra(
        &lab.router,
        FrrConfig::new(ROUTER.parse()?, 64500).neighbor(Neighbor::new(NODE.parse()?, 64512)),
    )
}

fn wait_path(frr: &Frr, stale: bool, timeout: Duration) -> anyhow::Result<Duration> {
    let t = Instant::now();
    wait_until(
        &format!("FRR path for {PREFIX} (stale: {stale})"),
        timeout,
        Duration::from_millis(20),
        || Ok((bgp_path(frr)? == Some(stale)).then_some(())),
    )?;
    Ok(t.elapsed())
}

fn wait_eor(frr: &Frr, timeout: Duration) -> anyhow::Result<Duration> {
    let t = Instant::now();
    wait_until(
        "FRR to receive End-of-RIB",
        timeout,
        Duration::from_millis(20),
        || Ok(gr_info(frr)?.0.then_some(())),
    )
    .with_context(|| {
        let info = gr_info(frr).map(|i| i.2).unwrap_or_default();
        format!("FRR graceful restart info: {info}")
    })?;
    Ok(t.elapsed())
}

/// The node's speakers: each reads `file` and uses the socket in `run`, the DaemonSet's
/// hostPath (it outlives each speaker process, so the next one finds the restart marker).
struct Speakers<'a> {
    lab: &'a Lab,
    dir: &'a Dir,
    file: PathBuf,
    run: PathBuf,
    started: Cell<u32>,
}

impl<'a> Speakers<'a> {
    fn new(lab: &'a Lab, dir: &'a Dir, yaml: &str) -> anyhow::Result<Speakers<'a>> {
        let file = dir.path("cluster.yaml");
        write_atomic(&file, yaml)?;
        let run = dir.path("run");
        std::fs::create_dir_all(&run)?;
        Ok(Speakers {
            lab,
            dir,
            file,
            run,
            started: Cell::new(0),
        })
    }

    /// The next speaker (`speaker-N.log`) with `extra` arguments.
    fn start(&self, extra: &[&str]) -> anyhow::Result<SpeakerProc> {
        let n = self.started.get() + 1;
        self.started.set(n);
        let socket = self.run.join("speaker.sock").to_string_lossy().into_owned();
        let mut args = vec!["--socket", socket.as_str()];
        args.extend_from_slice(extra);
        SpeakerProc::start(
            &self.lab.node,
            "node-0",
            &self.file,
            self.dir.path(&format!("speaker-{n}.log")),
            &args,
        )
    }
}

/// Once the router's kernel holds the route: the client's probe (a TCP connection to
/// `target` every 10 ms), after its first good connection.
fn serving(lab: &Lab, target: SocketAddr) -> anyhow::Result<Prober> {
    wait_until(
        "zebra to install the route",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || Ok(kernel_route(&lab.router)?.then_some(())),
    )?;
    let probe = Prober::start(
        &lab.client_name,
        target,
        "ok\n",
        Duration::from_millis(10),
        Duration::from_millis(500),
    );
    wait_until(
        "the client's first connection",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            Ok(probe
                .attempts()
                .iter()
                .any(|a| a.error.is_none())
                .then_some(()))
        },
    )?;
    Ok(probe)
}

/// What a planned restart showed.
struct Planned {
    probe: Prober,
    /// The new speaker, running.
    second: SpeakerProc,
    /// How long the old speaker took to exit after SIGTERM.
    exit: Duration,
    /// The router's path (present, stale) and its kernel route, read after the pause.
    stale: Option<bool>,
    in_kernel: bool,
    /// The restart marker beside the socket while no speaker ran.
    marker: String,
    /// bfdd's sessions while no speaker ran (BFD only).
    bfd_after_stop: String,
    /// From the new speaker's start to the router's End-of-RIB; from the stop to the
    /// route no longer stale.
    eor: Duration,
    back: Duration,
    /// The client's connections from the stop to 500 ms after the route came back.
    window: Window,
}

/// A planned restart under client traffic: a speaker (`extra_args`) serves (the route in
/// the router's kernel, BFD up with `bfd`, the client's first connection), is stopped with
/// SIGTERM; after `pause` the router's view is read; the next speaker (`extra_args` then
/// `second_args`) starts and the router takes its End-of-RIB.
fn planned_restart(
    speakers: &Speakers,
    frr: &Frr,
    target: SocketAddr,
    extra_args: &[&str],
    second_args: &[&str],
    bfd: bool,
    pause: Duration,
) -> anyhow::Result<Planned> {
    let lab = speakers.lab;
    let mut first = speakers.start(extra_args)?;
    wait_path(frr, false, Duration::from_secs(30))
        .with_context(|| format!("speaker log:\n{}", first.logs()))?;
    if bfd {
        wait_until(
            "FRR's BFD session Up",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || Ok(frr.bfd_up(NODE.parse()?)?.then_some(())),
        )?;
    }
    let probe = serving(lab, target)?;

    let stop_at = probe.now();
    let exit = first.terminate(Duration::from_secs(5))?;
    std::thread::sleep(pause);
    let stale = bgp_path(frr)?;
    let in_kernel = kernel_route(&lab.router)?;
    let marker = std::fs::read_to_string(speakers.run.join("bgp-restart")).unwrap_or_default();
    let bfd_after_stop = if bfd {
        frr.vtysh_bfdd("show bfd peers json").unwrap_or_default()
    } else {
        String::new()
    };
    let mut args = extra_args.to_vec();
    args.extend_from_slice(second_args);
    let second = speakers.start(&args)?;
    let eor = wait_eor(frr, Duration::from_secs(30))
        .with_context(|| format!("second speaker:\n{}", second.logs()))?;
    wait_path(frr, false, Duration::from_secs(5))?;
    let back = probe.now() - stop_at;
    // A little traffic after End-of-RIB: the route must not be flushed then either.
    std::thread::sleep(Duration::from_millis(500));
    let window = probe.window(stop_at, probe.now());
    Ok(Planned {
        probe,
        second,
        exit,
        stale,
        in_kernel,
        marker,
        bfd_after_stop,
        eor,
        back,
        window,
    })
}

#[test]
fn planned_restart_keeps_client_traffic_and_a_crash_withdraws_after_the_restart_time(
) -> anyhow::Result<()> {
    if !lab::enabled("speaker_graceful_restart") {
        return Ok(());
    }
    let dir = Dir::new("speaker-gr")?;
    let lab = lab()?;
    let frr = router(&lab)?;
    let target = lab.target;
    let speakers = Speakers::new(&lab, &dir, &yaml("30s"))?;

    // 1. Planned restart.
    let Planned {
        probe,
        mut second,
        exit,
        stale,
        in_kernel,
        marker,
        eor,
        back,
        window: planned,
        ..
    } = planned_restart(
        &speakers,
        &frr,
        target,
        &[],
        &["--bgp-stop", "withdraw"],
        false,
        Duration::from_secs(1),
    )?;
    let (_, r_bit, info) = gr_info(&frr)?;
    figure(&format!(
        "graceful restart (edgelb-speaker, FRR zebra+bgpd): planned restart: {planned}; \
         old speaker exited {exit:?} after SIGTERM, router held the route stale, new session's \
         End-of-RIB {back:?} after the stop (waited {eor:?} after the start); load {}",
        lab::load()
    ));
    assert_eq!(
        stale,
        Some(true),
        "1 s after a planned stop the router must hold the route as stale"
    );
    assert!(in_kernel, "the stale route left the router's kernel");
    assert!(
        marker.starts_with("until="),
        "no restart marker beside the socket"
    );
    assert!(
        second.logs().contains("back from a planned restart"),
        "the second speaker did not find the marker:\n{}",
        second.logs()
    );
    assert!(
        r_bit,
        "the router did not see the R bit after a planned restart: {info}"
    );
    assert_eq!(
        planned.failed, 0,
        "client connections failed during a planned restart: {:?}",
        planned.errors
    );
    assert!(planned.attempts > 20, "too few probes: {planned}");

    // 2. Control: a stop that withdraws makes the client fail (the probe sees gaps).
    let stop_at = probe.now();
    second.terminate(Duration::from_secs(5))?;
    wait_until(
        "the route to leave the router's kernel after a withdrawing stop",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || Ok((!kernel_route(&lab.router)?).then_some(())),
    )?;
    // Bounded: a refused SYN fails at once, but the router rate-limits its ICMP errors, so
    // later attempts run into the client's 500 ms connect timeout.
    let _ = wait_until(
        "a failed client connection after the withdrawal",
        Duration::from_secs(3),
        Duration::from_millis(20),
        || Ok((probe.window(stop_at, probe.now()).failed > 0).then_some(())),
    );
    let withdrawn = probe.window(stop_at, probe.now());
    figure(&format!(
        "graceful restart: control, --bgp-stop=withdraw: {withdrawn}; load {}",
        lab::load()
    ));
    assert!(
        withdrawn.failed > 0,
        "the client saw no failure while the route was withdrawn: the probe is blind"
    );

    // 3. Crash with a 5 s restart time.
    write_atomic(&speakers.file, &yaml("5s"))?;
    let third = speakers.start(&[])?;
    wait_eor(&frr, Duration::from_secs(30))
        .with_context(|| format!("third speaker:\n{}", third.logs()))?;
    wait_path(&frr, false, Duration::from_secs(5))?;
    wait_until(
        "the client to get through again",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let now = probe.now();
            let w = probe.window(now.saturating_sub(Duration::from_millis(200)), now);
            Ok((w.attempts > 0 && w.failed == 0).then_some(()))
        },
    )?;
    let killed = Instant::now();
    let killed_at = probe.now();
    third.process.signal(libc::SIGKILL)?;
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        bgp_path(&frr)?,
        Some(true),
        "1 s after a crash the router must still hold the route as stale"
    );
    // The last probe-clock instant the router's kernel still held the route, read before
    // each look: a route seen at the end of a look was there at its start (it does not come
    // back), however long the look took on a loaded machine.
    let mut kernel_held_at = killed_at;
    let mut look_at_kernel = || -> anyhow::Result<bool> {
        let before = probe.now();
        let held = kernel_route(&lab.router)?;
        if held {
            kernel_held_at = before;
        }
        Ok(held)
    };
    wait_until(
        "the router to withdraw the route after the restart time",
        Duration::from_secs(30),
        Duration::from_millis(20),
        || {
            look_at_kernel()?;
            Ok(bgp_path(&frr)?.is_none().then_some(()))
        },
    )?;
    let gone = killed.elapsed();
    wait_until(
        "the route to leave the router's kernel",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || Ok((!look_at_kernel()?).then_some(())),
    )?;
    let kernel_gone = killed.elapsed();
    let _ = wait_until(
        "a failed client connection after the withdrawal",
        Duration::from_secs(3),
        Duration::from_millis(20),
        || Ok((probe.window(killed_at, probe.now()).failed > 0).then_some(())),
    );
    // Less 100 ms: a connection started just before the withdrawal may lose its last ACK.
    let while_stale = probe.window(
        killed_at,
        kernel_held_at.saturating_sub(Duration::from_millis(100)),
    );
    let attempts = probe.stop();
    let first_fail = attempts
        .iter()
        .find(|a| a.at >= killed_at && a.error.is_some())
        .map(|a| a.at - killed_at);
    figure(&format!(
        "graceful restart: crash (SIGKILL), gracefulRestartTime 5s: route withdrawn from the RIB {gone:?} and from the kernel {kernel_gone:?} after the kill (hold time 9 s); until then {while_stale}; first failed client connection {first_fail:?} after the kill; load {}",
        lab::load()
    ));
    assert!(
        while_stale.attempts > 0,
        "no client connection while the route was stale: the window proves nothing"
    );
    assert_eq!(
        while_stale.failed, 0,
        "client connections failed while the router still held the crashed speaker's route: {:?}",
        while_stale.errors
    );
    assert!(
        gone >= Duration::from_secs(4),
        "withdrawn before the restart time: {gone:?}"
    );
    assert!(
        gone < Duration::from_secs(9),
        "kept past the restart time: {gone:?}"
    );
    drop(frr);
    Ok(())
}

/// The same planned restart as deployed: a real API server, the shipped CRDs, RBAC and
/// DaemonSet (its args, so `--socket=/run/edgelb/speaker.sock` on the `run` hostPath, which
/// the harness keeps per node across pods), the shipped ServiceAccount's token. The pod is
/// replaced as a rolling update does it: SIGTERM, exit, a new pod on the same node. The
/// router keeps the route stale, the new pod finds the marker in the hostPath, sends the R
/// bit and End-of-RIB, and the client's connections never fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_deployed_a_pod_replacement_keeps_client_traffic() -> anyhow::Result<()> {
    use edgelb_tests::kube::{self as harness, deploy, NodeSpec, Speaker};
    const TEST: &str =
        "speaker_graceful_restart::as_deployed_a_pod_replacement_keeps_client_traffic";
    const NODE_NAME: &str = "gr-node-0";
    let Some((cluster, admin)) = harness::cluster_for(TEST).await? else {
        return Ok(());
    };
    let lab = lab()?;
    let frr = router(&lab)?;
    let target = lab.target;
    harness::create_node(&admin, NODE_NAME, NODE.parse()?, &[]).await?;
    let objects = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: gr-test}}\n\
         ---\napiVersion: edgelb.io/v1alpha1\nkind: IPAddressPool\n\
         metadata: {{name: gr-pool, namespace: edgelb-system}}\nspec: {{addresses: [\"{PREFIX}\"]}}\n\
         ---\napiVersion: edgelb.io/v1alpha1\nkind: BGPPeer\n\
         metadata: {{name: gr-router, namespace: edgelb-system}}\n\
         spec: {{myASN: 64512, peerASN: 64500, peerAddress: \"{ROUTER}\", holdTime: 9s, \
         enableGracefulRestart: true, gracefulRestartTime: 30s}}\n\
         ---\napiVersion: edgelb.io/v1alpha1\nkind: BGPAdvertisement\n\
         metadata: {{name: gr-all, namespace: edgelb-system}}\nspec: {{ipAddressPools: [gr-pool]}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: gr-test}}\n\
         spec: {{type: LoadBalancer, loadBalancerClass: edgelb.io/speaker, ports: [{{port: {PORT}, protocol: TCP}}]}}\n\
         ---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: web-1, namespace: gr-test, labels: {{kubernetes.io/service-name: web}}}}\n\
         addressType: IPv4\nendpoints: [{{addresses: [\"10.244.0.5\"], nodeName: {NODE_NAME}, conditions: {{ready: true}}}}]\n"
    );
    deploy::apply(&admin, &deploy::parse_yaml(&objects, TEST)?, TEST).await?;
    let node = NodeSpec {
        name: NODE_NAME.into(),
        ip: NODE.parse()?,
        extra_args: vec![],
    };
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_edgelb-speaker"));
    let mut first = Speaker::deploy(cluster, &lab.node, &node, binary).await?;
    let up = wait_path(&frr, false, Duration::from_secs(60));
    up.with_context(|| format!("first pod's log:\n{}", first.logs()))?;
    let probe = serving(&lab, target)?;
    let stop_at = probe.now();
    first.process.signal(libc::SIGTERM)?;
    first
        .process
        .wait_exit(Duration::from_secs(10))
        .with_context(|| format!("first pod after SIGTERM:\n{}", first.logs()))?;
    let first_log = first.logs();
    drop(first);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        bgp_path(&frr)?,
        Some(true),
        "the router must hold the route stale while no pod runs"
    );
    let second = Speaker::deploy(cluster, &lab.node, &node, binary).await?;
    let eor = wait_eor(&frr, Duration::from_secs(60))
        .with_context(|| format!("second pod's log:\n{}", second.logs()));
    let result = eor.and_then(|_| {
        wait_path(&frr, false, Duration::from_secs(10))?;
        let back_at = probe.now();
        std::thread::sleep(Duration::from_millis(500));
        let (_, r_bit, info) = gr_info(&frr)?;
        let w = probe.window(stop_at, probe.now());
        figure(&format!(
            "graceful restart as deployed (API server, shipped DaemonSet and RBAC): pod replaced: {w}; new session's End-of-RIB {:?} after SIGTERM; load {}",
            back_at - stop_at,
            lab::load()
        ));
        anyhow::ensure!(r_bit, "no R bit from the new pod: {info}");
        anyhow::ensure!(
            second.logs().contains("back from a planned restart"),
            "the new pod did not find the marker in the hostPath:\n{}",
            second.logs()
        );
        anyhow::ensure!(
            first_log.contains("planned restart"),
            "the old pod did not stop as a planned restart:\n{first_log}"
        );
        anyhow::ensure!(
            w.failed == 0,
            "client connections failed while the pod was replaced: {:?}",
            w.errors
        );
        Ok(())
    });
    drop(probe);
    drop(second);
    // Clean up what this test created (the cluster is this binary's own).
    let dp = kube::api::DeleteParams::default();
    let _ = kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(admin.clone())
        .delete("gr-test", &dp)
        .await;
    let _ = kube::Api::<k8s_openapi::api::core::v1::Node>::all(admin.clone())
        .delete(NODE_NAME, &dp)
        .await;
    result
}

/// A planned restart of a speaker that also runs BFD with the router (FRR bfdd, 3 x 300 ms):
/// the stopping speaker's BFD session ends with AdminDown, which RFC 5882 3.2 says is not a
/// path failure, so the router must keep the stale route and the client's traffic flows.
#[test]
fn planned_restart_with_bfd_keeps_client_traffic() -> anyhow::Result<()> {
    if !lab::enabled("speaker_graceful_restart") {
        return Ok(());
    }
    let dir = Dir::new("speaker-gr-bfd")?;
    let lab = lab()?;
    let cfg = FrrConfig::new(ROUTER.parse()?, 64500).neighbor(Neighbor::new(NODE.parse()?, 64512));
    // FRR's default timers (3 x 300 ms, MetalLB's defaults too).
    let frr =
        Frr::start_with_bfd_profile(&lab.router, cfg, NODE.parse()?, &BfdProfile::new("fast"))?;
    let target = lab.target;
    let speakers = Speakers::new(&lab, &dir, &yaml_with("30s", ", bfdProfile: fast"))?;
    // Longer than BFD's detection time (0.9 s): a silent session would have failed by now.
    let p = planned_restart(
        &speakers,
        &frr,
        target,
        &[],
        &[],
        true,
        Duration::from_millis(1500),
    )?;
    anyhow::ensure!(
        p.stale == Some(true) && p.in_kernel,
        "the router dropped the route of a speaker that stopped for a planned restart with BFD (path stale: {:?}); FRR BFD: {}\nFRR log:\n{}",
        p.stale,
        p.bfd_after_stop,
        edgelb_tests::lab::router::tail(&edgelb_tests::lab::BgpRouter::logs(&frr), 30)
    );
    let w = &p.window;
    figure(&format!(
        "graceful restart with BFD (FRR bfdd 3 x 300 ms): planned restart: {w}; End-of-RIB {:?} after the stop; load {}",
        p.back,
        lab::load()
    ));
    assert_eq!(
        w.failed, 0,
        "client connections failed during a planned restart with BFD: {:?}",
        w.errors
    );
    Ok(())
}

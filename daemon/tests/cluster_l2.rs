//! Cluster mode, L2, as shipped, against a real API server ([`edgelb_tests::kube`]): each
//! speaker is the DaemonSet's pod run in a node's network namespace with the shipped
//! ServiceAccount's token, reaching the API server through a forwarder the test can freeze
//! or cut. The nodes, a client and a switch share one LAN; every node runs a TCP listener on
//! the Service IP (on `lo`, with kube-proxy's strictARP settings, so only the announcer
//! answers ARP).
//!
//! - failover series: SIGKILL of the owner (speaker and listener: the node's services
//!   die), its link cut, and a freeze (SIGSTOP of speaker and listener), each repeated
//!   (20 SIGKILLs, 6 cuts and freezes in CI; `EDGELB_L2_REPS` overrides): fault to the new owner's first gratuitous
//!   ARP and to the first successful connection, p50/p90/p99/max; then 20 SIGKILLs with
//!   every speaker's API server frozen from before the kill until the new owner answers
//!   (membership, election and ARP never wait on the API);
//! - a rolling restart (SIGTERM, restart, rejoin) of every speaker under a client: 0 failed
//!   connections;
//! - a 2-node pool: either node SIGKILLed or stopped leaves the other answering (the gap is
//!   measured; before, the survivor withdrew every L2 IP);
//! - a partition of a 2-node pool that leaves the API server on one side: the cut owner
//!   stops answering within the stated bound (the witness's 3 s freshness), the other side
//!   takes over, and after healing one node answers.
//!
//! Figures go to `target/tmp/figures/cluster_l2.txt` with the load average of the moment.
//! Timing asserts are generous (the machine is shared); the targets are read from figures.
//! The scenarios run one after another (they share the binary's API server).

mod speaker_support;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use edgelb_tests::kube::{self as harness, deploy, Cluster, NodeSpec, Speaker, SYSTEM_NAMESPACE};
use edgelb_tests::lab::capture::{epoch, Capture};
use edgelb_tests::lab::{self, wait_until, Lan, Netns, NsProcess};
use speaker_support::l2::{self as l2lab, measure_failover, probe_lines, Failover, Fault, PORT};
use speaker_support::Dir;

/// Owner SIGKILLs in CI, with the API server up and again frozen: issue 12's proof asks for 20
/// of each (`EDGELB_L2_REPS` overrides every series).
const KILL_REPS: usize = 20;
/// Link cuts and freezes in CI (issue 16's bench runs 20 of each by hand).
const REPS: usize = 6;
/// Every single failover must beat this (targets: p50 <= 250 ms, p99 <= 400 ms; the slack is
/// for a loaded machine).
const FAILOVER_BOUND_MS: f64 = 4000.0;
/// The stated bound for two owners in a partition: the witness's freshness (3 s, see
/// `speaker::guard::WITNESS_TTL`) plus a guard tick; asserted with slack for load.
const PARTITION_BOUND: Duration = Duration::from_millis(3100);
const PARTITION_SLACK: Duration = Duration::from_secs(3);

/// One scenario at a time: they share the API server and the machine's CPU.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct LabNode {
    name: String,
    addr: String,
    ns: Netns,
    port: String,
    mac: String,
    speaker: Option<Speaker>,
    listener: Option<NsProcess>,
}

/// A LAN of `n` nodes with one Service IP, its objects in the API server.
struct Lab {
    cluster: &'static Cluster,
    tag: String,
    ip: String,
    lan: Lan,
    client: Netns,
    nodes: Vec<LabNode>,
    dir: Dir,
    binary: PathBuf,
    starts: usize,
}

/// The objects of one scenario: its pool (one IP), an L2Advertisement selecting its nodes
/// only, the Service and an EndpointSlice with a ready endpoint on every node.
fn objects(tag: &str, ip: &str, nodes: &[String]) -> String {
    let endpoints: Vec<String> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "  - addresses: [\"10.244.{}.{}\"]\n    nodeName: {n}\n    conditions: {{ready: true}}\n",
                i + 1,
                10
            )
        })
        .collect();
    format!(
        "apiVersion: edgelb.io/v1alpha1\nkind: IPAddressPool\n\
         metadata: {{name: {tag}, namespace: {SYSTEM_NAMESPACE}}}\n\
         spec: {{addresses: [\"{ip}/32\"]}}\n---\n\
         apiVersion: edgelb.io/v1alpha1\nkind: L2Advertisement\n\
         metadata: {{name: {tag}, namespace: {SYSTEM_NAMESPACE}}}\n\
         spec: {{ipAddressPools: [{tag}], nodeSelectors: [{{matchLabels: {{edgelb-test: {tag}}}}}]}}\n---\n\
         apiVersion: v1\nkind: Service\n\
         metadata: {{name: {tag}, namespace: default, annotations: {{edgelb.io/address-pool: {tag}}}}}\n\
         spec: {{type: LoadBalancer, loadBalancerClass: edgelb.io/speaker, \
         ports: [{{port: {PORT}, targetPort: {PORT}, protocol: TCP}}]}}\n---\n\
         apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
         metadata: {{name: {tag}-1, namespace: default, labels: {{kubernetes.io/service-name: {tag}}}}}\n\
         addressType: IPv4\nports: [{{port: {PORT}, protocol: TCP}}]\nendpoints:\n{}",
        endpoints.concat()
    )
}

impl Lab {
    /// `n` nodes `{tag}-i` at `{subnet}.10+i`, the Service IP `{subnet}.100`.
    async fn new(
        cluster: &'static Cluster,
        tag: &str,
        subnet: &str,
        n: usize,
    ) -> anyhow::Result<Lab> {
        let dir = Dir::new(tag)?;
        let ip = format!("{subnet}.100");
        let mut lan = Lan::new()?;
        let client = Netns::new("cc")?;
        lan.attach(&client, "eth0")?;
        client.addr("eth0", &format!("{subnet}.50/24"))?;
        l2lab::write_scripts(&dir)?;
        let admin = cluster.admin_client().await?;
        let names: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
        let mut nodes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let addr = format!("{subnet}.{}", 10 + i);
            harness::create_node(&admin, name, addr.parse()?, &[("edgelb-test", tag)]).await?;
            let (ns, port, mac) = l2lab::node_ns(&mut lan, &format!("c{i}"), &addr, &ip)?;
            nodes.push(LabNode {
                name: name.clone(),
                addr,
                mac,
                ns,
                port,
                speaker: None,
                listener: None,
            });
        }
        let objs = deploy::parse_yaml(&objects(tag, &ip, &names), tag)?;
        deploy::apply(&admin, &objs, tag).await?;
        let mut lab = Lab {
            cluster,
            tag: tag.to_string(),
            ip,
            lan,
            client,
            nodes,
            dir,
            binary: PathBuf::from(env!("CARGO_BIN_EXE_edgelb-speaker")),
            starts: 0,
        };
        for i in 0..n {
            lab.start_listener(i)?;
            lab.start_speaker(i).await?;
        }
        Ok(lab)
    }

    /// Deletes the scenario's objects (the namespaces and processes go with the values).
    async fn cleanup(&self) -> anyhow::Result<()> {
        let admin = self.cluster.admin_client().await?;
        use k8s_openapi::api::core::v1::{Node, Service};
        use k8s_openapi::api::discovery::v1::EndpointSlice;
        use kube::api::{Api, DeleteParams};
        let dp = DeleteParams::default();
        let _ = Api::<Service>::namespaced(admin.clone(), "default")
            .delete(&self.tag, &dp)
            .await;
        let _ = Api::<EndpointSlice>::namespaced(admin.clone(), "default")
            .delete(&format!("{}-1", self.tag), &dp)
            .await;
        for kind in ["ipaddresspools", "l2advertisements"] {
            let ar = kube::api::ApiResource {
                group: "edgelb.io".into(),
                version: "v1alpha1".into(),
                api_version: "edgelb.io/v1alpha1".into(),
                kind: String::new(),
                plural: kind.into(),
            };
            let api: Api<kube::api::DynamicObject> =
                Api::namespaced_with(admin.clone(), SYSTEM_NAMESPACE, &ar);
            let _ = api.delete(&self.tag, &dp).await;
        }
        for n in &self.nodes {
            let _ = Api::<Node>::all(admin.clone()).delete(&n.name, &dp).await;
        }
        Ok(())
    }

    fn start_listener(&mut self, i: usize) -> anyhow::Result<()> {
        let tag = format!("{i}-{}", self.starts);
        self.starts += 1;
        let node = &self.nodes[i];
        let p = l2lab::start_listener(&self.dir, &node.ns, &node.name, &tag)?;
        self.nodes[i].listener = Some(p);
        Ok(())
    }

    async fn start_speaker(&mut self, i: usize) -> anyhow::Result<()> {
        // The old process and its forwarder go first (the forwarder's port is reused).
        self.nodes[i].speaker.take();
        let node = &self.nodes[i];
        let spec = NodeSpec {
            name: node.name.clone(),
            ip: node.addr.parse()?,
            // Lease rounds every second, so a frozen API server always has one in flight.
            extra_args: vec!["--lease-seconds=3".into()],
        };
        let s = Speaker::deploy(self.cluster, &node.ns, &spec, &self.binary).await?;
        self.nodes[i].speaker = Some(s);
        Ok(())
    }

    /// Waits until the (re)started speaker of node `i` has seen every other one come up and
    /// has read its Service, then a moment for a handoff back to it to settle.
    fn wait_joined(&self, i: usize) -> anyhow::Result<()> {
        let speaker = self.nodes[i].speaker.as_ref().context("no speaker")?;
        let others = self.nodes.len() - 1;
        wait_until(
            "the restarted speaker to see the others",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || {
                let logs = speaker.logs();
                Ok(
                    (logs.matches("member up").count() >= others && logs.contains("l2 applied"))
                        .then_some(()),
                )
            },
        )
        .with_context(|| self.logs())?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }

    fn macs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.mac.clone()).collect()
    }

    /// The MACs that answer an ARP request for the IP.
    fn arp_answers(&self) -> anyhow::Result<Vec<String>> {
        l2lab::arp_answers(&self.client, &self.ip)
    }

    /// Waits until exactly one node answers ARP for the IP; returns it.
    fn single_owner(&self, timeout: Duration) -> anyhow::Result<usize> {
        l2lab::single_owner(&self.client, &self.ip, &self.macs(), timeout, || {
            self.logs()
        })
    }

    fn probe(&self, name: &str, secs: f64) -> anyhow::Result<(NsProcess, PathBuf)> {
        l2lab::start_probe(&self.dir, &self.client, &self.ip, name, secs)
    }

    /// Applies `fault` to node `i`, the owner.
    fn fault(&mut self, i: usize, fault: Fault) -> anyhow::Result<()> {
        match fault {
            Fault::Kill => {
                if let Some(s) = self.nodes[i].speaker.as_ref() {
                    s.process.signal(libc::SIGKILL)?;
                }
                self.nodes[i].listener.take();
            }
            Fault::Cut => {
                self.lan
                    .switch()
                    .ip(&["link", "set", &self.nodes[i].port, "down"])?;
            }
            Fault::Freeze => {
                for p in [
                    self.nodes[i].speaker.as_ref().map(|s| &s.process),
                    self.nodes[i].listener.as_ref(),
                ]
                .into_iter()
                .flatten()
                {
                    p.signal(libc::SIGSTOP)?;
                }
            }
        }
        Ok(())
    }

    /// Ends `fault` of node `i`: a new speaker pod and listener, the link back up, or the
    /// processes resumed; then waits for the cluster to settle (the node back in everyone's
    /// view, its IP back to it after the takeover hold).
    async fn recover(&mut self, i: usize, fault: Fault) -> anyhow::Result<()> {
        match fault {
            Fault::Kill => {
                self.nodes[i].speaker.take();
                self.start_listener(i)?;
                self.start_speaker(i).await?;
                self.wait_joined(i)?;
            }
            Fault::Cut => {
                self.lan
                    .switch()
                    .ip(&["link", "set", &self.nodes[i].port, "up"])?;
                tokio::time::sleep(Duration::from_millis(2500)).await;
            }
            Fault::Freeze => {
                for p in [
                    self.nodes[i].speaker.as_ref().map(|s| &s.process),
                    self.nodes[i].listener.as_ref(),
                ]
                .into_iter()
                .flatten()
                {
                    p.signal(libc::SIGCONT)?;
                }
                tokio::time::sleep(Duration::from_millis(2500)).await;
            }
        }
        Ok(())
    }

    fn freeze_all(&self, frozen: bool) {
        for s in self.nodes.iter().filter_map(|n| n.speaker.as_ref()) {
            if frozen {
                s.forwarder.freeze();
            } else {
                s.forwarder.restore();
            }
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|n| n.speaker.as_ref())
            .map(|s| format!("--- {}:\n{}", s.node, lab::router::tail(&s.logs(), 15)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Prints a measured figure (with the load average) and keeps it in
/// `target/tmp/figures/cluster_l2.txt`, which `.ci/run` prints after the tests.
fn figure(line: String) {
    l2lab::figure("cluster_l2", line);
}

/// The time of the first log line after `after` (epoch seconds) containing every needle.
fn log_time(log: &str, after: f64, needles: &[&str]) -> Option<f64> {
    log.lines()
        .filter(|l| needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| {
            let ts: k8s_openapi::jiff::Timestamp = l.split_whitespace().next()?.parse().ok()?;
            Some(ts.as_microsecond() as f64 / 1e6)
        })
        .find(|t| *t > after)
}

/// One failover of the current owner by `fault` (with every speaker's API server frozen
/// from before the fault until the new owner answers, when `freeze_api`).
async fn fail_owner(
    lab: &mut Lab,
    capture: &Capture,
    rep: &str,
    fault: Fault,
    freeze_api: bool,
) -> anyhow::Result<Failover> {
    let owner = lab.single_owner(Duration::from_secs(20))?;
    let (probe, log) = lab.probe(rep, 8.0)?;
    if freeze_api {
        lab.freeze_all(true);
        // A Lease round (every second) is now stuck in every speaker's API task.
        tokio::time::sleep(Duration::from_millis(1200)).await;
    } else {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let at = epoch(SystemTime::now());
    lab.fault(owner, fault)?;
    let old = lab.nodes[owner].name.clone();
    let old_mac = lab.nodes[owner].mac.clone();
    let run = measure_failover(capture, &log, &lab.ip, at, &old, &old_mac, || lab.logs());
    if freeze_api {
        // Still frozen until here: the new owner answered with every API call hanging.
        lab.freeze_all(false);
    }
    drop(probe);
    lab.recover(owner, fault).await?;
    run
}

/// `reps` failovers by `fault`; prints the figure.
async fn failover_series(
    lab: &mut Lab,
    capture: &Capture,
    fault: Fault,
    freeze_api: bool,
    reps: usize,
) -> anyhow::Result<()> {
    let what = if freeze_api {
        "cluster_l2: API server frozen"
    } else {
        "cluster_l2: API server up"
    };
    let mut runs = Vec::new();
    let started = Instant::now();
    for rep in 0..reps {
        let run = fail_owner(
            lab,
            capture,
            &format!("{fault:?}-{freeze_api}-{rep}"),
            fault,
            freeze_api,
        )
        .await
        .with_context(|| format!("{what}: {} rep {rep}", fault.as_str()))?;
        eprintln!(
            "{what}: {} rep {rep}: first GARP +{:.0} ms, first success +{:.0} ms, {} failed connects",
            fault.as_str(),
            run.garp_ms,
            run.success_ms,
            run.failed
        );
        runs.push(run);
    }
    figure(l2lab::series_line(
        what,
        fault,
        &runs,
        started.elapsed().as_secs_f64(),
    ));
    let worst = runs
        .iter()
        .map(|r| r.garp_ms.max(r.success_ms))
        .fold(0.0, f64::max);
    assert!(
        worst < FAILOVER_BOUND_MS,
        "{what}: a {} failover took {worst:.0} ms (bound {FAILOVER_BOUND_MS} ms)",
        fault.as_str()
    );
    Ok(())
}

/// A test's shared API server, or `None` when it cannot run here (printed).
fn cluster(test: &str) -> anyhow::Result<Option<&'static Cluster>> {
    if !lab::enabled(test) {
        return Ok(None);
    }
    Cluster::shared(test)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_on_kill_cut_and_freeze_and_on_kill_with_the_api_server_frozen(
) -> anyhow::Result<()> {
    const TEST: &str =
        "cluster_l2::failover_on_kill_cut_and_freeze_and_on_kill_with_the_api_server_frozen";
    let Some(cluster) = cluster(TEST)? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let mut lab = Lab::new(cluster, "l2fail", "192.0.2", 3).await?;
    let result = async {
        let owner = lab.single_owner(Duration::from_secs(30))?;
        eprintln!(
            "cluster_l2: one owner answers ARP: {}",
            lab.nodes[owner].name
        );
        let capture = Capture::start(&lab.client, "eth0", "arp", &lab.dir.0)?;
        for fault in Fault::ALL {
            let reps = l2lab::reps(if fault == Fault::Kill {
                KILL_REPS
            } else {
                REPS
            });
            failover_series(&mut lab, &capture, fault, false, reps).await?;
        }
        let reps = l2lab::reps(KILL_REPS);
        failover_series(&mut lab, &capture, Fault::Kill, true, reps).await
    }
    .await;
    lab.cleanup().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_speaker_fails_no_connection() -> anyhow::Result<()> {
    const TEST: &str = "cluster_l2::a_rolling_restart_of_every_speaker_fails_no_connection";
    let Some(cluster) = cluster(TEST)? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let mut lab = Lab::new(cluster, "l2roll", "198.51.100", 3).await?;
    let result = async {
        lab.single_owner(Duration::from_secs(30))?;
        let (mut probe, log) = lab.probe("rolling", 120.0)?;
        let started = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        for i in 0..lab.nodes.len() {
            // What the DaemonSet's RollingUpdate does to one pod: SIGTERM, wait, start anew.
            let s = lab.nodes[i].speaker.as_mut().context("speaker")?;
            s.process.signal(libc::SIGTERM)?;
            s.process.wait_exit(Duration::from_secs(10))?;
            lab.start_speaker(i).await?;
            lab.wait_joined(i)?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let took = started.elapsed();
        probe.signal(libc::SIGKILL)?;
        let _ = probe.wait_exit(Duration::from_secs(5));
        let lines = probe_lines(&log);
        let failed = lines.iter().filter(|(_, ok)| ok.is_none()).count();
        figure(format!(
            "cluster_l2: rolling restart of {} speakers in {:.1} s: {} connects, {failed} failed",
            lab.nodes.len(),
            took.as_secs_f64(),
            lines.len()
        ));
        anyhow::ensure!(
            failed == 0,
            "{failed} connections failed during the rolling restart\n{}",
            lab.logs()
        );
        anyhow::ensure!(lines.len() > 100, "the client barely ran: {}", lines.len());
        Ok(())
    }
    .await;
    lab.cleanup().await?;
    result
}

/// Node `victim` of a 2-node pool goes (SIGKILL with its listener, or SIGTERM of the
/// speaker alone); the client keeps connecting for `watch`. Returns (gap ms: the longest
/// run of failed connects, failed connects, successes after the event, served by).
async fn two_node_event(
    lab: &mut Lab,
    victim: usize,
    kill: bool,
    watch: Duration,
) -> anyhow::Result<(f64, usize, usize, Vec<String>)> {
    let (mut probe, log) = lab.probe(&format!("two-{victim}-{kill}"), watch.as_secs_f64() + 1.0)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let at = epoch(SystemTime::now());
    {
        let s = lab.nodes[victim].speaker.as_mut().context("speaker")?;
        if kill {
            s.process.signal(libc::SIGKILL)?;
        } else {
            s.process.signal(libc::SIGTERM)?;
            s.process.wait_exit(Duration::from_secs(10))?;
        }
    }
    if kill {
        lab.nodes[victim].listener.take();
    }
    let _ = probe.wait_exit(watch + Duration::from_secs(10));
    let lines: Vec<(f64, Option<String>)> = probe_lines(&log)
        .into_iter()
        .filter(|(t, _)| *t > at)
        .collect();
    let (mut gap, mut run_start) = (0.0f64, None::<f64>);
    for (t, ok) in &lines {
        match (ok, run_start) {
            (None, None) => run_start = Some(*t),
            (Some(_), Some(s)) => {
                gap = gap.max(t - s);
                run_start = None;
            }
            _ => {}
        }
    }
    if let (Some(s), Some((t, _))) = (run_start, lines.last()) {
        gap = gap.max(t - s);
    }
    let failed = lines.iter().filter(|(_, ok)| ok.is_none()).count();
    let ok = lines.iter().filter(|(_, ok)| ok.is_some()).count();
    let mut by: Vec<String> = lines.iter().filter_map(|(_, n)| n.clone()).collect();
    by.dedup();
    // Back to two nodes for the next event.
    lab.nodes[victim].speaker.take();
    if lab.nodes[victim].listener.is_none() {
        lab.start_listener(victim)?;
    }
    lab.start_speaker(victim).await?;
    lab.wait_joined(victim)?;
    Ok((gap * 1000.0, failed, ok, by))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_node_pool_keeps_its_ip_when_either_node_is_killed_or_stopped() -> anyhow::Result<()>
{
    const TEST: &str =
        "cluster_l2::a_two_node_pool_keeps_its_ip_when_either_node_is_killed_or_stopped";
    let Some(cluster) = cluster(TEST)? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let mut lab = Lab::new(cluster, "l2pair", "203.0.113", 2).await?;
    // Longer than the guard's forgetting (10 s): the survivor must keep serving after it.
    let watch = Duration::from_secs(14);
    let result = async {
        for kill in [true, false] {
            for victim_is_owner in [false, true] {
                let owner = lab.single_owner(Duration::from_secs(30))?;
                let victim = if victim_is_owner { owner } else { 1 - owner };
                let survivor = lab.nodes[1 - victim].name.clone();
                let (gap, failed, ok, by) = two_node_event(&mut lab, victim, kill, watch).await?;
                let how = if kill { "SIGKILL" } else { "SIGTERM" };
                let role = if victim_is_owner { "owner" } else { "other node" };
                figure(format!(
                    "cluster_l2: 2-node pool, {how} of the {role}: longest gap {gap:.0} ms, {failed} failed and {ok} good connects over {watch:?}, served by {by:?}"
                ));
                anyhow::ensure!(
                    by.last() == Some(&survivor),
                    "{how} of the {role}: the survivor {survivor} does not hold the IP at the end (served by {by:?})\n{}",
                    lab.logs()
                );
                anyhow::ensure!(
                    gap < FAILOVER_BOUND_MS,
                    "{how} of the {role}: a gap of {gap:.0} ms\n{}",
                    lab.logs()
                );
                if !kill || !victim_is_owner {
                    anyhow::ensure!(failed == 0, "{how} of the {role}: {failed} failed connects");
                }
            }
        }
        Ok(())
    }
    .await;
    lab.cleanup().await?;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_owner_without_the_api_server_stops_within_the_bound() -> anyhow::Result<()> {
    const TEST: &str =
        "cluster_l2::a_partitioned_owner_without_the_api_server_stops_within_the_bound";
    let Some(cluster) = cluster(TEST)? else {
        return Ok(());
    };
    let _serial = SERIAL.lock().await;
    let lab = Lab::new(cluster, "l2cut", "10.250.0", 2).await?;
    let result = async {
        let owner = lab.single_owner(Duration::from_secs(30))?;
        let other = 1 - owner;
        let (probe, log) = lab.probe("cut", 12.0)?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let cut = epoch(SystemTime::now());
        // The owner loses the LAN (its port leaves the bridge; its link stays up) and the
        // API server (its forwarder refuses); the other keeps both.
        lab.nodes[owner]
            .speaker
            .as_ref()
            .context("speaker")?
            .forwarder
            .cut();
        lab.lan
            .switch()
            .ip(&["link", "set", &lab.nodes[owner].port, "nomaster"])?;
        let old = lab.nodes[owner].name.clone();
        let new = lab.nodes[other].name.clone();
        let taken = wait_until(
            "the other node to answer",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                Ok(probe_lines(&log)
                    .into_iter()
                    .find(|(t, n)| *t > cut && n.as_deref() == Some(new.as_str()))
                    .map(|(t, _)| t))
            },
        )
        .with_context(|| lab.logs())?;
        let speaker = lab.nodes[owner].speaker.as_ref().context("speaker")?;
        let stopped = wait_until(
            "the cut owner to stop answering",
            Duration::from_secs(15),
            Duration::from_millis(50),
            || Ok(log_time(&speaker.logs(), cut, &["l2 applied", "owned=0 "])),
        )
        .with_context(|| lab.logs())?;
        drop(probe);
        let overlap = (stopped - taken).max(0.0);
        figure(format!(
            "cluster_l2: partition of a 2-node pool, API server on one side: {new} answered after {:.0} ms, cut owner {old} stopped after {:.0} ms (bound {PARTITION_BOUND:?}): two owners for {:.0} ms",
            (taken - cut) * 1000.0,
            (stopped - cut) * 1000.0,
            overlap * 1000.0
        ));
        anyhow::ensure!(
            stopped - cut < (PARTITION_BOUND + PARTITION_SLACK).as_secs_f64(),
            "the cut owner answered for {:.1} s",
            stopped - cut
        );
        // Heal: one owner again.
        lab.lan.switch().ip(&["link", "set", &lab.nodes[owner].port, "master", "br0"])?;
        lab.nodes[owner]
            .speaker
            .as_ref()
            .context("speaker")?
            .forwarder
            .restore();
        tokio::time::sleep(Duration::from_secs(3)).await;
        lab.single_owner(Duration::from_secs(20))?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let answers = lab.arp_answers()?;
        anyhow::ensure!(answers.len() == 1, "after healing: {answers:?}\n{}", lab.logs());
        Ok(())
    }
    .await;
    lab.cleanup().await?;
    result
}

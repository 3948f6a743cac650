//! Cluster mode, L2, as shipped, against a real API server ([`edgelb_tests::kube`]): each
//! speaker is the DaemonSet's pod run in a node's network namespace with the shipped
//! ServiceAccount's token, reaching the API server through a forwarder the test can freeze
//! or cut. The nodes, a client and a switch share one LAN; every node runs a TCP listener on
//! the Service IP (on `lo`, with kube-proxy's strictARP settings, so only the announcer
//! answers ARP).
//!
//! - SIGKILL of the owner (speaker and listener: the node dies), 20 times: kill to the new
//!   owner's first gratuitous ARP and to the first successful connection, p50 and p99; then
//!   20 more with every speaker's API server frozen from before the kill until the new owner
//!   answers (membership, election and ARP never wait on the API);
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

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use edgelb_tests::kube::{self as harness, deploy, Cluster, NodeSpec, Speaker, SYSTEM_NAMESPACE};
use edgelb_tests::lab::capture::{epoch, Capture};
use edgelb_tests::lab::{self, wait_until, Lan, Netns, NsProcess};
use speaker_support::Dir;

const PORT: &str = "8080";
/// SIGKILL failovers per series.
const REPS: usize = 20;
/// Every single failover must beat this (targets: p50 <= 500 ms, p99 <= 1 s; the slack is
/// for a loaded machine).
const FAILOVER_BOUND_MS: f64 = 4000.0;
/// The stated bound for two owners in a partition: the witness's freshness (3 s, see
/// `speaker::guard::WITNESS_TTL`) plus a guard tick; asserted with slack for load.
const PARTITION_BOUND: Duration = Duration::from_millis(3100);
const PARTITION_SLACK: Duration = Duration::from_secs(3);

/// One scenario at a time: they share the API server and the machine's CPU.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const SERVE: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(512)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.sendall(sys.argv[2].encode())
    finally:
        c.close()
"#;

/// `probe.py IP PORT DURATION_S INTERVAL_MS`: one line per attempt, `EPOCH ok NAME` or
/// `EPOCH err REASON`; connect and read time out after 200 ms.
const PROBE: &str = r#"
import socket, sys, time
ip, port, dur, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]) / 1000
end = time.time() + dur
while True:
    t = time.time()
    try:
        c = socket.create_connection((ip, port), timeout=0.2)
        c.settimeout(0.2)
        name = c.recv(64).decode()
        c.close()
        if not name:
            raise ConnectionError("closed before the name")
        print("%.6f ok %s" % (t, name), flush=True)
    except Exception as e:
        print("%.6f err %s" % (t, type(e).__name__), flush=True)
    if time.time() >= end:
        break
    time.sleep(gap)
print("done", flush=True)
"#;

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

fn mac_of(ns: &Netns, dev: &str) -> anyhow::Result<String> {
    let out = ns.ip(&["-o", "link", "show", dev])?;
    let mut words = out.split_whitespace();
    words
        .find(|w| *w == "link/ether")
        .and_then(|_| words.next())
        .map(str::to_string)
        .with_context(|| format!("no MAC in {out:?}"))
}

fn is_mac(w: &str) -> bool {
    let w = w.trim_matches(|c| c == '[' || c == ']' || c == '(' || c == ')' || c == ',');
    w.len() == 17
        && w.split(':').count() == 6
        && w.split(':').all(|p| u8::from_str_radix(p, 16).is_ok())
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
        std::fs::write(dir.path("serve.py"), SERVE)?;
        std::fs::write(dir.path("probe.py"), PROBE)?;
        let admin = cluster.admin_client().await?;
        let names: Vec<String> = (0..n).map(|i| format!("{tag}-{i}")).collect();
        let mut nodes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let addr = format!("{subnet}.{}", 10 + i);
            harness::create_node(&admin, name, addr.parse()?, &[("edgelb-test", tag)]).await?;
            let ns = Netns::new(&format!("c{i}"))?;
            let port = lan.attach(&ns, "eth0")?;
            ns.addr("eth0", &format!("{addr}/24"))?;
            for dev in ["all", "eth0"] {
                ns.sysctl(&format!("net.ipv4.conf.{dev}.arp_ignore"), "1")?;
                ns.sysctl(&format!("net.ipv4.conf.{dev}.arp_announce"), "2")?;
            }
            ns.addr("lo", &format!("{ip}/32"))?;
            nodes.push(LabNode {
                name: name.clone(),
                addr,
                mac: mac_of(&ns, "eth0")?,
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
        let log = self.dir.path(&format!("serve-{i}-{}.log", self.starts));
        self.starts += 1;
        let script = self.dir.path("serve.py").display().to_string();
        let name = self.nodes[i].name.clone();
        let p = self.nodes[i]
            .ns
            .spawn(&["/usr/bin/python3", &script, PORT, &name], Some(&log))?;
        wait_until(
            "listener",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || {
                Ok(std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("listening")
                    .then_some(()))
            },
        )?;
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

    fn node_of_mac(&self, mac: &str) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.mac.eq_ignore_ascii_case(mac))
    }

    /// The MACs that answer an ARP request for the IP (the client's cache flushed first).
    fn arp_answers(&self) -> anyhow::Result<Vec<String>> {
        let _ = self.client.ip(&["neigh", "flush", "dev", "eth0"]);
        let out = self
            .client
            .output(&["arping", "-c", "2", "-w", "1", "-I", "eth0", &self.ip])?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut macs: Vec<String> = text
            .split_whitespace()
            .filter(|w| is_mac(w))
            .map(|w| {
                w.trim_matches(|c| c == '[' || c == ']' || c == '(' || c == ')' || c == ',')
                    .to_ascii_lowercase()
            })
            .collect();
        macs.sort();
        macs.dedup();
        Ok(macs)
    }

    /// Waits until exactly one node answers ARP for the IP; returns it.
    fn single_owner(&self, timeout: Duration) -> anyhow::Result<usize> {
        let mut last = Vec::new();
        wait_until(
            "exactly one ARP owner",
            timeout,
            Duration::from_millis(100),
            || {
                last = self.arp_answers()?;
                Ok(match last.as_slice() {
                    [one] => self.node_of_mac(one),
                    _ => None,
                })
            },
        )
        .with_context(|| format!("last answers {last:?}\n{}", self.logs()))
    }

    fn probe(&self, name: &str, secs: f64) -> anyhow::Result<(NsProcess, PathBuf)> {
        let log = self.dir.path(&format!("probe-{name}.log"));
        let script = self.dir.path("probe.py").display().to_string();
        let p = self.client.spawn(
            &[
                "/usr/bin/python3",
                &script,
                &self.ip,
                PORT,
                &secs.to_string(),
                "5",
            ],
            Some(&log),
        )?;
        Ok((p, log))
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

/// `(time, Some(name))` for a success, `(time, None)` for a failure.
fn probe_lines(log: &Path) -> Vec<(f64, Option<String>)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let t: f64 = w.next()?.parse().ok()?;
            match w.next()? {
                "ok" => Some((t, w.next().map(str::to_string))),
                _ => Some((t, None)),
            }
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().take(3).collect();
            format!("load {}", f.join(" "))
        })
        .unwrap_or_default()
}

/// Prints a measured figure and keeps it in `target/tmp/figures/cluster_l2.txt`, which
/// `.ci/run` prints after the tests.
fn figure(line: String) {
    use std::io::Write;
    let line = format!("{line} ({})", load());
    eprintln!("{line}");
    if let Some(dir) = harness::target_tmp().map(|t| t.join("figures")) {
        let _ = std::fs::create_dir_all(&dir);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("cluster_l2.txt"))
        {
            let _ = writeln!(f, "{line}");
        }
    }
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

/// One SIGKILL failover of the current owner: (kill->GARP ms, kill->success ms, failed).
async fn kill_owner(
    lab: &mut Lab,
    capture: &Capture,
    rep: &str,
    freeze: bool,
) -> anyhow::Result<(f64, f64, usize)> {
    let owner = lab.single_owner(Duration::from_secs(20))?;
    let (probe, log) = lab.probe(rep, 6.0)?;
    if freeze {
        lab.freeze_all(true);
        // A Lease round (every second) is now stuck in every speaker's API task.
        tokio::time::sleep(Duration::from_millis(1200)).await;
    } else {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let killed = SystemTime::now();
    if let Some(s) = lab.nodes[owner].speaker.as_ref() {
        s.process.signal(libc::SIGKILL)?;
    }
    lab.nodes[owner].listener.take();
    let k = epoch(killed);
    let old = lab.nodes[owner].name.clone();
    let first_ok = wait_until(
        "a connection to another node after the kill",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            Ok(probe_lines(&log)
                .into_iter()
                .find(|(t, ok)| *t > k && ok.as_deref().is_some_and(|n| n != old))
                .map(|(t, _)| t))
        },
    )
    .with_context(|| lab.logs())?;
    let garp_line = format!("who-has {} tell {}", lab.ip, lab.ip);
    let old_mac = lab.nodes[owner].mac.clone();
    let first_garp = wait_until(
        "the new owner's gratuitous ARP in the capture",
        Duration::from_secs(3),
        Duration::from_millis(20),
        || {
            Ok(capture
                .frames()?
                .into_iter()
                .filter(|f| f.time > k && !f.src_mac.eq_ignore_ascii_case(&old_mac))
                .find(|f| f.line.contains(&garp_line))
                .map(|f| f.time))
        },
    )
    .with_context(|| lab.logs())?;
    if freeze {
        // Still frozen until here: the new owner answered with every API call hanging.
        lab.freeze_all(false);
    }
    drop(probe);
    let failed = probe_lines(&log)
        .iter()
        .filter(|(t, ok)| *t > k && ok.is_none())
        .count();
    lab.nodes[owner].speaker.take();
    lab.start_listener(owner)?;
    lab.start_speaker(owner).await?;
    lab.wait_joined(owner)?;
    Ok(((first_garp - k) * 1000.0, (first_ok - k) * 1000.0, failed))
}

async fn failover_series(lab: &mut Lab, capture: &Capture, freeze: bool) -> anyhow::Result<()> {
    let what = if freeze {
        "API server frozen"
    } else {
        "API server up"
    };
    let (mut garp, mut success) = (Vec::new(), Vec::new());
    let mut failed_total = 0;
    let started = Instant::now();
    for rep in 0..REPS {
        let (g, s, failed) = kill_owner(lab, capture, &format!("kill-{freeze}-{rep}"), freeze)
            .await
            .with_context(|| format!("{what}: rep {rep}"))?;
        eprintln!("cluster_l2: {what}: rep {rep}: first GARP +{g:.0} ms, first success +{s:.0} ms, {failed} failed connects");
        garp.push(g);
        success.push(s);
        failed_total += failed;
    }
    garp.sort_by(f64::total_cmp);
    success.sort_by(f64::total_cmp);
    figure(format!(
        "cluster_l2: SIGKILL failover, cluster mode, {what}, {} reps in {:.0} s: kill->first GARP p50 {:.0} ms p99 {:.0} ms; kill->first success p50 {:.0} ms p99 {:.0} ms; {failed_total} failed connects in all",
        garp.len(),
        started.elapsed().as_secs_f64(),
        percentile(&garp, 0.5),
        percentile(&garp, 0.99),
        percentile(&success, 0.5),
        percentile(&success, 0.99)
    ));
    let worst = garp
        .last()
        .copied()
        .unwrap_or(f64::NAN)
        .max(success.last().copied().unwrap_or(f64::NAN));
    assert!(
        worst < FAILOVER_BOUND_MS,
        "{what}: a SIGKILL failover took {worst:.0} ms (bound {FAILOVER_BOUND_MS} ms)"
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
async fn sigkill_failover_with_the_api_server_up_and_frozen() -> anyhow::Result<()> {
    const TEST: &str = "cluster_l2::sigkill_failover_with_the_api_server_up_and_frozen";
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
        failover_series(&mut lab, &capture, false).await?;
        failover_series(&mut lab, &capture, true).await
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
            || Ok(log_time(&speaker.logs(), cut, &["l2 applied", "owned=[]"])),
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

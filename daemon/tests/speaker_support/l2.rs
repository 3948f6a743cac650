//! What the L2 lab tests share (`speaker_l2` and `speaker_l2_scale`, standalone speakers;
//! `cluster_l2`, the DaemonSet's pods against a real API server): the listener and client
//! scripts, node namespaces on the LAN, standalone speakers gossiping with each other, who
//! answers ARP, the client's log, the failover measurement, the verdicts in the speakers'
//! logs and the figures file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use edgelb_tests::lab::capture::Capture;
use edgelb_tests::lab::{wait_until, Lan, Netns, NsProcess};

use super::{Dir, SpeakerProc};

/// The TCP port every node's listener serves on the Service IP.
pub const PORT: &str = "8080";

/// `serve.py PORT NAME`: answers every connection with the node's name.
pub const SERVE: &str = r#"
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

/// `probe.py IP PORT DURATION_S INTERVAL_MS`: a connection attempt every INTERVAL_MS,
/// each in its own thread (an attempt hanging on a dead owner does not hold back the next
/// one: the first success after a failover is seen within an interval), one line per
/// attempt with its start time, `EPOCH ok NAME` or `EPOCH err REASON` (lines of
/// overlapping attempts may come out of order: [`probe_lines`] sorts); connect and read
/// time out after 200 ms.
pub const PROBE: &str = r#"
import socket, sys, threading, time
ip, port, dur, gap = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]) / 1000
lock = threading.Lock()
def attempt(t):
    try:
        c = socket.create_connection((ip, port), timeout=0.2)
        c.settimeout(0.2)
        name = c.recv(64).decode()
        c.close()
        if not name:
            raise ConnectionError("closed before the name")
        line = "%.6f ok %s" % (t, name)
    except Exception as e:
        line = "%.6f err %s" % (t, type(e).__name__)
    with lock:
        print(line, flush=True)
end = time.time() + dur
threads = []
while True:
    t = time.time()
    th = threading.Thread(target=attempt, args=(t,))
    th.start()
    threads.append(th)
    threads = [x for x in threads if x.is_alive()]
    if time.time() >= end:
        break
    time.sleep(gap)
for th in threads:
    th.join()
print("done", flush=True)
"#;

/// Writes the listener and client scripts into the test's directory.
pub fn write_scripts(dir: &Dir) -> anyhow::Result<()> {
    std::fs::write(dir.path("serve.py"), SERVE)?;
    std::fs::write(dir.path("probe.py"), PROBE)?;
    Ok(())
}

/// A namespace on the LAN with `cidr` on its eth0; returns it and its switch port.
pub fn lan_ns(lan: &mut Lan, name: &str, cidr: &str) -> anyhow::Result<(Netns, String)> {
    let ns = Netns::new(name)?;
    let port = lan.attach(&ns, "eth0")?;
    ns.addr("eth0", cidr)?;
    Ok((ns, port))
}

/// A node namespace on the LAN: `addr/24` on eth0, the Service IP on `lo` with
/// kube-proxy's strictARP settings (only the announcer answers ARP for it). Returns the
/// namespace, its switch port and its MAC.
pub fn node_ns(
    lan: &mut Lan,
    name: &str,
    addr: &str,
    ip: &str,
) -> anyhow::Result<(Netns, String, String)> {
    let (ns, port) = lan_ns(lan, name, &format!("{addr}/24"))?;
    for dev in ["all", "eth0"] {
        ns.sysctl(&format!("net.ipv4.conf.{dev}.arp_ignore"), "1")?;
        ns.sysctl(&format!("net.ipv4.conf.{dev}.arp_announce"), "2")?;
    }
    ns.addr("lo", &format!("{ip}/32"))?;
    let mac = mac_of(&ns, "eth0")?;
    Ok((ns, port, mac))
}

/// The gossip key of the standalone L2 labs: in a file (`--member-key-file`, see
/// [`write_gossip_key`]) or in the cluster file's Secret (`--member-key-secret`, as the
/// README's `kubectl create secret generic edgelb-memberlist --from-literal=key=...`
/// makes it, [`KEY_SECRET`]).
pub const GOSSIP_KEY: &str = "lab-gossip-key-0123456789abcdef";

/// The Secret holding [`GOSSIP_KEY`], a document of the cluster file.
pub const KEY_SECRET: &str = "---\napiVersion: v1\nkind: Secret\n\
metadata: {name: edgelb-memberlist, namespace: edgelb-system}\n\
stringData: {key: lab-gossip-key-0123456789abcdef}\n";

/// Writes [`GOSSIP_KEY`] to `gossip.key` in the test's directory.
pub fn write_gossip_key(dir: &Dir) -> anyhow::Result<()> {
    std::fs::write(dir.path("gossip.key"), format!("{GOSSIP_KEY}\n"))?;
    Ok(())
}

/// Where a standalone speaker reads the gossip key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFrom {
    /// `gossip.key` in the test's directory.
    File,
    /// The Secret of the cluster file ([`KEY_SECRET`]).
    Secret,
}

/// Starts the standalone speaker of node `i` of `nodes` (name, address) in `ns`, reading
/// `file`, logging to `log` with the tracing filter `log_filter`: gossip on the node's
/// address, port 7946, with every other node as a peer.
#[allow(clippy::too_many_arguments)]
pub fn start_member(
    dir: &Dir,
    ns: &Netns,
    nodes: &[(&str, &str)],
    i: usize,
    file: &Path,
    log: PathBuf,
    key: KeyFrom,
    log_filter: &str,
) -> anyhow::Result<SpeakerProc> {
    let me = format!("{}:7946", nodes[i].1);
    let peers: Vec<String> = nodes
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i)
        .map(|(_, (_, a))| format!("{a}:7946"))
        .collect();
    let peers = peers.join(",");
    let key_file = dir.path("gossip.key").display().to_string();
    let key_args = match key {
        KeyFrom::File => ["--member-key-file", key_file.as_str()],
        KeyFrom::Secret => ["--member-key-secret", "edgelb-memberlist"],
    };
    SpeakerProc::start_logging(
        ns,
        nodes[i].0,
        file,
        log,
        &[
            "--member-addr",
            &me,
            "--member-peers",
            &peers,
            key_args[0],
            key_args[1],
        ],
        log_filter,
    )
}

/// The nodes a speaker's log says were declared down (SWIM's "member down" of a failed
/// member and the heartbeat watchers' verdicts), in order, and how many times the speaker
/// itself was declared down (it learns so when it rejoins).
pub fn downs(log: &str) -> (Vec<String>, usize) {
    let verdicts = log
        .lines()
        .filter(|l| {
            (l.contains("member down") && !l.contains("Left"))
                || l.contains("owner heartbeats stopped")
                || l.contains("its gossip port closed")
        })
        .filter_map(|l| field(l, "node"))
        .collect();
    let self_down = log
        .lines()
        .filter(|l| l.contains("we were declared down"))
        .count();
    (verdicts, self_down)
}

/// The value of `name=value` in a log line (quotes removed).
pub fn field(line: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .map(|v| v.trim_matches('"').to_string())
}

/// The MAC of `dev` in `ns`.
pub fn mac_of(ns: &Netns, dev: &str) -> anyhow::Result<String> {
    let out = ns.ip(&["-o", "link", "show", dev])?;
    let mut words = out.split_whitespace();
    words
        .find(|w| *w == "link/ether")
        .and_then(|_| words.next())
        .map(str::to_string)
        .with_context(|| format!("no MAC in {out:?}"))
}

/// `w` is a MAC address (brackets and punctuation around it allowed).
pub fn is_mac(w: &str) -> bool {
    let w = w.trim_matches(|c| c == '[' || c == ']' || c == '(' || c == ')' || c == ',');
    w.len() == 17
        && w.split(':').count() == 6
        && w.split(':').all(|p| u8::from_str_radix(p, 16).is_ok())
}

/// The MACs that answer an ARP request for `ip` from the client (its cache flushed first).
pub fn arp_answers(client: &Netns, ip: &str) -> anyhow::Result<Vec<String>> {
    let _ = client.ip(&["neigh", "flush", "dev", "eth0"]);
    let out = client.output(&["arping", "-c", "2", "-w", "1", "-I", "eth0", ip])?;
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

/// Waits until exactly one node answers ARP for `ip`; returns its index in `macs`.
pub fn single_owner(
    client: &Netns,
    ip: &str,
    macs: &[String],
    timeout: Duration,
    logs: impl Fn() -> String,
) -> anyhow::Result<usize> {
    let mut last = Vec::new();
    wait_until(
        "exactly one ARP owner",
        timeout,
        Duration::from_millis(100),
        || {
            last = arp_answers(client, ip)?;
            Ok(match last.as_slice() {
                [one] => macs.iter().position(|m| m.eq_ignore_ascii_case(one)),
                _ => None,
            })
        },
    )
    .with_context(|| format!("last answers {last:?}\n{}", logs()))
}

/// Starts the listener of node `name` in `ns` (log `serve-{tag}.log`) and waits until it
/// listens.
pub fn start_listener(dir: &Dir, ns: &Netns, name: &str, tag: &str) -> anyhow::Result<NsProcess> {
    let log = dir.path(&format!("serve-{tag}.log"));
    let script = dir.path("serve.py").display().to_string();
    let p = ns.spawn(&["/usr/bin/python3", &script, PORT, name], Some(&log))?;
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
    Ok(p)
}

/// Starts the client: a connection to `ip` every 5 ms for `secs`; returns it and its log.
pub fn start_probe(
    dir: &Dir,
    client: &Netns,
    ip: &str,
    name: &str,
    secs: f64,
) -> anyhow::Result<(NsProcess, PathBuf)> {
    let log = dir.path(&format!("probe-{name}.log"));
    let script = dir.path("probe.py").display().to_string();
    let p = client.spawn(
        &[
            "/usr/bin/python3",
            &script,
            ip,
            PORT,
            &secs.to_string(),
            "5",
        ],
        Some(&log),
    )?;
    Ok((p, log))
}

/// `(time, Some(name))` for a success, `(time, None)` for a failure, by attempt start.
pub fn probe_lines(log: &Path) -> Vec<(f64, Option<String>)> {
    let mut lines: Vec<(f64, Option<String>)> = std::fs::read_to_string(log)
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
        .collect();
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    lines
}

/// The longest time without a successful connection in `[from, to]`, in ms, and how many
/// attempts failed there.
pub fn longest_outage(lines: &[(f64, Option<String>)], from: f64, to: f64) -> (f64, usize) {
    let mut last_ok = from;
    let mut worst: f64 = 0.0;
    let mut failed = 0;
    for (t, ok) in lines.iter().filter(|(t, _)| *t >= from && *t <= to) {
        match ok {
            Some(_) => {
                worst = worst.max(t - last_ok);
                last_ok = *t;
            }
            None => failed += 1,
        }
    }
    worst = worst.max(to - last_ok);
    (worst * 1000.0, failed)
}

/// The `p` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `p50/p90/p99/max` of `values` in ms.
pub fn quantiles(values: &[f64]) -> String {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    format!(
        "p50 {:.0} / p90 {:.0} / p99 {:.0} / max {:.0} ms",
        percentile(&v, 0.5),
        percentile(&v, 0.9),
        percentile(&v, 0.99),
        v.last().copied().unwrap_or(f64::NAN)
    )
}

/// The load average, for every figure (the lab machine is shared).
pub fn load() -> String {
    format!("load {}", edgelb_tests::lab::load())
}

/// Prints a measured figure with the load average and keeps it in
/// `target/tmp/figures/{file}.txt`, which `.ci/run` prints after the tests (cargo hides
/// a passing test's output).
pub fn figure(file: &str, line: String) {
    edgelb_tests::lab::figure(file, &format!("{line} ({})", load()));
}

/// The faults a failover series applies to the owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// SIGKILL of the speaker and the listener (the node's services die).
    Kill,
    /// The owner's switch port goes down (its link is cut).
    Cut,
    /// SIGSTOP of the speaker and the listener (a frozen node).
    Freeze,
}

impl Fault {
    /// Every fault, in series order.
    pub const ALL: [Fault; 3] = [Fault::Kill, Fault::Cut, Fault::Freeze];

    /// The word in figures.
    pub fn as_str(self) -> &'static str {
        match self {
            Fault::Kill => "SIGKILL",
            Fault::Cut => "link cut",
            Fault::Freeze => "freeze (SIGSTOP)",
        }
    }
}

/// Repetitions per fault: `EDGELB_L2_REPS` when set (the figures of issue 16 use 20),
/// else `default` (CI).
pub fn reps(default: usize) -> usize {
    std::env::var("EDGELB_L2_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One failover as the client saw it.
#[derive(Clone, Copy, Debug)]
pub struct Failover {
    /// Fault to the new owner's first gratuitous ARP, ms.
    pub garp_ms: f64,
    /// Fault to the first connection served by another node, ms.
    pub success_ms: f64,
    /// Connections that failed meanwhile.
    pub failed: usize,
}

/// Measures the failover after a fault at `at` (epoch seconds) of node `old` (MAC
/// `old_mac`): waits (bounded) for the first connection another node serves and for
/// another node's gratuitous ARP for `ip` in `capture`.
pub fn measure_failover(
    capture: &Capture,
    log: &Path,
    ip: &str,
    at: f64,
    old: &str,
    old_mac: &str,
    logs: impl Fn() -> String,
) -> anyhow::Result<Failover> {
    let first_ok = wait_until(
        "a connection to another node after the fault",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            Ok(probe_lines(log)
                .into_iter()
                .find(|(t, ok)| *t > at && ok.as_deref().is_some_and(|n| n != old))
                .map(|(t, _)| t))
        },
    )
    .with_context(&logs)?;
    // tcpdump writes a moment after the frame: wait for it, bounded.
    let garp_line = format!("who-has {ip} tell {ip}");
    let first_garp = wait_until(
        "the new owner's gratuitous ARP in the capture",
        Duration::from_secs(3),
        Duration::from_millis(20),
        || {
            Ok(capture
                .frames()?
                .into_iter()
                .filter(|f| f.time > at && !f.src_mac.eq_ignore_ascii_case(old_mac))
                .find(|f| f.line.contains(&garp_line))
                .map(|f| f.time))
        },
    )
    .with_context(|| {
        let frames: Vec<String> = capture
            .frames()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f.time > at - 1.0)
            .map(|f| f.line)
            .collect();
        format!(
            "no gratuitous ARP from another node after the fault at {at}; ARP seen:\n{}\nprobe:\n{}\n{}",
            frames.join("\n"),
            std::fs::read_to_string(log).unwrap_or_default(),
            logs()
        )
    })?;
    let failed = probe_lines(log)
        .iter()
        .filter(|(t, ok)| *t > at && *t < first_ok && ok.is_none())
        .count();
    Ok(Failover {
        garp_ms: (first_garp - at) * 1000.0,
        success_ms: (first_ok - at) * 1000.0,
        failed,
    })
}

/// The figure of one series: fault to first success and to first GARP, failed connects.
pub fn series_line(what: &str, fault: Fault, runs: &[Failover], secs: f64) -> String {
    let success: Vec<f64> = runs.iter().map(|r| r.success_ms).collect();
    let garp: Vec<f64> = runs.iter().map(|r| r.garp_ms).collect();
    let failed: usize = runs.iter().map(|r| r.failed).sum();
    format!(
        "{what}: {} failover, {} reps in {secs:.0} s: fault->first success {}; fault->first GARP {}; {failed} failed connects in all",
        fault.as_str(),
        runs.len(),
        quantiles(&success),
        quantiles(&garp),
    )
}

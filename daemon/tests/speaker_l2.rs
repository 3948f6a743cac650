//! End to end, L2: three node namespaces and a client on one LAN, each node running the
//! real `edgelb-speaker` (standalone file, authenticated gossip) and a TCP listener on the
//! Service IP (on `lo`, with kube-proxy's strictARP settings `arp_ignore=1`,
//! `arp_announce=2`, so only the announcer answers ARP for it).
//!
//! - exactly one node answers ARP for the IP;
//! - SIGKILL of the owner (speaker and listener: the node dies): another node announces;
//!   kill-to-first-GARP (capture on the client) and kill-to-first-success (a bounded TCP
//!   connect loop) are printed with p50/p99 over the repetitions;
//! - SIGTERM of the owner: handoff with zero failed connections;
//! - partition: the cut owner stops owning within two detection periods, another node takes
//!   over; after healing exactly one node answers again, and takes its IP back without a
//!   failed connection;
//! - the stranded client: the owner is frozen (SIGSTOP), an interim owner takes over, the
//!   owner resumes (it never lost the IP in its own view) and must announce again, so that
//!   when the interim owner is then cut off the client is still served;
//! - throughout the fault sequences an ARP request every 50 ms (captured on the client):
//!   never two nodes answering one request.
mod speaker_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use edgelb_tests::lab::capture::{epoch, Capture};
use edgelb_tests::lab::{self, wait_until, Lan, Netns, NsProcess};
use speaker_support::{cluster_yaml, write_atomic, Dir, SpeakerProc, Svc};

const NODES: [(&str, &str); 3] = [
    ("node-0", "192.0.2.10"),
    ("node-1", "192.0.2.11"),
    ("node-2", "192.0.2.12"),
];
const CLIENT: &str = "192.0.2.50";
const IP: &str = "192.0.2.100";
const PORT: &str = "8080";
/// SIGKILL failovers per run; the failover bench (`bench/l2_failover.sh`) runs 20 of each
/// fault beside keepalived.
const REPS: usize = 10;
/// Every single failover must beat this (the target is 1 s at p99; the slack is for a
/// loaded machine).
const FAILOVER_BOUND_MS: f64 = 3000.0;

const L2ADV: &str = "---\napiVersion: edgelb.io/v1alpha1\nkind: L2Advertisement\n\
metadata: {name: lan, namespace: edgelb-system}\nspec: {}\n";

/// The gossip key: node-0 reads it from a file (`--member-key-file`), the others from this
/// Secret of the cluster file (`--member-key-secret`), laid out as the README's
/// `kubectl create secret generic edgelb-memberlist --from-literal=key=...` makes it.
const GOSSIP_KEY: &str = "lab-gossip-key-0123456789abcdef";
const KEY_SECRET: &str = "---\napiVersion: v1\nkind: Secret\n\
metadata: {name: edgelb-memberlist, namespace: edgelb-system}\n\
stringData: {key: lab-gossip-key-0123456789abcdef}\n";

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

/// `ask.py DEV SRC_IP IP DURATION_S`: a broadcast ARP request for IP every 50 ms (the
/// answers are read from a capture; `arping` waits whole seconds between requests).
const ASK: &str = r#"
import socket, struct, sys, time
dev, src, dst, dur = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((dev, 0))
mac = s.getsockname()[4]
frame = (b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
         + mac + socket.inet_aton(src) + b"\x00" * 6 + socket.inet_aton(dst))
end = time.time() + dur
while time.time() < end:
    s.send(frame)
    time.sleep(0.05)
"#;

struct Node {
    ns: Netns,
    port: String,
    mac: String,
    file: PathBuf,
    speaker: Option<SpeakerProc>,
    listener: Option<NsProcess>,
}

struct L2Lab {
    lan: Lan,
    client: Netns,
    nodes: Vec<Node>,
    dir: Dir,
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

impl L2Lab {
    fn new(tag: &str) -> anyhow::Result<L2Lab> {
        let dir = Dir::new(tag)?;
        let mut lan = Lan::new()?;
        let client = Netns::new("cl")?;
        lan.attach(&client, "eth0")?;
        client.addr("eth0", &format!("{CLIENT}/24"))?;
        std::fs::write(dir.path("serve.py"), SERVE)?;
        std::fs::write(dir.path("probe.py"), PROBE)?;
        std::fs::write(dir.path("ask.py"), ASK)?;
        std::fs::write(dir.path("gossip.key"), format!("{GOSSIP_KEY}\n"))?;
        let yaml = cluster_yaml(
            &NODES,
            &format!("{IP}-{IP}"),
            &[Svc {
                name: "web",
                ip: IP,
                local: false,
                endpoints: vec!["node-0", "node-1", "node-2"],
            }],
            &format!("{L2ADV}{KEY_SECRET}"),
        );
        let mut nodes = Vec::new();
        for (i, (name, addr)) in NODES.iter().enumerate() {
            let ns = Netns::new(&format!("m{i}"))?;
            let port = lan.attach(&ns, "eth0")?;
            ns.addr("eth0", &format!("{addr}/24"))?;
            for dev in ["all", "eth0"] {
                ns.sysctl(&format!("net.ipv4.conf.{dev}.arp_ignore"), "1")?;
                ns.sysctl(&format!("net.ipv4.conf.{dev}.arp_announce"), "2")?;
            }
            ns.addr("lo", &format!("{IP}/32"))?;
            let file = dir.path(&format!("{name}.yaml"));
            write_atomic(&file, &yaml)?;
            nodes.push(Node {
                mac: mac_of(&ns, "eth0")?,
                ns,
                port,
                file,
                speaker: None,
                listener: None,
            });
        }
        let mut lab = L2Lab {
            lan,
            client,
            nodes,
            dir,
            starts: 0,
        };
        for i in 0..NODES.len() {
            lab.start_listener(i)?;
            lab.start_speaker(i)?;
        }
        Ok(lab)
    }

    fn start_listener(&mut self, i: usize) -> anyhow::Result<()> {
        let log = self.dir.path(&format!("serve-{i}-{}.log", self.starts));
        self.starts += 1;
        let script = self.dir.path("serve.py").display().to_string();
        let p = self.nodes[i]
            .ns
            .spawn(&["/usr/bin/python3", &script, PORT, NODES[i].0], Some(&log))?;
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

    fn start_speaker(&mut self, i: usize) -> anyhow::Result<()> {
        let log = self
            .dir
            .path(&format!("{}-{}.log", NODES[i].0, self.starts));
        self.starts += 1;
        let me = format!("{}:7946", NODES[i].1);
        let peers: Vec<String> = NODES
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, (_, a))| format!("{a}:7946"))
            .collect();
        let key = self.dir.path("gossip.key").display().to_string();
        let peers = peers.join(",");
        let key_args = if i == 0 {
            ["--member-key-file", key.as_str()]
        } else {
            ["--member-key-secret", "edgelb-memberlist"]
        };
        let node = &mut self.nodes[i];
        node.speaker = Some(SpeakerProc::start(
            &node.ns,
            NODES[i].0,
            &node.file,
            log,
            &[
                "--member-addr",
                &me,
                "--member-peers",
                &peers,
                key_args[0],
                key_args[1],
            ],
        )?);
        Ok(())
    }

    /// Waits until the (re)started speaker of node `i` has seen both others come up, then
    /// a moment for a handoff back to it (its GARP) to settle.
    fn wait_joined(&self, i: usize) -> anyhow::Result<()> {
        let speaker = self.nodes[i].speaker.as_ref().context("no speaker")?;
        wait_until(
            "the restarted speaker to see both others",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || Ok((speaker.logs().matches("member up").count() >= NODES.len() - 1).then_some(())),
        )
        .with_context(|| self.logs())?;
        std::thread::sleep(Duration::from_millis(300));
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
            .output(&["arping", "-c", "2", "-w", "1", "-I", "eth0", IP])?;
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
                IP,
                PORT,
                &secs.to_string(),
                "5",
            ],
            Some(&log),
        )?;
        Ok((p, log))
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .filter_map(|n| n.speaker.as_ref())
            .map(|s| format!("--- {}:\n{}", s.node, lab::router::tail(&s.logs(), 12)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Asks for the IP by broadcast ARP every 50 ms for `secs` (replies land in the capture).
fn arp_sampler(lab: &L2Lab, secs: u32) -> anyhow::Result<NsProcess> {
    let script = lab.dir.path("ask.py").display().to_string();
    lab.client.spawn(
        &[
            "/usr/bin/python3",
            &script,
            "eth0",
            CLIENT,
            IP,
            &secs.to_string(),
        ],
        None,
    )
}

/// The moments (and MACs) at which two nodes answered one of the client's ARP requests:
/// the replies sent to the client between one request and the next, by distinct sender
/// (the broadcast reply form of a gratuitous ARP answers nobody).
fn double_answers(frames: &[edgelb_tests::lab::capture::Frame]) -> Vec<(f64, Vec<String>)> {
    let ask = format!("Request who-has {IP} tell {CLIENT}");
    let answer = format!("Reply {IP} is-at");
    let mut out = Vec::new();
    let mut window: Option<(f64, Vec<String>)> = None;
    let mut close = |w: Option<(f64, Vec<String>)>| {
        if let Some((t, macs)) = w {
            if macs.len() > 1 {
                out.push((t, macs));
            }
        }
    };
    for f in frames {
        if f.line.contains(&ask) {
            close(window.take());
            window = Some((f.time, Vec::new()));
        } else if f.line.contains(&answer) && !f.dst_mac.eq_ignore_ascii_case("ff:ff:ff:ff:ff:ff") {
            if let Some((_, macs)) = window.as_mut() {
                let mac = f.src_mac.to_ascii_lowercase();
                if !macs.contains(&mac) {
                    macs.push(mac);
                }
            }
        }
    }
    close(window);
    out
}

/// Never two nodes answering one of the sampler's requests; enough requests were sampled.
fn assert_one_answer_per_request(capture: &Capture) -> anyhow::Result<()> {
    let frames = capture.frames()?;
    let asked = frames
        .iter()
        .filter(|f| {
            f.line
                .contains(&format!("Request who-has {IP} tell {CLIENT}"))
        })
        .count();
    let doubles = double_answers(&frames);
    figure(format!(
        "speaker_l2: {asked} ARP requests sampled every 50 ms, {} answered by two nodes",
        doubles.len()
    ));
    assert!(asked >= 50, "the ARP sampler sent only {asked} requests");
    assert!(
        doubles.is_empty(),
        "two nodes answered one ARP request: {doubles:?}"
    );
    Ok(())
}

/// The longest time without a successful connection in `[from, to]`, in ms, and how many
/// attempts failed there.
fn longest_outage(lines: &[(f64, Option<String>)], from: f64, to: f64) -> (f64, usize) {
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

#[test]
fn one_owner_answers_and_sigkill_fails_over_and_sigterm_hands_over_without_loss(
) -> anyhow::Result<()> {
    if !lab::enabled("speaker_l2") {
        return Ok(());
    }
    let mut lab = L2Lab::new("speaker-l2")?;
    let owner = lab.single_owner(Duration::from_secs(20))?;
    eprintln!("speaker_l2: one owner answers ARP: {}", NODES[owner].0);
    let capture = Capture::start(&lab.client, "eth0", "arp", &lab.dir.0)?;

    // SIGKILL failovers: REPS repetitions, each bounded by its waits.
    let (mut garp, mut success) = (Vec::new(), Vec::new());
    let mut failed_total = 0;
    let started = Instant::now();
    for rep in 0..REPS {
        let owner = lab.single_owner(Duration::from_secs(15))?;
        let (probe, log) = lab.probe(&format!("kill{rep}"), 4.0)?;
        std::thread::sleep(Duration::from_millis(200));
        let killed = SystemTime::now();
        if let Some(s) = lab.nodes[owner].speaker.as_mut() {
            s.process.signal(libc::SIGKILL)?;
        }
        lab.nodes[owner].listener.take();
        let k = epoch(killed);
        let first_ok = wait_until(
            "a connection to another node after the kill",
            Duration::from_secs(8),
            Duration::from_millis(20),
            || {
                Ok(probe_lines(&log)
                    .into_iter()
                    .find(|(t, ok)| *t > k && ok.as_deref().is_some_and(|n| n != NODES[owner].0))
                    .map(|(t, _)| t))
            },
        )
        .with_context(|| lab.logs())?;
        // tcpdump writes a moment after the frame: wait for it, bounded.
        let garp_line = format!("who-has {IP} tell {IP}");
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
            .with_context(|| {
                let frames: Vec<String> = capture
                    .frames()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|f| f.time > k - 1.0)
                    .map(|f| f.line)
                    .collect();
                format!("no gratuitous ARP from another node after the kill at {k}; ARP seen:\n{}\nprobe:\n{}\n{}", frames.join("\n"), std::fs::read_to_string(&log).unwrap_or_default(), lab.logs())
            })?;
        // The failover is measured: stop the client (its failures so far are the gap).
        drop(probe);
        let failed = probe_lines(&log)
            .iter()
            .filter(|(t, ok)| *t > k && ok.is_none())
            .count();
        failed_total += failed;
        garp.push((first_garp - k) * 1000.0);
        success.push((first_ok - k) * 1000.0);
        eprintln!(
            "speaker_l2: rep {rep}: killed {}; first GARP +{:.0} ms, first success +{:.0} ms, {failed} failed connects",
            NODES[owner].0,
            (first_garp - k) * 1000.0,
            (first_ok - k) * 1000.0
        );
        lab.nodes[owner].speaker.take();
        lab.start_listener(owner)?;
        lab.start_speaker(owner)?;
        lab.wait_joined(owner)?;
    }
    garp.sort_by(f64::total_cmp);
    success.sort_by(f64::total_cmp);
    figure(format!(
        "speaker_l2: SIGKILL failover over {} reps in {:.0} s: kill->first GARP p50 {:.0} ms p99 {:.0} ms; kill->first success p50 {:.0} ms p99 {:.0} ms; {failed_total} failed connects in all",
        garp.len(),
        started.elapsed().as_secs_f64(),
        percentile(&garp, 0.5),
        percentile(&garp, 0.99),
        percentile(&success, 0.5),
        percentile(&success, 0.99)
    ));
    // The targets (p50 <= 500 ms, p99 <= 1 s) are read from the figures above, not asserted:
    // a loaded machine moves them. A failover that takes seconds is a bug, though.
    let worst = garp
        .last()
        .copied()
        .unwrap_or(f64::NAN)
        .max(success.last().copied().unwrap_or(f64::NAN));
    assert!(
        worst < FAILOVER_BOUND_MS,
        "a SIGKILL failover took {worst:.0} ms (bound {FAILOVER_BOUND_MS} ms)"
    );

    // SIGTERM: planned handoff. The old node's listener goes right after its speaker exits,
    // so a client still sending to the old MAC would fail.
    let owner = lab.single_owner(Duration::from_secs(15))?;
    let (mut probe, log) = lab.probe("term", 4.0)?;
    std::thread::sleep(Duration::from_millis(500));
    let took = lab.nodes[owner]
        .speaker
        .as_mut()
        .context("no speaker")?
        .terminate(Duration::from_secs(2))?;
    lab.nodes[owner].listener.take();
    let _ = probe.wait_exit(Duration::from_secs(10));
    let lines = probe_lines(&log);
    let failed = lines.iter().filter(|(_, ok)| ok.is_none()).count();
    let after: Vec<&String> = lines
        .iter()
        .rev()
        .take(10)
        .filter_map(|(_, ok)| ok.as_ref())
        .collect();
    figure(format!(
        "speaker_l2: SIGTERM handoff from {}: exit {took:?}, {} connects, {failed} failed, last answered by {:?}",
        NODES[owner].0,
        lines.len(),
        after.first()
    ));
    assert_eq!(
        failed,
        0,
        "connections failed during the planned handoff:\n{}",
        lab.logs()
    );
    assert!(after.iter().all(|n| *n != NODES[owner].0));
    Ok(())
}

#[test]
fn a_cut_off_owner_stops_owning_and_healing_leaves_one_owner() -> anyhow::Result<()> {
    if !lab::enabled("speaker_l2") {
        return Ok(());
    }
    let lab = L2Lab::new("speaker-l2-cut")?;
    let owner = lab.single_owner(Duration::from_secs(20))?;
    let speaker = lab.nodes[owner].speaker.as_ref().context("speaker")?;
    let capture = Capture::start(&lab.client, "eth0", "arp", &lab.dir.0)?;
    let (_probe, log) = lab.probe("cut", 30.0)?;
    let _sampler = arp_sampler(&lab, 30)?;
    std::thread::sleep(Duration::from_millis(300));
    let before = speaker.logs().len();
    let cut_at = epoch(SystemTime::now());
    let cut = Instant::now();
    lab.lan
        .switch()
        .ip(&["link", "set", &lab.nodes[owner].port, "down"])?;
    wait_until(
        "the cut owner to give up its L2 IPs",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let text = speaker.logs();
            Ok(text[before.min(text.len())..]
                .lines()
                .any(|l| {
                    l.contains("l2 applied")
                        && l.contains("owned=[]")
                        && l.contains("may_own=false")
                })
                .then_some(()))
        },
    )
    .with_context(|| lab.logs())?;
    let stopped = cut.elapsed();
    let next = lab.single_owner(Duration::from_secs(10))?;
    let moved = cut.elapsed();
    assert_ne!(next, owner);
    figure(format!(
        "speaker_l2: partition: {} cut off, stopped owning after {stopped:?}; {} answers after {moved:?}",
        NODES[owner].0, NODES[next].0
    ));
    // Membership detects in about a second (SWIM timings for a LAN): two periods, with
    // slack for a loaded machine.
    assert!(stopped < Duration::from_secs(4), "took {stopped:?}");

    let back = wait_until(
        "the client to be served by another node after the cut",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            Ok(probe_lines(&log)
                .into_iter()
                .find(|(t, ok)| *t > cut_at && ok.as_deref().is_some_and(|n| n != NODES[owner].0))
                .map(|(t, _)| t))
        },
    )?;
    figure(format!(
        "speaker_l2: link cut of the owner: client served again after {:.0} ms",
        (back - cut_at) * 1000.0
    ));

    // Healing: the owner comes back ranked first and takes its IP back. Every node serves
    // the IP (kube-proxy's part here is the listener on every node), so the move-back is
    // hitless when nobody stops answering before the next one announced.
    std::thread::sleep(Duration::from_millis(1000));
    let healed_at = epoch(SystemTime::now());
    lab.lan
        .switch()
        .ip(&["link", "set", &lab.nodes[owner].port, "up"])?;
    std::thread::sleep(Duration::from_secs(3));
    let lines = probe_lines(&log);
    let (outage, failed) = longest_outage(&lines, healed_at, healed_at + 3.0);
    let last = lines.iter().rev().find_map(|(_, ok)| ok.clone());
    figure(format!(
        "speaker_l2: move-back after healing: longest gap {outage:.0} ms, {failed} failed connects; now served by {last:?}"
    ));
    assert_eq!(
        failed,
        0,
        "the move-back after healing lost connections\n{}",
        lab.logs()
    );
    let healed = lab.single_owner(Duration::from_secs(15))?;
    // Stable: still exactly one a moment later.
    std::thread::sleep(Duration::from_millis(500));
    let answers = lab.arp_answers()?;
    assert_eq!(
        answers.len(),
        1,
        "after healing: {answers:?}\n{}",
        lab.logs()
    );
    figure(format!(
        "speaker_l2: healed: exactly one owner again ({})",
        NODES[healed].0
    ));
    assert_one_answer_per_request(&capture)?;
    Ok(())
}

/// The stranded client (issue 16): freeze the owner, an interim owner takes over, resume
/// the owner, cut the interim owner off. The resumed owner never lost the IP in its own
/// view; unless it announces again, the client stays with the interim owner and is cut
/// off with it until its neighbour entry ages out (27-52 s measured before the fix).
#[test]
fn a_resumed_owner_announces_again_so_its_client_survives_losing_the_interim_owner(
) -> anyhow::Result<()> {
    if !lab::enabled("speaker_l2") {
        return Ok(());
    }
    let lab = L2Lab::new("speaker-l2-stranded")?;
    let owner = lab.single_owner(Duration::from_secs(20))?;
    let capture = Capture::start(&lab.client, "eth0", "arp", &lab.dir.0)?;
    let (_probe, log) = lab.probe("stranded", 30.0)?;
    let _sampler = arp_sampler(&lab, 30)?;
    std::thread::sleep(Duration::from_millis(300));
    let speaker = lab.nodes[owner].speaker.as_ref().context("speaker")?;
    let frozen_at = epoch(SystemTime::now());
    speaker.process.signal(libc::SIGSTOP)?;
    let (interim_at, interim) = wait_until(
        "an interim owner to serve the client",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            Ok(probe_lines(&log).into_iter().find_map(|(t, ok)| {
                let n = ok.filter(|n| t > frozen_at && n != NODES[owner].0)?;
                Some((t, NODES.iter().position(|(name, _)| *name == n)?))
            }))
        },
    )
    .with_context(|| lab.logs())?;
    figure(format!(
        "speaker_l2: freeze of the owner: client served by {} after {:.0} ms",
        NODES[interim].0,
        (interim_at - frozen_at) * 1000.0
    ));
    std::thread::sleep(Duration::from_millis(700));
    let resumed_at = epoch(SystemTime::now());
    speaker.process.signal(libc::SIGCONT)?;
    std::thread::sleep(Duration::from_millis(1500));
    let cut_at = epoch(SystemTime::now());
    lab.lan
        .switch()
        .ip(&["link", "set", &lab.nodes[interim].port, "down"])?;
    std::thread::sleep(Duration::from_secs(4));
    let lines = probe_lines(&log);
    let (moveback, moveback_failed) = longest_outage(&lines, resumed_at, cut_at);
    let (outage, failed) = longest_outage(&lines, cut_at, cut_at + 4.0);
    let served_by = lines.iter().rev().find_map(|(_, ok)| ok.clone());
    figure(format!(
        "speaker_l2: stranded client: after the resume longest gap {moveback:.0} ms ({moveback_failed} failed); after cutting the interim owner {} longest gap {outage:.0} ms ({failed} failed), served by {served_by:?}",
        NODES[interim].0
    ));
    lab.lan
        .switch()
        .ip(&["link", "set", &lab.nodes[interim].port, "up"])?;
    assert!(
        outage < FAILOVER_BOUND_MS,
        "the client was cut off {outage:.0} ms with the interim owner\n{}",
        lab.logs()
    );
    assert_one_answer_per_request(&capture)?;
    Ok(())
}

/// Prints a measured figure and keeps it in `target/tmp/figures/speaker_l2.txt`, which
/// `.ci/run` prints after the tests (cargo hides a passing test's output).
fn figure(line: String) {
    use std::io::Write;
    eprintln!("{line}");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("figures");
    let file = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("speaker_l2.txt"))
    });
    if let Ok(mut f) = file {
        let _ = writeln!(f, "{line}");
    }
}

//! End to end, L2: three node namespaces and a client on one LAN, each node running the
//! real `edgelb-speaker` (standalone file, authenticated gossip) and a TCP listener on the
//! Service IP (on `lo`, with kube-proxy's strictARP settings `arp_ignore=1`,
//! `arp_announce=2`, so only the announcer answers ARP for it).
//!
//! - exactly one node answers ARP for the IP;
//! - failover series: SIGKILL of the owner (speaker and listener: the node's services
//!   die), its link cut, and a freeze (SIGSTOP of speaker and listener), each repeated
//!   (`EDGELB_L2_REPS`, default a few for CI): fault-to-first-GARP (capture on the client)
//!   and fault-to-first-success (a TCP connect every 5 ms) with p50/p90/p99/max;
//! - SIGTERM of the owner: handoff with zero failed connections;
//! - partition: the cut owner stops owning within two detection periods, another node takes
//!   over; after healing exactly one node answers again, and takes its IP back without a
//!   failed connection;
//! - the stranded client: the owner is frozen (SIGSTOP), an interim owner takes over, the
//!   owner resumes (it never lost the IP in its own view) and must announce again, so that
//!   when the interim owner is then cut off the client is still served;
//! - throughout the fault sequences an ARP request every 50 ms (captured on the client):
//!   never two nodes answering one request;
//! - an asymmetric partition, five nodes: one watcher of the owner is cut off from the owner
//!   alone (every other path works); the other watcher vouches for the owner, so nobody is
//!   declared down, the IP stays, and the client is served throughout.
mod speaker_support;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use edgelb_tests::lab::capture::{epoch, Capture};
use edgelb_tests::lab::{self, wait_until, Lan, Netns, NsProcess};
use speaker_support::l2::{
    self as l2lab, longest_outage, measure_failover, probe_lines, Failover, Fault, KeyFrom,
};
use speaker_support::{cluster_yaml, write_atomic, Dir, SpeakerProc, Svc};

/// The nodes a lab may have; most tests use the first three.
const NODES: [(&str, &str); 5] = [
    ("node-0", "192.0.2.10"),
    ("node-1", "192.0.2.11"),
    ("node-2", "192.0.2.12"),
    ("node-3", "192.0.2.13"),
    ("node-4", "192.0.2.14"),
];
const CLIENT: &str = "192.0.2.50";
const IP: &str = "192.0.2.100";
/// Failovers per fault in CI (`EDGELB_L2_REPS` overrides; issue 16's figures use 20); the
/// failover bench (`bench/l2_failover.sh`) runs 20 of each fault beside keepalived.
const REPS: usize = 4;
/// Every single failover must beat this (the target is 1 s at p99; the slack is for a
/// loaded machine).
const FAILOVER_BOUND_MS: f64 = 3000.0;

const L2ADV: &str = "---\napiVersion: edgelb.io/v1alpha1\nkind: L2Advertisement\n\
metadata: {name: lan, namespace: edgelb-system}\nspec: {}\n";

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
    /// Name and address of each node (the first `nodes.len()` of [`NODES`]).
    names: &'static [(&'static str, &'static str)],
    /// The speakers' tracing filter.
    log_filter: &'static str,
    dir: Dir,
    starts: usize,
}

impl L2Lab {
    fn new(tag: &str) -> anyhow::Result<L2Lab> {
        Self::with_nodes(tag, 3, "info")
    }

    /// A lab of `n` nodes whose speakers log with `log_filter`.
    fn with_nodes(tag: &str, n: usize, log_filter: &'static str) -> anyhow::Result<L2Lab> {
        let names = &NODES[..n];
        let dir = Dir::new(tag)?;
        let mut lan = Lan::new()?;
        let (client, _) = l2lab::lan_ns(&mut lan, "cl", &format!("{CLIENT}/24"))?;
        l2lab::write_scripts(&dir)?;
        std::fs::write(dir.path("ask.py"), ASK)?;
        l2lab::write_gossip_key(&dir)?;
        let yaml = cluster_yaml(
            names,
            &format!("{IP}-{IP}"),
            &[Svc {
                name: "web",
                ip: IP,
                local: false,
                endpoints: names.iter().map(|(n, _)| *n).collect(),
            }],
            &format!("{L2ADV}{}", l2lab::KEY_SECRET),
        );
        let mut nodes = Vec::new();
        for (i, (name, addr)) in names.iter().enumerate() {
            let (ns, port, mac) = l2lab::node_ns(&mut lan, &format!("m{i}"), addr, IP)?;
            let file = dir.path(&format!("{name}.yaml"));
            write_atomic(&file, &yaml)?;
            nodes.push(Node {
                mac,
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
            names,
            log_filter,
            dir,
            starts: 0,
        };
        for i in 0..n {
            lab.start_listener(i)?;
            lab.start_speaker(i)?;
        }
        Ok(lab)
    }

    fn start_listener(&mut self, i: usize) -> anyhow::Result<()> {
        let tag = format!("{i}-{}", self.starts);
        self.starts += 1;
        let p = l2lab::start_listener(&self.dir, &self.nodes[i].ns, self.names[i].0, &tag)?;
        self.nodes[i].listener = Some(p);
        Ok(())
    }

    /// Starts the speaker of node `i`: node-0 reads the gossip key from a file, the others
    /// from the Secret of the cluster file.
    fn start_speaker(&mut self, i: usize) -> anyhow::Result<()> {
        let log = self
            .dir
            .path(&format!("{}-{}.log", self.names[i].0, self.starts));
        self.starts += 1;
        let key = if i == 0 {
            KeyFrom::File
        } else {
            KeyFrom::Secret
        };
        let node = &self.nodes[i];
        let speaker = l2lab::start_member(
            &self.dir,
            &node.ns,
            self.names,
            i,
            &node.file,
            log,
            key,
            self.log_filter,
        )?;
        self.nodes[i].speaker = Some(speaker);
        Ok(())
    }

    /// Waits until the (re)started speaker of node `i` has seen every other come up, then
    /// a moment for a handoff back to it (its GARP) to settle.
    fn wait_joined(&self, i: usize) -> anyhow::Result<()> {
        let speaker = self.nodes[i].speaker.as_ref().context("no speaker")?;
        let others = self.names.len() - 1;
        wait_until(
            "the restarted speaker to see every other",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || Ok((speaker.logs().matches("member up").count() >= others).then_some(())),
        )
        .with_context(|| self.logs())?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(())
    }

    fn macs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.mac.clone()).collect()
    }

    /// The MACs that answer an ARP request for the IP.
    fn arp_answers(&self) -> anyhow::Result<Vec<String>> {
        l2lab::arp_answers(&self.client, IP)
    }

    /// Waits until exactly one node answers ARP for the IP; returns it.
    fn single_owner(&self, timeout: Duration) -> anyhow::Result<usize> {
        l2lab::single_owner(&self.client, IP, &self.macs(), timeout, || self.logs())
    }

    fn probe(&self, name: &str, secs: f64) -> anyhow::Result<(NsProcess, PathBuf)> {
        l2lab::start_probe(&self.dir, &self.client, IP, name, secs)
    }

    /// Applies `fault` to node `i`, the owner.
    fn fault(&mut self, i: usize, fault: Fault) -> anyhow::Result<()> {
        match fault {
            Fault::Kill => {
                if let Some(s) = self.nodes[i].speaker.as_mut() {
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

    /// Ends `fault` of node `i`: a new speaker and listener, the link back up, or the
    /// processes resumed; then waits for the cluster to settle (the node back in everyone's
    /// view, its IP back to it after the takeover hold).
    fn recover(&mut self, i: usize, fault: Fault) -> anyhow::Result<()> {
        match fault {
            Fault::Kill => {
                self.nodes[i].speaker.take();
                self.start_listener(i)?;
                self.start_speaker(i)?;
                self.wait_joined(i)?;
            }
            Fault::Cut => {
                self.lan
                    .switch()
                    .ip(&["link", "set", &self.nodes[i].port, "up"])?;
                std::thread::sleep(Duration::from_millis(2500));
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
                std::thread::sleep(Duration::from_millis(2500));
            }
        }
        Ok(())
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

#[test]
fn one_owner_answers_fails_over_on_kill_cut_and_freeze_and_sigterm_hands_over_without_loss(
) -> anyhow::Result<()> {
    if !lab::enabled("speaker_l2") {
        return Ok(());
    }
    let _shared = ALONE.read().unwrap_or_else(|p| p.into_inner());
    let mut lab = L2Lab::new("speaker-l2")?;
    let owner = lab.single_owner(Duration::from_secs(20))?;
    eprintln!("speaker_l2: one owner answers ARP: {}", NODES[owner].0);
    let capture = Capture::start(&lab.client, "eth0", "arp", &lab.dir.0)?;

    // Failover series: REPS repetitions of each fault, each bounded by its waits.
    let mut worst: f64 = 0.0;
    for fault in Fault::ALL {
        let mut runs: Vec<Failover> = Vec::new();
        let started = Instant::now();
        for rep in 0..l2lab::reps(REPS) {
            let owner = lab.single_owner(Duration::from_secs(15))?;
            let (probe, log) = lab.probe(&format!("{fault:?}-{rep}"), 6.0)?;
            std::thread::sleep(Duration::from_millis(200));
            let at = epoch(SystemTime::now());
            lab.fault(owner, fault)?;
            let run = measure_failover(
                &capture,
                &log,
                IP,
                at,
                NODES[owner].0,
                &lab.nodes[owner].mac,
                || lab.logs(),
            )
            .with_context(|| format!("{} rep {rep}", fault.as_str()));
            // The failover is measured: stop the client, end the fault.
            drop(probe);
            lab.recover(owner, fault)?;
            let run = run?;
            eprintln!(
                "speaker_l2: {} rep {rep} of {}: first GARP +{:.0} ms, first success +{:.0} ms, {} failed connects",
                fault.as_str(),
                NODES[owner].0,
                run.garp_ms,
                run.success_ms,
                run.failed
            );
            worst = worst.max(run.garp_ms).max(run.success_ms);
            runs.push(run);
        }
        figure(l2lab::series_line(
            "speaker_l2",
            fault,
            &runs,
            started.elapsed().as_secs_f64(),
        ));
    }
    // The targets (p50 <= 250 ms, p99 <= 400 ms) are read from the figures above, not
    // asserted: a loaded machine moves them. A failover that takes seconds is a bug, though.
    assert!(
        worst < FAILOVER_BOUND_MS,
        "a failover took {worst:.0} ms (bound {FAILOVER_BOUND_MS} ms)"
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
    let _shared = ALONE.read().unwrap_or_else(|p| p.into_inner());
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
                        && l.contains("owned=0 ")
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
    let _shared = ALONE.read().unwrap_or_else(|p| p.into_inner());
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
    // The resumed owner answers again after the takeover hold (1 s).
    std::thread::sleep(Duration::from_millis(2500));
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

/// How long the asymmetric partition lasts: many probe periods (75 ms) and timeouts
/// (175 ms), and longer than SWIM's 1 s suspicion.
const ASYMMETRIC_CUT: Duration = Duration::from_secs(3);

/// The nodes the speaker of `log` last said it sends owner heartbeats to (its debug line
/// `heartbeat targets targets={"node-1", "node-3"}`), if any.
fn heartbeat_targets(log: &str) -> Option<Vec<String>> {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("heartbeat targets"))?;
    let set = line.get(line.find('{')? + 1..line.rfind('}')?)?;
    let names: Vec<String> = set
        .split(',')
        .map(|n| n.trim().trim_matches('"').to_string())
        .filter(|n| !n.is_empty())
        .collect();
    (!names.is_empty()).then_some(names)
}

/// The lines a speaker's log gained since it was `from` bytes long.
fn since(log: &str, from: usize) -> &str {
    log.get(from.min(log.len())..).unwrap_or("")
}

/// What one asymmetric cut showed.
struct CutOutcome {
    /// The cut watcher found the owner silent this many times.
    probed: usize,
    /// Who vouched for the owner to the cut watcher, once per vouch.
    vouchers: Vec<String>,
    /// Verdicts, self-downs and releases, per node (none may happen).
    verdicts: Vec<String>,
    /// Nodes whose membership did not run for longer than the heartbeat timeout meanwhile.
    starved: Vec<String>,
    /// Client attempts in the window, failed ones, ones served by another node.
    connects: usize,
    failed: usize,
    elsewhere: usize,
}

/// Cuts node `watcher` off from node `owner` alone, both ways (a blackhole route for the
/// other's address in each of the two namespaces: the owner's heartbeats, the watcher's
/// probes and their SWIM traffic are lost; ARP and every other pair work) for
/// [`ASYMMETRIC_CUT`], heals, and reads the logs and the client.
fn cut_one_watcher(lab: &L2Lab, owner: usize, watcher: usize) -> anyhow::Result<CutOutcome> {
    let secs = ASYMMETRIC_CUT.as_secs_f64() + 2.0;
    let (_probe, log) = lab.probe("asym", secs)?;
    let _sampler = arp_sampler(lab, secs.ceil() as u32)?;
    std::thread::sleep(Duration::from_millis(300));
    let texts = || -> Vec<String> {
        lab.nodes
            .iter()
            .map(|n| {
                n.speaker
                    .as_ref()
                    .map(SpeakerProc::logs)
                    .unwrap_or_default()
            })
            .collect()
    };
    let before: Vec<usize> = texts().iter().map(String::len).collect();
    let (owner_ns, watcher_ns) = (&lab.nodes[owner].ns, &lab.nodes[watcher].ns);
    let owner_route = format!("{}/32", lab.names[owner].1);
    let watcher_route = format!("{}/32", lab.names[watcher].1);
    let cut_at = epoch(SystemTime::now());
    watcher_ns.ip(&["route", "add", "blackhole", &owner_route])?;
    owner_ns.ip(&["route", "add", "blackhole", &watcher_route])?;
    std::thread::sleep(ASYMMETRIC_CUT);
    let healed_at = epoch(SystemTime::now());
    watcher_ns.ip(&["route", "del", "blackhole", &owner_route])?;
    owner_ns.ip(&["route", "del", "blackhole", &watcher_route])?;
    std::thread::sleep(Duration::from_millis(1000));
    let texts = texts();
    let during = |i: usize| since(&texts[i], before[i]);
    let probed = during(watcher)
        .lines()
        .filter(|l| l.contains("owner silent: probing it"))
        .count();
    let vouchers = during(watcher)
        .lines()
        .filter(|l| l.contains("silent owner vouched for"))
        .filter_map(|l| l2lab::field(l, "voucher"))
        .collect();
    let (mut verdicts, mut starved) = (Vec::new(), Vec::new());
    for i in 0..lab.nodes.len() {
        let new = during(i);
        let (down, self_down) = l2lab::downs(new);
        let released = new.matches("we may have been replaced").count();
        if !down.is_empty() || self_down > 0 || released > 0 {
            verdicts.push(format!(
                "{} declared {down:?} down, was declared down {self_down}x, released {released}x",
                lab.names[i].0
            ));
        }
        if new.contains("the membership did not run for longer than the heartbeat timeout") {
            starved.push(lab.names[i].0.to_string());
        }
    }
    let lines = probe_lines(&log);
    let window: Vec<&(f64, Option<String>)> = lines
        .iter()
        .filter(|(t, _)| *t >= cut_at && *t <= healed_at + 0.5)
        .collect();
    Ok(CutOutcome {
        probed,
        vouchers,
        verdicts,
        starved,
        connects: window.len(),
        failed: window.iter().filter(|(_, ok)| ok.is_none()).count(),
        elsewhere: window
            .iter()
            .filter(|(_, ok)| ok.as_deref().is_some_and(|n| n != lab.names[owner].0))
            .count(),
    })
}

/// Lab tests that run alone take this for writing; the others for reading.
static ALONE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// An asymmetric partition (issue 16): five nodes; one watcher of the owner (a node it
/// heartbeats to) is cut off from the owner alone ([`cut_one_watcher`]). The watcher finds
/// the owner silent and probes it in vain; the owner's other watcher, which hears it, must
/// vouch for it, so: nobody is declared down, the owner keeps the IP, never two nodes
/// answer ARP, and the client is served by the owner throughout. Without the vouches (or
/// with them asked of members that do not watch the owner, as the first two other live
/// members of five often are not) the cut watcher declares the live owner down after its
/// timeout and the IP moves.
///
/// Runs alone (the other tests of this file start 3 speakers each in parallel): a host that
/// does not run a speaker for longer than the heartbeat timeout makes any member look dead,
/// which is not what this test is about. A cut during which a speaker reports such a stall
/// of its own proves nothing either way and is tried again, up to 3 times.
#[test]
fn a_watcher_cut_off_from_a_live_owner_alone_takes_nothing_because_the_other_watcher_vouches(
) -> anyhow::Result<()> {
    if !lab::enabled("speaker_l2") {
        return Ok(());
    }
    let _alone = ALONE.write().unwrap_or_else(|p| p.into_inner());
    let lab = L2Lab::with_nodes("speaker-l2-asym", 5, "info,edgelb_daemon::membership=debug")?;
    for attempt in 1..=3 {
        // A capture per attempt: the ARP check below judges only the attempt that is kept,
        // not one thrown away because the host starved a speaker (which may well have let
        // two nodes answer). Dropping it at the end of a discarded attempt stops its tcpdump
        // before the next one truncates the file.
        let capture = Capture::start(&lab.client, "eth0", "arp", &lab.dir.0)?;
        let owner = lab.single_owner(Duration::from_secs(20))?;
        let owner_speaker = lab.nodes[owner].speaker.as_ref().context("speaker")?;
        let watchers = wait_until(
            "the owner to heartbeat to its successors",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || Ok(heartbeat_targets(&owner_speaker.logs()).filter(|w| w.len() >= 2)),
        )
        .with_context(|| lab.logs())?;
        let watcher = lab
            .names
            .iter()
            .position(|(n, _)| *n == watchers[0])
            .context("a watcher that is a lab node")?;
        // Let the heartbeats name the watchers to each other before the cut.
        std::thread::sleep(Duration::from_millis(500));
        let o = cut_one_watcher(&lab, owner, watcher)?;
        let mut vouchers = o.vouchers.clone();
        vouchers.sort();
        vouchers.dedup();
        figure(format!(
            "speaker_l2: asymmetric partition, 5 nodes, attempt {attempt}: {} cut off from the owner {} alone for {:?}: \
             probed {}x, vouched for {}x by {vouchers:?} (the owner's watchers {watchers:?}); verdicts {:?}; \
             starved {:?}; {} connects, {} failed, {} served elsewhere",
            lab.names[watcher].0,
            lab.names[owner].0,
            ASYMMETRIC_CUT,
            o.probed,
            o.vouchers.len(),
            o.verdicts,
            o.starved,
            o.connects,
            o.failed,
            o.elsewhere,
        ));
        if !o.starved.is_empty() {
            eprintln!(
                "speaker_l2: the host did not run {:?} for longer than the heartbeat timeout during the cut: trying again",
                o.starved
            );
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        let other_watchers = &watchers[1..];
        assert!(
            o.verdicts.is_empty(),
            "a live owner cut off from one watcher only was declared down: {:?}\n{}",
            o.verdicts,
            lab.logs()
        );
        assert!(
            o.probed > 0,
            "the cut watcher never found the owner silent: the cut did not cut\n{}",
            lab.logs()
        );
        assert!(
            !o.vouchers.is_empty() && o.vouchers.iter().all(|v| other_watchers.contains(v)),
            "vouched for by {:?}, expected the owner's other watchers {other_watchers:?}",
            o.vouchers
        );
        assert_eq!(
            o.failed, 0,
            "the client lost connections during the partition"
        );
        assert_eq!(o.elsewhere, 0, "the client was served by another node");
        assert!(
            o.connects > 100,
            "the client tried only {} times",
            o.connects
        );
        assert_eq!(lab.single_owner(Duration::from_secs(5))?, owner);
        assert_one_answer_per_request(&capture)?;
        return Ok(());
    }
    anyhow::bail!(
        "the host starved the speakers during all 3 cuts: nothing was shown\n{}",
        lab.logs()
    )
}

/// Prints a measured figure (with the load average) and keeps it in
/// `target/tmp/figures/speaker_l2.txt`.
fn figure(line: String) {
    l2lab::figure("speaker_l2", line);
}

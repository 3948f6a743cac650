//! Shared by the `l2_*` tests: a LAN with node-a, node-b and a client, and drivers for the
//! `announce` and `lab_tool` examples of edgelb-l2, which run inside the node namespaces.
#![allow(dead_code)]
use anyhow::{bail, Context};
use edgelb_tests::lab::{wait_until, Lan, Netns, NsProcess};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::time::{Duration, SystemTime};

pub const SVC4: &str = "192.0.2.100";
pub const SVC6: &str = "2001:db8::100";
pub const PORT: &str = "8080";

/// An example binary of edgelb-l2, built by `cargo test --workspace` (or
/// `cargo build -p edgelb-l2 --examples`) next to this test's own binary.
pub fn example(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no profile directory")?;
    let path = profile_dir.join("examples").join(name);
    if !path.exists() {
        bail!(
            "{} is missing: run `cargo build -p edgelb-l2 --examples` (cargo test --workspace builds it)",
            path.display()
        );
    }
    Ok(path)
}

/// A scratch directory for logs and captures, removed on drop.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> anyhow::Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("edgelb-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::env::var_os("EDGELB_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// node-a, node-b and a client on one bridge. Nodes have `arp_ignore=1`,
/// `arp_announce=2` and the service addresses on `lo`, so their kernels accept traffic for
/// them but never answer ARP or NS for them: only the announcer does.
pub struct L2Lab {
    pub a: Netns,
    pub b: Netns,
    pub client: Netns,
    pub lan: Lan,
    pub mac_a: String,
    pub mac_b: String,
    pub mac_client: String,
    pub dir: Scratch,
}

pub fn mac_of(ns: &Netns, dev: &str) -> anyhow::Result<String> {
    let out = ns.ip(&["-o", "link", "show", dev])?;
    let mut words = out.split_whitespace();
    words
        .find(|w| *w == "link/ether")
        .and_then(|_| words.next())
        .map(str::to_string)
        .with_context(|| format!("no MAC in {out:?}"))
}

impl L2Lab {
    pub fn new(tag: &str) -> anyhow::Result<L2Lab> {
        let mut lan = Lan::new()?;
        let a = Netns::new("la")?;
        let b = Netns::new("lb")?;
        let client = Netns::new("lc")?;
        for ns in [&a, &b, &client] {
            lan.attach(ns, "eth0")?;
        }
        for (ns, n) in [(&a, 1), (&b, 2), (&client, 10)] {
            ns.addr("eth0", &format!("192.0.2.{n}/24"))?;
            ns.addr("eth0", &format!("2001:db8::{n}/64"))?;
        }
        for ns in [&a, &b] {
            for dev in ["all", "eth0"] {
                ns.sysctl(&format!("net.ipv4.conf.{dev}.arp_ignore"), "1")?;
                ns.sysctl(&format!("net.ipv4.conf.{dev}.arp_announce"), "2")?;
            }
            ns.addr("lo", &format!("{SVC4}/32"))?;
            ns.addr("lo", &format!("{SVC6}/128"))?;
        }
        Ok(L2Lab {
            mac_a: mac_of(&a, "eth0")?,
            mac_b: mac_of(&b, "eth0")?,
            mac_client: mac_of(&client, "eth0")?,
            dir: Scratch::new(tag)?,
            a,
            b,
            client,
            lan,
        })
    }

    /// A TCP listener on every address of `ns` that answers with `name`.
    pub fn serve(&self, ns: &Netns, name: &str) -> anyhow::Result<NsProcess> {
        let tool = example("lab_tool")?;
        let log = self.dir.path().join(format!("serve-{name}.log"));
        let p = ns.spawn(
            &[&tool.display().to_string(), "serve", PORT, name],
            Some(&log),
        )?;
        wait_until(
            &format!("{name} listening"),
            Duration::from_secs(10),
            Duration::from_millis(20),
            || Ok(read(&log).contains("listening").then_some(())),
        )?;
        Ok(p)
    }

    /// The MAC the client's kernel has for `ip`, if any.
    pub fn client_neighbour(&self, ip: &str) -> anyhow::Result<Option<String>> {
        let out = self.client.ip(&["neigh", "show", ip, "dev", "eth0"])?;
        let mut words = out.split_whitespace();
        Ok(words
            .find(|w| *w == "lladdr")
            .and_then(|_| words.next())
            .map(str::to_string))
    }

    /// Runs `lab_tool probe` in the client and returns its log path.
    pub fn start_probe(&self, ip: &str, duration_ms: u64) -> anyhow::Result<(NsProcess, PathBuf)> {
        let tool = example("lab_tool")?;
        let log = self.dir.path().join(format!("probe-{ip}.log"));
        let p = self.client.spawn(
            &[
                &tool.display().to_string(),
                "probe",
                ip,
                PORT,
                &duration_ms.to_string(),
                "20",
            ],
            Some(&log),
        )?;
        Ok((p, log))
    }
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// One line of `lab_tool probe`: time, and the server's name or the error.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeResult {
    pub time: f64,
    pub ok: Option<String>,
}

pub fn probe_results(log: &Path) -> Vec<ProbeResult> {
    read(log)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let time = w.next()?.parse().ok()?;
            let ok = match w.next()? {
                "ok" => Some(w.next().unwrap_or_default().to_string()),
                _ => None,
            };
            Some(ProbeResult { time, ok })
        })
        .collect()
}

/// The `announce` example in a namespace, driven by lines on its stdin.
pub struct Announce {
    child: Child,
    stdin: ChildStdin,
    log: PathBuf,
    applied: usize,
    stats_seen: usize,
}

/// What `own` returned.
#[derive(Debug)]
pub struct Applied {
    pub set_at: f64,
    pub done_at: f64,
    pub errors: Vec<String>,
}

impl Announce {
    pub fn start(ns: &Netns, dir: &Path, name: &str) -> anyhow::Result<Announce> {
        let bin = example("announce")?;
        let log = dir.join(format!("announce-{name}.log"));
        let err = dir.join(format!("announce-{name}.err"));
        let mut cmd = ns.command(&bin.display().to_string());
        cmd.stdin(Stdio::piped())
            .stdout(std::fs::File::create(&log)?)
            .stderr(std::fs::File::create(&err)?)
            .env("EDGELB_LOG", "info");
        let mut child = cmd.spawn().context("spawning announce")?;
        let stdin = child.stdin.take().context("announce stdin")?;
        let a = Announce {
            child,
            stdin,
            log,
            applied: 0,
            stats_seen: 0,
        };
        wait_until(
            "announce ready",
            Duration::from_secs(10),
            Duration::from_millis(10),
            || Ok(read(&a.log).contains("ready").then_some(())),
        )?;
        Ok(a)
    }

    /// Sends the whole owned state (`"eth0=192.0.2.100,2001:db8::100"`) and waits until the
    /// announcer has applied it.
    pub fn own(&mut self, state: &str) -> anyhow::Result<Applied> {
        writeln!(self.stdin, "own {state}")?;
        self.stdin.flush()?;
        self.applied += 1;
        let n = self.applied;
        let log = self.log.clone();
        wait_until(
            "announce to apply",
            Duration::from_secs(10),
            Duration::from_millis(2),
            || {
                let text = read(&log);
                let Some(line) = text
                    .lines()
                    .filter(|l| l.starts_with("applied "))
                    .nth(n - 1)
                else {
                    return Ok(None);
                };
                let w: Vec<&str> = line.split_whitespace().collect();
                let errors: Vec<String> = text
                    .lines()
                    .skip_while(|l| *l != line)
                    .skip(1)
                    .take_while(|l| l.starts_with("error "))
                    .map(str::to_string)
                    .collect();
                Ok(Some(Applied {
                    set_at: w.get(1).and_then(|s| s.parse().ok()).unwrap_or(0.0),
                    done_at: w.get(2).and_then(|s| s.parse().ok()).unwrap_or(0.0),
                    errors,
                }))
            },
        )
    }

    /// The `iface`/`ip` lines of a fresh `stats` dump.
    pub fn stats(&mut self) -> anyhow::Result<Vec<String>> {
        writeln!(self.stdin, "stats")?;
        self.stdin.flush()?;
        self.stats_seen += 1;
        let n = self.stats_seen;
        let log = self.log.clone();
        wait_until(
            "announce stats",
            Duration::from_secs(10),
            Duration::from_millis(5),
            || {
                let text = read(&log);
                let blocks: Vec<&str> = text.split("end\n").collect();
                if blocks.len() <= n {
                    return Ok(None);
                }
                let block = blocks[n - 1];
                Ok(Some(
                    block
                        .lines()
                        .filter(|l| l.starts_with("iface ") || l.starts_with("ip "))
                        .map(str::to_string)
                        .collect(),
                ))
            },
        )
    }

    /// A `key=value` counter from the stats line that starts with `prefix`.
    pub fn counter(lines: &[String], prefix: &str, key: &str) -> anyhow::Result<String> {
        let line = lines
            .iter()
            .find(|l| l.starts_with(prefix))
            .with_context(|| format!("no stats line {prefix:?} in {lines:?}"))?;
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .with_context(|| format!("no {key} in {line:?}"))
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log(&self) -> String {
        read(&self.log)
    }
}

impl Drop for Announce {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn now() -> f64 {
    edgelb_tests::lab::capture::epoch(SystemTime::now())
}

//! FRR `bgpd` as a router inside a namespace.
//!
//! Runs `/usr/lib/frr/bgpd -Z -S -P 0 -f CONF -i PID --vty_socket DIR --log stdout` in the
//! foreground: `-Z` without zebra (received routes are still selected as best), `-S` skips the
//! switch to user `frr` (which fails for root with "user(root) is not part of vty group
//! frrvty" when `-u root -g root` is given), `-P 0` disables the TCP vty so several bgpd can
//! share a namespace. Everything lives in a private `RunDir`; `vtysh --vty_socket DIR` talks
//! to this bgpd only. FRR 8 drops eBGP routes without a policy unless
//! `no bgp ebgp-requires-policy`, and only originates `network` statements for routes it has
//! in its RIB unless `no bgp network import-check`: both are always set.
use super::router::{
    canonical_prefix, next_hop, quote, read_pid, tail, well_known_community, Announce, BgpRouter,
    Family, Origin, Route, RouterConfig, RunDir, ESTABLISHED,
};
use super::{wait_until, Netns, NsProcess};
use anyhow::{bail, Context};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// The configuration a FRR router takes.
pub type FrrConfig = RouterConfig;

/// The `bgpd.conf` text.
pub fn render(config: &RouterConfig) -> String {
    let mut out =
        String::from("frr defaults traditional\nhostname frr\nlog stdout informational\n");
    out.push_str("debug bgp neighbor-events\n!\n");
    let mut networks: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for a in &config.announce {
        let (route_map, network) = announce_lines(a);
        for l in route_map {
            out.push_str(&l);
            out.push('\n');
        }
        networks
            .entry(family_block(a.family()))
            .or_default()
            .push(network);
    }
    out.push_str(&format!("router bgp {}\n", config.local_as));
    out.push_str(&format!(" bgp router-id {}\n", config.router_id));
    out.push_str(" no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n");
    out.push_str(" no bgp network import-check\n");
    let mut activate: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for n in &config.neighbors {
        let a = n.address;
        out.push_str(&format!(" neighbor {a} remote-as {}\n", n.remote_as));
        out.push_str(&session_lines(&a.to_string(), n.password.as_deref()));
        if let Some(p) = n.port {
            out.push_str(&format!(" neighbor {a} port {p}\n"));
        }
        if n.passive {
            out.push_str(&format!(" neighbor {a} passive\n"));
        }
        if let Some(ttl) = n.ebgp_multihop {
            out.push_str(&format!(" neighbor {a} ebgp-multihop {ttl}\n"));
        }
        if n.bfd {
            out.push_str(&format!(" neighbor {a} bfd\n"));
        }
        if let Some(h) = n.hold_time {
            out.push_str(&format!(" neighbor {a} timers {} {h}\n", (h / 3).max(1)));
        }
        for f in n.active_families() {
            activate
                .entry(family_block(f))
                .or_default()
                .push(format!("  neighbor {a} activate\n"));
        }
    }
    for (i, r) in config.listen_ranges.iter().enumerate() {
        let g = format!("RANGE{i}");
        out.push_str(&format!(" neighbor {g} peer-group\n"));
        out.push_str(&format!(" neighbor {g} remote-as {}\n", r.remote_as));
        out.push_str(&session_lines(&g, r.password.as_deref()));
        out.push_str(&format!(" bgp listen range {} peer-group {g}\n", r.prefix));
        for f in r.active_families() {
            activate
                .entry(family_block(f))
                .or_default()
                .push(format!("  neighbor {g} activate\n"));
        }
    }
    for l in &config.extra {
        out.push_str(&format!(" {l}\n"));
    }
    for block in ["ipv4 unicast", "ipv6 unicast"] {
        let acts = activate.get(block).cloned().unwrap_or_default();
        let nets = networks.get(block).cloned().unwrap_or_default();
        if acts.is_empty() && nets.is_empty() {
            continue;
        }
        out.push_str(&format!(" address-family {block}\n"));
        for l in acts {
            out.push_str(&l);
        }
        for l in nets {
            out.push_str(&format!("  {l}\n"));
        }
        out.push_str(" exit-address-family\n");
    }
    out.push_str("!\n");
    out
}

fn family_block(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4 unicast",
        Family::V6 => "ipv6 unicast",
    }
}

/// Per-session lines shared by neighbours and peer groups: a fast retry and no MRAI delay so
/// tests see changes at once.
fn session_lines(who: &str, password: Option<&str>) -> String {
    let mut out =
        format!(" neighbor {who} timers connect 1\n neighbor {who} advertisement-interval 0\n");
    if let Some(p) = password {
        out.push_str(&format!(" neighbor {who} password {p}\n"));
    }
    out
}

/// The route-map (empty when the prefix has no attributes) and the `network` line that
/// originate `a`.
fn announce_lines(a: &Announce) -> (Vec<String>, String) {
    let mut sets = Vec::new();
    if !a.communities.is_empty() {
        sets.push(format!(" set community {}", a.communities.join(" ")));
    }
    if !a.large_communities.is_empty() {
        sets.push(format!(
            " set large-community {}",
            a.large_communities.join(" ")
        ));
    }
    if let Some(m) = a.med {
        sets.push(format!(" set metric {m}"));
    }
    if let Some(lp) = a.local_pref {
        sets.push(format!(" set local-preference {lp}"));
    }
    if !a.prepend.is_empty() {
        let asns: Vec<String> = a.prepend.iter().map(|x| x.to_string()).collect();
        sets.push(format!(" set as-path prepend {}", asns.join(" ")));
    }
    if sets.is_empty() {
        return (Vec::new(), format!("network {}", a.prefix));
    }
    let name = format!("ANN-{}", a.prefix.replace(['/', ':', '.'], "-"));
    let mut lines = vec![format!("route-map {name} permit 10")];
    lines.extend(sets);
    lines.push("exit".to_string());
    (lines, format!("network {} route-map {name}", a.prefix))
}

/// A bfdd `profile` block; a field left `None` keeps FRR's default (300 ms, x 3, no Echo).
#[derive(Clone, Debug)]
pub struct BfdProfile {
    pub name: String,
    /// Transmit and receive interval, and the detect multiplier.
    pub timers: Option<(u32, u32)>,
    /// `echo receive-interval`: the Echo rate FRR accepts (its loop-back of our Echo).
    pub echo_receive_ms: Option<u32>,
    /// `minimum-ttl` (multihop sessions).
    pub minimum_ttl: Option<u8>,
}

impl BfdProfile {
    /// Profile `name` with FRR's defaults.
    pub fn new(name: &str) -> BfdProfile {
        BfdProfile {
            name: name.to_string(),
            timers: None,
            echo_receive_ms: None,
            minimum_ttl: None,
        }
    }

    /// `slow`: Control at 3 x 1 s, Echo accepted every 100 ms: a forwarding failure only
    /// Echo can see (the Echo tests of the speaker and of `bfd_interop`).
    pub fn echo() -> BfdProfile {
        BfdProfile::new("slow").timers(1000, 3).echo_receive(100)
    }

    /// Transmit and receive every `interval_ms`, down after `multiplier` missed.
    pub fn timers(mut self, interval_ms: u32, multiplier: u32) -> BfdProfile {
        self.timers = Some((interval_ms, multiplier));
        self
    }

    pub fn echo_receive(mut self, ms: u32) -> BfdProfile {
        self.echo_receive_ms = Some(ms);
        self
    }

    pub fn minimum_ttl(mut self, ttl: u8) -> BfdProfile {
        self.minimum_ttl = Some(ttl);
        self
    }

    /// The `bfdd.conf` text holding this profile.
    pub fn bfdd_conf(&self) -> String {
        let mut out = format!("bfd\n profile {}\n", self.name);
        if let Some((ms, mult)) = self.timers {
            out.push_str(&format!(
                "  transmit-interval {ms}\n  receive-interval {ms}\n  detect-multiplier {mult}\n"
            ));
        }
        if let Some(ms) = self.echo_receive_ms {
            out.push_str(&format!("  echo receive-interval {ms}\n"));
        }
        if let Some(ttl) = self.minimum_ttl {
            out.push_str(&format!("  minimum-ttl {ttl}\n"));
        }
        out.push_str(" !\n!\n");
        out
    }
}

/// A running FRR bgpd. Killed on drop (the guard), its run directory removed unless the test
/// is panicking (then its log is printed).
#[derive(Debug)]
pub struct Frr {
    process: NsProcess,
    pid: u32,
    local_as: u32,
    /// zebra and bfdd when started with [`Frr::start_with_bfd`] (stopped after bgpd).
    helpers: Vec<(NsProcess, u32)>,
    dir: RunDir,
}

impl Frr {
    /// Writes the config, starts bgpd in `ns` and waits (up to 10 s) until vtysh answers.
    pub fn start(ns: &Netns, config: FrrConfig) -> anyhow::Result<Frr> {
        let dir = RunDir::new("frr")?;
        Frr::start_in(ns, config, dir, Vec::new())
    }

    /// Like [`Frr::start`], with zebra beside bgpd: routes bgpd selects are installed in the
    /// namespace's kernel, so traffic through the router follows BGP (a client behind it
    /// reaches a Service IP only while the route is there).
    pub fn start_with_zebra(ns: &Netns, config: FrrConfig) -> anyhow::Result<Frr> {
        Frr::start_with_daemons(ns, config, None)
    }

    /// Like [`Frr::start`], with BFD: zebra and bfdd run beside bgpd (bgpd registers its
    /// BFD sessions with bfdd through zebra, so `-Z` is not possible here), each with its own
    /// pid file, zserv socket, bfdd control socket and vty socket in the run directory.
    /// `bfdd_conf` is bfdd's configuration (e.g. a `bfd` / `profile` block); the neighbours
    /// turn BFD on with `neighbor X bfd ...` lines in `config.extra`.
    pub fn start_with_bfd(ns: &Netns, config: FrrConfig, bfdd_conf: &str) -> anyhow::Result<Frr> {
        Frr::start_with_daemons(ns, config, Some(bfdd_conf))
    }

    /// [`Frr::start_with_bfd`] with bfdd holding `profile` and neighbour `peer` (one of
    /// `config`'s) running BFD with it.
    pub fn start_with_bfd_profile(
        ns: &Netns,
        mut config: FrrConfig,
        peer: IpAddr,
        profile: &BfdProfile,
    ) -> anyhow::Result<Frr> {
        config
            .extra
            .push(format!("neighbor {peer} bfd profile {}", profile.name));
        Frr::start_with_bfd(ns, config, &profile.bfdd_conf())
    }

    /// zebra, bfdd when `bfdd_conf` is given, then bgpd talking to zebra.
    fn start_with_daemons(
        ns: &Netns,
        config: FrrConfig,
        bfdd_conf: Option<&str>,
    ) -> anyhow::Result<Frr> {
        let mut dir = RunDir::new("frr")?;
        let zserv = dir.file("zserv.api").to_string_lossy().into_owned();
        let sock = dir.path().to_string_lossy().into_owned();
        let mut helpers = Vec::new();
        // zebra and bfdd have no `-S`: they switch to user frr, which must own the directory
        // (bgpd stays root and root reaches their sockets).
        let chown = std::process::Command::new("chown")
            .args(["frr:frr", &sock])
            .status()
            .context("running chown")?;
        if !chown.success() {
            bail!("chown frr:frr {sock} failed");
        }
        let mut daemons: Vec<(&str, String, Vec<String>)> =
            vec![("zebra", "!\n".to_string(), Vec::new())];
        if let Some(conf) = bfdd_conf {
            daemons.push((
                "bfdd",
                conf.to_string(),
                vec![
                    "--bfdctl".to_string(),
                    dir.file("bfdd.sock").to_string_lossy().into_owned(),
                ],
            ));
        }
        for (name, conf_text, extra) in daemons {
            let conf = dir.write(&format!("{name}.conf"), &conf_text)?;
            let pid_file = dir.file(&format!("{name}.pid"));
            let log = dir.log(&format!("{name}.log"));
            let mut args: Vec<String> = vec![
                format!("/usr/lib/frr/{name}"),
                "-P".into(),
                "0".into(),
                "-f".into(),
                conf.to_string_lossy().into_owned(),
                "-i".into(),
                pid_file.to_string_lossy().into_owned(),
                "-z".into(),
                zserv.clone(),
                "--vty_socket".into(),
                sock.clone(),
                "--log".into(),
                "stdout".into(),
            ];
            args.extend(extra);
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut process = ns.spawn(&refs, Some(&log))?;
            let vty = dir.file(&format!("{name}.vty"));
            wait_until(
                &format!("{name} to start"),
                Duration::from_secs(10),
                Duration::from_millis(50),
                || {
                    if !process.running() {
                        bail!("{name} exited:\n{}", tail(&dir.read_logs(), 40));
                    }
                    Ok((pid_file.exists() && vty.exists()).then_some(()))
                },
            )?;
            let pid = read_pid(&pid_file)?;
            helpers.push((process, pid));
        }
        Frr::start_in(ns, config, dir, helpers)
    }

    fn start_in(
        ns: &Netns,
        config: FrrConfig,
        mut dir: RunDir,
        helpers: Vec<(NsProcess, u32)>,
    ) -> anyhow::Result<Frr> {
        let with_zebra = !helpers.is_empty();
        let conf = dir.write("bgpd.conf", &render(&config))?;
        let pid_file = dir.file("bgpd.pid");
        let log = dir.log("bgpd.log");
        let port = config.listen_port.unwrap_or(179).to_string();
        let conf_s = conf.to_string_lossy().into_owned();
        let pid_s = pid_file.to_string_lossy().into_owned();
        let sock_s = dir.path().to_string_lossy().into_owned();
        let zserv = dir.file("zserv.api").to_string_lossy().into_owned();
        let mut args = vec![
            "/usr/lib/frr/bgpd",
            "-S",
            "-P",
            "0",
            "-p",
            &port,
            "-f",
            &conf_s,
            "-i",
            &pid_s,
            "--vty_socket",
            &sock_s,
            "--log",
            "stdout",
        ];
        if with_zebra {
            args.extend(["-z", zserv.as_str()]);
        } else {
            args.push("-Z");
        }
        let mut process = ns.spawn(&args, Some(&log))?;
        let ready = wait_until(
            "bgpd to answer vtysh",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                if !process.running() {
                    bail!("bgpd exited");
                }
                if !pid_file.exists() || !dir.file("bgpd.vty").exists() {
                    return Ok(None);
                }
                Ok(vtysh_in(dir.path(), "show bgp summary json").ok())
            },
        );
        if let Err(e) = ready {
            return Err(e.context(format!(
                "starting FRR in {} with config:\n{}\nlog:\n{}",
                ns.name(),
                render(&config),
                tail(&dir.read_logs(), 40)
            )));
        }
        let pid = read_pid(&pid_file)?;
        Ok(Frr {
            process,
            pid,
            local_as: config.local_as,
            helpers,
            dir,
        })
    }

    /// Runs one vtysh command against this bgpd.
    pub fn vtysh(&self, command: &str) -> anyhow::Result<String> {
        vtysh_in(self.dir.path(), command)
    }

    /// Runs one vtysh command against this instance's bfdd (`start_with_bfd` only).
    pub fn vtysh_bfdd(&self, command: &str) -> anyhow::Result<String> {
        run_vtysh_daemon(
            self.dir.path(),
            "bfdd",
            &["-c".to_string(), command.to_string()],
        )
    }

    /// bfdd's session with `peer`, as `show bfd peers json` has it (`status`, `multihop`,
    /// ...), if there is one.
    pub fn bfd_peer(&self, peer: IpAddr) -> anyhow::Result<Option<serde_json::Value>> {
        let out = self.vtysh_bfdd("show bfd peers json")?;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        let peer = peer.to_string();
        Ok(v.as_array()
            .and_then(|a| {
                a.iter()
                    .find(|p| p["peer"] == peer.as_str() && p["status"] == "up")
            })
            .or_else(|| v.as_array()?.iter().find(|p| p["peer"] == peer.as_str()))
            .cloned())
    }

    /// True when bfdd's session with `peer` is up.
    pub fn bfd_up(&self, peer: IpAddr) -> anyhow::Result<bool> {
        Ok(self.bfd_peer(peer)?.is_some_and(|p| p["status"] == "up"))
    }

    /// Prints the logs and bfdd's sessions when `result` is an error (a failed BFD test's
    /// evidence); returns `result`.
    pub fn log_bfd_if_failed<T>(&self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        if result.is_err() {
            eprintln!("frr logs:\n{}", self.logs());
            if let Ok(out) = self.vtysh_bfdd("show bfd peers") {
                eprintln!("{out}");
            }
        }
        result
    }

    /// Applies configuration lines in `configure terminal` (e.g. `["router bgp 65001",
    /// "neighbor 192.0.2.9 shutdown"]`).
    pub fn configure(&self, lines: &[&str]) -> anyhow::Result<()> {
        let mut args: Vec<String> = vec!["-c".into(), "configure terminal".into()];
        for l in lines {
            args.push("-c".into());
            args.push((*l).to_string());
        }
        let out = run_vtysh(self.dir.path(), &args)?;
        if out.contains("% ") {
            bail!("FRR rejected {lines:?}: {}", quote(&out));
        }
        Ok(())
    }

    /// Originates `a` now (route-map with its attributes, then `network`).
    pub fn announce(&self, a: &Announce) -> anyhow::Result<()> {
        let (route_map, network) = announce_lines(a);
        let mut lines: Vec<String> = route_map;
        lines.push(format!("router bgp {}", self.local_as));
        lines.push(format!("address-family {}", family_block(a.family())));
        lines.push(network);
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        self.configure(&refs)
    }

    /// Stops originating `prefix` (withdrawn from every peer).
    pub fn withdraw(&self, prefix: &str) -> anyhow::Result<()> {
        let bgp = format!("router bgp {}", self.local_as);
        let af = format!("address-family {}", family_block(Family::of_prefix(prefix)));
        let no = format!("no network {prefix}");
        self.configure(&[&bgp, &af, &no])
    }

    /// Prefixes accepted from every neighbour in `family` (`pfxRcd` of the summary, 0 while
    /// not Established), dynamic (listen range) ones included: one vtysh call however many
    /// neighbours and routes, cheap enough to poll every few hundred ms at 50 000 routes.
    pub fn received_by_peer(&self, family: Family) -> anyhow::Result<BTreeMap<IpAddr, u64>> {
        let fam = match family {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        };
        parse_received(&self.vtysh(&format!("show bgp {fam} unicast summary json"))?)
    }

    /// The next hops of the valid paths to one prefix (`show bgp <afi> unicast PREFIX json`):
    /// a check of a few prefixes where the whole RIB is too large to read.
    pub fn next_hops(&self, prefix: &str) -> anyhow::Result<BTreeSet<IpAddr>> {
        let want = canonical_prefix(prefix)?;
        let fam = match Family::of_prefix(&want) {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        };
        parse_next_hops(&self.vtysh(&format!("show bgp {fam} unicast {want} json"))?)
    }

    /// The daemon's pid (from its pid file).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The run directory (config, socket, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops bgpd with SIGTERM (it closes its sessions with a Cease NOTIFICATION) and waits up
    /// to 5 s for it to exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.process.signal(libc::SIGTERM)?;
        self.process.wait_exit(Duration::from_secs(5))?;
        Ok(())
    }
}

impl Drop for Frr {
    fn drop(&mut self) {
        // The process guard kills bgpd after this body; bgpd keeps a crash-log directory per
        // pid under /var/tmp/frr that nothing else removes.
        let _ = self.process.signal(libc::SIGKILL);
        let _ = self.process.wait_exit(Duration::from_secs(2));
        let _ = std::fs::remove_dir_all(format!("/var/tmp/frr/bgpd.{}", self.pid));
        for (mut p, pid) in self.helpers.drain(..).rev() {
            let _ = p.signal(libc::SIGKILL);
            let _ = p.wait_exit(Duration::from_secs(2));
            for name in ["zebra", "bfdd"] {
                let _ = std::fs::remove_dir_all(format!("/var/tmp/frr/{name}.{pid}"));
            }
        }
        let _ = std::fs::remove_dir("/var/tmp/frr");
    }
}

impl BgpRouter for Frr {
    fn kind(&self) -> &'static str {
        "frr"
    }

    fn rib(&self, family: Family) -> anyhow::Result<Vec<Route>> {
        let fam = match family {
            Family::V4 => "ipv4",
            Family::V6 => "ipv6",
        };
        parse_rib(&self.vtysh(&format!("show bgp {fam} unicast json detail"))?)
    }

    fn neighbor_state(&self, addr: IpAddr) -> anyhow::Result<String> {
        parse_neighbor_state(&self.vtysh("show bgp neighbors json")?, addr)
    }

    fn logs(&self) -> String {
        self.dir.read_logs()
    }
}

fn vtysh_in(dir: &Path, command: &str) -> anyhow::Result<String> {
    run_vtysh(dir, &["-c".to_string(), command.to_string()])
}

fn run_vtysh(dir: &Path, args: &[String]) -> anyhow::Result<String> {
    run_vtysh_daemon(dir, "bgpd", args)
}

fn run_vtysh_daemon(dir: &Path, daemon: &str, args: &[String]) -> anyhow::Result<String> {
    let out = std::process::Command::new("vtysh")
        .arg("--vty_socket")
        .arg(dir)
        .args(["-d", daemon])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running vtysh")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "vtysh {args:?} exited with {}: {} {}",
            out.status,
            quote(&stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(stdout)
}

#[derive(Deserialize)]
struct Rib {
    #[serde(default)]
    routes: BTreeMap<String, Vec<serde_json::Value>>,
}

#[derive(Deserialize)]
struct Path_ {
    #[serde(default)]
    aspath: Option<AsPath>,
    origin: String,
    metric: Option<u32>,
    #[serde(rename = "locPrf")]
    loc_prf: Option<u32>,
    #[serde(default)]
    bestpath: serde_json::Value,
    community: Option<Communities>,
    #[serde(rename = "largeCommunity")]
    large_community: Option<Communities>,
    #[serde(default)]
    nexthops: Vec<NextHop>,
    peer: Option<Peer>,
}

#[derive(Deserialize)]
struct AsPath {
    #[serde(default)]
    segments: Vec<Segment>,
}

#[derive(Deserialize)]
struct Segment {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    list: Vec<u32>,
}

#[derive(Deserialize)]
struct Communities {
    #[serde(default)]
    list: Vec<String>,
}

#[derive(Deserialize)]
struct NextHop {
    ip: String,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct Peer {
    #[serde(rename = "peerId")]
    peer_id: String,
}

/// Parses `show bgp <afi> unicast json detail` (FRR 8.4: each prefix maps to a list whose
/// first element describes the prefix and the others are paths).
pub fn parse_rib(output: &str) -> anyhow::Result<Vec<Route>> {
    let rib: Rib = serde_json::from_str(output)
        .with_context(|| format!("FRR RIB is not the expected JSON: {}", quote(output)))?;
    let mut routes = Vec::new();
    for (prefix, entries) in rib.routes {
        let prefix = canonical_prefix(&prefix)?;
        for entry in entries.into_iter().filter(|e| e.get("origin").is_some()) {
            let text = entry.to_string();
            let p: Path_ = serde_json::from_value(entry)
                .with_context(|| format!("FRR path for {prefix}: {}", quote(&text)))?;
            routes.push(
                to_route(&prefix, p)
                    .with_context(|| format!("FRR path for {prefix}: {}", quote(&text)))?,
            );
        }
    }
    Ok(routes)
}

fn to_route(prefix: &str, p: Path_) -> anyhow::Result<Route> {
    let mut as_path = Vec::new();
    let mut as_set = false;
    for s in p.aspath.map(|a| a.segments).unwrap_or_default() {
        as_set |= s.kind.contains("set");
        as_path.extend(s.list);
    }
    let hop = p
        .nexthops
        .iter()
        .find(|n| n.scope.as_deref() != Some("link-local"))
        .or(p.nexthops.first());
    let communities = p
        .community
        .map(|c| c.list)
        .unwrap_or_default()
        .into_iter()
        .map(|c| well_known_community(&c).map(str::to_string).unwrap_or(c))
        .collect();
    let best = match &p.bestpath {
        serde_json::Value::Bool(b) => *b,
        serde_json::Value::Object(o) => o.get("overall").and_then(|v| v.as_bool()) == Some(true),
        _ => false,
    };
    Ok(Route {
        prefix: prefix.to_string(),
        next_hop: match hop {
            Some(h) => next_hop(&h.ip)?,
            None => None,
        },
        as_path,
        as_set,
        origin: Origin::parse(&p.origin)?,
        med: p.metric,
        local_pref: p.loc_prf,
        communities,
        large_communities: p.large_community.map(|c| c.list).unwrap_or_default(),
        best,
        peer: match p.peer {
            Some(peer) => next_hop(&peer.peer_id)?,
            None => None,
        },
    })
}

/// `pfxRcd` per neighbour address from `show bgp <afi> unicast summary json`; a neighbour
/// whose `state` is given and is not Established counts 0 (FRR keeps the last count of a
/// session that went down). Neighbours named by interface are left out.
pub fn parse_received(output: &str) -> anyhow::Result<BTreeMap<IpAddr, u64>> {
    let v: serde_json::Value = serde_json::from_str(output)
        .with_context(|| format!("FRR summary is not JSON: {}", quote(output)))?;
    let mut out = BTreeMap::new();
    for (addr, peer) in v["peers"].as_object().into_iter().flatten() {
        let Ok(addr) = addr.parse::<IpAddr>() else {
            continue;
        };
        let up = peer["state"].as_str().is_none_or(|s| s == ESTABLISHED);
        let count = peer["pfxRcd"].as_u64().unwrap_or(0);
        out.insert(addr, if up { count } else { 0 });
    }
    Ok(out)
}

/// The next hops of the valid paths in `show bgp <afi> unicast PREFIX json` (empty when FRR
/// has no path to it).
pub fn parse_next_hops(output: &str) -> anyhow::Result<BTreeSet<IpAddr>> {
    let v: serde_json::Value = serde_json::from_str(output)
        .with_context(|| format!("FRR prefix is not JSON: {}", quote(output)))?;
    let mut hops = BTreeSet::new();
    for path in v["paths"].as_array().into_iter().flatten() {
        if path["valid"].as_bool() != Some(true) {
            continue;
        }
        for h in path["nexthops"].as_array().into_iter().flatten() {
            if let Some(ip) = h["ip"].as_str().and_then(|ip| ip.parse().ok()) {
                hops.insert(ip);
            }
        }
    }
    Ok(hops)
}

/// Reads `bgpState` of `addr` from `show bgp neighbors json`.
pub fn parse_neighbor_state(output: &str, addr: IpAddr) -> anyhow::Result<String> {
    let v: serde_json::Value = serde_json::from_str(output)
        .with_context(|| format!("FRR neighbors is not JSON: {}", quote(output)))?;
    let Some(n) = v.get(addr.to_string()) else {
        bail!("FRR has no neighbor {addr}");
    };
    n["bgpState"].as_str().map(str::to_string).with_context(|| {
        format!(
            "FRR neighbor {addr} has no bgpState: {}",
            quote(&n.to_string())
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RIB: &str = r#"{
 "vrfId": 0, "routerId": "192.0.2.1", "localAS": 65001,
 "routes": { "198.51.100.0/24": [{"prefix":"198.51.100.0/24","version":1},{"aspath":{"string":"65002 {7 8}","segments":[{"type":"as-sequence","list":[65002]},{"type":"as-set","list":[7,8]}],"length":2},"origin":"IGP","metric":50,"locPrf":200,"valid":true,"version":1,"bestpath":{"overall":true,"selectionReason":"First path received"},"community":{"string":"65002:1 noExport","list":["65002:1","noExport"]},"largeCommunity":{"string":"65002:1:2","list":["65002:1:2"]},"nexthops":[{"ip":"192.0.2.2","afi":"ipv4","metric":0,"accessible":true,"used":true}],"peer":{"peerId":"192.0.2.2","routerId":"192.0.2.2","type":"internal"}}]
,"203.0.113.0/24": [{"prefix":"203.0.113.0/24","version":3},{"aspath":{"string":"Local","segments":[],"length":0},"origin":"incomplete","weight":32768,"valid":true,"sourced":true,"bestpath":{"overall":true},"nexthops":[{"ip":"0.0.0.0","afi":"ipv4","used":true}],"peer":{"peerId":"0.0.0.0","routerId":"192.0.2.1"}}]
 }  } "#;

    #[test]
    fn rib_json_detail_gives_every_attribute() {
        let r = parse_rib(RIB).expect("parses");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].prefix, "198.51.100.0/24");
        assert_eq!(r[0].as_path, vec![65002, 7, 8]);
        assert!(r[0].as_set);
        assert_eq!(r[0].med, Some(50));
        assert_eq!(r[0].local_pref, Some(200));
        assert_eq!(r[0].communities, vec!["65002:1", "65535:65281"]);
        assert_eq!(r[0].large_communities, vec!["65002:1:2"]);
        assert_eq!(r[0].next_hop, Some("192.0.2.2".parse().expect("ip")));
        assert_eq!(r[0].peer, r[0].next_hop);
        assert!(r[0].best);
        assert_eq!(r[1].origin, Origin::Incomplete);
        assert_eq!((r[1].next_hop, r[1].peer), (None, None));
    }

    #[test]
    fn bad_output_is_quoted_in_the_error() {
        let e = parse_rib("% Unknown command").expect_err("not JSON");
        assert!(format!("{e:#}").contains("% Unknown command"));
    }

    #[test]
    fn received_counts_only_established_neighbours() {
        let out = r#"{"routerId":"198.19.0.1","peers":{
            "198.19.0.11":{"pfxRcd":3,"state":"Established","dynamicPeer":true},
            "198.19.0.12":{"pfxRcd":2,"state":"Active"},
            "eth0":{"pfxRcd":9,"state":"Established"}}}"#;
        let got = parse_received(out).expect("parses");
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            got,
            BTreeMap::from([(ip("198.19.0.11"), 3), (ip("198.19.0.12"), 0)])
        );
        assert!(parse_received("% Unknown command").is_err());
    }

    #[test]
    fn next_hops_are_those_of_valid_paths() {
        let out = r#"{"prefix":"198.18.0.1/32","paths":[
            {"valid":true,"multipath":true,"nexthops":[{"ip":"198.19.0.11","afi":"ipv4"}]},
            {"valid":true,"nexthops":[{"ip":"198.19.0.12","afi":"ipv4"}]},
            {"nexthops":[{"ip":"198.19.0.13","afi":"ipv4"}]}]}"#;
        let got = parse_next_hops(out).expect("parses");
        let want: BTreeSet<IpAddr> = ["198.19.0.11", "198.19.0.12"]
            .iter()
            .map(|s| s.parse().expect("ip"))
            .collect();
        assert_eq!(got, want);
        assert!(parse_next_hops("{}").expect("parses").is_empty());
    }

    #[test]
    fn neighbor_state_is_read_by_address() {
        let out = r#"{"2001:db8::2":{"bgpState":"Active"}}"#;
        let addr: IpAddr = "2001:db8::2".parse().expect("ip");
        assert_eq!(parse_neighbor_state(out, addr).expect("state"), "Active");
        assert!(parse_neighbor_state(out, "192.0.2.9".parse().expect("ip")).is_err());
    }

    #[test]
    fn config_has_the_knobs_tests_need() {
        use crate::lab::router::{ListenRange, Neighbor};
        let c = render(
            &FrrConfig::new("192.0.2.1".parse().expect("ip"), 65001)
                .neighbor(
                    Neighbor::new("192.0.2.2".parse().expect("ip"), 65002)
                        .password("s3cret")
                        .passive()
                        .port(1790)
                        .hold_time(9),
                )
                .listen_range(ListenRange::new("198.51.100.0/24", 65010))
                .announce(Announce::new("203.0.113.0/24").community("65001:7").med(5)),
        );
        for want in [
            " neighbor 192.0.2.2 password s3cret",
            " neighbor 192.0.2.2 passive",
            " neighbor 192.0.2.2 port 1790",
            " neighbor 192.0.2.2 timers 3 9",
            " bgp listen range 198.51.100.0/24 peer-group RANGE0",
            "  neighbor RANGE0 activate",
            " set community 65001:7",
            "  network 203.0.113.0/24 route-map ANN-203-0-113-0-24",
        ] {
            assert!(c.contains(want), "missing {want:?} in\n{c}");
        }
    }
}

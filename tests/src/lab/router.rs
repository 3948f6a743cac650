//! What the three router managers (`frr`, `bird`, `gobgp`) share: the neighbour and
//! origination descriptions the config builders take, the `Route` every RIB reader returns,
//! the `BgpRouter` trait with bounded waits, and the per-router run directory.
//!
//! A `Route` is what the router *reports*, normalised so that one assertion works against all
//! three: prefixes in canonical text, communities as `"ASN:VALUE"` (RFC 1997, well-known names
//! turned into numbers), large communities as `"GLOBAL:DATA1:DATA2"` (RFC 8092).
use anyhow::{bail, Context};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static DIRS: AtomicU32 = AtomicU32::new(0);

/// Address family of a unicast RIB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }

    /// The family of a prefix in text (`"2001:db8::/48"` is V6).
    pub fn of_prefix(prefix: &str) -> Family {
        if prefix.contains(':') {
            Family::V6
        } else {
            Family::V4
        }
    }
}

/// What a lab router is configured with. FRR, BIRD and GoBGP take the same description and
/// each renders it in its own syntax (`frr::render`, `bird::render`, `gobgp::render`).
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    pub neighbors: Vec<Neighbor>,
    /// Dynamic neighbours (FRR `bgp listen range`, BIRD `neighbor range`, GoBGP dynamic
    /// neighbours with one fixed peer AS per range).
    pub listen_ranges: Vec<ListenRange>,
    /// Prefixes the router originates, with their attributes.
    pub announce: Vec<Announce>,
    /// BGP listen port; 179 when `None`. FRR: 0 does not listen.
    pub listen_port: Option<u16>,
    /// Raw configuration for one test's needs: FRR puts it inside `router bgp`, BIRD at the
    /// end of the file; GoBGP has none.
    pub extra: Vec<String>,
}

impl RouterConfig {
    pub fn new(router_id: Ipv4Addr, local_as: u32) -> RouterConfig {
        RouterConfig {
            router_id,
            local_as,
            neighbors: Vec::new(),
            listen_ranges: Vec::new(),
            announce: Vec::new(),
            listen_port: None,
            extra: Vec::new(),
        }
    }
    pub fn neighbor(mut self, n: Neighbor) -> Self {
        self.neighbors.push(n);
        self
    }
    pub fn listen_range(mut self, r: ListenRange) -> Self {
        self.listen_ranges.push(r);
        self
    }
    pub fn announce(mut self, a: Announce) -> Self {
        self.announce.push(a);
        self
    }
}

/// A configured BGP neighbour. Built with `Neighbor::new(addr, remote_as)` and the setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbor {
    pub address: IpAddr,
    pub remote_as: u32,
    /// TCP port of the neighbour (we connect to it); 179 when `None`.
    pub port: Option<u16>,
    /// Never connect, only accept.
    pub passive: bool,
    /// TCP MD5 signature password (RFC 2385).
    pub password: Option<String>,
    /// eBGP multihop TTL.
    pub ebgp_multihop: Option<u8>,
    /// Proposed hold time in seconds; keepalive is a third of it.
    pub hold_time: Option<u16>,
    /// Families activated on the session; the address's own family when empty.
    pub families: Vec<Family>,
    /// BFD for this session (BIRD: `bfd on`, with a `protocol bfd` in the config's extra
    /// lines; FRR: `neighbor X bfd`, with bfdd from `Frr::start_with_bfd`).
    pub bfd: bool,
}

impl Neighbor {
    pub fn new(address: IpAddr, remote_as: u32) -> Neighbor {
        Neighbor {
            address,
            remote_as,
            port: None,
            passive: false,
            password: None,
            ebgp_multihop: None,
            hold_time: None,
            families: Vec::new(),
            bfd: false,
        }
    }
    pub fn bfd(mut self) -> Self {
        self.bfd = true;
        self
    }
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    pub fn passive(mut self) -> Self {
        self.passive = true;
        self
    }
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_string());
        self
    }
    pub fn ebgp_multihop(mut self, ttl: u8) -> Self {
        self.ebgp_multihop = Some(ttl);
        self
    }
    pub fn hold_time(mut self, secs: u16) -> Self {
        self.hold_time = Some(secs);
        self
    }
    pub fn families(mut self, families: &[Family]) -> Self {
        self.families = families.to_vec();
        self
    }
    /// The families to activate: the configured ones, or the address's family.
    pub fn active_families(&self) -> Vec<Family> {
        if self.families.is_empty() {
            vec![Family::of(self.address)]
        } else {
            self.families.clone()
        }
    }
}

/// Dynamic neighbours: accept any peer from `prefix` with AS `remote_as` (passive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenRange {
    /// e.g. `"192.0.2.0/24"`.
    pub prefix: String,
    pub remote_as: u32,
    pub password: Option<String>,
    /// Families activated; the prefix's own family when empty.
    pub families: Vec<Family>,
}

impl ListenRange {
    pub fn new(prefix: &str, remote_as: u32) -> ListenRange {
        ListenRange {
            prefix: prefix.to_string(),
            remote_as,
            password: None,
            families: Vec::new(),
        }
    }
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_string());
        self
    }
    pub fn families(mut self, families: &[Family]) -> Self {
        self.families = families.to_vec();
        self
    }
    /// The families to activate: the configured ones, or the prefix's family.
    pub fn active_families(&self) -> Vec<Family> {
        if self.families.is_empty() {
            vec![Family::of_prefix(&self.prefix)]
        } else {
            self.families.clone()
        }
    }
}

/// A prefix the router originates, with the attributes it sends (those that apply: MED and
/// LOCAL_PREF as the router's own rules allow on the session).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announce {
    /// e.g. `"198.51.100.0/24"` or `"2001:db8:1::/48"`.
    pub prefix: String,
    /// `"65000:1"` each.
    pub communities: Vec<String>,
    /// `"65000:1:2"` each.
    pub large_communities: Vec<String>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    /// ASNs prepended to the AS_PATH before the router adds its own (eBGP).
    pub prepend: Vec<u32>,
}

impl Announce {
    pub fn new(prefix: &str) -> Announce {
        Announce {
            prefix: prefix.to_string(),
            ..Announce::default()
        }
    }
    pub fn community(mut self, c: &str) -> Self {
        self.communities.push(c.to_string());
        self
    }
    pub fn large_community(mut self, c: &str) -> Self {
        self.large_communities.push(c.to_string());
        self
    }
    pub fn med(mut self, med: u32) -> Self {
        self.med = Some(med);
        self
    }
    pub fn local_pref(mut self, lp: u32) -> Self {
        self.local_pref = Some(lp);
        self
    }
    pub fn prepend(mut self, asns: &[u32]) -> Self {
        self.prepend = asns.to_vec();
        self
    }
    pub fn family(&self) -> Family {
        Family::of_prefix(&self.prefix)
    }
}

/// ORIGIN attribute (RFC 4271 §5.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Igp,
    Egp,
    Incomplete,
}

impl Origin {
    /// Parses the spellings of FRR (`IGP`, `EGP`, `incomplete`), BIRD (`IGP`, `EGP`,
    /// `Incomplete`) and the wire code (0, 1, 2).
    pub fn parse(text: &str) -> anyhow::Result<Origin> {
        match text.to_ascii_lowercase().as_str() {
            "igp" | "i" | "0" => Ok(Origin::Igp),
            "egp" | "e" | "1" => Ok(Origin::Egp),
            "incomplete" | "?" | "2" => Ok(Origin::Incomplete),
            other => bail!("unknown ORIGIN {other:?}"),
        }
    }
}

/// One path in a router's RIB, as the router reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Canonical prefix text: `"198.51.100.0/24"`, `"2001:db8:100::/48"`.
    pub prefix: String,
    /// NEXT_HOP (or the global MP_REACH next hop); `None` for a locally originated route
    /// without one (`0.0.0.0`, `::`, a blackhole).
    pub next_hop: Option<IpAddr>,
    /// AS_PATH, AS_SEQUENCE members in order (AS_SET members appended, `as_set` true).
    pub as_path: Vec<u32>,
    pub as_set: bool,
    pub origin: Origin,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    /// `"65000:1"`, in the order the router lists them.
    pub communities: Vec<String>,
    /// `"65000:1:2"`, in the order the router lists them.
    pub large_communities: Vec<String>,
    /// The router selected this path as best.
    pub best: bool,
    /// The neighbour it was learned from; `None` when the router originated it.
    pub peer: Option<IpAddr>,
}

/// Canonical text of a prefix (`"2001:0db8::/48"` → `"2001:db8::/48"`).
pub fn canonical_prefix(text: &str) -> anyhow::Result<String> {
    let (addr, len) = text
        .split_once('/')
        .with_context(|| format!("prefix {text:?} has no length"))?;
    let addr: IpAddr = addr
        .parse()
        .with_context(|| format!("prefix {text:?}: bad address"))?;
    let len: u8 = len
        .parse()
        .with_context(|| format!("prefix {text:?}: bad length"))?;
    Ok(format!("{addr}/{len}"))
}

/// A next hop, or `None` for the unspecified address.
pub fn next_hop(text: &str) -> anyhow::Result<Option<IpAddr>> {
    let addr: IpAddr = text
        .trim()
        .parse()
        .with_context(|| format!("bad next hop {text:?}"))?;
    Ok((!addr.is_unspecified()).then_some(addr))
}

/// Well-known communities (RFC 1997, RFC 7999, RFC 8326, ...) by the names FRR prints.
pub fn well_known_community(name: &str) -> Option<&'static str> {
    Some(match name {
        "internet" => "0:0",
        "gshut" | "graceful-shutdown" => "65535:0",
        "acceptOwn" | "accept-own" => "65535:1",
        "llgrStale" | "llgr-stale" => "65535:6",
        "noLlgr" | "no-llgr" => "65535:7",
        "blackhole" => "65535:666",
        "noExport" | "no-export" => "65535:65281",
        "noAdvertise" | "no-advertise" => "65535:65282",
        "localAs" | "local-AS" | "no-export-subconfed" => "65535:65283",
        "noPeer" | "no-peer" => "65535:65284",
        _ => return None,
    })
}

/// Session state names as every router manager reports them (RFC 4271 §8.2.2).
pub const ESTABLISHED: &str = "Established";

/// What every router manager offers to tests.
pub trait BgpRouter {
    /// A short name for messages (`"frr"`, `"bird"`, `"gobgp"`).
    fn kind(&self) -> &'static str;
    /// Every path of the IPv4 or IPv6 unicast RIB (learned and originated).
    fn rib(&self, family: Family) -> anyhow::Result<Vec<Route>>;
    /// Session state with the neighbour at `addr`: `Idle`, `Connect`, `Active`, `OpenSent`,
    /// `OpenConfirm` or `Established`. Fails when there is no such neighbour (yet).
    fn neighbor_state(&self, addr: IpAddr) -> anyhow::Result<String>;
    /// The router's logs so far (for failure messages).
    fn logs(&self) -> String;

    fn rib_v4(&self) -> anyhow::Result<Vec<Route>> {
        self.rib(Family::V4)
    }
    fn rib_v6(&self) -> anyhow::Result<Vec<Route>> {
        self.rib(Family::V6)
    }

    /// Waits until the session with `addr` is Established; on timeout the error carries the
    /// last state and the router's logs.
    fn wait_established(&self, addr: IpAddr, timeout: Duration) -> anyhow::Result<()> {
        let mut last = String::from("unknown");
        super::wait_until(
            &format!("{} session with {addr} Established", self.kind()),
            timeout,
            Duration::from_millis(100),
            || {
                last = self.neighbor_state(addr)?;
                Ok((last == ESTABLISHED).then_some(()))
            },
        )
        .with_context(|| format!("last state {last}; logs:\n{}", tail(&self.logs(), 40)))
    }

    /// Waits for a best path to `prefix`, and returns it.
    fn wait_route(&self, prefix: &str, timeout: Duration) -> anyhow::Result<Route> {
        let want = canonical_prefix(prefix)?;
        let family = Family::of_prefix(&want);
        super::wait_until(
            &format!("{} to have a best path to {want}", self.kind()),
            timeout,
            Duration::from_millis(100),
            || {
                Ok(self
                    .rib(family)?
                    .into_iter()
                    .find(|r| r.prefix == want && r.best))
            },
        )
        .with_context(|| format!("logs:\n{}", tail(&self.logs(), 40)))
    }

    /// Waits until no path to `prefix` is left.
    fn wait_no_route(&self, prefix: &str, timeout: Duration) -> anyhow::Result<()> {
        let want = canonical_prefix(prefix)?;
        let family = Family::of_prefix(&want);
        super::wait_until(
            &format!("{} to lose {want}", self.kind()),
            timeout,
            Duration::from_millis(100),
            || Ok((!self.rib(family)?.iter().any(|r| r.prefix == want)).then_some(())),
        )
        .with_context(|| format!("logs:\n{}", tail(&self.logs(), 40)))
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Quotes router output in an error, shortened to keep messages readable.
pub fn quote(output: &str) -> String {
    const MAX: usize = 3000;
    if output.len() <= MAX {
        return output.to_string();
    }
    let mut end = MAX;
    while !output.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes in all)", &output[..end], output.len())
}

/// A router's private directory under the system temp dir: config, control socket, pid file
/// and logs. Removed on drop, except while a test panics (then the logs are printed and the
/// directory is kept for a look) or when `EDGELB_KEEP_LAB=1` is set.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    logs: Vec<PathBuf>,
}

impl RunDir {
    pub fn new(kind: &str) -> anyhow::Result<RunDir> {
        let n = DIRS.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("edgelb-lab-{}-{kind}{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)
                .with_context(|| format!("removing stale {}", path.display()))?;
        }
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(RunDir {
            path,
            logs: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Writes a file inside the directory and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
        let p = self.file(name);
        std::fs::write(&p, contents).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    }

    /// Registers a log file (printed on failure) and returns its path.
    pub fn log(&mut self, name: &str) -> PathBuf {
        let p = self.file(name);
        self.logs.push(p.clone());
        p
    }

    /// The contents of every registered log.
    pub fn read_logs(&self) -> String {
        let mut out = String::new();
        for p in &self.logs {
            let text = std::fs::read_to_string(p).unwrap_or_default();
            out.push_str(&format!("==> {} <==\n{text}\n", p.display()));
        }
        out
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::env::var("EDGELB_KEEP_LAB").as_deref() == Ok("1") {
            eprintln!("lab: kept {} (EDGELB_KEEP_LAB=1)", self.path.display());
            return;
        }
        if std::thread::panicking() {
            eprintln!("{}", tail(&self.read_logs(), 200));
            eprintln!("lab: kept {} for inspection", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Reads a pid file written by a daemon.
pub fn read_pid(path: &Path) -> anyhow::Result<u32> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("pid file {} holds {text:?}", path.display()))
}

/// CPU time (user + system) and peak RSS of a process, from `/proc` (for benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcUsage {
    pub cpu: Duration,
    /// `VmHWM` in KiB.
    pub peak_rss_kib: u64,
}

/// Reads `/proc/PID/stat` fields 14 and 15 (utime, stime, clock ticks) and `VmHWM`.
pub fn proc_usage(pid: u32) -> anyhow::Result<ProcUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .with_context(|| format!("/proc/{pid}/stat: {stat:?}"))?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .with_context(|| format!("/proc/{pid}/stat has no field {}", i + 3))?
            .parse::<u64>()
            .with_context(|| format!("/proc/{pid}/stat field {}", i + 3))
    };
    let total = ticks(11)? + ticks(12)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let hwm = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .with_context(|| format!("/proc/{pid}/status has no VmHWM"))?;
    // Linux reports clock ticks at USER_HZ, 100 on every architecture we run on.
    Ok(ProcUsage {
        cpu: Duration::from_millis(total * 10),
        peak_rss_kib: hwm,
    })
}

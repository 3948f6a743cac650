//! GoBGP 3 as a router inside a namespace.
//!
//! Runs `gobgpd -f CONF -p --api-hosts 127.0.0.1:PORT --pprof-disable` in the foreground
//! (without `--api-hosts` the gRPC API listens on every address; without `--pprof-disable`
//! every instance wants port 6060). Each instance gets its own API port, so several can share
//! a namespace; the `gobgp` CLI runs inside the namespace against that port.
//!
//! GoBGP waits a random 5 to 10 s before its first outgoing connection, which cannot be
//! configured: make its neighbours `passive()` on the GoBGP side and let the other router
//! connect, or wait ~20 s.
use super::router::{
    canonical_prefix, next_hop, quote, tail, Announce, BgpRouter, Family, Origin, Route,
    RouterConfig, RunDir,
};
use super::{wait_until, Netns, NsProcess};
use anyhow::{bail, Context};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

static API_PORTS: AtomicU16 = AtomicU16::new(50051);

/// The configuration a GoBGP router takes.
pub type GobgpConfig = RouterConfig;

/// The `gobgpd.toml` text.
pub fn render(config: &RouterConfig) -> String {
    let mut out = format!(
        "[global.config]\n  as = {}\n  router-id = \"{}\"\n  port = {}\n",
        config.local_as,
        config.router_id,
        config.listen_port.unwrap_or(179)
    );
    for n in &config.neighbors {
        out.push_str(&format!(
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = {}\n",
                n.address, n.remote_as
            ));
        if let Some(p) = &n.password {
            out.push_str(&format!("    auth-password = \"{p}\"\n"));
        }
        out.push_str("  [neighbors.transport.config]\n");
        if n.passive {
            out.push_str("    passive-mode = true\n");
        }
        if let Some(p) = n.port {
            out.push_str(&format!("    remote-port = {p}\n"));
        }
        if let Some(ttl) = n.ebgp_multihop {
            out.push_str(&format!(
                    "  [neighbors.ebgp-multihop.config]\n    enabled = true\n    multihop-ttl = {ttl}\n"
                ));
        }
        out.push_str("  [neighbors.timers.config]\n    connect-retry = 1\n");
        if let Some(h) = n.hold_time {
            out.push_str(&format!(
                "    hold-time = {h}\n    keepalive-interval = {}\n",
                (h / 3).max(1)
            ));
        }
        out.push_str(&afi_safis("neighbors", &n.active_families()));
    }
    for (i, r) in config.listen_ranges.iter().enumerate() {
        out.push_str(&format!(
                "[[peer-groups]]\n  [peer-groups.config]\n    peer-group-name = \"range{i}\"\n    peer-as = {}\n",
                r.remote_as
            ));
        if let Some(p) = &r.password {
            out.push_str(&format!("    auth-password = \"{p}\"\n"));
        }
        out.push_str(&afi_safis("peer-groups", &r.active_families()));
        out.push_str(&format!(
                "[[dynamic-neighbors]]\n  [dynamic-neighbors.config]\n    prefix = \"{}\"\n    peer-group = \"range{i}\"\n",
                r.prefix
            ));
    }
    out
}

fn afi_safis(table: &str, families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        let name = match f {
            Family::V4 => "ipv4-unicast",
            Family::V6 => "ipv6-unicast",
        };
        out.push_str(&format!(
            "  [[{table}.afi-safis]]\n    [{table}.afi-safis.config]\n      afi-safi-name = \"{name}\"\n"
        ));
    }
    out
}

/// A running gobgpd. Killed on drop; its run directory removed unless the test is panicking
/// (then its log is printed).
#[derive(Debug)]
pub struct Gobgp {
    process: NsProcess,
    pid: u32,
    ns: String,
    api_port: u16,
    dir: RunDir,
}

impl Gobgp {
    /// Writes the config, starts gobgpd in `ns`, waits (up to 10 s) for its API, then adds
    /// the configured announcements.
    pub fn start(ns: &Netns, config: GobgpConfig) -> anyhow::Result<Gobgp> {
        let mut dir = RunDir::new("gobgp")?;
        let conf = dir.write("gobgpd.toml", &render(&config))?;
        let log = dir.log("gobgpd.log");
        let api_port = API_PORTS.fetch_add(1, Ordering::Relaxed);
        let api = format!("127.0.0.1:{api_port}");
        let process = ns.spawn(
            &[
                "gobgpd",
                "-f",
                &conf.to_string_lossy(),
                "-p",
                "--api-hosts",
                &api,
                "--pprof-disable",
            ],
            Some(&log),
        )?;
        // No pid file: `ip netns exec` execs gobgpd, so the child's pid is the daemon's.
        let pid = process.pid().context("gobgpd has no pid")?;
        let mut router = Gobgp {
            process,
            pid,
            ns: ns.name().to_string(),
            api_port,
            dir,
        };
        let ready = wait_until(
            "gobgpd API to answer",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || {
                if !router.process.running() {
                    bail!("gobgpd exited");
                }
                Ok(router.cli(&["global"]).ok())
            },
        );
        if let Err(e) = ready {
            return Err(e.context(format!(
                "starting GoBGP in {} with config:\n{}\nlog:\n{}",
                ns.name(),
                render(&config),
                tail(&router.dir.read_logs(), 40)
            )));
        }
        for a in &config.announce {
            router.announce(a)?;
        }
        Ok(router)
    }

    /// Runs the `gobgp` CLI against this daemon (`["neighbor"]`, `["-j", "global", "rib"]`).
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let port = self.api_port.to_string();
        let out = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "gobgp",
                "-u",
                "127.0.0.1",
                "-p",
                &port,
            ])
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .context("running gobgp")?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "gobgp {args:?} exited with {}: {} {}",
                out.status,
                quote(&stdout),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(stdout)
    }

    /// Adds `a` to the global RIB (GoBGP then advertises it).
    pub fn announce(&self, a: &Announce) -> anyhow::Result<()> {
        let afi = afi(a.family());
        let mut args: Vec<String> = ["global", "rib", "add", "-a", afi, a.prefix.as_str()]
            .map(String::from)
            .to_vec();
        if !a.prepend.is_empty() {
            let asns: Vec<String> = a.prepend.iter().map(|x| x.to_string()).collect();
            args.extend(["aspath".into(), asns.join(",")]);
        }
        if let Some(m) = a.med {
            args.extend(["med".into(), m.to_string()]);
        }
        if let Some(lp) = a.local_pref {
            args.extend(["local-pref".into(), lp.to_string()]);
        }
        if !a.communities.is_empty() {
            args.extend(["community".into(), a.communities.join(",")]);
        }
        if !a.large_communities.is_empty() {
            args.extend(["large-community".into(), a.large_communities.join(",")]);
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cli(&refs).map(|_| ())
    }

    /// Removes `prefix` from the global RIB (GoBGP withdraws it).
    pub fn withdraw(&self, prefix: &str) -> anyhow::Result<()> {
        let afi = afi(Family::of_prefix(prefix));
        self.cli(&["global", "rib", "del", "-a", afi, prefix])
            .map(|_| ())
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn api_port(&self) -> u16 {
        self.api_port
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops gobgpd with SIGTERM and waits up to 5 s for it to exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.process.signal(libc::SIGTERM)?;
        self.process.wait_exit(Duration::from_secs(5))?;
        Ok(())
    }
}

fn afi(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

impl BgpRouter for Gobgp {
    fn kind(&self) -> &'static str {
        "gobgp"
    }

    fn rib(&self, family: Family) -> anyhow::Result<Vec<Route>> {
        parse_rib(&self.cli(&["-j", "global", "rib", "-a", afi(family)])?)
    }

    fn neighbor_state(&self, addr: IpAddr) -> anyhow::Result<String> {
        parse_neighbor_state(&self.cli(&["-j", "neighbor", &addr.to_string()])?)
    }

    fn logs(&self) -> String {
        self.dir.read_logs()
    }
}

#[derive(Deserialize)]
struct GoPath {
    #[serde(default)]
    best: bool,
    #[serde(default)]
    attrs: Vec<GoAttr>,
    #[serde(rename = "neighbor-ip")]
    neighbor_ip: Option<String>,
}

#[derive(Deserialize)]
struct GoAttr {
    #[serde(rename = "type")]
    kind: u8,
    value: Option<serde_json::Value>,
    as_paths: Option<Vec<GoSegment>>,
    nexthop: Option<String>,
    metric: Option<u32>,
    communities: Option<Vec<u32>>,
}

#[derive(Deserialize)]
struct GoSegment {
    segment_type: u8,
    #[serde(default)]
    asns: Vec<u32>,
}

#[derive(Deserialize)]
struct GoLarge {
    #[serde(rename = "ASN")]
    asn: u32,
    #[serde(rename = "LocalData1")]
    data1: u32,
    #[serde(rename = "LocalData2")]
    data2: u32,
}

/// Parses `gobgp -j global rib -a AFI`: prefix → paths, each with typed path attributes
/// (1 ORIGIN, 2 AS_PATH, 3 NEXT_HOP, 4 MED, 5 LOCAL_PREF, 8 COMMUNITIES, 14 MP_REACH,
/// 32 LARGE_COMMUNITY).
pub fn parse_rib(output: &str) -> anyhow::Result<Vec<Route>> {
    if output.trim().is_empty() {
        return Ok(Vec::new());
    }
    let rib: BTreeMap<String, Vec<GoPath>> = serde_json::from_str(output)
        .with_context(|| format!("GoBGP RIB is not the expected JSON: {}", quote(output)))?;
    let mut routes = Vec::new();
    for (prefix, paths) in rib {
        let prefix = canonical_prefix(&prefix)?;
        for p in paths {
            routes.push(
                to_route(&prefix, p)
                    .with_context(|| format!("GoBGP path for {prefix} in {}", quote(output)))?,
            );
        }
    }
    Ok(routes)
}

fn to_route(prefix: &str, p: GoPath) -> anyhow::Result<Route> {
    let mut r = Route {
        prefix: prefix.to_string(),
        next_hop: None,
        as_path: Vec::new(),
        as_set: false,
        origin: Origin::Igp,
        med: None,
        local_pref: None,
        communities: Vec::new(),
        large_communities: Vec::new(),
        best: p.best,
        peer: match &p.neighbor_ip {
            Some(ip) => next_hop(ip)?,
            None => None,
        },
    };
    for a in p.attrs {
        let value_u32 = || -> anyhow::Result<u32> {
            a.value
                .as_ref()
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())
                .with_context(|| format!("attribute {} has no numeric value", a.kind))
        };
        match a.kind {
            1 => r.origin = Origin::parse(&value_u32()?.to_string())?,
            2 => {
                for s in a.as_paths.unwrap_or_default() {
                    // segment_type 1 is AS_SET (RFC 4271 §4.3), 4 AS_CONFED_SET.
                    r.as_set |= matches!(s.segment_type, 1 | 4);
                    r.as_path.extend(s.asns);
                }
            }
            3 | 14 => {
                if let Some(h) = &a.nexthop {
                    r.next_hop = next_hop(h)?;
                }
            }
            4 => r.med = Some(a.metric.unwrap_or(0)),
            5 => r.local_pref = Some(value_u32()?),
            8 => {
                for c in a.communities.unwrap_or_default() {
                    r.communities.push(format!("{}:{}", c >> 16, c & 0xffff));
                }
            }
            32 => {
                let list: Vec<GoLarge> = serde_json::from_value(a.value.unwrap_or_default())
                    .context("LARGE_COMMUNITY")?;
                for l in list {
                    r.large_communities
                        .push(format!("{}:{}:{}", l.asn, l.data1, l.data2));
                }
            }
            _ => {}
        }
    }
    Ok(r)
}

/// Reads `state.session_state` from `gobgp -j neighbor ADDR` (the API's SessionState enum).
pub fn parse_neighbor_state(output: &str) -> anyhow::Result<String> {
    let v: serde_json::Value = serde_json::from_str(output)
        .with_context(|| format!("GoBGP neighbor is not JSON: {}", quote(output)))?;
    let state = v["state"]["session_state"].as_u64().unwrap_or(0);
    Ok(match state {
        1 => "Idle",
        2 => "Connect",
        3 => "Active",
        4 => "OpenSent",
        5 => "OpenConfirm",
        6 => "Established",
        _ => "Unknown",
    }
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RIB: &str = r#"{"192.0.2.200/32":[{"nlri":{"prefix":"192.0.2.200/32"},"age":1,"best":true,"attrs":[{"type":1,"value":2},{"type":2,"as_paths":[{"segment_type":2,"num":2,"asns":[65010,65011]}]},{"type":3,"nexthop":"0.0.0.0"}],"stale":false}],
"203.0.113.0/24":[{"nlri":{"prefix":"203.0.113.0/24"},"age":1,"best":true,"attrs":[{"type":1,"value":0},{"type":2,"as_paths":[{"segment_type":2,"num":1,"asns":[65001]}]},{"type":3,"nexthop":"198.51.100.1"},{"type":4,"metric":33},{"type":5,"value":150},{"type":8,"communities":[4259905543,4259905544]},{"type":32,"value":[{"ASN":65001,"LocalData1":1,"LocalData2":1}]}],"stale":false,"source-id":"192.0.2.1","neighbor-ip":"198.51.100.1"}]}"#;

    #[test]
    fn rib_json_gives_every_attribute() {
        let r = parse_rib(RIB).expect("parses");
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].origin, Origin::Incomplete);
        assert_eq!(r[0].as_path, vec![65010, 65011]);
        assert_eq!((r[0].next_hop, r[0].peer), (None, None));
        assert_eq!(r[1].med, Some(33));
        assert_eq!(r[1].local_pref, Some(150));
        assert_eq!(r[1].communities, vec!["65001:7", "65001:8"]);
        assert_eq!(r[1].large_communities, vec!["65001:1:1"]);
        assert_eq!(r[1].peer, Some("198.51.100.1".parse().expect("ip")));
        assert_eq!(r[1].next_hop, r[1].peer);
    }

    #[test]
    fn mp_reach_next_hop_is_used_for_ipv6() {
        let out = r#"{"2001:db8:300::/48":[{"best":true,"attrs":[{"type":1,"value":2},{"type":14,"nexthop":"2001:db8::3","afi":2,"safi":1,"value":[{"prefix":"2001:db8:300::/48"}]}]}]}"#;
        let r = parse_rib(out).expect("parses");
        assert_eq!(r[0].next_hop, Some("2001:db8::3".parse().expect("ip")));
    }

    #[test]
    fn states_are_named_as_in_rfc_4271() {
        assert_eq!(
            parse_neighbor_state(r#"{"state":{"session_state":6}}"#).expect("ok"),
            "Established"
        );
        assert!(parse_neighbor_state("rpc error").is_err());
    }
}

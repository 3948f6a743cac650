//! BIRD 2 as a router inside a namespace.
//!
//! Runs `bird -f -c CONF -s SOCKET -P PIDFILE` in the foreground with everything in a private
//! `RunDir`; `birdc -s SOCKET` talks to this BIRD only. The config always has
//! `protocol device {}` (without it next hops do not resolve) and `connect delay time 1`
//! (BIRD waits 5 s before its first connection by default). Originated prefixes are
//! `protocol static` blackhole routes; their attributes are set by the export filter, because
//! BIRD sends MED to an eBGP peer only when the export filter set it.
use super::router::{
    canonical_prefix, next_hop, quote, read_pid, tail, Announce, BgpRouter, Family, Origin, Route,
    RouterConfig, RunDir,
};
use super::{wait_until, Netns, NsProcess};
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

/// The configuration a BIRD router takes.
pub type BirdConfig = RouterConfig;

/// The `bird.conf` text.
pub fn render(config: &RouterConfig) -> String {
    let mut out = format!(
        "router id {};\nlog stderr all;\nprotocol device {{}}\n",
        config.router_id
    );
    for (name, family) in [("static4", Family::V4), ("static6", Family::V6)] {
        let routes: Vec<&Announce> = config
            .announce
            .iter()
            .filter(|a| a.family() == family)
            .collect();
        if routes.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "protocol static {name} {{\n  {};\n",
            channel(family)
        ));
        for a in routes {
            out.push_str(&format!("  route {} blackhole;\n", a.prefix));
        }
        out.push_str("}\n");
    }
    out.push_str("filter export_attrs {\n");
    for a in &config.announce {
        let sets = attribute_sets(a);
        if !sets.is_empty() {
            out.push_str(&format!("  if net = {} then {{ {sets} }}\n", a.prefix));
        }
    }
    out.push_str("  accept;\n}\n");
    let local_port = config
        .listen_port
        .map(|p| format!(" port {p}"))
        .unwrap_or_default();
    for (i, n) in config.neighbors.iter().enumerate() {
        out.push_str(&format!("protocol bgp n{i} {{\n"));
        out.push_str(&format!("  local{local_port} as {};\n", config.local_as));
        let port = n.port.map(|p| format!(" port {p}")).unwrap_or_default();
        out.push_str(&format!(
            "  neighbor {}{port} as {};\n",
            n.address, n.remote_as
        ));
        if n.passive {
            out.push_str("  passive on;\n");
        }
        if let Some(p) = &n.password {
            out.push_str(&format!("  password \"{p}\";\n"));
        }
        if let Some(ttl) = n.ebgp_multihop {
            out.push_str(&format!("  multihop {ttl};\n"));
        }
        if n.bfd {
            out.push_str("  bfd on;\n");
        }
        if let Some(h) = n.hold_time {
            out.push_str(&format!(
                "  hold time {h};\n  keepalive time {};\n",
                (h / 3).max(1)
            ));
        }
        out.push_str(&session_body(&n.active_families()));
        out.push_str("}\n");
    }
    for (i, r) in config.listen_ranges.iter().enumerate() {
        out.push_str(&format!("protocol bgp range{i} {{\n"));
        out.push_str(&format!("  local{local_port} as {};\n", config.local_as));
        out.push_str(&format!(
            "  neighbor range {} as {};\n  dynamic name \"dyn{i}_\";\n",
            r.prefix, r.remote_as
        ));
        if let Some(p) = &r.password {
            out.push_str(&format!("  password \"{p}\";\n"));
        }
        out.push_str(&session_body(&r.active_families()));
        out.push_str("}\n");
    }
    for l in &config.extra {
        out.push_str(l);
        out.push('\n');
    }
    out
}

fn channel(f: Family) -> &'static str {
    match f {
        Family::V4 => "ipv4",
        Family::V6 => "ipv6",
    }
}

/// Timers that make tests fast, and one channel per family.
fn session_body(families: &[Family]) -> String {
    let mut out =
        String::from("  connect delay time 1;\n  connect retry time 2;\n  error wait time 1, 5;\n");
    for f in families {
        out.push_str(&format!(
            "  {} {{ import all; export filter export_attrs; next hop self; }};\n",
            channel(*f)
        ));
    }
    out
}

/// Filter statements that give `a` its attributes (empty when it has none).
fn attribute_sets(a: &Announce) -> String {
    let mut s = String::new();
    for c in &a.communities {
        s.push_str(&format!("bgp_community.add(({})); ", c.replace(':', ",")));
    }
    for c in &a.large_communities {
        s.push_str(&format!(
            "bgp_large_community.add(({})); ",
            c.replace(':', ",")
        ));
    }
    if let Some(m) = a.med {
        s.push_str(&format!("bgp_med = {m}; "));
    }
    if let Some(lp) = a.local_pref {
        s.push_str(&format!("bgp_local_pref = {lp}; "));
    }
    // prepend() puts an ASN in front: prepend the last first to keep the given order.
    for asn in a.prepend.iter().rev() {
        s.push_str(&format!("bgp_path.prepend({asn}); "));
    }
    s
}

/// A running BIRD. Killed on drop; its run directory removed unless the test is panicking
/// (then its log is printed).
#[derive(Debug)]
pub struct Bird {
    process: NsProcess,
    pid: u32,
    config: BirdConfig,
    dir: RunDir,
}

impl Bird {
    /// Writes the config, starts BIRD in `ns` and waits (up to 10 s) until birdc answers.
    pub fn start(ns: &Netns, config: BirdConfig) -> anyhow::Result<Bird> {
        let mut dir = RunDir::new("bird")?;
        let conf = dir.write("bird.conf", &render(&config))?;
        let sock = dir.file("bird.ctl");
        let pid_file = dir.file("bird.pid");
        let log = dir.log("bird.log");
        let mut process = ns.spawn(
            &[
                "bird",
                "-f",
                "-c",
                &conf.to_string_lossy(),
                "-s",
                &sock.to_string_lossy(),
                "-P",
                &pid_file.to_string_lossy(),
            ],
            Some(&log),
        )?;
        let ready = wait_until(
            "BIRD to answer birdc",
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                if !process.running() {
                    bail!("bird exited");
                }
                if !sock.exists() || !pid_file.exists() {
                    return Ok(None);
                }
                Ok(birdc_in(&sock, &["show", "status"]).ok())
            },
        );
        if let Err(e) = ready {
            return Err(e.context(format!(
                "starting BIRD in {} with config:\n{}\nlog:\n{}",
                ns.name(),
                quote(&render(&config)),
                tail(&dir.read_logs(), 40)
            )));
        }
        let pid = read_pid(&pid_file)?;
        Ok(Bird {
            process,
            pid,
            config,
            dir,
        })
    }

    /// Runs one birdc command (`["show", "protocols", "all"]`) and returns its output without
    /// the greeting line.
    pub fn birdc(&self, args: &[&str]) -> anyhow::Result<String> {
        birdc_in(&self.dir.file("bird.ctl"), args)
    }

    /// Replaces the configuration and applies it with `birdc configure`.
    pub fn reconfigure(&mut self, config: BirdConfig) -> anyhow::Result<()> {
        let conf = self.dir.write("bird.conf", &render(&config))?;
        let out = self.birdc(&["configure", &format!("\"{}\"", conf.display())])?;
        if !out.contains("Reconfigured") && !out.contains("Reconfiguration in progress") {
            bail!("BIRD did not take the new config: {}", quote(&out));
        }
        self.config = config;
        Ok(())
    }

    /// Originates `a` now (adds it to the static routes and reconfigures).
    pub fn announce(&mut self, a: Announce) -> anyhow::Result<()> {
        let config = self.config.clone().announce(a);
        self.reconfigure(config)
    }

    /// Stops originating `prefix`.
    pub fn withdraw(&mut self, prefix: &str) -> anyhow::Result<()> {
        let mut config = self.config.clone();
        config.announce.retain(|a| a.prefix != prefix);
        self.reconfigure(config)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops BIRD with `birdc down` (it sends a Cease NOTIFICATION to each peer) and waits up
    /// to 5 s for it to exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.birdc(&["down"]);
        self.process.wait_exit(Duration::from_secs(5))?;
        Ok(())
    }
}

impl BgpRouter for Bird {
    fn kind(&self) -> &'static str {
        "bird"
    }

    fn rib(&self, family: Family) -> anyhow::Result<Vec<Route>> {
        let table = match family {
            Family::V4 => "master4",
            Family::V6 => "master6",
        };
        let peers = parse_protocol_peers(&self.birdc(&["show", "protocols", "all"])?);
        parse_routes(
            &self.birdc(&["show", "route", "all", "table", table])?,
            &peers,
        )
    }

    fn neighbor_state(&self, addr: IpAddr) -> anyhow::Result<String> {
        parse_neighbor_state(&self.birdc(&["show", "protocols", "all"])?, addr)
    }

    fn logs(&self) -> String {
        self.dir.read_logs()
    }
}

fn birdc_in(sock: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("birdc")
        .arg("-s")
        .arg(sock)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running birdc")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "birdc {args:?} exited with {}: {} {}",
            out.status,
            quote(&stdout),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // birdc greets with "BIRD 2.0.12 ready." before the answer.
    Ok(match stdout.split_once('\n') {
        Some((first, rest)) if first.starts_with("BIRD ") => rest.to_string(),
        _ => stdout,
    })
}

/// Splits `show protocols all` into blocks: (header line, indented lines).
fn protocol_blocks(output: &str) -> Vec<(&str, Vec<&str>)> {
    let mut blocks: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in output.lines() {
        if line.trim().is_empty() || line.starts_with("Name ") {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            blocks.push((line, Vec::new()));
        } else if let Some(b) = blocks.last_mut() {
            b.1.push(line.trim());
        }
    }
    blocks
}

fn field<'a>(lines: &[&'a str], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim())
}

/// Protocol name → neighbour address, for every BGP protocol (dynamic ones included).
pub fn parse_protocol_peers(output: &str) -> BTreeMap<String, IpAddr> {
    let mut map = BTreeMap::new();
    for (header, lines) in protocol_blocks(output) {
        let name = header.split_whitespace().next().unwrap_or_default();
        // Link-local neighbours print as "fe80::1%eth0".
        let addr = field(&lines, "Neighbor address:")
            .and_then(|a| a.split('%').next())
            .and_then(|a| a.parse().ok());
        if let Some(a) = addr {
            map.insert(name.to_string(), a);
        }
    }
    map
}

/// Reads "BGP state:" of the protocol whose neighbour is `addr`.
pub fn parse_neighbor_state(output: &str, addr: IpAddr) -> anyhow::Result<String> {
    for (_, lines) in protocol_blocks(output) {
        let a = field(&lines, "Neighbor address:")
            .and_then(|a| a.split('%').next())
            .and_then(|a| a.parse::<IpAddr>().ok());
        if a == Some(addr) {
            return field(&lines, "BGP state:")
                .map(str::to_string)
                .with_context(|| {
                    format!(
                        "BIRD protocol for {addr} has no BGP state: {}",
                        quote(output)
                    )
                });
        }
    }
    bail!("BIRD has no protocol with neighbor {addr}")
}

/// Parses `show route all table masterN`: a header line per path (the prefix is left out
/// for the second and later paths of a prefix), then tab-indented lines (`via ...`,
/// `Type: ...`, `BGP.attr: value`).
pub fn parse_routes(output: &str, peers: &BTreeMap<String, IpAddr>) -> anyhow::Result<Vec<Route>> {
    let mut routes: Vec<Route> = Vec::new();
    let mut prefix = String::new();
    let mut last_attr: Option<String> = None;
    for line in output.lines() {
        if line.trim().is_empty() || line.starts_with("Table ") {
            continue;
        }
        if let Some(body) = line.strip_prefix('\t') {
            let route = routes
                .last_mut()
                .with_context(|| format!("BIRD attribute before any route: {}", quote(output)))?;
            if body.starts_with(['\t', ' ']) {
                // A long attribute value continues on the next line.
                if let Some(k) = &last_attr {
                    apply_attr(route, k, body.trim())
                        .with_context(|| format!("BIRD route {}: {line:?}", route.prefix))?;
                }
                continue;
            }
            last_attr = None;
            if let Some((k, v)) = body.split_once(": ") {
                if let Some(k) = k.strip_prefix("BGP.") {
                    apply_attr(route, k, v.trim())
                        .with_context(|| format!("BIRD route {}: {line:?}", route.prefix))?;
                    last_attr = Some(k.to_string());
                }
            } else if let Some(k) = body.strip_suffix(':').and_then(|k| k.strip_prefix("BGP.")) {
                last_attr = Some(k.to_string());
            }
            continue;
        }
        // A path header: "PREFIX  TYPE [PROTO TIME (from X)] * (PREF) [ASi]" or the same
        // without the prefix (indented with spaces) for another path of the same prefix.
        if !line.starts_with(' ') {
            let first = line.split_whitespace().next().unwrap_or_default();
            prefix = canonical_prefix(first)
                .with_context(|| format!("BIRD route line {line:?} in {}", quote(output)))?;
        }
        if prefix.is_empty() {
            bail!("BIRD path line before any prefix: {line:?}");
        }
        let bracket = line
            .split_once('[')
            .map(|(_, r)| r)
            .with_context(|| format!("BIRD route line without [protocol]: {line:?}"))?;
        let proto = bracket.split_whitespace().next().unwrap_or_default();
        let after = bracket.split_once(']').map(|(_, r)| r).unwrap_or_default();
        routes.push(Route {
            prefix: prefix.clone(),
            next_hop: None,
            as_path: Vec::new(),
            as_set: false,
            origin: Origin::Igp,
            med: None,
            local_pref: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
            best: after.trim_start().starts_with('*'),
            peer: peers.get(proto).copied(),
        });
        last_attr = None;
    }
    Ok(routes)
}

fn apply_attr(route: &mut Route, key: &str, value: &str) -> anyhow::Result<()> {
    let num = |v: &str| -> anyhow::Result<u32> {
        v.parse()
            .with_context(|| format!("BGP.{key}: {v:?} is not a number"))
    };
    match key {
        "origin" => route.origin = Origin::parse(value)?,
        "as_path" => {
            for tok in value.split_whitespace() {
                if tok.contains(['{', '}']) {
                    route.as_set = true;
                }
                let t = tok.trim_matches(|c| c == '{' || c == '}');
                if !t.is_empty() {
                    route.as_path.push(num(t)?);
                }
            }
        }
        // IPv6 may carry "GLOBAL LINK-LOCAL": the first is the next hop.
        "next_hop" => {
            route.next_hop = next_hop(value.split_whitespace().next().unwrap_or_default())?
        }
        "med" => route.med = Some(num(value)?),
        "local_pref" => route.local_pref = Some(num(value)?),
        "community" => route.communities.extend(tuples(value, 2)?),
        "large_community" => route.large_communities.extend(tuples(value, 3)?),
        _ => {}
    }
    Ok(())
}

/// `"(65001,7) (65001,8)"` → `["65001:7", "65001:8"]`; `"(65001, 1, 2)"` → `["65001:1:2"]`.
fn tuples(value: &str, arity: usize) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for group in value.split(')') {
        let g = group.trim().trim_start_matches('(').trim();
        if g.is_empty() {
            continue;
        }
        let parts: Vec<&str> = g.split(',').map(str::trim).collect();
        if parts.len() != arity || parts.iter().any(|p| p.parse::<u32>().is_err()) {
            bail!("BIRD community {g:?} in {value:?} is not {arity} numbers");
        }
        out.push(parts.join(":"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = "Table master4:\n\
198.51.100.0/24      blackhole [static4 06:56:29.079] * (200)\n\
\tType: static univ\n\
203.0.113.0/24       unicast [n0 06:56:38.438] * (100) [AS65001i]\n\
\tvia 192.0.2.1 on eth0\n\
\tType: BGP univ\n\
\tBGP.origin: IGP\n\
\tBGP.as_path: 65001 {7 8}\n\
\tBGP.next_hop: 192.0.2.1\n\
\tBGP.med: 33\n\
\tBGP.local_pref: 100\n\
\tBGP.community: (65001,7) (65535,65281)\n\
\tBGP.large_community: (65001, 1, 1)\n                     \
unicast [n1 06:56:39.000 from 192.0.2.3] (100) [AS65003?]\n\
\tvia 192.0.2.3 on eth0\n\
\tType: BGP univ\n\
\tBGP.origin: Incomplete\n\
\tBGP.as_path: 65003\n\
\tBGP.next_hop: 192.0.2.3\n\
\tBGP.local_pref: 100\n";

    #[test]
    fn show_route_all_gives_every_path_and_attribute() {
        let peers = BTreeMap::from([
            ("n0".to_string(), "192.0.2.1".parse().expect("ip")),
            ("n1".to_string(), "192.0.2.3".parse().expect("ip")),
        ]);
        let r = parse_routes(ROUTES, &peers).expect("parses");
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].peer, r[0].next_hop, r[0].best), (None, None, true));
        assert_eq!(r[1].prefix, "203.0.113.0/24");
        assert_eq!(r[1].as_path, vec![65001, 7, 8]);
        assert!(r[1].as_set);
        assert_eq!(r[1].med, Some(33));
        assert_eq!(r[1].communities, vec!["65001:7", "65535:65281"]);
        assert_eq!(r[1].large_communities, vec!["65001:1:1"]);
        assert!(r[1].best);
        assert_eq!(r[2].prefix, "203.0.113.0/24");
        assert!(!r[2].best);
        assert_eq!(r[2].origin, Origin::Incomplete);
        assert_eq!(r[2].peer, Some("192.0.2.3".parse().expect("ip")));
    }

    #[test]
    fn a_broken_community_is_an_error_quoting_it() {
        let bad = "203.0.113.0/24 unicast [n0 1] * (100)\n\tBGP.community: (65001,x)\n";
        let e = parse_routes(bad, &BTreeMap::new()).expect_err("bad community");
        assert!(format!("{e:#}").contains("65001,x"));
    }

    #[test]
    fn neighbor_state_comes_from_the_matching_protocol() {
        let out = "Name  Proto Table State Since Info\n\
n0 BGP --- start 06:55 Active\n  BGP state:          Active\n    Neighbor address: 192.0.2.1\n\
n1 BGP --- up 06:55 Established\n  BGP state:          Established\n    Neighbor address: 2001:db8::1\n";
        let v6: IpAddr = "2001:db8::1".parse().expect("ip");
        assert_eq!(parse_neighbor_state(out, v6).expect("found"), "Established");
        let v4: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(parse_neighbor_state(out, v4).expect("found"), "Active");
        assert_eq!(parse_protocol_peers(out).get("n1"), Some(&v6));
    }
}

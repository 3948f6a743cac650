//! `announce`: a small BGP speaker process for benchmarks and interop tests.
//!
//! ```text
//! announce --local-as A --remote-as B --peer ADDR[:PORT] [--peer ...] --router-id ID
//!          [--count N] [--base 198.18.0.0] (alias --first; --peer-as for --remote-as) [--hold 9] [--password P] [--passive]
//!          [--listen ADDR:PORT] [--source ADDR] [--families v4,v6] [--connect-retry SECS (1)]
//!          [--multihop N] [--gtsm] [--graceful-restart SECS] [--restarting] [--open-wait SECS]
//!          [--bfd TX_MS,RX_MS,MULT] [--bfd-echo MS]
//!          [--community 65000:1] [--large 65000:1:2] [--local-pref 200] [--med 5]
//! ```
//!
//! Announces `--count` /32 prefixes from `--base` (with the given attributes) to every peer,
//! prints one JSON line per event on stdout (`established`, `all_sent`, `sent`, `down`,
//! `applied`, `shutdown`) with a Unix timestamp, and reads route changes on stdin:
//! `add PREFIX [community=A:B,...] [large=A:B:C,...] [local-pref=N] [med=N]`, `del PREFIX`,
//! `clear`. SIGTERM or SIGINT sends Cease / Administrative Shutdown (RFC 8203) and exits;
//! SIGUSR1 is a planned restart (graceful restart peers get no NOTIFICATION, RFC 4724) and
//! `--restarting` sets the R bit in the next process's OPENs. `families_not_announced` lines
//! say which negotiated families have no next hop.
use edgelb_bgp::packet::{Community, Family, LargeCommunity};
use edgelb_bgp::{
    BfdPeerConfig, GracefulRestartConfig, PeerConfig, PeerEvent, RouteAttrs, RouteTable, Secret,
    Speaker, SpeakerConfig,
};
use ipnet::{IpNet, Ipv4Net};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncBufReadExt;
use tokio::signal::unix::{signal, SignalKind};

struct Args {
    local_as: u32,
    remote_as: u32,
    peers: Vec<(IpAddr, u16)>,
    router_id: Ipv4Addr,
    count: u32,
    base: Ipv4Addr,
    hold: u16,
    password: Option<String>,
    passive: bool,
    listen: Option<SocketAddr>,
    source: Option<IpAddr>,
    families: Vec<Family>,
    connect_retry: Option<u64>,
    multihop: Option<u8>,
    gtsm: bool,
    graceful_restart: Option<u16>,
    restarting: bool,
    open_wait: Option<u64>,
    /// BFD (desired min TX ms, required min RX ms, detect multiplier).
    bfd: Option<(u64, u64, u8)>,
    /// BFD Echo interval, ms.
    bfd_echo: Option<u64>,
    attrs: RouteAttrs,
}

fn usage(msg: &str) -> ! {
    eprintln!("announce: {msg}");
    eprintln!("usage: announce --local-as A --remote-as B --peer ADDR[:PORT] --router-id ID [--count N] [--base IP] [--hold S] [--password P] [--passive] [--listen ADDR:PORT] [--source IP] [--families v4,v6] [--connect-retry S] [--multihop N] [--gtsm] [--graceful-restart S] [--bfd TX_MS,RX_MS,MULT] [--bfd-echo MS] [--community A:B] [--large A:B:C] [--local-pref N] [--med N]");
    std::process::exit(2)
}

fn parse<T: std::str::FromStr>(flag: &str, v: Option<String>) -> T {
    let v = v.unwrap_or_else(|| usage(&format!("{flag} needs a value")));
    v.parse()
        .unwrap_or_else(|_| usage(&format!("{flag}: bad value {v:?}")))
}

fn parse_peer(v: &str) -> (IpAddr, u16) {
    if let Ok(sa) = v.parse::<SocketAddr>() {
        return (sa.ip(), sa.port());
    }
    match v.parse::<IpAddr>() {
        Ok(ip) => (ip, 179),
        Err(_) => usage(&format!("--peer: bad address {v:?}")),
    }
}

fn parse_community(v: &str) -> Option<Community> {
    let (a, b) = v.split_once(':')?;
    Some(Community(
        (a.parse::<u16>().ok()? as u32) << 16 | b.parse::<u16>().ok()? as u32,
    ))
}

fn parse_large(v: &str) -> Option<LargeCommunity> {
    let mut it = v.split(':');
    let c = LargeCommunity {
        global_admin: it.next()?.parse().ok()?,
        local_data1: it.next()?.parse().ok()?,
        local_data2: it.next()?.parse().ok()?,
    };
    it.next().is_none().then_some(c)
}

fn parse_args() -> Args {
    let mut a = Args {
        local_as: 0,
        remote_as: 0,
        peers: Vec::new(),
        router_id: Ipv4Addr::UNSPECIFIED,
        count: 0,
        base: Ipv4Addr::new(198, 18, 0, 0),
        hold: 90,
        password: None,
        passive: false,
        listen: None,
        source: None,
        families: Vec::new(),
        connect_retry: Some(1),
        multihop: None,
        gtsm: false,
        graceful_restart: None,
        restarting: false,
        open_wait: None,
        bfd: None,
        bfd_echo: None,
        attrs: RouteAttrs::default(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--local-as" => a.local_as = parse(&flag, it.next()),
            // `--peer-as` and `--first` are the names bench/announce.sh uses.
            "--remote-as" | "--peer-as" => a.remote_as = parse(&flag, it.next()),
            "--peer" => a.peers.push(parse_peer(
                &it.next().unwrap_or_else(|| usage("--peer needs a value")),
            )),
            "--router-id" => a.router_id = parse(&flag, it.next()),
            "--count" => a.count = parse(&flag, it.next()),
            "--base" | "--first" => a.base = parse(&flag, it.next()),
            "--hold" => a.hold = parse(&flag, it.next()),
            "--password" => a.password = it.next(),
            "--passive" => a.passive = true,
            "--listen" => a.listen = Some(parse(&flag, it.next())),
            "--source" => a.source = Some(parse(&flag, it.next())),
            "--connect-retry" => a.connect_retry = Some(parse(&flag, it.next())),
            "--multihop" => a.multihop = Some(parse(&flag, it.next())),
            "--gtsm" => a.gtsm = true,
            "--graceful-restart" => a.graceful_restart = Some(parse(&flag, it.next())),
            "--restarting" => a.restarting = true,
            "--open-wait" => a.open_wait = Some(parse(&flag, it.next())),
            "--bfd-echo" => a.bfd_echo = Some(parse(&flag, it.next())),
            "--bfd" => {
                let v: String = parse(&flag, it.next());
                let parts: Vec<&str> = v.split(',').collect();
                a.bfd = match parts.as_slice() {
                    [tx, rx, m] => Some((
                        parse(&flag, Some(tx.to_string())),
                        parse(&flag, Some(rx.to_string())),
                        parse(&flag, Some(m.to_string())),
                    )),
                    _ => usage("--bfd TX_MS,RX_MS,MULT"),
                };
            }
            "--local-pref" => a.attrs.local_pref = Some(parse(&flag, it.next())),
            "--med" => a.attrs.med = Some(parse(&flag, it.next())),
            "--community" => {
                let v: String = parse(&flag, it.next());
                a.attrs
                    .communities
                    .push(parse_community(&v).unwrap_or_else(|| usage("--community A:B")));
            }
            "--large" => {
                let v: String = parse(&flag, it.next());
                a.attrs
                    .large_communities
                    .push(parse_large(&v).unwrap_or_else(|| usage("--large A:B:C")));
            }
            "--families" => {
                let v: String = parse(&flag, it.next());
                for f in v.split(',') {
                    a.families.push(match f {
                        "v4" | "ipv4" => Family::Ipv4Unicast,
                        "v6" | "ipv6" => Family::Ipv6Unicast,
                        _ => usage("--families v4,v6"),
                    });
                }
            }
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if a.local_as == 0 || a.remote_as == 0 || a.peers.is_empty() || a.router_id.is_unspecified() {
        usage("--local-as, --remote-as, --peer and --router-id are required");
    }
    a
}

/// Wall-clock seconds for an `Instant`, for JSON lines other processes can compare.
struct Clock {
    instant: Instant,
    system: SystemTime,
}

impl Clock {
    fn unix(&self, at: Instant) -> f64 {
        let t = self.system + at.saturating_duration_since(self.instant);
        t.duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// Process CPU time in seconds (the sum of every thread's run time in
/// /proc/self/task/*/schedstat, nanoseconds) and peak RSS in kB (VmHWM).
fn resources() -> (f64, u64) {
    let cpu_ns: u64 = std::fs::read_dir("/proc/self/task")
        .map(|dir| {
            dir.flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let hwm = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?.to_string();
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0);
    (cpu_ns as f64 / 1e9, hwm)
}

fn initial_table(args: &Args) -> RouteTable {
    let attrs = Arc::new(args.attrs.clone());
    let base = u32::from(args.base);
    (0..args.count)
        .filter_map(|i| Ipv4Net::new(Ipv4Addr::from(base.wrapping_add(i)), 32).ok())
        .map(|n| (IpNet::V4(n), attrs.clone()))
        .collect()
}

/// One stdin command applied to the table; `Err` is the message to print.
fn apply_command(line: &str, table: &mut RouteTable) -> Result<(), String> {
    let mut words = line.split_whitespace();
    match words.next() {
        Some("add") => {
            let prefix: IpNet = words
                .next()
                .ok_or("add needs a prefix")?
                .parse()
                .map_err(|e| format!("{e}"))?;
            let mut attrs = RouteAttrs::default();
            for w in words {
                let (k, v) = w.split_once('=').ok_or(format!("bad attribute {w:?}"))?;
                match k {
                    "community" => {
                        for c in v.split(',') {
                            attrs
                                .communities
                                .push(parse_community(c).ok_or(format!("bad community {c:?}"))?);
                        }
                    }
                    "large" => {
                        for c in v.split(',') {
                            attrs
                                .large_communities
                                .push(parse_large(c).ok_or(format!("bad large community {c:?}"))?);
                        }
                    }
                    "local-pref" => {
                        attrs.local_pref =
                            Some(v.parse().map_err(|_| format!("bad local-pref {v:?}"))?)
                    }
                    "med" => attrs.med = Some(v.parse().map_err(|_| format!("bad med {v:?}"))?),
                    _ => return Err(format!("unknown attribute {k:?}")),
                }
            }
            table.insert(prefix.trunc(), Arc::new(attrs));
            Ok(())
        }
        Some("del") => {
            let prefix: IpNet = words
                .next()
                .ok_or("del needs a prefix")?
                .parse()
                .map_err(|e| format!("{e}"))?;
            table.remove(&prefix.trunc());
            Ok(())
        }
        Some("clear") => {
            table.clear();
            Ok(())
        }
        Some(other) => Err(format!("unknown command {other:?}")),
        None => Ok(()),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse_args();
    let clock = Clock {
        instant: Instant::now(),
        system: SystemTime::now(),
    };
    let mut speaker = match Speaker::new(SpeakerConfig {
        router_id: args.router_id,
        listen: args.listen,
    }) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("announce: {e}");
            std::process::exit(1);
        }
    };
    let mut events = speaker.subscribe();
    let mut table = initial_table(&args);
    let shared = Arc::new(table.clone());
    for (addr, port) in &args.peers {
        let mut p = PeerConfig::new(*addr, args.local_as, args.remote_as);
        p.port = *port;
        p.hold_time = args.hold;
        p.passive = args.passive;
        p.password = args.password.clone().map(Secret::new);
        p.source_address = args.source;
        p.ebgp_multihop = args.multihop;
        p.gtsm = args.gtsm;
        if !args.families.is_empty() {
            p.families = args.families.clone();
        }
        if let Some(s) = args.connect_retry {
            p.connect_retry = Duration::from_secs(s.max(1));
            p.connect_retry_max = p.connect_retry.max(Duration::from_secs(30));
        }
        p.graceful_restart = args.graceful_restart.map(|restart_time| {
            let mut gr = GracefulRestartConfig::new(restart_time);
            gr.restarting = args.restarting;
            gr
        });
        if let Some(s) = args.open_wait {
            p.open_wait = Duration::from_secs(s.max(1));
        }
        p.bfd = args.bfd.map(|(tx, rx, mult)| BfdPeerConfig {
            timers: edgelb_bgp::bfd::SessionConfig {
                desired_min_tx: Duration::from_millis(tx),
                required_min_rx: Duration::from_millis(rx),
                detect_mult: mult,
                passive: false,
                echo: args.bfd_echo.map(Duration::from_millis),
            },
            multihop: args.multihop.is_some(),
            minimum_ttl: 254,
        });
        if let Err(e) = speaker
            .set_peer(p)
            .and_then(|()| speaker.set_routes_shared(addr, shared.clone()))
        {
            eprintln!("announce: {e}");
            std::process::exit(1);
        }
    }
    println!(
        r#"{{"event":"started","t":{:.6},"prefixes":{}}}"#,
        clock.unix(Instant::now()),
        table.len()
    );

    let (Ok(mut term), Ok(mut int), Ok(mut usr1)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::user_defined1()),
    ) else {
        eprintln!("announce: cannot install signal handlers");
        std::process::exit(1);
    };
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = true;
    let mut restart = false;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = usr1.recv() => { restart = true; break }
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => {
                    match apply_command(&line, &mut table) {
                        Ok(()) => {
                            let shared = Arc::new(table.clone());
                            for (addr, _) in &args.peers {
                                let _ = speaker.set_routes_shared(addr, shared.clone());
                            }
                            println!(r#"{{"event":"applied","t":{:.6},"prefixes":{}}}"#, clock.unix(Instant::now()), table.len());
                        }
                        Err(e) => println!(r#"{{"event":"error","message":{:?}}}"#, e),
                    }
                }
                _ => stdin_open = false,
            },
            ev = events.recv() => match ev {
                Ok(ev) => print_event(&clock, &ev),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => eprintln!("announce: {n} events lost"),
                Err(_) => break,
            },
        }
    }
    let at = Instant::now();
    if restart {
        speaker.shutdown_for_restart().await;
    } else {
        speaker.shutdown("edgelb announce: shutting down").await;
    }
    let (cpu, rss) = resources();
    println!(
        r#"{{"event":"shutdown","t":{:.6},"took_ms":{:.1},"cpu_s":{cpu:.4},"peak_rss_kb":{rss}}}"#,
        clock.unix(Instant::now()),
        at.elapsed().as_secs_f64() * 1000.0
    );
    // tokio's stdin reader is a blocking thread the runtime would wait for: exit now.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

fn print_event(clock: &Clock, ev: &PeerEvent) {
    let (cpu, rss) = resources();
    match ev {
        PeerEvent::Established { peer, at } => {
            println!(
                r#"{{"event":"established","peer":"{peer}","t":{:.6}}}"#,
                clock.unix(*at)
            );
        }
        PeerEvent::EndOfRib { peer, at, total } => println!(
            r#"{{"event":"all_sent","peer":"{peer}","t":{:.6},"prefixes":{total},"cpu_s":{cpu:.4},"peak_rss_kb":{rss}}}"#,
            clock.unix(*at)
        ),
        PeerEvent::RoutesSent {
            peer,
            at,
            announced,
            withdrawn,
            total,
        } => println!(
            r#"{{"event":"sent","peer":"{peer}","t":{:.6},"announced":{announced},"withdrawn":{withdrawn},"prefixes":{total},"cpu_s":{cpu:.4},"peak_rss_kb":{rss}}}"#,
            clock.unix(*at)
        ),
        PeerEvent::Down { peer, at, error } => {
            let (code, text) = match error {
                Some(e) => (
                    e.code
                        .map(|(c, s)| format!("\"{c}/{s}\""))
                        .unwrap_or("null".into()),
                    e.text.clone(),
                ),
                None => ("null".into(), String::new()),
            };
            println!(
                r#"{{"event":"down","peer":"{peer}","t":{:.6},"code":{code},"error":{text:?}}}"#,
                clock.unix(*at)
            );
        }
        PeerEvent::FamiliesNotAnnounced { peer, at, families } => {
            let list: Vec<String> = families
                .iter()
                .map(|f| format!(r#"{{"family":"{:?}","reason":{:?}}}"#, f.family, f.reason))
                .collect();
            println!(
                r#"{{"event":"families_not_announced","peer":"{peer}","t":{:.6},"families":[{}]}}"#,
                clock.unix(*at),
                list.join(",")
            );
        }
    }
}

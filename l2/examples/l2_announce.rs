//! Runs an `Announcer` driven by lines on stdin; used by the lab tests and the benchmark.
//!
//! Each line is one of:
//! - `own IFACE=IP,IP IFACE2=` — the whole owned state (an interface with no address is
//!   watched and answers nothing); prints `applied SET_AT DONE_AT errors=N` (Unix seconds)
//!   and one `error ...` line per problem;
//! - `stats` — prints one `iface ...` line per interface and one `ip ...` line per address,
//!   then `end`;
//! - `quit`.
//!
//! Options: `--poll-ms N` (link poll interval), `--refresh-ms N` (periodic refresh).
use anyhow::{bail, Context};
use edgelb_l2::{Announcer, Config};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncBufReadExt;

fn epoch(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

fn parse_state(words: &[&str]) -> anyhow::Result<BTreeMap<String, BTreeSet<IpAddr>>> {
    let mut state = BTreeMap::new();
    for w in words {
        let (iface, ips) = w
            .split_once('=')
            .with_context(|| format!("expected IFACE=IP,IP, got {w:?}"))?;
        let set: &mut BTreeSet<IpAddr> = state.entry(iface.to_string()).or_default();
        for ip in ips.split(',').filter(|s| !s.is_empty()) {
            set.insert(ip.parse().with_context(|| format!("bad address {ip:?}"))?);
        }
    }
    Ok(state)
}

fn parse_args() -> anyhow::Result<Config> {
    let mut config = Config::default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value: u64 = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .parse()
            .with_context(|| format!("{flag} needs a number of milliseconds"))?;
        match flag.as_str() {
            "--poll-ms" => config.link_poll = Duration::from_millis(value),
            "--refresh-ms" => config.timetable.refresh = Some(Duration::from_millis(value)),
            other => bail!("unknown option {other}"),
        }
    }
    Ok(config)
}

fn print_stats(announcer: &Announcer) {
    let opt = |t: Option<SystemTime>| t.map(epoch).unwrap_or_else(|| "-".into());
    for s in announcer.stats() {
        let link = s
            .link
            .map(|l| {
                format!(
                    "ifindex={} mac={} up={} running={}",
                    l.ifindex, l.mac, l.up, l.running
                )
            })
            .unwrap_or_else(|| "link=-".into());
        println!(
            "iface {} {link} received={} ignored={} answered={} announcements={} send_errors={} receive_errors={} receive_drops={} error={}",
            s.interface,
            s.frames_received,
            s.frames_ignored,
            s.requests_answered,
            s.announcements,
            s.send_errors,
            s.receive_errors,
            s.receive_drops,
            s.error.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
        );
        for ip in s.ips.iter() {
            println!(
                "ip {} {} owned={} first={} error={}",
                s.interface,
                ip.ip,
                epoch(ip.owned_since),
                opt(ip.first_announced),
                ip.error.as_deref().unwrap_or("-"),
            );
        }
    }
    println!("end");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("EDGELB_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut announcer = Announcer::new(parse_args()?);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    println!("ready");
    while let Some(line) = lines.next_line().await? {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.split_first() {
            Some((&"own", rest)) => {
                let state = match parse_state(rest) {
                    Ok(s) => s,
                    Err(e) => {
                        println!("bad {e:#}");
                        continue;
                    }
                };
                let set_at = SystemTime::now();
                let errors = announcer.set_owned(state).await;
                let done_at = SystemTime::now();
                println!(
                    "applied {} {} errors={}",
                    epoch(set_at),
                    epoch(done_at),
                    errors.len()
                );
                for e in errors {
                    println!("error {e}");
                }
            }
            Some((&"stats", _)) => print_stats(&announcer),
            Some((&"quit", _)) => break,
            Some((other, _)) => println!("bad unknown command {other}"),
            None => {}
        }
    }
    announcer.shutdown().await;
    Ok(())
}

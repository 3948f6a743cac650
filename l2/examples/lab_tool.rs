//! Helpers the lab tests and the benchmark run inside network namespaces:
//!
//! - `serve PORT NAME` — TCP listener on [::]:PORT (IPv4 too) that writes NAME and closes;
//! - `probe IP PORT DURATION_MS INTERVAL_MS` — connects again and again, prints
//!   `EPOCH ok NAME` or `EPOCH err REASON` per attempt (connect timeout 1 s);
//! - `blast IFACE OWNED_V4 OWNED_V6 VICTIM_MAC ROUNDS` — sends malformed and unrelated ARP
//!   and ICMPv6 frames, none of which is a valid question for an owned address;
//! - `arp-rtt IFACE SRC_IP COUNT TARGET...` — ARP request/reply round trips to each target in
//!   turn; prints median and 99th percentile per target;
//! - `watch-garp IFACE COUNT TIMEOUT_MS` — waits for gratuitous ARPs from COUNT distinct
//!   addresses; prints `first EPOCH last EPOCH seen N`.
use anyhow::{bail, Context};
use edgelb_l2::frame;
use edgelb_l2::socket::PacketSocket;
use edgelb_l2::MacAddr;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn epoch() -> String {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:06}", d.as_secs(), d.subsec_micros())
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    let s = args.get(i).with_context(|| format!("missing {what}"))?;
    s.parse::<T>()
        .map_err(|e| anyhow::anyhow!("bad {what} {s:?}: {e}"))
}

fn serve(port: u16, name: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("::", port)).context("binding [::]")?;
    println!("listening");
    for conn in listener.incoming() {
        let Ok(mut c) = conn else { continue };
        let _ = c.write_all(name.as_bytes());
    }
    Ok(())
}

fn probe(ip: IpAddr, port: u16, duration: Duration, interval: Duration) -> anyhow::Result<()> {
    let addr = SocketAddr::new(ip, port);
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let result = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            let mut name = String::new();
            s.read_to_string(&mut name)?;
            Ok(name)
        });
        match result {
            Ok(name) => println!("{} ok {}", epoch(), name.trim()),
            Err(e) => println!("{} err {}", epoch(), e.kind()),
        }
        std::thread::sleep(interval);
    }
    println!("done");
    Ok(())
}

/// Frames that must change nothing: truncated, wrong lengths, wrong codes, bad checksums,
/// foreign questions, spoofed sources, random junk under the ARP and IPv6 ethertypes.
fn junk(me: MacAddr, v4: Ipv4Addr, v6: Ipv6Addr, victim: MacAddr, seed: &mut u64) -> Vec<Vec<u8>> {
    let mut rand = || {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    };
    let client4 = Ipv4Addr::new(192, 0, 2, 10);
    let client6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
    let other4 = Ipv4Addr::new(192, 0, 2, 222);
    let other6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x222);
    let req = frame::arp_request(me, client4, v4);
    let ns = frame::neighbor_solicit(me, client6, v6);
    let mut out = Vec::new();
    for cut in [0usize, 1, 13, 14, 20, 41] {
        out.push(req[..cut].to_vec());
    }
    for cut in [15usize, 53, 54, 60, 77, 85] {
        out.push(ns[..cut.min(ns.len())].to_vec());
    }
    let mut f = req.clone();
    f[18] = 8; // hardware length 8
    out.push(f);
    let mut f = req.clone();
    f[21] = 2; // a reply, not a request
    out.push(f);
    let mut f = req.clone();
    f[21] = 9; // unknown operation
    out.push(f);
    // The Ethernet source stays ours so the switch does not learn the victim's MAC here.
    let from_me = |mut f: Vec<u8>| {
        f[6..12].copy_from_slice(&me.octets());
        f
    };
    out.push(frame::arp_request(me, client4, other4)); // not owned
    out.push(from_me(frame::arp_request(victim, client4, v4))); // sender MAC = announcer's
    out.push(from_me(frame::arp_request(
        MacAddr::broadcast(),
        client4,
        v4,
    ))); // multicast
    out.push(frame::gratuitous_arp(me, v4, frame::GarpForm::Request)); // a conflicting claim
    let mut f = ns.clone();
    f[21] = 64; // hop limit
    out.push(f);
    let mut f = ns.clone();
    f[56] ^= 0x55; // checksum
    out.push(f);
    let mut f = ns.clone();
    f[55] = 1; // code
    out.push(f);
    let mut f = ns.clone();
    f[79] = 0; // option length zero (checksum now also wrong; both must be caught)
    out.push(f);
    let mut f = ns.clone();
    f[19] = 200; // payload length past the frame
    out.push(f);
    out.push(frame::neighbor_solicit(me, client6, other6)); // not owned
    out.push(from_me(frame::neighbor_solicit(victim, client6, v6))); // option = announcer's MAC
    let mut f = ns.clone();
    f[20] = 17; // UDP, not ICMPv6
    out.push(f);
    for ethertype in [[0x08u8, 0x06], [0x86, 0xdd], [0x08, 0x00], [0x88, 0xcc]] {
        let len = 14 + (rand() % 120) as usize;
        let mut f: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
        f[..6].copy_from_slice(&[0xff; 6]);
        f[6..12].copy_from_slice(&me.octets());
        f[12..14].copy_from_slice(&ethertype);
        out.push(f);
    }
    out
}

async fn blast(args: &[String]) -> anyhow::Result<()> {
    let iface: String = arg(args, 0, "IFACE")?;
    let v4: Ipv4Addr = arg(args, 1, "OWNED_V4")?;
    let v6: Ipv6Addr = arg(args, 2, "OWNED_V6")?;
    let victim: MacAddr = arg(args, 3, "VICTIM_MAC")?;
    let rounds: u32 = arg(args, 4, "ROUNDS")?;
    let link = edgelb_l2::link::lookup(&iface)?.with_context(|| format!("no {iface}"))?;
    let socket = PacketSocket::open(link.ifindex)?;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut sent = 0u64;
    for _ in 0..rounds {
        for f in junk(link.mac, v4, v6, victim, &mut seed) {
            if f.is_empty() {
                continue;
            }
            // The kernel refuses frames shorter than an Ethernet header: that is fine.
            if socket.send(&f).await.is_ok() {
                sent += 1;
            }
        }
        // Paced so that the veth backlog (netdev_max_backlog) does not drop the burst before
        // it reaches the announcer: the test wants every frame read and judged.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!("sent {sent}");
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn arp_rtt(args: &[String]) -> anyhow::Result<()> {
    let iface: String = arg(args, 0, "IFACE")?;
    let src: Ipv4Addr = arg(args, 1, "SRC_IP")?;
    let count: usize = arg(args, 2, "COUNT")?;
    let targets: Vec<Ipv4Addr> = (3..args.len())
        .map(|i| arg(args, i, "TARGET"))
        .collect::<anyhow::Result<_>>()?;
    if targets.is_empty() {
        bail!("no TARGET");
    }
    let link = edgelb_l2::link::lookup(&iface)?.with_context(|| format!("no {iface}"))?;
    let socket = PacketSocket::open(link.ifindex)?;
    let mut rtts: Vec<Vec<Duration>> = vec![Vec::new(); targets.len()];
    let mut lost = vec![0usize; targets.len()];
    let mut buf = vec![0u8; 2048];
    for _ in 0..count {
        for (i, t) in targets.iter().enumerate() {
            let req = frame::arp_request(link.mac, src, *t);
            let start = Instant::now();
            socket.send(&req).await?;
            let deadline = start + Duration::from_secs(1);
            let got = loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, socket.recv(&mut buf)).await {
                    Err(_) => break None,
                    Ok(r) => {
                        let (len, _) = r?;
                        let seen = frame::parse_any_arp(buf.get(..len).unwrap_or(&[]));
                        if let Some(a) = seen {
                            if a.reply && a.sender_ip == *t && a.target_ip == src {
                                break Some(start.elapsed());
                            }
                        }
                    }
                }
            };
            match got {
                Some(d) => rtts[i].push(d),
                None => lost[i] += 1,
            }
        }
    }
    for (i, t) in targets.iter().enumerate() {
        rtts[i].sort();
        println!(
            "rtt {t} n={} lost={} median_us={:.1} p99_us={:.1}",
            rtts[i].len(),
            lost[i],
            percentile(&rtts[i], 0.5).as_secs_f64() * 1e6,
            percentile(&rtts[i], 0.99).as_secs_f64() * 1e6,
        );
    }
    Ok(())
}

async fn watch_garp(args: &[String]) -> anyhow::Result<()> {
    let iface: String = arg(args, 0, "IFACE")?;
    let count: usize = arg(args, 1, "COUNT")?;
    let timeout = Duration::from_millis(arg(args, 2, "TIMEOUT_MS")?);
    let link = edgelb_l2::link::lookup(&iface)?.with_context(|| format!("no {iface}"))?;
    let socket = PacketSocket::open(link.ifindex)?;
    println!("watching");
    let mut seen = BTreeSet::new();
    let (mut first, mut last) = (None, None);
    let mut buf = vec![0u8; 2048];
    let deadline = Instant::now() + timeout;
    while seen.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(r) = tokio::time::timeout(left, socket.recv(&mut buf)).await else {
            break;
        };
        let (len, _) = r?;
        let Some(a) = frame::parse_any_arp(buf.get(..len).unwrap_or(&[])) else {
            continue;
        };
        if a.sender_ip == a.target_ip && seen.insert(a.sender_ip) {
            let now = epoch();
            first.get_or_insert_with(|| now.clone());
            last = Some(now);
        }
    }
    println!(
        "first {} last {} seen {}",
        first.unwrap_or_else(|| "-".into()),
        last.unwrap_or_else(|| "-".into()),
        seen.len()
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = args.split_first().context("usage: lab_tool COMMAND ...")?;
    match cmd.as_str() {
        "serve" => serve(arg(rest, 0, "PORT")?, &arg::<String>(rest, 1, "NAME")?),
        "probe" => probe(
            arg(rest, 0, "IP")?,
            arg(rest, 1, "PORT")?,
            Duration::from_millis(arg(rest, 2, "DURATION_MS")?),
            Duration::from_millis(arg(rest, 3, "INTERVAL_MS")?),
        ),
        "blast" => blast(rest).await,
        "arp-rtt" => arp_rtt(rest).await,
        "watch-garp" => watch_garp(rest).await,
        other => bail!("unknown command {other}"),
    }
}

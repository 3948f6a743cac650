//! Cluster mode under stress, against the real API server (issue 12): 3 speakers deployed as
//! shipped, N LoadBalancer Services created in a burst; mid-burst the leader is SIGKILLed,
//! the next leader is frozen with SIGSTOP past its Lease and resumed, and every speaker's
//! API server path is slowed for a few seconds. A checker samples every Service's status
//! throughout: no IP ever held by two Services (none of them may share), every Service ends
//! with an IP, an IP once recorded never changes (nor is cleared) while its Service lives.
//!
//! Events, after a settle (the Event posts' retry bound): at most one `IPAllocated` per
//! Service (its IP never changes, so a second would be a lie), each naming the Service's IP;
//! a Service without one only if its IP was first seen in a leadership term that ended (a
//! leader killed, frozen or slowed out of its Lease does not post what it had queued, and its
//! successor does not post its predecessor's Events). Nothing is lost in a term that goes
//! on, the slowed API included: a leader whose fence lapses until its late renewal lands
//! keeps what it owes and posts it once it writes again.
//!
//! `EDGELB_CHAOS_SERVICES` (default 2000, the burst) and `EDGELB_CHAOS_SEEDS`
//! (default `1,2`) size it; a hand run adds seeds. Each seed starts from a clean slate (no
//! Lease of the seed before). Figures (time per seed, to all IPs after the last create, load
//! average) go to stdout and to `target/tmp/figures/cluster_chaos.txt`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use edgelb_tests::kube::objects::{
    create_namespace, create_services, delete_services, edgelb_api, ips, speaker_requests,
};
use edgelb_tests::kube::{self as harness, Cluster, NodeSpec, Speaker, SYSTEM_NAMESPACE};
use edgelb_tests::lab::{self, Lan, Netns};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::Client;
use serde_json::json;

const TEST: &str = "cluster_chaos::chaos_never_gives_one_ip_to_two_services";
const LEASE: &str = "edgelb-leader";
const LEASE_SECONDS: u64 = 6;
const POOL: &str = "198.18.0.0/20";
const SERVICES: usize = 2000;
const IN_FLIGHT: usize = 32;

/// SplitMix64: the chaos points drawn from the seed (reproducible, no dependency).
struct SplitMix(u64);

impl SplitMix {
    fn range(&mut self, r: std::ops::Range<usize>) -> usize {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        r.start + (z as usize) % (r.end - r.start).max(1)
    }
}

/// A leadership term: the Lease's holder and its `leaseTransitions`.
type Term = (String, i32);

/// The Event posts' retry bound (4 tries of 5 s, waits 250 ms + 500 ms + 1 s: 21.75 s) and
/// a margin: after this no post of a live leader is still being retried.
const EVENT_SETTLE_MAX: Duration = Duration::from_secs(25);
/// Settled earlier when the count of Events stays the same this long (longer than one try's
/// timeout plus its backoff).
const EVENT_SETTLE_QUIET: Duration = Duration::from_secs(7);
/// A status written at the end of a term may be first seen this late (a list of every
/// Service under load), in the next term's first samples.
const FIRST_SEEN_SLACK: Duration = Duration::from_secs(5);

/// What the checker saw.
#[derive(Debug, Default)]
struct Seen {
    /// First IPs recorded per Service UID.
    first: HashMap<String, (String, Vec<IpAddr>)>,
    /// The term sampled just before the list in which a Service's IP was first seen, and when.
    first_term: HashMap<String, (Option<Term>, Instant)>,
    /// When each term was first sampled.
    terms: Vec<(Term, Instant)>,
    /// Violations, in words.
    problems: Vec<String>,
    samples: usize,
}

/// One sample of every Service's status: duplicates and changed IPs are violations.
fn check(seen: &mut Seen, services: &[Service]) -> usize {
    seen.samples += 1;
    let mut by_ip: BTreeMap<IpAddr, Vec<String>> = BTreeMap::new();
    let mut with_ip = 0;
    for svc in services {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let uid = svc.metadata.uid.clone().unwrap_or_default();
        let now = ips(svc);
        if now.is_empty() {
            if let Some((_, first)) = seen.first.get(&uid) {
                let p = format!("{name}: IP {first:?} cleared");
                if !seen.problems.contains(&p) {
                    seen.problems.push(p);
                }
            }
            continue;
        }
        with_ip += 1;
        for ip in &now {
            by_ip.entry(*ip).or_default().push(name.clone());
        }
        match seen.first.get(&uid) {
            None => {
                seen.first.insert(uid, (name, now));
            }
            Some((_, first)) if *first != now => {
                let p = format!("{name}: IP changed from {first:?} to {now:?}");
                if !seen.problems.contains(&p) {
                    seen.problems.push(p);
                }
            }
            Some(_) => {}
        }
    }
    for (ip, holders) in by_ip {
        if holders.len() > 1 {
            let p = format!("{ip} held by {holders:?}");
            if !seen.problems.contains(&p) {
                seen.problems.push(p);
            }
        }
    }
    with_ip
}

async fn term(client: &Client) -> Option<Term> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let spec = leases.get_opt(LEASE).await.ok().flatten()?.spec?;
    let holder = spec.holder_identity.filter(|h| !h.is_empty())?;
    Some((holder, spec.lease_transitions.unwrap_or(0)))
}

/// Records the term in which each Service's IP was first seen (the term sampled before the
/// list, so a term change in between attributes a status to the older term).
fn note_terms(seen: &mut Seen, services: &[Service], term: Option<Term>, at: Instant) {
    if let Some(t) = &term {
        if !seen.terms.iter().any(|(x, _)| x == t) {
            seen.terms.push((t.clone(), at));
        }
    }
    for svc in services.iter().filter(|s| !ips(s).is_empty()) {
        let uid = svc.metadata.uid.clone().unwrap_or_default();
        seen.first_term
            .entry(uid)
            .or_insert_with(|| (term.clone(), at));
    }
}

/// Distinct `IPAllocated` Events per Service UID (by Event name), and their notes.
async fn ip_allocated(events: &Api<Event>) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut names = std::collections::BTreeSet::new();
    for e in events.list(&ListParams::default()).await?.items {
        if e.reason.as_deref() != Some("IPAllocated")
            || !names.insert(e.metadata.name.clone().unwrap_or_default())
        {
            continue;
        }
        let uid = e
            .regarding
            .as_ref()
            .and_then(|r| r.uid.clone())
            .unwrap_or_default();
        out.entry(uid).or_default().push(e.note.unwrap_or_default());
    }
    Ok(out)
}

/// Waits until no `IPAllocated` Event has come for [`EVENT_SETTLE_QUIET`], at most
/// [`EVENT_SETTLE_MAX`]; the Events then, and how long it took.
async fn settled_events(
    events: &Api<Event>,
) -> anyhow::Result<(BTreeMap<String, Vec<String>>, Duration)> {
    let t = Instant::now();
    let mut last = ip_allocated(events).await?;
    let mut quiet_since = Instant::now();
    while t.elapsed() < EVENT_SETTLE_MAX && quiet_since.elapsed() < EVENT_SETTLE_QUIET {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = ip_allocated(events).await?;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    Ok((last, t.elapsed()))
}

/// What the Events say against the statuses: (summary for the figures, violations).
fn judge_events(
    seen: &Seen,
    services: &[Service],
    by_uid: &BTreeMap<String, Vec<String>>,
    final_term: &Option<Term>,
    slowed: Option<(Instant, Instant)>,
) -> (String, Vec<String>) {
    let mut problems = Vec::new();
    let final_began = seen
        .terms
        .iter()
        .find(|(t, _)| Some(t) == final_term.as_ref())
        .map(|(_, at)| *at);
    let in_slow = |at: Instant| {
        slowed
            .is_some_and(|(from, to)| at + FIRST_SEEN_SLACK >= from && at <= to + FIRST_SEEN_SLACK)
    };
    let (mut one, mut missing, mut missing_ended_term, mut missing_slow) = (0, 0, 0, 0);
    for svc in services {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let uid = svc.metadata.uid.clone().unwrap_or_default();
        let notes = by_uid.get(&uid).map(Vec::as_slice).unwrap_or_default();
        let ip = ips(svc)
            .first()
            .map(ToString::to_string)
            .unwrap_or_default();
        match notes {
            [] => {
                missing += 1;
                // Lost only with the term that wrote the status (or first seen right after).
                let (t, at) = seen
                    .first_term
                    .get(&uid)
                    .cloned()
                    .unwrap_or((None, Instant::now()));
                let ended = t.is_none()
                    || t != *final_term
                    || final_began.is_some_and(|b| at < b + FIRST_SEEN_SLACK);
                if ended {
                    missing_ended_term += 1;
                } else {
                    // A term that goes on loses nothing, a lapse of its fence included.
                    let when = if in_slow(at) {
                        missing_slow += 1;
                        "around the slowed API"
                    } else {
                        "outside the slowed API"
                    };
                    problems.push(format!(
                        "{name}: no IPAllocated, its IP first seen in the final term {t:?}, {when}"
                    ));
                }
            }
            [note] => {
                one += 1;
                if ip.is_empty() || !note.contains(&format!("assigned IP {ip}")) {
                    problems.push(format!("{name}: IPAllocated says {note:?}, status {ip}"));
                }
            }
            many => problems.push(format!(
                "{name}: {} IPAllocated Events {many:?}",
                many.len()
            )),
        }
    }
    let known: std::collections::BTreeSet<String> = services
        .iter()
        .filter_map(|s| s.metadata.uid.clone())
        .collect();
    let strays = by_uid.keys().filter(|u| !known.contains(*u)).count();
    if strays > 0 {
        problems.push(format!(
            "{strays} IPAllocated Events about no Service of the test"
        ));
    }
    (
        format!(
            "ip_allocated=[one={one} missing={missing} in_ended_terms={missing_ended_term} in_slow_api={missing_slow} terms={}]",
            seen.terms.len()
        ),
        problems,
    )
}

async fn holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    leases
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .filter(|h| !h.is_empty())
}

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn figure(line: &str) {
    lab::figure("cluster_chaos", line);
}

/// The nodes, their namespaces on one LAN, and the pool.
struct Rig {
    _lan: Lan,
    nets: Vec<Netns>,
    nodes: Vec<NodeSpec>,
}

async fn rig(admin: &Client, tag: &str) -> anyhow::Result<Rig> {
    let mut lan = Lan::new()?;
    let mut nets = Vec::new();
    let mut nodes = Vec::new();
    for i in 1..=3u8 {
        let ip: IpAddr = format!("192.0.2.{}", 10 + i).parse()?;
        let ns = lan.join(&format!("ch{tag}{i}"), &format!("{ip}/24"))?;
        ns.ip(&["link", "set", "lo", "up"])?;
        let name = format!("chaos-{i}");
        harness::create_node(admin, &name, ip, &[]).await?;
        nodes.push(NodeSpec {
            name,
            ip,
            extra_args: vec![format!("--lease-seconds={LEASE_SECONDS}")],
        });
        nets.push(ns);
    }
    let pools = edgelb_api(admin, "IPAddressPool", "ipaddresspools");
    let pool = json!({"apiVersion": "edgelb.io/v1alpha1", "kind": "IPAddressPool",
        "metadata": {"name": "chaos", "namespace": SYSTEM_NAMESPACE},
        "spec": {"addresses": [POOL]}});
    pools
        .patch(
            "chaos",
            &PatchParams::apply("chaos-test").force(),
            &Patch::Apply(&pool),
        )
        .await
        .context("pool")?;
    Ok(Rig {
        _lan: lan,
        nets,
        nodes,
    })
}

/// One run: returns the figures line.
async fn run(cluster: &Cluster, admin: &Client, seed: u64, n: usize) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut rng = SplitMix(seed);
    // A clean slate: the Lease of the seed before (its speakers are gone) would name a
    // holder that no longer runs.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), SYSTEM_NAMESPACE);
    let _ = leases.delete(LEASE, &DeleteParams::default()).await;
    let rig = rig(admin, &seed.to_string()).await?;
    let bin = harness::speaker_binary()?;
    let mut speakers: Vec<Option<Speaker>> = Vec::new();
    for (ns, node) in rig.nets.iter().zip(&rig.nodes) {
        speakers.push(Some(Speaker::deploy(cluster, ns, node, &bin).await?));
    }
    let ns_name = format!("chaos-{seed}");
    create_namespace(admin, &ns_name).await?;
    let first = harness::eventually("a Lease holder", Duration::from_secs(60), || async {
        Ok(holder(admin).await.filter(|h| h.starts_with("chaos-")))
    })
    .await?;

    // The checker: every Service's status, sampled throughout.
    let services: Api<Service> = Api::namespaced(admin.clone(), &ns_name);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let checker = {
        let (services, seen, stop) = (services.clone(), seen.clone(), stop.clone());
        let admin = admin.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                let t = term(&admin).await;
                let at = Instant::now();
                if let Ok(list) = services.list(&ListParams::default()).await {
                    let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                    check(&mut s, &list.items);
                    note_terms(&mut s, &list.items, t, at);
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
        })
    };

    // The burst, `IN_FLIGHT` creates at a time; chaos at points drawn from the seed.
    let kill_at = rng.range(n / 5..n / 3);
    let stop_at = rng.range(n / 2..2 * n / 3);
    let slow_at = rng.range(n / 3..n);
    let audit_from = cluster.audit_events().map(|e| e.len()).unwrap_or(0);
    let created = Arc::new(AtomicUsize::new(0));
    let burst = {
        let (client, ns_name, created) = (admin.clone(), ns_name.clone(), created.clone());
        tokio::spawn(async move {
            create_services(&client, &ns_name, n, IN_FLIGHT, &[], Some(&created)).await
        })
    };
    let index = |name: &str| rig.nodes.iter().position(|n| n.name == name);
    let mut events = Vec::new();
    let t0 = Instant::now();
    let mut killed = None;
    let mut frozen = false;
    let mut slowed = false;
    let mut slow_window = None;
    while !(burst.is_finished() && killed.is_some() && frozen && slowed) {
        let c = created.load(Ordering::SeqCst);
        if killed.is_none() && c >= kill_at {
            if let Some(i) = index(&first) {
                if let Some(s) = speakers[i].take() {
                    s.process.signal(libc::SIGKILL)?;
                    events.push(format!("SIGKILL {first} at {c}"));
                    killed = Some(i);
                    // Keep its namespace's speaker dead (dropping kills it too).
                    drop(s);
                }
            }
        }
        if killed.is_some() && !frozen && c >= stop_at {
            // The next leader, once there is one, frozen past its Lease.
            if let Some(h) = holder(admin).await.filter(|h| *h != first) {
                if let Some(s) = index(&h).and_then(|i| speakers[i].as_ref()) {
                    s.process.signal(libc::SIGSTOP)?;
                    events.push(format!("SIGSTOP {h} at {c}"));
                    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS + 3)).await;
                    s.process.signal(libc::SIGCONT)?;
                    events.push(format!("SIGCONT {h}"));
                    frozen = true;
                }
            } else if burst.is_finished() && t0.elapsed() > Duration::from_secs(120) {
                frozen = true;
            }
        }
        if !slowed && c >= slow_at {
            let from = Instant::now();
            for s in speakers.iter().flatten() {
                s.forwarder.set_latency(Duration::from_millis(1500));
            }
            events.push(format!("API slow (1.5 s each way) at {c}"));
            tokio::time::sleep(Duration::from_secs(4)).await;
            for s in speakers.iter().flatten() {
                s.forwarder.restore();
            }
            slow_window = Some((from, Instant::now()));
            slowed = true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        ensure!(
            t0.elapsed() < Duration::from_secs(600),
            "chaos did not finish: {events:?}"
        );
    }
    let last_create = burst.await??;
    let creates_took = last_create - t0;
    // Every Service ends with an IP.
    let all = harness::eventually("every Service has an IP", Duration::from_secs(180), || {
        let services = services.clone();
        async move {
            let list = services.list(&ListParams::default()).await?;
            Ok((list.items.iter().filter(|s| !ips(s).is_empty()).count() == n).then_some(()))
        }
    })
    .await;
    let settle = last_create.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    let _ = checker.await;
    // The Events once every post still being retried has ended.
    let event_api: Api<Event> = Api::namespaced(admin.clone(), &ns_name);
    let (by_uid, events_settled) = settled_events(&event_api).await?;
    let final_term = term(admin).await;
    let final_list = services.list(&ListParams::default()).await?;
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|p| p.into_inner()));
    let (event_summary, event_problems) =
        judge_events(&seen, &final_list.items, &by_uid, &final_term, slow_window);
    let mut last = Seen {
        first: seen.first.clone(),
        ..Seen::default()
    };
    check(&mut last, &final_list.items);
    let rss: Vec<String> = speakers
        .iter()
        .flatten()
        .map(|s| {
            format!(
                "{}={}MB",
                s.node,
                s.process.pid().and_then(rss_kb).unwrap_or(0) / 1024
            )
        })
        .collect();
    let line = format!(
        "chaos seed={seed} services={n} problems={} final_problems={} samples={} seed_took={:.1}s creates_took={:.1}s all_ip_after_last_create={:.1}s events=[{}] {event_summary} events_settled_in={:.1}s speaker_writes_per_service=[{}] rss=[{}] load=[{}]",
        seen.problems.len(),
        last.problems.len(),
        seen.samples,
        started.elapsed().as_secs_f64(),
        creates_took.as_secs_f64(),
        settle.as_secs_f64(),
        events.join("; "),
        events_settled.as_secs_f64(),
        writes_per_service(cluster, audit_from, n),
        rss.join(" "),
        lab::load()
    );
    figure(&line);
    // The speakers go first: they need not follow 2000 deletions.
    let logs = tail_logs(&speakers);
    drop(speakers);
    let cleaned = delete_services(admin, &ns_name, None).await;
    all.with_context(|| format!("{line}; speaker logs:\n{logs}"))?;
    ensure!(
        seen.problems.is_empty() && last.problems.is_empty(),
        "{line}: {:?} {:?}",
        &seen.problems[..seen.problems.len().min(20)],
        &last.problems[..last.problems.len().min(20)]
    );
    ensure!(
        event_problems.is_empty(),
        "{line}: IPAllocated Events: {:?}",
        &event_problems[..event_problems.len().min(20)]
    );
    cleaned?;
    Ok(line)
}

/// The speakers' writes (create, update, patch) from audit event `from` on, per Service, by
/// resource: what the burst cost the API server, leader changes included.
fn writes_per_service(cluster: &Cluster, from: usize, n: usize) -> String {
    let Ok((requests, _)) = speaker_requests(cluster, from) else {
        return "audit log unreadable".into();
    };
    let mut by: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &requests {
        let s = |p: &str| e.pointer(p).and_then(|v| v.as_str()).unwrap_or_default();
        if !matches!(s("/verb"), "create" | "update" | "patch") {
            continue;
        }
        let what = match (s("/objectRef/resource"), s("/objectRef/subresource")) {
            ("services", "status") => "status",
            ("events", _) => "events",
            ("leases", _) => "leases",
            _ => "other",
        };
        *by.entry(what).or_default() += 1;
    }
    by.iter()
        .map(|(k, v)| format!("{k}={:.2}", *v as f64 / n.max(1) as f64))
        .collect::<Vec<_>>()
        .join(" ")
}

fn tail_logs(speakers: &[Option<Speaker>]) -> String {
    speakers
        .iter()
        .flatten()
        .map(|s| {
            let l = s.logs();
            let tail: Vec<&str> = l.lines().rev().take(15).collect();
            format!(
                "--- {}\n{}",
                s.node,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_never_gives_one_ip_to_two_services() -> anyhow::Result<()> {
    let Some((cluster, admin)) = harness::cluster_for(TEST).await? else {
        return Ok(());
    };
    let n: usize = harness::env_or("EDGELB_CHAOS_SERVICES", SERVICES);
    let seeds: Vec<u64> = std::env::var("EDGELB_CHAOS_SEEDS")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    for seed in seeds {
        run(cluster, &admin, seed, n).await?;
    }
    Ok(())
}

//! What the interop tests of edgelb-bgp share: the `announce` speaker process (the example
//! of `edgelb-bgp`) in a namespace, and one scenario per requirement, generic over the
//! router (FRR, BIRD, GoBGP).
//!
//! Layout of every scenario: a LAN with the router in `r` (192.0.2.1, 2001:db8::1, AS 65001)
//! and speakers in their own namespaces (192.0.2.N, 2001:db8::N).
#![allow(dead_code)]
use anyhow::{bail, Context};
use edgelb_tests::lab::{
    self, BgpRouter, Bird, BirdConfig, Frr, FrrConfig, Gobgp, GobgpConfig, Lan, Neighbor, Netns,
};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const ROUTER_AS: u32 = 65001;
pub const SPEAKER_AS: u32 = 65002;
pub const SESSION: Duration = Duration::from_secs(40);
pub const ROUTE: Duration = Duration::from_secs(20);

static LOGS: AtomicU32 = AtomicU32::new(0);

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

/// A router manager of the lab, started and stopped the same way for every kind.
pub trait Router: BgpRouter + Sized {
    fn boot(ns: &Netns, neighbors: &[Neighbor]) -> anyhow::Result<Self>;
    fn halt(self) -> anyhow::Result<()>;
}

impl Router for Frr {
    fn boot(ns: &Netns, neighbors: &[Neighbor]) -> anyhow::Result<Frr> {
        let cfg = neighbors
            .iter()
            .fold(FrrConfig::new("192.0.2.1".parse()?, ROUTER_AS), |c, n| {
                c.neighbor(n.clone())
            });
        Frr::start(ns, cfg)
    }
    fn halt(self) -> anyhow::Result<()> {
        self.stop()
    }
}

impl Router for Bird {
    fn boot(ns: &Netns, neighbors: &[Neighbor]) -> anyhow::Result<Bird> {
        let cfg = neighbors
            .iter()
            .fold(BirdConfig::new("192.0.2.1".parse()?, ROUTER_AS), |c, n| {
                c.neighbor(n.clone())
            });
        Bird::start(ns, cfg)
    }
    fn halt(self) -> anyhow::Result<()> {
        self.stop()
    }
}

impl Router for Gobgp {
    fn boot(ns: &Netns, neighbors: &[Neighbor]) -> anyhow::Result<Gobgp> {
        // GoBGP waits 5-10 s before connecting out: let our speakers connect to it.
        let cfg = neighbors
            .iter()
            .fold(GobgpConfig::new("192.0.2.1".parse()?, ROUTER_AS), |c, n| {
                c.neighbor(n.clone().passive())
            });
        Gobgp::start(ns, cfg)
    }
    fn halt(self) -> anyhow::Result<()> {
        self.stop()
    }
}

/// The LAN: `r` (the router) and `n` speakers.
pub struct Topology {
    pub lan: Lan,
    pub router: Netns,
    pub speakers: Vec<Netns>,
}

pub fn topology(n: usize) -> anyhow::Result<Topology> {
    let mut lan = Lan::new()?;
    let router = Netns::new("r")?;
    lan.attach(&router, "eth0")?;
    router.addr("eth0", "192.0.2.1/24")?;
    router.addr("eth0", "2001:db8::1/64")?;
    let mut speakers = Vec::new();
    for i in 2..2 + n {
        let ns = Netns::new("s")?;
        lan.attach(&ns, "eth0")?;
        ns.addr("eth0", &format!("192.0.2.{i}/24"))?;
        ns.addr("eth0", &format!("2001:db8::{i}/64"))?;
        speakers.push(ns);
    }
    Ok(Topology {
        lan,
        router,
        speakers,
    })
}

/// The `announce` example binary: next to this test's target directory, built on demand.
pub fn announce_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test> -> target/<profile>/examples/announce
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no target dir")?;
    let bin = profile_dir.join("examples").join("announce");
    if !bin.exists() {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "-p", "edgelb-bgp", "--example", "announce"]);
        if release {
            cmd.arg("--release");
        }
        if let Some(target) = profile_dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let status = cmd.status().context("building the announce example")?;
        if !status.success() || !bin.exists() {
            bail!("cannot build {}", bin.display());
        }
    }
    Ok(bin)
}

/// The speaker process: stdin for route commands, stdout (JSON lines) in a log file.
pub struct Announcer {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    pub started: Instant,
}

impl Announcer {
    pub fn start(ns: &Netns, args: &[&str]) -> anyhow::Result<Announcer> {
        let bin = announce_binary()?;
        let n = LOGS.fetch_add(1, Ordering::Relaxed);
        let log =
            std::env::temp_dir().join(format!("edgelb-announce-{}-{n}.log", std::process::id()));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut child = ns
            .command(bin.to_str().context("binary path is not UTF-8")?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting announce {args:?}"))?;
        let stdin = child.stdin.take();
        Ok(Announcer {
            child: Some(child),
            stdin,
            log,
            started: Instant::now(),
        })
    }

    /// Sends one route command (`add PREFIX ...`, `del PREFIX`).
    pub fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The JSON events printed so far.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.output()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    pub fn has_event(&self, kind: &str) -> bool {
        self.events().iter().any(|e| e["event"] == kind)
    }

    pub fn wait_event(&self, kind: &str, timeout: Duration) -> anyhow::Result<serde_json::Value> {
        lab::wait_until(
            &format!("announce event {kind}"),
            timeout,
            Duration::from_millis(20),
            || Ok(self.events().into_iter().find(|e| e["event"] == kind)),
        )
        .with_context(|| format!("announce output:\n{}", self.output()))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn signal(&self, sig: i32) -> anyhow::Result<()> {
        let pid = self.pid().context("already reaped")?;
        lab::netns::host(&["kill", &format!("-{sig}"), &pid.to_string()]).map(|_| ())
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let child = self.child.as_mut().context("already reaped")?;
        lab::wait_until(
            "announce to exit",
            timeout,
            Duration::from_millis(10),
            || Ok(child.try_wait()?),
        )
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("announce output:\n{}", self.output());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Speaker arguments for one peer session with the router.
pub fn speaker_args(local_as: u32, me: &str, peers: &[&str], extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = vec![
        "--local-as".into(),
        local_as.to_string(),
        "--remote-as".into(),
        ROUTER_AS.to_string(),
        "--router-id".into(),
        me.into(),
        "--connect-retry".into(),
        "1".into(),
    ];
    for p in peers {
        v.push("--peer".into());
        v.push((*p).into());
    }
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

pub fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// eBGP and iBGP sessions come up; IPv4 /32 and IPv6 /128 arrive with exactly the
/// communities, large communities (and LOCAL_PREF on iBGP) we sent; withdrawals disappear.
pub fn attributes_and_withdrawal<R: Router>() -> anyhow::Result<()> {
    let t = topology(2)?;
    let router = R::boot(
        &t.router,
        &[
            Neighbor::new(ip("192.0.2.2"), SPEAKER_AS),
            Neighbor::new(ip("2001:db8::2"), SPEAKER_AS),
            Neighbor::new(ip("192.0.2.3"), ROUTER_AS),
            Neighbor::new(ip("2001:db8::3"), ROUTER_AS),
        ],
    )?;
    let ebgp_args = speaker_args(
        SPEAKER_AS,
        "192.0.2.2",
        &["192.0.2.1", "2001:db8::1"],
        &["--hold", "9"],
    );
    let mut ebgp = Announcer::start(&t.speakers[0], &refs(&ebgp_args))?;
    let ibgp_args = speaker_args(
        ROUTER_AS,
        "192.0.2.3",
        &["192.0.2.1", "2001:db8::1"],
        &["--hold", "9"],
    );
    let mut ibgp = Announcer::start(&t.speakers[1], &refs(&ibgp_args))?;
    for a in ["192.0.2.2", "2001:db8::2", "192.0.2.3", "2001:db8::3"] {
        router.wait_established(ip(a), SESSION)?;
    }
    eprintln!(
        "{}: 4 sessions Established {:?} after start",
        router.kind(),
        ebgp.started.elapsed()
    );

    ebgp.send("add 203.0.113.10/32 community=65002:10,65002:11 large=65002:1:2")?;
    ebgp.send("add 2001:db8:ff::10/128 community=65002:20 large=65002:3:4")?;
    ibgp.send("add 203.0.113.20/32 local-pref=250 community=65001:5 large=65001:6:7")?;
    ibgp.send("add 2001:db8:ff::20/128 local-pref=300 community=65001:8 large=65001:9:10")?;

    let r = router.wait_route("203.0.113.10/32", ROUTE)?;
    assert_eq!(r.as_path, vec![SPEAKER_AS], "{r:?}");
    assert_eq!(r.next_hop, Some(ip("192.0.2.2")), "{r:?}");
    assert_eq!(r.communities, vec!["65002:10", "65002:11"], "{r:?}");
    assert_eq!(r.large_communities, vec!["65002:1:2"], "{r:?}");
    assert_eq!(r.med, None, "{r:?}");
    let r = router.wait_route("2001:db8:ff::10/128", ROUTE)?;
    assert_eq!(r.as_path, vec![SPEAKER_AS], "{r:?}");
    assert_eq!(r.next_hop, Some(ip("2001:db8::2")), "{r:?}");
    assert_eq!(r.communities, vec!["65002:20"], "{r:?}");
    assert_eq!(r.large_communities, vec!["65002:3:4"], "{r:?}");
    let r = router.wait_route("203.0.113.20/32", ROUTE)?;
    assert!(r.as_path.is_empty(), "{r:?}");
    assert_eq!(r.local_pref, Some(250), "{r:?}");
    assert_eq!(r.next_hop, Some(ip("192.0.2.3")), "{r:?}");
    assert_eq!(r.communities, vec!["65001:5"], "{r:?}");
    assert_eq!(r.large_communities, vec!["65001:6:7"], "{r:?}");
    let r = router.wait_route("2001:db8:ff::20/128", ROUTE)?;
    assert_eq!(r.local_pref, Some(300), "{r:?}");
    assert_eq!(r.next_hop, Some(ip("2001:db8::3")), "{r:?}");
    assert_eq!(r.communities, vec!["65001:8"], "{r:?}");
    assert_eq!(r.large_communities, vec!["65001:9:10"], "{r:?}");

    let start = Instant::now();
    ebgp.send("del 203.0.113.10/32")?;
    ebgp.send("del 2001:db8:ff::10/128")?;
    ibgp.send("del 2001:db8:ff::20/128")?;
    router.wait_no_route("203.0.113.10/32", ROUTE)?;
    router.wait_no_route("2001:db8:ff::10/128", ROUTE)?;
    router.wait_no_route("2001:db8:ff::20/128", ROUTE)?;
    eprintln!(
        "{}: withdrawals gone after {:?}",
        router.kind(),
        start.elapsed()
    );
    // The untouched route stays, and the sessions were never reset.
    router.wait_route("203.0.113.20/32", ROUTE)?;
    for s in [&ebgp, &ibgp] {
        assert!(!s.has_event("down"), "a session went down:\n{}", s.output());
    }
    Ok(())
}

/// An MD5 session (RFC 2385) comes up with the right password and stays down with a wrong one.
pub fn md5<R: Router>() -> anyhow::Result<()> {
    let t = topology(2)?;
    let router = R::boot(
        &t.router,
        &[
            Neighbor::new(ip("192.0.2.2"), SPEAKER_AS).password("edgelb-md5"),
            Neighbor::new(ip("192.0.2.3"), SPEAKER_AS).password("edgelb-md5"),
        ],
    )?;
    let good = Announcer::start(
        &t.speakers[0],
        &refs(&speaker_args(
            SPEAKER_AS,
            "192.0.2.2",
            &["192.0.2.1"],
            &["--password", "edgelb-md5", "--count", "1"],
        )),
    )?;
    let bad = Announcer::start(
        &t.speakers[1],
        &refs(&speaker_args(
            SPEAKER_AS,
            "192.0.2.3",
            &["192.0.2.1"],
            &["--password", "wrong", "--count", "1"],
        )),
    )?;
    router.wait_established(ip("192.0.2.2"), SESSION)?;
    good.wait_event("established", SESSION)?;
    router.wait_route("198.18.0.0/32", ROUTE)?;
    // Give the wrong key several connect attempts (connect retry 1 s, doubling).
    std::thread::sleep(Duration::from_secs(8));
    let state = router
        .neighbor_state(ip("192.0.2.3"))
        .unwrap_or_else(|e| format!("{e}"));
    assert_ne!(
        state,
        lab::router::ESTABLISHED,
        "wrong MD5 password came up"
    );
    assert!(!bad.has_event("established"), "{}", bad.output());
    eprintln!(
        "{}: MD5 right password Established, wrong password stays {state}",
        router.kind()
    );
    Ok(())
}

/// SIGTERM: Cease / Administrative Shutdown removes the routes at once (printed). SIGKILL: the
/// routes go when the TCP connection or the hold time (3 s) ends. A frozen speaker: the hold
/// time.
pub fn sigterm_and_sigkill<R: Router>() -> anyhow::Result<()> {
    let t = topology(1)?;
    let router = R::boot(
        &t.router,
        &[Neighbor::new(ip("192.0.2.2"), SPEAKER_AS).hold_time(3)],
    )?;
    let args = speaker_args(
        SPEAKER_AS,
        "192.0.2.2",
        &["192.0.2.1"],
        &["--hold", "3", "--count", "100"],
    );

    let mut s = Announcer::start(&t.speakers[0], &refs(&args))?;
    router.wait_route("198.18.0.99/32", SESSION)?;
    let start = Instant::now();
    s.signal(libc::SIGTERM)?;
    router.wait_no_route("198.18.0.0/32", ROUTE)?;
    let term = start.elapsed();
    s.wait_exit(Duration::from_secs(5))?;
    let shutdown = s.wait_event("shutdown", Duration::from_secs(1))?;
    eprintln!(
        "{}: SIGTERM -> routes gone at the router after {:?} (speaker shutdown took {} ms)",
        router.kind(),
        term,
        shutdown["took_ms"]
    );
    assert!(
        term < Duration::from_secs(3),
        "SIGTERM took {term:?} to remove the routes"
    );

    let s = Announcer::start(&t.speakers[0], &refs(&args))?;
    router.wait_route("198.18.0.99/32", SESSION)?;
    let start = Instant::now();
    s.signal(libc::SIGKILL)?;
    router.wait_no_route("198.18.0.0/32", ROUTE)?;
    let kill = start.elapsed();
    eprintln!(
        "{}: SIGKILL -> routes gone at the router after {kill:?} (hold time 3 s)",
        router.kind()
    );
    assert!(
        kill < Duration::from_secs(3 + 3),
        "SIGKILL took {kill:?} to remove the routes"
    );
    drop(s);

    // SIGKILL lets the kernel close the connection; a frozen speaker (SIGSTOP) keeps it open
    // and silent, so only the router's hold timer (3 s) can remove the routes.
    let s = Announcer::start(&t.speakers[0], &refs(&args))?;
    router.wait_route("198.18.0.99/32", SESSION)?;
    let start = Instant::now();
    s.signal(libc::SIGSTOP)?;
    router.wait_no_route("198.18.0.0/32", ROUTE)?;
    let silent = start.elapsed();
    eprintln!(
        "{}: frozen speaker -> routes gone at the router after {silent:?} (hold time 3 s)",
        router.kind()
    );
    assert!(
        silent >= Duration::from_millis(1500),
        "routes went before any hold timer could expire: {silent:?}"
    );
    assert!(
        silent < Duration::from_secs(3 + 4),
        "hold time 3 s, routes stayed {silent:?}"
    );
    let _ = s.signal(libc::SIGCONT);
    Ok(())
}

/// Restarting the router brings the session and every route back without help.
pub fn router_restart<R: Router>() -> anyhow::Result<()> {
    let t = topology(1)?;
    let neighbors = [Neighbor::new(ip("192.0.2.2"), SPEAKER_AS)];
    let router = R::boot(&t.router, &neighbors)?;
    let args = speaker_args(
        SPEAKER_AS,
        "192.0.2.2",
        &["192.0.2.1"],
        &["--count", "50", "--listen", "[::]:179"],
    );
    let s = Announcer::start(&t.speakers[0], &refs(&args))?;
    router.wait_route("198.18.0.49/32", SESSION)?;
    router.halt()?;
    let start = Instant::now();
    let router = R::boot(&t.router, &neighbors)?;
    router.wait_established(ip("192.0.2.2"), SESSION)?;
    router.wait_route("198.18.0.49/32", SESSION)?;
    router.wait_route("198.18.0.0/32", ROUTE)?;
    eprintln!(
        "{}: after restart, session and routes back in {:?}",
        router.kind(),
        start.elapsed()
    );
    let ups = s
        .events()
        .iter()
        .filter(|e| e["event"] == "established")
        .count();
    assert!(ups >= 2, "expected a second Established:\n{}", s.output());
    Ok(())
}

//! Membership across real links: three speakers in three network namespaces
//! on one LAN (a bridge). Cutting one speaker's link makes the others
//! declare it down, and the cut speaker loses its L2 quorum; restoring the
//! link brings it back as a new identity.
//!
//! Each speaker runs on its own thread that entered its namespace
//! (`setns`), with its own current-thread tokio runtime, so its UDP socket
//! lives in that namespace.

use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use edgelb_daemon::election::{may_own_l2, InterfaceFacts};
use edgelb_daemon::membership::{
    GossipKey, Health, Keyring, Membership, MembershipConfig, MembershipEvent, MembershipHandle,
    Timings,
};
use edgelb_tests::lab::{self, wait_until, Lan, Netns};
use tokio::sync::oneshot;

const PORT: u16 = 7946;

struct Speaker {
    handle: Option<MembershipHandle>,
    events: tokio::sync::mpsc::Receiver<MembershipEvent>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Speaker {
    fn handle(&self) -> anyhow::Result<&MembershipHandle> {
        self.handle.as_ref().context("speaker already stopped")
    }

    fn live_nodes(&self) -> anyhow::Result<Vec<String>> {
        let mut v: Vec<String> = self
            .handle()?
            .members()
            .into_iter()
            .filter(|m| m.health != Health::Down)
            .map(|m| m.id.node)
            .collect();
        v.sort();
        Ok(v)
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        self.handle.take();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start_in(ns: &Netns, node: &str, addr: SocketAddr, seed: SocketAddr) -> anyhow::Result<Speaker> {
    let path = format!("/run/netns/{}", ns.name());
    let node = node.to_string();
    let (ready_tx, ready_rx) = std_mpsc::channel();
    let (stop, stop_rx) = oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let result = (|| -> anyhow::Result<_> {
            let f = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("entering {path}"))?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(rt)
        })();
        let rt = match result {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        rt.block_on(async move {
            let keys = Keyring::new(GossipKey::new(1, vec![0x5a; 32])?, vec![])?;
            let config = MembershipConfig {
                node,
                bind: addr,
                advertise: addr,
                seeds: vec![seed],
                keys,
                timings: Timings::lan(3),
                interfaces: vec![InterfaceFacts {
                    name: "eth0".into(),
                    up: true,
                    subnets: vec!["192.0.2.0/24".parse()?],
                }],
                generation: None,
                own_thread: true,
            };
            let started = Membership::start(config).await;
            match started {
                Ok((handle, events)) => {
                    let _ = ready_tx.send(Ok((handle, events)));
                    // Drive the membership task until the test is done.
                    let _ = stop_rx.await;
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                }
            }
            anyhow::Ok(())
        })
        .ok();
    });
    let (handle, events) = ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("speaker thread did not report")??;
    Ok(Speaker {
        handle: Some(handle),
        events,
        stop: Some(stop),
        thread: Some(thread),
    })
}

#[test]
fn cutting_a_link_fails_the_member_over_and_restoring_it_rejoins() -> anyhow::Result<()> {
    if !lab::enabled("membership_netns") {
        return Ok(());
    }
    let mut lan = Lan::new()?;
    let mut namespaces = Vec::new();
    let mut ports = Vec::new();
    for i in 1..=3u8 {
        let ns = Netns::new("mb")?;
        ports.push(lan.attach(&ns, "eth0")?);
        ns.addr("eth0", &format!("192.0.2.{i}/24"))?;
        namespaces.push(ns);
    }
    let addr = |i: u8| -> SocketAddr { SocketAddr::from(([192, 0, 2, i], PORT)) };
    let mut speakers = Vec::new();
    for (i, ns) in namespaces.iter().enumerate() {
        let n = i as u8 + 1;
        speakers.push(start_in(ns, &format!("node-{n}"), addr(n), addr(1))?);
    }
    let all: Vec<String> = (1..=3).map(|n| format!("node-{n}")).collect();
    let t0 = Instant::now();
    wait_until(
        "three speakers to converge",
        Duration::from_secs(15),
        Duration::from_millis(20),
        || {
            for s in &speakers {
                if s.live_nodes()? != all {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )?;
    eprintln!("converged over the LAN in {:?}", t0.elapsed());
    let old_generation = speakers[2].handle()?.local_id().generation;

    // Cut node-3's link at the switch.
    let cut = Instant::now();
    lan.switch().ip(&["link", "set", &ports[2], "down"])?;
    let majority = vec!["node-1".to_string(), "node-2".into()];
    wait_until(
        "node-1 and node-2 to declare node-3 down",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || {
            Ok(
                (speakers[0].live_nodes()? == majority && speakers[1].live_nodes()? == majority)
                    .then_some(()),
            )
        },
    )?;
    let detected = cut.elapsed();
    wait_until(
        "node-3 to lose its L2 quorum",
        Duration::from_secs(5),
        Duration::from_millis(10),
        || Ok((!may_own_l2(&speakers[2].handle()?.quorum(false))).then_some(())),
    )?;
    let quorum_lost = cut.elapsed();
    eprintln!("link cut: majority declared node-3 down after {detected:?}; node-3 stopped owning L2 after {quorum_lost:?}");
    anyhow::ensure!(
        may_own_l2(&speakers[0].handle()?.quorum(false)),
        "the majority must keep L2"
    );

    // Restore the link: node-3 comes back under a new generation.
    let healed = Instant::now();
    lan.switch().ip(&["link", "set", &ports[2], "up"])?;
    wait_until(
        "node-3 to rejoin",
        Duration::from_secs(15),
        Duration::from_millis(20),
        || {
            for s in &speakers {
                if s.live_nodes()? != all {
                    return Ok(None);
                }
            }
            Ok(Some(()))
        },
    )?;
    eprintln!(
        "link restored: all three live again after {:?}",
        healed.elapsed()
    );
    // Healing must not fail the majority over: node-3 dropped its stale
    // "down" verdicts about node-1 and node-2 when it found itself alone, so
    // no speaker declared them down (a silent identity renewal is allowed).
    for s in speakers.iter_mut().take(2) {
        while let Ok(event) = s.events.try_recv() {
            if let MembershipEvent::MemberDown { id, .. } = &event {
                anyhow::ensure!(id.node == "node-3", "the heal failed {} over", id.node);
            }
        }
    }
    let back = speakers[0]
        .handle()?
        .members()
        .into_iter()
        .find(|m| m.id.node == "node-3" && m.health != Health::Down)
        .context("node-3 live")?;
    anyhow::ensure!(
        back.id.generation > old_generation,
        "node-3 must come back as a new identity"
    );
    Ok(())
}

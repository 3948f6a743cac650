//! BFD Echo end to end through the daemon: a `BFDProfile` with `echoMode` named by a
//! `BGPPeer`, the real `edgelb-speaker` (standalone) on a node, FRR (zebra, bfdd, bgpd) on
//! the router accepting Echo. Control packets run at 3 × 1 s, Echo at 3 × 100 ms. When the
//! router stops forwarding (Control packets still flow: they are addressed to the routers
//! themselves), only Echo notices: the route leaves the router well inside a second.
mod speaker_support;

use std::time::{Duration, Instant};

use anyhow::Context;
use edgelb_tests::lab::frr::BfdProfile;
use edgelb_tests::lab::{
    self, netns::veth, wait_until, BgpRouter, Frr, FrrConfig, Neighbor, Netns,
};
use speaker_support::{cluster_yaml, write_atomic, Dir, SpeakerProc, Svc};

const NODE: &str = "192.0.2.10";
const ROUTER: &str = "192.0.2.1";
const PREFIX: &str = "198.51.100.10/32";

fn route_at(frr: &Frr) -> anyhow::Result<bool> {
    let out = frr.vtysh(&format!("show bgp ipv4 unicast {PREFIX} json"))?;
    let v: serde_json::Value = serde_json::from_str(&out).context("FRR prefix JSON")?;
    Ok(v["paths"].as_array().is_some_and(|p| !p.is_empty()))
}

#[test]
fn echo_mode_profile_detects_a_router_that_stops_forwarding() -> anyhow::Result<()> {
    if !lab::enabled("speaker_bfd_echo") {
        return Ok(());
    }
    let dir = Dir::new("speaker-echo")?;
    let router = Netns::new("rt")?;
    let node = Netns::new("n")?;
    veth(&router, "eth0", &node, "eth0")?;
    router.addr("eth0", &format!("{ROUTER}/24"))?;
    router.sysctl("net.ipv4.ip_forward", "1")?;
    node.addr("eth0", &format!("{NODE}/24"))?;
    let cfg = FrrConfig::new(ROUTER.parse()?, 64500)
        .neighbor(Neighbor::new(NODE.parse()?, 64512).hold_time(9));
    let frr = Frr::start_with_bfd_profile(&router, cfg, NODE.parse()?, &BfdProfile::echo())?;
    let peers = format!(
        "---\napiVersion: edgelb.io/v1alpha1\nkind: BFDProfile\n\
         metadata: {{name: echo, namespace: edgelb-system}}\n\
         spec: {{transmitInterval: 1000, receiveInterval: 1000, detectMultiplier: 3, echoMode: true, echoInterval: 100}}\n\
         ---\napiVersion: edgelb.io/v1alpha1\nkind: BGPPeer\n\
         metadata: {{name: router, namespace: edgelb-system}}\n\
         spec: {{myASN: 64512, peerASN: 64500, peerAddress: \"{ROUTER}\", holdTime: 9s, bfdProfile: echo}}\n\
         ---\napiVersion: edgelb.io/v1alpha1\nkind: BGPAdvertisement\n\
         metadata: {{name: all, namespace: edgelb-system}}\nspec: {{}}\n"
    );
    let file = dir.path("cluster.yaml");
    write_atomic(
        &file,
        &cluster_yaml(
            &[("node-0", NODE)],
            "198.51.100.10-198.51.100.19",
            &[Svc {
                name: "web",
                ip: "198.51.100.10",
                local: false,
                endpoints: vec!["node-0"],
            }],
            &peers,
        ),
    )?;
    let speaker = SpeakerProc::start(&node, "node-0", &file, dir.path("speaker.log"), &[])?;
    let r = (|| -> anyhow::Result<()> {
        wait_until(
            "the route at the router",
            Duration::from_secs(40),
            Duration::from_millis(50),
            || Ok(route_at(&frr)?.then_some(())),
        )?;
        wait_until(
            "the speaker's BFD Echo running",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || Ok(speaker.logs().contains("BFD Echo running").then_some(())),
        )?;
        std::thread::sleep(Duration::from_millis(500));
        let start = Instant::now();
        router.sysctl("net.ipv4.ip_forward", "0")?;
        wait_until(
            "the route to leave the router",
            Duration::from_secs(10),
            Duration::from_millis(20),
            || Ok((!route_at(&frr)?).then_some(())),
        )?;
        let took = start.elapsed();
        lab::figure("bfd_interop", &format!(
            "bfd echo (edgelb-speaker, BFDProfile echoMode, FRR bfdd): router stopped forwarding -> route withdrawn after {took:?} (Echo 3 x 100 ms, Control 3 x 1 s, hold 9 s; load {})",
            lab::load()
        ));
        anyhow::ensure!(
            took < Duration::from_millis(2500),
            "Echo should detect within ~0.3 s; took {took:?}"
        );
        let log = speaker.logs();
        anyhow::ensure!(
            log.contains("echo function failed"),
            "the speaker's BFD did not go down on Echo:\n{}",
            lab::router::tail(&log, 30)
        );
        Ok(())
    })();
    if r.is_err() {
        eprintln!(
            "speaker log:\n{}\nfrr:\n{}",
            lab::router::tail(&speaker.logs(), 40),
            lab::router::tail(&frr.logs(), 30)
        );
    }
    r
}

//! End to end in namespaces: a client's TCP connections and UDP datagrams go to the EIP of
//! an emulated ENS load balancer, which forwards them by weight to the backends' node ports
//! in another namespace (client → cloud load balancer → node).
//!
//! ```text
//!  ns "cld": client, EIP 10.98.0.x and LB 10.99.0.x (local routes), emulator's data plane
//!     c0 10.0.1.1/24 ──veth── n0 10.0.1.2/24 + 10.0.1.3/24  ns "nod": node ports 30080, 30053
//! ```

#![allow(clippy::unwrap_used)]

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgelb_cloud::plan::TrafficPolicy;
use edgelb_cloud::provider::{ConvergeOptions, LoadBalancerProvider};
use edgelb_tests::lab::{self, netns::veth, Netns};
use support::*;

/// Runs `f` on a thread inside namespace `ns` and returns its result.
fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

/// Node-port servers in `ns` until `stop`: TCP answers with the address it was reached on
/// (which instance took it), UDP echoes with a prefix.
fn node_servers(ns: &str, stop: Arc<AtomicBool>) {
    // One UDP socket per instance address: a reply from a socket bound to 0.0.0.0 would leave
    // from the interface's primary address and miss the flow of the other instance.
    let (tcp, udps) = in_ns(ns, || {
        let t = TcpListener::bind("0.0.0.0:30080").unwrap();
        let u: Vec<UdpSocket> = ["10.0.1.2:30053", "10.0.1.3:30053"]
            .into_iter()
            .map(|a| UdpSocket::bind(a).unwrap())
            .collect();
        (t, u)
    });
    tcp.set_nonblocking(true).unwrap();
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        while !stop2.load(Ordering::Relaxed) {
            match tcp.accept() {
                Ok((mut s, _)) => {
                    let local = s.local_addr().unwrap().ip().to_string();
                    let _ = s.write_all(local.as_bytes());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    for udp in udps {
        let stop = stop.clone();
        udp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, peer)) = udp.recv_from(&mut buf) {
                    let mut reply = b"udp:".to_vec();
                    reply.extend_from_slice(&buf[..n]);
                    let _ = udp.send_to(&reply, peer);
                }
            }
        });
    }
}

/// One TCP exchange from inside `ns`: what the backend said, or the error.
fn tcp_ask(ns: &str, to: SocketAddr) -> Result<String, String> {
    in_ns(ns, move || {
        let mut s =
            TcpStream::connect_timeout(&to, Duration::from_secs(3)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    })
}

fn udp_ask(ns: &str, to: SocketAddr) -> Result<String, String> {
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .map_err(|e| e.to_string())?;
        s.send_to(b"ping", to).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        let n = s.recv(&mut buf).map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&buf[..n]).to_string())
    })
}

#[tokio::test]
async fn client_traffic_goes_through_the_emulated_load_balancer_to_the_node_ports() {
    if !lab::enabled("client_traffic_goes_through_the_emulated_load_balancer_to_the_node_ports") {
        return;
    }
    let cloud = Netns::new("cld").unwrap();
    let node = Netns::new("nod").unwrap();
    veth(&cloud, "c0", &node, "n0").unwrap();
    cloud.addr("c0", "10.0.1.1/24").unwrap();
    node.addr("n0", "10.0.1.2/24").unwrap();
    node.addr("n0", "10.0.1.3/24").unwrap();
    for pool in ["10.99.0.0/24", "10.98.0.0/24"] {
        cloud
            .ip(&["route", "add", "local", pool, "dev", "lo"])
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    node_servers(node.name(), stop.clone());

    let emu = Emulator::start(&["--dataplane-netns", cloud.name()]);
    emu.register(&[("i-n1", "10.0.1.2"), ("i-n2", "10.0.1.3")]);
    let p = emu.provider();
    // Local: two endpoints on n1, one on n2 -> weights 100 and 50.
    let mut i = input("web", &[("n1", "i-n1"), ("n2", "i-n2")]);
    i.traffic_policy = TrafficPolicy::Local;
    i.nodes[0].ready_endpoints = 2;
    let d = desired(&i);
    let opts = ConvergeOptions {
        max_rounds: 40,
        poll: Duration::from_millis(60),
    };
    let r = tokio::time::timeout(Duration::from_secs(30), p.ensure(&d, &opts))
        .await
        .unwrap()
        .unwrap();
    assert!(r.converged, "{r:?}");
    let eip: std::net::IpAddr = r.ingress.clone().unwrap().parse().unwrap();
    let ns = cloud.name().to_string();

    // The data plane picks the listener up within its 100 ms reconcile.
    let deadline = Instant::now() + Duration::from_secs(5);
    let first = loop {
        match tcp_ask(&ns, SocketAddr::new(eip, 80)) {
            Ok(s) => break s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("no answer through {eip}:80: {e}"),
        }
    };
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    *seen.entry(first).or_default() += 1;
    for _ in 0..39 {
        let answer = tcp_ask(&ns, SocketAddr::new(eip, 80))
            .unwrap_or_else(|e| panic!("a connection through {eip}:80: {e}"));
        *seen.entry(answer).or_default() += 1;
    }
    println!("40 TCP connections through {eip}:80 (weights 100/50): {seen:?}");
    assert_eq!(
        seen.keys().cloned().collect::<Vec<_>>(),
        ["10.0.1.2", "10.0.1.3"]
    );
    // Several flows (new source ports), so both instances' UDP paths are taken.
    for _ in 0..6 {
        assert_eq!(udp_ask(&ns, SocketAddr::new(eip, 53)).unwrap(), "udp:ping");
    }

    // The Service goes: the load balancer's address stops taking connections.
    tokio::time::timeout(Duration::from_secs(30), p.delete(&d.target, &opts))
        .await
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while tcp_ask(&ns, SocketAddr::new(eip, 80)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "{eip}:80 still answers after delete"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let leaks = emu.stop();
    assert_eq!(count(&leaks, "LoadBalancers"), 0);
}

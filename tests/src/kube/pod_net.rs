//! The API server's way to pods: its proxy subresources (`pods/NAME/proxy`, used by
//! `edgelbctl --node`) connect to a pod's IP, which lives in a network namespace the test
//! made and which the host namespace has no route to (and must not get one: tests never
//! touch the host's network).
//!
//! So the API server is started with an egress selector (`--egress-selector-config-file`,
//! the mechanism konnectivity uses on real clusters): its `cluster` traffic goes as HTTP
//! `CONNECT IP:PORT` over a Unix socket to this proxy, which dials the IP from inside the
//! namespace a test registered for it ([`PodNetwork::route`]), and refuses any other IP.
//! Everything else (etcd, the test's own clients) is unchanged.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use super::forward::in_netns;

type Routes = Arc<Mutex<BTreeMap<IpAddr, String>>>;

/// The proxy for the API server's `cluster` egress; stops on drop.
pub struct PodNetwork {
    socket: PathBuf,
    routes: Routes,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for PodNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodNetwork")
            .field("socket", &self.socket)
            .finish()
    }
}

/// A registered pod IP; unregistered on drop.
#[derive(Debug)]
pub struct PodRoute {
    ip: IpAddr,
    routes: Routes,
}

impl Drop for PodRoute {
    fn drop(&mut self) {
        if let Ok(mut r) = self.routes.lock() {
            r.remove(&self.ip);
        }
    }
}

/// The API server's egress selector configuration for a proxy on `socket`.
pub fn egress_config(socket: &Path) -> String {
    format!(
        "apiVersion: apiserver.k8s.io/v1beta1\nkind: EgressSelectorConfiguration\n\
         egressSelections:\n- name: cluster\n  connection:\n    proxyProtocol: HTTPConnect\n\
         \x20   transport:\n      uds:\n        udsName: {}\n",
        socket.display()
    )
}

/// Reads an HTTP request head (up to the blank line), at most 8 KiB.
fn read_head(s: &mut UnixStream) -> anyhow::Result<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(head.len() < 8192, "request head too long");
        if s.read(&mut b)? == 0 {
            anyhow::bail!("closed before the request head ended");
        }
        head.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// One `CONNECT`: dial the target from its namespace, answer, then splice.
fn serve(mut down: UnixStream, routes: Routes) -> anyhow::Result<()> {
    down.set_read_timeout(Some(Duration::from_secs(10)))?;
    let head = read_head(&mut down)?;
    let target = head
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("CONNECT "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|a| a.parse::<SocketAddr>().ok());
    let ns = target.and_then(|t| routes.lock().ok()?.get(&t.ip()).cloned());
    let (Some(target), Some(ns)) = (target, ns) else {
        down.write_all(b"HTTP/1.1 403 Forbidden\r\n\r\n")?;
        anyhow::bail!("refused: {:?}", head.lines().next());
    };
    let up = in_netns(&ns, move || {
        TcpStream::connect_timeout(&target, Duration::from_secs(5))
            .with_context(|| format!("connecting to {target}"))
    });
    let up = match up {
        Ok(up) => up,
        Err(e) => {
            down.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")?;
            return Err(e);
        }
    };
    down.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    down.set_read_timeout(None)?;
    let (mut d2, mut u2) = (down.try_clone()?, up.try_clone()?);
    std::thread::Builder::new()
        .name("pod-net-up".into())
        .spawn(move || {
            let _ = std::io::copy(&mut d2, &mut u2);
            let _ = u2.shutdown(Shutdown::Write);
        })?;
    let mut up = up;
    let _ = std::io::copy(&mut up, &mut down);
    let _ = down.shutdown(Shutdown::Write);
    Ok(())
}

impl PodNetwork {
    /// Listens on `socket` (a Unix socket path).
    pub fn start(socket: &Path) -> anyhow::Result<PodNetwork> {
        let _ = std::fs::remove_file(socket);
        let listener =
            UnixListener::bind(socket).with_context(|| format!("binding {}", socket.display()))?;
        listener.set_nonblocking(true)?;
        let routes: Routes = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (routes.clone(), stop.clone());
        std::thread::Builder::new()
            .name("pod-net".into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let r = r.clone();
                            let _ = s.set_nonblocking(false);
                            let _ = std::thread::Builder::new()
                                .name("pod-net-conn".into())
                                .spawn(move || {
                                    if let Err(e) = serve(s, r) {
                                        eprintln!("pod network: {e:#}");
                                    }
                                });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })?;
        Ok(PodNetwork {
            socket: socket.to_path_buf(),
            routes,
            stop,
        })
    }

    /// The Unix socket the API server dials.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Makes `ip` reachable for the API server, inside network namespace `netns`, until
    /// the returned route is dropped.
    pub fn route(&self, ip: IpAddr, netns: &str) -> PodRoute {
        if let Ok(mut r) = self.routes.lock() {
            r.insert(ip, netns.to_string());
        }
        PodRoute {
            ip,
            routes: self.routes.clone(),
        }
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.socket);
    }
}

//! The data plane: each Active load balancer's Running listeners take connections on its
//! address (and its EIP) inside a network namespace, and forward them by weight to the
//! backends' instance addresses on the listener's backend (node) port — TCP streams and
//! UDP flows.
//!
//! Sockets keep the namespace they were made in, so one thread that entered the namespace
//! makes every socket (listening and upstream) and the tokio runtime drives them anywhere.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::server::Emu;

enum Make {
    TcpListen(SocketAddr),
    UdpBind(SocketAddr),
    TcpConnect(SocketAddr),
}

enum Made {
    TcpListener(std::net::TcpListener),
    Udp(std::net::UdpSocket),
    Tcp(std::net::TcpStream),
}

/// Makes sockets inside one network namespace.
#[derive(Clone)]
pub struct Netns {
    tx: mpsc::Sender<(Make, oneshot::Sender<io::Result<Made>>)>,
}

impl Netns {
    /// Starts the socket-making thread in `/run/netns/<name>`.
    pub fn enter(name: &str) -> anyhow::Result<Netns> {
        let path = format!("/run/netns/{name}");
        let file =
            std::fs::File::open(&path).map_err(|e| anyhow::anyhow!("opening {path}: {e}"))?;
        let (tx, rx) = mpsc::channel::<(Make, oneshot::Sender<io::Result<Made>>)>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("netns-sockets".into())
            .spawn(move || {
                let entered = nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET);
                let _ = ready_tx.send(entered.map_err(|e| e.to_string()));
                if entered.is_err() {
                    return;
                }
                for (what, reply) in rx {
                    let made = match what {
                        Make::TcpListen(a) => std::net::TcpListener::bind(a).and_then(|l| {
                            l.set_nonblocking(true)?;
                            Ok(Made::TcpListener(l))
                        }),
                        Make::UdpBind(a) => std::net::UdpSocket::bind(a).and_then(|s| {
                            s.set_nonblocking(true)?;
                            Ok(Made::Udp(s))
                        }),
                        Make::TcpConnect(a) => {
                            std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2))
                                .and_then(|s| {
                                    s.set_nonblocking(true)?;
                                    Ok(Made::Tcp(s))
                                })
                        }
                    };
                    let _ = reply.send(made);
                }
            })?;
        ready_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("netns thread died"))?
            .map_err(|e| anyhow::anyhow!("entering {path}: {e}"))?;
        Ok(Netns { tx })
    }

    async fn make(&self, what: Make) -> io::Result<Made> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((what, reply))
            .map_err(|_| io::Error::other("netns thread gone"))?;
        rx.await
            .map_err(|_| io::Error::other("netns thread gone"))?
    }

    async fn tcp_listen(&self, a: SocketAddr) -> io::Result<TcpListener> {
        match self.make(Make::TcpListen(a)).await? {
            Made::TcpListener(l) => TcpListener::from_std(l),
            _ => Err(io::Error::other("wrong socket")),
        }
    }

    async fn udp_bind(&self, a: SocketAddr) -> io::Result<UdpSocket> {
        match self.make(Make::UdpBind(a)).await? {
            Made::Udp(s) => UdpSocket::from_std(s),
            _ => Err(io::Error::other("wrong socket")),
        }
    }

    async fn tcp_connect(&self, a: SocketAddr) -> io::Result<TcpStream> {
        match self.make(Make::TcpConnect(a)).await? {
            Made::Tcp(s) => TcpStream::from_std(s),
            _ => Err(io::Error::other("wrong socket")),
        }
    }
}

static ROLLS: AtomicU64 = AtomicU64::new(0);

fn roll() -> u64 {
    std::collections::hash_map::RandomState::new().hash_one(ROLLS.fetch_add(1, Ordering::Relaxed))
}

fn pick(emu: &Emu, lb: &str, proto: &str, port: u16) -> Option<SocketAddr> {
    let st = emu.state.lock().unwrap_or_else(|p| p.into_inner());
    st.pick_backend(lb, proto, port, roll())
        .map(|(ip, p)| SocketAddr::from((ip, p)))
}

type Key = (Ipv4Addr, String, u16);

/// Keeps one accept loop per forwarding entry until the process ends.
pub async fn run(emu: Arc<Emu>, ns: Netns) {
    let mut live: BTreeMap<Key, (String, JoinHandle<()>)> = BTreeMap::new();
    loop {
        let notified = emu.changed.notified();
        let want = {
            let mut st = emu.state.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            st.advance(now);
            st.forwarding(now)
        };
        live.retain(|k, (lb, task)| {
            let keep = want.get(k) == Some(lb);
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, lb) in want {
            if live.contains_key(&key) {
                continue;
            }
            let addr = SocketAddr::from((key.0, key.2));
            let task = match key.1.as_str() {
                "tcp" => match ns.tcp_listen(addr).await {
                    Ok(l) => tokio::spawn(tcp_loop(emu.clone(), ns.clone(), l, lb.clone(), key.2)),
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "cannot listen");
                        continue;
                    }
                },
                "udp" => match ns.udp_bind(addr).await {
                    Ok(s) => tokio::spawn(udp_loop(emu.clone(), ns.clone(), s, lb.clone(), key.2)),
                    Err(e) => {
                        tracing::warn!(%addr, error = %e, "cannot bind");
                        continue;
                    }
                },
                _ => continue,
            };
            tracing::info!(%addr, proto = %key.1, lb = %lb, "forwarding");
            live.insert(key, (lb, task));
        }
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

async fn tcp_loop(emu: Arc<Emu>, ns: Netns, listener: TcpListener, lb: String, port: u16) {
    loop {
        let Ok((mut client, peer)) = listener.accept().await else {
            continue;
        };
        let Some(backend) = pick(&emu, &lb, "tcp", port) else {
            tracing::debug!(%peer, lb, "no live backend; connection dropped");
            continue;
        };
        let ns = ns.clone();
        tokio::spawn(async move {
            match ns.tcp_connect(backend).await {
                Ok(mut upstream) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(e) => tracing::debug!(%backend, error = %e, "backend refused"),
            }
        });
    }
}

async fn udp_loop(emu: Arc<Emu>, ns: Netns, socket: UdpSocket, lb: String, port: u16) {
    let socket = Arc::new(socket);
    let mut flows: HashMap<SocketAddr, (Arc<UdpSocket>, Instant)> = HashMap::new();
    let mut buf = vec![0u8; 65_535];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        flows.retain(|_, (_, last)| last.elapsed() < Duration::from_secs(30));
        if let Some((up, last)) = flows.get_mut(&peer) {
            *last = Instant::now();
            let _ = up.send(&buf[..n]).await;
            continue;
        }
        let Some(backend) = pick(&emu, &lb, "udp", port) else {
            continue;
        };
        let Ok(up) = ns
            .udp_bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
            .await
        else {
            continue;
        };
        if up.connect(backend).await.is_err() {
            continue;
        }
        let up = Arc::new(up);
        let _ = up.send(&buf[..n]).await;
        let (reply_to, down) = (socket.clone(), up.clone());
        tokio::spawn(async move {
            let mut b = vec![0u8; 65_535];
            while let Ok(Ok(m)) =
                tokio::time::timeout(Duration::from_secs(30), down.recv(&mut b)).await
            {
                let _ = reply_to.send_to(&b[..m], peer).await;
            }
        });
        flows.insert(peer, (up, Instant::now()));
    }
}

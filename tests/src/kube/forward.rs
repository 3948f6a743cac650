//! A TCP forwarder from inside a node's network namespace to the API server on the host's
//! loopback, which a speaker in that namespace cannot reach otherwise.
//!
//! The listening socket is created by a thread that entered the namespace (`setns`); a
//! socket keeps the namespace it was made in, so the accept loop and the copying threads can
//! run anywhere. Upstream connections are opened by a thread that stayed in the host's
//! namespace.
//!
//! The forwarder can be made to misbehave, per node, as an API server can (issue 12's chaos
//! tests): [`Forwarder::freeze`] holds every byte in both directions while connections stay
//! open (a hung API server), [`Forwarder::set_latency`] delays each chunk, [`Forwarder::cut`]
//! closes every connection and refuses new ones (unreachable), [`Forwarder::restore`] undoes
//! all three.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use anyhow::Context;

/// Runs `f` on a new thread that entered network namespace `ns` (a name in `/run/netns`).
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering {path}"))?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
}

/// `GET path` over plain HTTP/1.0 to `addr` from inside namespace `ns`; (status, body).
pub fn http_get_in(ns: &str, addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let path = path.to_string();
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut buf = String::new();
        s.read_to_string(&mut buf)?;
        let status = buf
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("not an HTTP response: {buf:?}"))?;
        let body = buf.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        Ok((status, body.to_string()))
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Pass,
    Frozen,
    Cut,
}

struct State {
    mode: Mode,
    latency: Duration,
    conns: Vec<TcpStream>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
    accepted: AtomicUsize,
}

impl Shared {
    /// Blocks while frozen; false when the connection must end (cut or stopped).
    fn gate(&self) -> (bool, Duration) {
        let Ok(mut st) = self.state.lock() else {
            return (false, Duration::ZERO);
        };
        loop {
            if self.stop.load(Ordering::Relaxed) || st.mode == Mode::Cut {
                return (false, Duration::ZERO);
            }
            if st.mode == Mode::Pass {
                return (true, st.latency);
            }
            st = match self.changed.wait_timeout(st, Duration::from_millis(200)) {
                Ok((g, _)) => g,
                Err(_) => return (false, Duration::ZERO),
            };
        }
    }

    fn close_all(st: &mut State) {
        for c in st.conns.drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

/// A forwarder listening inside a namespace; stops (closing every connection) on drop.
pub struct Forwarder {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("addr", &self.addr)
            .finish()
    }
}

fn pump(shared: Arc<Shared>, mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let (go, latency) = shared.gate();
        if !go {
            break;
        }
        if !latency.is_zero() {
            std::thread::sleep(latency);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

impl Forwarder {
    /// Listens on `listen` inside namespace `ns` and forwards each connection to `upstream`
    /// (on the host).
    pub fn start(ns: &str, listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<Forwarder> {
        let listener = in_netns(ns, move || {
            let l = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
            l.set_nonblocking(true)?;
            Ok(l)
        })?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                mode: Mode::Pass,
                latency: Duration::ZERO,
                conns: Vec::new(),
            }),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
        });
        // Accepted connections go to a thread of the host namespace, which dials upstream.
        let (tx, rx) = mpsc::channel::<TcpStream>();
        let acc = shared.clone();
        std::thread::Builder::new()
            .name(format!("fwd-accept-{ns}"))
            .spawn(move || {
                while !acc.stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            let _ = s.set_nonblocking(false);
                            if tx.send(s).is_err() {
                                break;
                            }
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(20)),
                    }
                }
            })?;
        let dial = shared.clone();
        std::thread::Builder::new()
            .name(format!("fwd-dial-{ns}"))
            .spawn(move || {
                for down in rx {
                    dial.accepted.fetch_add(1, Ordering::Relaxed);
                    let cut = dial
                        .state
                        .lock()
                        .map(|s| s.mode == Mode::Cut)
                        .unwrap_or(true);
                    if cut || dial.stop.load(Ordering::Relaxed) {
                        let _ = down.shutdown(Shutdown::Both);
                        continue;
                    }
                    let Ok(up) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))
                    else {
                        let _ = down.shutdown(Shutdown::Both);
                        continue;
                    };
                    let _ = up.set_nodelay(true);
                    let _ = down.set_nodelay(true);
                    let clones = (
                        down.try_clone(),
                        up.try_clone(),
                        down.try_clone(),
                        up.try_clone(),
                    );
                    let (Ok(d2), Ok(u2), Ok(d3), Ok(u3)) = clones else {
                        continue;
                    };
                    if let Ok(mut st) = dial.state.lock() {
                        st.conns.push(d3);
                        st.conns.push(u3);
                        // Forget connections both of whose ends are closed.
                        st.conns.retain(|c| c.peer_addr().is_ok());
                    }
                    let s1 = dial.clone();
                    let s2 = dial.clone();
                    let _ = std::thread::Builder::new()
                        .name("fwd-up".into())
                        .spawn(move || pump(s1, down, up));
                    let _ = std::thread::Builder::new()
                        .name("fwd-down".into())
                        .spawn(move || pump(s2, u2, d2));
                }
            })?;
        Ok(Forwarder { addr, shared })
    }

    /// The address speakers in the namespace connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    fn set_mode(&self, mode: Mode) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.mode = mode;
            if mode == Mode::Cut {
                Shared::close_all(&mut st);
            }
        }
        self.shared.changed.notify_all();
    }

    /// Holds every byte in both directions; connections stay open (a hung API server).
    pub fn freeze(&self) {
        self.set_mode(Mode::Frozen);
    }

    /// Closes every connection and refuses new ones (an unreachable API server).
    pub fn cut(&self) {
        self.set_mode(Mode::Cut);
    }

    /// Delays every chunk in each direction by `latency` (zero: none).
    pub fn set_latency(&self, latency: Duration) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.latency = latency;
        }
    }

    /// Forwards normally again, without added latency.
    pub fn restore(&self) {
        self.set_latency(Duration::ZERO);
        self.set_mode(Mode::Pass);
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Ok(mut st) = self.shared.state.lock() {
            Shared::close_all(&mut st);
        }
        self.shared.changed.notify_all();
    }
}

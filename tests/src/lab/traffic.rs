//! Client traffic through the lab: a TCP server in one namespace and a client that opens
//! connections to it, one after another, from another namespace, recording each outcome.
//!
//! Both run on threads that entered their namespace (`setns` moves only the calling
//! thread); a socket keeps the namespace it was made in. No process is started, so there is
//! nothing to kill: dropping the guard stops the thread (bounded by the connect timeout).
use anyhow::Context;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Runs `f` on a new thread inside network namespace `ns` (a name under `/run/netns`).
fn spawn_in(
    ns: &str,
    f: impl FnOnce() -> anyhow::Result<()> + Send + 'static,
) -> JoinHandle<anyhow::Result<()>> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering {path}"))?;
        f()
    })
}

/// A TCP server on `addr` in a namespace: answers every connection with `reply` and closes.
pub struct TcpServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    addr: SocketAddr,
}

impl TcpServer {
    /// Listens on `addr` inside `ns` (the address must already be local there).
    pub fn start(ns: &str, addr: SocketAddr, reply: &str) -> anyhow::Result<TcpServer> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let reply = reply.as_bytes().to_vec();
        let flag = stop.clone();
        let thread = spawn_in(ns, move || {
            let listener = TcpListener::bind(addr);
            let listener = match listener {
                Ok(l) => {
                    let _ = ready_tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("binding {addr}: {e}")));
                    return Ok(());
                }
            };
            listener.set_nonblocking(true)?;
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.write_all(&reply);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            Ok(())
        });
        match ready_rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => anyhow::bail!("TCP server in {ns}: {e}"),
            Err(_) => anyhow::bail!("TCP server in {ns} did not start within 5 s"),
        }
        Ok(TcpServer {
            stop,
            thread: Some(thread),
            addr,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection attempt of a [`Prober`].
#[derive(Clone, Debug)]
pub struct Attempt {
    /// When it started (since the prober started).
    pub at: Duration,
    /// How long it took.
    pub took: Duration,
    /// `None`: connected and read the expected reply. `Some(why)`: failed.
    pub error: Option<String>,
}

/// A client opening one TCP connection after another to `target`, each with a bounded
/// connect and read, `every` apart; every outcome is kept.
pub struct Prober {
    stop: Arc<AtomicBool>,
    attempts: Arc<Mutex<Vec<Attempt>>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    /// When the prober started: [`Attempt::at`] counts from here.
    pub started: Instant,
}

impl Prober {
    /// Starts probing from inside `ns`; a connection counts as good when it reads `expect`.
    pub fn start(
        ns: &str,
        target: SocketAddr,
        expect: &str,
        every: Duration,
        timeout: Duration,
    ) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let started = Instant::now();
        let (flag, log) = (stop.clone(), attempts.clone());
        let expect = expect.as_bytes().to_vec();
        let thread = spawn_in(ns, move || {
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                let error = probe_once(target, &expect, timeout).err();
                let a = Attempt {
                    at: t.duration_since(started),
                    took: t.elapsed(),
                    error,
                };
                if let Ok(mut v) = log.lock() {
                    v.push(a);
                }
                std::thread::sleep(every.saturating_sub(t.elapsed()));
            }
            Ok(())
        });
        Prober {
            stop,
            attempts,
            thread: Some(thread),
            started,
        }
    }

    /// A copy of every attempt so far.
    pub fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Attempts that started in `[from, to)` (durations since [`Prober::started`]).
    pub fn window(&self, from: Duration, to: Duration) -> Window {
        Window::of(
            self.attempts()
                .into_iter()
                .filter(|a| a.at >= from && a.at < to)
                .collect(),
        )
    }

    /// Since [`Prober::started`], now.
    pub fn now(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the client and returns every attempt.
    pub fn stop(mut self) -> Vec<Attempt> {
        self.halt();
        self.attempts()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.halt();
    }
}

/// A connect, then read until `expect` or the end; all bounded by `timeout`.
fn probe_once(target: SocketAddr, expect: &[u8], timeout: Duration) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&target, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    s.read_to_end(&mut got).map_err(|e| e.to_string())?;
    if got != expect {
        return Err(format!(
            "read {:?}, want {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expect)
        ));
    }
    Ok(())
}

/// What a stretch of attempts says.
#[derive(Clone, Debug, Default)]
pub struct Window {
    pub attempts: usize,
    pub failed: usize,
    /// The longest the client went without a working connection: between the starts of two
    /// consecutive good connections, or from the last good one to the end of the last
    /// failed attempt.
    pub max_gap: Duration,
    /// The first few errors, for messages.
    pub errors: Vec<String>,
}

impl Window {
    fn of(attempts: Vec<Attempt>) -> Window {
        let mut w = Window {
            attempts: attempts.len(),
            ..Window::default()
        };
        let mut last_ok: Option<Duration> = attempts.first().map(|a| a.at);
        for a in &attempts {
            match &a.error {
                None => {
                    if let Some(prev) = last_ok {
                        w.max_gap = w.max_gap.max(a.at - prev);
                    }
                    last_ok = Some(a.at);
                }
                Some(e) => {
                    if let Some(prev) = last_ok {
                        w.max_gap = w.max_gap.max((a.at + a.took).saturating_sub(prev));
                    }
                    w.failed += 1;
                    if w.errors.len() < 5 {
                        w.errors.push(format!("at {:?}: {e}", a.at));
                    }
                }
            }
        }
        w
    }
}

impl std::fmt::Display for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} connections, {} failed, longest gap between good connections {:?}",
            self.attempts, self.failed, self.max_gap
        )
    }
}

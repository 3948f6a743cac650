//! The [`Speaker`]: peers added, changed and removed at run time, each with the whole set of
//! routes it should have; a shared listener for incoming connections; graceful shutdown
//! with Cease / Administrative Shutdown (RFC 8203) to every peer at once.
use crate::bfd::{Bfd, RuntimeConfig};
use crate::config::{ConfigError, PeerConfig, PeerKey, SpeakerConfig};
use crate::connection::{self, TransportError};
use crate::packet::iana::{cease_subcode, error_code};
use crate::packet::Notification;
use crate::peer::{PeerInputs, PeerTask, Stop};
use crate::rib_out::RouteTable;
use crate::status::{PeerEvent, PeerStatus};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tracing::Instrument;

/// How long [`Speaker::shutdown`] waits for every peer to flush its NOTIFICATION.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum SpeakerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error("peer {0} is not configured")]
    UnknownPeer(PeerKey),
}

/// A task handle that aborts the task when dropped, unless detached first.
struct AbortOnDrop(Option<JoinHandle<()>>);

impl AbortOnDrop {
    fn new(handle: JoinHandle<()>) -> AbortOnDrop {
        AbortOnDrop(Some(handle))
    }

    /// The handle, to await the task's own end.
    fn detach(mut self) -> Option<JoinHandle<()>> {
        self.0.take()
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

struct PeerHandle {
    config: watch::Sender<PeerConfig>,
    routes: watch::Sender<Arc<RouteTable>>,
    stop: watch::Sender<Option<Stop>>,
    status: Arc<Mutex<PeerStatus>>,
    task: AbortOnDrop,
}

type Dispatch = Arc<Mutex<HashMap<PeerKey, mpsc::Sender<tokio::net::TcpStream>>>>;

/// A BGP speaker announcing routes to many peers.
pub struct Speaker {
    config: SpeakerConfig,
    peers: HashMap<PeerKey, PeerHandle>,
    dispatch: Dispatch,
    listener: Option<Arc<TcpListener>>,
    _accept: Option<AbortOnDrop>,
    events: broadcast::Sender<PeerEvent>,
    /// BFD for the peers that ask for it; opens no socket until one does.
    bfd: Bfd,
}

impl Speaker {
    /// Starts the speaker (and its listener, when configured). Needs a tokio runtime.
    pub fn new(config: SpeakerConfig) -> Result<Speaker, SpeakerError> {
        let dispatch: Dispatch = Arc::new(Mutex::new(HashMap::new()));
        let (listener, accept) = match config.listen {
            Some(addr) => {
                let listener = Arc::new(connection::listen(addr)?);
                let task = tokio::spawn(accept_loop(listener.clone(), dispatch.clone()));
                (Some(listener), Some(AbortOnDrop::new(task)))
            }
            None => (None, None),
        };
        let (events, _) = broadcast::channel(1024);
        Ok(Speaker {
            config,
            peers: HashMap::new(),
            dispatch,
            listener,
            _accept: accept,
            events,
            bfd: Bfd::spawn(RuntimeConfig::default()),
        })
    }

    /// Where the listener listens (useful with port 0).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Events of every peer; slow receivers lose the oldest.
    pub fn subscribe(&self) -> broadcast::Receiver<PeerEvent> {
        self.events.subscribe()
    }

    /// Adds a peer, or changes one. A change of ASN, address, port or password
    /// ([`PeerConfig::needs_reset`]) restarts the session with Cease / Other Configuration
    /// Change (RFC 4486); any other change keeps it: TTL and GTSM apply to the live socket,
    /// OPEN contents (hold time, families, graceful restart) from the next connection on.
    pub fn set_peer(&mut self, cfg: PeerConfig) -> Result<(), SpeakerError> {
        cfg.validate()?;
        let key = cfg.address;
        if let Some(h) = self.peers.get(&key) {
            let old = h.config.borrow().clone();
            if !old.needs_reset(&cfg) {
                h.config.send_replace(cfg);
                return Ok(());
            }
            tracing::info!(peer = %key, "configuration change resets the session");
            let n = Notification::new(
                error_code::CEASE,
                cease_subcode::OTHER_CONFIGURATION_CHANGE,
                Vec::new(),
            );
            let routes = h.routes.borrow().clone();
            self.stop_peer(key, n);
            return self.start_peer(cfg, routes);
        }
        self.start_peer(cfg, Arc::new(RouteTable::new()))
    }

    fn start_peer(&mut self, cfg: PeerConfig, routes: Arc<RouteTable>) -> Result<(), SpeakerError> {
        let key = cfg.address;
        if let Some(l) = &self.listener {
            connection::set_listener_md5(l, &cfg, false)?;
        }
        let (config_tx, config_rx) = watch::channel(cfg.clone());
        let (routes_tx, routes_rx) = watch::channel(routes);
        let (stop_tx, stop_rx) = watch::channel(None);
        let (incoming_tx, incoming_rx) = mpsc::channel(4);
        let status = Arc::new(Mutex::new(PeerStatus::new(key, cfg.description.clone())));
        let inputs = PeerInputs {
            config: config_rx,
            routes: routes_rx,
            stop: stop_rx,
            incoming: incoming_rx,
            status: status.clone(),
            events: self.events.clone(),
            router_id: self.config.router_id,
            bfd: self.bfd.clone(),
        };
        let span = tracing::info_span!("peer", peer = %key);
        let task = tokio::spawn(PeerTask::new(cfg, inputs).run().instrument(span));
        if let Ok(mut d) = self.dispatch.lock() {
            d.insert(key, incoming_tx);
        }
        self.peers.insert(
            key,
            PeerHandle {
                config: config_tx,
                routes: routes_tx,
                stop: stop_tx,
                status,
                task: AbortOnDrop::new(task),
            },
        );
        Ok(())
    }

    /// Stops a peer's task with `n`; the task flushes it within a bound and ends by itself.
    fn stop_peer(&mut self, key: PeerKey, n: Notification) {
        if let Ok(mut d) = self.dispatch.lock() {
            d.remove(&key);
        }
        if let Some(h) = self.peers.remove(&key) {
            if let Some(l) = &self.listener {
                let cfg = h.config.borrow().clone();
                if cfg.password.is_some() {
                    let _ = connection::set_listener_md5(l, &cfg, true);
                }
            }
            h.stop.send_replace(Some(Stop::Notify(n)));
            // Let it finish on its own: detach instead of aborting.
            if let Some(mut handle) = h.task.detach() {
                tokio::spawn(async move {
                    if tokio::time::timeout(SHUTDOWN_TIMEOUT, &mut handle)
                        .await
                        .is_err()
                    {
                        tracing::warn!(peer = %key, "peer task did not stop in time");
                        handle.abort();
                    }
                });
            }
        }
    }

    /// Removes a peer: Cease / Peer De-configured (RFC 4486), other sessions untouched.
    pub fn remove_peer(&mut self, key: &PeerKey) -> Result<(), SpeakerError> {
        if !self.peers.contains_key(key) {
            return Err(SpeakerError::UnknownPeer(*key));
        }
        self.stop_peer(
            *key,
            Notification::new(
                error_code::CEASE,
                cease_subcode::PEER_DE_CONFIGURED,
                Vec::new(),
            ),
        );
        Ok(())
    }

    /// The whole set of routes `key` should have; only the difference is sent.
    pub fn set_routes(&self, key: &PeerKey, routes: RouteTable) -> Result<(), SpeakerError> {
        self.set_routes_shared(key, Arc::new(routes))
    }

    /// Like [`Speaker::set_routes`], sharing one table between peers.
    pub fn set_routes_shared(
        &self,
        key: &PeerKey,
        routes: Arc<RouteTable>,
    ) -> Result<(), SpeakerError> {
        let h = self.peers.get(key).ok_or(SpeakerError::UnknownPeer(*key))?;
        h.routes.send_replace(routes);
        Ok(())
    }

    /// A snapshot of every peer.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let now = Instant::now();
        let mut out: Vec<PeerStatus> = self
            .peers
            .values()
            .filter_map(|h| h.status.lock().ok().map(|s| s.clone()))
            .map(|mut s| {
                s.uptime = s.established_at.map(|at| now.saturating_duration_since(at));
                s
            })
            .collect();
        out.sort_by_key(|s| s.address);
        out
    }

    /// Sends Cease / Administrative Shutdown with `message` (RFC 8203) to every peer at
    /// once and waits, at most [`SHUTDOWN_TIMEOUT`], until each has flushed and closed.
    pub async fn shutdown(self, message: &str) {
        let n = Notification::admin_shutdown(message);
        self.stop_all(Stop::Notify(n)).await
    }

    /// A planned restart (RFC 4724 §4.1): to every peer that negotiated graceful restart the
    /// connection is closed without a NOTIFICATION, so it keeps our routes (marked stale) for
    /// the restart time we advertised; the others get Cease / Administrative Shutdown as
    /// with [`Speaker::shutdown`]. Bounded by [`SHUTDOWN_TIMEOUT`].
    pub async fn shutdown_for_restart(self) {
        self.stop_all(Stop::Restart).await
    }

    async fn stop_all(mut self, stop: Stop) {
        self._accept = None;
        let peers: Vec<PeerHandle> = self.peers.drain().map(|(_, h)| h).collect();
        for h in &peers {
            h.stop.send_replace(Some(stop.clone()));
        }
        let deadline = tokio::time::Instant::now() + SHUTDOWN_TIMEOUT;
        let handles: Vec<AbortOnDrop> = peers.into_iter().map(|h| h.task).collect();
        // A guard still unfinished at the deadline is dropped here, which aborts its task.
        for mut task in handles {
            if let Some(handle) = task.0.as_mut() {
                let _ = tokio::time::timeout_at(deadline, handle).await;
            }
        }
    }
}

/// Accepts connections and hands each to the peer with the remote address; closes the
/// others (RFC 4271 §8.2.1.2 lets an unconfigured peer's connection be refused).
async fn accept_loop(listener: Arc<TcpListener>, dispatch: Dispatch) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = connection::canonical(from.ip());
        let tx = dispatch.lock().ok().and_then(|d| d.get(&peer).cloned());
        match tx {
            Some(tx) => {
                if tx.try_send(stream).is_err() {
                    tracing::info!(%peer, "peer busy, connection dropped");
                }
            }
            None => tracing::info!(%peer, "connection from an unknown peer closed"),
        }
    }
}

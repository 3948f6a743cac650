//! One task per interface: it owns the socket, the timetable and the link state.
//!
//! ```text
//!   Announcer::set_owned ──watch(Owned)──► worker ──watch(version applied)──► set_owned
//!                                           │  ▲
//!                     frames (AF_PACKET) ◄──┘  └── link poll (RTM_GETLINK), timetable
//!   Announcer::stats ◄── Arc<Mutex<Record>> ◄── worker
//! ```
//! The worker reads the owned set from the watch channel for every frame, so an address
//! stops being answered the moment `set_owned` publishes a set without it.
use crate::frame::{self, GarpForm, ALL_NODES};
use crate::link::{self, LinkChange, LinkState};
use crate::respond;
use crate::schedule::Schedule;
use crate::socket::{Groups, PacketSocket};
use crate::stats::Record;
use crate::{Config, InterfaceError};
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;
use tracing::{debug, info, warn};

const RECV_BUFFER: usize = 4096;

/// The worker wakes at least every link poll (100 ms); a gap this long between two wakes
/// means the process did not run (frozen, stopped, starved) and may have been replaced.
const STALL_LIMIT: Duration = Duration::from_millis(250);

/// After a stall the worker answers and announces nothing for this long, or until its
/// owner confirms the owned set (any `set_owned`): the requests queued meanwhile are stale,
/// and another node may answer for these addresses now. A speaker that stalled releases
/// and re-owns its addresses within this time ([`crate::Announcer::set_owned`]).
const STALL_SILENCE: Duration = Duration::from_millis(300);

/// The whole set owned on one interface, versioned so `set_owned` knows when it applied.
#[derive(Clone, Debug, Default)]
pub(crate) struct Owned {
    pub version: u64,
    pub ips: Arc<BTreeSet<IpAddr>>,
    /// Answer for `ips` but announce nothing more (a planned handoff: the next owner's
    /// announcements must be the last word the clients hear).
    pub quiet: bool,
}

pub(crate) struct Worker {
    pub name: String,
    pub config: Arc<Config>,
    pub owned_rx: watch::Receiver<Owned>,
    pub ack_tx: watch::Sender<u64>,
    pub record: Arc<Mutex<Record>>,
    pub link: Option<LinkState>,
    /// The netlink socket the link poll asks on (one request per poll, for this name).
    pub links: link::Links,
    pub socket: Option<PacketSocket>,
    pub groups: Option<Groups>,
    pub schedule: Schedule,
    /// The set the timetable and groups were last brought in line with (shared with the
    /// published one: no copy of thousands of addresses per change).
    pub applied: Arc<BTreeSet<IpAddr>>,
    /// When the loop last handled an event (a long gap is a stall, [`STALL_LIMIT`]).
    pub last_event: Instant,
    /// Silent after a stall until then, unless the owned set is confirmed first.
    pub silent_until: Option<Instant>,
}

enum Event {
    Owned(bool),
    Due,
    Frame(std::io::Result<(usize, u8)>),
    Poll,
}

impl Worker {
    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        // A poisoned lock only means another holder panicked mid-update of counters.
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn run(mut self) {
        self.poll_link().await;
        self.apply_owned().await;
        let mut buf = vec![0u8; RECV_BUFFER];
        let mut poll = tokio::time::interval(self.config.link_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_due = self
                .schedule
                .next_due()
                .map(|at| self.silent_until.map_or(at, |s| at.max(s)));
            let event = {
                let socket = self.socket.as_ref();
                let buf = &mut buf;
                let recv = async move {
                    match socket {
                        Some(s) => s.recv(buf).await,
                        None => std::future::pending().await,
                    }
                };
                let due = async {
                    match next_due {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                // Biased, with frames last: a flood of questions must not starve the
                // timetable, the link poll or a new owned set.
                tokio::select! {
                    biased;
                    r = self.owned_rx.changed() => Event::Owned(r.is_ok()),
                    () = due => Event::Due,
                    _ = poll.tick() => Event::Poll,
                    r = recv => Event::Frame(r),
                }
            };
            let now = Instant::now();
            let gap = now.saturating_duration_since(self.last_event);
            self.last_event = now;
            if gap > STALL_LIMIT {
                self.on_stall(gap, now);
                if matches!(event, Event::Frame(Ok(_))) {
                    continue; // queued during the stall: stale
                }
            }
            if self.silent_until.is_some_and(|t| t <= now) {
                self.silent_until = None;
            }
            match event {
                Event::Owned(true) => {
                    self.silent_until = None;
                    self.apply_owned().await
                }
                Event::Owned(false) => return,
                Event::Due => self.send_due().await,
                Event::Frame(Ok((len, pkttype))) => {
                    let frame = buf.get(..len).unwrap_or(&buf[..]);
                    self.on_frame(frame, pkttype).await;
                }
                Event::Frame(Err(e)) => self.on_recv_error(e),
                Event::Poll => self.poll_link().await,
            }
        }
    }

    /// Brings timetable, groups and records in line with the published set, sends the first
    /// announcements of new addresses, then acknowledges the version.
    async fn apply_owned(&mut self) {
        let owned = self.owned_rx.borrow_and_update().clone();
        let now = Instant::now();
        let wall = SystemTime::now();
        let added: Vec<IpAddr> = owned.ips.difference(&self.applied).copied().collect();
        let removed: Vec<IpAddr> = self.applied.difference(&owned.ips).copied().collect();
        {
            let mut rec = self.record.lock().unwrap_or_else(|p| p.into_inner());
            for ip in &removed {
                self.schedule.disown(ip);
                rec.released(ip);
                debug!(%ip, "released");
            }
            for ip in &added {
                if !owned.quiet {
                    self.schedule.own(*ip, now);
                }
                rec.owned(*ip, wall);
                debug!(%ip, "owned");
            }
            if owned.quiet {
                for ip in owned.ips.iter() {
                    self.schedule.disown(ip);
                }
            }
        }
        if !added.is_empty() || !removed.is_empty() {
            info!(
                added = added.len(),
                removed = removed.len(),
                owned = owned.ips.len(),
                "owned set changed"
            );
        }
        self.applied = owned.ips.clone();
        // Announce first: that is what moves the clients; joining hundreds of groups takes
        // milliseconds, and solicitations are rare right after an announcement. Only the
        // first batch goes now ([`Schedule::take_due`]); the timetable paces the rest.
        self.send_due().await;
        self.sync_groups();
        self.ack_tx.send_replace(owned.version);
    }

    /// Joins the solicited-node group of every owned IPv6 address and leaves the others.
    fn sync_groups(&mut self) {
        let Some(groups) = self.groups.as_mut() else {
            return;
        };
        let wanted: BTreeSet<Ipv6Addr> = self
            .applied
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V6(v6) => Some(frame::solicited_node(v6)),
                IpAddr::V4(_) => None,
            })
            .collect();
        let stale: Vec<Ipv6Addr> = groups
            .joined()
            .filter(|g| !wanted.contains(g))
            .copied()
            .collect();
        for g in stale {
            if let Err(e) = groups.leave(&g) {
                debug!(group = %g, error = %e, "leaving group");
            }
        }
        let mut results = Vec::new();
        for ip in self.applied.iter() {
            if let IpAddr::V6(v6) = ip {
                let group = frame::solicited_node(v6);
                let r = groups.join(group).err().map(|e| {
                    warn!(%ip, %group, error = %e, "cannot join solicited-node group");
                    format!("joining {group}: {e}")
                });
                results.push((*ip, r));
            }
        }
        let mut rec = self.record();
        for (ip, err) in results {
            rec.ip_error(&ip, err);
        }
    }

    /// The frames of one announcement round for `ip` at `mac`.
    fn announcement(ip: &IpAddr, mac: pnet_base::MacAddr) -> Vec<Vec<u8>> {
        match ip {
            IpAddr::V4(v4) => vec![
                frame::gratuitous_arp(mac, *v4, GarpForm::Request),
                frame::gratuitous_arp(mac, *v4, GarpForm::Reply),
            ],
            IpAddr::V6(v6) => vec![frame::neighbor_advert(
                mac,
                *v6,
                ALL_NODES,
                frame::multicast_mac(&ALL_NODES),
                false,
            )],
        }
    }

    async fn send_due(&mut self) {
        let due = self.schedule.take_due(Instant::now());
        let (Some(socket), Some(link)) = (self.socket.as_ref(), self.link) else {
            return;
        };
        if !link.up {
            return;
        }
        for ip in due {
            if !self.owned_rx.borrow().ips.contains(&ip) {
                continue;
            }
            let mut ok = true;
            for f in Self::announcement(&ip, link.mac) {
                if let Err(e) = socket.send(&f).await {
                    debug!(%ip, error = %e, "announcement not sent");
                    self.record
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .send_failed();
                    ok = false;
                }
            }
            if ok {
                let at = SystemTime::now();
                self.record
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .announced(&ip, at);
            }
        }
    }

    /// The loop did not run for `gap`: drop the frames that queued meanwhile and go silent
    /// ([`STALL_SILENCE`]).
    fn on_stall(&mut self, gap: Duration, now: Instant) {
        let mut stale = 0u64;
        if let Some(socket) = self.socket.as_ref() {
            let mut buf = [0u8; RECV_BUFFER];
            while let Ok(Some(_)) = socket.try_recv(&mut buf) {
                stale += 1;
                if stale >= 100_000 {
                    break;
                }
            }
        }
        {
            let mut rec = self.record();
            rec.frames_received += stale;
            rec.frames_ignored += stale;
        }
        warn!(
            stalled_ms = gap.as_millis() as u64,
            stale, "did not run: dropped the requests that queued meanwhile; silent until the owned set is confirmed"
        );
        self.silent_until = Some(now + STALL_SILENCE);
    }

    async fn on_frame(&mut self, frame: &[u8], pkttype: u8) {
        let Some(link) = self.link else {
            return;
        };
        if self.silent_until.is_some() {
            let mut rec = self.record();
            rec.frames_received += 1;
            rec.frames_ignored += 1;
            return;
        }
        let pkttype = u32::from(pkttype);
        let parsed =
            if pkttype == crate::bpf::PACKET_OUTGOING || pkttype == crate::bpf::PACKET_OTHERHOST {
                None
            } else {
                frame::parse(frame).ok()
            };
        let answer =
            parsed.and_then(|p| respond::answer(&p, &self.owned_rx.borrow().ips, link.mac));
        {
            let mut rec = self.record();
            rec.frames_received += 1;
            if answer.is_none() {
                rec.frames_ignored += 1;
            }
        }
        let (Some(answer), Some(socket)) = (answer, self.socket.as_ref()) else {
            return;
        };
        let ip = answer.ip();
        match socket.send(&answer.to_frame(link.mac)).await {
            Ok(()) => self.record().answered(),
            Err(e) => {
                debug!(%ip, error = %e, "answer not sent");
                self.record().send_failed();
            }
        }
    }

    fn on_recv_error(&mut self, e: std::io::Error) {
        self.record().receive_errors += 1;
        // ENETDOWN is reported once when the link goes down; the socket stays usable.
        if e.raw_os_error() != Some(libc::ENETDOWN) {
            warn!(error = %e, "receive failed; reopening the socket");
            self.socket = None;
            self.link = None;
        }
    }

    /// Looks at the interface and acts on what changed (see [`link::compare`]).
    async fn poll_link(&mut self) {
        if let Some(drops) = self.socket.as_ref().and_then(|s| s.take_drops().ok()) {
            if drops > 0 {
                warn!(drops, "receive queue overflowed");
                self.record().receive_drops += u64::from(drops);
            }
        }
        // A blocking request answered in microseconds (the kernel answers before `send`
        // returns), like the getifaddrs call it replaced: no thread hop for it.
        let now = match self.links.lookup(&self.name) {
            Ok(now) => now,
            Err(e) => {
                warn!(error = %e, "cannot read the interface");
                return;
            }
        };
        let mut change = link::compare(self.link.as_ref(), now.as_ref());
        if change == LinkChange::Same && now.is_some() && self.socket.is_none() {
            change = LinkChange::Opened; // an earlier open failed: try again
        }
        self.link = now;
        self.record().link = now;
        match (change, now) {
            (LinkChange::Opened, Some(state)) => self.open(state).await,
            (LinkChange::Gone, _) | (LinkChange::Opened, None) => {
                info!("interface gone");
                self.socket = None;
                self.groups = None;
                self.set_error(Some(InterfaceError::NotFound {
                    interface: self.name.clone(),
                }));
            }
            (LinkChange::Reannounce, Some(state)) => {
                info!(mac = %state.mac, running = state.running, "link up or new MAC: announcing again");
                self.schedule.restart(Instant::now());
                self.send_due().await;
            }
            (LinkChange::Down, _) => info!("link down"),
            (LinkChange::Same, None) if self.record().error.is_none() => {
                self.set_error(Some(InterfaceError::NotFound {
                    interface: self.name.clone(),
                }));
            }
            _ => {}
        }
    }

    async fn open(&mut self, state: LinkState) {
        match PacketSocket::open(state.ifindex) {
            Ok(s) => {
                info!(ifindex = state.ifindex, mac = %state.mac, up = state.up, running = state.running, "interface opened");
                self.socket = Some(s);
                self.groups = Some(Groups::new(state.ifindex));
                self.set_error(None);
                self.sync_groups();
                self.schedule.restart(Instant::now());
                self.send_due().await;
            }
            Err(e) => {
                let err = InterfaceError::Socket {
                    interface: self.name.clone(),
                    reason: e.to_string(),
                };
                if self.record().error.as_ref() != Some(&err) {
                    warn!(error = %e, "cannot open packet socket");
                }
                self.socket = None;
                self.groups = None;
                self.set_error(Some(err));
            }
        }
    }

    fn set_error(&self, error: Option<InterfaceError>) {
        self.record().error = error;
    }
}

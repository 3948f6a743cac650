//! The Adj-RIB-Out side of a peer task: the table and End-of-RIB after Established, the
//! difference after each change (RFC 4271 §9.2), and the count of the peer's prefixes for
//! max-prefix (RFC 4486).
use super::{PeerTask, Which, IMPORT_HARD_LIMIT};
use crate::connection;
use crate::fsm::State;
use crate::packet::{encode_announce, encode_withdraw, Family, Message, Notification, Update};
use crate::rib_out::{self, RouteTable, SessionRouteContext};
use crate::status::{FamilyNotAnnounced, PeerEvent};
use ipnet::IpNet;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

impl PeerTask {
    /// Counts the peer's prefixes; returns the Cease to send when over the limit (RFC 4486).
    pub(super) fn import(&mut self, u: &Update) -> Option<Notification> {
        for p in &u.withdrawn {
            self.rib_in.remove(&IpNet::V4(*p));
        }
        if let Some(mp) = &u.attributes.mp_unreach {
            mp.withdrawn.iter().for_each(|p| {
                self.rib_in.remove(p);
            });
        }
        let limit = self.cfg.max_prefixes.unwrap_or(IMPORT_HARD_LIMIT);
        let announced = u.nlri.iter().map(|p| IpNet::V4(*p));
        let mp = u
            .attributes
            .mp_reach
            .iter()
            .flat_map(|m| m.nlri.iter().copied());
        let mut over = None;
        for p in announced.chain(mp) {
            self.rib_in.insert(p);
            if self.rib_in.len() > limit as usize {
                let (afi, safi) = Family::of(&p).afi_safi();
                over = Some(Notification::max_prefixes_reached(afi, safi, limit));
                break;
            }
        }
        let count = self.rib_in.len() as u64;
        self.with_status(|s| s.prefixes_received = count);
        over
    }

    /// The session is up: the whole table, then End-of-RIB per family (RFC 4724 §2).
    pub(super) fn on_established(&mut self) {
        let now = std::time::Instant::now();
        tracing::info!("session established");
        self.sent = Arc::new(RouteTable::new());
        self.route_ctx = None;
        // The latest table, even if its change is still queued behind this event: after a
        // restart the End-of-RIB must not follow an incomplete table.
        self.routes = self.inputs.routes.borrow_and_update().clone();
        self.with_status(|s| s.established_count += 1);
        self.events.push(PeerEvent::Established {
            peer: self.cfg.address,
            at: now,
        });
        self.sync_routes();
        let families = self.families();
        for f in families {
            self.send(Which::Main, &Message::Update(Update::end_of_rib(f)));
            self.with_status(|s| s.updates_out += 1);
        }
        let total = rib_out::count(&self.sent, &self.families());
        self.events.push(PeerEvent::EndOfRib {
            peer: self.cfg.address,
            at: now,
            total,
        });
        if !self.restart_done {
            self.restart_done = true;
            if self.scfg.graceful_restart.is_some_and(|g| g.restarting) {
                // Later sessions of this task are not "just restarted" (RFC 4724 §3).
                let cfg = self.cfg.clone();
                self.soft_reconfigure(cfg);
            }
        }
    }

    pub(super) fn families(&self) -> Vec<Family> {
        self.main
            .session
            .negotiated()
            .map(|n| n.families.clone())
            .unwrap_or_default()
    }

    /// Sends the difference between what the peer has and what it should have, in the
    /// negotiated families that have a next hop. Afterwards `sent` holds exactly what was
    /// written: a prefix of another family, or one that could not be encoded, is neither
    /// counted as sent nor ever withdrawn.
    pub(super) fn sync_routes(&mut self) {
        if self.main.session.state() != State::Established || self.main.just_established {
            return;
        }
        let negotiated = self.families();
        let ctx = self.route_context();
        let (usable, blocked): (Vec<Family>, Vec<Family>) = negotiated
            .iter()
            .partition(|f| crate::next_hop::has_next_hop(&ctx, **f));
        self.report_blocked(&blocked);
        let d = rib_out::diff(&self.sent, &self.routes, &usable);
        let failed = if d.is_empty() {
            HashSet::new()
        } else {
            self.encode_diff(&d, &ctx)
        };
        self.sent = sent_table(&self.routes, &usable, &failed);
        let total = rib_out::count(&self.sent, &usable) as u64;
        let not_sent = (self.routes.len() as u64).saturating_sub(total);
        self.with_status(|s| {
            s.prefixes_sent = total;
            s.prefixes_not_sent = not_sent;
        });
        if d.is_empty() {
            return;
        }
        self.events.push(PeerEvent::RoutesSent {
            peer: self.cfg.address,
            at: std::time::Instant::now(),
            announced: d.announced_count() - failed.len(),
            withdrawn: d.withdrawn_count(),
            total: total as usize,
        });
    }

    /// Status and an event when the set of families without a next hop changes.
    fn report_blocked(&mut self, blocked: &[Family]) {
        let local = self.local_address();
        let now: Vec<FamilyNotAnnounced> = blocked
            .iter()
            .map(|f| FamilyNotAnnounced {
                family: *f,
                reason: crate::next_hop::missing_reason(*f, local),
            })
            .collect();
        let changed = self
            .inputs
            .status
            .lock()
            .map(|s| s.families_not_announced != now)
            .unwrap_or(false);
        if !changed {
            return;
        }
        for f in &now {
            tracing::warn!(family = ?f.family, reason = %f.reason, "family not announced");
        }
        let list = now.clone();
        self.with_status(|s| s.families_not_announced = list);
        self.events.push(PeerEvent::FamiliesNotAnnounced {
            peer: self.cfg.address,
            at: std::time::Instant::now(),
            families: now,
        });
    }

    fn local_address(&self) -> Option<IpAddr> {
        let local: Option<SocketAddr> = self.main.stream.as_ref().and_then(|s| s.local_addr().ok());
        local.map(|a| connection::canonical(a.ip()))
    }

    /// Our next hops on this session ([`crate::next_hop`]), computed once per session and
    /// again while a family still lacks one (an address may have been added since).
    pub(super) fn route_context(&mut self) -> SessionRouteContext {
        let complete = self.route_ctx.is_some_and(|c| {
            self.families()
                .iter()
                .all(|f| crate::next_hop::has_next_hop(&c, *f))
        });
        if let (true, Some(c)) = (complete, self.route_ctx) {
            return c;
        }
        let ebgp = self.cfg.is_ebgp();
        let local_as = self.cfg.local_as;
        let ctx = match self.local_address() {
            Some(local) => {
                let host = crate::next_hop::host_addresses().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot read the interface addresses");
                    Vec::new()
                });
                crate::next_hop::session_next_hops(local, &host, ebgp, local_as)
            }
            None => SessionRouteContext {
                ebgp,
                local_as,
                local_v4: None,
                local_v6: None,
                link_local_v6: None,
            },
        };
        self.route_ctx = Some(ctx);
        ctx
    }

    /// Encodes `d` into the write buffer; returns the announced prefixes that could not be
    /// encoded (so they are not recorded as sent).
    pub(super) fn encode_diff(
        &mut self,
        d: &rib_out::RibDiff,
        rctx: &SessionRouteContext,
    ) -> HashSet<IpNet> {
        let ctx = self.main.ctx;
        let mut updates = 0usize;
        let mut failed = HashSet::new();
        for (family, prefixes) in &d.withdraw {
            match encode_withdraw(*family, prefixes, &ctx, &mut self.main.wbuf) {
                Ok(n) => updates += n,
                Err(e) => tracing::error!(error = %e, "cannot encode withdrawals"),
            }
        }
        for a in &d.announce {
            let encoded = rib_out::path_attributes(&a.attrs, a.family, rctx)
                .map_err(|e| e.to_string())
                .and_then(|(attrs, next_hop)| {
                    encode_announce(
                        a.family,
                        &attrs,
                        next_hop,
                        &a.prefixes,
                        &ctx,
                        &mut self.main.wbuf,
                    )
                    .map_err(|e| e.to_string())
                });
            match encoded {
                Ok(n) => updates += n,
                Err(e) => {
                    tracing::warn!(error = %e, prefixes = a.prefixes.len(), "routes not sent");
                    failed.extend(a.prefixes.iter().copied());
                }
            }
        }
        self.with_status(|s| {
            s.updates_out += updates as u64;
            s.messages_out += updates as u64;
        });
        failed
    }
}

/// What the peer has after a sync: `routes` in `families`, minus `failed`. Shares `routes`
/// itself in the common case (every prefix of a usable family, nothing failed).
fn sent_table(
    routes: &Arc<RouteTable>,
    families: &[Family],
    failed: &HashSet<IpNet>,
) -> Arc<RouteTable> {
    // IpNet orders IPv4 before IPv6: the first and last keys give the families present.
    let present = [routes.keys().next(), routes.keys().next_back()];
    let all_usable = present
        .iter()
        .flatten()
        .all(|p| families.contains(&Family::of(p)));
    if all_usable && failed.is_empty() {
        return routes.clone();
    }
    Arc::new(
        routes
            .iter()
            .filter(|(p, _)| families.contains(&Family::of(p)) && !failed.contains(p))
            .map(|(p, a)| (*p, a.clone()))
            .collect(),
    )
}

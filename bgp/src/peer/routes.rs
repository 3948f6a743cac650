//! The Adj-RIB-Out side of a peer task: the table and End-of-RIB after Established, the
//! difference after each change (RFC 4271 §9.2), and the count of the peer's prefixes for
//! max-prefix (RFC 4486).
use super::{PeerTask, Which, IMPORT_HARD_LIMIT};
use crate::connection;
use crate::fsm::State;
use crate::packet::{encode_announce, encode_withdraw, Family, Message, Notification, Update};
use crate::rib_out::{self, RouteTable, SessionRouteContext};
use crate::status::PeerEvent;
use ipnet::IpNet;
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
    }

    pub(super) fn families(&self) -> Vec<Family> {
        self.main
            .session
            .negotiated()
            .map(|n| n.families.clone())
            .unwrap_or_default()
    }

    /// Sends the difference between what the peer has and what it should have.
    pub(super) fn sync_routes(&mut self) {
        if self.main.session.state() != State::Established || self.main.just_established {
            return;
        }
        let families = self.families();
        let d = rib_out::diff(&self.sent, &self.routes, &families);
        self.sent = self.routes.clone();
        let total = rib_out::count(&self.sent, &families) as u64;
        self.with_status(|s| s.prefixes_sent = total);
        if d.is_empty() {
            return;
        }
        self.encode_diff(&d);
        self.events.push(PeerEvent::RoutesSent {
            peer: self.cfg.address,
            at: std::time::Instant::now(),
            announced: d.announced_count(),
            withdrawn: d.withdrawn_count(),
            total: total as usize,
        });
    }

    pub(super) fn route_context(&self) -> SessionRouteContext {
        let local: Option<SocketAddr> = self.main.stream.as_ref().and_then(|s| s.local_addr().ok());
        let local_ip = local.map(|a| connection::canonical(a.ip()));
        let (mut v4, mut v6, mut ll) = (None, None, None);
        match local_ip {
            Some(IpAddr::V4(a)) => v4 = Some(a),
            Some(IpAddr::V6(a)) if a.is_unicast_link_local() => ll = Some(a),
            Some(IpAddr::V6(a)) => v6 = Some(a),
            None => {}
        }
        SessionRouteContext {
            ebgp: self.cfg.is_ebgp(),
            local_as: self.cfg.local_as,
            local_v4: v4,
            local_v6: v6,
            link_local_v6: ll,
        }
    }

    pub(super) fn encode_diff(&mut self, d: &rib_out::RibDiff) {
        let rctx = self.route_context();
        let ctx = self.main.ctx;
        let mut updates = 0usize;
        for (family, prefixes) in &d.withdraw {
            match encode_withdraw(*family, prefixes, &ctx, &mut self.main.wbuf) {
                Ok(n) => updates += n,
                Err(e) => tracing::error!(error = %e, "cannot encode withdrawals"),
            }
        }
        for a in &d.announce {
            let (attrs, next_hop) = match rib_out::path_attributes(&a.attrs, a.family, &rctx) {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, prefixes = a.prefixes.len(), "routes not sent");
                    continue;
                }
            };
            match encode_announce(
                a.family,
                &attrs,
                next_hop,
                &a.prefixes,
                &ctx,
                &mut self.main.wbuf,
            ) {
                Ok(n) => updates += n,
                Err(e) => tracing::error!(error = %e, "cannot encode announcements"),
            }
        }
        self.with_status(|s| {
            s.updates_out += updates as u64;
            s.messages_out += updates as u64;
        });
    }
}

//! The host's interfaces as the speaker last read them (netlink), re-read at most once per
//! [`INTERFACE_POLL`]. One concern: knowing which interfaces are up with which subnets.

use std::time::{Duration, Instant};

use crate::actuate::interfaces::HostInterfaces;
use crate::election::InterfaceFacts;

/// How often interfaces are re-read.
pub const INTERFACE_POLL: Duration = Duration::from_secs(1);

/// Polls the host's interfaces.
pub struct InterfacePoller {
    host: Option<HostInterfaces>,
    interfaces: Vec<InterfaceFacts>,
    read_at: Option<Instant>,
}

impl InterfacePoller {
    /// Opens netlink; without it L2 knows no interface (logged once).
    pub fn new() -> InterfacePoller {
        let host = match HostInterfaces::new() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read interfaces; L2 knows none");
                None
            }
        };
        InterfacePoller {
            host,
            interfaces: Vec::new(),
            read_at: None,
        }
    }

    /// The interfaces as last read.
    pub fn current(&self) -> &[InterfaceFacts] {
        &self.interfaces
    }

    /// Whether a poll is due.
    pub fn due(&self) -> bool {
        self.read_at.is_none_or(|t| t.elapsed() >= INTERFACE_POLL)
    }

    /// Re-reads the interfaces; true when they changed.
    pub async fn read(&mut self) -> bool {
        let Some(host) = &self.host else { return false };
        self.read_at = Some(Instant::now());
        match host.read().await {
            Ok(now) if now != self.interfaces => {
                self.interfaces = now;
                true
            }
            Ok(_) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read interfaces");
                false
            }
        }
    }
}

//! Who a speaker is in the gossip: node name, gossip address, generation.
//!
//! SWIM forbids an identity declared down from coming back (Das et al.,
//! "SWIM", 2002, section 4.2: a confirmed failure is final), so a restarted
//! speaker must be a new identity: the generation is the start time in
//! milliseconds since the Unix epoch, and foca's auto-rejoin ([`Identity::renew`])
//! bumps it by one when a live speaker learns it was (wrongly) declared down.
//! Two identities with the same address are the same member at different
//! times; the higher generation wins.

use std::net::SocketAddr;

use foca::Identity;
use serde::{Deserialize, Serialize};

/// A speaker's identity in the gossip.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SpeakerId {
    /// The Kubernetes node name.
    pub node: String,
    /// Where the speaker receives gossip (node address and gossip port).
    pub addr: SocketAddr,
    /// Start time in ms since the epoch, plus one per auto-rejoin.
    pub generation: u64,
}

impl Identity for SpeakerId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(SpeakerId {
            generation: self.generation.saturating_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_speaker_is_a_new_identity_that_wins() {
        let addr: SocketAddr = "127.0.0.1:7946".parse().expect("literal");
        let old = SpeakerId {
            node: "n1".into(),
            addr,
            generation: 1000,
        };
        let new = SpeakerId {
            generation: 2000,
            ..old.clone()
        };
        assert_ne!(old, new);
        assert_eq!(old.addr(), new.addr());
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
        let renewed = old.renew().expect("auto-rejoin");
        assert!(renewed.win_addr_conflict(&old));
    }
}

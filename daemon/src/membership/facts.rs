//! Facts each member gossips so that the others can elect it: its announcing
//! interfaces, their carrier, their subnets. Carried as foca custom
//! broadcasts; for each node the newest `(generation, version)` wins.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use foca::{BroadcastHandler, Invalidates};
use serde::{Deserialize, Serialize};

use super::identity::SpeakerId;
use crate::election::InterfaceFacts;

/// What one member says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberFacts {
    /// The node name.
    pub node: String,
    /// The generation of the speaker identity that published these facts:
    /// a restarted speaker's facts supersede the old ones.
    pub generation: u64,
    /// Bumped on every change by the publishing speaker.
    pub version: u64,
    /// Its announcing interfaces.
    pub interfaces: Vec<InterfaceFacts>,
}

impl MemberFacts {
    fn stamp(&self) -> (u64, u64) {
        (self.generation, self.version)
    }
}

/// The dissemination key of a facts broadcast: a newer stamp for the same
/// node replaces an older one still waiting in foca's backlog.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FactsKey {
    node: String,
    stamp: (u64, u64),
}

impl Invalidates for FactsKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.node == other.node && self.stamp >= other.stamp
    }
}

/// The newest facts known per node, shared between foca's broadcast handler
/// and the membership task (one task; the lock is never held across await).
pub type FactsBook = Arc<Mutex<FactsState>>;

/// The table behind [`FactsBook`].
#[derive(Debug, Default)]
pub struct FactsState {
    /// Newest facts per node name.
    pub by_node: HashMap<String, MemberFacts>,
    /// Nodes whose facts changed since the task last looked.
    pub changed: Vec<String>,
}

/// Decoding a facts broadcast failed.
#[derive(Debug, thiserror::Error)]
pub enum FactsError {
    /// Not a postcard-encoded [`MemberFacts`].
    #[error("member facts broadcast: {0}")]
    Decode(#[from] postcard::Error),
}

/// foca's hook for our custom broadcasts.
pub struct FactsHandler {
    /// Shared table.
    pub book: FactsBook,
}

impl BroadcastHandler<SpeakerId> for FactsHandler {
    type Key = FactsKey;
    type Error = FactsError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&SpeakerId>,
    ) -> Result<Option<FactsKey>, FactsError> {
        let facts: MemberFacts = postcard::from_bytes(data)?;
        let key = FactsKey {
            node: facts.node.clone(),
            stamp: facts.stamp(),
        };
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if sender.is_none() {
            // Our own facts, added locally: always (re)disseminate, so that
            // members who joined after the last change learn them too.
            if book.by_node.get(&facts.node) != Some(&facts) {
                book.changed.push(facts.node.clone());
            }
            book.by_node.insert(facts.node.clone(), facts);
            return Ok(Some(key));
        }
        let newer = book
            .by_node
            .get(&facts.node)
            .is_none_or(|known| facts.stamp() > known.stamp());
        if !newer {
            return Ok(None);
        }
        book.changed.push(facts.node.clone());
        book.by_node.insert(facts.node.clone(), facts);
        Ok(Some(key))
    }
}

/// Encode facts for [`foca::Foca::add_broadcast`].
pub fn encode(facts: &MemberFacts) -> Result<Vec<u8>, FactsError> {
    Ok(postcard::to_allocvec(facts)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(node: &str, generation: u64, version: u64) -> MemberFacts {
        MemberFacts {
            node: node.into(),
            generation,
            version,
            interfaces: vec![InterfaceFacts {
                name: "eth0".into(),
                up: version.is_multiple_of(2),
                subnets: vec!["192.0.2.0/24".parse().expect("literal")],
            }],
        }
    }

    fn peer() -> SpeakerId {
        SpeakerId {
            node: "peer".into(),
            addr: "127.0.0.1:1".parse().expect("literal"),
            generation: 1,
        }
    }

    #[test]
    fn newest_version_wins_and_stale_is_not_redisseminated() {
        let book = FactsBook::default();
        let mut h = FactsHandler { book: book.clone() };
        let p = peer();
        let v2 = encode(&facts("a", 1, 2)).expect("encode");
        let v1 = encode(&facts("a", 1, 1)).expect("encode");
        assert!(h.receive_item(&v2, Some(&p)).expect("ok").is_some());
        assert!(
            h.receive_item(&v1, Some(&p)).expect("ok").is_none(),
            "older version"
        );
        assert!(
            h.receive_item(&v2, Some(&p)).expect("ok").is_none(),
            "same version"
        );
        let restarted = encode(&facts("a", 2, 0)).expect("encode");
        assert!(h.receive_item(&restarted, Some(&p)).expect("ok").is_some());
        let b = book.lock().expect("lock");
        assert_eq!(b.by_node["a"], facts("a", 2, 0));
        assert_eq!(b.changed, vec!["a".to_string(), "a".to_string()]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut h = FactsHandler {
            book: FactsBook::default(),
        };
        for data in [&b""[..], b"\xff\xff\xff\xff\xff", b"\x01"] {
            assert!(h.receive_item(data, Some(&peer())).is_err());
        }
    }

    #[test]
    fn newer_key_invalidates_older_for_the_same_node_only() {
        let k = |n: &str, g, v| FactsKey {
            node: n.into(),
            stamp: (g, v),
        };
        assert!(k("a", 1, 2).invalidates(&k("a", 1, 1)));
        assert!(!k("a", 1, 1).invalidates(&k("a", 1, 2)));
        assert!(!k("a", 9, 9).invalidates(&k("b", 1, 1)));
    }
}

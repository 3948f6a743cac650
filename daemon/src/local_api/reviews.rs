//! The view port's authorization decisions, kept a short while so that a flood of requests
//! does not become a flood of TokenReviews and SubjectAccessReviews on the API server.
//!
//! - Keyed by the SHA-256 of the token (the token itself is never kept), bounded in entries
//!   ([`Decisions`]), each valid for a TTL: a revoked grant or token counts after at most
//!   that long, as the API server's own webhook authorizer caches do.
//! - Accepted and refused (401, 403) decisions are kept alike: a repeated bad token costs
//!   the API server nothing either. "Cannot ask" (503) is never kept.
//! - At most a few reviews are in flight; past that a request for a token not decided yet
//!   gets 429 instead of another pair of reviews.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::remote::{authorize, Access, Refused};

/// How long a decision is kept.
pub const TTL: Duration = Duration::from_secs(10);
/// Decisions kept at most.
pub const CAPACITY: usize = 1024;
/// Reviews in flight at most.
pub const IN_FLIGHT: usize = 4;

type Key = [u8; 32];
type Decision = Result<String, Refused>;

/// Decisions by token hash, at most `capacity`, each for `ttl`. Pure: time is passed in.
#[derive(Debug)]
pub struct Decisions {
    ttl: Duration,
    capacity: usize,
    kept: HashMap<Key, (Instant, Decision)>,
}

/// The cache key of a token.
pub fn key(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

impl Decisions {
    /// An empty cache.
    pub fn new(ttl: Duration, capacity: usize) -> Decisions {
        Decisions {
            ttl,
            capacity: capacity.max(1),
            kept: HashMap::new(),
        }
    }

    /// The decision for `token` if it was made less than the TTL before `now`.
    pub fn get(&self, token: &str, now: Instant) -> Option<Decision> {
        let (at, d) = self.kept.get(&key(token))?;
        (now.saturating_duration_since(*at) < self.ttl).then(|| d.clone())
    }

    /// Keeps a decision (not an [`Refused::Unavailable`] or [`Refused::Busy`] one). When
    /// full, expired entries go first, then the oldest.
    pub fn put(&mut self, token: &str, decision: Decision, now: Instant) {
        if matches!(decision, Err(Refused::Unavailable(_) | Refused::Busy)) {
            return;
        }
        let k = key(token);
        if !self.kept.contains_key(&k) && self.kept.len() >= self.capacity {
            let ttl = self.ttl;
            self.kept
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < ttl);
            if self.kept.len() >= self.capacity {
                if let Some(oldest) = self
                    .kept
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| *k)
                {
                    self.kept.remove(&oldest);
                }
            }
        }
        self.kept.insert(k, (now, decision));
    }

    /// Entries kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }
}

/// The view port's reviews: cached decisions and a limit on reviews in flight.
#[derive(Debug)]
pub struct Reviews {
    decisions: Mutex<Decisions>,
    in_flight: Semaphore,
}

impl Default for Reviews {
    fn default() -> Reviews {
        Reviews::new(TTL, CAPACITY, IN_FLIGHT)
    }
}

impl Reviews {
    /// Decisions kept `ttl`, at most `capacity`, at most `in_flight` reviews at once.
    pub fn new(ttl: Duration, capacity: usize, in_flight: usize) -> Reviews {
        Reviews {
            decisions: Mutex::new(Decisions::new(ttl, capacity)),
            in_flight: Semaphore::new(in_flight.max(1)),
        }
    }

    /// [`authorize`], from the cache when decided within the TTL.
    pub async fn authorize(&self, client: &kube::Client, access: &Access, token: &str) -> Decision {
        if let Some(d) = self.cached(token) {
            return d;
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return Err(Refused::Busy);
        };
        let d = authorize(client, access, token).await;
        if let Ok(mut kept) = self.decisions.lock() {
            kept.put(token, d.clone(), Instant::now());
        }
        d
    }

    fn cached(&self, token: &str) -> Option<Decision> {
        self.decisions.lock().ok()?.get(token, Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forbidden() -> Decision {
        Err(Refused::Forbidden {
            user: "bob".into(),
            namespace: "edgelb-system".into(),
            reason: String::new(),
        })
    }

    #[test]
    fn a_decision_is_kept_for_the_ttl_only() {
        let t0 = Instant::now();
        let mut d = Decisions::new(Duration::from_secs(10), 8);
        d.put("t-alice", Ok("alice".into()), t0);
        d.put("t-bob", forbidden(), t0);
        assert_eq!(
            d.get("t-alice", t0 + Duration::from_secs(9)),
            Some(Ok("alice".into()))
        );
        assert_eq!(
            d.get("t-bob", t0 + Duration::from_secs(9)),
            Some(forbidden())
        );
        assert_eq!(d.get("t-alice", t0 + Duration::from_secs(10)), None);
        assert_eq!(d.get("t-carol", t0), None);
    }

    #[test]
    fn cannot_ask_is_never_kept() {
        let t0 = Instant::now();
        let mut d = Decisions::new(Duration::from_secs(10), 8);
        d.put("t", Err(Refused::Unavailable("down".into())), t0);
        d.put("t", Err(Refused::Busy), t0);
        assert!(d.is_empty());
    }

    #[test]
    fn entries_are_bounded_expired_then_oldest_go_first() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut d = Decisions::new(Duration::from_secs(10), 3);
        d.put("a", Ok("a".into()), t0);
        d.put("b", Ok("b".into()), t0 + s);
        d.put("c", Ok("c".into()), t0 + 2 * s);
        d.put("d", Ok("d".into()), t0 + 3 * s);
        assert_eq!(d.len(), 3);
        assert_eq!(d.get("a", t0 + 3 * s), None, "the oldest went");
        assert!(d.get("b", t0 + 3 * s).is_some());
        // At 12.5 s b and c are expired: a new entry clears both, not just one.
        d.put("e", Ok("e".into()), t0 + Duration::from_millis(12_500));
        assert_eq!(d.len(), 2, "b and c expired, d is still young");
        for i in 0..1000 {
            d.put(&format!("x{i}"), Ok("x".into()), t0 + 14 * s);
        }
        assert_eq!(d.len(), 3);
    }

    #[test]
    fn the_key_is_a_hash_not_the_token() {
        assert_eq!(key("abc"), key("abc"));
        assert_ne!(key("abc"), key("abd"));
        let d = format!("{:?}", {
            let mut d = Decisions::new(TTL, 4);
            d.put("secret-token", Ok("alice".into()), Instant::now());
            d
        });
        assert!(!d.contains("secret-token"), "{d}");
    }
}

//! Where the gossip keys come from, and how a speaker follows a change of
//! its key Secret without cutting itself off from the speakers that have not
//! seen the change yet.
//!
//! The Secret reaches every speaker through its own watch, within about a
//! second of each other but not at once. A speaker that switched to a new key
//! at once would have its datagrams refused by the others until they switch
//! too: they would suspect it and, after the suspicion timeout, declare it
//! down. So on a change that retires the key we send with (a plain `key`
//! entry replaced), [`KeyRotation`] goes through the usual three steps by
//! itself, on a clock:
//!
//! ```text
//!  Secret changes            +SEND_PREVIOUS_FOR        +ACCEPT_PREVIOUS_FOR
//!  ──────┬───────────────────────────┬──────────────────────────┬──────────►
//!        │ send old, accept old+new  │ send new, accept old+new │ new only
//! ```
//!
//! A change that keeps the key we send with accepted (the `key-<id>` +
//! `current` layout, edited step by step) is applied at once: the Secret's
//! author is doing the steps.

use std::time::{Duration, Instant};

use super::auth::{GossipKey, Keyring};
use crate::snapshot::Redacted;

/// After the Secret changed, how long a speaker keeps sending with the key it
/// sent with before: long enough for every other speaker to have seen the
/// change (a watch event, normally well under a second; 10 s covers a slow
/// API server or a speaker catching up after a reconnect).
pub const SEND_PREVIOUS_FOR: Duration = Duration::from_secs(10);

/// After the Secret changed, how long the previous key is still accepted:
/// long enough for every speaker to have stopped sending with it (the
/// same margin again), and short, because a key is rotated away mostly when
/// it leaked.
pub const ACCEPT_PREVIOUS_FOR: Duration = Duration::from_secs(30);

/// Where a speaker reads its gossip key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// Fixed bytes (a key file), never rotated while running.
    Bytes(Redacted<Vec<u8>>),
    /// A Secret of the speaker's namespace, followed as it changes: a plain
    /// `key` entry, or `key-<id>` entries and `current`
    /// ([`Keyring::from_secret_data`]).
    Secret(String),
}

/// The keys of a speaker over time, following its Secret.
#[derive(Clone, Debug)]
pub struct KeyRotation {
    wanted: Keyring,
    /// The key we sent with before the last change, when that change no
    /// longer accepts it.
    previous: Option<GossipKey>,
    since: Instant,
}

impl KeyRotation {
    /// Start with the keys read at start (nothing to phase out).
    pub fn new(initial: Keyring, now: Instant) -> Self {
        KeyRotation {
            wanted: initial,
            previous: None,
            since: now,
        }
    }

    /// The Secret now gives `wanted`; returns whether that is a change.
    pub fn update(&mut self, wanted: Keyring, now: Instant) -> bool {
        if wanted == self.wanted {
            return false;
        }
        let sending = self.keyring_at(now).current().clone();
        self.previous = (!wanted.accepts(&sending)).then_some(sending);
        self.wanted = wanted;
        self.since = now;
        true
    }

    /// The keyring to use at `now`.
    pub fn keyring_at(&self, now: Instant) -> Keyring {
        let Some(previous) = &self.previous else {
            return self.wanted.clone();
        };
        let age = now.saturating_duration_since(self.since);
        if age < SEND_PREVIOUS_FOR {
            self.wanted.with_transition(previous, previous)
        } else if age < ACCEPT_PREVIOUS_FOR {
            self.wanted.with_transition(self.wanted.current(), previous)
        } else {
            self.wanted.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::auth::FrameKind;
    use super::*;

    fn plain(fill: u8) -> Keyring {
        Keyring::from_plain_key(&[fill; 32]).expect("key")
    }

    fn sends_with(ring: &Keyring, other: &Keyring) -> bool {
        other.open(&ring.seal(FrameKind::Swim, b"m")).is_ok()
    }

    #[test]
    fn a_replaced_plain_key_is_phased_in_and_out_on_a_clock() {
        let t0 = Instant::now();
        let (old, new) = (plain(1), plain(2));
        let mut r = KeyRotation::new(old.clone(), t0);
        assert_eq!(r.keyring_at(t0), old);
        assert!(!r.update(old.clone(), t0), "same keys: no change");
        let t1 = t0 + Duration::from_secs(100);
        assert!(r.update(new.clone(), t1));

        // Phase 1: a speaker that has not seen the change yet (old) and one that
        // started after it (new) both accept what we send; we accept both.
        let p1 = r.keyring_at(t1 + Duration::from_secs(1));
        assert!(sends_with(&p1, &old), "not-yet-updated peers accept us");
        assert!(sends_with(&old, &p1) && sends_with(&new, &p1));
        // Phase 2: we send with the new key, still accept the old.
        let p2 = r.keyring_at(t1 + SEND_PREVIOUS_FOR);
        assert!(sends_with(&p2, &new) && !sends_with(&p2, &old));
        assert!(sends_with(&old, &p2) && sends_with(&new, &p2));
        // Phase 3: the old key is refused.
        let p3 = r.keyring_at(t1 + ACCEPT_PREVIOUS_FOR);
        assert_eq!(p3, new);
        assert!(!sends_with(&old, &p3));
    }

    #[test]
    fn a_change_that_keeps_our_key_accepted_applies_at_once() {
        let k = |id: u8, fill: u8| GossipKey::new(id, vec![fill; 32]).expect("key");
        let t0 = Instant::now();
        let step0 = Keyring::new(k(1, 1), vec![]).expect("ring");
        let step1 = Keyring::new(k(1, 1), vec![k(2, 2)]).expect("ring");
        let step2 = Keyring::new(k(2, 2), vec![k(1, 1)]).expect("ring");
        let step3 = Keyring::new(k(2, 2), vec![]).expect("ring");
        let mut r = KeyRotation::new(step0, t0);
        for step in [step1, step2, step3] {
            assert!(r.update(step.clone(), t0));
            assert_eq!(r.keyring_at(t0), step);
        }
    }

    #[test]
    fn a_second_change_during_a_transition_phases_out_what_we_send_with() {
        let t0 = Instant::now();
        let (a, b, c) = (plain(1), plain(2), plain(3));
        let mut r = KeyRotation::new(a.clone(), t0);
        r.update(b.clone(), t0);
        // Still sending with `a` when `c` arrives: `a` is the key to phase out.
        let t1 = t0 + Duration::from_secs(1);
        r.update(c.clone(), t1);
        let now = r.keyring_at(t1);
        assert!(sends_with(&now, &a));
        assert!(sends_with(&c, &now));
        assert_eq!(r.keyring_at(t1 + ACCEPT_PREVIOUS_FOR), c);
    }
}

//! The writer's queue: the latest wanted value per key (coalesced), at most one write in
//! flight per key, and a retry time after a failed write. Pure (time is a value).

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// How a write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Done {
    /// Written.
    Written,
    /// Failed: try again after this long (unless a newer value came meanwhile, which is
    /// written after the same wait).
    RetryAfter(Duration),
    /// Not to be written after all (the object is gone, or the record changed under us).
    Dropped,
}

/// Coalescing queue; see the module documentation.
#[derive(Clone, Debug)]
pub struct Queue<K, V> {
    /// Wanted, not yet started (only the latest value per key).
    want: BTreeMap<K, V>,
    /// Being written (the value that was started).
    busy: BTreeMap<K, V>,
    /// Keys that failed: not started again before this time.
    retry: BTreeMap<K, Instant>,
}

impl<K, V> Default for Queue<K, V> {
    fn default() -> Self {
        Queue {
            want: BTreeMap::new(),
            busy: BTreeMap::new(),
            retry: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V: Clone + PartialEq> Queue<K, V> {
    /// `key` should end up with `value`; replaces any older wanted value. A value already
    /// being written is not queued again.
    pub fn offer(&mut self, key: K, value: V) {
        if self.busy.get(&key) == Some(&value) {
            self.want.remove(&key);
        } else {
            self.want.insert(key, value);
        }
    }

    /// Nothing is to be written for `key` any more (a write in flight finishes).
    pub fn withdraw(&mut self, key: &K) {
        self.want.remove(key);
        self.retry.remove(key);
    }

    /// The next write to start at `now`: a wanted key with no write in flight and no retry
    /// pending, in key order.
    pub fn next(&mut self, now: Instant) -> Option<(K, V)> {
        let key = self
            .want
            .keys()
            .find(|k| !self.busy.contains_key(*k) && self.retry.get(*k).is_none_or(|t| *t <= now))?
            .clone();
        let value = self.want.remove(&key)?;
        self.retry.remove(&key);
        self.busy.insert(key.clone(), value.clone());
        Some((key, value))
    }

    /// The write of `key` ended at `now`.
    pub fn done(&mut self, key: &K, how: Done, now: Instant) {
        let Some(value) = self.busy.remove(key) else {
            return;
        };
        if let Done::RetryAfter(after) = how {
            self.retry.insert(key.clone(), now + after);
            self.want.entry(key.clone()).or_insert(value);
        }
    }

    /// Writes in flight.
    pub fn in_flight(&self) -> usize {
        self.busy.len()
    }

    /// Keys waiting to be written.
    pub fn waiting(&self) -> usize {
        self.want.len()
    }

    /// Whether `key` is being written.
    pub fn is_busy(&self, key: &K) -> bool {
        self.busy.contains_key(key)
    }

    /// Whether `key` is wanted or being written.
    pub fn is_pending(&self, key: &K) -> bool {
        self.want.contains_key(key) || self.busy.contains_key(key)
    }

    /// The earliest time a waiting key's retry falls due.
    pub fn next_retry(&self) -> Option<Instant> {
        self.retry
            .iter()
            .filter(|(k, _)| self.want.contains_key(*k))
            .map(|(_, t)| *t)
            .min()
    }

    /// Forgets every key `keep` refuses (the objects that are gone), writes in flight
    /// included (their end is then ignored).
    pub fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        self.want.retain(|k, _| keep(k));
        self.busy.retain(|k, _| keep(k));
        self.retry.retain(|k, _| keep(k));
    }

    /// Forgets `key` entirely, a write in flight included (its end is then ignored).
    pub fn forget(&mut self, key: &K) {
        self.want.remove(key);
        self.busy.remove(key);
        self.retry.remove(key);
    }

    /// What is wanted, what is in flight, and which keys wait for a retry (tests compare
    /// two queues with it).
    #[cfg(test)]
    pub fn entries(&self) -> (&BTreeMap<K, V>, &BTreeMap<K, V>, Vec<&K>) {
        (&self.want, &self.busy, self.retry.keys().collect())
    }

    /// Forgets everything (a new term).
    pub fn clear(&mut self) {
        self.want.clear();
        self.busy.clear();
        self.retry.clear();
    }

    /// Whether nothing is wanted, in flight or pending a retry.
    pub fn is_empty(&self) -> bool {
        self.want.is_empty() && self.busy.is_empty() && self.retry.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug)]
    enum Op {
        Offer(u8, u8),
        Withdraw(u8),
        Start,
        Finish(u8, u8),
        Tick(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..6, 0u8..4).prop_map(|(k, v)| Op::Offer(k, v)),
            (0u8..6).prop_map(Op::Withdraw),
            Just(Op::Start),
            (0u8..6, 0u8..3).prop_map(|(k, how)| Op::Finish(k, how)),
            (0u16..3000).prop_map(Op::Tick),
        ]
    }

    proptest! {
        /// At most one write per key in flight; when every write succeeds from some point
        /// on, each key ends with the last value offered for it (unless withdrawn), and no
        /// value is written twice in a row for a key.
        #[test]
        fn coalesces_and_converges(ops in proptest::collection::vec(op(), 0..200)) {
            let t0 = Instant::now();
            let mut now = t0;
            let mut q: Queue<u8, u8> = Queue::default();
            let mut last_offer: BTreeMap<u8, Option<u8>> = BTreeMap::new();
            let mut written: BTreeMap<u8, u8> = BTreeMap::new();
            let mut started: BTreeMap<u8, u8> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Offer(k, v) => { q.offer(k, v); last_offer.insert(k, Some(v)); }
                    Op::Withdraw(k) => { q.withdraw(&k); last_offer.insert(k, None); }
                    Op::Start => {
                        if let Some((k, v)) = q.next(now) {
                            prop_assert!(!started.contains_key(&k), "two writes of {k} in flight");
                            started.insert(k, v);
                        }
                    }
                    Op::Finish(k, how) => {
                        if let Some(v) = started.remove(&k) {
                            let how = match how {
                                0 => Done::Written,
                                1 => Done::RetryAfter(Duration::from_millis(500)),
                                _ => Done::Dropped,
                            };
                            if how == Done::Written { written.insert(k, v); }
                            if how == Done::Dropped { last_offer.insert(k, None); q.withdraw(&k); }
                            q.done(&k, how, now);
                        }
                    }
                    Op::Tick(ms) => now += Duration::from_millis(u64::from(ms)),
                }
                prop_assert_eq!(q.in_flight(), started.len());
            }
            // Drain: every write succeeds.
            for (k, v) in std::mem::take(&mut started) {
                written.insert(k, v);
                q.done(&k, Done::Written, now);
            }
            now += Duration::from_secs(10);
            while let Some((k, v)) = q.next(now) {
                written.insert(k, v);
                q.done(&k, Done::Written, now);
            }
            prop_assert!(q.is_empty());
            for (k, want) in last_offer {
                if let Some(v) = want {
                    prop_assert_eq!(written.get(&k), Some(&v), "key {}", k);
                }
            }
        }
    }

    #[test]
    fn a_value_being_written_is_not_queued_again_and_a_failure_waits() {
        let t0 = Instant::now();
        let mut q: Queue<&str, u8> = Queue::default();
        q.offer("a", 1);
        assert_eq!(q.next(t0), Some(("a", 1)));
        q.offer("a", 1);
        assert_eq!(q.waiting(), 0, "same value in flight: coalesced");
        q.offer("a", 2);
        assert_eq!(q.next(t0), None, "one write per key at a time");
        q.done(&"a", Done::RetryAfter(Duration::from_secs(1)), t0);
        assert_eq!(q.next(t0), None, "retry waits");
        assert_eq!(q.next_retry(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(
            q.next(t0 + Duration::from_secs(1)),
            Some(("a", 2)),
            "the newest value"
        );
        q.retain(|_| false);
        assert!(q.is_empty());
    }
}

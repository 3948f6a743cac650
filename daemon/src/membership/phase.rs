//! Where the heartbeat tick falls: on the wall clock's multiples of the heartbeat interval.
//!
//! At rest the membership thread's cost is its wake-ups, not its work: an owner sends a
//! heartbeat every interval (25 ms) and hears those of the owners it watches, so with
//! three nodes that all own L2 IPs each thread is woken ~40 times a second by its own tick
//! and ~80 times by the others' heartbeats, each falling at its own phase. With every
//! node's tick on the same phase of the wall clock (kept in step by NTP in any cluster,
//! the same clock on one host), a node's own tick and the heartbeats of the others come
//! in the same short window, and one wake-up often reads what several would have.
//!
//! The gossip's own periodic rounds (probe a member, gossip, announce: each every 100 ms,
//! a multiple of the interval) are moved to the nearest tick for the same reason: the
//! probe, the others' acks and gossip come in the same window as the heartbeats. Their
//! timeouts (the probe's round trip, a suspicion) are not moved.
//!
//! Only the phase moves, never the interval: ticks stay one interval apart, the first
//! comes within one interval of the start, and the thresholds of the failure detector
//! are untouched. A step of the wall clock moves the phase once, giving one gap shorter
//! than the interval (never a longer one).
use std::time::Duration;

/// Time from now until the next tick: the next instant whose time since the Unix epoch
/// (`since_epoch` is now's) is a multiple of `interval`, at least `at_least` from now.
///
/// After a tick, `at_least` is half an interval: a tick that ran a little early by the
/// wall clock (the monotonic clock and the wall clock are slewed apart) does not run again
/// a moment later, and one that ran late does not leave the next one in a few µs.
pub fn until_aligned(since_epoch: Duration, interval: Duration, at_least: Duration) -> Duration {
    let step = interval.as_nanos();
    if step == 0 {
        return at_least;
    }
    let into = since_epoch.as_nanos() % step;
    let mut wait = step - into;
    let floor = at_least.as_nanos();
    if wait < floor {
        // Whole intervals up to the floor: the loop runs at most once.
        wait += (floor - wait).div_ceil(step) * step;
    }
    // `wait` is at most `at_least + interval`, both Durations: it fits in u64 nanoseconds
    // for any sane interval; saturate rather than panic on an absurd one.
    Duration::from_nanos(u64::try_from(wait).unwrap_or(u64::MAX))
}

/// The tick nearest to `at` (its time since the Unix epoch), by at most half an interval
/// either way: where a periodic round of the gossip (a probe, a gossip, an announce) is
/// moved so that it falls in the heartbeat's window. Nearest, not next: a round that
/// fired a little late is not pushed a whole interval on, so the rounds keep their period
/// on average and their phase once it is set.
pub fn nearest_tick(at: Duration, interval: Duration) -> Duration {
    let step = interval.as_nanos();
    if step == 0 {
        return at;
    }
    let into = at.as_nanos() % step;
    if into * 2 <= step {
        at - Duration::from_nanos(u64::try_from(into).unwrap_or(0))
    } else {
        at + Duration::from_nanos(u64::try_from(step - into).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_tick_on_the_phase_waits_a_whole_interval() {
        let i = Duration::from_millis(25);
        let on = Duration::from_millis(1_700_000_000_000);
        assert_eq!(until_aligned(on, i, i / 2), i);
        assert_eq!(
            until_aligned(on + Duration::from_millis(3), i, i / 2),
            Duration::from_millis(22)
        );
    }

    #[test]
    fn a_tick_just_before_the_phase_skips_to_the_next_one() {
        let i = Duration::from_millis(25);
        let early = Duration::from_millis(1_700_000_000_000) - Duration::from_micros(10);
        assert_eq!(
            until_aligned(early, i, i / 2),
            i + Duration::from_micros(10)
        );
        assert_eq!(
            until_aligned(early, i, Duration::ZERO),
            Duration::from_micros(10)
        );
    }

    #[test]
    fn a_round_moves_to_the_nearest_tick_either_way() {
        let i = Duration::from_millis(25);
        let tick = Duration::from_millis(1_700_000_000_000);
        assert_eq!(nearest_tick(tick + Duration::from_millis(3), i), tick);
        assert_eq!(nearest_tick(tick - Duration::from_millis(3), i), tick);
        assert_eq!(nearest_tick(tick + Duration::from_millis(13), i), tick + i);
        assert_eq!(nearest_tick(tick, i), tick);
    }

    proptest! {
        #[test]
        fn the_nearest_tick_is_a_multiple_within_half_an_interval(
            at_ns in 0u64..=u64::MAX / 2,
            interval_us in 1u64..1_000_000,
        ) {
            let (at, interval) = (Duration::from_nanos(at_ns), Duration::from_micros(interval_us));
            let tick = nearest_tick(at, interval);
            prop_assert_eq!(tick.as_nanos() % interval.as_nanos(), 0);
            let off = tick.abs_diff(at);
            prop_assert!(off * 2 <= interval);
        }


        #[test]
        fn lands_on_a_multiple_no_sooner_than_asked_and_within_an_interval_of_it(
            now_ns in 0u64..=u64::MAX / 2,
            interval_us in 1u64..1_000_000,
            at_least_us in 0u64..2_000_000,
        ) {
            let (now, interval) = (Duration::from_nanos(now_ns), Duration::from_micros(interval_us));
            let at_least = Duration::from_micros(at_least_us);
            let wait = until_aligned(now, interval, at_least);
            prop_assert_eq!((now + wait).as_nanos() % interval.as_nanos(), 0);
            prop_assert!(wait >= at_least);
            prop_assert!(wait <= at_least + interval);
            prop_assert!(!wait.is_zero());
        }
    }
}

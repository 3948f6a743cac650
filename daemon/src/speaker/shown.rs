//! Which allocation the cluster loop shows (announces) of each snapshot: the allocation of
//! record while this speaker's writer publishes one (one allocator on the leader), else
//! its own allocator's, following the record. A state machine over the loop's inputs,
//! apart from the loop, so that its rules are tested without a cluster; among them, a
//! writer task that ended counts as not allocating: its last published allocation stays
//! in the watch, and must not hold the loop's own allocator back for good.

use crate::ipam::Assignments;
use crate::snapshot::Snapshot;
use crate::status::writer::Allocated;

use super::allocator::{recorded_only, Allocator};

/// What the writer's watch said when it changed.
#[derive(Debug)]
pub enum Published {
    /// Its current value: the allocation of record of a snapshot, or none (the writer
    /// does not, or not yet, allocate).
    Now(Option<Allocated>),
    /// The writer task ended (the watch's sender is gone).
    Ended,
}

/// The loop's own allocator and where the last shown allocation came from.
#[derive(Debug)]
pub struct Shown {
    alloc: Allocator,
    /// Whether the last snapshot shown was shown from the allocation of record.
    from_record: bool,
    writer_runs: bool,
}

impl Default for Shown {
    fn default() -> Self {
        Shown {
            alloc: Allocator::default(),
            from_record: false,
            writer_runs: true,
        }
    }
}

impl Shown {
    /// Whether the writer task still runs (the loop watches it only then).
    pub fn writer_runs(&self) -> bool {
        self.writer_runs
    }

    /// A new snapshot; `publishing`: the writer's watch holds an allocation. What to show
    /// of it now (only what is recorded), or `None` when the allocator of record runs here
    /// (it is shown once the writer has allocated for it, [`Shown::published`]).
    pub fn snapshot(&mut self, snap: &Snapshot, publishing: bool) -> Option<Assignments> {
        if self.writer_runs && publishing {
            self.alloc = Allocator::default();
            return None;
        }
        // Every speaker takes the record over its own result wherever they differ, and
        // announces only what is recorded.
        let (a, _) = self.alloc.step_following(snap);
        self.from_record = false;
        Some(recorded_only(snap, &a))
    }

    /// The writer's watch changed while `current` is the latest snapshot: what to show of
    /// it now, if anything.
    pub fn published(&mut self, current: Option<&Snapshot>, p: Published) -> Option<Assignments> {
        let record = match p {
            Published::Now(record) => record,
            Published::Ended => {
                self.writer_runs = false;
                None
            }
        };
        let snap = current?;
        match record {
            Some(rec) if rec.snap.same_as(snap) => {
                self.alloc = Allocator::default();
                self.from_record = true;
                Some(recorded_only(snap, &rec.assignments))
            }
            // The writer has not taken the current snapshot yet.
            Some(_) => None,
            // It stopped allocating: this speaker's own allocator takes over from the
            // record, for the snapshot it was waiting for too.
            None if self.from_record || self.alloc.is_idle() => {
                let (a, _) = self.alloc.step_following(snap);
                self.from_record = false;
                Some(recorded_only(snap, &a))
            }
            None => None,
        }
    }
}

#[cfg(test)]
#[path = "shown_tests.rs"]
mod tests;

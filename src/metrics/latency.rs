//! When windows close, in wall time: the clock that decision latency is
//! measured from.
//!
//! Timely timestamps are watermarks (the largest event time seen minus the
//! allowed lateness). The window operator emits a first revision of a
//! window ending at `e` once the input frontier passes `e − lateness`, and
//! the window is final once the frontier passes `e`: no record for it can
//! arrive any more. The forecast stage forecasts from final windows only,
//! so a decision for the window ending at `e` can be made from the moment
//! the frontier passes `e`: that is the window's close here, and what the
//! decision latency is measured from. Each worker of the process tells the clock its
//! input frontier when it advances ([`CloseClock::advanced`]); the
//! process' frontier is the least of them, and the clock keeps the wall
//! time at which it first reached each value. A decision made for the
//! window ending at `e` then asks [`CloseClock::closed_at`] when that was.
//!
//! In a job of several processes the clock sees only its own process'
//! workers, so a window may close (everywhere) a little after this process
//! saw it close: the latency reported is then an upper bound.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Instant;

use prescale_dataflows::time::Millis;

/// How many frontier changes the clock remembers: decisions come within a
/// few windows of their close, so older entries are never asked for.
const REMEMBERED: usize = 1 << 16;

/// Wall time at which this process' input frontier passed each event time.
#[derive(Default)]
pub struct CloseClock {
    /// Input frontier of each local worker.
    slots: Mutex<Vec<Option<Millis>>>,
    /// (frontier, when it was first reached), frontiers increasing.
    passed: Mutex<VecDeque<(Millis, Instant)>>,
}

impl CloseClock {
    /// Starts over for a job of `workers` workers in this process.
    pub fn start(&self, workers: usize) {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *slots = vec![None; workers];
        self.passed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
    }

    /// Worker `local` (its index within the process) has advanced its input
    /// frontier to `frontier`.
    pub fn advanced(&self, local: usize, frontier: Millis) {
        let now = Instant::now();
        let Some(least) = self.update(local, frontier) else { return };
        let mut passed = self.passed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if passed.back().is_none_or(|&(f, _)| least > f) {
            passed.push_back((least, now));
            if passed.len() > REMEMBERED {
                passed.pop_front();
            }
        }
    }

    /// Sets a worker's slot; returns the process' frontier once every
    /// worker has one.
    fn update(&self, local: usize, frontier: Millis) -> Option<Millis> {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *slots.get_mut(local)? = Some(frontier);
        least(&slots)
    }

    /// The process' input frontier: the least of its workers', once every
    /// worker has advanced.
    pub fn frontier(&self) -> Option<Millis> {
        least(&self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// When the window ending at `end` closed: when the process' input
    /// frontier first passed `end`. `None` if it has not, or so long ago
    /// that the clock forgot.
    pub fn closed_at(&self, end: Millis) -> Option<Instant> {
        self.close(end).map(|(_, at)| at)
    }

    /// Whether the window ending at `end` closed only because the input
    /// ended (every worker's frontier jumped to the end of time): such a
    /// close flushes every pending window of every width at once, which a
    /// stream that goes on never does, so a benchmark of the running
    /// stream times its decisions apart.
    pub fn closed_by_end_of_input(&self, end: Millis) -> bool {
        self.close(end).is_some_and(|(f, _)| f == Millis::MAX)
    }

    /// The first frontier past `end` and when it was reached.
    fn close(&self, end: Millis) -> Option<(Millis, Instant)> {
        let passed = self.passed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = passed.partition_point(|&(f, _)| f <= end);
        // Before the first remembered entry, the close may be older still.
        if first == 0 && passed.len() >= REMEMBERED {
            return None;
        }
        passed.get(first).copied()
    }
}

/// The least slot, once every slot is set (`None` sorts first).
fn least(slots: &[Option<Millis>]) -> Option<Millis> {
    slots.iter().copied().min()?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_closes_when_the_slowest_worker_passes_its_end() {
        let clock = CloseClock::default();
        clock.start(2);
        clock.advanced(0, 300_000);
        assert_eq!(clock.closed_at(300_000), None, "worker 1 has not advanced");
        clock.advanced(1, 200_000);
        let first = clock.closed_at(199_000);
        assert_eq!(clock.closed_at(200_000), None, "a window ending at the frontier is not final yet");
        assert!(first.is_some());
        assert_eq!(clock.closed_at(300_000), None, "worker 1 is still before 300 s");
        clock.advanced(1, 300_000);
        assert_eq!(clock.closed_at(300_000), None, "the frontier is at 300 s, not past it");
        clock.advanced(1, 301_000);
        assert_eq!(clock.closed_at(300_000), None, "worker 0 is at 300 s");
        clock.advanced(0, 360_000);
        let second = clock.closed_at(300_000);
        assert!(second.is_some() && second >= first);
        assert_eq!(clock.frontier(), Some(301_000));
        // A window that ended earlier closed no later than the first entry.
        assert_eq!(clock.closed_at(100_000), first);
        // The end of the input closes everything.
        clock.advanced(0, Millis::MAX);
        assert_eq!(clock.closed_at(400_000), None);
        assert!(!clock.closed_by_end_of_input(400_000), "not closed yet");
        clock.advanced(1, Millis::MAX);
        assert!(clock.closed_at(400_000).is_some());
        assert!(clock.closed_by_end_of_input(400_000));
        assert!(!clock.closed_by_end_of_input(300_000), "closed while the input ran");
    }
}

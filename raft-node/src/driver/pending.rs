//! The proposals of one group waiting for their entries to be applied, in
//! index order.
//!
//! A leader's proposals get increasing indexes, so nearly every insert goes
//! at the back and every removal takes a run from the front: a deque does
//! both without the node allocations and rebalancing of a search tree.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use raft_api::LogIndex;

/// Waiters by log index, each with the time it was proposed; at most one
/// per index.
#[derive(Debug)]
pub(super) struct Pending<W> {
    queue: VecDeque<(LogIndex, W, Instant)>,
}

/// Waiters shared by the consensus loop and a group's apply task: those of
/// entries handed to the apply task. The apply task takes them as it
/// answers them; the loop takes those that waited too long, even while the
/// state machine is stuck, so every proposal is answered in time.
pub(super) struct Handed<W>(Mutex<Pending<W>>);

impl<W> Default for Handed<W> {
    fn default() -> Self {
        Self(Mutex::new(Pending::default()))
    }
}

impl<W> Handed<W> {
    /// The waiters, locked. Whoever takes a waiter out answers it, so a
    /// panic while holding the lock leaves nothing half done: a poisoned
    /// lock is used as it is.
    pub(super) fn lock(&self) -> MutexGuard<'_, Pending<W>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<W> Default for Pending<W> {
    fn default() -> Self {
        Self {
            queue: VecDeque::new(),
        }
    }
}

impl<W> Pending<W> {
    /// How many wait.
    pub(super) fn len(&self) -> usize {
        self.queue.len()
    }

    /// Position of the first waiter at `index` or after.
    fn position(&self, index: LogIndex) -> usize {
        self.queue.partition_point(|(i, _, _)| *i < index)
    }

    /// Position of the first waiter after `index`.
    fn after(&self, index: LogIndex) -> usize {
        self.queue.partition_point(|(i, _, _)| *i <= index)
    }

    /// Adds `waiter` for `index`; one already there is dropped (its entry
    /// was replaced).
    pub(super) fn insert(&mut self, index: LogIndex, waiter: W, at: Instant) {
        if self.queue.back().is_none_or(|(last, _, _)| *last < index) {
            self.queue.push_back((index, waiter, at));
            return;
        }
        let at_or_after = self.position(index);
        match self.queue.get_mut(at_or_after) {
            Some(slot) if slot.0 == index => *slot = (index, waiter, at),
            _ => self.queue.insert(at_or_after, (index, waiter, at)),
        }
    }

    /// Moves the waiters of `first..=last` into `into`, keeping the times
    /// they were proposed.
    pub(super) fn move_range_into(&mut self, first: LogIndex, last: LogIndex, into: &mut Self) {
        let from = self.position(first);
        let to = self.after(last);
        if from < to {
            for (index, w, at) in self.queue.drain(from..to) {
                into.insert(index, w, at);
            }
        }
    }

    /// Removes the waiters of every index up to `last`.
    pub(super) fn take_through(&mut self, last: LogIndex) -> Vec<W> {
        let to = self.after(last);
        self.queue.drain(..to).map(|(_, w, _)| w).collect()
    }

    /// Removes the waiters that were proposed more than `timeout` before
    /// `now`.
    pub(super) fn take_expired(&mut self, now: Instant, timeout: Duration) -> Vec<W> {
        let expired = |at: &Instant| now.duration_since(*at) > timeout;
        if !self.queue.iter().any(|(_, _, at)| expired(at)) {
            return Vec::new();
        }
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for (index, w, at) in self.queue.drain(..) {
            if expired(&at) {
                taken.push(w);
            } else {
                kept.push_back((index, w, at));
            }
        }
        self.queue = kept;
        taken
    }

    /// Every waiter, in index order.
    pub(super) fn into_waiters(self) -> impl Iterator<Item = W> {
        self.queue.into_iter().map(|(_, w, _)| w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(indexes: &[u64], at: Instant) -> Pending<u64> {
        let mut p = Pending::default();
        for &i in indexes {
            p.insert(LogIndex(i), i, at);
        }
        p
    }

    /// Moves `first..=last` out of `p` and returns what moved.
    fn take_range(p: &mut Pending<u64>, first: u64, last: u64) -> Vec<u64> {
        let mut into = Pending::default();
        p.move_range_into(LogIndex(first), LogIndex(last), &mut into);
        into.into_waiters().collect()
    }

    #[test]
    fn ranges_come_out_in_index_order_and_only_once() {
        let now = Instant::now();
        let mut p = pending(&[3, 4, 6, 9], now);
        assert_eq!(take_range(&mut p, 4, 8), [4, 6]);
        assert_eq!(take_range(&mut p, 4, 8), Vec::<u64>::new());
        assert_eq!(take_range(&mut p, 10, 12), Vec::<u64>::new());
        assert_eq!(p.len(), 2);
        assert_eq!(p.take_through(LogIndex(5)), [3]);
        assert_eq!(p.take_through(LogIndex(u64::MAX)), [9]);
        assert_eq!(take_range(&mut p, 0, u64::MAX), Vec::<u64>::new());
        p.insert(LogIndex(u64::MAX), 1, now);
        assert_eq!(take_range(&mut p, 9, u64::MAX), [1]);
        assert_eq!(p.into_waiters().count(), 0);
    }

    #[test]
    fn a_moved_range_keeps_its_times() {
        let start = Instant::now();
        let later = start + Duration::from_millis(50);
        let mut from = pending(&[1, 2], start);
        from.insert(LogIndex(3), 3, later);
        from.insert(LogIndex(4), 4, later);
        let mut into = pending(&[], start);
        from.move_range_into(LogIndex(2), LogIndex(3), &mut into);
        from.move_range_into(LogIndex(7), LogIndex(9), &mut into);
        assert_eq!(from.len(), 2);
        assert_eq!(into.len(), 2);
        // Each keeps the time it was proposed at.
        let ms = Duration::from_millis(1);
        assert_eq!(into.take_expired(later, Duration::from_millis(49)), [2]);
        assert_eq!(into.take_expired(later + 2 * ms, ms), [3]);
        assert_eq!(from.into_waiters().collect::<Vec<_>>(), [1, 4]);
    }

    #[test]
    fn an_insert_out_of_order_keeps_the_order_and_replaces_its_index() {
        let now = Instant::now();
        let mut p = pending(&[5, 7], now);
        p.insert(LogIndex(6), 60, now);
        p.insert(LogIndex(2), 20, now);
        p.insert(LogIndex(7), 70, now);
        assert_eq!(p.len(), 4);
        assert_eq!(p.into_waiters().collect::<Vec<_>>(), [20, 5, 60, 70]);
    }

    #[test]
    fn only_waiters_older_than_the_timeout_expire() {
        let start = Instant::now();
        let later = start + Duration::from_millis(50);
        let mut p = pending(&[1, 2], start);
        p.insert(LogIndex(3), 3, later);
        let second = Duration::from_secs(1);
        let ms = Duration::from_millis(1);
        assert!(p.take_expired(later, second).is_empty());
        assert_eq!(
            p.take_expired(later + 2 * ms, Duration::from_millis(51)),
            [1, 2]
        );
        assert_eq!(p.len(), 1);
        assert_eq!(p.take_expired(later + second + ms, second), [3]);
        assert_eq!(p.len(), 0);
    }
}

//! The proposals of one group waiting for their entries to be applied, in
//! index order.
//!
//! A leader's proposals get increasing indexes, so nearly every insert goes
//! at the back and every removal takes a run from the front: a deque does
//! both without the node allocations and rebalancing of a search tree.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use raft_api::LogIndex;

/// Waiters by log index, each with the time it was proposed; at most one
/// per index.
#[derive(Debug)]
pub(super) struct Pending<W> {
    queue: VecDeque<(LogIndex, W, Instant)>,
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

    /// Removes the waiters of `first..=last`, in index order.
    pub(super) fn take_range(&mut self, first: LogIndex, last: LogIndex) -> Vec<W> {
        let from = self.position(first);
        let to = self.after(last);
        if from >= to {
            return Vec::new();
        }
        self.queue.drain(from..to).map(|(_, w, _)| w).collect()
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

    #[test]
    fn ranges_come_out_in_index_order_and_only_once() {
        let now = Instant::now();
        let mut p = pending(&[3, 4, 6, 9], now);
        assert_eq!(p.take_range(LogIndex(4), LogIndex(8)), [4, 6]);
        assert_eq!(p.take_range(LogIndex(4), LogIndex(8)), Vec::<u64>::new());
        assert_eq!(p.take_range(LogIndex(10), LogIndex(12)), Vec::<u64>::new());
        assert_eq!(p.len(), 2);
        assert_eq!(p.take_through(LogIndex(5)), [3]);
        assert_eq!(p.take_through(LogIndex(u64::MAX)), [9]);
        assert_eq!(
            p.take_range(LogIndex(0), LogIndex(u64::MAX)),
            Vec::<u64>::new()
        );
        p.insert(LogIndex(u64::MAX), 1, now);
        assert_eq!(p.take_range(LogIndex(9), LogIndex(u64::MAX)), [1]);
        assert_eq!(p.into_waiters().count(), 0);
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

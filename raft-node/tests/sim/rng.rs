//! The simulator's seeded random source: the engine's generator plus the
//! draws a fault schedule needs.

use raft_node::engine::rng::Rng;

/// A seeded stream of the simulator's random choices.
#[derive(Clone, Debug)]
pub struct SimRng(Rng);

impl SimRng {
    pub fn new(seed: u64) -> Self {
        Self(Rng::new(seed))
    }

    /// Uniform in `[low, high)`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        self.0.range(low, high)
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.range(0, 1000) < per_mille
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.range(0, items.len() as u64) as usize]
    }
}

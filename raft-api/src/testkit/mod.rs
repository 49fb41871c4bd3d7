//! Conformance suites every backend runs, and the linearizability checker
//! the simulator and the end-to-end tests judge client histories with
//! (feature `testkit`).

pub mod lin;
pub mod log_store;
pub mod transport;

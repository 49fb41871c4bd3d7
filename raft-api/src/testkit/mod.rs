//! Conformance suites every backend runs (feature `testkit`).

pub mod log_store;
pub mod transport;

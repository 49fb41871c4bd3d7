//! Benchmarks of the Raft library.

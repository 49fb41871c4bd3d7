//! A Raft consensus library.
//!
//! [`engine`] is the consensus core: one Raft group as a pure, deterministic
//! state machine that takes inputs (messages, ticks, proposals) and returns
//! actions (persist, send, apply). It does no I/O and needs no async runtime,
//! so it can be driven by any runtime or by a simulator.

#[cfg(feature = "runtime")]
pub mod backends;
#[cfg(feature = "runtime")]
pub mod driver;
pub mod engine;
pub mod error;
pub mod session;

pub use engine::{Action, Engine, EngineInit, MembershipChange, ReadMode, Role};
pub use error::{AdminError, ChangeError, ProposeError, ReadError, StepError, TransferError};

/// The README's Rust examples, compiled and run as doctests so they stay
/// true.
#[cfg(all(doctest, feature = "mem"))]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

//! The LogStore conformance suite (being written).

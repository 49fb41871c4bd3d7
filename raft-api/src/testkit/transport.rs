//! The Transport conformance suite (being written).

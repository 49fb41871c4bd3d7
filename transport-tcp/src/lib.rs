//! transport-tcp (being written).

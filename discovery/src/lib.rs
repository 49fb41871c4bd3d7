//! discovery (being written).

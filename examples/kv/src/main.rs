//! `raft-kv`: a replicated key-value server.

fn main() {}

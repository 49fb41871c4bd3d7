//! A tiny run of the baseline workload on both libraries.

#![allow(missing_docs)]

use benches::baseline::{self, ours, peer};

#[test]
fn both_libraries_complete_a_tiny_run_with_one_client() {
    let o = ours::run(1, 200).unwrap();
    assert_eq!((o.library, o.clients, o.ops), ("ours", 1, 200));
    assert!(o.seconds > 0.0);
    let p = peer::run(1, 200).unwrap();
    assert_eq!((p.library, p.clients, p.ops), ("openraft", 1, 200));
    assert!(p.seconds > 0.0);
}

#[test]
fn a_comparison_yields_one_pair_per_client_count() {
    let mut seen = Vec::new();
    let pairs = baseline::compare(&[1, 4], |n| 50 * n as u64, |p| seen.push(p.clients)).unwrap();
    assert_eq!(seen, [1, 4]);
    assert_eq!(pairs.len(), 2);
    for p in &pairs {
        assert_eq!(p.ours.ops, p.openraft.ops);
        assert!(p.ratio().is_finite() && p.ratio() > 0.0);
    }
    assert_eq!(pairs[1].ours.ops, 200);
}

//! Criterion benchmarks, one module per library area (STYLE.md §10).
use criterion::criterion_main;

mod stats;

criterion_main!(stats::benches);

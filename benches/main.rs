//! Criterion benchmarks, one module per library area (STYLE.md §10). Each module exposes a group `benches`.

mod curvature;
mod gemm;
mod stats;
mod step;

criterion::criterion_main!(gemm::benches, step::benches, stats::benches, curvature::benches);

//! Benchmarks. Each module exposes a criterion group `benches`; list them in `criterion_main!`.

use criterion::criterion_main;

mod curvature;

criterion_main!(curvature::benches);

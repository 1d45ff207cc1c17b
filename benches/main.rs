//! Criterion benchmarks, one module per library area (STYLE.md §10).

mod step;

criterion::criterion_main!(step::benches);

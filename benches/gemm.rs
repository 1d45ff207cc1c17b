//! `gemm/…`: the machine's ceiling. faer's GEMM on square 1024³ products and on the shapes of one
//! 1024-sample chunk of the `stats` scenario, single-threaded and on all cores, so every other benchmark's
//! GFLOP/s can be read as a fraction of what the hardware gives this library.

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use faer::{Mat, Par};
use noether::linalg::gemm_par;
use noether::Real;
use std::time::Duration;

fn bench_shape<T: Real>(c: &mut Criterion, prec: &str, (m, k, n): (usize, usize, usize)) {
    let mut g = c.benchmark_group(format!("gemm/peak_flop/{prec}"));
    g.sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements((2 * m * n * k) as u64));
    let a = Mat::<T>::from_fn(m, k, |i, j| T::from_f64(((i * 7 + j * 3) % 11) as f64 * 0.1));
    let b = Mat::<T>::from_fn(k, n, |i, j| T::from_f64(((i * 5 + j) % 13) as f64 * 0.1));
    let mut out = Mat::<T>::zeros(m, n);
    for (name, par) in [("seq", Par::Seq), ("all_cores", Par::rayon(0))] {
        g.bench_function(BenchmarkId::new(name, format!("{m}x{k}x{n}")), |bch| {
            bch.iter(|| gemm_par(out.as_mut(), false, a.as_ref(), b.as_ref(), T::from_f64(1.0), par))
        });
    }
    g.finish();
}

fn gemm_benches(c: &mut Criterion) {
    for shape in [(1024, 1024, 1024), (1024, 784, 1024), (1024, 1024, 1024 / 4)] {
        bench_shape::<f32>(c, "f32", shape);
        bench_shape::<f64>(c, "f64", shape);
    }
}

criterion_group!(benches, gemm_benches);

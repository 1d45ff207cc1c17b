//! The machine's arithmetic ceiling: f64 FMA throughput of one core and of every core at once, from twelve
//! independent 4-lane FMA chains (enough to cover the FMA latency on two pipes). `peak_fma [SECONDS]`.
//! Prints GFLOP/s and the clock it implies at 2 FMA per cycle (f32 is twice the f64 figure).

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains(iters: u64) -> f64 {
    use std::arch::x86_64::*;
    let mut a = [_mm256_set1_pd(1.0); 12];
    for (i, v) in a.iter_mut().enumerate() {
        *v = _mm256_set1_pd(1.0 + i as f64 * 1e-9);
    }
    let (m, c) = (_mm256_set1_pd(0.999_999_9), _mm256_set1_pd(1e-9));
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = _mm256_fmadd_pd(*v, m, c);
        }
    }
    let mut out = [0.0; 4];
    let mut s = 0.0;
    for v in a {
        _mm256_storeu_pd(out.as_mut_ptr(), v);
        s += out[0];
    }
    s
}

#[cfg(target_arch = "x86_64")]
fn main() {
    if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
        println!("no AVX2+FMA");
        return;
    }
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let iters = (secs * 1.5e8) as u64;
    let run = || {
        let t = std::time::Instant::now();
        // SAFETY: AVX2 and FMA were detected above.
        std::hint::black_box(unsafe { fma_chains(iters) });
        iters as f64 * 12.0 * 8.0 / t.elapsed().as_secs_f64() / 1e9
    };
    let one = run();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all: f64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..cores).map(|_| s.spawn(run)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    println!("f64 FMA peak: one core {one:.1} GFLOP/s ({:.2} GHz at 2 FMA/cycle)", one / 16.0);
    println!("f64 FMA peak: {cores} cores {all:.1} GFLOP/s (f32: {:.0})", 2.0 * all);
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("peak_fma measures x86_64 AVX2+FMA only");
}

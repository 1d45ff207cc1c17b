//! The machine's arithmetic ceiling: f64 FMA throughput of one core and of every core at once, from twelve
//! independent FMA chains (enough to cover the FMA latency on two pipes), with 256-bit (AVX2) vectors and, where
//! the CPU has AVX-512F, with 512-bit vectors. `peak_fma [SECONDS]`. Prints GFLOP/s per vector width and the
//! clock each implies at 2 FMA per cycle; f32 is twice the f64 figure. The machine's peak is the larger of the two
//! (on a CPU with one 512-bit FMA unit per core the two widths give about the same figure).

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_chains_256(iters: u64) -> f64 {
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
#[target_feature(enable = "avx512f")]
unsafe fn fma_chains_512(iters: u64) -> f64 {
    use std::arch::x86_64::*;
    let mut a = [_mm512_set1_pd(1.0); 12];
    for (i, v) in a.iter_mut().enumerate() {
        *v = _mm512_set1_pd(1.0 + i as f64 * 1e-9);
    }
    let (m, c) = (_mm512_set1_pd(0.999_999_9), _mm512_set1_pd(1e-9));
    for _ in 0..iters {
        for v in a.iter_mut() {
            *v = _mm512_fmadd_pd(*v, m, c);
        }
    }
    a.iter().map(|v| _mm512_reduce_add_pd(*v)).sum()
}

/// GFLOP/s of `chains(iters)` with `lanes` f64 lanes per vector, on one core and on every core at once.
#[cfg(target_arch = "x86_64")]
fn measure(secs: f64, lanes: f64, chains: unsafe fn(u64) -> f64) -> (f64, f64) {
    let iters = (secs * 1.5e8 * 4.0 / lanes) as u64;
    let run = || {
        let t = std::time::Instant::now();
        // SAFETY: the caller checked the CPU features `chains` needs.
        std::hint::black_box(unsafe { chains(iters) });
        iters as f64 * 12.0 * 2.0 * lanes / t.elapsed().as_secs_f64() / 1e9
    };
    let one = run();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let all: f64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..cores).map(|_| s.spawn(run)).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    (one, all)
}

#[cfg(target_arch = "x86_64")]
fn main() {
    if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")) {
        println!("no AVX2+FMA");
        return;
    }
    let secs: f64 = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut widths = vec![("AVX2 (256-bit)", 4.0, fma_chains_256 as unsafe fn(u64) -> f64)];
    if std::arch::is_x86_feature_detected!("avx512f") {
        widths.push(("AVX-512 (512-bit)", 8.0, fma_chains_512 as unsafe fn(u64) -> f64));
    }
    let mut peak: f64 = 0.0;
    for (name, lanes, chains) in widths {
        let (one, all) = measure(secs, lanes, chains);
        println!(
            "f64 FMA peak, {name}: one core {one:.1} GFLOP/s ({:.2} GHz at 2 FMA/cycle); {cores} cores {all:.1} \
             GFLOP/s (f32: {:.0})",
            one / (4.0 * lanes),
            2.0 * all
        );
        peak = peak.max(all);
    }
    println!("machine peak: {peak:.1} GFLOP/s f64, {:.0} f32 on {cores} cores", 2.0 * peak);
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    println!("peak_fma measures x86_64 AVX2+FMA (and AVX-512F where present) only");
}

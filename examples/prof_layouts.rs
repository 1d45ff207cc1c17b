//! faer's GEMM on one core for the four operand layouts of a column-major destination (1024³ and the pass's
//! 1024 × 1024 × 1024 input-gradient shape), to find which layout needs a copy.
use faer::{Mat, Par};
use noether::linalg::gemm_par;
use std::time::Instant;
fn main() {
    let n = 1024usize;
    let a = Mat::<f64>::from_fn(n, n, |i, j| ((i * 7 + j * 3) % 11) as f64 * 0.1);
    let b = Mat::<f64>::from_fn(n, n, |i, j| ((i * 5 + j * 3) % 13) as f64 * 0.1);
    let mut c = Mat::<f64>::zeros(n, n);
    let f = 2.0 * (n * n * n) as f64;
    for (name, ta, tb) in [
        ("lhs col, rhs col", false, false),
        ("lhs row, rhs col", true, false),
        ("lhs col, rhs row", false, true),
        ("lhs row, rhs row", true, true),
    ] {
        let l = if ta { a.as_ref().transpose() } else { a.as_ref() };
        let r = if tb { b.as_ref().transpose() } else { b.as_ref() };
        gemm_par(c.as_mut(), false, l, r, 1.0, Par::Seq);
        let t = (0..5)
            .map(|_| {
                let t = Instant::now();
                gemm_par(c.as_mut(), false, l, r, 1.0, Par::Seq);
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min);
        println!("{name}: {:.1} GFLOP/s", f / t / 1e9);
    }
}

//! Small dense linear-algebra kernels shared by the engine: one GEMM entry point that picks faer's
//! GEMM or a fused loop by shape, and column reductions on `[B, d]` batch matrices.

use crate::real::Real;
use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};

/// `dst ← beta·dst + alpha·lhs·rhs` (beta ∈ {0, 1}: `accumulate` adds to `dst`, otherwise it is replaced).
/// Sequential: parallelism is decided by callers, never hidden inside kernels.
#[inline]
pub fn gemm<T: Real>(dst: MatMut<'_, T>, accumulate: bool, lhs: MatRef<'_, T>, rhs: MatRef<'_, T>, alpha: T) {
    let beta = if accumulate { Accum::Add } else { Accum::Replace };
    matmul(dst, beta, lhs, rhs, alpha, Par::Seq);
}

/// Per-row squared norms of a `[B, d]` matrix: `out[n] = Σ_j a[n, j]²` (written, not accumulated).
pub fn row_sq_norms_into<T: Real>(a: MatRef<'_, T>, out: &mut [T]) {
    debug_assert_eq!(out.len(), a.nrows());
    out.iter_mut().for_each(|v| *v = T::zero());
    for j in 0..a.ncols() {
        let col = a.col(j);
        for (n, o) in out.iter_mut().enumerate() {
            let v = col[n];
            *o += v * v;
        }
    }
}

/// Column sums of a `[B, d]` matrix times `alpha`, written into (or, with `accumulate`, added to) `out`.
pub fn col_sums_into<T: Real>(a: MatRef<'_, T>, alpha: T, accumulate: bool, out: &mut [T]) {
    debug_assert_eq!(out.len(), a.ncols());
    for (j, o) in out.iter_mut().enumerate() {
        let col = a.col(j);
        let mut s = T::zero();
        for n in 0..a.nrows() {
            s += col[n];
        }
        *o = if accumulate { *o + alpha * s } else { alpha * s };
    }
}

/// Dot product in f64.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Squared Euclidean norm in f64.
pub fn norm_sq(a: &[f64]) -> f64 {
    dot(a, a)
}

//! `nn.Linear`: `y = W x + b`, `W` `[d_out, d_in]` row-major in θ, `b` `[d_out]`.
//!
//! Batches are channel-major: a vector batch is a row-major `[d, B]` matrix (one column per sample). With
//! `X` `[d_in, B]` and `Δ = ∂ℓ_n/∂y` `[d_out, B]` (per sample, not divided by B):
//! `Y = W X + b1ᵀ`, `∂X = WᵀΔ`, `∂W = α Δ Xᵀ`, `∂b = α Δ1`; the per-sample gradient of `W` is `δ_n x_nᵀ`.

use crate::linalg::gemm_par;
use crate::real::Real;
use faer::{MatMut, MatRef, Par};
use std::ops::Range;

/// A resolved `nn.Linear`.
#[derive(Clone, Debug, PartialEq)]
pub struct Linear {
    /// Input width.
    pub d_in: usize,
    /// Output width.
    pub d_out: usize,
    /// Range of `weight` in θ.
    pub weight: Range<usize>,
    /// Range of `bias` in θ (none without bias).
    pub bias: Option<Range<usize>>,
}

pub(crate) fn rm<T>(s: &[T], r: usize, c: usize) -> MatRef<'_, T> {
    MatRef::from_row_major_slice(&s[..r * c], r, c)
}
pub(crate) fn rm_mut<T>(s: &mut [T], r: usize, c: usize) -> MatMut<'_, T> {
    MatMut::from_row_major_slice_mut(&mut s[..r * c], r, c)
}

/// `out (+)= α·(row sums of m)` (`m` `[rows, cols]` row-major; `acc`: add, else overwrite), by
/// [`crate::linalg::col_sums_into`] on the same memory read as a `[cols, rows]` column-major matrix (lane-wise
/// sums: vectorised, unlike one running sum per row).
pub(crate) fn row_sums_into<T: Real>(m: &[T], rows: usize, cols: usize, alpha: T, acc: bool, out: &mut [T]) {
    let a = MatRef::from_column_major_slice(&m[..rows * cols], cols, rows);
    crate::linalg::col_sums_into(a, alpha, acc, &mut out[..rows]);
}

/// Adds `b_j` to row j of `y` `[rows, cols]` row-major.
pub(crate) fn add_bias_rows<T: Real>(y: &mut [T], b: &[T], cols: usize) {
    for (j, &bj) in b.iter().enumerate() {
        y[j * cols..(j + 1) * cols].iter_mut().for_each(|v| *v += bj);
    }
}

impl Linear {
    fn w<'a, T>(&self, theta: &'a [T]) -> MatRef<'a, T> {
        rm(&theta[self.weight.clone()], self.d_out, self.d_in)
    }

    /// `Y = W X + b` for a batch of `b` samples.
    pub fn forward<T: Real>(&self, theta: &[T], x: &[T], y: &mut [T], b: usize, par: Par) {
        gemm_par(rm_mut(y, self.d_out, b), false, self.w(theta), rm(x, self.d_in, b), T::one(), par);
        if let Some(br) = &self.bias {
            add_bias_rows(y, &theta[br.clone()], b);
        }
    }

    /// `∂X (+)= WᵀΔ` when `dx` is given (`acc`: add), and `∂W (+)= αΔXᵀ`, `∂b (+)= αΔ1` into the θ-shaped
    /// `grad` (given as `(grad, α, accumulate)`: add, else overwrite this module's blocks).
    pub fn backward<T: Real>(
        &self,
        theta: &[T],
        x: &[T],
        dy: &[T],
        dx: Option<(&mut [T], bool)>,
        grad: Option<(&mut [T], T, bool)>,
        b: usize,
        par: Par,
    ) {
        let d = rm(dy, self.d_out, b);
        if let Some((g, alpha, acc)) = grad {
            let gw = rm_mut(&mut g[self.weight.clone()], self.d_out, self.d_in);
            gemm_par(gw, acc, d, rm(x, self.d_in, b).transpose(), alpha, par);
            if let Some(br) = &self.bias {
                row_sums_into(dy, self.d_out, b, alpha, acc, &mut g[br.clone()]);
            }
        }
        if let Some((dx, acc)) = dx {
            gemm_par(rm_mut(dx, self.d_in, b), acc, self.w(theta).transpose(), d, T::one(), par);
        }
    }

    /// R-operator forward: `R{Y} = W R{X} + V_W X + v_b` (`rx = None`: the input does not depend on θ).
    pub fn rop_forward<T: Real>(
        &self,
        theta: &[T],
        v: &[T],
        x: &[T],
        rx: Option<&[T]>,
        ry: &mut [T],
        b: usize,
        par: Par,
    ) {
        let vw = rm(&v[self.weight.clone()], self.d_out, self.d_in);
        gemm_par(rm_mut(ry, self.d_out, b), false, vw, rm(x, self.d_in, b), T::one(), par);
        if let Some(rx) = rx {
            gemm_par(rm_mut(ry, self.d_out, b), true, self.w(theta), rm(rx, self.d_in, b), T::one(), par);
        }
        if let Some(br) = &self.bias {
            add_bias_rows(ry, &v[br.clone()], b);
        }
    }

    /// R-operator backward: `R{∂X} = WᵀR{Δ} + V_WᵀΔ`, `R{∂W} += α(R{Δ}Xᵀ + ΔR{X}ᵀ)`, `R{∂b} += αR{Δ}1`.
    pub fn rop_backward<T: Real>(
        &self,
        theta: &[T],
        v: &[T],
        (x, rx): (&[T], Option<&[T]>),
        (dy, rdy): (&[T], &[T]),
        rdx: Option<(&mut [T], bool)>,
        (rg, alpha): (&mut [T], T),
        b: usize,
        par: Par,
    ) {
        let (d, rd) = (rm(dy, self.d_out, b), rm(rdy, self.d_out, b));
        {
            let gw = rm_mut(&mut rg[self.weight.clone()], self.d_out, self.d_in);
            gemm_par(gw, true, rd, rm(x, self.d_in, b).transpose(), alpha, par);
        }
        if let Some(rx) = rx {
            let gw = rm_mut(&mut rg[self.weight.clone()], self.d_out, self.d_in);
            gemm_par(gw, true, d, rm(rx, self.d_in, b).transpose(), alpha, par);
        }
        if let Some(br) = &self.bias {
            row_sums_into(rdy, self.d_out, b, alpha, true, &mut rg[br.clone()]);
        }
        if let Some((rdx, acc)) = rdx {
            let vw = rm(&v[self.weight.clone()], self.d_out, self.d_in);
            gemm_par(rm_mut(rdx, self.d_in, b), acc, self.w(theta).transpose(), rd, T::one(), par);
            gemm_par(rm_mut(rdx, self.d_in, b), true, vw.transpose(), d, T::one(), par);
        }
    }

    /// The per-sample gradient of sample `n` of the batch: `weight` part `δ_n x_nᵀ` then `bias` part `δ_n`,
    /// written into `out` (length of this module's blocks).
    pub fn per_sample_grad_into<T: Real>(&self, x: &[T], dy: &[T], b: usize, n: usize, out: &mut [T]) {
        for j in 0..self.d_out {
            let dj = dy[j * b + n];
            for i in 0..self.d_in {
                out[j * self.d_in + i] = dj * x[i * b + n];
            }
        }
        if self.bias.is_some() {
            let o = self.d_out * self.d_in;
            for j in 0..self.d_out {
                out[o + j] = dy[j * b + n];
            }
        }
    }

    /// Quadratic-form path of the element moments: adds `Σ_n g_{n,k}²` for every coordinate k of this module
    /// into `m` (θ-shaped, f64): `(Δ∘Δ)(X∘X)ᵀ` for the weight (`g_n = δ_n x_nᵀ`), `(Δ∘Δ)1` for the bias.
    /// One GEMM in T per call; the chunk's sums are accumulated in f64.
    pub fn element_moments_into<T: Real>(&self, x: &[T], dy: &[T], b: usize, m: &mut [f64], par: Par) {
        let x2: Vec<T> = x[..self.d_in * b].iter().map(|&v| v * v).collect();
        let d2: Vec<T> = dy[..self.d_out * b].iter().map(|&v| v * v).collect();
        let mut w = vec![T::zero(); self.d_out * self.d_in];
        gemm_par(
            rm_mut(&mut w, self.d_out, self.d_in),
            false,
            rm(&d2, self.d_out, b),
            rm(&x2, self.d_in, b).transpose(),
            T::one(),
            par,
        );
        for (acc, v) in m[self.weight.clone()].iter_mut().zip(&w) {
            *acc += v.to_f64();
        }
        if let Some(br) = &self.bias {
            for (j, acc) in m[br.clone()].iter_mut().enumerate() {
                *acc += d2[j * b..(j + 1) * b].iter().map(|v| v.to_f64()).sum::<f64>();
            }
        }
    }

    /// Quadratic-form path of the per-sample squared gradient norms: `‖g_n‖² += ‖δ_n‖²(‖x_n‖² + [bias])`.
    pub fn grad_sq_norms_into<T: Real>(&self, x: &[T], dy: &[T], b: usize, out: &mut [f64]) {
        let bias = if self.bias.is_some() { 1.0 } else { 0.0 };
        for (n, o) in out.iter_mut().enumerate().take(b) {
            let xs: f64 = (0..self.d_in).map(|i| x[i * b + n].to_f64().powi(2)).sum();
            let ds: f64 = (0..self.d_out).map(|j| dy[j * b + n].to_f64().powi(2)).sum();
            *o += ds * (xs + bias);
        }
    }

    /// Quadratic-form path of the `d × d` Gram moments of a linear pair (DESIGN.md §1): with the per-sample
    /// gradient `G_n = [δ_nx_nᵀ | δ_n]` and `s_n = ‖x_n‖² + [bias]`, adds `Σ_n G_nG_nᵀ = Σ_n s_n δ_nδ_nᵀ`
    /// (`[d_out, d_out]`, row-major) to `delta_gram` and `Σ_n (δ_nx_nᵀ)ᵀ(δ_nx_nᵀ) = Σ_n ‖δ_n‖² x_nx_nᵀ`
    /// (`[d_in, d_in]`, weight only) to `input_gram`, each when given. One `[d, B] × [B, d]` GEMM in T each;
    /// the chunk's sums are accumulated in f64.
    pub fn gram_moments_into<T: Real>(
        &self,
        x: &[T],
        dy: &[T],
        b: usize,
        delta_gram: Option<&mut [f64]>,
        input_gram: Option<&mut [f64]>,
        par: Par,
    ) {
        let sq = |m: &[T], rows: usize, n: usize| {
            (0..rows).fold(T::zero(), |a, r| a + m[r * b + n] * m[r * b + n])
        };
        let one = if self.bias.is_some() { T::one() } else { T::zero() };
        // `Σ_n w_n m_n m_nᵀ` for the columns m_n of the [rows, B] matrix m: (m diag(w)) mᵀ.
        let weighted = |m: &[T], rows: usize, w: &[T], out: &mut [f64]| {
            let scaled: Vec<T> = (0..rows * b).map(|k| m[k] * w[k % b]).collect();
            let mut g = vec![T::zero(); rows * rows];
            gemm_par(
                rm_mut(&mut g, rows, rows),
                false,
                rm(&scaled, rows, b),
                rm(m, rows, b).transpose(),
                T::one(),
                par,
            );
            out.iter_mut().zip(&g).for_each(|(o, v)| *o += v.to_f64());
        };
        if let Some(out) = delta_gram {
            let s: Vec<T> = (0..b).map(|n| sq(x, self.d_in, n) + one).collect();
            weighted(dy, self.d_out, &s, out);
        }
        if let Some(out) = input_gram {
            let w: Vec<T> = (0..b).map(|n| sq(dy, self.d_out, n)).collect();
            weighted(x, self.d_in, &w, out);
        }
    }
}

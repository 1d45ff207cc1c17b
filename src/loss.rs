//! Losses on the network output `f = f(x_n)`: values and output gradients `∂ℓ_n/∂f`.
//!
//! - `Mse`: `ℓ = ½‖f − y‖²`, `∂ℓ/∂f = f − y`.
//! - `CrossEntropy`: `ℓ = logsumexp(f) − f_y`, `∂ℓ/∂f = softmax(f) − e_y` (integer labels).

use crate::error::{Error, Result};
use crate::real::Real;
use faer::reborrow::ReborrowMut;
use faer::{MatMut, MatRef};
use serde::{Deserialize, Serialize};

/// A per-sample loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// `ℓ = ½‖f(x) − y‖²`.
    #[default]
    Mse,
    /// `ℓ = −log softmax(f(x))[y]` with integer labels.
    CrossEntropy,
}

impl Loss {
    /// Parses `mse` or `cross_entropy` (also `ce`).
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "mse" => Ok(Loss::Mse),
            "cross_entropy" | "ce" | "crossentropy" => Ok(Loss::CrossEntropy),
            _ => Err(Error::Unknown { kind: "loss", name: s.into(), expected: "mse, cross_entropy".into() }),
        }
    }

    /// The name accepted by [`Loss::parse`].
    pub fn name(self) -> &'static str {
        match self {
            Loss::Mse => "mse",
            Loss::CrossEntropy => "cross_entropy",
        }
    }

    /// Per-sample losses into `out` (length B). `y` is used by `Mse`, `labels` by `CrossEntropy`.
    pub fn values_into<T: Real>(self, f: MatRef<'_, T>, y: MatRef<'_, T>, labels: &[usize], out: &mut [f64]) {
        let (b, d) = (f.nrows(), f.ncols());
        match self {
            Loss::Mse => {
                out.iter_mut().for_each(|v| *v = 0.0);
                for j in 0..d {
                    let (fc, yc) = (f.col(j), y.col(j));
                    for n in 0..b {
                        let r = fc[n].to_f64() - yc[n].to_f64();
                        out[n] += 0.5 * r * r;
                    }
                }
            }
            Loss::CrossEntropy => {
                for n in 0..b {
                    let mut m = f64::NEG_INFINITY;
                    for j in 0..d {
                        m = m.max(f[(n, j)].to_f64());
                    }
                    let mut s = 0.0;
                    for j in 0..d {
                        s += (f[(n, j)].to_f64() - m).exp();
                    }
                    out[n] = m + s.ln() - f[(n, labels[n])].to_f64();
                }
            }
        }
    }

    /// Sum over the batch of `ℓ_n`, and `∂ℓ_n/∂f` written into `grad` (`[B, d]`, not divided by B).
    pub fn value_and_grad_into<T: Real>(
        self,
        f: MatRef<'_, T>,
        y: MatRef<'_, T>,
        labels: &[usize],
        mut grad: MatMut<'_, T>,
    ) -> f64 {
        let (b, d) = (f.nrows(), f.ncols());
        let mut total = 0.0;
        match self {
            Loss::Mse => {
                for j in 0..d {
                    let (fc, yc) = (f.col(j), y.col(j));
                    let mut gc = grad.rb_mut().col_mut(j);
                    let s = match (
                        fc.try_as_col_major(),
                        yc.try_as_col_major(),
                        gc.rb_mut().try_as_col_major_mut(),
                    ) {
                        (Some(fs), Some(ys), Some(gs)) => {
                            residuals_into(fs.as_slice(), ys.as_slice(), gs.as_slice_mut())
                        }
                        _ => {
                            let mut s = T::zero();
                            for n in 0..b {
                                let r = fc[n] - yc[n];
                                gc[n] = r;
                                s += r * r;
                            }
                            s
                        }
                    };
                    total += 0.5 * s.to_f64();
                }
            }
            Loss::CrossEntropy => {
                for n in 0..b {
                    let mut m = f[(n, 0)];
                    for j in 1..d {
                        m = m.max(f[(n, j)]);
                    }
                    let mut s = T::zero();
                    for j in 0..d {
                        let e = (f[(n, j)] - m).exp();
                        grad[(n, j)] = e;
                        s += e;
                    }
                    let inv = T::one() / s;
                    for j in 0..d {
                        grad[(n, j)] *= inv;
                    }
                    let c = labels[n];
                    grad[(n, c)] -= T::one();
                    total += m.to_f64() + s.to_f64().ln() - f[(n, c)].to_f64();
                }
            }
        }
        total
    }

    /// The loss Hessian times a direction, per sample: `out_n = ∇²_f ℓ_n · v_n`.
    /// Mse: `v_n`. Cross-entropy: `diag(p) v − p (pᵀv)` with `p = softmax(f_n)`. `[B, d]` each.
    pub fn hessian_times_into<T: Real>(self, f: MatRef<'_, T>, v: MatRef<'_, T>, mut out: MatMut<'_, T>) {
        let (b, d) = (f.nrows(), f.ncols());
        match self {
            Loss::Mse => out.copy_from(v),
            Loss::CrossEntropy => {
                for n in 0..b {
                    let mut m = f[(n, 0)];
                    for j in 1..d {
                        m = m.max(f[(n, j)]);
                    }
                    let mut s = T::zero();
                    for j in 0..d {
                        let e = (f[(n, j)] - m).exp();
                        out[(n, j)] = e;
                        s += e;
                    }
                    let inv = T::one() / s;
                    let mut pv = T::zero();
                    for j in 0..d {
                        out[(n, j)] *= inv;
                        pv += out[(n, j)] * v[(n, j)];
                    }
                    for j in 0..d {
                        let p = out[(n, j)];
                        out[(n, j)] = p * (v[(n, j)] - pv);
                    }
                }
            }
        }
    }
}

impl std::str::FromStr for Loss {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Loss::parse(s)
    }
}

crate::linalg::simd_dispatch! {
    /// `g = f − y` and returns `Σ (f − y)²` over contiguous slices (eight independent partial sums): the MSE
    /// output gradient and twice the loss of any batch stored contiguously. Compiled with AVX2 where the CPU
    /// has it (the same sums, four lanes to a vector instead of two).
    pub(crate) fn residuals_into<T: Real>(f: &[T], y: &[T], g: &mut [T]) -> T {
        const LANES: usize = 8;
        let split = f.len() / LANES * LANES;
        let mut acc = [T::zero(); LANES];
        for ((fc, yc), gc) in f[..split]
            .chunks_exact(LANES)
            .zip(y[..split].chunks_exact(LANES))
            .zip(g[..split].chunks_exact_mut(LANES))
        {
            for t in 0..LANES {
                let r = fc[t] - yc[t];
                gc[t] = r;
                acc[t] += r * r;
            }
        }
        let mut s = T::zero();
        for ((&fv, &yv), gv) in f[split..].iter().zip(&y[split..]).zip(&mut g[split..]) {
            let r = fv - yv;
            *gv = r;
            s += r * r;
        }
        acc.iter().fold(s, |a, &v| a + v)
    }
}

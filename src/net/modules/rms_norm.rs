//! Parameter-free RMS normalisation over the whole per-sample tensor (D features):
//! `r = √(mean x² + ε)`, `y = x / r` (an all-zero sample with ε = 0 maps to 0). With ε = 0 (the default)
//! whatever feeds it is exactly scale invariant.
//!
//! Backward `∂x = (∂y − y (yᵀ∂y)/D)/r`. R-operator: `R{r} = yᵀR{x}/D`, `R{y} = (R{x} − y R{r})/r`,
//! `R{∂x} = (R{∂y} − R{y}c/D − y R{c}/D)/r − ∂x R{r}/r` with `c = yᵀ∂y`, `R{c} = R{y}ᵀ∂y + yᵀR{∂y}`.
//! Batches are channel-major `[C, B, HW]`: sample n's features are the HW-runs at `(c·B + n)·HW`.

use crate::real::Real;

/// A resolved RMS normalisation.
#[derive(Clone, Debug, PartialEq)]
pub struct RmsNorm {
    /// ε added to the mean square (0: exact scale invariance).
    pub eps: f64,
}

/// The features of sample `n` as `C` runs of `hw`.
fn runs(c: usize, hw: usize, b: usize, n: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    (0..c).map(move |ch| (ch * b + n) * hw..(ch * b + n + 1) * hw)
}

fn dot<T: Real>(a: &[T], b: &[T], c: usize, hw: usize, bs: usize, n: usize) -> T {
    runs(c, hw, bs, n).fold(T::zero(), |s, r| a[r.clone()].iter().zip(&b[r]).fold(s, |s, (&x, &y)| s + x * y))
}

impl RmsNorm {
    /// `y = x / r` per sample, recording `r` (length B) in `rms`.
    pub fn forward<T: Real>(&self, x: &[T], y: &mut [T], rms: &mut [T], (c, hw, b): (usize, usize, usize)) {
        let inv_d = T::from_f64(1.0 / (c * hw) as f64);
        for n in 0..b {
            let r = (dot(x, x, c, hw, b, n) * inv_d + T::from_f64(self.eps)).sqrt();
            rms[n] = r;
            let s = if r > T::zero() { T::one() / r } else { T::zero() };
            for run in runs(c, hw, b, n) {
                for i in run {
                    y[i] = x[i] * s;
                }
            }
        }
    }

    /// `∂x (+)= (∂y − y (yᵀ∂y)/D)/r`.
    pub fn backward<T: Real>(
        &self,
        y: &[T],
        rms: &[T],
        dy: &[T],
        dx: &mut [T],
        acc: bool,
        (c, hw, b): (usize, usize, usize),
    ) {
        let inv_d = T::from_f64(1.0 / (c * hw) as f64);
        for n in 0..b {
            let s = if rms[n] > T::zero() { T::one() / rms[n] } else { T::zero() };
            let k = dot(y, dy, c, hw, b, n) * inv_d;
            for run in runs(c, hw, b, n) {
                for i in run {
                    let g = (dy[i] - y[i] * k) * s;
                    dx[i] = if acc { dx[i] + g } else { g };
                }
            }
        }
    }

    /// `R{y} = (R{x} − y R{r})/r`, recording `R{r}` in `rrms`.
    pub fn rop_forward<T: Real>(
        &self,
        y: &[T],
        rms: &[T],
        rx: &[T],
        ry: &mut [T],
        rrms: &mut [T],
        (c, hw, b): (usize, usize, usize),
    ) {
        let inv_d = T::from_f64(1.0 / (c * hw) as f64);
        for n in 0..b {
            let rr = dot(y, rx, c, hw, b, n) * inv_d;
            rrms[n] = rr;
            let s = if rms[n] > T::zero() { T::one() / rms[n] } else { T::zero() };
            for run in runs(c, hw, b, n) {
                for i in run {
                    ry[i] = (rx[i] - y[i] * rr) * s;
                }
            }
        }
    }

    /// `R{∂x} (+)= (R{∂y} − R{y}c/D − y R{c}/D)/r − ∂x R{r}/r` (∂x recomputed from `dy`).
    pub fn rop_backward<T: Real>(
        &self,
        (y, ry): (&[T], &[T]),
        (rms, rrms): (&[T], &[T]),
        (dy, rdy): (&[T], &[T]),
        rdx: &mut [T],
        acc: bool,
        (c, hw, b): (usize, usize, usize),
    ) {
        let inv_d = T::from_f64(1.0 / (c * hw) as f64);
        for n in 0..b {
            let s = if rms[n] > T::zero() { T::one() / rms[n] } else { T::zero() };
            let cc = dot(y, dy, c, hw, b, n);
            let rc = dot(ry, dy, c, hw, b, n) + dot(y, rdy, c, hw, b, n);
            for run in runs(c, hw, b, n) {
                for i in run {
                    let dx = (dy[i] - y[i] * cc * inv_d) * s;
                    let g = (rdy[i] - ry[i] * cc * inv_d - y[i] * rc * inv_d) * s - dx * rrms[n] * s;
                    rdx[i] = if acc { rdx[i] + g } else { g };
                }
            }
        }
    }
}

//! Scale invariance of the block `(W_l, b_l)` of a layer whose pre-activation is RMS-normalised:
//! A = I on the block, `e^{λA}` multiplies the block by `e^λ`, `C = ‖θ_block‖²`. A is semi-definite, so
//! `Tr[AΣ] ≥ 0` and C grows forever under SGD (no finite equilibrium without weight decay).

use crate::model::Architecture;
use crate::real::Real;

/// θ ← e^{λA}θ.
pub fn act_in_place<T: Real>(arch: &Architecture, l: usize, theta: &mut [T], lambda: f64) {
    let s = T::from_f64(lambda.exp());
    for v in &mut theta[arch.layer_range(l)] {
        *v *= s;
    }
}

/// `out += A v`.
pub fn a_times_add(arch: &Architecture, l: usize, v: &[f64], out: &mut [f64]) {
    for i in arch.layer_range(l) {
        out[i] += v[i];
    }
}

/// `gᵀAg = ‖g_block‖²`.
pub fn quad<T: Real>(arch: &Architecture, l: usize, g: &[T]) -> f64 {
    g[arch.layer_range(l)].iter().map(|v| v.to_f64() * v.to_f64()).sum()
}

//! Rescaling of hidden unit j of layer l: row j of `W_l` and `b_l[j]` scale by `e^λ`, column j of `W_{l+1}`
//! by `e^{−λ}`. A is diagonal, +1 on the incoming set and −1 on the outgoing set, so
//! `C_j = ‖W_l[j,:]‖² + b_l[j]² − ‖W_{l+1}[:,j]‖²`.

use crate::model::Architecture;
use crate::real::Real;

/// The flat indices of unit j's incoming parameters (row j of `W_l`, then `b_l[j]` if any).
pub fn incoming(arch: &Architecture, l: usize, j: usize) -> impl Iterator<Item = usize> + '_ {
    let ly = arch.layers[l];
    let row = arch.weight_index(l, j, 0);
    let bias = if ly.bias { Some(arch.bias_range(l).start + j) } else { None };
    (row..row + ly.d_in).chain(bias)
}

/// The flat indices of unit j's outgoing parameters (column j of `W_{l+1}`).
pub fn outgoing(arch: &Architecture, l: usize, j: usize) -> impl Iterator<Item = usize> + '_ {
    let next = arch.layers[l + 1];
    (0..next.d_out).map(move |i| arch.weight_index(l + 1, i, j))
}

/// θ ← e^{λA}θ.
pub fn act_in_place<T: Real>(arch: &Architecture, l: usize, j: usize, theta: &mut [T], lambda: f64) {
    let (up, down) = (T::from_f64(lambda.exp()), T::from_f64((-lambda).exp()));
    for i in incoming(arch, l, j) {
        theta[i] *= up;
    }
    for i in outgoing(arch, l, j) {
        theta[i] *= down;
    }
}

/// `out += A v`.
pub fn a_times_add(arch: &Architecture, l: usize, j: usize, v: &[f64], out: &mut [f64]) {
    for i in incoming(arch, l, j) {
        out[i] += v[i];
    }
    for i in outgoing(arch, l, j) {
        out[i] -= v[i];
    }
}

/// `gᵀAg = Σ_in g² − Σ_out g²`.
pub fn quad<T: Real>(arch: &Architecture, l: usize, j: usize, g: &[T]) -> f64 {
    let sq = |i: usize| g[i].to_f64() * g[i].to_f64();
    incoming(arch, l, j).map(sq).sum::<f64>() - outgoing(arch, l, j).map(sq).sum::<f64>()
}

/// The charges of every unit of layer l at once: `‖W_l[j,:]‖² + b_l[j]² − ‖W_{l+1}[:,j]‖²` for j = 0..d.
pub fn layer_charges<T: Real>(arch: &Architecture, l: usize, theta: &[T]) -> Vec<f64> {
    (0..arch.layers[l].d_out).map(|j| quad(arch, l, j, theta)).collect()
}

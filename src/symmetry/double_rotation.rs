//! Double rotation of a linear layer pair (l, l+1) joined by the identity:
//! `(W_{l+1}, W_l, b_l) → (W_{l+1}Q⁻¹, QW_l, Qb_l)`, `Q = e^{λB}`, B symmetric (`d × d`, d = width of layer l).
//! As a generator on θ: A acts as `V ↦ BV` on `[W_l | b_l]` and as `V ↦ −VB` on `W_{l+1}`; it is symmetric in
//! the Frobenius inner product. Charge `C_B = θᵀAθ = ⟨B, W_lW_lᵀ + b_lb_lᵀ − W_{l+1}ᵀW_{l+1}⟩_F`.

use crate::model::Architecture;
use crate::real::Real;
use faer::{Mat, Side};

/// `(e^{λB}, e^{−λB})` through the symmetric eigendecomposition of B.
pub fn exp_pair(b: &Mat<f64>, lambda: f64) -> (Mat<f64>, Mat<f64>) {
    let d = b.nrows();
    let evd = b.self_adjoint_eigen(Side::Lower).expect("eigendecomposition of a symmetric matrix");
    let (u, s) = (evd.U(), evd.S().column_vector());
    let q = Mat::from_fn(d, d, |i, j| (0..d).map(|k| u[(i, k)] * (lambda * s[k]).exp() * u[(j, k)]).sum());
    let qi = Mat::from_fn(d, d, |i, j| (0..d).map(|k| u[(i, k)] * (-lambda * s[k]).exp() * u[(j, k)]).sum());
    (q, qi)
}

/// The pair's incoming block `[W_l | b_l]` as a `d × (d_in + bias)` matrix in f64.
pub fn incoming_block<T: Real>(arch: &Architecture, l: usize, theta: &[T]) -> Mat<f64> {
    let ly = arch.layers[l];
    let nb = usize::from(ly.bias);
    Mat::from_fn(ly.d_out, ly.d_in + nb, |i, j| {
        if j < ly.d_in {
            theta[arch.weight_index(l, i, j)].to_f64()
        } else {
            theta[arch.bias_range(l).start + i].to_f64()
        }
    })
}

/// The pair's outgoing block `W_{l+1}` as a `d_out × d` matrix in f64.
pub fn outgoing_block<T: Real>(arch: &Architecture, l: usize, theta: &[T]) -> Mat<f64> {
    let next = arch.layers[l + 1];
    Mat::from_fn(next.d_out, next.d_in, |i, j| theta[arch.weight_index(l + 1, i, j)].to_f64())
}

fn write_incoming<T: Real>(arch: &Architecture, l: usize, m: &Mat<f64>, theta: &mut [T]) {
    let ly = arch.layers[l];
    for i in 0..ly.d_out {
        for j in 0..ly.d_in {
            theta[arch.weight_index(l, i, j)] = T::from_f64(m[(i, j)]);
        }
        if ly.bias {
            theta[arch.bias_range(l).start + i] = T::from_f64(m[(i, ly.d_in)]);
        }
    }
}

fn write_outgoing<T: Real>(arch: &Architecture, l: usize, m: &Mat<f64>, theta: &mut [T]) {
    let next = arch.layers[l + 1];
    for i in 0..next.d_out {
        for j in 0..next.d_in {
            theta[arch.weight_index(l + 1, i, j)] = T::from_f64(m[(i, j)]);
        }
    }
}

/// Applies an explicit invertible Q: `[W_l | b_l] ← Q[W_l | b_l]`, `W_{l+1} ← W_{l+1} Q⁻¹`.
pub fn apply_q_in_place<T: Real>(
    arch: &Architecture,
    l: usize,
    q: &Mat<f64>,
    q_inv: &Mat<f64>,
    theta: &mut [T],
) {
    let inc = q * incoming_block(arch, l, theta);
    let out = outgoing_block(arch, l, theta) * q_inv;
    write_incoming(arch, l, &inc, theta);
    write_outgoing(arch, l, &out, theta);
}

/// θ ← e^{λA}θ.
pub fn act_in_place<T: Real>(arch: &Architecture, l: usize, b: &Mat<f64>, theta: &mut [T], lambda: f64) {
    let (q, qi) = exp_pair(b, lambda);
    apply_q_in_place(arch, l, &q, &qi, theta);
}

/// `out += A v`.
pub fn a_times_add(arch: &Architecture, l: usize, b: &Mat<f64>, v: &[f64], out: &mut [f64]) {
    let ly = arch.layers[l];
    let next = arch.layers[l + 1];
    let bi = b * incoming_block(arch, l, v);
    for i in 0..ly.d_out {
        for j in 0..ly.d_in {
            out[arch.weight_index(l, i, j)] += bi[(i, j)];
        }
        if ly.bias {
            out[arch.bias_range(l).start + i] += bi[(i, ly.d_in)];
        }
    }
    let ob = outgoing_block(arch, l, v) * b;
    for i in 0..next.d_out {
        for j in 0..next.d_in {
            out[arch.weight_index(l + 1, i, j)] -= ob[(i, j)];
        }
    }
}

/// The matrix charge `W_lW_lᵀ + b_lb_lᵀ − W_{l+1}ᵀW_{l+1}` (`d × d`) of any vector laid out like θ.
pub fn matrix_charge<T: Real>(arch: &Architecture, l: usize, theta: &[T]) -> Mat<f64> {
    let inc = incoming_block(arch, l, theta);
    let out = outgoing_block(arch, l, theta);
    &inc * inc.transpose() - out.transpose() * &out
}

/// `gᵀAg = ⟨B, matrix_charge(g)⟩_F`.
pub fn quad<T: Real>(arch: &Architecture, l: usize, b: &Mat<f64>, g: &[T]) -> f64 {
    let m = matrix_charge(arch, l, g);
    let d = m.nrows();
    (0..d).flat_map(|i| (0..d).map(move |j| (i, j))).map(|(i, j)| b[(i, j)] * m[(i, j)]).sum()
}

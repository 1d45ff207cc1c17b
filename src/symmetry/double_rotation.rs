//! Double rotation of a linear layer pair (l, l+1) joined by the identity:
//! `(W_{l+1}, W_l, b_l) → (W_{l+1}Q⁻¹, QW_l, Qb_l)`, `Q = e^{λB}`, B symmetric (`d × d`, d = width of layer l).
//! As a generator on θ: A acts as `V ↦ BV` on `[W_l | b_l]` and as `V ↦ −VB` on `W_{l+1}`; it is symmetric in
//! the Frobenius inner product. Charge `C_B = θᵀAθ = ⟨B, W_lW_lᵀ + b_lb_lᵀ − W_{l+1}ᵀW_{l+1}⟩_F`.
//!
//! Every verb is written once against a [`PairLayout`] (where the pair's three tensors sit in θ), so that a
//! dense chain's pair ([`PairLayout::of_dense`]) and a module tree's ([`crate::symmetry::linear_pairs`]) share
//! it; the `(arch, l)` functions are the dense chain's entry points.

use crate::model::Architecture;
use crate::real::Real;
use faer::{Mat, Side};

/// Where a linear pair's tensors sit in θ: `W_l` `[d, d_in]` row-major from `w_in`, `b_l` `[d]` from `bias`
/// (none without bias), `W_{l+1}` `[d_out, d]` row-major from `w_out` (PyTorch layout, `weight` is `[out, in]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PairLayout {
    /// Start of `W_l` in θ.
    pub w_in: usize,
    /// Input width of layer l.
    pub d_in: usize,
    /// The pair's hidden width d (output of layer l, input of layer l+1).
    pub d: usize,
    /// Start of `b_l` in θ, if layer l has a bias.
    pub bias: Option<usize>,
    /// Start of `W_{l+1}` in θ.
    pub w_out: usize,
    /// Output width of layer l+1.
    pub d_out: usize,
}

impl PairLayout {
    /// The layout of the dense chain's pair (l, l+1).
    pub fn of_dense(arch: &Architecture, l: usize) -> Self {
        let (ly, next) = (arch.layers[l], arch.layers[l + 1]);
        PairLayout {
            w_in: arch.weight_range(l).start,
            d_in: ly.d_in,
            d: ly.d_out,
            bias: ly.bias.then(|| arch.bias_range(l).start),
            w_out: arch.weight_range(l + 1).start,
            d_out: next.d_out,
        }
    }

    /// Columns of the incoming block: `d_in` (+1 with a bias).
    pub fn in_cols(&self) -> usize {
        self.d_in + usize::from(self.bias.is_some())
    }

    /// The θ index of entry `(i, j)` of `[W_l | b_l]` (`j = d_in` is the bias).
    fn in_index(&self, i: usize, j: usize) -> usize {
        if j < self.d_in {
            self.w_in + i * self.d_in + j
        } else {
            self.bias.expect("the bias column of a pair with a bias") + i
        }
    }

    /// The incoming block `[W_l | b_l]` of any vector laid out like θ, as a `d × (d_in + bias)` matrix in f64.
    pub fn incoming_block<T: Real>(&self, theta: &[T]) -> Mat<f64> {
        Mat::from_fn(self.d, self.in_cols(), |i, j| theta[self.in_index(i, j)].to_f64())
    }

    /// The outgoing block `W_{l+1}` of any vector laid out like θ, as a `d_out × d` matrix in f64.
    pub fn outgoing_block<T: Real>(&self, theta: &[T]) -> Mat<f64> {
        Mat::from_fn(self.d_out, self.d, |i, j| theta[self.w_out + i * self.d + j].to_f64())
    }

    fn write_incoming<T: Real>(&self, m: &Mat<f64>, theta: &mut [T]) {
        for i in 0..self.d {
            for j in 0..self.in_cols() {
                theta[self.in_index(i, j)] = T::from_f64(m[(i, j)]);
            }
        }
    }

    fn write_outgoing<T: Real>(&self, m: &Mat<f64>, theta: &mut [T]) {
        for i in 0..self.d_out {
            for j in 0..self.d {
                theta[self.w_out + i * self.d + j] = T::from_f64(m[(i, j)]);
            }
        }
    }

    /// Applies an explicit invertible Q: `[W_l | b_l] ← Q[W_l | b_l]`, `W_{l+1} ← W_{l+1} Q⁻¹`.
    pub fn apply_q_in_place<T: Real>(&self, q: &Mat<f64>, q_inv: &Mat<f64>, theta: &mut [T]) {
        let inc = q * self.incoming_block(theta);
        let out = self.outgoing_block(theta) * q_inv;
        self.write_incoming(&inc, theta);
        self.write_outgoing(&out, theta);
    }

    /// θ ← e^{λA}θ for the direction B.
    pub fn act_in_place<T: Real>(&self, b: &Mat<f64>, theta: &mut [T], lambda: f64) {
        let (q, qi) = exp_pair(b, lambda);
        self.apply_q_in_place(&q, &qi, theta);
    }

    /// `out += A v` for the direction B: `B[V_l | v_b]` on the incoming block, `−V_{l+1}B` on the outgoing one.
    pub fn a_times_add(&self, b: &Mat<f64>, v: &[f64], out: &mut [f64]) {
        let bi = b * self.incoming_block(v);
        for i in 0..self.d {
            for j in 0..self.in_cols() {
                out[self.in_index(i, j)] += bi[(i, j)];
            }
        }
        let ob = self.outgoing_block(v) * b;
        for i in 0..self.d_out {
            for j in 0..self.d {
                out[self.w_out + i * self.d + j] -= ob[(i, j)];
            }
        }
    }

    /// The matrix charge `W_lW_lᵀ + b_lb_lᵀ − W_{l+1}ᵀW_{l+1}` (`d × d`) of any vector laid out like θ.
    pub fn matrix_charge<T: Real>(&self, theta: &[T]) -> Mat<f64> {
        let inc = self.incoming_block(theta);
        let out = self.outgoing_block(theta);
        &inc * inc.transpose() - out.transpose() * &out
    }

    /// `gᵀAg = ⟨B, matrix_charge(g)⟩_F` for the direction B (the charge is `quad(b, θ)`).
    pub fn quad<T: Real>(&self, b: &Mat<f64>, g: &[T]) -> f64 {
        frobenius_dot(b, &self.matrix_charge(g))
    }

    /// `Tr[A diag(w)]` for B = I, `Σ_{k∈[W_l|b_l]} w_k − Σ_{k∈W_{l+1}} w_k` (`w(k)`: the diagonal entry of θ
    /// index k): A of B = I is diagonal, +1 on the incoming block and −1 on the outgoing one. With `w = Σ_kk` it
    /// is `Tr[AΣ] = Tr[M_in − M_out]`, from the per-coordinate moments alone.
    pub fn identity_trace(&self, w: impl Fn(usize) -> f64) -> f64 {
        let bias = self.bias.map_or(0..0, |b| b..b + self.d);
        let inc = (self.w_in..self.w_in + self.d * self.d_in).chain(bias);
        inc.map(&w).sum::<f64>() - (self.w_out..self.w_out + self.d_out * self.d).map(&w).sum::<f64>()
    }
}

/// `⟨X, Y⟩_F = Σ_ij X_ij Y_ij`.
pub fn frobenius_dot(x: &Mat<f64>, y: &Mat<f64>) -> f64 {
    (0..x.nrows()).flat_map(|i| (0..x.ncols()).map(move |j| (i, j))).map(|(i, j)| x[(i, j)] * y[(i, j)]).sum()
}

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
    PairLayout::of_dense(arch, l).incoming_block(theta)
}

/// The pair's outgoing block `W_{l+1}` as a `d_out × d` matrix in f64.
pub fn outgoing_block<T: Real>(arch: &Architecture, l: usize, theta: &[T]) -> Mat<f64> {
    PairLayout::of_dense(arch, l).outgoing_block(theta)
}

/// Applies an explicit invertible Q: `[W_l | b_l] ← Q[W_l | b_l]`, `W_{l+1} ← W_{l+1} Q⁻¹`.
pub fn apply_q_in_place<T: Real>(
    arch: &Architecture,
    l: usize,
    q: &Mat<f64>,
    q_inv: &Mat<f64>,
    theta: &mut [T],
) {
    PairLayout::of_dense(arch, l).apply_q_in_place(q, q_inv, theta)
}

/// θ ← e^{λA}θ.
pub fn act_in_place<T: Real>(arch: &Architecture, l: usize, b: &Mat<f64>, theta: &mut [T], lambda: f64) {
    PairLayout::of_dense(arch, l).act_in_place(b, theta, lambda)
}

/// `out += A v`.
pub fn a_times_add(arch: &Architecture, l: usize, b: &Mat<f64>, v: &[f64], out: &mut [f64]) {
    PairLayout::of_dense(arch, l).a_times_add(b, v, out)
}

/// The matrix charge `W_lW_lᵀ + b_lb_lᵀ − W_{l+1}ᵀW_{l+1}` (`d × d`) of any vector laid out like θ.
pub fn matrix_charge<T: Real>(arch: &Architecture, l: usize, theta: &[T]) -> Mat<f64> {
    PairLayout::of_dense(arch, l).matrix_charge(theta)
}

/// `gᵀAg = ⟨B, matrix_charge(g)⟩_F`.
pub fn quad<T: Real>(arch: &Architecture, l: usize, b: &Mat<f64>, g: &[T]) -> f64 {
    PairLayout::of_dense(arch, l).quad(b, g)
}

//! SGD steps of deep linear chains in Gram form: the gradient from two batch products instead of three per
//! layer.
//!
//! For a chain of identity layers without bias or normalisation, `f(x) = P x` with the end-to-end map
//! `P = W_{L−1} ⋯ W_0`. With `r_n = ∂ℓ_n/∂f` and `Q_l = W_{l−1} ⋯ W_0` (`Q_0 = I`, `Q_L = P`), the batch
//! gradient of every layer factors through one `d_L × d_0` matrix:
//!
//! `ĝ_{W_l} = (1/B) Σ_n (W_{L−1} ⋯ W_{l+1})ᵀ r_n x_nᵀ Q_lᵀ = T_l Q_lᵀ`, with `G = (1/B) Σ_n r_n x_nᵀ`,
//! `T_{L−1} = G` and `T_{l−1} = W_lᵀ T_l`.
//!
//! The batch enters only through `Fᵀ = P Xᵀ` and `G = (1/B) Rᵀ X`: `2·B·d_L·d_0` multiply-adds, where the
//! layer-by-layer backward needs `B·Σ_l d_l d_{l+1}` three times (forward, `ΔᵀX`, `ΔW`); the rest is products
//! of weight-sized matrices, independent of B. For the paper's 30-40-30 net at B = 64 that is 223k
//! multiply-adds against 384k. [`LinearChainStep::supports`] takes the form only when it needs fewer
//! multiply-adds. Same ĝ as the generic step on the module-tree tape ([`crate::net::Tape`] on
//! [`crate::net::NetArch::from_dense`]) up to round-off (the sums are associated differently).

use super::Architecture;
use crate::data::Batch;
use crate::linalg::gemm;
use crate::loss::Loss;
use crate::real::Real;
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{MatMut, MatRef};

/// Buffers of the Gram-form step for batches of exactly `batch` samples. Batch matrices are row-major
/// `[B, d]` (one contiguous row per sample, unlike the tapes' `[d, B]` ones): a minibatch is then
/// gathered by copying each sample's row, not scattered element by element across B-strided columns, and
/// both batch products run as column-axpy products (see [`LinearChainStep::gradient`]).
#[derive(Clone, Debug)]
pub struct LinearChainStep<T> {
    arch: Architecture,
    /// Widths `d_0, …, d_L`.
    dims: Vec<usize>,
    batch: usize,
    /// Inputs `X`, row-major `[B, d_0]`.
    x: Vec<T>,
    /// Targets `Y`, row-major `[B, d_L]`.
    y: Vec<T>,
    labels: Vec<usize>,
    /// Outputs `F = X Pᵀ`, row-major `[B, d_L]`.
    f: Vec<T>,
    /// Output gradients `R`, row-major `[B, d_L]`.
    r: Vec<T>,
    /// `q[l] = Q_l`, column-major `d_l × d_0`, for `1 ≤ l ≤ L` (`q[1]` a copy of `W_0`, `q[L] = P`): then
    /// `Fᵀ = P Xᵀ` and `ĝ_lᵀ = Q_l T_lᵀ` are column-axpy products with no transposed copies of `Q_l` or `P`.
    q: Vec<Vec<T>>,
    /// `wc[l]`: a column-major copy of `W_l` for `1 ≤ l < L`, so that `Q_{l+1} = W_l Q_l` is a column-axpy
    /// product too (as a dot product over the rows of `W_l` it ran at 31 GFLOP/s against 42), and so that
    /// the backward pass reads no weight from `params` (see [`LinearChainStep::sgd_step`]).
    wc: Vec<Vec<T>>,
    /// `G`, row-major `d_L × d_0`.
    g: Vec<T>,
    /// `t[l] = T_l`, row-major `d_{l+1} × d_0`, for `1 ≤ l ≤ L − 2` (`T_{L−1} = G`; `T_0` is written into ĝ).
    t: Vec<Vec<T>>,
}

/// Multiply-adds of one Gram-form step ([`LinearChainStep`]) for `arch` at batch size `b`.
pub fn gram_step_fmas(arch: &Architecture, b: usize) -> usize {
    let dims = arch.dims();
    let (n_layers, d0, dl) = (arch.n_layers(), dims[0], dims[arch.n_layers()]);
    // Fᵀ and G; Q_{l+1} = W_l Q_l; T_{l−1} = W_lᵀ T_l and ĝ_l = T_l Q_lᵀ for l ≥ 1.
    let prefix: usize = (1..n_layers).map(|l| dims[l + 1] * dims[l] * d0).sum();
    2 * b * dl * d0 + prefix + 2 * prefix
}

/// Multiply-adds of the layer-by-layer step (forward, `ΔᵀX` every layer, `ΔW` above the first).
pub fn layered_step_fmas(arch: &Architecture, b: usize) -> usize {
    arch.layers.iter().enumerate().map(|(l, ly)| (if l == 0 { 2 } else { 3 }) * b * ly.d_in * ly.d_out).sum()
}

impl<T: Real> LinearChainStep<T> {
    /// Whether the Gram form applies to `arch` (every layer identity, no bias, no normalisation) and needs
    /// fewer multiply-adds than the layer-by-layer step at batch size `batch`.
    pub fn supports(arch: &Architecture, batch: usize) -> bool {
        batch > 0
            && arch.layers.iter().all(|ly| ly.activation.is_identity() && !ly.bias && !ly.norm)
            && gram_step_fmas(arch, batch) < layered_step_fmas(arch, batch)
    }

    /// Buffers for batches of exactly `batch` samples of `arch` (at least two layers: for one layer the
    /// Gram form is the layer-by-layer step).
    pub fn new(arch: &Architecture, batch: usize) -> Self {
        let dims = arch.dims();
        let n_layers = arch.n_layers();
        assert!(n_layers >= 2, "the Gram-form step needs at least two layers");
        let (d0, dl) = (dims[0], dims[n_layers]);
        let zeros = |n: usize| vec![T::zero(); n];
        Self {
            arch: arch.clone(),
            dims: dims.clone(),
            batch,
            x: zeros(batch * d0),
            y: zeros(batch * dl),
            labels: vec![0; batch],
            f: zeros(batch * dl),
            r: zeros(batch * dl),
            q: (0..=n_layers).map(|l| if l >= 1 { zeros(dims[l] * d0) } else { Vec::new() }).collect(),
            wc: (0..n_layers)
                .map(|l| if l >= 1 { zeros(dims[l + 1] * dims[l]) } else { Vec::new() })
                .collect(),
            g: zeros(dl * d0),
            t: (0..n_layers)
                .map(|l| if l >= 1 && l + 2 <= n_layers { zeros(dims[l + 1] * d0) } else { Vec::new() })
                .collect(),
        }
    }

    /// Loads the minibatch `batch` (exactly `batch` samples).
    pub fn load_batch(&mut self, batch: Batch<'_, T>) {
        let (b, d0, dl) = (self.batch, self.dims[0], self.dims[self.dims.len() - 1]);
        assert_eq!(batch.len(), b, "linear-chain step built for batch {b}");
        let x = MatMut::from_row_major_slice_mut(&mut self.x, b, d0);
        batch.copy_into(x, MatMut::from_row_major_slice_mut(&mut self.y, b, dl), &mut self.labels);
    }

    /// Writes ĝ = (1/B) Σ_n ∇ℓ_n of the loaded batch into `grad` (length P) and returns the mean batch loss.
    /// `grad` is left unspecified when the loss is not finite.
    pub fn gradient(&mut self, params: &[T], grad: &mut [T], loss: Loss) -> f64 {
        assert_eq!(grad.len(), self.arch.n_params());
        let mean = self.forward(params, loss);
        if mean.is_finite() {
            self.backward(grad, T::one(), false);
        }
        mean
    }

    /// One SGD step without weight decay on the loaded batch, `θ ← θ − ηĝ`, applied by the products that
    /// would otherwise write ĝ (`θ_l (+)= −η·T_l Q_lᵀ`): ĝ is never stored and there is no separate update
    /// pass. Bit for bit the update of [`LinearChainStep::gradient`] followed by `θ ← θ − η·ĝ` on the
    /// fused small-GEMM path (each product rounds `−η·Σ` once and adds it to θ; faer's kernels, for larger
    /// shapes, may fuse that multiply-add). Returns the mean batch loss; `params` is untouched when it is
    /// not finite.
    pub fn sgd_step(&mut self, params: &mut [T], loss: Loss, eta: T) -> f64 {
        let mean = self.forward(params, loss);
        if mean.is_finite() {
            self.backward(params, T::zero() - eta, true);
        }
        mean
    }

    /// Copies the weights, forms `Q_l`, `F`, `R` and `G`, and returns the mean batch loss (`G` is left
    /// stale when it is not finite). Afterwards no product reads `params`: [`LinearChainStep::backward`]
    /// reads the copies, so it may write into the weights themselves.
    fn forward(&mut self, params: &[T], loss: Loss) -> f64 {
        let (arch, dims) = (&self.arch, &self.dims);
        assert_eq!(params.len(), arch.n_params());
        let n_layers = arch.n_layers();
        let (b, d0, dl) = (self.batch, dims[0], dims[n_layers]);
        let w = |l: usize| MatRef::from_row_major_slice(&params[arch.weight_range(l)], dims[l + 1], dims[l]);
        // Q_1 = W_0 (column-major copy), then Q_{l+1} = W_l Q_l on a column-major copy of W_l.
        crate::linalg::copy_into(MatMut::from_column_major_slice_mut(&mut self.q[1], dims[1], d0), w(0));
        for l in 1..n_layers {
            let (lo, hi) = self.q.split_at_mut(l + 1);
            let ql = MatRef::from_column_major_slice(&lo[l], dims[l], d0);
            let mut wl = MatMut::from_column_major_slice_mut(&mut self.wc[l], dims[l + 1], dims[l]);
            let dst = MatMut::from_column_major_slice_mut(&mut hi[0], dims[l + 1], d0);
            crate::linalg::copy_into(wl.rb_mut(), w(l));
            gemm(dst, false, wl.rb(), ql, T::one());
        }
        let p = MatRef::from_column_major_slice(&self.q[n_layers], dl, d0);
        let x = MatRef::from_row_major_slice(&self.x, b, d0);
        gemm(MatMut::from_row_major_slice_mut(&mut self.f, b, dl), false, x, p.transpose(), T::one());
        let total = match loss {
            Loss::Mse => 0.5 * crate::loss::residuals_into(&self.f, &self.y, &mut self.r).to_f64(),
            Loss::CrossEntropy => loss.value_and_grad_into(
                MatRef::from_row_major_slice(&self.f, b, dl),
                MatRef::from_row_major_slice(&self.y, b, dl),
                &self.labels,
                MatMut::from_row_major_slice_mut(&mut self.r, b, dl),
            ),
        };
        let mean = total / b as f64;
        if mean.is_finite() {
            let r = MatRef::from_row_major_slice(&self.r, b, dl);
            let inv_b = T::from_f64(1.0 / b as f64);
            gemm(MatMut::from_row_major_slice_mut(&mut self.g, dl, d0), false, r.transpose(), x, inv_b);
        }
        mean
    }

    /// `out_l (+)= alpha·ĝ_l` for every weight block of `out` (a flat parameter vector): from the top,
    /// `T_{l−1} = W_lᵀ T_l` (`T_0` is ĝ_0 itself), then `ĝ_l = T_l Q_lᵀ`, reading only the copies
    /// [`LinearChainStep::forward`] made. Layouts: `ĝ_lᵀ = Q_l T_lᵀ` is a column-axpy product (ĝ_l
    /// row-major is ĝ_lᵀ column-major) and `T_{l−1}ᵀ = T_lᵀ W_l` a column-axpy product over the columns of
    /// `T_lᵀ`, with `W_l` (any layout) broadcast.
    fn backward(&mut self, out: &mut [T], alpha: T, accumulate: bool) {
        let (arch, dims) = (&self.arch, &self.dims);
        assert_eq!(out.len(), arch.n_params());
        let n_layers = arch.n_layers();
        let (d0, dl) = (dims[0], dims[n_layers]);
        for l in (1..n_layers).rev() {
            let (t_lo, t_hi) = self.t.split_at_mut(l);
            let tl = if l == n_layers - 1 {
                MatRef::from_row_major_slice(&self.g, dl, d0)
            } else {
                MatRef::from_row_major_slice(&t_hi[0], dims[l + 1], d0)
            };
            let wl = MatRef::from_column_major_slice(&self.wc[l], dims[l + 1], dims[l]);
            let (head, gl) = out.split_at_mut(arch.weight_range(l).start);
            // T_{l−1} = W_lᵀ T_l; T_0 = ĝ_0 goes to `out` like every ĝ_l.
            let (below, below_acc, below_alpha) = if l == 1 {
                (&mut head[arch.weight_range(0)], accumulate, alpha)
            } else {
                (&mut t_lo[l - 1][..], false, T::one())
            };
            let below = MatMut::from_row_major_slice_mut(below, dims[l], d0);
            gemm(below, below_acc, wl.transpose(), tl, below_alpha);
            let ql = MatRef::from_column_major_slice(&self.q[l], dims[l], d0);
            let gwt =
                MatMut::from_column_major_slice_mut(&mut gl[..dims[l + 1] * dims[l]], dims[l], dims[l + 1]);
            gemm(gwt, accumulate, ql, tl.transpose(), alpha);
        }
    }
}

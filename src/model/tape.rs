//! The forward cache and analytic batched backward of a dense chain.
//!
//! For a batch of B samples the tape holds, for every layer l, the layer inputs `X_l` (`[B, d_in]`), the
//! pre-activations `Z_l`, the normalised `U_l` (if the layer normalises) and, after `backward`, the
//! per-sample pre-activation gradients `Δ_l = ∂ℓ_n/∂z_l` (`[B, d_out]`, one row per sample, *not* divided
//! by B). The per-sample gradient of `W_l` is `δ_n x_nᵀ` and of `b_l` is `δ_n`: everything in `stats`
//! is built from `(X_l, Δ_l)` without forming per-sample gradients.
//!
//! All buffers are allocated once at the tape's capacity; a step allocates nothing.

use super::{Architecture, Model};
use crate::data::{Batch, Dataset, Targets};
use crate::error::{Error, Result};
use crate::linalg::{col_sums_into, gemm_par};
use crate::loss::Loss;
use crate::real::Real;
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Mat, MatMut, MatRef, Par};
use std::ops::Range;

/// Forward cache and backward buffers for one architecture, sized for up to `capacity` samples.
#[derive(Clone, Debug)]
pub struct Tape<T> {
    arch: Architecture,
    capacity: usize,
    batch: usize,
    /// `acts[0]` = input batch, `acts[l + 1]` = output of layer l.
    acts: Vec<Mat<T>>,
    /// Pre-activations `Z_l`.
    z: Vec<Mat<T>>,
    /// Normalised pre-activations `U_l` (only used by layers with `norm`).
    u: Vec<Mat<T>>,
    /// Per-sample RMS `r_n = √(mean_j z_nj²)` of normalising layers.
    rms: Vec<Vec<T>>,
    /// `Δ_l` after backward (before that, scratch).
    delta: Vec<Mat<T>>,
    /// Regression targets of the batch `[B, d_out]`.
    y: Mat<T>,
    /// Class labels of the batch.
    labels: Vec<usize>,
    has_labels: bool,
    /// Parallelism of the large GEMMs (small ones always run single-threaded).
    par: Par,
}

impl<T: Real> Tape<T> {
    /// A tape for `arch` holding up to `capacity` samples.
    pub fn new(arch: &Architecture, capacity: usize) -> Self {
        let cap = capacity.max(1);
        let mut acts = vec![Mat::zeros(cap, arch.d_in())];
        let mut z = Vec::new();
        let mut u = Vec::new();
        let mut rms = Vec::new();
        let mut delta = Vec::new();
        for ly in &arch.layers {
            acts.push(Mat::zeros(cap, ly.d_out));
            z.push(Mat::zeros(cap, ly.d_out));
            u.push(if ly.norm { Mat::zeros(cap, ly.d_out) } else { Mat::zeros(0, 0) });
            rms.push(if ly.norm { vec![T::zero(); cap] } else { Vec::new() });
            delta.push(Mat::zeros(cap, ly.d_out));
        }
        Self {
            arch: arch.clone(),
            capacity: cap,
            batch: 0,
            acts,
            z,
            u,
            rms,
            delta,
            y: Mat::zeros(cap, arch.d_out()),
            labels: vec![0; cap],
            has_labels: false,
            par: Par::Seq,
        }
    }

    /// A tape for whole-data passes: as [`Tape::new`], with the GEMMs on every core when one pass over
    /// `capacity` samples is large enough to pay for the threads ([`crate::linalg::par_for_flops`]).
    pub fn for_passes(arch: &Architecture, capacity: usize) -> Self {
        let mut tape = Self::new(arch, capacity);
        let flops = arch.train_flops(tape.capacity);
        tape.set_par(crate::linalg::par_for_flops(flops, crate::linalg::PAR_MIN_FLOPS));
        tape
    }

    /// Sets the parallelism of the forward/backward GEMMs (default `Par::Seq`; see
    /// [`crate::linalg::par_for_flops`]). Results agree across settings up to round-off.
    pub fn set_par(&mut self, par: Par) {
        self.par = par;
    }
    /// The parallelism of the forward/backward GEMMs.
    pub fn par(&self) -> Par {
        self.par
    }

    /// Maximum batch size.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Current batch size B.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// The architecture the tape was built for.
    pub fn arch(&self) -> &Architecture {
        &self.arch
    }

    /// Copies the samples `rows` of `data` into the tape (inputs and targets).
    pub fn load_rows(&mut self, data: &Dataset<T>, rows: &[usize]) {
        self.load_batch(Batch::Rows(data, rows))
    }

    /// Loads the minibatch `batch` into the tape.
    pub fn load_batch(&mut self, batch: Batch<'_, T>) {
        let n = batch.len();
        assert!(n <= self.capacity, "batch {n} exceeds tape capacity {}", self.capacity);
        self.batch = n;
        self.has_labels = batch.has_labels();
        batch.copy_into(self.acts[0].as_mut(), self.y.as_mut(), &mut self.labels);
    }

    /// Copies the contiguous samples `range` of `data` into the tape.
    pub fn load_range(&mut self, data: &Dataset<T>, range: Range<usize>) {
        let n = range.len();
        assert!(n <= self.capacity, "batch {n} exceeds tape capacity {}", self.capacity);
        self.batch = n;
        self.acts[0].as_mut().subrows_mut(0, n).copy_from(data.x.as_ref().subrows(range.start, n));
        match &data.y {
            Targets::Dense(y) => {
                self.has_labels = false;
                self.y.as_mut().subrows_mut(0, n).copy_from(y.as_ref().subrows(range.start, n));
            }
            Targets::Classes(c) => {
                self.has_labels = true;
                self.labels[..n].copy_from_slice(&c[range]);
            }
        }
    }

    /// Layer input `X_l` of the current batch, `[B, d_in]`.
    pub fn input(&self, l: usize) -> MatRef<'_, T> {
        self.acts[l].as_ref().subrows(0, self.batch)
    }
    /// Pre-activation `Z_l` of the current batch, `[B, d_out]`.
    pub fn preactivation(&self, l: usize) -> MatRef<'_, T> {
        self.z[l].as_ref().subrows(0, self.batch)
    }
    /// Per-sample pre-activation gradient `Δ_l = ∂ℓ_n/∂z_l` after [`Tape::backward`], `[B, d_out]`.
    pub fn delta(&self, l: usize) -> MatRef<'_, T> {
        self.delta[l].as_ref().subrows(0, self.batch)
    }
    /// Network output `f(x)` of the current batch, `[B, d_L]`.
    pub fn output(&self) -> MatRef<'_, T> {
        self.acts[self.arch.n_layers()].as_ref().subrows(0, self.batch)
    }
    /// Regression targets of the batch (meaningful for dense targets only).
    pub fn targets(&self) -> MatRef<'_, T> {
        self.y.as_ref().subrows(0, self.batch)
    }
    /// Class labels of the batch (meaningful for class targets only).
    pub fn labels(&self) -> &[usize] {
        &self.labels[..self.batch]
    }
    /// Normalised pre-activation `U_l` (`Z_l` when layer l does not normalise).
    pub fn normalized(&self, l: usize) -> MatRef<'_, T> {
        if self.arch.layers[l].norm {
            self.u[l].as_ref().subrows(0, self.batch)
        } else {
            self.preactivation(l)
        }
    }
    /// Per-sample RMS of normalising layer l (empty otherwise).
    pub fn rms(&self, l: usize) -> &[T] {
        if self.rms[l].is_empty() {
            &[]
        } else {
            &self.rms[l][..self.batch]
        }
    }

    /// Forward pass of `model` on the loaded batch.
    pub fn forward(&mut self, model: &Model<T>) {
        let b = self.batch;
        for l in 0..self.arch.n_layers() {
            let ly = self.arch.layers[l];
            let w = model.weight(l);
            let (head, tail) = self.acts.split_at_mut(l + 1);
            let x = head[l].as_ref().subrows(0, b);
            let mut z = self.z[l].as_mut().subrows_mut(0, b);
            gemm_par(z.rb_mut(), false, x, w.transpose(), T::one(), self.par);
            if ly.bias {
                let bias = model.bias(l);
                for (j, &bj) in bias.iter().enumerate() {
                    z.rb_mut().col_mut(j).iter_mut().for_each(|v| *v += bj);
                }
            }
            let src = if ly.norm {
                let rms = &mut self.rms[l];
                let d = T::from_f64(ly.d_out as f64);
                crate::linalg::row_sq_norms_into(z.rb(), &mut rms[..b]);
                for r in rms[..b].iter_mut() {
                    *r = (*r / d).sqrt();
                }
                let mut u = self.u[l].as_mut().subrows_mut(0, b);
                for j in 0..ly.d_out {
                    let zc = z.rb().col(j);
                    let mut uc = u.rb_mut().col_mut(j);
                    for n in 0..b {
                        // rms = 0 only for an all-zero pre-activation; its normalised value is taken as 0.
                        uc[n] = if rms[n] > T::zero() { zc[n] / rms[n] } else { T::zero() };
                    }
                }
                self.u[l].as_ref().subrows(0, b)
            } else {
                self.z[l].as_ref().subrows(0, b)
            };
            let mut h = tail[0].as_mut().subrows_mut(0, b);
            let act = ly.activation;
            if act.is_identity() {
                h.copy_from(src);
            } else {
                for j in 0..ly.d_out {
                    let s = src.col(j);
                    let mut hc = h.rb_mut().col_mut(j);
                    for n in 0..b {
                        hc[n] = act.value(s[n]);
                    }
                }
            }
        }
    }

    /// Per-sample losses `ℓ_n` of the batch after [`Tape::forward`], written into `out` (length B).
    pub fn per_sample_losses_into(&self, loss: Loss, out: &mut [f64]) -> Result<()> {
        self.check_targets(loss)?;
        loss.values_into(self.output(), self.targets(), self.labels(), out);
        Ok(())
    }

    fn check_targets(&self, loss: Loss) -> Result<()> {
        match (loss, self.has_labels) {
            (Loss::Mse, true) => {
                Err(Error::Data("mse loss needs float targets `y` [N, d_out], got class labels".into()))
            }
            (Loss::CrossEntropy, false) => Err(Error::Data(
                "cross_entropy loss needs integer class labels `y` [N], got float targets".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Mean loss of the batch after [`Tape::forward`]; writes `∂ℓ_n/∂f` into the top delta buffer, ready for
    /// [`Tape::backward`].
    pub fn loss_and_output_grad(&mut self, loss: Loss) -> Result<f64> {
        self.check_targets(loss)?;
        let b = self.batch;
        let last = self.arch.n_layers() - 1;
        let (out, y, labels) =
            (self.acts[last + 1].as_ref().subrows(0, b), self.y.as_ref().subrows(0, b), &self.labels[..b]);
        let total = loss.value_and_grad_into(out, y, labels, self.delta[last].as_mut().subrows_mut(0, b));
        Ok(total / b as f64)
    }

    /// Multiplies row n of the top delta buffer by `weights[n]`, so that [`Tape::backward`] with `scale = 1`
    /// returns `Σ_n w_n ∇ℓ_n` (a randomly weighted backward pass, used by the SDE).
    pub fn weight_output_grad(&mut self, weights: &[T]) {
        let last = self.arch.n_layers() - 1;
        let mut d = self.delta[last].as_mut().subrows_mut(0, self.batch);
        for j in 0..d.ncols() {
            let mut c = d.rb_mut().col_mut(j);
            for (n, &w) in weights.iter().enumerate() {
                c[n] *= w;
            }
        }
    }

    /// Backward pass after [`Tape::loss_and_output_grad`]: fills every `Δ_l` and, if `grad` is given, writes
    /// `scale · Σ_n ∇ℓ_n` into it (use `scale = 1/B` for the mean gradient). `grad` has length P.
    pub fn backward(&mut self, model: &Model<T>, grad: Option<&mut [T]>, scale: T) {
        self.backward_impl(model, grad, scale, false)
    }

    /// As [`Tape::backward`], but adds `scale · Σ_n ∇ℓ_n` to `grad` instead of overwriting it (for
    /// accumulating a full-data gradient over chunks without a temporary).
    pub fn backward_accumulate(&mut self, model: &Model<T>, grad: &mut [T], scale: T) {
        self.backward_impl(model, Some(grad), scale, true)
    }

    fn backward_impl(&mut self, model: &Model<T>, grad: Option<&mut [T]>, scale: T, accumulate: bool) {
        let b = self.batch;
        let mut grad = grad;
        for l in (0..self.arch.n_layers()).rev() {
            let ly = self.arch.layers[l];
            // Δ_l ← ∂ℓ/∂h_l ⊙ φ′(u_l), then through the normalisation if any.
            {
                let act = ly.activation;
                let src = if ly.norm { self.u[l].as_ref() } else { self.z[l].as_ref() };
                let h = self.acts[l + 1].as_ref();
                let mut d = self.delta[l].as_mut().subrows_mut(0, b);
                if !act.is_identity() {
                    for j in 0..ly.d_out {
                        let (s, hc) = (src.col(j), h.col(j));
                        let mut dc = d.rb_mut().col_mut(j);
                        for n in 0..b {
                            dc[n] *= act.d1(s[n], hc[n]);
                        }
                    }
                }
                if ly.norm {
                    // ∂ℓ/∂z = (g − u (uᵀg)/d) / r  for u = z/r, r = √(mean z²).
                    let u = self.u[l].as_ref().subrows(0, b);
                    let dd = T::from_f64(ly.d_out as f64);
                    let rms = &self.rms[l];
                    for n in 0..b {
                        let mut s = T::zero();
                        for j in 0..ly.d_out {
                            s += u[(n, j)] * d[(n, j)];
                        }
                        let s = s / dd;
                        let r = rms[n];
                        for j in 0..ly.d_out {
                            d[(n, j)] =
                                if r > T::zero() { (d[(n, j)] - u[(n, j)] * s) / r } else { T::zero() };
                        }
                    }
                }
            }
            let (dl, x) = (self.delta[l].as_ref().subrows(0, b), self.acts[l].as_ref().subrows(0, b));
            if let Some(g) = grad.as_deref_mut() {
                let wr = self.arch.weight_range(l);
                let gw = MatMut::from_row_major_slice_mut(&mut g[wr], ly.d_out, ly.d_in);
                gemm_par(gw, accumulate, dl.transpose(), x, scale, self.par);
                if ly.bias {
                    let br = self.arch.bias_range(l);
                    col_sums_into(dl, scale, accumulate, &mut g[br]);
                }
            }
            if l > 0 {
                let (lo, hi) = self.delta.split_at_mut(l);
                let dl = hi[0].as_ref().subrows(0, b);
                gemm_par(
                    lo[l - 1].as_mut().subrows_mut(0, b),
                    false,
                    dl,
                    model.weight(l),
                    T::one(),
                    self.par,
                );
            }
        }
    }
}

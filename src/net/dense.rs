//! A dense chain's pass on the module-tree tape: the chain runs as its tree ([`NetArch::from_dense`], the same
//! θ layout), and each dense layer l is located as its `linear` step, so that the per-layer statistics read
//! `X_l` (the step's input, `[B, d_in]`) and `Δ_l = ∂ℓ_n/∂z_l` (its output gradient, `[B, d_out]`, per sample,
//! not divided by B) as views of the tape's channel-major buffers.

use super::{for_each_chunk, lanes_map_with, ChunkTape, Kind, NetArch, Rows, Step, Tape};
use crate::data::Dataset;
use crate::error::Result;
use crate::loss::Loss;
use crate::model::{Architecture, Model};
use crate::real::Real;
use faer::{Mat, MatRef, Par};
use std::ops::Range;

/// One dense layer's linear step on the tape: (input buffer, output buffer, d_in, d_out).
type LinearStep = (usize, usize, usize, usize);

/// The module-tree tape of a dense chain, with the layers' linear steps located.
pub struct DenseTape<T> {
    tape: Tape<T>,
    layers: Vec<LinearStep>,
    par: Par,
}

impl<T: Real> DenseTape<T> {
    /// A tape for `arch` holding up to `capacity` samples; `par` is the GEMM parallelism, or `None` for the
    /// choice by the flops of one pass over `capacity` samples ([`crate::linalg::par_for_flops`]).
    pub fn new(arch: &Architecture, capacity: usize, par: Option<Par>) -> Result<Self> {
        let capacity = capacity.max(1);
        let par = par.unwrap_or_else(|| {
            crate::linalg::par_for_flops(arch.train_flops(capacity), crate::linalg::PAR_MIN_FLOPS)
        });
        let tape = Tape::new(&NetArch::from_dense(arch)?, capacity).with_par(par);
        let layers: Vec<LinearStep> = tape
            .program()
            .ops
            .iter()
            .filter_map(|op| match &op.step {
                Step::Module(Kind::Linear(l)) => Some((op.x, op.y, l.d_in, l.d_out)),
                _ => None,
            })
            .collect();
        debug_assert_eq!(layers.len(), arch.n_layers(), "one linear step per dense layer");
        Ok(Self { tape, layers, par })
    }

    /// The GEMM parallelism of the passes.
    pub fn par(&self) -> Par {
        self.par
    }

    /// Runs the forward pass on the loaded samples ([`ChunkTape::load_range`]).
    pub fn forward(&mut self, model: &Model<T>) {
        self.tape.forward(&model.params);
    }

    /// Runs forward and backward on the loaded samples and returns `Σ_n ℓ_n` over them. With `grad`, it is
    /// overwritten by `Σ_n ∇_θ ℓ_n` (θ-shaped).
    pub fn pass(&mut self, model: &Model<T>, loss: Loss, grad: Option<&mut [T]>) -> f64 {
        self.forward(model);
        let total = self.tape.loss_grad(loss);
        match grad {
            Some(g) => self.tape.backward_into(&model.params, g, T::one()),
            None => self.tape.backward(&model.params, None),
        }
        total
    }

    /// `X_l`, the input of layer l, as a `[B, d_in]` view.
    pub fn input(&self, l: usize) -> MatRef<'_, T> {
        let (x, _, d_in, _) = self.layers[l];
        MatRef::from_row_major_slice(self.tape.act(x), d_in, self.tape.batch()).transpose()
    }

    /// `z_l = W_l X_l + b_l`, layer l's pre-activation (before any normalisation), as a `[B, d_out]` view.
    pub fn preactivation(&self, l: usize) -> MatRef<'_, T> {
        let (_, y, _, d_out) = self.layers[l];
        MatRef::from_row_major_slice(self.tape.act(y), d_out, self.tape.batch()).transpose()
    }

    /// `Δ_l = ∂ℓ_n/∂z_l`, the gradient at layer l's pre-activation (before any normalisation), `[B, d_out]`.
    pub fn delta(&self, l: usize) -> MatRef<'_, T> {
        let (_, y, _, d_out) = self.layers[l];
        MatRef::from_row_major_slice(self.tape.grad(y), d_out, self.tape.batch()).transpose()
    }
}

impl<T: Real> ChunkTape<T> for DenseTape<T> {
    fn capacity(&self) -> usize {
        self.tape.capacity()
    }
    fn load_range(&mut self, data: &Dataset<T>, range: Range<usize>) -> Result<()> {
        self.tape.load(data, Rows::Range(range))
    }
}

impl<T: Real> DenseTape<T> {
    /// Per-sample losses `ℓ_n` of the last forward pass into `out` (length B).
    pub fn losses_into(&self, loss: Loss, out: &mut [f64]) {
        self.tape.losses_into(loss, out);
    }

    /// The network output of the last forward pass as a `[B, d_out]` view.
    pub fn output(&self) -> MatRef<'_, T> {
        self.tape.output()
    }
}

/// A dense chain's whole-data passes, run on the module-tree tape of its tree ([`DenseTape`]).
impl<T: Real> Model<T> {
    /// Mean loss `L = (1/N) Σ ℓ_n` and mean gradient `∇L` over a whole data set, in chunks of `chunk` samples
    /// (memory independent of N). Returns `(L, ∇L)` in f64.
    ///
    /// Large passes run in two lanes of whole chunks (a fixed split, summed in lane order: the result does not
    /// depend on the thread count), each on one core with sequential GEMMs, as the statistics pass does.
    pub fn loss_and_grad(&self, data: &Dataset<T>, loss: Loss, chunk: usize) -> Result<(f64, Vec<f64>)> {
        data.check_fits(self.arch.d_in(), self.arch.d_out(), loss)?;
        let n = data.len();
        let chunk = chunk.min(n).max(1);
        let lanes = crate::linalg::pass_lanes(n, chunk, self.arch.train_flops(n));
        let p = self.arch.n_params();
        let parts = lanes_map_with(
            data,
            &lanes,
            |par| DenseTape::new(&self.arch, chunk, *par),
            || (0.0, vec![T::zero(); p], vec![0.0; p]),
            |t, _, (lsum, g, total)| {
                *lsum += t.pass(self, loss, Some(g));
                total.iter_mut().zip(g.iter()).for_each(|(a, v)| *a += v.to_f64());
                Ok(())
            },
        )?;
        let (mut lsum, mut total) = (0.0, vec![0.0; p]);
        for (l, _, g) in parts {
            lsum += l;
            total.iter_mut().zip(&g).for_each(|(t, v)| *t += v);
        }
        let inv = 1.0 / n as f64;
        total.iter_mut().for_each(|v| *v *= inv);
        Ok((lsum * inv, total))
    }

    /// Mean loss over a data set (forward passes only).
    pub fn loss(&self, data: &Dataset<T>, loss: Loss, chunk: usize) -> Result<f64> {
        Ok(self.per_sample_losses(data, loss, chunk)?.iter().sum::<f64>() / data.len() as f64)
    }

    /// Per-sample losses `ℓ(θ, x_n)` over a data set.
    pub fn per_sample_losses(&self, data: &Dataset<T>, loss: Loss, chunk: usize) -> Result<Vec<f64>> {
        data.check_fits(self.arch.d_in(), self.arch.d_out(), loss)?;
        let mut tape = DenseTape::new(&self.arch, chunk.min(data.len()), None)?;
        let mut out = vec![0.0; data.len()];
        for_each_chunk(&mut tape, data, |t, r| {
            t.forward(self);
            t.losses_into(loss, &mut out[r]);
            Ok(())
        })?;
        Ok(out)
    }

    /// Network outputs `f(x_n)` over a data set, `[N, d_out]`.
    pub fn outputs(&self, data: &Dataset<T>, chunk: usize) -> Result<Mat<T>> {
        data.check_input_width(self.arch.d_in())?;
        let mut tape = DenseTape::new(&self.arch, chunk.min(data.len()), None)?;
        let mut out = Mat::zeros(data.len(), self.arch.d_out());
        for_each_chunk(&mut tape, data, |t, r| {
            t.forward(self);
            out.as_mut().subrows_mut(r.start, r.len()).copy_from(t.output());
            Ok(())
        })?;
        Ok(out)
    }
}

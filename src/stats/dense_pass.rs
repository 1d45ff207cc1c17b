//! A dense chain's pass on the module-tree tape: the chain runs as its tree ([`NetArch::from_dense`], the same
//! θ layout), and each dense layer l is located as its `linear` step, so that the per-layer statistics read
//! `X_l` (the step's input, `[B, d_in]`) and `Δ_l = ∂ℓ_n/∂z_l` (its output gradient, `[B, d_out]`, per sample,
//! not divided by B) as views of the tape's channel-major buffers.

use crate::data::Dataset;
use crate::error::Result;
use crate::loss::Loss;
use crate::model::{Architecture, Model};
use crate::net::{Kind, NetArch, Rows, Step, Tape};
use crate::real::Real;
use faer::{MatRef, Par};
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

    /// The capacity in samples.
    pub fn capacity(&self) -> usize {
        self.tape.capacity()
    }

    /// The GEMM parallelism of the passes.
    pub fn par(&self) -> Par {
        self.par
    }

    /// Loads the samples `range` of `data` and runs the forward pass.
    pub fn forward(&mut self, model: &Model<T>, data: &Dataset<T>, range: Range<usize>) -> Result<()> {
        self.tape.load(data, Rows::Range(range))?;
        self.tape.forward(&model.params);
        Ok(())
    }

    /// Loads the samples `range` of `data`, runs forward and backward, and returns `Σ_n ℓ_n` over them. With
    /// `grad`, it is overwritten by `Σ_n ∇_θ ℓ_n` (θ-shaped).
    pub fn pass(
        &mut self,
        model: &Model<T>,
        data: &Dataset<T>,
        range: Range<usize>,
        loss: Loss,
        grad: Option<&mut [T]>,
    ) -> Result<f64> {
        self.forward(model, data, range)?;
        let total = self.tape.loss_grad(loss);
        let grad = grad.map(|g| {
            g.iter_mut().for_each(|v| *v = T::zero());
            (g, T::one())
        });
        self.tape.backward(&model.params, grad);
        Ok(total)
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

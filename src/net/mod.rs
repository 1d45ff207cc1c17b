//! Module trees: conv nets, residual nets and MLPs written as a PyTorch `nn.Sequential` (DESIGN.md §4–§5).
//!
//! - [`spec`]: architecture files (`ARCH.toml`) resolved into a tree of [`Node`]s with per-sample shapes and
//!   θ's layout ([`Block`]s in state_dict order, PyTorch memory layout).
//! - [`modules`]: one file per module kind with the same verbs (forward, backward, R-operator, per-sample
//!   gradient, quadratic-form moments).
//! - [`tape`]: the compiled program and its [`Tape`] (forward caches, analytic backward, exact HVPs and
//!   Gauss–Newton products).
//! - [`pass`]: the chunked pass driver over a data set in lanes (loss, gradient, per-sample losses; the
//!   curvature operator built on it is `curvature::NetHessian`).
//! - [`dense`]: a dense chain ([`crate::Model`]) on the tape of its tree: each layer's `X_l` and `Δ_l`, and
//!   the model's whole-data passes (loss, gradient, per-sample losses, outputs).
//! - [`io`]: state_dict files (strict loading by name, the architecture in `__metadata__["noether.arch"]`).
//!
//! θ is the state_dict: every parameterised module's `weight` then `bias`, depth first. Batches are
//! channel-major (`[C, B, H·W]`; a vector batch is `[d, B]`) so that every linear and conv product is one GEMM.

pub mod dense;
pub mod io;
pub mod modules;
pub mod pass;
pub mod spec;
pub mod tape;

pub use dense::DenseTape;
pub use io::{
    dense_metadata, load_dense_described, load_net, save_dense, save_net, stored_arch, ARCH_METADATA_KEY,
};
pub use pass::{
    for_each_chunk, for_each_chunk_in, lane_ranges, lanes_map_with, loss_and_grad, per_sample_losses,
    ChunkTape, CHUNK, LANES,
};
pub use spec::{Block, Kind, NetArch, Node, KINDS};
pub use tape::{Op, Program, Rows, Step, Tape};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::real::Real;
use std::ops::Range;

/// A module tree with its parameters θ (the state_dict, flat).
#[derive(Clone, Debug, PartialEq)]
pub struct Net<T> {
    /// The resolved architecture.
    pub arch: NetArch,
    /// θ, in state_dict order.
    pub params: Vec<T>,
}

impl<T: Real> Net<T> {
    /// A net from explicit parameters, checking the length.
    pub fn from_params(arch: NetArch, params: Vec<T>) -> Result<Self> {
        if params.len() != arch.n_params() {
            return Err(Error::shape("parameter vector", &[arch.n_params()], &[params.len()]));
        }
        Ok(Self { arch, params })
    }

    /// PyTorch's default initialisation in distribution (`kaiming_uniform_(a = √5)`: weights and biases
    /// uniform in ±1/√fan_in), from a seeded ChaCha RNG.
    pub fn init(arch: NetArch, seed: u64) -> Self {
        use rand::SeedableRng;
        Self::init_with(arch, &mut rand_chacha::ChaCha8Rng::seed_from_u64(seed))
    }

    /// [`Net::init`] drawing from `rng` (blocks in state_dict order, weight then bias).
    pub fn init_with<R: rand::Rng>(arch: NetArch, rng: &mut R) -> Self {
        let mut params = vec![T::zero(); arch.n_params()];
        for node in arch.walk() {
            let (fan_in, ranges): (usize, Vec<&Range<usize>>) = match &node.kind {
                Kind::Linear(l) => (l.d_in, std::iter::once(&l.weight).chain(&l.bias).collect()),
                Kind::Conv2d(c) => (c.col_rows(), std::iter::once(&c.weight).chain(&c.bias).collect()),
                _ => continue,
            };
            let bound = 1.0 / (fan_in as f64).sqrt();
            for r in ranges {
                for p in &mut params[r.clone()] {
                    *p = T::from_f64(rng.random_range(-bound..bound));
                }
            }
        }
        Self { arch, params }
    }

    /// Converts the parameters to another precision.
    pub fn cast<U: Real>(&self) -> Net<U> {
        Net {
            arch: self.arch.clone(),
            params: self.params.iter().map(|&v| U::from_f64(v.to_f64())).collect(),
        }
    }

    /// Errors when any parameter is NaN or infinite (naming the tensor).
    pub fn check_finite(&self) -> Result<()> {
        if let Some(i) = self.params.iter().position(|v| !v.is_finite()) {
            let name =
                self.arch.blocks.iter().find(|b| b.range.contains(&i)).map_or("?", |b| b.name.as_str());
            return Err(Error::NonFinite {
                what: format!("model parameters (tensor `{name}`)"),
                index: i,
                value: self.params[i].to_f64(),
            });
        }
        Ok(())
    }

    /// Checks that `data` fits: `x` per sample of the input's size (and `shape`, when the file gave one) and
    /// targets that suit `loss` and the output width.
    pub fn check_data(&self, data: &Dataset<T>, shape: Option<&[usize]>, loss: Loss) -> Result<()> {
        if let Some(shape) = shape {
            if shape != self.arch.input.as_slice() && !(shape.len() == 1 && shape[0] == self.arch.input_len())
            {
                return Err(Error::shape(
                    "per-sample shape of data `x` (the architecture's `input`)",
                    &self.arch.input,
                    shape,
                ));
            }
        }
        if data.d_in() != self.arch.input_len() {
            return Err(Error::shape("features per sample of data `x`", &self.arch.input, &[data.d_in()]));
        }
        if data.is_empty() {
            return Err(Error::Data("the data set has no samples".into()));
        }
        data.check_targets(self.arch.d_out(), loss)
    }
}

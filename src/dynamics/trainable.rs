//! The seam between the optimisers and the thing being trained: a dense chain ([`Model`], with its fused and
//! Gram-form SGD steps) or a module tree ([`Net`]). [`super::Trainer`] writes GD, SGD, SDE, gradient flow,
//! schedules and weight decay once against this trait; a model kind supplies its passes over a batch or a
//! chunk, its data checks, its observers and its file format.

use super::config::{TrainConfig, TrainData};
use super::model_config::ModelConfig;
use super::net_observer::{NetCharges, NetNoise, NetSharpness};
use super::observer::{Basics, Charges, NoiseObserver, Observer, SharpnessObserver};
use crate::data::{Batch, Dataset};
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::model::Model;
use crate::net::{ChunkTape, Net, NetArch};
use crate::real::Real;
use rand::Rng;
use std::ops::Range;
use std::path::Path;

/// A model the [`super::Trainer`] can train: θ, its gradient passes and what a run logs and writes of it.
/// Every pass writes into caller-owned buffers through its [`Trainable::Tape`], so a step allocates nothing.
pub trait Trainable<T: Real>: Sized {
    /// The forward/backward workspace of a batch (capacity fixed when made); whole-data passes step through
    /// their chunks with [`crate::net::for_each_chunk_in`].
    type Tape: ChunkTape<T>;

    /// Builds and initialises the model of `config` (drawing from the seeded `rng`).
    fn from_config<R: Rng>(config: &TrainConfig, rng: &mut R) -> Result<Self>;
    /// Loads or draws the config's data for this model (drawing from `rng` after the model).
    fn data_from_config<R: Rng>(&self, config: &TrainConfig, rng: &mut R) -> Result<TrainData<T>>;

    /// θ (flat, in the model's layout).
    fn params(&self) -> &[T];
    /// θ, mutable.
    fn params_mut(&mut self) -> &mut [T];
    /// The dense chain, when this is one (for the fused and Gram-form SGD steps and the sample-major copy).
    fn dense(&self) -> Option<&Model<T>>;
    /// Errors when a parameter is not finite.
    fn check_finite(&self) -> Result<()>;
    /// Checks that `data` fits the model's input and output and suits `loss`.
    fn check_data(&self, data: &Dataset<T>, loss: Loss) -> Result<()>;

    /// A tape for batches of up to `capacity` samples.
    fn tape(&self, capacity: usize) -> Result<Self::Tape>;
    /// Samples per chunk of a whole-data pass.
    fn chunk() -> usize;

    /// Mean loss of `batch`, with `grad = (1/B) Σ_{n∈B} ∇ℓ_n` written (overwritten).
    fn batch_grad_into(
        &self,
        tape: &mut Self::Tape,
        batch: Batch<'_, T>,
        loss: Loss,
        grad: &mut [T],
    ) -> Result<f64>;
    /// Mean loss of the chunk loaded into `tape` ([`ChunkTape::load_range`]), with
    /// `grad += scale · Σ_n w_n ∇ℓ_n` (`w_n = 1` without `weights`, else the chunk's n-th weight).
    fn chunk_grad_accumulate(
        &self,
        tape: &mut Self::Tape,
        loss: Loss,
        weights: Option<&[T]>,
        grad: &mut [T],
        scale: T,
    ) -> f64;
    /// Mean loss over `data` (for logging; may allocate).
    fn mean_loss(&self, data: &Dataset<T>, loss: Loss) -> Result<f64>;

    /// Names of the `norm_sq_*` columns (one per layer or parameterised module).
    fn norm_columns(&self) -> Vec<String>;
    /// `‖θ_block‖²` of each, in the order of [`Trainable::norm_columns`].
    fn norms_sq(&self) -> Vec<f64>;
    /// The standard observers of `config`: basics, every symmetry's charge, and noise and sharpness when asked.
    fn default_observers<'a>(&self, config: &TrainConfig) -> Result<Vec<Box<dyn Observer<T, Self> + 'a>>>
    where
        Self: 'a;

    /// Writes the model as safetensors (precision T) with its architecture in `__metadata__["noether.arch"]`.
    fn save(&self, path: &Path) -> Result<()>;
    /// Writes `data` as this model reads it (`x` `[N, *input]`).
    fn save_data(&self, data: &Dataset<T>, path: &Path) -> Result<()>;
}

impl<T: Real> Trainable<T> for Model<T> {
    /// The module-tree tape of [`NetArch::from_dense`] (θ in the same layout), as for a [`Net`].
    type Tape = crate::net::Tape<T>;

    fn from_config<R: Rng>(config: &TrainConfig, rng: &mut R) -> Result<Self> {
        config.build_model(rng)
    }
    fn data_from_config<R: Rng>(&self, config: &TrainConfig, rng: &mut R) -> Result<TrainData<T>> {
        config.data.build::<T, _>(self.arch.d_in(), self.arch.d_out(), rng)
    }
    fn params(&self) -> &[T] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [T] {
        &mut self.params
    }
    fn dense(&self) -> Option<&Model<T>> {
        Some(self)
    }
    fn check_finite(&self) -> Result<()> {
        Model::check_finite(self)
    }
    fn check_data(&self, data: &Dataset<T>, loss: Loss) -> Result<()> {
        data.check_fits(self.arch.d_in(), self.arch.d_out(), loss)
    }
    fn tape(&self, capacity: usize) -> Result<Self::Tape> {
        // Large models run their GEMMs on every core; the choice is by the flops of one pass over the tape.
        let flops = self.arch.train_flops(capacity);
        let par = crate::linalg::par_for_flops(flops, crate::linalg::STEP_PAR_MIN_FLOPS);
        Ok(crate::net::Tape::new(&NetArch::from_dense(&self.arch)?, capacity).with_par(par))
    }
    fn chunk() -> usize {
        super::trainer::CHUNK
    }
    fn batch_grad_into(
        &self,
        tape: &mut Self::Tape,
        batch: Batch<'_, T>,
        loss: Loss,
        grad: &mut [T],
    ) -> Result<f64> {
        tape_batch_grad(tape, &self.params, batch, loss, grad)
    }
    fn chunk_grad_accumulate(
        &self,
        tape: &mut Self::Tape,
        loss: Loss,
        weights: Option<&[T]>,
        grad: &mut [T],
        scale: T,
    ) -> f64 {
        tape_chunk_grad(tape, &self.params, loss, weights, grad, scale)
    }
    fn mean_loss(&self, data: &Dataset<T>, loss: Loss) -> Result<f64> {
        self.loss(data, loss, 4096)
    }
    fn norm_columns(&self) -> Vec<String> {
        (0..self.arch.n_layers()).map(|l| format!("norm_sq_l{l}")).collect()
    }
    fn norms_sq(&self) -> Vec<f64> {
        self.layer_norms_sq()
    }
    fn default_observers<'a>(&self, config: &TrainConfig) -> Result<Vec<Box<dyn Observer<T, Self> + 'a>>>
    where
        Self: 'a,
    {
        let o = &config.observe;
        let mut v: Vec<Box<dyn Observer<T> + 'a>> =
            vec![Box::new(Basics), Box::new(Charges::new(self, o.unit_charges, o.pair_entries))];
        if o.noise_every > 0 {
            v.push(Box::new(NoiseObserver::new(self, o.noise_every)));
        }
        if let Some(opts) = super::sharpness_options(config)? {
            v.push(Box::new(SharpnessObserver::new(o.sharpness_every, opts)));
        }
        Ok(v)
    }
    fn save(&self, path: &Path) -> Result<()> {
        crate::net::save_dense::<T, T>(self, path)
    }
    fn save_data(&self, data: &Dataset<T>, path: &Path) -> Result<()> {
        crate::data::save_dataset(data, path)
    }
}

impl<T: Real> Trainable<T> for Net<T> {
    type Tape = crate::net::Tape<T>;

    fn from_config<R: Rng>(config: &TrainConfig, rng: &mut R) -> Result<Self> {
        let ModelConfig::Tree(tree) = &config.model else {
            return Err(Error::Config(
                "[model] is a dense chain (`dims`); it builds a Model, not a net".into(),
            ));
        };
        match &tree.init_file {
            None => Ok(Net::init_with(tree.arch.clone(), rng)),
            Some(f) => crate::net::load_net(f, Some(&tree.arch)),
        }
    }
    fn data_from_config<R: Rng>(&self, config: &TrainConfig, rng: &mut R) -> Result<TrainData<T>> {
        config.data.build_for_net::<T, _>(&self.arch, rng)
    }
    fn params(&self) -> &[T] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [T] {
        &mut self.params
    }
    fn dense(&self) -> Option<&Model<T>> {
        None
    }
    fn check_finite(&self) -> Result<()> {
        Net::check_finite(self)
    }
    fn check_data(&self, data: &Dataset<T>, loss: Loss) -> Result<()> {
        Net::check_data(self, data, None, loss)
    }
    fn tape(&self, capacity: usize) -> Result<Self::Tape> {
        Ok(crate::net::Tape::new(&self.arch, capacity))
    }
    fn chunk() -> usize {
        crate::net::CHUNK
    }
    fn batch_grad_into(
        &self,
        tape: &mut Self::Tape,
        batch: Batch<'_, T>,
        loss: Loss,
        grad: &mut [T],
    ) -> Result<f64> {
        tape_batch_grad(tape, &self.params, batch, loss, grad)
    }
    fn chunk_grad_accumulate(
        &self,
        tape: &mut Self::Tape,
        loss: Loss,
        weights: Option<&[T]>,
        grad: &mut [T],
        scale: T,
    ) -> f64 {
        tape_chunk_grad(tape, &self.params, loss, weights, grad, scale)
    }
    fn mean_loss(&self, data: &Dataset<T>, loss: Loss) -> Result<f64> {
        let l = crate::net::per_sample_losses(self, data, loss)?;
        Ok(l.iter().sum::<f64>() / data.len() as f64)
    }
    fn norm_columns(&self) -> Vec<String> {
        param_modules(self).into_iter().map(|(name, _)| format!("norm_sq_{name}")).collect()
    }
    fn norms_sq(&self) -> Vec<f64> {
        param_modules(self)
            .into_iter()
            .map(|(_, ranges)| {
                ranges.iter().flat_map(|r| &self.params[r.clone()]).map(|v| v.to_f64() * v.to_f64()).sum()
            })
            .collect()
    }
    fn default_observers<'a>(&self, config: &TrainConfig) -> Result<Vec<Box<dyn Observer<T, Self> + 'a>>>
    where
        Self: 'a,
    {
        let o = &config.observe;
        let mut v: Vec<Box<dyn Observer<T, Net<T>> + 'a>> =
            vec![Box::new(Basics), Box::new(NetCharges::new(self, o.unit_charges, o.pair_entries))];
        if o.noise_every > 0 {
            v.push(Box::new(NetNoise::new(self, o.noise_every)));
        }
        if let Some(opts) = super::sharpness_options(config)? {
            v.push(Box::new(NetSharpness::new(o.sharpness_every, opts)));
        }
        Ok(v)
    }
    fn save(&self, path: &Path) -> Result<()> {
        crate::net::save_net::<T, T>(self, path)
    }
    fn save_data(&self, data: &Dataset<T>, path: &Path) -> Result<()> {
        crate::data::save_dataset_shaped(data, &self.arch.input, path)
    }
}

/// [`Trainable::batch_grad_into`] on a module-tree tape (θ in its layout): loads `batch`, runs forward, the
/// loss gradient `∂ℓ_n/∂f` and backward, and writes `grad = (1/B) Σ_n ∇ℓ_n`; returns the mean loss
/// `(1/B) Σ_n ℓ_n` ([`crate::net::Tape::loss_grad`] gives the sum).
fn tape_batch_grad<T: Real>(
    tape: &mut crate::net::Tape<T>,
    theta: &[T],
    batch: Batch<'_, T>,
    loss: Loss,
    grad: &mut [T],
) -> Result<f64> {
    let s = batch.len();
    tape.load_batch(batch)?;
    tape.forward(theta);
    let total = tape.loss_grad(loss);
    tape.backward_into(theta, grad, T::from_f64(1.0 / s as f64));
    Ok(total / s as f64)
}

/// [`Trainable::chunk_grad_accumulate`] on a module-tree tape: `grad += scale · Σ_n w_n ∇ℓ_n` over the loaded
/// chunk (the output gradients weighted by [`crate::net::Tape::weight_output_grad`]); returns the chunk's mean
/// loss.
fn tape_chunk_grad<T: Real>(
    tape: &mut crate::net::Tape<T>,
    theta: &[T],
    loss: Loss,
    weights: Option<&[T]>,
    grad: &mut [T],
    scale: T,
) -> f64 {
    let b = tape.batch();
    tape.forward(theta);
    let total = tape.loss_grad(loss);
    if let Some(w) = weights {
        tape.weight_output_grad(w);
    }
    tape.backward(theta, Some((grad, scale)));
    total / b as f64
}

/// Every parameterised module of a net (state_dict prefix, its blocks' ranges), in state_dict order.
fn param_modules<T>(net: &Net<T>) -> Vec<(String, Vec<Range<usize>>)> {
    let mut out: Vec<(String, Vec<Range<usize>>)> = Vec::new();
    for b in &net.arch.blocks {
        let module = b.name.rsplit_once('.').map_or(b.name.as_str(), |(m, _)| m);
        match out.last_mut() {
            Some((m, ranges)) if m == module => ranges.push(b.range.clone()),
            _ => out.push((module.to_string(), vec![b.range.clone()])),
        }
    }
    out
}

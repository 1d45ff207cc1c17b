//! The step engine: one GD, SGD, SDE or gradient-flow step at a time, with every buffer preallocated.
//!
//! - GD: `θ ← θ − η(∇L + γθ)`.
//! - SGD: `θ ← θ − η(ĝ + γθ)`, `ĝ = (1/S)Σ_{n∈B}∇ℓ_n`.
//! - SDE (Euler–Maruyama, `dt = η`): `θ ← θ − η(∇L − ζ + γθ)` with `ζ = (1/√(SN))Σ_n ξ_n(g_n − ḡ)`,
//!   `ξ_n ~ N(0,1)`, so `Cov(ηζ) = η²Σ/S` (Σ centred, 1/N) — the SGD noise. Computed as one weighted
//!   backward pass `Σ_n c_n g_n` with `c_n = (1 + Σ_m w_m)/N − w_n`, `w_n = ξ_n/√(SN)`: no P×P matrix.
//! - Gradient flow: RK4 on `dθ/dt = −(∇L + γθ)`, `substeps` per step, time advancing by η per step.

use super::config::{Method, TrainConfig, TrainData};
use super::Schedule;
use crate::data::{Batch, BatchSampler, Dataset, SampleMajor, SAMPLE_MAJOR_MAX_BYTES};
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::model::{LinearChainStep, Model, SmallBatchStep, Tape};
use crate::real::Real;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Samples per chunk for full-data passes.
pub const CHUNK: usize = 2048;

/// A model being trained, with its data and all buffers of the step loop.
pub struct Trainer<T: Real> {
    /// The model θ.
    pub model: Model<T>,
    data: TrainData<T>,
    loss: Loss,
    method: Method,
    lr: f64,
    schedule: Schedule,
    weight_decay: f64,
    steps_total: u64,
    rng: ChaCha8Rng,
    tape: Tape<T>,
    grad: Vec<T>,
    theta0: Vec<T>,
    acc: Vec<T>,
    sampler: Option<BatchSampler>,
    online_batch: Option<Dataset<T>>,
    /// Sample-major copy of finite SGD data, for fast minibatch gathers.
    sample_major: Option<SampleMajor<T>>,
    /// The fused per-sample step, for SGD at batch sizes where it beats the batched tape.
    fused: Option<SmallBatchStep<T>>,
    /// The Gram-form step, for SGD on linear chains where it needs fewer multiply-adds than the tape.
    chain: Option<LinearChainStep<T>>,
    /// Whether the fused step must leave ĝ in `grad` (see [`Trainer::record_direction`]).
    record_direction: bool,
    xi: Vec<T>,
    step: u64,
    time: f64,
    last_loss: f64,
}

impl<T: Real> Trainer<T> {
    /// Builds model and data from a config. The seeded RNG draws, in order: the initial weights, the data
    /// (teacher map, samples), then batches and noise during training.
    pub fn from_config(config: &TrainConfig) -> Result<Self> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let model: Model<T> = config.build_model(&mut rng)?;
        let data = config.data.build::<T, _>(model.arch.d_in(), model.arch.d_out(), &mut rng)?;
        Self::new(model, data, config, rng)
    }

    /// A trainer for an explicit model and data (the config supplies optimiser, schedule, loss, steps).
    pub fn new(model: Model<T>, data: TrainData<T>, config: &TrainConfig, rng: ChaCha8Rng) -> Result<Self> {
        model.check_finite()?;
        let loss = config.loss;
        let (tape_cap, sampler, online_batch) = match (&config.optimizer, &data) {
            (Method::Sgd { batch_size, sampling }, TrainData::Finite(d)) => {
                d.check_model(&model.arch, loss)?;
                (*batch_size, Some(BatchSampler::new(d.len(), *batch_size, *sampling)?), None)
            }
            (Method::Sgd { batch_size, .. }, TrainData::Online { sampler, eval }) => {
                eval.check_model(&model.arch, loss)?;
                let batch = sampler.sample::<T, _>(*batch_size, &mut ChaCha8Rng::seed_from_u64(0));
                (*batch_size, None, Some(batch))
            }
            (_, TrainData::Finite(d)) => {
                d.check_model(&model.arch, loss)?;
                (d.len().min(CHUNK), None, None)
            }
            (m, TrainData::Online { .. }) => {
                return Err(Error::Config(format!("optimizer `{}` needs a finite data set", m.short())))
            }
        };
        let p = model.arch.n_params();
        let n = match &data {
            TrainData::Finite(d) => d.len(),
            TrainData::Online { .. } => 0,
        };
        let xi = if matches!(config.optimizer, Method::Sde { .. }) { vec![T::zero(); n] } else { Vec::new() };
        let rk = matches!(config.optimizer, Method::GradientFlow { .. });
        // Large models run their GEMMs on every core; the choice is by the flops of one pass over the tape.
        let mut tape = Tape::new(&model.arch, tape_cap);
        let flops = model.arch.train_flops(tape_cap);
        tape.set_par(crate::linalg::par_for_flops(flops, crate::linalg::STEP_PAR_MIN_FLOPS));
        let fused = match config.optimizer {
            Method::Sgd { batch_size, .. } if SmallBatchStep::<T>::supports(&model.arch, batch_size) => {
                Some(SmallBatchStep::new(&model.arch, batch_size))
            }
            _ => None,
        };
        let chain = match config.optimizer {
            Method::Sgd { batch_size, .. }
                if fused.is_none() && LinearChainStep::<T>::supports(&model.arch, batch_size) =>
            {
                Some(LinearChainStep::new(&model.arch, batch_size))
            }
            _ => None,
        };
        let sample_major = match (&config.optimizer, &data) {
            (Method::Sgd { .. }, TrainData::Finite(d))
                if SampleMajor::bytes_for(d) <= SAMPLE_MAJOR_MAX_BYTES =>
            {
                Some(SampleMajor::new(d))
            }
            _ => None,
        };
        Ok(Self {
            sample_major,
            fused,
            chain,
            record_direction: false,
            tape,
            model,
            data,
            loss,
            method: config.optimizer.clone(),
            lr: config.lr,
            schedule: config.schedule.clone(),
            weight_decay: config.weight_decay,
            steps_total: config.steps,
            rng,
            grad: vec![T::zero(); p],
            theta0: if rk { vec![T::zero(); p] } else { Vec::new() },
            acc: if rk { vec![T::zero(); p] } else { Vec::new() },
            sampler,
            online_batch,
            xi,
            step: 0,
            time: 0.0,
            last_loss: f64::NAN,
        })
    }

    /// Steps taken so far.
    pub fn step_count(&self) -> u64 {
        self.step
    }
    /// Time `t = Σ_k η_k` so far.
    pub fn time(&self) -> f64 {
        self.time
    }
    /// The learning rate of the next step.
    pub fn current_lr(&self) -> f64 {
        self.schedule.lr(self.lr, self.step, self.steps_total)
    }
    /// The loss.
    pub fn loss_fn(&self) -> Loss {
        self.loss
    }
    /// The optimiser.
    pub fn method(&self) -> &Method {
        &self.method
    }
    /// Loss seen by the last step (the batch loss for SGD, the full loss otherwise).
    pub fn last_loss(&self) -> f64 {
        self.last_loss
    }
    /// Keep the update direction of every step for [`Trainer::last_direction`]. Every method keeps it anyway
    /// except two SGD steps, which apply the update without storing ĝ unless this is on: the fused
    /// small-batch step at B = 1 (`θ ← θ − η(δxᵀ + γθ)`, one store per parameter less) and the Gram-form
    /// step of linear chains without weight decay (the products add `−η·ĝ_l` to the weights themselves, with
    /// the same rounding as the update pass: 1–3% of the 30-40-30 step at S = 64 in paired runs).
    pub fn record_direction(&mut self, on: bool) {
        self.record_direction = on;
    }

    /// The update direction of the last step without weight decay: ĝ for SGD, ∇L for GD, ∇L − ζ for the SDE
    /// (for gradient flow, the RK4 average direction). `None` for a fused small-batch or Gram-form SGD step
    /// taken without [`Trainer::record_direction`], and before the first step.
    pub fn last_direction(&self) -> Option<&[T]> {
        if self.step == 0 || ((self.fused.is_some() || self.chain.is_some()) && !self.record_direction) {
            None
        } else if matches!(self.method, Method::GradientFlow { .. }) {
            Some(&self.acc)
        } else {
            Some(&self.grad)
        }
    }
    /// The data set used for logging the loss (the training set, or the held-out set of online runs).
    pub fn eval_data(&self) -> &Dataset<T> {
        match &self.data {
            TrainData::Finite(d) => d,
            TrainData::Online { eval, .. } => eval,
        }
    }

    /// Mean loss and gradient over the whole finite data set into `grad` (scaled by `scale`), chunked.
    fn full_grad_into(
        tape: &mut Tape<T>,
        model: &Model<T>,
        data: &Dataset<T>,
        loss: Loss,
        grad: &mut [T],
    ) -> Result<f64> {
        let n = data.len();
        let inv = T::from_f64(1.0 / n as f64);
        grad.iter_mut().for_each(|g| *g = T::zero());
        let mut total = 0.0;
        let mut start = 0;
        while start < n {
            let end = (start + tape.capacity()).min(n);
            tape.load_range(data, start..end);
            tape.forward(model);
            total += tape.loss_and_output_grad(loss)? * (end - start) as f64;
            tape.backward_accumulate(model, grad, inv);
            start = end;
        }
        Ok(total / n as f64)
    }

    /// The next SGD batch: sampled rows of the finite data set (from its sample-major copy when there is
    /// one), or a freshly drawn online batch.
    fn draw_batch<'a>(
        data: &'a TrainData<T>,
        sample_major: &'a Option<SampleMajor<T>>,
        sampler: &'a mut Option<BatchSampler>,
        online_batch: &'a mut Option<Dataset<T>>,
        rng: &mut ChaCha8Rng,
    ) -> Batch<'a, T> {
        match (data, sampler, online_batch) {
            (TrainData::Finite(d), Some(s), _) => match sample_major {
                Some(m) => Batch::SampleMajorRows(m, s.next_batch(rng)),
                None => Batch::Rows(d, s.next_batch(rng)),
            },
            (TrainData::Online { sampler, .. }, _, Some(batch)) => {
                sampler.resample_into(batch, rng);
                let n = batch.len();
                Batch::First(batch, n)
            }
            _ => unreachable!("SGD trainer always has a sampler or an online batch"),
        }
    }

    /// One step. A non-finite loss is [`Error::Diverged`] naming the step; θ is left as it was before it.
    pub fn step(&mut self) -> Result<()> {
        let lr = self.current_lr();
        if let Some(fused) = self.fused.as_mut() {
            fused.load_batch(Self::draw_batch(
                &self.data,
                &self.sample_major,
                &mut self.sampler,
                &mut self.online_batch,
                &mut self.rng,
            ));
            let (eta, wd) = (T::from_f64(lr), T::from_f64(self.weight_decay));
            let record = self.record_direction;
            let loss = fused.step(&mut self.model.params, &mut self.grad, record, self.loss, eta, wd);
            return self.finish_step(loss, lr);
        }
        let loss = match self.method.clone() {
            Method::Sgd { batch_size, .. } => {
                let batch = Self::draw_batch(
                    &self.data,
                    &self.sample_major,
                    &mut self.sampler,
                    &mut self.online_batch,
                    &mut self.rng,
                );
                if let Some(chain) = self.chain.as_mut() {
                    chain.load_batch(batch);
                    if !self.record_direction && self.weight_decay == 0.0 {
                        // The products apply θ ← θ − ηĝ themselves: no ĝ stored, no update pass.
                        let loss = chain.sgd_step(&mut self.model.params, self.loss, T::from_f64(lr));
                        return self.finish_step(loss, lr);
                    }
                    chain.gradient(&self.model.params, &mut self.grad, self.loss)
                } else {
                    self.tape.load_batch(batch);
                    self.tape.forward(&self.model);
                    let l = self.tape.loss_and_output_grad(self.loss)?;
                    self.tape.backward(
                        &self.model,
                        Some(&mut self.grad),
                        T::from_f64(1.0 / batch_size as f64),
                    );
                    l
                }
            }
            Method::Gd => {
                let TrainData::Finite(d) = &self.data else { unreachable!() };
                Self::full_grad_into(&mut self.tape, &self.model, d, self.loss, &mut self.grad)?
            }
            Method::Sde { batch_size } => self.sde_direction(batch_size)?,
            Method::GradientFlow { substeps } => {
                let l = self.rk4(lr, substeps)?;
                self.finish_step(l, lr)?;
                return Ok(());
            }
        };
        self.finish_step(loss, lr)?;
        let (eta, wd) = (T::from_f64(lr), T::from_f64(self.weight_decay));
        crate::linalg::sgd_update_in_place(&mut self.model.params, &self.grad, eta, wd);
        Ok(())
    }

    fn finish_step(&mut self, loss: f64, lr: f64) -> Result<()> {
        self.last_loss = loss;
        if !loss.is_finite() {
            return Err(Error::Diverged { step: self.step, loss, lr });
        }
        self.step += 1;
        self.time += lr;
        Ok(())
    }

    /// Writes `∇L − ζ` into `grad` (one weighted pass over the data) and returns the full loss.
    fn sde_direction(&mut self, batch_size: usize) -> Result<f64> {
        let TrainData::Finite(d) = &self.data else { unreachable!() };
        let n = d.len();
        let s = 1.0 / ((batch_size * n) as f64).sqrt();
        let mut wsum = 0.0;
        for x in self.xi.iter_mut() {
            let g: f64 = StandardNormal.sample(&mut self.rng);
            *x = T::from_f64(g * s);
            wsum += g * s;
        }
        let base = (1.0 + wsum) / n as f64;
        for x in self.xi.iter_mut() {
            *x = T::from_f64(base) - *x;
        }
        self.grad.iter_mut().for_each(|g| *g = T::zero());
        let mut total = 0.0;
        let mut start = 0;
        while start < n {
            let end = (start + self.tape.capacity()).min(n);
            self.tape.load_range(d, start..end);
            self.tape.forward(&self.model);
            total += self.tape.loss_and_output_grad(self.loss)? * (end - start) as f64;
            self.tape.weight_output_grad(&self.xi[start..end]);
            self.tape.backward_accumulate(&self.model, &mut self.grad, T::one());
            start = end;
        }
        Ok(total / n as f64)
    }

    /// RK4 on `dθ/dt = −(∇L + γθ)` over time `lr` in `substeps` steps; `acc` ends as the last substep's mean
    /// RK4 direction.
    fn rk4(&mut self, lr: f64, substeps: usize) -> Result<f64> {
        let TrainData::Finite(d) = &self.data else { unreachable!() };
        let h = lr / substeps as f64;
        let wd = T::from_f64(self.weight_decay);
        let mut first_loss = f64::NAN;
        for sub in 0..substeps {
            self.theta0.copy_from_slice(&self.model.params);
            self.acc.iter_mut().for_each(|a| *a = T::zero());
            for (stage, (w_acc, c_next)) in
                [(1.0, 0.5), (2.0, 0.5), (2.0, 1.0), (1.0, 0.0)].into_iter().enumerate()
            {
                let l = Self::full_grad_into(&mut self.tape, &self.model, d, self.loss, &mut self.grad)?;
                if sub == 0 && stage == 0 {
                    first_loss = l;
                }
                if !l.is_finite() {
                    return Ok(l);
                }
                let (wa, cn) = (T::from_f64(w_acc), T::from_f64(c_next * h));
                for i in 0..self.grad.len() {
                    let k = self.grad[i] + wd * self.model.params[i];
                    self.acc[i] += wa * k;
                    if stage < 3 {
                        self.model.params[i] = self.theta0[i] - cn * k;
                    }
                }
            }
            let c = T::from_f64(h / 6.0);
            for i in 0..self.acc.len() {
                self.model.params[i] = self.theta0[i] - c * self.acc[i];
            }
        }
        let six = T::from_f64(1.0 / 6.0);
        self.acc.iter_mut().for_each(|a| *a *= six);
        Ok(first_loss)
    }
}

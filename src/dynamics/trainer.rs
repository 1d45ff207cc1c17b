//! The step engine: one GD, SGD, SDE or gradient-flow step at a time, with every buffer preallocated.
//!
//! - GD: `θ ← θ − η(∇L + γθ)`.
//! - SGD: `θ ← θ − η(ĝ + γθ)`, `ĝ = (1/S)Σ_{n∈B}∇ℓ_n`.
//! - SDE (Euler–Maruyama, `dt = η`): `θ ← θ − η(∇L − ζ + γθ)` with `ζ = (1/√(SN))Σ_n ξ_n(g_n − ḡ)`,
//!   `ξ_n ~ N(0,1)`, so `Cov(ηζ) = η²Σ/S` (Σ centred, 1/N) — the SGD noise. Computed as one weighted
//!   backward pass `Σ_n c_n g_n` with `c_n = (1 + Σ_m w_m)/N − w_n`, `w_n = ξ_n/√(SN)`: no P×P matrix.
//! - Gradient flow on `dθ/dt = −(∇L + γθ)`, time advancing by η per step: classical RK4 with `substeps` per
//!   step, or Dormand–Prince 5(4) with error control and the substep carried from step to step (`tolerance`).
//!
//! Every method is written once against [`Trainable`]: a dense chain ([`Model`]; SGD takes its fused
//! small-batch or Gram-form step where the shape favours them) or a module tree ([`crate::net::Net`]).

use super::config::{Method, TrainConfig, TrainData};
use super::trainable::Trainable;
use super::Schedule;
use crate::data::{Batch, BatchSampler, Dataset, SampleMajor, SAMPLE_MAJOR_MAX_BYTES};
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::model::{LinearChainStep, Model, SmallBatchStep};
use crate::real::Real;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Samples per chunk for full-data passes.
pub const CHUNK: usize = 2048;

/// A model being trained, with its data and all buffers of the step loop. `M` is the thing being trained
/// ([`Trainable`]): a dense chain [`Model`] (default; with its fused and Gram-form SGD steps) or a module tree
/// [`crate::net::Net`]. The optimisers, schedules and weight decay are written once, against `M`'s passes.
pub struct Trainer<T: Real, M: Trainable<T> = Model<T>> {
    /// The model θ.
    pub model: M,
    data: TrainData<T>,
    loss: Loss,
    method: Method,
    lr: f64,
    schedule: Schedule,
    weight_decay: f64,
    steps_total: u64,
    rng: ChaCha8Rng,
    tape: M::Tape,
    grad: Vec<T>,
    theta0: Vec<T>,
    acc: Vec<T>,
    /// Dormand–Prince state for adaptive gradient flow.
    dopri: Option<Dopri<T>>,
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

impl<T: Real, M: Trainable<T>> Trainer<T, M> {
    /// Builds model and data from a config. The seeded RNG draws, in order: the initial weights, the data
    /// (teacher map, samples), then batches and noise during training.
    pub fn from_config(config: &TrainConfig) -> Result<Self> {
        config.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
        let model = M::from_config(config, &mut rng)?;
        let data = model.data_from_config(config, &mut rng)?;
        Self::new(model, data, config, rng)
    }

    /// A trainer for an explicit model and data (the config supplies optimiser, schedule, loss, steps).
    pub fn new(model: M, data: TrainData<T>, config: &TrainConfig, rng: ChaCha8Rng) -> Result<Self> {
        model.check_finite()?;
        config.check_sample_count(match &data {
            TrainData::Finite(d) => d.len(),
            TrainData::Online { eval, .. } => eval.len(),
        })?;
        let loss = config.loss;
        let (tape_cap, sampler, online_batch) = match (&config.optimizer, &data) {
            (Method::Sgd { batch_size, sampling }, TrainData::Finite(d)) => {
                model.check_data(d, loss)?;
                (*batch_size, Some(BatchSampler::new(d.len(), *batch_size, *sampling)?), None)
            }
            (Method::Sgd { batch_size, .. }, TrainData::Online { sampler, eval }) => {
                model.check_data(eval, loss)?;
                let batch = sampler.sample::<T, _>(*batch_size, &mut ChaCha8Rng::seed_from_u64(0));
                (*batch_size, None, Some(batch))
            }
            (_, TrainData::Finite(d)) => {
                model.check_data(d, loss)?;
                (d.len().min(M::chunk()), None, None)
            }
            (m, TrainData::Online { .. }) => {
                return Err(Error::Config(format!("optimizer `{}` needs a finite data set", m.short())))
            }
        };
        let p = model.params().len();
        let n = match &data {
            TrainData::Finite(d) => d.len(),
            TrainData::Online { .. } => 0,
        };
        let xi = if matches!(config.optimizer, Method::Sde { .. }) { vec![T::zero(); n] } else { Vec::new() };
        let rk = matches!(config.optimizer, Method::GradientFlow { .. });
        let tape = model.tape(tape_cap)?;
        // The dense chain's specialised SGD steps and its sample-major copy of the data.
        let dense = model.dense();
        let fused = match (&config.optimizer, dense) {
            (Method::Sgd { batch_size, .. }, Some(m))
                if SmallBatchStep::<T>::supports(&m.arch, *batch_size) =>
            {
                Some(SmallBatchStep::new(&m.arch, *batch_size))
            }
            _ => None,
        };
        let chain = match (&config.optimizer, dense) {
            (Method::Sgd { batch_size, .. }, Some(m))
                if fused.is_none() && LinearChainStep::<T>::supports(&m.arch, *batch_size) =>
            {
                Some(LinearChainStep::new(&m.arch, *batch_size))
            }
            _ => None,
        };
        let sample_major = match (&config.optimizer, &data) {
            (Method::Sgd { .. }, TrainData::Finite(d))
                if dense.is_some() && SampleMajor::bytes_for(d) <= SAMPLE_MAJOR_MAX_BYTES =>
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
            dopri: match config.optimizer {
                Method::GradientFlow { substeps, tolerance: Some(tol) } => {
                    Some(Dopri::new(p, config.lr / substeps as f64, tol))
                }
                _ => None,
            },
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

    /// Mean loss and gradient over the whole finite data set into `grad`, chunked.
    fn full_grad_into(
        tape: &mut M::Tape,
        model: &M,
        data: &Dataset<T>,
        loss: Loss,
        grad: &mut [T],
    ) -> Result<f64> {
        let n = data.len();
        let inv = T::from_f64(1.0 / n as f64);
        grad.iter_mut().for_each(|g| *g = T::zero());
        let mut total = 0.0;
        crate::net::for_each_chunk(tape, data, |t, r| {
            total += model.chunk_grad_accumulate(t, loss, None, grad, inv) * r.len() as f64;
            Ok(())
        })?;
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
            let loss = fused.step(self.model.params_mut(), &mut self.grad, record, self.loss, eta, wd);
            return self.finish_step(loss, lr);
        }
        let loss = match self.method.clone() {
            Method::Sgd { .. } => {
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
                        let loss = chain.sgd_step(self.model.params_mut(), self.loss, T::from_f64(lr));
                        return self.finish_step(loss, lr);
                    }
                    chain.gradient(self.model.params(), &mut self.grad, self.loss)
                } else {
                    self.model.batch_grad_into(&mut self.tape, batch, self.loss, &mut self.grad)?
                }
            }
            Method::Gd => {
                let TrainData::Finite(d) = &self.data else { unreachable!() };
                Self::full_grad_into(&mut self.tape, &self.model, d, self.loss, &mut self.grad)?
            }
            Method::Sde { batch_size } => self.sde_direction(batch_size)?,
            Method::GradientFlow { substeps, tolerance } => {
                let l = match tolerance {
                    None => self.rk4(lr, substeps)?,
                    Some(_) => self.dopri5(lr)?,
                };
                self.finish_step(l, lr)?;
                return Ok(());
            }
        };
        self.finish_step(loss, lr)?;
        let (eta, wd) = (T::from_f64(lr), T::from_f64(self.weight_decay));
        crate::linalg::sgd_update_in_place(self.model.params_mut(), &self.grad, eta, wd);
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
        let (model, loss, xi, grad) = (&self.model, self.loss, &self.xi, &mut self.grad);
        crate::net::for_each_chunk(&mut self.tape, d, |t, r| {
            let w = Some(&xi[r.clone()]);
            total += model.chunk_grad_accumulate(t, loss, w, grad, T::one()) * r.len() as f64;
            Ok(())
        })?;
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
            self.theta0.copy_from_slice(self.model.params());
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
                let params = self.model.params_mut();
                for i in 0..self.grad.len() {
                    let k = self.grad[i] + wd * params[i];
                    self.acc[i] += wa * k;
                    if stage < 3 {
                        params[i] = self.theta0[i] - cn * k;
                    }
                }
            }
            let c = T::from_f64(h / 6.0);
            let params = self.model.params_mut();
            for i in 0..self.acc.len() {
                params[i] = self.theta0[i] - c * self.acc[i];
            }
        }
        let six = T::from_f64(1.0 / 6.0);
        self.acc.iter_mut().for_each(|a| *a *= six);
        Ok(first_loss)
    }

    /// Dormand–Prince 5(4) on `dθ/dt = −(∇L + γθ)` over time `lr`, with error control (see
    /// [`Method::GradientFlow`]). The substep h carries over from the last step and follows the standard
    /// controller `h ← h·clamp(0.9·err^{−1/5}, 0.2, 5)`; the last substep is cut to land on the step's end; a trial
    /// whose stages leave the finite range is rejected like one with too large an error. `acc` ends as the last
    /// substep's mean direction `Σ_j b_j k_j`. Returns the loss at the step's start, where θ is left untouched
    /// if that loss is not finite.
    fn dopri5(&mut self, lr: f64) -> Result<f64> {
        let TrainData::Finite(d) = &self.data else { unreachable!() };
        let dp = self.dopri.as_mut().expect("adaptive gradient flow allocates its stages");
        let wd = T::from_f64(self.weight_decay);
        let add_decay = |k: &mut [T], theta: &[T]| {
            if wd != T::zero() {
                k.iter_mut().zip(theta).for_each(|(k, &t)| *k += wd * t);
            }
        };
        let first = Self::full_grad_into(&mut self.tape, &self.model, d, self.loss, &mut dp.k[0])?;
        if !first.is_finite() {
            return Ok(first);
        }
        add_decay(&mut dp.k[0], self.model.params());
        self.theta0.copy_from_slice(self.model.params());
        let mut t = 0.0;
        while t < lr {
            let planned = dp.h;
            let last = planned >= (lr - t) * (1.0 - 1e-12);
            let h = if last { lr - t } else { planned };
            let th = T::from_f64(h);
            let mut finite = true;
            for s in 1..7 {
                let a: [T; 6] = std::array::from_fn(|j| T::from_f64(DOPRI_A[s][j]));
                let (done, rest) = dp.k.split_at_mut(s);
                let params = self.model.params_mut();
                for i in 0..self.theta0.len() {
                    let mut dir = T::zero();
                    for (aj, kj) in a.iter().zip(done.iter()) {
                        dir += *aj * kj[i];
                    }
                    params[i] = self.theta0[i] - th * dir;
                    if s == 6 {
                        self.acc[i] = dir;
                    }
                }
                let l = Self::full_grad_into(&mut self.tape, &self.model, d, self.loss, &mut rest[0])?;
                if !l.is_finite() {
                    finite = false;
                    break;
                }
                add_decay(&mut rest[0], self.model.params());
            }
            let err =
                if finite { dp.error_norm(h, &self.theta0, self.model.params()) } else { f64::INFINITY };
            if err <= 1.0 {
                dp.accepted += 1;
                let next = h * (0.9 * err.powf(-0.2)).clamp(0.2, 5.0);
                dp.h = if last { next.max(planned) } else { next };
                t = if last { lr } else { t + h };
                dp.k.swap(0, 6);
                self.theta0.copy_from_slice(self.model.params());
            } else {
                dp.rejected += 1;
                let shrink = if err.is_finite() { (0.9 * err.powf(-0.2)).clamp(0.2, 1.0) } else { 0.2 };
                dp.h = h * shrink;
                self.model.params_mut().copy_from_slice(&self.theta0);
                if dp.h <= lr * 1e-12 {
                    return Err(Error::FlowStepUnderflow {
                        step: self.step,
                        time: self.time,
                        h: dp.h,
                        tolerance: dp.tolerance,
                    });
                }
            }
        }
        Ok(first)
    }

    /// Substeps of adaptive gradient flow so far: `(accepted, rejected)`; `None` for any other method.
    pub fn flow_substeps(&self) -> Option<(u64, u64)> {
        self.dopri.as_ref().map(|dp| (dp.accepted, dp.rejected))
    }
}

/// The Dormand–Prince 5(4) tableau: stage `s` is evaluated at `θ − h·Σ_{j<s} A[s][j]·k_j`; its last row is the
/// fifth-order solution's weights `b` (first same as last: `k_6` is the next substep's `k_0`).
const DOPRI_A: [[f64; 6]; 7] = [
    [0.0; 6],
    [1.0 / 5.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [3.0 / 40.0, 9.0 / 40.0, 0.0, 0.0, 0.0, 0.0],
    [44.0 / 45.0, -56.0 / 15.0, 32.0 / 9.0, 0.0, 0.0, 0.0],
    [19372.0 / 6561.0, -25360.0 / 2187.0, 64448.0 / 6561.0, -212.0 / 729.0, 0.0, 0.0],
    [9017.0 / 3168.0, -355.0 / 33.0, 46732.0 / 5247.0, 49.0 / 176.0, -5103.0 / 18656.0, 0.0],
    [35.0 / 384.0, 0.0, 500.0 / 1113.0, 125.0 / 192.0, -2187.0 / 6784.0, 11.0 / 84.0],
];

/// `b − b̂`: the fifth-order weights minus the embedded fourth-order ones, so that `h·Σ_j E[j]·k_j` estimates
/// the local error of the fourth-order solution.
const DOPRI_E: [f64; 7] =
    [71.0 / 57600.0, 0.0, -71.0 / 16695.0, 71.0 / 1920.0, -17253.0 / 339200.0, 22.0 / 525.0, -1.0 / 40.0];

/// Adaptive gradient flow: the seven stage directions, the substep to try next and the counts.
struct Dopri<T> {
    k: Vec<Vec<T>>,
    h: f64,
    tolerance: f64,
    accepted: u64,
    rejected: u64,
}

impl<T: Real> Dopri<T> {
    fn new(n_params: usize, h: f64, tolerance: f64) -> Self {
        Dopri { k: vec![vec![T::zero(); n_params]; 7], h, tolerance, accepted: 0, rejected: 0 }
    }

    /// `sqrt(mean_i (e_i / (tol·(1 + max(|θ_i|, |θ'_i|))))²)` with `e = h·Σ_j E[j]·k_j`.
    fn error_norm(&self, h: f64, theta: &[T], next: &[T]) -> f64 {
        let mut sum = 0.0;
        for i in 0..theta.len() {
            let e: f64 = (0..7).map(|j| DOPRI_E[j] * self.k[j][i].to_f64()).sum::<f64>() * h;
            let scale = self.tolerance * (1.0 + theta[i].to_f64().abs().max(next[i].to_f64().abs()));
            sum += (e / scale) * (e / scale);
        }
        (sum / theta.len().max(1) as f64).sqrt()
    }
}

//! SGD on a module tree ([`crate::net`]): `θ ← θ − η ĝ`, `ĝ = (1/S) Σ_{n∈B} ∇ℓ_n`, minibatches drawn by
//! [`BatchSampler`] from a seeded ChaCha RNG. The step reuses one tape and one gradient buffer (it allocates
//! nothing); the last ĝ is kept for the exact identity `C_{t+1} − C_t = η² ĝᵀAĝ`.

use crate::data::{BatchSampler, Dataset, Sampling};
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::net::{Net, Rows, Tape};
use crate::real::Real;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A minibatch SGD run on a module tree.
pub struct NetSgd<T> {
    /// The model being trained.
    pub net: Net<T>,
    data: Dataset<T>,
    loss: Loss,
    lr: f64,
    batch: usize,
    sampler: BatchSampler,
    tape: Tape<T>,
    grad: Vec<T>,
    rng: ChaCha8Rng,
    steps: u64,
}

impl<T: Real> NetSgd<T> {
    /// SGD with step size `lr` and batch size `batch` drawn per `sampling` from `data`, seeded by `seed`.
    pub fn new(
        net: Net<T>,
        data: Dataset<T>,
        loss: Loss,
        lr: f64,
        batch: usize,
        sampling: Sampling,
        seed: u64,
    ) -> Result<Self> {
        net.check_data(&data, None, loss)?;
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::Config(format!("lr must be positive and finite, got {lr}")));
        }
        let sampler = BatchSampler::new(data.len(), batch, sampling)?;
        let tape = Tape::new(&net.arch, batch);
        let grad = vec![T::zero(); net.params.len()];
        Ok(Self {
            net,
            data,
            loss,
            lr,
            batch,
            sampler,
            tape,
            grad,
            rng: ChaCha8Rng::seed_from_u64(seed),
            steps: 0,
        })
    }

    /// One step; returns the minibatch's mean loss before the step. A non-finite loss is `Diverged`.
    pub fn step(&mut self) -> Result<f64> {
        let rows = self.sampler.next_batch(&mut self.rng);
        self.tape.load(&self.data, Rows::Index(rows))?;
        self.tape.forward(&self.net.params);
        let total = self.tape.loss_grad(self.loss);
        let mean = total / self.batch as f64;
        if !mean.is_finite() {
            return Err(Error::Diverged { step: self.steps, loss: mean, lr: self.lr });
        }
        self.grad.iter_mut().for_each(|g| *g = T::zero());
        self.tape.backward(&self.net.params, Some((&mut self.grad, T::from_f64(1.0 / self.batch as f64))));
        let eta = T::from_f64(self.lr);
        self.net.params.iter_mut().zip(&self.grad).for_each(|(p, &g)| *p -= eta * g);
        self.steps += 1;
        Ok(mean)
    }

    /// ĝ of the last step.
    pub fn direction(&self) -> &[T] {
        &self.grad
    }
    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }
    /// The step size η.
    pub fn lr(&self) -> f64 {
        self.lr
    }
    /// The batch size S.
    pub fn batch_size(&self) -> usize {
        self.batch
    }
}

//! Minibatch index sampling: with replacement (i.i.d. uniform indices) or without (epochs of a reshuffled
//! permutation). The batch second moment is `M_S = Σ/S + ∇L∇Lᵀ` with replacement; without replacement
//! `Σ/S` gets the finite-population factor `(N − S)/(N − 1)`.

use crate::error::{Error, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// How minibatches are drawn from a finite data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Sampling {
    /// S indices drawn i.i.d. uniformly.
    #[default]
    WithReplacement,
    /// Epochs through a reshuffled permutation; each batch has S distinct samples.
    WithoutReplacement,
}

impl Sampling {
    /// The factor multiplying `Σ/S` in the minibatch second moment: 1 with replacement, `(N−S)/(N−1)` without.
    pub fn finite_population_factor(self, n: usize, s: usize) -> f64 {
        match self {
            Sampling::WithReplacement => 1.0,
            Sampling::WithoutReplacement if n > 1 => (n - s) as f64 / (n - 1) as f64,
            Sampling::WithoutReplacement => 0.0,
        }
    }
}

/// Draws batches of indices without allocating after construction.
#[derive(Clone, Debug)]
pub struct BatchSampler {
    n: usize,
    s: usize,
    sampling: Sampling,
    perm: Vec<usize>,
    pos: usize,
    batch: Vec<usize>,
}

impl BatchSampler {
    /// A sampler of batches of `s` out of `n` samples. Errors when `s = 0` or, without replacement, `s > n`.
    pub fn new(n: usize, s: usize, sampling: Sampling) -> Result<Self> {
        if s == 0 || n == 0 {
            return Err(Error::Config(format!("batch size {s} and data size {n} must be positive")));
        }
        if sampling == Sampling::WithoutReplacement && s > n {
            return Err(Error::Config(format!(
                "batch size {s} exceeds the data set size {n} without replacement; lower batch_size or sample with replacement"
            )));
        }
        Ok(Self { n, s, sampling, perm: (0..n).collect(), pos: n, batch: vec![0; s] })
    }

    /// The next batch of indices.
    pub fn next_batch<R: Rng>(&mut self, rng: &mut R) -> &[usize] {
        match self.sampling {
            Sampling::WithReplacement => {
                for b in self.batch.iter_mut() {
                    *b = rng.random_range(0..self.n);
                }
            }
            Sampling::WithoutReplacement => {
                if self.pos + self.s > self.n {
                    // Fisher–Yates reshuffle at each epoch boundary (a partial last batch is dropped).
                    for i in (1..self.n).rev() {
                        let j = rng.random_range(0..=i);
                        self.perm.swap(i, j);
                    }
                    self.pos = 0;
                }
                self.batch.copy_from_slice(&self.perm[self.pos..self.pos + self.s]);
                self.pos += self.s;
            }
        }
        &self.batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn without_replacement_covers_each_epoch() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut s = BatchSampler::new(10, 5, Sampling::WithoutReplacement).unwrap();
        let mut seen: Vec<usize> = s.next_batch(&mut rng).to_vec();
        seen.extend_from_slice(s.next_batch(&mut rng));
        seen.sort();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert!(BatchSampler::new(3, 4, Sampling::WithoutReplacement).is_err());
        assert!(BatchSampler::new(3, 0, Sampling::WithReplacement).is_err());
    }
}

/// Where the next minibatch comes from: what [`crate::net::Tape::load_batch`] and the trainer's step kernels
/// read, each through [`Batch::copy_into`] into its own layout.
#[derive(Clone, Copy, Debug)]
pub enum Batch<'a, T> {
    /// The samples `rows` of a (column-major) data set.
    Rows(&'a super::Dataset<T>, &'a [usize]),
    /// The samples `rows` of the sample-major copy of a data set.
    SampleMajorRows(&'a super::SampleMajor<T>, &'a [usize]),
    /// The first `n` samples of a data set (a freshly drawn online batch).
    First(&'a super::Dataset<T>, usize),
}

impl<T: crate::real::Real> Batch<'_, T> {
    /// Number of samples B.
    pub fn len(&self) -> usize {
        match self {
            Batch::Rows(_, rows) | Batch::SampleMajorRows(_, rows) => rows.len(),
            Batch::First(_, n) => *n,
        }
    }
    /// Whether the batch has no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether the targets are class labels.
    pub fn has_labels(&self) -> bool {
        self.target_width().is_none()
    }
    /// Input width (features per sample) of the data the batch is drawn from.
    pub fn d_in(&self) -> usize {
        match self {
            Batch::Rows(d, _) | Batch::First(d, _) => d.d_in(),
            Batch::SampleMajorRows(d, _) => d.d_in(),
        }
    }
    /// Width of the float targets (`None` for class labels).
    pub fn target_width(&self) -> Option<usize> {
        match self {
            Batch::Rows(d, _) | Batch::First(d, _) => d.target_width(),
            Batch::SampleMajorRows(d, _) => d.target_width(),
        }
    }
    /// The index in its data set of the batch's `r`-th sample.
    pub fn sample(&self, r: usize) -> usize {
        match self {
            Batch::Rows(_, rows) | Batch::SampleMajorRows(_, rows) => rows[r],
            Batch::First(..) => r,
        }
    }

    /// Writes the B samples into the first B rows of `x` (`[·, d_in]`) and of `y` (`[·, d_out]`, float
    /// targets) or of `labels` (class labels); `x` and `y` may have any layout.
    pub fn copy_into(&self, x: faer::MatMut<'_, T>, y: faer::MatMut<'_, T>, labels: &mut [usize]) {
        let (data, rows) = match *self {
            Batch::SampleMajorRows(data, rows) => {
                data.gather_x(rows, x);
                if data.has_labels() {
                    data.gather_labels(rows, labels);
                } else {
                    data.gather_y(rows, y);
                }
                return;
            }
            Batch::Rows(data, rows) => (data, Some(rows)),
            Batch::First(data, _) => (data, None),
        };
        let n = self.len();
        let pick = |r: usize| rows.map_or(r, |rows| rows[r]);
        assert!((0..n).all(|r| pick(r) < data.len()), "batch row index out of range");
        super::rows::gather_columns(data.x.as_ref(), n, &pick, x);
        match &data.y {
            super::Targets::Dense(t) => super::rows::gather_columns(t.as_ref(), n, &pick, y),
            super::Targets::Classes(c) => (0..n).for_each(|r| labels[r] = c[pick(r)]),
        }
    }
}

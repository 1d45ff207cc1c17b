//! Curvature of the mean loss `L = (1/N) Σ_n ℓ_n`: exact Hessian-vector products, extreme eigenvalues, traces,
//! and sharpness along symmetry orbits.
//!
//! - [`hvp`]: [`NetHessian`] (exact HVP by the R-operator through a module tree, or the Gauss–Newton product),
//!   [`HessianOperator`] (the same operator for a dense chain), the
//!   central-difference fallback [`central_difference_hvp`], [`dense_matrix`] for small models.
//! - [`lanczos`]: [`lanczos_eigenvalues`] (full reorthogonalisation), [`power_iteration`].
//! - [`hutchinson`]: [`exact_trace`], [`hutchinson_trace`], [`hutch_plus_plus_trace`] with 95% intervals.
//! - [`orbit`]: [`orbit_sharpness`], the top eigenvalue and trace along `e^{λA}θ`.
//! - [`sharpness`]: one call for a training observer (top eigenvalues + trace).
//!
//! [`NetHessian`] computes in f64 or f32 (products summed in f64); dense chains and module trees share it.
//!
//! Everything is in f64 and 1/N (mean over the samples used). Randomness comes from a ChaCha RNG seeded by
//! [`SharpnessOptions::seed`], or from the `rng` argument of the kernels.

pub mod hutchinson;
pub mod hvp;
pub mod lanczos;
pub mod orbit;

pub use hutchinson::{exact_trace, hutch_plus_plus_trace, hutchinson_trace, TraceEstimate, TraceMethod};
pub use hvp::{central_difference_hvp, dense_matrix, Curvature, HessianOperator, HvpOptions, NetHessian};
pub use lanczos::{
    available_memory, check_basis_memory, lanczos_eigenvalues, power_iteration, ExtremeEigenvalues,
    LanczosInfo, LanczosOptions,
};
pub use orbit::{orbit_sharpness, parse_grid, Orbit, OrbitPoint};

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::model::Model;
use faer::Mat;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::borrow::Cow;

/// A symmetric linear operator `v ↦ A v` on ℝᴾ (a Hessian, a Gauss–Newton matrix, a dense test matrix).
pub trait LinearOperator {
    /// The dimension P.
    fn dim(&self) -> usize;
    /// `out ← A v` (both of length P; `out` is overwritten).
    fn apply_into(&mut self, v: &[f64], out: &mut [f64]);
    /// Number of products computed so far (for reporting HVP counts).
    fn products(&self) -> usize;
}

/// A dense symmetric matrix as a [`LinearOperator`] (for tests and small problems).
#[derive(Clone, Debug)]
pub struct DenseOperator {
    /// The matrix (assumed symmetric).
    pub matrix: Mat<f64>,
    products: usize,
}

impl DenseOperator {
    /// Wraps a square matrix.
    pub fn new(matrix: Mat<f64>) -> Result<Self> {
        if matrix.nrows() != matrix.ncols() {
            return Err(Error::shape(
                "dense operator (must be square)",
                &[matrix.nrows(), matrix.nrows()],
                &[matrix.nrows(), matrix.ncols()],
            ));
        }
        Ok(Self { matrix, products: 0 })
    }
}

impl LinearOperator for DenseOperator {
    fn dim(&self) -> usize {
        self.matrix.nrows()
    }
    fn apply_into(&mut self, v: &[f64], out: &mut [f64]) {
        let a = self.matrix.as_ref();
        for (i, o) in out.iter_mut().enumerate() {
            *o = (0..a.ncols()).map(|j| a[(i, j)] * v[j]).sum();
        }
        self.products += 1;
    }
    fn products(&self) -> usize {
        self.products
    }
}

/// Which samples the curvature is computed on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Subset {
    /// All N samples.
    #[default]
    All,
    /// A fixed subset of `n` samples drawn without replacement with the options' seed.
    Random {
        /// Subset size, 1 ≤ n ≤ N (n = N is all samples).
        n: usize,
    },
}

/// The samples of `data` selected by `subset` (borrowed when all), with a ChaCha RNG seeded by `seed`.
/// A subset of 0 or more than N samples is an error naming both sizes.
pub fn select_subset(data: &Dataset<f64>, subset: Subset, seed: u64) -> Result<Cow<'_, Dataset<f64>>> {
    if let Subset::Random { n } = subset {
        if n == 0 || n > data.len() {
            return Err(Error::Config(format!(
                "a subset of {n} samples of a data set of N = {}: use 1 ≤ subset ≤ {}",
                data.len(),
                data.len()
            )));
        }
    }
    Ok(match subset {
        Subset::Random { n } if n < data.len() => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5ab5);
            let mut rows = rand::seq::index::sample(&mut rng, data.len(), n).into_vec();
            rows.sort_unstable();
            Cow::Owned(data.select(&rows))
        }
        _ => Cow::Borrowed(data),
    })
}

/// Options of [`sharpness`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct SharpnessOptions {
    /// Number of top eigenvalues k (≥ 1, ≤ P).
    pub top: usize,
    /// Also the smallest eigenvalue.
    pub bottom: bool,
    /// Trace method, or none.
    pub trace: Option<TraceMethod>,
    /// Probes for Hutchinson / products for Hutch++.
    pub trace_samples: usize,
    /// Lanczos iteration cap and tolerance.
    pub lanczos: LanczosOptions,
    /// HVP settings (Hessian or Gauss–Newton, samples per chunk).
    #[serde(skip)]
    pub hvp: HvpOptions,
    /// Which samples.
    pub subset: Subset,
    /// Seed of the ChaCha RNG (Lanczos start, trace probes, subset).
    pub seed: u64,
}

impl Default for SharpnessOptions {
    fn default() -> Self {
        Self {
            top: 1,
            bottom: false,
            trace: Some(TraceMethod::Hutchinson),
            trace_samples: 100,
            lanczos: LanczosOptions::default(),
            hvp: HvpOptions::default(),
            subset: Subset::All,
            seed: 0,
        }
    }
}

/// Curvature summary of a model on a data set (see [`sharpness`]).
#[derive(Clone, Debug, PartialEq, Serialize, Default)]
pub struct Sharpness {
    /// Mean loss on the samples used.
    pub loss: f64,
    /// The k largest eigenvalues of the Hessian (or Gauss–Newton matrix), descending.
    pub top_eigenvalues: Vec<f64>,
    /// The smallest eigenvalue, if asked.
    pub bottom_eigenvalue: Option<f64>,
    /// The trace, if asked.
    pub trace: Option<f64>,
    /// How the trace was obtained.
    pub trace_method: Option<TraceMethod>,
    /// Standard error of a stochastic trace (0 for exact).
    pub trace_stderr: Option<f64>,
    /// 95% interval of the trace.
    pub trace_ci95: Option<[f64; 2]>,
    /// How Lanczos ended.
    pub lanczos: LanczosInfo,
    /// Total Hessian-vector products (Lanczos + trace).
    pub hvps: usize,
    /// Samples used.
    pub samples: usize,
    /// Parameter count P.
    pub n_params: usize,
}

impl Sharpness {
    /// Whether every reported number can be taken at face value: Lanczos converged and the loss, the
    /// eigenvalues and the trace are finite.
    pub fn is_reliable(&self) -> bool {
        self.lanczos.converged
            && self.loss.is_finite()
            && self
                .top_eigenvalues
                .iter()
                .chain(&self.bottom_eigenvalue)
                .chain(&self.trace)
                .all(|v| v.is_finite())
    }
}

/// Top-k eigenvalues (Lanczos) and trace of the Hessian of the mean loss `(1/N) Σ ℓ_n` on `data` (or on the seeded
/// subset of `opts.subset`): the call a training observer makes every k steps. Cost: Lanczos iterations plus trace
/// products, each one HVP (≈ 1.5–2.5 gradients). Errors on bad shapes, k = 0 or k > P, bad trace options.
pub fn sharpness(
    model: &Model<f64>,
    data: &Dataset<f64>,
    loss: Loss,
    opts: &SharpnessOptions,
) -> Result<Sharpness> {
    let p = model.arch.n_params();
    if opts.top == 0 || opts.top > p {
        return Err(Error::Config(format!(
            "asked for the top {} eigenvalues, but the model has P = {p} parameters; ask for 1 ≤ k ≤ {p}",
            opts.top
        )));
    }
    let data = select_subset(data, opts.subset, opts.seed)?;
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut op = HessianOperator::new(model, &data, loss, opts.hvp)?;
    let eig = lanczos_eigenvalues(&mut op, opts.top, opts.bottom, &opts.lanczos, &mut rng)?;
    let tr = match opts.trace {
        None => None,
        Some(TraceMethod::Exact) => Some(exact_trace(&mut op)),
        Some(TraceMethod::Hutchinson) => Some(hutchinson_trace(&mut op, opts.trace_samples, &mut rng)?),
        Some(TraceMethod::HutchPlusPlus) => {
            Some(hutch_plus_plus_trace(&mut op, opts.trace_samples, &mut rng)?)
        }
    };
    let loss_value = model.loss(&data, loss, opts.hvp.chunk.max(1))?;
    Ok(Sharpness {
        loss: loss_value,
        top_eigenvalues: eig.top,
        bottom_eigenvalue: eig.bottom,
        trace: tr.map(|t| t.trace),
        trace_method: tr.map(|t| t.method),
        trace_stderr: tr.map(|t| t.stderr),
        trace_ci95: tr.map(|t| t.ci95),
        lanczos: eig.info,
        hvps: op.products(),
        samples: data.len(),
        n_params: p,
    })
}

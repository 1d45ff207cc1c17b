//! Noise equilibria of symmetry orbits: the Noether flow `Tr[AΣ]`, single-generator λ*, the joint equilibrium of
//! all rescalings, the matrix geometric-mean equilibrium of linear pairs, and the function-preserving teleport.
//!
//! Along an orbit `θ_λ = e^{λA}θ` the gradient covariance transforms as `Σ(θ_λ) = e^{−λA}Σ(θ)e^{−λA}`, so
//! `G(λ) = Tr[AΣ(θ_λ)] = Tr[A e^{−2λA} Σ(θ)]` is non-increasing and `G = −½ d/dλ Tr Σ(θ_λ)`: the equilibrium
//! (G = 0) is the point of the orbit with the least gradient noise (DESIGN.md §1). Two targets ([`Time`]):
//! continuous time uses Σ (centred, 1/N); discrete time uses the minibatch second moment
//! `M_S = f·Σ/S + ∇L∇Lᵀ` (f = finite-population factor), which transforms the same way.
//!
//! Outcomes are typed ([`Equilibrium`]): dead units, one-sided noise (λ* = ±∞) and semi-definite generators
//! (scale symmetry, no finite equilibrium) are values, never NaN.

pub mod double_rotation;
pub mod net;
pub mod net_teleport;
pub mod rescale;
pub mod scale;
pub mod teleport;

use crate::data::{Dataset, Sampling};
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::model::Model;
use crate::real::Real;
use crate::stats::{moments, MomentOptions, Moments};
use crate::symmetry::{self, Generator, Symmetry};
use serde::Serialize;

/// Noise below `NOISE_RTOL × (total second moment of the network)` counts as zero when classifying dead units
/// and one-sided noise: a few hundred ulps of f64 accumulated over the sums, far below any physical noise.
pub const NOISE_RTOL: f64 = 1e-13;

/// Which clock the equilibrium is computed for.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "time", rename_all = "snake_case")]
pub enum Time {
    /// The SDE / continuous-time target: the centred covariance Σ.
    Continuous,
    /// Discrete SGD with batch size S: `M_S = factor·Σ/S + ∇L∇Lᵀ` (the per-step second moment of ĝ).
    Discrete {
        /// Batch size S.
        batch_size: usize,
        /// Finite-population factor f (1 with replacement, `(N−S)/(N−1)` without).
        factor: f64,
    },
}

impl Time {
    /// The discrete target for batch size `s` out of `n` samples drawn per `sampling`.
    pub fn discrete(batch_size: usize, sampling: Sampling, n: usize) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::Config("batch size must be positive; pass e.g. --batch-size 32".into()));
        }
        if sampling == Sampling::WithoutReplacement && batch_size > n {
            return Err(Error::Config(format!(
                "batch size {batch_size} exceeds the {n} samples without replacement"
            )));
        }
        Ok(Time::Discrete { batch_size, factor: sampling.finite_population_factor(n, batch_size) })
    }

    /// The target second moment from its centred (`c`, part of Σ) and uncentred (`u`, part of `M_1`) values:
    /// `c` in continuous time, `f·c/S + (u − c)` in discrete time (`u − c` is the mean-gradient term).
    #[inline]
    pub fn target(&self, c: f64, u: f64) -> f64 {
        match *self {
            Time::Continuous => c,
            Time::Discrete { batch_size, factor } => factor * c / batch_size as f64 + (u - c),
        }
    }

    /// Name for reports: `continuous` or `discrete`.
    pub fn name(&self) -> &'static str {
        match self {
            Time::Continuous => "continuous",
            Time::Discrete { .. } => "discrete",
        }
    }
}

/// The equilibrium of one orbit.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Equilibrium {
    /// A unique finite λ* with `Tr[A M(e^{λ*A}θ)] = 0` (M = Σ or `M_S`).
    Unique {
        /// λ*.
        lambda: f64,
    },
    /// No noise on either side of the generator: every λ is an equilibrium (a dead unit).
    Dead,
    /// Noise on one side only: `G(λ)` never changes sign, λ* = `direction`·∞ and the charge drifts forever.
    NoEquilibrium {
        /// +1 when λ* = +∞ (incoming noise only), −1 when λ* = −∞ (outgoing noise only).
        direction: f64,
    },
    /// A semi-definite generator (scale symmetry): `Tr[AΣ] ≥ 0`, C grows without bound.
    Unbounded,
}

/// The status column of reports (`ok | dead | no_equilibrium | unbounded`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A unique finite equilibrium.
    Ok,
    /// No noise on either side.
    Dead,
    /// Noise on one side only.
    NoEquilibrium,
    /// Semi-definite generator.
    Unbounded,
}

impl Equilibrium {
    /// λ* when finite.
    pub fn lambda(&self) -> Option<f64> {
        match *self {
            Equilibrium::Unique { lambda } => Some(lambda),
            _ => None,
        }
    }
    /// The report status.
    pub fn status(&self) -> Status {
        match self {
            Equilibrium::Unique { .. } => Status::Ok,
            Equilibrium::Dead => Status::Dead,
            Equilibrium::NoEquilibrium { .. } => Status::NoEquilibrium,
            Equilibrium::Unbounded => Status::Unbounded,
        }
    }
}

/// Root of `G(λ) = Σ_k μ_k w_k e^{−2λμ_k}` (`terms = [(μ_k, w_k)]`, `w_k ≥ 0`: the spectral form of
/// `Tr[A e^{−2λA} M]` with `A = Σ μ_k v_kv_kᵀ`, `w_k = v_kᵀMv_k`). G is non-increasing; the root is found by
/// safeguarded Newton on `h = ln G₊ − ln G₋` (bracketed, falls back to bisection), to ~1 ulp of λ.
/// `zero` is the weight below which a term counts as absent.
pub fn spectral_lambda(terms: &[(f64, f64)], zero: f64) -> Equilibrium {
    let pos: Vec<(f64, f64)> = terms.iter().copied().filter(|&(m, w)| m > 0.0 && w > zero).collect();
    let neg: Vec<(f64, f64)> = terms.iter().copied().filter(|&(m, w)| m < 0.0 && w > zero).collect();
    let structurally_indefinite = terms.iter().any(|&(m, _)| m < 0.0) && terms.iter().any(|&(m, _)| m > 0.0);
    match (pos.is_empty(), neg.is_empty()) {
        (true, true) => return Equilibrium::Dead,
        (false, true) if !structurally_indefinite => return Equilibrium::Unbounded,
        (true, false) if !structurally_indefinite => return Equilibrium::Unbounded,
        (false, true) => return Equilibrium::NoEquilibrium { direction: 1.0 },
        (true, false) => return Equilibrium::NoEquilibrium { direction: -1.0 },
        _ => {}
    }
    // ln Σ |μ| w e^{−2λμ} and its λ-derivative, by log-sum-exp.
    let lse = |set: &[(f64, f64)], lam: f64| -> (f64, f64) {
        let e: Vec<f64> = set.iter().map(|&(m, w)| (m.abs() * w).ln() - 2.0 * lam * m).collect();
        let mx = e.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let (mut s, mut d) = (0.0, 0.0);
        for (k, &(m, _)) in set.iter().enumerate() {
            let t = (e[k] - mx).exp();
            s += t;
            d += -2.0 * m * t;
        }
        (mx + s.ln(), d / s)
    };
    let h = |lam: f64| {
        let (a, da) = lse(&pos, lam);
        let (b, db) = lse(&neg, lam);
        (a - b, da - db)
    };
    // Bracket [lo, hi] with h(lo) > 0 > h(hi).
    let (mut lo, mut hi) = (-1.0, 1.0);
    while h(lo).0 < 0.0 {
        lo *= 2.0;
    }
    while h(hi).0 > 0.0 {
        hi *= 2.0;
    }
    let mut lam = 0.5 * (lo + hi);
    for _ in 0..200 {
        let (v, dv) = h(lam);
        if v == 0.0 {
            break;
        }
        if v > 0.0 {
            lo = lam;
        } else {
            hi = lam;
        }
        let mut next = lam - v / dv;
        if !(next > lo && next < hi) {
            next = 0.5 * (lo + hi);
        }
        if (next - lam).abs() <= 2.0 * f64::EPSILON * lam.abs().max(1e-300)
            || hi - lo <= f64::EPSILON * lam.abs()
        {
            lam = next;
            break;
        }
        lam = next;
    }
    Equilibrium::Unique { lambda: lam }
}

/// The Noether flow of one generator.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct NoetherFlow {
    /// `Tr[AΣ]` (Σ centred, 1/N).
    pub tr_a_sigma: f64,
    /// `∇LᵀA∇L`.
    pub grad_quad: f64,
    /// Predicted `dC/dt = (η/S)·Tr[AΣ]` per unit time (t = η·steps).
    pub dc_dt_per_time: f64,
    /// Exact expected drift per SGD step `E[C_{t+1} − C_t] = η²(f·Tr[AΣ]/S + ∇LᵀA∇L)`.
    pub drift_per_step: f64,
}

/// `Tr[AΣ]`, `(η/S)Tr[AΣ]` and the expected per-step drift `η²(f·Tr[AΣ]/S + ∇LᵀA∇L)` of a generator, from the
/// moments. `f = sampling.finite_population_factor(N, S)`. Errors on a generator that is not a symmetry.
pub fn noether_flow(
    m: &Moments,
    generator: &Generator,
    lr: f64,
    batch_size: usize,
    sampling: Sampling,
) -> Result<NoetherFlow> {
    if batch_size == 0 || !(lr.is_finite() && lr > 0.0) {
        return Err(Error::Config(format!(
            "need lr > 0 and batch size > 0, got lr = {lr}, S = {batch_size}"
        )));
    }
    let tr_a_sigma = m.generator_trace(generator, true)?;
    let grad_quad = generator.quad(&m.arch, &m.grad);
    let s = batch_size as f64;
    let f = sampling.finite_population_factor(m.n, batch_size);
    Ok(NoetherFlow {
        tr_a_sigma,
        grad_quad,
        dc_dt_per_time: lr / s * tr_a_sigma,
        drift_per_step: lr * lr * (f * tr_a_sigma / s + grad_quad),
    })
}

/// Single-generator equilibrium λ* of any generator for the given target: rescaling in closed form
/// `¼ ln(a/b)`; double rotation by [`spectral_lambda`] on the eigenbasis of B; scale is [`Equilibrium::Unbounded`].
pub fn generator_equilibrium(m: &Moments, generator: &Generator, time: Time) -> Result<Equilibrium> {
    generator.check(&m.arch)?;
    let zero = NOISE_RTOL * m.trace_second_moment();
    Ok(match generator {
        Generator::Rescale { layer, unit } => {
            let (l, j) = (*layer, *unit);
            let a = time.target(m.noise_in(l, j, true), m.noise_in(l, j, false));
            let b = time.target(m.noise_out(l, j, true), m.noise_out(l, j, false));
            rescale::equilibrium_lambda(a, b, zero)
        }
        Generator::DoubleRotation { layer, b } => {
            let (mi, mo) = double_rotation::target_moments(m, *layer, time)?;
            double_rotation::direction_equilibrium(b, &mi, &mo, zero)
        }
        Generator::Scale { layer } => {
            scale::equilibrium(time.target(m.layer_trace_sigma(*layer), m.layers[*layer].sq_norm), zero)
        }
    })
}

/// Options of [`analysis`].
#[derive(Clone, Copy, Debug)]
pub struct AnalyzeOptions {
    /// Equilibrium target.
    pub time: Time,
    /// Learning rate η (for the predicted drifts).
    pub lr: f64,
    /// Batch size S (for the predicted drifts).
    pub batch_size: usize,
    /// Minibatch sampling (finite-population factor of the per-step drift).
    pub sampling: Sampling,
    /// Samples per chunk of the statistics pass.
    pub chunk: usize,
    /// Relative residual at which the joint rescaling equilibrium stops.
    pub tol: f64,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        Self {
            time: Time::Continuous,
            lr: 0.1,
            batch_size: 1,
            sampling: Sampling::WithReplacement,
            chunk: 1024,
            tol: 1e-13,
        }
    }
}

/// Errors when N < 2: the centred gradient covariance Σ of one sample is zero, so there is no noise to analyse
/// (dense chains and module trees alike).
pub fn check_noise_samples(n: usize) -> Result<()> {
    if n < 2 {
        return Err(Error::Data(format!(
            "the data hold N = {n} sample{}: the gradient covariance Σ of one sample is zero, so there is no noise \
             to analyse; give at least 2 samples",
            if n == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}

impl AnalyzeOptions {
    /// Checks the options against a data set of `n` samples: η finite and positive, 1 ≤ S, and S ≤ N when
    /// sampling without replacement (the factor (N−S)/(N−1) would be negative).
    pub fn check(&self, n: usize) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Config(format!("learning rate η = {} must be finite and positive", self.lr)));
        }
        check_noise_samples(n)?;
        if self.batch_size == 0 {
            return Err(Error::Config("batch size S = 0: must be at least 1".into()));
        }
        if self.sampling == Sampling::WithoutReplacement && self.batch_size > n {
            return Err(Error::Config(format!(
                "batch size S = {} exceeds the N = {n} samples drawn without replacement; use S ≤ {n}",
                self.batch_size
            )));
        }
        if self.chunk == 0 {
            return Err(Error::Config(
                "chunk = 0: the statistics pass needs chunks of at least 1 sample".into(),
            ));
        }
        Ok(())
    }
}

/// One hidden unit's rescaling symmetry (the `neurons` entries of `tests/data/*/case.json`).
#[derive(Clone, Debug, Serialize)]
pub struct NeuronReport {
    /// Layer l (the unit is an output of layer l).
    pub layer: usize,
    /// Unit j.
    pub unit: usize,
    /// Charge `C_j = ‖W_l[j,:]‖² + b_l[j]² − ‖W_{l+1}[:,j]‖²`.
    pub charge: f64,
    /// Incoming noise `Σ Σ_kk` over row j of `W_l` and `b_l[j]` (centred).
    pub noise_in: f64,
    /// Outgoing noise over column j of `W_{l+1}` (centred).
    pub noise_out: f64,
    /// Incoming second moment (uncentred, `E[g_k²]`).
    pub noise_in_uncentered: f64,
    /// Outgoing second moment (uncentred).
    pub noise_out_uncentered: f64,
    /// `Tr[A_jΣ] = noise_in − noise_out`.
    pub tr_a_sigma: f64,
    /// Predicted `dC_j/dt = (η/S)Tr[A_jΣ]` per unit time.
    pub dc_dt_per_time: f64,
    /// Expected drift per SGD step `η²(f·Tr[A_jΣ]/S + ∇LᵀA_j∇L)`.
    pub drift_per_step: f64,
    /// Single-generator λ* for the chosen target (null when none).
    pub lambda_star: Option<f64>,
    /// `ok | dead | no_equilibrium`.
    pub status: Status,
}

/// One linear pair's double rotation (the `double_rotation` entries of `case.json`).
#[derive(Clone, Debug, Serialize)]
pub struct PairReport {
    /// Index l of the first layer of the pair (l, l+1).
    pub layer: usize,
    /// `M_in = E_c[G_lG_lᵀ]` (centred), `G_l = [∇W_l | ∇b_l]`.
    #[serde(rename = "M_in")]
    pub m_in: Vec<Vec<f64>>,
    /// `M_out = E_c[G_{l+1}ᵀG_{l+1}]` (centred).
    #[serde(rename = "M_out")]
    pub m_out: Vec<Vec<f64>>,
    /// The SPD solution of `P M_out P = M_in` for the chosen target (null when none); teleport by `Q = P^{1/2}`.
    #[serde(rename = "P")]
    pub p: Option<Vec<Vec<f64>>>,
    /// Matrix charge `W_lW_lᵀ + b_lb_lᵀ − W_{l+1}ᵀW_{l+1}`.
    pub matrix_charge: Vec<Vec<f64>>,
    /// `Tr[M_in − M_out]` = `Tr[AΣ]` of B = I (centred).
    pub tr_a_sigma: f64,
    /// `ok | dead | no_equilibrium`, with `rank` the dimension on which it was solved.
    pub status: Status,
    /// Dimension of the subspace carrying noise (= d when full rank).
    pub rank: usize,
}

/// One normalised block's scale symmetry.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleReport {
    /// Layer index.
    pub layer: usize,
    /// Charge `‖θ_block‖²`.
    pub charge: f64,
    /// `Tr[AΣ] = Tr Σ_block ≥ 0`.
    pub tr_a_sigma: f64,
    /// Predicted `dC/dt` per unit time.
    pub dc_dt_per_time: f64,
    /// Always `unbounded` (or `dead` without noise).
    pub status: Status,
}

/// The joint equilibrium of all rescalings (`joint_equilibrium` of `case.json`).
#[derive(Clone, Debug, Serialize)]
pub struct JointReport {
    /// λ* of each neuron, in the order of `neurons` (0 for dead or one-sided units, which are held fixed).
    pub lambda: Vec<f64>,
    /// Tr of the target moment at θ* (Tr Σ(θ*) in continuous time).
    pub trace_sigma_at_star: f64,
    /// `max_j |a_j − b_j|/(a_j + b_j)` at θ* (relative residual of every `Tr[A_jM]`).
    pub max_rel_residual: f64,
    /// Coordinate sweeps used.
    pub sweeps: usize,
    /// Whether the residual reached the tolerance (otherwise λ is the last iterate, not the equilibrium).
    pub converged: bool,
}

/// Everything `noether analyze` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Analysis {
    /// Mean loss L.
    pub loss: f64,
    /// Tr Σ (centred, 1/N).
    pub trace_sigma: f64,
    /// N.
    pub n_samples: usize,
    /// P.
    pub n_params: usize,
    /// The equilibrium target: `continuous` or `discrete`.
    pub time: &'static str,
    /// η used for the predicted drifts.
    pub lr: f64,
    /// S used for the predicted drifts.
    pub batch_size: usize,
    /// Rescaling symmetry of every hidden unit.
    pub neurons: Vec<NeuronReport>,
    /// Double rotation of every linear pair.
    pub pairs: Vec<PairReport>,
    /// Scale symmetry of every normalised block.
    pub scales: Vec<ScaleReport>,
    /// Joint equilibrium of all rescalings (null when the model has none).
    pub joint_equilibrium: Option<JointReport>,
}

fn rows_of(m: &faer::Mat<f64>) -> Vec<Vec<f64>> {
    (0..m.nrows()).map(|i| (0..m.ncols()).map(|j| m[(i, j)]).collect()).collect()
}

/// Full noise analysis of a model on a data set: one statistics pass, then every symmetry's charge, noise,
/// Noether flow and equilibrium, the linear pairs' geometric-mean solutions and the joint rescaling equilibrium.
pub fn analysis<T: Real>(
    model: &Model<T>,
    data: &Dataset<T>,
    loss: Loss,
    opts: &AnalyzeOptions,
) -> Result<Analysis> {
    let m = moments(
        model,
        data,
        loss,
        &MomentOptions { elementwise: true, pair_grams: true, chunk: opts.chunk },
    )?;
    analysis_from_moments(&m, &model.params, opts)
}

/// [`analysis`] from precomputed moments and the parameters θ they were computed at.
pub fn analysis_from_moments<T: Real>(m: &Moments, theta: &[T], opts: &AnalyzeOptions) -> Result<Analysis> {
    opts.check(m.n)?;
    let arch = &m.arch;
    let zero = NOISE_RTOL * m.trace_second_moment();
    // Each symmetry's report is independent of the others: computed on all cores, kept in enumeration order.
    let reports: Vec<Result<SymmetryReport>> = {
        use rayon::prelude::*;
        symmetry::enumerate(arch).into_par_iter().map(|s| symmetry_report(m, theta, opts, zero, s)).collect()
    };
    let (mut neurons, mut pairs, mut scales) = (Vec::new(), Vec::new(), Vec::new());
    for r in reports {
        match r? {
            SymmetryReport::Neuron(n) => neurons.push(n),
            SymmetryReport::Pair(p) => pairs.push(p),
            SymmetryReport::Scale(s) => scales.push(s),
        }
    }
    let joint_equilibrium = if neurons.is_empty() {
        None
    } else {
        let problem = rescale::DiagProblem::from_moments(m, opts.time)?;
        let sol = problem.solve(&vec![true; arch.n_layers()], opts.tol, 100_000);
        Some(JointReport {
            lambda: neurons.iter().map(|nr| sol.lambda[nr.layer][nr.unit]).collect(),
            trace_sigma_at_star: sol.objective,
            max_rel_residual: sol.max_rel_residual,
            sweeps: sol.sweeps,
            converged: sol.max_rel_residual <= opts.tol,
        })
    };
    Ok(Analysis {
        loss: m.loss,
        trace_sigma: m.trace_sigma(),
        n_samples: m.n,
        n_params: arch.n_params(),
        time: opts.time.name(),
        lr: opts.lr,
        batch_size: opts.batch_size,
        neurons,
        pairs,
        scales,
        joint_equilibrium,
    })
}

/// One symmetry's line of [`Analysis`].
enum SymmetryReport {
    Neuron(NeuronReport),
    Pair(PairReport),
    Scale(ScaleReport),
}

/// The report of symmetry `s` from the moments `m` at θ (`zero`: the noise level treated as zero).
fn symmetry_report<T: Real>(
    m: &Moments,
    theta: &[T],
    opts: &AnalyzeOptions,
    zero: f64,
    s: Symmetry,
) -> Result<SymmetryReport> {
    let arch = &m.arch;
    let g = s.generator(arch);
    match s {
        Symmetry::Rescale { layer, unit } => {
            let flow = noether_flow(m, &g, opts.lr, opts.batch_size, opts.sampling)?;
            let eq = generator_equilibrium(m, &g, opts.time)?;
            Ok(SymmetryReport::Neuron(NeuronReport {
                layer,
                unit,
                charge: g.charge(arch, theta),
                noise_in: m.noise_in(layer, unit, true),
                noise_out: m.noise_out(layer, unit, true),
                noise_in_uncentered: m.noise_in(layer, unit, false),
                noise_out_uncentered: m.noise_out(layer, unit, false),
                tr_a_sigma: flow.tr_a_sigma,
                dc_dt_per_time: flow.dc_dt_per_time,
                drift_per_step: flow.drift_per_step,
                lambda_star: eq.lambda(),
                status: eq.status(),
            }))
        }
        Symmetry::DoubleRotation { layer } => {
            let (mi, mo) = (m.m_in(layer, true)?, m.m_out(layer, true)?);
            let (ti, to) = double_rotation::target_moments(m, layer, opts.time)?;
            let bal = double_rotation::balancing_matrix(&ti, &to, zero)?;
            Ok(SymmetryReport::Pair(PairReport {
                layer,
                m_in: rows_of(&mi),
                m_out: rows_of(&mo),
                p: bal.p.as_ref().map(rows_of),
                matrix_charge: rows_of(&symmetry::double_rotation::matrix_charge(arch, layer, theta)),
                tr_a_sigma: (0..mi.nrows()).map(|i| mi[(i, i)] - mo[(i, i)]).sum(),
                status: bal.status,
                rank: bal.rank,
            }))
        }
        Symmetry::Scale { layer } => {
            let flow = noether_flow(m, &g, opts.lr, opts.batch_size, opts.sampling)?;
            let eq = generator_equilibrium(m, &g, opts.time)?;
            Ok(SymmetryReport::Scale(ScaleReport {
                layer,
                charge: g.charge(arch, theta),
                tr_a_sigma: flow.tr_a_sigma,
                dc_dt_per_time: flow.dc_dt_per_time,
                status: eq.status(),
            }))
        }
    }
}

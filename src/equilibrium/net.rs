//! Noise equilibria of a module tree's diagonal symmetries ([`crate::symmetry::channels`]) from its
//! per-coordinate moments ([`crate::stats::net`]).
//!
//! For a diagonal generator A (entries `a_k = ±1`) the target moment of coordinate k, `w_k` (Σ_kk in continuous
//! time, `f·Σ_kk/S + ḡ_k²` in discrete time, [`Time::target`]), moves along the orbit as `w_k e^{−2λa_k}`, so
//! - the Noether flow is `Tr[AΣ] = noise_in − noise_out` (sums of `w_k` over `a_k > 0` and `a_k < 0`);
//! - one generator's equilibrium is `λ* = ¼ ln(noise_in/noise_out)`;
//! - jointly, λ minimises the convex `F(λ) = Σ_k w_k e^{−2(Sλ)_k}` (`(Sλ)_k = Σ_j λ_j a_jk`), F = the total
//!   target noise along the joint orbit. Coordinate descent: for generator j with the others fixed,
//!   `F = A e^{−2Δ} + B e^{2Δ} + const`, minimised by `Δ = ¼ ln(A/B)`; sweeps until every step is below
//!   round-off. Generators without a finite equilibrium (dead, one-sided noise, scale) are held at 0.

use super::double_rotation::{balancing_matrix, target_pair};
use super::rescale::equilibrium_lambda;
use super::{scale, Equilibrium, Status, Time, NOISE_RTOL};
use crate::error::{Error, Result};
use crate::real::Real;
use crate::stats::net::{GramSpec, NetMoments};
use crate::symmetry::channels::{DiagSymmetry, Family};
use crate::symmetry::linear_pairs::LinearPair;
use faer::Mat;
use serde::Serialize;

/// One symmetry's charge, noise and equilibrium.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetSymmetryReport {
    /// Family.
    pub family: Family,
    /// State-dict prefix of its first writer.
    pub module: String,
    /// The channel (none for scale).
    pub unit: Option<usize>,
    /// Writers, in state_dict order.
    pub writers: Vec<String>,
    /// Readers, in state_dict order.
    pub readers: Vec<String>,
    /// `C = θᵀAθ`.
    pub charge: f64,
    /// Target noise on the entries with `a_k > 0`.
    pub noise_in: f64,
    /// Target noise on the entries with `a_k < 0`.
    pub noise_out: f64,
    /// `Tr[A M] = noise_in − noise_out` (M = the target moment: Σ in continuous time).
    pub tr_a_sigma: f64,
    /// Entries with `a_k > 0`.
    pub n_in: usize,
    /// Entries with `a_k < 0`.
    pub n_out: usize,
    /// λ* of this generator alone (when finite).
    pub lambda_star: Option<f64>,
    /// ok | dead | no_equilibrium | unbounded.
    pub status: Status,
}

/// One linear pair's double rotation (the fields of the dense chain's [`super::PairReport`], named by module):
/// its `d × d` moments, geometric-mean solution and matrix charge.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetPairReport {
    /// State-dict prefix of the first linear (the writer of the rotated tensor).
    pub module: String,
    /// State-dict prefix of the second linear.
    pub reader: String,
    /// `M_in = E_c[G₁G₁ᵀ]` (centred), `G₁ = [∇W₁ | ∇b₁]`.
    #[serde(rename = "M_in", serialize_with = "rows")]
    pub m_in: Mat<f64>,
    /// `M_out = E_c[G₂ᵀG₂]` (centred), `G₂ = ∇W₂`.
    #[serde(rename = "M_out", serialize_with = "rows")]
    pub m_out: Mat<f64>,
    /// The SPD solution of `P M_out P = M_in` for the chosen target (null when none); teleport by `Q = P^{1/2}`.
    #[serde(rename = "P", serialize_with = "opt_rows")]
    pub p: Option<Mat<f64>>,
    /// Matrix charge `W₁W₁ᵀ + b₁b₁ᵀ − W₂ᵀW₂`.
    #[serde(serialize_with = "rows")]
    pub matrix_charge: Mat<f64>,
    /// `Tr[M_in − M_out]` = `Tr[AΣ]` of B = I (centred).
    pub tr_a_sigma: f64,
    /// `ok | dead | no_equilibrium`, with `rank` the dimension on which it was solved.
    pub status: Status,
    /// Dimension of the subspace carrying noise on both sides (= d when full rank).
    pub rank: usize,
}

fn rows<S: serde::Serializer>(m: &Mat<f64>, s: S) -> std::result::Result<S::Ok, S::Error> {
    use serde::Serialize;
    let r: Vec<Vec<f64>> = (0..m.nrows()).map(|i| (0..m.ncols()).map(|j| m[(i, j)]).collect()).collect();
    r.serialize(s)
}

fn opt_rows<S: serde::Serializer>(m: &Option<Mat<f64>>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match m {
        Some(m) => rows(m, s),
        None => s.serialize_none(),
    }
}

/// The Gram moments the pairs' reports need: the output side of each first linear, the input side of each
/// second one (pass it to [`crate::stats::net::net_moments_with`]).
pub fn pair_grams(pairs: &[LinearPair]) -> GramSpec {
    GramSpec {
        delta: pairs.iter().map(|p| p.module.clone()).collect(),
        input: pairs.iter().map(|p| p.reader.clone()).collect(),
    }
}

/// `(M_in, M_out)` of a pair, centred (`Ḡ₁Ḡ₁ᵀ`, `Ḡ₂ᵀḠ₂` subtracted) or not, from the Gram moments of `m`
/// (computed with [`pair_grams`]). Errors when they are missing.
pub fn pair_moments(m: &NetMoments, pair: &LinearPair, centred: bool) -> Result<(Mat<f64>, Mat<f64>)> {
    let missing = |side: &str, module: &str| {
        Error::NoSymmetry(format!(
            "the statistics pass did not compute the {side} Gram moments of `{module}` for the pair ({}, {}); \
             pass `pair_grams` to `net_moments_with`",
            pair.module, pair.reader
        ))
    };
    let mi = m
        .grams_of(&pair.module)
        .and_then(|g| g.delta_gram.as_ref())
        .ok_or_else(|| missing("output", &pair.module))?;
    let mo = m
        .grams_of(&pair.reader)
        .and_then(|g| g.input_gram.as_ref())
        .ok_or_else(|| missing("input", &pair.reader))?;
    if !centred {
        return Ok((mi.clone(), mo.clone()));
    }
    let gi = pair.layout.incoming_block(&m.mean_grad);
    let go = pair.layout.outgoing_block(&m.mean_grad);
    Ok((mi - &gi * gi.transpose(), mo - go.transpose() * &go))
}

/// The `(M_in, M_out)` a pair's rotation balances for the noise target: centred (continuous time) or
/// `f·Σ/S + ḡḡᵀ` (discrete time).
pub fn pair_targets(m: &NetMoments, pair: &LinearPair, time: Time) -> Result<(Mat<f64>, Mat<f64>)> {
    let centred = pair_moments(m, pair, true)?;
    match time {
        Time::Continuous => Ok(centred),
        Time::Discrete { .. } => Ok(target_pair(centred, pair_moments(m, pair, false)?, time)),
    }
}

/// The report of every linear pair at θ: centred moments, the geometric-mean solution of the target's
/// `P M_out P = M_in` ([`balancing_matrix`], the dense chain's solve), the matrix charge and `Tr[AΣ]` of B = I.
pub fn pair_reports<T: Real>(
    m: &NetMoments,
    theta: &[T],
    pairs: &[LinearPair],
    time: Time,
) -> Result<Vec<NetPairReport>> {
    let zero = NOISE_RTOL * m.trace_second_moment().max(f64::MIN_POSITIVE);
    pairs
        .iter()
        .map(|pair| {
            let (mi, mo) = pair_moments(m, pair, true)?;
            let (ti, to) = pair_targets(m, pair, time)?;
            let bal = balancing_matrix(&ti, &to, zero)?;
            Ok(NetPairReport {
                module: pair.module.clone(),
                reader: pair.reader.clone(),
                tr_a_sigma: (0..mi.nrows()).map(|i| mi[(i, i)] - mo[(i, i)]).sum(),
                m_in: mi,
                m_out: mo,
                p: bal.p,
                matrix_charge: pair.matrix_charge(theta),
                status: bal.status,
                rank: bal.rank,
            })
        })
        .collect()
}

/// The joint equilibrium of every rescaling.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetJoint {
    /// λ per symmetry, in the order of the reports (0 for those held fixed).
    pub lambda: Vec<f64>,
    /// `Tr M` at θ (the target's total noise).
    pub trace_target: f64,
    /// `Tr M` at θ*, predicted from the moments (`Σ_k w_k e^{−2(Sλ)_k}`).
    pub trace_target_at_star: f64,
    /// `max_j |Tr[A_j M(θ*)]|` (predicted), relative to `Tr M(θ*)`: how close θ* is to the equilibrium.
    pub max_rel_flow_at_star: f64,
    /// Coordinate-descent sweeps run.
    pub sweeps: usize,
    /// Whether the sweeps converged (every step below round-off).
    pub converged: bool,
}

/// Per-symmetry reports and the joint equilibrium.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetAnalysis {
    /// The clock of the targets.
    pub time: Time,
    /// Mean loss.
    pub loss: f64,
    /// `Tr Σ` (centred, 1/N).
    pub trace_sigma: f64,
    /// One report per symmetry.
    pub symmetries: Vec<NetSymmetryReport>,
    /// The joint equilibrium of the rescalings.
    pub joint: NetJoint,
}

/// The target moment of every coordinate: `time.target(Σ_kk, m_k)`.
pub fn targets(m: &NetMoments, time: Time) -> Vec<f64> {
    m.sigma_diag().iter().zip(&m.second).map(|(&c, &u)| time.target(c, u).max(0.0)).collect()
}

/// Reports of every symmetry at θ and the joint equilibrium of the rescalings.
pub fn net_analysis<T: Real>(m: &NetMoments, theta: &[T], syms: &[DiagSymmetry], time: Time) -> NetAnalysis {
    let w = targets(m, time);
    let zero = NOISE_RTOL * m.trace_second_moment().max(f64::MIN_POSITIVE);
    let reports: Vec<NetSymmetryReport> = syms
        .iter()
        .map(|s| {
            let (mut a, mut b) = (0.0, 0.0);
            for &(k, c) in &s.entries {
                if c > 0.0 {
                    a += w[k];
                } else {
                    b += w[k];
                }
            }
            let (n_in, n_out) = s.counts();
            let eq = match s.family {
                Family::Rescale => equilibrium_lambda(a, b, zero),
                Family::Scale => scale::equilibrium(a, zero),
            };
            NetSymmetryReport {
                family: s.family,
                module: s.module.clone(),
                unit: s.unit,
                writers: s.writers.clone(),
                readers: s.readers.clone(),
                charge: s.charge(theta),
                noise_in: a,
                noise_out: b,
                tr_a_sigma: a - b,
                n_in,
                n_out,
                lambda_star: eq.lambda(),
                status: eq.status(),
            }
        })
        .collect();
    let free: Vec<bool> =
        reports.iter().map(|r| r.family == Family::Rescale && r.status == Status::Ok).collect();
    let joint = joint_equilibrium(&w, syms, &free, 100_000);
    NetAnalysis { time, loss: m.loss, trace_sigma: m.trace_sigma(), symmetries: reports, joint }
}

/// The joint equilibrium λ of the `free` generators (the others held at 0) for per-coordinate targets `w`,
/// by coordinate descent (at most `max_sweeps` sweeps).
pub fn joint_equilibrium(w: &[f64], syms: &[DiagSymmetry], free: &[bool], max_sweeps: usize) -> NetJoint {
    let mut s = vec![0.0; w.len()];
    let mut lambda = vec![0.0; syms.len()];
    let (mut sweeps, mut converged) = (0, free.iter().all(|f| !f));
    while !converged && sweeps < max_sweeps {
        sweeps += 1;
        let mut biggest: f64 = 0.0;
        for (j, sym) in syms.iter().enumerate() {
            if !free[j] {
                continue;
            }
            let (mut a, mut b) = (0.0, 0.0);
            for &(k, c) in &sym.entries {
                let v = w[k] * (-2.0 * s[k]).exp();
                if c > 0.0 {
                    a += v;
                } else {
                    b += v;
                }
            }
            if a <= 0.0 || b <= 0.0 {
                continue;
            }
            let d = 0.25 * (a / b).ln();
            lambda[j] += d;
            for &(k, c) in &sym.entries {
                s[k] += d * c;
            }
            biggest = biggest.max(d.abs() / (1.0 + lambda[j].abs()));
        }
        converged = biggest <= 4.0 * f64::EPSILON;
    }
    let at = |k: usize| w[k] * (-2.0 * s[k]).exp();
    let star: f64 = (0..w.len()).map(at).sum();
    let flow = syms
        .iter()
        .zip(free)
        .filter(|(_, &f)| f)
        .map(|(sym, _)| sym.entries.iter().map(|&(k, c)| c * at(k)).sum::<f64>().abs())
        .fold(0.0, f64::max);
    NetJoint {
        lambda,
        trace_target: w.iter().sum(),
        trace_target_at_star: star,
        max_rel_flow_at_star: flow / star.max(f64::MIN_POSITIVE),
        sweeps,
        converged,
    }
}

/// The least-norm point of the joint rescaling orbit (teleport's `norm` target, Equi-normalization's): the λ
/// minimising `‖e^{Σ_j λ_j A_j}θ‖² = Σ_k θ_k² e^{2(Sλ)_k}`, which is the problem of [`joint_equilibrium`] with
/// `w_k = θ_k²` and λ → −λ. At the minimum every free generator's charge `θ*ᵀA_jθ*` vanishes. Scale symmetries
/// (no minimum: ‖θ‖² → 0 along the orbit) and rescalings with an all-zero side are held at 0. In the returned
/// [`NetJoint`] the "target" is `θ_k²`: `trace_target` is ‖θ‖², `trace_target_at_star` is ‖θ*‖² and
/// `max_rel_flow_at_star` is `max_j |θ*ᵀA_jθ*| / ‖θ*‖²`.
pub fn norm_equilibrium<T: Real>(theta: &[T], syms: &[DiagSymmetry], max_sweeps: usize) -> NetJoint {
    let w: Vec<f64> = theta.iter().map(|v| v.to_f64() * v.to_f64()).collect();
    let free: Vec<bool> = syms
        .iter()
        .map(|s| {
            let side = |pos: bool| s.entries.iter().any(|&(k, c)| (c > 0.0) == pos && w[k] > 0.0);
            s.family == Family::Rescale && side(true) && side(false)
        })
        .collect();
    let mut j = joint_equilibrium(&w, syms, &free, max_sweeps);
    j.lambda.iter_mut().for_each(|l| *l = -*l);
    j
}

/// θ ← e^{Σ_j λ_j A_j} θ (the joint move; the generators commute).
pub fn apply_joint<T: Real>(theta: &mut [T], syms: &[DiagSymmetry], lambda: &[f64]) {
    for (sym, &l) in syms.iter().zip(lambda) {
        if l != 0.0 {
            sym.act_in_place(theta, l);
        }
    }
}

/// The equilibrium of one report, as the library's typed outcome.
pub fn equilibrium_of(r: &NetSymmetryReport) -> Equilibrium {
    match (r.status, r.lambda_star) {
        (Status::Ok, Some(lambda)) => Equilibrium::Unique { lambda },
        (Status::Unbounded, _) => Equilibrium::Unbounded,
        (Status::NoEquilibrium, _) => {
            Equilibrium::NoEquilibrium { direction: if r.noise_in > r.noise_out { 1.0 } else { -1.0 } }
        }
        _ => Equilibrium::Dead,
    }
}

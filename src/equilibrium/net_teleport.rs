//! Teleport of a module tree: move θ along every rescaling class and every linear pair's double rotation to the
//! noise equilibrium (or to the least ‖θ‖² of the same orbits) without changing the function.
//!
//! Block-coordinate descent of the target trace, as for a dense chain ([`super::teleport`]):
//! - the diagonal block: every rescaling class that is not a linear pair's hidden channel, solved jointly and
//!   exactly from per-coordinate moments ([`joint_equilibrium`]; a diagonal move transforms them exactly,
//!   `w_k → w_k e^{−2(Sλ)_k}`, so no new pass is needed for it);
//! - each linear pair in turn, balanced by `Q = P^{1/2}` with `P M_out P = M_in` ([`balancing_matrix`]), from
//!   fresh moments, because a rotation mixes the channels it acts on and changes the moments of its neighbours.
//!
//! A pair's hidden channel rescalings are the diagonal `Q` of its rotation, so they are not solved separately.
//! Every block step lowers the target trace; sweeps repeat until every orbit's relative residual is at most
//! `tol`: `|a − b|/(a + b)` per free rescaling class (`a`, `b` = the target noise on its `a_k > 0` and `a_k < 0`
//! entries), `‖M_in − M_out‖_F / ‖M_in + M_out‖_F` per pair, on the subspace where both sides carry noise. The
//! norm target is the same descent with `w_k = θ_k²` and the pair's norms `([W₁|b₁][W₁|b₁]ᵀ, W₂ᵀW₂)`, whose roles
//! are swapped (norms move opposite to noise).
//!
//! The statistics pass is the caller's ([`net_teleport`] takes it as a closure), so a pass in f32 with the moments
//! accumulated in f64 moves the f64 parameters.

use super::double_rotation::{balancing_matrix, pair_residual, sqrt_pair, sym_eigen};
use super::net::{joint_equilibrium, pair_targets, targets, NetJoint};
use super::rescale::equilibrium_lambda;
use super::teleport::TeleportTarget;
use super::{Status, NOISE_RTOL};
use crate::error::Result;
use crate::net::Net;
use crate::stats::net::NetMoments;
use crate::symmetry::channels::{enumerate, DiagSymmetry, Family};
use crate::symmetry::linear_pairs::{pairs, LinearPair};
use faer::Mat;
use serde::Serialize;

/// Options of [`net_teleport`].
#[derive(Clone, Copy, Debug)]
pub struct NetTeleportOptions {
    /// Noise equilibrium (with its clock) or least norm.
    pub target: TeleportTarget,
    /// Stop when every orbit's relative residual is at most this. The caller raises it to `1000·ε` of the
    /// pass's float type (the residual is measured from the pass's moments).
    pub tol: f64,
    /// At most this many sweeps (each: the diagonal block, then every pair).
    pub max_sweeps: usize,
}

impl Default for NetTeleportOptions {
    fn default() -> Self {
        Self { target: TeleportTarget::Noise(super::Time::Continuous), tol: 1e-12, max_sweeps: 1000 }
    }
}

/// How far one linear pair moved.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetPairMove {
    /// State-dict prefix of the first linear.
    pub module: String,
    /// State-dict prefix of the second linear.
    pub reader: String,
    /// Path length `Σ_sweeps ‖ln Q‖_F` of the rotation.
    pub distance: f64,
    /// `ok | dead | no_equilibrium` at the last solve.
    pub status: Status,
    /// Dimension of the subspace on which both sides carry noise (= the hidden width when full rank).
    pub rank: usize,
}

/// What [`net_teleport`] did.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetTeleport {
    /// The diagonal block: `lambda` per symmetry of [`enumerate`] (summed over sweeps; 0 for those held fixed:
    /// scale symmetries, classes without a finite equilibrium, a pair's hidden channels), the target trace at θ
    /// (`trace_target`) and, measured by the final pass, at θ* (`trace_target_at_star`), and
    /// `max_rel_flow_at_star = max_j |Tr[A_j M(θ*)]| / Tr M(θ*)` over the free classes, measured. For the norm
    /// target the "target" is `θ_k²`.
    pub joint: NetJoint,
    /// One move per linear pair, in state_dict order.
    pub pairs: Vec<NetPairMove>,
    /// Largest relative residual over the moved orbits at θ* (see the module docs).
    pub max_rel_residual: f64,
    /// Sweeps run.
    pub sweeps: usize,
    /// Whether `max_rel_residual ≤ tol`.
    pub converged: bool,
    /// Pairs solved on a subspace or left with one-sided noise, as text.
    pub notes: Vec<String>,
}

/// The statistics a step needs, at the current point.
struct Balance {
    /// Per-coordinate target (noise) or θ_k² (norm).
    w: Vec<f64>,
    /// Per pair: the `(in, out)` matrices the rotation balances.
    pairs: Vec<(Mat<f64>, Mat<f64>)>,
}

/// `(a, b)`: the sums of `w` over a symmetry's entries with `a_k > 0` and `a_k < 0`.
fn sides(w: &[f64], s: &DiagSymmetry) -> (f64, f64) {
    s.entries.iter().fold((0.0, 0.0), |(a, b), &(k, c)| if c > 0.0 { (a + w[k], b) } else { (a, b + w[k]) })
}

/// The pair's norms in the roles of the noise: `(in, out) = (W₂ᵀW₂, [W₁|b₁][W₁|b₁]ᵀ)`, because under Q the norms
/// move as `N_in → QN_inQ`, `N_out → Q⁻¹N_outQ⁻¹`, opposite to the moments.
fn pair_norms(pair: &LinearPair, theta: &[f64]) -> (Mat<f64>, Mat<f64>) {
    let inc = pair.layout.incoming_block(theta);
    let out = pair.layout.outgoing_block(theta);
    (out.transpose() * &out, &inc * inc.transpose())
}

/// Moves `net` to the target point of its rescaling classes and linear pairs (see the module docs); `moments`
/// is the statistics pass (it must compute the pairs' Gram moments, [`super::net::pair_grams`]). Returns the
/// moved net, the report, and the pass's moments at θ and at θ* (for the noise target the last of the
/// descent's own passes; for the norm target two passes, before and after). Errors on a failed pass or
/// numerical breakdown; an unconverged descent is reported, not an error.
pub fn net_teleport(
    net: &Net<f64>,
    opts: &NetTeleportOptions,
    mut moments: impl FnMut(&Net<f64>) -> Result<NetMoments>,
) -> Result<(Net<f64>, NetTeleport, NetMoments, NetMoments)> {
    let syms = enumerate(&net.arch);
    let prs = pairs(&net.arch);
    let covered: Vec<bool> = syms
        .iter()
        .map(|s| {
            s.family == Family::Rescale
                && prs.iter().any(|p| s.writers == [p.module.clone()] && s.readers == [p.reader.clone()])
        })
        .collect();
    let m0 = moments(net)?;
    let noise = match opts.target {
        TeleportTarget::Noise(time) => Some(time),
        TeleportTarget::Norm => None,
    };
    if noise.is_some() && m0.n < 2 {
        return Err(super::teleport::one_sample(m0.n));
    }
    // Noise below this counts as none (for the norm target: an exactly zero side).
    let zero =
        if noise.is_some() { NOISE_RTOL * m0.trace_second_moment().max(f64::MIN_POSITIVE) } else { 0.0 };
    let balance = |cur: &Net<f64>, m: &NetMoments| -> Result<Balance> {
        Ok(match noise {
            Some(time) => Balance {
                w: targets(m, time),
                pairs: prs.iter().map(|p| pair_targets(m, p, time)).collect::<Result<_>>()?,
            },
            None => Balance {
                w: cur.params.iter().map(|v| v * v).collect(),
                pairs: prs.iter().map(|p| pair_norms(p, &cur.params)).collect(),
            },
        })
    };
    let free_of = |w: &[f64]| -> Vec<bool> {
        syms.iter()
            .zip(&covered)
            .map(|(s, &c)| {
                let (a, b) = sides(w, s);
                !c && s.family == Family::Rescale && equilibrium_lambda(a, b, zero).status() == Status::Ok
            })
            .collect()
    };
    let residual = |b: &Balance| -> f64 {
        let free = free_of(&b.w);
        let diag = syms
            .iter()
            .zip(&free)
            .filter(|(_, &f)| f)
            .map(|(s, _)| {
                let (x, y) = sides(&b.w, s);
                (x - y).abs() / (x + y)
            })
            .fold(0.0, f64::max);
        b.pairs.iter().map(|(mi, mo)| pair_residual(mi, mo, zero)).fold(diag, f64::max)
    };
    let sign = if noise.is_some() { 1.0 } else { -1.0 };
    let mut cur = net.clone();
    let mut lambda = vec![0.0; syms.len()];
    let mut moves: Vec<NetPairMove> = prs
        .iter()
        .map(|p| NetPairMove {
            module: p.module.clone(),
            reader: p.reader.clone(),
            distance: 0.0,
            status: Status::Ok,
            rank: p.layout.d,
        })
        .collect();
    let mut notes = Vec::new();
    let first = balance(&cur, &m0)?;
    let trace_target = first.w.iter().sum::<f64>();
    let mut m = m0.clone();
    let mut bal = first;
    let mut sweeps = 0;
    let mut res = residual(&bal);
    // A new pass for the noise target; the norm target reads θ only (its final pass comes after the descent).
    let mut refresh = |cur: &Net<f64>, m: &mut NetMoments, bal: &mut Balance| -> Result<()> {
        if noise.is_some() {
            *m = moments(cur)?;
        }
        *bal = balance(cur, m)?;
        Ok(())
    };
    while res > opts.tol && sweeps < opts.max_sweeps {
        sweeps += 1;
        let free = free_of(&bal.w);
        if free.iter().any(|&f| f) {
            let j = joint_equilibrium(&bal.w, &syms, &free, 100_000);
            for ((l, s), d) in lambda.iter_mut().zip(&syms).zip(&j.lambda) {
                if *d != 0.0 {
                    *l += sign * d;
                    s.act_in_place(&mut cur.params, sign * d);
                }
            }
            if !prs.is_empty() {
                refresh(&cur, &mut m, &mut bal)?;
            }
        }
        for (i, pair) in prs.iter().enumerate() {
            if i > 0 {
                refresh(&cur, &mut m, &mut bal)?;
            }
            let (mi, mo) = &bal.pairs[i];
            let b = balancing_matrix(mi, mo, zero)?;
            moves[i].status = b.status;
            moves[i].rank = b.rank;
            let Some(p) = b.p else { continue };
            if b.rank < mi.nrows() && b.rank > 0 && sweeps == 1 {
                notes.push(format!(
                    "pair ({}, {}): both sides carry noise in {} of {} directions; balanced on that subspace, the \
                     rest (no noise or one-sided noise) left unchanged",
                    pair.module,
                    pair.reader,
                    b.rank,
                    mi.nrows()
                ));
            }
            let (q, qi) = sqrt_pair(&p)?;
            let (_, s) = sym_eigen(&p)?;
            moves[i].distance += 0.5 * s.iter().map(|v| v.ln().powi(2)).sum::<f64>().sqrt();
            pair.layout.apply_q_in_place(&q, &qi, &mut cur.params);
        }
        refresh(&cur, &mut m, &mut bal)?;
        res = residual(&bal);
    }
    if noise.is_none() {
        m = moments(&cur)?;
    }
    for mv in &moves {
        if mv.status == Status::NoEquilibrium {
            notes.push(format!(
                "pair ({}, {}): some direction has noise on one side only (λ* = ±∞ there: no finite equilibrium)",
                mv.module, mv.reader
            ));
        }
    }
    let converged = res <= opts.tol;
    if !converged {
        notes.push(format!("not converged after {sweeps} sweeps: residual {res:.3e} > tol {:.1e}", opts.tol));
    }
    let star: f64 = bal.w.iter().sum();
    let flow = syms
        .iter()
        .zip(free_of(&bal.w))
        .filter(|(_, f)| *f)
        .map(|(s, _)| {
            let (a, b) = sides(&bal.w, s);
            (a - b).abs()
        })
        .fold(0.0, f64::max);
    let joint = NetJoint {
        lambda,
        trace_target,
        trace_target_at_star: star,
        max_rel_flow_at_star: flow / star.max(f64::MIN_POSITIVE),
        sweeps,
        converged,
    };
    let report = NetTeleport { joint, pairs: moves, max_rel_residual: res, sweeps, converged, notes };
    Ok((cur, report, m0, m))
}

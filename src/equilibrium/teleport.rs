//! Teleport: move θ along its symmetry orbits to the noise equilibrium θ* (or to the ‖θ‖²-minimising point, the
//! target of Equi-normalization) without changing the function the network computes.
//!
//! Blocks: every rescalable layer that is not a linear pair is solved jointly ([`super::rescale::DiagProblem`],
//! no data pass needed); every linear pair is balanced by `Q = P^{1/2}` ([`super::double_rotation`]), which
//! needs fresh moments because rotations mix units. Sweeps repeat (block-coordinate descent of the target
//! trace, which decreases at every block step) until every orbit's relative residual is below `tol`.

use super::double_rotation::{balancing_matrix, pair_residual, sqrt_pair, sym_eigen, target_moments};
use super::rescale::{apply_in_place, DiagProblem};
use super::{Status, Time, NOISE_RTOL};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::model::Model;
use crate::real::Real;
use crate::stats::{linear_pair, moments, rescalable, MomentOptions, Moments};
use crate::symmetry::double_rotation::{apply_q_in_place, incoming_block, outgoing_block};
use faer::Mat;
use serde::Serialize;

/// Where to teleport.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TeleportTarget {
    /// The noise equilibrium (least Tr of the target moment along the orbits).
    Noise(Time),
    /// The least ‖θ‖² along the same orbits (Equi-normalization's target).
    Norm,
}

/// Options of [`teleport`].
#[derive(Clone, Copy, Debug)]
pub struct TeleportOptions {
    /// Target point.
    pub target: TeleportTarget,
    /// Stop when every orbit's relative residual is below this (raised to `1000·ε` of the scalar type).
    pub tol: f64,
    /// Maximum block-coordinate sweeps.
    pub max_sweeps: usize,
    /// Samples per chunk of the statistics passes.
    pub chunk: usize,
}

impl Default for TeleportOptions {
    fn default() -> Self {
        Self { target: TeleportTarget::Noise(Time::Continuous), tol: 1e-12, max_sweeps: 1000, chunk: 4096 }
    }
}

/// Distance moved along one orbit.
#[derive(Clone, Debug, Serialize)]
pub struct OrbitMove {
    /// `rescale(l=…, j=…)` or `double_rotation(l=…)`.
    pub symmetry: String,
    /// `|λ*|` for a rescaling; `Σ_sweeps ‖ln Q‖_F` (path length) for a double rotation.
    pub distance: f64,
    /// Status of the orbit (`dead`/`no_equilibrium` orbits are not moved).
    pub status: Status,
    /// Whether the joint solve reached its tolerance (the same for every orbit of one teleport; an
    /// unconverged move is the last iterate, not the equilibrium).
    pub converged: bool,
}

/// What `noether teleport` reports.
#[derive(Clone, Debug, Serialize)]
pub struct TeleportReport {
    /// `noise` or `norm`.
    pub target: &'static str,
    /// `continuous` or `discrete` (the noise target's clock).
    pub time: &'static str,
    /// L(θ).
    pub loss_before: f64,
    /// L(θ*).
    pub loss_after: f64,
    /// `max_n,i |f_i(x_n; θ*) − f_i(x_n; θ)|`.
    pub max_output_change: f64,
    /// `max_n,i |f_i(x_n; θ)|` (scale for a relative reading of `max_output_change`).
    pub max_output_abs: f64,
    /// Tr Σ(θ) (centred).
    pub trace_sigma_before: f64,
    /// Tr Σ(θ*) (centred).
    pub trace_sigma_after: f64,
    /// ‖θ‖².
    pub param_norm_sq_before: f64,
    /// ‖θ*‖².
    pub param_norm_sq_after: f64,
    /// Largest relative residual over the moved orbits at θ*: `|a−b|/(a+b)` per unit, `‖M_in−M_out‖_F/‖M_in+M_out‖_F` per pair.
    pub max_rel_residual: f64,
    /// Sweeps used.
    pub sweeps: usize,
    /// Whether `max_rel_residual ≤ tol`.
    pub converged: bool,
    /// Distance moved along each orbit.
    pub orbits: Vec<OrbitMove>,
    /// Pairs solved on a subspace (rank-deficient noise) or skipped (one-sided noise), as text.
    pub notes: Vec<String>,
}

/// The quantities each block balances at the current point: per rescale unit (a, b) and per pair (M_in, M_out),
/// for the noise target from moments, for the norm target from θ (roles swapped: norms move opposite to noise).
struct Balance {
    units: Vec<(usize, usize, f64, f64)>,
    pairs: Vec<(usize, Mat<f64>, Mat<f64>)>,
}

fn pair_norms<T: Real>(model: &Model<T>, l: usize) -> (Mat<f64>, Mat<f64>) {
    let inc = incoming_block(&model.arch, l, &model.params);
    let out = outgoing_block(&model.arch, l, &model.params);
    // Norms transform as N_in → QN_inQ, N_out → Q⁻¹N_outQ⁻¹: the noise roles are (in, out) = (N_out, N_in).
    (out.transpose() * &out, &inc * inc.transpose())
}

fn balance<T: Real>(model: &Model<T>, m: Option<&Moments>, target: TeleportTarget) -> Result<Balance> {
    let arch = &model.arch;
    let mut units = Vec::new();
    let mut pairs = Vec::new();
    for l in 0..arch.n_layers() {
        if linear_pair(arch, l) {
            let (a, b) = match (target, m) {
                (TeleportTarget::Noise(time), Some(m)) => target_moments(m, l, time)?,
                _ => pair_norms(model, l),
            };
            pairs.push((l, a, b));
        } else if rescalable(arch, l) {
            for j in 0..arch.layers[l].d_out {
                let (a, b) = match (target, m) {
                    (TeleportTarget::Noise(time), Some(m)) => (
                        time.target(m.noise_in(l, j, true), m.noise_in(l, j, false)),
                        time.target(m.noise_out(l, j, true), m.noise_out(l, j, false)),
                    ),
                    _ => {
                        let sq = |k: usize| model.params[k].to_f64().powi(2);
                        (
                            crate::symmetry::rescale::outgoing(arch, l, j).map(sq).sum(),
                            crate::symmetry::rescale::incoming(arch, l, j).map(sq).sum(),
                        )
                    }
                };
                units.push((l, j, a, b));
            }
        }
    }
    Ok(Balance { units, pairs })
}

fn residual(b: &Balance, zero: f64) -> f64 {
    let mut r: f64 = 0.0;
    for &(_, _, x, y) in &b.units {
        if x > zero && y > zero {
            r = r.max((x - y).abs() / (x + y));
        }
    }
    for (_, mi, mo) in &b.pairs {
        r = r.max(pair_residual(mi, mo, zero));
    }
    r
}

/// The error of a noise target on N < 2 samples (dense chains and module trees alike).
pub(crate) fn one_sample(n: usize) -> Error {
    Error::Data(format!(
        "the data hold N = {n} sample: the gradient covariance Σ of one sample is zero, so there is no noise \
         equilibrium to move to; give at least 2 samples (or use the norm target)"
    ))
}

/// Moves `model` to the target point of its rescaling and double-rotation orbits; returns the moved model and
/// the report. Errors when the model has neither symmetry (nothing to move) or on bad data.
pub fn teleport<T: Real>(
    model: &Model<T>,
    data: &Dataset<T>,
    loss: Loss,
    opts: &TeleportOptions,
) -> Result<(Model<T>, TeleportReport)> {
    let arch = model.arch.clone();
    let nl = arch.n_layers();
    let rescale_layers: Vec<bool> = (0..nl).map(|l| rescalable(&arch, l) && !linear_pair(&arch, l)).collect();
    let pair_layers: Vec<usize> = (0..nl).filter(|&l| linear_pair(&arch, l)).collect();
    if !rescale_layers.iter().any(|&b| b) && pair_layers.is_empty() {
        return Err(Error::NoSymmetry(
            "the model has no rescaling or double-rotation symmetry (hidden layers must be relu, leaky_relu or identity \
             without normalisation); nothing to teleport"
                .into(),
        ));
    }
    if matches!(opts.target, TeleportTarget::Noise(_)) && data.len() < 2 {
        return Err(one_sample(data.len()));
    }
    let tol = opts.tol.max(1000.0 * T::EPS.to_f64());
    let mopts = MomentOptions { elementwise: true, pair_grams: true, chunk: opts.chunk };
    let m0 = moments(model, data, loss, &mopts)?;
    let zero = NOISE_RTOL * m0.trace_second_moment();
    let noise = matches!(opts.target, TeleportTarget::Noise(_));
    let mut cur = model.clone();
    let mut unit_dist: Vec<Vec<f64>> =
        (0..nl).map(|l| vec![0.0; if rescale_layers[l] { arch.layers[l].d_out } else { 0 }]).collect();
    let mut unit_status: Vec<Vec<Status>> = unit_dist.iter().map(|v| vec![Status::Ok; v.len()]).collect();
    let mut pair_dist = vec![0.0; nl];
    let mut pair_status = vec![Status::Ok; nl];
    let mut notes = Vec::new();
    let mut sweeps = 0;
    let mut m = Some(m0.clone());
    let mut res;
    loop {
        if noise && m.is_none() {
            m = Some(moments(&cur, data, loss, &mopts)?);
        }
        res = residual(&balance(&cur, m.as_ref(), opts.target)?, zero);
        if res <= tol || sweeps >= opts.max_sweeps {
            break;
        }
        sweeps += 1;
        if rescale_layers.iter().any(|&b| b) {
            let (problem, sign) = match opts.target {
                TeleportTarget::Noise(time) => {
                    (DiagProblem::from_moments(m.as_ref().expect("moments"), time)?, 1.0)
                }
                TeleportTarget::Norm => (DiagProblem::from_params(&cur), -1.0),
            };
            let sol = problem.solve(&rescale_layers, 0.1 * tol, 100_000);
            let lam: Vec<Vec<f64>> =
                sol.lambda.iter().map(|v| v.iter().map(|x| sign * x).collect()).collect();
            for l in 0..nl {
                if rescale_layers[l] {
                    for j in 0..lam[l].len() {
                        unit_dist[l][j] += lam[l][j];
                        unit_status[l][j] = sol.status[l][j];
                    }
                }
            }
            apply_in_place(&arch, &lam, &mut cur.params);
            m = None;
        }
        for &l in &pair_layers {
            if noise && m.is_none() {
                m = Some(moments(&cur, data, loss, &mopts)?);
            }
            let (mi, mo) = match (opts.target, m.as_ref()) {
                (TeleportTarget::Noise(time), Some(mm)) => target_moments(mm, l, time)?,
                _ => pair_norms(&cur, l),
            };
            let bal = balancing_matrix(&mi, &mo, zero)?;
            pair_status[l] = bal.status;
            let Some(p) = bal.p else { continue };
            if bal.rank < mi.nrows() && sweeps == 1 {
                notes.push(format!(
                    "pair ({l}, {}): incoming and outgoing noise share {} of {} directions; balanced on that subspace, the \
                     rest (no noise or one-sided noise) left unchanged",
                    l + 1,
                    bal.rank,
                    mi.nrows()
                ));
            }
            let (q, qi) = sqrt_pair(&p)?;
            let (_, s) = sym_eigen(&p)?;
            pair_dist[l] += 0.5 * s.iter().map(|v| v.ln().powi(2)).sum::<f64>().sqrt();
            apply_q_in_place(&arch, l, &q, &qi, &mut cur.params);
            m = None;
        }
    }
    for &l in &pair_layers {
        if pair_status[l] == Status::NoEquilibrium {
            notes.push(format!(
                "pair ({l}, {}): some direction has noise on one side only (λ* = ±∞ there: no finite equilibrium)",
                l + 1
            ));
        }
    }
    if res > tol {
        notes.push(format!("not converged after {sweeps} sweeps: residual {res:.3e} > tol {tol:.1e}"));
    }
    let m1 = match m {
        Some(mm) if noise => mm,
        _ => moments(&cur, data, loss, &mopts)?,
    };
    let (f0, f1) = (model.outputs(data, opts.chunk)?, cur.outputs(data, opts.chunk)?);
    let (mut dmax, mut fmax) = (0.0f64, 0.0f64);
    for j in 0..f0.ncols() {
        for i in 0..f0.nrows() {
            dmax = dmax.max((f1[(i, j)].to_f64() - f0[(i, j)].to_f64()).abs());
            fmax = fmax.max(f0[(i, j)].to_f64().abs());
        }
    }
    let mut orbits = Vec::new();
    for l in 0..nl {
        for (j, d) in unit_dist[l].iter().enumerate() {
            orbits.push(OrbitMove {
                symmetry: format!("rescale(l={l}, j={j})"),
                distance: d.abs(),
                status: unit_status[l][j],
                converged: res <= tol,
            });
        }
        if linear_pair(&arch, l) {
            orbits.push(OrbitMove {
                symmetry: format!("double_rotation(l={l})"),
                distance: pair_dist[l],
                status: pair_status[l],
                converged: res <= tol,
            });
        }
    }
    let nsq = |p: &[T]| p.iter().map(|v| v.to_f64().powi(2)).sum::<f64>();
    let report = TeleportReport {
        target: if noise { "noise" } else { "norm" },
        time: match opts.target {
            TeleportTarget::Noise(t) => t.name(),
            TeleportTarget::Norm => "none",
        },
        loss_before: m0.loss,
        loss_after: m1.loss,
        max_output_change: dmax,
        max_output_abs: fmax,
        trace_sigma_before: m0.trace_sigma(),
        trace_sigma_after: m1.trace_sigma(),
        param_norm_sq_before: nsq(&model.params),
        param_norm_sq_after: nsq(&cur.params),
        max_rel_residual: res,
        sweeps,
        converged: res <= tol,
        orbits,
        notes,
    };
    Ok((cur, report))
}

//! Rescaling equilibria: single unit in closed form, and the joint equilibrium of every rescaling of a network.
//!
//! Unit j of layer l: `G(λ) = e^{−2λ}a − e^{2λ}b` (a, b = incoming and outgoing noise), so `λ* = ¼ ln(a/b)`.
//! Jointly (all generators diagonal and commuting), the per-parameter second moments move as
//! `m_k → e^{−2(Pλ)_k} m_k`, and the equilibrium minimises the convex `F(λ) = Σ_k e^{−2(Pλ)_k} m_k`
//! (F = Tr of the target moment along the orbit; no new data pass is needed). Units of the same layer share no
//! parameter, so a whole layer is minimised exactly at once: `λ_j = ¼ ln(A_j/B_j)` where
//! `A_j = Σ_{k∈in(j)} e^{−2(Pλ)_k + 2λ_j} m_k` and `B_j = Σ_{k∈out(j)} e^{−2(Pλ)_k − 2λ_j} m_k` do not depend on
//! λ_j. Cyclic sweeps over layers converge to the unique minimiser (block coordinate descent on a smooth
//! strictly convex function of the free units).

use super::{Equilibrium, Status, Time, NOISE_RTOL};
use crate::error::Result;
use crate::model::{Architecture, Model};
use crate::real::Real;
use crate::stats::{rescalable, Moments};
use faer::Mat;

/// λ* of one unit from its incoming (a) and outgoing (b) target noise: `¼ ln(a/b)`; `Dead` when both are
/// `≤ zero`, `NoEquilibrium` (λ* = ±∞) when only one is.
pub fn equilibrium_lambda(a: f64, b: f64, zero: f64) -> Equilibrium {
    match (a > zero, b > zero) {
        (true, true) => Equilibrium::Unique { lambda: 0.25 * (a / b).ln() },
        (false, false) => Equilibrium::Dead,
        (true, false) => Equilibrium::NoEquilibrium { direction: 1.0 },
        (false, true) => Equilibrium::NoEquilibrium { direction: -1.0 },
    }
}

/// The per-parameter second moments of one layer in the form the joint solver needs.
#[derive(Clone, Debug)]
pub enum LayerDiag {
    /// Neither side rescalable: the layer's total.
    Const(f64),
    /// Rows rescalable, inputs not: per-row totals (bias included).
    Rows(Vec<f64>),
    /// Inputs rescalable, rows not: per-column totals, plus the fixed bias total.
    Cols(Vec<f64>, f64),
    /// Both sides rescalable: element moments `[d_out, d_in]` and bias moments.
    Full(Mat<f64>, Vec<f64>),
}

/// `F(λ) = Σ_k e^{−2(Pλ)_k} m_k` over all rescalings of a network.
#[derive(Clone, Debug)]
pub struct DiagProblem {
    arch: Architecture,
    layers: Vec<LayerDiag>,
}

/// The minimiser of a [`DiagProblem`].
#[derive(Clone, Debug)]
pub struct JointSolution {
    /// λ per layer and unit (empty vectors for layers without rescaling).
    pub lambda: Vec<Vec<f64>>,
    /// Status per layer and unit (`Dead`/`NoEquilibrium` units are held at λ = 0).
    pub status: Vec<Vec<Status>>,
    /// `F(λ*)`: Tr of the target moment at θ* (Tr Σ(θ*) for the continuous noise target).
    pub objective: f64,
    /// `F(0)`.
    pub objective_start: f64,
    /// `max_j |A_j e^{−2λ_j} − B_j e^{2λ_j}| / (A_j e^{−2λ_j} + B_j e^{2λ_j})` over free units with noise on both sides.
    pub max_rel_residual: f64,
    /// Sweeps done.
    pub sweeps: usize,
}

fn clamp(v: f64) -> f64 {
    v.max(0.0)
}

impl DiagProblem {
    /// The noise problem from gradient moments: `m_k = target(Σ_kk, E[g_k²])` (needs element-wise moments of
    /// layers rescalable on both sides; round-off negatives are clamped to 0).
    pub fn from_moments(m: &Moments, time: Time) -> Result<Self> {
        let arch = &m.arch;
        let mut layers = Vec::new();
        for l in 0..arch.n_layers() {
            let ly = arch.layers[l];
            let (rows_free, cols_free) = (rescalable(arch, l), l > 0 && rescalable(arch, l - 1));
            let lm = &m.layers[l];
            let bias_t = |j: usize| {
                let g = m.grad[arch.bias_range(l).start + j];
                clamp(time.target(lm.bias[j] - g * g, lm.bias[j]))
            };
            layers.push(match (rows_free, cols_free) {
                (false, false) => LayerDiag::Const(time.target(m.layer_trace_sigma(l), lm.sq_norm)),
                (true, false) => LayerDiag::Rows(
                    (0..ly.d_out)
                        .map(|j| clamp(time.target(m.noise_in(l, j, true), m.noise_in(l, j, false))))
                        .collect(),
                ),
                (false, true) => LayerDiag::Cols(
                    (0..ly.d_in)
                        .map(|i| clamp(time.target(lm.cols[i] - m.grad_col_sq(l, i), lm.cols[i])))
                        .collect(),
                    if ly.bias { (0..ly.d_out).map(bias_t).sum() } else { 0.0 },
                ),
                (true, true) => {
                    let e = lm.elementwise.as_ref().ok_or_else(|| {
                        crate::error::Error::Config(format!(
                            "element-wise moments of layer {l} were not computed (MomentOptions::elementwise)"
                        ))
                    })?;
                    let w = m.arch.weight_range(l).start;
                    LayerDiag::Full(
                        Mat::from_fn(ly.d_out, ly.d_in, |j, i| {
                            let (u, g) = (e[(j, i)], m.grad[w + j * ly.d_in + i]);
                            clamp(time.target(u - g * g, u))
                        }),
                        if ly.bias { (0..ly.d_out).map(bias_t).collect() } else { vec![0.0; ly.d_out] },
                    )
                }
            });
        }
        Ok(Self { arch: arch.clone(), layers })
    }

    /// The weight-norm problem `m_k = θ_k²`: its minimiser μ gives the ‖θ‖²-minimising rescaling λ = −μ
    /// (Equi-normalization's target, `λ_j = ¼ ln(‖out_j‖²/‖in_j‖²)` jointly).
    pub fn from_params<T: Real>(model: &Model<T>) -> Self {
        let arch = &model.arch;
        let sq = |k: usize| model.params[k].to_f64().powi(2);
        let layers = (0..arch.n_layers())
            .map(|l| {
                let ly = arch.layers[l];
                let (rows_free, cols_free) = (rescalable(arch, l), l > 0 && rescalable(arch, l - 1));
                let bias = |j: usize| if ly.bias { sq(arch.bias_range(l).start + j) } else { 0.0 };
                match (rows_free, cols_free) {
                    (false, false) => LayerDiag::Const(arch.layer_range(l).map(sq).sum()),
                    (true, false) => LayerDiag::Rows(
                        (0..ly.d_out)
                            .map(|j| {
                                (0..ly.d_in).map(|i| sq(arch.weight_index(l, j, i))).sum::<f64>() + bias(j)
                            })
                            .collect(),
                    ),
                    (false, true) => LayerDiag::Cols(
                        (0..ly.d_in)
                            .map(|i| (0..ly.d_out).map(|j| sq(arch.weight_index(l, j, i))).sum())
                            .collect(),
                        (0..ly.d_out).map(bias).sum(),
                    ),
                    (true, true) => LayerDiag::Full(
                        Mat::from_fn(ly.d_out, ly.d_in, |j, i| sq(arch.weight_index(l, j, i))),
                        (0..ly.d_out).map(bias).collect(),
                    ),
                }
            })
            .collect();
        Self { arch: arch.clone(), layers }
    }

    /// `F(λ)`.
    #[allow(clippy::needless_range_loop)]
    pub fn objective(&self, lambda: &[Vec<f64>]) -> f64 {
        let e = |v: &[f64], s: f64| v.iter().map(|x| (s * x).exp()).collect::<Vec<_>>();
        let mut f = 0.0;
        for (l, d) in self.layers.iter().enumerate() {
            f += match d {
                LayerDiag::Const(c) => *c,
                LayerDiag::Rows(r) => r.iter().zip(e(&lambda[l], -2.0)).map(|(a, b)| a * b).sum(),
                LayerDiag::Cols(c, rest) => {
                    c.iter().zip(e(&lambda[l - 1], 2.0)).map(|(a, b)| a * b).sum::<f64>() + rest
                }
                LayerDiag::Full(m, bias) => {
                    let (eo, ei) = (e(&lambda[l], -2.0), e(&lambda[l - 1], 2.0));
                    let mut s = 0.0;
                    for i in 0..m.ncols() {
                        let col = m.col(i);
                        let mut t = 0.0;
                        for j in 0..m.nrows() {
                            t += col[j] * eo[j];
                        }
                        s += t * ei[i];
                    }
                    s + bias.iter().zip(&eo).map(|(a, b)| a * b).sum::<f64>()
                }
            };
        }
        f
    }

    /// `(A_j, B_j)` of every unit of rescalable layer l at the current λ (independent of λ^l itself).
    #[allow(clippy::needless_range_loop)]
    fn in_out(&self, l: usize, lambda: &[Vec<f64>], a: &mut [f64], b: &mut [f64]) {
        match &self.layers[l] {
            LayerDiag::Rows(r) => a.copy_from_slice(r),
            LayerDiag::Full(m, bias) => {
                a.copy_from_slice(bias);
                for i in 0..m.ncols() {
                    let w = (2.0 * lambda[l - 1][i]).exp();
                    let col = m.col(i);
                    for j in 0..m.nrows() {
                        a[j] += col[j] * w;
                    }
                }
            }
            _ => unreachable!("layer {l} is rescalable"),
        }
        match &self.layers[l + 1] {
            LayerDiag::Cols(c, _) => b.copy_from_slice(c),
            LayerDiag::Full(m, _) => {
                let w: Vec<f64> = lambda[l + 1].iter().map(|x| (-2.0 * x).exp()).collect();
                for (i, bi) in b.iter_mut().enumerate() {
                    let col = m.col(i);
                    let mut s = 0.0;
                    for k in 0..m.nrows() {
                        s += col[k] * w[k];
                    }
                    *bi = s;
                }
            }
            _ => unreachable!("layer {} takes rescalable inputs", l + 1),
        }
    }

    /// Minimises F over the units of the layers with `free[l]` (others held at λ = 0) by exact layer-wise
    /// coordinate updates, until the relative residual of every free unit is below `tol` or `max_sweeps`.
    pub fn solve(&self, free: &[bool], tol: f64, max_sweeps: usize) -> JointSolution {
        let arch = &self.arch;
        let nl = arch.n_layers();
        let active: Vec<usize> =
            (0..nl).filter(|&l| rescalable(arch, l) && free.get(l).copied().unwrap_or(false)).collect();
        let mut lambda: Vec<Vec<f64>> = (0..nl)
            .map(|l| if rescalable(arch, l) { vec![0.0; arch.layers[l].d_out] } else { Vec::new() })
            .collect();
        let mut status: Vec<Vec<Status>> = lambda.iter().map(|v| vec![Status::Ok; v.len()]).collect();
        let f0 = self.objective(&lambda);
        let zero = NOISE_RTOL * f0;
        let w = arch.max_width();
        let (mut a, mut b) = (vec![0.0; w], vec![0.0; w]);
        let mut sweeps = 0;
        loop {
            let mut max_r: f64 = 0.0;
            for &l in &active {
                let d = arch.layers[l].d_out;
                self.in_out(l, &lambda, &mut a[..d], &mut b[..d]);
                for j in 0..d {
                    // Classify units in the first sweep: whether A_j, B_j > 0 does not depend on λ (all factors
                    // are positive), and every λ is still 0 for units not yet visited.
                    if sweeps == 0 {
                        status[l][j] = equilibrium_lambda(a[j], b[j], zero).status();
                    }
                    if status[l][j] != Status::Ok {
                        continue;
                    }
                    let lam = lambda[l][j];
                    let (x, y) = (a[j] * (-2.0 * lam).exp(), b[j] * (2.0 * lam).exp());
                    max_r = max_r.max((x - y).abs() / (x + y));
                    lambda[l][j] = 0.25 * (a[j] / b[j]).ln();
                }
            }
            if max_r <= tol || sweeps >= max_sweeps {
                break;
            }
            sweeps += 1;
        }
        // Residual at the returned λ.
        let mut final_r: f64 = 0.0;
        for &l in &active {
            let d = arch.layers[l].d_out;
            self.in_out(l, &lambda, &mut a[..d], &mut b[..d]);
            for j in 0..d {
                if status[l][j] == Status::Ok {
                    let lam = lambda[l][j];
                    let (x, y) = (a[j] * (-2.0 * lam).exp(), b[j] * (2.0 * lam).exp());
                    final_r = final_r.max((x - y).abs() / (x + y));
                }
            }
        }
        JointSolution {
            objective: self.objective(&lambda),
            objective_start: f0,
            max_rel_residual: final_r,
            sweeps,
            lambda,
            status,
        }
    }
}

/// θ ← Π_j e^{λ_j A_j} θ for per-layer, per-unit λ (layers without rescaling have empty vectors).
pub fn apply_in_place<T: Real>(arch: &Architecture, lambda: &[Vec<f64>], theta: &mut [T]) {
    for (l, lam) in lambda.iter().enumerate() {
        for (j, &v) in lam.iter().enumerate() {
            if v != 0.0 {
                crate::symmetry::rescale::act_in_place(arch, l, j, theta, v);
            }
        }
    }
}

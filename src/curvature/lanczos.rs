//! Extreme eigenvalues of a symmetric operator: Lanczos with full reorthogonalisation (the tridiagonal
//! eigenproblem solved by faer), and power iteration as the simple alternative.
//!
//! Convergence test: a Ritz pair (θ, y) of the Krylov space has residual `‖A y − θ y‖ = β_m |s_m|` (s = the
//! eigenvector of the tridiagonal T, β_m its next off-diagonal); there is an eigenvalue of A within that residual
//! of θ (and within residual²/gap once separated). A pair counts as converged when its residual is at most
//! `tol · max|θ|` (relative to the spectral-norm estimate).

use super::LinearOperator;
use crate::error::{Error, Result};
use crate::linalg::{dot, norm_sq};
use faer::{Mat, Side};
use rand::Rng;
use serde::Serialize;

/// Options of [`lanczos_eigenvalues`] and [`power_iteration`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LanczosOptions {
    /// Maximum number of Krylov vectors (operator products); capped at P. Memory is `max_iter · P` doubles.
    pub max_iter: usize,
    /// Relative residual tolerance (see the module doc).
    pub tol: f64,
}

impl Default for LanczosOptions {
    fn default() -> Self {
        Self { max_iter: 300, tol: 1e-8 }
    }
}

/// How a Lanczos or power iteration ended.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Default)]
pub struct LanczosInfo {
    /// Iterations (Krylov vectors) used.
    pub iterations: usize,
    /// Largest residual `‖A y − θ y‖` among the wanted Ritz pairs at the end.
    pub residual: f64,
    /// The residual a pair must reach to count as converged: `tol · max|θ|` (Lanczos; the spectral-norm
    /// estimate) or `tol · |ρ|` (power iteration).
    pub threshold: f64,
    /// Whether every wanted pair met the tolerance (or the Krylov space reached dimension P).
    pub converged: bool,
    /// Operator products used (Hessian-vector products for a Hessian).
    pub hvps: usize,
}

/// Extreme eigenvalues found by [`lanczos_eigenvalues`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExtremeEigenvalues {
    /// The k largest eigenvalues, descending.
    pub top: Vec<f64>,
    /// The smallest eigenvalue, if asked.
    pub bottom: Option<f64>,
    /// Iterations, residual, convergence, product count.
    pub info: LanczosInfo,
}

/// A vector of i.i.d. N(0, 1) entries scaled to unit norm.
fn random_unit<R: Rng>(p: usize, rng: &mut R) -> Vec<f64> {
    use rand_distr::{Distribution, StandardNormal};
    let mut v: Vec<f64> = (0..p).map(|_| StandardNormal.sample(rng)).collect();
    let n = norm_sq(&v).sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// `w ← w − Σ_i (q_i·w) q_i` over the rows of the basis `q` (`m · P` flat), twice (classical Gram–Schmidt
/// repeated: "twice is enough" for orthogonality to round-off).
fn orthogonalise(q: &[Vec<f64>], w: &mut [f64]) {
    for _ in 0..2 {
        for qi in q {
            let c = dot(qi, w);
            w.iter_mut().zip(qi).for_each(|(x, y)| *x -= c * y);
        }
    }
}

/// Bytes of memory available to this process (`MemAvailable` of `/proc/meminfo`), or `None` where that is
/// not known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Errors, before any work, when a Lanczos basis of `iterations` vectors of dimension `p` (f64) cannot fit
/// in the memory available ([`available_memory`]); the message says how many iterations would fit.
pub fn check_basis_memory(iterations: usize, p: usize) -> Result<()> {
    let need = (iterations as u64).saturating_mul(p as u64).saturating_mul(8);
    match available_memory() {
        Some(avail) if need > avail => {
            let fit = avail / (8 * p.max(1) as u64);
            Err(Error::Config(format!(
                "{iterations} Lanczos iterations need {:.1} GB for their basis ({iterations} vectors of P = {p}), \
                 but only {:.1} GB of memory is available; ask for at most {fit} iterations",
                need as f64 / 1e9,
                avail as f64 / 1e9
            )))
        }
        _ => Ok(()),
    }
}

/// The k largest (and optionally the smallest) eigenvalues of a symmetric operator by Lanczos with full
/// reorthogonalisation, from a random Gaussian start. One operator product per iteration. If the Krylov space
/// becomes invariant early (repeated eigenvalues), it restarts from a fresh random vector orthogonal to all
/// previous ones, so multiplicities are found. Errors when `k` is 0 or exceeds the dimension P.
pub fn lanczos_eigenvalues<R: Rng>(
    op: &mut impl LinearOperator,
    k: usize,
    bottom: bool,
    opts: &LanczosOptions,
    rng: &mut R,
) -> Result<ExtremeEigenvalues> {
    let p = op.dim();
    if k == 0 || k > p {
        return Err(Error::Config(format!(
            "asked for the top {k} eigenvalues, but the matrix has dimension P = {p}; ask for 1 ≤ k ≤ {p}"
        )));
    }
    if opts.tol.is_nan() || opts.tol <= 0.0 {
        return Err(Error::Config(format!("Lanczos tolerance must be positive, got {}", opts.tol)));
    }
    let max_iter = opts.max_iter.max(k + usize::from(bottom)).min(p);
    let start_products = op.products();
    check_basis_memory(max_iter, p)?;
    // The basis grows one vector of P per iteration, allocated as it is needed (a converging run of a large
    // model uses far fewer than max_iter).
    let mut q: Vec<Vec<f64>> = vec![random_unit(p, rng)];
    let (mut alpha, mut beta) = (Vec::<f64>::new(), Vec::<f64>::new());
    let mut w = vec![0.0; p];
    let mut block_start = 0;
    let mut result = ExtremeEigenvalues { top: vec![], bottom: None, info: LanczosInfo::default() };
    for j in 0..max_iter {
        op.apply_into(&q[j], &mut w);
        let a = dot(&q[j], &w);
        alpha.push(a);
        orthogonalise(&q, &mut w);
        let b = norm_sq(&w).sqrt();
        // Ritz values and residuals of the (block-diagonal after restarts) tridiagonal T.
        let m = j + 1;
        let t = Mat::<f64>::from_fn(m, m, |r, c| {
            if r == c {
                alpha[r]
            } else if r + 1 == c {
                beta[r]
            } else if c + 1 == r {
                beta[c]
            } else {
                0.0
            }
        });
        let evd = t.self_adjoint_eigen(Side::Lower).map_err(|e| Error::Numerical {
            what: "Lanczos tridiagonal eigenproblem",
            reason: format!("{e:?}"),
        })?;
        let (s, u) = (evd.S(), evd.U());
        let theta: Vec<f64> = (0..m).map(|i| s[i]).collect();
        let scale = theta.iter().fold(0.0f64, |acc, x| acc.max(x.abs())).max(f64::MIN_POSITIVE);
        let resid = |i: usize| b * u[(m - 1, i)].abs();
        // Wanted: top k (ascending order from faer, so the last k) and the first if bottom.
        let mut wanted: Vec<usize> = (m.saturating_sub(k)..m).collect();
        if bottom {
            wanted.push(0);
        }
        let worst = wanted.iter().map(|&i| resid(i)).fold(0.0, f64::max);
        // After a restart the new block must itself have converged its own extreme Ritz values, otherwise a
        // repeated top eigenvalue could be missed (the earlier block has zero residual by construction).
        let block_ok = if block_start == 0 {
            true
        } else {
            let mb = m - block_start;
            let tb = Mat::<f64>::from_fn(mb, mb, |r, c| t[(r + block_start, c + block_start)]);
            match tb.self_adjoint_eigen(Side::Lower) {
                Ok(e) => {
                    let ub = e.U();
                    let mut idx: Vec<usize> = (mb.saturating_sub(k)..mb).collect();
                    if bottom {
                        idx.push(0);
                    }
                    idx.iter().all(|&i| b * ub[(mb - 1, i)].abs() <= opts.tol * scale)
                }
                Err(_) => false,
            }
        };
        let full = m == p;
        let converged = full || (m >= k + usize::from(bottom) && worst <= opts.tol * scale && block_ok);
        result.top = (0..k.min(m)).map(|i| theta[m - 1 - i]).collect();
        result.bottom = if bottom { Some(theta[0]) } else { None };
        result.info = LanczosInfo {
            iterations: m,
            residual: if full { 0.0 } else { worst },
            threshold: opts.tol * scale,
            converged,
            hvps: op.products() - start_products,
        };
        if converged || m == max_iter {
            break;
        }
        if b <= 1e-12 * scale {
            // Invariant subspace: restart with a fresh random direction orthogonal to the basis.
            beta.push(0.0);
            block_start = m;
            let mut fresh = random_unit(p, rng);
            orthogonalise(&q, &mut fresh);
            let n = norm_sq(&fresh).sqrt();
            fresh.iter_mut().for_each(|x| *x /= n);
            q.push(fresh);
        } else {
            beta.push(b);
            q.push(w.iter().map(|x| x / b).collect());
        }
    }
    if result.top.len() < k {
        return Err(Error::Numerical {
            what: "Lanczos",
            reason: format!(
                "only {} Ritz values after {} iterations; raise max_iter",
                result.top.len(),
                max_iter
            ),
        });
    }
    Ok(result)
}

/// The eigenvalue of largest magnitude and its unit eigenvector by power iteration `v ← Av/‖Av‖`, stopped when
/// the residual `‖Av − ρv‖` (ρ = vᵀAv, the Rayleigh quotient) is at most `tol·|ρ|`. Converges at the rate
/// |λ₂/λ₁| per product, so slowly when the top of the spectrum is clustered: Lanczos is the default.
pub fn power_iteration<R: Rng>(
    op: &mut impl LinearOperator,
    opts: &LanczosOptions,
    rng: &mut R,
) -> Result<(f64, Vec<f64>, LanczosInfo)> {
    let p = op.dim();
    if p == 0 {
        return Err(Error::Config("power iteration on an empty operator".into()));
    }
    let start_products = op.products();
    let mut v = random_unit(p, rng);
    let mut w = vec![0.0; p];
    let mut info = LanczosInfo::default();
    let mut rho = 0.0;
    for it in 1..=opts.max_iter.max(1) {
        op.apply_into(&v, &mut w);
        rho = dot(&v, &w);
        let res = w.iter().zip(&v).map(|(a, b)| (a - rho * b).powi(2)).sum::<f64>().sqrt();
        let n = norm_sq(&w).sqrt();
        info = LanczosInfo {
            iterations: it,
            residual: res,
            threshold: opts.tol * rho.abs(),
            converged: res <= opts.tol * rho.abs(),
            hvps: op.products() - start_products,
        };
        if info.converged || n == 0.0 {
            info.converged |= n == 0.0;
            break;
        }
        v.iter_mut().zip(&w).for_each(|(x, y)| *x = y / n);
    }
    Ok((rho, v, info))
}

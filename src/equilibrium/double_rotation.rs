//! Double-rotation equilibria of a linear pair (l, l+1). Under `(W_{l+1}, [W_l|b_l]) → (W_{l+1}Q⁻¹, Q[W_l|b_l])`
//! the moments move as `M_in → Q⁻¹M_inQ⁻¹`, `M_out → QM_outQ` (Q symmetric). They balance (`Tr[BΣ] = 0` for
//! every symmetric B) iff `Q² = P` with `P M_out P = M_in`: the matrix geometric mean `P = M_out⁻¹ # M_in =
//! M_out^{−1/2}(M_out^{1/2} M_in M_out^{1/2})^{1/2} M_out^{−1/2}`, computed through symmetric eigendecompositions.

use super::{spectral_lambda, Equilibrium, Status, Time};
use crate::error::{Error, Result};
use crate::stats::Moments;
use faer::{Mat, Side};

/// Eigen-cutoff for rank decisions: eigenvalues below `RANK_RTOL × λ_max` of `M_in + M_out` count as zero
/// (centred moments carry round-off ~1e-15 relative; 1e-11 leaves four orders of margin).
pub const RANK_RTOL: f64 = 1e-11;

/// `(M_in, M_out)` of the pair for the target: centred (continuous) or `f·Σ/S + ḡḡᵀ` (discrete).
pub fn target_moments(m: &Moments, l: usize, time: Time) -> Result<(Mat<f64>, Mat<f64>)> {
    let (ci, co) = (m.m_in(l, true)?, m.m_out(l, true)?);
    match time {
        Time::Continuous => Ok((ci, co)),
        Time::Discrete { .. } => Ok(target_pair((ci, co), (m.m_in(l, false)?, m.m_out(l, false)?), time)),
    }
}

/// The target `(M_in, M_out)` from their centred and uncentred values, entry by entry ([`Time::target`]):
/// the centred ones in continuous time, `f·Σ/S + ḡḡᵀ` in discrete time. Shared by the dense chain and trees.
pub fn target_pair(
    centred: (Mat<f64>, Mat<f64>),
    uncentred: (Mat<f64>, Mat<f64>),
    time: Time,
) -> (Mat<f64>, Mat<f64>) {
    let comb = |c: &Mat<f64>, u: &Mat<f64>| {
        Mat::from_fn(c.nrows(), c.ncols(), |i, j| time.target(c[(i, j)], u[(i, j)]))
    };
    (comb(&centred.0, &uncentred.0), comb(&centred.1, &uncentred.1))
}

/// Symmetric eigendecomposition `(U, s)` of a symmetric matrix (symmetrised first).
pub fn sym_eigen(m: &Mat<f64>) -> Result<(Mat<f64>, Vec<f64>)> {
    let s = Mat::from_fn(m.nrows(), m.ncols(), |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
    let evd = s
        .self_adjoint_eigen(Side::Lower)
        .map_err(|e| Error::Numerical { what: "symmetric eigendecomposition", reason: format!("{e:?}") })?;
    let vals = evd.S().column_vector().iter().copied().collect();
    Ok((evd.U().to_owned(), vals))
}

/// `U f(s) Uᵀ` for a symmetric matrix with eigendecomposition `(U, s)`.
pub fn sym_fn(u: &Mat<f64>, s: &[f64], f: impl Fn(f64) -> f64) -> Mat<f64> {
    let d = u.nrows();
    let fs: Vec<f64> = s.iter().map(|&x| f(x)).collect();
    let mut out = Mat::from_fn(d, d, |i, j| (0..s.len()).map(|k| u[(i, k)] * fs[k] * u[(j, k)]).sum());
    for i in 0..d {
        for j in 0..i {
            let v = 0.5 * (out[(i, j)] + out[(j, i)]);
            out[(i, j)] = v;
            out[(j, i)] = v;
        }
    }
    out
}

/// The solution of `P M_out P = M_in` and how it was obtained.
#[derive(Clone, Debug)]
pub struct Balancing {
    /// P (SPD): the geometric-mean solution on the two-sided subspace V, identity on V^⊥. None only when
    /// there is noise but no two-sided direction at all.
    pub p: Option<Mat<f64>>,
    /// `ok` (solved; directions without any noise, if any, are left alone), `dead` (no noise at all) or
    /// `no_equilibrium` (some direction has noise on one side only: λ* = ±∞ there; solved on V).
    pub status: Status,
    /// dim V, `V = range(M_in) ∩ range(M_out)` (= d when both are full rank).
    pub rank: usize,
}

/// Orthonormal basis (columns) of the eigenvectors of a symmetric matrix whose eigenvalue is `≤ cut`
/// (`small = true`) or `> cut` (`small = false`).
fn eigen_basis(m: &Mat<f64>, cut: f64, small: bool) -> Result<Mat<f64>> {
    let (u, s) = sym_eigen(m)?;
    let keep: Vec<usize> = (0..s.len()).filter(|&k| (s[k] <= cut) == small).collect();
    Ok(Mat::from_fn(u.nrows(), keep.len(), |i, k| u[(i, keep[k])]))
}

/// Geometric-mean solution of `P M_out P = M_in` for PSD `M_in`, `M_out`, on the two-sided subspace
/// `V = range(M_in) ∩ range(M_out)` (null spaces cut at [`RANK_RTOL`] × the largest eigenvalue of
/// `M_in + M_out`): `P = U_V P_V U_Vᵀ + (I − U_VU_Vᵀ)` with `P_V (U_VᵀM_outU_V) P_V = U_VᵀM_inU_V`. This is the
/// equilibrium of the rotations acting on V; directions outside V carry no noise (dead) or one-sided noise
/// (no finite equilibrium), and are left unchanged. A trace `≤ zero` counts as no noise.
pub fn balancing_matrix(m_in: &Mat<f64>, m_out: &Mat<f64>, zero: f64) -> Result<Balancing> {
    let d = m_in.nrows();
    let (_, s) = sym_eigen(&(m_in + m_out))?;
    let smax = s.iter().cloned().fold(0.0, f64::max);
    if smax <= zero.max(0.0) {
        return Ok(Balancing { p: Some(Mat::identity(d, d)), status: Status::Dead, rank: 0 });
    }
    let cut = RANK_RTOL * smax;
    let (ni, no) = (eigen_basis(m_in, cut, true)?, eigen_basis(m_out, cut, true)?);
    let dead = eigen_basis(&(m_in + m_out), cut, true)?.ncols();
    // V^⊥ = N_in + N_out = range(N_inN_inᵀ + N_outN_outᵀ).
    let proj = &ni * ni.transpose() + &no * no.transpose();
    let uv = eigen_basis(&proj, 0.5, true)?;
    let r = uv.ncols();
    let status = if d - r > dead { Status::NoEquilibrium } else { Status::Ok };
    if r == 0 {
        return Ok(Balancing { p: None, status, rank: 0 });
    }
    let a = uv.transpose() * m_in * &uv;
    let b = uv.transpose() * m_out * &uv;
    let (ub, sb) = sym_eigen(&b)?;
    let b_half = sym_fn(&ub, &sb, |x| x.max(0.0).sqrt());
    let b_ihalf = sym_fn(&ub, &sb, |x| 1.0 / x.sqrt());
    let c = &b_half * &a * &b_half;
    let (uc, sc) = sym_eigen(&c)?;
    let c_half = sym_fn(&uc, &sc, |x| x.max(0.0).sqrt());
    let pv = &b_ihalf * &c_half * &b_ihalf;
    let mut p = &uv * &pv * uv.transpose();
    let pr = &uv * uv.transpose();
    for i in 0..d {
        for j in 0..d {
            p[(i, j)] += if i == j { 1.0 } else { 0.0 } - pr[(i, j)];
        }
    }
    let p = Mat::from_fn(d, d, |i, j| 0.5 * (p[(i, j)] + p[(j, i)]));
    Ok(Balancing { p: Some(p), status, rank: r })
}

/// Orthonormal basis of the two-sided subspace `V = range(M_in) ∩ range(M_out)` (see [`balancing_matrix`]).
pub fn two_sided_basis(m_in: &Mat<f64>, m_out: &Mat<f64>) -> Mat<f64> {
    let d = m_in.nrows();
    let smax = sym_eigen(&(m_in + m_out)).map(|(_, s)| s.iter().cloned().fold(0.0, f64::max)).unwrap_or(0.0);
    let cut = RANK_RTOL * smax;
    let basis = |m: &Mat<f64>| eigen_basis(m, cut, true).unwrap_or_else(|_| Mat::zeros(d, 0));
    let (ni, no) = (basis(m_in), basis(m_out));
    let proj = &ni * ni.transpose() + &no * no.transpose();
    eigen_basis(&proj, 0.5, true).unwrap_or_else(|_| Mat::zeros(d, 0))
}

/// `(Q, Q⁻¹) = (P^{1/2}, P^{−1/2})`.
pub fn sqrt_pair(p: &Mat<f64>) -> Result<(Mat<f64>, Mat<f64>)> {
    let (u, s) = sym_eigen(p)?;
    if s.iter().any(|&v| v <= 0.0 || !v.is_finite()) {
        return Err(Error::Numerical {
            what: "P^{1/2}",
            reason: format!("P is not positive definite (eigenvalues {s:?})"),
        });
    }
    Ok((sym_fn(&u, &s, f64::sqrt), sym_fn(&u, &s, |x| 1.0 / x.sqrt())))
}

/// λ* along one direction B: root of `G(λ) = Tr[B e^{−2λB} M_in] − Tr[B e^{2λB} M_out]`, i.e. the spectral
/// form with terms `(s_k, (UᵀM_inU)_kk)` and `(−s_k, (UᵀM_outU)_kk)` for `B = U diag(s) Uᵀ`.
pub fn direction_equilibrium(b: &Mat<f64>, m_in: &Mat<f64>, m_out: &Mat<f64>, zero: f64) -> Equilibrium {
    let Ok((u, s)) = sym_eigen(b) else { return Equilibrium::Dead };
    let wi = u.transpose() * m_in * &u;
    let wo = u.transpose() * m_out * &u;
    let mut terms = Vec::with_capacity(2 * s.len());
    for k in 0..s.len() {
        terms.push((s[k], wi[(k, k)].max(0.0)));
        terms.push((-s[k], wo[(k, k)].max(0.0)));
    }
    spectral_lambda(&terms, zero)
}

/// The Frobenius norm.
pub fn frob(m: &Mat<f64>) -> f64 {
    let mut s = 0.0;
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            s += m[(i, j)] * m[(i, j)];
        }
    }
    s.sqrt()
}

/// The relative residual of one pair: `‖M_in − M_out‖_F / ‖M_in + M_out‖_F` on the two-sided subspace.
pub fn pair_residual(mi: &Mat<f64>, mo: &Mat<f64>, zero: f64) -> f64 {
    let Ok(bal) = balancing_matrix(mi, mo, zero) else { return f64::INFINITY };
    if bal.rank == 0 {
        return 0.0;
    }
    let (mi, mo) = if bal.rank < mi.nrows() {
        let uv = two_sided_basis(mi, mo);
        (uv.transpose() * mi * &uv, uv.transpose() * mo * &uv)
    } else {
        (mi.clone(), mo.clone())
    };
    let s = frob(&(&mi + &mo));
    if s > zero {
        frob(&(&mi - &mo)) / s
    } else {
        0.0
    }
}

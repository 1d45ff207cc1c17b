//! Claims as limits η → 0: fit the order at which a finite-step deviation shrinks and extrapolate the measurement
//! to η → 0 (docs/finite_step.md).
//!
//! - [`power_fit`]: least squares of `log|dev| = log c + p·log x` over points `(x, dev)`, with the standard error
//!   of the order p (weighted by per-point standard errors when given, else from the residuals).
//! - [`extrapolate`]: least squares of `y = y₀ + c·x^p` at a fixed order p — Richardson extrapolation with more than
//!   two points — with the standard error of y₀.
//! - [`limit`]: both against a [`LimitSpec`], giving a typed [`Limit`] and its two report rows ([`Limit::checks`]):
//!   (a) the fitted order against the expected one, (b) the extrapolated value against the continuous prediction.
//!
//! - [`batch_ratio`]: a sweep point's value as the ratio of two stationary time averages, with its standard
//!   error by batch means.
//!
//! `x` is the step size (η, or η/S); any positive control parameter works (fig6 uses E z²).

use crate::error::{Error, Result};
use crate::report::document::{Outcome, Rule};
use crate::report::{Check, Plot, Series, Style};

/// Least-squares fit `log|dev| = log c + p·log x`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerFit {
    /// The order p.
    pub order: f64,
    /// Standard error of p (NaN with two points and no per-point errors).
    pub order_se: f64,
    /// log c.
    pub log_c: f64,
}

impl PowerFit {
    /// `c·x^p`, the fitted deviation at x.
    pub fn at(&self, x: f64) -> f64 {
        (self.log_c + self.order * x.ln()).exp()
    }
}

/// `y₀` of `y = y₀ + c·x^p` and its standard error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Extrapolation {
    /// The fixed order p.
    pub order: f64,
    /// y at x → 0.
    pub limit: f64,
    /// Standard error of `limit` (NaN with two points and no per-point errors).
    pub limit_se: f64,
    /// The coefficient c.
    pub slope: f64,
}

/// Weighted straight-line least squares `v = a + b·u` (weights w ≥ 0). Returns (a, b, se_a, se_b): with
/// `known_errors` the weights are 1/σ² and the standard errors come from them; otherwise from the residuals
/// (n − 2 degrees of freedom; NaN for two points).
fn line_fit(u: &[f64], v: &[f64], w: &[f64], known_errors: bool) -> (f64, f64, f64, f64) {
    let sw: f64 = w.iter().sum();
    let mu = u.iter().zip(w).map(|(a, w)| w * a).sum::<f64>() / sw;
    let mv = v.iter().zip(w).map(|(a, w)| w * a).sum::<f64>() / sw;
    let suu: f64 = u.iter().zip(w).map(|(a, w)| w * (a - mu).powi(2)).sum();
    let suv: f64 = u.iter().zip(v).zip(w).map(|((a, b), w)| w * (a - mu) * (b - mv)).sum();
    let b = suv / suu;
    let a = mv - b * mu;
    let scale = if known_errors {
        1.0
    } else {
        let n = u.len() as f64;
        let sse: f64 = u.iter().zip(v).zip(w).map(|((x, y), w)| w * (y - a - b * x).powi(2)).sum();
        if n > 2.0 {
            sse / (n - 2.0)
        } else {
            f64::NAN
        }
    };
    let se_b = (scale / suu).sqrt();
    let se_a = (scale * (1.0 / sw + mu * mu / suu)).sqrt();
    (a, b, se_a, se_b)
}

fn validate(what: &str, x: &[f64], y: &[f64], se: Option<&[f64]>) -> Result<()> {
    if x.len() != y.len() || se.is_some_and(|s| s.len() != x.len()) {
        return Err(Error::Config(format!("{what}: {} step sizes, {} values", x.len(), y.len())));
    }
    if x.len() < 2 {
        return Err(Error::Config(format!("{what}: needs at least 2 step sizes, got {}", x.len())));
    }
    if x.iter().any(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(Error::Config(format!("{what}: step sizes must be finite and > 0, got {x:?}")));
    }
    if y.iter().any(|v| !v.is_finite()) {
        return Err(Error::Config(format!("{what}: values must be finite, got {y:?}")));
    }
    let (lo, hi) = x.iter().fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(*v), b.max(*v)));
    if hi <= lo {
        return Err(Error::Config(format!("{what}: the step sizes must not all be equal ({lo})")));
    }
    Ok(())
}

/// Fits `|dev| = c·x^p` by least squares in log–log coordinates. With per-point standard errors `se` of dev, each
/// point weighs `(dev/se)²` (the variance of log|dev| is (se/dev)²) and p's error follows from them.
/// A zero deviation is an error (its logarithm is undefined).
pub fn power_fit(x: &[f64], dev: &[f64], se: Option<&[f64]>) -> Result<PowerFit> {
    validate("power_fit", x, dev, se)?;
    if dev.contains(&0.0) {
        return Err(Error::Config(format!("power_fit: a deviation is exactly 0 ({dev:?})")));
    }
    let u: Vec<f64> = x.iter().map(|v| v.ln()).collect();
    let v: Vec<f64> = dev.iter().map(|d| d.abs().ln()).collect();
    let w: Vec<f64> = match se {
        Some(s) => dev.iter().zip(s).map(|(d, s)| (d / s).powi(2)).collect(),
        None => vec![1.0; x.len()],
    };
    let (a, b, _, se_b) = line_fit(&u, &v, &w, se.is_some());
    Ok(PowerFit { order: b, order_se: se_b, log_c: a })
}

/// Extrapolates `y = y₀ + c·x^p` (p fixed) to x → 0 by least squares; with per-point standard errors `se` the fit
/// is weighted by 1/se² and y₀'s error follows from them, else from the residuals.
pub fn extrapolate(x: &[f64], y: &[f64], order: f64, se: Option<&[f64]>) -> Result<Extrapolation> {
    let (coef, cov) = series_fit(x, y, &[order], se)?;
    Ok(Extrapolation { order, limit: coef[0], limit_se: cov[0].sqrt(), slope: coef[1] })
}

/// Least squares of `y = y₀ + Σ_k c_k·x^{p_k}` (orders `p_k` fixed, > 0, distinct): the extrapolation when the
/// deviation is a series, e.g. `a√η + bη`. Returns the coefficients `[y₀, c_1, …]` and the variance of each
/// (from `se` when given, else from the residuals; NaN without spare degrees of freedom).
pub fn series_fit(x: &[f64], y: &[f64], orders: &[f64], se: Option<&[f64]>) -> Result<(Vec<f64>, Vec<f64>)> {
    validate("extrapolate", x, y, se)?;
    if orders.is_empty() || orders.iter().any(|p| !(p.is_finite() && *p > 0.0)) {
        return Err(Error::Config(format!("extrapolate: orders must be finite and > 0, got {orders:?}")));
    }
    let k = orders.len() + 1;
    if x.len() < k {
        return Err(Error::Config(format!(
            "extrapolate: {k} coefficients need ≥ {k} points, got {}",
            x.len()
        )));
    }
    let basis =
        |v: f64| -> Vec<f64> { std::iter::once(1.0).chain(orders.iter().map(|p| v.powf(*p))).collect() };
    let w: Vec<f64> = match se {
        Some(s) => s.iter().map(|s| 1.0 / (s * s)).collect(),
        None => vec![1.0; x.len()],
    };
    // Normal equations N c = r, N = Σ w φφᵀ (k ≤ a few: Gauss–Jordan with partial pivoting).
    let mut n = vec![vec![0.0; k]; k];
    let mut r = vec![0.0; k];
    for ((xi, yi), wi) in x.iter().zip(y).zip(&w) {
        let phi = basis(*xi);
        for a in 0..k {
            r[a] += wi * phi[a] * yi;
            for b in 0..k {
                n[a][b] += wi * phi[a] * phi[b];
            }
        }
    }
    let inv = invert(n).ok_or_else(|| {
        Error::Config(format!("extrapolate: the step sizes {x:?} cannot separate the orders {orders:?}"))
    })?;
    let coef: Vec<f64> = (0..k).map(|a| (0..k).map(|b| inv[a][b] * r[b]).sum()).collect();
    let scale = if se.is_some() {
        1.0
    } else if x.len() > k {
        let sse: f64 = x
            .iter()
            .zip(y)
            .map(|(xi, yi)| (yi - basis(*xi).iter().zip(&coef).map(|(f, c)| f * c).sum::<f64>()).powi(2))
            .sum();
        sse / (x.len() - k) as f64
    } else {
        f64::NAN
    };
    Ok((coef, (0..k).map(|a| scale * inv[a][a]).collect()))
}

/// Inverse of a small symmetric positive-definite matrix by Gauss–Jordan elimination; None if singular.
fn invert(mut a: Vec<Vec<f64>>) -> Option<Vec<Vec<f64>>> {
    let k = a.len();
    let mut inv: Vec<Vec<f64>> =
        (0..k).map(|i| (0..k).map(|j| f64::from(u8::from(i == j))).collect()).collect();
    let norm = a.iter().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
    for c in 0..k {
        let p = (c..k).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() <= 1e-13 * norm {
            return None;
        }
        a.swap(c, p);
        inv.swap(c, p);
        let d = a[c][c];
        for j in 0..k {
            a[c][j] /= d;
            inv[c][j] /= d;
        }
        for i in (0..k).filter(|&i| i != c) {
            let f = a[i][c];
            for j in 0..k {
                a[i][j] -= f * a[c][j];
                inv[i][j] -= f * inv[c][j];
            }
        }
    }
    Some(inv)
}

/// `mean(num)/mean(den)` of two stationary series and its standard error by batch means: each series is cut into
/// `blocks` contiguous blocks of equal share of its length (the two may be sampled at different rates over the
/// same time span), the ratio is formed block by block, and its standard error is the standard deviation of the
/// block ratios over √blocks. Valid when a block is much longer than the series' correlation time.
pub fn batch_ratio(num: &[f64], den: &[f64], blocks: usize) -> Result<(f64, f64)> {
    if blocks < 2 || num.len() < blocks || den.len() < blocks {
        return Err(Error::Config(format!(
            "batch_ratio: {blocks} blocks need ≥ 2 blocks and ≥ 1 value per block, got {} and {} values",
            num.len(),
            den.len()
        )));
    }
    if num.iter().chain(den).any(|v| !v.is_finite()) {
        return Err(Error::Config("batch_ratio: values must be finite".into()));
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let block =
        |v: &'_ [f64], b: usize| -> f64 { mean(&v[b * v.len() / blocks..(b + 1) * v.len() / blocks]) };
    let ratios: Vec<f64> = (0..blocks).map(|b| block(num, b) / block(den, b)).collect();
    let m = mean(&ratios);
    let var = ratios.iter().map(|r| (r - m).powi(2)).sum::<f64>() / (blocks - 1) as f64;
    Ok((mean(num) / mean(den), (var / blocks as f64).sqrt()))
}

/// What a claim predicts in the limit, fixed before measuring.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSpec {
    /// The quantity, e.g. `κ_meas/κ_pred`.
    pub quantity: String,
    /// The step-size variable, e.g. `η/S`.
    pub variable: String,
    /// Expected order of the deviation (½ for √η, 1 for η).
    pub order: f64,
    /// Why (one clause, shown in the report).
    pub reason: String,
    /// Allowed |fitted − expected order|.
    pub order_tol: f64,
    /// The continuous-time prediction of the quantity (the limit).
    pub predicted: f64,
    /// Allowed |extrapolated − predicted| (absolute).
    pub limit_tol: f64,
    /// The claim of the paper (or of noether's extension) that the limit tests.
    pub tests: String,
}

/// Whether a limit holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The deviation shrinks at the expected order and the extrapolation matches the prediction.
    Converges,
    /// The deviation does not shrink at the expected order (or not at all).
    WrongOrder,
    /// The order is right but the extrapolated value misses the prediction.
    WrongLimit,
    /// The statistical uncertainty exceeds a tolerance: the data cannot decide.
    Undecided,
}

/// The outcome of [`limit`].
#[derive(Debug, Clone, PartialEq)]
pub struct Limit {
    /// The specification it was measured against.
    pub spec: LimitSpec,
    /// The points `(x, y, se of y)` (se NaN when unknown).
    pub points: Vec<(f64, f64, f64)>,
    /// Fit of |y − predicted| against x.
    pub fit: PowerFit,
    /// y extrapolated to x → 0 at the expected order.
    pub extrapolation: Extrapolation,
    /// Whether the order is within its tolerance and positive.
    pub order_ok: bool,
    /// Whether the extrapolated value is within its tolerance.
    pub limit_ok: bool,
    /// Whether the uncertainties are small enough to decide (order_se ≤ order_tol, limit_se ≤ limit_tol).
    pub decided: bool,
    /// The verdict.
    pub verdict: Verdict,
}

/// Measures a claim's limit: the order of `|y − spec.predicted|` against x and the extrapolation of y to x → 0 at
/// the expected order (`se`: optional standard errors of y). Needs ≥ 3 points spanning a factor ≥ 4 in x to decide
/// (fewer or narrower: [`Verdict::Undecided`]).
pub fn limit(spec: LimitSpec, x: &[f64], y: &[f64], se: Option<&[f64]>) -> Result<Limit> {
    let dev: Vec<f64> = y.iter().map(|v| v - spec.predicted).collect();
    let fit = power_fit(x, &dev, se)?;
    let extrapolation = extrapolate(x, y, spec.order, se)?;
    let order_ok = fit.order > 0.0 && (fit.order - spec.order).abs() <= spec.order_tol;
    let limit_ok = (extrapolation.limit - spec.predicted).abs() <= spec.limit_tol;
    let (lo, hi) = x.iter().fold((f64::INFINITY, 0.0f64), |(a, b), v| (a.min(*v), b.max(*v)));
    let decided = x.len() >= 3
        && hi / lo >= 4.0
        && fit.order_se.is_finite()
        && fit.order_se <= spec.order_tol
        && extrapolation.limit_se.is_finite()
        && extrapolation.limit_se <= spec.limit_tol;
    let verdict = if !decided {
        Verdict::Undecided
    } else if !order_ok {
        Verdict::WrongOrder
    } else if !limit_ok {
        Verdict::WrongLimit
    } else {
        Verdict::Converges
    };
    let points =
        (0..x.len()).map(|i| (x[i], y[i], se.map_or(f64::NAN, |s| s[i]))).collect::<Vec<(f64, f64, f64)>>();
    Ok(Limit { spec, points, fit, extrapolation, order_ok, limit_ok, decided, verdict })
}

impl Limit {
    /// The two report rows: the order, then the limit. Undecided rows are "not decided at this size" when
    /// `quick` (the quick mode cannot afford the statistics), failures otherwise.
    pub fn checks(&self, experiment: &str, quick: bool) -> [Check; 2] {
        let s = &self.spec;
        let span = {
            let (lo, hi) =
                self.points.iter().fold((f64::INFINITY, 0.0f64), |(a, b), p| (a.min(p.0), b.max(p.0)));
            format!("{} ∈ [{lo}, {hi}], {} points", s.variable, self.points.len())
        };
        let mut order = Check::new(
            experiment,
            format!(
                "{q} → {p} as {v} → 0: order of |{q} − {p}| in {v} ({span}; fitted ± {se:.2} s.e.; expected because {r})",
                q = s.quantity,
                p = crate::report::fmt_num(s.predicted),
                v = s.variable,
                se = self.fit.order_se,
                r = s.reason,
            ),
            s.order,
            self.fit.order,
            s.order_tol,
            Rule::Absolute,
        );
        order.pass &= self.fit.order > 0.0;
        let mut lim = Check::new(
            experiment,
            format!(
                "{q} extrapolated to {v} → 0 at order {o} ({span}; ± {se:.3} s.e.)",
                q = s.quantity,
                v = s.variable,
                o = s.order,
                se = self.extrapolation.limit_se,
            ),
            s.predicted,
            self.extrapolation.limit,
            s.limit_tol,
            Rule::Absolute,
        );
        for c in [&mut order, &mut lim] {
            c.tests = s.tests.clone();
            c.outcome = if quick && !self.decided {
                Outcome::Undecided
            } else if c.pass && self.decided {
                Outcome::Pass
            } else {
                Outcome::Fail
            };
        }
        [order, lim]
    }

    /// [`Limit::checks`] with pre-registered rows whose prediction the data refute flagged by `why` (order row,
    /// limit row; `None`: not flagged), see [`Check::refuted_if_failing`]. The flag applies only when the data
    /// decide: a flagged row that passes stays a pass, and one the statistics cannot decide stays undecided
    /// (quick mode) or a failure (full mode).
    pub fn checks_refuted(&self, experiment: &str, quick: bool, why: [Option<&str>; 2]) -> [Check; 2] {
        let [order, lim] = self.checks(experiment, quick);
        let flag = |c: Check, w: Option<&str>| match w {
            Some(w) if self.decided => c.refuted_if_failing(w),
            _ => c,
        };
        [flag(order, why[0]), flag(lim, why[1])]
    }

    /// The log–log plot of |y − predicted| against x with the fitted line `c·x^p` and the expected slope through
    /// the geometric centre of the points (dashed).
    pub fn plot(&self, title: impl Into<String>) -> Plot {
        let s = &self.spec;
        let pts: Vec<(f64, f64)> =
            self.points.iter().map(|p| (p.0, (p.1 - s.predicted).abs())).filter(|p| p.1 > 0.0).collect();
        let (lo, hi) = pts.iter().fold((f64::INFINITY, 0.0f64), |(a, b), p| (a.min(p.0), b.max(p.0)));
        let line = |f: &dyn Fn(f64) -> f64| -> Vec<(f64, f64)> {
            (0..=20).map(|i| lo * (hi / lo).powf(i as f64 / 20.0)).map(|x| (x, f(x))).collect()
        };
        let n = pts.len().max(1) as f64;
        let (gx, gy) =
            (pts.iter().map(|p| p.0.ln()).sum::<f64>() / n, pts.iter().map(|p| p.1.ln()).sum::<f64>() / n);
        let expected = |x: f64| (gy + s.order * (x.ln() - gx)).exp();
        Plot::new(
            title,
            s.variable.clone(),
            format!("|{} − {}|", s.quantity, crate::report::fmt_num(s.predicted)),
        )
        .log(true, true)
        .series(Series::new("measured", pts, Style::Markers))
        .series(Series::line(format!("fit: order {:.2}", self.fit.order), line(&|x| self.fit.at(x))))
        .series(Series::dashed(format!("expected order {}", s.order), line(&expected)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn spec(order: f64, predicted: f64) -> LimitSpec {
        LimitSpec {
            quantity: "y".into(),
            variable: "η".into(),
            order,
            reason: "synthetic".into(),
            order_tol: 0.2,
            predicted,
            limit_tol: 0.02,
            tests: "synthetic claim".into(),
        }
    }

    #[test]
    fn exact_power_law_recovers_order_and_limit() {
        let x = [0.0025, 0.005, 0.01, 0.02];
        for (p, c, y0) in [(1.0, 0.7, 2.0), (0.5, -1.3, 0.0), (2.0, 40.0, -3.0)] {
            let y: Vec<f64> = x.iter().map(|x: &f64| y0 + c * x.powf(p)).collect();
            let dev: Vec<f64> = y.iter().map(|v| v - y0).collect();
            let f = power_fit(&x, &dev, None).unwrap();
            assert!((f.order - p).abs() < 1e-12 && (f.log_c - c.abs().ln()).abs() < 1e-10, "{f:?}");
            assert!(f.order_se < 1e-12, "{f:?}");
            let e = extrapolate(&x, &y, p, None).unwrap();
            assert!((e.limit - y0).abs() < 1e-12 && (e.slope - c).abs() < 1e-9 * c.abs(), "{e:?}");
            let l = limit(spec(p, y0), &x, &y, None).unwrap();
            assert_eq!(l.verdict, Verdict::Converges);
        }
    }

    #[test]
    fn noisy_power_law_passes_with_its_uncertainty() {
        // y = 1 + 3η + noise of standard error 1% of the deviation: the order and limit are found within a few
        // standard errors, and those errors are the ones the per-point errors imply.
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let x = [0.00125, 0.0025, 0.005, 0.01, 0.02];
        let se: Vec<f64> = x.iter().map(|x| 0.01 * 3.0 * x).collect();
        let y: Vec<f64> = x
            .iter()
            .zip(&se)
            .map(|(x, s)| 1.0 + 3.0 * x + s * (rng.random_range(-1.0..1.0)) * 3f64.sqrt())
            .collect();
        let l = limit(spec(1.0, 1.0), &x, &y, Some(&se)).unwrap();
        assert_eq!(l.verdict, Verdict::Converges, "{l:?}");
        assert!((l.fit.order - 1.0).abs() < 4.0 * l.fit.order_se, "{:?}", l.fit);
        assert!(
            (l.extrapolation.limit - 1.0).abs() < 4.0 * l.extrapolation.limit_se,
            "{:?}",
            l.extrapolation
        );
        // With per-point errors of 1% of the deviation, log|dev| has s.e. 0.01: the order's s.e. is of that size.
        assert!(l.fit.order_se > 1e-3 && l.fit.order_se < 0.05, "{:?}", l.fit);
        let rows = l.checks("e", false);
        assert!(rows.iter().all(|c| c.outcome == Outcome::Pass), "{rows:?}");
    }

    #[test]
    fn deviation_that_does_not_shrink_fails() {
        // y = 2.3 + tiny wiggle for every η: the deviation from the prediction 2 stays 0.3.
        let x = [0.0025, 0.005, 0.01, 0.02];
        let y: Vec<f64> = x.iter().enumerate().map(|(i, _)| 2.3 + 1e-3 * (i as f64 - 1.5)).collect();
        let l = limit(spec(1.0, 2.0), &x, &y, None).unwrap();
        assert!(l.fit.order.abs() < 0.01, "{:?}", l.fit);
        assert!(!l.order_ok && !l.limit_ok && l.decided);
        assert_eq!(l.verdict, Verdict::WrongOrder);
        let rows = l.checks("e", true);
        assert!(rows.iter().all(|c| c.outcome == Outcome::Fail), "{rows:?}");
    }

    #[test]
    fn a_missed_limit_fails_the_limit_row() {
        // y = 1.03 + 20η against the prediction 1: |y − 1| = 0.03 + 20η still looks like order ≈ 0.8 over this
        // range (order row within its 0.2), but the extrapolation lands on 1.03 (limit row fails).
        let x = [0.0025, 0.005, 0.01, 0.02];
        let y: Vec<f64> = x.iter().map(|x| 1.03 + 20.0 * x).collect();
        let l = limit(spec(1.0, 1.0), &x, &y, None).unwrap();
        assert!(l.order_ok && !l.limit_ok, "{l:?}");
        assert!((l.extrapolation.limit - 1.03).abs() < 1e-12);
        assert_eq!(l.verdict, Verdict::WrongLimit);
        let rows = l.checks("e", false);
        assert_eq!(rows.iter().map(|c| c.outcome).collect::<Vec<_>>(), [Outcome::Pass, Outcome::Fail]);
        // A larger offset also breaks the power law: the order row fails too.
        let y: Vec<f64> = x.iter().map(|x| 1.1 + 5.0 * x).collect();
        assert_eq!(limit(spec(1.0, 1.0), &x, &y, None).unwrap().verdict, Verdict::WrongOrder);
    }

    #[test]
    fn too_few_or_too_close_points_are_undecided_not_passed() {
        let x = [0.01, 0.02];
        let y: Vec<f64> = x.iter().map(|x| 1.0 + x).collect();
        let l = limit(spec(1.0, 1.0), &x, &y, None).unwrap();
        assert_eq!(l.verdict, Verdict::Undecided);
        assert!(l.checks("e", true).iter().all(|c| c.outcome == Outcome::Undecided));
        assert!(l.checks("e", false).iter().all(|c| c.outcome == Outcome::Fail), "full mode must decide");
        let x = [0.01, 0.012, 0.015];
        let y: Vec<f64> = x.iter().map(|x| 1.0 + x).collect();
        assert_eq!(limit(spec(1.0, 1.0), &x, &y, None).unwrap().verdict, Verdict::Undecided);
    }

    #[test]
    fn two_term_series_is_extrapolated_exactly_and_agrees_with_the_one_term_fit() {
        let x = [0.0025, 0.005, 0.01, 0.02];
        let y: Vec<f64> = x.iter().map(|x: &f64| 2.3 + 10.0 * x.sqrt() + 28.0 * x).collect();
        let (c, var) = series_fit(&x, &y, &[0.5, 1.0], None).unwrap();
        for (got, want) in c.iter().zip([2.3, 10.0, 28.0]) {
            assert!((got - want).abs() < 1e-9 * want, "{c:?}");
        }
        assert!(var.iter().all(|v| *v < 1e-18), "{var:?}");
        // The one-term fit at order ½ is biased by the ignored η term: it overshoots below the true limit.
        let one = extrapolate(&x, &y, 0.5, None).unwrap();
        assert!(one.limit < 2.3 - 0.2, "{one:?}");
        // One coefficient per point leaves no residual: the variance is unknown, not zero.
        let (_, var) = series_fit(&x[..3], &y[..3], &[0.5, 1.0], None).unwrap();
        assert!(var.iter().all(|v| v.is_nan()), "{var:?}");
        assert!(series_fit(&x[..2], &y[..2], &[0.5, 1.0], None).is_err());
        assert!(series_fit(&x, &y, &[1.0, 1.0], None).is_err(), "repeated orders cannot be separated");
    }

    #[test]
    fn batch_ratio_recovers_the_ratio_and_the_correlated_standard_error() {
        // num: AR(1) with mean 2, ρ = 0.9 and unit innovations (stationary variance 1/(1 − ρ²)); den: 1 + small
        // white noise. The standard error of the mean of an AR(1) series of n values is
        // √(var/n·(1 + ρ)/(1 − ρ)), 4.36 times the naive i.i.d. one: batch means must find it.
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (n, rho) = (100_000, 0.9f64);
        let gauss = |rng: &mut ChaCha8Rng| -> f64 {
            let (u, v): (f64, f64) = (rng.random_range(1e-12..1.0), rng.random_range(0.0..1.0));
            (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        };
        let mut x = 0.0;
        let num: Vec<f64> = (0..n)
            .map(|_| {
                x = rho * x + gauss(&mut rng);
                2.0 + x
            })
            .collect();
        let den: Vec<f64> = (0..n / 10).map(|_| 1.0 + 1e-3 * gauss(&mut rng)).collect();
        let (r, se) = batch_ratio(&num, &den, 20).unwrap();
        let want = (1.0 / (1.0 - rho * rho) / n as f64 * (1.0 + rho) / (1.0 - rho)).sqrt();
        assert!((se / want - 1.0).abs() < 0.4, "se {se} against {want}");
        assert!((r - 2.0).abs() < 4.0 * want, "ratio {r}");
        // The naive i.i.d. error would be 4.36 times smaller: batch means is not fooled by the correlation.
        assert!(se > 2.5 * (1.0 / (1.0 - rho * rho) / n as f64).sqrt());
        assert!(batch_ratio(&num, &den, 1).is_err());
        assert!(batch_ratio(&num[..5], &den, 20).is_err());
        assert!(batch_ratio(&[1.0, f64::NAN], &[1.0, 1.0], 2).is_err());
    }

    #[test]
    fn refuted_flag_is_decided_by_the_measurement() {
        let x = [0.0025, 0.005, 0.01, 0.02];
        let why = [Some("the derived row carries the claim"), Some("the derived row carries the claim")];
        // A flagged limit that holds stays a pass.
        let y: Vec<f64> = x.iter().map(|x| 1.0 + 3.0 * x).collect();
        let l = limit(spec(1.0, 1.0), &x, &y, None).unwrap();
        for quick in [true, false] {
            let rows = l.checks_refuted("e", quick, why);
            assert!(
                rows.iter().all(|c| c.outcome == Outcome::Pass && !c.claim.contains("REFUTED")),
                "{rows:?}"
            );
        }
        // A flagged limit that fails (a deviation that does not shrink) is refuted, in both modes; unflagged,
        // the same rows fail.
        let y: Vec<f64> = x.iter().enumerate().map(|(i, _)| 2.3 + 1e-3 * (i as f64 - 1.5)).collect();
        let l = limit(spec(1.0, 2.0), &x, &y, None).unwrap();
        let rows = l.checks_refuted("e", false, why);
        assert!(
            rows.iter().all(|c| c.outcome == Outcome::Refuted && c.claim.contains("REFUTED")),
            "{rows:?}"
        );
        let rows = l.checks_refuted("e", false, [Some("flagged"), None]);
        assert_eq!(rows.iter().map(|c| c.outcome).collect::<Vec<_>>(), [Outcome::Refuted, Outcome::Fail]);
        // Only the failing row of a flagged pair is refuted: the passing one stays a pass.
        let y: Vec<f64> = x.iter().map(|x| 1.03 + 20.0 * x).collect();
        let rows = limit(spec(1.0, 1.0), &x, &y, None).unwrap().checks_refuted("e", false, why);
        assert_eq!(rows.iter().map(|c| c.outcome).collect::<Vec<_>>(), [Outcome::Pass, Outcome::Refuted]);
        // Too few points to decide: undecided in quick mode, a failure (not a refutation) in full mode.
        let y = [3.0, 3.0];
        let l = limit(spec(1.0, 1.0), &x[..2], &y, None).unwrap();
        assert!(l.checks_refuted("e", true, why).iter().all(|c| c.outcome == Outcome::Undecided));
        assert!(l.checks_refuted("e", false, why).iter().all(|c| c.outcome == Outcome::Fail));
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(power_fit(&[0.01], &[1.0], None).is_err());
        assert!(power_fit(&[0.01, -0.02], &[1.0, 2.0], None).is_err());
        assert!(power_fit(&[0.01, 0.02], &[0.0, 2.0], None).is_err());
        assert!(power_fit(&[0.01, 0.01], &[1.0, 2.0], None).is_err());
        assert!(extrapolate(&[0.01, 0.02], &[1.0, f64::NAN], 1.0, None).is_err());
        assert!(extrapolate(&[0.01, 0.02], &[1.0, 2.0], 0.0, None).is_err());
        assert!(extrapolate(&[0.01, 0.02, 0.04], &[1.0, 2.0], 1.0, None).is_err());
    }
}

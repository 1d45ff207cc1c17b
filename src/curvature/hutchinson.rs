//! Traces of a symmetric operator: exact (P products with unit vectors), Hutchinson and Hutch++.
//!
//! - Hutchinson: `tr A ≈ (1/m) Σ_i z_iᵀ A z_i`, z Rademacher (±1 entries), unbiased with variance
//!   `2(‖A‖_F² − Σ_i A_ii²)/m`. Stated interval: mean ± 1.96·stderr, stderr = sample standard deviation/√m
//!   (a normal-approximation 95% interval).
//! - Hutch++ (Meyer, Musco, Musco, Woodruff 2021) with m products: k = m/3 sketch columns S, Q = orth(AS),
//!   `tr A ≈ tr(QᵀAQ) + (1/k) Σ_i g_iᵀ(I − QQᵀ)A(I − QQᵀ)g_i`. The first term is exact given Q, so the stated
//!   95% interval is that of the Hutchinson part: ± 1.96·stderr of its k samples.

use super::LinearOperator;
use crate::error::{Error, Result};
use crate::linalg::dot;
use faer::Mat;
use rand::Rng;
use serde::Serialize;

/// How a trace was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TraceMethod {
    /// `Σ_i e_iᵀ A e_i` with P products.
    Exact,
    /// Hutchinson with Rademacher probes.
    Hutchinson,
    /// Hutch++ (low-rank deflation plus Hutchinson on the rest).
    HutchPlusPlus,
}

impl TraceMethod {
    /// Parses `exact`, `hutchinson` or `hutch++` (also `hutchpp`).
    pub fn parse(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "exact" => Ok(TraceMethod::Exact),
            "hutchinson" => Ok(TraceMethod::Hutchinson),
            "hutch++" | "hutchpp" | "hutch_plus_plus" => Ok(TraceMethod::HutchPlusPlus),
            _ => Err(Error::Unknown {
                kind: "trace method",
                name: s.into(),
                expected: "exact, hutchinson, hutch++".into(),
            }),
        }
    }
    /// The name accepted by [`TraceMethod::parse`].
    pub fn name(self) -> &'static str {
        match self {
            TraceMethod::Exact => "exact",
            TraceMethod::Hutchinson => "hutchinson",
            TraceMethod::HutchPlusPlus => "hutch++",
        }
    }
}

/// A trace with its uncertainty.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TraceEstimate {
    /// The estimate of `tr A`.
    pub trace: f64,
    /// Standard error of the stochastic part (0 for the exact trace).
    pub stderr: f64,
    /// 95% interval `trace ± 1.96·stderr` (normal approximation; a point for the exact trace).
    pub ci95: [f64; 2],
    /// Method used.
    pub method: TraceMethod,
    /// Operator products used.
    pub hvps: usize,
}

impl TraceEstimate {
    fn new(trace: f64, stderr: f64, method: TraceMethod, hvps: usize) -> Self {
        Self { trace, stderr, ci95: [trace - 1.96 * stderr, trace + 1.96 * stderr], method, hvps }
    }
}

fn rademacher<R: Rng>(z: &mut [f64], rng: &mut R) {
    z.iter_mut().for_each(|x| *x = if rng.random::<bool>() { 1.0 } else { -1.0 });
}

/// Sample mean and standard error `sd/√m` (sd with 1/(m−1)); stderr is infinite for a single sample.
fn mean_stderr(xs: &[f64]) -> (f64, f64) {
    let m = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / m;
    if xs.len() < 2 {
        return (mean, f64::INFINITY);
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (m - 1.0);
    (mean, (var / m).sqrt())
}

/// Exact trace `Σ_i e_iᵀ A e_i` (P products). For models small enough.
pub fn exact_trace(op: &mut impl LinearOperator) -> TraceEstimate {
    let p = op.dim();
    let start = op.products();
    let (mut e, mut col) = (vec![0.0; p], vec![0.0; p]);
    let mut tr = 0.0;
    for i in 0..p {
        e[i] = 1.0;
        op.apply_into(&e, &mut col);
        e[i] = 0.0;
        tr += col[i];
    }
    TraceEstimate::new(tr, 0.0, TraceMethod::Exact, op.products() - start)
}

/// Hutchinson's estimate with `samples` Rademacher probes (one product each) and its 95% interval (module doc).
/// Errors when `samples < 2` (no standard error).
pub fn hutchinson_trace<R: Rng>(
    op: &mut impl LinearOperator,
    samples: usize,
    rng: &mut R,
) -> Result<TraceEstimate> {
    if samples < 2 {
        return Err(Error::Config(format!(
            "Hutchinson needs at least 2 probes for an error bar, got {samples}"
        )));
    }
    let p = op.dim();
    let start = op.products();
    let (mut z, mut az) = (vec![0.0; p], vec![0.0; p]);
    let xs: Vec<f64> = (0..samples)
        .map(|_| {
            rademacher(&mut z, rng);
            op.apply_into(&z, &mut az);
            dot(&z, &az)
        })
        .collect();
    let (mean, se) = mean_stderr(&xs);
    Ok(TraceEstimate::new(mean, se, TraceMethod::Hutchinson, op.products() - start))
}

/// Hutch++ with about `products` operator products (k = ⌊products/3⌋ ≥ 2 each for sketch, deflation and
/// residual probes) and the 95% interval of its Hutchinson part (module doc). Errors when `products < 6`.
pub fn hutch_plus_plus_trace<R: Rng>(
    op: &mut impl LinearOperator,
    products: usize,
    rng: &mut R,
) -> Result<TraceEstimate> {
    let k = products / 3;
    if k < 2 {
        return Err(Error::Config(format!("Hutch++ needs at least 6 products, got {products}")));
    }
    let p = op.dim();
    let k = k.min(p);
    let start = op.products();
    let (mut z, mut az) = (vec![0.0; p], vec![0.0; p]);
    // Sketch Y = A S, then Q = orth(Y) by thin QR.
    let mut y = Mat::<f64>::zeros(p, k);
    for c in 0..k {
        rademacher(&mut z, rng);
        op.apply_into(&z, &mut az);
        for (i, &v) in az.iter().enumerate() {
            y[(i, c)] = v;
        }
    }
    let q = y.qr().compute_thin_Q();
    // tr(QᵀAQ).
    let mut tr_low = 0.0;
    for c in 0..k {
        for (i, zi) in z.iter_mut().enumerate() {
            *zi = q[(i, c)];
        }
        op.apply_into(&z, &mut az);
        tr_low += dot(&z, &az);
    }
    // Hutchinson on (I − QQᵀ)A(I − QQᵀ).
    let mut coef = vec![0.0; k];
    let xs: Vec<f64> = (0..k)
        .map(|_| {
            rademacher(&mut z, rng);
            for (c, cf) in coef.iter_mut().enumerate() {
                *cf = (0..p).map(|i| q[(i, c)] * z[i]).sum();
            }
            for (c, &cf) in coef.iter().enumerate() {
                for (i, zi) in z.iter_mut().enumerate() {
                    *zi -= cf * q[(i, c)];
                }
            }
            op.apply_into(&z, &mut az);
            dot(&z, &az)
        })
        .collect();
    let (mean, se) = mean_stderr(&xs);
    Ok(TraceEstimate::new(tr_low + mean, se, TraceMethod::HutchPlusPlus, op.products() - start))
}

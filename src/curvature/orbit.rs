//! Sharpness along a symmetry orbit: the top Hessian eigenvalue and trace at `θ_λ = e^{λA}θ` over a λ grid.
//!
//! The loss is the same all along the orbit, but the Hessian moves: `H(e^{λA}θ) = e^{−λA} H(θ) e^{−λA}` for a
//! symmetry A (differentiate `∇ℓ(e^{λA}θ) = e^{−λA}∇ℓ(θ)` once more), a congruence that keeps the inertia but
//! not the eigenvalues. SGD's noise drift moves λ towards the noise equilibrium, so this curve says whether the
//! drift sharpens or flattens the model.

use super::{sharpness, Sharpness, SharpnessOptions};
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::model::{Architecture, Model};
use crate::symmetry::Generator;
use serde::Serialize;

/// A one-parameter orbit `λ ↦ e^{λA}θ`.
#[derive(Clone, Debug, PartialEq)]
pub enum Orbit {
    /// One generator A.
    Generator(Generator),
    /// A joint direction `A = Σ_j c_j A_j` of commuting generators (e.g. the per-unit rescalings, with `c_j` the
    /// λ_j that take θ to the joint noise equilibrium, so that λ = 1 is θ*). Applied as `Π_j e^{λ c_j A_j}`,
    /// which equals `e^{λA}` when the generators commute (rescalings always do).
    Joint {
        /// The generators A_j.
        generators: Vec<Generator>,
        /// Their coefficients c_j.
        coefficients: Vec<f64>,
    },
}

impl Orbit {
    /// Checks that every generator is an exact symmetry of `arch` and the lengths match.
    pub fn check(&self, arch: &Architecture) -> Result<()> {
        match self {
            Orbit::Generator(g) => g.check(arch),
            Orbit::Joint { generators, coefficients } => {
                if generators.len() != coefficients.len() {
                    return Err(Error::shape(
                        "joint orbit coefficients",
                        &[generators.len()],
                        &[coefficients.len()],
                    ));
                }
                if generators.is_empty() {
                    return Err(Error::NoSymmetry("the joint orbit has no generators".into()));
                }
                generators.iter().try_for_each(|g| g.check(arch))
            }
        }
    }

    /// θ ← e^{λA}θ.
    pub fn act_in_place(&self, arch: &Architecture, theta: &mut [f64], lambda: f64) {
        match self {
            Orbit::Generator(g) => g.act_in_place(arch, theta, lambda),
            Orbit::Joint { generators, coefficients } => {
                for (g, &c) in generators.iter().zip(coefficients) {
                    g.act_in_place(arch, theta, lambda * c);
                }
            }
        }
    }

    /// A short name, e.g. `rescale(l=0, j=3)` or `joint(12 generators)`.
    pub fn label(&self) -> String {
        match self {
            Orbit::Generator(g) => g.label(),
            Orbit::Joint { generators, .. } => format!("joint({} generators)", generators.len()),
        }
    }
}

/// One point of an orbit curve.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OrbitPoint {
    /// The orbit coordinate λ.
    pub lambda: f64,
    /// Mean loss at `e^{λA}θ` (constant along the orbit up to round-off).
    pub loss: f64,
    /// Largest Hessian eigenvalue at `e^{λA}θ`.
    pub top_eigenvalue: f64,
    /// Hessian trace at `e^{λA}θ` (method as in the options).
    pub trace: Option<f64>,
    /// Everything else computed at that point.
    #[serde(skip)]
    pub sharpness: Sharpness,
}

/// `LO:HI:N` → N evenly spaced values from LO to HI inclusive (N ≥ 2 with LO ≠ HI, or one point `LO:LO:1`).
pub fn parse_grid(s: &str) -> Result<Vec<f64>> {
    let bad = |why: &str| Error::Config(format!("orbit range `{s}` {why}; expected LO:HI:N, e.g. -1:1:21"));
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 3 {
        return Err(bad("does not have three `:`-separated fields"));
    }
    let lo: f64 = parts[0].trim().parse().map_err(|_| bad("has a LO that is not a number"))?;
    let hi: f64 = parts[1].trim().parse().map_err(|_| bad("has a HI that is not a number"))?;
    let n: usize = parts[2].trim().parse().map_err(|_| bad("has an N that is not a positive integer"))?;
    if !lo.is_finite() || !hi.is_finite() {
        return Err(bad("has a non-finite end"));
    }
    if n == 0 {
        return Err(bad("has N = 0"));
    }
    if n == 1 && lo != hi {
        return Err(bad("asks for one point between two different ends; write LO:LO:1 for one λ, or N ≥ 2"));
    }
    if n == 1 {
        return Ok(vec![lo]);
    }
    if lo == hi {
        return Err(bad("has LO = HI with N ≥ 2 (the same point N times); write LO:LO:1 or widen the range"));
    }
    Ok((0..n).map(|i| lo + (hi - lo) * i as f64 / (n - 1) as f64).collect())
}

/// Sharpness at `e^{λA}θ` for every λ of `lambdas` (each point recomputed from scratch on the moved model, with
/// the same seed so that stochastic traces are comparable). Errors when the orbit is not a symmetry of the model.
pub fn orbit_sharpness(
    model: &Model<f64>,
    data: &Dataset<f64>,
    loss: Loss,
    orbit: &Orbit,
    lambdas: &[f64],
    opts: &SharpnessOptions,
) -> Result<Vec<OrbitPoint>> {
    orbit.check(&model.arch)?;
    let mut moved = model.clone();
    lambdas
        .iter()
        .map(|&lambda| {
            moved.params.copy_from_slice(&model.params);
            orbit.act_in_place(&model.arch, &mut moved.params, lambda);
            moved.check_finite()?;
            let s = sharpness(&moved, data, loss, opts)?;
            Ok(OrbitPoint {
                lambda,
                loss: s.loss,
                top_eigenvalue: s.top_eigenvalues[0],
                trace: s.trace,
                sharpness: s,
            })
        })
        .collect()
}

//! Observers of a module tree ([`Net`]): the charge of every graph symmetry (channel rescaling classes and
//! scale symmetries, [`crate::symmetry::channels`]; double rotations of linear pairs,
//! [`crate::symmetry::linear_pairs`]), their noise, and the sharpness by exact HVPs.

use super::observer::{upper_entries, Observer, Snapshot};
use crate::curvature::NetHessian;
use crate::curvature::{
    exact_trace, hutch_plus_plus_trace, hutchinson_trace, lanczos_eigenvalues, select_subset,
    SharpnessOptions, TraceMethod,
};
use crate::equilibrium::net::net_analysis;
use crate::equilibrium::Time;
use crate::error::Result;
use crate::net::Net;
use crate::real::Real;
use crate::stats::net::{net_moments, MomentPath};
use crate::symmetry::channels::{enumerate, DiagSymmetry, Family};
use crate::symmetry::linear_pairs::{pairs, LinearPair};
use rand::SeedableRng;

/// The column stem of a graph symmetry: `{module}_u{unit}` for a rescaling class, `scale_{module}` for a
/// scale symmetry (module: the state_dict prefix of its first writer).
fn stem(s: &DiagSymmetry) -> String {
    match (s.family, s.unit) {
        (Family::Rescale, Some(u)) => format!("{}_u{u}", s.module),
        _ => format!("scale_{}", s.module),
    }
}

/// The Noether charge `C = θᵀAθ` of every graph symmetry of the tree: `c_rescale_{module}_u{unit}` per channel
/// rescaling class (when `unit_charges`), `c_scale_{module}` per scale symmetry, and for every linear pair
/// (module: the state_dict prefix of its first linear) the Frobenius norm `c_pair_{module}_fro` of its matrix
/// charge `W₁W₁ᵀ + b₁b₁ᵀ − W₂ᵀW₂` and its first `pair_entries` upper-triangular entries `c_pair_{module}_{i}_{j}`
/// (row-major), as the dense chain's [`super::observer::Charges`] logs them.
pub struct NetCharges {
    symmetries: Vec<DiagSymmetry>,
    pairs: Vec<LinearPair>,
    pair_entries: usize,
}

impl NetCharges {
    /// Charges of every symmetry of `net` (rescaling classes only when `unit_charges`; `pair_entries` entries
    /// of each pair's matrix charge).
    pub fn new<T: Real>(net: &Net<T>, unit_charges: bool, pair_entries: usize) -> Self {
        let symmetries =
            enumerate(&net.arch).into_iter().filter(|s| unit_charges || s.family == Family::Scale).collect();
        Self { symmetries, pairs: pairs(&net.arch), pair_entries }
    }
}

impl<T: Real> Observer<T, Net<T>> for NetCharges {
    fn columns(&self, _: &Net<T>) -> Vec<String> {
        self.symmetries
            .iter()
            .map(|s| match s.family {
                Family::Rescale => format!("c_rescale_{}", stem(s)),
                Family::Scale => format!("c_{}", stem(s)),
            })
            .chain(self.pairs.iter().flat_map(|p| {
                let entries = upper_entries(p.layout.d, self.pair_entries);
                std::iter::once(format!("c_pair_{}_fro", p.module))
                    .chain(entries.map(|(i, j)| format!("c_pair_{}_{i}_{j}", p.module)))
            }))
            .collect()
    }
    fn observe(&mut self, s: &Snapshot<'_, T, Net<T>>, row: &mut Vec<f64>) -> Result<()> {
        let theta = &s.model.params;
        row.extend(self.symmetries.iter().map(|sym| sym.charge(theta)));
        for p in &self.pairs {
            let m = p.matrix_charge(theta);
            row.push(m.norm_l2());
            row.extend(upper_entries(m.nrows(), self.pair_entries).map(|(i, j)| m[(i, j)]));
        }
        Ok(())
    }
}

/// Noise geometry every `every` steps (one pass over the logging data): `trace_sigma` (Tr Σ, centred, 1/N), for
/// every symmetry its Noether flow `tr_a_sigma_{stem}` (Tr\[AΣ\], A diagonal) and, for rescaling classes, the
/// single-generator continuous-time equilibrium `lambda_star_{stem}` (NaN when there is none), and for every
/// linear pair `tr_a_sigma_pair_{module}` = Tr\[AΣ\] of B = I = Tr\[M_in − M_out\] (centred). A of B = I is
/// diagonal (+1 on `[W₁ | b₁]`, −1 on `W₂`), so that trace is a sum of the per-coordinate Σ_kk the pass computes
/// anyway: no `d × d` Gram moments are needed ([`crate::symmetry::double_rotation::PairLayout::identity_trace`]).
pub struct NetNoise {
    every: u64,
    symmetries: Vec<DiagSymmetry>,
    pairs: Vec<LinearPair>,
}

impl NetNoise {
    /// Every symmetry and linear pair of `net`, every `every` steps.
    pub fn new<T: Real>(net: &Net<T>, every: u64) -> Self {
        Self { every: every.max(1), symmetries: enumerate(&net.arch), pairs: pairs(&net.arch) }
    }
}

impl<T: Real> Observer<T, Net<T>> for NetNoise {
    fn columns(&self, _: &Net<T>) -> Vec<String> {
        let mut c = vec!["trace_sigma".to_string()];
        for s in &self.symmetries {
            c.push(format!("tr_a_sigma_{}", stem(s)));
            if s.family == Family::Rescale {
                c.push(format!("lambda_star_{}", stem(s)));
            }
        }
        c.extend(self.pairs.iter().map(|p| format!("tr_a_sigma_pair_{}", p.module)));
        c
    }
    fn observe(&mut self, s: &Snapshot<'_, T, Net<T>>, row: &mut Vec<f64>) -> Result<()> {
        if !s.step.is_multiple_of(self.every) {
            let n = self.columns(s.model).len();
            row.extend(std::iter::repeat_n(f64::NAN, n));
            return Ok(());
        }
        let m = net_moments(s.model, s.data, s.loss, MomentPath::Auto)?;
        let a = net_analysis(&m, &s.model.params, &self.symmetries, Time::Continuous);
        row.push(a.trace_sigma);
        for r in &a.symmetries {
            row.push(r.tr_a_sigma);
            if r.family == Family::Rescale {
                row.push(r.lambda_star.unwrap_or(f64::NAN));
            }
        }
        let sigma = |k: usize| m.second[k] - m.mean_grad[k] * m.mean_grad[k];
        row.extend(self.pairs.iter().map(|p| p.layout.identity_trace(sigma)));
        Ok(())
    }
}

/// Sharpness every `every` steps: `sharpness_top` (largest Hessian eigenvalue, Lanczos on exact R-operator
/// HVPs, [`NetHessian`]) and `hessian_trace` of the mean loss on the logging data (or a fixed seeded subset),
/// in f64; NaN on the other logged rows.
pub struct NetSharpness {
    every: u64,
    opts: SharpnessOptions,
}

impl NetSharpness {
    /// An observer computing every `every` steps with the given options (its `top`, `bottom` and `hvp` are
    /// not used: the top eigenvalue only, by exact HVPs).
    pub fn new(every: u64, opts: SharpnessOptions) -> Self {
        Self { every: every.max(1), opts }
    }
}

impl<T: Real> Observer<T, Net<T>> for NetSharpness {
    fn columns(&self, _: &Net<T>) -> Vec<String> {
        vec!["sharpness_top".into(), "hessian_trace".into()]
    }
    fn observe(&mut self, s: &Snapshot<'_, T, Net<T>>, row: &mut Vec<f64>) -> Result<()> {
        if !s.step.is_multiple_of(self.every) {
            row.extend([f64::NAN, f64::NAN]);
            return Ok(());
        }
        let (net, data) = (s.model.cast::<f64>(), s.data.cast::<f64>());
        let data = select_subset(&data, self.opts.subset, self.opts.seed)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.opts.seed);
        let mut op = NetHessian::new(&net, &data, s.loss)?;
        let eig = lanczos_eigenvalues(&mut op, 1, false, &self.opts.lanczos, &mut rng)?;
        let samples = self.opts.trace_samples;
        let trace = match self.opts.trace {
            None => None,
            Some(TraceMethod::Exact) => Some(exact_trace(&mut op)),
            Some(TraceMethod::Hutchinson) => Some(hutchinson_trace(&mut op, samples, &mut rng)?),
            Some(TraceMethod::HutchPlusPlus) => Some(hutch_plus_plus_trace(&mut op, samples, &mut rng)?),
        };
        row.push(eig.top.first().copied().unwrap_or(f64::NAN));
        row.push(trace.map_or(f64::NAN, |t| t.trace));
        Ok(())
    }
}

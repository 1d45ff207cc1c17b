//! Observers: what a run logs every `log_every` steps, as named columns of `metrics.csv`.

use super::trainable::Trainable;
use crate::data::Dataset;
use crate::error::Result;
use crate::loss::Loss;
use crate::model::Model;
use crate::real::Real;
use crate::symmetry::{double_rotation, enumerate, rescale, Symmetry};

/// The state of a run at a logged step (`M`: the model being trained, a dense chain by default).
pub struct Snapshot<'a, T, M = Model<T>> {
    /// Steps taken.
    pub step: u64,
    /// Time `t = Σ η_k`.
    pub time: f64,
    /// Learning rate of the next step.
    pub lr: f64,
    /// The model.
    pub model: &'a M,
    /// The data the logged loss is measured on.
    pub data: &'a Dataset<T>,
    /// The loss function.
    pub loss: Loss,
    /// Loss seen by the last step (batch loss for SGD).
    pub step_loss: f64,
}

/// Something that adds named columns to each logged row (`M`: the model being trained).
pub trait Observer<T: Real, M = Model<T>> {
    /// Column names (fixed for the run).
    fn columns(&self, model: &M) -> Vec<String>;
    /// Appends one value per column.
    fn observe(&mut self, s: &Snapshot<'_, T, M>, row: &mut Vec<f64>) -> Result<()>;
}

/// `step`, `t`, `lr`, `loss` (full loss on the logging data), `step_loss`, and `‖θ_block‖²` per layer
/// (`norm_sq_l{l}`, dense chains) or per parameterised module (`norm_sq_{module}`, weight and bias, trees).
pub struct Basics;

impl<T: Real, M: Trainable<T>> Observer<T, M> for Basics {
    fn columns(&self, model: &M) -> Vec<String> {
        let mut c: Vec<String> =
            ["step", "t", "lr", "loss", "step_loss"].iter().map(|s| s.to_string()).collect();
        c.extend(model.norm_columns());
        c
    }
    fn observe(&mut self, s: &Snapshot<'_, T, M>, row: &mut Vec<f64>) -> Result<()> {
        row.extend([s.step as f64, s.time, s.lr, s.model.mean_loss(s.data, s.loss)?, s.step_loss]);
        row.extend(s.model.norms_sq());
        Ok(())
    }
}

/// The Noether charge of every symmetry: `c_rescale_l{l}_u{j}` per hidden unit (optional), for each linear
/// pair the Frobenius norm `c_pair_l{l}_fro` of the matrix charge `W_lW_lᵀ + b_lb_lᵀ − W_{l+1}ᵀW_{l+1}` and
/// its first `pair_entries` upper-triangular entries `c_pair_l{l}_{i}_{j}`, and `c_scale_l{l}` = ‖θ_l‖².
pub struct Charges {
    symmetries: Vec<Symmetry>,
    unit_charges: bool,
    pair_entries: usize,
}

impl Charges {
    /// Charges of every symmetry of `model`.
    pub fn new<T: Real>(model: &Model<T>, unit_charges: bool, pair_entries: usize) -> Self {
        Self { symmetries: enumerate(&model.arch), unit_charges, pair_entries }
    }
}

/// The first `n` entries `(i, j)`, `i ≤ j`, of a `d × d` matrix's upper triangle, row-major: the entries of a
/// pair's matrix charge logged as `c_pair_…_{i}_{j}`.
pub(crate) fn upper_entries(d: usize, n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..d).flat_map(move |i| (i..d).map(move |j| (i, j))).take(n)
}

impl<T: Real> Observer<T> for Charges {
    fn columns(&self, model: &Model<T>) -> Vec<String> {
        let mut c = Vec::new();
        for s in &self.symmetries {
            match *s {
                Symmetry::Rescale { layer, unit } if self.unit_charges => {
                    c.push(format!("c_rescale_l{layer}_u{unit}"))
                }
                Symmetry::Rescale { .. } => {}
                Symmetry::DoubleRotation { layer } => {
                    c.push(format!("c_pair_l{layer}_fro"));
                    let d = model.arch.layers[layer].d_out;
                    c.extend(
                        upper_entries(d, self.pair_entries).map(|(i, j)| format!("c_pair_l{layer}_{i}_{j}")),
                    );
                }
                Symmetry::Scale { layer } => c.push(format!("c_scale_l{layer}")),
            }
        }
        c
    }
    fn observe(&mut self, s: &Snapshot<'_, T>, row: &mut Vec<f64>) -> Result<()> {
        let (arch, theta) = (&s.model.arch, &s.model.params);
        for sym in &self.symmetries {
            match *sym {
                Symmetry::Rescale { layer, unit } if self.unit_charges => {
                    row.push(rescale::quad(arch, layer, unit, theta))
                }
                Symmetry::Rescale { .. } => {}
                Symmetry::DoubleRotation { layer } => {
                    let m = double_rotation::matrix_charge(arch, layer, theta);
                    row.push(m.norm_l2());
                    row.extend(upper_entries(m.nrows(), self.pair_entries).map(|(i, j)| m[(i, j)]));
                }
                Symmetry::Scale { layer } => row.push(crate::symmetry::scale::quad(arch, layer, theta)),
            }
        }
        Ok(())
    }
}

/// Sharpness every `every` steps: `sharpness_top` (largest Hessian eigenvalue, Lanczos) and `hessian_trace`
/// of the mean loss on the logging data (or a fixed seeded subset); NaN on the other logged rows.
pub struct SharpnessObserver {
    every: u64,
    opts: crate::curvature::SharpnessOptions,
}

impl SharpnessObserver {
    /// An observer computing every `every` steps with the given options.
    pub fn new(every: u64, opts: crate::curvature::SharpnessOptions) -> Self {
        Self { every: every.max(1), opts }
    }
}

impl<T: Real> Observer<T> for SharpnessObserver {
    fn columns(&self, _: &Model<T>) -> Vec<String> {
        vec!["sharpness_top".into(), "hessian_trace".into()]
    }
    fn observe(&mut self, s: &Snapshot<'_, T>, row: &mut Vec<f64>) -> Result<()> {
        if !s.step.is_multiple_of(self.every) {
            row.extend([f64::NAN, f64::NAN]);
            return Ok(());
        }
        let (m, d) = (s.model.cast::<f64>(), s.data.cast::<f64>());
        let sh = crate::curvature::sharpness(&m, &d, s.loss, &self.opts)?;
        row.push(sh.top_eigenvalues.first().copied().unwrap_or(f64::NAN));
        row.push(sh.trace.unwrap_or(f64::NAN));
        Ok(())
    }
}

/// Noise geometry every `every` steps (one pass over the logging data): `trace_sigma` (Tr Σ, centred, 1/N),
/// and for every symmetry its Noether flow `tr_a_sigma_*` (Tr\[AΣ\]) and, for rescalings, the single-generator
/// continuous-time equilibrium `lambda_star_l{l}_u{j}` (NaN when there is none: dead or one-sided units). Pairs
/// use B = I (`tr_a_sigma_pair_l{l}` = Tr[M_in − M_out]); scale blocks log `tr_a_sigma_scale_l{l}` = Tr Σ_block.
pub struct NoiseObserver {
    every: u64,
    symmetries: Vec<Symmetry>,
}

impl NoiseObserver {
    /// Every symmetry of `model`, every `every` steps.
    pub fn new<T: Real>(model: &Model<T>, every: u64) -> Self {
        Self { every: every.max(1), symmetries: enumerate(&model.arch) }
    }
}

impl<T: Real> Observer<T> for NoiseObserver {
    fn columns(&self, _: &Model<T>) -> Vec<String> {
        let mut c = vec!["trace_sigma".to_string()];
        for s in &self.symmetries {
            match *s {
                Symmetry::Rescale { layer, unit } => {
                    c.push(format!("tr_a_sigma_l{layer}_u{unit}"));
                    c.push(format!("lambda_star_l{layer}_u{unit}"));
                }
                Symmetry::DoubleRotation { layer } => c.push(format!("tr_a_sigma_pair_l{layer}")),
                Symmetry::Scale { layer } => c.push(format!("tr_a_sigma_scale_l{layer}")),
            }
        }
        c
    }
    fn observe(&mut self, s: &Snapshot<'_, T>, row: &mut Vec<f64>) -> Result<()> {
        let n = 1 + self
            .symmetries
            .iter()
            .map(|s| if matches!(s, Symmetry::Rescale { .. }) { 2 } else { 1 })
            .sum::<usize>();
        if !s.step.is_multiple_of(self.every) {
            row.extend(std::iter::repeat_n(f64::NAN, n));
            return Ok(());
        }
        let opts = crate::stats::MomentOptions { elementwise: false, pair_grams: true, chunk: 4096 };
        let m = crate::stats::moments(s.model, s.data, s.loss, &opts)?;
        row.push(m.trace_sigma());
        for sym in &self.symmetries {
            let g = sym.generator(&s.model.arch);
            row.push(m.generator_trace(&g, true)?);
            if let Symmetry::Rescale { .. } = sym {
                let eq =
                    crate::equilibrium::generator_equilibrium(&m, &g, crate::equilibrium::Time::Continuous)?;
                row.push(eq.lambda().unwrap_or(f64::NAN));
            }
        }
        Ok(())
    }
}

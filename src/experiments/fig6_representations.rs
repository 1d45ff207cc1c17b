//! fig6-representations: a two-layer tanh net f = U tanh(Wx) on Gaussian teacher data with anisotropic Σ_x
//! and Σ_ε. At the noise equilibrium of the (near-linear) net, Tr\[Σ_ε\]·WΣ_xWᵀ = Tr\[Σ_x\]·UᵀΣ_εU: the input
//! representation WΣ_xWᵀ aligns with the output one UᵀΣ_εU. SGD gets there; GD keeps its initial imbalance.

use super::limit::{limit, LimitSpec};
use super::{train_logged, Context, Experiment};
use crate::data::{Anisotropy, Teacher, TeacherMap};
use crate::dynamics::{DataSpec, Method, ObserveSpec, TrainConfig};
use crate::error::Result;
use crate::model::{Activation, Flags, Init, ModelSpec};
use crate::report::document::Rule;
use crate::report::{Check, Figure, Heatmap, Section};
use crate::Model;
use faer::Mat;

/// The experiment.
pub struct Fig6;

/// E z² below which tanh counts as near-linear: tanh(z)/z = 1 − z²/3 + … is within ~15% of 1 for rms z ≤ 0.7.
const LINEAR_RANGE_Z2: f64 = 0.5;

struct Params {
    d: usize,
    hidden: usize,
    n: usize,
    steps: u64,
    lr: f64,
    phi_x: f64,
    phi_eps: f64,
    /// Scale of the label-noise variances (large noise keeps tanh near its linear regime at equilibrium).
    eps_scale: f64,
    /// Input-variance scales of the tanh sweep (smaller: pre-activations nearer tanh's linear range).
    x_scales: Vec<f64>,
    /// Step sizes of the linear control's limit sweep.
    linear_etas: Vec<f64>,
}

impl Params {
    fn new(quick: bool) -> Self {
        Params {
            d: 8,
            hidden: 8,
            n: 1000,
            steps: if quick { 10000 } else { 60000 },
            lr: 0.01,
            phi_x: 5.0,
            phi_eps: 5.0,
            eps_scale: 4.0,
            x_scales: vec![1.0 / 16.0, 0.25, 1.0],
            linear_etas: vec![0.00125, 0.0025, 0.005, 0.01],
        }
    }
}

fn config(p: &Params, seed: u64, method: Method, activation: Activation, x_scale: f64) -> TrainConfig {
    let model = ModelSpec {
        dims: vec![p.d, p.hidden, p.d],
        activation,
        activations: None,
        bias: Flags::All(false),
        norm_layers: vec![],
        init: Init::Gaussian(0.1),
        layer_scales: vec![2.0, 0.5],
    };
    let teacher = Teacher {
        sigma_x: Anisotropy { scale: x_scale, ..Anisotropy::condition(p.phi_x) },
        // Σ_ε's anisotropy runs the other way, so that alignment is not automatic.
        sigma_eps: Anisotropy {
            phi: 1.0,
            scale: 1.0,
            variances: Some(
                (0..p.d).map(|i| p.eps_scale * p.phi_eps.powf(1.0 - i as f64 / (p.d - 1) as f64)).collect(),
            ),
        },
        map: TeacherMap::Random,
    };
    // Smaller inputs mean smaller gradients and noise (Σ ∝ x_scale): the run is longer by 1/x_scale so that
    // every point of the sweep gets the same number of relaxation times.
    let steps = (p.steps as f64 / x_scale.min(1.0)).round() as u64;
    TrainConfig::new(model, method, p.lr, steps)
        .with_seed(seed)
        .with_log_every((steps / 100).max(1))
        .with_data(DataSpec::teacher(teacher, Some(p.n)))
        .with_observe(ObserveSpec { pair_entries: 0, unit_charges: false, ..Default::default() })
}

/// `(WΣ_xWᵀ / Tr, UᵀΣ_εU / Tr)` from the model and the diagonal covariances.
fn representations(model: &Model<f64>, var_x: &[f64], var_e: &[f64]) -> (Mat<f64>, Mat<f64>) {
    let w = model.weight(0).to_owned();
    let u = model.weight(1).to_owned();
    let sx = Mat::from_fn(var_x.len(), var_x.len(), |i, j| if i == j { var_x[i] } else { 0.0 });
    let se = Mat::from_fn(var_e.len(), var_e.len(), |i, j| if i == j { var_e[i] } else { 0.0 });
    let a = &w * &sx * w.transpose();
    let b = u.transpose() * &se * &u;
    let (ta, tb) =
        ((0..a.nrows()).map(|i| a[(i, i)]).sum::<f64>(), (0..b.nrows()).map(|i| b[(i, i)]).sum::<f64>());
    (a * faer::Scale(1.0 / ta), b * faer::Scale(1.0 / tb))
}

/// Logs `alignment`: the cosine of the trace-normalised representations at every logged step.
struct Alignment {
    var_x: Vec<f64>,
    var_e: Vec<f64>,
}

impl<T: crate::Real> crate::dynamics::Observer<T> for Alignment {
    fn columns(&self, _: &Model<T>) -> Vec<String> {
        vec!["alignment".into()]
    }
    fn observe(&mut self, s: &crate::dynamics::Snapshot<'_, T>, row: &mut Vec<f64>) -> Result<()> {
        let (a, b) = representations(&s.model.cast::<f64>(), &self.var_x, &self.var_e);
        row.push(alignment(&a, &b));
        Ok(())
    }
}

/// Mean of the last quarter of a logged column.
fn tail_mean(sink: &crate::dynamics::MemorySink, col: &str) -> f64 {
    let v = sink.column(col).unwrap_or_default();
    let tail = &v[v.len() * 3 / 4..];
    tail.iter().sum::<f64>() / tail.len().max(1) as f64
}

/// Cosine similarity in the Frobenius inner product.
pub fn alignment(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let dot: f64 = (0..a.nrows())
        .flat_map(|i| (0..a.ncols()).map(move |j| (i, j)))
        .map(|(i, j)| a[(i, j)] * b[(i, j)])
        .sum();
    dot / (a.norm_l2() * b.norm_l2())
}

impl Experiment for Fig6 {
    fn name(&self) -> &'static str {
        "fig6-representations"
    }
    fn description(&self) -> &'static str {
        "SGD aligns the input representation WΣ_xWᵀ with the output one UᵀΣ_εU of a tanh net; GD does not"
    }
    fn run(&self, ctx: &Context<'_>) -> Result<Section> {
        let name = self.name();
        let p = Params::new(ctx.quick);
        let mut section = Section::new(
            name,
            format!(
                "f = U tanh(Wx), widths {d}-{h}-{d}, no bias, Xavier init; x ~ N(0, Σ_x) with condition number φ_x = {}, \
                 y = Vx + ε with random V and Σ_ε of condition number {} (ordered the other way); N = {}, η = {}, {} steps, \
                 SGD with S = 1 against GD from the same W-heavy start (Gaussian 0.1 × (2, 0.5)). Heat maps show the trace-normalised representations. For a linear net the noise equilibrium makes the two matrices proportional (cosine 1); tanh breaks the double-rotation symmetry, so for this net the relation is only approximate, and the cosine ≥ 0.9 of the linear theory is checked on the linear control; for tanh the alignment is measured against how far the trained pre-activations leave tanh's linear range (input-scale sweep).",
                p.phi_x, p.phi_eps, p.n, p.lr, p.steps, d = p.d, h = p.hidden
            ),
        );
        // (stem, method, activation, input scale): tanh SGD and GD at the paper's setup, the linear control, and
        // the tanh input-scale sweep (its scale-1 point is the first run).
        let sgd = Method::Sgd { batch_size: 1, sampling: Default::default() };
        let mut plan: Vec<(String, Method, Activation, f64)> = vec![
            ("sgd".into(), sgd.clone(), Activation::Tanh, 1.0),
            ("gd".into(), Method::Gd, Activation::Tanh, 1.0),
            ("sgd_linear".into(), sgd.clone(), Activation::Identity, 1.0),
        ];
        for &sc in p.x_scales.iter().filter(|&&sc| sc != 1.0) {
            plan.push((format!("sgd_xscale{sc}"), sgd.clone(), Activation::Tanh, sc));
        }
        // The linear control's η sweep (docs/finite_step.md, added prediction): steps ∝ 1/η², the same number of
        // relaxation times at every η; its η = lr point is the `sgd_linear` run.
        for &eta in p.linear_etas.iter().filter(|&&e| e != p.lr) {
            plan.push((format!("sgd_linear_eta{eta}"), sgd.clone(), Activation::Identity, 1.0));
        }
        let total = plan.len() as u64 + 1;
        let mut panels = Vec::new();
        let mut linear_tail = Vec::new();
        // (cos, E z² = Tr[WΣ_xWᵀ]/hidden) per run.
        let mut out = Vec::new();
        for (k, (stem, method, act, sc)) in plan.iter().enumerate() {
            (ctx.progress)(k as u64, total, stem);
            let mut cfg = config(&p, ctx.seed, method.clone(), *act, *sc);
            if let Some(eta) = stem.strip_prefix("sgd_linear_eta").and_then(|e| e.parse::<f64>().ok()) {
                cfg.lr = eta;
                cfg.steps = (cfg.steps as f64 * (p.lr / eta).powi(2)).round() as u64;
                cfg.log_every = (cfg.steps / 100).max(1);
            }
            let DataSpec::Teacher { teacher, .. } = &cfg.data else { unreachable!() };
            let obs = Alignment {
                var_x: teacher.sigma_x.variances(p.d)?,
                var_e: teacher.sigma_eps.variances(p.d)?,
            };
            let (sink, summary, model) = train_logged::<f64>(ctx, &cfg, stem, vec![Box::new(obs)])?;
            if stem.starts_with("sgd_linear") {
                linear_tail.push((cfg.lr, tail_mean(&sink, "alignment")));
            }
            if summary.diverged.is_some() {
                return Err(crate::Error::Config(format!("{stem} diverged at η = {}", cfg.lr)));
            }
            let DataSpec::Teacher { teacher, .. } = &cfg.data else { unreachable!() };
            let (vx, ve) = (teacher.sigma_x.variances(p.d)?, teacher.sigma_eps.variances(p.d)?);
            let (a, b) = representations(&model, &vx, &ve);
            let c = alignment(&a, &b);
            let w = model.weight(0).to_owned();
            let z2 = (0..w.nrows())
                .map(|i| (0..w.ncols()).map(|j| w[(i, j)] * w[(i, j)] * vx[j]).sum::<f64>())
                .sum::<f64>()
                / w.nrows() as f64;
            out.push((c, z2));
            if k >= 3 && stem.starts_with("sgd_linear_eta") {
                continue;
            }
            if k < 3 {
                let up = match k {
                    0 => "SGD (tanh)",
                    1 => "GD (tanh)",
                    _ => "SGD (linear)",
                };
                panels.push(
                    Heatmap::from_fn(format!("{up}: WΣ_xWᵀ / Tr"), a.nrows(), a.ncols(), |i, j| a[(i, j)])
                        .into(),
                );
                panels.push(
                    Heatmap::from_fn(
                        format!("{up}: UᵀΣ_εU / Tr (cos = {c:.3})"),
                        b.nrows(),
                        b.ncols(),
                        |i, j| b[(i, j)],
                    )
                    .into(),
                );
            }
        }
        (ctx.progress)(total - 1, total, "figures");
        let fig = Figure::grid(
            "Representations after training: SGD tanh, GD tanh, SGD linear (top to bottom)",
            panels,
            2,
        );
        section = section.figure(fig.save(&ctx.dir, "representations")?, "Trace-normalised WΣ_xWᵀ (left) and UᵀΣ_εU (right) after SGD and GD on the tanh net and SGD on the linear control; cos is their Frobenius cosine similarity.");
        let (cos_sgd, cos_gd, cos_lin) = (out[0].0, out[1].0, out[2].0);
        // Registered as pass/fail before the limit rows existed; a single finite η measures the finite-step
        // effect too, and the claim it stood for is carried by the linear control's limit rows below. Flagged
        // refuted (reviewed 2026-12-02): the full run's 0.896 is the O(η) deficit at η = 0.01
        // (docs/experiments.md); a pass stays a pass.
        section = section.check(
            Check::new(
                name,
                format!(
                    "linear control (identity activation, same setup) at finite η = {}: alignment \
                     cos(WΣ_xWᵀ, UᵀΣ_εU) under SGD (the claim is carried by the linear control's limit rows)",
                    p.lr
                ),
                0.9,
                cos_lin,
                0.0,
                Rule::AtLeast,
            )
            .tests("paper: at the noise equilibrium of a linear layer pair Tr[Σ_ε]·WΣ_xWᵀ = Tr[Σ_x]·UᵀΣ_εU (cosine 1)")
            .refuted_if_failing(
                "a single finite η: 1 − cos is O(η) (order 1 measured), ≈ 0.1 at η = 0.01; the linear control's \
                 limit rows (alignment → 1 as η → 0, derived order 1) carry the claim",
            ),
        );
        section = section.check(
            Check::new(
                name,
                "tanh: alignment under SGD minus under GD (markedly higher)",
                0.1,
                cos_sgd - cos_gd,
                0.0,
                Rule::AtLeast,
            )
            .tests("paper fig. 6: SGD aligns the representations of a tanh net, GD does not"),
        );
        section = section.check(
            Check::new(
                name,
                "tanh: alignment cos(WΣ_xWᵀ, UᵀΣ_εU) under SGD (input scale 1)",
                0.9,
                cos_sgd,
                0.0,
                Rule::AtLeast,
            )
            .measurement(),
        );
        // The linear control as a limit η → 0 (added prediction in docs/finite_step.md, fixed before measuring).
        linear_tail.sort_by(|a, b| a.0.total_cmp(&b.0));
        let claim_lin =
            "paper: at the noise equilibrium of a linear layer pair Tr[Σ_ε]·WΣ_xWᵀ = Tr[Σ_x]·UᵀΣ_εU \
                         (cosine 1)";
        let xs: Vec<f64> = linear_tail.iter().map(|v| v.0).collect();
        let ys: Vec<f64> = linear_tail.iter().map(|v| v.1).collect();
        let ll = limit(
            LimitSpec {
                quantity: "linear control: tail-mean alignment".into(),
                variable: "η".into(),
                order: 2.0,
                reason: "the relation's residual is O(η) and 1 − cos is half its square".into(),
                order_tol: 0.3,
                predicted: 1.0,
                limit_tol: 0.05,
                tests: claim_lin.into(),
            },
            &xs,
            &ys,
            None,
        )?;
        // The order-2 row is flagged refuted (reviewed 2026-12-02): its argument was wrong (docs/experiments.md).
        let why_order2 = "the argument for order 2 was wrong: with anisotropic Σ_x, Σ_ε the relation is not the \
                          charge WWᵀ − UᵀU, the representations fluctuate O(√η) off the minimum and 1 − cos = O(η); \
                          the derived order-1 rows carry the claim";
        for c in ll.checks_refuted(name, ctx.quick, [Some(why_order2), None]) {
            section = section.check(c);
        }
        // Derived correction (added 2026-12-01, after the order-2 prediction above failed on its first quick run,
        // which fitted order 1.03): with anisotropic Σ_x, Σ_ε the relation is not the charge WWᵀ − UᵀU (which
        // SGD's fast fluctuations conserve), so the representations fluctuate O(√η) off the minimum like θ itself
        // and 1 − cos = O(η) (docs/finite_step.md).
        let ld = limit(
            LimitSpec {
                quantity: "linear control: tail-mean alignment (derived order)".into(),
                variable: "η".into(),
                order: 1.0,
                reason:
                    "derived correction added 2026-12-01: the anisotropic relation is not the charge, so the \
                         representations fluctuate O(√η) off the minimum and 1 − cos = O(η)"
                        .into(),
                order_tol: 0.3,
                predicted: 1.0,
                limit_tol: 0.05,
                tests: claim_lin.into(),
            },
            &xs,
            &ys,
            None,
        )?;
        for c in ld.checks(name, ctx.quick) {
            section = section.check(c);
        }
        // Input-scale sweep: (E z², cos) ordered by E z², the scale-1 run included.
        let mut sweep: Vec<(f64, f64, f64)> = vec![(1.0, out[0].1, cos_sgd)];
        for (i, &sc) in p.x_scales.iter().filter(|&&sc| sc != 1.0).enumerate() {
            sweep.push((sc, out[3 + i].1, out[3 + i].0));
        }
        sweep.sort_by(|a, b| a.1.total_cmp(&b.1));
        for &(sc, z2, c) in &sweep {
            section = section.check(
                Check::new(
                    name,
                    format!("tanh, input variance × {sc}: alignment under SGD (E z² = {z2:.4})"),
                    cos_lin,
                    c,
                    0.0,
                    Rule::Absolute,
                )
                .measurement(),
            );
        }
        let l = limit(
            LimitSpec {
                quantity: "tanh alignment".into(),
                variable: "E z²".into(),
                order: 1.0,
                reason: "tanh(z) − z = −z³/3 breaks the double rotation at a relative O(z²)".into(),
                order_tol: 0.3,
                predicted: cos_lin,
                limit_tol: 0.05,
                tests: "paper: the alignment is the noise equilibrium of the double rotation, exact as the net becomes linear".into(),
            },
            &sweep.iter().map(|v| v.1).collect::<Vec<_>>(),
            &sweep.iter().map(|v| v.2).collect::<Vec<_>>(),
            None,
        )?;
        // The prediction's premise is a sweep that reaches tanh's linear range; if even its most linear point is
        // outside it, the rows cannot test the claim in either mode (docs/finite_step.md).
        let min_z2 = sweep.iter().map(|v| v.1).fold(f64::INFINITY, f64::min);
        for c in l.checks(name, ctx.quick) {
            section = section.check(if min_z2 > LINEAR_RANGE_Z2 {
                let claim = format!(
                    "{} — not decided: the sweep never enters tanh's linear range (min E z² = {min_z2:.2} > \
                     {LINEAR_RANGE_Z2}; SGD grows W at every input scale)",
                    c.claim
                );
                Check { claim, ..c }.undecided()
            } else {
                c
            });
        }
        section = section.figure(
            Figure::grid(
                "Alignment limits",
                vec![ll.plot("linear control: 1 − cos against η").into(), l.plot("tanh against the linear control").into()],
                2,
            )
            .save(&ctx.dir, "alignment_limit")?,
            "Log–log, left: the linear control's 1 − cos (tail mean) against η; right: the linear control's alignment \
             minus the tanh net's against the trained pre-activations' \
             variance E z² = Tr[WΣ_xWᵀ]/hidden (input-scale sweep), with the least-squares power law (solid) and \
             the expected order 1 (dashed).",
        );
        section.text.push_str(&format!(
            "\n\nLinear control η sweep (tail means of the alignment): {}; 1 − cos shrinks at order {:.2} ± {:.2} \
             (pre-registered 2, derived 1) and the alignment extrapolates to {:.4} ± {:.4} at order 2 and {:.4} ± \
             {:.4} at order 1 (predicted 1).",
            linear_tail.iter().map(|v| format!("η = {}: {:.4}", v.0, v.1)).collect::<Vec<_>>().join(", "),
            ll.fit.order,
            ll.fit.order_se,
            ll.extrapolation.limit,
            ll.extrapolation.limit_se,
            ld.extrapolation.limit,
            ld.extrapolation.limit_se
        ));
        section.text.push_str(&format!(
            "\n\nLinear control (identity activation, otherwise the same): alignment {cos_lin:.3}. Tanh at input \
             scales {}: the deficit against the linear control shrinks at order {:.2} ± {:.2} in E z² (expected 1) \
             and extrapolates to {:.3} ± {:.3} at E z² → 0 (the linear control's {cos_lin:.3}).",
            sweep.iter().map(|v| format!("{} (E z² = {:.4}, cos {:.3})", v.0, v.1, v.2)).collect::<Vec<_>>().join(", "),
            l.fit.order,
            l.fit.order_se,
            l.extrapolation.limit,
            l.extrapolation.limit_se
        ));
        Ok(section)
    }
}

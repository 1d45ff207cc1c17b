//! noether-flow: the Noether flow itself. For an exponential symmetry A the charge C = θᵀAθ changes under SGD
//! by exactly `C_{t+1} − C_t = η² ĝᵀAĝ` at every step (θᵀAĝ = 0), so its expected change per step is
//! `η²(Tr[AΣ(θ)]/S + ∇LᵀA∇L)` (sampling with replacement), the SDE with the same Σ has the same expected drift,
//! and gradient flow conserves C. Four models: a scalar u·w net (rescaling of its hidden unit), a two-layer
//! linear net (every rescaling and double rotation), a relu MLP with biases (every rescaling) and a
//! scale-invariant block (a layer followed by RMS normalisation).

use super::{Context, Experiment};
use crate::data::{Anisotropy, Sampling, Teacher, TeacherMap};
use crate::dynamics::{DataSpec, Method, TrainConfig, Trainer};
use crate::equilibrium::noether_flow;
use crate::error::{Error, Result};
use crate::model::{Activation, Architecture, Flags, Init, ModelSpec};
use crate::report::document::Rule;
use crate::report::{Check, Figure, Plot, Section, Series};
use crate::stats::{moments, MomentOptions};
use crate::symmetry::{enumerate, random_symmetric, Generator};
use crate::Model;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The experiment.
pub struct NoetherFlow;

/// Writes `dir/<stem>.toml`, the exact config of a run (repeatable with `noether train`).
pub(crate) fn write_config(ctx: &Context<'_>, config: &TrainConfig, stem: &str) -> Result<()> {
    std::fs::create_dir_all(&ctx.dir).map_err(|e| Error::io(&ctx.dir, e))?;
    let path = ctx.dir.join(format!("{stem}.toml"));
    std::fs::write(&path, config.to_toml()).map_err(|e| Error::io(&path, e))
}

/// The trainer of ensemble member `stream`: the initial model and data of `config` (as `noether train`
/// draws them from `config.seed`), with the RNG of the run (batches, SDE noise) switched to ChaCha stream
/// `stream`. Member 0 is exactly `Trainer::from_config(config)`; all members share θ₀ and the data set.
pub(crate) fn member_trainer(config: &TrainConfig, stream: u64) -> Result<Trainer<f64>> {
    config.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let model: Model<f64> = config.build_model(&mut rng)?;
    let data = config.data.build::<f64, _>(model.arch.d_in(), model.arch.d_out(), &mut rng)?;
    rng.set_stream(stream);
    Trainer::new(model, data, config, rng)
}

/// `vᵀ|A|v`, the natural scale of `vᵀAv` for an indefinite A (for a double rotation, `‖B‖_F·‖v_pair‖²`).
pub(crate) fn abs_quad(g: &Generator, arch: &Architecture, v: &[f64]) -> f64 {
    use crate::symmetry::rescale::{incoming, outgoing};
    match g {
        Generator::Rescale { layer, unit } => {
            let sq = |i: usize| v[i] * v[i];
            incoming(arch, *layer, *unit).map(sq).sum::<f64>()
                + outgoing(arch, *layer, *unit).map(sq).sum::<f64>()
        }
        Generator::DoubleRotation { layer, b } => {
            let r = arch.layer_range(*layer).start..arch.layer_range(*layer + 1).end;
            b.norm_l2() * v[r].iter().map(|x| x * x).sum::<f64>()
        }
        Generator::Scale { .. } => g.quad(arch, v),
    }
}

/// Tracks the worst violation of the exact identity `C_{t+1} − C_t = η² ĝᵀAĝ` over steps and generators:
/// `(|ΔC − η²ĝᵀAĝ| − 32ε·θᵀ|A|θ)₊ / (η²ĝᵀ|A|ĝ)` — relative to the step term, beyond the unavoidable rounding
/// of evaluating C twice in f64 (the convention of tests/symmetry.rs).
pub(crate) struct IdentityProbe {
    gens: Vec<Generator>,
    before: Vec<f64>,
    /// Worst relative violation so far.
    pub worst: f64,
    /// Worst `|ΔC − η²ĝᵀAĝ| / (η²ĝᵀ|A|ĝ)` without the rounding allowance (for the record).
    pub worst_raw: f64,
    /// Steps checked.
    pub steps: u64,
}

impl IdentityProbe {
    pub(crate) fn new(gens: Vec<Generator>) -> Self {
        let n = gens.len();
        Self { gens, before: vec![0.0; n], worst: 0.0, worst_raw: 0.0, steps: 0 }
    }
    /// Call before a step.
    pub(crate) fn before(&mut self, model: &Model<f64>) {
        for (b, g) in self.before.iter_mut().zip(&self.gens) {
            *b = g.charge(&model.arch, &model.params);
        }
    }
    /// Call after the step with its learning rate.
    pub(crate) fn after(&mut self, tr: &Trainer<f64>, lr: f64) {
        let ghat = tr.last_direction().expect("the probed trainer records its direction");
        let (arch, theta) = (&tr.model.arch, &tr.model.params);
        for (g, c0) in self.gens.iter().zip(&self.before) {
            let dc = g.charge(arch, theta) - c0;
            let pred = lr * lr * g.quad(arch, ghat);
            let scale = lr * lr * abs_quad(g, arch, ghat);
            let round_off = 32.0 * f64::EPSILON * abs_quad(g, arch, theta);
            let excess = ((dc - pred).abs() - round_off).max(0.0);
            if scale > 0.0 {
                self.worst = self.worst.max(excess / scale);
                self.worst_raw = self.worst_raw.max((dc - pred).abs() / scale);
            } else if excess > 0.0 {
                self.worst = f64::INFINITY;
            }
        }
        self.steps += 1;
    }
}

/// Mean and standard error of the mean.
pub(crate) fn mean_se(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (m, (var / n).sqrt())
}

/// One model of the experiment.
struct Case {
    key: &'static str,
    title: &'static str,
    spec: ModelSpec,
    teacher: Teacher,
    lr: f64,
    batch: usize,
    /// What the headline charge is, in words.
    charge_label: &'static str,
}

impl Case {
    /// Generators whose summed charge is plotted and whose drift is predicted.
    fn headline(&self, arch: &Architecture) -> Vec<Generator> {
        match self.key {
            "scale_block" => vec![Generator::Scale { layer: 0 }],
            _ => (0..arch.layers[0].d_out).map(|unit| Generator::Rescale { layer: 0, unit }).collect(),
        }
    }
    /// Every symmetry of the model (B = I for pairs) plus, for linear pairs, a random direction B.
    fn all_generators(&self, arch: &Architecture, seed: u64) -> Vec<Generator> {
        let mut gens: Vec<Generator> = enumerate(arch).iter().map(|s| s.generator(arch)).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for s in enumerate(arch) {
            if let crate::symmetry::Symmetry::DoubleRotation { layer } = s {
                let b = random_symmetric(arch.layers[layer].d_out, &mut rng);
                gens.push(Generator::DoubleRotation { layer, b });
            }
        }
        gens
    }
}

struct Params {
    n: usize,
    steps: u64,
    members: u64,
    /// Drift evaluated every this many steps (midpoint rule).
    every: u64,
    substeps: usize,
}

fn cases() -> Vec<Case> {
    let iso = |v: f64| Anisotropy::isotropic(v);
    vec![
        Case {
            key: "scalar",
            title: "scalar u·w (1-1-1)",
            spec: ModelSpec {
                dims: vec![1, 1, 1],
                activation: Activation::Identity,
                activations: None,
                bias: Flags::All(false),
                norm_layers: vec![],
                init: Init::Gaussian(1.0),
                layer_scales: vec![2.0, 0.3],
            },
            teacher: Teacher { sigma_x: iso(1.0), sigma_eps: iso(1.0), map: TeacherMap::Identity },
            lr: 0.02,
            batch: 1,
            charge_label: "C = w₀² − w₁² (rescaling of the hidden unit)",
        },
        Case {
            key: "linear",
            title: "linear net 6-5-6",
            spec: ModelSpec {
                dims: vec![6, 5, 6],
                activation: Activation::Identity,
                activations: None,
                bias: Flags::All(false),
                norm_layers: vec![],
                init: Init::Gaussian(0.3),
                layer_scales: vec![2.0, 0.5],
            },
            teacher: Teacher { sigma_x: iso(1.0), sigma_eps: iso(1.0), map: TeacherMap::Identity },
            lr: 0.02,
            batch: 1,
            charge_label: "C = ‖W‖²_F − ‖U‖²_F (sum of the 5 rescalings = double rotation with B = I)",
        },
        Case {
            key: "relu",
            title: "relu MLP 5-8-3 with bias",
            spec: ModelSpec {
                dims: vec![5, 8, 3],
                activation: Activation::Relu,
                activations: None,
                bias: Flags::All(true),
                norm_layers: vec![],
                init: Init::Kaiming,
                layer_scales: vec![1.0, 0.3],
            },
            teacher: Teacher { sigma_x: iso(1.0), sigma_eps: iso(0.5), map: TeacherMap::Random },
            lr: 0.02,
            batch: 1,
            charge_label: "C = ‖W₀‖²_F + ‖b₀‖² − ‖W₁‖²_F (sum of the 8 rescalings)",
        },
        Case {
            key: "scale_block",
            title: "scale-invariant block 4-6-3 (layer 0 normalised, tanh)",
            spec: ModelSpec {
                dims: vec![4, 6, 3],
                activation: Activation::Tanh,
                activations: None,
                bias: Flags::All(true),
                norm_layers: vec![0],
                init: Init::Kaiming,
                layer_scales: vec![],
            },
            teacher: Teacher { sigma_x: iso(1.0), sigma_eps: iso(0.5), map: TeacherMap::Random },
            lr: 0.05,
            batch: 1,
            charge_label: "C = ‖W₀‖²_F + ‖b₀‖² (scale of the normalised block)",
        },
    ]
}

fn config(case: &Case, p: &Params, seed: u64, method: Method) -> TrainConfig {
    TrainConfig::new(case.spec.clone(), method, case.lr, p.steps)
        .with_seed(seed)
        .with_log_every((p.steps / 100).max(1))
        .with_data(DataSpec::teacher(case.teacher.clone(), Some(p.n)))
}

/// What one model's runs measured.
struct Outcome {
    identity_worst: f64,
    identity_raw: f64,
    identity_gens: usize,
    identity_steps: u64,
    /// Per member: measured ΔC (SGD), predicted Σ drift (SGD), measured ΔC (SDE).
    dc_sgd: Vec<f64>,
    pred: Vec<f64>,
    dc_sde: Vec<f64>,
    /// Per quarter of the run: (Σ_r ΔC, Σ_r pred).
    quarters: Vec<(f64, f64)>,
    gf_rel: f64,
    /// Curves (t, C): SGD mean, SDE mean, GF, prediction mean.
    curves: [Vec<(f64, f64)>; 4],
}

fn run_case(ctx: &Context<'_>, case: &Case, p: &Params, progress: &mut dyn FnMut(&str)) -> Result<Outcome> {
    let seed = ctx.seed;
    let sgd = Method::Sgd { batch_size: case.batch, sampling: Sampling::WithReplacement };
    let sde = Method::Sde { batch_size: case.batch };
    let gf = Method::GradientFlow { substeps: p.substeps, tolerance: None };
    let cfg_sgd = config(case, p, seed, sgd);
    let cfg_sde = config(case, p, seed, sde);
    let cfg_gf = config(case, p, seed, gf);
    for (c, m) in [(&cfg_sgd, "sgd"), (&cfg_sde, "sde"), (&cfg_gf, "gf")] {
        write_config(ctx, c, &format!("{}_{m}", case.key))?;
    }
    let probe_tr = member_trainer(&cfg_sgd, 0)?;
    let arch = probe_tr.model.arch.clone();
    let head = case.headline(&arch);
    let all = case.all_generators(&arch, seed ^ 0x5eed);
    for g in head.iter().chain(&all) {
        g.check(&arch)?;
    }
    let charge = |m: &Model<f64>| head.iter().map(|g| g.charge(&m.arch, &m.params)).sum::<f64>();
    let log = (p.steps / 100).max(1);
    let nlog = (p.steps / log) as usize + 1;
    let opts = MomentOptions { elementwise: false, pair_grams: false, chunk: 4096 };
    let mut probe = IdentityProbe::new(all.clone());
    let (mut dc_sgd, mut pred, mut dc_sde) = (Vec::new(), Vec::new(), Vec::new());
    let mut quarters = vec![(0.0, 0.0); 4];
    let mut sum_sgd = vec![0.0; nlog];
    let mut sum_sde = vec![0.0; nlog];
    let mut sum_pred = vec![0.0; nlog];
    let quarter = p.steps / 4;
    for r in 0..p.members {
        progress(&format!("{} member {r}", case.key));
        // SGD with the drift predicted along the trajectory.
        let mut tr = member_trainer(&cfg_sgd, r)?;
        tr.record_direction(true);
        let c0 = charge(&tr.model);
        let (mut acc, mut qc0, mut qpred) = (0.0, c0, 0.0);
        sum_sgd[0] += c0;
        sum_pred[0] += c0;
        for k in 0..p.steps {
            if k % p.every == p.every / 2 {
                let m = moments(&tr.model, tr.eval_data(), tr.loss_fn(), &opts)?;
                let mut d = 0.0;
                for g in &head {
                    d += noether_flow(&m, g, case.lr, case.batch, Sampling::WithReplacement)?.drift_per_step;
                }
                acc += d * p.every as f64;
                qpred += d * p.every as f64;
            }
            probe.before(&tr.model);
            tr.step()?;
            probe.after(&tr, case.lr);
            let done = k + 1;
            if done % log == 0 {
                let i = (done / log) as usize;
                sum_sgd[i] += charge(&tr.model);
                sum_pred[i] += c0 + acc;
            }
            if done % quarter == 0 && done / quarter <= 4 {
                let c = charge(&tr.model);
                let q = &mut quarters[(done / quarter - 1) as usize];
                q.0 += c - qc0;
                q.1 += qpred;
                qc0 = c;
                qpred = 0.0;
            }
        }
        dc_sgd.push(charge(&tr.model) - c0);
        pred.push(acc);
        // The SDE from the same θ₀ and data.
        let mut tr = member_trainer(&cfg_sde, r)?;
        sum_sde[0] += c0;
        for k in 0..p.steps {
            tr.step()?;
            let done = k + 1;
            if done % log == 0 {
                sum_sde[(done / log) as usize] += charge(&tr.model);
            }
        }
        dc_sde.push(charge(&tr.model) - c0);
    }
    // Gradient flow (deterministic) from θ₀.
    progress(&format!("{} gradient flow", case.key));
    let mut tr = member_trainer(&cfg_gf, 0)?;
    let c0 = charge(&tr.model);
    let scale0: f64 = head.iter().map(|g| abs_quad(g, &arch, &tr.model.params)).sum();
    let mut gf_curve = vec![(0.0, c0)];
    let mut gf_rel: f64 = 0.0;
    for k in 0..p.steps {
        tr.step()?;
        let done = k + 1;
        if done % log == 0 {
            let c = charge(&tr.model);
            gf_rel = gf_rel.max((c - c0).abs() / scale0);
            gf_curve.push((done as f64 * case.lr, c));
        }
    }
    let rr = p.members as f64;
    let curve = |s: &[f64]| -> Vec<(f64, f64)> {
        s.iter().enumerate().map(|(i, v)| ((i as u64 * log) as f64 * case.lr, v / rr)).collect()
    };
    Ok(Outcome {
        identity_worst: probe.worst,
        identity_raw: probe.worst_raw,
        identity_gens: all.len(),
        identity_steps: probe.steps,
        dc_sgd,
        pred,
        dc_sde,
        quarters,
        gf_rel,
        curves: [curve(&sum_sgd), curve(&sum_sde), gf_curve, curve(&sum_pred)],
    })
}

impl Experiment for NoetherFlow {
    fn name(&self) -> &'static str {
        "noether-flow"
    }
    fn description(&self) -> &'static str {
        "C_{t+1} − C_t = η²ĝᵀAĝ exactly; E[ΔC] = Σ η²(Tr[AΣ]/S + ∇LᵀA∇L); the SDE drifts alike; GF conserves C"
    }

    fn run(&self, ctx: &Context<'_>) -> Result<Section> {
        let name = self.name();
        let p = if ctx.quick {
            Params { n: 256, steps: 1000, members: 16, every: 1, substeps: 4 }
        } else {
            Params { n: 256, steps: 2000, members: 48, every: 1, substeps: 4 }
        };
        let cases = cases();
        let total = cases.len() as u64 * (p.members + 1);
        let mut done = 0u64;
        let mut text = format!(
            "Four models, each trained on N = {} teacher samples (y = Vx + ε) by SGD (S = 1, with replacement), \
             by the SDE with the same noise (Euler–Maruyama, dt = η, Σ exact on the data set) and by gradient flow \
             (RK4, {} substeps per η), for {} steps. An ensemble of {} members shares θ₀ and the data and differs \
             in the batch draws (ChaCha stream r; member 0 is the run of the written config). (a) The identity \
             C_{{t+1}} − C_t = η²ĝᵀAĝ is checked at every step of every SGD member for every symmetry of the model \
             (all rescalings, every double rotation with B = I and with a random symmetric B, the scale of a \
             normalised block); the violation is measured relative to η²ĝᵀ|A|ĝ beyond the rounding 32ε·θᵀ|A|θ of \
             evaluating C twice. (b) The change of the headline charge over the whole run, summed over the \
             ensemble, against the predicted drift Σ_k η²(Tr[AΣ(θ_k)]/S + ∇LᵀA∇L) evaluated along each \
             trajectory every {} step(s) (midpoint rule) with `stats::moments` and `equilibrium::noether_flow`; \
             ΔC − prediction is a martingale, so the standard error below comes from its spread across members. \
             (c) The ensemble-mean ΔC of the SDE against SGD (standard error from the paired member differences). \
             (d) Gradient flow: max_t |C(t) − C(0)| / θ₀ᵀ|A|θ₀.\n\n",
            p.n, p.substeps, p.steps, p.members, p.every
        );
        let mut checks = Vec::new();
        let mut panels = Vec::new();
        for case in &cases {
            let mut prog = |phase: &str| {
                (ctx.progress)(done, total, phase);
                done += 1;
            };
            let o = run_case(ctx, case, &p, &mut prog)
                .map_err(|e| Error::Config(format!("model `{}`: {e}", case.key)))?;
            let (sum_dc, sum_pred): (f64, f64) = (o.dc_sgd.iter().sum(), o.pred.iter().sum());
            let ratio = sum_dc / sum_pred;
            let resid: Vec<f64> = o.dc_sgd.iter().zip(&o.pred).map(|(a, b)| a - b).collect();
            let (_, se_resid) = mean_se(&resid);
            let se_ratio = se_resid * p.members as f64 / sum_pred.abs();
            let (m_sgd, se_sgd) = mean_se(&o.dc_sgd);
            let (m_sde, se_sde) = mean_se(&o.dc_sde);
            let paired: Vec<f64> = o.dc_sde.iter().zip(&o.dc_sgd).map(|(a, b)| a - b).collect();
            let (_, se_pair) = mean_se(&paired);
            let sde_ratio = m_sde / m_sgd;
            let se_sde_ratio = se_pair / m_sgd.abs();
            let quarters: Vec<String> = o.quarters.iter().map(|(a, b)| format!("{:.3}", a / b)).collect();
            text.push_str(&format!(
                "**{}** ({}, η = {}): (a) worst violation {:.2e} over {} generators × {} steps (without the rounding allowance: {:.1e}); (b) Σ ΔC = {:.4e}, \
                 Σ predicted = {:.4e}, ratio {:.4} ± {:.4} (per quarter of the run: {}); (c) mean ΔC: SGD {:.4e} ± \
                 {:.1e}, SDE {:.4e} ± {:.1e}, ratio SDE/SGD {:.4} ± {:.4}; (d) GF drift {:.1e}.\n\n",
                case.title,
                case.charge_label,
                case.lr,
                o.identity_worst,
                o.identity_gens,
                o.identity_steps,
                o.identity_raw,
                sum_dc,
                sum_pred,
                ratio,
                se_ratio,
                quarters.join(", "),
                m_sgd,
                se_sgd,
                m_sde,
                se_sde,
                sde_ratio,
                se_sde_ratio,
                o.gf_rel
            ));
            checks.push(Check::new(
                name,
                format!("{}: C_{{t+1}} − C_t = η²ĝᵀAĝ at every SGD step, all symmetries (worst relative violation)", case.key),
                1e-9,
                o.identity_worst,
                0.0,
                Rule::AtMost,
            ).tests("paper: C_{t+1} − C_t = η²ĝᵀAĝ exactly, at every SGD step and for any batch"));
            checks.push(
                Check::relative(
                    name,
                    format!(
                        "{}: ensemble Σ ΔC / Σ_k η²(Tr[AΣ]/S + ∇LᵀA∇L) over {} steps (± {:.3} s.e.)",
                        case.key, p.steps, se_ratio
                    ),
                    1.0,
                    ratio,
                    0.10,
                )
                .tests("paper: the expected drift of C per step is η²(Tr[AΣ]/S + ∇LᵀA∇L) (the Noether flow)"),
            );
            checks.push(
                Check::relative(
                    name,
                    format!("{}: SDE mean ΔC / SGD mean ΔC (± {:.3} s.e.)", case.key, se_sde_ratio),
                    1.0,
                    sde_ratio,
                    0.10,
                )
                .tests("noether: the SDE dθ = −∇L dt + √(η/S·Σ) dW reproduces SGD's drift of C"),
            );
            checks.push(
                Check::new(
                    name,
                    format!("{}: gradient flow conserves C, max |ΔC| / θ₀ᵀ|A|θ₀", case.key),
                    1e-6,
                    o.gf_rel,
                    0.0,
                    Rule::AtMost,
                )
                .tests("paper: gradient flow conserves the Noether charge C"),
            );
            let [sgd, sde, gf, pr] = o.curves;
            let mut plot = Plot::new(case.title, "t = η·steps", "charge C")
                .series(Series::line(format!("SGD (mean of {})", p.members), sgd))
                .series(Series::line(format!("SDE (mean of {})", p.members), sde))
                .series(Series::line("GF", gf))
                .series(Series::dashed("theory C₀ + Σ η²E[ĝᵀAĝ]", pr));
            plot.y_label = case.charge_label.split(" (").next().unwrap_or("C").to_string();
            panels.push(plot.into());
        }
        (ctx.progress)(total, total, "figures");
        let fig = Figure::grid("Noether charge under SGD, SDE and gradient flow", panels, 2);
        let mut section = Section::new(name, text).figure(
            fig.save(&ctx.dir, "charges")?,
            "The headline charge of each model against t = η·steps: SGD and SDE ensemble means, gradient flow \
             (constant), and the prediction C₀ + Σ_k η²(Tr[AΣ(θ_k)]/S + ∇LᵀA∇L) integrated along the SGD \
             trajectories (dashed).",
        );
        for c in checks {
            section = section.check(c);
        }
        Ok(section)
    }
}

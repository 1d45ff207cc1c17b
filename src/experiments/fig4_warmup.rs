//! fig4-warmup: rank-1 matrix factorization f = u wᵀx (widths d-1-d, identity, no bias) on y = Vx + ε with
//! a rank-1 teacher V = vvᵀ, x ~ N(0, I), ε ~ N(0, I). The only symmetry is the rescaling (w, u) → (e^λ w,
//! e^{−λ} u) with charge C = ‖w‖² − ‖u‖², conserved by gradient flow. Kaiming (fan-in) initialisation draws u
//! with std √2 and w with std √(2/d): ‖u‖² ≈ 2d ≫ ‖w‖² ≈ 2, so the start — and the GD minimum with the same
//! C — is sharp (λ_max ≈ ‖u‖²). At the noise equilibrium the label noise balances the layers
//! (dC/dt = −(η/S)·σ²d·C at a minimum), which is flat. Warmup gives SGD's noise the time to reach it before the
//! rate is high; GD has no noise to do so.

use super::{train_logged, Context, Experiment};
use crate::curvature::{sharpness, SharpnessOptions, TraceMethod};
use crate::data::{save_dataset, Anisotropy, Dataset, Teacher, TeacherMap};
use crate::dynamics::{DataSpec, MemorySink, Method, ObserveSpec, Schedule, Summary, TrainConfig};
use crate::equilibrium::teleport::{teleport, TeleportOptions, TeleportTarget};
use crate::equilibrium::Time;
use crate::error::{Error, Result};
use crate::model::{Activation, Flags, Init, ModelSpec};
use crate::net::save_dense;
use crate::report::document::Rule;
use crate::report::{Check, Figure, Plot, Section, Series};
use crate::Model;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The experiment.
pub struct Fig4;

/// Seeds of the teleported start at the peak rate (a divergence fraction, not one draw).
const TELEPORT_SEEDS: usize = 8;

struct Params {
    d: usize,
    n: usize,
    batch: usize,
    lr: f64,
    steps: u64,
    warmup: u64,
    sharpness_every: u64,
}

impl Params {
    fn new(quick: bool) -> Self {
        if quick {
            Params { d: 10, n: 1000, batch: 4, lr: 0.15, steps: 6000, warmup: 3000, sharpness_every: 30 }
        } else {
            Params { d: 20, n: 4000, batch: 4, lr: 0.075, steps: 16000, warmup: 8000, sharpness_every: 40 }
        }
    }
}

fn config(
    p: &Params,
    seed: u64,
    data: &std::path::Path,
    init: Init,
    method: Method,
    warmup: bool,
) -> TrainConfig {
    let model = ModelSpec {
        dims: vec![p.d, 1, p.d],
        activation: Activation::Identity,
        activations: None,
        bias: Flags::All(false),
        norm_layers: vec![],
        init,
        layer_scales: vec![],
    };
    TrainConfig::new(model, method, p.lr, p.steps)
        .with_seed(seed)
        .with_log_every(p.sharpness_every)
        .with_data(DataSpec::File { path: data.to_path_buf() })
        .with_schedule(if warmup { Schedule::Warmup { warmup_steps: p.warmup } } else { Schedule::Constant })
        .with_observe(ObserveSpec {
            pair_entries: 0,
            unit_charges: false,
            sharpness_every: p.sharpness_every,
            sharpness_trace: Some("exact".into()),
            ..Default::default()
        })
}

fn top(m: &Model<f64>, data: &Dataset<f64>, seed: u64) -> Result<(f64, f64)> {
    let opts = SharpnessOptions { trace: Some(TraceMethod::Exact), seed, ..Default::default() };
    let s = sharpness(m, data, crate::Loss::Mse, &opts)?;
    Ok((s.top_eigenvalues[0], s.trace.unwrap_or(f64::NAN)))
}

/// One logged run.
struct RunLog {
    label: String,
    sink: MemorySink,
    summary: Summary,
}

impl RunLog {
    fn series(&self, col: &str) -> Vec<(f64, f64)> {
        let st = self.sink.column("step").unwrap_or_default();
        let v = self.sink.column(col).unwrap_or_default();
        st.into_iter().zip(v).filter(|(s, y)| *s > 0.0 && y.is_finite() && *y > 0.0).collect()
    }
    /// The logged value of `col` at the logged step nearest to `step` (NaN if the run stopped before).
    fn at(&self, col: &str, step: u64) -> f64 {
        let st = self.sink.column("step").unwrap_or_default();
        let v = self.sink.column(col).unwrap_or_default();
        st.iter()
            .zip(&v)
            .filter(|(_, y)| y.is_finite())
            .min_by(|a, b| (a.0 - step as f64).abs().total_cmp(&(b.0 - step as f64).abs()))
            .filter(|(s, _)| (**s - step as f64).abs() <= self.sink_every() as f64)
            .map_or(f64::NAN, |(_, y)| *y)
    }
    fn sink_every(&self) -> u64 {
        let st = self.sink.column("step").unwrap_or_default();
        st.get(1).map_or(1, |s| *s as u64)
    }
    fn final_loss(&self) -> f64 {
        self.summary.final_loss.unwrap_or(f64::INFINITY)
    }
    fn outcome(&self) -> String {
        match &self.summary.diverged {
            Some(d) => format!("diverged at step {} (η = {:.3})", d.step, d.lr),
            None => format!("final loss {:.4}", self.final_loss()),
        }
    }
}

impl Experiment for Fig4 {
    fn name(&self) -> &'static str {
        "fig4-warmup"
    }
    fn description(&self) -> &'static str {
        "Kaiming init starts a rank-1 factorization sharp; warmup lets SGD's noise flatten it to the noise \
         equilibrium before the peak rate, GD cannot; teleporting to the equilibrium replaces warmup"
    }

    fn run(&self, ctx: &Context<'_>) -> Result<Section> {
        let name = self.name();
        let p = Params::new(ctx.quick);
        std::fs::create_dir_all(&ctx.dir).map_err(|e| Error::io(&ctx.dir, e))?;
        // The data set, drawn once and shared by every run (a file, so each run's TOML repeats it).
        let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ 0xda7a);
        let v = 1.0 / p.d as f64;
        let teacher = Teacher {
            sigma_x: Anisotropy::isotropic(1.0),
            sigma_eps: Anisotropy::isotropic(1.0),
            map: TeacherMap::Given(vec![vec![v; p.d]; p.d]),
        };
        let data: Dataset<f64> = teacher.build(p.d, p.d, &mut rng)?.sample(p.n, &mut rng);
        let data_path = ctx.dir.join("data.safetensors");
        save_dataset(&data, &data_path)?;

        let sgd = Method::Sgd { batch_size: p.batch, sampling: Default::default() };
        let seed = ctx.seed;
        let k_init = {
            let cfg = config(&p, seed, &data_path, Init::Kaiming, Method::Gd, false);
            cfg.build_model::<f64, _>(&mut ChaCha8Rng::seed_from_u64(seed))?
        };
        let x_init = {
            let cfg = config(&p, seed, &data_path, Init::Xavier, Method::Gd, false);
            cfg.build_model::<f64, _>(&mut ChaCha8Rng::seed_from_u64(seed))?
        };
        let topts = TeleportOptions { target: TeleportTarget::Noise(Time::Continuous), ..Default::default() };
        let (k_star, rep) = teleport(&k_init, &data, crate::Loss::Mse, &topts)?;
        let star_path = ctx.dir.join("kaiming_teleported.safetensors");
        save_dense::<f64, f64>(&k_star, &star_path)?;
        let (lam0, tr0) = top(&k_init, &data, seed)?;
        let (lamx, _) = top(&x_init, &data, seed)?;
        let (lam_star, tr_star) = top(&k_star, &data, seed)?;

        let mut runs: Vec<RunLog> = Vec::new();
        let plan: Vec<(&str, Init, Method, bool)> = vec![
            ("kaiming_warmup", Init::Kaiming, sgd.clone(), true),
            ("kaiming_warmup", Init::Kaiming, Method::Gd, true),
            ("kaiming_constant", Init::Kaiming, sgd.clone(), false),
            ("kaiming_constant", Init::Kaiming, Method::Gd, false),
            ("xavier_warmup", Init::Xavier, sgd.clone(), true),
            ("xavier_warmup", Init::Xavier, Method::Gd, true),
            ("xavier_constant", Init::Xavier, sgd.clone(), false),
            ("xavier_constant", Init::Xavier, Method::Gd, false),
            ("teleported_constant", Init::File(star_path.clone()), sgd.clone(), false),
            ("teleported_constant", Init::File(star_path.clone()), Method::Gd, false),
        ];
        let total = plan.len() as u64 + 1;
        for (i, (stem, init, method, warm)) in plan.into_iter().enumerate() {
            let short = method.short();
            (ctx.progress)(i as u64, total, &format!("{short} {stem}"));
            let cfg = config(&p, seed, &data_path, init, method, warm);
            let (sink, summary, _) = train_logged::<f64>(ctx, &cfg, &format!("{short}_{stem}"), vec![])?;
            runs.push(RunLog {
                label: format!("{} {}", short.to_uppercase(), stem.replace('_', ", ")),
                sink,
                summary,
            });
        }
        (ctx.progress)(total - 1, total, "figures");
        let get = |label: &str| runs.iter().find(|r| r.label == label).expect("planned run");
        let (sgd_w, gd_w) = (get("SGD kaiming, warmup"), get("GD kaiming, warmup"));
        let (sgd_c, gd_c) = (get("SGD kaiming, constant"), get("GD kaiming, constant"));
        let (sgd_t, gd_t) = (get("SGD teleported, constant"), get("GD teleported, constant"));

        // The teleported start at the peak rate over an ensemble of seeds (batch draws): in the catapult regime
        // 2 < η·λ_max < 4 one draw decides whether SGD recovers or diverges (docs/finite_step.md).
        let mut diverged = 0usize;
        for k in 0..TELEPORT_SEEDS {
            let cfg =
                config(&p, seed + k as u64, &data_path, Init::File(star_path.clone()), sgd.clone(), false);
            let cfg = TrainConfig { observe: ObserveSpec::default(), ..cfg };
            let mut tr = crate::dynamics::Trainer::<f64>::from_config(&cfg)?;
            for _ in 0..p.steps {
                if tr.step().is_err() {
                    diverged += 1;
                    break;
                }
            }
        }
        let teleport_diverged = diverged as f64 / TELEPORT_SEEDS as f64;
        // The step at which the warmup rate reaches the start's stability edge: η(k_c)·λ_max(θ_0) = 2.
        let k_c = ((2.0 / (p.lr * lam0)) * p.warmup as f64).round().min(p.warmup as f64) as u64;
        let ratio_kc = |r: &RunLog| r.at("sharpness_top", k_c) / lam0;
        let (sgd_kc, gd_kc) = (ratio_kc(sgd_w), ratio_kc(gd_w));
        let (sgd_end, gd_end) = (sgd_w.at("sharpness_top", p.warmup), gd_w.at("sharpness_top", p.warmup));

        // Figures: λ_max and Tr H against steps, one panel per start.
        let mut panels = Vec::new();
        for (title, col, ylab) in [
            ("Kaiming start: top Hessian eigenvalue", "sharpness_top", "λ_max(H)"),
            ("Kaiming start: Hessian trace", "hessian_trace", "Tr H"),
        ] {
            let mut pl = Plot::new(title, "step", ylab).log(false, true);
            for r in [sgd_w, gd_w, sgd_c, gd_c, sgd_t, gd_t] {
                let pts = r.series(col);
                pl = pl.series(if r.label.contains("warmup") {
                    Series::line(r.label.clone(), pts)
                } else if r.label.contains("teleported") {
                    // Every fourth point: dense markers would hide the lines.
                    Series::markers(r.label.clone(), pts.into_iter().step_by(4).collect())
                } else {
                    Series::dashed(r.label.clone(), pts)
                });
            }
            if col == "sharpness_top" {
                let edge: Vec<(f64, f64)> = (1..=p.steps)
                    .step_by(p.sharpness_every as usize)
                    .map(|k| {
                        let eta = Schedule::Warmup { warmup_steps: p.warmup }.lr(p.lr, k, p.steps);
                        (k as f64, 2.0 / eta)
                    })
                    // Clipped to the panel's range of interest (2/η → ∞ as k → 0).
                    .filter(|&(_, e)| e <= 3.0 * lam0)
                    .collect();
                pl = pl.series(Series::dashed("theory: stability edge 2/η(k) (warmup)", edge));
                pl = pl.series(Series::dashed(
                    "theory: λ_max at the noise equilibrium θ*",
                    vec![(1.0, lam_star), (p.steps as f64, lam_star)],
                ));
            }
            panels.push(pl.into());
        }
        let mut xpl = Plot::new("Xavier start: top Hessian eigenvalue", "step", "λ_max(H)").log(false, true);
        for l in ["SGD xavier, warmup", "GD xavier, warmup", "SGD xavier, constant", "GD xavier, constant"] {
            let r = get(l);
            let pts = r.series("sharpness_top");
            xpl =
                xpl.series(if l.contains("warmup") { Series::line(l, pts) } else { Series::dashed(l, pts) });
        }
        panels.push(xpl.into());
        let mut lpl =
            Plot::new("Loss (Kaiming and teleported starts)", "step", "training loss").log(false, true);
        for r in [sgd_w, gd_w, sgd_c, gd_c, sgd_t, gd_t] {
            let pts = r.series("loss");
            lpl = lpl.series(if r.label.contains("warmup") {
                Series::line(r.label.clone(), pts)
            } else {
                Series::dashed(r.label.clone(), pts)
            });
        }
        panels.push(lpl.into());
        let fig = Figure::grid("Warmup, sharpness and the noise equilibrium", panels, 2);
        let files = fig.save(&ctx.dir, "sharpness")?;

        let outcomes: String =
            runs.iter().map(|r| format!("{}: {}", r.label, r.outcome())).collect::<Vec<_>>().join("; ");
        let text = format!(
            "f = u wᵀx, widths {d}-1-{d}, no bias; x ~ N(0, I), y = Vx + ε with V = vvᵀ (v = 1/√d·(1,…,1)), ε ~ N(0, I); \
             N = {n} samples (one file shared by all runs); SGD with S = {s} and GD; peak rate η = {lr}, linear warmup over \
             {w} of {steps} steps or constant; exact Hessian trace and Lanczos λ_max every {k} steps on all N samples. \
             Kaiming start: λ_max = {lam0:.2}, Tr H = {tr0:.1} (η·λ_max = {e0:.2}); Xavier start: λ_max = {lamx:.2} \
             (η·λ_max = {ex:.2}). θ* = teleport of the Kaiming start to the noise equilibrium (same function, loss \
             {lb:.3} → {la:.3}, Tr Σ {sb:.1} → {sa:.1}): λ_max = {ls:.2}, Tr H = {ts:.1} (η·λ_max = {es:.2}). The warmup rate \
             reaches the start's edge 2/λ_max(θ_0) at step k_c = {k_c}; there λ_max/λ_max(θ_0) is {sgd_kc:.3} for SGD and \
             {gd_kc:.3} for GD; at the end of warmup λ_max is {sgd_end:.2} (SGD) and {gd_end:.2} (GD), edge 2/η = {edge:.2}. \
             Outcomes: {outcomes}. Beyond the paper: the teleported start trained at the peak rate without warmup \
             (prediction fixed before running: it does not diverge). θ* has ‖w‖² = {sw:.2}, ‖u‖² = {su:.2} (θ_0: {w0:.2}, \
             {u0:.2}): at the start the gradient noise comes mostly from the model's misfit (loss {lb:.1}), not from the \
             label noise, and balancing it moves the start only part of the way towards flatness (λ_max × {lr_ratio:.2}), \
             so η_peak·λ_max(θ*) = {es:.2} can still exceed 2; SGD's warmup instead reaches the label-noise equilibrium \
             of the trained model, which is far flatter.",
            d = p.d, n = p.n, s = p.batch, lr = p.lr, w = p.warmup, steps = p.steps, k = p.sharpness_every,
            e0 = p.lr * lam0, ex = p.lr * lamx, lb = rep.loss_before, la = rep.loss_after,
            sb = rep.trace_sigma_before, sa = rep.trace_sigma_after, ls = lam_star, ts = tr_star,
            es = p.lr * lam_star, edge = 2.0 / p.lr,
            sw = k_star.layer_norms_sq()[0], su = k_star.layer_norms_sq()[1],
            w0 = k_init.layer_norms_sq()[0], u0 = k_init.layer_norms_sq()[1], lr_ratio = lam_star / lam0,
        );
        let mut section = Section::new(name, text).figure(
            files,
            "λ_max and Tr H against steps from the Kaiming start (SGD/GD, warmup solid, constant rate dashed, teleported \
             start markers), from the Xavier start, and the loss. Dashed black: the stability edge 2/η(k) of the warmup \
             schedule and λ_max at θ*.",
        );
        section = section
            .check(Check::new(name, "Kaiming start is sharp: η_peak·λ_max(θ_0)", 2.0, p.lr * lam0, 0.0, Rule::AtLeast).tests("paper fig. 4: Kaiming starts sharp, past the stability edge of the peak rate"))
            .check(Check::new(
                name,
                "the noise equilibrium θ* = teleport(θ_0) is flatter: λ_max(θ*)/λ_max(θ_0)",
                1.0,
                lam_star / lam0,
                0.0,
                Rule::AtMost,
            ).tests("paper: the noise equilibrium θ* on the start's orbit is flatter"))
            .check(Check::new(
                name,
                "SGD flattens during warmup: λ_max/λ_max(θ_0) when η reaches 2/λ_max(θ_0)",
                0.5,
                sgd_kc,
                0.0,
                Rule::AtMost,
            ).tests("paper fig. 4: during warmup SGD flattens towards the noise equilibrium, GD (conserved C) does not"))
            .check(Check::new(
                name,
                "GD does not flatten during warmup (conserved C): λ_max/λ_max(θ_0) when η reaches 2/λ_max(θ_0)",
                0.5,
                gd_kc,
                0.0,
                Rule::AtLeast,
            ).tests("paper fig. 4: during warmup SGD flattens towards the noise equilibrium, GD (conserved C) does not"))
            .check(Check::new(
                name,
                "SGD with warmup is stable at the peak: η_peak·λ_max at the end of warmup",
                2.0,
                p.lr * sgd_end,
                0.0,
                Rule::AtMost,
            ).tests("paper fig. 4: during warmup SGD flattens towards the noise equilibrium, GD (conserved C) does not"));
        let worse = |c: &RunLog, w: &RunLog| -> f64 {
            f64::from(c.summary.diverged.is_some() || c.final_loss() > w.final_loss())
        };
        section = section
            .check(Check::new(
                name,
                "SGD without warmup from Kaiming diverges or ends with a higher loss (1 = yes)",
                1.0,
                worse(sgd_c, sgd_w),
                0.0,
                Rule::AtLeast,
            ).tests("paper fig. 4: without warmup SGD from the Kaiming start fails"))
            .check(
                Check::new(
                    name,
                    format!(
                        "teleported start, SGD at the peak rate without warmup: fraction of {TELEPORT_SEEDS} seeds that \
                         diverged (η_peak·λ_max(θ*) = {:.2} > 2: the catapult regime, where linear stability \
                         predicts the loss grows first and the theory does not say whether SGD recovers; seed {seed}: \
                         {})",
                        p.lr * lam_star,
                        if sgd_t.summary.diverged.is_some() { "diverged" } else { "survived" }
                    ),
                    0.0,
                    teleport_diverged,
                    0.0,
                    Rule::AtMost,
                )
                .measurement(),
            )
            .check(
                Check::new(
                    name,
                    "teleported start, GD at the peak rate without warmup: diverged (1 = yes; same regime)",
                    0.0,
                    f64::from(gd_t.summary.diverged.is_some()),
                    0.0,
                    Rule::AtMost,
                )
                .measurement(),
            );
        Ok(section)
    }
}

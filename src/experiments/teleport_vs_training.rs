//! teleport-vs-training: for models with indefinite symmetries (a relu MLP, a deep linear net, the 30-40-30
//! linear net), how long SGD takes to reach its noise equilibrium against the wall time of one teleport
//! (`equilibrium::teleport`), and the noise target against the min-norm target of Equi-normalization on Tr Σ and
//! sharpness.
//!
//! Distance to the equilibrium: the largest single-orbit displacement, `|λ*_j| = ¼|ln(a_j/b_j)|` for each
//! rescaling unit of a non-linear layer and `½‖ln P_l‖_F` (P_l the geometric-mean solution of
//! `P M_out P = M_in`, teleport by `Q = P^{1/2}`) for each linear pair; all continuous-time (Σ centred).

use super::{train_logged, Context, Experiment};
use crate::curvature::{sharpness, SharpnessOptions, TraceMethod};
use crate::data::{Anisotropy, Dataset, Sampling, Teacher, TeacherMap};
use crate::dynamics::{DataSpec, Method, ObserveSpec, TrainConfig, TrainData, Trainer};
use crate::equilibrium::double_rotation::{balancing_matrix, sym_eigen, target_moments};
use crate::equilibrium::teleport::{teleport, TeleportOptions, TeleportReport, TeleportTarget};
use crate::equilibrium::{generator_equilibrium, Time, NOISE_RTOL};
use crate::error::{Error, Result};
use crate::model::{Activation, Flags, Init, ModelSpec};
use crate::report::document::Rule;
use crate::report::plot::PALETTE;
use crate::report::{Check, Figure, Plot, Section, Series};
use crate::stats::{linear_pair, moments, rescalable, MomentOptions};
use crate::symmetry::Generator;
use crate::{Loss, Model};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

/// The experiment.
pub struct TeleportVsTraining;

/// One model of the comparison.
struct Case {
    label: &'static str,
    dims: Vec<usize>,
    activation: Activation,
    bias: bool,
    init: Init,
    scales: Vec<f64>,
    teacher: Teacher,
    n: usize,
    /// GD pre-training (to near a minimum; GD keeps the imbalance of the start).
    gd_lr: f64,
    gd_steps: u64,
    /// SGD from the pre-trained point.
    sgd_lr: f64,
    sgd_steps: u64,
}

fn cases(quick: bool) -> Vec<Case> {
    let f = if quick { 3 } else { 12 };
    let anis = |phi: f64, rev: bool, d: usize, scale: f64| Anisotropy {
        phi: 1.0,
        scale: 1.0,
        variances: Some(
            (0..d)
                .map(|i| {
                    let s = i as f64 / (d - 1) as f64;
                    scale * phi.powf(if rev { s } else { 1.0 - s })
                })
                .collect(),
        ),
    };
    vec![
        Case {
            label: "relu MLP 8-32-32-4",
            dims: vec![8, 32, 32, 4],
            activation: Activation::Relu,
            bias: true,
            init: Init::Kaiming,
            scales: vec![2.0, 1.0, 0.5],
            teacher: Teacher {
                sigma_x: anis(4.0, false, 8, 1.0),
                sigma_eps: Anisotropy::isotropic(0.5),
                map: TeacherMap::Random,
            },
            n: 500,
            gd_lr: 0.02,
            gd_steps: 500,
            sgd_lr: 0.01,
            sgd_steps: 10_000 * f,
        },
        Case {
            label: "deep linear 10-16-16-10",
            dims: vec![10, 16, 16, 10],
            activation: Activation::Identity,
            bias: false,
            init: Init::Xavier,
            scales: vec![2.0, 1.0, 0.5],
            teacher: Teacher {
                sigma_x: anis(5.0, false, 10, 1.0),
                sigma_eps: anis(5.0, true, 10, 0.2),
                map: TeacherMap::Random,
            },
            n: 500,
            gd_lr: 0.02,
            gd_steps: 500,
            sgd_lr: 0.01,
            sgd_steps: 10_000 * f,
        },
        Case {
            label: "linear 30-40-30",
            dims: vec![30, 40, 30],
            activation: Activation::Identity,
            bias: false,
            init: Init::Gaussian(0.1),
            scales: vec![3.0, 0.3],
            teacher: Teacher {
                sigma_x: Anisotropy::isotropic(1.0),
                sigma_eps: Anisotropy::isotropic(1.0),
                map: TeacherMap::Identity,
            },
            n: 1000,
            gd_lr: 0.02,
            gd_steps: 500,
            sgd_lr: 0.01,
            sgd_steps: 10_000 * f,
        },
    ]
}

fn config(c: &Case, seed: u64, method: Method, lr: f64, steps: u64) -> TrainConfig {
    let model = ModelSpec {
        dims: c.dims.clone(),
        activation: c.activation,
        activations: None,
        bias: Flags::All(c.bias),
        norm_layers: vec![],
        init: c.init.clone(),
        layer_scales: c.scales.clone(),
    };
    TrainConfig::new(model, method, lr, steps)
        .with_seed(seed)
        .with_log_every((steps / 100).max(1))
        .with_data(DataSpec::teacher(c.teacher.clone(), Some(c.n)))
        .with_observe(ObserveSpec { pair_entries: 0, unit_charges: false, ..Default::default() })
}

/// Largest single-orbit distance to the continuous-time noise equilibrium (see the module doc).
pub fn equilibrium_distance(model: &Model<f64>, data: &Dataset<f64>) -> Result<f64> {
    let arch = &model.arch;
    let m = moments(
        model,
        data,
        Loss::Mse,
        &MomentOptions { elementwise: false, pair_grams: true, chunk: 4096 },
    )?;
    let zero = NOISE_RTOL * m.trace_second_moment();
    let mut d: f64 = 0.0;
    for l in 0..arch.n_layers() {
        if linear_pair(arch, l) {
            let (mi, mo) = target_moments(&m, l, Time::Continuous)?;
            if let Some(p) = balancing_matrix(&mi, &mo, zero)?.p {
                let (_, s) = sym_eigen(&p)?;
                d = d.max(0.5 * s.iter().map(|v| v.ln().powi(2)).sum::<f64>().sqrt());
            }
        } else if rescalable(arch, l) {
            for unit in 0..arch.layers[l].d_out {
                let g = Generator::Rescale { layer: l, unit };
                if let Some(lam) = generator_equilibrium(&m, &g, Time::Continuous)?.lambda() {
                    d = d.max(lam.abs());
                }
            }
        }
    }
    Ok(d)
}

/// Everything measured for one model.
struct Outcome {
    label: &'static str,
    noise: TeleportReport,
    norm: TeleportReport,
    teleport_wall: f64,
    /// Tr Σ, top Hessian eigenvalue, Hessian trace at (original, noise target, norm target).
    trace_sigma: [f64; 3],
    top: [f64; 3],
    htrace: [f64; 3],
    /// (step, distance) under SGD.
    dist: Vec<(f64, f64)>,
    /// Wall time of one SGD step (steps only).
    sgd_step_wall: f64,
    /// First logged step with distance < 10% of the initial one.
    steps_to_eq: Option<f64>,
    /// Stationary distance (mean over the last quarter of the run) and the first logged step below 1.5× it.
    floor: f64,
    steps_to_floor: f64,
    sgd_lr: f64,
}

fn run_case(ctx: &Context<'_>, c: &Case, k: usize) -> Result<Outcome> {
    let seed = ctx.seed + 31 * k as u64;
    let stem = c.label.split(' ').next().unwrap_or("model").replace(' ', "_");
    let stem = format!("{k}_{stem}");
    // GD pre-training (logged and repeatable), then the data the config drew.
    let gd = config(c, seed, Method::Gd, c.gd_lr, c.gd_steps);
    let (_, summary, model) = train_logged::<f64>(ctx, &gd, &format!("{stem}_gd"), vec![])?;
    if let Some(dv) = summary.diverged {
        return Err(Error::Config(format!("{}: GD pre-training diverged at step {}", c.label, dv.step)));
    }
    let data = {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let _: Model<f64> = gd.build_model(&mut rng)?;
        match gd.data.build::<f64, _>(model.arch.d_in(), model.arch.d_out(), &mut rng)? {
            TrainData::Finite(d) => d,
            TrainData::Online { .. } => unreachable!("finite teacher data"),
        }
    };
    // One teleport to each target, timed.
    let t0 = Instant::now();
    let (noise_model, noise) = teleport(
        &model,
        &data,
        Loss::Mse,
        &TeleportOptions { target: TeleportTarget::Noise(Time::Continuous), ..Default::default() },
    )?;
    let teleport_wall = t0.elapsed().as_secs_f64();
    let (norm_model, norm) = teleport(
        &model,
        &data,
        Loss::Mse,
        &TeleportOptions { target: TeleportTarget::Norm, ..Default::default() },
    )?;
    // Curvature of the three points (same probes and start vector for all three).
    let sopts = SharpnessOptions {
        top: 1,
        trace: Some(TraceMethod::HutchPlusPlus),
        trace_samples: if ctx.quick { 90 } else { 300 },
        seed: seed ^ 0xc0ffee,
        ..Default::default()
    };
    let mut top = [0.0; 3];
    let mut htrace = [0.0; 3];
    for (i, m) in [&model, &noise_model, &norm_model].into_iter().enumerate() {
        let s = sharpness(m, &data, Loss::Mse, &sopts)?;
        top[i] = s.top_eigenvalues.first().copied().unwrap_or(f64::NAN);
        htrace[i] = s.trace.unwrap_or(f64::NAN);
    }
    let trace_sigma = [noise.trace_sigma_before, noise.trace_sigma_after, norm.trace_sigma_after];
    // SGD from the pre-trained point; steps timed apart from the distance evaluations.
    let sgd_cfg = config(
        c,
        seed + 1,
        Method::Sgd { batch_size: 1, sampling: Sampling::WithReplacement },
        c.sgd_lr,
        c.sgd_steps,
    );
    let path = ctx.dir.join(format!("{stem}_sgd.toml"));
    std::fs::write(&path, sgd_cfg.to_toml()).map_err(|e| Error::io(&path, e))?;
    let mut tr = Trainer::new(
        model.clone(),
        TrainData::Finite(data.clone()),
        &sgd_cfg,
        ChaCha8Rng::seed_from_u64(seed + 1),
    )?;
    let every = (c.sgd_steps / 100).max(1);
    let mut dist = vec![(0.0, equilibrium_distance(&tr.model, &data)?)];
    let mut wall = 0.0;
    let mut step = 0;
    while step < c.sgd_steps {
        let t = Instant::now();
        for _ in 0..every {
            tr.step()?;
        }
        wall += t.elapsed().as_secs_f64();
        step += every;
        dist.push((step as f64, equilibrium_distance(&tr.model, &data)?));
    }
    let d0 = dist[0].1;
    let steps_to_eq = dist.iter().find(|p| p.1 < 0.1 * d0).map(|p| p.0);
    let tail = &dist[dist.len() * 3 / 4..];
    let floor = tail.iter().map(|p| p.1).sum::<f64>() / tail.len() as f64;
    let steps_to_floor = dist.iter().find(|p| p.1 < 1.5 * floor).map_or(f64::NAN, |p| p.0);
    Ok(Outcome {
        label: c.label,
        noise,
        norm,
        teleport_wall,
        trace_sigma,
        top,
        htrace,
        dist,
        sgd_step_wall: wall / step as f64,
        steps_to_eq,
        floor,
        steps_to_floor,
        sgd_lr: c.sgd_lr,
    })
}

impl Experiment for TeleportVsTraining {
    fn name(&self) -> &'static str {
        "teleport-vs-training"
    }
    fn description(&self) -> &'static str {
        "One teleport reaches the noise equilibrium SGD needs many steps for; noise target against min-norm target"
    }

    fn run(&self, ctx: &Context<'_>) -> Result<Section> {
        let name = self.name();
        let cs = cases(ctx.quick);
        let mut out = Vec::new();
        for (k, c) in cs.iter().enumerate() {
            (ctx.progress)(k as u64, cs.len() as u64, c.label);
            out.push(run_case(ctx, c, k).map_err(|e| Error::Config(format!("{}: {e}", c.label)))?);
        }
        (ctx.progress)(cs.len() as u64, cs.len() as u64, "figures");

        let mut text = String::from(
            "Three models with indefinite symmetries, each pre-trained by GD from an imbalanced start (per-layer \
             init scales) to near a minimum of a finite Gaussian-teacher data set: a relu MLP 8-32-32-4 with biases \
             (rescalings), a deep linear net 10-16-16-10 (two double rotations; Σ_x and Σ_ε anisotropic the opposite \
             way) and the 30-40-30 linear net of fig2 (Σ_x = Σ_ε = I). From that point: one teleport to the \
             continuous-time noise equilibrium, one to the least-‖θ‖² point of the same orbits (Equi-normalization), \
             and SGD (S = 1). The distance to equilibrium is the largest single-orbit displacement: ¼|ln(a_j/b_j)| \
             per rescaling unit, ½‖ln P‖_F per linear pair (P M_out P = M_in). Sharpness: top Hessian eigenvalue \
             (Lanczos) and Hessian trace (Hutch++, same probes for the three points). SGD does not converge to the \
             equilibrium but fluctuates around it (and around its discrete-time version); the teleport lands on it \
             to round-off. The sharpness comparison is reported, not checked: the theory makes no claim about it \
             here.\n\n",
        );
        for o in &out {
            let ratio = |i: usize, a: &[f64; 3]| a[i] / a[0];
            text += &format!(
                "- **{}**: teleport {:.1} ms ({} sweeps, residual {:.1e}); SGD (η = {}) {}; its distance settles at \
                 {:.3} ({:.0}% of the initial; mean over the last quarter) and first comes within 1.5× of that after \
                 {:.0} steps ({:.1} ms) — {:.1} µs per step, so \
                 the teleport costs as much as {:.0} SGD steps. Tr Σ: original {:.4}, noise target {:.4} (×{:.3}), \
                 norm target {:.4} (×{:.3}). Top eigenvalue: {:.4} → noise {:.4} (×{:.3}), norm {:.4} (×{:.3}); \
                 Hessian trace: {:.4} → noise {:.4} (×{:.3}), norm {:.4} (×{:.3}). The noise target is {} than \
                 the norm target by its top eigenvalue.\n",
                o.label,
                1e3 * o.teleport_wall,
                o.noise.sweeps,
                o.noise.max_rel_residual,
                o.sgd_lr,
                match o.steps_to_eq {
                    Some(s) => format!(
                        "needs {s:.0} steps ({:.1} ms of steps, t = η·steps = {:.0}) to bring the distance below 10% \
                         of its initial {:.3}",
                        1e3 * s * o.sgd_step_wall,
                        s * o.sgd_lr,
                        o.dist[0].1
                    ),
                    None => format!(
                        "did not bring the distance below 10% of its initial {:.3} in {:.0} steps (final {:.3})",
                        o.dist[0].1,
                        o.dist.last().map_or(0.0, |p| p.0),
                        o.dist.last().map_or(f64::NAN, |p| p.1)
                    ),
                },
                o.floor,
                100.0 * o.floor / o.dist[0].1,
                o.steps_to_floor,
                1e3 * o.steps_to_floor * o.sgd_step_wall,
                1e6 * o.sgd_step_wall,
                o.teleport_wall / o.sgd_step_wall,
                o.trace_sigma[0],
                o.trace_sigma[1],
                ratio(1, &o.trace_sigma),
                o.trace_sigma[2],
                ratio(2, &o.trace_sigma),
                o.top[0],
                o.top[1],
                ratio(1, &o.top),
                o.top[2],
                ratio(2, &o.top),
                o.htrace[0],
                o.htrace[1],
                ratio(1, &o.htrace),
                o.htrace[2],
                ratio(2, &o.htrace),
                if o.top[1] < o.top[2] { "flatter" } else { "sharper" },
            );
        }
        let mut section = Section::new(name, text);

        // Figure 1: Tr Σ, top eigenvalue and Hessian trace relative to the original, per model.
        let xs_label =
            out.iter().enumerate().map(|(i, o)| format!("{i} = {}", o.label)).collect::<Vec<_>>().join(", ");
        let mut panels = Vec::new();
        for (title, get) in [
            (
                "Tr Σ (centred) / original",
                Box::new(|o: &Outcome| o.trace_sigma) as Box<dyn Fn(&Outcome) -> [f64; 3]>,
            ),
            ("top Hessian eigenvalue / original", Box::new(|o: &Outcome| o.top)),
            ("Hessian trace / original", Box::new(|o: &Outcome| o.htrace)),
        ] {
            let mut plot = Plot::new(title, "model index", "ratio to the original point");
            for (j, which) in ["original", "noise target", "norm target"].iter().enumerate() {
                let pts = out
                    .iter()
                    .enumerate()
                    .map(|(i, o)| {
                        let v = get(o);
                        (i as f64 + 0.1 * (j as f64 - 1.0), v[j] / v[0])
                    })
                    .collect();
                plot = plot.series(Series::markers(*which, pts).color(PALETTE[j]));
            }
            panels.push(plot.into());
        }
        // Figure 2 panel: distance under SGD with the teleport's cost marked.
        let mut plot = Plot::new(
            "Distance to the noise equilibrium under SGD",
            "SGD steps",
            "max single-orbit distance / initial",
        )
        .log(true, true);
        for (i, o) in out.iter().enumerate() {
            let color = PALETTE[(i + 3) % PALETTE.len()];
            let d0 = o.dist[0].1;
            let pts = o.dist.iter().map(|&(s, d)| (s, d / d0)).collect();
            plot = plot.series(Series::line(format!("{} (SGD)", o.label), pts).color(color));
            let x = (o.teleport_wall / o.sgd_step_wall).max(1.0);
            let lo = o.dist.iter().map(|p| p.1 / d0).filter(|v| *v > 0.0).fold(1.0, f64::min);
            plot = plot.series(
                Series::dashed(format!("{}: one teleport's wall time", o.label), vec![(x, lo), (x, 1.0)])
                    .color(color),
            );
        }
        panels.push(plot.into());
        let fig = Figure::grid("Teleport against training", panels, 2);
        section = section.figure(
            fig.save(&ctx.dir, "teleport_vs_training")?,
            format!(
                "Tr Σ, top Hessian eigenvalue and Hessian trace of the original point, the noise target and the \
             min-norm target, relative to the original (markers; model index {xs_label}); and the distance to the noise \
             equilibrium under SGD (relative to its initial value) against steps, with the wall time of one teleport \
             converted to SGD steps (dashed vertical line)."
            ),
        );

        for o in &out {
            let rel = |r: &TeleportReport| r.max_output_change / r.max_output_abs;
            section = section.check(
                Check::new(
                    name,
                    format!(
                    "{}: teleport keeps the function (max |Δf| / max |f|, worse of noise and norm target)",
                    o.label
                ),
                    1e-10,
                    rel(&o.noise).max(rel(&o.norm)),
                    0.0,
                    Rule::AtMost,
                )
                .tests(
                    "noether: teleport keeps the function and lowers Tr Σ (θ* minimises Tr Σ on the orbit)",
                ),
            );
            section = section.check(
                Check::new(
                    name,
                    format!(
                        "{}: Tr Σ(noise target) ≤ Tr Σ(norm target) (round-off 1e-9 relative){}",
                        o.label,
                        if o.noise.converged { "" } else { "; noise teleport NOT converged" }
                    ),
                    o.trace_sigma[2],
                    o.trace_sigma[1],
                    1e-9 * o.trace_sigma[2],
                    Rule::AtMost,
                )
                .tests("noether: the noise target lowers Tr Σ at least as much as the min-norm target"),
            );
            section = section.check(
                Check::new(
                    name,
                    format!("{}: Tr Σ after teleport ≤ Tr Σ before (round-off 1e-9 relative)", o.label),
                    o.trace_sigma[0],
                    o.trace_sigma[1],
                    1e-9 * o.trace_sigma[0],
                    Rule::AtMost,
                )
                .tests(
                    "noether: teleport keeps the function and lowers Tr Σ (θ* minimises Tr Σ on the orbit)",
                ),
            );
        }
        Ok(section)
    }
}

//! relaxation: the approach to the noise equilibrium. Near θ*, the orbit coordinate λ of one rescaling relaxes
//! exponentially under SGD, `λ(t) − λ* ∝ e^{−κt}` per unit time `t = η·steps`, with
//! `κ = (η/S)·Tr[A²Σ(θ*)]/‖Aθ*‖²` (DESIGN.md §1). For a rescaling A² is the identity on the unit's incoming ∪
//! outgoing parameters, so `Tr[A²Σ] = noise_in + noise_out` and `‖Aθ*‖² = ‖in‖² + ‖out‖²`.
//!
//! Setup: the rank-1 factorisation f(x) = u·(wᵀx) (d-1-d, identity, no bias), whose only continuous symmetry is
//! the rescaling (w, u) → (e^λ w, e^{−λ} u), on a finite Gaussian-teacher data set. θ* is the exact minimum (the
//! rank-1 reduced-rank regression solution) moved along its orbit to the continuous-time noise equilibrium; each
//! run starts at `e^{λ₀A}θ*`. λ(t) is read off the charge `C = ‖w‖² − ‖u‖²`, which is monotone along the orbit:
//! on the orbit through θ*, `C(λ) = p e^{2λ} − q e^{−2λ}` (p = ‖w*‖², q = ‖u*‖²), so
//! `λ = ½ ln((C + √(C² + 4pq)) / 2p)`. The rate is fitted to the ensemble mean λ̄(t) as `λ∞ + B e^{−κt}` on the
//! part of the run after λ̄ first falls below λ₀/2 (the near-linear regime).

use super::limit::{limit, LimitSpec};
use super::{Context, Experiment};
use crate::data::{save_dataset, Anisotropy, Dataset, Teacher, TeacherMap};
use crate::dynamics::{DataSpec, Method, TrainConfig, TrainData, Trainer};
use crate::equilibrium::double_rotation::{sym_eigen, sym_fn};
use crate::equilibrium::{generator_equilibrium, Time};
use crate::error::{Error, Result};
use crate::model::{Activation, Architecture, Flags, Init, ModelSpec};
use crate::net::save_dense;
use crate::report::document::Rule;
use crate::report::plot::PALETTE;
use crate::report::{Check, Figure, MetricsWriter, Plot, Section, Series};
use crate::stats::{moments, MomentOptions};
use crate::symmetry::Generator;
use crate::{Loss, Model};
use faer::Mat;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The experiment.
pub struct Relaxation;

/// Sizes of a full or quick run.
struct Params {
    /// Samples in the data set.
    n: usize,
    /// Seeds per ensemble.
    seeds: usize,
    /// Initial displacement along the orbit.
    lambda0: f64,
    /// Base point of the sweeps (η, S, d).
    base: (f64, usize, usize),
    etas: Vec<f64>,
    batches: Vec<usize>,
    widths: Vec<usize>,
    /// Run length in units of the predicted relaxation time 1/κ.
    horizon: f64,
    /// Logged points per run.
    points: u64,
    /// Teacher strength s in V = s·e₁e₁ᵀ.
    signal: f64,
}

impl Params {
    fn new(quick: bool) -> Self {
        Params {
            n: 1000,
            seeds: if quick { 32 } else { 128 },
            lambda0: 0.4,
            base: (0.01, 1, 8),
            etas: vec![0.005, 0.01, 0.02],
            batches: vec![1, 2, 4],
            widths: vec![4, 8, 16],
            horizon: if quick { 5.0 } else { 6.0 },
            points: 200,
            signal: 2.0,
        }
    }
}

/// One width's data set, its equilibrium θ* and the predicted rate ingredients.
struct Problem {
    d: usize,
    data: Dataset<f64>,
    /// θ* (continuous-time noise equilibrium on the orbit of the exact minimum).
    star: Model<f64>,
    /// ‖w*‖², ‖u*‖².
    p: f64,
    q: f64,
    /// Incoming and outgoing noise at θ* (centred Σ, 1/N).
    noise_in: f64,
    noise_out: f64,
    /// ‖∇L(θ*)‖ / ‖θ*‖ and |Tr[AΣ(θ*)]| / Tr[A²Σ(θ*)] (both should be at round-off).
    grad_rel: f64,
    flow_rel: f64,
    /// Files the configs refer to.
    data_path: std::path::PathBuf,
    start_path: std::path::PathBuf,
}

impl Problem {
    /// `Tr[A²Σ(θ*)]/‖Aθ*‖²`: the predicted κ divided by η/S.
    fn rate_per_noise(&self) -> f64 {
        (self.noise_in + self.noise_out) / (self.p + self.q)
    }
    /// λ on the orbit through θ* with charge C (λ = 0 at θ*).
    fn lambda_of_charge(&self, c: f64) -> f64 {
        0.5 * ((c + (c * c + 4.0 * self.p * self.q).sqrt()) / (2.0 * self.p)).ln()
    }
}

/// Membership test of a sweep panel.
type Member = dyn Fn(&Point) -> bool;

const RESCALE: Generator = Generator::Rescale { layer: 0, unit: 0 };

fn arch(d: usize) -> Result<Architecture> {
    Architecture::mlp(&[d, 1, d], Activation::Identity, false)
}

/// The data set of width d, the exact rank-1 minimum moved to its noise equilibrium, and the start
/// `e^{λ₀A}θ*` saved for the configs.
fn problem(ctx: &Context<'_>, p: &Params, d: usize) -> Result<Problem> {
    let mut rng = ChaCha8Rng::seed_from_u64(ctx.seed ^ (0x7e1a_0000 + d as u64));
    let teacher = teacher(p, d);
    let data: Dataset<f64> = teacher.build(d, d, &mut rng)?.sample(p.n, &mut rng);
    // Rank-1 reduced-rank regression: B = Σ̂_yx Σ̂_xx⁻¹, v the top eigenvector of B Σ̂_xx Bᵀ, M = v vᵀ B.
    let n = p.n as f64;
    let x = data.x.as_ref();
    let crate::data::Targets::Dense(y) = &data.y else { unreachable!("teacher data are dense") };
    let sxx: Mat<f64> = (x.transpose() * x) * faer::Scale(1.0 / n);
    let syx: Mat<f64> = (y.transpose() * x) * faer::Scale(1.0 / n);
    let (ux, sx) = sym_eigen(&sxx)?;
    let sxx_inv = sym_fn(&ux, &sx, |v| 1.0 / v);
    let b = &syx * &sxx_inv;
    let fitted = &b * &sxx * b.transpose();
    let (uf, sf) = sym_eigen(&fitted)?;
    let top = (0..d).max_by(|&i, &j| sf[i].total_cmp(&sf[j])).unwrap_or(0);
    let v: Vec<f64> = (0..d).map(|i| uf[(i, top)]).collect();
    let wvec: Vec<f64> = (0..d).map(|j| (0..d).map(|i| v[i] * b[(i, j)]).sum()).collect();
    let c = wvec.iter().map(|a| a * a).sum::<f64>().sqrt().sqrt();
    let mut params: Vec<f64> = wvec.iter().map(|a| a / c).collect();
    params.extend(v.iter().map(|a| a * c));
    let mut star = Model::from_params(arch(d)?, params)?;
    // Move along the orbit to the continuous-time noise equilibrium.
    let mopts = MomentOptions { elementwise: false, pair_grams: false, chunk: 4096 };
    let m = moments(&star, &data, Loss::Mse, &mopts)?;
    let lam = generator_equilibrium(&m, &RESCALE, Time::Continuous)?.lambda().ok_or_else(|| {
        Error::Config(format!("width {d}: the rescaling has no finite noise equilibrium at the minimum"))
    })?;
    RESCALE.act_in_place(&star.arch, &mut star.params, lam);
    let m = moments(&star, &data, Loss::Mse, &mopts)?;
    let (noise_in, noise_out) = (m.noise_in(0, 0, true), m.noise_out(0, 0, true));
    let grad_norm = m.grad.iter().map(|g| g * g).sum::<f64>().sqrt();
    let theta_norm = star.params.iter().map(|g| g * g).sum::<f64>().sqrt();
    let wsq: f64 = star.params[star.arch.weight_range(0)].iter().map(|a| a * a).sum();
    let usq: f64 = star.params[star.arch.weight_range(1)].iter().map(|a| a * a).sum();
    let mut start = star.clone();
    RESCALE.act_in_place(&start.arch, &mut start.params, p.lambda0);
    std::fs::create_dir_all(&ctx.dir).map_err(|e| Error::io(&ctx.dir, e))?;
    let data_path = ctx.dir.join(format!("data_d{d}.safetensors"));
    let start_path = ctx.dir.join(format!("start_d{d}.safetensors"));
    save_dataset(&data, &data_path)?;
    save_dense::<f64, f64>(&start, &start_path)?;
    Ok(Problem {
        d,
        data,
        star,
        p: wsq,
        q: usq,
        noise_in,
        noise_out,
        grad_rel: grad_norm / theta_norm,
        flow_rel: (noise_in - noise_out).abs() / (noise_in + noise_out),
        data_path,
        start_path,
    })
}

fn teacher(p: &Params, d: usize) -> Teacher {
    let v = (0..d).map(|i| (0..d).map(|j| if i == 0 && j == 0 { p.signal } else { 0.0 }).collect()).collect();
    Teacher {
        sigma_x: Anisotropy::isotropic(1.0),
        sigma_eps: Anisotropy::isotropic(1.0),
        map: TeacherMap::Given(v),
    }
}

/// The config of one ensemble member (repeatable with `noether train`: model and data from the saved files).
fn config(prob: &Problem, seed: u64, eta: f64, s: usize, steps: u64, every: u64) -> TrainConfig {
    let model = ModelSpec {
        dims: vec![prob.d, 1, prob.d],
        activation: Activation::Identity,
        activations: None,
        bias: Flags::All(false),
        norm_layers: vec![],
        init: Init::File(prob.start_path.clone()),
        layer_scales: vec![],
    };
    let sgd = Method::Sgd { batch_size: s, sampling: crate::data::Sampling::WithReplacement };
    TrainConfig::new(model, sgd, eta, steps)
        .with_seed(seed)
        .with_log_every(every)
        .with_data(DataSpec::File { path: prob.data_path.clone() })
        .with_observe(crate::dynamics::ObserveSpec {
            pair_entries: 0,
            unit_charges: true,
            ..Default::default()
        })
}

/// One sweep point: its ensemble-mean trajectory and the fitted and predicted rates.
struct Point {
    eta: f64,
    s: usize,
    d: usize,
    /// (t, λ̄(t), standard error of λ̄).
    traj: Vec<(f64, f64, f64)>,
    kappa_pred: f64,
    kappa_meas: f64,
    lambda_inf: f64,
    /// Start time of the fit window.
    t_fit: f64,
    diverged: usize,
    /// Standard deviation of λ across the ensemble, root-mean-square over the last fifth of the run.
    tail_std: f64,
}

fn run_point(
    ctx: &Context<'_>,
    p: &Params,
    prob: &Problem,
    eta: f64,
    s: usize,
    lambda0: f64,
) -> Result<Point> {
    let kappa_pred = eta / s as f64 * prob.rate_per_noise();
    let steps = (p.horizon / kappa_pred / eta).ceil() as u64;
    let every = (steps / p.points).max(1);
    let stem = if lambda0 == p.lambda0 {
        format!("eta{eta}_S{s}_d{}", prob.d)
    } else {
        format!("eta{eta}_S{s}_d{}_from_star", prob.d)
    };
    if lambda0 == p.lambda0 {
        let cfg0 = config(prob, ctx.seed, eta, s, steps, every);
        let cfg_path = ctx.dir.join(format!("{stem}.toml"));
        std::fs::write(&cfg_path, cfg0.to_toml()).map_err(|e| Error::io(&cfg_path, e))?;
    }
    let rows = (steps / every + 1) as usize;
    let (mut sum, mut sum2) = (vec![0.0; rows], vec![0.0; rows]);
    let mut members = 0usize;
    let mut diverged = 0;
    for k in 0..p.seeds {
        let seed = ctx.seed + k as u64;
        let cfg = config(prob, seed, eta, s, steps, every);
        let mut start = prob.star.clone();
        RESCALE.act_in_place(&start.arch, &mut start.params, lambda0);
        let mut tr =
            Trainer::new(start, TrainData::Finite(prob.data.clone()), &cfg, ChaCha8Rng::seed_from_u64(seed))?;
        let mut lam = vec![0.0; rows];
        let mut ok = true;
        for r in 0..rows {
            if r > 0 {
                for _ in 0..every {
                    if tr.step().is_err() {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                break;
            }
            lam[r] = prob.lambda_of_charge(RESCALE.charge(&tr.model.arch, &tr.model.params));
        }
        if !ok || lam.iter().any(|v| !v.is_finite()) {
            diverged += 1;
            continue;
        }
        members += 1;
        for r in 0..rows {
            sum[r] += lam[r];
            sum2[r] += lam[r] * lam[r];
        }
    }
    if members < 2 {
        return Err(Error::Config(format!("{stem}: {diverged} of {} runs diverged", p.seeds)));
    }
    let m = members as f64;
    let traj: Vec<(f64, f64, f64)> = (0..rows)
        .map(|r| {
            let mean = sum[r] / m;
            let var = (sum2[r] / m - mean * mean).max(0.0) * m / (m - 1.0);
            ((r as u64 * every) as f64 * eta, mean, (var / m).sqrt())
        })
        .collect();
    let mut w =
        MetricsWriter::create(ctx.dir.join(format!("{stem}.csv")), &["t", "lambda_mean", "lambda_stderr"])?;
    for &(t, l, e) in &traj {
        w.row(&[t, l, e])?;
    }
    let start = traj.iter().position(|&(_, l, _)| l <= 0.5 * lambda0).unwrap_or(traj.len());
    let window = &traj[start.min(traj.len().saturating_sub(3))..];
    let (kappa_meas, lambda_inf) = fit_exponential(window, kappa_pred);
    let t_fit = window[0].0;
    let tail = &traj[traj.len() * 4 / 5..];
    let tail_std = (tail.iter().map(|r| r.2 * r.2 * m).sum::<f64>() / tail.len() as f64).sqrt();
    Ok(Point { eta, s, d: prob.d, traj, kappa_pred, kappa_meas, lambda_inf, t_fit, diverged, tail_std })
}

/// Least-squares fit of `y = c + B e^{−κ(t − t₀)}` to `(t, y, ·)` points: for each κ the linear part (c, B) is
/// solved in closed form; κ minimises the residual, searched on a log grid over `[κ₀/30, 30κ₀]` and refined by
/// golden section. Returns (κ, c).
pub fn fit_exponential(pts: &[(f64, f64, f64)], kappa0: f64) -> (f64, f64) {
    let t0 = pts[0].0;
    let solve = |k: f64| -> (f64, f64, f64) {
        let (mut s1, mut se, mut see, mut sy, mut sey) = (0.0, 0.0, 0.0, 0.0, 0.0);
        for &(t, y, _) in pts {
            let e = (-k * (t - t0)).exp();
            s1 += 1.0;
            se += e;
            see += e * e;
            sy += y;
            sey += e * y;
        }
        let det = s1 * see - se * se;
        let c = (see * sy - se * sey) / det;
        let b = (s1 * sey - se * sy) / det;
        let sse = pts.iter().map(|&(t, y, _)| (y - c - b * (-k * (t - t0)).exp()).powi(2)).sum();
        (sse, c, b)
    };
    let (lo, hi) = ((kappa0 / 30.0).ln(), (kappa0 * 30.0).ln());
    let grid = 400;
    let at = |i: usize| lo + (hi - lo) * i as f64 / grid as f64;
    let best = (0..=grid).min_by(|&i, &j| solve(at(i).exp()).0.total_cmp(&solve(at(j).exp()).0)).unwrap_or(0);
    let (mut a, mut b) = (at(best.saturating_sub(1)), at((best + 1).min(grid)));
    let g = 0.5 * (5f64.sqrt() - 1.0);
    for _ in 0..100 {
        let (x1, x2) = (b - g * (b - a), a + g * (b - a));
        if solve(x1.exp()).0 < solve(x2.exp()).0 {
            b = x2;
        } else {
            a = x1;
        }
    }
    let k = (0.5 * (a + b)).exp();
    (k, solve(k).1)
}

impl Experiment for Relaxation {
    fn name(&self) -> &'static str {
        "relaxation"
    }
    fn description(&self) -> &'static str {
        "Near the noise equilibrium λ relaxes as e^{−κt} with κ = (η/S)·Tr[A²Σ]/‖Aθ*‖²"
    }

    fn run(&self, ctx: &Context<'_>) -> Result<Section> {
        let name = self.name();
        let p = Params::new(ctx.quick);
        let (eta0, s0, d0) = p.base;
        // Sweep points (η, S, d), the base point once.
        let mut plan: Vec<(f64, usize, usize)> = Vec::new();
        let mut add = |q: (f64, usize, usize)| {
            if !plan.contains(&q) {
                plan.push(q);
            }
        };
        p.etas.iter().for_each(|&e| add((e, s0, d0)));
        p.batches.iter().for_each(|&s| add((eta0, s, d0)));
        p.widths.iter().for_each(|&d| add((eta0, s0, d)));
        let total = plan.len() as u64;
        let mut problems: Vec<Problem> = Vec::new();
        for &d in &p.widths {
            problems.push(problem(ctx, &p, d)?);
        }
        let mut points = Vec::new();
        for (i, &(eta, s, d)) in plan.iter().enumerate() {
            (ctx.progress)(i as u64, total, &format!("η = {eta}, S = {s}, d = {d}"));
            let prob = problems.iter().find(|q| q.d == d).expect("every width has a problem");
            points.push(run_point(ctx, &p, prob, eta, s, p.lambda0)?);
        }
        // Diagnostic: the η sweep started at θ* itself. Where λ̄ settles (mean over the last fifth of the run) is
        // the equilibrium of discrete SGD, against λ* = 0 of the continuous-time theory.
        let mut settled = Vec::new();
        let mut spread = Vec::new();
        for &eta in &p.etas {
            (ctx.progress)(total, total, &format!("from θ*, η = {eta}"));
            let prob = problems.iter().find(|q| q.d == d0).expect("base width has a problem");
            let q = run_point(ctx, &p, prob, eta, s0, 0.0)?;
            let tail = &q.traj[q.traj.len() * 4 / 5..];
            settled.push((eta, tail.iter().map(|r| r.1).sum::<f64>() / tail.len() as f64));
            spread.push((eta, q.tail_std));
        }
        (ctx.progress)(total, total, "figures");
        // η/S → 0 extrapolation of κ_meas/κ_pred over the η and S sweeps (linear least squares in x = η/S).
        let xy: Vec<(f64, f64)> = points
            .iter()
            .filter(|q| q.d == d0)
            .map(|q| (q.eta / q.s as f64, q.kappa_meas / q.kappa_pred))
            .collect();
        let (mx, my) = (
            xy.iter().map(|v| v.0).sum::<f64>() / xy.len() as f64,
            xy.iter().map(|v| v.1).sum::<f64>() / xy.len() as f64,
        );
        let slope = xy.iter().map(|v| (v.0 - mx) * (v.1 - my)).sum::<f64>()
            / xy.iter().map(|v| (v.0 - mx).powi(2)).sum::<f64>();
        let intercept = my - slope * mx;

        let worst_grad = problems.iter().map(|q| q.grad_rel).fold(0.0, f64::max);
        let worst_flow = problems.iter().map(|q| q.flow_rel).fold(0.0, f64::max);
        let mut section = Section::new(
            name,
            format!(
                "Rank-1 factorisation f(x) = u·(wᵀx), widths d-1-d (no bias), on N = {n} samples of x ~ N(0, I), \
                 y = Vx + ε, V = {s}·e₁e₁ᵀ, ε ~ N(0, I). θ* is the exact minimum (rank-1 reduced-rank regression; \
                 ‖∇L‖/‖θ‖ ≤ {g:.1e}) moved along its rescaling orbit to the continuous-time noise equilibrium \
                 (|Tr[AΣ]|/Tr[A²Σ] ≤ {f:.1e}). Every run starts at e^{{λ₀A}}θ* with λ₀ = {l0} and runs SGD (with \
                 replacement) for {h} predicted relaxation times; λ(t) is read off the charge C = ‖w‖² − ‖u‖² on \
                 the orbit through θ*, averaged over {k} seeds. The rate κ is the least-squares fit of \
                 λ̄(t) = λ∞ + B·e^{{−κt}} after λ̄ first falls below λ₀/2; the prediction is \
                 κ = (η/S)·(noise_in + noise_out)/(‖w*‖² + ‖u*‖²) at θ*. Sweeps around η = {eta0}, S = {s0}, \
                 d = {d0}. Each point's config (seed = first member) and ensemble mean are beside the figures.\n\n\
                 Finite-step effects. The measured rate exceeds the prediction by a fraction that grows with η/S: \
                 {ratios}. A straight-line fit of κ_meas/κ_pred against η/S over the η and S sweeps has intercept \
                 {intercept:.3} at η/S → 0 (slope {slope:.1}): the prediction is the small-step limit. Discrete SGD \
                 also does not settle at the continuous-time equilibrium λ* = 0: runs started at θ* itself drift to \
                 λ̄ = {settled} (mean over the last fifth), close to the fitted λ∞ of the displaced runs ({lam_inf}). Both are \
                 the discrete-time corrections: the per-step drift of C is η²(Tr[AΣ]/S + ∇LᵀA∇L), and SGD's \
                 fluctuations off the minimum make the second term (and the change of Σ off the minimum) a \
                 λ-dependent O(η·curvature/S) addition to the Noether flow, which moves the equilibrium and \
                 steepens the restoring force. The rows compare each η/S with the continuous prediction as reported \
                 measurements; the claims are tested as limits η/S → 0 (below).",
                n = p.n,
                s = p.signal,
                g = worst_grad,
                f = worst_flow,
                l0 = p.lambda0,
                h = p.horizon,
                k = p.seeds,
                ratios = points
                    .iter()
                    .filter(|q| q.d == d0)
                    .map(|q| format!("{:.3} at η/S = {}", q.kappa_meas / q.kappa_pred, q.eta / q.s as f64))
                    .collect::<Vec<_>>()
                    .join(", "),
                lam_inf = points
                    .iter()
                    .filter(|q| q.s == s0 && q.d == d0)
                    .map(|q| format!("{:.4}", q.lambda_inf))
                    .collect::<Vec<_>>()
                    .join(", "),
                settled = settled
                    .iter()
                    .map(|(e, l)| format!("{l:.4} at η = {e}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        );

        // Figure: three sweep panels and the scatter.
        let label = |q: &Point, which: usize| match which {
            0 => format!("η = {}", q.eta),
            1 => format!("S = {}", q.s),
            _ => format!("d = {}", q.d),
        };
        let mut panels = Vec::new();
        let sweeps: [(&str, Box<Member>); 3] = [
            ("η sweep", Box::new(move |q: &Point| q.s == s0 && q.d == d0)),
            ("S sweep", Box::new(move |q: &Point| q.eta == eta0 && q.d == d0)),
            ("width sweep", Box::new(move |q: &Point| q.eta == eta0 && q.s == s0)),
        ];
        for (w, (title, member)) in sweeps.iter().enumerate() {
            let mut plot =
                Plot::new(format!("{title}: ensemble mean |λ(t) − λ*|"), "t = η·steps", "|λ̄(t) − λ*|")
                    .log(false, true);
            for (c, q) in points.iter().filter(|q| member(q)).enumerate() {
                let color = PALETTE[c % PALETTE.len()];
                let pts = q.traj.iter().map(|&(t, l, _)| (t, l.abs())).collect();
                plot = plot.series(Series::line(format!("SGD {}", label(q, w)), pts).color(color));
                let (t0, l0) =
                    q.traj.iter().find(|r| r.0 >= q.t_fit).map(|r| (r.0, r.1)).unwrap_or((0.0, 0.0));
                let tend = q.traj.last().map_or(t0, |r| r.0);
                let theory = (0..=50)
                    .map(|i| {
                        let t = t0 + (tend - t0) * i as f64 / 50.0;
                        (t, l0 * (-q.kappa_pred * (t - t0)).exp())
                    })
                    .collect();
                plot = plot.series(Series::dashed(format!("theory {}", label(q, w)), theory).color(color));
            }
            panels.push(plot.into());
        }
        let scatter =
            Plot::new("Measured against predicted rate", "predicted κ (per unit time)", "measured κ")
                .log(true, true)
                .diagonal()
                .series(Series::markers(
                    "SGD",
                    points.iter().map(|q| (q.kappa_pred, q.kappa_meas)).collect(),
                ));
        panels.push(scatter.into());
        let fig = Figure::grid("Relaxation to the noise equilibrium", panels, 2);
        section = section.figure(
            fig.save(&ctx.dir, "relaxation")?,
            "Ensemble-mean distance |λ̄(t) − λ*| from the noise equilibrium (λ* = 0 at θ*) against t = η·steps for \
             the η, S and width sweeps, with the predicted e^{−κt} (dashed, anchored where the fit starts); and the \
             fitted rate against the predicted one for every point (grey: y = x).",
        );

        // Finite-η rows: the continuous κ compared with one η/S is a measurement of the finite-step effect, not a
        // test of the theory (docs/finite_step.md); the claim is the limit below.
        for q in &points {
            let ratio = q.kappa_meas / q.kappa_pred;
            section = section.check(
                Check::new(
                    name,
                    format!(
                        "finite η/S = {}: κ_meas/κ_pred at η = {}, S = {}, d = {} (κ_pred = {:.4}, κ_meas = {:.4} per \
                         unit time; fitted λ∞ = {:.4}{})",
                        q.eta / q.s as f64,
                        q.eta,
                        q.s,
                        q.d,
                        q.kappa_pred,
                        q.kappa_meas,
                        q.lambda_inf,
                        if q.diverged > 0 { format!("; {} runs diverged", q.diverged) } else { String::new() }
                    ),
                    1.0,
                    ratio,
                    0.0,
                    Rule::Absolute,
                )
                .measurement(),
            );
        }
        let r: Vec<f64> =
            points.iter().filter(|q| q.d == d0).map(|q| q.kappa_meas / (q.eta / q.s as f64)).collect();
        let mean = r.iter().sum::<f64>() / r.len() as f64;
        let dev = r.iter().map(|v| (v / mean - 1.0).abs()).fold(0.0, f64::max);
        section = section.check(
            Check::new(
                name,
                format!(
                    "finite η/S: spread of κ_meas/(η/S) over the η and S sweeps, max |r/r̄ − 1| (r̄ = {mean:.3}, \
                     continuous prediction Tr[A²Σ]/‖Aθ*‖² = {:.3})",
                    problems.iter().find(|q| q.d == d0).map_or(f64::NAN, |q| q.rate_per_noise())
                ),
                0.0,
                dev,
                0.0,
                Rule::AtMost,
            )
            .measurement(),
        );
        // The claims as limits η/S → 0 (orders and tolerances fixed in docs/finite_step.md before measuring).
        let base: Vec<&Point> = points.iter().filter(|q| q.d == d0).collect();
        let x: Vec<f64> = base.iter().map(|q| q.eta / q.s as f64).collect();
        let claim_kappa =
            "paper: λ relaxes to the noise equilibrium at κ = (η/S)·Tr[A²Σ(θ*)]/‖Aθ*‖² (continuous time)";
        let claim_eq =
            "paper: the noise equilibrium λ* of the continuous-time Noether flow is where SGD settles";
        let limits = [
            limit(
                LimitSpec {
                    quantity: "κ_meas/κ_pred".into(),
                    variable: "η/S".into(),
                    order: 1.0,
                    reason: "the O(η/S) finite-step terms of the Noether flow change its slope at λ*".into(),
                    order_tol: 0.3,
                    predicted: 1.0,
                    limit_tol: 0.1,
                    tests: claim_kappa.into(),
                },
                &x,
                &base.iter().map(|q| q.kappa_meas / q.kappa_pred).collect::<Vec<_>>(),
                None,
            )?,
            limit(
                LimitSpec {
                    quantity: "fitted λ∞".into(),
                    variable: "η/S".into(),
                    order: 1.0,
                    reason: "the O(η/S) finite-step terms of the Noether flow shift its zero".into(),
                    order_tol: 0.3,
                    predicted: 0.0,
                    limit_tol: 0.01,
                    tests: claim_eq.into(),
                },
                &x,
                &base.iter().map(|q| q.lambda_inf).collect::<Vec<_>>(),
                None,
            )?,
            limit(
                LimitSpec {
                    quantity: format!("std of λ across the ensemble started at θ* (S = {s0})"),
                    variable: "η".into(),
                    order: 1.0,
                    reason: "OU for λ: per-step noise O(η²) against per-step decay O(η²/S)".into(),
                    order_tol: 0.3,
                    predicted: 0.0,
                    limit_tol: 0.01,
                    tests: "noether: the charge's stationary fluctuation around λ* vanishes as η → 0 (OU)"
                        .into(),
                },
                &spread.iter().map(|v| v.0).collect::<Vec<_>>(),
                &spread.iter().map(|v| v.1).collect::<Vec<_>>(),
                None,
            )?,
        ];
        let mut lpanels = Vec::new();
        for l in &limits {
            for c in l.checks(name, ctx.quick) {
                section = section.check(c);
            }
            lpanels.push(l.plot(format!("{} → {}", l.spec.quantity, l.spec.predicted)).into());
        }
        section = section.figure(
            Figure::grid("Relaxation: deviations from the continuous prediction against the step size", lpanels, 3)
                .save(&ctx.dir, "limits")?,
            "Log–log: |κ_meas/κ_pred − 1| and |λ∞| against η/S over the η and S sweeps, and the ensemble spread \
             of λ from θ* against η; solid: least-squares power law, dashed: the expected order through the points.",
        );
        section.text.push_str(&format!(
            "\n\nLimits (docs/finite_step.md): {}.",
            limits
                .iter()
                .map(|l| format!(
                    "{} shrinks at order {:.2} ± {:.2} in {} (expected {}) and extrapolates to {:.4} ± {:.4} \
                     (predicted {})",
                    l.spec.quantity,
                    l.fit.order,
                    l.fit.order_se,
                    l.spec.variable,
                    l.spec.order,
                    l.extrapolation.limit,
                    l.extrapolation.limit_se,
                    l.spec.predicted
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
        Ok(section)
    }
}

#[cfg(test)]
mod tests {
    use super::fit_exponential;

    #[test]
    fn fit_recovers_rate_and_offset() {
        let pts: Vec<(f64, f64, f64)> =
            (0..200).map(|i| i as f64 * 0.1).map(|t| (t, 0.03 + 0.5 * (-0.37 * t).exp(), 0.0)).collect();
        let (k, c) = fit_exponential(&pts, 1.0);
        assert!((k - 0.37).abs() < 1e-6 * 0.37, "κ = {k}");
        assert!((c - 0.03).abs() < 1e-6, "c = {c}");
    }
}

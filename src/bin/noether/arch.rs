//! The module-tree (`--arch`) side of `symmetries`, `analyze`, `teleport` and `sharpness`: a model given by an
//! architecture file (or a file noether wrote, which carries its architecture) runs on `noether::net`.

use crate::sharpness::{largest_safe_lambda, print_orbit, Point};
use anyhow::{bail, Context, Result};
use noether::curvature::{
    exact_trace, hutch_plus_plus_trace, hutchinson_trace, lanczos_eigenvalues, Curvature, LanczosOptions,
    LinearOperator, NetHessian, Sharpness, TraceMethod,
};
use noether::data::load_dataset_shaped;
use noether::equilibrium::net::{net_analysis, pair_grams, pair_reports, NetAnalysis, NetPairReport};
use noether::equilibrium::net_teleport::{net_teleport, NetTeleportOptions};
use noether::equilibrium::teleport::TeleportTarget;
use noether::equilibrium::{Status, Time};
use noether::net::{load_net, save_net, Net, NetArch};
use noether::report::exporter::Exports;
use noether::report::records::{NetSymmetryRecord, SharpnessRecord};
use noether::stats::net::{net_moments_with, GramSpec, MomentPath};
use noether::symmetry::channels::{enumerate, DiagSymmetry, Family};
use noether::symmetry::linear_pairs::{pairs, LinearPair, PairGenerator};
use noether::{Dataset, Loss};
use rand::SeedableRng;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// The model as a module tree when `--arch` is given or the file carries a `noether.arch` that is not a plain
/// dense chain; `None` for a dense-chain file, with or without its architecture (the MLP path, which adds double
/// rotations and reads the stored activations and normalisations).
pub fn net_model(model: &Path, arch: Option<&Path>) -> Result<Option<Net<f64>>> {
    let arch = match arch {
        Some(p) => {
            let given =
                NetArch::load(p).with_context(|| format!("reading the architecture {}", p.display()))?;
            let stored =
                noether::net::stored_arch(model).with_context(|| format!("reading {}", model.display()))?;
            if let Some(stored) = stored.filter(|s| s.to_toml() != given.to_toml()) {
                let first = first_difference(stored.to_toml(), given.to_toml());
                bail!(
                    "--arch {}: the model file {} carries a different architecture (`noether.arch` in its \
                     metadata; first difference: {first}); the file's own architecture is the one its weights \
                     were written for: drop --arch",
                    p.display(),
                    model.display()
                );
            }
            given
        }
        None => {
            match noether::net::stored_arch(model).with_context(|| format!("reading {}", model.display()))? {
                Some(a) if a.dense_chain().is_none() => a,
                _ => return Ok(None),
            }
        }
    };
    let net = load_net::<f64>(model, Some(&arch))
        .with_context(|| format!("loading the model from {}", model.display()))?;
    Ok(Some(net))
}

/// The first line where two architecture texts differ, as `file: … / --arch: …`.
fn first_difference(stored: &str, given: &str) -> String {
    let (mut a, mut b) = (stored.lines(), given.lines());
    loop {
        match (a.next(), b.next()) {
            (Some(x), Some(y)) if x == y => continue,
            (x, y) => {
                return format!("file `{}`, --arch `{}`", x.unwrap_or("(end)"), y.unwrap_or("(end)"));
            }
        }
    }
}

/// Refuses the dense-chain flags that an architecture file replaces.
pub fn refuse_dense_flags(activation: Option<&str>, norm_layers: &[usize]) -> Result<()> {
    if activation.is_some() {
        bail!("--activation does not apply to a model with an architecture (--arch or a file noether wrote): the architecture names every module's activation");
    }
    if !norm_layers.is_empty() {
        bail!("--norm-layers does not apply to a model with an architecture: add an `rms_norm` module to the architecture instead");
    }
    Ok(())
}

/// Loads the data for `net` and checks it fits (`x` as [N, *input] or [N, d], targets for `loss`).
pub fn load_data(net: &Net<f64>, path: &Path, loss: Loss) -> Result<Dataset<f64>> {
    let (data, shape) = load_dataset_shaped::<f64>(path)
        .with_context(|| format!("loading the data from {}", path.display()))?;
    net.check_data(&data, Some(&shape), loss)
        .with_context(|| format!("{} does not fit the model", path.display()))?;
    Ok(data)
}

/// One symmetry of `noether symmetries --json` on a module tree.
#[derive(Serialize)]
struct SymEntry<'a> {
    /// `rescale`, `scale` or `double_rotation`.
    family: &'static str,
    module: &'a str,
    unit: Option<usize>,
    /// A number for rescale and scale; the d×d matrix charge `W₁W₁ᵀ + b₁b₁ᵀ − W₂ᵀW₂` as rows for a double
    /// rotation (as for a dense chain).
    charge: serde_json::Value,
    /// Frobenius norm of the matrix charge (double rotation only).
    #[serde(skip_serializing_if = "Option::is_none")]
    charge_fro: Option<f64>,
    writers: Vec<&'a str>,
    readers: Vec<&'a str>,
    n_in: usize,
    n_out: usize,
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn family_str(f: Family) -> &'static str {
    if f == Family::Rescale {
        "rescale"
    } else {
        "scale"
    }
}

fn mat_rows(m: &faer::Mat<f64>) -> serde_json::Value {
    let rows: Vec<Vec<f64>> = (0..m.nrows()).map(|i| (0..m.ncols()).map(|j| m[(i, j)]).collect()).collect();
    serde_json::json!(rows)
}

/// `noether symmetries` on a module tree: channel classes, scale blocks, then linear pairs.
pub fn symmetries(net: &Net<f64>, json: bool, (exports, config): (&Exports, &impl Serialize)) -> Result<()> {
    let syms = enumerate(&net.arch);
    let prs = pairs(&net.arch);
    let records: Vec<NetSymmetryRecord> = syms
        .iter()
        .map(|s| NetSymmetryRecord::of_symmetry(s, &net.params))
        .chain(prs.iter().map(|p| NetSymmetryRecord::of_pair(p, &net.params)))
        .collect();
    crate::common::export(exports, "symmetries", config, None, &records)?;
    if exports.to_stdout() {
        return Ok(());
    }
    let mut entries: Vec<SymEntry> = syms
        .iter()
        .map(|s| {
            let (n_in, n_out) = s.counts();
            SymEntry {
                family: family_str(s.family),
                module: &s.module,
                unit: s.unit,
                charge: s.charge(&net.params).into(),
                charge_fro: None,
                writers: strs(&s.writers),
                readers: strs(&s.readers),
                n_in,
                n_out,
            }
        })
        .collect();
    for p in &prs {
        let (n_in, n_out) = p.counts();
        let m = p.matrix_charge(&net.params);
        entries.push(SymEntry {
            family: "double_rotation",
            module: &p.module,
            unit: None,
            charge: mat_rows(&m),
            charge_fro: Some(m.norm_l2()),
            writers: vec![&p.module],
            readers: vec![&p.reader],
            n_in,
            n_out,
        });
    }
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &serde_json::json!({ "symmetries": entries }))?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "{} modules, {} parameters, {} symmetries",
        net.arch.walk().len(),
        net.arch.n_params(),
        entries.len()
    )?;
    writeln!(out, "{:<15} {:<14} {:>5} {:>16}  writers → readers", "family", "module", "unit", "charge")?;
    for e in &entries {
        let unit = e.unit.map_or("-".into(), |u| u.to_string());
        let charge = match e.charge_fro {
            Some(f) => format!("‖·‖_F {f:.6e}"),
            None => format!("{:.6e}", e.charge.as_f64().unwrap_or(f64::NAN)),
        };
        writeln!(
            out,
            "{:<15} {:<14} {unit:>5} {charge:>16}  {} → {}",
            e.family,
            e.module,
            e.writers.join(" "),
            e.readers.join(" ")
        )?;
    }
    Ok(())
}

/// One symmetry of `noether analyze --json` on a module tree.
#[derive(Serialize)]
struct Neuron<'a> {
    family: Family,
    module: &'a str,
    unit: Option<usize>,
    charge: f64,
    noise_in: f64,
    noise_out: f64,
    tr_a_sigma: f64,
    /// Predicted Noether flow per unit time, `(η/S)·Tr[AΣ]`.
    dc_dt_per_time: f64,
    lambda_star: Option<f64>,
    status: Status,
    writers: &'a [String],
    readers: &'a [String],
    n_in: usize,
    n_out: usize,
}

#[derive(Serialize)]
struct AnalyzeDoc<'a> {
    loss: f64,
    trace_sigma: f64,
    n_samples: usize,
    n_params: usize,
    time: Time,
    lr: f64,
    batch_size: usize,
    neurons: Vec<Neuron<'a>>,
    /// Double rotation of every linear pair (the dense chain's `pairs` fields, named by module).
    pairs: &'a [NetPairReport],
    joint_equilibrium: &'a noether::equilibrium::net::NetJoint,
}

/// What `analyze` computes on a module tree: the diagonal symmetries' analysis and the linear pairs' reports.
pub struct TreeAnalysis {
    /// Rescaling and scale classes.
    pub diag: NetAnalysis,
    /// The linear pairs, in state_dict order.
    pub pairs: Vec<LinearPair>,
    /// One report per pair.
    pub pair_reports: Vec<NetPairReport>,
}

/// The moments and the analysis of `net` on `data` (channel classes, scale blocks and linear pairs); `f32`: the
/// pass computes in f32 (moments accumulated in f64).
pub fn analysis(
    net: &Net<f64>,
    data: &Dataset<f64>,
    loss: Loss,
    time: Time,
    f32: bool,
) -> Result<TreeAnalysis> {
    noether::equilibrium::check_noise_samples(data.len())?;
    let prs = pairs(&net.arch);
    let m = moments(net, data, loss, f32, &pair_grams(&prs))?;
    let syms = enumerate(&net.arch);
    let diag = net_analysis(&m, &net.params, &syms, time);
    let pair_reports = pair_reports(&m, &net.params, &prs, time).context("the linear pairs' equilibria")?;
    Ok(TreeAnalysis { diag, pairs: prs, pair_reports })
}

/// `noether analyze` on a module tree.
pub fn analyze(
    net: &Net<f64>,
    data: &Dataset<f64>,
    t: &TreeAnalysis,
    lr: f64,
    batch_size: usize,
    json: bool,
    (exports, config): (&Exports, &impl Serialize),
) -> Result<()> {
    let a = &t.diag;
    let flow = lr / batch_size as f64;
    let records: Vec<NetSymmetryRecord> = a
        .symmetries
        .iter()
        .map(|r| NetSymmetryRecord::of_report(r, flow))
        .chain(
            t.pairs.iter().zip(&t.pair_reports).map(|(p, r)| NetSymmetryRecord::of_pair_report(p, r, flow)),
        )
        .collect();
    crate::common::export(exports, "analyze", config, None, &records)?;
    if exports.to_stdout() {
        return Ok(());
    }
    let neurons: Vec<Neuron> = a
        .symmetries
        .iter()
        .map(|r| Neuron {
            family: r.family,
            module: &r.module,
            unit: r.unit,
            charge: r.charge,
            noise_in: r.noise_in,
            noise_out: r.noise_out,
            tr_a_sigma: r.tr_a_sigma,
            dc_dt_per_time: flow * r.tr_a_sigma,
            lambda_star: r.lambda_star,
            status: r.status,
            writers: &r.writers,
            readers: &r.readers,
            n_in: r.n_in,
            n_out: r.n_out,
        })
        .collect();
    let doc = AnalyzeDoc {
        loss: a.loss,
        trace_sigma: a.trace_sigma,
        n_samples: data.len(),
        n_params: net.arch.n_params(),
        time: a.time,
        lr,
        batch_size,
        neurons,
        pairs: &t.pair_reports,
        joint_equilibrium: &a.joint,
    };
    let mut out = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &doc)?;
        writeln!(out)?;
        return Ok(());
    }
    writeln!(
        out,
        "loss {:.6}   Tr Σ {:.6e}   N = {}   P = {}   target: {} (η = {lr}, S = {batch_size})",
        a.loss,
        a.trace_sigma,
        data.len(),
        net.arch.n_params(),
        a.time.name()
    )?;
    writeln!(
        out,
        "\n{:<8} {:<14} {:>5} {:>11} {:>11} {:>11} {:>11} {:>11} {:>9} {:>14}",
        "family", "module", "unit", "charge", "noise_in", "noise_out", "Tr[AΣ]", "dC/dt", "λ*", "status"
    )?;
    for n in &doc.neurons {
        let st = serde_json::to_value(n.status)?.as_str().unwrap_or("").to_string();
        let fam = if n.family == Family::Rescale { "rescale" } else { "scale" };
        writeln!(
            out,
            "{fam:<8} {:<14} {:>5} {:>11.4e} {:>11.4e} {:>11.4e} {:>11.3e} {:>11.3e} {:>9} {st:>14}",
            n.module,
            n.unit.map_or("-".into(), |u| u.to_string()),
            n.charge,
            n.noise_in,
            n.noise_out,
            n.tr_a_sigma,
            n.dc_dt_per_time,
            n.lambda_star.map_or("—".into(), |x| format!("{x:+.4}")),
        )?;
    }
    if !t.pair_reports.is_empty() {
        writeln!(
            out,
            "\n{:<16} {:<14} {:>11} {:>11} {:>11} {:>11} {:>5} {:>14}",
            "double_rotation", "reader", "‖C‖_F", "Tr M_in", "Tr M_out", "Tr[AΣ]", "rank", "status"
        )?;
        for r in &t.pair_reports {
            let st = serde_json::to_value(r.status)?.as_str().unwrap_or("").to_string();
            let tr = |m: &faer::Mat<f64>| (0..m.nrows()).map(|i| m[(i, i)]).sum::<f64>();
            writeln!(
                out,
                "{:<16} {:<14} {:>11.4e} {:>11.4e} {:>11.4e} {:>11.3e} {:>5} {st:>14}",
                r.module,
                r.reader,
                r.matrix_charge.norm_l2(),
                tr(&r.m_in),
                tr(&r.m_out),
                r.tr_a_sigma,
                r.rank
            )?;
        }
    }
    let j = &a.joint;
    let maxl = j.lambda.iter().map(|v| v.abs()).fold(0.0, f64::max);
    writeln!(
        out,
        "\njoint rescaling equilibrium: Tr Σ {:.6e} → {:.6e} ({:+.2}%), max |λ*| = {maxl:.4}, residual {:.1e} after {} sweeps{}",
        j.trace_target,
        j.trace_target_at_star,
        100.0 * (j.trace_target_at_star / j.trace_target - 1.0),
        j.max_rel_flow_at_star,
        j.sweeps,
        if j.converged { "" } else { " (NOT CONVERGED)" }
    )?;
    Ok(())
}

#[derive(Serialize)]
struct TeleportDoc<'a> {
    out: String,
    /// `noise` or `norm`.
    target: &'static str,
    precision: &'static str,
    trace_sigma_before: f64,
    trace_sigma_after: f64,
    param_norm_sq_before: f64,
    param_norm_sq_after: f64,
    max_abs_loss_change_per_sample: f64,
    /// Largest relative residual over the moved orbits at θ*, the sweeps and whether it reached `--tol`.
    max_rel_residual: f64,
    sweeps: usize,
    converged: bool,
    /// The rescaling classes (for `noise` the target moments, for `norm` θ_k²; see `NetTeleport::joint`).
    joint_equilibrium: &'a noether::equilibrium::net::NetJoint,
    /// How far each linear pair was rotated.
    pairs: &'a [noether::equilibrium::net_teleport::NetPairMove],
    notes: &'a [String],
}

/// The statistics pass of `net` on `data`, in f32 (moments accumulated in f64) when `f32`.
fn moments(
    net: &Net<f64>,
    data: &Dataset<f64>,
    loss: Loss,
    f32: bool,
    grams: &GramSpec,
) -> Result<noether::stats::net::NetMoments> {
    if f32 {
        net_moments_with(&net.cast::<f32>(), &data.cast::<f32>(), loss, MomentPath::Auto, grams)
    } else {
        net_moments_with(net, data, loss, MomentPath::Auto, grams)
    }
    .context("the statistics pass")
}

/// `noether teleport` on a module tree: every rescaling class and linear pair moved to the noise equilibrium
/// (`target` = the clock of the noise target) or, for `target = None`, to the least-norm point of the same
/// orbits ([`net_teleport`]); written under the same tensor names (float64, with the architecture in the
/// metadata). `f32`: the passes compute in f32 (moments accumulated in f64) and the f64 parameters move.
/// Returns whether the descent reached `tol` (at least 1000·ε of the pass's precision: the command checks it).
#[allow(clippy::too_many_arguments)]
pub fn teleport(
    net: &Net<f64>,
    data: &Dataset<f64>,
    loss: Loss,
    target: Option<Time>,
    f32: bool,
    tol: f64,
    out: &Path,
    json: bool,
    (exports, config): (&Exports, &impl Serialize),
    global: &crate::common::Global,
) -> Result<bool> {
    let syms = enumerate(&net.arch);
    let prs = pairs(&net.arch);
    let grams = pair_grams(&prs);
    let opts = NetTeleportOptions {
        target: target.map_or(TeleportTarget::Norm, TeleportTarget::Noise),
        tol,
        ..Default::default()
    };
    let bar = crate::progress::bar(1, "teleporting", global);
    let data32 = f32.then(|| data.cast::<f32>());
    let pass = |cur: &Net<f64>| match &data32 {
        Some(d) => net_moments_with(&cur.cast::<f32>(), d, loss, MomentPath::Auto, &grams),
        None => net_moments_with(cur, data, loss, MomentPath::Auto, &grams),
    };
    let (moved, rep, before, after) = net_teleport(net, &opts, pass).context("teleporting the model")?;
    bar.finish_and_clear();
    moved.check_finite().context("the moved model")?;
    let mut records: Vec<NetSymmetryRecord> = match target {
        Some(time) => net_analysis(&before, &net.params, &syms, time)
            .symmetries
            .iter()
            .map(|r| NetSymmetryRecord::of_report(r, 0.0))
            .collect(),
        None => syms.iter().map(|s| NetSymmetryRecord::of_symmetry(s, &net.params)).collect(),
    };
    for (r, &l) in records.iter_mut().zip(&rep.joint.lambda) {
        r.dc_dt_per_time = None;
        r.lambda_moved = Some(l);
        r.joint_converged = Some(rep.converged);
    }
    records.extend(prs.iter().zip(&rep.pairs).map(|(p, mv)| NetSymmetryRecord {
        status: Some(mv.status),
        rank: Some(mv.rank),
        lambda_moved: Some(mv.distance),
        joint_converged: Some(rep.converged),
        ..NetSymmetryRecord::of_pair(p, &net.params)
    }));
    let lb = noether::net::per_sample_losses(net, data, loss)?;
    let la = noether::net::per_sample_losses(&moved, data, loss)?;
    let dl = lb.iter().zip(&la).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    save_net::<f64, f64>(&moved, out).with_context(|| format!("writing {}", out.display()))?;
    crate::common::export(exports, "teleport", config, None, &records)?;
    if exports.to_stdout() {
        return Ok(rep.converged);
    }
    let norm_sq = |p: &[f64]| p.iter().map(|v| v * v).sum::<f64>();
    let doc = TeleportDoc {
        out: out.display().to_string(),
        target: if target.is_some() { "noise" } else { "norm" },
        precision: if f32 { "f32" } else { "f64" },
        trace_sigma_before: before.trace_sigma(),
        trace_sigma_after: after.trace_sigma(),
        param_norm_sq_before: norm_sq(&net.params),
        param_norm_sq_after: norm_sq(&moved.params),
        max_abs_loss_change_per_sample: dl,
        max_rel_residual: rep.max_rel_residual,
        sweeps: rep.sweeps,
        converged: rep.converged,
        joint_equilibrium: &rep.joint,
        pairs: &rep.pairs,
        notes: &rep.notes,
    };
    let mut o = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut o, &doc)?;
        writeln!(o)?;
    } else {
        writeln!(
            o,
            "target {}: moved {} rescalings and {} linear pairs; Tr Σ {:.6e} → {:.6e} ({:+.2}%), ‖θ‖² {:.6e} → \
             {:.6e}, max |Δℓ_n| = {dl:.1e}; residual {:.1e} after {} sweeps; wrote {}{}",
            doc.target,
            rep.joint.lambda.iter().filter(|l| **l != 0.0).count(),
            rep.pairs.iter().filter(|p| p.distance != 0.0).count(),
            doc.trace_sigma_before,
            doc.trace_sigma_after,
            100.0 * (doc.trace_sigma_after / doc.trace_sigma_before - 1.0),
            doc.param_norm_sq_before,
            doc.param_norm_sq_after,
            rep.max_rel_residual,
            rep.sweeps,
            out.display(),
            if rep.converged { "" } else { " (NOT CONVERGED)" }
        )?;
        for n in &rep.notes {
            writeln!(o, "note: {n}")?;
        }
    }
    Ok(rep.converged)
}

/// What `noether sharpness` computes on a module tree.
pub struct SharpnessRequest {
    /// Top eigenvalues k and whether to add the smallest.
    pub top: usize,
    /// Also the smallest eigenvalue.
    pub bottom: bool,
    /// The trace method (`None`: no trace), resolved from `--trace` and P.
    pub trace: Option<TraceMethod>,
    /// Hutchinson probes.
    pub probes: usize,
    /// Lanczos options.
    pub lanczos: LanczosOptions,
    /// Seed of the Lanczos start vector and the probes.
    pub seed: u64,
    /// HVPs in f32 (summed in f64).
    pub f32: bool,
    /// The Hessian or the Gauss–Newton matrix.
    pub curvature: Curvature,
    /// Samples per chunk of the products (`--chunk`).
    pub chunk: usize,
    /// λ grid of `--orbit` and the `--generator` (default: the first symmetry).
    pub orbit: Option<(Vec<f64>, Option<String>)>,
}

/// `sharpness --json` on a module tree: the dense-chain path's fields, plus the precision.
#[derive(Serialize)]
struct SharpnessDoc {
    precision: &'static str,
    #[serde(flatten)]
    at_theta: Sharpness,
    curvature: Curvature,
    orbit_generator: Option<String>,
    orbit: Option<Vec<Point>>,
}

/// What `--orbit` moves along on a module tree: a channel-rescaling class or scale symmetry, or a linear pair's
/// double rotation with direction B = I (the dense path's default): `Q = e^{λB} = e^{λ}I`, so
/// `[W₁ | b₁] ← e^{λ}[W₁ | b₁]` and `W₂ ← e^{−λ}W₂`.
enum OrbitGenerator {
    Diag(DiagSymmetry),
    Pair(LinearPair, PairGenerator),
}

impl OrbitGenerator {
    fn pair(p: &LinearPair) -> Self {
        OrbitGenerator::Pair(p.clone(), p.identity_generator())
    }
    /// `rescale 0:2`, `scale 3`, `double_rotation 0`.
    fn label(&self) -> String {
        match self {
            OrbitGenerator::Diag(s) => s.label(),
            OrbitGenerator::Pair(p, _) => p.label(),
        }
    }
    /// θ ← e^{λA}θ.
    fn act_in_place(&self, theta: &mut [f64], lambda: f64) {
        match self {
            OrbitGenerator::Diag(s) => s.act_in_place(theta, lambda),
            OrbitGenerator::Pair(_, g) => g.act_in_place(theta, lambda),
        }
    }
}

/// The symmetry named by `--generator` (`rescale:MODULE:UNIT` or `scale:MODULE`, MODULE = the state_dict prefix
/// of its first writer; `double_rotation:MODULE`, MODULE = the pair's first linear, direction B = I), or the
/// first channel class or scale symmetry (a pair's hidden units are rescaling classes, so a tree with a pair has
/// one).
fn orbit_symmetry(arch: &NetArch, spec: Option<&str>) -> Result<OrbitGenerator> {
    let syms = enumerate(arch);
    let prs = pairs(arch);
    // Every generator's `--generator` spelling: channel classes and scale symmetries, then linear pairs.
    let labels: Vec<String> = syms
        .iter()
        .map(|s| s.label())
        .chain(prs.iter().map(|p| p.label()))
        .map(|l| l.replace(' ', ":"))
        .collect();
    let list = || labels.iter().take(8).cloned().collect::<Vec<_>>().join(", ");
    let Some(spec) = spec else {
        return syms.first().cloned().map(OrbitGenerator::Diag).ok_or_else(|| {
            anyhow::anyhow!("the model has no exponential symmetry to move along; --orbit needs one")
        });
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let found = match parts.as_slice() {
        ["rescale", module, unit] => {
            let unit: usize =
                unit.parse().with_context(|| format!("--generator {spec}: the unit `{unit}` is not a number"))?;
            syms.iter().find(|s| s.family == Family::Rescale && s.module == *module && s.unit == Some(unit))
        }
        ["scale", module] => syms.iter().find(|s| s.family == Family::Scale && s.module == *module),
        ["double_rotation", module] => {
            if let Some(p) = prs.iter().find(|p| p.module == *module) {
                return Ok(OrbitGenerator::pair(p));
            }
            if prs.is_empty() {
                bail!(
                    "--generator {spec}: the model has no linear pair (two linears of one sequence, the second \
                     reading only the first's output, directly or through identity modules)"
                );
            }
            let names = prs.iter().map(|p| p.label().replace(' ', ":")).collect::<Vec<_>>().join(", ");
            bail!(
                "--generator {spec}: the model has no linear pair whose first linear is `{module}`; it has {} \
                 ({names})",
                prs.len()
            );
        }
        _ => bail!(
            "--generator {spec}: with an architecture write rescale:MODULE:UNIT, scale:MODULE or \
             double_rotation:MODULE (MODULE = the state_dict prefix of the symmetry's first writer, for a pair its \
             first linear, as `noether symmetries` lists), e.g. {}",
            list()
        ),
    };
    found.cloned().map(OrbitGenerator::Diag).ok_or_else(|| {
        anyhow::anyhow!(
            "--generator {spec}: the model has no such symmetry; it has {} ({}{})",
            labels.len(),
            list(),
            if labels.len() > 8 { ", …" } else { "" }
        )
    })
}

/// Eigenvalues (and the trace) of the Hessian (or the Gauss–Newton matrix) of `net` on `data`.
fn curvature_at<T: noether::Real>(
    net: &Net<T>,
    data: &Dataset<T>,
    loss: Loss,
    req: &SharpnessRequest,
) -> Result<Sharpness> {
    let mut op = NetHessian::with_curvature(net, data, loss, req.curvature)?.with_chunk(req.chunk)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(req.seed);
    let ev = lanczos_eigenvalues(&mut op, req.top, req.bottom, &req.lanczos, &mut rng)?;
    let p = net.arch.n_params();
    let tr = match req.trace {
        Some(TraceMethod::Exact) => Some(exact_trace(&mut op)),
        Some(TraceMethod::Hutchinson) => Some(hutchinson_trace(&mut op, req.probes, &mut rng)?),
        Some(TraceMethod::HutchPlusPlus) => Some(hutch_plus_plus_trace(&mut op, req.probes, &mut rng)?),
        None => None,
    };
    let (l, _) = noether::net::loss_and_grad(net, data, loss)?;
    Ok(Sharpness {
        top_eigenvalues: ev.top,
        bottom_eigenvalue: ev.bottom,
        hvps: op.products(),
        lanczos: ev.info,
        trace: tr.as_ref().map(|t| t.trace),
        trace_method: tr.as_ref().map(|t| t.method),
        trace_stderr: tr.as_ref().map(|t| t.stderr),
        trace_ci95: tr.as_ref().map(|t| t.ci95),
        samples: data.len(),
        n_params: p,
        loss: l,
    })
}

/// [`curvature_at`] in the requested precision.
fn curvature(net: &Net<f64>, data: &Dataset<f64>, loss: Loss, req: &SharpnessRequest) -> Result<Sharpness> {
    if req.f32 {
        curvature_at(&net.cast::<f32>(), &data.cast::<f32>(), loss, req)
    } else {
        curvature_at(net, data, loss, req)
    }
}

/// `noether sharpness` on a module tree: top eigenvalues by Lanczos on exact HVPs and the trace, at θ and
/// optionally along the orbit `e^{λA}θ` of one symmetry. Returns whether every result converged.
#[allow(clippy::too_many_arguments)]
pub fn sharpness(
    net: &Net<f64>,
    data: &Dataset<f64>,
    loss: Loss,
    req: &SharpnessRequest,
    global: &crate::common::Global,
    (exports, config): (&Exports, &impl Serialize),
    json: bool,
) -> Result<bool> {
    let orbit = match &req.orbit {
        Some((grid, spec)) => Some((grid, orbit_symmetry(&net.arch, spec.as_deref())?)),
        None => None,
    };
    let at_theta = curvature(net, data, loss, req)?;
    let mut ok = at_theta.is_reliable();
    let mut records = SharpnessRecord::at_theta(&at_theta);
    let mut points = None;
    if let Some((grid, sym)) = &orbit {
        let max = if req.f32 { f32::MAX as f64 } else { f64::MAX };
        let safe = largest_safe_lambda(&at_theta, net.arch.n_params(), max);
        if let Some(&bad) = grid.iter().find(|l| l.abs() > safe) {
            bail!(
                "--orbit: λ = {bad} would overflow (the Hessian at e^(λA)θ grows like e^(2|λ|)); the largest safe \
                 |λ| for this model is {safe}"
            );
        }
        let bar = crate::progress::bar(grid.len() as u64, format!("orbit {}", sym.label()), global);
        let mut pts = Vec::with_capacity(grid.len());
        for &lambda in grid.iter() {
            let mut moved = net.clone();
            sym.act_in_place(&mut moved.params, lambda);
            let c = curvature(&moved, data, loss, req)?;
            let converged = c.is_reliable();
            ok &= converged;
            let pt = Point {
                lambda,
                top_eigenvalue: c.top_eigenvalues[0],
                trace: c.trace,
                loss: c.loss,
                converged,
            };
            records.push(SharpnessRecord {
                orbit_lambda: Some(lambda),
                which: "top",
                rank: Some(1),
                eigenvalue: pt.top_eigenvalue,
                trace: pt.trace,
                loss: pt.loss,
                converged,
            });
            pts.push(pt);
            bar.inc(1);
        }
        bar.finish_and_clear();
        points = Some(pts);
    }
    crate::common::export(exports, "sharpness", config, Some(req.seed), &records)?;
    if exports.to_stdout() {
        return Ok(ok);
    }
    let doc = SharpnessDoc {
        precision: if req.f32 { "f32" } else { "f64" },
        curvature: req.curvature,
        at_theta,
        orbit_generator: orbit.as_ref().map(|(_, s)| s.label()),
        orbit: points,
    };
    let mut o = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut o, &doc)?;
        writeln!(o)?;
        return Ok(ok);
    }
    let a = &doc.at_theta;
    let flag = if a.is_reliable() { "" } else { " (NOT CONVERGED: raise --max-iter)" };
    let what = match req.curvature {
        Curvature::Hessian => "Hessian",
        Curvature::GaussNewton => "Gauss–Newton",
    };
    writeln!(o, "{what} top eigenvalues {:?}{flag}", a.top_eigenvalues)?;
    if let Some(b) = a.bottom_eigenvalue {
        writeln!(o, "min eigenvalue {b}")?;
    }
    if let (Some(t), Some(ci)) = (a.trace, a.trace_ci95) {
        writeln!(o, "trace {t} (95% interval {ci:?})")?;
    }
    writeln!(
        o,
        "Lanczos: {} iterations, residual {:.1e} (threshold {:.1e}); {} {} products in all",
        a.lanczos.iterations,
        a.lanczos.residual,
        a.lanczos.threshold,
        a.hvps,
        if req.curvature == Curvature::Hessian { "Hessian-vector" } else { "Gauss–Newton-vector" }
    )?;
    if let (Some(label), Some(pts)) = (&doc.orbit_generator, &doc.orbit) {
        drop(o);
        print_orbit(label, pts)?;
    }
    Ok(ok)
}

//! The module-tree (`--arch`) side of `symmetries`, `analyze`, `teleport` and `sharpness`: a model given by an
//! architecture file (or a file noether wrote, which carries its architecture) runs on `noether::net`.

use anyhow::{bail, Context, Result};
use noether::curvature::{exact_trace, hutchinson_trace, lanczos_eigenvalues, LanczosOptions, TraceEstimate};
use noether::data::load_dataset_shaped;
use noether::equilibrium::net::{apply_joint, net_analysis, NetAnalysis};
use noether::equilibrium::{Status, Time};
use noether::net::{load_net, save_net, Net, NetArch, NetHessian, ARCH_METADATA_KEY};
use noether::stats::net::{net_moments, MomentPath};
use noether::symmetry::channels::{enumerate, DiagSymmetry, Family};
use noether::{Dataset, Loss};
use rand::SeedableRng;
use serde::Serialize;
use std::io::Write;
use std::path::Path;

/// The model as a module tree when `--arch` is given or the file carries `noether.arch`; `None` for a plain
/// dense-chain file (the MLP path).
pub fn net_model(model: &Path, arch: Option<&Path>) -> Result<Option<Net<f64>>> {
    let arch = match arch {
        Some(p) => {
            Some(NetArch::load(p).with_context(|| format!("reading the architecture {}", p.display()))?)
        }
        None => {
            let bytes = std::fs::read(model).with_context(|| format!("reading {}", model.display()))?;
            let has = safetensors::SafeTensors::read_metadata(&bytes)
                .ok()
                .and_then(|(_, m)| m.metadata().as_ref().map(|m| m.contains_key(ARCH_METADATA_KEY)))
                .unwrap_or(false);
            if !has {
                return Ok(None);
            }
            None
        }
    };
    let net = load_net::<f64>(model, arch.as_ref())
        .with_context(|| format!("loading the model from {}", model.display()))?;
    Ok(Some(net))
}

/// Refuses the dense-chain flags that an architecture file replaces.
pub fn refuse_dense_flags(activation: &str, norm_layers: &[usize]) -> Result<()> {
    if activation != "relu" {
        bail!("--activation does not apply to a model with an architecture (--arch or a file noether wrote): the architecture names every module's activation");
    }
    if !norm_layers.is_empty() {
        bail!("--norm-layers does not apply to a model with an architecture: add an `rms_norm` module to the architecture instead");
    }
    Ok(())
}

/// Refuses export flags on the architecture path (not written yet), instead of ignoring them.
pub fn refuse_exports(export: &crate::common::ExportArgs) -> Result<()> {
    if export.export_json.is_some() || export.export_csv.is_some() || export.export_markdown.is_some() {
        bail!("--export-json/--export-csv/--export-markdown are not available with an architecture yet; use --json");
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
    family: Family,
    module: &'a str,
    unit: Option<usize>,
    charge: f64,
    writers: &'a [String],
    readers: &'a [String],
    n_in: usize,
    n_out: usize,
}

/// `noether symmetries` on a module tree.
pub fn symmetries(net: &Net<f64>, json: bool) -> Result<()> {
    let syms = enumerate(&net.arch);
    let entries: Vec<SymEntry> = syms
        .iter()
        .map(|s| {
            let (n_in, n_out) = s.counts();
            SymEntry {
                family: s.family,
                module: &s.module,
                unit: s.unit,
                charge: s.charge(&net.params),
                writers: &s.writers,
                readers: &s.readers,
                n_in,
                n_out,
            }
        })
        .collect();
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
    writeln!(out, "{:<8} {:<14} {:>5} {:>14}  writers → readers", "family", "module", "unit", "charge")?;
    for e in &entries {
        let fam = if e.family == Family::Rescale { "rescale" } else { "scale" };
        let unit = e.unit.map_or("-".into(), |u| u.to_string());
        writeln!(
            out,
            "{fam:<8} {:<14} {unit:>5} {:>14.6e}  {} → {}",
            e.module,
            e.charge,
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
    joint_equilibrium: &'a noether::equilibrium::net::NetJoint,
}

/// The moments and the analysis of `net` on `data`; `f32`: the pass computes in f32 (moments accumulated in f64).
pub fn analysis(
    net: &Net<f64>,
    data: &Dataset<f64>,
    loss: Loss,
    time: Time,
    f32: bool,
) -> Result<(Vec<DiagSymmetry>, NetAnalysis)> {
    let m = if f32 {
        net_moments(&net.cast::<f32>(), &data.cast::<f32>(), loss, MomentPath::Auto)
    } else {
        net_moments(net, data, loss, MomentPath::Auto)
    }
    .context("the statistics pass")?;
    let syms = enumerate(&net.arch);
    let a = net_analysis(&m, &net.params, &syms, time);
    Ok((syms, a))
}

/// `noether analyze` on a module tree.
pub fn analyze(
    net: &Net<f64>,
    data: &Dataset<f64>,
    a: &NetAnalysis,
    lr: f64,
    batch_size: usize,
    json: bool,
) -> Result<()> {
    let flow = lr / batch_size as f64;
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
    trace_sigma_before: f64,
    trace_sigma_after: f64,
    max_abs_loss_change_per_sample: f64,
    joint_equilibrium: &'a noether::equilibrium::net::NetJoint,
}

/// `noether teleport --target noise` on a module tree: the joint rescaling equilibrium, written under the same
/// tensor names (float64, with the architecture in the metadata). Returns whether the solve converged.
pub fn teleport(
    net: &Net<f64>,
    data: &Dataset<f64>,
    loss: Loss,
    time: Time,
    out: &Path,
    json: bool,
) -> Result<bool> {
    let (syms, a) = analysis(net, data, loss, time, false)?;
    let mut moved = net.clone();
    apply_joint(&mut moved.params, &syms, &a.joint.lambda);
    moved.check_finite().context("the moved model")?;
    let before = noether::net::per_sample_losses(net, data, loss)?;
    let after = noether::net::per_sample_losses(&moved, data, loss)?;
    let dl = before.iter().zip(&after).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    let m = net_moments(&moved, data, loss, MomentPath::Auto)?;
    save_net::<f64, f64>(&moved, out).with_context(|| format!("writing {}", out.display()))?;
    let doc = TeleportDoc {
        out: out.display().to_string(),
        trace_sigma_before: a.trace_sigma,
        trace_sigma_after: m.trace_sigma(),
        max_abs_loss_change_per_sample: dl,
        joint_equilibrium: &a.joint,
    };
    let mut o = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut o, &doc)?;
        writeln!(o)?;
    } else {
        writeln!(
            o,
            "moved {} rescalings: Tr Σ {:.6e} → {:.6e} ({:+.2}%), max |Δℓ_n| = {dl:.1e}; wrote {}",
            a.joint.lambda.iter().filter(|l| **l != 0.0).count(),
            a.trace_sigma,
            m.trace_sigma(),
            100.0 * (m.trace_sigma() / a.trace_sigma - 1.0),
            out.display()
        )?;
    }
    Ok(a.joint.converged)
}

#[derive(Serialize)]
struct SharpnessDoc {
    top_eigenvalues: Vec<f64>,
    min_eigenvalue: Option<f64>,
    lanczos: noether::curvature::LanczosInfo,
    trace: Option<TraceEstimate>,
}

/// `noether sharpness` on a module tree: top eigenvalues by Lanczos on exact HVPs and the trace (exact for
/// P ≤ 2000 unless `trace` says otherwise). Returns whether Lanczos converged.
#[allow(clippy::too_many_arguments)]
pub fn sharpness(
    net: &Net<f64>,
    data: &Dataset<f64>,
    loss: Loss,
    (top, bottom): (usize, bool),
    trace: Option<&str>,
    probes: usize,
    opts: LanczosOptions,
    seed: u64,
    json: bool,
) -> Result<bool> {
    let mut op = NetHessian::new(net, data, loss)?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let ev = lanczos_eigenvalues(&mut op, top, bottom, &opts, &mut rng)?;
    let p = net.arch.n_params();
    let tr = match trace.unwrap_or(if p <= 2000 { "exact" } else { "hutchinson" }) {
        "exact" => Some(exact_trace(&mut op)),
        "hutchinson" => Some(hutchinson_trace(&mut op, probes, &mut rng)?),
        "none" => None,
        other => bail!("--trace {other}: with an architecture, use exact, hutchinson or none"),
    };
    let doc = SharpnessDoc {
        top_eigenvalues: ev.top.clone(),
        min_eigenvalue: ev.bottom,
        lanczos: ev.info,
        trace: tr,
    };
    let mut o = std::io::stdout().lock();
    if json {
        serde_json::to_writer_pretty(&mut o, &doc)?;
        writeln!(o)?;
    } else {
        let flag = if ev.info.converged { "" } else { " (NOT CONVERGED: raise --max-iter)" };
        writeln!(o, "top eigenvalues {:?}{flag}", ev.top)?;
        if let Some(b) = ev.bottom {
            writeln!(o, "min eigenvalue {b}")?;
        }
        if let Some(t) = &doc.trace {
            writeln!(o, "trace {} (95% interval {:?}, {} HVPs)", t.trace, t.ci95, t.hvps)?;
        }
        writeln!(
            o,
            "Lanczos: {} iterations, residual {:.1e}, {} HVPs",
            ev.info.iterations, ev.info.residual, ev.info.hvps
        )?;
    }
    Ok(ev.info.converged)
}

//! `noether teleport`: move a model to its noise equilibrium (library: `noether::equilibrium::teleport`).

use crate::analyze::{time_of, SamplingArg, TimeArg};
use crate::common::{ExportArgs, Global, ModelData, PrecisionArg};
use anyhow::Context;
use noether::equilibrium::teleport::{teleport, TeleportOptions, TeleportTarget};
use noether::model::tensors_to_safetensors_bytes;
use noether::Model;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where to move the model.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TargetArg {
    /// The noise equilibrium (least Tr Σ along the orbits).
    Noise,
    /// The least ‖θ‖² along the same orbits (Equi-normalization's target).
    Norm,
}

/// Arguments of `noether teleport` (serialised as the exports' `config`).
#[derive(clap::Args, Debug, Serialize)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    pub io: ModelData,
    /// Output model file, e.g. `--out moved.safetensors` (layers.{l}.weight / .bias, float64).
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub force: crate::common::Force,
    /// Target: noise (equilibrium) or norm (least ‖θ‖²).
    #[arg(long, value_enum, default_value_t = TargetArg::Noise)]
    pub target: TargetArg,
    /// Equilibrium clock for the noise target: continuous (Σ) or discrete (M_S).
    #[arg(long, value_enum, default_value_t = TimeArg::Continuous)]
    pub time: TimeArg,
    /// Batch size S of the discrete target, e.g. `--batch-size 32`.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Batch sampling of the discrete target.
    #[arg(long, value_enum, default_value_t = SamplingArg::With)]
    pub sampling: SamplingArg,
    /// Relative residual at which the sweeps stop, e.g. `--tol 1e-12` (default 1e-12 in f64, 1000·ε = 1.2e-4
    /// with `--precision f32`; at least 1000·ε of the precision).
    #[arg(long, allow_hyphen_values = true)]
    pub tol: Option<f64>,
    /// Float type: f64, or f32 with the moments accumulated in f64 (on a module tree the passes run in f32 and
    /// the move is applied to the f64 parameters; on a dense-chain file the whole teleport runs in f32).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F64)]
    pub precision: PrecisionArg,
    /// Print the report as JSON.
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
    // Exports: one record per orbit (symmetry, distance moved, status).
    #[command(flatten)]
    #[serde(skip)]
    pub export: ExportArgs,
}

pub fn run(mut args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    if args.target == TargetArg::Norm && args.time != TimeArg::Continuous {
        anyhow::bail!("--time only applies to --target noise (the norm target has no clock); drop it");
    }
    if args.time == TimeArg::Continuous && (args.batch_size != 1 || args.sampling != SamplingArg::With) {
        let mut given = Vec::new();
        if args.batch_size != 1 {
            given.push(format!("--batch-size {}", args.batch_size));
        }
        if args.sampling != SamplingArg::With {
            given.push(format!("--sampling {}", serde_json::to_value(args.sampling)?.as_str().unwrap_or("")));
        }
        anyhow::bail!(
            "{} only {} to --time discrete (the continuous target balances Σ, which does not depend on the \
             batch); add --time discrete or drop {}",
            given.join(" and "),
            if given.len() == 1 { "applies" } else { "apply" },
            if given.len() == 1 { "it" } else { "them" }
        );
    }
    let (min_tol, precision) = match args.precision {
        PrecisionArg::F64 => (1000.0 * f64::EPSILON, "f64"),
        PrecisionArg::F32 => (1000.0 * f32::EPSILON as f64, "f32"),
    };
    let tol = args.tol.unwrap_or(if args.precision == PrecisionArg::F64 { 1e-12 } else { min_tol });
    if !(tol >= min_tol && tol < 1.0) {
        anyhow::bail!(
            "--tol {}: in {precision} the relative residual tolerance must lie in [{min_tol:.1e}, 1) (below \
             1000·ε of {precision} round-off decides the residual){}",
            crate::common::flag_num(tol),
            if args.precision == PrecisionArg::F32 {
                "; use --precision f64 for a tighter tolerance"
            } else {
                ""
            }
        );
    }
    args.tol = Some(tol);
    crate::common::refuse_overwrite(&args.out, &[], "--out", args.force)?;
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        anyhow::bail!(
            "--out {}: the folder {} does not exist; create it first",
            args.out.display(),
            dir.display()
        );
    }
    let mut files = args.io.files();
    files.push(("--out", args.out.as_path()));
    if let Some((net, data, loss)) = args.io.load_net()? {
        let exports = args.export.create(&files)?;
        let time = match args.target {
            TargetArg::Noise => Some(time_of(args.time, args.batch_size, args.sampling, data.len())?),
            TargetArg::Norm => None,
        };
        let f32 = args.precision == PrecisionArg::F32;
        let ok = crate::arch::teleport(
            &net,
            &data,
            loss,
            time,
            f32,
            tol,
            &args.out,
            args.json,
            (&exports, &args),
            global,
        )?;
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    let exports = args.export.create(&files)?;
    let (model, data, loss) = args.io.load()?;
    let target = match args.target {
        TargetArg::Noise => {
            TeleportTarget::Noise(time_of(args.time, args.batch_size, args.sampling, data.len())?)
        }
        TargetArg::Norm => TeleportTarget::Norm,
    };
    let bar = crate::progress::bar(1, "teleporting", global);
    let opts = TeleportOptions { target, tol, ..Default::default() };
    let (moved, rep) = match args.precision {
        PrecisionArg::F64 => teleport(&model, &data, loss, &opts),
        PrecisionArg::F32 => teleport(&model.cast::<f32>(), &data.cast::<f32>(), loss, &opts)
            .map(|(m, rep)| (m.cast::<f64>(), rep)),
    }
    .context("teleporting the model")?;
    bar.finish_and_clear();
    save_like(&moved, &args.io.model, &args.out)?;
    crate::common::export(&exports, "teleport", &args, None, &rep.orbits)?;
    let code = if rep.converged { ExitCode::SUCCESS } else { ExitCode::from(1) };
    if exports.to_stdout() {
        return Ok(code);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &rep)?;
        writeln!(out)?;
    } else {
        let maxd = rep.orbits.iter().map(|o| o.distance).fold(0.0, f64::max);
        writeln!(out, "target {} ({}), wrote {}", rep.target, rep.time, args.out.display())?;
        writeln!(
            out,
            "loss          {:.12e} → {:.12e} (Δ {:+.1e})",
            rep.loss_before,
            rep.loss_after,
            rep.loss_after - rep.loss_before
        )?;
        writeln!(out, "max |Δf(x)|   {:.2e} (max |f| {:.3e})", rep.max_output_change, rep.max_output_abs)?;
        writeln!(
            out,
            "Tr Σ          {:.6e} → {:.6e} ({:+.2}%)",
            rep.trace_sigma_before,
            rep.trace_sigma_after,
            100.0 * (rep.trace_sigma_after / rep.trace_sigma_before - 1.0)
        )?;
        writeln!(out, "‖θ‖²          {:.6e} → {:.6e}", rep.param_norm_sq_before, rep.param_norm_sq_after)?;
        writeln!(
            out,
            "orbits moved  {} (max distance {maxd:.4}), residual {:.1e} after {} sweeps",
            rep.orbits.len(),
            rep.max_rel_residual,
            rep.sweeps
        )?;
        for n in &rep.notes {
            writeln!(out, "note: {n}")?;
        }
    }
    Ok(code)
}

/// Writes `model` under the tensor names of `original` (`layers.{l}.*`, `{i}.*` or a prefixed `nn.Sequential`),
/// in float64. The l-th `*.weight` of the original (by index) names layer l.
fn save_like(model: &Model<f64>, original: &std::path::Path, out: &std::path::Path) -> anyhow::Result<()> {
    let bytes = noether::tensor_io::read_file(original)?;
    let st = noether::tensor_io::parse(&bytes, original)?;
    let mut stems: Vec<(usize, String)> = st
        .names()
        .into_iter()
        .filter_map(|n| {
            let stem = n.strip_suffix(".weight")?;
            Some((stem.rsplit('.').next()?.parse::<usize>().ok()?, stem.to_string()))
        })
        .collect();
    stems.sort();
    let tensors: Vec<_> = tensors_to_safetensors_bytes::<f64, f64>(model)
        .into_iter()
        .map(|(name, dt, shape, data)| {
            let mut parts = name.splitn(3, '.');
            let (_, l, kind) =
                (parts.next(), parts.next().and_then(|v| v.parse::<usize>().ok()), parts.next());
            let renamed = match (l.and_then(|l| stems.get(l)), kind) {
                (Some((_, stem)), Some(kind)) => format!("{stem}.{kind}"),
                _ => name,
            };
            (renamed, dt, shape, data)
        })
        .collect();
    let names: Vec<String> = (0..model.arch.n_layers())
        .map(|l| stems.get(l).map_or(format!("layers.{l}"), |s| s.1.clone()))
        .collect();
    let meta = noether::net::dense_metadata(&model.arch, Some(&names))?;
    noether::tensor_io::write_with_metadata(out, &tensors, Some(meta))
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

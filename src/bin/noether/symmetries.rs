//! `noether symmetries --model M.safetensors --activation ACT [--json]`: every exact exponential symmetry of a
//! model file with its Noether charge.

use crate::common::{ExportArgs, Global};
use anyhow::Result;
use noether::report::records::SymmetryRecord;
use noether::symmetry::double_rotation;
use noether::Architecture;
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `noether symmetries` (serialised as the exports' `config`).
#[derive(clap::Args, Debug, Serialize)]
pub struct Args {
    /// Model weights (safetensors), e.g. `--model mlp.safetensors`.
    #[arg(long)]
    pub model: PathBuf,
    /// Activation of the hidden layers (the last layer is linear), e.g. `--activation tanh` (default relu; files
    /// noether wrote carry their architecture and need none).
    #[arg(long)]
    pub activation: Option<String>,
    /// Layers whose pre-activation is RMS-normalised (scale symmetry), e.g. `--norm-layers 0,1`.
    #[arg(long, value_delimiter = ',')]
    pub norm_layers: Vec<usize>,
    /// Architecture file (module list of an `nn.Sequential`); the model is then a state_dict by those names.
    #[arg(long, value_name = "ARCH.toml")]
    pub arch: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
    #[command(flatten)]
    #[serde(skip)]
    pub export: ExportArgs,
}

/// One symmetry with its charge (the JSON schema of `noether symmetries --json`).
#[derive(Serialize)]
struct Entry {
    /// `rescale`, `double_rotation` or `scale`.
    family: &'static str,
    /// Layer index (for a double rotation, the first layer of the pair).
    layer: usize,
    /// Hidden unit (rescale only).
    #[serde(skip_serializing_if = "Option::is_none")]
    unit: Option<usize>,
    /// Charge: a number for rescale and scale; the d×d matrix charge `W_lW_lᵀ + b_lb_lᵀ − W_{l+1}ᵀW_{l+1}` as
    /// rows for a double rotation.
    charge: serde_json::Value,
    /// Frobenius norm of the matrix charge (double rotation only).
    #[serde(skip_serializing_if = "Option::is_none")]
    charge_fro: Option<f64>,
}

pub fn run(args: Args, _global: &Global) -> Result<ExitCode> {
    if let Some(l) =
        args.norm_layers.iter().enumerate().find_map(|(i, l)| args.norm_layers[..i].contains(l).then_some(l))
    {
        anyhow::bail!(
            "--norm-layers {} names layer {l} twice; give each layer at most once",
            args.norm_layers.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(",")
        );
    }
    let mut files = vec![("--model", args.model.as_path())];
    if let Some(a) = &args.arch {
        files.push(("--arch", a.as_path()));
    }
    if let Some(net) = crate::arch::net_model(&args.model, args.arch.as_deref())? {
        crate::arch::refuse_dense_flags(args.activation.as_deref(), &args.norm_layers)?;
        let exports = args.export.create(&files)?;
        crate::arch::symmetries(&net, args.json, (&exports, &args))?;
        return Ok(ExitCode::SUCCESS);
    }
    let exports = args.export.create(&files)?;
    let described = noether::net::stored_arch(&args.model)?.is_some();
    if described && !args.norm_layers.is_empty() {
        anyhow::bail!(
            "--norm-layers: {} carries its architecture, which says which layers normalise; drop --norm-layers",
            args.model.display()
        );
    }
    let mut model = crate::common::load_dense_model::<f64>(&args.model, args.activation.as_deref())?;
    let mut layers = model.arch.layers.clone();
    for &l in &args.norm_layers {
        anyhow::ensure!(
            l < layers.len(),
            "--norm-layers names layer {l} but the model has {} layers",
            layers.len()
        );
        layers[l].norm = true;
    }
    model.arch = Architecture::from_layers(layers);
    let (arch, theta) = (&model.arch, &model.params);
    let records = SymmetryRecord::all(arch, theta);
    crate::common::export(&exports, "symmetries", &args, None, &records)?;
    if exports.to_stdout() {
        return Ok(ExitCode::SUCCESS);
    }
    // The --json charge of a double rotation is the matrix itself, as rows.
    let entries: Vec<Entry> = records
        .iter()
        .map(|r| Entry {
            family: r.family,
            layer: r.layer,
            unit: r.unit,
            charge: match r.charge {
                Some(c) => c.into(),
                None => {
                    let m = double_rotation::matrix_charge(arch, r.layer, theta);
                    let rows: Vec<Vec<f64>> =
                        (0..m.nrows()).map(|i| (0..m.ncols()).map(|j| m[(i, j)]).collect()).collect();
                    serde_json::json!(rows)
                }
            },
            charge_fro: r.charge_fro,
        })
        .collect();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&serde_json::json!({ "symmetries": entries }))?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "model {}: widths {:?}, {} parameters, {} symmetries",
        args.model.display(),
        arch.dims(),
        arch.n_params(),
        entries.len()
    );
    if entries.is_empty() {
        outln!("no exact exponential symmetry (tanh hidden layers have none; relu/identity units rescale, identity pairs rotate)");
    }
    outln!("{:<16} {:>5} {:>5} {:>14}", "family", "layer", "unit", "charge");
    for e in &entries {
        let c = e
            .charge_fro
            .map(|f| format!("‖·‖_F {f:.6}"))
            .unwrap_or_else(|| format!("{:.6}", e.charge.as_f64().unwrap_or(f64::NAN)));
        let unit = e.unit.map(|u| u.to_string()).unwrap_or_else(|| "-".into());
        outln!("{:<16} {:>5} {:>5} {:>14}", e.family, e.layer, unit, c);
    }
    Ok(ExitCode::SUCCESS)
}

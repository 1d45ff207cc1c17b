//! `noether symmetries --model M.safetensors --activation ACT [--json]`: every exact exponential symmetry of a
//! model file with its Noether charge.

use crate::common::Global;
use anyhow::{Context, Result};
use noether::model::load_safetensors;
use noether::symmetry::{double_rotation, enumerate, rescale, scale, Symmetry};
use noether::{Activation, Architecture};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `noether symmetries`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Model weights (safetensors), e.g. `--model mlp.safetensors`.
    #[arg(long)]
    pub model: PathBuf,
    /// Activation of the hidden layers (the last layer is linear), e.g. `--activation relu`.
    #[arg(long, default_value = "relu")]
    pub activation: String,
    /// Layers whose pre-activation is RMS-normalised (scale symmetry), e.g. `--norm-layers 0,1`.
    #[arg(long, value_delimiter = ',')]
    pub norm_layers: Vec<usize>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
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
    let act = Activation::parse(&args.activation)?;
    let mut model = load_safetensors::<f64>(&args.model, act)
        .with_context(|| format!("loading {}", args.model.display()))?;
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
    let entries: Vec<Entry> = enumerate(arch)
        .into_iter()
        .map(|s| match s {
            Symmetry::Rescale { layer, unit } => Entry {
                family: "rescale",
                layer,
                unit: Some(unit),
                charge: rescale::quad(arch, layer, unit, theta).into(),
                charge_fro: None,
            },
            Symmetry::DoubleRotation { layer } => {
                let m = double_rotation::matrix_charge(arch, layer, theta);
                let rows: Vec<Vec<f64>> =
                    (0..m.nrows()).map(|i| (0..m.ncols()).map(|j| m[(i, j)]).collect()).collect();
                Entry {
                    family: "double_rotation",
                    layer,
                    unit: None,
                    charge: serde_json::json!(rows),
                    charge_fro: Some(m.norm_l2()),
                }
            }
            Symmetry::Scale { layer } => Entry {
                family: "scale",
                layer,
                unit: None,
                charge: scale::quad(arch, layer, theta).into(),
                charge_fro: None,
            },
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "symmetries": entries }))?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "model {}: widths {:?}, {} parameters, {} symmetries",
        args.model.display(),
        arch.dims(),
        arch.n_params(),
        entries.len()
    );
    if entries.is_empty() {
        println!("no exact exponential symmetry (tanh hidden layers have none; relu/identity units rescale, identity pairs rotate)");
    }
    println!("{:<16} {:>5} {:>5} {:>14}", "family", "layer", "unit", "charge");
    for e in &entries {
        let c = e
            .charge_fro
            .map(|f| format!("‖·‖_F {f:.6}"))
            .unwrap_or_else(|| format!("{:.6}", e.charge.as_f64().unwrap_or(f64::NAN)));
        let unit = e.unit.map(|u| u.to_string()).unwrap_or_else(|| "-".into());
        println!("{:<16} {:>5} {:>5} {:>14}", e.family, e.layer, unit, c);
    }
    Ok(ExitCode::SUCCESS)
}

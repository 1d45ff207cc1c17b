//! `noether train CONFIG.toml [--out DIR]`: one training run, logged to a run folder.

use crate::common::{refuse_overwrite, Force, Global};
use crate::progress;
use anyhow::{Context, Result};
use noether::dynamics::TrainConfig;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `noether train`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run's TOML config, e.g. `examples/matrix_factorization.toml`.
    pub config: PathBuf,
    /// Run folder for metrics.csv, summary.json, config.toml, the final model.safetensors and the training data.safetensors (default: runs/<config name>), e.g. `--out runs/mf`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Override the config's seed, e.g. `--seed 3`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override the config's number of steps, e.g. `--steps 100`.
    #[arg(long)]
    pub steps: Option<u64>,
    #[command(flatten)]
    pub force: Force,
}

/// The files of a run folder: a folder holding any of them holds a run.
const RUN_FILES: [&str; 5] =
    ["metrics.csv", "summary.json", "config.toml", "model.safetensors", "data.safetensors"];

pub fn run(args: Args, global: &Global) -> Result<ExitCode> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let mut config =
        TrainConfig::from_toml(&text).with_context(|| format!("in {}", args.config.display()))?;
    if let Some(s) = args.seed {
        config.seed = s;
    }
    if let Some(s) = args.steps {
        config.steps = s;
    }
    if args.seed.is_some() || args.steps.is_some() {
        config.validate().context("with the --seed/--steps overrides")?;
    }
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("runs")
            .join(args.config.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or("run".into()))
    });
    refuse_overwrite(&out, &RUN_FILES, "--out", args.force)?;
    train(&config, &out, global)
}

fn train(config: &TrainConfig, out: &Path, global: &Global) -> Result<ExitCode> {
    let pb = progress::bar(config.steps, format!("{} {}", config.optimizer.short(), out.display()), global);
    let summary = noether::sweep::train_into_with(config, out, &mut |k| pb.set_position(k))?;
    pb.finish_and_clear();
    if let Some(d) = &summary.diverged {
        eprintln!(
            "error: loss became {} at step {} (lr = {}); lower the learning rate or add warmup. Metrics up to then are in {}",
            d.loss,
            d.step,
            d.lr,
            out.join("metrics.csv").display()
        );
        return Ok(ExitCode::from(2));
    }
    outln!(
        "{} steps of {} in {:.2} s: final loss {:.6}, t = {:.4}; wrote {}/{{metrics.csv, summary.json, config.toml, model.safetensors, data.safetensors}}",
        summary.steps,
        summary.method,
        summary.wall_time_s,
        summary.final_loss.unwrap_or(f64::NAN),
        summary.t,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

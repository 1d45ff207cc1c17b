//! `noether train CONFIG.toml [--out DIR]`: one training run, logged to a run folder.

use crate::common::{refuse_overwrite, Force, Global};
use crate::progress;
use anyhow::{Context, Result};
use noether::dynamics::{self, default_observers, Precision, TrainConfig, Trainer};
use noether::report::MetricsWriter;
use noether::Real;
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
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    match config.precision {
        Precision::F64 => train::<f64>(&config, &out, global),
        Precision::F32 => train::<f32>(&config, &out, global),
    }
}

fn train<T: Real>(config: &TrainConfig, out: &Path, global: &Global) -> Result<ExitCode> {
    let mut trainer = Trainer::<T>::from_config(config)?;
    // Written once the run can start, so that a config refused while setting up leaves no run behind.
    std::fs::write(out.join("config.toml"), config.to_toml())
        .with_context(|| format!("writing {}/config.toml", out.display()))?;
    let mut observers = default_observers(config, &trainer.model)?;
    let columns = noether::dynamics::observer_columns(&observers, &trainer.model);
    let columns: Vec<&str> = columns.iter().map(|c| c.as_str()).collect();
    let mut sink = MetricsWriter::create(out.join("metrics.csv"), &columns)
        .with_context(|| format!("creating {}/metrics.csv", out.display()))?;
    let pb = progress::bar(config.steps, format!("{} {}", trainer.method().short(), out.display()), global);
    let summary = dynamics::run(
        &mut trainer,
        config.steps,
        config.log_every,
        config.seed,
        &mut observers,
        &mut sink,
        &mut |k| pb.set_position(k),
    )?;
    pb.finish_and_clear();
    noether::model::save_safetensors::<T, T>(&trainer.model, &out.join("model.safetensors"))?;
    noether::data::save_dataset(trainer.eval_data(), &out.join("data.safetensors"))?;
    let json = serde_json::json!({
        "noether_version": env!("CARGO_PKG_VERSION"),
        "command": "train",
        "config": config,
        "seed": config.seed,
        "results": summary,
    });
    std::fs::write(out.join("summary.json"), serde_json::to_string_pretty(&json)?)?;
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
    println!(
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

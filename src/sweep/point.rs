//! Running one point into its run folder: everything is written under `points/<name>.partial` and renamed to
//! `points/<name>` at the end, so a folder under its final name is always complete. `point.json`, written
//! last, records the outcome (`done` or `failed` with the error) and the wall time.

use super::spec::Point;
use crate::dynamics::{
    self, default_observers, observer_columns, ModelConfig, Precision, Summary, TrainConfig, Trainable,
    Trainer,
};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::net::Net;
use crate::real::Real;
use crate::report::MetricsWriter;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The outcome of a point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ran to the end.
    Done,
    /// Diverged or failed; the error is recorded.
    Failed,
    /// Not run yet (or interrupted: no complete folder).
    Missing,
}

impl Status {
    /// `done`, `failed`, `missing`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Done => "done",
            Status::Failed => "failed",
            Status::Missing => "missing",
        }
    }
}

/// The contents of `point.json`, the last file of a complete run folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PointRecord {
    /// The point's index.
    pub index: usize,
    /// Its folder name.
    pub name: String,
    /// `done` or `failed`.
    pub status: Status,
    /// Why it failed.
    pub error: Option<String>,
    /// Wall-clock time of the whole point (training and writing), seconds.
    pub wall_time_s: f64,
}

/// The file that marks a run folder complete.
pub const POINT_FILE: &str = "point.json";

/// `DIR/points`.
pub fn points_dir(dir: &Path) -> PathBuf {
    dir.join("points")
}

/// The final folder of a point.
pub fn folder(dir: &Path, name: &str) -> PathBuf {
    points_dir(dir).join(name)
}

/// The temporary folder a point is written to before the rename.
pub fn partial_folder(dir: &Path, name: &str) -> PathBuf {
    points_dir(dir).join(format!("{name}.partial"))
}

/// The record of a complete folder (`None` when the folder is absent or incomplete).
pub fn read_record(dir: &Path, name: &str) -> Result<Option<PointRecord>> {
    let p = folder(dir, name).join(POINT_FILE);
    match std::fs::read_to_string(&p) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::Config(format!("{}: not a point record ({e}); delete the folder", p.display()))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(&p, e)),
    }
}

/// Runs `point` into `DIR/points/<name>` (via `<name>.partial` and a rename, replacing an earlier folder).
/// A divergence, a training error or a panic is recorded as `failed`; only a failure to write the folder is
/// an `Err`.
pub fn run_point(dir: &Path, point: &Point) -> Result<PointRecord> {
    let start = std::time::Instant::now();
    let partial = partial_folder(dir, &point.name);
    if partial.exists() {
        std::fs::remove_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    }
    std::fs::create_dir_all(&partial).map_err(|e| Error::io(&partial, e))?;
    let outcome =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| train_into(&point.config, &partial)))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                Err(Error::Numerical { what: "training", reason: format!("panicked: {msg}") })
            });
    let error = match outcome {
        Ok(s) => s.diverged.map(|d| {
            format!(
                "loss became {} at step {} (lr = {}); lower the learning rate or add warmup",
                d.loss, d.step, d.lr
            )
        }),
        Err(e @ Error::Io { .. }) => return Err(e),
        Err(e) => Some(e.to_string()),
    };
    let record = PointRecord {
        index: point.index,
        name: point.name.clone(),
        status: if error.is_some() { Status::Failed } else { Status::Done },
        error,
        wall_time_s: start.elapsed().as_secs_f64(),
    };
    let p = partial.join(POINT_FILE);
    let text = serde_json::to_string_pretty(&record).map_err(|e| Error::Config(e.to_string()))?;
    std::fs::write(&p, text + "\n").map_err(|e| Error::io(&p, e))?;
    let done = folder(dir, &point.name);
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(|e| Error::io(&done, e))?;
    }
    std::fs::rename(&partial, &done).map_err(|e| Error::io(&done, e))?;
    Ok(record)
}

/// Trains `config` and writes the run folder `out` (what `noether train` does): `config.toml`, `metrics.csv`
/// (streamed), `model.safetensors`, `data.safetensors` and `summary.json`. A divergence is reported in the
/// summary (the metrics up to it are on disk).
pub fn train_into(config: &TrainConfig, out: &Path) -> Result<Summary> {
    train_into_with(config, out, &mut |_| {})
}

/// [`train_into`] with `progress(k)` called as steps complete.
pub fn train_into_with(config: &TrainConfig, out: &Path, progress: &mut dyn FnMut(u64)) -> Result<Summary> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    match (config.precision, &config.model) {
        (Precision::F64, ModelConfig::Dense(_)) => train_typed::<f64, Model<f64>>(config, out, progress),
        (Precision::F32, ModelConfig::Dense(_)) => train_typed::<f32, Model<f32>>(config, out, progress),
        (Precision::F64, ModelConfig::Tree(_)) => train_typed::<f64, Net<f64>>(config, out, progress),
        (Precision::F32, ModelConfig::Tree(_)) => train_typed::<f32, Net<f32>>(config, out, progress),
    }
}

fn train_typed<T: Real, M: Trainable<T>>(
    config: &TrainConfig,
    out: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary> {
    let mut trainer = Trainer::<T, M>::from_config(config)?;
    // Written once the run can start, so that a config refused while setting up leaves no run behind.
    let p = out.join("config.toml");
    std::fs::write(&p, config.to_toml()).map_err(|e| Error::io(&p, e))?;
    let mut observers = default_observers(config, &trainer.model)?;
    let columns = observer_columns(&observers, &trainer.model);
    let columns: Vec<&str> = columns.iter().map(|c| c.as_str()).collect();
    let mut sink = MetricsWriter::create(out.join("metrics.csv"), &columns)?;
    let summary = dynamics::run(
        &mut trainer,
        config.steps,
        config.log_every,
        config.seed,
        &mut observers,
        &mut sink,
        progress,
    )?;
    trainer.model.save(&out.join("model.safetensors"))?;
    trainer.model.save_data(trainer.eval_data(), &out.join("data.safetensors"))?;
    let json = serde_json::json!({
        "noether_version": env!("CARGO_PKG_VERSION"),
        "command": "train",
        "config": config,
        "seed": config.seed,
        "results": summary,
    });
    let p = out.join("summary.json");
    let text = serde_json::to_string_pretty(&json).map_err(|e| Error::Config(e.to_string()))?;
    std::fs::write(&p, text).map_err(|e| Error::io(&p, e))?;
    Ok(summary)
}

/// The metrics columns a config's run logs (built from a throw-away model; no training).
pub fn metric_columns(config: &TrainConfig) -> Result<Vec<String>> {
    use rand::SeedableRng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(config.seed);
    fn columns<M: Trainable<f64>>(config: &TrainConfig, model: &M) -> Result<Vec<String>> {
        Ok(observer_columns(&default_observers::<f64, M>(config, model)?, model))
    }
    match &config.model {
        ModelConfig::Dense(_) => columns(config, &Model::<f64>::from_config(config, &mut rng)?),
        ModelConfig::Tree(t) => columns(config, &Net::<f64>::init(t.arch.clone(), 0)),
    }
}

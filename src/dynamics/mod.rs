//! Training dynamics: GD, SGD (schedules, warmup, weight decay), the matching SDE and gradient flow, with
//! observers that log metrics. Nothing here prints: rows go to a [`MetricsSink`], progress to a callback.
//! The model trained is a dense chain or a module tree ([`Trainable`]; `[model]` of a config, [`ModelConfig`]).

mod config;
mod model_config;
mod net_observer;
mod observer;
mod schedule;
mod trainable;
mod trainer;

pub use config::{DataSpec, Method, ObserveSpec, Precision, TrainConfig, TrainData};
pub use model_config::{ModelConfig, TreeSpec};
pub use net_observer::{NetCharges, NetNoise, NetSharpness};
pub use observer::{Basics, Charges, NoiseObserver, Observer, SharpnessObserver, Snapshot};
pub use schedule::Schedule;
pub use trainable::Trainable;
pub use trainer::{Trainer, CHUNK};

use crate::error::{Error, Result};
use crate::real::Real;
use serde::Serialize;

/// Receives the logged rows of a run (a CSV file, memory, …). Rows arrive as they are logged, so a sink that
/// writes through keeps everything logged before a divergence or interruption.
pub trait MetricsSink {
    /// Called once with the column names.
    fn begin(&mut self, columns: &[String]) -> Result<()>;
    /// Called for each logged row (same length as the columns).
    fn row(&mut self, values: &[f64]) -> Result<()>;
}

/// A sink that keeps rows in memory.
#[derive(Clone, Debug, Default)]
pub struct MemorySink {
    /// Column names.
    pub columns: Vec<String>,
    /// Rows.
    pub rows: Vec<Vec<f64>>,
}

impl MetricsSink for MemorySink {
    fn begin(&mut self, columns: &[String]) -> Result<()> {
        self.columns = columns.to_vec();
        Ok(())
    }
    fn row(&mut self, values: &[f64]) -> Result<()> {
        self.rows.push(values.to_vec());
        Ok(())
    }
}

impl MemorySink {
    /// The values of column `name` over the rows (None when there is no such column).
    pub fn column(&self, name: &str) -> Option<Vec<f64>> {
        let i = self.columns.iter().position(|c| c == name)?;
        Some(self.rows.iter().map(|r| r[i]).collect())
    }
}

/// Where a run stopped early because the loss became non-finite.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Divergence {
    /// The step whose loss was non-finite.
    pub step: u64,
    /// That loss (NaN or ±inf, as text in JSON).
    pub loss: String,
    /// The learning rate at that step.
    pub lr: f64,
}

/// The outcome of a run (the `results` of `summary.json`).
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Optimiser short name (`gd`, `sgd`, `sde`, `gf`).
    pub method: String,
    /// Steps completed.
    pub steps: u64,
    /// Time `t = Σ η` reached.
    pub t: f64,
    /// Loss on the logging data at the end (None after a divergence).
    pub final_loss: Option<f64>,
    /// Set when the run stopped on a non-finite loss.
    pub diverged: Option<Divergence>,
    /// Wall-clock time of the run.
    pub wall_time_s: f64,
    /// Seed of the run.
    pub seed: u64,
}

/// Runs `trainer` for `steps` steps, logging every `log_every` steps (and the first and last) through
/// `observers` into `sink`; `progress(k)` is called as steps complete. A divergence ends the run early and
/// is reported in the summary (the rows logged so far are in the sink).
pub fn run<T: Real, M: Trainable<T>>(
    trainer: &mut Trainer<T, M>,
    steps: u64,
    log_every: u64,
    seed: u64,
    observers: &mut [Box<dyn Observer<T, M> + '_>],
    sink: &mut dyn MetricsSink,
    progress: &mut dyn FnMut(u64),
) -> Result<Summary> {
    let start = std::time::Instant::now();
    let columns = observer_columns(observers, &trainer.model);
    sink.begin(&columns)?;
    let mut row = Vec::with_capacity(columns.len());
    let mut log =
        |tr: &Trainer<T, M>, row: &mut Vec<f64>, obs: &mut [Box<dyn Observer<T, M> + '_>]| -> Result<()> {
            row.clear();
            let snap = Snapshot {
                step: tr.step_count(),
                time: tr.time(),
                lr: tr.current_lr(),
                model: &tr.model,
                data: tr.eval_data(),
                loss: tr.loss_fn(),
                step_loss: tr.last_loss(),
            };
            for o in obs.iter_mut() {
                o.observe(&snap, row)?;
            }
            sink.row(row)
        };
    log(trainer, &mut row, observers)?;
    let mut diverged = None;
    let tick = (steps / 200).max(1);
    for k in 0..steps {
        match trainer.step() {
            Ok(()) => {}
            Err(Error::Diverged { step, loss, lr }) => {
                diverged = Some(Divergence { step, loss: loss.to_string(), lr });
                break;
            }
            Err(e) => return Err(e),
        }
        let done = k + 1;
        if done % log_every == 0 || done == steps {
            log(trainer, &mut row, observers)?;
        }
        if done % tick == 0 || done == steps {
            progress(done);
        }
    }
    let final_loss = if diverged.is_none() {
        Some(trainer.model.mean_loss(trainer.eval_data(), trainer.loss_fn())?)
    } else {
        None
    };
    Ok(Summary {
        method: trainer.method().short().into(),
        steps: trainer.step_count(),
        t: trainer.time(),
        final_loss: final_loss.filter(|l| l.is_finite()),
        diverged,
        wall_time_s: start.elapsed().as_secs_f64(),
        seed,
    })
}

/// The column names of a list of observers, in logging order (the header of `metrics.csv`).
pub fn observer_columns<T: Real, M>(observers: &[Box<dyn Observer<T, M> + '_>], model: &M) -> Vec<String> {
    observers.iter().flat_map(|o| o.columns(model)).collect()
}

/// The standard observers of a config for `model`: [`Basics`], the charges of every symmetry ([`Charges`] of
/// a dense chain, [`NetCharges`] of a module tree) and, when asked, their noise and the sharpness.
pub fn default_observers<'a, T: Real, M: Trainable<T> + 'a>(
    config: &TrainConfig,
    model: &M,
) -> Result<Vec<Box<dyn Observer<T, M> + 'a>>> {
    model.default_observers(config)
}

/// The sharpness observer's options of a config (`None` when `observe.sharpness_every = 0`).
fn sharpness_options(config: &TrainConfig) -> Result<Option<crate::curvature::SharpnessOptions>> {
    let o = &config.observe;
    if o.sharpness_every == 0 {
        return Ok(None);
    }
    let trace =
        if o.trace() == "none" { None } else { Some(crate::curvature::TraceMethod::parse(o.trace())?) };
    Ok(Some(crate::curvature::SharpnessOptions {
        trace,
        trace_samples: 30,
        subset: if o.subset() > 0 {
            crate::curvature::Subset::Random { n: o.subset() }
        } else {
            crate::curvature::Subset::All
        },
        seed: config.seed,
        ..Default::default()
    }))
}

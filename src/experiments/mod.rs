//! The paper's experiments, one file each, with embedded default configs and quantitative checks.
//!
//! Each experiment implements [`Experiment`]: it runs in a folder of its own, writes every training run's
//! config (repeatable with `noether train`) and metrics there, draws its figures (PNG + SVG) and returns a
//! report [`Section`] whose [`Check`]s compare a prediction of the theory with a measurement. `quick` runs
//! the same claims at smaller sizes (the test suite uses it).

pub mod cnn_fashion_mnist;
pub mod fig1_scale_invariance;
pub mod fig2_matrix_factorization;
pub mod fig3_sharpening;
pub mod fig4_warmup;
pub mod fig5_scale_symmetry;
pub mod fig6_representations;
pub mod limit;
pub mod noether_flow;
pub mod relaxation;
pub mod teleport_vs_training;

use crate::dynamics::{
    self, default_observers, MemorySink, MetricsSink, Observer, Summary, TrainConfig, Trainer,
};
use crate::error::{Error, Result};
use crate::report::{Check, MetricsWriter, Outcome, Section};
use crate::Real;
use std::path::PathBuf;

/// What an experiment gets to run.
pub struct Context<'a> {
    /// Smaller sizes and fewer steps, same claims.
    pub quick: bool,
    /// Base seed; every run derives its seed from it.
    pub seed: u64,
    /// The experiment's own output folder (created).
    pub dir: PathBuf,
    /// Progress: `(done, total, phase)`, in units the experiment chooses.
    pub progress: &'a (dyn Fn(u64, u64, &str) + Sync),
}

/// One experiment of the paper.
pub trait Experiment: Sync {
    /// Short name, e.g. `fig2-matrix-factorization` (the folder name and the CLI selector).
    fn name(&self) -> &'static str;
    /// One sentence: the claim under test.
    fn description(&self) -> &'static str;
    /// Runs the experiment and returns its report section (checks and figures).
    fn run(&self, ctx: &Context<'_>) -> Result<Section>;
}

/// Every experiment, in the paper's order.
pub fn registry() -> Vec<&'static dyn Experiment> {
    vec![
        &noether_flow::NoetherFlow,
        &fig1_scale_invariance::Fig1,
        &fig2_matrix_factorization::Fig2,
        &fig3_sharpening::Fig3,
        &fig4_warmup::Fig4,
        &fig5_scale_symmetry::Fig5,
        &fig6_representations::Fig6,
        &relaxation::Relaxation,
        &teleport_vs_training::TeleportVsTraining,
        &cnn_fashion_mnist::CnnFashionMnist,
    ]
}

/// The experiment called `name`, or an error listing the names.
pub fn find(name: &str) -> Result<&'static dyn Experiment> {
    registry().into_iter().find(|e| e.name() == name).ok_or_else(|| Error::Unknown {
        kind: "experiment",
        name: name.into(),
        expected: registry().iter().map(|e| e.name()).collect::<Vec<_>>().join(", "),
    })
}

/// A sink that keeps rows in memory and writes them through to a CSV file.
struct Tee<'a> {
    memory: &'a mut MemorySink,
    file: MetricsWriter,
}

impl MetricsSink for Tee<'_> {
    fn begin(&mut self, columns: &[String]) -> Result<()> {
        self.memory.begin(columns)
    }
    fn row(&mut self, values: &[f64]) -> Result<()> {
        self.memory.row(values)?;
        self.file.row(values)
    }
}

/// One logged training run of an experiment: writes `dir/<stem>.toml` (the exact config, repeatable with
/// `noether train`) and `dir/<stem>.csv` (metrics as they are logged), runs it with the default observers
/// plus `extra`, and returns the logged rows, the summary and the final model.
pub fn train_logged<T: Real>(
    ctx: &Context<'_>,
    config: &TrainConfig,
    stem: &str,
    extra: Vec<Box<dyn Observer<T> + '_>>,
) -> Result<(MemorySink, Summary, crate::Model<T>)> {
    std::fs::create_dir_all(&ctx.dir).map_err(|e| Error::io(&ctx.dir, e))?;
    let cfg_path = ctx.dir.join(format!("{stem}.toml"));
    std::fs::write(&cfg_path, config.to_toml()).map_err(|e| Error::io(&cfg_path, e))?;
    let mut trainer = Trainer::<T>::from_config(config)?;
    let mut observers = default_observers(config, &trainer.model)?;
    observers.extend(extra);
    let columns = crate::dynamics::observer_columns(&observers, &trainer.model);
    let cols: Vec<&str> = columns.iter().map(|s| s.as_str()).collect();
    let mut memory = MemorySink::default();
    let file = MetricsWriter::create(ctx.dir.join(format!("{stem}.csv")), &cols)?;
    let mut sink = Tee { memory: &mut memory, file };
    let summary = dynamics::run(
        &mut trainer,
        config.steps,
        config.log_every,
        config.seed,
        &mut observers,
        &mut sink,
        &mut |_| {},
    )?;
    Ok((memory, summary, trainer.model))
}

/// Runs an experiment and records it in its folder: `summary.json` (`noether_version`, `command`, `config`
/// (quick, seed), `seed`, `results`: the section with its text, figures and checks) and `metrics.csv` (one row per
/// row: `check`, `predicted`, `measured`, `tolerance`, `pass` (1 pass, 0 fail or refuted, empty for a measurement or a row not
/// decided at this size). An experiment that errors becomes a section with
/// one failing check that carries the error text.
pub fn run_and_record(experiment: &dyn Experiment, ctx: &Context<'_>) -> Section {
    let section = experiment.run(ctx).unwrap_or_else(|err| failed_section(experiment.name(), &err));
    let record = || -> Result<()> {
        std::fs::create_dir_all(&ctx.dir).map_err(|e| Error::io(&ctx.dir, e))?;
        let config =
            serde_json::json!({ "experiment": experiment.name(), "quick": ctx.quick, "seed": ctx.seed });
        crate::report::Summary::new("reproduce", &config, Some(ctx.seed), &section)?
            .write(ctx.dir.join("summary.json"))?;
        let mut w = MetricsWriter::create(
            ctx.dir.join("metrics.csv"),
            &["check", "predicted", "measured", "tolerance", "pass"],
        )?;
        for (i, c) in section.checks.iter().enumerate() {
            let pass = match c.outcome {
                Outcome::Pass => 1.0,
                Outcome::Fail | Outcome::Refuted => 0.0,
                Outcome::Undecided | Outcome::Measured => f64::NAN,
            };
            w.row(&[i as f64, c.predicted, c.measured, c.tolerance, pass])?;
        }
        Ok(())
    };
    match record() {
        Ok(()) => section,
        Err(e) => failed_section(experiment.name(), &e),
    }
}

/// A check that the experiment ran at all, failing with the error text (used when an experiment errors).
pub fn failed_section(name: &str, err: &Error) -> Section {
    Section::new(name, format!("The experiment stopped with an error: {err}")).check(
        Check::absolute(name, "experiment runs to completion", 0.0, f64::NAN, 0.0)
            .tests("the experiment runs"),
    )
}

//! `noether analyze`: per-symmetry noise diagnostics (library: `noether::equilibrium::analysis`).

use crate::common::{ExportArgs, Global, ModelData, PrecisionArg};
use anyhow::Context;
use noether::data::Sampling;
use noether::equilibrium::{analysis, Analysis, AnalyzeOptions, Time};
use noether::report::records::AnalyzeRecord;
use serde::Serialize;
use std::io::Write;
use std::process::ExitCode;

/// Which clock the equilibria are computed for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimeArg {
    /// SDE / continuous time: balance Σ (centred).
    Continuous,
    /// Discrete SGD: balance M_S = f·Σ/S + ∇L∇Lᵀ.
    Discrete,
}

/// How minibatches are drawn (for the finite-population factor).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SamplingArg {
    /// i.i.d. indices (factor 1).
    With,
    /// Epochs of a permutation (factor (N−S)/(N−1)).
    Without,
}

impl From<SamplingArg> for Sampling {
    fn from(s: SamplingArg) -> Self {
        match s {
            SamplingArg::With => Sampling::WithReplacement,
            SamplingArg::Without => Sampling::WithoutReplacement,
        }
    }
}

/// Arguments of `noether analyze` (serialised as the exports' `config`).
#[derive(clap::Args, Debug, Serialize)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    pub io: ModelData,
    /// Batch size S for the predicted drifts and the discrete target, e.g. `--batch-size 32`.
    #[arg(long, default_value_t = 1)]
    pub batch_size: usize,
    /// Learning rate η for the predicted drifts, e.g. `--lr 0.1`.
    #[arg(long, default_value_t = 0.1, allow_hyphen_values = true)]
    pub lr: f64,
    /// Equilibrium target: continuous (Σ) or discrete (M_S for the given S).
    #[arg(long, value_enum, default_value_t = TimeArg::Continuous)]
    pub time: TimeArg,
    /// Batch sampling: with or without replacement.
    #[arg(long, value_enum, default_value_t = SamplingArg::With)]
    pub sampling: SamplingArg,
    /// Precision of the statistics pass: f64 (default) or f32 (computed in f32, moments accumulated in f64).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F64)]
    pub precision: PrecisionArg,
    /// Print the result as JSON (the fields of tests/data/*/case.json) instead of a table.
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
    #[command(flatten)]
    #[serde(skip)]
    pub export: ExportArgs,
}

/// The resolved [`Time`] of the `--time`, `--batch-size`, `--sampling` flags for N samples; a batch size of 0,
/// or above N without replacement, is an error naming the flags.
pub fn time_of(time: TimeArg, batch_size: usize, sampling: SamplingArg, n: usize) -> anyhow::Result<Time> {
    if batch_size == 0 {
        anyhow::bail!("--batch-size 0: the batch size must be at least 1");
    }
    if sampling == SamplingArg::Without && batch_size > n {
        anyhow::bail!(
            "--batch-size {batch_size} with --sampling without: the data hold only N = {n} samples; use \
             --batch-size ≤ {n} or --sampling with"
        );
    }
    Ok(match time {
        TimeArg::Continuous => Time::Continuous,
        TimeArg::Discrete => Time::discrete(batch_size, sampling.into(), n)?,
    })
}

pub fn run(args: Args, global: &Global) -> anyhow::Result<ExitCode> {
    if !(args.lr.is_finite() && args.lr > 0.0) {
        anyhow::bail!("--lr {}: the learning rate must be finite and positive", args.lr);
    }
    if let Some((net, data, loss)) = args.io.load_net()? {
        let exports = args.export.create(&args.io.files())?;
        let time = time_of(args.time, args.batch_size, args.sampling, data.len())?;
        let bar = crate::progress::bar(1, "statistics pass", global);
        let a = crate::arch::analysis(&net, &data, loss, time, args.precision == PrecisionArg::F32)?;
        bar.finish_and_clear();
        crate::arch::analyze(&net, &data, &a, args.lr, args.batch_size, args.json, (&exports, &args))?;
        return Ok(if a.diag.joint.converged { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    let exports = args.export.create(&args.io.files())?;
    let a = match args.precision {
        PrecisionArg::F64 => analyse::<f64>(&args, global)?,
        PrecisionArg::F32 => analyse::<f32>(&args, global)?,
    };
    crate::common::export(&exports, "analyze", &args, None, &AnalyzeRecord::all(&a))?;
    // An unconverged joint equilibrium is flagged (table, JSON `converged`) and exits 1.
    let converged = a.joint_equilibrium.as_ref().is_none_or(|j| j.converged);
    let code = if converged { ExitCode::SUCCESS } else { ExitCode::from(1) };
    if !converged {
        eprintln!("warning: the joint rescaling equilibrium did not converge (`converged: false`)");
    }
    if exports.to_stdout() {
        return Ok(code);
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &a)?;
        writeln!(out)?;
    } else {
        print_table(&mut out, &a)?;
    }
    Ok(code)
}

/// Loads the files in `T` and runs the analysis.
fn analyse<T: noether::Real>(args: &Args, global: &Global) -> anyhow::Result<Analysis> {
    let (model, data, loss) = args.io.load_as::<T>()?;
    let bar = crate::progress::bar(1, "statistics pass", global);
    let opts = AnalyzeOptions {
        time: time_of(args.time, args.batch_size, args.sampling, data.len())?,
        lr: args.lr,
        batch_size: args.batch_size,
        sampling: args.sampling.into(),
        ..Default::default()
    };
    let a = analysis(&model, &data, loss, &opts).context("analysing the model")?;
    bar.finish_and_clear();
    Ok(a)
}

fn opt(v: Option<f64>) -> String {
    v.map_or("—".into(), |x| format!("{x:+.4}"))
}

fn print_table(out: &mut impl Write, a: &Analysis) -> std::io::Result<()> {
    writeln!(
        out,
        "loss {:.6}   Tr Σ {:.6e}   N = {}   P = {}   target: {} (η = {}, S = {})",
        a.loss, a.trace_sigma, a.n_samples, a.n_params, a.time, a.lr, a.batch_size
    )?;
    if !a.neurons.is_empty() {
        writeln!(out, "\nrescaling symmetries (per hidden unit)")?;
        writeln!(
            out,
            "{:>5} {:>5} {:>11} {:>11} {:>11} {:>11} {:>11} {:>9} {:>14}",
            "layer", "unit", "charge", "noise_in", "noise_out", "Tr[AΣ]", "dC/dt", "λ*", "status"
        )?;
        for n in &a.neurons {
            let st = serde_json::to_value(n.status)
                .map(|v| v.as_str().unwrap_or("").to_string())
                .unwrap_or_default();
            writeln!(
                out,
                "{:>5} {:>5} {:>11.4e} {:>11.4e} {:>11.4e} {:>11.3e} {:>11.3e} {:>9} {:>14}",
                n.layer,
                n.unit,
                n.charge,
                n.noise_in,
                n.noise_out,
                n.tr_a_sigma,
                n.dc_dt_per_time,
                opt(n.lambda_star),
                st
            )?;
        }
    }
    for p in &a.pairs {
        let st =
            serde_json::to_value(p.status).map(|v| v.as_str().unwrap_or("").to_string()).unwrap_or_default();
        writeln!(
            out,
            "\ndouble rotation of layers ({}, {}): Tr[M_in − M_out] = {:.4e}, status {st}, solved on rank {}",
            p.layer,
            p.layer + 1,
            p.tr_a_sigma,
            p.rank
        )?;
    }
    for s in &a.scales {
        writeln!(out, "\nscale symmetry of layer {}: charge {:.4e}, Tr[AΣ] = {:.4e} ≥ 0, dC/dt = {:.4e}: no finite equilibrium (add weight decay)", s.layer, s.charge, s.tr_a_sigma, s.dc_dt_per_time)?;
    }
    let dead = a.neurons.iter().filter(|n| n.status == noether::equilibrium::Status::Dead).count();
    let one = a.neurons.iter().filter(|n| n.status == noether::equilibrium::Status::NoEquilibrium).count();
    writeln!(
        out,
        "\nsummary: {} rescalings ({dead} dead, {one} one-sided), {} linear pairs, {} scale blocks",
        a.neurons.len(),
        a.pairs.len(),
        a.scales.len()
    )?;
    if let Some(j) = &a.joint_equilibrium {
        let maxl = j.lambda.iter().map(|v| v.abs()).fold(0.0, f64::max);
        writeln!(
            out,
            "joint rescaling equilibrium: Tr Σ {:.6e} → {:.6e} ({:+.2}%), max |λ*| = {:.4}, residual {:.1e} after {} sweeps{}",
            a.trace_sigma,
            j.trace_sigma_at_star,
            100.0 * (j.trace_sigma_at_star / a.trace_sigma - 1.0),
            maxl,
            j.max_rel_residual,
            j.sweeps,
            if j.converged { "" } else { ", NOT converged" }
        )?;
    } else if a.neurons.is_empty() && a.pairs.is_empty() && a.scales.is_empty() {
        writeln!(out, "the model has no exact exponential symmetry (e.g. tanh hidden layers)")?;
    }
    Ok(())
}

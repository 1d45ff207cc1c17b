//! `noether reproduce [NAME ...] [--quick] [--out DIR] [--jobs N] [--seed S]`: runs the paper's experiments
//! in parallel, each with a progress bar, and writes `DIR/<name>/…`, `DIR/report.md` and `DIR/report.html`.

use crate::common::Global;
use crate::progress;
use anyhow::{Context as _, Result};
use noether::experiments::{find, registry, run_and_record, Context, Experiment};
use noether::report::{Outcome, Report, Section};
use rayon::prelude::*;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `noether reproduce`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Experiments to run (default: all), e.g. `noether reproduce fig2-matrix-factorization noether-flow`.
    pub names: Vec<String>,
    /// Smaller sizes and fewer steps, the same claims (all of it in a few minutes on 2 cores).
    #[arg(long)]
    pub quick: bool,
    /// Output folder, e.g. `--out results`.
    #[arg(long, default_value = "reproduce")]
    pub out: PathBuf,
    /// Experiments run at once, e.g. `--jobs 2` (default: the number of cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Base seed of every experiment, e.g. `--seed 1`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// List the experiments and exit (alone: the other arguments would do nothing).
    #[arg(long, conflicts_with_all = ["names", "quick", "out", "jobs", "seed", "force"])]
    pub list: bool,
    #[command(flatten)]
    pub force: crate::common::Force,
}

pub fn run(args: Args, global: &Global) -> Result<ExitCode> {
    if args.list {
        for e in registry() {
            outln!("{:<28} {}", e.name(), e.description());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.jobs == Some(0) {
        anyhow::bail!("--jobs 0: at least one experiment must run at a time; use --jobs 1 or more");
    }
    let mut selected: Vec<&'static dyn Experiment> = if args.names.is_empty() {
        registry()
    } else {
        args.names.iter().map(|n| find(n)).collect::<Result<_, _>>()?
    };
    // A name given twice runs once.
    let mut seen = std::collections::HashSet::new();
    selected.retain(|e| seen.insert(e.name()));
    for e in &selected {
        crate::common::refuse_overwrite(&args.out.join(e.name()), &["summary.json"], "--out", args.force)
            .with_context(|| {
                format!("experiment {} was already run into {}", e.name(), args.out.display())
            })?;
    }
    // Experiments run earlier into the same folder and not run now keep their sections in the report.
    let kept: Vec<Section> = registry()
        .into_iter()
        .filter(|e| !seen.contains(e.name()))
        .filter_map(|e| earlier_section(&args.out.join(e.name()).join("summary.json")))
        .collect();
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let jobs =
        args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(jobs).build()?;
    let multi = indicatif::MultiProgress::new();
    let overall = multi.add(progress::bar(selected.len() as u64, "experiments", global));
    let sections: Vec<Section> = pool.install(|| {
        selected
            .par_iter()
            .map(|e| {
                let pb = multi.add(progress::bar(1, e.name(), global));
                let report = |done: u64, total: u64, phase: &str| {
                    pb.set_length(total.max(1));
                    pb.set_position(done);
                    pb.set_message(format!("{} · {phase}", e.name()));
                };
                let ctx = Context {
                    quick: args.quick,
                    seed: args.seed,
                    dir: args.out.join(e.name()),
                    progress: &report,
                };
                let section = run_and_record(*e, &ctx);
                pb.finish_and_clear();
                overall.inc(1);
                section
            })
            .collect()
    });
    overall.finish_and_clear();
    let mut report = Report::new(format!(
        "noether: reproduction of Ziyin et al. (NeurIPS 2024){}",
        if args.quick { " — quick mode" } else { "" }
    ));
    if !kept.is_empty() {
        eprintln!(
            "note: the report keeps the results of {} experiment(s) run earlier into {}: {}",
            kept.len(),
            args.out.display(),
            kept.iter().map(|s| s.experiment.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    // Sections in registry order, whether run now or kept from an earlier run.
    let mut all: Vec<Section> = sections.into_iter().chain(kept).collect();
    let order: Vec<&str> = registry().iter().map(|e| e.name()).collect();
    all.sort_by_key(|s| order.iter().position(|n| *n == s.experiment).unwrap_or(usize::MAX));
    for s in all {
        report = report.section(s);
    }
    let files = report.write(&args.out)?;
    let (passed, total) = report.counts();
    for c in report.checks() {
        outln!(
            "{:<11} {:<28} [{}] {} (predicted {}, measured {})",
            match c.outcome {
                Outcome::Pass => "pass",
                Outcome::Fail => "FAIL",
                Outcome::Undecided => "undecided",
                Outcome::Measured => "measurement",
                Outcome::Refuted => "REFUTED",
            },
            c.experiment,
            if c.tests.is_empty() { "—" } else { &c.tests },
            c.claim,
            noether::report::fmt_num(c.predicted),
            noether::report::fmt_num(c.measured)
        );
    }
    let (undecided, measured) = (report.count(Outcome::Undecided), report.count(Outcome::Measured));
    let (refuted, failed) = (report.count(Outcome::Refuted), report.count(Outcome::Fail));
    outln!(
        "{passed}/{total} checks passed, {refuted} REFUTED, {failed} failed ({undecided} not decided at this size, \
         {measured} reported measurements); wrote {} and {}",
        files.markdown.display(),
        files.html.display()
    );
    if refuted > 0 {
        outln!(
            "REFUTED rows are pre-registered predictions the data refute, each explained in docs/experiments.md; \
             they do not fail the run, FAIL rows do"
        );
    }
    Ok(if report.all_passed() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The report section an earlier `reproduce` wrote to an experiment's `summary.json` (its `results`), if any.
fn earlier_section(summary: &std::path::Path) -> Option<Section> {
    let text = std::fs::read_to_string(summary).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    serde_json::from_value(v.get("results")?.clone()).ok()
}

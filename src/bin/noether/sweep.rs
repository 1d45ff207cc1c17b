//! `noether sweep SWEEP.toml [--out DIR] [--backend local|slurm]`, `noether sweep status DIR`,
//! `noether sweep collect DIR`: a grid of training runs (library: `noether::sweep`).
//! Exit codes: 0 = every point done, 1 = some points failed or are missing, 2 = error.

use crate::common::Global;
use crate::progress;
use anyhow::{bail, Context, Result};
use noether::sweep::slurm::{self, SlurmOptions};
use noether::sweep::{self as sw, LocalOptions, Status, SweepDir, SweepSpec, Table};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// How `squeue` is polled under `--wait`.
const POLL: Duration = Duration::from_millis(500);
/// Log lines shown per failed SLURM task.
const LOG_LINES: usize = 5;

/// Where the points run.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Backend {
    /// Worker threads on this machine.
    #[default]
    Local,
    /// A SLURM job array plus an aggregation job.
    Slurm,
}

/// Arguments of `noether sweep`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct Args {
    #[command(subcommand)]
    pub action: Option<Action>,
    /// The sweep file (base config + [grid]/[zip] axes + [collect] + [[plot]]), e.g. `examples/sweeps/fig3_phi.toml`.
    #[arg(required = true)]
    pub sweep: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `status` and `collect`.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// How many points of a sweep folder are done, failed (with their errors) and missing.
    Status {
        /// The sweep folder, e.g. `runs/fig3_phi`.
        dir: PathBuf,
    },
    /// Rebuild sweep.csv, sweep.json, sweep.md and the plots from the run folders (the aggregation job).
    Collect {
        /// The sweep folder, e.g. `runs/fig3_phi`.
        dir: PathBuf,
    },
}

/// Options of a sweep run.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Sweep folder (default: runs/<sweep name>), e.g. `--out runs/phi`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where the points run: local (worker threads) or slurm (a job array + an aggregation job).
    #[arg(long, value_enum, default_value_t = Backend::Local)]
    pub backend: Backend,
    /// Local workers (default: one per core), e.g. `--jobs 2`.
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Also rerun points recorded as failed.
    #[arg(long)]
    pub retry_failed: bool,
    /// Run only SLURM array task I (what sweep.sbatch runs), e.g. `--task 3`.
    #[arg(long, value_name = "I")]
    pub task: Option<usize>,
    /// Points per SLURM array task (default 1), e.g. `--points-per-task 50` (thousands of tiny runs in few
    /// jobs).
    #[arg(long, value_name = "M")]
    pub points_per_task: Option<usize>,
    /// SLURM partition, e.g. `--partition short`.
    #[arg(long)]
    pub partition: Option<String>,
    /// SLURM time limit per task: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, e.g. `--time 00:10:00`.
    #[arg(long, allow_hyphen_values = true)]
    pub time: Option<String>,
    /// SLURM memory per task: an integer with an optional K, M, G or T suffix, e.g. `--mem 2G`.
    #[arg(long, allow_hyphen_values = true)]
    pub mem: Option<String>,
    /// CPUs per SLURM task (default 1; also its worker count), e.g. `--cpus-per-task 4`.
    #[arg(long)]
    pub cpus_per_task: Option<usize>,
    /// At most P array tasks at once (`--array=…%P`), e.g. `--array-max 20`.
    #[arg(long, value_name = "P")]
    pub array_max: Option<usize>,
    /// An extra #SBATCH line (repeatable), e.g. `--sbatch-line=--account=myproj`.
    #[arg(long, value_name = "LINE")]
    pub sbatch_line: Vec<String>,
    /// Write sweep.sbatch and collect.sbatch without submitting them.
    #[arg(long)]
    pub dry_run: bool,
    /// Poll squeue until the array and the aggregation job are done, then report the table.
    #[arg(long)]
    pub wait: bool,
}

pub fn run(args: Args, global: &Global) -> Result<ExitCode> {
    match args.action {
        Some(Action::Status { dir }) => status(&dir),
        Some(Action::Collect { dir }) => collect(&dir),
        None => {
            let file = args.sweep.context("give a sweep file: noether sweep SWEEP.toml")?;
            sweep(&file, &args.run, global)
        }
    }
}

fn sweep(file: &Path, a: &RunArgs, global: &Global) -> Result<ExitCode> {
    if a.jobs == Some(0) {
        bail!("--jobs 0: give at least 1 worker");
    }
    if a.points_per_task == Some(0) {
        bail!("--points-per-task 0: give at least 1 point per task");
    }
    if a.cpus_per_task == Some(0) {
        bail!("--cpus-per-task 0: give at least 1");
    }
    if a.task.is_some() && a.backend == Backend::Slurm {
        bail!("--task runs one array task here; it cannot be combined with --backend slurm");
    }
    // Options that mean something only to the SLURM backend are refused elsewhere, not ignored.
    let slurm_only = [
        ("--dry-run", a.dry_run),
        ("--wait", a.wait),
        ("--partition", a.partition.is_some()),
        ("--time", a.time.is_some()),
        ("--mem", a.mem.is_some()),
        ("--cpus-per-task", a.cpus_per_task.is_some()),
        ("--array-max", a.array_max.is_some()),
        ("--sbatch-line", !a.sbatch_line.is_empty()),
    ];
    match a.backend {
        Backend::Local => {
            if let Some((flag, _)) = slurm_only.iter().find(|(_, on)| *on) {
                let hint = if *flag == "--cpus-per-task" { " (local workers: --jobs N)" } else { "" };
                bail!("{flag} is an option of --backend slurm; the local backend would ignore it{hint}");
            }
            if a.points_per_task.is_some() && a.task.is_none() {
                bail!(
                    "--points-per-task is an option of --backend slurm (and of --task, which the job array runs); \
                     the local backend would ignore it"
                );
            }
        }
        Backend::Slurm => {
            if let Some(j) = a.jobs {
                bail!(
                    "--jobs {j} sets local workers; with --backend slurm each array task runs --cpus-per-task \
                     workers on the CPUs SLURM grants it: give --cpus-per-task {j} instead"
                );
            }
        }
    }
    let slurm_opts = SlurmOptions {
        partition: a.partition.clone(),
        time: a.time.clone(),
        mem: a.mem.clone(),
        cpus_per_task: a.cpus_per_task.unwrap_or(1),
        array_max: a.array_max,
        extra: a.sbatch_line.clone(),
        points_per_task: a.points_per_task.unwrap_or(1),
        retry_failed: a.retry_failed,
        ..Default::default()
    };
    slurm_opts.validate()?;
    let spec = SweepSpec::from_file(file)?;
    let points = spec.points()?;
    spec.check_metrics(&points)?;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("runs").join(sw::spec::sanitize(&spec.name)));
    let sweep = SweepDir::create(&spec, &out)?;
    if let Some(task) = a.task {
        let jobs = a.jobs.unwrap_or(1);
        let opts = LocalOptions { jobs, retry_failed: a.retry_failed };
        let records = sw::run_task(&sweep, &points, task, a.points_per_task.unwrap_or(1), &opts)?;
        let failed = records.iter().filter(|r| r.status == Status::Failed).count();
        for r in records.iter().filter(|r| r.status == Status::Failed) {
            eprintln!("point {} ({}) failed: {}", r.index, r.name, r.error.as_deref().unwrap_or(""));
        }
        outln!("task {task}: ran {} points, {failed} failed", records.len());
        return Ok(ExitCode::SUCCESS);
    }
    match a.backend {
        Backend::Local => local(&sweep, &points, a, global),
        Backend::Slurm => submit(&sweep, file, a, slurm_opts),
    }
}

fn local(sweep: &SweepDir, points: &[sw::Point], a: &RunArgs, global: &Global) -> Result<ExitCode> {
    let jobs = a.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let opts = LocalOptions { jobs, retry_failed: a.retry_failed };
    let before = SweepDir::pending(&sweep.scan()?, a.retry_failed).len();
    let pb = progress::bar(before as u64, format!("{}: 0 failed", sweep.spec.name), global);
    let table = sw::run_local(sweep, points, &opts, &mut |p| {
        pb.set_position(p.finished as u64);
        pb.set_message(format!("{}: {} failed", sweep.spec.name, p.failed));
    })?;
    pb.finish_and_clear();
    outln!(
        "{}: ran {before} of {} points on {jobs} workers (the others were complete)",
        sweep.spec.name,
        points.len()
    );
    report(sweep, &table)
}

fn submit(sweep: &SweepDir, file: &Path, a: &RunArgs, opts: SlurmOptions) -> Result<ExitCode> {
    let table = sweep.scan()?;
    let pending = SweepDir::pending(&table, a.retry_failed);
    if pending.is_empty() {
        outln!("{}: every point is complete; nothing to submit", sweep.spec.name);
        let table = sweep.scan()?;
        table.write(&sweep.dir)?;
        return report(sweep, &table);
    }
    let opts = SlurmOptions {
        noether: std::env::current_exe().context("locating the noether binary for the job scripts")?,
        sweep_file: std::path::absolute(file).with_context(|| format!("resolving {}", file.display()))?,
        ..opts
    };
    let scripts = slurm::write_scripts(sweep, &pending, &opts)?;
    outln!(
        "wrote {} ({} tasks for {} pending points) and {}",
        scripts.array.display(),
        scripts.tasks.len(),
        pending.len(),
        scripts.collect.display()
    );
    if a.dry_run {
        outln!("--dry-run: not submitted; submit with: sbatch {}", scripts.array.display());
        return Ok(ExitCode::SUCCESS);
    }
    let sub = slurm::submit(sweep, &scripts)?;
    outln!("submitted array job {} and aggregation job {} (afterany)", sub.array_job, sub.collect_job);
    if !a.wait {
        outln!("follow with: noether sweep status {}", sweep.dir.display());
        return Ok(ExitCode::SUCCESS);
    }
    slurm::wait(&[&sub.array_job, &sub.collect_job], POLL)?;
    let csv = sweep.dir.join("sweep.csv");
    let written = std::fs::metadata(&csv)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .is_some_and(|t| t.as_secs() >= sub.submitted_unix_s);
    if !written {
        let log = slurm::collect_log_tail(&sweep.dir, LOG_LINES)
            .map(|(p, l)| format!("; {}:\n{}", p.display(), l.join("\n")))
            .unwrap_or_default();
        bail!("the aggregation job {} ended without writing {}{log}", sub.collect_job, csv.display());
    }
    report(sweep, &sweep.scan()?)
}

/// Prints the counts and the table files; exit 0 when every point is done, else 1 (after the status).
/// Warns (stderr) of the plotted values a figure leaves out.
fn warn_plot_omissions(table: &Table) {
    for line in table.plot_omissions() {
        eprintln!("warning: {line}");
    }
}

fn report(sweep: &SweepDir, table: &Table) -> Result<ExitCode> {
    warn_plot_omissions(table);
    let c = table.counts();
    outln!(
        "{} of {} points done, {} failed, {} missing; table: {}",
        c.done,
        c.total,
        c.failed,
        c.missing,
        sweep.dir.join("sweep.csv").display()
    );
    if c.done == c.total {
        Ok(ExitCode::SUCCESS)
    } else {
        print_problems(sweep, table)?;
        Ok(ExitCode::from(1))
    }
}

fn print_problems(sweep: &SweepDir, table: &Table) -> Result<()> {
    for r in table.rows.iter().filter(|r| r.status == Status::Failed) {
        outln!("failed  {} {}: {}", r.index, r.name, r.error.as_deref().unwrap_or(""));
    }
    let subs = slurm::submissions(&sweep.dir);
    let ppt = subs.last().map_or(1, |s| s.points_per_task);
    let mut shown_tasks = Vec::new();
    for r in table.rows.iter().filter(|r| r.status == Status::Missing) {
        let note = if r.partial { " (interrupted: a .partial folder is left)" } else { "" };
        outln!("missing {} {}{note}", r.index, r.name);
        let task = r.index / ppt;
        if subs.is_empty() || shown_tasks.contains(&task) {
            continue;
        }
        shown_tasks.push(task);
        if let Some((path, lines)) = slurm::task_log_tail(&sweep.dir, task, LOG_LINES) {
            outln!("        SLURM task {task}, last lines of {}:", path.display());
            for l in lines {
                outln!("        | {l}");
            }
        }
    }
    Ok(())
}

fn status(dir: &Path) -> Result<ExitCode> {
    let sweep = SweepDir::open(dir)?;
    let table = sweep.scan()?;
    let c = table.counts();
    outln!(
        "{}: {} points: {} done, {} failed, {} missing",
        sweep.spec.name,
        c.total,
        c.done,
        c.failed,
        c.missing
    );
    if c.done == c.total {
        return Ok(ExitCode::SUCCESS);
    }
    print_problems(&sweep, &table)?;
    Ok(ExitCode::from(1))
}

fn collect(dir: &Path) -> Result<ExitCode> {
    let sweep = SweepDir::open(dir)?;
    let table = sweep.scan()?;
    let files = table.write(&sweep.dir)?;
    warn_plot_omissions(&table);
    let c = table.counts();
    outln!(
        "{}: {} of {} points done, {} failed, {} missing; wrote {}, {}, {} and {} plots",
        sweep.spec.name,
        c.done,
        c.total,
        c.failed,
        c.missing,
        files.csv.display(),
        files.json.display(),
        files.markdown.display(),
        files.figures.len()
    );
    Ok(ExitCode::SUCCESS)
}

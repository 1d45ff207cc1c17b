//! Sweeps: a grid of training runs from one sweep file, run on this machine or as a SLURM job array, with a
//! table built from the run folders alone.
//!
//! - [`spec`]: the sweep file, grid and zip expansion, dotted keys checked against the config schema, stable
//!   point indices and folder names.
//! - [`point`]: one point into `DIR/points/<name>` (written as `<name>.partial`, renamed when complete).
//! - [`table`]: the table (`sweep.csv`, `sweep.json`, `sweep.md`, plots) rebuilt from the folders.
//! - [`slurm`]: the job-array and aggregation scripts, submission and polling.
//!
//! A sweep folder `DIR` holds `spec.json` (the resolved sweep, so that `status` and `collect` need nothing
//! else), `points/`, the table files and, for SLURM, `sweep.sbatch`, `collect.sbatch` and `slurm/` (logs).
//! A point whose folder is complete is never run again; [`SweepDir::pending`] lists what is missing (and
//! failed, on request). Every point trains single-threaded in its worker, so the table is byte-identical
//! (wall times aside) for any number of workers and on either backend.
//!
//! ```no_run
//! use noether::sweep::{run_local, LocalOptions, SweepDir, SweepSpec};
//! let spec = SweepSpec::from_file("examples/sweeps/fig3_phi.toml")?;
//! let points = spec.points()?; // every point checked before anything runs
//! let sweep = SweepDir::create(&spec, "runs/fig3_phi")?;
//! let table = run_local(&sweep, &points, &LocalOptions { jobs: 2, retry_failed: false }, &mut |_| {})?;
//! println!("{:?}", table.counts());
//! # Ok::<(), noether::Error>(())
//! ```

pub mod point;
pub mod slurm;
pub mod spec;
pub mod table;

pub use point::{run_point, train_into, train_into_with, PointRecord, Status};
pub use spec::{Axis, CollectSpec, PlotSpec, Point, SweepSpec};
pub use table::{Counts, Row, Table, TableFiles};

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The resolved spec inside a sweep folder.
pub const SPEC_FILE: &str = "spec.json";

/// How often the local backend rewrites the table while points finish.
const TABLE_INTERVAL: Duration = Duration::from_secs(2);

/// A sweep folder bound to its spec.
#[derive(Clone, Debug)]
pub struct SweepDir {
    /// The folder.
    pub dir: PathBuf,
    /// The sweep it holds.
    pub spec: SweepSpec,
}

impl SweepDir {
    /// Creates `dir` for `spec`, or reopens it if it holds the same sweep (same base config and axes; the
    /// collect and plot sections may change and are updated). A folder holding another sweep is refused with
    /// the first difference.
    pub fn create(spec: &SweepSpec, dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let file = dir.join(SPEC_FILE);
        if file.exists() {
            let there = Self::open(&dir)?;
            if let Some(difference) = spec.difference(&there.spec) {
                return Err(Error::SweepMismatch { dir: dir.display().to_string(), difference });
            }
        } else if dir.exists() && std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?.next().is_some() {
            return Err(Error::SweepMismatch {
                dir: dir.display().to_string(),
                difference: format!("it is not empty and has no {SPEC_FILE}"),
            });
        }
        std::fs::create_dir_all(point::points_dir(&dir)).map_err(|e| Error::io(&dir, e))?;
        let text = serde_json::to_string_pretty(spec).map_err(|e| Error::Config(e.to_string()))? + "\n";
        if std::fs::read_to_string(&file).ok().as_deref() != Some(text.as_str()) {
            // Array tasks start together: each writes through its own temporary name.
            let tmp = dir.join(format!(".{SPEC_FILE}.{}.tmp", std::process::id()));
            std::fs::write(&tmp, &text).map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, &file).map_err(|e| Error::io(&file, e))?;
        }
        Ok(SweepDir { dir, spec: spec.clone() })
    }

    /// Opens an existing sweep folder (reads `spec.json`).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let file = dir.join(SPEC_FILE);
        let text = std::fs::read_to_string(&file).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Config(format!("{} is not a sweep folder (no {SPEC_FILE})", dir.display()))
            } else {
                Error::io(&file, e)
            }
        })?;
        let spec: SweepSpec = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: not a sweep spec ({e})", file.display())))?;
        Ok(SweepDir { dir, spec })
    }

    /// The table as the folders hold it.
    pub fn scan(&self) -> Result<Table> {
        Table::scan(&self.spec, &self.dir)
    }

    /// Indices of the rows still to run: missing, and failed when `retry_failed`.
    pub fn pending(table: &Table, retry_failed: bool) -> Vec<usize> {
        table
            .rows
            .iter()
            .filter(|r| r.status == Status::Missing || (retry_failed && r.status == Status::Failed))
            .map(|r| r.index)
            .collect()
    }
}

/// Options of the local backend.
#[derive(Clone, Copy, Debug)]
pub struct LocalOptions {
    /// Worker threads (≥ 1), each training one point at a time single-threaded.
    pub jobs: usize,
    /// Run failed points again.
    pub retry_failed: bool,
}

/// What the progress callback receives after each point.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    /// Points run so far in this call.
    pub finished: usize,
    /// Of which failed.
    pub failed: usize,
    /// Points this call runs.
    pub to_run: usize,
    /// The row of the point just finished.
    pub row: &'a Row,
}

/// Runs the pending points of `sweep` on `opts.jobs` workers, rewriting the table every few seconds and at
/// the end; `progress` is called on this thread after every point. Returns the final table.
pub fn run_local(
    sweep: &SweepDir,
    points: &[Point],
    opts: &LocalOptions,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<Table> {
    let mut table = sweep.scan()?;
    let pending = SweepDir::pending(&table, opts.retry_failed);
    let todo: Vec<&Point> = pending.iter().map(|&i| &points[i]).collect();
    let mut last_write = Instant::now();
    let mut failed = 0;
    let mut finished = 0;
    let mut io_error = None;
    run_points(&sweep.dir, &todo, opts.jobs, &mut |p, outcome| {
        finished += 1;
        match outcome {
            Ok(_) => {
                if let Err(e) = table.refresh(&sweep.dir, p.index) {
                    table.fail(p.index, e.to_string());
                }
            }
            Err(e) => {
                table.fail(p.index, e.to_string());
                io_error.get_or_insert(e);
            }
        }
        let row = &table.rows[p.index];
        if row.status != Status::Done {
            failed += 1;
        }
        progress(&Progress { finished, failed, to_run: todo.len(), row });
        if last_write.elapsed() >= TABLE_INTERVAL {
            // A partial table is valid (its missing rows say so); a failure to write it shows at the end.
            let _ = table.write(&sweep.dir);
            last_write = Instant::now();
        }
    });
    table.write(&sweep.dir)?;
    match io_error {
        Some(e) => Err(e),
        None => Ok(table),
    }
}

/// The points of SLURM task `task` when each task runs `per_task` consecutive points.
pub fn task_range(total: usize, task: usize, per_task: usize) -> Result<std::ops::Range<usize>> {
    let per_task = per_task.max(1);
    let tasks = total.div_ceil(per_task);
    if task >= tasks {
        return Err(Error::Config(format!(
            "--task {task} is out of range: this sweep has {total} points in {tasks} tasks of {per_task} \
             (--points-per-task), so tasks are 0..={}",
            tasks.saturating_sub(1)
        )));
    }
    Ok(task * per_task..((task + 1) * per_task).min(total))
}

/// Runs the pending points of one SLURM task (no table: the aggregation job writes it). Returns the records.
pub fn run_task(
    sweep: &SweepDir,
    points: &[Point],
    task: usize,
    per_task: usize,
    opts: &LocalOptions,
) -> Result<Vec<PointRecord>> {
    let range = task_range(points.len(), task, per_task)?;
    let table = sweep.scan()?;
    let todo: Vec<&Point> = SweepDir::pending(&table, opts.retry_failed)
        .into_iter()
        .filter(|i| range.contains(i))
        .map(|i| &points[i])
        .collect();
    let mut records = Vec::new();
    let mut first_err = None;
    run_points(&sweep.dir, &todo, opts.jobs, &mut |_, outcome| match outcome {
        Ok(r) => records.push(r),
        Err(e) => {
            first_err.get_or_insert(e);
        }
    });
    match first_err {
        Some(e) => Err(e),
        None => Ok(records),
    }
}

/// Runs `points` on `jobs` worker threads, calling `done` on this thread as each finishes. Each worker owns a
/// one-thread rayon pool, created once, on which its loop over points runs: kernels that would use the global
/// pool run sequentially, so a point computes the same bits with any `jobs` and no pool is built per point.
pub fn run_points(
    dir: &Path,
    points: &[&Point],
    jobs: usize,
    done: &mut dyn FnMut(&Point, Result<PointRecord>),
) {
    let jobs = jobs.clamp(1, points.len().max(1));
    let next = AtomicUsize::new(0);
    let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<PointRecord>)>();
    std::thread::scope(|s| {
        for _ in 0..jobs {
            let tx = tx.clone();
            let next = &next;
            s.spawn(move || {
                let work = || loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= points.len() || tx.send((k, run_point(dir, points[k]))).is_err() {
                        break;
                    }
                };
                // The whole loop runs on the pool's one thread (one hand-off per worker, not per point). If
                // no pool can be built, the points still run, with the global pool for any parallel kernel.
                match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
                    Ok(pool) => pool.install(work),
                    Err(_) => work(),
                }
            });
        }
        drop(tx);
        for (k, outcome) in rx {
            done(points[k], outcome);
        }
    });
}

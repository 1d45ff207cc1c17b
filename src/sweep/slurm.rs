//! The SLURM backend: `DIR/sweep.sbatch`, a job array whose task `i` runs
//! `noether sweep SWEEP.toml --out DIR --task i` (points `i·M .. (i+1)·M` with `M = --points-per-task`), and
//! `DIR/collect.sbatch`, the aggregation job (`noether sweep collect DIR`) submitted with
//! `--dependency=afterany` on the array. Only tasks holding a pending point are in the array
//! (`--array=0-3,7%P`), so a resubmission runs only what is missing. Logs go to `DIR/slurm/`.
//!
//! Outcomes are read from the run folders, not from `sacct` (which needs slurmdbd); polling uses
//! `squeue -h -j ID` (`sbatch --wait` backs off to tens of seconds).

use super::SweepDir;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Resources and options of the job array.
#[derive(Clone, Debug, Default)]
pub struct SlurmOptions {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--time` (e.g. `00:30:00`).
    pub time: Option<String>,
    /// `--mem` (e.g. `2G`).
    pub mem: Option<String>,
    /// `--cpus-per-task` (≥ 1): also the number of workers of each task.
    pub cpus_per_task: usize,
    /// At most this many array tasks at once (`%P`).
    pub array_max: Option<usize>,
    /// Extra `#SBATCH` lines (with or without the `#SBATCH ` prefix), e.g. `--account=proj`.
    pub extra: Vec<String>,
    /// Points per array task (≥ 1).
    pub points_per_task: usize,
    /// Tasks rerun failed points.
    pub retry_failed: bool,
    /// The noether binary the tasks run (absolute).
    pub noether: PathBuf,
    /// The sweep file the tasks read (absolute).
    pub sweep_file: PathBuf,
}

impl SlurmOptions {
    /// Checks what sbatch would only refuse later, or what would not mean what it says in the script:
    /// `time` and `mem` in SLURM's formats ([`check_time`], [`check_mem`]), `array_max`, `cpus_per_task` and
    /// `points_per_task` ≥ 1, and no line break in any value that becomes an `#SBATCH` line.
    pub fn validate(&self) -> Result<()> {
        if let Some(t) = &self.time {
            check_time(t)?;
        }
        if let Some(m) = &self.mem {
            check_mem(m)?;
        }
        if self.array_max == Some(0) {
            return Err(Error::Config("--array-max 0: give at least 1 task at once".into()));
        }
        if self.cpus_per_task == 0 {
            return Err(Error::Config("--cpus-per-task 0: give at least 1".into()));
        }
        if self.points_per_task == 0 {
            return Err(Error::Config("--points-per-task 0: give at least 1 point per task".into()));
        }
        if let Some(p) = &self.partition {
            if p.is_empty() || p.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(Error::Config(format!(
                    "--partition {p:?}: a SLURM partition name (or a comma-separated list), without spaces"
                )));
            }
        }
        if let Some(l) = self.extra.iter().find(|l| l.chars().any(|c| c.is_control())) {
            return Err(Error::Config(format!(
                "--sbatch-line {l:?} holds a line break or control character; give one #SBATCH option per \
                 --sbatch-line"
            )));
        }
        Ok(())
    }
}

/// Checks a SLURM time limit: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS (digits only), or
/// `INFINITE`/`UNLIMITED`.
pub fn check_time(t: &str) -> Result<()> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ok = t.eq_ignore_ascii_case("infinite") || t.eq_ignore_ascii_case("unlimited") || {
        let (days, clock) = match t.split_once('-') {
            Some((d, c)) => (Some(d), c),
            None => (None, t),
        };
        let parts: Vec<&str> = clock.split(':').collect();
        days.is_none_or(digits) && parts.len() <= 3 && parts.iter().all(|p| digits(p))
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "--time {t:?} is not a SLURM time limit; give minutes (30), MM:SS, HH:MM:SS, D-HH, D-HH:MM or \
             D-HH:MM:SS (e.g. 1-12:00:00), or UNLIMITED"
        )))
    }
}

/// Checks a SLURM memory size: an integer with an optional K, M, G or T suffix (megabytes without one).
pub fn check_mem(m: &str) -> Result<()> {
    let number = m.strip_suffix(['K', 'M', 'G', 'T', 'k', 'm', 'g', 't']).unwrap_or(m);
    if !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "--mem {m:?} is not a SLURM memory size; give an integer with an optional K, M, G or T suffix \
             (e.g. 2G; megabytes without a suffix)"
        )))
    }
}

/// The scripts written by [`write_scripts`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scripts {
    /// `DIR/sweep.sbatch`.
    pub array: PathBuf,
    /// `DIR/collect.sbatch`.
    pub collect: PathBuf,
    /// The array task ids (tasks holding a pending point).
    pub tasks: Vec<usize>,
    /// Points per task.
    pub points_per_task: usize,
}

/// A submission, appended to `DIR/slurm/jobs.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// Job id of the array.
    pub array_job: String,
    /// Job id of the aggregation job.
    pub collect_job: String,
    /// The array task ids.
    pub tasks: Vec<usize>,
    /// Points per task.
    pub points_per_task: usize,
    /// Seconds since the Unix epoch at submission.
    pub submitted_unix_s: u64,
}

/// `DIR/slurm`, where the logs and `jobs.json` go.
pub fn slurm_dir(dir: &Path) -> PathBuf {
    dir.join("slurm")
}

/// Task ids as a SLURM array list: consecutive runs compressed, `[0, 1, 2, 3, 7, 9, 10]` → `0-3,7,9-10`.
pub fn array_list(tasks: &[usize]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < tasks.len() {
        let mut j = i;
        while j + 1 < tasks.len() && tasks[j + 1] == tasks[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { tasks[i].to_string() } else { format!("{}-{}", tasks[i], tasks[j]) });
        i = j + 1;
    }
    parts.join(",")
}

/// A word quoted for `sh`: `'…'` with every `'` written as `'\''`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn path_arg(p: &Path) -> String {
    sh_quote(&p.display().to_string())
}

/// Writes `DIR/sweep.sbatch` and `DIR/collect.sbatch` for the `pending` points (indices, sorted).
pub fn write_scripts(sweep: &SweepDir, pending: &[usize], opts: &SlurmOptions) -> Result<Scripts> {
    let dir = std::path::absolute(&sweep.dir).map_err(|e| Error::io(&sweep.dir, e))?;
    let logs = slurm_dir(&dir);
    std::fs::create_dir_all(&logs).map_err(|e| Error::io(&logs, e))?;
    let ppt = opts.points_per_task.max(1);
    let mut tasks: Vec<usize> = pending.iter().map(|i| i / ppt).collect();
    tasks.dedup();
    if tasks.is_empty() {
        return Err(Error::Config("no pending points: nothing to submit".into()));
    }
    opts.validate()?;
    let name = super::spec::sanitize(&sweep.spec.name);
    let mut common = Vec::new();
    if let Some(p) = &opts.partition {
        common.push(format!("--partition={p}"));
    }
    if let Some(t) = &opts.time {
        common.push(format!("--time={t}"));
    }
    if let Some(m) = &opts.mem {
        common.push(format!("--mem={m}"));
    }
    let extra: Vec<String> =
        opts.extra.iter().map(|l| l.trim().trim_start_matches("#SBATCH").trim().to_string()).collect();
    let header = |lines: &[String]| -> String {
        let mut s = String::from("#!/bin/sh\n");
        for l in lines.iter().chain(&common).chain(&extra) {
            s += &format!("#SBATCH {l}\n");
        }
        s
    };
    let cpus = opts.cpus_per_task.max(1);
    let array = match opts.array_max {
        Some(p) => format!("{}%{p}", array_list(&tasks)),
        None => array_list(&tasks),
    };
    let mut text = header(&[
        format!("--job-name=noether-{name}"),
        format!("--array={array}"),
        format!("--cpus-per-task={cpus}"),
        format!("--output={}", logs.join("task-%A_%a.out").display()),
    ]);
    text += &format!(
        "# Task i runs points i*{ppt} .. (i+1)*{ppt}-1 of the sweep; complete points are skipped.\n\
         exec {} sweep {} --out {} --task \"$SLURM_ARRAY_TASK_ID\" --points-per-task {ppt} --jobs {cpus}{} --quiet\n",
        path_arg(&opts.noether),
        path_arg(&opts.sweep_file),
        path_arg(&dir),
        if opts.retry_failed { " --retry-failed" } else { "" },
    );
    let array_path = dir.join("sweep.sbatch");
    std::fs::write(&array_path, text).map_err(|e| Error::io(&array_path, e))?;
    let mut text = header(&[
        format!("--job-name=noether-{name}-collect"),
        "--cpus-per-task=1".into(),
        format!("--output={}", logs.join("collect-%j.out").display()),
    ]);
    text += &format!(
        "# The aggregation job: rebuilds the table from the run folders once the array has ended.\n\
         exec {} sweep collect {} --quiet\n",
        path_arg(&opts.noether),
        path_arg(&dir)
    );
    let collect_path = dir.join("collect.sbatch");
    std::fs::write(&collect_path, text).map_err(|e| Error::io(&collect_path, e))?;
    Ok(Scripts { array: array_path, collect: collect_path, tasks, points_per_task: ppt })
}

/// Runs a SLURM client command, returning its stdout; a missing program or a non-zero exit is an
/// [`Error::External`] carrying the stderr.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program).args(args).output().map_err(|e| Error::External {
        program: program.into(),
        reason: if e.kind() == std::io::ErrorKind::NotFound {
            format!(
                "not found on PATH ({e}); run on a SLURM login node, use --backend local, or --dry-run to only \
                 write the scripts"
            )
        } else {
            e.to_string()
        },
    })?;
    if !out.status.success() {
        return Err(Error::External {
            program: program.into(),
            reason: format!(
                "`{program} {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The job id in `sbatch --parsable` output (`id` or `id;cluster`).
fn parse_job_id(stdout: &str) -> Result<String> {
    let id = stdout.trim().split(';').next().unwrap_or("").to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::External {
            program: "sbatch".into(),
            reason: format!("expected a job id from --parsable, got {:?}", stdout.trim()),
        });
    }
    Ok(id)
}

/// Submits the array, then the aggregation job with `--dependency=afterany` on it, and records both in
/// `DIR/slurm/jobs.json`.
pub fn submit(sweep: &SweepDir, scripts: &Scripts) -> Result<Submission> {
    let array_job = parse_job_id(&run("sbatch", &["--parsable", &scripts.array.display().to_string()])?)?;
    let collect_job = parse_job_id(&run(
        "sbatch",
        &[
            "--parsable",
            &format!("--dependency=afterany:{array_job}"),
            &scripts.collect.display().to_string(),
        ],
    )?)?;
    let sub = Submission {
        array_job,
        collect_job,
        tasks: scripts.tasks.clone(),
        points_per_task: scripts.points_per_task,
        submitted_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let mut all = submissions(&sweep.dir);
    all.push(sub.clone());
    let p = slurm_dir(&sweep.dir).join("jobs.json");
    let text = serde_json::to_string_pretty(&all).map_err(|e| Error::Config(e.to_string()))?;
    crate::report::export::write_atomic(&p, &(text + "\n"))?;
    Ok(sub)
}

/// The submissions recorded in `DIR/slurm/jobs.json` (empty when there are none).
pub fn submissions(dir: &Path) -> Vec<Submission> {
    std::fs::read_to_string(slurm_dir(dir).join("jobs.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Polls `squeue -h -j IDS` every `poll` until none of `jobs` is queued or running.
pub fn wait(jobs: &[&str], poll: Duration) -> Result<()> {
    let ids = jobs.join(",");
    loop {
        match run("squeue", &["-h", "-j", &ids, "-o", "%i"]) {
            Ok(out) if out.trim().is_empty() => return Ok(()),
            Ok(_) => {}
            // squeue refuses ids it has already forgotten: they are finished.
            Err(Error::External { reason, .. }) if reason.contains("Invalid job id") => return Ok(()),
            Err(e) => return Err(e),
        }
        std::thread::sleep(poll);
    }
}

/// The last `n` lines of the newest log of array task `task` (`DIR/slurm/task-*_<task>.out`).
pub fn task_log_tail(dir: &Path, task: usize, n: usize) -> Option<(PathBuf, Vec<String>)> {
    newest_log(dir, |name| name.starts_with("task-") && name.ends_with(&format!("_{task}.out")), n)
}

/// The last `n` lines of the newest aggregation-job log (`DIR/slurm/collect-*.out`).
pub fn collect_log_tail(dir: &Path, n: usize) -> Option<(PathBuf, Vec<String>)> {
    newest_log(dir, |name| name.starts_with("collect-") && name.ends_with(".out"), n)
}

fn newest_log(dir: &Path, keep: impl Fn(&str) -> bool, n: usize) -> Option<(PathBuf, Vec<String>)> {
    let entries = std::fs::read_dir(slurm_dir(dir)).ok()?;
    let newest = entries
        .filter_map(|e| e.ok())
        .filter(|e| keep(&e.file_name().to_string_lossy()))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .max()?
        .1;
    let text = std::fs::read_to_string(&newest).ok()?;
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let tail = lines[lines.len().saturating_sub(n)..].to_vec();
    Some((newest, tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_lists_compress_runs() {
        assert_eq!(array_list(&[0, 1, 2, 3, 7, 9, 10]), "0-3,7,9-10");
        assert_eq!(array_list(&[5]), "5");
        assert_eq!(array_list(&[]), "");
    }

    #[test]
    fn shell_quoting_survives_quotes() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn job_ids_from_parsable_output() {
        assert_eq!(parse_job_id("123\n").unwrap(), "123");
        assert_eq!(parse_job_id("77;cluster\n").unwrap(), "77");
        assert!(parse_job_id("Submitted batch job 3").is_err());
    }
}

//! Sweeps: grid and zip expansion, dotted keys against the config schema, stable indices and names, bad input,
//! resumption and faults, identical tables for any worker count, and the SLURM backend on a real cluster
//! (`NOETHER_SLURM=1` with `SLURM_CONF`, as `.ci/run` sets up; required under `CI=true`).

use crate::cli::{noether, stderr, tmp};
use noether::dynamics::Method;
use noether::sweep::{run_local, LocalOptions, Status, SweepDir, SweepSpec, Table};
use std::path::Path;

/// A base config of a tiny net (a few ms per point) followed by `axes`.
fn sweep_text(axes: &str) -> String {
    format!(
        r#"
name = "tiny"
[base]
steps = 120
log_every = 20
lr = 0.01
[base.model]
dims = [3, 4, 2]
activation = "identity"
bias = false
[base.data]
kind = "teacher"
n = 32
teacher = {{ map = "random" }}
[base.optimizer]
method = "sgd"
batch_size = 4
{axes}
"#
    )
}

fn parse(axes: &str) -> noether::Result<SweepSpec> {
    SweepSpec::from_toml(&sweep_text(axes), "t", Path::new("."))
}

/// Asserts that every sweep `(axes, wants)` of `cases` is an error whose message holds each of `wants`.
fn assert_errors(cases: &[(&str, &[&str])]) {
    for (text, wants) in cases {
        let e = err(text);
        assert!(wants.iter().all(|w| e.contains(w)), "{text}\n→ {e}\nwanted {wants:?}");
    }
}

fn err(axes: &str) -> String {
    match parse(axes).and_then(|s| s.points()) {
        Ok(_) => panic!("accepted: {axes}"),
        Err(e) => e.to_string(),
    }
}

const GRID: &str = r#"
[grid]
lr = [0.01, 0.02, 0.05]
"optimizer.batch_size" = [1, 4]
seed = { range = [0, 2] }
[collect]
final = ["loss"]
mean_last = { k = 3, metrics = ["loss"] }
summary = ["t"]
"#;

#[test]
fn grid_is_the_cartesian_product_in_file_order_first_axis_slowest() {
    let spec = parse(GRID).unwrap();
    let points = spec.points().unwrap();
    // The same enumeration by nested loops, written independently of the mixed-radix indexing.
    let mut expected = Vec::new();
    for lr in [0.01, 0.02, 0.05] {
        for s in [1usize, 4] {
            for seed in [0u64, 1] {
                expected.push((lr, s, seed));
            }
        }
    }
    assert_eq!(points.len(), expected.len());
    for (p, &(lr, s, seed)) in points.iter().zip(&expected) {
        assert_eq!(p.config.lr, lr);
        assert_eq!(p.config.optimizer, Method::Sgd { batch_size: s, sampling: Default::default() });
        assert_eq!(p.config.seed, seed);
        assert_eq!(p.config.steps, 120, "untouched keys keep the base value");
    }
    let keys: Vec<&str> = spec.keys();
    assert_eq!(keys, ["lr", "optimizer.batch_size", "seed"], "file order, not alphabetical");
}

#[test]
fn zip_axes_vary_together_after_the_grid() {
    let spec = parse(
        r#"
[grid]
seed = [0, 1]
[zip]
"data.teacher.sigma_x.phi" = [1.0, 10.0, 100.0]
steps = [40, 60, 80]
"#,
    )
    .unwrap();
    let pts = spec.points().unwrap();
    assert_eq!(pts.len(), 6);
    let got: Vec<(u64, f64, u64)> = pts
        .iter()
        .map(|p| match &p.config.data {
            noether::dynamics::DataSpec::Teacher { teacher, .. } => {
                (p.config.seed, teacher.sigma_x.phi, p.config.steps)
            }
            _ => unreachable!(),
        })
        .collect();
    let want = [(0, 1.0, 40), (0, 10.0, 60), (0, 100.0, 80), (1, 1.0, 40), (1, 10.0, 60), (1, 100.0, 80)];
    assert_eq!(got, want);
}

#[test]
fn dotted_keys_create_missing_tables_and_reach_nested_keys() {
    // The base has no [observe] and no weight_decay: both exist in the schema, so they can be swept.
    let spec = parse("[grid]\n\"observe.noise_every\" = [0, 20]\nweight_decay = [0.0, 0.001]\n").unwrap();
    let pts = spec.points().unwrap();
    assert_eq!(pts[1].config.observe.noise_every, 0);
    assert_eq!(pts[1].config.weight_decay, 0.001);
    assert_eq!(pts[2].config.observe.noise_every, 20);
    // A whole table as a value replaces the table (here switching the optimiser).
    let spec =
        parse("[grid]\noptimizer = [{ method = \"gd\" }, { method = \"sgd\", batch_size = 2 }]\n").unwrap();
    let pts = spec.points().unwrap();
    assert_eq!(pts[0].config.optimizer, Method::Gd);
    assert!(
        pts[1].name.ends_with("optimizer=2+sgd") || pts[1].name.ends_with("optimizer=sgd+2"),
        "{}",
        pts[1].name
    );
}

#[test]
fn indices_and_names_are_stable_and_unique() {
    let a = parse(GRID).unwrap();
    let b = parse(GRID).unwrap();
    let names: Vec<String> = (0..a.len()).map(|i| a.name_of(i)).collect();
    assert_eq!(names, (0..b.len()).map(|i| b.name_of(i)).collect::<Vec<_>>());
    assert_eq!(names[0], "00-lr=0.01_batch_size=1_seed=0");
    assert_eq!(names[11], "11-lr=0.05_batch_size=4_seed=1");
    let mut sorted = names.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len());
    // Keys sharing a last segment keep their full dotted form; arrays are joined by `x`.
    let s = parse(
        "[grid]\n\"data.teacher.sigma_x.phi\" = [2.0]\n\"data.teacher.sigma_eps.phi\" = [3.0]\n\"model.dims\" = [[3, 5, 2]]\n",
    )
    .unwrap();
    assert_eq!(s.name_of(0), "0-data.teacher.sigma_x.phi=2.0_data.teacher.sigma_eps.phi=3.0_dims=3x5x2");
}

#[test]
fn bad_sweeps_are_errors_naming_the_key() {
    const PLOT: &str = "[grid]\nlr = [0.1]\n[collect]\nfinal = [\"loss\"]\n[[plot]]\ny = \"final_loss\"\n";
    // (sweep text after the base config, what the error must say)
    let cases: &[(&str, &[&str])] = &[
        (
            "[grid]\n\"optimizer.batch_sise\" = [1, 2]\n",
            &["optimizer.batch_sise", "unknown field `batch_sise`"],
        ),
        ("[grid]\nlearning_rate = [0.1]\n", &["learning_rate", "unknown field"]),
        ("[grid]\nlr = [0.1, \"fast\"]\n", &["axis `lr` = \"fast\"", "invalid type"]),
        ("[grid]\nlr = [0.1, -1.0]\n", &["lr must be positive"]),
        ("[grid]\nlr = []\n", &["axis `lr` has no values"]),
        ("[grid]\n", &["no axes"]),
        ("", &["no axes"]),
        ("[grid]\nseed = { range = [0, 1.5] }\n", &["range must be"]),
        ("[zip]\nlr = [0.1, 0.2]\nseed = [1]\n", &["equal lengths"]),
        ("[grid]\n\"lr.x\" = [1]\n", &["`lr` is not a table"]),
        ("[grid]\nlr = [0.1]\n[collect]\nsummary = [\"loss\"]\n", &["summary field `loss`"]),
        ("[grid]\nlr = [0.1]\n[[plot]]\ny = \"final_loss\"\nx = \"lr\"\n", &["not a collected column"]),
        ("x = \"seed\"\n", &["x = \"seed\" is not an axis"]),
        ("x = \"lr\"\nwhere = { seed = 1 }\n", &["where: `seed` is not an axis"]),
        ("x = \"lr\"\nwhere = { lr = 0.2 }\n", &["axis `lr` has no value 0.2"]),
        ("[grid]\nlr = [0.1]\n[colect]\n", &["unknown field `colect`"]),
    ];
    for (text, wants) in cases {
        // Cases that start with a plot key complete the PLOT prefix.
        let text = if text.starts_with("x = ") { format!("{PLOT}{text}") } else { text.to_string() };
        let e = err(&text);
        assert!(wants.iter().all(|w| e.contains(w)), "{text}\n→ {e}\nwanted {wants:?}");
    }
    // A metric that no point logs is refused before anything runs.
    let spec = parse("[grid]\nlr = [0.1]\n[collect]\nfinal = [\"los\"]\n").unwrap();
    let e = spec.check_metrics(&spec.points().unwrap()).unwrap_err().to_string();
    assert!(e.contains("metric `los`") && e.contains("step_loss"), "{e}");
}

fn run(spec: &SweepSpec, dir: &Path, jobs: usize, retry_failed: bool) -> (Table, usize) {
    let points = spec.points().unwrap();
    let sweep = SweepDir::create(spec, dir).unwrap();
    let mut ran = 0;
    let t =
        run_local(&sweep, &points, &LocalOptions { jobs, retry_failed }, &mut |p| ran = p.finished).unwrap();
    (t, ran)
}

/// sweep.csv without its last column (wall time), the one column allowed to differ between runs.
fn csv_without_wall_time(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("sweep.csv")).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        let cut = line.rfind(',').unwrap();
        out += &line[..cut];
        out += "\n";
    }
    out
}

#[test]
fn tables_are_byte_identical_for_one_and_two_workers_and_equal_collect() {
    let spec = parse(GRID).unwrap();
    let d = tmp("sweep-jobs");
    let (t1, ran1) = run(&spec, &d.join("j1"), 1, false);
    let (t2, ran2) = run(&spec, &d.join("j2"), 2, false);
    assert_eq!((ran1, ran2), (12, 12));
    assert_eq!(t1.counts().done, 12);
    let a = csv_without_wall_time(&d.join("j1"));
    assert_eq!(a, csv_without_wall_time(&d.join("j2")));
    assert_eq!(a.lines().count(), 13);
    assert!(a.starts_with(
        "index,name,param_lr,param_optimizer.batch_size,param_seed,status,final_loss,mean3_loss,t,error\n"
    ));
    // `collect` (the aggregation job) rebuilds exactly this table from the folders.
    let sweep = SweepDir::open(d.join("j1")).unwrap();
    let before = std::fs::read(d.join("j1/sweep.csv")).unwrap();
    sweep.scan().unwrap().write(&sweep.dir).unwrap();
    assert_eq!(std::fs::read(d.join("j1/sweep.csv")).unwrap(), before);
    // The collected values are the run folder's own: the last row of metrics.csv and summary.json.
    let row = &t2.rows[5];
    let metrics = std::fs::read_to_string(d.join("j2/points").join(&row.name).join("metrics.csv")).unwrap();
    let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
    let li = header.iter().position(|h| *h == "loss").unwrap();
    let losses: Vec<f64> =
        metrics.lines().skip(1).map(|l| l.split(',').nth(li).unwrap().parse().unwrap()).collect();
    assert_eq!(row.values[0], Some(*losses.last().unwrap()));
    let n = losses.len();
    assert_eq!(row.values[1], Some((losses[n - 1] + losses[n - 2] + losses[n - 3]) / 3.0));
    assert!(d.join("j1/sweep.md").exists() && d.join("j1/sweep.json").exists());
}

#[test]
fn a_half_written_point_is_rerun_and_complete_points_are_not() {
    let spec = parse(GRID).unwrap();
    let d = tmp("sweep-resume");
    let dir = d.join("s");
    run(&spec, &dir, 2, false);
    let reference = csv_without_wall_time(&dir);
    // Simulate a task killed half-way through point 4: its folder is still the .partial one, with a truncated
    // metrics file and no point.json; the final folder is gone.
    let name = spec.name_of(4);
    let points = dir.join("points");
    std::fs::rename(points.join(&name), points.join(format!("{name}.partial"))).unwrap();
    std::fs::remove_file(points.join(format!("{name}.partial/point.json"))).unwrap();
    std::fs::write(points.join(format!("{name}.partial/metrics.csv")), "step,t,lo").unwrap();
    let stamp = |i: usize| {
        std::fs::metadata(points.join(spec.name_of(i)).join("point.json")).unwrap().modified().unwrap()
    };
    let untouched = stamp(3);
    let sweep = SweepDir::open(&dir).unwrap();
    let t = sweep.scan().unwrap();
    assert_eq!(t.rows[4].status, Status::Missing);
    assert!(t.rows[4].partial);
    let (t, ran) = run(&spec, &dir, 2, false);
    assert_eq!(ran, 1, "only the interrupted point runs again");
    assert_eq!(stamp(3), untouched);
    assert!(!points.join(format!("{name}.partial")).exists());
    assert_eq!(t.counts().done, 12);
    assert_eq!(csv_without_wall_time(&dir), reference);
    // A third run has nothing to do.
    assert_eq!(run(&spec, &dir, 2, false).1, 0);
}

#[test]
fn a_diverging_point_is_recorded_and_rerun_only_with_retry_failed() {
    let spec = parse("[grid]\nlr = [0.01, 80.0, 0.02]\n[collect]\nfinal = [\"loss\"]\n").unwrap();
    let d = tmp("sweep-diverge");
    let dir = d.join("s");
    let (t, ran) = run(&spec, &dir, 2, false);
    assert_eq!(ran, 3);
    let c = t.counts();
    assert_eq!((c.done, c.failed, c.missing), (2, 1, 0));
    let row = &t.rows[1];
    assert_eq!(row.status, Status::Failed);
    assert!(row.error.as_deref().unwrap().contains("loss became"), "{:?}", row.error);
    assert_eq!(row.values, [None]);
    let csv = std::fs::read_to_string(dir.join("sweep.csv")).unwrap();
    assert!(csv.lines().nth(2).unwrap().contains(",failed,,loss became"), "{csv}");
    assert!(std::fs::read_to_string(dir.join("sweep.md")).unwrap().contains("**Incomplete**"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap();
    assert_eq!(json["complete"], false);
    assert_eq!(json["counts"]["failed"], 1);
    // The failed point's metrics up to the divergence are kept in its folder.
    assert!(dir.join("points").join(&row.name).join("metrics.csv").exists());
    assert_eq!(run(&spec, &dir, 2, false).1, 0, "a recorded failure is not rerun by default");
    let (t, ran) = run(&spec, &dir, 2, true);
    assert_eq!(ran, 1, "--retry-failed reruns exactly the failed point");
    assert_eq!(t.rows[1].status, Status::Failed);
}

#[test]
fn a_folder_holding_another_sweep_is_refused_with_the_difference() {
    let d = tmp("sweep-other");
    let a = parse("[grid]\nlr = [0.01, 0.02]\n").unwrap();
    SweepDir::create(&a, d.join("s")).unwrap();
    let b = parse("[grid]\nlr = [0.01, 0.03]\n").unwrap();
    let e = SweepDir::create(&b, d.join("s")).unwrap_err().to_string();
    assert!(
        e.contains("holds a different sweep") && e.contains("grid[0].values[1]: 0.03 here, 0.02 there"),
        "{e}"
    );
    // A different [collect] is the same sweep (the table is rebuilt), and an unrelated folder is refused.
    let c = parse("[grid]\nlr = [0.01, 0.02]\n[collect]\nsummary = [\"t\"]\n").unwrap();
    SweepDir::create(&c, d.join("s")).unwrap();
    std::fs::create_dir_all(d.join("busy")).unwrap();
    std::fs::write(d.join("busy/notes.txt"), "mine").unwrap();
    let e = SweepDir::create(&a, d.join("busy")).unwrap_err().to_string();
    assert!(e.contains("not empty"), "{e}");
}

fn write_sweep(dir: &Path, axes: &str) -> String {
    let p = dir.join("sweep.toml");
    std::fs::write(&p, sweep_text(axes)).unwrap();
    p.display().to_string()
}

#[test]
fn cli_bad_input_exits_2_with_the_reason() {
    let d = tmp("sweep-cli");
    let f = write_sweep(&d, "[grid]\nlr = [0.01, 0.02]\n");
    let out = d.join("out").display().to_string();
    let o = noether(&["sweep", &f, "--out", &out, "--task", "2", "-q"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--task 2 is out of range") && stderr(&o).contains("tasks are 0..=1"),
        "{}",
        stderr(&o)
    );
    let o = noether(&["sweep", &f, "--out", &out, "--jobs", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--jobs 0"), "{}", stderr(&o));
    let o = noether(&["sweep", "status", &d.display().to_string()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a sweep folder"), "{}", stderr(&o));
    // sbatch missing: the error says so and what to do instead; no table is written.
    let o = Command::new(env!("CARGO_BIN_EXE_noether"))
        .args(["sweep", &f, "--out", &out, "--backend", "slurm"])
        .env("PATH", d.join("no-bin"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("sbatch: not found on PATH"), "{}", stderr(&o));
    assert!(!d.join("out/sweep.csv").exists());
    // sbatch failing: its stderr is shown.
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(
        bin.join("sbatch"),
        "#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpu' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(bin.join("sbatch"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_noether"))
        .args(["sweep", &f, "--out", &out, "--backend", "slurm", "--partition", "gpu"])
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("invalid partition specified: gpu"), "{}", stderr(&o));
    // --dry-run writes the scripts only.
    let o = noether(&[
        "sweep",
        &f,
        "--out",
        &out,
        "--backend",
        "slurm",
        "--dry-run",
        "--array-max",
        "3",
        "--sbatch-line=--account=abc",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = std::fs::read_to_string(d.join("out/sweep.sbatch")).unwrap();
    assert!(
        script.contains("#SBATCH --array=0-1%3\n") && script.contains("#SBATCH --account=abc\n"),
        "{script}"
    );
    assert!(script.contains("--task \"$SLURM_ARRAY_TASK_ID\""), "{script}");
    assert!(std::fs::read_to_string(d.join("out/collect.sbatch")).unwrap().contains("sweep collect"));
}

use std::process::Command;

#[test]
fn cli_status_lists_failed_and_missing_points() {
    let d = tmp("sweep-status");
    let f = write_sweep(&d, "[grid]\nlr = [0.01, 90.0]\n[collect]\nfinal = [\"loss\"]\n");
    let out = d.join("out").display().to_string();
    let o = noether(&["sweep", &f, "--out", &out, "--jobs", "2", "-q"]);
    assert_eq!(o.status.code(), Some(1), "a failed point: exit 1 (not an input error)");
    // Tasks can be run one by one, as the array does, and status sees what is missing.
    std::fs::remove_dir_all(d.join("out/points/0-lr=0.01")).unwrap();
    let o = noether(&["sweep", "status", &out]);
    assert_eq!(o.status.code(), Some(1));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("2 points: 0 done, 1 failed, 1 missing"), "{text}");
    assert!(text.contains("failed  1 1-lr=90.0: loss became"), "{text}");
    assert!(text.contains("missing 0 0-lr=0.01"), "{text}");
    let o = noether(&["sweep", &f, "--out", &out, "--task", "0", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = noether(&["sweep", "collect", &out]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("1 of 2 points done, 1 failed, 0 missing"));
}

/// The SLURM backend against a real cluster: a 6-point sweep (one point diverges) through `--backend slurm
/// --wait` gives the local backend's table, end to end in under 30 s.
#[test]
fn slurm_backend_matches_the_local_table() {
    let available = std::env::var("NOETHER_SLURM").is_ok_and(|v| v == "1")
        && Command::new("sinfo").arg("-h").output().is_ok_and(|o| o.status.success());
    if !available {
        let reason = "SLURM not available (needs NOETHER_SLURM=1, SLURM_CONF and a responding sinfo; .ci/run sets them up)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{reason}");
        }
        eprintln!("skipping slurm_backend_matches_the_local_table: {reason}");
        return;
    }
    let d = tmp("sweep-slurm");
    let f = write_sweep(&d, "[grid]\nlr = [0.01, 0.03, 70.0]\nseed = [0, 1]\n[collect]\nfinal = [\"loss\"]\nsummary = [\"t\"]\n[[plot]]\ny = \"final_loss\"\nx = \"lr\"\nlines = \"seed\"\n");
    let local = d.join("local").display().to_string();
    let o = noether(&["sweep", &f, "--out", &local, "--jobs", "2", "-q"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let slurm = d.join("slurm").display().to_string();
    let start = std::time::Instant::now();
    let o = noether(&[
        "sweep",
        &f,
        "--out",
        &slurm,
        "--backend",
        "slurm",
        "--wait",
        "--points-per-task",
        "2",
        "-q",
    ]);
    let secs = start.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(o.status.code(), Some(1), "{text}{}", stderr(&o));
    assert!(
        text.contains("submitted array job") && text.contains("4 of 6 points done, 2 failed, 0 missing"),
        "{text}"
    );
    eprintln!("slurm sweep of 6 points end to end: {secs:.1} s");
    assert!(secs < 30.0, "{secs} s");
    assert_eq!(csv_without_wall_time(&d.join("slurm")), csv_without_wall_time(&d.join("local")));
    assert!(d.join("slurm/plots/final_loss_vs_lr.svg").exists());
    let logs: Vec<_> = std::fs::read_dir(d.join("slurm/slurm")).unwrap().filter_map(|e| e.ok()).collect();
    assert_eq!(logs.iter().filter(|e| e.file_name().to_string_lossy().starts_with("task-")).count(), 3);
    // Resubmitting runs nothing: every point is complete (the diverged one is recorded).
    let o = noether(&["sweep", &f, "--out", &slurm, "--backend", "slurm", "--wait", "-q"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing to submit"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // sbatch refusing a script (an invalid #SBATCH line): exit 2 with its stderr.
    let o = noether(&[
        "sweep",
        &f,
        "--out",
        &slurm,
        "--backend",
        "slurm",
        "--retry-failed",
        "--sbatch-line=--no-such-option",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("sbatch") && stderr(&o).contains("no-such-option"), "{}", stderr(&o));
    // A task killed half-way (cancelled while training a long point) leaves no complete folder, and status
    // shows the task's log.
    let long = d.join("long");
    std::fs::create_dir_all(&long).unwrap();
    let f = write_sweep(&long, "[grid]\nsteps = [50000000]\nlog_every = [10000000]\n");
    let out = long.join("out");
    let o = noether(&["sweep", &f, "--out", &out.display().to_string(), "--backend", "slurm", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let partial = out.join("points").join(format!("{}.partial", "0-steps=50000000_log_every=10000000"));
    let t0 = std::time::Instant::now();
    while !partial.join("metrics.csv").exists() {
        assert!(t0.elapsed().as_secs() < 30, "the long point never started");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let sub: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("slurm/jobs.json")).unwrap()).unwrap();
    let array = sub[0]["array_job"].as_str().unwrap().to_string();
    let collect = sub[0]["collect_job"].as_str().unwrap().to_string();
    assert!(Command::new("scancel").arg(&array).status().unwrap().success());
    noether::sweep::slurm::wait(&[&array, &collect], std::time::Duration::from_millis(300)).unwrap();
    let o = noether(&["sweep", "status", &out.display().to_string()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(text.contains("0 done, 0 failed, 1 missing") && text.contains("interrupted"), "{text}");
    assert!(text.contains("SLURM task 0, last lines of") && text.contains("CANCELLED"), "{text}");
    assert!(!out.join("points/0-steps=50000000_log_every=10000000").exists());
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    assert!(csv.contains(",missing,"), "the aggregation job ran after the cancelled array: {csv}");
}

#[test]
fn example_sweeps_are_valid() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/sweeps");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let spec = SweepSpec::from_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let points = spec.points().unwrap();
        spec.check_metrics(&points).unwrap();
        assert!(!spec.plots.is_empty(), "{} has no plot", p.display());
        n += 1;
    }
    assert!(n >= 2);
}

#[test]
fn plots_average_the_matching_rows_at_each_x() {
    let axes = format!("{GRID}[[plot]]\ny = \"final_loss\"\nx = \"lr\"\nlines = \"optimizer.batch_size\"\nwhere = {{ seed = 1 }}\n");
    let spec = parse(&axes).unwrap();
    let d = tmp("sweep-plot");
    let (t, _) = run(&spec, &d.join("s"), 2, false);
    let figs = t.figures();
    assert_eq!(figs.len(), 1);
    let noether::report::Panel::Plot(plot) = &figs[0].1.panels[0] else { panic!("not a plot") };
    assert_eq!(plot.series.len(), 2, "one line per batch size");
    for (series, s) in plot.series.iter().zip([1i64, 4]) {
        assert_eq!(series.name, format!("batch_size = {s}"));
        let want: Vec<(f64, f64)> = [0.01, 0.02, 0.05]
            .iter()
            .map(|&lr| {
                // With seed fixed by `where`, each (lr, S) has exactly one row: the mean is that row's value.
                let r = t
                    .rows
                    .iter()
                    .find(|r| {
                        r.params[0].as_float() == Some(lr)
                            && r.params[1].as_integer() == Some(s)
                            && r.params[2].as_integer() == Some(1)
                    })
                    .unwrap();
                (lr, r.values[0].unwrap())
            })
            .collect();
        assert_eq!(series.points, want);
    }
    assert!(
        d.join("s/plots/final_loss_vs_lr.png").exists() && d.join("s/plots/final_loss_vs_lr.svg").exists()
    );
    assert!(std::fs::read_to_string(d.join("s/sweep.md"))
        .unwrap()
        .contains("![final_loss_vs_lr](plots/final_loss_vs_lr.png)"));
}

/// Runs `noether sweep` on a sweep file holding `axes` after the tiny base, asserts exit 2, and returns stderr.
fn cli_refuses(name: &str, axes: &str, extra: &[&str]) -> String {
    let d = tmp(name);
    let f = write_sweep(&d, axes);
    let out = d.join("out").display().to_string();
    let mut args = vec!["sweep", f.as_str(), "--out", out.as_str(), "-q"];
    args.extend_from_slice(extra);
    let o = noether(&args);
    assert_eq!(o.status.code(), Some(2), "{args:?} → {}", stderr(&o));
    assert!(!d.join("out/points").exists(), "{args:?} ran something");
    stderr(&o)
}

#[test]
fn every_point_gets_the_training_configs_checks_before_anything_runs() {
    // A key beside a tag that takes none: `noether train` refuses it, and so must every point.
    let cases: &[(&str, &[&str])] = &[
        (
            "[base.schedule]\nkind = \"warmup\"\nwarmup_steps = 5\n[grid]\n\"schedule.kind\" = [\"constant\", \"warmup\"]\n",
            &["point 0 (schedule.kind = \"constant\")", "schedule.warmup_steps does not apply to kind = \"constant\""],
        ),
        (
            "[grid]\n\"optimizer.method\" = [\"gd\", \"sgd\"]\n",
            &["point 0 (optimizer.method = \"gd\")", "optimizer.batch_size does not apply to method = \"gd\""],
        ),
        (
            "[grid]\nlr = [0.01, 0.02]\noptimizer = [{ method = \"gd\", batch_size = 3 }]\n",
            &["point 0 (", "optimizer.batch_size does not apply to method = \"gd\""],
        ),
    ];
    assert_errors(cases);
    let e = cli_refuses("sweep-tags", cases[0].0, &[]);
    assert!(e.contains("point 0") && e.contains("schedule.warmup_steps"), "{e}");
    // Defaults the file never wrote are not held against a point: the gradient flow's substeps are only
    // filled in by the resolved base, so a point may switch the method to gd.
    let text = sweep_text("[grid]\n\"optimizer.method\" = [\"gradient_flow\", \"gd\"]\n")
        .replace("method = \"sgd\"\nbatch_size = 4", "method = \"gradient_flow\"");
    let pts = SweepSpec::from_toml(&text, "t", Path::new(".")).unwrap().points().unwrap();
    assert_eq!(pts[1].config.optimizer, Method::Gd);
}

#[test]
fn overlapping_axes_are_refused_naming_both() {
    for text in [
        "[grid]\n\"optimizer.batch_size\" = [1, 2]\noptimizer = [{ method = \"sgd\", batch_size = 8 }]\n",
        "[grid]\noptimizer = [{ method = \"sgd\", batch_size = 8 }]\n[zip]\n\"optimizer.batch_size\" = [1, 2]\n",
    ] {
        let e = err(text);
        assert!(e.contains("axes `optimizer` and `optimizer.batch_size` overlap"), "{text}\n→ {e}");
    }
    // A shared prefix that is not a whole segment is no overlap.
    parse("[grid]\n\"data.teacher.sigma_x.phi\" = [1.0]\n\"data.teacher.sigma_eps.phi\" = [2.0]\n").unwrap();
    let e = cli_refuses(
        "sweep-overlap",
        "[grid]\n\"optimizer.batch_size\" = [1, 2]\noptimizer = [{ method = \"sgd\", batch_size = 8 }]\n",
        &[],
    );
    assert!(e.contains("`optimizer` and `optimizer.batch_size`"), "{e}");
}

#[test]
fn plot_and_sweep_names_are_plain_file_names_and_plots_do_not_share_one() {
    const PLOT: &str =
        "[grid]\nlr = [0.01]\n[collect]\nfinal = [\"loss\"]\n[[plot]]\ny = \"final_loss\"\nx = \"lr\"\n";
    for (name, why) in [
        ("../../evil", "holds a path separator"),
        ("a\\\\b", "holds a path separator"),
        ("", "is empty"),
        ("..", "names a folder"),
        (".", "names a folder"),
    ] {
        let e = err(&format!("{PLOT}name = \"{name}\"\n"));
        assert!(e.contains("[[plot]] name = ") && e.contains(why), "{name}\n→ {e}");
        let text =
            sweep_text("[grid]\nlr = [0.01]\n").replace("name = \"tiny\"", &format!("name = \"{name}\""));
        let e = SweepSpec::from_toml(&text, "t", Path::new(".")).unwrap_err().to_string();
        assert!(e.contains("name = ") && e.contains(why) && e.contains("sweep's name"), "{name}\n→ {e}");
    }
    let e = err(&format!("{PLOT}[[plot]]\ny = \"final_loss\"\nx = \"lr\"\n"));
    assert!(e.contains("two [[plot]] entries write plots/final_loss_vs_lr.png"), "{e}");
    let e = err(&format!("{PLOT}name = \"a\"\n[[plot]]\ny = \"final_loss\"\nx = \"lr\"\nname = \"a\"\n"));
    assert!(e.contains("plots/a.png"), "{e}");
    let d = tmp("sweep-evil");
    let e = cli_refuses("sweep-evil/x", &format!("{PLOT}name = \"../../evil\"\n"), &[]);
    assert!(e.contains("../../evil") && e.contains("path separator"), "{e}");
    assert!(!d.join("evil.png").exists() && !d.join("x/evil.png").exists());
}

#[test]
fn duplicated_axis_values_are_refused_naming_the_axis_and_value() {
    let cases: &[(&str, &[&str])] = &[
        ("[grid]\nlr = [0.01, 0.02, 0.01]\n", &["axis `lr`", "0.01 at position 1, 0.01 at position 3"]),
        ("[grid]\nseed = [1, 1]\n", &["axis `seed`", "1 at position 1, 1 at position 2"]),
        ("[grid]\nlr = [0.01, 0.010000000000000001]\n", &["axis `lr`", "same value twice"]),
        ("[grid]\nlr = [1, 1.0]\n", &["axis `lr`", "1 at position 1, 1.0 at position 2"]),
        (
            "[grid]\n\"model.dims\" = [[3, 4, 2], [3, 4, 2]]\n",
            &["axis `model.dims`", "[3, 4, 2] at position 1"],
        ),
        (
            "[zip]\nlr = [0.01, 0.02, 0.01]\nsteps = [40, 60, 40]\n",
            &["[zip] positions 1 and 3", "lr = 0.01, steps = 40"],
        ),
    ];
    assert_errors(cases);
    // A value repeated in one zip axis is fine while the group's tuples differ.
    assert_eq!(parse("[zip]\nlr = [0.01, 0.01]\nsteps = [40, 60]\n").unwrap().len(), 2);
    let e = cli_refuses("sweep-dup", "[grid]\nseed = [1, 1]\n", &[]);
    assert!(e.contains("axis `seed`") && e.contains("same value twice"), "{e}");
}

#[test]
fn mean_last_longer_than_the_run_is_refused() {
    // steps = 120, log_every = 20: rows at 0, 20, …, 120 = 7.
    let spec =
        parse("[grid]\nlr = [0.01]\n[collect]\nmean_last = { k = 1000, metrics = [\"loss\"] }\n").unwrap();
    let e = spec.check_metrics(&spec.points().unwrap()).unwrap_err().to_string();
    assert!(e.contains("mean_last.k = 1000 exceeds the 7 rows point 0"), "{e}");
    let spec =
        parse("[grid]\nlr = [0.01]\n[collect]\nmean_last = { k = 7, metrics = [\"loss\"] }\n").unwrap();
    spec.check_metrics(&spec.points().unwrap()).unwrap();
    // A zip point that logs fewer rows is the one named.
    let spec =
        parse("[zip]\nsteps = [120, 30]\n[collect]\nmean_last = { k = 5, metrics = [\"loss\"] }\n").unwrap();
    let e = spec.check_metrics(&spec.points().unwrap()).unwrap_err().to_string();
    assert!(e.contains("exceeds the 3 rows point 1 (1-steps=30)"), "{e}");
    let e = cli_refuses(
        "sweep-meanlast",
        "[grid]\nlr = [0.01]\n[collect]\nmean_last = { k = 1000, metrics = [\"loss\"] }\n",
        &[],
    );
    assert!(e.contains("mean_last.k = 1000"), "{e}");
}

#[test]
fn a_damaged_metrics_file_of_a_done_point_is_an_error_naming_it() {
    let d = tmp("sweep-corrupt");
    let f = write_sweep(
        &d,
        "[grid]\nlr = [0.01, 0.02]\n[collect]\nmean_last = { k = 3, metrics = [\"loss\"] }\n",
    );
    let out = d.join("out");
    let o = noether(&["sweep", &f, "--out", &out.display().to_string(), "--jobs", "1", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = out.join("points/1-lr=0.02/metrics.csv");
    let good = std::fs::read_to_string(&metrics).unwrap();
    let mut lines: Vec<String> = good.lines().map(str::to_string).collect();
    let li = lines[0].split(',').position(|h| h == "loss").unwrap();
    let damaged = |k: usize, lines: &[String]| {
        let mut l = lines.to_vec();
        let mut cells: Vec<&str> = l[k].split(',').collect();
        cells[li] = "garbage";
        l[k] = cells.join(",");
        l.join("\n") + "\n"
    };
    let n = lines.len();
    let header = lines[0].clone();
    let cases: Vec<(String, &str)> = vec![
        (damaged(n - 1, &lines), "column `loss`: \"garbage\" is not a number"),
        (format!("{header}\n"), "no rows after the header"),
        (lines[..3].join("\n") + "\n", "mean_last.k = 3 needs 3 rows, the file has 2"),
    ];
    for (text, want) in cases {
        std::fs::write(&metrics, text).unwrap();
        let o = noether(&["sweep", "collect", &out.display().to_string()]);
        assert_eq!(o.status.code(), Some(2), "{want}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&metrics.display().to_string()) && stderr(&o).contains(want),
            "{}",
            stderr(&o)
        );
    }
    // The writer's own non-finite values are values, not damage.
    let mut cells: Vec<String> = lines[1].split(',').map(str::to_string).collect();
    cells[li] = "NaN".into();
    lines[1] = cells.join(",");
    std::fs::write(&metrics, lines.join("\n") + "\n").unwrap();
    let o = noether(&["sweep", "collect", &out.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn log_x_with_a_non_positive_x_is_refused_naming_the_plot_and_value() {
    const BASE: &str = "[grid]\nweight_decay = [0.0, 0.001]\n[collect]\nfinal = [\"loss\"]\n[[plot]]\ny = \"final_loss\"\nx = \"weight_decay\"\nlog_x = true\n";
    let e = err(BASE);
    assert!(
        e.contains("[[plot]] `final_loss_vs_weight_decay`: log_x = true")
            && e.contains("`weight_decay` holds 0.0"),
        "{e}"
    );
    // Selecting only positive x values with `where` is fine.
    parse(&format!("{BASE}where = {{ weight_decay = 0.001 }}\n")).unwrap();
    let e = cli_refuses("sweep-logx", BASE, &[]);
    assert!(e.contains("log_x") && e.contains("holds 0.0"), "{e}");
}

#[test]
fn slurm_options_are_refused_with_the_local_backend_and_checked_with_slurm() {
    let axes = "[grid]\nlr = [0.01, 0.02]\n";
    for (args, want) in [
        (&["--partition", "foo"][..], "--partition is an option of --backend slurm"),
        (&["--time", "10"], "--time is an option of --backend slurm"),
        (&["--mem", "2G"], "--mem is an option of --backend slurm"),
        (&["--sbatch-line=--account=x"], "--sbatch-line is an option of --backend slurm"),
        (&["--array-max", "2"], "--array-max is an option of --backend slurm"),
        (&["--cpus-per-task", "2"], "--cpus-per-task is an option of --backend slurm"),
        (&["--points-per-task", "2"], "--points-per-task is an option of --backend slurm"),
        (&["--backend", "slurm", "--dry-run", "--jobs", "3"], "give --cpus-per-task 3"),
        (&["--backend", "slurm", "--dry-run", "--mem", "-5"], "--mem \"-5\" is not a SLURM memory size"),
        (&["--backend", "slurm", "--dry-run", "--mem", "lots"], "--mem \"lots\" is not a SLURM memory size"),
        (&["--backend", "slurm", "--dry-run", "--time", "garbage"], "--time \"garbage\" is not a SLURM time"),
        (&["--backend", "slurm", "--dry-run", "--time", "-5"], "--time \"-5\" is not a SLURM time"),
    ] {
        let e = cli_refuses("sweep-flags", axes, args);
        assert!(e.contains(want), "{args:?}\n→ {e}");
    }
    use noether::sweep::slurm::{check_mem, check_time};
    for t in ["30", "10:00", "01:00:00", "1-12", "1-12:30", "1-12:30:00", "UNLIMITED", "infinite", "0"] {
        check_time(t).unwrap_or_else(|e| panic!("{t}: {e}"));
    }
    for t in ["garbage", "1:2:3:4", "-5", "1-", ":30", "", "1-2:3:4:5", "1h", "1-2-3"] {
        assert!(check_time(t).is_err(), "{t} accepted");
    }
    for m in ["2G", "512", "1t", "0", "100M", "64K"] {
        check_mem(m).unwrap_or_else(|e| panic!("{m}: {e}"));
    }
    for m in ["lots", "-5", "2GB", "", "G", "1.5G"] {
        assert!(check_mem(m).is_err(), "{m} accepted");
    }
    // Valid values reach the script.
    let d = tmp("sweep-flags-ok");
    let f = write_sweep(&d, axes);
    let out = d.join("out").display().to_string();
    let o = noether(&[
        "sweep",
        &f,
        "--out",
        &out,
        "--backend",
        "slurm",
        "--dry-run",
        "--time",
        "1-12:00",
        "--mem",
        "2G",
        "--cpus-per-task",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = std::fs::read_to_string(d.join("out/sweep.sbatch")).unwrap();
    assert!(
        script.contains("#SBATCH --time=1-12:00\n")
            && script.contains("#SBATCH --mem=2G\n")
            && script.contains("--jobs 2"),
        "{script}"
    );
}

#[test]
fn an_axis_in_one_form_of_a_setting_replaces_the_bases_other_form() {
    // The base gives one activation for every layer; an axis of per-layer lists replaces it (the training
    // config refuses both at once), and the other way round; likewise explicit variances and `phi`.
    let pts = parse("[grid]\n\"model.activations\" = [[\"relu\", \"identity\"], [\"tanh\", \"identity\"]]\n")
        .unwrap()
        .points()
        .unwrap();
    assert_eq!(pts.len(), 2);
    let acts: Vec<String> = pts.iter().map(|p| format!("{:?}", p.config.model)).collect();
    assert!(acts[0].contains("Relu") && acts[1].contains("Tanh"), "{acts:?}");
    let text =
        sweep_text("[grid]\n\"data.teacher.sigma_x.variances\" = [[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]\n")
            .replace(
                "teacher = { map = \"random\" }",
                "teacher = { map = \"random\", sigma_x = { phi = 2.0 } }",
            );
    let pts = SweepSpec::from_toml(&text, "t", Path::new(".")).unwrap().points().unwrap();
    assert_eq!(pts.len(), 2);
}

#[test]
fn values_a_log_y_axis_cannot_show_are_named_not_dropped_in_silence() {
    let axes =
        format!("{GRID}[[plot]]\ny = \"final_loss\"\nx = \"lr\"\nlog_y = true\nwhere = {{ seed = 1 }}\n");
    let spec = parse(&axes).unwrap();
    let d = tmp("sweep-log-y");
    let (mut t, _) = run(&spec, &d.join("s"), 2, false);
    assert!(t.plot_omissions().is_empty(), "losses are positive: {:?}", t.plot_omissions());
    // Every row at lr = 0.01 (and seed 1) reads -1: their mean cannot sit on a log axis.
    for r in t.rows.iter_mut().filter(|r| r.params[0].as_float() == Some(0.01)) {
        r.values[0] = Some(-1.0);
    }
    let notes = t.plot_omissions();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("final_loss_vs_lr") && notes[0].contains("x = 0.01") && notes[0].contains("-1"),
        "{notes:?}"
    );
    assert!(t.markdown(&[]).contains("Not shown: plot `final_loss_vs_lr`"));
}

#[test]
fn a_point_resolves_like_train_on_the_same_text() {
    // The resolved base holds SGD's defaulted `sampling`, which the SDE does not take: a point switching the
    // method resolves from the base as written, as `noether train` would read it.
    let pts = parse("[grid]\n\"optimizer.method\" = [\"sgd\", \"sde\"]\n").unwrap().points().unwrap();
    assert_eq!(pts.len(), 2);
    assert!(format!("{:?}", pts[1].config.optimizer).contains("Sde"), "{:?}", pts[1].config.optimizer);
}

#[test]
fn an_axis_value_valid_only_beside_another_axis_is_accepted() {
    // Alone on the base (two layers), three activations do not fit; beside the three-layer dims they do.
    let zip = "[zip]\n\"model.dims\" = [[3, 5, 5, 2], [3, 4, 2]]\n\
               \"model.activations\" = [[\"relu\", \"relu\", \"identity\"], [\"tanh\", \"identity\"]]\n";
    let points = parse(zip).and_then(|s| s.points()).expect("every point is valid");
    assert_eq!(points.len(), 2);
    // Each value fits the base alone but not the other: the error names the point and its values.
    let bad = "[zip]\n\"model.dims\" = [[3, 5, 5, 2]]\n\"model.activations\" = [[\"relu\", \"identity\"]]\n";
    let e = err(bad);
    assert!(e.contains("point 0") && e.contains("activations"), "{e}");
}

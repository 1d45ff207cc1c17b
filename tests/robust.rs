//! Inputs that cannot mean what they say are errors (exit 2) naming the key or flag, the value and what is
//! allowed; unconverged results are flagged and exit 1; nothing an earlier run wrote is overwritten in silence.

use crate::cli::{noether, stderr, tmp};
use std::path::Path;
use std::process::Output;

const TINY: &str = r#"
seed = 5
steps = 100
log_every = 10
lr = 0.05
[model]
dims = [3, 4, 3]
activation = "relu"
bias = true
"#;

const DATA: &str = "[data]\nkind = \"teacher\"\nn = 64\n";
const SGD: &str = "[optimizer]\nmethod = \"sgd\"\nbatch_size = 4\n";

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Asserts exit code 2 and that stderr names every one of `culprits`.
pub fn assert_error(o: &Output, culprits: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit {:?}: {e}", o.status.code());
    for c in culprits {
        assert!(e.contains(c), "the message should name `{c}`: {e}");
    }
    assert!(!e.contains("panicked"), "{e}");
}

/// Trains `TINY` + `extra` into a fresh folder of `dir`.
fn train(dir: &Path, name: &str, extra: &str) -> Output {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, format!("{TINY}{extra}")).unwrap();
    let out = dir.join(name);
    noether(&["train", &cfg.display().to_string(), "--out", &out.display().to_string(), "-q"])
}

#[test]
fn keys_that_do_not_apply_to_the_kind_or_method_are_errors() {
    let d = tmp("robust-keys");
    for (name, extra, culprits) in [
        (
            "gd-batch",
            format!("{DATA}[optimizer]\nmethod = \"gd\"\nbatch_size = 4\n"),
            &["batch_size", "gd"][..],
        ),
        ("gd-unknown", format!("{DATA}[optimizer]\nmethod = \"gd\"\nfoo = 1\n"), &["foo", "gd"]),
        (
            "constant-warmup",
            format!("{DATA}{SGD}[schedule]\nkind = \"constant\"\nwarmup_steps = 3\n"),
            &["warmup_steps", "constant"],
        ),
        (
            "eval-n-with-n",
            format!("[data]\nkind = \"teacher\"\nn = 64\neval_n = 50\n{SGD}"),
            &["eval_n", "50", "online"],
        ),
        (
            "trace-without-sharpness",
            format!("{DATA}{SGD}[observe]\nsharpness_trace = \"exact\"\n"),
            &["sharpness_trace", "sharpness_every"],
        ),
    ] {
        assert_error(&train(&d, name, &extra), culprits);
    }
}

#[test]
fn inconsistent_schedules_are_errors() {
    let d = tmp("robust-schedules");
    for (name, schedule, culprits) in [
        (
            "long-warmup",
            "kind = \"warmup\"\nwarmup_steps = 300\n",
            &["warmup_steps = 300", "steps = 100"][..],
        ),
        (
            "short-cosine",
            "kind = \"warmup_cosine\"\nwarmup_steps = 30\ntotal_steps = 20\n",
            &["total_steps = 20", "warmup_steps = 30"],
        ),
        (
            "high-min-lr",
            "kind = \"warmup_cosine\"\nwarmup_steps = 30\nmin_lr = 1.0\n",
            &["min_lr = 1", "0.05"],
        ),
    ] {
        assert_error(&train(&d, name, &format!("{DATA}{SGD}[schedule]\n{schedule}")), culprits);
    }
    // The --steps override is checked against the schedule too.
    let cfg = d.join("ok.toml");
    std::fs::write(&cfg, format!("{TINY}{DATA}{SGD}[schedule]\nkind = \"warmup\"\nwarmup_steps = 50\n"))
        .unwrap();
    let out = d.join("ok").display().to_string();
    let o = noether(&["train", &cfg.display().to_string(), "--steps", "20", "--out", &out, "-q"]);
    assert_error(&o, &["--steps", "warmup_steps = 50", "steps = 20"]);
}

#[test]
fn out_of_range_config_values_are_errors() {
    let d = tmp("robust-config-range");
    let online = "[data]\nkind = \"teacher\"\n";
    for (name, extra, culprits) in [
        (
            "noise-every",
            format!("{DATA}{SGD}[observe]\nnoise_every = 3\n"),
            &["noise_every = 3", "log_every = 10"][..],
        ),
        ("eval-n-zero", format!("{online}eval_n = 0\n{SGD}"), &["eval_n = 0"]),
        (
            "online-without",
            format!(
                "{online}[optimizer]\nmethod = \"sgd\"\nbatch_size = 4\nsampling = \"without_replacement\"\n"
            ),
            &["without_replacement", "data.n"],
        ),
        (
            "subset-too-large",
            format!("{DATA}{SGD}[observe]\nsharpness_every = 10\nsharpness_subset = 1000\n"),
            &["sharpness_subset = 1000", "64"],
        ),
        ("negative-init", format!("init = {{ gaussian = -0.1 }}\n{DATA}{SGD}"), &["gaussian = -0.1", "≥ 0"]),
        (
            "zero-layer-scale",
            format!("layer_scales = [1.0, 0.0]\n{DATA}{SGD}"),
            &["layer_scales[1] = 0", "> 0"],
        ),
    ] {
        // `init` and `layer_scales` belong to [model], which TINY ends with.
        assert_error(&train(&d, name, &extra), culprits);
    }
}

/// `--model M --data D` of a reference case, then `extra`.
fn on_case(cmd: &str, case: &str, extra: &[&str]) -> Output {
    let m = format!("tests/data/{case}/model.safetensors");
    let x = format!("tests/data/{case}/data.safetensors");
    let mut args = vec![cmd, "--model", &m, "--data", &x, "-q"];
    if case.ends_with("_ce") {
        args.extend(["--loss", "cross_entropy"]);
    }
    args.extend_from_slice(extra);
    noether(&args)
}

#[test]
fn batch_larger_than_the_data_without_replacement_is_an_error() {
    // N = 64: the finite-population factor (N − S)/(N − 1) would be negative.
    let o = on_case("analyze", "relu_mlp_mse", &["--batch-size", "80", "--sampling", "without"]);
    assert_error(&o, &["--batch-size 80", "N = 64", "--sampling"]);
    let o = on_case(
        "teleport",
        "relu_mlp_mse",
        &[
            "--batch-size",
            "80",
            "--sampling",
            "without",
            "--time",
            "discrete",
            "--out",
            "/tmp/never-written.safetensors",
        ],
    );
    assert_error(&o, &["--batch-size 80", "N = 64"]);
    assert_error(&on_case("analyze", "relu_mlp_mse", &["--batch-size", "0"]), &["--batch-size 0"]);
}

#[test]
fn flags_that_do_nothing_or_are_out_of_range_are_errors() {
    let out = tmp("robust-flags").join("m.safetensors").display().to_string();
    let o = on_case("teleport", "relu_mlp_mse", &["--batch-size", "8", "--out", &out]);
    assert_error(&o, &["--batch-size 8", "--time discrete"]);
    let o = on_case("teleport", "relu_mlp_mse", &["--target", "norm", "--time", "discrete", "--out", &out]);
    assert_error(&o, &["--time", "--target noise"]);
    let o = on_case("teleport", "relu_mlp_mse", &["--tol", "-1", "--out", &out]);
    assert_error(&o, &["--tol -1"]);
    assert!(!Path::new(&out).exists(), "nothing is written after a flag error");
    assert_error(
        &on_case("sharpness", "relu_mlp_ce", &["--generator", "rescale:0:3"]),
        &["--generator", "--orbit"],
    );
    assert_error(
        &on_case("sharpness", "relu_mlp_ce", &["--probes", "5", "--trace", "exact"]),
        &["--probes 5", "exact"],
    );
    assert_error(&on_case("sharpness", "relu_mlp_ce", &["--tol", "-1e-3"]), &["--tol -0.001"]);
    assert_error(&on_case("sharpness", "relu_mlp_ce", &["--subset", "1000"]), &["--subset 1000", "N = 40"]);
    assert_error(&on_case("sharpness", "relu_mlp_ce", &["--subset", "0"]), &["--subset 0"]);
    // A negative number given to a flag parses (and is then judged on its value).
    assert_error(&on_case("analyze", "relu_mlp_mse", &["--lr", "-0.1"]), &["--lr -0.1", "positive"]);
    let o = noether(&["reproduce", "--jobs", "0", "--out", &tmp("robust-jobs").display().to_string()]);
    assert_error(&o, &["--jobs 0"]);
}

#[test]
fn unconverged_results_are_flagged_in_every_format_and_exit_1() {
    let d = tmp("robust-unconverged");
    let (json, csv) = (d.join("r.json"), d.join("r.csv"));
    let (js, cs) = (json.display().to_string(), csv.display().to_string());
    let args = ["--max-iter", "2", "--trace", "none", "--export-json", &js, "--export-csv", &cs];
    let o = on_case("sharpness", "relu_mlp_ce", &args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stdout(&o).contains("NOT converged"), "{}", stdout(&o));
    assert!(stderr(&o).contains("did not converge"), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["results"][0]["converged"], false, "{doc}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let col = r.headers().unwrap().iter().position(|h| h == "converged").expect("a converged column");
    assert_eq!(&r.records().next().unwrap().unwrap()[col], "false");
    let o = on_case("sharpness", "relu_mlp_ce", &["--max-iter", "2", "--trace", "none", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["lanczos"]["converged"], false);
    // Converged: exit 0 and flagged true.
    let o = on_case("sharpness", "relu_mlp_ce", &["--trace", "none", "--export-json", "-"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(doc["results"][0]["converged"], true);
}

#[test]
fn an_orbit_range_that_overflows_is_refused_with_the_largest_safe_lambda() {
    let o = on_case(
        "sharpness",
        "relu_mlp_ce",
        &["--orbit", "0:300:2", "--generator", "rescale:0:3", "--trace", "none"],
    );
    assert_error(&o, &["--orbit 0:300:2", "λ = 300", "largest safe |λ|"]);
    // The bound it names is safe: the orbit at that λ gives finite, converged rows.
    let e = stderr(&o);
    let safe: f64 = e.rsplit(' ').next().unwrap().trim().parse().unwrap();
    assert!(safe > 100.0 && safe < 300.0, "{safe}");
    let range = format!("{safe}:{safe}:1");
    let o = on_case("sharpness", "relu_mlp_ce", &["--orbit", &range, "--generator", "rescale:0:3", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert!(doc["orbit"][0]["top_eigenvalue"].as_f64().unwrap().is_finite(), "{doc}");
    assert_eq!(doc["orbit"][0]["converged"], true);
}

/// A tensor to write: name, shape, dtype.
type Spec<'a> = (&'a str, Vec<usize>, safetensors::Dtype);

/// Writes named f64 (or `dtype`) tensors to a safetensors file.
fn write_tensors(path: &Path, tensors: &[Spec<'_>]) {
    let list: Vec<_> = tensors
        .iter()
        .map(|(n, shape, dt)| {
            let len: usize = shape.iter().product();
            let bytes = match dt {
                safetensors::Dtype::I8 => vec![1u8; len],
                _ => (0..len).flat_map(|i| (0.1 * i as f64).to_le_bytes()).collect(),
            };
            (n.to_string(), *dt, shape.clone(), bytes)
        })
        .collect();
    noether::tensor_io::write(path, &list).unwrap();
}

#[test]
fn model_files_with_tensors_noether_does_not_use_are_errors() {
    use safetensors::Dtype::{F64, I8};
    let d = tmp("robust-model-files");
    let cases: [(&str, Vec<Spec<'_>>, &[&str]); 4] = [
        (
            "batchnorm",
            vec![
                ("0.weight", vec![4, 3], F64),
                ("0.bias", vec![4], F64),
                ("1.running_mean", vec![4], F64),
                ("2.weight", vec![2, 4], F64),
            ],
            &["`1.running_mean`", "does not use"],
        ),
        ("orphan-bias", vec![("0.weight", vec![4, 3], F64), ("1.bias", vec![2], F64)], &["`1.bias`"]),
        ("int8", vec![("0.weight", vec![4, 3], I8)], &["`0.weight`", "I8", "float32 or float64"]),
        ("rank", vec![("0.weight", vec![12], F64)], &["`0.weight`", "rank 2", "[out, in]"]),
    ];
    for (name, tensors, culprits) in cases {
        let p = d.join(format!("{name}.safetensors"));
        write_tensors(&p, &tensors);
        assert_error(&noether(&["symmetries", "--model", &p.display().to_string()]), culprits);
    }
    // A layer of width zero.
    let p = d.join("zero.safetensors");
    write_tensors(&p, &[("0.weight", vec![0, 3], F64), ("1.weight", vec![2, 0], F64)]);
    assert_error(&noether(&["symmetries", "--model", &p.display().to_string()]), &["width zero", "0.weight"]);
}

#[test]
fn degenerate_data_and_messages_are_clear() {
    let d = tmp("robust-degenerate");
    // N = 1: no gradient noise; analyze and teleport say so alike.
    let one = d.join("one.safetensors");
    let x = faer::Mat::from_fn(1, 5, |_, j| 0.1 * j as f64);
    noether::data::save_dataset(
        &noether::Dataset { x, y: noether::Targets::Dense(faer::Mat::zeros(1, 3)) },
        &one,
    )
    .unwrap();
    let (m, o1) = ("tests/data/relu_mlp_mse/model.safetensors", one.display().to_string());
    assert_error(&noether(&["analyze", "--model", m, "--data", &o1]), &["N = 1", "at least 2 samples"]);
    let out = d.join("t.safetensors").display().to_string();
    assert_error(
        &noether(&["teleport", "--model", m, "--data", &o1, "--out", &out]),
        &["N = 1", "at least 2 samples"],
    );
    // `x` of the wrong rank says which rank it needs.
    let p = d.join("x1.safetensors");
    write_tensors(&p, &[("x", vec![5], safetensors::Dtype::F64), ("y", vec![5], safetensors::Dtype::F64)]);
    assert_error(
        &noether(&["analyze", "--model", m, "--data", &p.display().to_string()]),
        &["rank 2", "[N, d_in]"],
    );
    // Labels out of range name the classes as 0–(C−1).
    let labels = d.join("labels.safetensors");
    let x = faer::Mat::from_fn(3, 5, |i, j| 0.1 * (i + j) as f64);
    noether::data::save_dataset(
        &noether::Dataset { x, y: noether::Targets::Classes(vec![0, 7, 1]) },
        &labels,
    )
    .unwrap();
    let o = noether(&[
        "analyze",
        "--model",
        m,
        "--data",
        &labels.display().to_string(),
        "--loss",
        "cross_entropy",
    ]);
    assert_error(&o, &["label 7", "classes 0–2"]);
    // An OS error is printed once.
    let o = noether(&["analyze", "--model", "/nonexistent/m.safetensors", "--data", &o1]);
    assert_error(&o, &["/nonexistent/m.safetensors"]);
    assert_eq!(stderr(&o).matches("No such file").count(), 1, "{}", stderr(&o));
}

#[test]
fn metrics_step_column_is_an_integer() {
    let d = tmp("robust-step");
    let o = train(&d, "run", &format!("{DATA}{SGD}"));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(d.join("run").join("metrics.csv")).unwrap();
    for line in text.lines().skip(1) {
        let step = line.split(',').next().unwrap();
        assert!(step.parse::<u64>().is_ok(), "step `{step}` is not an integer");
    }
}

#[test]
fn a_second_run_into_the_same_folder_leaves_the_first_intact() {
    let d = tmp("robust-overwrite");
    let cfg = d.join("c.toml");
    std::fs::write(&cfg, format!("{TINY}{DATA}{SGD}")).unwrap();
    let (c, out) = (cfg.display().to_string(), d.join("run").display().to_string());
    assert!(noether(&["train", &c, "--out", &out, "-q"]).status.success());
    let first = std::fs::read(d.join("run").join("metrics.csv")).unwrap();
    // A second run, and a diverging one, are refused and touch nothing.
    let o = noether(&["train", &c, "--out", &out, "--seed", "9", "-q"]);
    assert_error(&o, &[&out, "--force"]);
    let div = d.join("div.toml");
    std::fs::write(&div, format!("{}{DATA}{SGD}", TINY.replace("lr = 0.05", "lr = 50.0"))).unwrap();
    let o = noether(&["train", &div.display().to_string(), "--out", &out, "-q"]);
    assert_error(&o, &[&out, "--force"]);
    assert_eq!(std::fs::read(d.join("run").join("metrics.csv")).unwrap(), first);
    // A config refused while setting up leaves no run behind: the folder stays usable.
    let bad = d.join("bad.toml");
    std::fs::write(
        &bad,
        format!("{TINY}[data]\nkind = \"file\"\npath = \"/nonexistent/d.safetensors\"\n{SGD}"),
    )
    .unwrap();
    let fresh = d.join("fresh").display().to_string();
    assert_error(
        &noether(&["train", &bad.display().to_string(), "--out", &fresh, "-q"]),
        &["/nonexistent/d.safetensors"],
    );
    assert!(noether(&["train", &c, "--out", &fresh, "-q"]).status.success());
    // --force overwrites.
    let o = noether(&["train", &c, "--out", &out, "--seed", "9", "--force", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(std::fs::read(d.join("run").join("metrics.csv")).unwrap(), first);
    // teleport --out: an existing file is kept unless --force.
    let moved = d.join("moved.safetensors");
    std::fs::write(&moved, b"earlier").unwrap();
    let mv = moved.display().to_string();
    assert_error(&on_case("teleport", "relu_mlp_mse", &["--out", &mv]), &[&mv, "--force"]);
    assert_eq!(std::fs::read(&moved).unwrap(), b"earlier");
    assert_eq!(on_case("teleport", "relu_mlp_mse", &["--out", &mv, "--force"]).status.code(), Some(0));
}

#[test]
fn reproduce_keeps_other_experiments_and_refuses_to_overwrite_its_own() {
    let d = tmp("robust-reproduce");
    let ds = d.display().to_string();
    // An experiment run earlier into the folder (its summary is what reproduce writes).
    let earlier = noether::report::Section::new("fig6-representations", "an earlier section of fig6");
    let dir = d.join("fig6-representations");
    std::fs::create_dir_all(&dir).unwrap();
    noether::report::Summary::new("reproduce", &serde_json::json!({}), Some(0), &earlier)
        .unwrap()
        .write(dir.join("summary.json"))
        .unwrap();
    // Named twice, run once; the earlier experiment stays in the report.
    let name = "fig1-scale-invariance";
    let o = noether(&["reproduce", "--quick", "-q", "--out", &ds, name, name]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    let md = std::fs::read_to_string(d.join("report.md")).unwrap();
    assert_eq!(md.matches(&format!("## {name}")).count(), 1, "{md}");
    assert!(md.contains("an earlier section of fig6"), "{md}");
    assert!(std::fs::read_to_string(d.join("report.html")).unwrap().contains("an earlier section of fig6"));
    // Running it again into the same folder is refused without --force.
    let summary = std::fs::read(d.join(name).join("summary.json")).unwrap();
    assert_error(&noether(&["reproduce", "--quick", "-q", "--out", &ds, name]), &[name, &ds, "--force"]);
    assert_eq!(std::fs::read(d.join(name).join("summary.json")).unwrap(), summary);
}

#[test]
fn a_lanczos_basis_that_cannot_fit_in_memory_is_refused_before_starting() {
    let Some(avail) = noether::curvature::available_memory() else { return };
    let p = 25_000_000;
    let iters = (avail / (8 * p as u64)) as usize + 10;
    let e = noether::curvature::check_basis_memory(iters, p).unwrap_err().to_string();
    assert!(e.contains(&format!("{iters} Lanczos iterations")) && e.contains("at most"), "{e}");
    noether::curvature::check_basis_memory(2, p).unwrap();
}

#[test]
fn analyze_in_f32_agrees_with_f64_to_f32_round_off() {
    let run = |precision: &str| -> serde_json::Value {
        let o = on_case("analyze", "relu_mlp_mse", &["--precision", precision, "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        serde_json::from_str(&stdout(&o)).unwrap()
    };
    let (a64, a32) = (run("f64"), run("f32"));
    let t64 = a64["trace_sigma"].as_f64().unwrap();
    let t32 = a32["trace_sigma"].as_f64().unwrap();
    assert!(t32 != t64, "the f32 pass must run in f32");
    assert!(((t32 - t64) / t64).abs() < 1e-5, "Tr Σ {t32} vs {t64}");
    let (n64, n32) = (a64["neurons"].as_array().unwrap(), a32["neurons"].as_array().unwrap());
    assert_eq!(n64.len(), n32.len());
    for (a, b) in n64.iter().zip(n32) {
        let (x, y) = (a["tr_a_sigma"].as_f64().unwrap(), b["tr_a_sigma"].as_f64().unwrap());
        assert!((x - y).abs() <= 1e-5 * t64, "Tr[AΣ] {y} vs {x}");
        assert_eq!(a["status"], b["status"]);
    }
    assert_error(&on_case("analyze", "relu_mlp_mse", &["--precision", "f16"]), &["f16", "--precision"]);
}

/// Output piped into a reader that has gone (`noether analyze --json | head`) ends the command quietly with
/// exit 0, for the table and for JSON (whose writer wraps the OS error in its own type).
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    for json in [false, true] {
        let (m, x) =
            ("tests/data/relu_mlp_mse/model.safetensors", "tests/data/relu_mlp_mse/data.safetensors");
        let mut args = vec!["analyze", "--model", m, "--data", x];
        if json {
            args.push("--json");
        }
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_noether"))
            .args(&args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run noether");
        // Close the read end before the command writes anything: every write fails with a broken pipe.
        drop(child.stdout.take());
        let o = child.wait_with_output().expect("wait for noether");
        assert!(o.status.success(), "json {json}: {:?}, stderr: {}", o.status, stderr(&o));
        assert!(stderr(&o).trim().is_empty(), "json {json}: stderr: {}", stderr(&o));
    }
}

/// Trains the config `text` (not prefixed by `TINY`) into a fresh folder of `dir`, with `flags` after it.
fn train_text(dir: &Path, name: &str, text: &str, flags: &[&str]) -> Output {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, text).unwrap();
    let out = dir.join(name).display().to_string();
    let mut args = vec!["train", cfg.to_str().unwrap(), "--out", &out, "-q"];
    args.extend(flags);
    noether(&args)
}

/// Writes a float data set of `n` samples `x` [n, 3], `y` [n, 3] (TINY's widths) to `dir/name.safetensors`.
fn tiny_data_file(dir: &Path, name: &str, n: usize) -> String {
    let p = dir.join(format!("{name}.safetensors"));
    let x = faer::Mat::from_fn(n, 3, |i, j| ((i * 3 + j) as f64 * 0.37).sin());
    let y = faer::Mat::from_fn(n, 3, |i, j| ((i * 5 + j) as f64 * 0.21).cos());
    noether::data::save_dataset(&noether::Dataset { x, y: noether::Targets::Dense(y) }, &p).unwrap();
    format!("[data]\nkind = \"file\"\npath = \"{}\"\n", p.display())
}

#[test]
fn settings_that_would_be_ignored_are_errors() {
    let d = tmp("robust-ignored");
    // `activation` beside `activations` (TINY has activation = "relu").
    let o = train(&d, "both-activations", &format!("activations = [\"relu\", \"identity\"]\n{DATA}{SGD}"));
    assert_error(&o, &["activation = \"relu\"", "activations", "one or the other"]);
    // `activations` alone runs, and its config.toml (without `activation`) runs again.
    let per_layer = TINY.replace("activation = \"relu\"", "activations = [\"tanh\", \"identity\"]");
    let o = train_text(&d, "per-layer", &format!("{per_layer}{DATA}{SGD}"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again = d.join("per-layer").join("config.toml");
    let text = std::fs::read_to_string(&again).unwrap();
    assert!(!text.contains("activation ="), "{text}");
    assert!(train_text(&d, "per-layer-again", &text, &[]).status.success());
    // Covariance keys of the other form, for either covariance.
    for (name, teacher, culprits) in [
        (
            "variances-phi",
            "sigma_x = { variances = [1.0, 2.0, 1.0], phi = 3.0 }",
            &["data.teacher.sigma_x.phi = 3", "variances"][..],
        ),
        (
            "variances-scale",
            "sigma_eps = { variances = [1.0, 2.0, 1.0], scale = 1.0 }",
            &["sigma_eps.scale = 1"],
        ),
    ] {
        let o = train(&d, name, &format!("{DATA}teacher = {{ {teacher} }}\n{SGD}"));
        assert_error(&o, culprits);
    }
    // Explicit keys that do not apply are refused even at their default values.
    for (name, extra, culprits) in [
        (
            "eval-n-default",
            format!("[data]\nkind = \"teacher\"\nn = 64\neval_n = 1000\n{SGD}"),
            &["eval_n = 1000", "online"][..],
        ),
        (
            "trace-default",
            format!("{DATA}{SGD}[observe]\nsharpness_trace = \"hutchinson\"\n"),
            &["sharpness_trace = \"hutchinson\"", "sharpness_every"],
        ),
        (
            "subset-default",
            format!("{DATA}{SGD}[observe]\nsharpness_subset = 0\n"),
            &["sharpness_subset = 0", "sharpness_every"],
        ),
    ] {
        assert_error(&train(&d, name, &extra), culprits);
    }
    // A warmup that covers the whole run leaves no cosine decay.
    let cosine = "[schedule]\nkind = \"warmup_cosine\"\nwarmup_steps = 100\nmin_lr = 0.001\n";
    let o = train(&d, "cosine-never", &format!("{DATA}{SGD}{cosine}"));
    assert_error(&o, &["warmup_steps = 100", "steps = 100", "min_lr"]);
    let cosine = "[schedule]\nkind = \"warmup_cosine\"\nwarmup_steps = 50\ntotal_steps = 80\n";
    let o = train_text(&d, "cosine-steps", &format!("{TINY}{DATA}{SGD}{cosine}"), &["--steps", "50"]);
    assert_error(&o, &["--steps", "warmup_steps = 50", "steps = 50"]);
}

#[test]
fn meaningless_runs_and_models_are_errors() {
    let d = tmp("robust-meaningless");
    assert_error(
        &train(&d, "norm-twice", &format!("norm_layers = [0, 0]\n{DATA}{SGD}")),
        &["norm_layers", "layer 0 twice"],
    );
    let m = "tests/data/relu_mlp_mse/model.safetensors";
    assert_error(
        &noether(&["symmetries", "--model", m, "--norm-layers", "0,0"]),
        &["--norm-layers 0,0", "twice"],
    );
    // No steps.
    let zero = TINY.replace("steps = 100", "steps = 0");
    assert_error(&train_text(&d, "zero-steps", &format!("{zero}{DATA}{SGD}"), &[]), &["steps = 0"]);
    let o = train_text(&d, "zero-flag", &format!("{TINY}{DATA}{SGD}"), &["--steps", "0"]);
    assert_error(&o, &["--steps", "steps = 0"]);
    // Cross entropy over one output, and on the teacher's float targets.
    let ce = format!("loss = \"cross_entropy\"\n{}", TINY.replace("dims = [3, 4, 3]", "dims = [3, 4, 1]"));
    let o = train_text(&d, "ce-one", &format!("{ce}{DATA}{SGD}"), &[]);
    assert_error(&o, &["cross_entropy", "dims = [3, 4, 1]", "at least 2 outputs"]);
    let o = train_text(&d, "ce-teacher", &format!("loss = \"cross_entropy\"\n{TINY}{DATA}{SGD}"), &[]);
    assert_error(&o, &["cross_entropy", "teacher"]);
    // The noise observer and the SDE need N ≥ 2 (Σ is centred over the samples).
    let one = "[data]\nkind = \"teacher\"\nn = 1\n";
    let noise = "[observe]\nnoise_every = 10\n";
    assert_error(
        &train(&d, "noise-one", &format!("{one}{SGD}{noise}")),
        &["noise_every = 10", "data.n = 1", "N ≥ 2"],
    );
    let sde = "[optimizer]\nmethod = \"sde\"\nbatch_size = 1\n";
    assert_error(&train(&d, "sde-one", &format!("{one}{sde}")), &["sde", "data.n = 1", "N ≥ 2"]);
    let file1 = tiny_data_file(&d, "one", 1);
    assert_error(&train(&d, "noise-file", &format!("{file1}{SGD}{noise}")), &["noise_every = 10", "N = 1"]);
    let online = "[data]\nkind = \"teacher\"\neval_n = 1\n";
    assert_error(
        &train(&d, "noise-online", &format!("{online}{SGD}{noise}")),
        &["noise_every", "data.eval_n = 1"],
    );
}

#[test]
fn data_size_errors_name_the_key() {
    let d = tmp("robust-data-keys");
    let file = tiny_data_file(&d, "fifty", 50);
    let without = "[optimizer]\nmethod = \"sgd\"\nbatch_size = 100\nsampling = \"without_replacement\"\n";
    let o = train(&d, "batch", &format!("{file}{without}"));
    assert_error(&o, &["optimizer.batch_size = 100", "N = 50", "with_replacement"]);
    let o =
        train(&d, "subset", &format!("{file}{SGD}[observe]\nsharpness_every = 10\nsharpness_subset = 100\n"));
    assert_error(&o, &["observe.sharpness_subset = 100", "N = 50"]);
    // Teacher covariance errors say which covariance.
    for (name, teacher, culprits) in [
        ("phi", "sigma_x = { phi = -1.0 }", &["data.teacher.sigma_x.phi = -1", "positive"][..]),
        (
            "negative",
            "sigma_eps = { variances = [1.0, -1.0, 1.0] }",
            &["data.teacher.sigma_eps.variances[1] = -1"],
        ),
        (
            "length",
            "sigma_x = { variances = [1.0, 2.0] }",
            &["data.teacher.sigma_x.variances", "2 entries", "needs 3"],
        ),
    ] {
        assert_error(&train(&d, name, &format!("{DATA}teacher = {{ {teacher} }}\n{SGD}")), culprits);
    }
    // --out naming a file.
    let f = d.join("mf.toml");
    std::fs::write(&f, format!("{TINY}{DATA}{SGD}")).unwrap();
    let fs = f.display().to_string();
    for force in [false, true] {
        let mut args = vec!["train", &fs, "--out", &fs, "-q"];
        if force {
            args.push("--force");
        }
        assert_error(&noether(&args), &["--out", &fs, "is a file, not a run folder"]);
    }
    assert_eq!(std::fs::read_to_string(&f).unwrap(), format!("{TINY}{DATA}{SGD}"));
}

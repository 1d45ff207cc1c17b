//! End-to-end tests of the `noether` binary: determinism, run folders, and clear errors on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn noether(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_noether")).args(args).output().expect("run noether")
}

/// Runs noether, asserts exit 0 (showing stderr otherwise) and parses its stdout as JSON.
pub fn run_json(args: &[&str]) -> serde_json::Value {
    let o = noether(args);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).unwrap()
}

/// A JSON number as f64, or a panic naming the value.
pub fn json_f64(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// `|a − b| / |b|` (b's magnitude floored at 1e-300).
pub fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-300)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("noether-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

const TINY: &str = r#"
seed = 5
steps = 300
log_every = 10
lr = 0.05
[model]
dims = [3, 4, 3]
activation = "relu"
bias = true
[data]
kind = "teacher"
n = 64
[optimizer]
method = "sgd"
batch_size = 4
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[test]
fn same_seed_gives_byte_identical_metrics() {
    let d = tmp("determinism");
    let cfg = write(&d, "tiny.toml", TINY);
    let mut outputs = Vec::new();
    for run in ["a", "b"] {
        let out = d.join(run).display().to_string();
        let o = noether(&["train", &cfg, "--out", &out, "-q"]);
        assert!(o.status.success(), "{}", stderr(&o));
        outputs.push(std::fs::read(d.join(run).join("metrics.csv")).unwrap());
        for f in ["summary.json", "config.toml"] {
            assert!(d.join(run).join(f).exists(), "{f} missing");
        }
    }
    assert_eq!(outputs[0], outputs[1]);
    assert!(outputs[0].len() > 1000);
    let other = d.join("c").display().to_string();
    assert!(noether(&["train", &cfg, "--out", &other, "--seed", "6", "-q"]).status.success());
    assert_ne!(
        std::fs::read(d.join("c").join("metrics.csv")).unwrap(),
        outputs[0],
        "a different seed must differ"
    );
    // The written config.toml is complete and runs again to the same result.
    let again = d.join("d").display().to_string();
    let resolved = d.join("a").join("config.toml").display().to_string();
    assert!(noether(&["train", &resolved, "--out", &again, "-q"]).status.success());
    assert_eq!(std::fs::read(d.join("d").join("metrics.csv")).unwrap(), outputs[0]);
}

#[test]
fn unknown_config_key_is_named() {
    let d = tmp("unknown-key");
    let cfg = write(&d, "bad.toml", &TINY.replace("lr = 0.05", "lr = 0.05\nlearning_rate = 0.1"));
    let o = noether(&["train", &cfg, "-q"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("learning_rate"), "{}", stderr(&o));
    let cfg = write(&d, "bad2.toml", &TINY.replace("activation = \"relu\"", "activation = \"swish\""));
    let o = noether(&["train", &cfg, "-q"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("swish"), "{}", stderr(&o));
}

#[test]
fn divergence_names_the_step_and_keeps_metrics() {
    let d = tmp("diverge");
    let cfg = write(
        &d,
        "div.toml",
        &TINY.replace("lr = 0.05", "lr = 50.0").replace("log_every = 10", "log_every = 1"),
    );
    let out = d.join("run").display().to_string();
    let o = noether(&["train", &cfg, "--out", &out, "-q"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("at step") && e.contains("learning rate"), "{e}");
    let metrics = std::fs::read_to_string(d.join("run").join("metrics.csv")).unwrap();
    assert!(metrics.lines().count() >= 2, "rows logged before the divergence are kept");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("run").join("summary.json")).unwrap()).unwrap();
    assert!(summary["results"]["diverged"]["step"].is_u64());
}

#[test]
fn bad_model_files_are_clear_errors() {
    let d = tmp("bad-model");
    // A data file used as a model: no weight tensors.
    let o = noether(&["symmetries", "--model", "tests/data/relu_mlp_mse/data.safetensors"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing"), "{}", stderr(&o));
    // Not a safetensors file at all.
    let junk = write(&d, "junk.safetensors", "not a tensor file");
    let o = noether(&["symmetries", "--model", &junk]);
    assert_eq!(o.status.code(), Some(2));
    // A file that does not exist.
    let o = noether(&["symmetries", "--model", "/nonexistent/m.safetensors"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("/nonexistent/m.safetensors"));
}

#[test]
fn symmetries_json_lists_charges() {
    let o = noether(&[
        "symmetries",
        "--model",
        "tests/data/deep_linear_mse/model.safetensors",
        "--activation",
        "identity",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = v["symmetries"].as_array().unwrap();
    let case: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string("tests/data/deep_linear_mse/case.json").unwrap())
            .unwrap();
    let want = case["neurons"][0]["charge"].as_f64().unwrap();
    let got = s.iter().find(|e| e["family"] == "rescale" && e["layer"] == 0 && e["unit"] == 0).unwrap()
        ["charge"]
        .as_f64()
        .unwrap();
    assert!((got - want).abs() <= 1e-12 * want.abs());
    let pair = s.iter().find(|e| e["family"] == "double_rotation").unwrap();
    assert_eq!(pair["charge"].as_array().unwrap().len(), 3);
}

#[test]
fn noise_and_sharpness_observers_agree_with_analyze_and_sharpness() {
    let d = tmp("observers");
    let cfg = TINY.replace("steps = 300", "steps = 40")
        + "[observe]\nnoise_every = 20\nsharpness_every = 20\nsharpness_trace = \"exact\"\n";
    let cfg = write(&d, "obs.toml", &cfg);
    let out = d.join("run");
    let o = noether(&["train", &cfg, "--out", &out.display().to_string(), "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let metrics = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
    let last: Vec<f64> = metrics.lines().last().unwrap().split(',').map(|v| v.parse().unwrap()).collect();
    let col = |name: &str| {
        last[header.iter().position(|h| *h == name).unwrap_or_else(|| panic!("no column {name}"))]
    };
    let (m, dd) = (
        out.join("model.safetensors").display().to_string(),
        out.join("data.safetensors").display().to_string(),
    );
    let a = noether(&[
        "analyze",
        "--model",
        &m,
        "--data",
        &dd,
        "--activation",
        "relu",
        "--loss",
        "mse",
        "--json",
    ]);
    assert!(a.status.success(), "{}", stderr(&a));
    let a: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let ts = a["trace_sigma"].as_f64().unwrap();
    assert!((col("trace_sigma") - ts).abs() <= 1e-12 * ts, "{} vs {ts}", col("trace_sigma"));
    let n0 = &a["neurons"][0];
    let t0 = n0["tr_a_sigma"].as_f64().unwrap();
    assert!((col("tr_a_sigma_l0_u0") - t0).abs() <= 1e-12 * ts);
    let s = noether(&[
        "sharpness",
        "--model",
        &m,
        "--data",
        &dd,
        "--activation",
        "relu",
        "--loss",
        "mse",
        "--trace",
        "exact",
        "--json",
    ]);
    assert!(s.status.success(), "{}", stderr(&s));
    let s: serde_json::Value = serde_json::from_slice(&s.stdout).unwrap();
    let top = s["top_eigenvalues"][0].as_f64().unwrap();
    assert!((col("sharpness_top") - top).abs() <= 1e-6 * top.abs(), "{} vs {top}", col("sharpness_top"));
    // The model carries its architecture (`noether.arch`), a plain dense chain, so `sharpness` runs on the
    // dense-chain path as before (with `--activation relu`, which agrees with the stored architecture).
    let tr = s["trace"].as_f64().unwrap();
    assert!((col("hessian_trace") - tr).abs() <= 1e-9 * tr.abs());
}

#[test]
fn wrong_shape_and_non_finite_inputs_are_named() {
    let d = tmp("bad-inputs");
    // A config whose init file does not match its dims: the tensor and both shapes are named.
    let cfg = TINY.replace(
        "bias = true",
        "bias = true\ninit = { file = \"tests/data/tanh_mlp_mse/model.safetensors\" }",
    );
    let cfg = write(&d, "shape.toml", &cfg);
    let o = noether(&["train", &cfg, "-q", "--out", &d.join("run").display().to_string()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("layers.0.weight") && e.contains("[4, 3]") && e.contains("[6, 4]"), "{e}");
    // NaN in the data: named with its position.
    let x = faer::Mat::from_fn(4, 5, |i, j| if (i, j) == (2, 3) { f64::NAN } else { 0.1 * (i + j) as f64 });
    let y = noether::Targets::Dense(faer::Mat::zeros(4, 3));
    let bad = noether::Dataset { x, y };
    let path = d.join("nan.safetensors");
    noether::data::save_dataset(&bad, &path).unwrap();
    let o = noether(&[
        "analyze",
        "--model",
        "tests/data/relu_mlp_mse/model.safetensors",
        "--data",
        &path.display().to_string(),
        "--activation",
        "relu",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(e.contains("non-finite") && e.contains("row 2") && e.contains("column 3"), "{e}");
    // Data whose width does not match the model.
    let o = noether(&[
        "analyze",
        "--model",
        "tests/data/relu_mlp_mse/model.safetensors",
        "--data",
        "tests/data/tanh_mlp_mse/data.safetensors",
        "--activation",
        "relu",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("width"), "{}", stderr(&o));
}

/// `--model M --data D --activation A` of a reference case.
fn case_args(case: &str, activation: &str) -> Vec<String> {
    let f = |name: &str| format!("tests/data/{case}/{name}.safetensors");
    vec!["--model".into(), f("model"), "--data".into(), f("data"), "--activation".into(), activation.into()]
}

fn run_with(cmd: &str, base: &[String], extra: &[&str]) -> Output {
    let mut args: Vec<&str> = vec![cmd];
    args.extend(base.iter().map(String::as_str));
    args.extend_from_slice(extra);
    noether(&args)
}

fn read_csv(text: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_reader(text.as_bytes());
    let header = r.headers().unwrap().iter().map(String::from).collect();
    let rows = r.records().map(|rec| rec.unwrap().iter().map(String::from).collect()).collect();
    (header, rows)
}

#[test]
fn exports_parse_with_the_documented_schema_and_header() {
    use noether::report::records::{AnalyzeRecord, SharpnessRecord, SymmetryRecord};
    use noether::report::Record;
    let d = tmp("exports");
    let path = |name: &str| d.join(name).display().to_string();
    let relu = case_args("relu_mlp_mse", "relu");
    let (json, csv, md) = (path("a.json"), path("a.csv"), path("a.md"));
    let o = run_with(
        "analyze",
        &relu,
        &["--export-json", &json, "--export-csv", &csv, "--export-markdown", &md, "--lr", "0.05"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("summary:"), "the table is still printed");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys.len(), 5, "{keys:?}");
    for k in ["noether_version", "command", "config", "seed", "results"] {
        assert!(keys.contains(&k), "missing {k} in {keys:?}");
    }
    assert_eq!(v["command"], "analyze");
    assert!(v["seed"].is_null(), "analyze is deterministic");
    assert_eq!(v["config"]["lr"], 0.05);
    let results = v["results"].as_array().unwrap();
    assert!(!results.is_empty());
    // CSV: the record's columns, one row per JSON result, raw (unrounded) values.
    let (header, rows) = read_csv(&std::fs::read_to_string(&csv).unwrap());
    assert_eq!(header, AnalyzeRecord::COLUMNS);
    assert_eq!(rows.len(), results.len());
    let charge = |row: &Vec<String>| row[3].parse::<f64>().unwrap();
    assert_eq!(charge(&rows[0]), results[0]["charge"].as_f64().unwrap());
    // Markdown: a pipe table with the same header and one line per record.
    let md = std::fs::read_to_string(&md).unwrap();
    let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
    assert!(table[0].starts_with("| family | layer | unit | charge |"), "{}", table[0]);
    assert_eq!(table.len(), rows.len() + 2);

    // Sharpness to stdout: the seed is recorded, one row per eigenvalue, nothing else on stdout.
    let o = run_with("sharpness", &relu, &["--top", "2", "--bottom", "--seed", "4", "--export-csv", "-"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (header, rows) = read_csv(&String::from_utf8(o.stdout).unwrap());
    assert_eq!(header, SharpnessRecord::COLUMNS);
    assert_eq!(rows.iter().map(|r| r[1].as_str()).collect::<Vec<_>>(), ["top", "top", "bottom"]);
    let o = run_with("sharpness", &relu, &["--seed", "4", "--export-json", "-"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["seed"], 4);

    // Symmetries and teleport: JSON and CSV files.
    let model = "tests/data/deep_linear_mse/model.safetensors";
    let csv = path("s.csv");
    let o = noether(&["symmetries", "--model", model, "--activation", "identity", "--export-csv", &csv]);
    assert!(o.status.success(), "{}", stderr(&o));
    let (header, rows) = read_csv(&std::fs::read_to_string(&csv).unwrap());
    assert_eq!(header, SymmetryRecord::COLUMNS);
    assert!(rows.iter().any(|r| r[0] == "double_rotation" && r[3].is_empty() && !r[4].is_empty()));
    let json = path("t.json");
    let out = path("moved.safetensors");
    let o = run_with("teleport", &relu, &["--out", &out, "--export-json", &json]);
    assert!(o.status.code().is_some_and(|c| c <= 1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["command"], "teleport");
    assert!(v["results"][0]["distance"].is_number());
}

#[test]
fn unwritable_export_path_fails_before_any_work() {
    let d = tmp("export-unwritable");
    let relu = case_args("relu_mlp_mse", "relu");
    let out = d.join("moved.safetensors");
    for flag in ["--export-json", "--export-csv", "--export-markdown"] {
        let bad = "/nonexistent-noether-dir/results.out";
        let o = run_with("teleport", &relu, &["--out", &out.display().to_string(), flag, bad]);
        assert_eq!(o.status.code(), Some(2), "{flag}");
        let e = stderr(&o);
        assert!(e.contains(flag) && e.contains(bad), "{e}");
        assert!(o.stdout.is_empty());
        assert!(!out.exists(), "{flag}: teleport ran although the export file could not be created");
    }
}

//! What a command writes and which of its flags it honours: a closed pipe is not a crash; an export never
//! overwrites an input, `--out` or another export, follows symbolic links and writes devices in place; flags
//! and files that cannot mean what they say (a Lanczos tolerance ≥ 1, a one-point orbit between two ends,
//! probes of an exact trace, N = 1 on a tree, an `--arch` that contradicts the file, extra tensors in a data
//! file, an f32 tolerance below f32's round-off, `reproduce --list` with run flags) are errors naming them;
//! so is a safetensors header that cannot be one.

use crate::cli::{noether, stderr, tmp};
use crate::robust::assert_error;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const MLP: &str = "tests/data/relu_mlp_mse";
const CNN: &str = "tests/data/cnn_digits_ce";

fn mlp(cmd: &str, extra: &[&str]) -> Output {
    let (m, x) = (format!("{MLP}/model.safetensors"), format!("{MLP}/data.safetensors"));
    let mut a = vec![cmd, "--model", &m, "--data", &x, "--loss", "mse", "-q"];
    a.extend_from_slice(extra);
    noether(&a)
}

fn cnn(cmd: &str, data: &str, extra: &[&str]) -> Output {
    let (m, a) = (format!("{CNN}/model.safetensors"), format!("{CNN}/arch.toml"));
    let mut args = vec![cmd, "--model", &m, "--arch", &a, "--data", data, "--loss", "cross_entropy", "-q"];
    args.extend_from_slice(extra);
    noether(&args)
}

/// The data file of the reference case in `case` (a `tests/data` folder) rewritten into `dir` with its first
/// `n` samples (all of them for `None`) and one extra one-element tensor per name of `extra`.
fn case_data(case: &str, dir: &Path, name: &str, n: Option<usize>, extra: &[&str]) -> String {
    let bytes = std::fs::read(format!("{case}/data.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = Vec::new();
    for key in ["x", "y"] {
        let t = st.tensor(key).unwrap();
        let mut shape = t.shape().to_vec();
        let row = t.data().len() / shape[0];
        shape[0] = n.unwrap_or(shape[0]);
        tensors.push((key.to_string(), t.dtype(), shape.clone(), t.data()[..shape[0] * row].to_vec()));
    }
    for key in extra {
        tensors.push((key.to_string(), safetensors::Dtype::F64, vec![1], 1f64.to_le_bytes().to_vec()));
    }
    let path = dir.join(name);
    noether::tensor_io::write(&path, &tensors).unwrap();
    path.display().to_string()
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let (m, x) = (format!("{MLP}/model.safetensors"), format!("{MLP}/data.safetensors"));
    for args in [
        vec!["sharpness", "--model", &m, "--data", &x, "--loss", "mse", "--orbit", "-1:1:3"],
        vec!["symmetries", "--model", &m],
        vec!["reproduce", "--list"],
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_noether"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take()); // the reader goes away before the first line
        let o = child.wait_with_output().unwrap();
        let e = stderr(&o);
        assert!(!e.contains("panicked"), "{args:?}: {e}");
        assert_eq!(o.status.code(), Some(0), "{args:?}: {e}");
    }
}

#[test]
fn an_export_never_overwrites_an_input_the_output_or_another_export() {
    let d = tmp("exports-clobber");
    let model = d.join("model.safetensors");
    std::fs::copy(format!("{MLP}/model.safetensors"), &model).unwrap();
    let before = std::fs::read(&model).unwrap();
    let (m, x) = (model.display().to_string(), format!("{MLP}/data.safetensors"));
    // `cmd` on the copied model and the case's data, with `extra`.
    let on_copy = |cmd: &str, extra: &[&str]| {
        let mut a = vec![cmd, "--model", &m, "--data", &x, "--loss", "mse"];
        a.extend_from_slice(extra);
        noether(&a)
    };
    assert_error(&on_copy("analyze", &["--export-json", &m]), &["--export-json", "--model"]);
    assert_error(&on_copy("analyze", &["--export-csv", &x]), &["--export-csv", "--data"]);
    assert_eq!(std::fs::read(&model).unwrap(), before, "the input model is intact");
    let out = d.join("moved.safetensors").display().to_string();
    assert_error(&on_copy("teleport", &["--out", &out, "--export-json", &out]), &["--export-json", "--out"]);
    let same = d.join("r.txt").display().to_string();
    let o = on_copy("analyze", &["--export-json", &same, "--export-csv", &same]);
    assert_error(&o, &["--export-csv", "--export-json"]);
    // The same file through a symbolic link is still the input.
    let link = d.join("link.safetensors");
    std::os::unix::fs::symlink(&model, &link).unwrap();
    assert_error(
        &on_copy("analyze", &["--export-json", link.to_str().unwrap()]),
        &["--export-json", "--model"],
    );
    assert_eq!(std::fs::read(&model).unwrap(), before, "the input model is intact");
}

#[test]
fn exports_follow_symbolic_links_and_write_devices_in_place() {
    let d = tmp("exports-links");
    let target = d.join("results.json");
    std::fs::write(&target, "old").unwrap();
    let link = d.join("latest.json");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let o = mlp("analyze", &["--export-json", link.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link stays a link");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&target).unwrap()).unwrap();
    assert_eq!(v["command"], "analyze");
    let o = mlp("analyze", &["--export-csv", "/dev/null"]);
    assert!(o.status.success(), "{}", stderr(&o));
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::metadata("/dev/null").unwrap().file_type().is_char_device(), "/dev/null is a device");
    // `--force` is recorded in the exported config as what it is.
    let out = d.join("m.safetensors").display().to_string();
    let json = d.join("t.json").display().to_string();
    let o = mlp("teleport", &["--out", &out, "--export-json", &json]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["config"]["force"], false, "{}", v["config"]);
}

#[test]
fn sharpness_flags_that_cannot_mean_what_they_say_are_errors() {
    assert_error(&mlp("sharpness", &["--tol", "2"]), &["--tol 2", "(0, 1)"]);
    assert_error(&mlp("sharpness", &["--orbit", "0:1:1"]), &["0:1:1", "LO:LO:1"]);
    assert_error(&mlp("sharpness", &["--orbit", "0:0:3"]), &["0:0:3", "LO = HI"]);
    // P = 92 ≤ 2000: the default trace is exact, so probes would do nothing.
    assert_error(&mlp("sharpness", &["--probes", "5"]), &["--probes 5", "exact", "--trace hutchinson"]);
    let o = mlp("sharpness", &["--probes", "5", "--trace", "hutchinson"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A dense file in f32 runs on its module tree; its dense generator names still work there.
    let o = mlp("sharpness", &["--precision", "f32", "--orbit", "-1:1:2", "--generator", "rescale:0:0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("layers.0"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    // hutch++ on a module tree.
    let x = format!("{CNN}/data.safetensors");
    let o = cnn("sharpness", &x, &["--trace", "hutch++", "--probes", "12"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn tree_inputs_that_cannot_mean_what_they_say_are_errors() {
    let d = tmp("tree-inputs");
    let one = case_data(CNN, &d, "one.safetensors", Some(1), &[]);
    assert_error(&cnn("analyze", &one, &[]), &["N = 1", "at least 2 samples"]);
    let extra = case_data(CNN, &d, "extra.safetensors", Some(20), &["w", "mean"]);
    assert_error(&cnn("analyze", &extra, &[]), &["`mean`", "`w`", "exactly `x` and `y`"]);
    // A model noether wrote carries its architecture; an --arch that contradicts it is refused.
    let x = format!("{CNN}/data.safetensors");
    let moved = d.join("moved.safetensors").display().to_string();
    assert!(cnn("teleport", &x, &["--target", "norm", "--out", &moved]).status.success());
    let other = d.join("tanh.toml");
    let text =
        std::fs::read_to_string(format!("{CNN}/arch.toml")).unwrap().replacen("\"relu\"", "\"tanh\"", 1);
    std::fs::write(&other, text).unwrap();
    let o = noether(&[
        "analyze",
        "--model",
        &moved,
        "--arch",
        other.to_str().unwrap(),
        "--data",
        &x,
        "--loss",
        "cross_entropy",
    ]);
    assert_error(&o, &["--arch", "different architecture", "tanh"]);
    let same = format!("{CNN}/arch.toml");
    let o =
        noether(&["analyze", "--model", &moved, "--arch", &same, "--data", &x, "--loss", "cross_entropy"]);
    assert!(o.status.success(), "the same architecture again is fine: {}", stderr(&o));
}

#[test]
fn dense_data_with_extra_tensors_and_f32_tolerances_below_round_off_are_errors() {
    let d = tmp("dense-inputs");
    let path = case_data(MLP, &d, "extra.safetensors", None, &["z"]);
    let m = format!("{MLP}/model.safetensors");
    let o = noether(&["analyze", "--model", &m, "--data", &path, "--loss", "mse"]);
    assert_error(&o, &["`z`", "exactly `x` and `y`"]);
    let out = d.join("t.safetensors").display().to_string();
    let o = mlp("teleport", &["--precision", "f32", "--tol", "1e-12", "--out", &out]);
    assert_error(&o, &["--tol 1e-12", "f32", "1.2e-4"]);
    assert!(!Path::new(&out).exists());
    let o = mlp("teleport", &["--tol", "1e-300", "--out", &out]);
    assert_error(&o, &["--tol 1e-300"]);
    let o = mlp("teleport", &["--precision", "f32", "--out", &out]);
    assert!(o.status.success(), "the f32 default tolerance converges: {}", stderr(&o));
}

#[test]
fn reproduce_list_takes_no_run_flags() {
    for extra in [&["--jobs", "0"][..], &["fig2-matrix-factorization"], &["--quick"], &["--force"]] {
        let mut a = vec!["reproduce", "--list"];
        a.extend_from_slice(extra);
        assert_error(&noether(&a), &["--list"]);
    }
}

#[test]
fn a_damaged_safetensors_header_is_an_error_naming_the_file() {
    // The stored architecture is read from the header alone; a header that cannot be one is refused there.
    let d = tmp("robust-header");
    let x = format!("{MLP}/data.safetensors");
    let mut long = 1000u64.to_le_bytes().to_vec();
    long.extend_from_slice(b"{}");
    for (name, bytes, culprit) in [
        ("short.safetensors", b"abc".to_vec(), "too short"),
        ("long.safetensors", long, "header length 1000"),
        ("json.safetensors", [&2u64.to_le_bytes()[..], b"{x"].concat(), "not valid JSON"),
    ] {
        let m = d.join(name);
        std::fs::write(&m, bytes).unwrap();
        let m = m.display().to_string();
        for cmd in ["symmetries", "analyze"] {
            let o = noether(
                &[cmd, "--model", &m, "--data", &x, "--loss", "mse"]
                    [..if cmd == "symmetries" { 3 } else { 7 }],
            );
            assert_error(&o, &[&m, culprit]);
        }
    }
}

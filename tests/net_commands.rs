//! The commands on module trees beyond the reference cases: teleport's norm target, `--precision f32` of teleport
//! and sharpness, sharpness along an orbit and on a subset, each against an independent computation (the charges
//! that must vanish, the dense-chain engine on the same function, the invariance of the loss along the orbit).

use crate::cli::{json_f64 as f, rel, run_json};
use crate::net::ref_dir;
use noether::Loss;
use serde_json::Value;

struct Case {
    m: String,
    a: String,
    x: String,
    loss: &'static str,
}

fn case(name: &str, loss: &'static str) -> Case {
    let d = ref_dir(name);
    let s = |f: &str| d.join(f).to_str().unwrap().to_string();
    Case { m: s("model.safetensors"), a: s("arch.toml"), x: s("data.safetensors"), loss }
}

#[test]
fn teleport_to_the_least_norm_point_zeroes_every_rescaling_charge() {
    for (name, loss) in [("cnn_residual_mse", "mse"), ("cnn_digits_ce", "cross_entropy")] {
        let c = case(name, loss);
        let dir = crate::cli::tmp(&format!("net-norm-{name}"));
        let out = dir.join("norm.safetensors");
        let out = out.to_str().unwrap();
        let t = run_json(&[
            "teleport", "--model", &c.m, "--arch", &c.a, "--data", &c.x, "--loss", c.loss, "--target",
            "norm", "--out", out, "--json",
        ]);
        assert_eq!(t["target"], "norm");
        assert!(t["joint_equilibrium"]["converged"].as_bool().unwrap());
        assert!(f(&t["max_abs_loss_change_per_sample"]) < 1e-11, "{name}: the function moved");
        let (before, after) = (f(&t["param_norm_sq_before"]), f(&t["param_norm_sq_after"]));
        assert!(after < before, "{name}: ‖θ‖² {before} → {after}");
        // Independently of the solver: at the least-norm point every free rescaling's charge θᵀAθ vanishes
        // (the derivative of ‖e^{λA}θ‖² at λ = 0 is 2θᵀAθ), read back from the written file by `symmetries`.
        let s = run_json(&["symmetries", "--model", out, "--json"]);
        let s0 = run_json(&["symmetries", "--model", &c.m, "--arch", &c.a, "--json"]);
        let mut moved = 0;
        for (e, e0) in s["symmetries"].as_array().unwrap().iter().zip(s0["symmetries"].as_array().unwrap()) {
            if e["family"] != "rescale" {
                assert_eq!(f(&e["charge"]), f(&e0["charge"]), "{name}: a scale symmetry moved");
                continue;
            }
            assert!(
                f(&e["charge"]).abs() < 1e-10 * after,
                "{name}: charge {} at the least-norm point",
                e["charge"]
            );
            moved += (f(&e0["charge"]).abs() > 1e-6 * before) as usize;
        }
        assert!(moved > 0, "{name}: the start was already balanced, the test would prove nothing");
    }
}

#[test]
fn teleport_and_sharpness_in_f32_agree_with_f64() {
    let c = case("cnn_strided_leaky_ce", "cross_entropy");
    let dir = crate::cli::tmp("net-f32");
    let mut got = Vec::new();
    for p in ["f64", "f32"] {
        let out = dir.join(format!("moved-{p}.safetensors"));
        let t = run_json(&[
            "teleport",
            "--model",
            &c.m,
            "--arch",
            &c.a,
            "--data",
            &c.x,
            "--loss",
            c.loss,
            "--precision",
            p,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(t["precision"], p);
        let sh = run_json(&[
            "sharpness",
            "--model",
            &c.m,
            "--arch",
            &c.a,
            "--data",
            &c.x,
            "--loss",
            c.loss,
            "--precision",
            p,
            "--top",
            "2",
            "--json",
        ]);
        assert_eq!(sh["precision"], p);
        got.push((f(&t["trace_sigma_after"]), f(&sh["top_eigenvalues"][0]), f(&sh["trace"])));
    }
    let ((t64, e64, tr64), (t32, e32, tr32)) = (got[0], got[1]);
    for (what, a, b) in [("Tr Σ(θ*)", t32, t64), ("λ_max", e32, e64), ("Tr H", tr32, tr64)] {
        assert!(rel(a, b) < 1e-4 && a != b, "{what}: f32 {a} vs f64 {b}");
    }
}

/// A dense-chain reference case with an architecture file for the same function (`NetArch::from_dense`).
fn dense_case_with_arch(name: &str, loss: &'static str, act: noether::Activation) -> (Case, String) {
    use noether::net::NetArch;
    let c = case(name, loss);
    let model = noether::model::load_safetensors::<f64>(std::path::Path::new(&c.m), act)
        .expect("a dense-chain reference case");
    let arch = NetArch::from_dense(&model.arch).unwrap();
    let dir = crate::cli::tmp(&format!("net-dense-arch-{name}"));
    let a = dir.join("arch.toml");
    std::fs::write(&a, arch.to_toml()).unwrap();
    (c, a.to_str().unwrap().to_string())
}

/// The three-point `sharpness --orbit` curves of the dense engine `d` and a tree `t` agree point by point (λ, top
/// eigenvalue to 1e-6, trace to 1e-9), the tree's loss is constant along the orbit (1e-12), and the sharpness does
/// change along it (else the comparison would be vacuous).
fn assert_orbits_agree(d: &Value, t: &Value) {
    let (dp, tp) = (d["orbit"].as_array().unwrap(), t["orbit"].as_array().unwrap());
    assert_eq!(dp.len(), 3);
    assert_eq!(tp.len(), 3);
    let loss0 = f(&tp[1]["loss"]);
    for (a, b) in dp.iter().zip(tp) {
        assert_eq!(f(&a["lambda"]), f(&b["lambda"]));
        assert!(rel(f(&b["top_eigenvalue"]), f(&a["top_eigenvalue"])) < 1e-6, "{a} vs {b}");
        assert!(rel(f(&b["trace"]), f(&a["trace"])) < 1e-9, "{a} vs {b}");
        assert!(rel(f(&b["loss"]), loss0) < 1e-12, "the loss moved along the orbit: {b}");
    }
    assert!(
        rel(f(&tp[0]["top_eigenvalue"]), f(&tp[2]["top_eigenvalue"])) > 1e-3,
        "the sharpness did not move along the orbit"
    );
}

#[test]
fn sharpness_along_an_orbit_agrees_with_the_dense_engine_and_keeps_the_loss() {
    let (c, arch) = dense_case_with_arch("relu_mlp_mse", "mse", noether::Activation::Relu);
    let common =
        ["--data", &c.x, "--loss", c.loss, "--top", "2", "--trace", "exact", "--orbit", "-0.8:0.8:3"];
    let mut dense = vec!["sharpness", "--model", &c.m, "--generator", "rescale:0:1", "--json"];
    dense.extend(common);
    let mut tree =
        vec!["sharpness", "--model", &c.m, "--arch", &arch, "--generator", "rescale:layers.0:1", "--json"];
    tree.extend(common);
    let (d, t) = (run_json(&dense), run_json(&tree));
    assert_orbits_agree(&d, &t);
    // The same subset of samples on both engines.
    let sub = ["--data", &c.x, "--loss", c.loss, "--top", "1", "--subset", "7", "--seed", "3", "--json"];
    let mut dense = vec!["sharpness", "--model", &c.m];
    dense.extend(sub);
    let mut tree = vec!["sharpness", "--model", &c.m, "--arch", &arch];
    tree.extend(sub);
    let (d, t) = (run_json(&dense), run_json(&tree));
    let (a, b) = (f(&d["top_eigenvalues"][0]), f(&t["top_eigenvalues"][0]));
    assert!(rel(a, b) < 1e-6, "subset: dense {a} vs tree {b}");
}

/// A double rotation's orbit on a tree: the deep linear chain (pairs `layers.0`, `layers.1`) as a tree against the
/// dense engine's `--generator double_rotation:0` (B = I on both), with the loss constant along the orbit.
#[test]
fn sharpness_along_a_double_rotation_orbit_agrees_with_the_dense_engine() {
    let (c, arch) = dense_case_with_arch("deep_linear_mse", "mse", noether::Activation::Identity);
    let common = [
        "--data",
        &c.x,
        "--loss",
        c.loss,
        "--top",
        "2",
        "--trace",
        "exact",
        "--orbit",
        "-0.6:0.6:3",
        "--json",
    ];
    let mut dense =
        vec!["sharpness", "--model", &c.m, "--activation", "identity", "--generator", "double_rotation:0"];
    dense.extend(common);
    let mut tree =
        vec!["sharpness", "--model", &c.m, "--arch", &arch, "--generator", "double_rotation:layers.0"];
    tree.extend(common);
    let (d, t) = (run_json(&dense), run_json(&tree));
    assert_eq!(t["orbit_generator"], "double_rotation layers.0");
    assert_orbits_agree(&d, &t);
}

/// On a tree with a pair inside a residual body (`6.body.0` → `6.body.2`, with a bias): the loss is constant
/// along `double_rotation:6.body.0`, and each orbit point's top eigenvalue and trace are those of `sharpness` on a
/// file moved by hand, `[W₁ | b₁] ← e^{λ}[W₁ | b₁]`, `W₂ ← e^{−λ}W₂` (e^{λB} for B = I); unknown pairs are errors
/// that list the pairs.
#[test]
fn a_double_rotation_orbit_on_a_tree_matches_files_moved_by_hand() {
    use crate::net_pairs::PAIRS_ARCH;
    use noether::net::save_net;
    let dir = crate::cli::tmp("net-pair-orbit");
    let net = crate::net::net_for(PAIRS_ARCH, 3);
    let (m, x) = (dir.join("model.safetensors"), dir.join("data.safetensors"));
    save_net::<f64, f64>(&net, &m).unwrap();
    let data = crate::net::data_for(&net.arch, 60, Loss::CrossEntropy, 4);
    noether::data::save_dataset_shaped(&data, &net.arch.input, &x).unwrap();
    let (m, x) = (m.to_str().unwrap(), x.to_str().unwrap());
    let base =
        ["sharpness", "--model", m, "--data", x, "--loss", "cross_entropy", "--top", "1", "--trace", "exact"];
    let mut args = base.to_vec();
    args.extend(["--orbit", "-0.5:0.5:3", "--generator", "double_rotation:6.body.0", "--json"]);
    let t = run_json(&args);
    assert_eq!(t["orbit_generator"], "double_rotation 6.body.0");
    let pts = t["orbit"].as_array().unwrap();
    let loss0 = f(&t["loss"]);
    for pt in pts {
        let lambda = f(&pt["lambda"]);
        assert!(rel(f(&pt["loss"]), loss0) < 1e-12, "the loss moved along the orbit: {pt}");
        let mut moved = net.clone();
        for (name, s) in [
            ("6.body.0.weight", lambda.exp()),
            ("6.body.0.bias", lambda.exp()),
            ("6.body.2.weight", (-lambda).exp()),
        ] {
            let r = moved.arch.block(name).unwrap().range.clone();
            moved.params[r].iter_mut().for_each(|v| *v *= s);
        }
        let file = dir.join(format!("moved-{lambda}.safetensors"));
        save_net::<f64, f64>(&moved, &file).unwrap();
        let mut args = base.to_vec();
        args[2] = file.to_str().unwrap();
        args.push("--json");
        let s = run_json(&args);
        assert!(
            rel(f(&pt["top_eigenvalue"]), f(&s["top_eigenvalues"][0])) < 1e-9,
            "λ = {lambda}: {pt} vs {s}"
        );
        assert!(rel(f(&pt["trace"]), f(&s["trace"])) < 1e-12, "λ = {lambda}: {pt} vs {s}");
    }
    assert!(
        rel(f(&pts[0]["top_eigenvalue"]), f(&pts[2]["top_eigenvalue"])) > 1e-3,
        "the sharpness did not move"
    );
    // `5` writes into the residual stream: not a pair; the error lists the pairs.
    for module in ["5", "nope"] {
        let g = format!("double_rotation:{module}");
        let mut args = base.to_vec();
        args.extend(["--orbit", "-1:1:3", "--generator", &g]);
        let o = crate::cli::noether(&args);
        let e = crate::cli::stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(
            e.contains(&format!("no linear pair whose first linear is `{module}`"))
                && e.contains("it has 3 (double_rotation:0, double_rotation:4, double_rotation:6.body.0)"),
            "{e}"
        );
    }
}

#[test]
fn bad_orbit_and_generator_input_on_a_tree_is_a_clear_error() {
    let c = case("cnn_residual_mse", "mse");
    let base = ["sharpness", "--model", &c.m, "--arch", &c.a, "--data", &c.x, "--loss", "mse"];
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--orbit", "-1:1:3", "--generator", "rescale:nope:0"], "no such symmetry"),
        (vec!["--orbit", "-1:1:3", "--generator", "rotate:0"], "double_rotation:MODULE"),
        (vec!["--orbit", "-1:1:3", "--generator", "double_rotation:0"], "the model has no linear pair ("),
        (vec!["--orbit", "-1:1:3", "--generator", "rescale:0:x"], "is not a number"),
        (vec!["--orbit", "-900:1:3"], "would overflow"),
        (vec!["--subset", "0"], "--subset 0"),
    ];
    for (extra, want) in cases {
        let mut args = base.to_vec();
        args.extend(extra);
        let o = crate::cli::noether(&args);
        let e = crate::cli::stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(want), "{args:?}: {e}\n  wanted: {want}");
    }
}

#[test]
fn exports_on_a_tree_have_one_row_per_symmetry_or_eigenvalue() {
    let c = case("cnn_residual_mse", "mse");
    let dir = crate::cli::tmp("net-exports");
    let n_sym = run_json(&["symmetries", "--model", &c.m, "--arch", &c.a, "--json"])["symmetries"]
        .as_array()
        .unwrap()
        .len();
    let csv = |args: &[&str]| {
        let o = crate::cli::noether(args);
        assert!(o.status.success(), "{args:?}: {}", crate::cli::stderr(&o));
        let text = String::from_utf8(o.stdout).unwrap();
        let mut rows = csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = rows.headers().unwrap().iter().map(String::from).collect();
        let body: Vec<csv::StringRecord> = rows.records().map(|r| r.unwrap()).collect();
        (header, body)
    };
    let (h, rows) = csv(&["symmetries", "--model", &c.m, "--arch", &c.a, "--export-csv", "-"]);
    assert_eq!(rows.len(), n_sym);
    assert_eq!(&h[..3], ["family", "module", "unit"]);
    let (h, rows) = csv(&[
        "analyze",
        "--model",
        &c.m,
        "--arch",
        &c.a,
        "--data",
        &c.x,
        "--loss",
        "mse",
        "--export-csv",
        "-",
    ]);
    assert_eq!(rows.len(), n_sym);
    let an =
        run_json(&["analyze", "--model", &c.m, "--arch", &c.a, "--data", &c.x, "--loss", "mse", "--json"]);
    let col = h.iter().position(|c| c == "tr_a_sigma").unwrap();
    for (row, n) in rows.iter().zip(an["neurons"].as_array().unwrap()) {
        // Equal up to serde_json's float parsing, which is not correctly rounded (the texts are the same).
        let (a, b) = (row[col].parse::<f64>().unwrap(), f(&n["tr_a_sigma"]));
        assert!(rel(a, b) <= 2.0 * f64::EPSILON, "CSV {a} and JSON {b} disagree");
    }
    let out = dir.join("moved.safetensors");
    let j = dir.join("teleport.json");
    let o = crate::cli::noether(&[
        "teleport",
        "--model",
        &c.m,
        "--arch",
        &c.a,
        "--data",
        &c.x,
        "--loss",
        "mse",
        "--out",
        out.to_str().unwrap(),
        "--export-json",
        j.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&j).unwrap()).unwrap();
    let res = doc["results"].as_array().unwrap();
    assert_eq!(res.len(), n_sym);
    let lambdas: Vec<f64> = an["joint_equilibrium"]["lambda"].as_array().unwrap().iter().map(f).collect();
    for (r, l) in res.iter().zip(lambdas) {
        assert_eq!(r["joint_converged"], true, "{r}");
        assert!((f(&r["lambda_moved"]) - l).abs() <= 2.0 * f64::EPSILON * l.abs(), "{r} vs {l}");
    }
    let (_, rows) = csv(&[
        "sharpness",
        "--model",
        &c.m,
        "--arch",
        &c.a,
        "--data",
        &c.x,
        "--loss",
        "mse",
        "--top",
        "2",
        "--bottom",
        "--export-csv",
        "-",
    ]);
    assert_eq!(rows.len(), 3, "two top eigenvalues and the bottom one");
    // The dense path's teleport rows carry the convergence flag too.
    let d = case("relu_mlp_mse", "mse");
    let out = dir.join("dense-moved.safetensors");
    let (h, rows) = csv(&[
        "teleport",
        "--model",
        &d.m,
        "--data",
        &d.x,
        "--loss",
        "mse",
        "--out",
        out.to_str().unwrap(),
        "--export-csv",
        "-",
    ]);
    let col = h.iter().position(|c| c == "converged").expect("a converged column");
    assert!(!rows.is_empty() && rows.iter().all(|r| &r[col] == "true"));
}

/// PyTorch's outputs, per-sample losses, mean loss and mean gradient of `tests/data/torch_residual` (make.py).
struct TorchExpected {
    state_dict: Vec<(String, Vec<usize>)>,
    outputs: Vec<Vec<f64>>,
    losses: Vec<f64>,
    loss: f64,
    grad: Vec<f64>,
}

fn torch_expected() -> TorchExpected {
    let d = crate::net::ref_dir("torch_residual");
    let j: Value = serde_json::from_str(&std::fs::read_to_string(d.join("expected.json")).unwrap()).unwrap();
    let v = |x: &Value| x.as_array().unwrap().iter().map(f).collect::<Vec<f64>>();
    TorchExpected {
        state_dict: j["state_dict"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert_eq!(e[2], "torch.float32", "PyTorch's default dtype");
                let shape = e[1].as_array().unwrap().iter().map(|s| s.as_u64().unwrap() as usize).collect();
                (e[0].as_str().unwrap().to_string(), shape)
            })
            .collect(),
        outputs: j["outputs"].as_array().unwrap().iter().map(v).collect(),
        losses: v(&j["losses"]),
        loss: f(&j["loss"]),
        grad: v(&j["grad"]),
    }
}

/// The network outputs `f(x_n)` of `net` on `data`, one row per sample.
fn outputs(net: &noether::net::Net<f64>, data: &noether::Dataset<f64>) -> Vec<Vec<f64>> {
    let mut tape = noether::net::Tape::new(&net.arch, data.len());
    tape.load(data, noether::net::Rows::Range(0..data.len())).unwrap();
    tape.forward(&net.params);
    let o = tape.output();
    (0..o.nrows()).map(|n| (0..o.ncols()).map(|j| o[(n, j)]).collect()).collect()
}

fn max_abs_diff(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).flat_map(|(x, y)| x.iter().zip(y).map(|(p, q)| (p - q).abs())).fold(0.0, f64::max)
}

#[test]
fn a_pytorch_written_residual_state_dict_loads_by_name_and_teleports_under_the_same_names() {
    use noether::net::{load_net, loss_and_grad, per_sample_losses, NetArch};
    let c = case("torch_residual", "cross_entropy");
    let want = torch_expected();
    // Loads by PyTorch's own names (float32 tensors, read exactly into f64) and computes PyTorch's function.
    let arch = NetArch::load(std::path::Path::new(&c.a)).unwrap();
    let net = load_net::<f64>(std::path::Path::new(&c.m), Some(&arch)).unwrap();
    let (data, _) = noether::data::load_dataset_shaped::<f64>(std::path::Path::new(&c.x)).unwrap();
    assert!(max_abs_diff(&outputs(&net, &data), &want.outputs) < 1e-13, "f(x) differs from PyTorch's");
    let (l, g) = loss_and_grad(&net, &data, Loss::CrossEntropy).unwrap();
    assert!(rel(l, want.loss) < 1e-13, "loss {l} vs PyTorch {}", want.loss);
    let gerr = g.iter().zip(&want.grad).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    let gmax = want.grad.iter().map(|v| v.abs()).fold(0.0, f64::max);
    assert!(gerr < 1e-12 * gmax, "mean gradient differs from PyTorch's by {gerr:e}");
    // Teleport (both targets) writes PyTorch's names back, in state_dict order, same shapes, and the same
    // function: every per-sample loss and output equals PyTorch's for the original weights.
    let dir = crate::cli::tmp("net-torch-roundtrip");
    for target in ["noise", "norm"] {
        let out = dir.join(format!("{target}.safetensors"));
        let t = run_json(&[
            "teleport",
            "--model",
            &c.m,
            "--arch",
            &c.a,
            "--data",
            &c.x,
            "--loss",
            c.loss,
            "--target",
            target,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert!(t["joint_equilibrium"]["lambda"].as_array().unwrap().iter().any(|l| f(l) != 0.0), "{target}");
        let bytes = std::fs::read(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let mut names: Vec<(String, Vec<usize>)> =
            st.tensors().into_iter().map(|(n, v)| (n.to_string(), v.shape().to_vec())).collect();
        let mut expect = want.state_dict.clone();
        names.sort();
        expect.sort();
        assert_eq!(names, expect, "{target}: tensor names and shapes");
        // The written file carries its architecture, in PyTorch's state_dict order.
        let moved = load_net::<f64>(&out, None).unwrap();
        assert!(meta.metadata().as_ref().unwrap().contains_key(noether::net::ARCH_METADATA_KEY));
        let order: Vec<String> = moved.arch.blocks.iter().map(|b| b.name.clone()).collect();
        assert_eq!(order, want.state_dict.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>());
        assert!(max_abs_diff(&outputs(&moved, &data), &want.outputs) < 1e-12, "{target}: the function moved");
        let lm = per_sample_losses(&moved, &data, Loss::CrossEntropy).unwrap();
        let dl = lm.iter().zip(&want.losses).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(dl < 1e-12, "{target}: per-sample losses moved by {dl:e}");
        assert_ne!(moved.params, net.params, "{target}: nothing moved, the test would prove nothing");
    }
}

#[test]
fn dense_chains_noether_wrote_keep_the_dense_path_with_their_stored_activations() {
    use noether::model::Architecture;
    use noether::Activation;
    let dir = crate::cli::tmp("net-dense-described");
    // A linear chain (double rotations) and a tanh chain with a normalised layer, written as noether writes them.
    let linear = Architecture::new(
        &[3, 4, 2],
        &[Activation::Identity, Activation::Identity],
        &[true, true],
        &[false, false],
    )
    .unwrap();
    let tanh = Architecture::new(
        &[3, 4, 2],
        &[Activation::Tanh, Activation::Identity],
        &[true, true],
        &[true, false],
    )
    .unwrap();
    let x = noether::data::Dataset::new(
        faer::Mat::<f64>::from_fn(20, 3, |i, j| ((i * 3 + j * 5) % 7) as f64 / 7.0 - 0.4),
        noether::data::Targets::Dense(faer::Mat::<f64>::from_fn(20, 2, |i, j| {
            ((i + 2 * j) % 5) as f64 / 5.0
        })),
    )
    .unwrap();
    let data = dir.join("data.safetensors");
    noether::data::save_dataset(&x, &data).unwrap();
    let data = data.to_str().unwrap();
    let mut files = Vec::new();
    for (name, arch) in [("linear", linear), ("tanh", tanh)] {
        let params: Vec<f64> = (0..arch.n_params()).map(|i| ((i * 7 % 11) as f64 - 5.0) / 6.0).collect();
        let model = noether::Model::from_params(arch, params).unwrap();
        let p = dir.join(format!("{name}.safetensors"));
        noether::net::save_dense::<f64, f64>(&model, &p).unwrap();
        files.push(p.to_str().unwrap().to_string());
    }
    // The linear chain: the dense path's double rotation is there, without --activation.
    let a = run_json(&["analyze", "--model", &files[0], "--data", data, "--json"]);
    assert_eq!(a["pairs"].as_array().unwrap().len(), 1, "the linear pair's double rotation");
    // The tanh chain: no rescaling (tanh), the stored normalisation gives a scale symmetry of layer 0.
    let s = run_json(&["symmetries", "--model", &files[1], "--json"]);
    let fam: Vec<&str> = s["results"].as_array().map_or_else(
        || s["symmetries"].as_array().unwrap().iter().map(|e| e["family"].as_str().unwrap()).collect(),
        |r| r.iter().map(|e| e["family"].as_str().unwrap()).collect(),
    );
    assert_eq!(fam, ["scale"], "{s}");
    // Same numbers as the same file read with the flags spelled out (the pre-metadata way).
    let told = run_json(&["analyze", "--model", &files[1], "--data", data, "--activation", "tanh", "--json"]);
    let inferred = run_json(&["analyze", "--model", &files[1], "--data", data, "--json"]);
    assert_eq!(told["trace_sigma"], inferred["trace_sigma"]);
    // Flags that contradict the stored architecture are errors naming them.
    for (args, want) in [
        (vec!["analyze", "--model", &files[1], "--data", data, "--activation", "relu"], "--activation relu"),
        (vec!["symmetries", "--model", &files[1], "--norm-layers", "1"], "--norm-layers"),
    ] {
        let o = crate::cli::noether(&args);
        let e = crate::cli::stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(want) && e.contains("carries its architecture"), "{e}");
    }
}

/// Every tensor of a safetensors file, by name, as f64.
fn tensors_f64(path: &std::path::Path) -> std::collections::BTreeMap<String, Vec<f64>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            assert_eq!(t.dtype(), safetensors::Dtype::F64, "{name}");
            let v = t.data().chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap())).collect();
            (name, v)
        })
        .collect()
}

#[test]
fn teleport_on_a_tree_rotates_linear_pairs_to_the_dense_engines_point() {
    // The deep linear chain as a tree: its pairs are rotated, not only rescaled. The dense engine's teleport on
    // the same file (tested against closed forms in `noise`) is the independent computation: the equilibrium
    // of the joint orbit is unique, so both must reach the same θ*.
    let (c, arch) = dense_case_with_arch("deep_linear_mse", "mse", noether::Activation::Identity);
    let dir = crate::cli::tmp("net-teleport-pairs");
    let targets: [&[&str]; 3] = [&[], &["--time", "discrete", "--batch-size", "4"], &["--target", "norm"]];
    for (k, extra) in targets.iter().enumerate() {
        let tree_out = dir.join(format!("tree-{k}.safetensors"));
        let dense_out = dir.join(format!("dense-{k}.safetensors"));
        let run = |out: &std::path::Path, with_arch: bool| {
            let mut a = vec!["teleport", "--model", &c.m, "--data", &c.x, "--loss", c.loss, "--json"];
            if with_arch {
                a.extend(["--arch", arch.as_str()]);
            } else {
                a.extend(["--activation", "identity"]);
            }
            a.extend(["--out", out.to_str().unwrap()]);
            a.extend(extra.iter().copied());
            run_json(&a)
        };
        let t = run(&tree_out, true);
        let d = run(&dense_out, false);
        assert!(t["converged"].as_bool().unwrap(), "{extra:?}: {t}");
        let pairs = t["pairs"].as_array().unwrap();
        assert!(
            !pairs.is_empty() && pairs.iter().any(|p| f(&p["distance"]) > 1e-3),
            "{extra:?}: no pair moved"
        );
        for key in ["trace_sigma_after", "param_norm_sq_after"] {
            assert!(
                rel(f(&t[key]), f(&d[key])) < 1e-9,
                "{extra:?} {key}: tree {} vs dense {}",
                t[key],
                d[key]
            );
        }
        assert!(f(&t["max_abs_loss_change_per_sample"]) < 1e-11, "{extra:?}: the function moved");
        let (tt, dt) = (tensors_f64(&tree_out), tensors_f64(&dense_out));
        assert_eq!(tt.keys().collect::<Vec<_>>(), dt.keys().collect::<Vec<_>>());
        let scale = dt.values().flatten().fold(0.0f64, |m, v| m.max(v.abs()));
        for (name, v) in &tt {
            let diff = v.iter().zip(&dt[name]).fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff < 1e-7 * scale, "{extra:?}: {name} differs by {diff:e}");
        }
    }
    // Independently of either solver: at the continuous-time θ* every pair's centred moments balance,
    // Tr[M_in − M_out] = 0 (B = I) and ‖M_in − M_out‖ ≪ ‖M_in‖, read back from the moved file by `analyze`.
    let moved = dir.join("tree-0.safetensors");
    let a = run_json(&[
        "analyze",
        "--model",
        moved.to_str().unwrap(),
        "--data",
        &c.x,
        "--loss",
        c.loss,
        "--json",
    ]);
    let a0 =
        run_json(&["analyze", "--model", &c.m, "--arch", &arch, "--data", &c.x, "--loss", c.loss, "--json"]);
    let ps = a["pairs"].as_array().unwrap();
    assert!(!ps.is_empty());
    for (p, p0) in ps.iter().zip(a0["pairs"].as_array().unwrap()) {
        let m = |v: &Value| -> Vec<f64> {
            v.as_array().unwrap().iter().flat_map(|r| r.as_array().unwrap().iter().map(f)).collect()
        };
        let (mi, mo) = (m(&p["M_in"]), m(&p["M_out"]));
        let size = mi.iter().map(|v| v * v).sum::<f64>().sqrt();
        let gap = mi.iter().zip(&mo).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
        let (mi0, mo0) = (m(&p0["M_in"]), m(&p0["M_out"]));
        let gap0 = mi0.iter().zip(&mo0).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
        assert!(gap < 1e-9 * size, "pair {}: ‖M_in − M_out‖ = {gap:e} of {size:e} at θ*", p["module"]);
        assert!(
            gap0 > 1e-2 * size,
            "pair {}: already balanced at θ, the test would prove nothing",
            p["module"]
        );
    }
}

//! Training observers of the linear pairs of a module tree (`NetCharges`, `NetNoise`): a `[model] layers` run
//! through the CLI logs, for every pair, `c_pair_{module}_fro` and the first `pair_entries` upper-triangular
//! entries `c_pair_{module}_{i}_{j}` of the matrix charge `W₁W₁ᵀ + b₁b₁ᵀ − W₂ᵀW₂` (checked against the charge
//! recomputed from the named tensors of the start file and of the written model), and `tr_a_sigma_pair_{module}`
//! = Tr[M_in − M_out] (checked against the brute-force per-sample-gradient loop at the same θ).

use crate::cli::{noether, stderr, tmp};
use crate::net::net_for;
use crate::net_pairs::{brute_grads, PAIRS_ARCH};
use faer::Mat;
use noether::data::{load_dataset_shaped, save_dataset_shaped};
use noether::net::{load_net, save_net, Net, NetArch};
use noether::Loss;
use std::collections::HashMap;

/// The pairs of [`PAIRS_ARCH`]: (first linear, second linear, hidden width d).
const PAIRS: [(&str, &str, usize); 3] = [("0", "2", 3), ("4", "5", 3), ("6.body.0", "6.body.2", 2)];

/// A named tensor of `net` as a matrix (`[out, in]`; a bias as a column).
fn tensor(net: &Net<f64>, name: &str) -> Option<Mat<f64>> {
    let b = net.arch.block(name)?;
    let cols = b.shape.get(1).copied().unwrap_or(1);
    Some(Mat::from_fn(b.shape[0], cols, |i, j| net.params[b.range.start + i * cols + j]))
}

/// `W₁W₁ᵀ + b₁b₁ᵀ − W₂ᵀW₂` from the state-dict tensors of the two linears.
fn matrix_charge(net: &Net<f64>, first: &str, second: &str) -> Mat<f64> {
    let w1 = tensor(net, &format!("{first}.weight")).unwrap();
    let w2 = tensor(net, &format!("{second}.weight")).unwrap();
    let mut c = &w1 * w1.transpose() - w2.transpose() * &w2;
    if let Some(b1) = tensor(net, &format!("{first}.bias")) {
        c += &b1 * b1.transpose();
    }
    c
}

/// `(Tr[M_in − M_out], Tr M_in + Tr M_out uncentred)` of the pair by the per-sample loop: Σ_k Var(g_k) over the
/// entries of `first.weight` and `first.bias`, minus the same over `second.weight` (centred, 1/N).
fn brute_pair_flow(net: &Net<f64>, data: &noether::Dataset<f64>, first: &str, second: &str) -> (f64, f64) {
    let gs = brute_grads(net, data, Loss::CrossEntropy);
    let n = gs.len() as f64;
    let (mut flow, mut scale) = (0.0, 0.0);
    for (name, sign) in
        [(format!("{first}.weight"), 1.0), (format!("{first}.bias"), 1.0), (format!("{second}.weight"), -1.0)]
    {
        let Some(b) = net.arch.block(&name) else { continue };
        for k in b.range.clone() {
            let m2 = gs.iter().map(|g| g[k] * g[k]).sum::<f64>() / n;
            let mean = gs.iter().map(|g| g[k]).sum::<f64>() / n;
            flow += sign * (m2 - mean * mean);
            scale += m2;
        }
    }
    (flow, scale)
}

/// The upper-triangular entries `(i, j)`, `i ≤ j`, row-major, first `n` of a `d × d` matrix.
fn upper(d: usize, n: usize) -> Vec<(usize, usize)> {
    let mut v = Vec::new();
    for i in 0..d {
        for j in i..d {
            v.push((i, j));
        }
    }
    v.truncate(n);
    v
}

/// The rows of a metrics.csv as maps from column to value.
fn read_metrics(path: &std::path::Path) -> (Vec<String>, Vec<HashMap<String, f64>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| header.iter().cloned().zip(l.split(',').map(|v| v.parse::<f64>().unwrap())).collect())
        .collect();
    (header, rows)
}

#[test]
fn tree_runs_log_every_pairs_matrix_charge_and_noise_flow() {
    let d = tmp("net-pair-observers");
    let arch = NetArch::parse(PAIRS_ARCH).unwrap();
    let start = net_for(PAIRS_ARCH, 3);
    let start_file = d.join("start.safetensors");
    save_net::<f64, f64>(&start, &start_file).unwrap();
    let data_file = d.join("data.safetensors");
    save_dataset_shaped(&crate::train_net::class_data(40, 4, 3, 1), &[4], &data_file).unwrap();
    let layers = PAIRS_ARCH
        .trim_start()
        .split_once('\n')
        .unwrap()
        .1
        .replace("[[layers]]", "[[model.layers]]")
        .replace("[[layers.body]]", "[[model.layers.body]]");
    let text = format!(
        "seed = 4\nsteps = 40\nlog_every = 10\nlr = 0.05\nloss = \"cross_entropy\"\n[model]\ninput = [4]\n\
         init = {{ file = \"{}\" }}\n{layers}\n[data]\nkind = \"file\"\npath = \"{}\"\n[optimizer]\nmethod = \"sgd\"\n\
         batch_size = 4\n[observe]\nnoise_every = 20\npair_entries = 4\n",
        start_file.display(),
        data_file.display()
    );
    let cfg = d.join("pairs.toml");
    std::fs::write(&cfg, &text).unwrap();
    let run = d.join("run");
    let o = noether(&["train", cfg.to_str().unwrap(), "--out", run.to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let (header, rows) = read_metrics(&run.join("metrics.csv"));

    // The pair columns, in order: per pair its Frobenius norm and the first 4 upper-triangular entries (3 for
    // the d = 2 pair, which has only 3); one noise flow per pair.
    let mut want = Vec::new();
    for (m, _, dd) in PAIRS {
        want.push(format!("c_pair_{m}_fro"));
        want.extend(upper(dd, 4).iter().map(|(i, j)| format!("c_pair_{m}_{i}_{j}")));
    }
    let got: Vec<&String> = header.iter().filter(|c| c.starts_with("c_pair_")).collect();
    assert_eq!(got, want.iter().collect::<Vec<_>>(), "{header:?}");
    let flows: Vec<&String> = header.iter().filter(|c| c.starts_with("tr_a_sigma_pair_")).collect();
    let want_flows: Vec<String> = PAIRS.iter().map(|(m, _, _)| format!("tr_a_sigma_pair_{m}")).collect();
    assert_eq!(flows, want_flows.iter().collect::<Vec<_>>(), "{header:?}");
    assert!(header.iter().all(|c| !c.contains(' ') && !c.contains('"')), "{header:?}");

    // Rows at steps 0, 10, 20, 30, 40: θ of step 0 is the start file's, θ of step 40 the written model's.
    let steps: Vec<f64> = rows.iter().map(|r| r["step"]).collect();
    assert_eq!(steps, [0.0, 10.0, 20.0, 30.0, 40.0]);
    let last = load_net::<f64>(&run.join("model.safetensors"), None).unwrap();
    assert_eq!(last.arch, arch);
    let (run_data, _) = load_dataset_shaped::<f64>(&run.join("data.safetensors")).unwrap();
    for (row, net) in [(&rows[0], &start), (&rows[4], &last)] {
        for (m, r, dd) in PAIRS {
            let c = matrix_charge(net, m, r);
            let fro = c.norm_l2();
            let what = format!("step {} pair {m}", row["step"]);
            assert!((row[&format!("c_pair_{m}_fro")] - fro).abs() <= 1e-12 * fro, "{what}: ‖C‖_F");
            for (i, j) in upper(dd, 4) {
                let v = row[&format!("c_pair_{m}_{i}_{j}")];
                assert!((v - c[(i, j)]).abs() <= 1e-12 * fro, "{what}: C[{i}, {j}] = {v} vs {}", c[(i, j)]);
            }
            let (flow, scale) = brute_pair_flow(net, &run_data, m, r);
            let v = row[&format!("tr_a_sigma_pair_{m}")];
            assert!((v - flow).abs() <= 1e-12 * scale, "{what}: Tr[M_in − M_out] {v} vs brute force {flow}");
            assert!(
                flow.abs() > 1e-6 * scale,
                "{what}: the flow is ~0 ({flow} of {scale}); the test is vacuous"
            );
        }
    }
    // The charges moved during the run (else the last row's check would repeat the first's), and the noise
    // columns are NaN on the rows between noise_every.
    for (m, _, _) in PAIRS {
        let (a, b) = (rows[0][&format!("c_pair_{m}_0_1")], rows[4][&format!("c_pair_{m}_0_1")]);
        assert!((a - b).abs() > 1e-6 * a.abs().max(b.abs()), "pair {m}: C[0, 1] did not move ({a} → {b})");
        for r in [&rows[1], &rows[3]] {
            assert!(r[&format!("tr_a_sigma_pair_{m}")].is_nan());
            assert!(r[&format!("c_pair_{m}_fro")].is_finite());
        }
    }
}

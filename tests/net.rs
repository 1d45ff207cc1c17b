//! The module-tree engine (`noether::net`): every kind's gradient and HVP against central differences, the
//! moments against the brute-force per-sample loop (both paths), the `cnn_*` reference cases, invariance of
//! every enumerated generator, a negative control, the exact SGD identity, and state_dict files.

use crate::cli::run_json;
use faer::Mat;
use noether::curvature::{dense_matrix, LinearOperator, NetHessian};
use noether::data::{load_dataset_shaped, Dataset, Targets};
use noether::equilibrium::net::{apply_joint, net_analysis};
use noether::equilibrium::{Status, Time};
use noether::net::{load_net, loss_and_grad, per_sample_losses, save_net, Net, NetArch, Rows, Tape};
use noether::stats::net::{net_moments, per_sample_grad_sq_norms, MomentPath};
use noether::symmetry::channels::{enumerate, rescalings, DiagSymmetry, Family};
use noether::Loss;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;
use std::path::PathBuf;

/// Every module kind: strided, padded, rectangular conv without bias, leaky relu, max and avg pooling,
/// tanh, flatten, linear, rms_norm.
pub const KINDS_ARCH: &str = r#"
input = [2, 7, 6]
[[layers]]
kind = "conv2d"
in_channels = 2
out_channels = 3
kernel_size = [3, 2]
stride = [2, 1]
padding = [1, 0]
bias = false
[[layers]]
kind = "leaky_relu"
negative_slope = 0.2
[[layers]]
kind = "max_pool2d"
kernel_size = 2
stride = 1
[[layers]]
kind = "conv2d"
in_channels = 3
out_channels = 3
kernel_size = 1
[[layers]]
kind = "tanh"
[[layers]]
kind = "avg_pool2d"
kernel_size = 2
[[layers]]
kind = "flatten"
[[layers]]
kind = "linear"
in_features = 6
out_features = 4
[[layers]]
kind = "rms_norm"
[[layers]]
kind = "relu"
[[layers]]
kind = "linear"
in_features = 4
out_features = 3
"#;

/// A residual conv net: two residual blocks, one with a bias-free last conv, one a single 1×1 conv.
pub const RESIDUAL_ARCH: &str = r#"
input = [2, 5, 5]
[[layers]]
kind = "conv2d"
in_channels = 2
out_channels = 3
kernel_size = 3
padding = 1
[[layers]]
kind = "relu"
[[layers]]
kind = "residual"
[[layers.body]]
kind = "conv2d"
in_channels = 3
out_channels = 3
kernel_size = 3
padding = 1
[[layers.body]]
kind = "relu"
[[layers.body]]
kind = "conv2d"
in_channels = 3
out_channels = 3
kernel_size = 3
padding = 1
bias = false
[[layers]]
kind = "identity"
[[layers]]
kind = "residual"
[[layers.body]]
kind = "conv2d"
in_channels = 3
out_channels = 3
kernel_size = 1
[[layers]]
kind = "flatten"
[[layers]]
kind = "linear"
in_features = 75
out_features = 2
"#;

/// An MLP with a residual tanh block.
pub const MLP_ARCH: &str = r#"
input = [5]
[[layers]]
kind = "linear"
in_features = 5
out_features = 4
[[layers]]
kind = "relu"
[[layers]]
kind = "residual"
[[layers.body]]
kind = "linear"
in_features = 4
out_features = 4
[[layers.body]]
kind = "tanh"
[[layers.body]]
kind = "linear"
in_features = 4
out_features = 4
[[layers]]
kind = "linear"
in_features = 4
out_features = 3
"#;

pub fn data_for(arch: &NetArch, n: usize, loss: Loss, seed: u64) -> Dataset<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = arch.input_len();
    let x = Mat::from_fn(n, d, |_, _| rng.random_range(-1.0..1.0));
    let k = arch.d_out();
    let y = match loss {
        Loss::Mse => Targets::Dense(Mat::from_fn(n, k, |_, _| rng.random_range(-1.0..1.0))),
        Loss::CrossEntropy => Targets::Classes((0..n).map(|_| rng.random_range(0..k)).collect()),
    };
    Dataset::new(x, y).unwrap()
}

/// A net with parameters scaled so that activations are O(1).
pub fn net_for(text: &str, seed: u64) -> Net<f64> {
    let mut net = Net::init(NetArch::parse(text).unwrap(), seed);
    net.params.iter_mut().for_each(|p| *p *= 1.7);
    net
}

fn mean_loss(net: &Net<f64>, data: &Dataset<f64>, loss: Loss) -> f64 {
    let l = per_sample_losses(net, data, loss).unwrap();
    l.iter().sum::<f64>() / l.len() as f64
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    num / den.max(1e-300)
}

const ARCHS: [(&str, &str); 3] = [("kinds", KINDS_ARCH), ("residual", RESIDUAL_ARCH), ("mlp", MLP_ARCH)];

#[test]
fn gradients_match_central_differences_for_every_kind() {
    for (name, text) in ARCHS {
        for loss in [Loss::Mse, Loss::CrossEntropy] {
            let net = net_for(text, 3);
            let data = data_for(&net.arch, 9, loss, 4);
            let (_, g) = loss_and_grad(&net, &data, loss).unwrap();
            let h = 1e-5;
            let fd: Vec<f64> = (0..net.params.len())
                .map(|k| {
                    let mut p = net.clone();
                    p.params[k] += h;
                    let up = mean_loss(&p, &data, loss);
                    p.params[k] -= 2.0 * h;
                    (up - mean_loss(&p, &data, loss)) / (2.0 * h)
                })
                .collect();
            let e = rel_err(&g, &fd);
            assert!(e < 1e-7, "{name} {loss:?}: gradient vs central differences {e:e}");
        }
    }
}

/// `Tape::backward_into` overwrites θ's gradient (`grad = α Σ_n ∇ℓ_n`, every block written, nothing read):
/// bit for bit `backward` into zeros, from a NaN-filled vector, for every kind (conv and linear blocks, with
/// and without bias, inside a residual).
#[test]
fn backward_into_overwrites_what_backward_adds() {
    for (name, text) in ARCHS {
        for loss in [Loss::Mse, Loss::CrossEntropy] {
            let net = net_for(text, 5);
            let data = data_for(&net.arch, 6, loss, 6);
            let mut tape = Tape::new(&net.arch, 6);
            tape.load(&data, Rows::Range(0..6)).unwrap();
            tape.forward(&net.params);
            tape.loss_grad(loss);
            let mut added = vec![0.0; net.params.len()];
            tape.backward(&net.params, Some((&mut added, 0.25)));
            let mut written = vec![f64::NAN; net.params.len()];
            tape.backward_into(&net.params, &mut written, 0.25);
            assert_eq!(written, added, "{name} {loss:?}");
        }
    }
}

#[test]
fn hvps_match_central_differences_of_the_gradient() {
    for (name, text) in ARCHS {
        for loss in [Loss::Mse, Loss::CrossEntropy] {
            let net = net_for(text, 5);
            let data = data_for(&net.arch, 7, loss, 6);
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let v: Vec<f64> = (0..net.params.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
            let mut hv = vec![0.0; v.len()];
            NetHessian::new(&net, &data, loss).unwrap().apply_into(&v, &mut hv);
            let h = 1e-5;
            let at = |s: f64| {
                let mut p = net.clone();
                p.params.iter_mut().zip(&v).for_each(|(a, b)| *a += s * b);
                loss_and_grad(&p, &data, loss).unwrap().1
            };
            let (up, dn) = (at(h), at(-h));
            let fd: Vec<f64> = up.iter().zip(&dn).map(|(a, b)| (a - b) / (2.0 * h)).collect();
            let e = rel_err(&hv, &fd);
            assert!(e < 1e-7, "{name} {loss:?}: HVP vs central differences {e:e}");
        }
    }
}

/// Per-sample gradients by one-sample passes (the brute-force loop).
fn brute_per_sample_grads(net: &Net<f64>, data: &Dataset<f64>, loss: Loss) -> Vec<Vec<f64>> {
    let mut tape = Tape::new(&net.arch, 1);
    (0..data.len())
        .map(|n| {
            tape.load(data, Rows::Index(&[n])).unwrap();
            tape.forward(&net.params);
            tape.loss_grad(loss);
            let mut g = vec![0.0; net.params.len()];
            tape.backward(&net.params, Some((&mut g, 1.0)));
            g
        })
        .collect()
}

#[test]
fn moments_match_the_brute_force_loop_on_both_paths() {
    for (name, text) in ARCHS {
        for loss in [Loss::Mse, Loss::CrossEntropy] {
            let net = net_for(text, 8);
            let data = data_for(&net.arch, 300, loss, 9); // two chunks of 256 and 44
            let gs = brute_per_sample_grads(&net, &data, loss);
            let n = gs.len() as f64;
            let p = net.params.len();
            let mean: Vec<f64> = (0..p).map(|k| gs.iter().map(|g| g[k]).sum::<f64>() / n).collect();
            let second: Vec<f64> = (0..p).map(|k| gs.iter().map(|g| g[k] * g[k]).sum::<f64>() / n).collect();
            let norms: Vec<f64> = gs.iter().map(|g| g.iter().map(|v| v * v).sum()).collect();
            for path in [MomentPath::Generic, MomentPath::QuadraticForm, MomentPath::Auto] {
                let m = net_moments(&net, &data, loss, path).unwrap();
                assert!(rel_err(&m.mean_grad, &mean) < 1e-12, "{name} {loss:?} {path:?} mean");
                assert!(rel_err(&m.second, &second) < 1e-12, "{name} {loss:?} {path:?} second moments");
                let q = per_sample_grad_sq_norms(&net, &data, loss, path).unwrap();
                assert!(rel_err(&q, &norms) < 1e-12, "{name} {loss:?} {path:?} per-sample norms");
            }
        }
    }
}

#[test]
fn f32_engine_agrees_with_f64() {
    let net = net_for(RESIDUAL_ARCH, 2);
    let data = data_for(&net.arch, 40, Loss::CrossEntropy, 3);
    let (l64, g64) = loss_and_grad(&net, &data, Loss::CrossEntropy).unwrap();
    let (l32, g32) = loss_and_grad(&net.cast::<f32>(), &data.cast::<f32>(), Loss::CrossEntropy).unwrap();
    assert!((l64 - l32).abs() < 1e-5 * l64.abs());
    assert!(rel_err(&g32, &g64) < 1e-4, "{}", rel_err(&g32, &g64));
    let m64 = net_moments(&net, &data, Loss::CrossEntropy, MomentPath::Auto).unwrap();
    let m32 =
        net_moments(&net.cast::<f32>(), &data.cast::<f32>(), Loss::CrossEntropy, MomentPath::Auto).unwrap();
    assert!(rel_err(&m32.second, &m64.second) < 1e-4);
}

// ---------- the dense chain through the module tree ----------

#[test]
fn dense_chains_agree_with_the_dense_engine() {
    use noether::model::Architecture;
    use noether::Activation;
    for norm in [false, true] {
        let arch = Architecture::new(
            &[4, 5, 3, 2],
            &[Activation::LeakyRelu { alpha: 0.1 }, Activation::Tanh, Activation::Identity],
            &[true, false, true],
            &[norm, false, false],
        )
        .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let params: Vec<f64> = (0..arch.n_params()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let model = noether::Model::from_params(arch.clone(), params.clone()).unwrap();
        let net = Net::from_params(NetArch::from_dense(&arch).unwrap(), params).unwrap();
        let data = data_for(&net.arch, 50, Loss::Mse, 12);
        let (l, g) = loss_and_grad(&net, &data, Loss::Mse).unwrap();
        let (ld, gd) = model.loss_and_grad(&data, Loss::Mse, 16).unwrap();
        assert!((l - ld).abs() < 1e-13 * ld.abs(), "norm {norm}: {l} vs {ld}");
        assert!(rel_err(&g, &gd) < 1e-12, "norm {norm}");
        // The dense engine's statistics (quadratic forms of (X_l, Δ_l), its own chunking) and its equilibria
        // against the generic module-tree path (per-coordinate moments): Tr Σ, every unit's noise, λ*, status.
        let opts = noether::equilibrium::AnalyzeOptions::default();
        let dense = noether::equilibrium::analysis(&model, &data, Loss::Mse, &opts).unwrap();
        let m = net_moments(&net, &data, Loss::Mse, MomentPath::Generic).unwrap();
        let syms = enumerate(&net.arch);
        let tree = net_analysis(&m, &net.params, &syms, opts.time);
        assert!(
            (tree.trace_sigma - dense.trace_sigma).abs() < 1e-12 * dense.trace_sigma,
            "norm {norm}: Tr Σ"
        );
        let rescales: Vec<_> = tree.symmetries.iter().filter(|r| r.family == Family::Rescale).collect();
        assert_eq!(rescales.len(), dense.neurons.len(), "norm {norm}: the same rescaling symmetries");
        for (t, d) in rescales.iter().zip(&dense.neurons) {
            assert_eq!((t.module.as_str(), t.unit), (format!("layers.{}", d.layer).as_str(), Some(d.unit)));
            for (a, b) in [(t.noise_in, d.noise_in), (t.noise_out, d.noise_out), (t.charge, d.charge)] {
                assert!((a - b).abs() <= 1e-12 * (a.abs() + b.abs()).max(1e-300), "norm {norm}: {a} vs {b}");
            }
            assert_eq!(t.status, d.status, "norm {norm}");
            if let (Some(a), Some(b)) = (t.lambda_star, d.lambda_star) {
                assert!((a - b).abs() < 1e-10, "norm {norm}: λ* {a} vs {b}");
            }
        }
        // The joint equilibrium (the dense engine has none without a rescaling: then the tree's solves nothing).
        match dense.joint_equilibrium.as_ref() {
            Some(dj) => {
                let star = tree.joint.trace_target_at_star;
                let rel_star = (star - dj.trace_sigma_at_star).abs() / dj.trace_sigma_at_star;
                assert!(rel_star < 1e-9, "norm {norm}: Tr Σ(θ*) {star} vs {}", dj.trace_sigma_at_star);
            }
            None => assert!(rescales.is_empty() && tree.joint.lambda.iter().all(|&l| l == 0.0)),
        }
        // Exact HVPs: the dense R-operator (curvature::hvp) against the tree's.
        let mut hd =
            noether::curvature::HessianOperator::new(&model, &data, Loss::Mse, Default::default()).unwrap();
        let mut ht = noether::curvature::NetHessian::new(&net, &data, Loss::Mse).unwrap();
        let v: Vec<f64> = (0..net.params.len()).map(|i| ((i * 7 % 13) as f64 - 6.0) / 6.0).collect();
        let (mut a, mut b) = (vec![0.0; v.len()], vec![0.0; v.len()]);
        hd.hvp_into(&v, &mut a).unwrap();
        ht.apply_into(&v, &mut b);
        assert!(rel_err(&b, &a) < 1e-12, "norm {norm}: HVP {}", rel_err(&b, &a));
    }
}

// ---------- reference cases ----------

struct Ref {
    net: Net<f64>,
    data: Dataset<f64>,
    loss: Loss,
    json: Value,
}

pub fn ref_dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn load_ref(name: &str) -> Ref {
    let d = ref_dir(name);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(d.join("case.json")).unwrap()).unwrap();
    let arch = NetArch::load(&d.join("arch.toml")).unwrap();
    let net = load_net::<f64>(&d.join("model.safetensors"), Some(&arch)).unwrap();
    let (data, shape) = load_dataset_shaped::<f64>(&d.join("data.safetensors")).unwrap();
    assert_eq!(shape, arch.input);
    let loss = Loss::parse(json["loss"].as_str().unwrap()).unwrap();
    Ref { net, data, loss, json }
}

pub const CNN_CASES: [&str; 3] = ["cnn_digits_ce", "cnn_residual_mse", "cnn_strided_leaky_ce"];

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}
fn vf(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(f).collect()
}
fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1e-12)
}

#[test]
fn cnn_reference_cases_loss_gradient_noise_and_symmetries() {
    for name in CNN_CASES {
        let r = load_ref(name);
        let j = &r.json;
        assert_eq!(r.net.arch.n_params() as u64, j["arch"]["n_params"].as_u64().unwrap());
        let names: Vec<&str> = r.net.arch.blocks.iter().map(|b| b.name.as_str()).collect();
        let want: Vec<&str> =
            j["arch"]["param_tensors"].as_array().unwrap().iter().map(|t| t[0].as_str().unwrap()).collect();
        assert_eq!(names, want, "{name}: state_dict order");
        let m = net_moments(&r.net, &r.data, r.loss, MomentPath::Auto).unwrap();
        assert!(close(m.loss, f(&j["loss_value"]), 1e-12), "{name}: loss {} vs {}", m.loss, j["loss_value"]);
        assert!(rel_err(&m.mean_grad, &vf(&j["grad"])) < 1e-10, "{name}: gradient");
        assert!(close(m.trace_sigma(), f(&j["trace_sigma"]), 1e-10), "{name}: Tr Σ");
        assert!(rel_err(&m.sigma_diag(), &vf(&j["sigma_diag"])) < 1e-10, "{name}: diag Σ");

        let syms = rescalings(&r.net.arch);
        let want = j["symmetries"].as_array().unwrap();
        assert_eq!(syms.len() as u64, j["n_rescaling_symmetries"].as_u64().unwrap(), "{name}: count");
        assert_eq!(syms.len(), want.len());
        let a = net_analysis(&m, &r.net.params, &syms, Time::Continuous);
        for (s, (rep, w)) in syms.iter().zip(a.symmetries.iter().zip(want)) {
            let id = format!("{name} {}:{:?}", s.module, s.unit);
            assert_eq!(s.module, w["module"].as_str().unwrap(), "{id}");
            assert_eq!(s.unit.unwrap() as u64, w["unit"].as_u64().unwrap(), "{id}");
            let strs = |v: &Value| -> Vec<String> {
                v.as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect()
            };
            assert_eq!(s.writers, strs(&w["writers"]), "{id} writers");
            assert_eq!(s.readers, strs(&w["readers"]), "{id} readers");
            assert_eq!(
                (rep.n_in as u64, rep.n_out as u64),
                (w["n_in"].as_u64().unwrap(), w["n_out"].as_u64().unwrap())
            );
            for (got, key) in [
                (rep.charge, "charge"),
                (rep.noise_in, "noise_in"),
                (rep.noise_out, "noise_out"),
                (rep.tr_a_sigma, "tr_a_sigma"),
                (rep.lambda_star.unwrap(), "lambda_star"),
            ] {
                assert!(close(got, f(&w[key]), 1e-9), "{id} {key}: {got} vs {}", w[key]);
            }
            assert_eq!(w["status"].as_str().unwrap(), "ok");
            assert_eq!(rep.status, Status::Ok);
        }
        // Joint equilibrium: λ, and Tr Σ recomputed at θ* by a new pass.
        let je = &j["joint_equilibrium"];
        assert!(a.joint.converged, "{name}: joint solve did not converge");
        for (k, (&got, want)) in a.joint.lambda.iter().zip(vf(&je["lambda"])).enumerate() {
            assert!((got - want).abs() < 1e-9 * (1.0 + want.abs()), "{name}: joint λ[{k}] {got} vs {want}");
        }
        let mut star = r.net.clone();
        apply_joint(&mut star.params, &syms, &a.joint.lambda);
        let ms = net_moments(&star, &r.data, r.loss, MomentPath::Auto).unwrap();
        let want_star = f(&je["trace_sigma_at_star"]);
        assert!(
            close(ms.trace_sigma(), want_star, 1e-9),
            "{name}: Tr Σ(θ*) {} vs {want_star}",
            ms.trace_sigma()
        );
        assert!(close(a.joint.trace_target_at_star, want_star, 1e-9), "{name}: predicted Tr Σ(θ*)");
        let (l0, l1) = (
            per_sample_losses(&r.net, &r.data, r.loss).unwrap(),
            per_sample_losses(&star, &r.data, r.loss).unwrap(),
        );
        let dl = l0.iter().zip(&l1).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(dl < 1e-12, "{name}: the joint move changed a per-sample loss by {dl:e}");
    }
}

#[test]
fn cnn_reference_cases_hessian() {
    for name in CNN_CASES {
        let r = load_ref(name);
        let mut op = NetHessian::new(&r.net, &r.data, r.loss).unwrap();
        let h = dense_matrix(&mut op);
        let p = h.nrows();
        let asym = (0..p)
            .flat_map(|i| (0..p).map(move |j| (i, j)))
            .map(|(i, j)| (h[(i, j)] - h[(j, i)]).abs())
            .fold(0.0, f64::max);
        assert!(asym < 1e-12, "{name}: asymmetry {asym:e}");
        let trace: f64 = (0..p).map(|i| h[(i, i)]).sum();
        let hj = &r.json["hessian"];
        assert!(close(trace, f(&hj["trace"]), 1e-9), "{name}: trace {trace} vs {}", hj["trace"]);
        let hs = Mat::from_fn(p, p, |i, j| 0.5 * (h[(i, j)] + h[(j, i)]));
        let mut ev: Vec<f64> = hs.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
        ev.sort_by(|a, b| b.partial_cmp(a).unwrap());
        for (k, want) in vf(&hj["top_eigenvalues"]).into_iter().enumerate() {
            assert!(close(ev[k], want, 1e-9), "{name}: λ_{k} {} vs {want}", ev[k]);
        }
        assert!(close(*ev.last().unwrap(), f(&hj["min_eigenvalue"]), 1e-9), "{name}: min eigenvalue");
    }
}

// ---------- symmetries ----------

fn max_loss_change(net: &Net<f64>, data: &Dataset<f64>, loss: Loss, s: &DiagSymmetry, lambda: f64) -> f64 {
    let l0 = per_sample_losses(net, data, loss).unwrap();
    let mut moved = net.clone();
    s.act_in_place(&mut moved.params, lambda);
    let l1 = per_sample_losses(&moved, data, loss).unwrap();
    l0.iter().zip(&l1).map(|(a, b)| (a - b).abs() / (1.0 + a.abs())).fold(0.0, f64::max)
}

#[test]
fn every_enumerated_generator_is_an_exact_symmetry() {
    let cases: Vec<(&str, Net<f64>, Loss)> = vec![
        ("kinds", net_for(KINDS_ARCH, 1), Loss::CrossEntropy),
        ("residual", net_for(RESIDUAL_ARCH, 1), Loss::Mse),
        ("mlp", net_for(MLP_ARCH, 1), Loss::Mse),
    ];
    for (name, net, loss) in cases {
        let data = data_for(&net.arch, 20, loss, 2);
        let syms = enumerate(&net.arch);
        assert!(!syms.is_empty(), "{name}");
        let (_, g) = loss_and_grad(&net, &data, loss).unwrap();
        for s in &syms {
            for lambda in [-1.0, 0.3, 2.0] {
                let d = max_loss_change(&net, &data, loss, s, lambda);
                assert!(d < 1e-12, "{name} {}: loss changed by {d:e} at λ = {lambda}", s.label());
            }
            // (Aθ)ᵀ∇L = 0 for every sample's gradient follows; check the mean, and each sample by `verify_net`.
            let ad = s.a_dot(&net.params, &g);
            assert!(ad.abs() < 1e-12, "{name} {}: (Aθ)ᵀ∇L = {ad:e}", s.label());
            let v = noether::stats::verify_net(&net, &data, loss, s, 0.3).unwrap();
            assert!(v.max_loss_change < 1e-12 * (1.0 + v.max_loss), "{name} {}: {v:?}", s.label());
            assert!(v.max_gradient_overlap < 1e-12 * v.overlap_scale, "{name} {}: {v:?}", s.label());
        }
    }
    // What the rule finds, by name.
    let kinds = enumerate(&NetArch::parse(KINDS_ARCH).unwrap());
    let labels: Vec<String> = kinds.iter().map(|s| s.label()).collect();
    // conv 0 → leaky → max pool → conv 3: 3 channels; conv 3 → tanh: none; linear 7 → rms_norm: scale of 7
    // (its input is behind tanh, but only the block feeding the normaliser scales); linear 10: output.
    assert_eq!(labels, ["rescale 0:0", "rescale 0:1", "rescale 0:2", "scale 7"]);
    let res = rescalings(&NetArch::parse(RESIDUAL_ARCH).unwrap());
    // The stream (written by 0, 2.body.2, 4.body.0; read by 2.body.0, 4.body.0, 6): 3; the body channels: 3.
    assert_eq!(res.len(), 6);
    assert_eq!(res[0].writers, ["0", "2.body.2", "4.body.0"]);
    assert_eq!(res[0].readers, ["2.body.0", "4.body.0", "6"]);
    assert_eq!(res[0].family, Family::Rescale);
}

#[test]
fn a_part_of_a_residual_class_is_not_enumerated_and_not_a_symmetry() {
    let net = net_for(RESIDUAL_ARCH, 4);
    let data = data_for(&net.arch, 20, Loss::Mse, 5);
    let syms = rescalings(&net.arch);
    // Channel 0 of conv `0` rescaled against its reader `2.body.0` alone, ignoring the skip.
    let stream = &syms[0];
    let w0 = net.arch.block("0.weight").unwrap().range.clone();
    let b0 = net.arch.block("0.bias").unwrap().range.clone();
    let r0 = net.arch.block("2.body.0.weight").unwrap().range.clone();
    let part = DiagSymmetry {
        entries: stream
            .entries
            .iter()
            .copied()
            .filter(|(k, _)| w0.contains(k) || b0.contains(k) || r0.contains(k))
            .collect(),
        ..stream.clone()
    };
    assert!(!syms.iter().any(|s| s.entries == part.entries), "the partial generator must not be enumerated");
    let d = max_loss_change(&net, &data, Loss::Mse, &part, 0.7);
    assert!(d > 1e-4, "the partial generator changed the losses by only {d:e}");
    let v = noether::stats::verify_net(&net, &data, Loss::Mse, &part, 0.7).unwrap();
    assert!(v.max_loss_change > 1e-4 * v.max_loss, "verify_net: {v:?}");
    assert!(v.max_gradient_overlap > 1e-3 * v.overlap_scale, "verify_net: (Aθ)ᵀg_n ≠ 0 expected: {v:?}");
}

#[test]
fn sgd_obeys_the_exact_noether_identity_for_every_rescaling_class() {
    for (name, text, loss) in
        [("conv", KINDS_ARCH, Loss::CrossEntropy), ("residual", RESIDUAL_ARCH, Loss::Mse)]
    {
        let mut net = net_for(text, 6);
        let data = data_for(&net.arch, 64, loss, 7);
        let syms = enumerate(&net.arch);
        let (s, eta) = (8, 0.05);
        let mut tape = Tape::new(&net.arch, s);
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let mut g = vec![0.0; net.params.len()];
        let mut worst: f64 = 0.0;
        for _step in 0..1000 {
            let rows: Vec<usize> = (0..s).map(|_| rng.random_range(0..data.len())).collect();
            tape.load(&data, Rows::Index(&rows)).unwrap();
            tape.forward(&net.params);
            tape.loss_grad(loss);
            g.iter_mut().for_each(|v| *v = 0.0);
            tape.backward(&net.params, Some((&mut g, 1.0 / s as f64)));
            let before: Vec<f64> = syms.iter().map(|s| s.charge(&net.params)).collect();
            net.params.iter_mut().zip(&g).for_each(|(p, gk)| *p -= eta * gk);
            for (sym, c0) in syms.iter().zip(&before) {
                let lhs = sym.charge(&net.params) - c0;
                let rhs = eta * eta * sym.quad(&g);
                // Round-off of evaluating C twice: 32ε·θᵀ|A|θ; of the step itself, 1e-9 of η²gᵀ|A|g.
                let scale: f64 = sym.entries.iter().map(|&(k, _)| net.params[k].powi(2)).sum::<f64>();
                let gscale: f64 = sym.entries.iter().map(|&(k, _)| g[k].powi(2)).sum::<f64>() * eta * eta;
                let err = (lhs - rhs).abs() / (32.0 * f64::EPSILON * scale + 1e-9 * gscale);
                worst = worst.max(err);
            }
        }
        assert!(
            worst <= 1.0,
            "{name}: the identity C_(t+1) − C_t = η²ĝᵀAĝ missed by {worst} of its tolerance"
        );
    }
}

// ---------- files ----------

#[test]
fn state_dicts_round_trip_with_the_architecture_in_the_metadata() {
    let r = load_ref("cnn_residual_mse");
    let dir = std::env::temp_dir().join(format!("noether-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("m.safetensors");
    save_net::<f64, f64>(&r.net, &p).unwrap();
    let back = load_net::<f64>(&p, None).unwrap();
    assert_eq!(back, r.net);
    // Strict loading: the same file against a different architecture names the tensors.
    let other = NetArch::parse(RESIDUAL_ARCH).unwrap();
    let e = load_net::<f64>(&p, Some(&other)).unwrap_err().to_string();
    assert!(e.contains("unexpected tensor(s)") || e.contains("shape mismatch"), "{e}");
    let e = load_net::<f64>(&ref_dir("cnn_digits_ce").join("model.safetensors"), Some(&r.net.arch))
        .unwrap_err()
        .to_string();
    assert!(e.contains("missing tensor(s)") && e.contains("2.body.0.weight"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_architectures_name_the_module() {
    let cases = [
        ("input = [3]\n[[layers]]\nkind = \"linear\"\nin_features = 4\nout_features = 2\n", "module `0` (linear)"),
        ("input = [1, 4, 4]\n[[layers]]\nkind = \"conv2d\"\nin_channels = 1\nout_channels = 2\nkernel_size = 5\n[[layers]]\nkind = \"flatten\"\n", "larger than its padded input"),
        ("input = [3]\n[[layers]]\nkind = \"lstm\"\n", "unknown module kind `lstm`"),
        ("input = [3]\n[[layers]]\nkind = \"linear\"\nin_features = 3\nout_features = 2\ndropout = 0.1\n", "unknown argument `dropout`"),
        ("input = [1, 4, 4]\n[[layers]]\nkind = \"conv2d\"\nin_channels = 1\nout_channels = 2\nkernel_size = 3\n", "needs a vector"),
        ("input = [2, 4, 4]\n[[layers]]\nkind = \"residual\"\n[[layers.body]]\nkind = \"conv2d\"\nin_channels = 2\nout_channels = 3\nkernel_size = 1\n[[layers]]\nkind = \"flatten\"\n", "must equal its input"),
    ];
    for (text, want) in cases {
        let e = NetArch::parse(text).unwrap_err().to_string();
        assert!(e.contains(want), "{e}\n  wanted: {want}");
    }
    let e = NetArch::parse("input = [3]\n[[layers]]\nkind = \"linear\"\nin_features = 4\nout_features = 2\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("[4]") && e.contains("[3]"), "both shapes: {e}");
}

// ---------- through the CLI ----------

#[test]
fn cnn_reference_cases_through_the_cli() {
    for name in CNN_CASES {
        let d = ref_dir(name);
        let (m, a, x) = (d.join("model.safetensors"), d.join("arch.toml"), d.join("data.safetensors"));
        let (m, a, x) = (m.to_str().unwrap(), a.to_str().unwrap(), x.to_str().unwrap());
        let j: Value = serde_json::from_str(&std::fs::read_to_string(d.join("case.json")).unwrap()).unwrap();
        let loss = j["loss"].as_str().unwrap();
        let want = j["symmetries"].as_array().unwrap();
        let s = run_json(&["symmetries", "--model", m, "--arch", a, "--json"]);
        let s = s["symmetries"].as_array().unwrap();
        assert_eq!(s.len(), want.len(), "{name}");
        let an = run_json(&["analyze", "--model", m, "--arch", a, "--data", x, "--loss", loss, "--json"]);
        assert!(close(f(&an["trace_sigma"]), f(&j["trace_sigma"]), 1e-10), "{name}: Tr Σ");
        for ((sym, neuron), w) in s.iter().zip(an["neurons"].as_array().unwrap()).zip(want) {
            for v in [sym, neuron] {
                assert_eq!(v["module"], w["module"], "{name}");
                assert_eq!(v["unit"], w["unit"], "{name}");
                assert!(close(f(&v["charge"]), f(&w["charge"]), 1e-9), "{name}: charge");
            }
            for key in ["noise_in", "noise_out", "tr_a_sigma", "lambda_star"] {
                assert!(
                    close(f(&neuron[key]), f(&w[key]), 1e-9),
                    "{name}: {key} {} vs {}",
                    neuron[key],
                    w[key]
                );
            }
            assert_eq!(neuron["status"], w["status"]);
        }
        let star = f(&an["joint_equilibrium"]["trace_target_at_star"]);
        assert!(close(star, f(&j["joint_equilibrium"]["trace_sigma_at_star"]), 1e-9), "{name}: Tr Σ(θ*)");
        let sh = run_json(&[
            "sharpness",
            "--model",
            m,
            "--arch",
            a,
            "--data",
            x,
            "--loss",
            loss,
            "--top",
            "3",
            "--bottom",
            "--json",
        ]);
        let hj = &j["hessian"];
        for (got, want) in vf(&sh["top_eigenvalues"]).iter().zip(vf(&hj["top_eigenvalues"])) {
            assert!(close(*got, want, 1e-6), "{name}: eigenvalue {got} vs {want}");
        }
        assert!(close(f(&sh["bottom_eigenvalue"]), f(&hj["min_eigenvalue"]), 1e-6), "{name}: min eigenvalue");
        assert!(close(f(&sh["trace"]), f(&hj["trace"]), 1e-9), "{name}: trace");
        // Teleport writes the same tensor names back, with the architecture, and keeps every loss.
        let dir = crate::cli::tmp(&format!("net-teleport-{name}"));
        let out = dir.join("moved.safetensors");
        let t = run_json(&[
            "teleport",
            "--model",
            m,
            "--arch",
            a,
            "--data",
            x,
            "--loss",
            loss,
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert!(f(&t["max_abs_loss_change_per_sample"]) < 1e-12);
        assert!(close(f(&t["trace_sigma_after"]), f(&j["joint_equilibrium"]["trace_sigma_at_star"]), 1e-9));
        let bytes = std::fs::read(&out).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
        names.sort();
        let mut want_names: Vec<String> = j["arch"]["param_tensors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t[0].as_str().unwrap().to_string())
            .collect();
        want_names.sort();
        assert_eq!(names, want_names);
        let again = run_json(&["symmetries", "--model", out.to_str().unwrap(), "--json"]);
        assert_eq!(again["symmetries"].as_array().unwrap().len(), want.len(), "metadata architecture");
    }
}

#[test]
fn bad_architecture_input_is_a_clear_error() {
    let dir = crate::cli::tmp("net-bad");
    let d = ref_dir("cnn_residual_mse");
    let (m, x) = (d.join("model.safetensors"), d.join("data.safetensors"));
    let (m, x) = (m.to_str().unwrap(), x.to_str().unwrap());
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_string()
    };
    let digits = ref_dir("cnn_digits_ce").join("arch.toml");
    let chain = write("chain.toml", "input = [2, 6, 6]\n[[layers]]\nkind = \"flatten\"\n[[layers]]\nkind = \"linear\"\nin_features = 70\nout_features = 3\n");
    let unknown = write("unknown.toml", "input = [2, 6, 6]\n[[layers]]\nkind = \"batch_norm\"\n");
    let digits_model = ref_dir("cnn_digits_ce").join("model.safetensors");
    let own_arch = d.join("arch.toml");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["symmetries", "--model", m, "--arch", &chain], "module `1` (linear)"),
        (vec!["symmetries", "--model", m, "--arch", &unknown], "unknown module kind `batch_norm`"),
        (vec!["symmetries", "--model", m, "--arch", digits.to_str().unwrap()], "missing tensor(s)"),
        (
            vec![
                "analyze",
                "--model",
                digits_model.to_str().unwrap(),
                "--arch",
                digits.to_str().unwrap(),
                "--data",
                x,
            ],
            "per-sample shape of data `x`",
        ),
        (
            vec!["symmetries", "--model", m, "--arch", own_arch.to_str().unwrap(), "--activation", "tanh"],
            "--activation does not apply",
        ),
        (vec!["symmetries", "--model", m], "give the architecture with --arch"),
    ];
    for (args, want) in cases {
        let o = crate::cli::noether(&args);
        let e = crate::cli::stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.contains(want), "{args:?}: {e}\n  wanted: {want}");
        assert!(!e.contains("panicked"), "{e}");
    }
}

#[test]
fn analyze_in_f32_agrees_with_f64_through_the_cli() {
    let d = ref_dir("cnn_digits_ce");
    let (m, a, x) = (d.join("model.safetensors"), d.join("arch.toml"), d.join("data.safetensors"));
    let base = [
        "analyze",
        "--model",
        m.to_str().unwrap(),
        "--arch",
        a.to_str().unwrap(),
        "--data",
        x.to_str().unwrap(),
        "--loss",
        "cross_entropy",
        "--json",
    ];
    let f64v = run_json(&base);
    let mut args = base.to_vec();
    args.extend(["--precision", "f32"]);
    let f32v = run_json(&args);
    let (t64, t32) = (f(&f64v["trace_sigma"]), f(&f32v["trace_sigma"]));
    assert!((t64 - t32).abs() < 1e-4 * t64 && t64 != t32, "Tr Σ f64 {t64} vs f32 {t32}");
}

//! Gauss–Newton products on module trees (`NetHessian::with_curvature(.., Curvature::GaussNewton)`, `Tape::ggn_vp`)
//! against independent computations: `G = (1/N) Σ_n J_nᵀ H_n J_n` assembled from per-sample Jacobians by central
//! differences of the outputs, symmetry and positive semi-definiteness, the dense engine's Gauss–Newton on the
//! same function, closed forms on linear nets (G = H where the residual term vanishes), f32 against f64, and
//! `noether sharpness --gauss-newton --arch` end to end.

use crate::cli::{json_f64 as f, rel, run_json};
use crate::net::{data_for, net_for, KINDS_ARCH, MLP_ARCH, RESIDUAL_ARCH};
use faer::Mat;
use noether::curvature::NetHessian;
use noether::curvature::{lanczos_eigenvalues, Curvature, HvpOptions, LanczosOptions, LinearOperator};
use noether::data::{Dataset, Targets};
use noether::net::{Net, NetArch, Rows, Tape};
use noether::Loss;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

const GN: Curvature = Curvature::GaussNewton;

/// The network outputs `f(x_n)`, `[N, d_out]` (one tape holding every sample).
fn outputs(net: &Net<f64>, data: &Dataset<f64>) -> Mat<f64> {
    let mut tape = Tape::new(&net.arch, data.len());
    tape.load(data, Rows::Range(0..data.len())).unwrap();
    tape.forward(&net.params);
    tape.output().to_owned()
}

/// The loss Hessian `∇²_f ℓ` at output `f`, written out: MSE (`ℓ = ½‖f − y‖²`) `I`; cross-entropy
/// `diag(p) − p pᵀ`, `p = softmax(f)`.
fn loss_hessian(loss: Loss, f: &[f64]) -> Mat<f64> {
    let d = f.len();
    match loss {
        Loss::Mse => Mat::identity(d, d),
        Loss::CrossEntropy => {
            let m = f.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = f.iter().map(|v| (v - m).exp()).sum();
            let p: Vec<f64> = f.iter().map(|v| (v - m).exp() / z).collect();
            Mat::from_fn(d, d, |a, b| if a == b { p[a] } else { 0.0 } - p[a] * p[b])
        }
    }
}

/// `G = (1/N) Σ_n J_nᵀ H_n J_n`, the columns of each `J_n = ∂f_n/∂θ` by central differences of the outputs
/// (step `h = 1e-6`: truncation O(h²), round-off O(ε/h)).
fn brute_gauss_newton(net: &Net<f64>, data: &Dataset<f64>, loss: Loss) -> Mat<f64> {
    let (p, n, d) = (net.params.len(), data.len(), net.arch.d_out());
    let h = 1e-6;
    let mut moved = net.clone();
    let mut jac = vec![Mat::<f64>::zeros(d, p); n];
    for i in 0..p {
        moved.params[i] = net.params[i] + h;
        let up = outputs(&moved, data);
        moved.params[i] = net.params[i] - h;
        let dn = outputs(&moved, data);
        moved.params[i] = net.params[i];
        for (s, j) in jac.iter_mut().enumerate() {
            for k in 0..d {
                j[(k, i)] = (up[(s, k)] - dn[(s, k)]) / (2.0 * h);
            }
        }
    }
    let f = outputs(net, data);
    let mut g = Mat::<f64>::zeros(p, p);
    for (s, j) in jac.iter().enumerate() {
        let fs: Vec<f64> = (0..d).map(|k| f[(s, k)]).collect();
        g += j.transpose() * loss_hessian(loss, &fs) * j * (1.0 / n as f64);
    }
    g
}

/// The operator's matrix, column i = `A e_i` (not symmetrised, so that an asymmetry would show).
fn columns(op: &mut impl LinearOperator) -> Mat<f64> {
    let p = op.dim();
    let mut m = Mat::<f64>::zeros(p, p);
    let (mut e, mut col) = (vec![0.0; p], vec![0.0; p]);
    for i in 0..p {
        e[i] = 1.0;
        op.apply_into(&e, &mut col);
        e[i] = 0.0;
        for (j, &c) in col.iter().enumerate() {
            m[(j, i)] = c;
        }
    }
    m
}

fn frob_rel(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    (a - b).norm_l2() / b.norm_l2().max(1e-300)
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
    num / b.iter().map(|y| y * y).sum::<f64>().sqrt().max(1e-300)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

fn random_vec(p: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    (0..p).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn apply(op: &mut impl LinearOperator, v: &[f64]) -> Vec<f64> {
    let mut out = vec![0.0; v.len()];
    op.apply_into(v, &mut out);
    out
}

fn sym_eigenvalues(m: &Mat<f64>) -> Vec<f64> {
    let s = Mat::from_fn(m.nrows(), m.ncols(), |i, j| 0.5 * (m[(i, j)] + m[(j, i)]));
    s.self_adjoint_eigenvalues(faer::Side::Lower).unwrap()
}

#[test]
fn tree_gauss_newton_matches_brute_force_jacobians() {
    // The conv net with every kind (strided conv, max/avg pool, rms_norm, tanh, leaky relu) and the residual conv
    // net, both losses: the exact products against Jᵀ H J from finite-difference Jacobians.
    for (name, text) in [("kinds", KINDS_ARCH), ("residual", RESIDUAL_ARCH), ("mlp", MLP_ARCH)] {
        for loss in [Loss::Mse, Loss::CrossEntropy] {
            let net = net_for(text, 21);
            let data = data_for(&net.arch, 6, loss, 22);
            let mut op = NetHessian::with_curvature(&net, &data, loss, GN).unwrap();
            let g = columns(&mut op);
            let want = brute_gauss_newton(&net, &data, loss);
            let e = frob_rel(&g, &want);
            eprintln!("{name} {loss:?}: P = {}, ‖G − JᵀHJ‖/‖JᵀHJ‖ = {e:.2e}", g.nrows());
            assert!(e < 1e-7, "{name} {loss:?}: Gauss–Newton vs brute-force Jacobians {e:e}");
            // PSD (the matrix, then random quadratic forms), where the Hessian of the same net is not: the
            // check could fail.
            let scale = sym_eigenvalues(&g).into_iter().fold(0.0f64, |m, l| m.max(l.abs()));
            let min_g = sym_eigenvalues(&g)[0];
            assert!(min_g >= -1e-12 * scale, "{name} {loss:?}: λ_min(G) = {min_g:e} (max |λ| {scale:e})");
            let h = columns(&mut NetHessian::new(&net, &data, loss).unwrap());
            let min_h = sym_eigenvalues(&h)[0];
            assert!(min_h < -1e-6 * scale, "{name} {loss:?}: the Hessian is PSD too ({min_h:e}): vacuous");
        }
    }
}

#[test]
fn tree_gauss_newton_is_symmetric_and_positive_semi_definite() {
    for (name, text) in [("kinds", KINDS_ARCH), ("residual", RESIDUAL_ARCH)] {
        for loss in [Loss::Mse, Loss::CrossEntropy] {
            let net = net_for(text, 31);
            // 600 samples: three chunks, split over lanes.
            let data = data_for(&net.arch, 600, loss, 32);
            let mut op = NetHessian::with_curvature(&net, &data, loss, GN).unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(33);
            let p = net.params.len();
            for _ in 0..5 {
                let (v, w) = (random_vec(p, &mut rng), random_vec(p, &mut rng));
                let (gv, gw) = (apply(&mut op, &v), apply(&mut op, &w));
                let (vgw, wgv) = (dot(&v, &gw), dot(&w, &gv));
                let tol = 1e-12 * norm(&v) * norm(&gw).max(norm(&gv));
                assert!((vgw - wgv).abs() <= tol, "{name} {loss:?}: vᵀGw {vgw} vs wᵀGv {wgv}");
                let vgv = dot(&v, &gv);
                assert!(vgv >= -1e-12 * norm(&v) * norm(&gv), "{name} {loss:?}: vᵀGv = {vgv:e}");
                assert!(vgv > 0.0, "{name} {loss:?}: vᵀGv = 0 for a random v");
            }
        }
    }
}

#[test]
fn tree_gauss_newton_equals_the_dense_engine_on_a_dense_chain() {
    use noether::model::Architecture;
    use noether::Activation;
    for (norm, loss) in
        [(false, Loss::Mse), (true, Loss::Mse), (false, Loss::CrossEntropy), (true, Loss::CrossEntropy)]
    {
        let arch = Architecture::new(
            &[4, 5, 3, 3],
            &[Activation::LeakyRelu { alpha: 0.1 }, Activation::Tanh, Activation::Identity],
            &[true, false, true],
            &[norm, false, false],
        )
        .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(41);
        let params = random_vec(arch.n_params(), &mut rng);
        let model = noether::Model::from_params(arch.clone(), params.clone()).unwrap();
        let net = Net::from_params(NetArch::from_dense(&arch).unwrap(), params).unwrap();
        let data = data_for(&net.arch, 300, loss, 42);
        let opts = HvpOptions { curvature: GN, chunk: 64 };
        let mut dense = noether::curvature::HessianOperator::new(&model, &data, loss, opts).unwrap();
        let mut tree = NetHessian::with_curvature(&net, &data, loss, GN).unwrap();
        let mut hess = NetHessian::new(&net, &data, loss).unwrap();
        for _ in 0..3 {
            let v = random_vec(net.params.len(), &mut rng);
            let (a, b) = (apply(&mut dense, &v), apply(&mut tree, &v));
            let e = rel_err(&b, &a);
            assert!(e < 1e-12, "norm {norm} {loss:?}: tree vs dense Gauss–Newton {e:e}");
            // Not the Hessian (the chain is curved): the two would not agree by accident.
            assert!(rel_err(&apply(&mut hess, &v), &a) > 1e-4, "norm {norm} {loss:?}");
        }
    }
}

/// A deep linear tree: linear, identity, a residual linear block, linear (no nonlinearity anywhere).
const LINEAR_ARCH: &str = r#"
input = [4]
[[layers]]
kind = "linear"
in_features = 4
out_features = 5
[[layers]]
kind = "identity"
[[layers]]
kind = "residual"
[[layers.body]]
kind = "linear"
in_features = 5
out_features = 5
bias = false
[[layers]]
kind = "linear"
in_features = 5
out_features = 3
"#;

#[test]
fn linear_nets_gauss_newton_equals_the_hessian_where_the_residual_term_vanishes() {
    // H = G + (1/N) Σ_n Σ_k r_nk ∇²f_nk for MSE (r = f − y). (a) An affine model f = Wx + b has ∇²f = 0, so
    // G = H for any targets, and G has the closed form G[(i,j),(k,l)] = δ_ik (1/N) Σ_n x̃_nj x̃_nl (x̃ = [x; 1],
    // W row-major [out, in], then b).
    let affine = "input = [4]\n[[layers]]\nkind = \"linear\"\nin_features = 4\nout_features = 3\n";
    let net = net_for(affine, 51);
    let data = data_for(&net.arch, 30, Loss::Mse, 52);
    let g = columns(&mut NetHessian::with_curvature(&net, &data, Loss::Mse, GN).unwrap());
    let h = columns(&mut NetHessian::new(&net, &data, Loss::Mse).unwrap());
    let (din, dout, n) = (4, 3, data.len());
    let idx = |i: usize, j: usize| if j < din { i * din + j } else { dout * din + i };
    let xt = |s: usize, j: usize| if j < din { data.x[(s, j)] } else { 1.0 };
    let mut want = Mat::<f64>::zeros(g.nrows(), g.ncols());
    for i in 0..dout {
        for j in 0..=din {
            for l in 0..=din {
                want[(idx(i, j), idx(i, l))] = (0..n).map(|s| xt(s, j) * xt(s, l)).sum::<f64>() / n as f64;
            }
        }
    }
    assert!(frob_rel(&g, &want) < 1e-13, "affine: G vs closed form {:e}", frob_rel(&g, &want));
    assert!(frob_rel(&h, &g) < 1e-13, "affine: H vs G {:e}", frob_rel(&h, &g));
    // (b) A deep linear tree with targets y = f(x) (every residual zero): H = G exactly; with other targets the
    // residual term is there and they differ (the check can fail).
    let net = net_for(LINEAR_ARCH, 53);
    let noisy = data_for(&net.arch, 40, Loss::Mse, 54);
    let exact = Dataset::new(noisy.x.clone(), Targets::Dense(outputs(&net, &noisy))).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(55);
    for (data, same) in [(&exact, true), (&noisy, false)] {
        let mut g = NetHessian::with_curvature(&net, data, Loss::Mse, GN).unwrap();
        let mut h = NetHessian::new(&net, data, Loss::Mse).unwrap();
        for _ in 0..3 {
            let v = random_vec(net.params.len(), &mut rng);
            let e = rel_err(&apply(&mut h, &v), &apply(&mut g, &v));
            if same {
                assert!(e < 1e-13, "deep linear, zero residuals: Hv vs Gv {e:e}");
            } else {
                assert!(e > 1e-3, "deep linear, nonzero residuals: Hv = Gv ({e:e})");
            }
        }
    }
}

/// The top Gauss–Newton eigenvalue by Lanczos (a fixed start vector).
fn top_gauss_newton<T: noether::Real>(net: &Net<T>, data: &Dataset<T>, loss: Loss) -> f64 {
    let mut op = NetHessian::with_curvature(net, data, loss, GN).unwrap();
    let opts = LanczosOptions { max_iter: 100, tol: 1e-6 };
    lanczos_eigenvalues(&mut op, 1, false, &opts, &mut ChaCha8Rng::seed_from_u64(63)).unwrap().top[0]
}

#[test]
fn tree_gauss_newton_in_f32_agrees_with_f64() {
    for loss in [Loss::Mse, Loss::CrossEntropy] {
        let net = net_for(RESIDUAL_ARCH, 61);
        let data = data_for(&net.arch, 300, loss, 62);
        let a = top_gauss_newton(&net, &data, loss);
        let b = top_gauss_newton(&net.cast::<f32>(), &data.cast::<f32>(), loss);
        let r = (a - b).abs() / a.abs();
        eprintln!("{loss:?}: Gauss–Newton λ_max f64 {a} f32 {b}: rel {r:.2e}");
        assert!(r < 1e-5 && a != b, "{loss:?}: f32 {b} vs f64 {a} ({r:e})");
    }
}

#[test]
fn sharpness_gauss_newton_on_a_tree_through_the_cli() {
    let d = crate::net::ref_dir("cnn_residual_mse");
    let s = |f: &str| d.join(f).to_str().unwrap().to_string();
    let (m, a, x) = (s("model.safetensors"), s("arch.toml"), s("data.safetensors"));
    let base = ["sharpness", "--model", &m, "--arch", &a, "--data", &x, "--loss", "mse", "--gauss-newton"];
    let mut got = Vec::new();
    for p in ["f64", "f32"] {
        let mut args = base.to_vec();
        args.extend(["--top", "2", "--bottom", "--trace", "exact", "--precision", p, "--json"]);
        let o = crate::cli::noether(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", crate::cli::stderr(&o));
        let j: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(j["curvature"], "gauss_newton");
        assert_eq!(j["precision"], p);
        assert!(j["lanczos"]["converged"].as_bool().unwrap(), "{p}: {}", j["lanczos"]);
        let (top, bottom, trace) = (f(&j["top_eigenvalues"][0]), f(&j["bottom_eigenvalue"]), f(&j["trace"]));
        assert!(top >= f(&j["top_eigenvalues"][1]) && top > 0.0, "{p}: {}", j["top_eigenvalues"]);
        // PSD: the smallest eigenvalue is zero up to round-off (P = 803 > the rank N·d_out = 96·2).
        assert!(bottom.abs() < 1e-6 * top, "{p}: λ_min(G) = {bottom} (λ_max {top})");
        assert!(trace >= top, "{p}: trace {trace} < λ_max {top}");
        for key in ["hvps", "samples", "n_params", "loss"] {
            assert!(j[key].is_number(), "{p}: no `{key}` in {j}");
        }
        got.push((top, trace));
    }
    let ((e64, t64), (e32, t32)) = (got[0], got[1]);
    eprintln!(
        "cnn_residual_mse Gauss–Newton: λ_max f64 {e64} f32 {e32} (rel {:.1e}), trace rel {:.1e}",
        rel(e32, e64),
        rel(t32, t64)
    );
    assert!(rel(e32, e64) < 1e-5 && e32 != e64, "λ_max f32 {e32} vs f64 {e64}");
    assert!(rel(t32, t64) < 1e-5 && t32 != t64, "trace f32 {t32} vs f64 {t64}");
    // Along an orbit: the loss stays, the Gauss–Newton sharpness moves; the text output names the matrix.
    let mut args = base.to_vec();
    args.extend(["--trace", "none", "--orbit", "-0.5:0.5:3", "--json"]);
    let j = run_json(&args);
    let pts = j["orbit"].as_array().unwrap();
    assert_eq!(pts.len(), 3);
    assert!(rel(f(&pts[1]["top_eigenvalue"]), e64) < 1e-6, "λ = 0 of the orbit vs at θ: {}", pts[1]);
    assert!(pts.iter().all(|p| rel(f(&p["loss"]), f(&pts[1]["loss"])) < 1e-12), "the loss moved: {pts:?}");
    assert!(rel(f(&pts[0]["top_eigenvalue"]), f(&pts[2]["top_eigenvalue"])) > 1e-3, "{pts:?}");
    let mut args = base.to_vec();
    args.extend(["--trace", "none"]);
    let o = crate::cli::noether(&args);
    assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    assert!(String::from_utf8(o.stdout).unwrap().contains("Gauss–Newton top eigenvalues"));
}

#[test]
fn sharpness_gauss_newton_of_a_dense_file_is_the_same_through_arch_and_in_f32() {
    // One dense-chain file, its weights read three ways: the dense engine, the module tree (`--arch` written by
    // NetArch::from_dense) and `--precision f32` (which runs the dense file on the tree engine).
    let d = crate::net::ref_dir("relu_mlp_ce");
    let s = |f: &str| d.join(f).to_str().unwrap().to_string();
    let (m, x) = (s("model.safetensors"), s("data.safetensors"));
    let model =
        noether::model::load_safetensors::<f64>(std::path::Path::new(&m), noether::Activation::Relu).unwrap();
    let dir = crate::cli::tmp("ggn-dense-arch");
    let arch = dir.join("arch.toml");
    std::fs::write(&arch, NetArch::from_dense(&model.arch).unwrap().to_toml()).unwrap();
    let arch = arch.to_str().unwrap();
    let common =
        ["--data", &x, "--loss", "cross_entropy", "--gauss-newton", "--top", "3", "--trace", "exact"];
    let run = |extra: &[&str]| {
        let mut args = vec!["sharpness", "--model", &m];
        args.extend(extra);
        args.extend(common);
        args.push("--json");
        run_json(&args)
    };
    let dense = run(&["--activation", "relu"]);
    let tree = run(&["--arch", arch]);
    let f32 = run(&["--activation", "relu", "--precision", "f32"]);
    assert_eq!(dense["curvature"], "gauss_newton");
    assert_eq!(tree["curvature"], "gauss_newton");
    assert_eq!(f32["precision"], "f32");
    let (t_d, t_t) = (f(&dense["trace"]), f(&tree["trace"]));
    assert!(rel(t_t, t_d) < 1e-12, "exact trace: tree {t_t} vs dense {t_d}");
    for k in 0..3 {
        let (a, b, c) =
            (f(&dense["top_eigenvalues"][k]), f(&tree["top_eigenvalues"][k]), f(&f32["top_eigenvalues"][k]));
        assert!(rel(b, a) < 1e-9, "λ_{k}: tree {b} vs dense {a}");
        assert!(rel(c, a) < 1e-5, "λ_{k}: f32 {c} vs f64 {a}");
    }
}

//! Double rotations of linear pairs on module trees (`symmetry::linear_pairs`): which pairs the graph gives
//! (and not across a residual add), invariance of every per-sample loss, negative controls, the pair moments
//! against the brute-force per-sample loop, the dense engine on the same MLP (library and CLI), and the exact
//! SGD identity `C_{t+1} − C_t = η²ĝᵀAĝ` for random symmetric directions.

use crate::cli::run_json;
use crate::net::{data_for, net_for};
use faer::Mat;
use noether::dynamics::{Method, TrainConfig, TrainData, Trainer};
use noether::equilibrium::net::{pair_grams, pair_moments, pair_reports};
use noether::equilibrium::{Status, Time};
use noether::net::{Net, NetArch, Rows, Tape};
use noether::stats::net::{net_moments_with, MomentPath};
use noether::stats::verify_net;
use noether::symmetry::double_rotation::PairLayout;
use noether::symmetry::linear_pairs::{pairs, LinearPair, PairGenerator};
use noether::symmetry::{random_symmetric, NetGenerator};
use noether::Loss;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

/// Pairs (0, 2) through an identity, (4, 5) directly adjacent and bias-free, (6.body.0, 6.body.2)
/// inside a residual body; `5` writes into the residual stream and `6.body.2` into its add: no pair there.
pub const PAIRS_ARCH: &str = r#"
input = [4]
[[layers]]
kind = "linear"
in_features = 4
out_features = 3
[[layers]]
kind = "identity"
[[layers]]
kind = "linear"
in_features = 3
out_features = 5
[[layers]]
kind = "tanh"
[[layers]]
kind = "linear"
in_features = 5
out_features = 3
bias = false
[[layers]]
kind = "linear"
in_features = 3
out_features = 3
bias = false
[[layers]]
kind = "residual"
[[layers.body]]
kind = "linear"
in_features = 3
out_features = 2
[[layers.body]]
kind = "identity"
[[layers.body]]
kind = "linear"
in_features = 2
out_features = 3
[[layers]]
kind = "leaky_relu"
[[layers]]
kind = "linear"
in_features = 3
out_features = 3
"#;

/// A pair's layout from module names (also for two linears that are not a pair).
fn layout_of(arch: &NetArch, first: &str, second: &str) -> PairLayout {
    let b = |n: &str| arch.block(n).unwrap();
    let (w1, w2) = (b(&format!("{first}.weight")), b(&format!("{second}.weight")));
    PairLayout {
        w_in: w1.range.start,
        d_in: w1.shape[1],
        d: w1.shape[0],
        bias: arch.block(&format!("{first}.bias")).map(|b| b.range.start),
        w_out: w2.range.start,
        d_out: w2.shape[0],
    }
}

fn direction(d: usize, seed: u64) -> Mat<f64> {
    let b = random_symmetric(d, &mut ChaCha8Rng::seed_from_u64(seed));
    // Scaled to ‖B‖_F = 1, so that e^{2B} stays O(e²).
    let n = b.norm_l2();
    Mat::from_fn(d, d, |i, j| b[(i, j)] / n)
}

#[test]
fn pairs_come_from_the_graph_and_not_across_a_residual_add() {
    let arch = NetArch::parse(PAIRS_ARCH).unwrap();
    let found: Vec<(String, String)> = pairs(&arch).into_iter().map(|p| (p.module, p.reader)).collect();
    let want = [("0", "2"), ("4", "5"), ("6.body.0", "6.body.2")];
    assert_eq!(found, want.map(|(a, b)| (a.to_string(), b.to_string())));
    for p in pairs(&arch) {
        assert_eq!(p.layout, layout_of(&arch, &p.module, &p.reader), "{}", p.label());
    }
    // The dense chain's pairs: identity-joined layers, the same as the dense enumeration.
    let dense = noether::model::Architecture::new(
        &[3, 4, 4, 2, 3],
        &[
            noether::Activation::Identity,
            noether::Activation::Relu,
            noether::Activation::Identity,
            noether::Activation::Identity,
        ],
        &[true, true, false, true],
        &[false, false, false, false],
    )
    .unwrap();
    let tree = NetArch::from_dense(&dense).unwrap();
    let got: Vec<PairLayout> = pairs(&tree).iter().map(|p| p.layout).collect();
    let dense_pairs: Vec<PairLayout> = noether::symmetry::enumerate(&dense)
        .into_iter()
        .filter_map(|s| match s {
            noether::symmetry::Symmetry::DoubleRotation { layer } => {
                Some(PairLayout::of_dense(&dense, layer))
            }
            _ => None,
        })
        .collect();
    assert_eq!(got, dense_pairs);
    assert_eq!(got.len(), 2);
}

/// A generator that rotates the incoming block by `b` and the outgoing block by `b_out` (a symmetry only when
/// they are equal).
struct Mismatched {
    layout: PairLayout,
    b: Mat<f64>,
    b_out: Mat<f64>,
}

impl NetGenerator for Mismatched {
    fn act_in_place<T: noether::Real>(&self, theta: &mut [T], lambda: f64) {
        let (q, _) = noether::symmetry::double_rotation::exp_pair(&self.b, lambda);
        let (_, qi) = noether::symmetry::double_rotation::exp_pair(&self.b_out, lambda);
        self.layout.apply_q_in_place(&q, &qi, theta);
    }
    fn a_times(&self, v: &[f64]) -> Vec<f64> {
        let inc = PairGenerator { layout: self.layout, b: self.b.clone() }.a_times(v);
        let out = PairGenerator { layout: self.layout, b: self.b_out.clone() }.a_times(v);
        // Incoming entries from the first, outgoing ones from the second.
        let w_out = self.layout.w_out..self.layout.w_out + self.layout.d_out * self.layout.d;
        (0..v.len()).map(|k| if w_out.contains(&k) { out[k] } else { inc[k] }).collect()
    }
}

#[test]
fn every_pair_generator_is_an_exact_symmetry_and_the_controls_are_not() {
    for loss in [Loss::Mse, Loss::CrossEntropy] {
        let net = net_for(PAIRS_ARCH, 1);
        let data = data_for(&net.arch, 30, loss, 2);
        for (i, p) in pairs(&net.arch).iter().enumerate() {
            let g = p.generator(direction(p.layout.d, 10 + i as u64));
            for lambda in [-1.0, 0.3, 2.0] {
                let v = verify_net(&net, &data, loss, &g, lambda).unwrap();
                assert!(v.max_loss_change < 1e-12 * (1.0 + v.max_loss), "{} λ = {lambda}: {v:?}", p.label());
                assert!(
                    v.max_gradient_overlap < 1e-12 * v.overlap_scale,
                    "{} λ = {lambda}: {v:?}",
                    p.label()
                );
                assert!(v.overlap_scale > 1e-3, "{}: the overlap scale is degenerate: {v:?}", p.label());
            }
            // The same rotation with a perturbed outgoing direction is not a symmetry.
            let mut b_out = g.b.clone();
            b_out[(0, 1)] += 0.3;
            b_out[(1, 0)] += 0.3;
            let bad = Mismatched { layout: p.layout, b: g.b.clone(), b_out };
            let v = verify_net(&net, &data, loss, &bad, 0.3).unwrap();
            assert!(
                v.max_loss_change > 1e-4 * v.max_loss,
                "{}: the perturbed generator kept the loss: {v:?}",
                p.label()
            );
            assert!(v.max_gradient_overlap > 1e-3 * v.overlap_scale, "{}: {v:?}", p.label());
        }
        // Across the residual stream: `5` → `6.body.0` (the skip also carries 5's output) and `6.body.2` → `8`
        // (through the add and a relu) are not enumerated, and rotating them changes the losses.
        for (a, b) in [("5", "6.body.0"), ("6.body.2", "8")] {
            let layout = layout_of(&net.arch, a, b);
            assert!(pairs(&net.arch).iter().all(|p| p.layout != layout));
            let g = PairGenerator { layout, b: direction(layout.d, 3) };
            let v = verify_net(&net, &data, loss, &g, 0.3).unwrap();
            assert!(v.max_loss_change > 1e-4 * v.max_loss, "({a}, {b}) is no symmetry: {v:?}");
        }
    }
}

/// Per-sample gradients by one-sample passes (the brute-force loop).
pub fn brute_grads(net: &Net<f64>, data: &noether::Dataset<f64>, loss: Loss) -> Vec<Vec<f64>> {
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

fn mat_err(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    (a - b).norm_l2() / b.norm_l2().max(1e-300)
}

#[test]
fn pair_moments_match_the_brute_force_loop_on_every_path() {
    for loss in [Loss::Mse, Loss::CrossEntropy] {
        let net = net_for(PAIRS_ARCH, 3);
        let data = data_for(&net.arch, 300, loss, 4); // two chunks
        let gs = brute_grads(&net, &data, loss);
        let n = gs.len() as f64;
        let p = net.params.len();
        let mean: Vec<f64> = (0..p).map(|k| gs.iter().map(|g| g[k]).sum::<f64>() / n).collect();
        let prs = pairs(&net.arch);
        let mut full = 0;
        for path in [MomentPath::Generic, MomentPath::QuadraticForm, MomentPath::Auto] {
            let m = net_moments_with(&net, &data, loss, path, &pair_grams(&prs)).unwrap();
            let reports = pair_reports(&m, &net.params, &prs, Time::Continuous).unwrap();
            for (i, (pr, r)) in prs.iter().zip(&reports).enumerate() {
                let l = pr.layout;
                // M_in = E[G₁G₁ᵀ] − Ḡ₁Ḡ₁ᵀ and M_out = E[G₂ᵀG₂] − Ḡ₂ᵀḠ₂ from explicit per-sample blocks.
                let (mut mi, mut mo) = (Mat::<f64>::zeros(l.d, l.d), Mat::<f64>::zeros(l.d, l.d));
                for g in &gs {
                    let (a, b) = (l.incoming_block(g), l.outgoing_block(g));
                    mi += &a * a.transpose();
                    mo += b.transpose() * &b;
                }
                let (ga, gb) = (l.incoming_block(&mean), l.outgoing_block(&mean));
                let mi = Mat::from_fn(l.d, l.d, |i, j| mi[(i, j)] / n) - &ga * ga.transpose();
                let mo = Mat::from_fn(l.d, l.d, |i, j| mo[(i, j)] / n) - gb.transpose() * &gb;
                let what = format!("{loss:?} {path:?} {}", pr.label());
                assert!(mat_err(&r.m_in, &mi) <= 1e-12, "{what}: M_in {}", mat_err(&r.m_in, &mi));
                assert!(mat_err(&r.m_out, &mo) <= 1e-12, "{what}: M_out {}", mat_err(&r.m_out, &mo));
                // Tr[AΣ] = E[g_nᵀAg_n] − ḡᵀAḡ for B = I (the report) and a random B (from the moments).
                for (b, got) in [
                    (Mat::identity(l.d, l.d), r.tr_a_sigma),
                    (direction(l.d, 20 + i as u64), {
                        let b = direction(l.d, 20 + i as u64);
                        noether::symmetry::double_rotation::frobenius_dot(&b, &(&r.m_in - &r.m_out))
                    }),
                ] {
                    let gen = pr.generator(b);
                    let brute = gs.iter().map(|g| gen.quad(g)).sum::<f64>() / n - gen.quad(&mean);
                    let scale = gs
                        .iter()
                        .map(|g| PairGenerator { b: Mat::identity(l.d, l.d), ..gen.clone() }.quad(g).abs())
                        .sum::<f64>()
                        / n;
                    assert!(
                        (got - brute).abs() <= 1e-12 * scale.max(brute.abs()),
                        "{what}: Tr[AΣ] {got} vs {brute}"
                    );
                }
                // The matrix charge from the named tensors.
                let w = |name: &str| {
                    let blk = net.arch.block(name).unwrap();
                    Mat::from_fn(blk.shape[0], blk.shape[1], |i, j| {
                        net.params[blk.range.start + i * blk.shape[1] + j]
                    })
                };
                let (w1, w2) = (w(&format!("{}.weight", pr.module)), w(&format!("{}.weight", pr.reader)));
                let mut c = &w1 * w1.transpose() - w2.transpose() * &w2;
                if let Some(bb) = net.arch.block(&format!("{}.bias", pr.module)) {
                    let b1 = &net.params[bb.range.clone()];
                    c += Mat::from_fn(l.d, l.d, |i, j| b1[i] * b1[j]);
                }
                assert!(mat_err(&r.matrix_charge, &c) <= 1e-14, "{what}: matrix charge");
                // Status and rank as the solve gives them on the brute-force moments; where unique, P M_out P = M_in.
                let zero = noether::equilibrium::NOISE_RTOL
                    * gs.iter().map(|g| g.iter().map(|v| v * v).sum::<f64>()).sum::<f64>()
                    / n;
                let bal = noether::equilibrium::double_rotation::balancing_matrix(&mi, &mo, zero).unwrap();
                assert_eq!((r.status, r.rank), (bal.status, bal.rank), "{what}");
                if r.status == Status::Ok {
                    let pm = r.p.as_ref().unwrap();
                    assert!(mat_err(&(pm * &r.m_out * pm), &r.m_in) < 1e-9, "{what}: P M_out P ≠ M_in");
                    full += usize::from(r.rank == l.d);
                }
            }
            // The uncentred moments are the Gram sums themselves.
            let (ui, _) = pair_moments(&m, &prs[0], false).unwrap();
            assert!(ui.norm_l2() > 0.0);
        }
        assert!(full >= 3, "{loss:?}: no full-rank unique equilibrium was checked ({full})");
    }
}

/// The dense engine's `PairReport` and the tree's on the same MLP and θ (pairs (0, 1) and (2, 3)).
#[test]
fn pair_reports_agree_with_the_dense_engine() {
    use noether::Activation::{Identity, Relu};
    let dense = noether::model::Architecture::new(
        &[3, 4, 4, 2, 3],
        &[Identity, Relu, Identity, Identity],
        &[true, true, false, true],
        &[false, false, false, false],
    )
    .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let params: Vec<f64> =
        (0..dense.n_params()).map(|_| rand::Rng::random_range(&mut rng, -1.0..1.0)).collect();
    let model = noether::Model::from_params(dense.clone(), params.clone()).unwrap();
    let net = Net::from_params(NetArch::from_dense(&dense).unwrap(), params).unwrap();
    let data = data_for(&net.arch, 80, Loss::Mse, 6);
    for time in [Time::Continuous, Time::discrete(4, Default::default(), 80).unwrap()] {
        let opts = noether::equilibrium::AnalyzeOptions { time, ..Default::default() };
        let d = noether::equilibrium::analysis(&model, &data, Loss::Mse, &opts).unwrap();
        let prs = pairs(&net.arch);
        let m = net_moments_with(&net, &data, Loss::Mse, MomentPath::Auto, &pair_grams(&prs)).unwrap();
        let t = pair_reports(&m, &net.params, &prs, time).unwrap();
        assert_eq!(t.len(), d.pairs.len());
        assert_eq!(t.len(), 2);
        for (tr, dr) in t.iter().zip(&d.pairs) {
            assert_eq!(tr.module, format!("layers.{}", dr.layer));
            let rows = |m: &Mat<f64>| -> Vec<Vec<f64>> {
                (0..m.nrows()).map(|i| (0..m.ncols()).map(|j| m[(i, j)]).collect()).collect()
            };
            let close = |a: &[Vec<f64>], b: &[Vec<f64>]| {
                let fa: Vec<f64> = a.concat();
                let fb: Vec<f64> = b.concat();
                let num: f64 = fa.iter().zip(&fb).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
                num / fb.iter().map(|y| y * y).sum::<f64>().sqrt().max(1e-300)
            };
            for (what, a, b, tol) in [
                ("M_in", rows(&tr.m_in), dr.m_in.clone(), 1e-12),
                ("M_out", rows(&tr.m_out), dr.m_out.clone(), 1e-12),
                ("matrix charge", rows(&tr.matrix_charge), dr.matrix_charge.clone(), 1e-14),
                ("P", rows(tr.p.as_ref().unwrap()), dr.p.clone().unwrap(), 1e-10),
            ] {
                let e = close(&a, &b);
                assert!(e <= tol, "{} {time:?} {what}: {e:e}", tr.module);
            }
            assert!((tr.tr_a_sigma - dr.tr_a_sigma).abs() <= 1e-12 * dr.tr_a_sigma.abs().max(1e-300));
            assert_eq!((tr.status, tr.rank), (dr.status, dr.rank));
        }
    }
}

fn flat(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect()
}

/// The deep linear reference case (a dense `dims` file) through the dense path and the same weights through
/// `--arch`: `symmetries` and `analyze` give the same pairs with the same numbers.
#[test]
fn the_cli_gives_the_dense_pairs_on_an_architecture_file() {
    let d = crate::net::ref_dir("deep_linear_mse");
    let s = |f: &str| d.join(f).to_str().unwrap().to_string();
    let (m, x) = (s("model.safetensors"), s("data.safetensors"));
    let model =
        noether::model::load_safetensors::<f64>(std::path::Path::new(&m), noether::Activation::Identity)
            .unwrap();
    let dir = crate::cli::tmp("net-pairs-cli");
    let a = dir.join("arch.toml");
    std::fs::write(&a, NetArch::from_dense(&model.arch).unwrap().to_toml()).unwrap();
    let a = a.to_str().unwrap();
    let dense = run_json(&[
        "analyze",
        "--model",
        &m,
        "--activation",
        "identity",
        "--data",
        &x,
        "--loss",
        "mse",
        "--json",
    ]);
    let tree = run_json(&["analyze", "--model", &m, "--arch", a, "--data", &x, "--loss", "mse", "--json"]);
    let (dp, tp) = (dense["pairs"].as_array().unwrap(), tree["pairs"].as_array().unwrap());
    assert!(!dp.is_empty());
    assert_eq!(dp.len(), tp.len());
    for (d, t) in dp.iter().zip(tp) {
        assert_eq!(t["module"], format!("layers.{}", d["layer"]));
        for key in ["M_in", "M_out", "P", "matrix_charge"] {
            let (a, b) = (flat(&t[key]), flat(&d[key]));
            let num: f64 = a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f64>().sqrt();
            let den: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
            assert!(num <= 1e-10 * den, "{key}: {num} vs {den}");
        }
        let (ta, da) = (t["tr_a_sigma"].as_f64().unwrap(), d["tr_a_sigma"].as_f64().unwrap());
        assert!((ta - da).abs() <= 1e-12 * da.abs().max(1e-300), "Tr[AΣ] {ta} vs {da}");
        assert_eq!((&t["status"], &t["rank"]), (&d["status"], &d["rank"]));
    }
    // `symmetries`: the same matrix charges, one double_rotation entry per pair.
    let sd = run_json(&["symmetries", "--model", &m, "--activation", "identity", "--json"]);
    let st = run_json(&["symmetries", "--model", &m, "--arch", a, "--json"]);
    let rot = |v: &Value| -> Vec<Value> {
        v["symmetries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["family"] == "double_rotation")
            .cloned()
            .collect()
    };
    let (rd, rt) = (rot(&sd), rot(&st));
    assert_eq!(rd.len(), dp.len());
    assert_eq!(rd.len(), rt.len());
    for (d, t) in rd.iter().zip(&rt) {
        let (a, b) = (flat(&t["charge"]), flat(&d["charge"]));
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() <= 1e-14 * (1.0 + y.abs())));
        assert!(t["unit"].is_null() && t["charge_fro"].as_f64().unwrap() > 0.0);
    }
    // The exports carry the pair rows with the dense rows' fields.
    let csv = dir.join("a.csv");
    let o = crate::cli::noether(&[
        "analyze",
        "--model",
        &m,
        "--arch",
        a,
        "--data",
        &x,
        "--loss",
        "mse",
        "--export-csv",
        csv.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", crate::cli::stderr(&o));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(
        text.lines().next().unwrap().contains("charge_fro") && text.contains("double_rotation,layers.0,"),
        "{text}"
    );
}

/// SGD on a tree with pairs: at each of 500 steps, for a random symmetric direction of every pair and for B = I
/// (the charge `Tr[W₁W₁ᵀ + b₁b₁ᵀ − W₂ᵀW₂]`, the trace of the matrix charge the training observers log),
/// `|ΔC − η²ĝᵀAĝ| ≤ 64 ε · ‖B‖_F Σ_{k ∈ pair}(θ_k² + η²ĝ_k²)` (|⟨B, M⟩| ≤ ‖B‖_F‖M‖_F bounds both C and its
/// round-off by that scale times a few ε).
#[test]
fn sgd_obeys_the_exact_noether_identity_for_every_pair_direction() {
    let arch = NetArch::parse(PAIRS_ARCH).unwrap();
    let prs: Vec<LinearPair> = pairs(&arch);
    let gens: Vec<PairGenerator> = prs
        .iter()
        .enumerate()
        .map(|(i, p)| p.generator(direction(p.layout.d, 40 + i as u64)))
        .chain(prs.iter().map(|p| p.identity_generator()))
        .collect();
    assert_eq!(gens.len(), 6);
    let data = crate::train_net::class_data(40, 4, 3, 1);
    let net = Net::<f64>::init(arch.clone(), 2);
    let lr = 0.05;
    let opt = Method::Sgd { batch_size: 4, sampling: Default::default() };
    let config = TrainConfig::new(arch, opt, lr, 500).with_loss(Loss::CrossEntropy);
    let mut tr =
        Trainer::<f64, Net<f64>>::new(net, TrainData::Finite(data), &config, ChaCha8Rng::seed_from_u64(3))
            .unwrap();
    tr.record_direction(true);
    let entries = |l: &PairLayout| -> Vec<usize> {
        let mut v: Vec<usize> = (l.w_in..l.w_in + l.d * l.d_in).collect();
        v.extend(l.bias.map(|b| b..b + l.d).into_iter().flatten());
        v.extend(l.w_out..l.w_out + l.d_out * l.d);
        v
    };
    let (mut worst, mut largest) = (0.0f64, 0.0f64);
    for _ in 0..500 {
        let before: Vec<f64> = gens.iter().map(|g| g.charge(&tr.model.params)).collect();
        tr.step().unwrap();
        let g = tr.last_direction().unwrap();
        let theta = &tr.model.params;
        for (gen, c0) in gens.iter().zip(&before) {
            let lhs = gen.charge(theta) - c0;
            let rhs = lr * lr * gen.quad(g);
            let scale = gen.b.norm_l2()
                * entries(&gen.layout)
                    .iter()
                    .map(|&k| theta[k] * theta[k] + lr * lr * g[k] * g[k])
                    .sum::<f64>();
            worst = worst.max((lhs - rhs).abs() / (f64::EPSILON * scale));
            largest = largest.max(rhs.abs() / (f64::EPSILON * scale));
        }
    }
    eprintln!("pairs: worst |ΔC − η²ĝᵀAĝ| = {worst:.2} ε of the scale (largest step {largest:.3e} ε)");
    assert!(largest > 1e8, "the charges barely move ({largest} ε); the test would not see a failure");
    assert!(worst <= 64.0, "worst |ΔC − η²ĝᵀAĝ| = {worst} ε of the scale");
}

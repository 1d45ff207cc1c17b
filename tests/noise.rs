//! Noise geometry: per-sample statistics against the brute-force per-sample loop, the reference fixtures,
//! the transformation law of Σ, equilibria and teleport.

use crate::reference;
use faer::linalg::solvers::Solve;
use faer::Mat;
use noether::data::{Anisotropy, Sampling, Targets, Teacher, TeacherMap};
use noether::equilibrium::teleport::{teleport, TeleportOptions, TeleportTarget};
use noether::equilibrium::{
    analysis, generator_equilibrium, noether_flow, AnalyzeOptions, Equilibrium, Status, Time,
};
use noether::stats::{moments, per_sample_grad_sq_norms, per_sample_quad, MomentOptions, Moments};
use noether::symmetry::{enumerate, random_symmetric, Generator};
use noether::testutil::{covariance_centred, per_sample_grads, random_case, rel};
use noether::{Activation, Architecture, Dataset, Loss, Model};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const ALL: MomentOptions = MomentOptions { elementwise: true, pair_grams: true, chunk: 5 };

/// Brute-force statistics from explicit per-sample gradients.
struct Brute {
    grads: Vec<Vec<f64>>,
    mean: Vec<f64>,
    n: f64,
}

impl Brute {
    fn new(model: &Model<f64>, data: &Dataset<f64>, loss: Loss) -> Self {
        let grads = per_sample_grads(model, data, loss).unwrap();
        let n = grads.len() as f64;
        let p = grads[0].len();
        let mean = (0..p).map(|k| grads.iter().map(|g| g[k]).sum::<f64>() / n).collect();
        Self { grads, mean, n }
    }
    /// Σ over indices `set` of the diagonal of Σ (centred) or M_1 (uncentred).
    fn diag_sum(&self, set: impl IntoIterator<Item = usize>, centred: bool) -> f64 {
        let set: Vec<usize> = set.into_iter().collect();
        let u: f64 =
            self.grads.iter().map(|g| set.iter().map(|&k| g[k] * g[k]).sum::<f64>()).sum::<f64>() / self.n;
        u - if centred { set.iter().map(|&k| self.mean[k] * self.mean[k]).sum::<f64>() } else { 0.0 }
    }
    /// E[g_nᵀAg_n] − (centred) ḡᵀAḡ.
    fn quad_mean(&self, arch: &Architecture, g: &Generator, centred: bool) -> f64 {
        let u: f64 = self.grads.iter().map(|x| g.quad(arch, x)).sum::<f64>() / self.n;
        u - if centred { g.quad(arch, &self.mean) } else { 0.0 }
    }
}

/// `|a − b| ≤ tol · scale` with the scale of the reference quantity (inf-norm of its family), as in faer.
fn close(a: f64, b: f64, scale: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * scale.max(b.abs()).max(1e-300)
}

fn settings() -> Vec<(Vec<Activation>, bool, Vec<bool>, Loss)> {
    let mut v = Vec::new();
    for act in Activation::all() {
        for loss in [Loss::Mse, Loss::CrossEntropy] {
            for bias in [false, true] {
                v.push((vec![act, act, Activation::Identity], bias, vec![false; 3], loss));
            }
        }
    }
    // Mixed chains: identity pair after relu, normalised blocks (scale symmetry).
    v.push((
        vec![Activation::Relu, Activation::Identity, Activation::Identity],
        true,
        vec![false; 3],
        Loss::Mse,
    ));
    v.push((
        vec![Activation::Identity, Activation::Relu, Activation::Identity],
        false,
        vec![true, false, false],
        Loss::CrossEntropy,
    ));
    v
}

#[test]
fn every_statistic_matches_the_brute_force_per_sample_loop() {
    let tol = 1e-12;
    for (seed, (acts, bias, norm, loss)) in settings().into_iter().enumerate() {
        let (model, data) = random_case(&[4, 5, 3, 3], &acts, bias, &norm, loss, 11, 100 + seed as u64);
        let arch = &model.arch;
        let m = moments(&model, &data, loss, &ALL).unwrap();
        let b = Brute::new(&model, &data, loss);
        let ctx = format!("{acts:?} bias={bias} norm={norm:?} {loss:?}");
        let sigma = covariance_centred(&b.grads);
        let tr: f64 = (0..sigma.nrows()).map(|k| sigma[(k, k)]).sum();
        let scale = b.diag_sum(0..arch.n_params(), false);
        assert!(close(m.trace_sigma(), tr, scale, tol), "{ctx}: Tr Σ {} vs {tr}", m.trace_sigma());
        // per-sample squared norms per layer
        let sq = per_sample_grad_sq_norms(&model, &data, loss, 4).unwrap();
        for (n, g) in b.grads.iter().enumerate() {
            for l in 0..arch.n_layers() {
                let want: f64 = arch.layer_range(l).map(|k| g[k] * g[k]).sum();
                assert!(close(sq[(n, l)], want, want, tol), "{ctx}: ‖g_n‖² n={n} l={l}");
            }
        }
        for l in 0..arch.n_layers() {
            let ly = arch.layers[l];
            for centred in [true, false] {
                // per-row (incoming) and per-column (outgoing) noise of every unit, every layer
                for j in 0..ly.d_out {
                    let want = b.diag_sum(noether::symmetry::rescale::incoming(arch, l, j), centred);
                    let got = m.layers[l].rows[j] - if centred { m.grad_row_sq(l, j) } else { 0.0 };
                    assert!(
                        close(got, want, scale, tol),
                        "{ctx}: row l={l} j={j} centred={centred}: {got} vs {want}"
                    );
                }
                for i in 0..ly.d_in {
                    let set = (0..ly.d_out).map(|j| arch.weight_index(l, j, i));
                    let want = b.diag_sum(set, centred);
                    let got = m.layers[l].cols[i] - if centred { m.grad_col_sq(l, i) } else { 0.0 };
                    assert!(close(got, want, scale, tol), "{ctx}: col l={l} i={i}: {got} vs {want}");
                }
                if l + 1 < arch.n_layers() {
                    for j in 0..ly.d_out {
                        let want = b.diag_sum(noether::symmetry::rescale::outgoing(arch, l, j), centred);
                        assert!(
                            close(m.noise_out(l, j, centred), want, scale, tol),
                            "{ctx}: noise_out l={l} j={j}"
                        );
                        let want = b.diag_sum(noether::symmetry::rescale::incoming(arch, l, j), centred);
                        assert!(
                            close(m.noise_in(l, j, centred), want, scale, tol),
                            "{ctx}: noise_in l={l} j={j}"
                        );
                    }
                }
                if m.layers[l].elementwise.is_some() {
                    let d = m.weight_diag(l, centred).unwrap();
                    for j in 0..ly.d_out {
                        for i in 0..ly.d_in {
                            let want = b.diag_sum(std::iter::once(arch.weight_index(l, j, i)), centred);
                            assert!(close(d[(j, i)], want, scale, tol), "{ctx}: element ({l},{j},{i})");
                        }
                    }
                }
                if noether::stats::linear_pair(arch, l) {
                    let (mi, mo) = (m.m_in(l, centred).unwrap(), m.m_out(l, centred).unwrap());
                    let inc: Vec<Vec<usize>> = (0..ly.d_out)
                        .map(|j| noether::symmetry::rescale::incoming(arch, l, j).collect())
                        .collect();
                    let out: Vec<Vec<usize>> = (0..ly.d_out)
                        .map(|j| noether::symmetry::rescale::outgoing(arch, l, j).collect())
                        .collect();
                    let mom = |a: &[usize], c: &[usize]| {
                        let u: f64 = b
                            .grads
                            .iter()
                            .map(|g| a.iter().zip(c).map(|(&p, &q)| g[p] * g[q]).sum::<f64>())
                            .sum::<f64>()
                            / b.n;
                        u - if centred {
                            a.iter().zip(c).map(|(&p, &q)| b.mean[p] * b.mean[q]).sum::<f64>()
                        } else {
                            0.0
                        }
                    };
                    for p in 0..ly.d_out {
                        for q in 0..ly.d_out {
                            assert!(
                                close(mi[(p, q)], mom(&inc[p], &inc[q]), scale, tol),
                                "{ctx}: M_in({p},{q})"
                            );
                            assert!(
                                close(mo[(p, q)], mom(&out[p], &out[q]), scale, tol),
                                "{ctx}: M_out({p},{q})"
                            );
                        }
                    }
                }
            }
        }
        // g_nᵀAg_n and Tr[AΣ] of every generator of the model (random B for double rotations)
        let mut rng = ChaCha8Rng::seed_from_u64(seed as u64);
        for s in enumerate(arch) {
            let mut g = s.generator(arch);
            if let Generator::DoubleRotation { b: bm, .. } = &mut g {
                *bm = random_symmetric(bm.nrows(), &mut rng);
            }
            let ps = per_sample_quad(&model, &data, loss, &g, 4).unwrap();
            let qscale = b.grads.iter().map(|x| g.quad(arch, x).abs()).fold(0.0, f64::max).max(scale);
            for (n, x) in b.grads.iter().enumerate() {
                assert!(close(ps[n], g.quad(arch, x), qscale, tol), "{ctx}: {} g_nᵀAg_n n={n}", g.label());
            }
            for centred in [true, false] {
                let want = b.quad_mean(arch, &g, centred);
                let got = m.generator_trace(&g, centred).unwrap();
                assert!(close(got, want, qscale, tol), "{ctx}: {} Tr[AΣ] {got} vs {want}", g.label());
            }
        }
    }
}

#[test]
fn statistics_in_two_lanes_agree_with_one_stream() {
    // Large enough (≥ 5e7 flops) for the pass to split into two lanes when the chunk is small; one chunk of all
    // N samples is one lane. The sums differ only in their order.
    let (model, data) = random_case(
        &[60, 160, 160, 10],
        &[Activation::Relu, Activation::Relu, Activation::Identity],
        true,
        &[false; 3],
        Loss::CrossEntropy,
        400,
        3,
    );
    assert!(model.arch.train_flops(400) >= noether::linalg::PAR_MIN_FLOPS);
    let one = moments(&model, &data, Loss::CrossEntropy, &MomentOptions { chunk: 400, ..ALL }).unwrap();
    let two = moments(&model, &data, Loss::CrossEntropy, &MomentOptions { chunk: 32, ..ALL }).unwrap();
    assert!(rel(two.loss, one.loss, 1e-300) < 1e-13);
    assert!(rel(two.trace_sigma(), one.trace_sigma(), 1e-300) < 1e-12);
    for l in 0..3 {
        let (a, b) = (&two.layers[l], &one.layers[l]);
        for (x, y) in
            a.rows.iter().chain(&a.cols).chain(&a.bias).zip(b.rows.iter().chain(&b.cols).chain(&b.bias))
        {
            assert!((x - y).abs() <= 1e-12 * one.trace_second_moment(), "layer {l}: {x} vs {y}");
        }
        if let (Some(x), Some(y)) = (&a.elementwise, &b.elementwise) {
            assert!((x - y).norm_max() <= 1e-12 * y.norm_max(), "layer {l}: element moments");
        }
    }
    assert!(one.layers[1].elementwise.is_some(), "the element moments must be part of the comparison");
    // The plain pass splits the same way.
    let (l1, g1) = model.loss_and_grad(&data, Loss::CrossEntropy, 400).unwrap();
    let (l2, g2) = model.loss_and_grad(&data, Loss::CrossEntropy, 32).unwrap();
    assert!(rel(l2, l1, 1e-300) < 1e-13);
    let gmax = g1.iter().map(|v| v.abs()).fold(0.0, f64::max);
    assert!(g1.iter().zip(&g2).all(|(a, b)| (a - b).abs() <= 1e-12 * gmax), "mean gradient");
    assert!((l1 - one.loss).abs() < 1e-12 * l1 && rel(g1[0], one.grad[0], gmax) < 1e-12);
}

#[test]
fn f32_statistics_agree_with_f64() {
    let (model, data) = random_case(
        &[6, 8, 5, 3],
        &[Activation::Relu, Activation::Relu, Activation::Identity],
        true,
        &[false; 3],
        Loss::Mse,
        50,
        7,
    );
    let m64 = moments(&model, &data, Loss::Mse, &ALL).unwrap();
    let m32 = moments(&model.cast::<f32>(), &data.cast::<f32>(), Loss::Mse, &ALL).unwrap();
    assert!(rel(m32.trace_sigma(), m64.trace_sigma(), 1e-300) < 1e-4);
    for j in 0..8 {
        assert!(rel(m32.noise_in(0, j, true), m64.noise_in(0, j, true), m64.trace_sigma()) < 1e-4);
    }
}

fn arr(v: &serde_json::Value) -> Vec<Vec<f64>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect())
        .collect()
}

#[test]
fn analysis_matches_every_reference_case() {
    let tol = 1e-9;
    for case in reference::all() {
        let a = analysis(&case.model, &case.data, case.loss, &AnalyzeOptions::default()).unwrap();
        let j = &case.json;
        let name = &case.name;
        assert!(rel(a.loss, j["loss_value"].as_f64().unwrap(), 1e-300) < tol, "{name}: loss");
        assert!(rel(a.trace_sigma, j["trace_sigma"].as_f64().unwrap(), 1e-300) < tol, "{name}: Tr Σ");
        let want = j["neurons"].as_array().unwrap();
        assert_eq!(a.neurons.len(), want.len(), "{name}: neuron count");
        let scale = want
            .iter()
            .map(|w| w["noise_in"].as_f64().unwrap().max(w["noise_out"].as_f64().unwrap()))
            .fold(0.0, f64::max);
        for (got, w) in a.neurons.iter().zip(want) {
            let ctx = format!("{name} l={} j={}", got.layer, got.unit);
            assert_eq!(got.layer as u64, w["layer"].as_u64().unwrap());
            assert_eq!(got.unit as u64, w["unit"].as_u64().unwrap());
            for (g, key) in [
                (got.charge, "charge"),
                (got.noise_in, "noise_in"),
                (got.noise_out, "noise_out"),
                (got.noise_in_uncentered, "noise_in_uncentered"),
                (got.noise_out_uncentered, "noise_out_uncentered"),
                (got.tr_a_sigma, "tr_a_sigma"),
            ] {
                let wv = w[key].as_f64().unwrap();
                let s = if key == "charge" { wv.abs() } else { scale };
                assert!(close(g, wv, s, tol), "{ctx}: {key} {g} vs {wv}");
            }
            let st = serde_json::to_value(got.status).unwrap();
            assert_eq!(st, w["status"], "{ctx}: status");
            match (got.lambda_star, w["lambda_star"].as_f64()) {
                (Some(g), Some(wv)) => assert!(close(g, wv, 1.0, tol), "{ctx}: λ* {g} vs {wv}"),
                (None, None) => {}
                (g, wv) => panic!("{ctx}: λ* {g:?} vs {wv:?}"),
            }
        }
        if let Some(je) = j.get("joint_equilibrium").filter(|v| !v.is_null()) {
            let got = a.joint_equilibrium.as_ref().expect("joint equilibrium");
            let wl: Vec<f64> = je["lambda"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            for (k, (g, w)) in got.lambda.iter().zip(&wl).enumerate() {
                assert!(close(*g, *w, 1.0, tol), "{name}: joint λ[{k}] {g} vs {w}");
            }
            let wt = je["trace_sigma_at_star"].as_f64().unwrap();
            assert!(
                rel(got.trace_sigma_at_star, wt, 1e-300) < tol,
                "{name}: Tr Σ* {} vs {wt}",
                got.trace_sigma_at_star
            );
            assert!(got.max_rel_residual < 1e-12, "{name}: joint residual {}", got.max_rel_residual);
        }
        if let Some(pairs) = j.get("double_rotation").and_then(|v| v.as_array()) {
            assert_eq!(a.pairs.len(), pairs.len(), "{name}: pairs");
            for (got, w) in a.pairs.iter().zip(pairs) {
                assert_eq!(got.layer as u64, w["layer"].as_u64().unwrap());
                for (g, key) in [
                    (&got.m_in, "M_in"),
                    (&got.m_out, "M_out"),
                    (got.p.as_ref().unwrap(), "P"),
                    (&got.matrix_charge, "matrix_charge"),
                ] {
                    let wm = arr(&w[key]);
                    let s = wm.iter().flatten().map(|v| v.abs()).fold(0.0, f64::max);
                    for (r, (gr, wr)) in g.iter().zip(&wm).enumerate() {
                        for (c, (gv, wv)) in gr.iter().zip(wr).enumerate() {
                            assert!(
                                close(*gv, *wv, s, tol),
                                "{name} pair {}: {key}[{r}][{c}] {gv} vs {wv}",
                                got.layer
                            );
                        }
                    }
                }
            }
        }
    }
}

/// e^{λA} as a dense P × P matrix (columns e^{λA}e_k).
fn exp_matrix(arch: &Architecture, g: &Generator, lambda: f64) -> Mat<f64> {
    let p = arch.n_params();
    let mut m = Mat::zeros(p, p);
    for k in 0..p {
        let mut e = vec![0.0; p];
        e[k] = 1.0;
        g.act_in_place(arch, &mut e, lambda);
        for i in 0..p {
            m[(i, k)] = e[i];
        }
    }
    m
}

#[test]
fn covariance_transforms_as_e_minus_lambda_a() {
    let cases: Vec<(Vec<Activation>, Vec<bool>)> = vec![
        (vec![Activation::Relu, Activation::LeakyRelu { alpha: 0.2 }, Activation::Identity], vec![false; 3]),
        (vec![Activation::Identity, Activation::Identity, Activation::Identity], vec![false; 3]),
        (vec![Activation::Tanh, Activation::Relu, Activation::Identity], vec![true, false, false]),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (seed, (acts, norm)) in cases.into_iter().enumerate() {
        for loss in [Loss::Mse, Loss::CrossEntropy] {
            let (model, data) = random_case(&[3, 4, 3, 3], &acts, true, &norm, loss, 9, 40 + seed as u64);
            let arch = &model.arch;
            let sigma = covariance_centred(&per_sample_grads(&model, &data, loss).unwrap());
            let smax = (0..sigma.nrows()).map(|k| sigma[(k, k)]).fold(0.0, f64::max);
            for s in enumerate(arch) {
                let mut g = s.generator(arch);
                if let Generator::DoubleRotation { b, .. } = &mut g {
                    *b = random_symmetric(b.nrows(), &mut rng);
                }
                let lambda = 0.3;
                let mut moved = model.clone();
                g.act_in_place(arch, &mut moved.params, lambda);
                let s1 = covariance_centred(&per_sample_grads(&moved, &data, loss).unwrap());
                let e = exp_matrix(arch, &g, -lambda);
                let want = &e * &sigma * &e;
                let wmax = (0..want.nrows())
                    .flat_map(|i| (0..want.ncols()).map(move |j| (i, j)))
                    .map(|(i, j)| want[(i, j)].abs())
                    .fold(smax, f64::max);
                for i in 0..want.nrows() {
                    for j in 0..want.ncols() {
                        assert!(
                            (s1[(i, j)] - want[(i, j)]).abs() <= 1e-11 * wmax,
                            "{} {loss:?}: Σ'({i},{j}) {} vs {}",
                            g.label(),
                            s1[(i, j)],
                            want[(i, j)]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn single_generator_equilibrium_zeroes_its_flow() {
    // G(λ*) = 0 for rescale (closed form) and for random double-rotation directions (root finder), both clocks.
    let (model, data) = random_case(
        &[4, 5, 4, 3],
        &[Activation::Identity, Activation::Relu, Activation::Identity],
        true,
        &[false; 3],
        Loss::Mse,
        30,
        5,
    );
    let m = moments(&model, &data, Loss::Mse, &ALL).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    for time in [Time::Continuous, Time::discrete(4, Sampling::WithoutReplacement, 30).unwrap()] {
        let mut gens =
            vec![Generator::Rescale { layer: 0, unit: 2 }, Generator::Rescale { layer: 1, unit: 1 }];
        for _ in 0..3 {
            gens.push(Generator::DoubleRotation { layer: 0, b: random_symmetric(5, &mut rng) });
        }
        for g in gens {
            let Equilibrium::Unique { lambda } = generator_equilibrium(&m, &g, time).unwrap() else {
                panic!("{}", g.label())
            };
            let mut moved = model.clone();
            g.act_in_place(&model.arch, &mut moved.params, lambda);
            let m1 = moments(&moved, &data, Loss::Mse, &ALL).unwrap();
            let (c, u) = (m1.generator_trace(&g, true).unwrap(), m1.generator_trace(&g, false).unwrap());
            let gv = time.target(c, u);
            let scale = time.target(m1.trace_sigma(), m1.trace_second_moment());
            assert!(gv.abs() < 1e-11 * scale, "{} {time:?}: G(λ*) = {gv}", g.label());
        }
    }
}

#[test]
fn flow_predictions_follow_the_formulas() {
    let (model, data) = random_case(
        &[4, 5, 3],
        &[Activation::Relu, Activation::Identity],
        true,
        &[false; 2],
        Loss::CrossEntropy,
        20,
        8,
    );
    let m = moments(&model, &data, Loss::CrossEntropy, &ALL).unwrap();
    let b = Brute::new(&model, &data, Loss::CrossEntropy);
    let g = Generator::Rescale { layer: 0, unit: 1 };
    let (lr, s) = (0.05, 4);
    let f = noether_flow(&m, &g, lr, s, Sampling::WithoutReplacement).unwrap();
    let tr = b.quad_mean(&model.arch, &g, true);
    let gq = g.quad(&model.arch, &b.mean);
    let fpf = (20.0 - 4.0) / 19.0;
    assert!(rel(f.dc_dt_per_time, lr / 4.0 * tr, 1e-12) < 1e-12);
    assert!(rel(f.drift_per_step, lr * lr * (fpf * tr / 4.0 + gq), 1e-12) < 1e-12);
    // The per-step drift is the exact mean of η²ĝᵀAĝ over all batches of size S drawn without replacement:
    // check by enumerating all C(20, 2) batches for S = 2.
    let f2 = noether_flow(&m, &g, lr, 2, Sampling::WithoutReplacement).unwrap();
    let mut acc = 0.0;
    let mut cnt = 0.0;
    for i in 0..20 {
        for j in i + 1..20 {
            let gh: Vec<f64> = (0..b.mean.len()).map(|k| 0.5 * (b.grads[i][k] + b.grads[j][k])).collect();
            acc += lr * lr * g.quad(&model.arch, &gh);
            cnt += 1.0;
        }
    }
    assert!(rel(f2.drift_per_step, acc / cnt, 1e-15) < 1e-11, "{} vs {}", f2.drift_per_step, acc / cnt);
    assert!(noether_flow(&m, &g, 0.0, 2, Sampling::WithReplacement).is_err());
}

fn tr_a_sigma_rel(m: &Moments, arch: &Architecture, rng: &mut ChaCha8Rng) -> f64 {
    // max over every rescale unit and random double-rotation directions of |Tr[AΣ]| / (in + out noise)
    let mut worst: f64 = 0.0;
    for s in enumerate(arch) {
        let mut g = s.generator(arch);
        let (pos, neg) = match &mut g {
            Generator::Rescale { layer, unit } => {
                (m.noise_in(*layer, *unit, true), m.noise_out(*layer, *unit, true))
            }
            Generator::DoubleRotation { layer, b } => {
                *b = random_symmetric(b.nrows(), rng);
                let n = |x: &Mat<f64>| noether::stats::frobenius(x, x).sqrt();
                (n(b) * n(&m.m_in(*layer, true).unwrap()), n(b) * n(&m.m_out(*layer, true).unwrap()))
            }
            Generator::Scale { .. } => continue,
        };
        if pos + neg > 0.0 {
            worst = worst.max(m.generator_trace(&g, true).unwrap().abs() / (pos + neg));
        }
    }
    worst
}

#[test]
fn teleport_reaches_the_noise_equilibrium_without_changing_the_function() {
    let cases: Vec<(Vec<usize>, Vec<Activation>, bool, Loss)> = vec![
        (vec![5, 7, 6, 3], vec![Activation::Relu, Activation::Relu, Activation::Identity], true, Loss::Mse),
        (
            vec![5, 6, 4],
            vec![Activation::LeakyRelu { alpha: 0.1 }, Activation::Identity],
            true,
            Loss::CrossEntropy,
        ),
        (vec![6, 3, 3, 5], vec![Activation::Identity; 3], false, Loss::Mse),
        (
            vec![5, 6, 4, 4],
            vec![Activation::Relu, Activation::Identity, Activation::Identity],
            true,
            Loss::Mse,
        ),
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (seed, (dims, acts, bias, loss)) in cases.into_iter().enumerate() {
        let (model, data) =
            random_case(&dims, &acts, bias, &vec![false; acts.len()], loss, 40, 70 + seed as u64);
        let (moved, rep) = teleport(&model, &data, loss, &TeleportOptions::default()).unwrap();
        let ctx = format!("{dims:?} {acts:?}");
        assert!(rep.converged, "{ctx}: {rep:?}");
        let m1 = moments(&moved, &data, loss, &ALL).unwrap();
        let r = tr_a_sigma_rel(&m1, &moved.arch, &mut rng);
        assert!(r < 1e-10, "{ctx}: max relative Tr[A_jΣ] at θ* = {r:e}");
        assert!(
            rep.max_output_change <= 1e-10 * rep.max_output_abs,
            "{ctx}: output change {}",
            rep.max_output_change
        );
        assert!(rel(rep.loss_after, rep.loss_before, 1e-300) < 1e-12, "{ctx}: loss moved");
        assert!(
            rep.trace_sigma_after < rep.trace_sigma_before,
            "{ctx}: Tr Σ {} → {}",
            rep.trace_sigma_before,
            rep.trace_sigma_after
        );
        assert!(rel(rep.trace_sigma_after, m1.trace_sigma(), 1e-300) < 1e-12);
        // The noise target never has more noise than the joint-rescaling optimum (rotations include rescalings).
        let a = analysis(&model, &data, loss, &AnalyzeOptions::default()).unwrap();
        let js = a.joint_equilibrium.unwrap().trace_sigma_at_star;
        assert!(
            rep.trace_sigma_after <= js * (1.0 + 1e-12),
            "{ctx}: {} > joint rescaling {js}",
            rep.trace_sigma_after
        );
        // Norm target: ‖θ‖² goes down, the function does not change, norms balance.
        let (nm, nrep) = teleport(
            &model,
            &data,
            loss,
            &TeleportOptions { target: TeleportTarget::Norm, ..Default::default() },
        )
        .unwrap();
        assert!(nrep.converged && nrep.param_norm_sq_after < nrep.param_norm_sq_before, "{ctx}: {nrep:?}");
        assert!(nrep.max_output_change <= 1e-10 * nrep.max_output_abs);
        for l in 0..nm.arch.n_layers() - 1 {
            if noether::stats::rescalable(&nm.arch, l) {
                for j in 0..nm.arch.layers[l].d_out {
                    let c = Generator::Rescale { layer: l, unit: j }.charge(&nm.arch, &nm.params);
                    assert!(
                        c.abs() < 1e-10 * nrep.param_norm_sq_after,
                        "{ctx}: norm charge l={l} j={j} = {c}"
                    );
                }
            }
        }
    }
}

#[test]
fn discrete_target_balances_the_minibatch_second_moment() {
    let (model, data) = random_case(
        &[5, 7, 6, 3],
        &[Activation::Relu, Activation::Relu, Activation::Identity],
        true,
        &[false; 3],
        Loss::Mse,
        40,
        3,
    );
    let time = Time::discrete(8, Sampling::WithReplacement, 40).unwrap();
    let (moved, rep) = teleport(
        &model,
        &data,
        Loss::Mse,
        &TeleportOptions { target: TeleportTarget::Noise(time), ..Default::default() },
    )
    .unwrap();
    assert!(rep.converged);
    let m = moments(&moved, &data, Loss::Mse, &ALL).unwrap();
    for l in 0..2 {
        for j in 0..moved.arch.layers[l].d_out {
            let a = time.target(m.noise_in(l, j, true), m.noise_in(l, j, false));
            let b = time.target(m.noise_out(l, j, true), m.noise_out(l, j, false));
            assert!((a - b).abs() <= 1e-10 * (a + b), "l={l} j={j}: {a} vs {b}");
        }
    }
}

/// Two-layer linear net f = UWx at its exact least-squares minimum on teacher data y = Vx + ε (Σ_x, Σ_ε
/// anisotropic). After teleport, `Tr[Σ_ε]·WΣ_xWᵀ = Tr[Σ_x]·UᵀΣ_εU` holds for the population covariances up to
/// the sampling error of the fourth moments in M_in, M_out, which is O(1/√N).
fn teacher_residual(n: usize, seed: u64) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = 3;
    let teacher = Teacher {
        sigma_x: Anisotropy::condition(4.0),
        sigma_eps: Anisotropy { phi: 3.0, scale: 0.5, variances: None },
        map: TeacherMap::Random,
    };
    let ts = teacher.build(d, d, &mut rng).unwrap();
    let data: Dataset<f64> = ts.sample(n, &mut rng);
    let Targets::Dense(y) = &data.y else { unreachable!() };
    // least squares: V̂ = Yᵀ X (XᵀX)⁻¹
    let x = &data.x;
    let xtx = x.transpose() * x;
    let vt = xtx.partial_piv_lu().solve(x.transpose() * y);
    let vhat = vt.transpose().to_owned();
    let arch = Architecture::new(&[d, d, d], &[Activation::Identity; 2], &[false; 2], &[false; 2]).unwrap();
    let w = random_symmetric(d, &mut rng) + Mat::<f64>::identity(d, d) * 3.0;
    // W symmetric: U = V̂W⁻¹ ⇔ Uᵀ = W⁻¹V̂ᵀ
    let u = w.partial_piv_lu().solve(vhat.transpose().to_owned()).transpose().to_owned();
    let mut model = Model::zeros(arch);
    for i in 0..d {
        for j in 0..d {
            let (a, b) = (model.arch.weight_index(0, i, j), model.arch.weight_index(1, i, j));
            model.params[a] = w[(i, j)];
            model.params[b] = u[(i, j)];
        }
    }
    let (moved, rep) = teleport(&model, &data, Loss::Mse, &TeleportOptions::default()).unwrap();
    assert!(rep.converged);
    let w1 = noether::symmetry::double_rotation::incoming_block(&moved.arch, 0, &moved.params);
    let u1 = noether::symmetry::double_rotation::outgoing_block(&moved.arch, 0, &moved.params);
    let (sx, se) = (ts.sigma_x(), ts.sigma_eps());
    let tr = |m: &Mat<f64>| (0..m.nrows()).map(|i| m[(i, i)]).sum::<f64>();
    let lhs = &w1 * &sx * w1.transpose() * tr(&se);
    let rhs = u1.transpose() * &se * &u1 * tr(&sx);
    let n2 = |m: &Mat<f64>| noether::stats::frobenius(m, m).sqrt();
    n2(&(&lhs - &rhs)) / n2(&(&lhs + &rhs))
}

#[test]
fn two_layer_linear_teleport_satisfies_the_population_balance() {
    let mut res = Vec::new();
    for n in [1_000, 16_000, 256_000] {
        let r: f64 = (0..3).map(|s| teacher_residual(n, s)).sum::<f64>() / 3.0;
        res.push((n, r));
    }
    eprintln!("relative residual of Tr[Σ_ε]WΣ_xWᵀ = Tr[Σ_x]UᵀΣ_εU vs N: {res:?}");
    // O(1/√N): each 16× increase of N divides the residual by ~4; require at least 2.5× and an absolute
    // level of 3/√N (the fourth-moment sampling error of Gaussian data is a few times 1/√N).
    for w in res.windows(2) {
        assert!(w[1].1 < w[0].1 / 2.5, "residual does not shrink like 1/√N: {res:?}");
    }
    for &(n, r) in &res {
        assert!(r < 3.0 / (n as f64).sqrt(), "N = {n}: residual {r} above 3/√N");
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let (model, data) = random_case(
        &[4, 5, 3],
        &[Activation::Tanh, Activation::Identity],
        true,
        &[false; 2],
        Loss::Mse,
        10,
        1,
    );
    // no symmetry of the family
    assert!(matches!(
        teleport(&model, &data, Loss::Mse, &TeleportOptions::default()),
        Err(noether::Error::NoSymmetry(_))
    ));
    let m = moments(&model, &data, Loss::Mse, &ALL).unwrap();
    assert!(m.generator_trace(&Generator::Rescale { layer: 0, unit: 0 }, true).is_err());
    assert!(m.m_in(0, true).is_err());
    // data width mismatch
    let (_, wide) = random_case(
        &[6, 5, 3],
        &[Activation::Tanh, Activation::Identity],
        true,
        &[false; 2],
        Loss::Mse,
        10,
        1,
    );
    assert!(matches!(moments(&model, &wide, Loss::Mse, &ALL), Err(noether::Error::ShapeMismatch { .. })));
    assert!(analysis(&model, &wide, Loss::Mse, &AnalyzeOptions::default()).is_err());
    // labels out of range
    let (cm, mut cd) = random_case(
        &[4, 5, 3],
        &[Activation::Relu, Activation::Identity],
        true,
        &[false; 2],
        Loss::CrossEntropy,
        10,
        1,
    );
    if let Targets::Classes(c) = &mut cd.y {
        c[3] = 7;
    }
    assert!(matches!(moments(&cm, &cd, Loss::CrossEntropy, &ALL), Err(noether::Error::Data(_))));
    assert!(teleport(&cm, &cd, Loss::CrossEntropy, &TeleportOptions::default()).is_err());
    // wrong loss for the targets
    assert!(moments(&model, &data, Loss::CrossEntropy, &ALL).is_err());
    // non-finite statistics: huge weights overflow the gradients
    let mut big = model.clone();
    big.params.iter_mut().for_each(|v| *v *= 1e200);
    assert!(matches!(moments(&big, &data, Loss::Mse, &ALL), Err(noether::Error::NonFinite { .. })));
    let mut nan = model.clone();
    nan.params[0] = f64::NAN;
    assert!(matches!(moments(&nan, &data, Loss::Mse, &ALL), Err(noether::Error::NonFinite { .. })));
    // zero batch size for the discrete clock
    assert!(Time::discrete(0, Sampling::WithReplacement, 10).is_err());
    assert!(Time::discrete(11, Sampling::WithoutReplacement, 10).is_err());
}

#[test]
fn bottleneck_pair_has_one_sided_directions_and_is_balanced_on_the_rest() {
    // Hidden width 4 > output width 3: δ_1 = W_2ᵀδ_2 spans 3 directions, so M_in has rank 3 and the direction
    // killed by W_2 carries outgoing noise only (λ* = −∞ there). Teleport balances the other 3 directions.
    let (model, data) = random_case(
        &[5, 6, 4, 3],
        &[Activation::Relu, Activation::Identity, Activation::Identity],
        true,
        &[false; 3],
        Loss::Mse,
        40,
        73,
    );
    let a = analysis(&model, &data, Loss::Mse, &AnalyzeOptions::default()).unwrap();
    assert_eq!((a.pairs[0].status, a.pairs[0].rank), (Status::NoEquilibrium, 3));
    let (moved, rep) = teleport(&model, &data, Loss::Mse, &TeleportOptions::default()).unwrap();
    assert!(rep.converged, "{rep:?}");
    assert!(rep.notes.iter().any(|n| n.contains("one side only")), "{:?}", rep.notes);
    assert!(rep.max_output_change <= 1e-10 * rep.max_output_abs);
    assert!(rep.trace_sigma_after < rep.trace_sigma_before);
    let m1 = moments(&moved, &data, Loss::Mse, &ALL).unwrap();
    let (mi, mo) = (m1.m_in(1, true).unwrap(), m1.m_out(1, true).unwrap());
    let uv = noether::equilibrium::double_rotation::two_sided_basis(&mi, &mo);
    let d = uv.transpose() * (&mi - &mo) * &uv;
    let s = uv.transpose() * (&mi + &mo) * &uv;
    assert!(noether::stats::frobenius(&d, &d).sqrt() < 1e-10 * noether::stats::frobenius(&s, &s).sqrt());
}

#[test]
fn dead_and_one_sided_units_get_a_status() {
    // Unit 1 of layer 0: zero incoming row and bias → relu output 0 everywhere → dead (no noise either side).
    // Unit 2: zero outgoing column → δ = 0 so no incoming noise, outgoing noise remains → λ* = −∞.
    let (mut model, data) = random_case(
        &[4, 5, 3],
        &[Activation::Relu, Activation::Identity],
        true,
        &[false; 2],
        Loss::Mse,
        20,
        2,
    );
    let arch = model.arch.clone();
    for k in noether::symmetry::rescale::incoming(&arch, 0, 1) {
        model.params[k] = 0.0;
    }
    for k in noether::symmetry::rescale::outgoing(&arch, 0, 2) {
        model.params[k] = 0.0;
    }
    let a = analysis(&model, &data, Loss::Mse, &AnalyzeOptions::default()).unwrap();
    assert_eq!(a.neurons[1].status, Status::Dead);
    assert_eq!(a.neurons[1].lambda_star, None);
    assert_eq!(a.neurons[2].status, Status::NoEquilibrium);
    let eq = generator_equilibrium(
        &moments(&model, &data, Loss::Mse, &ALL).unwrap(),
        &Generator::Rescale { layer: 0, unit: 2 },
        Time::Continuous,
    )
    .unwrap();
    assert_eq!(eq, Equilibrium::NoEquilibrium { direction: -1.0 });
    let je = a.joint_equilibrium.unwrap();
    assert_eq!((je.lambda[1], je.lambda[2]), (0.0, 0.0));
    assert!(je.max_rel_residual < 1e-12);
    // Scale symmetry: unbounded.
    let (nm, nd) = random_case(
        &[4, 5, 3],
        &[Activation::Relu, Activation::Identity],
        true,
        &[true, false],
        Loss::Mse,
        20,
        2,
    );
    let a = analysis(&nm, &nd, Loss::Mse, &AnalyzeOptions::default()).unwrap();
    assert_eq!(a.scales[0].status, Status::Unbounded);
    assert!(a.scales[0].tr_a_sigma > 0.0);
}

#[test]
fn rank_deficient_pair_is_solved_on_its_subspace() {
    // Hidden width 4 > input width 2 and output width 2 with no bias: M_in has rank ≤ ... the noise spans a
    // subspace; the balancing is done there and the rest is left alone.
    use noether::equilibrium::double_rotation::balancing_matrix;
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let a = random_symmetric(2, &mut rng);
    let b = random_symmetric(2, &mut rng);
    let embed = |m: &Mat<f64>| Mat::from_fn(3, 3, |i, j| if i < 2 && j < 2 { m[(i, j)] } else { 0.0 });
    let (mi, mo) = (embed(&(&a * a.transpose())), embed(&(&b * b.transpose())));
    let bal = balancing_matrix(&mi, &mo, 0.0).unwrap();
    assert_eq!((bal.status, bal.rank), (Status::Ok, 2));
    let p = bal.p.unwrap();
    let r = &p * &mo * &p - &mi;
    assert!(noether::stats::frobenius(&r, &r).sqrt() < 1e-12 * noether::stats::frobenius(&mi, &mi).sqrt());
    assert!((p[(2, 2)] - 1.0).abs() < 1e-14 && p[(0, 2)].abs() < 1e-14);
    // one-sided direction: M_out singular where M_in is not
    let mo2 = embed(&Mat::from_fn(2, 2, |i, j| if i == 0 && j == 0 { 1.0 } else { 0.0 }));
    let mi2 = embed(&Mat::<f64>::identity(2, 2));
    let one_sided = balancing_matrix(&mi2, &mo2, 0.0).unwrap();
    assert_eq!((one_sided.status, one_sided.rank), (Status::NoEquilibrium, 1));
    // solved on V = span(e_0): P_00² · 1 = 1
    assert!((one_sided.p.unwrap()[(0, 0)] - 1.0).abs() < 1e-14);
    assert_eq!(balancing_matrix(&Mat::zeros(3, 3), &Mat::zeros(3, 3), 0.0).unwrap().status, Status::Dead);
}

//! Curvature: exact HVPs against finite differences of the gradient, Gauss–Newton against an explicit
//! Jacobian, spectra and traces against the reference cases and closed forms, sharpness along orbits.

use crate::reference;
use faer::{Mat, Side};
use noether::curvature::{
    central_difference_hvp, dense_matrix, exact_trace, hutch_plus_plus_trace, hutchinson_trace,
    lanczos_eigenvalues, orbit_sharpness, parse_grid, power_iteration, sharpness, Curvature, DenseOperator,
    HessianOperator, HvpOptions, LanczosOptions, LinearOperator, Orbit, SharpnessOptions, TraceMethod,
};
use noether::symmetry::Generator;
use noether::testutil::{max_rel_vec, random_case, rel};
use noether::{Activation, Dataset, Loss, Model};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

const HESSIAN: HvpOptions = HvpOptions { curvature: Curvature::Hessian, chunk: 4096 };

/// Dense Hessian of the mean loss by fourth-order central differences of the engine's gradient,
/// `H e_i ≈ [8(g(θ+he_i) − g(θ−he_i)) − (g(θ+2he_i) − g(θ−2he_i))]/(12h)`, symmetrised. Truncation O(h⁴) (the
/// plain second-order stencil's O(h²) error reaches 1e-7 on normalised layers at h = 1e-5), round-off O(ε/h).
fn fd_hessian(model: &Model<f64>, data: &Dataset<f64>, loss: Loss, h: f64) -> Mat<f64> {
    let p = model.arch.n_params();
    let mut m = model.clone();
    let mut hm = Mat::<f64>::zeros(p, p);
    let grad_at = |m: &mut Model<f64>, i: usize, t: f64| {
        m.params[i] = model.params[i] + t;
        let (_, g) = m.loss_and_grad(data, loss, 1 << 16).unwrap();
        m.params[i] = model.params[i];
        g
    };
    for i in 0..p {
        let (g1p, g1m) = (grad_at(&mut m, i, h), grad_at(&mut m, i, -h));
        let (g2p, g2m) = (grad_at(&mut m, i, 2.0 * h), grad_at(&mut m, i, -2.0 * h));
        for j in 0..p {
            hm[(j, i)] = (8.0 * (g1p[j] - g1m[j]) - (g2p[j] - g2m[j])) / (12.0 * h);
        }
    }
    Mat::from_fn(p, p, |i, j| 0.5 * (hm[(i, j)] + hm[(j, i)]))
}

fn flat(m: &Mat<f64>) -> Vec<f64> {
    (0..m.nrows()).flat_map(|i| (0..m.ncols()).map(move |j| m[(i, j)])).collect()
}

fn eigenvalues(m: &Mat<f64>) -> Vec<f64> {
    m.self_adjoint_eigenvalues(Side::Lower).unwrap()
}

fn gaussian(p: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..p).map(|_| StandardNormal.sample(&mut rng)).collect()
}

#[test]
fn exact_hvp_matches_finite_difference_hessian_on_tiny_nets() {
    let mut seed = 100;
    let mut worst: f64 = 0.0;
    for act in Activation::all() {
        for loss in [Loss::Mse, Loss::CrossEntropy] {
            for bias in [false, true] {
                for norm in [[false, false, false], [true, false, false], [false, true, true]] {
                    seed += 1;
                    let acts = [act, act, Activation::Identity];
                    let (model, data) = random_case(&[4, 5, 3, 3], &acts, bias, &norm, loss, 7, seed);
                    let fd = fd_hessian(&model, &data, loss, 1e-5);
                    // Alternate chunked (chunks of 3 in lanes) and whole so both drivers are covered.
                    let chunk = if seed % 2 == 0 { 3 } else { 4096 };
                    let opts = HvpOptions { curvature: Curvature::Hessian, chunk };
                    let mut op = HessianOperator::new(&model, &data, loss, opts).unwrap();
                    let exact = dense_matrix(&mut op);
                    let err = max_rel_vec(&flat(&exact), &flat(&fd));
                    worst = worst.max(err);
                    assert!(err < 1e-7, "{act:?} {loss:?} bias={bias} norm={norm:?}: rel err {err:e}");
                    // A random direction, against the FD Hessian times v.
                    let v = gaussian(model.arch.n_params(), seed);
                    let mut hv = vec![0.0; v.len()];
                    op.hvp_into(&v, &mut hv).unwrap();
                    let fdv: Vec<f64> =
                        (0..v.len()).map(|i| (0..v.len()).map(|j| fd[(i, j)] * v[j]).sum()).collect();
                    let err = max_rel_vec(&hv, &fdv);
                    assert!(err < 1e-7, "{act:?} {loss:?} bias={bias} norm={norm:?} Hv: rel err {err:e}");
                }
            }
        }
    }
    eprintln!("exact HVP vs finite-difference Hessian: worst relative error {worst:.2e}");
}

#[test]
fn rms_normalisation_r_operator_on_a_single_normalised_layer() {
    // One normalised tanh layer feeding a linear read-out: the R-op of u = z/r is the only non-trivial part.
    for loss in [Loss::Mse, Loss::CrossEntropy] {
        let (model, data) = random_case(
            &[3, 6, 4],
            &[Activation::Tanh, Activation::Identity],
            true,
            &[true, false],
            loss,
            9,
            77,
        );
        let fd = fd_hessian(&model, &data, loss, 1e-5);
        let mut op = HessianOperator::new(&model, &data, loss, HESSIAN).unwrap();
        let err = max_rel_vec(&flat(&dense_matrix(&mut op)), &flat(&fd));
        assert!(err < 1e-7, "{loss:?}: rel err {err:e}");
    }
}

#[test]
fn exact_hvp_matches_central_differences_on_larger_nets() {
    for (i, (act, loss, norm)) in [
        (Activation::Relu, Loss::CrossEntropy, [false, false, false]),
        (Activation::Tanh, Loss::Mse, [false, true, false]),
        (Activation::LeakyRelu { alpha: 0.1 }, Loss::Mse, [true, false, false]),
    ]
    .into_iter()
    .enumerate()
    {
        let (model, data) = random_case(
            &[12, 32, 16, 5],
            &[act, act, Activation::Identity],
            true,
            &norm,
            loss,
            150,
            7 + i as u64,
        );
        for chunk in [64, 7] {
            let opts = HvpOptions { curvature: Curvature::Hessian, chunk };
            let mut op = HessianOperator::new(&model, &data, loss, opts).unwrap();
            let v = gaussian(model.arch.n_params(), 3 + i as u64);
            let mut hv = vec![0.0; v.len()];
            op.hvp_into(&v, &mut hv).unwrap();
            let cd = central_difference_hvp(&model, &data, loss, &v, 1e-5, 64).unwrap();
            let err = max_rel_vec(&hv, &cd);
            assert!(err < 1e-6, "{act:?} {loss:?} norm={norm:?} chunk={chunk}: rel err {err:e}");
        }
    }
}

#[test]
fn gauss_newton_matches_explicit_jacobian_products() {
    // G = (1/N) Σ_n J_nᵀ H_n J_n with J_n from central differences of the outputs and H_n written out here.
    for (act, loss, norm) in [
        (Activation::Tanh, Loss::CrossEntropy, [true, false, false]),
        (Activation::Relu, Loss::Mse, [false, false, false]),
        (Activation::LeakyRelu { alpha: 0.2 }, Loss::CrossEntropy, [false, true, false]),
    ] {
        let (model, data) =
            random_case(&[3, 5, 4, 3], &[act, act, Activation::Identity], true, &norm, loss, 6, 31);
        let (p, n, d) = (model.arch.n_params(), data.len(), model.arch.d_out());
        let h = 1e-6;
        let mut m = model.clone();
        let mut jac = vec![Mat::<f64>::zeros(d, p); n];
        for i in 0..p {
            m.params[i] = model.params[i] + h;
            let fp = m.outputs(&data, 64).unwrap();
            m.params[i] = model.params[i] - h;
            let fm = m.outputs(&data, 64).unwrap();
            m.params[i] = model.params[i];
            for (s, j) in jac.iter_mut().enumerate() {
                for k in 0..d {
                    j[(k, i)] = (fp[(s, k)] - fm[(s, k)]) / (2.0 * h);
                }
            }
        }
        let f = model.outputs(&data, 64).unwrap();
        let mut g = Mat::<f64>::zeros(p, p);
        for s in 0..n {
            let hl = match loss {
                Loss::Mse => Mat::<f64>::identity(d, d),
                Loss::CrossEntropy => {
                    let mx = (0..d).map(|k| f[(s, k)]).fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = (0..d).map(|k| (f[(s, k)] - mx).exp()).sum();
                    let pr: Vec<f64> = (0..d).map(|k| (f[(s, k)] - mx).exp() / z).collect();
                    Mat::from_fn(d, d, |a, b| if a == b { pr[a] } else { 0.0 } - pr[a] * pr[b])
                }
            };
            let jt_h_j = jac[s].transpose() * &hl * &jac[s];
            g += jt_h_j * (1.0 / n as f64);
        }
        let opts = HvpOptions { curvature: Curvature::GaussNewton, chunk: 4 };
        let mut op = HessianOperator::new(&model, &data, loss, opts).unwrap();
        let gn = dense_matrix(&mut op);
        let err = max_rel_vec(&flat(&gn), &flat(&g));
        assert!(err < 1e-7, "{act:?} {loss:?}: rel err {err:e}");
        assert!(eigenvalues(&gn)[0] > -1e-12 * eigenvalues(&gn)[p - 1], "Gauss–Newton must be PSD");
    }
}

#[test]
fn reference_cases_top_bottom_eigenvalue_and_trace() {
    for case in reference::all() {
        let mut op = HessianOperator::new(&case.model, &case.data, case.loss, HESSIAN).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let opts = LanczosOptions { max_iter: 1000, tol: 1e-10 };
        let eig = lanczos_eigenvalues(&mut op, 1, true, &opts, &mut rng).unwrap();
        let tr = exact_trace(&mut op).trace;
        let top = case.json["hessian_top_eigenvalue"].as_f64().unwrap();
        let bottom = case.json["hessian_bottom_eigenvalue"].as_f64().unwrap();
        let trace = case.json["hessian_trace"].as_f64().unwrap();
        let scale = top.abs().max(bottom.abs());
        let (e_top, e_bot, e_tr) = (
            rel(eig.top[0], top, 1e-300),
            (eig.bottom.unwrap() - bottom).abs() / scale,
            rel(tr, trace, 1e-300),
        );
        eprintln!(
            "{}: top {:.3e}, bottom {:.3e} (of max|λ|), trace {:.3e} rel err; Lanczos {:?}",
            case.name, e_top, e_bot, e_tr, eig.info
        );
        assert!(eig.info.converged, "{}: {:?}", case.name, eig.info);
        assert!(e_top < 1e-6 && e_bot < 1e-6 && e_tr < 1e-6, "{}", case.name);
    }
}

#[test]
fn two_layer_linear_net_gauss_newton_trace_closed_form() {
    // f = U W x, L = mean ½‖UWx − y‖²: Tr G = (1/N) Σ_n [d_out ‖W x_n‖² + ‖U‖²_F ‖x_n‖²]. For this bilinear f the
    // residual term Σ r·∂²f has zero diagonal, so Tr H equals the same number.
    let (model, data) = random_case(
        &[5, 4, 3],
        &[Activation::Identity, Activation::Identity],
        false,
        &[false, false],
        Loss::Mse,
        20,
        4,
    );
    let (w, u) = (model.weight(0), model.weight(1));
    let u_f2: f64 = (0..u.nrows()).flat_map(|i| (0..u.ncols()).map(move |j| u[(i, j)] * u[(i, j)])).sum();
    let mut want = 0.0;
    for n in 0..data.len() {
        let x: Vec<f64> = (0..data.d_in()).map(|j| data.x[(n, j)]).collect();
        let wx2: f64 =
            (0..w.nrows()).map(|i| (0..w.ncols()).map(|j| w[(i, j)] * x[j]).sum::<f64>().powi(2)).sum();
        want += 3.0 * wx2 + u_f2 * x.iter().map(|v| v * v).sum::<f64>();
    }
    want /= data.len() as f64;
    let gn = HvpOptions { curvature: Curvature::GaussNewton, chunk: 7 };
    let tr_g = exact_trace(&mut HessianOperator::new(&model, &data, Loss::Mse, gn).unwrap()).trace;
    let tr_h = exact_trace(&mut HessianOperator::new(&model, &data, Loss::Mse, HESSIAN).unwrap()).trace;
    assert!(rel(tr_g, want, 1e-300) < 1e-12, "Tr G {tr_g} vs closed form {want}");
    assert!(rel(tr_h, want, 1e-300) < 1e-12, "Tr H {tr_h} vs closed form {want}");
}

#[test]
fn lanczos_finds_repeated_and_extreme_eigenvalues_of_a_known_matrix() {
    // Q diag(λ) Qᵀ with a triple top eigenvalue: plain Lanczos sees it once, the restart must find all three.
    let p = 40;
    let lam: Vec<f64> = (0..p)
        .map(|i| {
            if i < 3 {
                5.0
            } else if i == p - 1 {
                -2.0
            } else {
                (i as f64) / p as f64
            }
        })
        .collect();
    let r = gaussian(p * p, 9);
    let g = Mat::from_fn(p, p, |i, j| r[i * p + j]);
    let q = g.qr().compute_Q();
    let a = &q * Mat::from_fn(p, p, |i, j| if i == j { lam[i] } else { 0.0 }) * q.transpose();
    let a = Mat::from_fn(p, p, |i, j| 0.5 * (a[(i, j)] + a[(j, i)]));
    let mut op = DenseOperator::new(a).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let eig = lanczos_eigenvalues(&mut op, 4, true, &LanczosOptions { max_iter: 200, tol: 1e-10 }, &mut rng)
        .unwrap();
    let want = [5.0, 5.0, 5.0, (p - 2) as f64 / p as f64];
    for (got, w) in eig.top.iter().zip(want) {
        assert!((got - w).abs() < 1e-9, "top {:?} vs {want:?} ({:?})", eig.top, eig.info);
    }
    assert!((eig.bottom.unwrap() + 2.0).abs() < 1e-9);
    assert_eq!(eig.info.hvps, op.products());
    let (rho, _, info) =
        power_iteration(&mut op, &LanczosOptions { max_iter: 5000, tol: 1e-8 }, &mut rng).unwrap();
    assert!(info.converged && (rho - 5.0).abs() < 1e-8, "power iteration {rho} {info:?}");
}

#[test]
fn hutchinson_interval_contains_the_exact_trace() {
    // Not flaky: every probe comes from a ChaCha RNG with a fixed seed, so the outcome is bit-identical on every
    // run. Beyond the single seed, the empirical coverage of the stated 95% interval over 40 seeds must be
    // plausible (≥ 32 of 40; a binomial(40, 0.95) falls below 33 with probability < 1%).
    let (model, data) = random_case(
        &[4, 6, 3],
        &[Activation::Tanh, Activation::Identity],
        true,
        &[false, false],
        Loss::CrossEntropy,
        25,
        12,
    );
    let mut op = HessianOperator::new(&model, &data, Loss::CrossEntropy, HESSIAN).unwrap();
    let exact = exact_trace(&mut op).trace;
    let (mut covered, mut covered_pp) = (0, 0);
    for seed in 0..40 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let h = hutchinson_trace(&mut op, 100, &mut rng).unwrap();
        covered += usize::from(h.ci95[0] <= exact && exact <= h.ci95[1]);
        let hp = hutch_plus_plus_trace(&mut op, 60, &mut rng).unwrap();
        covered_pp += usize::from(hp.ci95[0] <= exact && exact <= hp.ci95[1]);
        if seed == 0 {
            assert!(h.ci95[0] <= exact && exact <= h.ci95[1], "{h:?} vs {exact}");
            assert!(hp.stderr < h.stderr, "Hutch++ should beat Hutchinson here: {hp:?} {h:?}");
        }
    }
    eprintln!("coverage of the 95% interval over 40 seeds: Hutchinson {covered}, Hutch++ {covered_pp}");
    assert!(covered >= 32 && covered_pp >= 32, "coverage {covered}, {covered_pp} of 40");
}

#[test]
fn sharpness_changes_along_a_rescaling_orbit_at_constant_loss() {
    let (model, data) = random_case(
        &[3, 5, 2],
        &[Activation::Relu, Activation::Identity],
        true,
        &[false, false],
        Loss::Mse,
        30,
        21,
    );
    let orbit = Orbit::Generator(Generator::Rescale { layer: 0, unit: 1 });
    let grid = parse_grid("-1:1:5").unwrap();
    let opts = SharpnessOptions {
        top: 1,
        trace: Some(TraceMethod::Exact),
        lanczos: LanczosOptions { max_iter: 500, tol: 1e-11 },
        ..Default::default()
    };
    let curve = orbit_sharpness(&model, &data, Loss::Mse, &orbit, &grid, &opts).unwrap();
    let l0 = curve[2].loss;
    for pt in &curve {
        assert!(rel(pt.loss, l0, 1e-300) < 1e-12, "loss moved along the orbit: {} vs {l0}", pt.loss);
        // From scratch on the moved model: finite-difference Hessian, dense eigenvalues.
        let mut moved = model.clone();
        Generator::Rescale { layer: 0, unit: 1 }.act_in_place(&model.arch, &mut moved.params, pt.lambda);
        let fd = fd_hessian(&moved, &data, Loss::Mse, 1e-5);
        let ev = eigenvalues(&fd);
        let (top, tr) = (ev[ev.len() - 1], (0..fd.nrows()).map(|i| fd[(i, i)]).sum::<f64>());
        assert!(
            rel(pt.top_eigenvalue, top, 1e-300) < 1e-7,
            "λ={}: top {} vs {top}",
            pt.lambda,
            pt.top_eigenvalue
        );
        assert!(rel(pt.trace.unwrap(), tr, 1e-300) < 1e-7, "λ={}: trace {:?} vs {tr}", pt.lambda, pt.trace);
    }
    let tops: Vec<f64> = curve.iter().map(|p| p.top_eigenvalue).collect();
    let spread = tops.iter().cloned().fold(f64::NEG_INFINITY, f64::max)
        - tops.iter().cloned().fold(f64::INFINITY, f64::min);
    assert!(spread > 1e-2 * tops[2], "sharpness should change along the orbit: {tops:?}");
}

#[test]
fn hessian_transforms_by_congruence_along_an_orbit() {
    // H(e^{λA}θ) = e^{−λA} H(θ) e^{−λA}: for a rescaling, entry (i, j) scales by e^{−λ(a_i + a_j)}.
    let (model, data) = random_case(
        &[3, 4, 2],
        &[Activation::LeakyRelu { alpha: 0.1 }, Activation::Identity],
        true,
        &[false, false],
        Loss::CrossEntropy,
        15,
        5,
    );
    let g = Generator::Rescale { layer: 0, unit: 2 };
    let lambda = 0.7;
    let mut moved = model.clone();
    g.act_in_place(&model.arch, &mut moved.params, lambda);
    let h0 = dense_matrix(&mut HessianOperator::new(&model, &data, Loss::CrossEntropy, HESSIAN).unwrap());
    let h1 = dense_matrix(&mut HessianOperator::new(&moved, &data, Loss::CrossEntropy, HESSIAN).unwrap());
    let p = model.arch.n_params();
    let a = g.a_times(&model.arch, &vec![1.0; p]);
    let want = Mat::from_fn(p, p, |i, j| (-lambda * (a[i] + a[j])).exp() * h0[(i, j)]);
    assert!(max_rel_vec(&flat(&h1), &flat(&want)) < 1e-12);
}

#[test]
fn sharpness_observer_call_and_subset() {
    let (model, data) = random_case(
        &[4, 8, 3],
        &[Activation::Relu, Activation::Identity],
        true,
        &[false, false],
        Loss::CrossEntropy,
        200,
        3,
    );
    let opts = SharpnessOptions { top: 3, bottom: true, ..Default::default() };
    let s = sharpness(&model, &data, Loss::CrossEntropy, &opts).unwrap();
    assert!(s.top_eigenvalues.windows(2).all(|w| w[0] >= w[1]), "{:?}", s.top_eigenvalues);
    assert!(s.lanczos.converged && s.hvps == s.lanczos.hvps + 100);
    let mut op = HessianOperator::new(&model, &data, Loss::CrossEntropy, HESSIAN).unwrap();
    let ev = eigenvalues(&dense_matrix(&mut op));
    for (i, got) in s.top_eigenvalues.iter().enumerate() {
        assert!(rel(*got, ev[ev.len() - 1 - i], 1e-300) < 1e-6);
    }
    // Same seed, same subset, bit-identical result.
    let sub = SharpnessOptions { subset: noether::curvature::Subset::Random { n: 50 }, seed: 9, ..opts };
    let (a, b) = (
        sharpness(&model, &data, Loss::CrossEntropy, &sub).unwrap(),
        sharpness(&model, &data, Loss::CrossEntropy, &sub).unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(a.samples, 50);
}

#[test]
fn bad_input_is_a_typed_error() {
    let (model, data) = random_case(
        &[3, 4, 2],
        &[Activation::Tanh, Activation::Identity],
        false,
        &[false, false],
        Loss::Mse,
        10,
        1,
    );
    let p = model.arch.n_params();
    let err = sharpness(&model, &data, Loss::Mse, &SharpnessOptions { top: p + 1, ..Default::default() })
        .unwrap_err();
    assert!(err.to_string().contains(&format!("P = {p}")), "{err}");
    for bad in ["1:2", "a:1:3", "0:1:x", "0:1:0", "0:inf:3", "", "0:1:1", "0.5:0.5:3"] {
        assert!(parse_grid(bad).is_err(), "{bad}");
    }
    assert_eq!(parse_grid("-1:1:3").unwrap(), vec![-1.0, 0.0, 1.0]);
    assert_eq!(parse_grid("0.5:0.5:1").unwrap(), vec![0.5]);
    let orbit = Orbit::Generator(Generator::Rescale { layer: 0, unit: 0 });
    let err =
        orbit_sharpness(&model, &data, Loss::Mse, &orbit, &[0.0], &SharpnessOptions::default()).unwrap_err();
    assert!(matches!(err, noether::Error::NoSymmetry(_)), "{err}");
    assert!(HessianOperator::new(&model, &data, Loss::CrossEntropy, HESSIAN).is_err());
    let mut op = HessianOperator::new(&model, &data, Loss::Mse, HESSIAN).unwrap();
    assert!(op.hvp_into(&[1.0], &mut [0.0]).is_err());
    assert_eq!(op.dim(), p);
}

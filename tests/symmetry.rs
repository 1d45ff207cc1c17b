//! Every symmetry family: invariance of each per-sample loss under e^{λA}, (Aθ)ᵀ∇ℓ_n = 0, and the exact
//! discrete Noether identity C_{t+1} − C_t = η² ĝᵀAĝ at every SGD step.

use noether::data::Sampling;
use noether::dynamics::{Method, TrainConfig, TrainData, Trainer};
use noether::model::ModelSpec;
use noether::stats::verify;
use noether::symmetry::{enumerate, random_symmetric, Generator, Symmetry};
use noether::testutil::random_case;
use noether::{Activation, Dataset, Loss, Model};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A model with its data, loss and the generators to test on it.
type FamilyCase = (&'static str, Model<f64>, Dataset<f64>, Loss, Vec<Generator>);

/// One model per family, with the generators to test on it.
fn family_cases() -> Vec<FamilyCase> {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut out = Vec::new();
    // Rescaling: relu and leaky relu hidden units, with biases, both losses.
    for (name, act, loss) in [
        ("relu_ce", Activation::Relu, Loss::CrossEntropy),
        ("leaky_mse", Activation::LeakyRelu { alpha: 0.2 }, Loss::Mse),
    ] {
        let (m, d) =
            random_case(&[4, 6, 5, 3], &[act, act, Activation::Identity], true, &[false; 3], loss, 20, 3);
        let gens = vec![
            Generator::Rescale { layer: 0, unit: 2 },
            Generator::Rescale { layer: 1, unit: 4 },
            Generator::Rescale { layer: 0, unit: 0 },
        ];
        out.push((name, m, d, loss, gens));
    }
    // Double rotation: a deep linear chain with a bias on the first layer of each pair.
    let (m, d) = random_case(&[5, 4, 3, 2], &[Activation::Identity; 3], true, &[false; 3], Loss::Mse, 20, 4);
    // Directions B with unit spectral norm, like the ±1 eigenvalues of the rescaling generators, so that λ
    // means the same amount of motion in every family.
    let unit = |b: faer::Mat<f64>| {
        let s = b.self_adjoint_eigenvalues(faer::Side::Lower).unwrap();
        let n = s.iter().fold(0.0f64, |a, v| a.max(v.abs()));
        b * faer::Scale(1.0 / n)
    };
    let gens = vec![
        Generator::DoubleRotation { layer: 0, b: unit(random_symmetric(4, &mut rng)) },
        Generator::DoubleRotation { layer: 1, b: unit(random_symmetric(3, &mut rng)) },
    ];
    out.push(("linear", m, d, Loss::Mse, gens));
    // The same without biases: SGD at B = 16 takes the Gram-form linear-chain step.
    let (m, d) = random_case(&[5, 4, 3, 2], &[Activation::Identity; 3], false, &[false; 3], Loss::Mse, 20, 6);
    let gens = vec![
        Generator::DoubleRotation { layer: 0, b: unit(random_symmetric(4, &mut rng)) },
        Generator::DoubleRotation { layer: 1, b: unit(random_symmetric(3, &mut rng)) },
    ];
    out.push(("linear_nobias", m, d, Loss::Mse, gens));
    // Scale: normalised blocks (tanh after the norm), cross-entropy.
    let (m, d) = random_case(
        &[4, 6, 5, 3],
        &[Activation::Tanh, Activation::Relu, Activation::Identity],
        true,
        &[true, true, false],
        Loss::CrossEntropy,
        20,
        5,
    );
    out.push((
        "norm",
        m,
        d,
        Loss::CrossEntropy,
        vec![Generator::Scale { layer: 0 }, Generator::Scale { layer: 1 }],
    ));
    out
}

#[test]
fn every_per_sample_loss_is_invariant_and_orthogonal_to_a_theta() {
    for (name, model, data, loss, gens) in family_cases() {
        for g in &gens {
            g.check(&model.arch).unwrap();
            for lambda in [-1.0, 0.3, 2.0] {
                let v = verify(&model, &data, loss, g, lambda).unwrap();
                let rel = v.max_loss_change / v.max_loss;
                assert!(rel <= 1e-12, "{name} {}: λ={lambda} loss change {rel:e}", g.label());
                let orth = v.max_gradient_overlap / v.overlap_scale;
                assert!(orth <= 1e-12, "{name} {}: (Aθ)ᵀ∇ℓ / scale = {orth:e}", g.label());
            }
        }
    }
}

#[test]
fn verification_detects_a_non_symmetry() {
    // Rescaling a tanh unit is not a symmetry: `check` refuses it, and forcing the action changes the loss.
    let (m, d) = random_case(
        &[3, 4, 2],
        &[Activation::Tanh, Activation::Identity],
        true,
        &[false; 2],
        Loss::Mse,
        10,
        1,
    );
    let g = Generator::Rescale { layer: 0, unit: 1 };
    assert!(g.check(&m.arch).is_err());
    let mut moved = m.clone();
    g.act_in_place(&m.arch, &mut moved.params, 0.5);
    let (a, b) = (m.loss(&d, Loss::Mse, 64).unwrap(), moved.loss(&d, Loss::Mse, 64).unwrap());
    assert!((a - b).abs() > 1e-3 * a, "tanh rescaling should change the loss: {a} vs {b}");
}

#[test]
fn enumerate_lists_exactly_the_exact_symmetries() {
    let (m, _) = random_case(
        &[3, 4, 5, 2, 2],
        &[Activation::Relu, Activation::Identity, Activation::Tanh, Activation::Identity],
        true,
        &[false, false, false, false],
        Loss::Mse,
        2,
        0,
    );
    let s = enumerate(&m.arch);
    let rescale = s.iter().filter(|x| matches!(x, Symmetry::Rescale { .. })).count();
    assert_eq!(rescale, 4 + 5, "relu layer 0 and identity layer 1 units");
    assert_eq!(s.iter().filter(|x| matches!(x, Symmetry::DoubleRotation { .. })).count(), 1);
    assert!(s.contains(&Symmetry::DoubleRotation { layer: 1 }));
    assert!(
        !s.iter().any(|x| matches!(x, Symmetry::Rescale { layer: 2, .. })),
        "tanh units have no rescaling"
    );
}

/// A trainer on an explicit model and data set.
fn sgd_trainer(
    model: Model<f64>,
    data: Dataset<f64>,
    loss: Loss,
    lr: f64,
    batch: usize,
    seed: u64,
) -> Trainer<f64> {
    let sgd = Method::Sgd { batch_size: batch, sampling: Sampling::WithReplacement };
    let config = TrainConfig::new(unused_spec(), sgd, lr, 1000).with_seed(seed).with_loss(loss);
    let mut tr =
        Trainer::new(model, TrainData::Finite(data), &config, ChaCha8Rng::seed_from_u64(seed)).unwrap();
    tr.record_direction(true);
    tr
}

/// `gᵀ|A|g`, the natural scale of `gᵀAg` when A is indefinite (for B: ‖B‖_F‖g_pair‖²).
fn abs_quad(g: &Generator, arch: &noether::Architecture, v: &[f64]) -> f64 {
    match g {
        Generator::Rescale { layer, unit } => {
            let sq = |i: usize| v[i] * v[i];
            noether::symmetry::rescale::incoming(arch, *layer, *unit).map(sq).sum::<f64>()
                + noether::symmetry::rescale::outgoing(arch, *layer, *unit).map(sq).sum::<f64>()
        }
        Generator::DoubleRotation { layer, b } => {
            let r = arch.layer_range(*layer).start..arch.layer_range(*layer + 1).end;
            b.norm_l2() * v[r].iter().map(|x| x * x).sum::<f64>()
        }
        Generator::Scale { .. } => g.quad(arch, v),
    }
}

#[test]
fn discrete_noether_identity_holds_at_every_sgd_step() {
    // B = 1 and 2 take the fused small-batch step (B = 1 in f64 with the AVX2 kernels), B = 3 and 16 the tape,
    // except for the bias-free linear chain at B = 16, which takes the Gram-form step (asserted below).
    let cases = family_cases().into_iter().flat_map(|c| [1, 2, 3, 16].map(|b| (c.clone(), b)));
    for ((name, model, data, loss, gens), batch) in cases {
        let name = format!("{name} B={batch}");
        let gram = noether::model::LinearChainStep::<f64>::supports(&model.arch, batch);
        assert_eq!(gram, name == "linear_nobias B=16", "{name}: which step SGD takes");
        let mut tr = sgd_trainer(model, data, loss, 0.05, batch, 7);
        let mut worst: f64 = 0.0;
        for _ in 0..1000 {
            let before: Vec<f64> = gens.iter().map(|g| g.charge(&tr.model.arch, &tr.model.params)).collect();
            tr.step().unwrap();
            let eta = 0.05f64;
            for (g, c0) in gens.iter().zip(&before) {
                let arch = &tr.model.arch;
                let dc = g.charge(arch, &tr.model.params) - c0;
                let ghat = tr.last_direction().expect("recorded");
                let pred = eta * eta * g.quad(arch, ghat);
                let scale = eta * eta * abs_quad(g, arch, ghat);
                // 1e-9 relative to the step term, plus the unavoidable rounding of evaluating C twice in f64
                // (each evaluation is accurate to a few ε·θᵀ|A|θ): tolerances scaled from ε, not guessed.
                let round_off = 32.0 * f64::EPSILON * abs_quad(g, arch, &tr.model.params);
                let excess = ((dc - pred).abs() - round_off).max(0.0);
                if scale > 0.0 {
                    worst = worst.max(excess / scale);
                }
            }
        }
        assert!(worst <= 1e-9, "{name}: worst relative violation {worst:e}");
    }
}

#[test]
fn gd_change_of_charge_scales_like_eta_squared() {
    let (model, data) = random_case(
        &[4, 6, 3],
        &[Activation::Relu, Activation::Identity],
        true,
        &[false; 2],
        Loss::Mse,
        30,
        2,
    );
    let g = Generator::Rescale { layer: 0, unit: 1 };
    let mut changes = Vec::new();
    let etas = [1e-1, 1e-2, 1e-3];
    for eta in etas {
        let config = TrainConfig::new(unused_spec(), Method::Gd, eta, 10).with_log_every(1);
        let mut tr = Trainer::new(
            model.clone(),
            TrainData::Finite(data.clone()),
            &config,
            ChaCha8Rng::seed_from_u64(0),
        )
        .unwrap();
        let c0 = g.charge(&model.arch, &model.params);
        tr.step().unwrap();
        changes.push((g.charge(&model.arch, &tr.model.params) - c0).abs());
    }
    for k in 0..2 {
        let slope = (changes[k] / changes[k + 1]).log10() / (etas[k] / etas[k + 1]).log10();
        assert!(
            (slope - 2.0).abs() < 1e-6,
            "log-log slope {slope} between η = {} and {}",
            etas[k],
            etas[k + 1]
        );
    }
}

/// The config's model spec; the trainers here run on an explicit model, so it is never built.
fn unused_spec() -> ModelSpec {
    ModelSpec::from_compact("1-1", Activation::Identity, false).unwrap()
}

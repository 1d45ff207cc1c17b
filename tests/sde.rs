//! SGD and the SDE started at the same point have the same expected one-step change of every charge,
//! η²(Tr[AΣ]/S + ∇LᵀA∇L), and the same noise power E‖Δθ/η + ∇L‖² = Tr Σ/S. Σ here comes from the
//! brute-force per-sample gradients (testutil), independent of the engine's statistics.
//!
//! Statistical tolerance: the ensemble mean of R i.i.d. one-step changes must lie within 4.5 standard errors
//! (the sample standard deviation / √R) of the prediction. With fixed seeds the test is deterministic; 4.5σ
//! would be exceeded by chance with probability < 1e-5 per comparison for a correct implementation.

use noether::data::Sampling;
use noether::dynamics::{Method, TrainConfig, TrainData, Trainer};
use noether::model::ModelSpec;
use noether::symmetry::{enumerate, Generator};
use noether::testutil::{covariance_centred, per_sample_grads, random_case};
use noether::{Activation, Loss};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn config(method: Method, lr: f64) -> TrainConfig {
    let unused = ModelSpec::from_compact("1-1", Activation::Identity, false).unwrap();
    TrainConfig::new(unused, method, lr, 1).with_log_every(1)
}

fn mean_and_stderr(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, (var / n).sqrt())
}

#[test]
fn sgd_and_sde_have_the_predicted_mean_drift_of_every_charge() {
    let (model, data) = random_case(
        &[3, 5, 2],
        &[Activation::Relu, Activation::Identity],
        true,
        &[false; 2],
        Loss::Mse,
        40,
        21,
    );
    let (s, eta, reps) = (4usize, 0.05, 6000u64);
    let grads = per_sample_grads(&model, &data, Loss::Mse).unwrap();
    let sigma = covariance_centred(&grads);
    let p = model.arch.n_params();
    let gbar: Vec<f64> =
        (0..p).map(|i| grads.iter().map(|g| g[i]).sum::<f64>() / grads.len() as f64).collect();
    let gens: Vec<Generator> = enumerate(&model.arch).iter().map(|s| s.generator(&model.arch)).collect();
    // Tr[AΣ] = Σ_i (A e_i)ᵀ Σ e_i, from the explicit P×P covariance.
    let tr_a_sigma = |g: &Generator| -> f64 {
        (0..p)
            .map(|i| {
                let mut e = vec![0.0; p];
                e[i] = 1.0;
                let ae = g.a_times(&model.arch, &e);
                (0..p).map(|j| ae[j] * sigma[(j, i)]).sum::<f64>()
            })
            .sum()
    };
    let trace_sigma: f64 = (0..p).map(|i| sigma[(i, i)]).sum();
    for method in
        [Method::Sgd { batch_size: s, sampling: Sampling::WithReplacement }, Method::Sde { batch_size: s }]
    {
        let cfg = config(method.clone(), eta);
        let mut dc = vec![Vec::with_capacity(reps as usize); gens.len()];
        let mut noise = Vec::with_capacity(reps as usize);
        for r in 0..reps {
            let mut tr = Trainer::new(
                model.clone(),
                TrainData::Finite(data.clone()),
                &cfg,
                ChaCha8Rng::seed_from_u64(r),
            )
            .unwrap();
            tr.record_direction(true);
            tr.step().unwrap();
            for (k, g) in gens.iter().enumerate() {
                dc[k].push(g.charge(&model.arch, &tr.model.params) - g.charge(&model.arch, &model.params));
            }
            noise.push(
                tr.last_direction()
                    .expect("recorded")
                    .iter()
                    .zip(&gbar)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>(),
            );
        }
        for (k, g) in gens.iter().enumerate() {
            let predicted = eta * eta * (tr_a_sigma(g) / s as f64 + g.quad(&model.arch, &gbar));
            let (m, se) = mean_and_stderr(&dc[k]);
            assert!(
                (m - predicted).abs() <= 4.5 * se,
                "{} {}: mean ΔC {m:e} vs predicted {predicted:e} (stderr {se:e})",
                method.short(),
                g.label()
            );
        }
        let (m, se) = mean_and_stderr(&noise);
        let predicted = trace_sigma / s as f64;
        assert!(
            (m - predicted).abs() <= 4.5 * se,
            "{}: E‖ĝ − ∇L‖² {m} vs Tr Σ/S {predicted} (stderr {se})",
            method.short()
        );
    }
}

//! Gradient flow against its closed form. For a bias-free linear layer f(x) = Wx with MSE and weight decay γ,
//! `L(W) = (1/2N)Σ_n‖Wx_n − y_n‖² + (γ/2)‖W‖²` and the flow `dW/dt = −(W M − S_yx)` with `M = S_xx + γI`,
//! `S_xx = (1/N)Σ x xᵀ`, `S_yx = (1/N)Σ y xᵀ` has the solution `W(t) = W∞ + (W(0) − W∞)·e^{−tM}`,
//! `W∞ = S_yx M⁻¹`, computed here from the eigendecomposition of M, independently of the trainer.

use faer::{Mat, Side};
use noether::data::{Dataset, Targets};
use noether::dynamics::{Method, Precision, TrainConfig, TrainData, Trainer};
use noether::model::{Model, ModelSpec};
use noether::testutil::random_case;
use noether::{Activation, Error, Loss};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const GAMMA: f64 = 0.1;

/// `W(t)` for the model's single layer, from the closed form above.
fn closed_form(model: &Model<f64>, data: &Dataset<f64>, t: f64) -> Mat<f64> {
    let x = &data.x;
    let Targets::Dense(y) = &data.y else { unreachable!() };
    let (n, d_in, d_out) = (x.nrows(), x.ncols(), y.ncols());
    let m = Mat::from_fn(d_in, d_in, |i, j| {
        (0..n).map(|r| x[(r, i)] * x[(r, j)]).sum::<f64>() / n as f64 + if i == j { GAMMA } else { 0.0 }
    });
    let syx = Mat::from_fn(d_out, d_in, |i, j| (0..n).map(|r| y[(r, i)] * x[(r, j)]).sum::<f64>() / n as f64);
    let evd = m.self_adjoint_eigen(Side::Lower).unwrap();
    let (u, s) = (evd.U(), evd.S().column_vector());
    let fun = |f: &dyn Fn(f64) -> f64| {
        Mat::from_fn(d_in, d_in, |i, j| (0..d_in).map(|k| u[(i, k)] * f(s[k]) * u[(j, k)]).sum::<f64>())
    };
    let (m_inv, decay) = (fun(&|l| 1.0 / l), fun(&|l| (-t * l).exp()));
    let w_inf = &syx * &m_inv;
    let w0 = model.weight(0).to_owned();
    &w_inf + (&w0 - &w_inf) * &decay
}

/// Runs `steps` steps of gradient flow with learning rate `lr` and returns the trainer.
fn flow(model: &Model<f64>, data: &Dataset<f64>, method: Method, lr: f64, steps: u64) -> Trainer<f64> {
    let spec = ModelSpec::from_compact("1-1", Activation::Identity, false).unwrap();
    let cfg = TrainConfig::new(spec, method, lr, steps).with_weight_decay(GAMMA);
    let mut tr =
        Trainer::new(model.clone(), TrainData::Finite(data.clone()), &cfg, ChaCha8Rng::seed_from_u64(0))
            .unwrap();
    for _ in 0..steps {
        tr.step().unwrap();
    }
    tr
}

fn max_abs_diff(a: faer::MatRef<'_, f64>, b: faer::MatRef<'_, f64>) -> f64 {
    let mut m = 0.0f64;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            m = m.max((a[(i, j)] - b[(i, j)]).abs());
        }
    }
    m
}

/// A 5-input, 3-output linear regression whose inputs are scaled by `x_scale` (the flow's stiffness is
/// ∝ x_scale²).
fn case(x_scale: f64) -> (Model<f64>, Dataset<f64>) {
    let (model, mut data) = random_case(&[5, 3], &[Activation::Identity], false, &[false], Loss::Mse, 40, 7);
    for v in data.x.col_iter_mut() {
        for e in v.iter_mut() {
            *e *= x_scale;
        }
    }
    (model, data)
}

fn rk4(substeps: usize) -> Method {
    Method::GradientFlow { substeps, tolerance: None }
}

fn adaptive(tolerance: f64) -> Method {
    Method::GradientFlow { substeps: 1, tolerance: Some(tolerance) }
}

#[test]
fn rk4_flow_converges_to_the_closed_form_at_fourth_order() {
    let (model, data) = case(1.0);
    let errs: Vec<f64> = [1, 2, 4]
        .into_iter()
        .map(|sub| {
            let tr = flow(&model, &data, rk4(sub), 0.2, 50);
            assert!((tr.time() - 10.0).abs() < 1e-12);
            max_abs_diff(tr.model.weight(0), closed_form(&model, &data, tr.time()).as_ref())
        })
        .collect();
    // Halving the substep divides RK4's global error by ≈ 2⁴ = 16.
    for w in errs.windows(2) {
        let ratio = w[0] / w[1];
        assert!((13.0..19.0).contains(&ratio), "RK4 error ratio {ratio:.2} for errors {errs:?}");
    }
    assert!(errs[2] < 1e-9, "{errs:?}");
}

#[test]
fn adaptive_flow_follows_the_closed_form_where_fixed_rk4_breaks_down() {
    // x scaled by 6: the largest eigenvalue of M is ≈ 80, so one RK4 substep of h = 0.25 has h·λ ≈ 20, far
    // beyond RK4's stability limit 2.79 on the real axis.
    let (model, data) = case(6.0);
    let (lr, steps) = (0.25, 40);
    let tr = flow(&model, &data, rk4(1), lr, steps);
    let exact = closed_form(&model, &data, tr.time());
    let rk4_err = max_abs_diff(tr.model.weight(0), exact.as_ref());
    assert!(!rk4_err.is_finite() || rk4_err > 1.0, "fixed RK4 was expected to fail here, error {rk4_err:e}");

    let mut errs = vec![];
    for tol in [1e-6, 1e-9, 1e-12] {
        let tr = flow(&model, &data, adaptive(tol), lr, steps);
        let exact = closed_form(&model, &data, tr.time());
        let err = max_abs_diff(tr.model.weight(0), exact.as_ref());
        let (accepted, rejected) = tr.flow_substeps().unwrap();
        // The substeps shrank below the step where the flow is stiff.
        assert!(accepted > 2 * steps, "tol {tol:e}: {accepted} substeps accepted, {rejected} rejected");
        // Global error of the order of the tolerance (the flow is contracting, so local errors do not grow).
        assert!(err < 100.0 * tol, "tol {tol:e}: error {err:e} ({accepted} substeps, {rejected} rejected)");
        errs.push(err);
    }
    // Tightening the tolerance by 10³ buys at least a factor 10² in accuracy.
    assert!(errs[0] > 100.0 * errs[1] && errs[1] > 100.0 * errs[2], "{errs:?}");
}

#[test]
fn adaptive_flow_matches_rk4_where_both_are_accurate() {
    let (model, data) = case(1.0);
    let a = flow(&model, &data, adaptive(1e-12), 0.4, 25);
    let r = flow(&model, &data, rk4(64), 0.4, 25);
    let d: f64 = a.model.params.iter().zip(&r.model.params).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    assert!(d < 1e-10, "adaptive vs RK4(64 substeps): {d:e}");
    assert!(a.last_direction().is_some());
}

#[test]
fn tolerance_is_validated_and_parsed() {
    let spec = ModelSpec::from_compact("2-2", Activation::Identity, false).unwrap();
    for bad in [0.0, -1e-9, 1.0, f64::NAN] {
        let cfg = TrainConfig::new(spec.clone(), adaptive(bad), 0.1, 1);
        match cfg.validate() {
            Err(Error::Config(msg)) => assert!(msg.contains("tolerance"), "{msg}"),
            other => panic!("tolerance {bad} accepted: {other:?}"),
        }
    }
    let mut f32_cfg = TrainConfig::new(spec.clone(), adaptive(1e-9), 0.1, 1);
    f32_cfg.precision = Precision::F32;
    match f32_cfg.validate() {
        Err(Error::Config(msg)) => assert!(msg.contains("f32"), "{msg}"),
        other => panic!("f32 with tolerance 1e-9 accepted: {other:?}"),
    }
    f32_cfg.optimizer = adaptive(1e-4);
    f32_cfg.validate().unwrap();
    let toml = TrainConfig::new(spec, adaptive(1e-9), 0.1, 1).to_toml();
    assert!(toml.contains("tolerance = "), "{toml}");
    let back = TrainConfig::from_toml(&toml).unwrap();
    assert_eq!(back.optimizer, adaptive(1e-9));
}

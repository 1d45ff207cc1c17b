use crate::reference;
use noether::testutil::{fd_grad, max_rel_vec, random_case, rel};
use noether::{Activation, Loss};

#[test]
fn gradients_match_finite_differences_for_every_layer_kind() {
    let mut seed = 0;
    for act in Activation::all() {
        for loss in [Loss::Mse, Loss::CrossEntropy] {
            for bias in [false, true] {
                for norm in [[false, false, false], [true, false, false], [false, true, true]] {
                    seed += 1;
                    let acts = [act, act, Activation::Identity];
                    let (model, data) = random_case(&[4, 5, 3, 3], &acts, bias, &norm, loss, 7, seed);
                    let (_, g) = model.loss_and_grad(&data, loss, 3).unwrap();
                    let fd = fd_grad(&model, &data, loss, 1e-5);
                    let err = max_rel_vec(&g, &fd);
                    assert!(err < 1e-7, "{act:?} {loss:?} bias={bias} norm={norm:?}: rel err {err:e}");
                }
            }
        }
    }
}

#[test]
fn loss_and_gradient_match_reference_cases() {
    for case in reference::all() {
        let (l, g) = case.model.loss_and_grad(&case.data, case.loss, 16).unwrap();
        let want = case.json["loss_value"].as_f64().unwrap();
        assert!(rel(l, want, 1e-300) < 1e-10, "{}: loss {l} vs {want}", case.name);
        let gn = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        let want = case.json["grad_norm"].as_f64().unwrap();
        assert!(rel(gn, want, 1e-300) < 1e-10, "{}: |grad| {gn} vs {want}", case.name);
        for (i, w) in case.json["grad_first5"].as_array().unwrap().iter().enumerate() {
            let w = w.as_f64().unwrap();
            assert!((g[i] - w).abs() <= 1e-10 * gn, "{}: grad[{i}] {} vs {w}", case.name, g[i]);
        }
    }
}

#[test]
fn chunking_does_not_change_results() {
    let (model, data) = random_case(
        &[3, 6, 2],
        &[Activation::Relu, Activation::Identity],
        true,
        &[false, false],
        Loss::Mse,
        23,
        5,
    );
    let (l1, g1) = model.loss_and_grad(&data, Loss::Mse, 23).unwrap();
    let (l2, g2) = model.loss_and_grad(&data, Loss::Mse, 4).unwrap();
    assert!(rel(l1, l2, 1e-300) < 1e-14);
    assert!(max_rel_vec(&g1, &g2) < 1e-14);
}

#[test]
fn f32_engine_agrees_with_f64() {
    let (model, data) = random_case(
        &[5, 8, 3],
        &[Activation::Tanh, Activation::Identity],
        true,
        &[false, false],
        Loss::CrossEntropy,
        30,
        9,
    );
    let (l64, g64) = model.loss_and_grad(&data, Loss::CrossEntropy, 30).unwrap();
    let (l32, g32) = model.cast::<f32>().loss_and_grad(&data.cast::<f32>(), Loss::CrossEntropy, 30).unwrap();
    assert!(rel(l32, l64, 1e-300) < 1e-5);
    assert!(max_rel_vec(&g32, &g64) < 1e-4);
}

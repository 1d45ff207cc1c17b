//! Times one exact HVP of a dense chain (`curvature::HessianOperator`, which runs `NetHessian` on the chain's
//! module tree) at several chunk sizes against one gradient, on a relu MLP 784-512-512-10 with N = 5000, and
//! prints how far the chunk sizes' products differ (round-off only; correctness is `tests/curvature.rs`: a
//! central difference is no oracle here, relu kinks crossed by the step put spikes of size |Δ∇ℓ|/2h in it).
//! `cargo run --release --example prof_hvp_engines`.

use noether::curvature::{Curvature, HessianOperator, HvpOptions};
use noether::model::Init;
use noether::{Activation, Architecture, Dataset, Loss, Model, Targets};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::time::Instant;

fn secs<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    let n = 5000;
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let arch = Architecture::mlp(&[784, 512, 512, 10], Activation::Relu, true).unwrap();
    let mut model = Model::zeros(arch);
    Init::Kaiming.apply(&mut model, &[], &mut rng).unwrap();
    let x = faer::Mat::from_fn(n, 784, |_, _| StandardNormal.sample(&mut rng));
    let y = Targets::Classes((0..n).map(|_| rng.random_range(0..10)).collect());
    let data = Dataset::new(x, y).unwrap();
    let p = model.params.len();
    let v: Vec<f64> = (0..p).map(|_| StandardNormal.sample(&mut rng)).collect();
    let mut hv = vec![0.0; p];
    let loss = Loss::CrossEntropy;
    let mut first: Option<Vec<f64>> = None;
    for round in 0..3 {
        let t_grad = secs(2, || {
            std::hint::black_box(model.loss_and_grad(&data, loss, n).unwrap());
        });
        let mut line = format!("round {round}: gradient {t_grad:.3} s;");
        for chunk in [256, 1024, 4096] {
            let opts = HvpOptions { curvature: Curvature::Hessian, chunk };
            let mut op = HessianOperator::new(&model, &data, loss, opts).unwrap();
            let t = secs(2, || op.hvp_into(&v, &mut hv).unwrap());
            let r = first.get_or_insert_with(|| hv.clone());
            let diff = hv.iter().zip(r.iter()).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
                / r.iter().map(|x| x.abs()).fold(0.0, f64::max);
            line += &format!(" chunk {chunk}: {t:.3} s ({:.2}×, vs chunk 256 {diff:.0e});", t / t_grad);
        }
        println!("{line}");
    }
}

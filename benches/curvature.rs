//! Curvature benchmarks: one exact HVP vs one gradient for a relu MLP 784-512-512-10 on 5000 samples (target
//! ≤ 3×), and the top Hessian eigenvalue of that model to 1e-4 relative (HVP count and wall time, printed once).

use criterion::{criterion_group, Criterion};
use noether::curvature::{lanczos_eigenvalues, Curvature, HessianOperator, HvpOptions, LanczosOptions};
use noether::model::Init;
use noether::{Activation, Architecture, Dataset, Loss, Model, Targets};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::hint::black_box;
use std::time::Instant;

const N: usize = 5000;

fn setup() -> (Model<f64>, Dataset<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let arch = Architecture::mlp(&[784, 512, 512, 10], Activation::Relu, true).unwrap();
    let mut model = Model::zeros(arch);
    Init::Kaiming.apply(&mut model, &[], &mut rng).unwrap();
    let x = faer::Mat::from_fn(N, 784, |_, _| StandardNormal.sample(&mut rng));
    let y = Targets::Classes((0..N).map(|_| rng.random_range(0..10)).collect());
    (model, Dataset::new(x, y).unwrap())
}

fn secs<F: FnMut()>(reps: usize, mut f: F) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    t.elapsed().as_secs_f64() / reps as f64
}

fn hvp_vs_gradient(c: &mut Criterion) {
    let (model, data) = setup();
    let p = model.arch.n_params();
    let v: Vec<f64> = {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        (0..p).map(|_| StandardNormal.sample(&mut rng)).collect()
    };
    let mut out = vec![0.0; p];
    let opts = HvpOptions { curvature: Curvature::Hessian, chunk: N };

    // Plain wall-clock ratio, printed once (criterion below gives the distributions).
    let t_grad = secs(3, || {
        black_box(model.loss_and_grad(&data, Loss::CrossEntropy, N).unwrap());
    });
    let mut op = HessianOperator::new(&model, &data, Loss::CrossEntropy, opts).unwrap();
    let t_hvp = secs(3, || op.hvp_into(&v, &mut out).unwrap());
    eprintln!(
        "[curvature] 784-512-512-10 relu, N = {N}, P = {p}: gradient {:.3} s, exact HVP {:.3} s ({:.2}× gradient)",
        t_grad,
        t_hvp,
        t_hvp / t_grad
    );

    let mut g = c.benchmark_group("curvature/mlp784_n5000");
    g.sample_size(10);
    g.bench_function("gradient", |b| {
        b.iter(|| black_box(model.loss_and_grad(&data, Loss::CrossEntropy, N).unwrap()))
    });
    g.bench_function("hvp_exact", |b| b.iter(|| op.hvp_into(&v, &mut out).unwrap()));
    g.finish();
}

fn top_eigenvalue(_c: &mut Criterion) {
    // One timed run (a criterion loop of minute-long runs would not fit the time budget), checked against a
    // tight reference run from a different start vector.
    let (model, data) = setup();
    let opts = HvpOptions { curvature: Curvature::Hessian, chunk: N };
    let mut op = HessianOperator::new(&model, &data, Loss::CrossEntropy, opts).unwrap();
    let t = Instant::now();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let fast = lanczos_eigenvalues(&mut op, 1, false, &LanczosOptions { max_iter: 300, tol: 1e-4 }, &mut rng)
        .unwrap();
    let wall = t.elapsed().as_secs_f64();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let tight =
        lanczos_eigenvalues(&mut op, 1, false, &LanczosOptions { max_iter: 300, tol: 1e-10 }, &mut rng)
            .unwrap();
    eprintln!(
        "[curvature] top eigenvalue {:.8e} in {:.2} s, {} HVPs (tol 1e-4: {:?}); tight run {:.10e} ({} HVPs, {:?}); \
         relative difference {:.2e}",
        fast.top[0],
        wall,
        fast.info.hvps,
        fast.info,
        tight.top[0],
        tight.info.hvps,
        tight.info.converged,
        (fast.top[0] - tight.top[0]).abs() / tight.top[0].abs()
    );
}

criterion_group!(benches, hvp_vs_gradient, top_eigenvalue);

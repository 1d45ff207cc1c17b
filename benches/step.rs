//! `step/*`: one SGD step (load batch, forward, backward, update) for the paper's shapes.

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use noether::data::{Dataset, Sampling, Targets};
use noether::dynamics::{Method, TrainConfig, TrainData, Trainer};
use noether::model::{Init, ModelSpec};
use noether::{Activation, Loss, Real};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::hint::black_box;

/// Named scenarios: (name, widths, activation, batch size).
const SCENARIOS: &[(&str, &[usize], Activation, usize)] = &[
    ("paper_fig2_30_40_30_s1", &[30, 40, 30], Activation::Identity, 1),
    ("paper_fig2_30_40_30_s64", &[30, 40, 30], Activation::Identity, 64),
    ("mlp_784_512_512_10_s128", &[784, 512, 512, 10], Activation::Relu, 128),
];

/// A trainer for a scenario with random Gaussian data (N = max(1024, 4S)).
pub fn trainer<T: Real>(dims: &[usize], act: Activation, s: usize) -> Trainer<T> {
    let mut spec = ModelSpec::from_compact(
        &dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("-"),
        act,
        act != Activation::Identity,
    )
    .unwrap();
    spec.init = Init::Kaiming;
    let sgd = Method::Sgd { batch_size: s, sampling: Sampling::WithReplacement };
    let config = TrainConfig::new(spec.clone(), sgd, 1e-4, u64::MAX).with_loss(Loss::Mse);
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let model = spec.build::<T, _>(&mut rng).unwrap();
    let n = (4 * s).max(1024);
    let (din, dout) = (dims[0], dims[dims.len() - 1]);
    let x = faer::Mat::from_fn(n, din, |i, j| T::from_f64(((i * 7 + j * 13) % 17) as f64 / 17.0 - 0.5));
    let y = faer::Mat::from_fn(n, dout, |i, j| T::from_f64(((i * 3 + j * 5) % 11) as f64 / 11.0 - 0.5));
    let data = Dataset::new(x, Targets::Dense(y)).unwrap();
    Trainer::new(model, TrainData::Finite(data), &config, rng).unwrap()
}

fn bench_sgd_step(c: &mut Criterion) {
    let mut g = c.benchmark_group("step/sgd_flop");
    for &(name, dims, act, s) in SCENARIOS {
        let arch = noether::Architecture::mlp(dims, act, false).unwrap();
        g.throughput(Throughput::Elements(arch.train_flops(s) as u64));
        let mut t64 = trainer::<f64>(dims, act, s);
        g.bench_function(BenchmarkId::new("f64", name), |b| b.iter(|| t64.step().unwrap()));
        black_box(&t64.model.params);
        if s > 1 {
            let mut t32 = trainer::<f32>(dims, act, s);
            g.bench_function(BenchmarkId::new("f32", name), |b| b.iter(|| t32.step().unwrap()));
        }
    }
    g.finish();
}

/// The GEMMs of one forward + backward pass alone (the floor an SGD step is compared with).
fn bench_gemms_alone(c: &mut Criterion) {
    let mut g = c.benchmark_group("step/gemms_only_flop");
    for &(name, dims, _act, s) in SCENARIOS.iter().filter(|s| s.3 > 1) {
        let arch = noether::Architecture::mlp(dims, Activation::Identity, false).unwrap();
        g.throughput(Throughput::Elements(arch.train_flops(s) as u64));
        fn run<T: Real>(dims: &[usize], s: usize) -> impl FnMut() {
            let ws: Vec<faer::Mat<T>> = dims
                .windows(2)
                .map(|w| faer::Mat::from_fn(w[1], w[0], |i, j| T::from_f64(((i + j) % 5) as f64 * 0.01)))
                .collect();
            let mut acts: Vec<faer::Mat<T>> = dims
                .iter()
                .map(|&d| faer::Mat::from_fn(s, d, |i, j| T::from_f64(((i + 2 * j) % 7) as f64 * 0.1)))
                .collect();
            let mut grads: Vec<faer::Mat<T>> =
                dims.windows(2).map(|w| faer::Mat::zeros(w[1], w[0])).collect();
            move || {
                for l in 0..ws.len() {
                    let (a, b) = acts.split_at_mut(l + 1);
                    noether::linalg::gemm(b[0].as_mut(), false, a[l].as_ref(), ws[l].transpose(), T::one());
                }
                for l in (0..ws.len()).rev() {
                    noether::linalg::gemm(
                        grads[l].as_mut(),
                        false,
                        acts[l + 1].transpose(),
                        acts[l].as_ref(),
                        T::one(),
                    );
                    if l > 0 {
                        let (a, b) = acts.split_at_mut(l + 1);
                        noether::linalg::gemm(a[l].as_mut(), false, b[0].as_ref(), ws[l].as_ref(), T::one());
                    }
                }
            }
        }
        let mut f64run = run::<f64>(dims, s);
        g.bench_function(BenchmarkId::new("f64", name), |b| b.iter(&mut f64run));
        let mut f32run = run::<f32>(dims, s);
        g.bench_function(BenchmarkId::new("f32", name), |b| b.iter(&mut f32run));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench_sgd_step, bench_gemms_alone
}

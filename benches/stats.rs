//! `stats/…`: the statistics pass of `noether analyze` against one plain forward + backward pass over the same
//! data, and the joint rescaling equilibrium once the statistics are known.
//! Scenario `mlp_784_1024_1024_10` (relu), N = `NOETHER_BENCH_N` (default 60 000) synthetic samples.

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use faer::Mat;
use noether::data::Targets;
use noether::equilibrium::rescale::DiagProblem;
use noether::equilibrium::Time;
use noether::stats::{moments, MomentOptions};
use noether::{Activation, Architecture, Dataset, Loss, Model, Real};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::time::Duration;

const SCENARIO: (&str, &[usize]) = ("mlp_784_1024_1024_10", &[784, 1024, 1024, 10]);
const CHUNK: usize = 1024;

fn n_samples() -> usize {
    std::env::var("NOETHER_BENCH_N").ok().and_then(|v| v.parse().ok()).unwrap_or(60_000)
}

fn setup<T: Real>(n: usize) -> (Model<T>, Dataset<T>) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let dims = SCENARIO.1;
    let arch = Architecture::mlp(dims, Activation::Relu, true).unwrap();
    let mut model = Model::<f64>::zeros(arch);
    for l in 0..model.arch.n_layers() {
        let s = (2.0 / model.arch.layers[l].d_in as f64).sqrt();
        for k in model.arch.weight_range(l) {
            let g: f64 = StandardNormal.sample(&mut rng);
            model.params[k] = s * g;
        }
    }
    let x = Mat::<f64>::from_fn(n, dims[0], |_, _| StandardNormal.sample(&mut rng));
    let y: Vec<usize> = (0..n).map(|i| (i * 7) % 10).collect();
    let data = Dataset::new(x, Targets::Classes(y)).unwrap();
    (model.cast(), data.cast())
}

fn bench_precision<T: Real>(c: &mut Criterion, name: &str) {
    let n = n_samples();
    let (model, data) = setup::<T>(n);
    let flops = model.arch.train_flops(n);
    let mut g = c.benchmark_group(format!("stats/analyze_flop/{name}"));
    g.sample_size(10).measurement_time(Duration::from_secs(20)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(flops as u64));
    let id = |what: &str| BenchmarkId::new(what, format!("{}_n{n}", SCENARIO.0));
    g.bench_function(id("plain_forward_backward"), |b| {
        b.iter(|| model.loss_and_grad(&data, Loss::CrossEntropy, CHUNK).unwrap())
    });
    let ghost = MomentOptions { elementwise: false, pair_grams: true, chunk: CHUNK };
    g.bench_function(id("per_unit_noise"), |b| {
        b.iter(|| moments(&model, &data, Loss::CrossEntropy, &ghost).unwrap())
    });
    let full = MomentOptions { elementwise: true, pair_grams: true, chunk: CHUNK };
    g.bench_function(id("with_element_moments"), |b| {
        b.iter(|| moments(&model, &data, Loss::CrossEntropy, &full).unwrap())
    });
    g.finish();
    if name == "f64" {
        let m = moments(&model, &data, Loss::CrossEntropy, &full).unwrap();
        let mut g = c.benchmark_group("stats/joint_rescale_equilibrium");
        g.sample_size(20);
        g.bench_function(BenchmarkId::new("build_and_solve", SCENARIO.0), |b| {
            b.iter(|| {
                let p = DiagProblem::from_moments(&m, Time::Continuous).unwrap();
                p.solve(&[true; 3], 1e-12, 100_000)
            })
        });
        let p = DiagProblem::from_moments(&m, Time::Continuous).unwrap();
        g.bench_function(BenchmarkId::new("solve", SCENARIO.0), |b| {
            b.iter(|| p.solve(&[true; 3], 1e-12, 100_000))
        });
        g.finish();
        let sol = DiagProblem::from_moments(&m, Time::Continuous).unwrap().solve(&[true; 3], 1e-12, 100_000);
        eprintln!(
            "joint equilibrium: {} sweeps, residual {:.1e}, Tr Σ {:.4e} → {:.4e}",
            sol.sweeps, sol.max_rel_residual, sol.objective_start, sol.objective
        );
    }
}

fn stats_benches(c: &mut Criterion) {
    if std::env::var("NOETHER_BENCH_ONLY_F64").is_err() {
        bench_precision::<f32>(c, "f32");
    }
    bench_precision::<f64>(c, "f64");
}

criterion_group!(benches, stats_benches);

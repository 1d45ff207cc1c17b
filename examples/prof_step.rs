//! Times `Trainer::step` for the paper's 30-40-30 net: `prof_step S STEPS [ACTIVATION] [f32]` (identity by
//! default: the linear net; f64 unless `f32`).
use noether::dynamics::{Method, TrainConfig, TrainData, Trainer};
use noether::model::{Init, ModelSpec};
use noether::{Activation, Loss, Real};
use rand::SeedableRng;

fn main() {
    let arg = |i: usize| std::env::args().nth(i).and_then(|v| v.parse().ok());
    let (s, steps): (usize, usize) = (arg(1).unwrap_or(1), arg(2).unwrap_or(1_000_000));
    let act = std::env::args().nth(3).map_or(Activation::Identity, |a| Activation::parse(&a).unwrap());
    let mut spec = ModelSpec::from_compact("30-40-30", act, false).unwrap();
    spec.init = Init::Kaiming;
    let sgd = Method::Sgd { batch_size: s, sampling: noether::data::Sampling::WithReplacement };
    let config = TrainConfig::new(spec.clone(), sgd, 1e-4, u64::MAX).with_loss(Loss::Mse);
    let rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let (_, data) = noether::testutil::random_case(
        &[30, 40, 30],
        &[act, Activation::Identity],
        false,
        &[false; 2],
        Loss::Mse,
        1024,
        1,
    );
    let f32 = std::env::args().nth(4).is_some_and(|a| a == "f32");
    let per_step = if f32 {
        run::<f32>(&spec, &config, &data, rng, steps)
    } else {
        run::<f64>(&spec, &config, &data, rng, steps)
    };
    println!("S={s} {} {}: {per_step:.3} µs/step", act.name(), if f32 { "f32" } else { "f64" });
}

fn run<T: Real>(
    spec: &ModelSpec,
    config: &TrainConfig,
    data: &noether::Dataset<f64>,
    mut rng: rand_chacha::ChaCha8Rng,
    steps: usize,
) -> f64 {
    let model = spec.build::<T, _>(&mut rng).unwrap();
    let mut t = Trainer::new(model, TrainData::Finite(data.cast::<T>()), config, rng).unwrap();
    let start = std::time::Instant::now();
    for _ in 0..steps {
        t.step().unwrap();
    }
    start.elapsed().as_secs_f64() / steps as f64 * 1e6
}

//! Times the module-tree engine's whole-data passes, for comparison with `shared/peers/run.sh` on the same files:
//! the plain forward + backward pass (mean gradient) and the statistics pass of `analyze` (per-coordinate second
//! moments). Writes the initialised model (PyTorch default init, seed 0) so the peer can load the same weights.
//!
//!   cargo run --release --example prof_net_pass -- ARCH.toml DATA.safetensors MODEL_OUT.safetensors [f32]

use noether::data::load_dataset_shaped;
use noether::net::{loss_and_grad, save_net, Net, NetArch};
use noether::stats::net::{net_moments, MomentPath};
use noether::{Loss, Real};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn run<T: Real>(net: &Net<f64>, data: &noether::Dataset<f64>) {
    let (net, data) = (net.cast::<T>(), data.cast::<T>());
    let loss = Loss::CrossEntropy;
    let plain = median(
        (0..3)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(loss_and_grad(&net, &data, loss).unwrap());
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    let stats = median(
        (0..3)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(net_moments(&net, &data, loss, MomentPath::Auto).unwrap());
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    println!(
        "{}: plain pass {plain:.3} s, statistics pass {stats:.3} s ({:.2}× the plain pass)",
        std::any::type_name::<T>(),
        stats / plain
    );
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arch = NetArch::load(std::path::Path::new(&a[1])).unwrap();
    let (data, _) = load_dataset_shaped::<f64>(std::path::Path::new(&a[2])).unwrap();
    let net = Net::<f64>::init(arch, 0);
    save_net::<f64, f64>(&net, std::path::Path::new(&a[3])).unwrap();
    println!("N = {}, P = {}", data.len(), net.params.len());
    if a.get(4).map(String::as_str) == Some("f32") {
        run::<f32>(&net, &data);
    } else {
        run::<f64>(&net, &data);
    }
}

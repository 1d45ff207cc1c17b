//! Sequential against two-thread GEMMs for one SGD pass (the module-tree tape of the chain) of 784-512-512-10 relu at several batch sizes
//! (`linalg::PAR_MIN_FLOPS` is chosen from this).
use noether::net::{NetArch, Rows, Tape};
use noether::testutil::random_case;
use noether::{Activation, Loss};
fn main() {
    let acts = [Activation::Relu, Activation::Relu, Activation::Identity];
    let (model, data) = random_case(&[784, 512, 512, 10], &acts, true, &[false; 3], Loss::Mse, 512, 1);
    let mut g = vec![0.0f64; model.arch.n_params()];
    for b in [8usize, 16, 32, 64, 128] {
        let time = |par: faer::Par, g: &mut Vec<f64>| {
            let mut tape = Tape::new(&NetArch::from_dense(&model.arch).unwrap(), b).with_par(par);
            let reps = 4000 / b;
            let t0 = std::time::Instant::now();
            for r in 0..reps {
                tape.load(&data, Rows::Range((r * b) % 256..(r * b) % 256 + b)).unwrap();
                tape.forward(&model.params);
                tape.loss_grad(Loss::Mse);
                tape.backward_into(&model.params, g, 1.0);
            }
            t0.elapsed().as_secs_f64() / reps as f64 * 1e3
        };
        let (s, p) = (time(faer::Par::Seq, &mut g), time(faer::Par::rayon(0), &mut g));
        let gf = model.arch.train_flops(b) / 1e9;
        println!("B={b:4} ({gf:.3} GFLOP): seq {s:.3} ms, two threads {p:.3} ms, seq/par {:.2}", s / p);
    }
}

use noether::linalg::sgd_update_in_place;
use noether::model::SmallBatchStep;
use noether::net::{NetArch, Rows, Tape};
use noether::testutil::random_case;
use noether::{Activation, Loss};
fn main() {
    let acts = [Activation::Identity, Activation::Identity];
    let (mut model, data) = random_case(&[30, 40, 30], &acts, false, &[false, false], Loss::Mse, 1024, 1);
    model.params.iter_mut().for_each(|v| *v *= 0.1);
    let reps = 200_000;
    for b in [1usize, 2, 4, 8] {
        let rows: Vec<Vec<usize>> =
            (0..64).map(|k| (0..b).map(|i| (k * 37 + i * 11) % 1024).collect()).collect();
        let mut fused = SmallBatchStep::<f64>::new(&model.arch, b);
        let mut theta = model.params.clone();
        let mut g = vec![0.0; theta.len()];
        let t0 = std::time::Instant::now();
        for r in 0..reps {
            fused.load_rows(&data, &rows[r % 64]);
            fused.step(&mut theta, &mut g, false, Loss::Mse, 1e-4, 0.0);
        }
        let tf = t0.elapsed().as_secs_f64() / reps as f64 * 1e6;
        let mut tape = Tape::<f64>::new(&NetArch::from_dense(&model.arch).unwrap(), b);
        let mut m2 = model.clone();
        let t0 = std::time::Instant::now();
        for r in 0..reps {
            tape.load(&data, Rows::Index(&rows[r % 64])).unwrap();
            tape.forward(&m2.params);
            tape.loss_grad(Loss::Mse);
            tape.backward_into(&m2.params, &mut g, 1.0 / b as f64);
            sgd_update_in_place(&mut m2.params, &g, 1e-4, 0.0);
        }
        let tt = t0.elapsed().as_secs_f64() / reps as f64 * 1e6;
        println!("B={b}: fused {tf:.3} us, tape {tt:.3} us, tape/fused {:.2}", tt / tf);
    }
}

use noether::linalg::sgd_update_in_place;
use noether::model::Tape;
use noether::testutil::random_case;
use noether::{Activation, Loss};
fn main() {
    let acts = [Activation::Identity, Activation::Identity];
    let (mut model, data) = random_case(&[30, 40, 30], &acts, false, &[false, false], Loss::Mse, 1024, 1);
    model.params.iter_mut().for_each(|v| *v *= 0.1);
    let b = 64;
    let rows: Vec<Vec<usize>> = (0..64).map(|k| (0..b).map(|i| (k * 37 + i * 11) % 1024).collect()).collect();
    let mut g = vec![0.0; model.params.len()];
    let mut tape = Tape::<f64>::new(&model.arch, b);
    let reps: usize = std::env::args().nth(1).unwrap().parse().unwrap();
    let t0 = std::time::Instant::now();
    for r in 0..reps {
        tape.load_rows(&data, &rows[r % 64]);
        tape.forward(&model);
        tape.loss_and_output_grad(Loss::Mse).unwrap();
        tape.backward(&model, Some(&mut g), 1.0 / b as f64);
        sgd_update_in_place(&mut model.params, &g, 1e-4, 0.0);
    }
    println!("{:.3} us", t0.elapsed().as_secs_f64() / reps as f64 * 1e6);
}

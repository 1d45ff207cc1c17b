//! Independent oracles for tests: central finite differences and a brute-force per-sample gradient loop.
//! Not for production use: these are slow on purpose and form the per-sample gradients that the library
//! otherwise never materialises.
#![allow(missing_docs)]

use crate::data::{Dataset, Targets};
use crate::error::Result;
use crate::loss::Loss;
use crate::model::{Activation, Architecture, Model};
use crate::real::Real;
use faer::Mat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// Central-difference gradient of the mean loss (f64), step `h`.
pub fn fd_grad(model: &Model<f64>, data: &Dataset<f64>, loss: Loss, h: f64) -> Vec<f64> {
    let mut m = model.clone();
    (0..m.params.len())
        .map(|i| {
            let v = m.params[i];
            m.params[i] = v + h;
            let lp = m.loss(data, loss, 1 << 16).unwrap();
            m.params[i] = v - h;
            let lm = m.loss(data, loss, 1 << 16).unwrap();
            m.params[i] = v;
            (lp - lm) / (2.0 * h)
        })
        .collect()
}

/// Per-sample gradients `g_n` (rows), one backward pass per sample: the brute-force oracle.
pub fn per_sample_grads<T: Real>(model: &Model<T>, data: &Dataset<T>, loss: Loss) -> Result<Vec<Vec<f64>>> {
    let mut tape = crate::net::DenseTape::new(&model.arch, 1, Some(faer::Par::Seq))?;
    let mut g = vec![T::zero(); model.arch.n_params()];
    let mut out = Vec::with_capacity(data.len());
    crate::net::for_each_chunk(&mut tape, data, |t, _| {
        t.pass(model, loss, Some(&mut g));
        out.push(g.iter().map(|v| v.to_f64()).collect());
        Ok(())
    })?;
    Ok(out)
}

/// Centred covariance `Σ = (1/N)Σ g_n g_nᵀ − ḡḡᵀ` (P × P) from explicit per-sample gradients.
pub fn covariance_centred(grads: &[Vec<f64>]) -> Mat<f64> {
    let (n, p) = (grads.len(), grads[0].len());
    let mean: Vec<f64> = (0..p).map(|i| grads.iter().map(|g| g[i]).sum::<f64>() / n as f64).collect();
    Mat::from_fn(p, p, |i, j| grads.iter().map(|g| g[i] * g[j]).sum::<f64>() / n as f64 - mean[i] * mean[j])
}

/// A random model and data set for property tests.
pub fn random_case(
    dims: &[usize],
    acts: &[Activation],
    bias: bool,
    norm: &[bool],
    loss: Loss,
    n: usize,
    seed: u64,
) -> (Model<f64>, Dataset<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let l = dims.len() - 1;
    let arch = Architecture::new(dims, acts, &vec![bias; l], norm).unwrap();
    let mut model = Model::zeros(arch);
    for v in model.params.iter_mut() {
        let g: f64 = StandardNormal.sample(&mut rng);
        *v = 0.7 * g;
    }
    let x = Mat::from_fn(n, dims[0], |_, _| StandardNormal.sample(&mut rng));
    let dout = dims[l];
    let y = match loss {
        Loss::Mse => Targets::Dense(Mat::from_fn(n, dout, |_, _| StandardNormal.sample(&mut rng))),
        Loss::CrossEntropy => Targets::Classes((0..n).map(|_| rng.random_range(0..dout)).collect()),
    };
    (model, Dataset::new(x, y).unwrap())
}

/// Relative error `|a − b| / max(|b|, floor)`.
pub fn rel(a: f64, b: f64, floor: f64) -> f64 {
    (a - b).abs() / b.abs().max(floor)
}

/// Max relative error of two vectors, relative to the larger norm-inf of the reference.
pub fn max_rel_vec(a: &[f64], b: &[f64]) -> f64 {
    let scale = b.iter().map(|v| v.abs()).fold(0.0, f64::max).max(1e-300);
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max) / scale
}

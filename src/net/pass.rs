//! The one pass driver over a data set: the samples in chunks of [`CHUNK`], each chunk's tape handed to a
//! closure. Loss and gradient, per-sample losses, moments and HVPs are closures over it (all means are 1/N).

use super::{Net, Rows, Tape};
use crate::curvature::LinearOperator;
use crate::data::Dataset;
use crate::error::Result;
use crate::loss::Loss;
use crate::real::Real;

/// Samples per chunk of a whole-data pass.
pub const CHUNK: usize = 256;

/// Runs `f(tape, range)` for consecutive chunks of `data`, the chunk's samples loaded into `tape`.
pub fn for_each_chunk<T: Real>(
    tape: &mut Tape<T>,
    data: &Dataset<T>,
    mut f: impl FnMut(&mut Tape<T>, std::ops::Range<usize>) -> Result<()>,
) -> Result<()> {
    let n = data.len();
    let step = tape.capacity();
    let mut start = 0;
    while start < n {
        let end = (start + step).min(n);
        tape.load(data, Rows::Range(start..end))?;
        f(tape, start..end)?;
        start = end;
    }
    Ok(())
}

/// Mean loss `L = (1/N) Σ ℓ_n` and mean gradient `∇L` (f64) over `data`.
pub fn loss_and_grad<T: Real>(net: &Net<T>, data: &Dataset<T>, loss: Loss) -> Result<(f64, Vec<f64>)> {
    let mut tape = Tape::new(&net.arch, CHUNK.min(data.len()));
    let mut grad = vec![T::zero(); net.params.len()];
    let mut total = 0.0;
    let mut chunk_grad = vec![T::zero(); net.params.len()];
    let mut g64 = vec![0.0; net.params.len()];
    for_each_chunk(&mut tape, data, |t, _| {
        t.forward(&net.params);
        total += t.loss_grad(loss);
        chunk_grad.iter_mut().for_each(|v| *v = T::zero());
        t.backward(&net.params, Some((&mut chunk_grad, T::one())));
        for (a, &v) in g64.iter_mut().zip(&chunk_grad) {
            *a += v.to_f64();
        }
        Ok(())
    })?;
    let n = data.len() as f64;
    grad.clear();
    Ok((total / n, g64.into_iter().map(|v| v / n).collect()))
}

/// Per-sample losses `ℓ_n` over `data`.
pub fn per_sample_losses<T: Real>(net: &Net<T>, data: &Dataset<T>, loss: Loss) -> Result<Vec<f64>> {
    let mut tape = Tape::new(&net.arch, CHUNK.min(data.len()));
    let mut out = vec![0.0; data.len()];
    for_each_chunk(&mut tape, data, |t, r| {
        t.forward(&net.params);
        t.losses_into(loss, &mut out[r]);
        Ok(())
    })?;
    Ok(out)
}

/// The Hessian of the mean loss of a net over a data set as a [`LinearOperator`] (exact R-operator products,
/// f64, 1/N).
pub struct NetHessian<'a> {
    net: &'a Net<f64>,
    data: &'a Dataset<f64>,
    loss: Loss,
    tape: Tape<f64>,
    products: usize,
}

impl<'a> NetHessian<'a> {
    /// The operator for `net` on `data` with `loss`.
    pub fn new(net: &'a Net<f64>, data: &'a Dataset<f64>, loss: Loss) -> Result<Self> {
        net.check_data(data, None, loss)?;
        let tape = Tape::new(&net.arch, CHUNK.min(data.len()));
        Ok(Self { net, data, loss, tape, products: 0 })
    }
}

impl LinearOperator for NetHessian<'_> {
    fn dim(&self) -> usize {
        self.net.params.len()
    }
    fn apply_into(&mut self, v: &[f64], out: &mut [f64]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        let alpha = 1.0 / self.data.len() as f64;
        let (net, loss) = (self.net, self.loss);
        for_each_chunk(&mut self.tape, self.data, |t, _| {
            t.hvp(&net.params, v, loss, out, alpha);
            Ok(())
        })
        .expect("data checked when the operator was built");
        self.products += 1;
    }
    fn products(&self) -> usize {
        self.products
    }
}

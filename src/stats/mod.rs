//! Per-sample statistics from each layer's `(X_l, Δ_l)`, without forming per-sample gradients.
//!
//! The per-sample gradient of a dense weight is `g_n = δ_n x_nᵀ` (and `δ_n` for the bias), so
//! `‖g_n‖² = ‖δ_n‖²(‖x_n‖² + 1_bias)` and `vᵀg_n = δ_nᵀ V x_n + δ_nᵀ v_b` for a direction `v` laid out like θ.
//!
//! [`moments()`] gathers in one chunked pass everything the noise geometry needs: Tr Σ, per-unit incoming and
//! outgoing noise, element-wise moments of coupled layers and the `d × d` moments of linear pairs.

pub mod moments;
pub mod net;
mod verify;

pub use moments::{
    frobenius, linear_pair, moments, per_sample_grad_sq_norms, per_sample_quad, rescalable, LayerMoments,
    MomentOptions, Moments,
};
pub use verify::{verify, verify_net, Verification};

use crate::data::Dataset;
use crate::error::Result;
use crate::linalg::{gemm, row_sq_norms_into};
use crate::loss::Loss;
use crate::model::Model;
use crate::net::{for_each_chunk, DenseTape};
use crate::real::Real;
use faer::{Mat, MatRef};

/// Per-sample directional derivatives and gradient norms.
#[derive(Clone, Debug)]
pub struct PerSampleDirectional {
    /// `vᵀ∇ℓ(θ, x_n)` for each sample.
    pub dots: Vec<f64>,
    /// `‖∇ℓ(θ, x_n)‖` for each sample.
    pub grad_norms: Vec<f64>,
}

/// `vᵀ∇ℓ(θ, x_n)` and `‖∇ℓ(θ, x_n)‖` for every sample, in chunks of `chunk` samples.
/// Cost: one forward + backward and one `[B, d_in] × [d_in, d_out]` GEMM per layer.
pub fn per_sample_directional<T: Real>(
    model: &Model<T>,
    data: &Dataset<T>,
    loss: Loss,
    v: &[f64],
    chunk: usize,
) -> Result<PerSampleDirectional> {
    data.check_fits(model.arch.d_in(), model.arch.d_out(), loss)?;
    let n = data.len();
    let mut tape = DenseTape::new(&model.arch, chunk.min(n), None)?;
    let mut dots = vec![0.0; n];
    let mut norms = vec![0.0; n];
    for_each_chunk(&mut tape, data, |tape, r| {
        tape.pass(model, loss, None);
        let b = r.len();
        for l in 0..model.arch.n_layers() {
            let ly = model.arch.layers[l];
            let x = to_f64(tape.input(l));
            let d = to_f64(tape.delta(l));
            let vw = MatRef::from_row_major_slice(&v[model.arch.weight_range(l)], ly.d_out, ly.d_in);
            let mut xv = Mat::<f64>::zeros(b, ly.d_out);
            gemm(xv.as_mut(), false, x.as_ref(), vw.transpose(), 1.0);
            let vb = &v[model.arch.bias_range(l)];
            let (mut xn, mut dn) = (vec![0.0; b], vec![0.0; b]);
            row_sq_norms_into(x.as_ref(), &mut xn);
            row_sq_norms_into(d.as_ref(), &mut dn);
            for i in 0..b {
                let mut s = 0.0;
                for j in 0..ly.d_out {
                    s += d[(i, j)] * (xv[(i, j)] + if ly.bias { vb[j] } else { 0.0 });
                }
                dots[r.start + i] += s;
                norms[r.start + i] += dn[i] * (xn[i] + if ly.bias { 1.0 } else { 0.0 });
            }
        }
        Ok(())
    })?;
    norms.iter_mut().for_each(|v| *v = v.sqrt());
    Ok(PerSampleDirectional { dots, grad_norms: norms })
}

/// A `[B, d]` batch matrix converted to f64.
pub fn to_f64<T: Real>(m: MatRef<'_, T>) -> Mat<f64> {
    Mat::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)].to_f64())
}

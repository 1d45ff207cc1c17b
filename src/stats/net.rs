//! Per-sample moments of a module tree: the mean gradient and the uncentred second moment of every
//! coordinate of θ, `m_k = (1/N) Σ_n g_{n,k}²`, from which `Σ_kk = m_k − ḡ_k²` (centred, 1/N) and every
//! diagonal generator's `Tr[AΣ]`, noise in/out and joint equilibrium follow (`crate::equilibrium::net`).
//!
//! Two paths per parameterised kind, chosen by [`MomentPath`]:
//! - generic: the per-sample gradient of each module materialised one sample at a time (bounded memory);
//! - quadratic form: linear `(Δ∘Δ)(X∘X)ᵀ` (one GEMM, DESIGN.md §1); for conv the element moments need the
//!   per-sample gradient, and the quadratic form `Σ_{p,q}(δ_pᵀδ_q)(x_pᵀx_q)` gives the per-sample norms
//!   ([`per_sample_grad_sq_norms`]).
//!
//! Sums are accumulated in f64 per chunk whatever the compute precision.

use crate::data::Dataset;
use crate::error::Result;
use crate::loss::Loss;
use crate::net::pass::lanes_map;
use crate::net::{for_each_chunk, Kind, Net, Op, Program, Step, Tape, CHUNK};
use crate::real::Real;

/// Which way the per-sample moments of a module are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MomentPath {
    /// The quadratic form where the kind has one and it is cheaper, else the generic path.
    Auto,
    /// Per-sample gradients materialised one sample at a time (every kind; the test oracle's shape).
    Generic,
    /// The quadratic form wherever the kind has one.
    QuadraticForm,
}

/// Mean gradient and uncentred per-coordinate second moments over a data set.
#[derive(Clone, Debug, PartialEq)]
pub struct NetMoments {
    /// Number of samples N.
    pub n: usize,
    /// Mean loss L.
    pub loss: f64,
    /// `ḡ = ∇L` (θ-shaped).
    pub mean_grad: Vec<f64>,
    /// `m_k = (1/N) Σ_n g_{n,k}²` (θ-shaped).
    pub second: Vec<f64>,
}

impl NetMoments {
    /// `Σ_kk = m_k − ḡ_k²` (centred, 1/N), clamped at 0 against round-off.
    pub fn sigma_diag(&self) -> Vec<f64> {
        self.second.iter().zip(&self.mean_grad).map(|(m, g)| (m - g * g).max(0.0)).collect()
    }
    /// `Tr Σ = Σ_k Σ_kk`.
    pub fn trace_sigma(&self) -> f64 {
        self.second.iter().zip(&self.mean_grad).map(|(m, g)| m - g * g).sum()
    }
    /// `Tr M_1 = (1/N) Σ_n ‖g_n‖²`.
    pub fn trace_second_moment(&self) -> f64 {
        self.second.iter().sum()
    }
}

/// Per-sample moments of `net` over `data` (chunks of [`CHUNK`]).
pub fn net_moments<T: Real>(
    net: &Net<T>,
    data: &Dataset<T>,
    loss: Loss,
    path: MomentPath,
) -> Result<NetMoments> {
    net.check_data(data, None, loss)?;
    let p = net.params.len();
    let ops = Program::new(&net.arch).ops;
    let lanes = lanes_map(
        net,
        data,
        || (0.0, vec![T::zero(); p], vec![0.0; p], vec![0.0; p], vec![T::zero(); p]),
        |t, _, (total, grad, mean, second, scratch)| {
            t.forward(&net.params);
            *total += t.loss_grad(loss);
            grad.iter_mut().for_each(|v| *v = T::zero());
            t.backward(&net.params, Some((grad, T::one())));
            for (m, g) in mean.iter_mut().zip(grad.iter()) {
                *m += g.to_f64();
            }
            for (k, op) in ops.iter().enumerate() {
                let Some(range) = op.step.param_range() else { continue };
                match (&op.step, path) {
                    (Step::Module(Kind::Linear(l)), MomentPath::Auto | MomentPath::QuadraticForm) => {
                        l.element_moments_into(t.act(op.x), t.grad(op.y), t.batch(), second, faer::Par::Seq)
                    }
                    _ => {
                        let g = &mut scratch[..range.len()];
                        for n in 0..t.batch() {
                            t.per_sample_grad_into(k, n, g);
                            for (s, &v) in second[range.clone()].iter_mut().zip(g.iter()) {
                                *s += v.to_f64() * v.to_f64();
                            }
                        }
                    }
                }
            }
            Ok(())
        },
    )?;
    let (mut total, mut mean, mut second) = (0.0, vec![0.0; p], vec![0.0; p]);
    for (t, _, m, s, _) in lanes {
        total += t;
        mean.iter_mut().zip(&m).for_each(|(a, b)| *a += b);
        second.iter_mut().zip(&s).for_each(|(a, b)| *a += b);
    }
    let n = data.len() as f64;
    mean.iter_mut().for_each(|v| *v /= n);
    second.iter_mut().for_each(|v| *v /= n);
    Ok(NetMoments { n: data.len(), loss: total / n, mean_grad: mean, second })
}

/// Runs one chunked forward + backward pass of `net` over `data` and calls `f(tape, k, op, samples)` for every
/// parameterised op `k` of every chunk (`samples` = the chunk's rows in `data`), after the backward, so that `f`
/// can read the op's `(X, Δ)` or materialise its per-sample gradients.
fn for_each_param_op<T: Real>(
    net: &Net<T>,
    data: &Dataset<T>,
    loss: Loss,
    mut f: impl FnMut(&Tape<T>, usize, &Op, std::ops::Range<usize>),
) -> Result<()> {
    net.check_data(data, None, loss)?;
    let mut tape = Tape::new(&net.arch, CHUNK.min(data.len()));
    let ops = tape.program().ops.clone();
    for_each_chunk(&mut tape, data, |t, r| {
        t.forward(&net.params);
        t.loss_grad(loss);
        t.backward(&net.params, None);
        for (k, op) in ops.iter().enumerate().filter(|(_, op)| op.step.param_range().is_some()) {
            f(t, k, op, r.clone());
        }
        Ok(())
    })
}

/// Per-sample squared gradient norms `‖g_n‖²` (all of θ): generic (materialised per-sample gradients) or
/// quadratic form (linear `‖δ_n‖²(‖x_n‖² + 1)`, conv `Σ_{p,q}(δ_pᵀδ_q)(x_pᵀx_q) + ‖Σ_p δ_p‖²`).
pub fn per_sample_grad_sq_norms<T: Real>(
    net: &Net<T>,
    data: &Dataset<T>,
    loss: Loss,
    path: MomentPath,
) -> Result<Vec<f64>> {
    let mut out = vec![0.0; data.len()];
    let mut scratch = vec![T::zero(); net.params.len()];
    for_each_param_op(net, data, loss, |t, k, op, r| {
        let o = &mut out[r];
        match (&op.step, path) {
            (Step::Module(Kind::Linear(l)), MomentPath::Auto | MomentPath::QuadraticForm) => {
                l.grad_sq_norms_into(t.act(op.x), t.grad(op.y), t.batch(), o)
            }
            (Step::Module(Kind::Conv2d(c)), MomentPath::QuadraticForm) => {
                c.grad_sq_norms_into(t.col(k), t.grad(op.y), t.batch(), o)
            }
            _ => {
                let g = &mut scratch[..op.step.param_range().expect("a parameterised op").len()];
                for (n, on) in o.iter_mut().enumerate() {
                    t.per_sample_grad_into(k, n, g);
                    *on += g.iter().map(|v| v.to_f64() * v.to_f64()).sum::<f64>();
                }
            }
        }
    })?;
    Ok(out)
}

/// Per-sample directional derivatives `vᵀg_n` and gradient norms `‖g_n‖` of a net over `data` (`v` laid out like
/// θ), from per-sample gradients materialised one sample and one module at a time.
pub fn per_sample_directional<T: Real>(
    net: &Net<T>,
    data: &Dataset<T>,
    loss: Loss,
    v: &[f64],
) -> Result<(Vec<f64>, Vec<f64>)> {
    if v.len() != net.params.len() {
        return Err(crate::error::Error::shape("direction v", &[net.params.len()], &[v.len()]));
    }
    let (mut dots, mut norms) = (vec![0.0; data.len()], vec![0.0; data.len()]);
    let mut scratch = vec![T::zero(); net.params.len()];
    for_each_param_op(net, data, loss, |t, k, op, r| {
        let range = op.step.param_range().expect("a parameterised op");
        let g = &mut scratch[..range.len()];
        for (n, i) in r.enumerate() {
            t.per_sample_grad_into(k, n, g);
            dots[i] += g.iter().zip(&v[range.clone()]).map(|(a, b)| a.to_f64() * b).sum::<f64>();
            norms[i] += g.iter().map(|a| a.to_f64() * a.to_f64()).sum::<f64>();
        }
    })?;
    norms.iter_mut().for_each(|v| *v = v.sqrt());
    Ok((dots, norms))
}

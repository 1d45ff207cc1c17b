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
use crate::net::modules::Linear;
use crate::net::pass::lanes_map;
use crate::net::{for_each_chunk, Kind, Net, Op, Program, Step, Tape, CHUNK};
use crate::real::Real;
use faer::Mat;

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

/// Which `d × d` Gram moments of linear modules a pass adds (by state-dict prefix): the output side
/// `E[G_nG_nᵀ] = E[s_n δ_nδ_nᵀ]` (the `M_in` of a pair whose first linear it is) and the input side
/// `E[G_nᵀG_n] = E[‖δ_n‖² x_nx_nᵀ]` (the `M_out` of a pair whose second linear it is).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GramSpec {
    /// Linear modules whose output-side Gram `E[s_n δ_nδ_nᵀ]` (`[d_out, d_out]`) is wanted.
    pub delta: Vec<String>,
    /// Linear modules whose input-side Gram `E[‖δ_n‖² x_nx_nᵀ]` (`[d_in, d_in]`) is wanted.
    pub input: Vec<String>,
}

/// Uncentred Gram moments of one linear module (means over the N samples).
#[derive(Clone, Debug, PartialEq)]
pub struct ModuleGrams {
    /// The module's state-dict prefix.
    pub module: String,
    /// `E[s_n δ_nδ_nᵀ]`, `s_n = ‖x_n‖² + [bias]` (`[d_out, d_out]`), when requested.
    pub delta_gram: Option<Mat<f64>>,
    /// `E[‖δ_n‖² x_nx_nᵀ]` (`[d_in, d_in]`), when requested.
    pub input_gram: Option<Mat<f64>>,
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
    /// The Gram moments a [`GramSpec`] asked for, in the program's order of the modules.
    pub grams: Vec<ModuleGrams>,
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
    /// The Gram moments of `module`, if the pass computed any.
    pub fn grams_of(&self, module: &str) -> Option<&ModuleGrams> {
        self.grams.iter().find(|g| g.module == module)
    }
}

/// Per-sample moments of `net` over `data` (chunks of [`CHUNK`]).
pub fn net_moments<T: Real>(
    net: &Net<T>,
    data: &Dataset<T>,
    loss: Loss,
    path: MomentPath,
) -> Result<NetMoments> {
    net_moments_with(net, data, loss, path, &GramSpec::default())
}

/// One op's (output-side, input-side) Gram sums, row-major (none where not requested).
type GramSums = (Option<Vec<f64>>, Option<Vec<f64>>);

/// One lane's sums of [`net_moments_with`].
struct Lane<T> {
    total: f64,
    grad: Vec<T>,
    mean: Vec<f64>,
    second: Vec<f64>,
    scratch: Vec<T>,
    /// Per op: (output-side, input-side) Gram sums, row-major.
    grams: Vec<GramSums>,
}

/// [`net_moments`] plus the Gram moments `grams` asks for (an unknown or non-linear module is an error naming
/// it). Gram paths: the quadratic form [`crate::net::modules::Linear::gram_moments_into`] (`Auto`,
/// `QuadraticForm`) or the per-sample gradients `G_n` materialised one sample at a time (`Generic`).
pub fn net_moments_with<T: Real>(
    net: &Net<T>,
    data: &Dataset<T>,
    loss: Loss,
    path: MomentPath,
    grams: &GramSpec,
) -> Result<NetMoments> {
    net.check_data(data, None, loss)?;
    let p = net.params.len();
    let ops = Program::new(&net.arch).ops;
    for name in grams.delta.iter().chain(&grams.input) {
        if !ops.iter().any(|op| op.name == *name && matches!(op.step, Step::Module(Kind::Linear(_)))) {
            return Err(crate::error::Error::Config(format!(
                "Gram moments of `{name}`: the architecture has no linear module of that name"
            )));
        }
    }
    // Per op: the Gram sizes wanted (0 = none).
    let wanted: Vec<(usize, usize)> = ops
        .iter()
        .map(|op| match &op.step {
            Step::Module(Kind::Linear(l)) => (
                if grams.delta.contains(&op.name) { l.d_out } else { 0 },
                if grams.input.contains(&op.name) { l.d_in } else { 0 },
            ),
            _ => (0, 0),
        })
        .collect();
    let sized = |d: usize| (d > 0).then(|| vec![0.0; d * d]);
    let lanes = lanes_map(
        net,
        data,
        || Lane {
            total: 0.0,
            grad: vec![T::zero(); p],
            mean: vec![0.0; p],
            second: vec![0.0; p],
            scratch: vec![T::zero(); p],
            grams: wanted.iter().map(|&(a, b)| (sized(a), sized(b))).collect(),
        },
        |t, _, lane| {
            t.forward(&net.params);
            lane.total += t.loss_grad(loss);
            lane.grad.iter_mut().for_each(|v| *v = T::zero());
            t.backward(&net.params, Some((&mut lane.grad, T::one())));
            for (m, g) in lane.mean.iter_mut().zip(lane.grad.iter()) {
                *m += g.to_f64();
            }
            for (k, op) in ops.iter().enumerate() {
                let Some(range) = op.step.param_range() else { continue };
                let (gd, gi) = &mut lane.grams[k];
                match (&op.step, path) {
                    (Step::Module(Kind::Linear(l)), MomentPath::Auto | MomentPath::QuadraticForm) => {
                        let (x, dy) = (t.act(op.x), t.grad(op.y));
                        l.element_moments_into(x, dy, t.batch(), &mut lane.second, faer::Par::Seq);
                        if gd.is_some() || gi.is_some() {
                            l.gram_moments_into(
                                x,
                                dy,
                                t.batch(),
                                gd.as_deref_mut(),
                                gi.as_deref_mut(),
                                faer::Par::Seq,
                            );
                        }
                    }
                    _ => {
                        let g = &mut lane.scratch[..range.len()];
                        for n in 0..t.batch() {
                            t.per_sample_grad_into(k, n, g);
                            for (s, &v) in lane.second[range.clone()].iter_mut().zip(g.iter()) {
                                *s += v.to_f64() * v.to_f64();
                            }
                            if let Step::Module(Kind::Linear(l)) = &op.step {
                                add_gram_of_sample(l, g, gd.as_deref_mut(), gi.as_deref_mut());
                            }
                        }
                    }
                }
            }
            Ok(())
        },
    )?;
    let (mut total, mut mean, mut second) = (0.0, vec![0.0; p], vec![0.0; p]);
    let mut sums: Vec<GramSums> = wanted.iter().map(|&(a, b)| (sized(a), sized(b))).collect();
    for lane in lanes {
        total += lane.total;
        mean.iter_mut().zip(&lane.mean).for_each(|(a, b)| *a += b);
        second.iter_mut().zip(&lane.second).for_each(|(a, b)| *a += b);
        for ((sd, si), (ld, li)) in sums.iter_mut().zip(&lane.grams) {
            for (s, l) in [(sd, ld), (si, li)] {
                if let (Some(s), Some(l)) = (s.as_mut(), l.as_ref()) {
                    s.iter_mut().zip(l).for_each(|(a, b)| *a += b);
                }
            }
        }
    }
    let n = data.len() as f64;
    mean.iter_mut().for_each(|v| *v /= n);
    second.iter_mut().for_each(|v| *v /= n);
    let mean_mat = |v: Option<Vec<f64>>, d: usize| v.map(|v| Mat::from_fn(d, d, |i, j| v[i * d + j] / n));
    let grams = ops
        .iter()
        .zip(sums)
        .zip(&wanted)
        .filter(|(_, &(a, b))| a + b > 0)
        .map(|((op, (sd, si)), &(a, b))| ModuleGrams {
            module: op.name.clone(),
            delta_gram: mean_mat(sd, a),
            input_gram: mean_mat(si, b),
        })
        .collect();
    Ok(NetMoments { n: data.len(), loss: total / n, mean_grad: mean, second, grams })
}

/// Adds one sample's `G_nG_nᵀ` (`[d_out, d_out]`, bias column included) and `W-part ᵀ W-part` (`[d_in, d_in]`)
/// of a linear module's per-sample gradient `g` (weight `[d_out, d_in]` row-major, then bias).
fn add_gram_of_sample<T: Real>(l: &Linear, g: &[T], delta: Option<&mut [f64]>, input: Option<&mut [f64]>) {
    let (o, i) = (l.d_out, l.d_in);
    let w = |r: usize, c: usize| g[r * i + c].to_f64();
    if let Some(dst) = delta {
        for a in 0..o {
            for b in 0..o {
                let mut v: f64 = (0..i).map(|c| w(a, c) * w(b, c)).sum();
                if l.bias.is_some() {
                    v += g[o * i + a].to_f64() * g[o * i + b].to_f64();
                }
                dst[a * o + b] += v;
            }
        }
    }
    if let Some(dst) = input {
        for a in 0..i {
            for b in 0..i {
                dst[a * i + b] += (0..o).map(|r| w(r, a) * w(r, b)).sum::<f64>();
            }
        }
    }
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

//! Exact Hessian-vector products of the mean loss `L = (1/N) Σ_n ℓ_n`, the Gauss–Newton-vector product, and a
//! central-difference HVP in f64 as an independent fallback.
//!
//! One engine computes the products: [`NetHessian`], forward-over-reverse differentiation (Pearlmutter's
//! R-operator `R{·} = d/dε ·(θ + εv)|_{ε=0}`) through a module tree, each module kind's R-pass in its own file
//! (`net::modules`, driven by [`crate::net::Tape::hvp`] and [`crate::net::Tape::ggn_vp`]). A dense chain's
//! [`HessianOperator`] is the same operator on the chain's tree ([`NetArch::from_dense`]: `linear`, optional
//! `rms_norm`, activation per layer; θ's layout is the same, weights row-major `[out, in]` then bias), so the
//! dense and the module-tree commands share every line of second-order code.
//!
//! Cost of one exact HVP: a forward pass and the R-forward, then the backward and the R-backward, per chunk;
//! measured at 1.0–1.8× one gradient on a relu MLP 784-512-512-10 (`examples/prof_hvp_engines.rs`).

use super::LinearOperator;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::model::Model;
use crate::net::{for_each_chunk_in, lane_ranges, Net, NetArch, Tape, CHUNK};
use crate::real::Real;
use faer::Mat;
use serde::Serialize;
use std::borrow::Cow;

/// Which curvature matrix an operator multiplies by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Curvature {
    /// The Hessian `H = ∇²L` (exact, indefinite).
    #[default]
    Hessian,
    /// The Gauss–Newton matrix `G = (1/N) Σ_n J_nᵀ ∇²_f ℓ_n J_n` (positive semi-definite for both losses).
    GaussNewton,
}

/// Options of a [`HessianOperator`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HvpOptions {
    /// Which matrix.
    pub curvature: Curvature,
    /// Samples per chunk (memory is O(chunk · Σ widths) per lane; every product recomputes the forward pass).
    pub chunk: usize,
}

impl Default for HvpOptions {
    fn default() -> Self {
        Self { curvature: Curvature::Hessian, chunk: 4096 }
    }
}

/// The Hessian (or Gauss–Newton matrix) of the mean loss of a dense chain `model` on `data`, as a matrix-free
/// operator: `apply_into(v, out)` writes `out = H v` (1/N over all samples), exact to round-off. It is
/// [`NetHessian`] on the chain's module tree (see the module doc).
pub struct HessianOperator<'a> {
    inner: NetHessian<'a, f64>,
    opts: HvpOptions,
}

impl<'a> HessianOperator<'a> {
    /// An operator for the mean loss of `model` over all of `data`. Errors when the data do not fit model and
    /// loss, or `opts.chunk` is 0.
    pub fn new(model: &Model<f64>, data: &'a Dataset<f64>, loss: Loss, opts: HvpOptions) -> Result<Self> {
        model.arch.validate()?;
        data.check_fits(model.arch.d_in(), model.arch.d_out(), loss)?;
        // `Net::from_params` checks the parameter count (same error as the dense chain's).
        let net = Net::from_params(NetArch::from_dense(&model.arch)?, model.params.clone())?;
        let inner = NetHessian::owning(net, data, loss, opts.curvature)?.with_chunk(opts.chunk)?;
        Ok(Self { inner, opts })
    }

    /// Number of products computed so far.
    pub fn products(&self) -> usize {
        self.inner.products
    }

    /// The options the operator was built with.
    pub fn options(&self) -> HvpOptions {
        self.opts
    }

    /// `out = H v` (or `G v`) of the mean loss, 1/N. Errors when `v` or `out` do not have length P.
    pub fn hvp_into(&mut self, v: &[f64], out: &mut [f64]) -> Result<()> {
        let p = self.inner.dim();
        if v.len() != p || out.len() != p {
            return Err(Error::shape("Hessian-vector product (v, out)", &[p, p], &[v.len(), out.len()]));
        }
        self.inner.apply_into(v, out);
        Ok(())
    }
}

impl LinearOperator for HessianOperator<'_> {
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn apply_into(&mut self, v: &[f64], out: &mut [f64]) {
        self.hvp_into(v, out).expect("HessianOperator: lengths and data were checked at construction");
    }
    fn products(&self) -> usize {
        self.inner.products
    }
}

/// The Hessian of the mean loss of a net over a data set, or its Gauss–Newton matrix
/// `G = (1/N) Σ_n J_nᵀ ∇²_f ℓ_n J_n` ([`NetHessian::with_curvature`]), as a [`LinearOperator`] (exact products:
/// [`crate::net::Tape::hvp`], [`crate::net::Tape::ggn_vp`]; 1/N). The products compute in `T` chunk by chunk ([`CHUNK`] samples unless
/// [`NetHessian::with_chunk`] says otherwise), the [`crate::net::LANES`] lanes in parallel, and are summed in f64 (so an f32
/// net gives f32 products accumulated in f64); the Lanczos vectors stay f64. Each product recomputes the chunks'
/// forward pass (memory O(chunk · Σ widths) per lane, not O(N)). Nothing is allocated per product after the first.
/// The net is borrowed ([`NetHessian::new`]) or owned ([`NetHessian::owning`]).
pub struct NetHessian<'a, T: Real = f64> {
    net: Cow<'a, Net<T>>,
    data: &'a Dataset<T>,
    loss: Loss,
    curvature: Curvature,
    /// `v` in `T`.
    v: Vec<T>,
    lanes: Vec<HvpLane<T>>,
    products: usize,
}

/// One lane of [`NetHessian`]: its samples, its tape, the chunk's product in `T` and the lane's sum in f64.
type HvpLane<T> = (std::ops::Range<usize>, Tape<T>, Vec<T>, Vec<f64>);

impl<'a, T: Real> NetHessian<'a, T> {
    /// The Hessian operator for `net` on `data` with `loss`.
    pub fn new(net: &'a Net<T>, data: &'a Dataset<T>, loss: Loss) -> Result<Self> {
        Self::with_curvature(net, data, loss, Curvature::Hessian)
    }

    /// The operator of `curvature` (the Hessian or the Gauss–Newton matrix) for `net` on `data` with `loss`.
    pub fn with_curvature(
        net: &'a Net<T>,
        data: &'a Dataset<T>,
        loss: Loss,
        curvature: Curvature,
    ) -> Result<Self> {
        Self::build(Cow::Borrowed(net), data, loss, curvature)
    }

    /// [`NetHessian::with_curvature`] for a net the operator keeps (e.g. a dense chain converted to its tree).
    pub fn owning(net: Net<T>, data: &'a Dataset<T>, loss: Loss, curvature: Curvature) -> Result<Self> {
        Self::build(Cow::Owned(net), data, loss, curvature)
    }

    fn build(net: Cow<'a, Net<T>>, data: &'a Dataset<T>, loss: Loss, curvature: Curvature) -> Result<Self> {
        net.check_data(data, None, loss)?;
        let p = net.params.len();
        let mut op =
            Self { net, data, loss, curvature, v: vec![T::zero(); p], lanes: Vec::new(), products: 0 };
        op.lanes = op.lanes_of(CHUNK);
        Ok(op)
    }

    /// The lanes of the data in chunks of `chunk` samples (at most N), each with its tape and sums.
    fn lanes_of(&self, chunk: usize) -> Vec<HvpLane<T>> {
        let chunk = chunk.min(self.data.len()).max(1);
        let p = self.net.params.len();
        lane_ranges(self.data.len(), chunk)
            .into_iter()
            .map(|r| (r, Tape::new(&self.net.arch, chunk), vec![T::zero(); p], vec![0.0; p]))
            .collect()
    }

    /// The same operator computing its products in chunks of `chunk` samples (memory per lane grows with it);
    /// an error for `chunk = 0`.
    pub fn with_chunk(mut self, chunk: usize) -> Result<Self> {
        if chunk == 0 {
            return Err(Error::Config("HVP chunk 0: a chunk holds at least one sample".into()));
        }
        self.lanes = self.lanes_of(chunk);
        Ok(self)
    }

    /// Which matrix the operator multiplies by.
    pub fn curvature(&self) -> Curvature {
        self.curvature
    }

    /// The net the operator differentiates.
    pub fn net(&self) -> &Net<T> {
        &self.net
    }
}

impl<T: Real> LinearOperator for NetHessian<'_, T> {
    fn dim(&self) -> usize {
        self.net.params.len()
    }
    fn apply_into(&mut self, v: &[f64], out: &mut [f64]) {
        use rayon::prelude::*;
        let alpha = T::from_f64(1.0 / self.data.len() as f64);
        self.v.iter_mut().zip(v).for_each(|(a, &b)| *a = T::from_f64(b));
        let (net, loss, data, vt, curvature) = (&*self.net, self.loss, self.data, &self.v, self.curvature);
        self.lanes.par_iter_mut().for_each(|(range, tape, hv_chunk, hv)| {
            hv.iter_mut().for_each(|o| *o = 0.0);
            for_each_chunk_in(tape, data, range.clone(), |t, _| {
                hv_chunk.iter_mut().for_each(|o| *o = T::zero());
                match curvature {
                    Curvature::Hessian => {
                        t.hvp(&net.params, vt, loss, hv_chunk, alpha);
                    }
                    Curvature::GaussNewton => t.ggn_vp(&net.params, vt, loss, hv_chunk, alpha),
                }
                hv.iter_mut().zip(hv_chunk.iter()).for_each(|(o, h)| *o += h.to_f64());
                Ok(())
            })
            .expect("data checked when the operator was built");
        });
        out.iter_mut().for_each(|o| *o = 0.0);
        for (_, _, _, hv) in &self.lanes {
            out.iter_mut().zip(hv).for_each(|(o, h)| *o += h);
        }
        self.products += 1;
    }
    fn products(&self) -> usize {
        self.products
    }
}

/// Central-difference HVP in f64, independent of the R-operator:
/// `H v ≈ ‖v‖ · [∇L(θ + h v̂) − ∇L(θ − h v̂)] / (2h)`, `v̂ = v/‖v‖`. Error O(h²·∇³L) + O(ε·|∇L|/h);
/// `h ≈ 1e-5` balances both in f64. Two gradient passes over all of `data` (in chunks of `chunk`).
pub fn central_difference_hvp(
    model: &Model<f64>,
    data: &Dataset<f64>,
    loss: Loss,
    v: &[f64],
    h: f64,
    chunk: usize,
) -> Result<Vec<f64>> {
    let p = model.arch.n_params();
    if v.len() != p {
        return Err(Error::shape("central-difference HVP direction", &[p], &[v.len()]));
    }
    if !(h > 0.0 && h.is_finite()) {
        return Err(Error::Config(format!("central-difference step must be positive and finite, got {h}")));
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm == 0.0 {
        return Ok(vec![0.0; p]);
    }
    let mut m = model.clone();
    for (t, (&th, &vi)) in m.params.iter_mut().zip(model.params.iter().zip(v)) {
        *t = th + h * vi / norm;
    }
    let (_, gp) = m.loss_and_grad(data, loss, chunk)?;
    for (t, (&th, &vi)) in m.params.iter_mut().zip(model.params.iter().zip(v)) {
        *t = th - h * vi / norm;
    }
    let (_, gm) = m.loss_and_grad(data, loss, chunk)?;
    Ok(gp.iter().zip(&gm).map(|(a, b)| norm * (a - b) / (2.0 * h)).collect())
}

/// The dense P × P matrix of an operator, column i = `A e_i` (P products; for small models and tests).
/// The result is symmetrised, `(A + Aᵀ)/2`, which changes an exact symmetric operator only by round-off.
pub fn dense_matrix(op: &mut impl LinearOperator) -> Mat<f64> {
    let p = op.dim();
    let mut m = Mat::<f64>::zeros(p, p);
    let mut e = vec![0.0; p];
    let mut col = vec![0.0; p];
    for i in 0..p {
        e[i] = 1.0;
        op.apply_into(&e, &mut col);
        e[i] = 0.0;
        for (j, &c) in col.iter().enumerate() {
            m[(j, i)] = c;
        }
    }
    Mat::from_fn(p, p, |i, j| 0.5 * (m[(i, j)] + m[(j, i)]))
}

//! Exact Hessian-vector products of the mean loss `L = (1/N) Σ_n ℓ_n` by forward-over-reverse differentiation
//! (Pearlmutter's R-operator `R{·} = d/dε ·(θ + εv)|_{ε=0}`), the Gauss–Newton-vector product, and a
//! central-difference HVP in f64 as an independent fallback.
//!
//! Forward R-pass for layer l (rows are samples, `V_l`, `c_l` the weight and bias blocks of v):
//! `Rz = Rh_{l−1} W_lᵀ + h_{l−1} V_lᵀ + c_l`; with RMS normalisation `u = z/r`, `r = √(mean_j z_j²)`:
//! `Rr = (u·Rz)/d`, `Ru = (Rz − u Rr)/r` (the Jacobian `J = (I − uuᵀ/d)/r` is symmetric); `Rh = φ′(u) ⊙ Ru`.
//!
//! Backward R-pass, with `a = ∂ℓ/∂h_l`, `e = a ⊙ φ′(u) = ∂ℓ/∂u`, `δ = J e = (e − u s)/r`, `s = (u·e)/d`:
//! `Ra_L = ∇²_f ℓ · Rf`; `Re = Ra ⊙ φ′(u) + a ⊙ φ″(u) ⊙ Ru`;
//! `Rδ = (Re − Ru s − u Rs − δ Rr)/r` with `Rs = (Ru·e + u·Re)/d` (just `Rδ = Re` without normalisation);
//! `R∇W_l = Rδᵀ h_{l−1} + δᵀ Rh_{l−1}`, `R∇b_l = Σ_n Rδ_n`, `Ra_{l−1} = Rδ W_l + δ V_l`.
//! The Gauss–Newton product `G v = (1/N) Σ_n J_nᵀ ∇²_f ℓ_n J_n v` keeps only the `Rf` path: `Ra_L = ∇²_f ℓ · Rf`,
//! then the linear backward `Rδ = J(Ra ⊙ φ′)`, `R∇W_l = Rδᵀ h_{l−1}`, `Ra_{l−1} = Rδ W_l`.
//!
//! Cost of one exact HVP: the forward and backward pass of a gradient plus two GEMMs per layer forward and
//! four backward, i.e. about 2.5 gradients when the forward cache is recomputed and 1.5 when it is cached.
#![allow(non_snake_case)]

use super::LinearOperator;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::linalg::gemm;
use crate::loss::Loss;
use crate::model::{Activation, Model, Tape};
use faer::reborrow::{Reborrow, ReborrowMut};
use faer::{Mat, MatMut, MatRef};
use serde::Serialize;
use std::ops::Range;

/// Which curvature matrix a [`HessianOperator`] multiplies by.
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
    /// Samples per chunk (memory is O(chunk · Σ widths)).
    pub chunk: usize,
    /// Keep the forward/backward cache of every chunk between products (memory O(N · Σ widths)); otherwise each
    /// product recomputes the forward and backward pass.
    pub cache: bool,
}

impl Default for HvpOptions {
    fn default() -> Self {
        Self { curvature: Curvature::Hessian, chunk: 4096, cache: true }
    }
}

/// Whether φ″ vanishes almost everywhere: positively homogeneous scalar functions are piecewise linear.
fn is_piecewise_linear(act: Activation) -> bool {
    act.is_positively_homogeneous()
}

/// Per-chunk R-pass buffers, allocated once at the chunk capacity.
#[derive(Clone, Debug)]
struct Workspace {
    /// `Rz_l` then (in place) nothing else; `[B, d_out]`.
    rz: Vec<Mat<f64>>,
    /// `Ru_l` for normalising layers (empty otherwise).
    ru: Vec<Mat<f64>>,
    /// `Rr_l` per sample for normalising layers.
    rr: Vec<Vec<f64>>,
    /// `Rh_l` (R of the output of layer l).
    rh: Vec<Mat<f64>>,
    /// `Ra_l`, turned into `Rδ_l` in place during the backward R-pass.
    ra: Vec<Mat<f64>>,
    /// `a_l = ∂ℓ/∂h_l`, only for layers that need it (Hessian with curved φ or normalisation).
    a: Vec<Mat<f64>>,
    /// The backward pass these buffers serve (Gauss–Newton has no `a`).
    curvature: Curvature,
}

/// The Hessian (or Gauss–Newton matrix) of the mean loss of `model` on `data`, as a matrix-free operator:
/// `apply_into(v, out)` writes `out = H v` (1/N over all samples), exact to round-off.
pub struct HessianOperator<'a> {
    model: &'a Model<f64>,
    data: &'a Dataset<f64>,
    loss: Loss,
    opts: HvpOptions,
    chunks: Vec<Range<usize>>,
    /// One tape per chunk when caching, else a single tape reused.
    tapes: Vec<Tape<f64>>,
    ws: Workspace,
    products: usize,
}

impl<'a> HessianOperator<'a> {
    /// An operator for the mean loss of `model` over all of `data`. With `opts.cache` the forward (and, for the
    /// Hessian, backward) pass of every chunk runs once here. Errors when the data do not fit model and loss.
    pub fn new(model: &'a Model<f64>, data: &'a Dataset<f64>, loss: Loss, opts: HvpOptions) -> Result<Self> {
        model.arch.validate()?;
        data.check_fits(model.arch.d_in(), model.arch.d_out(), loss)?;
        if model.params.len() != model.arch.n_params() {
            return Err(Error::shape("parameter vector", &[model.arch.n_params()], &[model.params.len()]));
        }
        let n = data.len();
        let chunk = opts.chunk.max(1).min(n);
        let chunks: Vec<Range<usize>> = (0..n).step_by(chunk).map(|s| s..(s + chunk).min(n)).collect();
        let arch = &model.arch;
        let n_tapes = if opts.cache { chunks.len() } else { 1 };
        let mut tapes: Vec<Tape<f64>> = (0..n_tapes).map(|_| Tape::for_passes(arch, chunk)).collect();
        if opts.cache {
            for (tape, r) in tapes.iter_mut().zip(&chunks) {
                Self::prepare(model, data, loss, opts.curvature, tape, r.clone())?;
            }
        }
        let L = arch.n_layers();
        let mat = |d: usize, need: bool| if need { Mat::zeros(chunk, d) } else { Mat::zeros(0, 0) };
        let ws = Workspace {
            rz: arch.layers.iter().map(|ly| mat(ly.d_out, true)).collect(),
            ru: arch.layers.iter().map(|ly| mat(ly.d_out, ly.norm)).collect(),
            rr: arch.layers.iter().map(|ly| if ly.norm { vec![0.0; chunk] } else { Vec::new() }).collect(),
            rh: arch.layers.iter().map(|ly| mat(ly.d_out, true)).collect(),
            ra: arch.layers.iter().map(|ly| mat(ly.d_out, true)).collect(),
            a: (0..L)
                .map(|l| {
                    let ly = arch.layers[l];
                    let need = opts.curvature == Curvature::Hessian
                        && (ly.norm || !is_piecewise_linear(ly.activation));
                    mat(ly.d_out, need)
                })
                .collect(),
            curvature: opts.curvature,
        };
        Ok(Self { model, data, loss, opts, chunks, tapes, ws, products: 0 })
    }

    /// Forward pass (and, for the Hessian, output gradient and backward pass) of chunk `r` on `tape`.
    fn prepare(
        model: &Model<f64>,
        data: &Dataset<f64>,
        loss: Loss,
        curvature: Curvature,
        tape: &mut Tape<f64>,
        r: Range<usize>,
    ) -> Result<()> {
        tape.load_range(data, r);
        tape.forward(model);
        if curvature == Curvature::Hessian {
            tape.loss_and_output_grad(loss)?;
            tape.backward(model, None, 1.0);
        }
        Ok(())
    }

    /// Number of products computed so far.
    pub fn products(&self) -> usize {
        self.products
    }

    /// The options the operator was built with.
    pub fn options(&self) -> HvpOptions {
        self.opts
    }

    /// `out = H v` (or `G v`) of the mean loss, 1/N. Errors when `v` or `out` do not have length P.
    pub fn hvp_into(&mut self, v: &[f64], out: &mut [f64]) -> Result<()> {
        let p = self.model.arch.n_params();
        if v.len() != p || out.len() != p {
            return Err(Error::shape("Hessian-vector product (v, out)", &[p, p], &[v.len(), out.len()]));
        }
        out.iter_mut().for_each(|o| *o = 0.0);
        let scale = 1.0 / self.data.len() as f64;
        for c in 0..self.chunks.len() {
            let t = if self.opts.cache {
                c
            } else {
                Self::prepare(
                    self.model,
                    self.data,
                    self.loss,
                    self.opts.curvature,
                    &mut self.tapes[0],
                    self.chunks[c].clone(),
                )?;
                0
            };
            let tape = &self.tapes[t];
            r_forward(&mut self.ws, self.model, tape, v);
            r_backward(&mut self.ws, self.model, tape, self.loss, v, out, scale);
        }
        self.products += 1;
        Ok(())
    }
}

impl LinearOperator for HessianOperator<'_> {
    fn dim(&self) -> usize {
        self.model.arch.n_params()
    }
    fn apply_into(&mut self, v: &[f64], out: &mut [f64]) {
        self.hvp_into(v, out).expect("HessianOperator: lengths and data were checked at construction");
    }
    fn products(&self) -> usize {
        self.products
    }
}

/// `MatRef` view of the weight block of a flat vector, `[out, in]`.
fn block<'v>(model: &Model<f64>, v: &'v [f64], l: usize) -> MatRef<'v, f64> {
    let ly = model.arch.layers[l];
    MatRef::from_row_major_slice(&v[model.arch.weight_range(l)], ly.d_out, ly.d_in)
}

/// Forward R-pass: fills `rz`, `ru`, `rr`, `rh` for direction v.
fn r_forward(ws: &mut Workspace, model: &Model<f64>, tape: &Tape<f64>, v: &[f64]) {
    let arch = &model.arch;
    let b = tape.batch();
    for l in 0..arch.n_layers() {
        let ly = arch.layers[l];
        let (lo, hi) = ws.rh.split_at_mut(l);
        let mut rz = ws.rz[l].as_mut().subrows_mut(0, b);
        // Rz = h_{l−1} V_lᵀ + Rh_{l−1} W_lᵀ + c_l (Rh_0 = 0: the data do not depend on θ).
        gemm(rz.rb_mut(), false, tape.input(l), block(model, v, l).transpose(), 1.0);
        if l > 0 {
            gemm(rz.rb_mut(), true, lo[l - 1].as_ref().subrows(0, b), model.weight(l).transpose(), 1.0);
        }
        if ly.bias {
            for (j, &cj) in v[arch.bias_range(l)].iter().enumerate() {
                rz.rb_mut().col_mut(j).iter_mut().for_each(|x| *x += cj);
            }
        }
        let u = tape.normalized(l);
        if ly.norm {
            // Rr = (u·Rz)/d, Ru = (Rz − u Rr)/r (0 where r = 0, matching the forward pass).
            let d = ly.d_out as f64;
            let rr = &mut ws.rr[l][..b];
            rr.iter_mut().for_each(|x| *x = 0.0);
            for j in 0..ly.d_out {
                let (uc, zc) = (u.col(j), rz.rb().col(j));
                for n in 0..b {
                    rr[n] += uc[n] * zc[n];
                }
            }
            rr.iter_mut().for_each(|x| *x /= d);
            let r = tape.rms(l);
            let mut ru = ws.ru[l].as_mut().subrows_mut(0, b);
            for j in 0..ly.d_out {
                let (uc, zc) = (u.col(j), rz.rb().col(j));
                let mut rc = ru.rb_mut().col_mut(j);
                for n in 0..b {
                    rc[n] = if r[n] > 0.0 { (zc[n] - uc[n] * rr[n]) / r[n] } else { 0.0 };
                }
            }
        }
        let src = if ly.norm { ws.ru[l].as_ref().subrows(0, b) } else { ws.rz[l].as_ref().subrows(0, b) };
        let h = tape.input(l + 1);
        let mut rh = hi[0].as_mut().subrows_mut(0, b);
        let act = ly.activation;
        for j in 0..ly.d_out {
            let (sc, uc, hc) = (src.col(j), u.col(j), h.col(j));
            let mut rc = rh.rb_mut().col_mut(j);
            for n in 0..b {
                rc[n] = act.d1(uc[n], hc[n]) * sc[n];
            }
        }
    }
}

/// `ra[L−1] ← ∇²_f ℓ · Rf` per sample.
fn top_r_adjoint(ws: &mut Workspace, tape: &Tape<f64>, loss: Loss, last: usize) {
    let b = tape.batch();
    let (rf, ra) = (ws.rh[last].as_ref().subrows(0, b), ws.ra[last].as_mut().subrows_mut(0, b));
    loss.hessian_times_into(tape.output(), rf, ra);
}

/// Accumulates `scale · Rδᵀ h_{l−1}` (and the bias sums) into the layer-l block of `out`.
fn add_weight_block(
    model: &Model<f64>,
    l: usize,
    rdelta: MatRef<'_, f64>,
    x: MatRef<'_, f64>,
    out: &mut [f64],
    scale: f64,
) {
    let arch = &model.arch;
    let ly = arch.layers[l];
    let gw = MatMut::from_row_major_slice_mut(&mut out[arch.weight_range(l)], ly.d_out, ly.d_in);
    gemm(gw, true, rdelta.transpose(), x, scale);
    if ly.bias {
        for (j, o) in out[arch.bias_range(l)].iter_mut().enumerate() {
            *o += scale * rdelta.col(j).iter().sum::<f64>();
        }
    }
}

/// Backward R-pass of `ws.curvature`; adds `scale · Σ_n R∇ℓ_n` (Hessian) or `scale · Σ_n J_nᵀ ∇²_f ℓ_n J_n v`
/// (Gauss–Newton) into `out`. Gauss–Newton is the same pass without the terms that carry the first-order
/// adjoints `a`, `δ`: no `a ⊙ φ″ ⊙ Ru`, no normalisation curvature, no `δᵀ Rh_{l−1}` and no `δ V_l` (so it
/// never reads `v` or the tape's backward pass).
fn r_backward(
    ws: &mut Workspace,
    model: &Model<f64>,
    tape: &Tape<f64>,
    loss: Loss,
    v: &[f64],
    out: &mut [f64],
    scale: f64,
) {
    let arch = &model.arch;
    let b = tape.batch();
    let last = arch.n_layers() - 1;
    let hessian = ws.curvature == Curvature::Hessian;
    top_r_adjoint(ws, tape, loss, last);
    for l in (0..arch.n_layers()).rev() {
        let ly = arch.layers[l];
        let act = ly.activation;
        let u = tape.normalized(l);
        let h = tape.input(l + 1);
        let curved = hessian && !is_piecewise_linear(act);
        if hessian && (ly.norm || curved) {
            // a_l = ∂ℓ/∂h_l: the loss gradient at the top, δ_{l+1} W_{l+1} below (the tape keeps only δ).
            let mut a = ws.a[l].as_mut().subrows_mut(0, b);
            if l == last {
                loss.value_and_grad_into(tape.output(), tape.targets(), tape.labels(), a.rb_mut());
            } else {
                gemm(a.rb_mut(), false, tape.delta(l + 1), model.weight(l + 1), 1.0);
            }
        }
        let src_r = if ly.norm { ws.ru[l].as_ref().subrows(0, b) } else { ws.rz[l].as_ref().subrows(0, b) };
        let mut ra = ws.ra[l].as_mut().subrows_mut(0, b);
        // Re = Ra ⊙ φ′(u) + a ⊙ φ″(u) ⊙ Ru (the φ″ term only for the Hessian of a curved φ).
        if !act.is_identity() {
            for j in 0..ly.d_out {
                let (uc, hc, rc) = (u.col(j), h.col(j), src_r.col(j));
                let mut col = ra.rb_mut().col_mut(j);
                if curved {
                    let ac = ws.a[l].as_ref().col(j);
                    for n in 0..b {
                        col[n] = col[n] * act.d1(uc[n], hc[n]) + ac[n] * act.d2(uc[n], hc[n]) * rc[n];
                    }
                } else {
                    for n in 0..b {
                        col[n] *= act.d1(uc[n], hc[n]);
                    }
                }
            }
        }
        if ly.norm {
            // Rδ = (Re − Ru s − u Rs − δ Rr)/r, s = (u·e)/d, Rs = (Ru·e + u·Re)/d, e = a ⊙ φ′(u);
            // Gauss–Newton drops e and δ: Rδ = (Re − u Rs)/r = J Re with Rs = (u·Re)/d.
            let d = ly.d_out as f64;
            let (r, rr) = (tape.rms(l), &ws.rr[l]);
            let first_order = hessian.then(|| (ws.a[l].as_ref(), tape.delta(l)));
            for n in 0..b {
                if r[n] <= 0.0 {
                    for j in 0..ly.d_out {
                        ra[(n, j)] = 0.0;
                    }
                    continue;
                }
                let (mut s, mut rs) = (0.0, 0.0);
                for j in 0..ly.d_out {
                    match first_order {
                        Some((a, _)) => {
                            let e = a[(n, j)] * act.d1(u[(n, j)], h[(n, j)]);
                            s += u[(n, j)] * e;
                            rs += src_r[(n, j)] * e + u[(n, j)] * ra[(n, j)];
                        }
                        None => rs += u[(n, j)] * ra[(n, j)],
                    }
                }
                let (s, rs) = (s / d, rs / d);
                for j in 0..ly.d_out {
                    ra[(n, j)] = match first_order {
                        Some((_, delta)) => {
                            (ra[(n, j)] - src_r[(n, j)] * s - u[(n, j)] * rs - delta[(n, j)] * rr[n]) / r[n]
                        }
                        None => (ra[(n, j)] - u[(n, j)] * rs) / r[n],
                    };
                }
            }
        }
        // ra[l] now holds Rδ_l.
        let rdelta = ws.ra[l].as_ref().subrows(0, b);
        add_weight_block(model, l, rdelta, tape.input(l), out, scale);
        if l > 0 {
            if hessian {
                let gw = MatMut::from_row_major_slice_mut(&mut out[arch.weight_range(l)], ly.d_out, ly.d_in);
                gemm(gw, true, tape.delta(l).transpose(), ws.rh[l - 1].as_ref().subrows(0, b), scale);
            }
            // Ra_{l−1} = Rδ W_l + δ V_l (Gauss–Newton: Rδ W_l).
            let (lo, hi) = ws.ra.split_at_mut(l);
            let rdelta = hi[0].as_ref().subrows(0, b);
            let mut prev = lo[l - 1].as_mut().subrows_mut(0, b);
            gemm(prev.rb_mut(), false, rdelta, model.weight(l), 1.0);
            if hessian {
                gemm(prev, true, tape.delta(l), block(model, v, l), 1.0);
            }
        }
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

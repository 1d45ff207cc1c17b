//! Second moments of per-sample gradients from each layer's `(X_l, Δ_l)`, over a whole data set in chunks,
//! without forming per-sample gradients.
//!
//! For a dense layer the per-sample gradient is `G_n = δ_n x̃_nᵀ` with `x̃_n = [x_n; 1]` when the layer has a
//! bias (DESIGN.md §1 "Per-sample quantities"). Hence, writing `s_n = ‖x̃_n‖² = ‖x_n‖² + 1_bias`:
//! - `‖G_n‖² = ‖δ_n‖² s_n`;
//! - row j (incoming set of output unit j, bias included): `Σ_i G_n[j,i]² = δ_nj² s_n`;
//! - column i (outgoing set of input unit i): `Σ_j G_n[j,i]² = x_ni² ‖δ_n‖²`;
//! - element `(j, i)`: `δ_nj² x_ni²` — a GEMM `(Δ∘Δ)ᵀ(X∘X)`, only on request;
//! - `G_n G_nᵀ = s_n δ_nδ_nᵀ` and `G_nᵀG_n = ‖δ_n‖² x_nx_nᵀ` (weighted Gram matrices `Δᵀdiag(s)Δ`, `Xᵀdiag(‖δ‖²)X`).
//!
//! All accumulators are **uncentred means** (1/N). Centred values subtract the mean-gradient term, computed from
//! the mean gradient ḡ that the same pass accumulates: e.g. `Σ_row j = E[δ_j² s] − ‖ḡ_row j‖²`.
#![allow(non_snake_case)]

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::linalg::{
    add_to_f64, col_sq_sums_accumulate, gemm, gemm_par, row_scaled_into, row_sq_norms_into, squares_into,
};
use crate::loss::Loss;
use crate::model::{Architecture, Model};
use crate::net::{for_each_chunk, lanes_map_with, ChunkTape, DenseTape};
use crate::real::Real;
use faer::reborrow::ReborrowMut;
use faer::Par;
use faer::{Mat, MatRef};

/// Which optional statistics a pass computes on top of the always-present per-unit noise and traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MomentOptions {
    /// The element-wise second moments `E[G_n[j,i]²]` of every layer whose rows *and* columns are rescalable
    /// units (needed by the joint rescaling equilibrium). Costs one extra `[d_out, B] × [B, d_in]` GEMM per
    /// such layer; layers with only one rescalable side use the row or column sums instead.
    pub elementwise: bool,
    /// The `d × d` Gram moments `M_in`, `M_out` of every linear pair (identity-joined layers l, l+1).
    pub pair_grams: bool,
    /// Samples per chunk (memory is O(chunk · max width), independent of N).
    pub chunk: usize,
}

impl Default for MomentOptions {
    fn default() -> Self {
        Self { elementwise: true, pair_grams: true, chunk: 4096 }
    }
}

/// Uncentred per-sample gradient moments of one layer (means over the N samples).
#[derive(Clone, Debug)]
pub struct LayerMoments {
    /// `E‖G_n‖²` of the whole layer (weights and bias).
    pub sq_norm: f64,
    /// `E[δ_nj² s_n]`, j < d_out: second moment of row j of `[W_l | b_l]` (incoming set of output unit j).
    pub rows: Vec<f64>,
    /// `E[x_ni² ‖δ_n‖²]`, i < d_in: second moment of column i of `W_l` (outgoing set of input unit i).
    pub cols: Vec<f64>,
    /// `E[δ_nj²]`: second moment of `b_l[j]` (empty without bias).
    pub bias: Vec<f64>,
    /// `E[δ_nj² x_ni²]` (`[d_out, d_in]`), present when requested and both sides of the layer are rescalable.
    pub elementwise: Option<Mat<f64>>,
    /// `E[s_n δ_nδ_nᵀ]` (`[d_out, d_out]`): the uncentred `M_in` of the pair (l, l+1), when l is a linear pair.
    pub delta_gram: Option<Mat<f64>>,
    /// `E[‖δ_n‖² x_nx_nᵀ]` (`[d_in, d_in]`): the uncentred `M_out` of the pair (l−1, l), when l−1 is a linear pair.
    pub input_gram: Option<Mat<f64>>,
}

impl LayerMoments {
    /// Adds another lane's sums (same layer, same shapes).
    fn add(&mut self, o: &LayerMoments) {
        self.sq_norm += o.sq_norm;
        for (x, y) in [(&mut self.rows, &o.rows), (&mut self.cols, &o.cols), (&mut self.bias, &o.bias)] {
            x.iter_mut().zip(y).for_each(|(a, b)| *a += b);
        }
        for (x, y) in [
            (&mut self.elementwise, &o.elementwise),
            (&mut self.delta_gram, &o.delta_gram),
            (&mut self.input_gram, &o.input_gram),
        ] {
            if let (Some(x), Some(y)) = (x.as_mut(), y.as_ref()) {
                *x += y;
            }
        }
    }
}

/// Gradient moments of a whole model over a data set: mean loss, mean gradient and per-layer moments.
#[derive(Clone, Debug)]
pub struct Moments {
    /// The architecture the moments belong to.
    pub arch: Architecture,
    /// Number of samples N.
    pub n: usize,
    /// Mean loss L.
    pub loss: f64,
    /// Mean gradient ḡ = ∇L (length P, θ layout).
    pub grad: Vec<f64>,
    /// Per-layer uncentred moments.
    pub layers: Vec<LayerMoments>,
}

/// Whether hidden unit layer `l` is rescalable (positively homogeneous, no normalisation, not the output).
pub fn rescalable(arch: &Architecture, l: usize) -> bool {
    let ly = arch.layers[l];
    l + 1 < arch.n_layers() && !ly.norm && ly.activation.is_positively_homogeneous()
}

/// Whether layers (l, l+1) form a linear pair with a double-rotation symmetry.
pub fn linear_pair(arch: &Architecture, l: usize) -> bool {
    let ly = arch.layers[l];
    l + 1 < arch.n_layers() && !ly.norm && ly.activation.is_identity()
}

/// Per-layer chunk GEMM buffers in T: (element-wise, delta Gram, input Gram).
type ChunkGrams<T> = (Option<Mat<T>>, Option<Mat<T>>, Option<Mat<T>>);

struct Workspace<T> {
    xn: Vec<T>,
    dn: Vec<T>,
    sq: Mat<T>,
    sq2: Mat<T>,
}

/// Per-sample gradient moments of `model` on `data` in one pass (forward + backward + O(B·(d_in + d_out)) per
/// layer, plus the optional GEMMs of [`MomentOptions`]). Errors on shape, label and non-finite problems.
pub fn moments<T: Real>(
    model: &Model<T>,
    data: &Dataset<T>,
    loss: Loss,
    opts: &MomentOptions,
) -> Result<Moments> {
    model.arch.validate()?;
    data.check_fits(model.arch.d_in(), model.arch.d_out(), loss)?;
    model.check_finite()?;
    let arch = &model.arch;
    let n = data.len();
    let chunk = opts.chunk.max(1).min(n);
    // Two lanes of whole chunks on large passes (`linalg::pass_lanes`), summed in lane order.
    let lanes = crate::linalg::pass_lanes(n, chunk, arch.train_flops(n));
    let parts = lanes_map_with(
        data,
        &lanes,
        |par| DenseTape::new(arch, chunk, *par),
        || LaneSums::new(arch, opts, chunk),
        |tape, r, lane| {
            lane.add_chunk(model, tape, r.len(), loss);
            Ok(())
        },
    )?;
    let mut parts = parts.into_iter().map(|l| (l.lsum, l.grad, l.acc));
    let (mut lsum, mut grad, mut acc) = parts.next().expect("at least one lane");
    for (l, g, a) in parts {
        lsum += l;
        grad.iter_mut().zip(&g).for_each(|(x, y)| *x += y);
        for (x, y) in acc.iter_mut().zip(&a) {
            x.add(y);
        }
    }
    let inv = 1.0 / n as f64;
    grad.iter_mut().for_each(|v| *v *= inv);
    for a in acc.iter_mut() {
        a.sq_norm *= inv;
        for v in a.rows.iter_mut().chain(a.cols.iter_mut()).chain(a.bias.iter_mut()) {
            *v *= inv;
        }
        for m in [&mut a.elementwise, &mut a.delta_gram, &mut a.input_gram].into_iter().flatten() {
            for j in 0..m.ncols() {
                m.col_mut(j).iter_mut().for_each(|v| *v *= inv);
            }
        }
    }
    let out = Moments { arch: arch.clone(), n, loss: lsum * inv, grad, layers: acc };
    out.check_finite()?;
    Ok(out)
}

/// One lane's sums of [`moments`] (loss × samples, gradient sum and per-layer moment sums, not yet divided by
/// N), with the lane's chunk buffers.
struct LaneSums<T> {
    lsum: f64,
    grad: Vec<f64>,
    acc: Vec<LayerMoments>,
    /// The chunk's gradient sum in `T`.
    g: Vec<T>,
    /// One workspace per layer, so that the layers' statistics can run on different cores.
    ws: Vec<Workspace<T>>,
    /// Chunk-level GEMM results in `T`, added to the f64 accumulators.
    grams: Vec<ChunkGrams<T>>,
}

impl<T: Real> LaneSums<T> {
    /// Zero sums for `arch` and the statistics `opts` asks for, with buffers for chunks of `chunk` samples.
    fn new(arch: &Architecture, opts: &MomentOptions, chunk: usize) -> Self {
        let nl = arch.n_layers();
        let acc: Vec<LayerMoments> = (0..nl)
            .map(|l| {
                let ly = arch.layers[l];
                LayerMoments {
                    sq_norm: 0.0,
                    rows: vec![0.0; ly.d_out],
                    cols: vec![0.0; ly.d_in],
                    bias: vec![0.0; if ly.bias { ly.d_out } else { 0 }],
                    elementwise: (opts.elementwise
                        && rescalable(arch, l)
                        && l > 0
                        && rescalable(arch, l - 1))
                    .then(|| Mat::zeros(ly.d_out, ly.d_in)),
                    delta_gram: (opts.pair_grams && linear_pair(arch, l))
                        .then(|| Mat::zeros(ly.d_out, ly.d_out)),
                    input_gram: (opts.pair_grams && l > 0 && linear_pair(arch, l - 1))
                        .then(|| Mat::zeros(ly.d_in, ly.d_in)),
                }
            })
            .collect();
        let ws = acc
            .iter()
            .zip(&arch.layers)
            .map(|(a, ly)| {
                let (grams, element) =
                    (a.delta_gram.is_some() || a.input_gram.is_some(), a.elementwise.is_some());
                let sq_cols = if element || grams { ly.d_in.max(ly.d_out) } else { 0 };
                Workspace {
                    xn: vec![T::zero(); chunk],
                    dn: vec![T::zero(); chunk],
                    sq: Mat::zeros(chunk, sq_cols),
                    sq2: Mat::zeros(chunk, if element { ly.d_in } else { 0 }),
                }
            })
            .collect();
        let grams = acc
            .iter()
            .map(|a| {
                // In f64 the products go straight into the accumulators ([`add_product`]): no temporaries.
                let in_f64 = std::any::TypeId::of::<T>() == std::any::TypeId::of::<f64>();
                let shape = |m: &Mat<f64>| if in_f64 { (0, 0) } else { (m.nrows(), m.ncols()) };
                let z = |m: &Option<Mat<f64>>| m.as_ref().map(|m| Mat::<T>::zeros(shape(m).0, shape(m).1));
                (z(&a.elementwise), z(&a.delta_gram), z(&a.input_gram))
            })
            .collect();
        Self {
            lsum: 0.0,
            grad: vec![0.0; arch.n_params()],
            acc,
            g: vec![T::zero(); arch.n_params()],
            ws,
            grams,
        }
    }

    /// Adds the loaded chunk of `b` samples: one forward + backward on `tape`, then every layer's moments.
    fn add_chunk(&mut self, model: &Model<T>, tape: &mut DenseTape<T>, b: usize, loss: Loss) {
        self.lsum += tape.pass(model, loss, Some(&mut self.g));
        for (t, v) in self.grad.iter_mut().zip(&self.g) {
            *t += v.to_f64();
        }
        let tape = &*tape;
        let layers = self.acc.iter_mut().zip(self.grams.iter_mut()).zip(self.ws.iter_mut()).enumerate();
        if matches!(tape.par(), Par::Rayon(_)) {
            // Each layer's reductions are memory-bound passes over its X and Δ: the layers share the cores.
            use rayon::prelude::*;
            let layers: Vec<_> = layers.collect();
            layers.into_par_iter().for_each(|(l, ((a, g), w))| layer_chunk(tape, l, b, w, a, g));
        } else {
            for (l, ((a, g), w)) in layers {
                layer_chunk(tape, l, b, w, a, g);
            }
        }
    }
}

/// Adds one chunk's contribution of layer l. Cost O(B·(d_in + d_out)) plus the optional GEMMs.
fn layer_chunk<T: Real>(
    tape: &DenseTape<T>,
    l: usize,
    b: usize,
    ws: &mut Workspace<T>,
    acc: &mut LayerMoments,
    grams: &mut ChunkGrams<T>,
) {
    let X = tape.input(l);
    let D = tape.delta(l);
    let (d_in, d_out) = (X.ncols(), D.ncols());
    let has_bias = !acc.bias.is_empty();
    let one = if has_bias { T::one() } else { T::zero() };
    let (xn, dn) = (&mut ws.xn[..b], &mut ws.dn[..b]);
    row_sq_norms_into(X, xn);
    row_sq_norms_into(D, dn);
    // s_n = ‖x_n‖² + 1_bias, kept in xn.
    xn.iter_mut().for_each(|v| *v += one);
    let mut tot = T::zero();
    for n in 0..b {
        tot += dn[n] * xn[n];
    }
    acc.sq_norm += tot.to_f64();
    // rows: Σ_n δ_nj² s_n ; bias: Σ_n δ_nj²
    col_sq_sums_accumulate(D, xn, &mut acc.rows, &mut acc.bias);
    // cols: Σ_n x_ni² ‖δ_n‖²
    col_sq_sums_accumulate(X, dn, &mut acc.cols, &mut []);
    if let (Some(dst), Some(tmp)) = (acc.elementwise.as_mut(), grams.0.as_mut()) {
        // E[δ_nj² x_ni²] = (Δ∘Δ)ᵀ(X∘X)
        squares_into(ws.sq.as_mut().submatrix_mut(0, 0, b, d_out), D);
        squares_into(ws.sq2.as_mut().submatrix_mut(0, 0, b, d_in), X);
        let (dsq, xsq) = (ws.sq.as_ref().submatrix(0, 0, b, d_out), ws.sq2.as_ref().submatrix(0, 0, b, d_in));
        add_product(dst, tmp, dsq.transpose(), xsq, tape.par());
    }
    if let (Some(dst), Some(tmp)) = (acc.delta_gram.as_mut(), grams.1.as_mut()) {
        // Δᵀ diag(s) Δ
        row_scaled_into(ws.sq.as_mut().submatrix_mut(0, 0, b, d_out), D, xn);
        add_product(dst, tmp, D.transpose(), ws.sq.as_ref().submatrix(0, 0, b, d_out), tape.par());
    }
    if let (Some(dst), Some(tmp)) = (acc.input_gram.as_mut(), grams.2.as_mut()) {
        // Xᵀ diag(‖δ‖²) X
        row_scaled_into(ws.sq.as_mut().submatrix_mut(0, 0, b, d_in), X, dn);
        add_product(dst, tmp, X.transpose(), ws.sq.as_ref().submatrix(0, 0, b, d_in), tape.par());
    }
}

/// `dst += lhs·rhs` with `dst` in f64: straight into `dst` when `T` is f64; otherwise the product is formed
/// in `T` in `tmp` (same shape as `dst`) and added in f64, so the sum over chunks stays in f64.
fn add_product<T: Real>(
    dst: &mut Mat<f64>,
    tmp: &mut Mat<T>,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    par: Par,
) {
    if let Some(dst) = (dst as &mut dyn std::any::Any).downcast_mut::<Mat<T>>() {
        gemm_par(dst.as_mut(), true, lhs, rhs, T::one(), par);
    } else {
        gemm_par(tmp.as_mut(), false, lhs, rhs, T::one(), par);
        add_to_f64(dst.as_mut(), tmp.as_ref());
    }
}

impl Moments {
    fn check_finite(&self) -> Result<()> {
        if !self.loss.is_finite() {
            return Err(Error::NonFinite { what: "mean loss".into(), index: 0, value: self.loss });
        }
        if let Some(i) = self.grad.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite { what: "mean gradient".into(), index: i, value: self.grad[i] });
        }
        for (l, a) in self.layers.iter().enumerate() {
            let bad = std::iter::once(a.sq_norm)
                .chain(a.rows.iter().copied())
                .chain(a.cols.iter().copied())
                .find(|v| !v.is_finite());
            if let Some(v) = bad {
                return Err(Error::NonFinite {
                    what: format!("gradient second moments of layer {l}"),
                    index: l,
                    value: v,
                });
            }
        }
        Ok(())
    }

    /// `Tr Σ = E‖g_n‖² − ‖ḡ‖²` (centred, 1/N).
    pub fn trace_sigma(&self) -> f64 {
        self.layers.iter().map(|a| a.sq_norm).sum::<f64>() - crate::linalg::norm_sq(&self.grad)
    }

    /// `E‖g_n‖²` (uncentred trace, `Tr M_1`).
    pub fn trace_second_moment(&self) -> f64 {
        self.layers.iter().map(|a| a.sq_norm).sum()
    }

    /// `Tr Σ_l` of layer l's block (centred): `E‖G_n‖² − ‖ḡ_l‖²`.
    pub fn layer_trace_sigma(&self, l: usize) -> f64 {
        self.layers[l].sq_norm - crate::linalg::norm_sq(&self.grad[self.arch.layer_range(l)])
    }

    /// Mean-gradient mass of row j of `[W_l | b_l]`: `‖ḡ_W_l[j,:]‖² + ḡ_b_l[j]²`.
    pub fn grad_row_sq(&self, l: usize, j: usize) -> f64 {
        crate::symmetry::rescale::incoming(&self.arch, l, j).map(|k| self.grad[k] * self.grad[k]).sum()
    }

    /// Mean-gradient mass of column i of `W_l`: `‖ḡ_W_l[:,i]‖²`.
    pub fn grad_col_sq(&self, l: usize, i: usize) -> f64 {
        let ly = self.arch.layers[l];
        (0..ly.d_out).map(|j| self.grad[self.arch.weight_index(l, j, i)].powi(2)).sum()
    }

    /// Incoming noise of hidden unit j of layer l: `Σ_k Σ_kk` over row j of `W_l` and `b_l[j]`, centred or not.
    pub fn noise_in(&self, l: usize, j: usize, centred: bool) -> f64 {
        let u = self.layers[l].rows[j];
        if centred {
            u - self.grad_row_sq(l, j)
        } else {
            u
        }
    }

    /// Outgoing noise of hidden unit j of layer l: `Σ_k Σ_kk` over column j of `W_{l+1}`, centred or not.
    pub fn noise_out(&self, l: usize, j: usize, centred: bool) -> f64 {
        let u = self.layers[l + 1].cols[j];
        if centred {
            u - self.grad_col_sq(l + 1, j)
        } else {
            u
        }
    }

    /// Mean gradient of the pair's incoming block `Ḡ_l = [ḡ_W_l | ḡ_b_l]` (`d × (d_in + bias)`).
    fn grad_in_block(&self, l: usize) -> Mat<f64> {
        crate::symmetry::double_rotation::incoming_block(&self.arch, l, &self.grad)
    }

    /// `M_in = E[G_l G_lᵀ]` (`d × d`) of the linear pair (l, l+1), `G_l = [∇W_l | ∇b_l]`; centred subtracts
    /// `Ḡ_lḠ_lᵀ`. Errors when the pass did not compute pair Gram moments or (l, l+1) is not a linear pair.
    pub fn m_in(&self, l: usize, centred: bool) -> Result<Mat<f64>> {
        let m = self.layers.get(l).and_then(|a| a.delta_gram.as_ref()).ok_or_else(|| no_pair(l))?;
        Ok(if centred {
            let g = self.grad_in_block(l);
            m - &g * g.transpose()
        } else {
            m.clone()
        })
    }

    /// `M_out = E[G_{l+1}ᵀ G_{l+1}]` (`d × d`) of the linear pair (l, l+1); centred subtracts `Ḡ_{l+1}ᵀḠ_{l+1}`.
    pub fn m_out(&self, l: usize, centred: bool) -> Result<Mat<f64>> {
        let m = self.layers.get(l + 1).and_then(|a| a.input_gram.as_ref()).ok_or_else(|| no_pair(l))?;
        Ok(if centred {
            let g = crate::symmetry::double_rotation::outgoing_block(&self.arch, l, &self.grad);
            m - g.transpose() * &g
        } else {
            m.clone()
        })
    }

    /// Diagonal of Σ (centred) or of `M_1` (uncentred) on `W_l` as a `[d_out, d_in]` matrix, from the
    /// element-wise moments. Errors when they were not computed for layer l.
    pub fn weight_diag(&self, l: usize, centred: bool) -> Result<Mat<f64>> {
        let m = self.layers[l].elementwise.as_ref().ok_or_else(|| Error::Config(format!(
            "element-wise moments of layer {l} were not computed (MomentOptions::elementwise, needs rescalable units on both sides)"
        )))?;
        let ly = self.arch.layers[l];
        Ok(Mat::from_fn(ly.d_out, ly.d_in, |j, i| {
            m[(j, i)] - if centred { self.grad[self.arch.weight_index(l, j, i)].powi(2) } else { 0.0 }
        }))
    }
}

fn no_pair(l: usize) -> Error {
    Error::NoSymmetry(format!(
        "layers {l} and {} are not a linear pair with computed Gram moments (needs an identity activation on layer {l} and MomentOptions::pair_grams)",
        l + 1
    ))
}

/// Per-sample squared gradient norms per layer, `[N, L]`: `‖G_n^{(l)}‖² = ‖δ_n‖²(‖x_n‖² + 1_bias)`.
/// Cost: one forward + backward (no weight-gradient GEMMs) and O(B·(d_in + d_out)) per layer.
pub fn per_sample_grad_sq_norms<T: Real>(
    model: &Model<T>,
    data: &Dataset<T>,
    loss: Loss,
    chunk: usize,
) -> Result<Mat<f64>> {
    data.check_fits(model.arch.d_in(), model.arch.d_out(), loss)?;
    let n = data.len();
    let nl = model.arch.n_layers();
    let mut tape = DenseTape::new(&model.arch, chunk.min(n), None)?;
    let mut out = Mat::<f64>::zeros(n, nl);
    let cap = tape.capacity();
    let (mut xn, mut dn) = (vec![T::zero(); cap], vec![T::zero(); cap]);
    for_each_chunk(&mut tape, data, |tape, r| {
        let b = r.len();
        tape.pass(model, loss, None);
        for l in 0..nl {
            let one = if model.arch.layers[l].bias { 1.0 } else { 0.0 };
            row_sq_norms_into(tape.input(l), &mut xn[..b]);
            row_sq_norms_into(tape.delta(l), &mut dn[..b]);
            for i in 0..b {
                out[(r.start + i, l)] = dn[i].to_f64() * (xn[i].to_f64() + one);
            }
        }
        Ok(())
    })?;
    Ok(out)
}

impl Moments {
    /// `Tr[AΣ]` (centred: `E[g_nᵀAg_n] − ḡᵀAḡ`) or `Tr[A M_1] = E[g_nᵀAg_n]` (uncentred) of a generator, from the
    /// moments: rescale `noise_in − noise_out`; double rotation `⟨B, M_in − M_out⟩_F`; scale `Tr Σ_l`.
    /// Errors when the generator is not a symmetry of the model or its moments were not computed.
    pub fn generator_trace(&self, generator: &crate::symmetry::Generator, centred: bool) -> Result<f64> {
        use crate::symmetry::Generator;
        generator.check(&self.arch)?;
        Ok(match generator {
            Generator::Rescale { layer, unit } => {
                self.noise_in(*layer, *unit, centred) - self.noise_out(*layer, *unit, centred)
            }
            Generator::DoubleRotation { layer, b } => {
                let m = self.m_in(*layer, centred)? - self.m_out(*layer, centred)?;
                frobenius(b, &m)
            }
            Generator::Scale { layer } => {
                if centred {
                    self.layer_trace_sigma(*layer)
                } else {
                    self.layers[*layer].sq_norm
                }
            }
        })
    }
}

/// `⟨A, B⟩_F = Σ_ij A_ij B_ij`.
pub fn frobenius(a: &Mat<f64>, b: &Mat<f64>) -> f64 {
    let mut s = 0.0;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            s += a[(i, j)] * b[(i, j)];
        }
    }
    s
}

/// Per-sample `g_nᵀAg_n` of a generator over a data set (length N), from `(X_l, Δ_l)`:
/// rescale `δ_nj² s_n − x'_nj² ‖δ'_n‖²`; double rotation `(δ_nᵀBδ_n) s_n − (x'_nᵀBx'_n)‖δ'_n‖²` (primes: layer
/// l+1); scale `‖δ_n‖² s_n`, with `s_n = ‖x_n‖² + 1_bias`. Cost: one forward + backward (+ a `[B,d]×[d,d]` GEMM).
pub fn per_sample_quad<T: Real>(
    model: &Model<T>,
    data: &Dataset<T>,
    loss: Loss,
    generator: &crate::symmetry::Generator,
    chunk: usize,
) -> Result<Vec<f64>> {
    use crate::symmetry::Generator;
    generator.check(&model.arch)?;
    data.check_fits(model.arch.d_in(), model.arch.d_out(), loss)?;
    let n = data.len();
    let arch = &model.arch;
    let mut tape = DenseTape::new(arch, chunk.min(n), None)?;
    let cap = tape.capacity();
    let mut out = vec![0.0; n];
    let (mut xn, mut dn) = (vec![T::zero(); cap], vec![T::zero(); cap]);
    let bt: Option<Mat<T>> = match generator {
        Generator::DoubleRotation { b, .. } => {
            Some(Mat::from_fn(b.nrows(), b.ncols(), |i, j| T::from_f64(b[(i, j)])))
        }
        _ => None,
    };
    let mut prod = Mat::<T>::zeros(cap, bt.as_ref().map_or(0, |b| b.nrows()));
    for_each_chunk(&mut tape, data, |tape, r| {
        let b = r.len();
        tape.pass(model, loss, None);
        let s_of = |l: usize, xn: &mut [T]| {
            row_sq_norms_into(tape.input(l), xn);
            let one = if arch.layers[l].bias { T::one() } else { T::zero() };
            xn.iter_mut().for_each(|v| *v += one);
        };
        let o = &mut out[r];
        match generator {
            Generator::Rescale { layer, unit } => {
                let (l, j) = (*layer, *unit);
                s_of(l, &mut xn[..b]);
                row_sq_norms_into(tape.delta(l + 1), &mut dn[..b]);
                let (d, x1) = (tape.delta(l).col(j), tape.input(l + 1).col(j));
                for i in 0..b {
                    o[i] = (d[i] * d[i] * xn[i] - x1[i] * x1[i] * dn[i]).to_f64();
                }
            }
            Generator::DoubleRotation { layer, .. } => {
                let l = *layer;
                let bm = bt.as_ref().expect("B");
                let quad_rows = |m: MatRef<'_, T>, prod: &mut Mat<T>, o: &mut [f64], w: &[T], sign: f64| {
                    let mut p = prod.as_mut().subrows_mut(0, b);
                    gemm(p.rb_mut(), false, m, bm.as_ref(), T::one());
                    for i in 0..b {
                        let mut q = T::zero();
                        for k in 0..m.ncols() {
                            q += m[(i, k)] * p[(i, k)];
                        }
                        o[i] += sign * (q * w[i]).to_f64();
                    }
                };
                s_of(l, &mut xn[..b]);
                row_sq_norms_into(tape.delta(l + 1), &mut dn[..b]);
                o.iter_mut().for_each(|v| *v = 0.0);
                quad_rows(tape.delta(l), &mut prod, o, &xn[..b], 1.0);
                quad_rows(tape.input(l + 1), &mut prod, o, &dn[..b], -1.0);
            }
            Generator::Scale { layer } => {
                let l = *layer;
                s_of(l, &mut xn[..b]);
                row_sq_norms_into(tape.delta(l), &mut dn[..b]);
                for i in 0..b {
                    o[i] = (dn[i] * xn[i]).to_f64();
                }
            }
        }
        Ok(())
    })?;
    Ok(out)
}

//! A fused SGD step for small batches: forward, loss, backward and update in one sweep over θ, sample by
//! sample, with no GEMM calls.
//!
//! For a batch of a few samples each layer's products are matrix–vector products of a few thousand
//! multiply-adds, where calling a GEMM (planning, packing, dispatch) costs more than the arithmetic
//! (the paper's 30-40-30 net at S = 1 is 12k flops per step). Here, for every layer from the top, in order:
//!
//! - `δ_l ← δ_l ⊙ φ′(z_l)`;
//! - `δ_{l−1} = W_lᵀ δ_l` (column blocks of `W_l`, with the weights *before* the update);
//! - `ĝ_l = (1/B) Σ_n δ_{l,n} x_{l,n}ᵀ` written to `grad` row by row, and each row updated at once,
//!   `θ ← θ − η(ĝ + γθ)`, while it is in cache.
//!
//! The result equals the generic step (the module-tree tape [`crate::net::Tape`] on
//! [`crate::net::NetArch::from_dense`], forward and backward, then [`crate::linalg::sgd_update_in_place`]) up
//! to round-off (sums run in a different order), and `grad` holds the same ĝ when it is recorded, so the exact
//! identity `C_{t+1} − C_t = η²ĝᵀAĝ` holds to round-off against it. Layers with normalisation are not
//! supported (see [`SmallBatchStep::supports`]); the trainer uses the tape for those.

use super::Architecture;
use crate::data::{Batch, Dataset};
use crate::linalg::simd_dispatch;
use crate::loss::Loss;
use crate::real::Real;
use faer::{MatMut, MatRef};

/// Largest batch for which the fused step is used: above it the rank-B products are GEMMs and the
/// tape's batched backward is faster. Measured on the 30-40-30 net in f64 (`examples/prof_fused.rs`, loaded
/// 2-core machine): tape/fused time 1.88 at B = 1, 1.52 at B = 2, 0.81 at B = 4, 0.65 at B = 8.
pub const FUSED_MAX_BATCH: usize = 2;

/// Per-sample buffers of the fused small-batch step, allocated once.
#[derive(Clone, Debug)]
pub struct SmallBatchStep<T> {
    arch: Architecture,
    batch: usize,
    /// `h[0]` = inputs, `h[l + 1]` = output of layer l; sample-major `[B][d]`.
    h: Vec<Vec<T>>,
    /// Pre-activations `z_l`, `[B][d_out]`.
    z: Vec<Vec<T>>,
    /// `δ_l = ∂ℓ_n/∂z_l`, `[B][d_out]`.
    delta: Vec<Vec<T>>,
    /// Regression targets `[B][d_out]`.
    y: Vec<T>,
    labels: Vec<usize>,
}

impl<T: Real> SmallBatchStep<T> {
    /// Whether the fused step handles `arch` at batch size `batch` (no normalising layer, `batch` ≤
    /// [`FUSED_MAX_BATCH`]).
    pub fn supports(arch: &Architecture, batch: usize) -> bool {
        (1..=FUSED_MAX_BATCH).contains(&batch) && arch.layers.iter().all(|ly| !ly.norm)
    }

    /// Buffers for batches of exactly `batch` samples of `arch`.
    pub fn new(arch: &Architecture, batch: usize) -> Self {
        let h = arch.dims().into_iter().map(|d| vec![T::zero(); batch * d]).collect();
        let per_layer = || arch.layers.iter().map(|ly| vec![T::zero(); batch * ly.d_out]).collect();
        Self {
            arch: arch.clone(),
            batch,
            h,
            z: per_layer(),
            delta: per_layer(),
            y: vec![T::zero(); batch * arch.d_out()],
            labels: vec![0; batch],
        }
    }

    /// Copies the samples `rows` of `data` (exactly `batch` of them) into the buffers.
    pub fn load_rows(&mut self, data: &Dataset<T>, rows: &[usize]) {
        self.load_batch(Batch::Rows(data, rows))
    }

    /// Loads the minibatch `batch` (exactly `batch` samples) into the sample-major buffers.
    pub fn load_batch(&mut self, batch: Batch<'_, T>) {
        let b = self.batch;
        assert_eq!(batch.len(), b, "fused step built for batch {b}");
        let (d_in, d_out) = (self.arch.d_in(), self.arch.d_out());
        let x = MatMut::from_row_major_slice_mut(&mut self.h[0], b, d_in);
        batch.copy_into(x, MatMut::from_row_major_slice_mut(&mut self.y, b, d_out), &mut self.labels);
    }

    /// One SGD step on the loaded batch: returns the mean batch loss. When it is finite, updates
    /// `params ← params − η(ĝ + γ·params)` with `ĝ = (1/B)Σ_n ∇ℓ_n`, and leaves ĝ in `grad` if `record`
    /// (otherwise `grad` is scratch: at B = 1 in f64 the update is applied without storing ĝ); when it is not
    /// finite, leaves `params` untouched. The targets must match `loss` (checked when the trainer is built).
    pub fn step(
        &mut self,
        params: &mut [T],
        grad: &mut [T],
        record: bool,
        loss: Loss,
        eta: T,
        weight_decay: T,
    ) -> f64 {
        assert_eq!(params.len(), self.arch.n_params());
        assert_eq!(grad.len(), self.arch.n_params());
        self.forward(params);
        let (b, last) = (self.batch, self.arch.n_layers() - 1);
        let d = self.arch.d_out();
        let total = match loss {
            // Sample-major rows are one contiguous slice: the residuals in one sweep.
            Loss::Mse => {
                0.5 * crate::loss::residuals_into(&self.h[last + 1], &self.y, &mut self.delta[last]).to_f64()
            }
            Loss::CrossEntropy => loss.value_and_grad_into(
                MatRef::from_row_major_slice(&self.h[last + 1], b, d),
                MatRef::from_row_major_slice(&self.y, b, d),
                &self.labels,
                MatMut::from_row_major_slice_mut(&mut self.delta[last], b, d),
            ),
        };
        let mean = total / b as f64;
        if mean.is_finite() {
            self.backward_update(params, grad, record, eta, weight_decay);
        }
        mean
    }

    fn forward(&mut self, params: &[T]) {
        for l in 0..self.arch.n_layers() {
            let ly = self.arch.layers[l];
            let (w, bias) = (&params[self.arch.weight_range(l)], &params[self.arch.bias_range(l)]);
            let (head, tail) = self.h.split_at_mut(l + 1);
            layer_forward(w, bias, ly.activation, &head[l], &mut self.z[l], &mut tail[0], ly.d_in);
        }
    }

    fn backward_update(&mut self, params: &mut [T], grad: &mut [T], record: bool, eta: T, wd: T) {
        let inv_b = T::from_f64(1.0 / self.batch as f64);
        for l in (0..self.arch.n_layers()).rev() {
            let ly = self.arch.layers[l];
            let (wr, br) = (self.arch.weight_range(l), self.arch.bias_range(l));
            let (lo, hi) = self.delta.split_at_mut(l);
            let prev = if l > 0 { Some(&mut lo[l - 1][..]) } else { None };
            layer_backward_update(
                ly.activation,
                &self.z[l],
                &self.h[l + 1],
                &mut hi[0],
                &self.h[l],
                prev,
                &mut params[wr.start..br.end],
                &mut grad[wr.start..br.end],
                record,
                ly.d_in,
                inv_b,
                eta,
                wd,
            );
        }
    }
}

/// Columns of the narrower blocks of `Wᵀδ` (one 256-bit vector of f64).
const LANES: usize = 4;
/// Columns per block of `Wᵀδ` (four 256-bit vectors of f64 in registers across all rows).
const COLS: usize = 16;

/// Independent partial sums of a dot product (two 256-bit vectors of f64, one of f32).
const DOT_LANES: usize = 8;

/// `a · b` with [`DOT_LANES`] independent partial sums, then a tree sum.
#[inline(always)]
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    let split = a.len() / DOT_LANES * DOT_LANES;
    let mut acc = [T::zero(); DOT_LANES];
    for (ca, cb) in a[..split].chunks_exact(DOT_LANES).zip(b[..split].chunks_exact(DOT_LANES)) {
        for t in 0..DOT_LANES {
            acc[t] += ca[t] * cb[t];
        }
    }
    let mut tail = T::zero();
    for (&u, &v) in a[split..].iter().zip(&b[split..]) {
        tail += u * v;
    }
    let q: [T; 4] = std::array::from_fn(|t| acc[t] + acc[t + 4]);
    (q[0] + q[2]) + (q[1] + q[3]) + tail
}

/// The slice as `f64` when `T` is `f64` (the f64 kernels below have AVX2 intrinsics).
#[inline(always)]
fn as_f64<T: Real>(s: &[T]) -> Option<&[f64]> {
    // SAFETY: same type, so same layout and length.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f64>())
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr() as *const f64, s.len()) })
}

/// Mutable [`as_f64`].
#[inline(always)]
fn as_f64_mut<T: Real>(s: &mut [T]) -> Option<&mut [f64]> {
    // SAFETY: same type, so same layout and length; the borrow is carried over.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f64>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut f64, s.len()) })
}

/// Whether the f64 AVX2+FMA kernels can run (cached by std after the first call).
#[inline(always)]
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[i] = W[i, :] · x` for a row-major `W` (`out.len()` rows of `x.len()` columns).
#[inline(always)]
fn matvec<T: Real>(w: &[T], x: &[T], out: &mut [T]) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(w), Some(x), true) = (as_f64(w), as_f64(x), has_avx2_fma()) {
        // SAFETY: the CPU has AVX2 and FMA (checked).
        return unsafe { matvec_f64_avx2(w, x, as_f64_mut(out).expect("f64")) };
    }
    for (o, row) in out.iter_mut().zip(w.chunks_exact(x.len())) {
        *o = dot(row, x);
    }
}

/// The mask of the first `rem` of four f64 lanes (sign bit set = loaded/stored) for the masked tails.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn tail_mask(rem: usize) -> std::arch::x86_64::__m256i {
    let lane = |t: usize| if t < rem { -1 } else { 0 };
    std::arch::x86_64::_mm256_set_epi64x(lane(3), lane(2), lane(1), lane(0))
}

/// [`matvec`] for f64 with AVX2+FMA intrinsics: per row two 4-lane FMA chains and a masked tail.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn matvec_f64_avx2(w: &[f64], x: &[f64], out: &mut [f64]) {
    let d = x.len();
    assert_eq!(w.len(), d * out.len());
    let mask = tail_mask(d % 4);
    let mut i = 0;
    while i + 2 <= out.len() {
        let [s0, s1] = rows_dot_f64_avx2::<2>(w.as_ptr().add(i * d), x, mask);
        (out[i], out[i + 1]) = (s0, s1);
        i += 2;
    }
    if i < out.len() {
        out[i] = rows_dot_f64_avx2::<1>(w.as_ptr().add(i * d), x, mask)[0];
    }
}

/// Dot products of `R` consecutive rows (length `x.len()`, starting at `w`) with `x`: two 4-lane FMA
/// chains per row sharing the loads of `x`, and a masked tail (`mask` = [`tail_mask`] of `x.len() % 4`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows_dot_f64_avx2<const R: usize>(
    w: *const f64,
    x: &[f64],
    mask: std::arch::x86_64::__m256i,
) -> [f64; R] {
    use std::arch::x86_64::*;
    let (d, xp) = (x.len(), x.as_ptr());
    let mut a0 = [_mm256_setzero_pd(); R];
    let mut a1 = [_mm256_setzero_pd(); R];
    let mut k = 0;
    while k + 8 <= d {
        let (x0, x1) = (_mm256_loadu_pd(xp.add(k)), _mm256_loadu_pd(xp.add(k + 4)));
        for r in 0..R {
            let wp = w.add(r * d + k);
            a0[r] = _mm256_fmadd_pd(_mm256_loadu_pd(wp), x0, a0[r]);
            a1[r] = _mm256_fmadd_pd(_mm256_loadu_pd(wp.add(4)), x1, a1[r]);
        }
        k += 8;
    }
    if k + 4 <= d {
        let x0 = _mm256_loadu_pd(xp.add(k));
        for r in 0..R {
            a0[r] = _mm256_fmadd_pd(_mm256_loadu_pd(w.add(r * d + k)), x0, a0[r]);
        }
        k += 4;
    }
    if k < d {
        let x1 = _mm256_maskload_pd(xp.add(k), mask);
        for r in 0..R {
            a1[r] = _mm256_fmadd_pd(_mm256_maskload_pd(w.add(r * d + k), mask), x1, a1[r]);
        }
    }
    std::array::from_fn(|r| {
        let s = _mm256_add_pd(a0[r], a1[r]);
        let h = _mm_add_pd(_mm256_castpd256_pd128(s), _mm256_extractf128_pd::<1>(s));
        _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)))
    })
}

/// `acc[t] = Σ_i δ_i W[i, k0 + t]` for `t < N` (a block of `Wᵀδ`, `W` row-major with `d` columns).
#[inline(always)]
fn matvec_t_block<T: Real, const N: usize>(w: &[T], delta: &[T], d: usize, k0: usize, out: &mut [T]) {
    assert!(k0 + N <= d && w.len() >= delta.len() * d);
    let mut acc = [T::zero(); N];
    let wp = w.as_ptr();
    for (i, &di) in delta.iter().enumerate() {
        // SAFETY: i < delta.len() and k0 + N ≤ d, so i·d + k0 + t < delta.len()·d ≤ w.len().
        unsafe {
            let row = wp.add(i * d + k0);
            for t in 0..N {
                acc[t] += di * *row.add(t);
            }
        }
    }
    out[k0..k0 + N].copy_from_slice(&acc);
}

/// `out = Wᵀ δ` for a row-major `W` (`δ.len()` rows of `out.len()` columns), `COLS` columns at a time.
#[inline(always)]
fn matvec_t<T: Real>(w: &[T], delta: &[T], out: &mut [T]) {
    let d = out.len();
    let mut k0 = 0;
    while k0 + COLS <= d {
        matvec_t_block::<T, COLS>(w, delta, d, k0, out);
        k0 += COLS;
    }
    while k0 + LANES <= d {
        matvec_t_block::<T, LANES>(w, delta, d, k0, out);
        k0 += LANES;
    }
    while k0 < d {
        matvec_t_block::<T, 1>(w, delta, d, k0, out);
        k0 += 1;
    }
}

/// `y += alpha · x`.
#[inline(always)]
fn axpy<T: Real>(y: &mut [T], alpha: T, x: &[T]) {
    for (o, &v) in y.iter_mut().zip(x) {
        *o += alpha * v;
    }
}

simd_dispatch! {
    /// Layer forward for every sample: `z_n = W x_n + b`, `h_n = φ(z_n)` (W row-major `[out, in]`).
    fn layer_forward<T: Real>(
        w: &[T],
        bias: &[T],
        act: super::Activation,
        x: &[T],
        z: &mut [T],
        h: &mut [T],
        d_in: usize,
    ) {
        let d_out = w.len() / d_in;
        for ((xn, zn), hn) in x.chunks_exact(d_in).zip(z.chunks_exact_mut(d_out)).zip(h.chunks_exact_mut(d_out)) {
            matvec(w, xn, zn);
            for (zi, &bi) in zn.iter_mut().zip(bias) {
                *zi += bi;
            }
            if act.is_identity() {
                hn.copy_from_slice(zn);
            } else {
                for (hi, &zi) in hn.iter_mut().zip(zn.iter()) {
                    *hi = act.value(zi);
                }
            }
        }
    }
}

simd_dispatch! {
    /// Layer backward and update for every sample: `δ ← δ ⊙ φ′(z)`; `δ_prev = Wᵀδ` (before the update); then
    /// per output row i, `ĝ_i = inv_b Σ_n δ_{n,i} x_n` into `grad` and `θ_i ← θ_i − η(ĝ_i + γθ_i)`; the bias
    /// likewise with `ĝ = inv_b Σ_n δ_n`. `theta` and `grad` hold `W` (row-major) then `b` (if any).
    fn layer_backward_update<T: Real>(
        act: super::Activation,
        z: &[T],
        h: &[T],
        delta: &mut [T],
        x: &[T],
        prev: Option<&mut [T]>,
        theta: &mut [T],
        grad: &mut [T],
        record: bool,
        d_in: usize,
        inv_b: T,
        eta: T,
        wd: T,
    ) {
        let d_out = z.len() / (x.len() / d_in);
        if !act.is_identity() {
            for ((d, &zv), &hv) in delta.iter_mut().zip(z).zip(h) {
                *d *= act.d1(zv, hv);
            }
        }
        let (w, bias) = theta.split_at_mut(d_in * d_out);
        let (gw, gb) = grad.split_at_mut(d_in * d_out);
        if let Some(prev) = prev {
            for (pn, dn) in prev.chunks_exact_mut(d_in).zip(delta.chunks_exact(d_out)) {
                matvec_t(w, dn, pn);
            }
        }
        weight_update(w, gw, record, x, delta, d_in, inv_b, eta, wd);
        for (i, (t, g)) in bias.iter_mut().zip(gb.iter_mut()).enumerate() {
            let mut s = T::zero();
            for dn in delta.chunks_exact(d_out) {
                s += dn[i];
            }
            *g = inv_b * s;
            *t -= eta * (*g + wd * *t);
        }
    }
}

/// `ĝ_i = inv_b Σ_n δ_{n,i} x_n` into the rows of `gw`, and `W_i ← W_i − η(ĝ_i + γW_i)`. One f64 sample runs
/// the AVX2+FMA kernel, which leaves ĝ in `gw` only if `record`; otherwise `gw` always holds ĝ.
#[inline(always)]
fn weight_update<T: Real>(
    w: &mut [T],
    gw: &mut [T],
    record: bool,
    x: &[T],
    delta: &[T],
    d_in: usize,
    inv_b: T,
    eta: T,
    wd: T,
) {
    #[cfg(target_arch = "x86_64")]
    if let (Some(x), Some(delta), true, true) = (as_f64(x), as_f64(delta), x.len() == d_in, has_avx2_fma()) {
        let (w, gw, e, wd) =
            (as_f64_mut(w).expect("f64"), as_f64_mut(gw).expect("f64"), eta.to_f64(), wd.to_f64());
        // SAFETY: the CPU has AVX2 and FMA (checked); T is f64 (as_f64 succeeded).
        return unsafe {
            if record {
                rank1_update_f64_avx2::<true>(w, gw, x, delta, e, wd)
            } else {
                rank1_update_f64_avx2::<false>(w, gw, x, delta, e, wd)
            }
        };
    }
    let d_out = w.len() / d_in;
    for (i, (wi, gi)) in w.chunks_exact_mut(d_in).zip(gw.chunks_exact_mut(d_in)).enumerate() {
        let mut samples = x.chunks_exact(d_in).zip(delta.chunks_exact(d_out));
        let (x0, d0) = samples.next().expect("a batch has a sample");
        let a = inv_b * d0[i];
        for (g, &v) in gi.iter_mut().zip(x0) {
            *g = a * v;
        }
        for (xn, dn) in samples {
            axpy(gi, inv_b * dn[i], xn);
        }
        for (t, &g) in wi.iter_mut().zip(gi.iter()) {
            *t -= eta * (g + wd * *t);
        }
    }
}

/// [`weight_update`] for one f64 sample (`inv_b = 1`) with AVX2+FMA intrinsics: `ĝ_i = δ_i x` and the update
/// `W_i ← W_i − η(ĝ_i + γW_i)` in one sweep per row, storing ĝ only if `RECORD`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rank1_update_f64_avx2<const RECORD: bool>(
    w: &mut [f64],
    gw: &mut [f64],
    x: &[f64],
    delta: &[f64],
    eta: f64,
    wd: f64,
) {
    use std::arch::x86_64::*;
    let d = x.len();
    assert!(w.len() == d * delta.len() && gw.len() == w.len());
    let mask = tail_mask(d % 4);
    let (ve, vw) = (_mm256_set1_pd(eta), _mm256_set1_pd(wd));
    let xp = x.as_ptr();
    for (i, &di) in delta.iter().enumerate() {
        let (wp, gp) = (w.as_mut_ptr().add(i * d), gw.as_mut_ptr().add(i * d));
        let a = _mm256_set1_pd(di);
        let mut k = 0;
        while k + 4 <= d {
            let g = _mm256_mul_pd(a, _mm256_loadu_pd(xp.add(k)));
            if RECORD {
                _mm256_storeu_pd(gp.add(k), g);
            }
            let t = _mm256_loadu_pd(wp.add(k));
            _mm256_storeu_pd(wp.add(k), _mm256_fnmadd_pd(ve, _mm256_fmadd_pd(vw, t, g), t));
            k += 4;
        }
        if k < d {
            let g = _mm256_mul_pd(a, _mm256_maskload_pd(xp.add(k), mask));
            if RECORD {
                _mm256_maskstore_pd(gp.add(k), mask, g);
            }
            let t = _mm256_maskload_pd(wp.add(k), mask);
            _mm256_maskstore_pd(wp.add(k), mask, _mm256_fnmadd_pd(ve, _mm256_fmadd_pd(vw, t, g), t));
        }
    }
}

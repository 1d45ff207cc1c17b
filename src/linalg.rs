//! Small dense linear-algebra kernels shared by the engine: one GEMM entry point that picks faer's
//! GEMM or a fused loop by shape, and column reductions on `[B, d]` batch matrices.

use crate::real::Real;
use faer::linalg::matmul::matmul;
use faer::reborrow::ReborrowMut;
use faer::{Accum, MatMut, MatRef, Par};

/// `dst ← beta·dst + alpha·lhs·rhs` (beta ∈ {0, 1}: `accumulate` adds to `dst`, otherwise it is replaced).
/// Sequential: parallelism is decided by callers ([`gemm_par`]), never hidden inside kernels.
#[inline]
pub fn gemm<T: Real>(dst: MatMut<'_, T>, accumulate: bool, lhs: MatRef<'_, T>, rhs: MatRef<'_, T>, alpha: T) {
    gemm_par(dst, accumulate, lhs, rhs, alpha, Par::Seq)
}

/// As [`gemm`], with an explicit parallelism for large products. Shapes with `m·n·k ≤`
/// [`SMALL_GEMM_MAX_MNK_AVX2`] (f64 and f32 with AVX2+FMA, where the loop order has an explicit kernel) or
/// [`SMALL_GEMM_MAX_MNK`] (otherwise) run the fused single-threaded loops of [`gemm_small`] (same result up
/// to round-off); larger ones run faer's `matmul` with `par`, after [`needs_rhs_copy`] layouts have their
/// right operand copied column-major.
#[inline]
pub fn gemm_par<T: Real>(
    mut dst: MatMut<'_, T>,
    accumulate: bool,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    alpha: T,
    par: Par,
) {
    let mnk = dst.nrows() * dst.ncols() * lhs.ncols();
    if mnk <= small_gemm_max_mnk::<T>() && gemm_small(dst.rb_mut(), accumulate, lhs, rhs, alpha) {
        return;
    }
    let beta = if accumulate { Accum::Add } else { Accum::Replace };
    // faer works on a column-major destination: a row-major one is the transposed product dstᵀ = rhsᵀ·lhsᵀ.
    let (dst, lhs, rhs) = if dst.row_stride() != 1 && dst.col_stride() == 1 {
        (dst.transpose_mut(), rhs.transpose(), lhs.transpose())
    } else {
        (dst, lhs, rhs)
    };
    if needs_rhs_copy(dst.nrows(), rhs) {
        let mut buf = T::take_scratch();
        let (k, n) = (rhs.nrows(), rhs.ncols());
        if buf.len() < k * n {
            buf.resize(k * n, T::zero());
        }
        let mut col = MatMut::from_column_major_slice_mut(&mut buf[..k * n], k, n);
        copy_into(col.rb_mut(), rhs);
        matmul(dst, beta, lhs, col.as_ref(), alpha, par);
        T::put_scratch(buf);
        return;
    }
    matmul(dst, beta, lhs, rhs, alpha, par);
}

/// Whether faer's product into a column-major destination with `m` rows should first copy its right operand
/// `rhs` column-major: when `rhs` is row-major and `m ≥` [`RHS_COPY_MIN_ROWS`]. faer reads a row-major right
/// operand at half speed (`examples/prof_layouts.rs`, one core, 1024³ f64: 23–27 GFLOP/s against 52–56 for the
/// other three layouts); the copy moves `k·n` elements for `2·m·n·k` flops. This is the input gradient
/// `Δ·W` of every dense layer (W row-major `[out, in]`), 18% of the flops of a big MLP's pass.
pub fn needs_rhs_copy<T>(m: usize, rhs: MatRef<'_, T>) -> bool {
    m >= RHS_COPY_MIN_ROWS && rhs.col_stride() == 1 && rhs.row_stride() != 1 && rhs.ncols() > 1
}

/// Smallest destination height from which a row-major right operand is copied (below it the copy's memory
/// traffic is no longer small against the product's flops).
pub const RHS_COPY_MIN_ROWS: usize = 32;

/// Largest `m·n·k` sent to the fused small-GEMM loops instead of faer on a CPU with AVX2+FMA, for the loop
/// orders with explicit intrinsic kernels (`ax` in f64 and f32, `dot` in f64). Measured with
/// `examples/prof_gemm_small.rs` (best of 9, idle 2-core machine): the five GEMMs of a 30-40-30 step at
/// S = 64 take 19 µs here against 24–30 µs in faer (f64); on square shapes the two are level up to 80³
/// (f64: 39–45 GFLOP/s, within run-to-run noise; f32 axpy: 73–96 against faer's 78–82 at 64³) and faer's
/// cache-blocked kernels lead from 96³ (f64: 43 against 35).
pub const SMALL_GEMM_MAX_MNK_AVX2: usize = 64 * 64 * 64;

/// Largest `m·n·k` sent to the generic register-tiled loops (no AVX2+FMA, or f32 in the `dot` order), which
/// fall behind faer above it: criterion timed the f32 30-40-30 step at S = 64 at 34 µs with them up to
/// [`SMALL_GEMM_MAX_MNK_AVX2`] and 14 µs with this cutoff, before f32 had its own axpy kernel.
pub const SMALL_GEMM_MAX_MNK: usize = 32 * 32 * 32;

/// The small-GEMM cutoff for scalar type `T` on this CPU (the generic loops then decline shapes above
/// [`SMALL_GEMM_MAX_MNK`] themselves).
fn small_gemm_max_mnk<T: Real>() -> usize {
    let id = std::any::TypeId::of::<T>();
    if (id == std::any::TypeId::of::<f64>() || id == std::any::TypeId::of::<f32>()) && small::avx2_fma() {
        return SMALL_GEMM_MAX_MNK_AVX2;
    }
    SMALL_GEMM_MAX_MNK
}

/// The fused small-GEMM path: `dst ← (dst +) alpha·lhs·rhs` with explicit loops ordered by the operands'
/// strides (innermost loop over contiguous memory, a register tile of independent accumulators). Returns
/// `false` (touching nothing) when no loop order fits the strides, or when the order it would take has no
/// explicit kernel on this CPU and `m·n·k >` [`SMALL_GEMM_MAX_MNK`], so the caller falls back to faer.
/// Exposed for the tests that compare it with faer's `matmul`; [`gemm`] picks it by shape.
pub fn gemm_small<T: Real>(
    dst: MatMut<'_, T>,
    accumulate: bool,
    lhs: MatRef<'_, T>,
    rhs: MatRef<'_, T>,
    alpha: T,
) -> bool {
    let (m, n, k) = (dst.nrows(), dst.ncols(), lhs.ncols());
    assert!(lhs.nrows() == m && rhs.nrows() == k && rhs.ncols() == n, "gemm: shape mismatch");
    // A stride along a dimension of length 1 is never used: call it contiguous.
    let st =
        |r: isize, c: isize, nr: usize, nc: usize| (if nr <= 1 { 1 } else { r }, if nc <= 1 { 1 } else { c });
    let (drs, dcs) = st(dst.row_stride(), dst.col_stride(), m, n);
    let (ars, acs) = st(lhs.row_stride(), lhs.col_stride(), m, k);
    let (brs, bcs) = st(rhs.row_stride(), rhs.col_stride(), k, n);
    let d = small::Op { ptr: dst.as_ptr_mut() as *const T, rs: drs, cs: dcs };
    let a = small::Op { ptr: lhs.as_ptr(), rs: ars, cs: acs };
    let b = small::Op { ptr: rhs.as_ptr(), rs: brs, cs: bcs };
    let id = std::any::TypeId::of::<T>();
    // SAFETY: the operands are valid faer views of the stated shapes and strides; `dst` is borrowed mutably
    // and cannot alias `lhs`/`rhs` (shared borrows). T is f64 or f32 exactly when the TypeId says so.
    unsafe {
        if id == std::any::TypeId::of::<f64>() {
            small::f64k::gemm(m, n, k, d.cast(), a.cast(), b.cast(), alpha.to_f64(), accumulate)
        } else if id == std::any::TypeId::of::<f32>() {
            small::f32k::gemm(m, n, k, d.cast(), a.cast(), b.cast(), alpha.to_f64() as f32, accumulate)
        } else {
            false
        }
    }
}

/// Register-tiled loops for small GEMMs, instantiated for f64 and f32. Three loop orders:
/// - `ax`: `dst[:, j] += lhs[:, p]·rhs[p, j]` (dst and lhs columns contiguous), vectorised over rows;
/// - `ax` on the transposes: vectorised over the columns of dst (dst and rhs rows contiguous);
/// - `dot`: `dst[i, j] = Σ_p lhs[i, p] rhs[p, j]` (lhs rows and rhs columns contiguous), vectorised over p.
///
/// An operand of at most [`small::PACK`] elements whose strides do not fit is first copied to a contiguous
/// stack buffer. With AVX2+FMA available (checked at run time) the loops are compiled with those features,
/// and `ax` (f64, f32) and `dot` (f64) run explicit intrinsic kernels.
mod small {
    use std::mem::MaybeUninit;

    /// Largest operand (elements) copied to a contiguous stack buffer.
    pub const PACK: usize = 4096;

    /// A strided operand: element (i, j) at `ptr + i·rs + j·cs`.
    #[derive(Clone, Copy)]
    pub struct Op<T> {
        pub ptr: *const T,
        pub rs: isize,
        pub cs: isize,
    }
    impl<T> Op<T> {
        pub fn cast<U>(self) -> Op<U> {
            Op { ptr: self.ptr as *const U, rs: self.rs, cs: self.cs }
        }
        fn t(self) -> Self {
            Op { ptr: self.ptr, rs: self.cs, cs: self.rs }
        }
    }

    macro_rules! kernels {
        ($name:ident, $t:ty, $v:expr) => {
            pub mod $name {
                use super::*;
                type T = $t;
                /// Lanes of one 256-bit vector.
                const V: usize = $v;
                /// Rows of an `ax` register tile (two vectors) and its columns.
                const MR: usize = 2 * V;
                const NR: usize = 4;
                /// `dot` tile: rows × columns of outputs, each a V-lane accumulator.
                const DI: usize = 2;
                const DJ: usize = 4;

                #[inline(always)]
                fn fma<const F: bool>(a: T, b: T, c: T) -> T {
                    if F {
                        a.mul_add(b, c)
                    } else {
                        a * b + c
                    }
                }

                #[inline(always)]
                unsafe fn store(p: *mut T, v: T, accumulate: bool) {
                    *p = if accumulate { *p + v } else { v };
                }

                /// One `R × C` tile of `ax`: dst rows contiguous (rs = 1), lhs rows contiguous.
                #[inline(always)]
                unsafe fn ax_tile<const R: usize, const C: usize, const F: bool>(
                    k: usize,
                    d: *mut T,
                    dcs: isize,
                    a: *const T,
                    acs: isize,
                    b: *const T,
                    brs: isize,
                    bcs: isize,
                    alpha: T,
                    accumulate: bool,
                ) {
                    let mut acc = [[0.0 as T; R]; C];
                    for p in 0..k {
                        let ap = a.offset(p as isize * acs);
                        let mut av = [0.0 as T; R];
                        for r in 0..R {
                            av[r] = *ap.add(r);
                        }
                        let bp = b.offset(p as isize * brs);
                        for c in 0..C {
                            let bv = *bp.offset(c as isize * bcs);
                            for r in 0..R {
                                acc[c][r] = fma::<F>(av[r], bv, acc[c][r]);
                            }
                        }
                    }
                    for c in 0..C {
                        let dp = d.offset(c as isize * dcs);
                        for r in 0..R {
                            store(dp.add(r), alpha * acc[c][r], accumulate);
                        }
                    }
                }

                #[inline(always)]
                unsafe fn ax_rows<const R: usize, const F: bool>(
                    n: usize,
                    k: usize,
                    d: *mut T,
                    dcs: isize,
                    a: *const T,
                    acs: isize,
                    b: Op<T>,
                    alpha: T,
                    accumulate: bool,
                ) {
                    let mut j = 0;
                    while j + NR <= n {
                        let (dj, bj) = (d.offset(j as isize * dcs), b.ptr.offset(j as isize * b.cs));
                        ax_tile::<R, NR, F>(k, dj, dcs, a, acs, bj, b.rs, b.cs, alpha, accumulate);
                        j += NR;
                    }
                    while j < n {
                        let (dj, bj) = (d.offset(j as isize * dcs), b.ptr.offset(j as isize * b.cs));
                        ax_tile::<R, 1, F>(k, dj, dcs, a, acs, bj, b.rs, b.cs, alpha, accumulate);
                        j += 1;
                    }
                }

                /// `dst (+)= alpha·lhs·rhs` with `d.rs = a.rs = 1`.
                #[inline(always)]
                unsafe fn ax<const F: bool>(
                    m: usize,
                    n: usize,
                    k: usize,
                    d: Op<T>,
                    a: Op<T>,
                    b: Op<T>,
                    alpha: T,
                    accumulate: bool,
                ) {
                    let (dp, ap) = (d.ptr as *mut T, a.ptr);
                    let mut i = 0;
                    while i + MR <= m {
                        ax_rows::<MR, F>(n, k, dp.add(i), d.cs, ap.add(i), a.cs, b, alpha, accumulate);
                        i += MR;
                    }
                    if i + V <= m {
                        ax_rows::<V, F>(n, k, dp.add(i), d.cs, ap.add(i), a.cs, b, alpha, accumulate);
                        i += V;
                    }
                    while i < m {
                        ax_rows::<1, F>(n, k, dp.add(i), d.cs, ap.add(i), a.cs, b, alpha, accumulate);
                        i += 1;
                    }
                }

                /// One `R × C` tile of `dot`: lhs rows contiguous (cs = 1), rhs columns contiguous (rs = 1).
                #[inline(always)]
                unsafe fn dot_tile<const R: usize, const C: usize, const F: bool>(
                    k: usize,
                    d: *mut T,
                    drs: isize,
                    dcs: isize,
                    a: *const T,
                    ars: isize,
                    b: *const T,
                    bcs: isize,
                    alpha: T,
                    accumulate: bool,
                ) {
                    let mut acc = [[[0.0 as T; V]; C]; R];
                    let kv = k / V * V;
                    let mut p = 0;
                    while p < kv {
                        let mut av = [[0.0 as T; V]; R];
                        let mut bv = [[0.0 as T; V]; C];
                        for r in 0..R {
                            for v in 0..V {
                                av[r][v] = *a.offset(r as isize * ars).add(p + v);
                            }
                        }
                        for c in 0..C {
                            for v in 0..V {
                                bv[c][v] = *b.offset(c as isize * bcs).add(p + v);
                            }
                        }
                        for r in 0..R {
                            for c in 0..C {
                                for v in 0..V {
                                    acc[r][c][v] = fma::<F>(av[r][v], bv[c][v], acc[r][c][v]);
                                }
                            }
                        }
                        p += V;
                    }
                    for r in 0..R {
                        for c in 0..C {
                            // Pairwise lane sum, then the tail.
                            let mut w = acc[r][c];
                            let mut h = V / 2;
                            while h > 0 {
                                for v in 0..h {
                                    w[v] += w[v + h];
                                }
                                h /= 2;
                            }
                            let mut s = w[0];
                            let (ar, bc) = (a.offset(r as isize * ars), b.offset(c as isize * bcs));
                            for q in kv..k {
                                s = fma::<F>(*ar.add(q), *bc.add(q), s);
                            }
                            store(d.offset(r as isize * drs + c as isize * dcs), alpha * s, accumulate);
                        }
                    }
                }

                #[inline(always)]
                unsafe fn dot_rows<const R: usize, const F: bool>(
                    n: usize,
                    k: usize,
                    d: Op<T>,
                    a: *const T,
                    ars: isize,
                    b: Op<T>,
                    alpha: T,
                    accumulate: bool,
                ) {
                    let dp = d.ptr as *mut T;
                    let mut j = 0;
                    while j + DJ <= n {
                        let (dj, bj) = (dp.offset(j as isize * d.cs), b.ptr.offset(j as isize * b.cs));
                        dot_tile::<R, DJ, F>(k, dj, d.rs, d.cs, a, ars, bj, b.cs, alpha, accumulate);
                        j += DJ;
                    }
                    while j < n {
                        let (dj, bj) = (dp.offset(j as isize * d.cs), b.ptr.offset(j as isize * b.cs));
                        dot_tile::<R, 1, F>(k, dj, d.rs, d.cs, a, ars, bj, b.cs, alpha, accumulate);
                        j += 1;
                    }
                }

                /// `dst (+)= alpha·lhs·rhs` with `a.cs = b.rs = 1`.
                #[inline(always)]
                unsafe fn dot<const F: bool>(
                    m: usize,
                    n: usize,
                    k: usize,
                    d: Op<T>,
                    a: Op<T>,
                    b: Op<T>,
                    alpha: T,
                    accumulate: bool,
                ) {
                    let mut i = 0;
                    while i + DI <= m {
                        let di = Op { ptr: d.ptr.offset(i as isize * d.rs), ..d };
                        dot_rows::<DI, F>(
                            n,
                            k,
                            di,
                            a.ptr.offset(i as isize * a.rs),
                            a.rs,
                            b,
                            alpha,
                            accumulate,
                        );
                        i += DI;
                    }
                    while i < m {
                        let di = Op { ptr: d.ptr.offset(i as isize * d.rs), ..d };
                        dot_rows::<1, F>(
                            n,
                            k,
                            di,
                            a.ptr.offset(i as isize * a.rs),
                            a.rs,
                            b,
                            alpha,
                            accumulate,
                        );
                        i += 1;
                    }
                }

                #[derive(Clone, Copy, PartialEq)]
                enum Form {
                    Ax,
                    AxT,
                    Dot,
                }

                /// Copies the `nr × nc` operand `x` into `buf` with the given strides (one of them 1).
                #[inline(always)]
                unsafe fn pack(x: Op<T>, nr: usize, nc: usize, rs: isize, cs: isize, buf: *mut T) -> Op<T> {
                    for j in 0..nc {
                        for i in 0..nr {
                            *buf.offset(i as isize * rs + j as isize * cs) =
                                *x.ptr.offset(i as isize * x.rs + j as isize * x.cs);
                        }
                    }
                    Op { ptr: buf, rs, cs }
                }

                /// The loop order for a call and the largest operand it copies (None: no order fits).
                #[inline(always)]
                fn plan(m: usize, n: usize, k: usize, d: Op<T>, a: Op<T>, b: Op<T>) -> Option<(Form, usize)> {
                    // Each loop order: its vector length and the elements it would have to copy (None if an
                    // operand that must be copied is too large).
                    // A copy must be small and paid for by reuse (at least 8 multiply-adds per copied element).
                    let work = m * n * k;
                    let need = |ok: bool, size: usize| {
                        if ok {
                            Some(0)
                        } else if size <= PACK && 8 * size <= work {
                            Some(size)
                        } else {
                            None
                        }
                    };
                    let cost = |c: [Option<usize>; 2]| Some(c[0]?.max(c[1]?));
                    let cands = [
                        (Form::Ax, m, cost([need(d.rs == 1, m * n), need(a.rs == 1, m * k)])),
                        (Form::AxT, n, cost([need(d.cs == 1, m * n), need(b.cs == 1, k * n)])),
                        (Form::Dot, k, cost([need(a.cs == 1, m * k), need(b.rs == 1, k * n)])),
                    ];
                    // The axpy forms keep whole vectors of dst in registers; the dot form needs a horizontal
                    // sum per output, so it is taken only when neither axpy form has a full vector to work on.
                    let mut best: Option<(Form, usize, usize)> = None;
                    for (f, len, c) in cands {
                        let Some(c) = c else { continue };
                        let len = if f == Form::Dot { len.min(V) } else { len.min(2 * MR) };
                        // A form that copies nothing beats one that copies; then the longer vectors.
                        let key = |len: usize, c: usize| (c == 0, len, std::cmp::Reverse(c));
                        if best.is_none_or(|(_, bl, bc)| key(len, c) > key(bl, bc)) {
                            best = Some((f, len, c));
                        }
                    }
                    best.map(|(f, _, c)| (f, c))
                }

                /// The explicit AVX2 kernel for `form` where there is one (and `F`: compiled for AVX2), else
                /// the generic loops.
                #[inline(always)]
                unsafe fn kernel<const F: bool>(
                    form: super::Avx2Form,
                    m: usize,
                    n: usize,
                    k: usize,
                    d: Op<T>,
                    a: Op<T>,
                    b: Op<T>,
                    alpha: T,
                    accumulate: bool,
                ) {
                    if F && <T as super::Avx2Kernels>::gemm_avx2(form, m, n, k, d, a, b, alpha, accumulate) {
                        return;
                    }
                    match form {
                        super::Avx2Form::Ax => ax::<F>(m, n, k, d, a, b, alpha, accumulate),
                        super::Avx2Form::Dot => dot::<F>(m, n, k, d, a, b, alpha, accumulate),
                    }
                }

                /// Runs `form` with stack buffers of `N` elements for the copies.
                #[inline(always)]
                unsafe fn exec<const F: bool, const N: usize>(
                    form: Form,
                    m: usize,
                    n: usize,
                    k: usize,
                    d: Op<T>,
                    a: Op<T>,
                    b: Op<T>,
                    alpha: T,
                    accumulate: bool,
                ) {
                    let mut bufs = [[MaybeUninit::<T>::uninit(); N]; 2];
                    let [buf0, buf1] = &mut bufs;
                    let (p0, p1) = (buf0.as_mut_ptr() as *mut T, buf1.as_mut_ptr() as *mut T);
                    match form {
                        Form::Dot => {
                            let a = if a.cs == 1 { a } else { pack(a, m, k, k as isize, 1, p0) };
                            let b = if b.rs == 1 { b } else { pack(b, k, n, 1, k as isize, p1) };
                            kernel::<F>(super::Avx2Form::Dot, m, n, k, d, a, b, alpha, accumulate);
                        }
                        Form::Ax | Form::AxT => {
                            // AxT is Ax on the transposes: dstᵀ = rhsᵀ·lhsᵀ.
                            let (m, n, d, a, b) =
                                if form == Form::Ax { (m, n, d, a, b) } else { (n, m, d.t(), b.t(), a.t()) };
                            let a = if a.rs == 1 { a } else { pack(a, m, k, 1, m as isize, p0) };
                            let run = |d: Op<T>, accumulate: bool| {
                                kernel::<F>(super::Avx2Form::Ax, m, n, k, d, a, b, alpha, accumulate)
                            };
                            if d.rs == 1 {
                                run(d, accumulate);
                            } else {
                                let buf = Op { ptr: p1 as *const T, rs: 1, cs: m as isize };
                                run(buf, false);
                                for j in 0..n {
                                    for i in 0..m {
                                        let v = *p1.add(i + j * m);
                                        store(
                                            (d.ptr as *mut T).offset(i as isize * d.rs + j as isize * d.cs),
                                            v,
                                            accumulate,
                                        );
                                    }
                                }
                            }
                        }
                    }
                }

                /// Small copies use a small stack frame; only shapes that need them pay for large buffers.
                const SMALL_PACK: usize = 256;

                // Not inlined into `gemm`: a caller that inlined the `PACK` instantiation would carry its
                // 64 KB of buffers in its own frame and probe sixteen stack pages on every call, whichever
                // instantiation it then ran.
                #[cfg(target_arch = "x86_64")]
                #[target_feature(enable = "avx2,fma")]
                #[inline(never)]
                unsafe fn exec_avx2<const N: usize>(
                    form: Form,
                    m: usize,
                    n: usize,
                    k: usize,
                    d: Op<T>,
                    a: Op<T>,
                    b: Op<T>,
                    alpha: T,
                    accumulate: bool,
                ) {
                    exec::<true, N>(form, m, n, k, d, a, b, alpha, accumulate)
                }

                #[inline(never)]
                unsafe fn exec_plain<const N: usize>(
                    form: Form,
                    m: usize,
                    n: usize,
                    k: usize,
                    d: Op<T>,
                    a: Op<T>,
                    b: Op<T>,
                    alpha: T,
                    accumulate: bool,
                ) {
                    exec::<false, N>(form, m, n, k, d, a, b, alpha, accumulate)
                }

                /// Plans the loop order and runs it (with AVX2+FMA when the CPU has them); `false` if no
                /// order fits.
                pub unsafe fn gemm(
                    m: usize,
                    n: usize,
                    k: usize,
                    d: Op<T>,
                    a: Op<T>,
                    b: Op<T>,
                    alpha: T,
                    accumulate: bool,
                ) -> bool {
                    if m == 0 || n == 0 {
                        return true;
                    }
                    if k == 0 {
                        if !accumulate {
                            for j in 0..n {
                                for i in 0..m {
                                    *(d.ptr as *mut T).offset(i as isize * d.rs + j as isize * d.cs) = 0.0;
                                }
                            }
                        }
                        return true;
                    }
                    let Some((form, copy)) = plan(m, n, k, d, a, b) else { return false };
                    let avx2 = super::avx2_fma();
                    let kind = if form == Form::Dot { super::Avx2Form::Dot } else { super::Avx2Form::Ax };
                    // The generic loops fall behind faer above SMALL_GEMM_MAX_MNK; only the explicit kernels
                    // are worth taking up to SMALL_GEMM_MAX_MNK_AVX2.
                    if !(avx2 && <T as super::Avx2Kernels>::explicit(kind))
                        && m * n * k > crate::linalg::SMALL_GEMM_MAX_MNK
                    {
                        return false;
                    }
                    let args = (form, m, n, k, d, a, b, alpha, accumulate);
                    #[cfg(target_arch = "x86_64")]
                    if avx2 {
                        let (f, m, n, k, d, a, b, al, ac) = args;
                        if copy <= SMALL_PACK {
                            exec_avx2::<SMALL_PACK>(f, m, n, k, d, a, b, al, ac);
                        } else {
                            exec_avx2::<PACK>(f, m, n, k, d, a, b, al, ac);
                        }
                        return true;
                    }
                    let (f, m, n, k, d, a, b, al, ac) = args;
                    if copy <= SMALL_PACK {
                        exec_plain::<SMALL_PACK>(f, m, n, k, d, a, b, al, ac);
                    } else {
                        exec_plain::<PACK>(f, m, n, k, d, a, b, al, ac);
                    }
                    true
                }
            }
        };
    }

    /// The loop orders with explicit AVX2+FMA kernels.
    #[derive(Clone, Copy)]
    pub enum Avx2Form {
        /// `d.rs = a.rs = 1`.
        Ax,
        /// `a.cs = b.rs = 1`.
        Dot,
    }

    /// Whether the CPU has AVX2 and FMA.
    #[inline]
    pub fn avx2_fma() -> bool {
        #[cfg(target_arch = "x86_64")]
        return std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// Explicit AVX2+FMA kernels where they exist (`ax` for f64 and f32, `dot` for f64); `false` leaves the
    /// call to the generic loops.
    pub trait Avx2Kernels: Sized {
        /// Whether [`Avx2Kernels::gemm_avx2`] has a kernel for `form`.
        fn explicit(_form: Avx2Form) -> bool {
            false
        }
        /// # Safety
        /// As [`f64k::gemm`], with the strides `form` needs, and the CPU must have AVX2 and FMA.
        unsafe fn gemm_avx2(
            _form: Avx2Form,
            _m: usize,
            _n: usize,
            _k: usize,
            _d: Op<Self>,
            _a: Op<Self>,
            _b: Op<Self>,
            _alpha: Self,
            _accumulate: bool,
        ) -> bool {
            false
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    impl Avx2Kernels for f32 {}
    #[cfg(target_arch = "x86_64")]
    impl Avx2Kernels for f32 {
        fn explicit(form: Avx2Form) -> bool {
            matches!(form, Avx2Form::Ax)
        }
        unsafe fn gemm_avx2(
            form: Avx2Form,
            m: usize,
            n: usize,
            k: usize,
            d: Op<f32>,
            a: Op<f32>,
            b: Op<f32>,
            alpha: f32,
            accumulate: bool,
        ) -> bool {
            match form {
                Avx2Form::Ax => ax_avx2::ax(m, n, k, d, a, b, alpha, accumulate),
                Avx2Form::Dot => return false,
            }
            true
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    impl Avx2Kernels for f64 {}
    #[cfg(target_arch = "x86_64")]
    impl Avx2Kernels for f64 {
        fn explicit(_form: Avx2Form) -> bool {
            true
        }
        unsafe fn gemm_avx2(
            form: Avx2Form,
            m: usize,
            n: usize,
            k: usize,
            d: Op<f64>,
            a: Op<f64>,
            b: Op<f64>,
            alpha: f64,
            accumulate: bool,
        ) -> bool {
            match form {
                Avx2Form::Ax => ax_avx2::ax(m, n, k, d, a, b, alpha, accumulate),
                Avx2Form::Dot => dot_f64::dot(m, n, k, d, a, b, alpha, accumulate),
            }
            true
        }
    }

    /// `dst[:, j] (+)= alpha·Σ_p lhs[:, p]·rhs[p, j]` with dst and lhs columns contiguous, in AVX2
    /// intrinsics for f64 (four lanes) and f32 (eight): a tile of two vectors of rows × six columns (twelve
    /// accumulators, two lhs vectors and one broadcast of rhs, fifteen of the sixteen registers), then one
    /// full or masked vector of rows, or a full and a masked one in tiles of four columns.
    #[cfg(target_arch = "x86_64")]
    mod ax_avx2 {
        use super::Op;
        use std::arch::x86_64::*;

        const C: usize = 6;

        /// The vector operations of the kernel on one 256-bit register of `Self` lanes.
        pub trait Simd: Copy {
            type V: Copy;
            const LANES: usize;
            unsafe fn zero() -> Self::V;
            unsafe fn load(p: *const Self) -> Self::V;
            unsafe fn load_masked(p: *const Self, mask: __m256i) -> Self::V;
            unsafe fn store(p: *mut Self, v: Self::V);
            unsafe fn store_masked(p: *mut Self, mask: __m256i, v: Self::V);
            unsafe fn broadcast(p: *const Self) -> Self::V;
            unsafe fn splat(x: Self) -> Self::V;
            /// `a·b + c`.
            unsafe fn fmadd(a: Self::V, b: Self::V, c: Self::V) -> Self::V;
            unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
            unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
            /// The mask of the first `lanes` lanes.
            unsafe fn mask(lanes: usize) -> __m256i;
        }

        /// `Simd` for one scalar type, from the names of its intrinsics.
        macro_rules! simd {
            ($t:ty, $v:ty, $lanes:expr, $zero:ident, $load:ident, $load_masked:ident, $store:ident,
             $store_masked:ident, $broadcast:ident, $splat:ident, $fmadd:ident, $mul:ident, $add:ident,
             |$l:ident| $mask:expr) => {
                impl Simd for $t {
                    type V = $v;
                    const LANES: usize = $lanes;
                    #[inline(always)]
                    unsafe fn zero() -> $v {
                        $zero()
                    }
                    #[inline(always)]
                    unsafe fn load(p: *const $t) -> $v {
                        $load(p)
                    }
                    #[inline(always)]
                    unsafe fn load_masked(p: *const $t, mask: __m256i) -> $v {
                        $load_masked(p, mask)
                    }
                    #[inline(always)]
                    unsafe fn store(p: *mut $t, v: $v) {
                        $store(p, v)
                    }
                    #[inline(always)]
                    unsafe fn store_masked(p: *mut $t, mask: __m256i, v: $v) {
                        $store_masked(p, mask, v)
                    }
                    #[inline(always)]
                    unsafe fn broadcast(p: *const $t) -> $v {
                        $broadcast(&*p)
                    }
                    #[inline(always)]
                    unsafe fn splat(x: $t) -> $v {
                        $splat(x)
                    }
                    #[inline(always)]
                    unsafe fn fmadd(a: $v, b: $v, c: $v) -> $v {
                        $fmadd(a, b, c)
                    }
                    #[inline(always)]
                    unsafe fn mul(a: $v, b: $v) -> $v {
                        $mul(a, b)
                    }
                    #[inline(always)]
                    unsafe fn add(a: $v, b: $v) -> $v {
                        $add(a, b)
                    }
                    #[inline(always)]
                    unsafe fn mask($l: usize) -> __m256i {
                        $mask
                    }
                }
            };
        }
        simd!(
            f64,
            __m256d,
            4,
            _mm256_setzero_pd,
            _mm256_loadu_pd,
            _mm256_maskload_pd,
            _mm256_storeu_pd,
            _mm256_maskstore_pd,
            _mm256_broadcast_sd,
            _mm256_set1_pd,
            _mm256_fmadd_pd,
            _mm256_mul_pd,
            _mm256_add_pd,
            |lanes| _mm256_cmpgt_epi64(_mm256_set1_epi64x(lanes as i64), _mm256_setr_epi64x(0, 1, 2, 3))
        );
        simd!(
            f32,
            __m256,
            8,
            _mm256_setzero_ps,
            _mm256_loadu_ps,
            _mm256_maskload_ps,
            _mm256_storeu_ps,
            _mm256_maskstore_ps,
            _mm256_broadcast_ss,
            _mm256_set1_ps,
            _mm256_fmadd_ps,
            _mm256_mul_ps,
            _mm256_add_ps,
            |lanes| _mm256_cmpgt_epi32(
                _mm256_set1_epi32(lanes as i32),
                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)
            )
        );

        /// `VR` vectors of rows (the last one masked by `mask` when `MASKED`) × `TC` columns.
        #[inline(always)]
        unsafe fn tile<T: Simd, const VR: usize, const TC: usize, const MASKED: bool>(
            k: usize,
            d: *mut T,
            dcs: isize,
            a: *const T,
            acs: isize,
            b: *const T,
            brs: isize,
            bcs: isize,
            mask: __m256i,
            alpha: T,
            accumulate: bool,
        ) {
            let mut acc = [[T::zero(); TC]; VR];
            let load = |p: *const T, v: usize| {
                if MASKED && v + 1 == VR {
                    T::load_masked(p.add(T::LANES * v), mask)
                } else {
                    T::load(p.add(T::LANES * v))
                }
            };
            for p in 0..k {
                let ap = a.offset(p as isize * acs);
                let mut av = [T::zero(); VR];
                for v in 0..VR {
                    av[v] = load(ap, v);
                }
                let bp = b.offset(p as isize * brs);
                for c in 0..TC {
                    let bb = T::broadcast(bp.offset(c as isize * bcs));
                    for v in 0..VR {
                        acc[v][c] = T::fmadd(av[v], bb, acc[v][c]);
                    }
                }
            }
            let al = T::splat(alpha);
            for c in 0..TC {
                let dp = d.offset(c as isize * dcs);
                for v in 0..VR {
                    let mut out = T::mul(al, acc[v][c]);
                    if accumulate {
                        out = T::add(out, load(dp, v));
                    }
                    if MASKED && v + 1 == VR {
                        T::store_masked(dp.add(T::LANES * v), mask, out);
                    } else {
                        T::store(dp.add(T::LANES * v), out);
                    }
                }
            }
        }

        #[inline(always)]
        unsafe fn rows<T: Simd, const VR: usize, const MASKED: bool>(
            n: usize,
            k: usize,
            d: Op<T>,
            a: Op<T>,
            b: Op<T>,
            mask: __m256i,
            alpha: T,
            accumulate: bool,
        ) {
            let dp = d.ptr as *mut T;
            let mut j = 0;
            let at = |j: usize| (dp.offset(j as isize * d.cs), b.ptr.offset(j as isize * b.cs));
            if VR == 2 && MASKED {
                // Two vectors and a mask register leave room for eight accumulators, not twelve.
                while j + 4 <= n {
                    let (dj, bj) = at(j);
                    tile::<T, VR, 4, MASKED>(
                        k, dj, d.cs, a.ptr, a.cs, bj, b.rs, b.cs, mask, alpha, accumulate,
                    );
                    j += 4;
                }
            }
            while j + C <= n {
                let (dj, bj) = at(j);
                tile::<T, VR, C, MASKED>(k, dj, d.cs, a.ptr, a.cs, bj, b.rs, b.cs, mask, alpha, accumulate);
                j += C;
            }
            let (dj, bj) = at(j);
            let args = (k, dj, d.cs, a.ptr, a.cs, bj, b.rs, b.cs, mask, alpha, accumulate);
            let (k, dj, dcs, ap, acs, bj, brs, bcs, mask, alpha, acc) = args;
            match n - j {
                5 => tile::<T, VR, 5, MASKED>(k, dj, dcs, ap, acs, bj, brs, bcs, mask, alpha, acc),
                4 => tile::<T, VR, 4, MASKED>(k, dj, dcs, ap, acs, bj, brs, bcs, mask, alpha, acc),
                3 => tile::<T, VR, 3, MASKED>(k, dj, dcs, ap, acs, bj, brs, bcs, mask, alpha, acc),
                2 => tile::<T, VR, 2, MASKED>(k, dj, dcs, ap, acs, bj, brs, bcs, mask, alpha, acc),
                1 => tile::<T, VR, 1, MASKED>(k, dj, dcs, ap, acs, bj, brs, bcs, mask, alpha, acc),
                _ => {}
            }
        }

        /// # Safety
        /// Valid operands of the stated shapes, `d.rs = a.rs = 1`, AVX2 and FMA present.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn ax<T: Simd>(
            m: usize,
            n: usize,
            k: usize,
            d: Op<T>,
            a: Op<T>,
            b: Op<T>,
            alpha: T,
            accumulate: bool,
        ) {
            let full = T::mask(T::LANES);
            let at = |i: usize| (Op { ptr: d.ptr.add(i), ..d }, Op { ptr: a.ptr.add(i), ..a });
            let mut i = 0;
            while i + 2 * T::LANES <= m {
                let (di, ai) = at(i);
                rows::<T, 2, false>(n, k, di, ai, b, full, alpha, accumulate);
                i += 2 * T::LANES;
            }
            // The last rows: one full or masked vector, or a full vector and a masked one (so that e.g.
            // 30 f64 rows run as four 8-row tiles rather than three plus two half-empty 4-row ones).
            let (di, ai) = at(i);
            match m - i {
                0 => {}
                r if r == T::LANES => rows::<T, 1, false>(n, k, di, ai, b, full, alpha, accumulate),
                r if r < T::LANES => rows::<T, 1, true>(n, k, di, ai, b, T::mask(r), alpha, accumulate),
                r => rows::<T, 2, true>(n, k, di, ai, b, T::mask(r - T::LANES), alpha, accumulate),
            }
        }
    }

    /// `dst[i, j] (+)= alpha·Σ_p lhs[i, p]·rhs[p, j]` with lhs rows and rhs columns contiguous, in f64 AVX2
    /// intrinsics: a 3 × 4 tile of outputs, each a 4-lane accumulator over p (twelve FMA chains, enough to
    /// cover the FMA latency), the k mod 4 tail by masked loads, and the four sums of a tile row reduced to one
    /// vector by two horizontal adds and a lane swap.
    #[cfg(target_arch = "x86_64")]
    mod dot_f64 {
        use super::ax_avx2::Simd;
        use super::Op;
        use std::arch::x86_64::*;

        const R: usize = 3;
        const C: usize = 4;

        #[inline(always)]
        unsafe fn tile<const TR: usize, const TC: usize>(
            k: usize,
            d: *mut f64,
            drs: isize,
            dcs: isize,
            a: *const f64,
            ars: isize,
            b: *const f64,
            bcs: isize,
            alpha: f64,
            accumulate: bool,
        ) {
            let mut acc = [[_mm256_setzero_pd(); TC]; TR];
            let kv = k / 4 * 4;
            let mut p = 0;
            // Registers: TR·TC accumulators, TR rows of lhs, one column of rhs at a time (16 for 3 × 4).
            while p < kv {
                let mut av = [_mm256_setzero_pd(); TR];
                for r in 0..TR {
                    av[r] = _mm256_loadu_pd(a.offset(r as isize * ars).add(p));
                }
                for c in 0..TC {
                    let bv = _mm256_loadu_pd(b.offset(c as isize * bcs).add(p));
                    for r in 0..TR {
                        acc[r][c] = _mm256_fmadd_pd(av[r], bv, acc[r][c]);
                    }
                }
                p += 4;
            }
            if kv < k {
                let mask = f64::mask(k - kv);
                let mut bv = [_mm256_setzero_pd(); TC];
                for c in 0..TC {
                    bv[c] = _mm256_maskload_pd(b.offset(c as isize * bcs).add(kv), mask);
                }
                for r in 0..TR {
                    let av = _mm256_maskload_pd(a.offset(r as isize * ars).add(kv), mask);
                    for c in 0..TC {
                        acc[r][c] = _mm256_fmadd_pd(av, bv[c], acc[r][c]);
                    }
                }
            }
            let al = _mm256_set1_pd(alpha);
            for r in 0..TR {
                // [Σacc0, Σacc1, Σacc2, Σacc3] from the four accumulators of the row (zeros past TC).
                let z = _mm256_setzero_pd();
                let g = |c: usize| if c < TC { acc[r][c] } else { z };
                let h01 = _mm256_hadd_pd(g(0), g(1));
                let h23 = _mm256_hadd_pd(g(2), g(3));
                let lo = _mm256_permute2f128_pd(h01, h23, 0x20);
                let hi = _mm256_permute2f128_pd(h01, h23, 0x31);
                let sums = _mm256_mul_pd(al, _mm256_add_pd(lo, hi));
                let dr = d.offset(r as isize * drs);
                if TC == C && dcs == 1 {
                    let v = if accumulate { _mm256_add_pd(_mm256_loadu_pd(dr), sums) } else { sums };
                    _mm256_storeu_pd(dr, v);
                } else {
                    let mut out = [0.0f64; 4];
                    _mm256_storeu_pd(out.as_mut_ptr(), sums);
                    for c in 0..TC {
                        let q = dr.offset(c as isize * dcs);
                        *q = if accumulate { *q + out[c] } else { out[c] };
                    }
                }
            }
        }

        #[inline(always)]
        unsafe fn rows<const TR: usize>(
            n: usize,
            k: usize,
            d: *mut f64,
            drs: isize,
            dcs: isize,
            a: *const f64,
            ars: isize,
            b: Op<f64>,
            alpha: f64,
            accumulate: bool,
        ) {
            let mut j = 0;
            while j + C <= n {
                let (dj, bj) = (d.offset(j as isize * dcs), b.ptr.offset(j as isize * b.cs));
                tile::<TR, C>(k, dj, drs, dcs, a, ars, bj, b.cs, alpha, accumulate);
                j += C;
            }
            let (dj, bj) = (d.offset(j as isize * dcs), b.ptr.offset(j as isize * b.cs));
            match n - j {
                3 => tile::<TR, 3>(k, dj, drs, dcs, a, ars, bj, b.cs, alpha, accumulate),
                2 => tile::<TR, 2>(k, dj, drs, dcs, a, ars, bj, b.cs, alpha, accumulate),
                1 => tile::<TR, 1>(k, dj, drs, dcs, a, ars, bj, b.cs, alpha, accumulate),
                _ => {}
            }
        }

        /// # Safety
        /// Valid operands of the stated shapes, `a.cs = b.rs = 1`, AVX2 and FMA present.
        #[target_feature(enable = "avx2,fma")]
        pub unsafe fn dot(
            m: usize,
            n: usize,
            k: usize,
            d: Op<f64>,
            a: Op<f64>,
            b: Op<f64>,
            alpha: f64,
            accumulate: bool,
        ) {
            let dp = d.ptr as *mut f64;
            let mut i = 0;
            while i + R <= m {
                let (di, ai) = (dp.offset(i as isize * d.rs), a.ptr.offset(i as isize * a.rs));
                rows::<R>(n, k, di, d.rs, d.cs, ai, a.rs, b, alpha, accumulate);
                i += R;
            }
            let (di, ai) = (dp.offset(i as isize * d.rs), a.ptr.offset(i as isize * a.rs));
            match m - i {
                2 => rows::<2>(n, k, di, d.rs, d.cs, ai, a.rs, b, alpha, accumulate),
                1 => rows::<1>(n, k, di, d.rs, d.cs, ai, a.rs, b, alpha, accumulate),
                _ => {}
            }
        }
    }

    kernels!(f64k, f64, 4);
    kernels!(f32k, f32, 8);
}

/// Flops of one pass (forward + backward GEMMs, [`crate::Architecture::train_flops`]) from which
/// [`par_for_flops`] uses every core. Measured on the idle 2-core machine with `examples/prof_par.rs`
/// (784-512-512-10 relu, one SGD pass, sequential / two-thread time): 0.88 at 0.026 GFLOP (B = 8), 1.13 at
/// 0.051, 1.45 at 0.10, 1.58 at 0.41; so passes from 0.05 GFLOP on run their GEMMs on every core.
pub const PAR_MIN_FLOPS: f64 = 5e7;

/// Flops of one pass from which a *training step* uses every core. Higher than [`PAR_MIN_FLOPS`] because
/// faer's parallel GEMM allocates its buffers on every call (≈ 25 allocations per SGD step of 784-512-512-10)
/// and the step loop allocates nothing below this size (`tests/alloc.rs`); a two-thread step would be
/// 1.1–1.6× faster from 0.05 GFLOP on.
pub const STEP_PAR_MIN_FLOPS: f64 = 1e9;

/// The lanes of a whole-data pass over `n` samples in chunks of `chunk` costing `flops`: two contiguous ranges
/// of whole chunks, each to run on one core with sequential GEMMs (`Some(Par::Seq)`), when the pass is large
/// ([`PAR_MIN_FLOPS`]), there are two chunks or more and more than one thread; else one range with the tape's own
/// choice (`None`). The split depends only on `n`, `chunk` and `flops`, so sums in lane order are reproducible.
pub fn pass_lanes(n: usize, chunk: usize, flops: f64) -> Vec<(std::ops::Range<usize>, Option<Par>)> {
    let chunk = chunk.max(1);
    if rayon::current_num_threads() < 2 || n < 2 * chunk || flops < PAR_MIN_FLOPS {
        return vec![(0..n, None)];
    }
    let chunks = n.div_ceil(chunk);
    let mid = (chunks / 2 * chunk).min(n);
    vec![(0..mid, Some(Par::Seq)), (mid..n, Some(Par::Seq))]
}

/// The parallelism for a pass of `flops` floating-point operations: `Par::rayon(0)` (all cores) from
/// `threshold` flops on ([`PAR_MIN_FLOPS`] for analysis passes, [`STEP_PAR_MIN_FLOPS`] for training steps),
/// `Par::Seq` below. Callers pass the result on explicitly (e.g. [`crate::net::Tape::with_par`]).
pub fn par_for_flops(flops: f64, threshold: f64) -> Par {
    if flops >= threshold && rayon::current_num_threads() > 1 {
        Par::rayon(0)
    } else {
        Par::Seq
    }
}

/// Defines `$name` twice: the body as written, and the same body compiled with AVX2+FMA, chosen at run time
/// (the crate is built for baseline x86-64, so loops only get 256-bit vectors inside such a function).
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident<T: Real>($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name<T: Real>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic<T: Real>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2<T: Real>($($arg: $ty),*) $(-> $ret)? {
                generic($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU supports AVX2 and FMA (checked above).
                return unsafe { avx2($($arg),*) };
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;

/// Independent accumulators of the reductions below (a multiple of every vector width, so the loops
/// vectorise without reassociating a single sum).
const LANES: usize = 16;

#[inline(always)]
fn lane_sum<T: Real>(acc: &[T; LANES]) -> T {
    let mut s = T::zero();
    for &v in acc {
        s += v;
    }
    s
}

/// `dst ← src` for any layouts of the two. A transposing copy (row-major `src` into column-major `dst`) runs
/// in 4 × 4 register transposes for f64 with AVX2 (faer's `copy_from` took 1.5 cycles per element on the
/// weight-sized transposes of [`crate::model::LinearChainStep`]); everything else in 8 × 8 blocks, so that
/// the strided side reads or writes eight consecutive cache lines at a time.
pub fn copy_into<T: Real>(dst: MatMut<'_, T>, src: MatRef<'_, T>) {
    let (m, n) = (dst.nrows(), dst.ncols());
    assert!(src.nrows() == m && src.ncols() == n, "copy_into: shape mismatch");
    let (drs, dcs, srs, scs) = (dst.row_stride(), dst.col_stride(), src.row_stride(), src.col_stride());
    let (d, s) = (dst.as_ptr_mut(), src.as_ptr());
    #[cfg(target_arch = "x86_64")]
    if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f64>()
        && drs == 1
        && scs == 1
        && std::arch::is_x86_feature_detected!("avx2")
    {
        // SAFETY: T is f64; the views hold every (i, j) with i < m, j < n at the stated strides.
        unsafe { transpose_f64_avx2(m, n, d as *mut f64, dcs, s as *const f64, srs) };
        return;
    }
    const BLK: usize = 8;
    // SAFETY: every (i, j) with i < m, j < n is inside both views (faer views of the stated shapes).
    unsafe {
        for j0 in (0..n).step_by(BLK) {
            for i0 in (0..m).step_by(BLK) {
                for j in j0..(j0 + BLK).min(n) {
                    // Column bases hoisted, so the inner loop only steps two pointers.
                    let (dj, sj) = (d.offset(j as isize * dcs), s.offset(j as isize * scs));
                    for i in i0..(i0 + BLK).min(m) {
                        *dj.offset(i as isize * drs) = *sj.offset(i as isize * srs);
                    }
                }
            }
        }
    }
}

/// `dst(i, j) = src(i, j)` for `dst(i, j)` at `d + i + j·ldd` and `src(i, j)` at `s + i·lds + j`: 4 × 4
/// blocks loaded as four rows of `src`, transposed in registers, stored as four columns of `dst`.
///
/// # Safety
/// Both views hold every (i, j) with i < m, j < n; AVX2 present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_f64_avx2(m: usize, n: usize, d: *mut f64, ldd: isize, s: *const f64, lds: isize) {
    use std::arch::x86_64::*;
    let (m4, n4) = (m / 4 * 4, n / 4 * 4);
    let at = |i: usize, j: usize| {
        (s.offset(i as isize * lds + j as isize), d.offset(i as isize + j as isize * ldd))
    };
    for j in (0..n4).step_by(4) {
        for i in (0..m4).step_by(4) {
            let (sp, dp) = at(i, j);
            let r = |k: isize| _mm256_loadu_pd(sp.offset(k * lds));
            let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
            let (t0, t1) = (_mm256_unpacklo_pd(r0, r1), _mm256_unpackhi_pd(r0, r1));
            let (t2, t3) = (_mm256_unpacklo_pd(r2, r3), _mm256_unpackhi_pd(r2, r3));
            _mm256_storeu_pd(dp, _mm256_permute2f128_pd(t0, t2, 0x20));
            _mm256_storeu_pd(dp.offset(ldd), _mm256_permute2f128_pd(t1, t3, 0x20));
            _mm256_storeu_pd(dp.offset(2 * ldd), _mm256_permute2f128_pd(t0, t2, 0x31));
            _mm256_storeu_pd(dp.offset(3 * ldd), _mm256_permute2f128_pd(t1, t3, 0x31));
        }
        for i in m4..m {
            for jj in j..j + 4 {
                let (sp, dp) = at(i, jj);
                *dp = *sp;
            }
        }
    }
    for jj in n4..n {
        for i in 0..m {
            let (sp, dp) = at(i, jj);
            *dp = *sp;
        }
    }
}

/// Column `j` of a matrix with unit row stride (every tape and data matrix) as a slice.
#[inline(always)]
pub(crate) fn col_slice<T: Real>(a: MatRef<'_, T>, j: usize) -> &[T] {
    a.col(j).try_as_col_major().expect("column-major matrix").as_slice()
}

/// Mutable [`col_slice`].
#[inline(always)]
pub(crate) fn col_slice_mut<T: Real>(a: MatMut<'_, T>, j: usize) -> &mut [T] {
    a.col_mut(j).try_as_col_major_mut().expect("column-major matrix").as_slice_mut()
}

simd_dispatch! {
    /// SGD update with weight decay in place: `θ ← θ − η(g + γθ)`.
    pub fn sgd_update_in_place<T: Real>(theta: &mut [T], grad: &[T], eta: T, weight_decay: T) {
        assert_eq!(theta.len(), grad.len());
        for (t, &g) in theta.iter_mut().zip(grad) {
            *t -= eta * (g + weight_decay * *t);
        }
    }
}

simd_dispatch! {
    /// Per-row squared norms of a `[B, d]` column-major matrix: `out[n] = Σ_j a[n, j]²` (written, not
    /// accumulated).
    pub fn row_sq_norms_into<T: Real>(a: MatRef<'_, T>, out: &mut [T]) {
        assert_eq!(out.len(), a.nrows());
        out.iter_mut().for_each(|v| *v = T::zero());
        for j in 0..a.ncols() {
            for (o, &v) in out.iter_mut().zip(col_slice(a, j)) {
                *o += v * v;
            }
        }
    }
}

simd_dispatch! {
    /// Weighted squared column sums of a `[B, d]` column-major matrix: `weighted[j] += Σ_n a[n, j]² w[n]`
    /// and, if `plain` is non-empty, `plain[j] += Σ_n a[n, j]²` (both accumulated in f64, summed per column
    /// in `T`).
    pub fn col_sq_sums_accumulate<T: Real>(a: MatRef<'_, T>, w: &[T], weighted: &mut [f64], plain: &mut [f64]) {
        assert_eq!(w.len(), a.nrows());
        assert_eq!(weighted.len(), a.ncols());
        assert!(plain.is_empty() || plain.len() == a.ncols());
        let split = a.nrows() / LANES * LANES;
        for j in 0..a.ncols() {
            let c = col_slice(a, j);
            let (mut aw, mut ap) = ([T::zero(); LANES], [T::zero(); LANES]);
            for (cc, wc) in c[..split].chunks_exact(LANES).zip(w[..split].chunks_exact(LANES)) {
                for k in 0..LANES {
                    let s = cc[k] * cc[k];
                    aw[k] += s * wc[k];
                    ap[k] += s;
                }
            }
            for n in split..c.len() {
                let s = c[n] * c[n];
                aw[0] += s * w[n];
                ap[0] += s;
            }
            weighted[j] += lane_sum(&aw).to_f64();
            if !plain.is_empty() {
                plain[j] += lane_sum(&ap).to_f64();
            }
        }
    }
}

simd_dispatch! {
    /// Column sums of a `[B, d]` column-major matrix times `alpha`, written into (or, with `accumulate`,
    /// added to) `out`.
    pub fn col_sums_into<T: Real>(a: MatRef<'_, T>, alpha: T, accumulate: bool, out: &mut [T]) {
        assert_eq!(out.len(), a.ncols());
        let split = a.nrows() / LANES * LANES;
        for (j, o) in out.iter_mut().enumerate() {
            let c = col_slice(a, j);
            let mut acc = [T::zero(); LANES];
            for cc in c[..split].chunks_exact(LANES) {
                for k in 0..LANES {
                    acc[k] += cc[k];
                }
            }
            for &v in &c[split..] {
                acc[0] += v;
            }
            let s = lane_sum(&acc);
            *o = if accumulate { *o + alpha * s } else { alpha * s };
        }
    }
}

simd_dispatch! {
    /// `dst[n, j] = a[n, j]²` for column-major matrices of equal shape.
    pub fn squares_into<T: Real>(dst: MatMut<'_, T>, a: MatRef<'_, T>) {
        let mut dst = dst;
        assert_eq!((dst.nrows(), dst.ncols()), (a.nrows(), a.ncols()));
        for j in 0..a.ncols() {
            let d = col_slice_mut(dst.rb_mut(), j);
            for (o, &v) in d.iter_mut().zip(col_slice(a, j)) {
                *o = v * v;
            }
        }
    }
}

simd_dispatch! {
    /// `dst[n, j] = w[n]·a[n, j]` (`diag(w)·A`) for column-major matrices of equal shape.
    pub fn row_scaled_into<T: Real>(dst: MatMut<'_, T>, a: MatRef<'_, T>, w: &[T]) {
        let mut dst = dst;
        assert_eq!((dst.nrows(), dst.ncols()), (a.nrows(), a.ncols()));
        assert_eq!(w.len(), a.nrows());
        for j in 0..a.ncols() {
            let d = col_slice_mut(dst.rb_mut(), j);
            for ((o, &v), &wn) in d.iter_mut().zip(col_slice(a, j)).zip(w) {
                *o = v * wn;
            }
        }
    }
}

simd_dispatch! {
    /// `dst[i, j] += src[i, j]` for column-major matrices of equal shape, with `src` converted to f64.
    pub fn add_to_f64<T: Real>(dst: MatMut<'_, f64>, src: MatRef<'_, T>) {
        let mut dst = dst;
        assert_eq!((dst.nrows(), dst.ncols()), (src.nrows(), src.ncols()));
        for j in 0..src.ncols() {
            let d = col_slice_mut(dst.rb_mut(), j);
            for (o, &v) in d.iter_mut().zip(col_slice(src, j)) {
                *o += v.to_f64();
            }
        }
    }
}

/// Dot product in f64.
pub fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Squared Euclidean norm in f64.
pub fn norm_sq(a: &[f64]) -> f64 {
    dot(a, a)
}

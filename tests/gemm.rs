//! The fused small-GEMM path of `linalg::gemm` against faer's `matmul` on awkward shapes and layouts.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use noether::linalg::{gemm, gemm_small};
use noether::Real;

const GUARD: usize = 64;
const DIMS: [usize; 6] = [1, 2, 3, 13, 31, 64];

/// Storage of an `r × c` operand: column-major padded, row-major padded, or column-major with reversed rows
/// (negative row stride).
#[derive(Clone, Copy, Debug)]
enum Layout {
    ColPadded,
    RowPadded,
    Reversed,
}
const LAYOUTS: [Layout; 3] = [Layout::ColPadded, Layout::RowPadded, Layout::Reversed];

/// Backing storage big enough for any layout, filled with deterministic values in [-1, 1].
fn storage<T: Real>(r: usize, c: usize, seed: usize) -> Vec<T> {
    // Followed by a guard zone that no write may touch.
    (0..(r + 3) * (c + 3) + GUARD)
        .map(|i| T::from_f64((((i * 37 + seed * 101) % 199) as f64) / 99.0 - 1.0))
        .collect()
}

fn view<T: Real>(s: &[T], r: usize, c: usize, lay: Layout) -> MatRef<'_, T> {
    match lay {
        Layout::ColPadded => MatRef::from_column_major_slice_with_stride(&s[..(r + 3) * c], r, c, r + 3),
        Layout::RowPadded => MatRef::from_row_major_slice_with_stride(&s[..r * (c + 3)], r, c, c + 3),
        Layout::Reversed => MatRef::from_column_major_slice(&s[..r * c], r, c).reverse_rows(),
    }
}

fn view_mut<T: Real>(s: &mut [T], r: usize, c: usize, lay: Layout) -> MatMut<'_, T> {
    match lay {
        Layout::ColPadded => {
            MatMut::from_column_major_slice_with_stride_mut(&mut s[..(r + 3) * c], r, c, r + 3)
        }
        // Not `from_row_major_slice_with_stride_mut`: in faer 0.24.4 it builds a column-major view.
        Layout::RowPadded => {
            MatMut::from_column_major_slice_with_stride_mut(&mut s[..r * (c + 3)], c, r, c + 3)
                .transpose_mut()
        }
        Layout::Reversed => MatMut::from_column_major_slice_mut(&mut s[..r * c], r, c).reverse_rows_mut(),
    }
}

/// Checks `gemm_small` (and `gemm`) against faer for every shape in `ms × ns × ks`, every layout of
/// dst/lhs/rhs, with and without accumulation: |small − faer| ≤ 16ε·(k + 1)·(|alpha|·Σ_p|a_ip||b_pj| +
/// |dst_ij|). Returns how many of the calls the fused loops took, and of how many.
fn check<T: Real>(ms: &[usize], ns: &[usize], ks: &[usize]) -> (usize, usize) {
    let eps = T::EPS.to_f64();
    let alpha = T::from_f64(-0.75);
    let mut taken = 0;
    for &m in ms {
        for &n in ns {
            for &k in ks {
                let (sa, sb) = (storage::<T>(m, k, 1), storage::<T>(k, n, 2));
                for la in LAYOUTS {
                    for lb in LAYOUTS {
                        let (a, b) = (view(&sa, m, k, la), view(&sb, k, n, lb));
                        let mag = Mat::<f64>::from_fn(m, n, |i, j| {
                            (0..k).map(|p| (a[(i, p)].to_f64() * b[(p, j)].to_f64()).abs()).sum::<f64>()
                        });
                        for ld in LAYOUTS {
                            for accumulate in [false, true] {
                                let init = storage::<T>(m, n, 3);
                                let mut want_s = init.clone();
                                let mut got_s = init.clone();
                                let mut via_gemm_s = init.clone();
                                let beta = if accumulate { Accum::Add } else { Accum::Replace };
                                matmul(view_mut(&mut want_s, m, n, ld), beta, a, b, alpha, Par::Seq);
                                let took =
                                    gemm_small(view_mut(&mut got_s, m, n, ld), accumulate, a, b, alpha);
                                gemm(view_mut(&mut via_gemm_s, m, n, ld), accumulate, a, b, alpha);
                                let (want, got) = (view(&want_s, m, n, ld), view(&got_s, m, n, ld));
                                let d0 = view(&init, m, n, ld);
                                let via = view(&via_gemm_s, m, n, ld);
                                let g = init.len() - GUARD;
                                assert!(
                                    want_s[g..] == init[g..],
                                    "faer wrote past {m}x{n}x{k} {la:?} {lb:?} {ld:?}"
                                );
                                assert!(
                                    got_s[g..] == init[g..],
                                    "small wrote past {m}x{n}x{k} {la:?} {lb:?} {ld:?}"
                                );
                                if !took {
                                    // Untouched when declined.
                                    assert!(got_s == init, "declined call wrote to dst");
                                    continue;
                                }
                                taken += 1;
                                for i in 0..m {
                                    for j in 0..n {
                                        let prev = if accumulate { d0[(i, j)].to_f64().abs() } else { 0.0 };
                                        let tol = 16.0 * eps * (k + 1) as f64 * (0.75 * mag[(i, j)] + prev);
                                        for (what, x) in [("gemm_small", got[(i, j)]), ("gemm", via[(i, j)])]
                                        {
                                            let err = (x.to_f64() - want[(i, j)].to_f64()).abs();
                                            assert!(
                                                err <= tol,
                                                "{what} {m}x{n}x{k} lhs {la:?} rhs {lb:?} dst {ld:?} acc \
                                                 {accumulate}: ({i},{j}) {x} vs faer {} (err {err:e} > {tol:e})",
                                                want[(i, j)]
                                            );
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (taken, ms.len() * ns.len() * ks.len() * LAYOUTS.len().pow(3) * 2)
}

/// Most combinations go through the fused loops (the rest, where every loop order would need a copy not
/// paid for by reuse, fall back to faer).
fn check_dims<T: Real>() {
    let (taken, total) = check::<T>(&DIMS, &DIMS, &DIMS);
    assert!(taken * 20 >= total * 17, "small path taken for only {taken} of {total} cases");
}

#[test]
fn small_gemm_matches_faer_f64() {
    check_dims::<f64>();
}

#[test]
fn small_gemm_matches_faer_f32() {
    check_dims::<f32>();
}

/// Every row remainder of the AVX2 axpy kernels (two vectors of 4 f64 or 8 f32 lanes per tile): none, one
/// full vector, one masked vector, a full and a masked one, for both lane widths.
#[test]
fn small_gemm_covers_every_row_remainder() {
    let ms = [4, 5, 8, 12, 16, 20, 24, 29, 40];
    let (ns, ks) = ([1, 4, 7, 13], [1, 9]);
    for (taken, total) in [check::<f64>(&ms, &ns, &ks), check::<f32>(&ms, &ns, &ks)] {
        assert!(taken * 2 >= total, "small path taken for only {taken} of {total} cases");
    }
}

/// The layouts the tape uses at batch 1 (1-row matrices with a padded column stride) take the fused path.
#[test]
fn small_gemm_takes_tape_layouts_at_batch_one() {
    let x = Mat::<f64>::from_fn(1, 30, |_, j| j as f64 * 0.1 - 1.0);
    let w = Mat::<f64>::from_fn(40, 30, |i, j| ((i * 3 + j) % 7) as f64 - 3.0);
    let wr: Vec<f64> = (0..40 * 30).map(|i| w[(i / 30, i % 30)]).collect();
    let w_rm = MatRef::from_row_major_slice(&wr, 40, 30);
    let mut z = Mat::<f64>::zeros(1, 40);
    assert!(gemm_small(z.as_mut(), false, x.as_ref(), w_rm.transpose(), 1.0));
    let mut gw = vec![0.0; 40 * 30];
    assert!(gemm_small(
        MatMut::from_row_major_slice_mut(&mut gw, 40, 30),
        false,
        z.transpose(),
        x.as_ref(),
        1.0
    ));
    let mut d0 = Mat::<f64>::zeros(1, 30);
    assert!(gemm_small(d0.as_mut(), false, z.as_ref(), w_rm, 1.0));
}

/// The column and row reductions of `linalg` (vectorised with 16 lane accumulators and a tail) against plain
/// loops, on sizes that exercise both the lanes and the tail.
#[test]
fn column_kernels_match_plain_loops() {
    use noether::linalg::{
        add_to_f64, col_sq_sums_accumulate, col_sums_into, row_scaled_into, row_sq_norms_into, squares_into,
    };
    for &(b, d) in &[(1usize, 3usize), (16, 2), (37, 5), (100, 7)] {
        let a = faer::Mat::<f64>::from_fn(b, d, |i, j| ((i * 31 + j * 17) % 23) as f64 / 7.0 - 1.5);
        let w: Vec<f64> = (0..b).map(|n| ((n * 13) % 11) as f64 / 3.0 - 0.7).collect();
        let tol = |x: f64| 1e-13 * (1.0 + x.abs());
        let mut rows = vec![0.0; b];
        row_sq_norms_into(a.as_ref(), &mut rows);
        for n in 0..b {
            let want: f64 = (0..d).map(|j| a[(n, j)] * a[(n, j)]).sum();
            assert!((rows[n] - want).abs() <= tol(want));
        }
        let (mut weighted, mut plain) = (vec![1.0; d], vec![2.0; d]);
        col_sq_sums_accumulate(a.as_ref(), &w, &mut weighted, &mut plain);
        let mut sums = vec![0.5; d];
        col_sums_into(a.as_ref(), 2.0, true, &mut sums);
        for j in 0..d {
            let ww: f64 = (0..b).map(|n| a[(n, j)] * a[(n, j)] * w[n]).sum::<f64>() + 1.0;
            let wp: f64 = (0..b).map(|n| a[(n, j)] * a[(n, j)]).sum::<f64>() + 2.0;
            let ws: f64 = 2.0 * (0..b).map(|n| a[(n, j)]).sum::<f64>() + 0.5;
            assert!((weighted[j] - ww).abs() <= tol(ww), "weighted col {j}: {} vs {ww}", weighted[j]);
            assert!((plain[j] - wp).abs() <= tol(wp));
            assert!((sums[j] - ws).abs() <= tol(ws));
        }
        let (mut sq, mut sc) = (faer::Mat::<f64>::zeros(b, d), faer::Mat::<f64>::zeros(b, d));
        squares_into(sq.as_mut(), a.as_ref());
        row_scaled_into(sc.as_mut(), a.as_ref(), &w);
        let mut acc = faer::Mat::<f64>::from_fn(b, d, |i, j| (i + j) as f64);
        add_to_f64(acc.as_mut(), a.as_ref());
        for n in 0..b {
            for j in 0..d {
                assert_eq!(sq[(n, j)], a[(n, j)] * a[(n, j)]);
                assert_eq!(sc[(n, j)], a[(n, j)] * w[n]);
                assert_eq!(acc[(n, j)], (n + j) as f64 + a[(n, j)]);
            }
        }
    }
}

/// `linalg::copy_into` (4 × 4 register transposes for f64 row-major into column-major, blocked loops
/// otherwise) copies every element for every pair of layouts, and writes nothing outside `dst`.
#[test]
fn copy_into_copies_every_layout() {
    fn check<T: Real>() {
        for &m in &DIMS {
            for &n in &DIMS {
                let s = storage::<T>(m, n, 4);
                for ls in LAYOUTS {
                    let src = view(&s, m, n, ls);
                    for ld in LAYOUTS {
                        let init = storage::<T>(m, n, 5);
                        let mut d = init.clone();
                        noether::linalg::copy_into(view_mut(&mut d, m, n, ld), src);
                        let got = view(&d, m, n, ld);
                        for i in 0..m {
                            for j in 0..n {
                                assert!(got[(i, j)] == src[(i, j)], "{m}x{n} {ls:?} -> {ld:?} at ({i},{j})");
                            }
                        }
                        // Nothing but the view's elements changed (guard zone included): restore them and
                        // compare everything.
                        let mut back = d.clone();
                        let orig = view(&init, m, n, ld);
                        let mut v = view_mut(&mut back, m, n, ld);
                        for i in 0..m {
                            for j in 0..n {
                                v[(i, j)] = orig[(i, j)];
                            }
                        }
                        assert!(back == init, "copy_into wrote outside {m}x{n} {ls:?} -> {ld:?}");
                    }
                }
            }
        }
    }
    check::<f64>();
    check::<f32>();
}

/// Above the fused loops, `gemm_par` copies a row-major right operand column-major before faer's product
/// (`linalg::needs_rhs_copy`, after turning a row-major destination into the transposed product): every layout
/// of dst/lhs/rhs, with and without accumulation, in f64 and f32, against a plain f64 triple loop
/// (|got − want| ≤ 16ε·(k + 1)·(|alpha|·Σ_p|a_ip||b_pj| + |dst_ij|)), on both cores and on one. The layouts
/// that take the copy are counted, so the test fails if the path is never reached.
fn check_large<T: Real>() {
    use noether::linalg::{gemm_par, needs_rhs_copy};
    let eps = T::EPS.to_f64();
    let alpha = T::from_f64(-0.75);
    let mut copied = 0;
    for (m, n, k) in [(70usize, 65usize, 66usize), (33, 120, 90), (96, 40, 80)] {
        let (sa, sb) = (storage::<T>(m, k, 1), storage::<T>(k, n, 2));
        for la in LAYOUTS {
            for lb in LAYOUTS {
                let (a, b) = (view(&sa, m, k, la), view(&sb, k, n, lb));
                for ld in LAYOUTS {
                    for accumulate in [false, true] {
                        for par in [Par::Seq, Par::rayon(2)] {
                            let init = storage::<T>(m, n, 3);
                            let mut got_s = init.clone();
                            let dst = view_mut(&mut got_s, m, n, ld);
                            let row_major_dst = dst.row_stride() != 1 && dst.col_stride() == 1;
                            copied += usize::from(if row_major_dst {
                                needs_rhs_copy(n, a.transpose())
                            } else {
                                needs_rhs_copy(m, b)
                            });
                            gemm_par(dst, accumulate, a, b, alpha, par);
                            let g = init.len() - GUARD;
                            assert!(got_s[g..] == init[g..], "gemm_par wrote past {m}x{n}x{k}");
                            let (got, d0) = (view(&got_s, m, n, ld), view(&init, m, n, ld));
                            for i in 0..m {
                                for j in 0..n {
                                    let (mut s, mut mag) = (0.0, 0.0);
                                    for p in 0..k {
                                        let v = a[(i, p)].to_f64() * b[(p, j)].to_f64();
                                        s += v;
                                        mag += v.abs();
                                    }
                                    let prev = if accumulate { d0[(i, j)].to_f64() } else { 0.0 };
                                    let want = prev + alpha.to_f64() * s;
                                    let tol = 16.0 * eps * (k + 1) as f64 * (0.75 * mag + prev.abs());
                                    let err = (got[(i, j)].to_f64() - want).abs();
                                    assert!(
                                        err <= tol,
                                        "{m}x{n}x{k} lhs {la:?} rhs {lb:?} dst {ld:?} acc {accumulate}: \
                                         ({i},{j}) err {err:e} > {tol:e}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(copied > 0, "no case took the column-major copy of the right operand");
}

#[test]
fn large_gemm_with_row_major_operands_matches_plain_loops_f64() {
    check_large::<f64>();
}

#[test]
fn large_gemm_with_row_major_operands_matches_plain_loops_f32() {
    check_large::<f32>();
}

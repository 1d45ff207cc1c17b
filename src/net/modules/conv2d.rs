//! `nn.Conv2d` (groups = 1, zero padding): `y[o, p] = Σ_{i,a,c} W[o, i, a, c] x[i, p·s + (a, c) − pad] + b[o]`,
//! `W` `[c_out, c_in, kh, kw]` row-major in θ.
//!
//! Image batches are channel-major, `[C, B, H·W]` (a row-major `[C, B·H·W]` matrix). The input is unfolded
//! (im2col) into `Col` `[c_in·kh·kw, B·T]`, T = h_out·w_out positions per sample, so that `Y = W Col + b1ᵀ`,
//! `∂W = α Δ Colᵀ`, `∂Col = WᵀΔ` (folded back by col2im); the per-sample gradient is `Δ_n Col_nᵀ`, the
//! sum over positions of `δ_p x_pᵀ`.

use super::linear::{add_bias_rows, rm, rm_mut, row_sums_into};
use crate::linalg::gemm_par;
use crate::real::Real;
use faer::Par;
use std::ops::Range;

/// A resolved `nn.Conv2d`.
#[derive(Clone, Debug, PartialEq)]
pub struct Conv2d {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// `[ph, pw]` (zero padding).
    pub padding: [usize; 2],
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output height.
    pub h_out: usize,
    /// Output width.
    pub w_out: usize,
    /// Range of `weight` in θ.
    pub weight: Range<usize>,
    /// Range of `bias` in θ.
    pub bias: Option<Range<usize>>,
}

impl Conv2d {
    /// Rows of the unfolded input: `c_in·kh·kw`.
    pub fn col_rows(&self) -> usize {
        self.c_in * self.kernel[0] * self.kernel[1]
    }
    /// Output positions per sample T.
    pub fn positions(&self) -> usize {
        self.h_out * self.w_out
    }

    fn wmat<'a, T>(&self, theta: &'a [T]) -> faer::MatRef<'a, T> {
        rm(&theta[self.weight.clone()], self.c_out, self.col_rows())
    }

    /// Unfolds `x` `[c_in, B, H·W]` into `col` `[c_in·kh·kw, B·T]` (zeros where the window meets the padding).
    pub fn im2col<T: Real>(&self, x: &[T], col: &mut [T], b: usize) {
        let [kh, kw] = self.kernel;
        let (t, hw) = (self.positions(), self.h * self.w);
        for i in 0..self.c_in {
            for a in 0..kh {
                for c in 0..kw {
                    let row = (i * kh + a) * kw + c;
                    let dst = &mut col[row * b * t..(row + 1) * b * t];
                    for n in 0..b {
                        let src = &x[(i * b + n) * hw..(i * b + n + 1) * hw];
                        let d = &mut dst[n * t..(n + 1) * t];
                        for oy in 0..self.h_out {
                            let iy = (oy * self.stride[0] + a) as isize - self.padding[0] as isize;
                            let drow = &mut d[oy * self.w_out..(oy + 1) * self.w_out];
                            if iy < 0 || iy >= self.h as isize {
                                drow.iter_mut().for_each(|v| *v = T::zero());
                                continue;
                            }
                            let srow = &src[iy as usize * self.w..(iy as usize + 1) * self.w];
                            for (ox, dv) in drow.iter_mut().enumerate() {
                                let ix = (ox * self.stride[1] + c) as isize - self.padding[1] as isize;
                                *dv = if ix < 0 || ix >= self.w as isize {
                                    T::zero()
                                } else {
                                    srow[ix as usize]
                                };
                            }
                        }
                    }
                }
            }
        }
    }

    /// Folds `col` `[c_in·kh·kw, B·T]` back onto `dx` `[c_in, B, H·W]` (the adjoint of [`Conv2d::im2col`]);
    /// `acc`: add to `dx`, otherwise overwrite.
    pub fn col2im<T: Real>(&self, col: &[T], dx: &mut [T], acc: bool, b: usize) {
        let [kh, kw] = self.kernel;
        let (t, hw) = (self.positions(), self.h * self.w);
        if !acc {
            dx[..self.c_in * b * hw].iter_mut().for_each(|v| *v = T::zero());
        }
        for i in 0..self.c_in {
            for a in 0..kh {
                for c in 0..kw {
                    let row = (i * kh + a) * kw + c;
                    let src = &col[row * b * t..(row + 1) * b * t];
                    for n in 0..b {
                        let dst = &mut dx[(i * b + n) * hw..(i * b + n + 1) * hw];
                        let s = &src[n * t..(n + 1) * t];
                        for oy in 0..self.h_out {
                            let iy = (oy * self.stride[0] + a) as isize - self.padding[0] as isize;
                            if iy < 0 || iy >= self.h as isize {
                                continue;
                            }
                            let drow = &mut dst[iy as usize * self.w..(iy as usize + 1) * self.w];
                            for ox in 0..self.w_out {
                                let ix = (ox * self.stride[1] + c) as isize - self.padding[1] as isize;
                                if ix >= 0 && ix < self.w as isize {
                                    drow[ix as usize] += s[oy * self.w_out + ox];
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `Y = W Col + b` from the unfolded input `col` (which the caller fills with [`Conv2d::im2col`]).
    pub fn forward_from_col<T: Real>(&self, theta: &[T], col: &[T], y: &mut [T], b: usize, par: Par) {
        let bt = b * self.positions();
        gemm_par(
            rm_mut(y, self.c_out, bt),
            false,
            self.wmat(theta),
            rm(col, self.col_rows(), bt),
            T::one(),
            par,
        );
        if let Some(br) = &self.bias {
            add_bias_rows(y, &theta[br.clone()], bt);
        }
    }

    /// `∂W (+)= αΔColᵀ`, `∂b (+)= αΔ1` into `grad` (given as `(grad, α, accumulate)`: add, else overwrite
    /// this module's blocks), and `∂X (+)= col2im(WᵀΔ)` when `dx` is given (`dcol` is scratch of the size of
    /// `col`).
    pub fn backward<T: Real>(
        &self,
        theta: &[T],
        col: &[T],
        dy: &[T],
        dx: Option<(&mut [T], bool, &mut [T])>,
        grad: Option<(&mut [T], T, bool)>,
        b: usize,
        par: Par,
    ) {
        let bt = b * self.positions();
        let d = rm(dy, self.c_out, bt);
        if let Some((g, alpha, acc)) = grad {
            let gw = rm_mut(&mut g[self.weight.clone()], self.c_out, self.col_rows());
            gemm_par(gw, acc, d, rm(col, self.col_rows(), bt).transpose(), alpha, par);
            if let Some(br) = &self.bias {
                row_sums_into(dy, self.c_out, bt, alpha, acc, &mut g[br.clone()]);
            }
        }
        if let Some((dx, acc, dcol)) = dx {
            gemm_par(
                rm_mut(dcol, self.col_rows(), bt),
                false,
                self.wmat(theta).transpose(),
                d,
                T::one(),
                par,
            );
            self.col2im(dcol, dx, acc, b);
        }
    }

    /// R-operator forward: `R{Y} = W R{Col} + V_W Col + v_b` (`rcol = None`: the input does not depend on θ).
    pub fn rop_forward<T: Real>(
        &self,
        theta: &[T],
        v: &[T],
        col: &[T],
        rcol: Option<&[T]>,
        ry: &mut [T],
        b: usize,
        par: Par,
    ) {
        let bt = b * self.positions();
        gemm_par(
            rm_mut(ry, self.c_out, bt),
            false,
            self.wmat(v),
            rm(col, self.col_rows(), bt),
            T::one(),
            par,
        );
        if let Some(rc) = rcol {
            gemm_par(
                rm_mut(ry, self.c_out, bt),
                true,
                self.wmat(theta),
                rm(rc, self.col_rows(), bt),
                T::one(),
                par,
            );
        }
        if let Some(br) = &self.bias {
            add_bias_rows(ry, &v[br.clone()], bt);
        }
    }

    /// R-operator backward: `R{∂W} += α(R{Δ}Colᵀ + ΔR{Col}ᵀ)`, `R{∂b} += αR{Δ}1`, and
    /// `R{∂X} (+)= col2im(WᵀR{Δ} + V_WᵀΔ)` when `rdx` is given (`dcol` scratch).
    pub fn rop_backward<T: Real>(
        &self,
        theta: &[T],
        v: &[T],
        (col, rcol): (&[T], Option<&[T]>),
        (dy, rdy): (&[T], &[T]),
        rdx: Option<(&mut [T], bool, &mut [T])>,
        (rg, alpha): (&mut [T], T),
        b: usize,
        par: Par,
    ) {
        let bt = b * self.positions();
        let (d, rd) = (rm(dy, self.c_out, bt), rm(rdy, self.c_out, bt));
        {
            let gw = rm_mut(&mut rg[self.weight.clone()], self.c_out, self.col_rows());
            gemm_par(gw, true, rd, rm(col, self.col_rows(), bt).transpose(), alpha, par);
        }
        if let Some(rc) = rcol {
            let gw = rm_mut(&mut rg[self.weight.clone()], self.c_out, self.col_rows());
            gemm_par(gw, true, d, rm(rc, self.col_rows(), bt).transpose(), alpha, par);
        }
        if let Some(br) = &self.bias {
            row_sums_into(rdy, self.c_out, bt, alpha, true, &mut rg[br.clone()]);
        }
        if let Some((rdx, acc, dcol)) = rdx {
            let m = rm_mut(dcol, self.col_rows(), bt);
            gemm_par(m, false, self.wmat(theta).transpose(), rd, T::one(), par);
            let m = rm_mut(dcol, self.col_rows(), bt);
            gemm_par(m, true, self.wmat(v).transpose(), d, T::one(), par);
            self.col2im(dcol, rdx, acc, b);
        }
    }

    /// The per-sample gradient of sample `n`: `weight` part `Δ_n Col_nᵀ` (`[c_out, c_in·kh·kw]`), then
    /// `bias` part `Δ_n 1`, written into `out`.
    pub fn per_sample_grad_into<T: Real>(&self, col: &[T], dy: &[T], b: usize, n: usize, out: &mut [T]) {
        let (t, k) = (self.positions(), self.col_rows());
        let bt = b * t;
        let d = rm(dy, self.c_out, bt).subcols(n * t, t);
        let c = rm(col, k, bt).subcols(n * t, t);
        gemm_par(rm_mut(out, self.c_out, k), false, d, c.transpose(), T::one(), Par::Seq);
        if self.bias.is_some() {
            let o = self.c_out * k;
            for j in 0..self.c_out {
                out[o + j] = dy[j * bt + n * t..j * bt + (n + 1) * t].iter().fold(T::zero(), |a, &v| a + v);
            }
        }
    }

    /// Quadratic-form path of the per-sample squared gradient norms:
    /// `‖g_n‖² += Σ_{p,q} (δ_pᵀδ_q)(x_pᵀx_q) + ‖Σ_p δ_p‖²` over the T positions of sample n (x_p = column p of
    /// `Col_n`, δ_p = column p of `Δ_n`). Cost O(T²·(c_out + c_in·kh·kw)) per sample against
    /// O(T·c_out·c_in·kh·kw) for the materialised gradient.
    pub fn grad_sq_norms_into<T: Real>(&self, col: &[T], dy: &[T], b: usize, out: &mut [f64]) {
        let (t, k) = (self.positions(), self.col_rows());
        let bt = b * t;
        let mut kx = faer::Mat::<T>::zeros(t, t);
        let mut kd = faer::Mat::<T>::zeros(t, t);
        for (n, o) in out.iter_mut().enumerate().take(b) {
            let d = rm(dy, self.c_out, bt).subcols(n * t, t);
            let c = rm(col, k, bt).subcols(n * t, t);
            gemm_par(kx.as_mut(), false, c.transpose(), c, T::one(), Par::Seq);
            gemm_par(kd.as_mut(), false, d.transpose(), d, T::one(), Par::Seq);
            let mut s = 0.0;
            for q in 0..t {
                for p in 0..t {
                    s += kx[(p, q)].to_f64() * kd[(p, q)].to_f64();
                }
            }
            if self.bias.is_some() {
                for j in 0..self.c_out {
                    let sj: f64 = dy[j * bt + n * t..j * bt + (n + 1) * t].iter().map(|v| v.to_f64()).sum();
                    s += sj * sj;
                }
            }
            *o += s;
        }
    }
}

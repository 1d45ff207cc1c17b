//! `nn.MaxPool2d` and `nn.AvgPool2d` without padding on channel-major batches `[C, B, H·W]`.
//!
//! Max pooling keeps, per window, the index of its first maximum (strictly greater wins, as PyTorch's CPU
//! kernel); gradients and the R-operator go through that index held fixed, as autograd does. Average pooling
//! is the mean over the `kh·kw` window.

use crate::real::Real;

/// A resolved pooling module.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    /// Channels.
    pub c: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// `[kh, kw]`.
    pub kernel: [usize; 2],
    /// `[sh, sw]`.
    pub stride: [usize; 2],
    /// Output height.
    pub h_out: usize,
    /// Output width.
    pub w_out: usize,
}

impl Pool {
    fn planes(&self, b: usize) -> usize {
        self.c * b
    }

    /// Max pooling: `y = x[argmax]`, recording the argmax (index within the input plane) of every output.
    pub fn max_forward<T: Real>(&self, x: &[T], y: &mut [T], argmax: &mut [u32], b: usize) {
        let (hw, ohw) = (self.h * self.w, self.h_out * self.w_out);
        for pl in 0..self.planes(b) {
            let src = &x[pl * hw..(pl + 1) * hw];
            let (yp, ap) = (&mut y[pl * ohw..(pl + 1) * ohw], &mut argmax[pl * ohw..(pl + 1) * ohw]);
            for oy in 0..self.h_out {
                for ox in 0..self.w_out {
                    let (y0, x0) = (oy * self.stride[0], ox * self.stride[1]);
                    let mut best = y0 * self.w + x0;
                    let mut bv = src[best];
                    for a in 0..self.kernel[0] {
                        let row = (y0 + a) * self.w + x0;
                        for (c, &v) in src[row..row + self.kernel[1]].iter().enumerate() {
                            if v > bv {
                                bv = v;
                                best = row + c;
                            }
                        }
                    }
                    let o = oy * self.w_out + ox;
                    yp[o] = bv;
                    ap[o] = best as u32;
                }
            }
        }
    }

    /// Gathers `src` at the recorded argmax (forward of a direction: R{y} = R{x}\[argmax\]).
    pub fn max_gather<T: Real>(&self, src: &[T], argmax: &[u32], y: &mut [T], b: usize) {
        let (hw, ohw) = (self.h * self.w, self.h_out * self.w_out);
        for pl in 0..self.planes(b) {
            for o in 0..ohw {
                y[pl * ohw + o] = src[pl * hw + argmax[pl * ohw + o] as usize];
            }
        }
    }

    /// Scatters `dy` to the recorded argmax: `dx (+)= Pᵀdy` (the adjoint of [`Pool::max_gather`]).
    pub fn max_scatter<T: Real>(&self, dy: &[T], argmax: &[u32], dx: &mut [T], acc: bool, b: usize) {
        let (hw, ohw) = (self.h * self.w, self.h_out * self.w_out);
        if !acc {
            dx[..self.planes(b) * hw].iter_mut().for_each(|v| *v = T::zero());
        }
        for pl in 0..self.planes(b) {
            for o in 0..ohw {
                dx[pl * hw + argmax[pl * ohw + o] as usize] += dy[pl * ohw + o];
            }
        }
    }

    /// Average pooling `y = (1/(kh·kw)) Σ_window x` (a linear map: also its own R-operator).
    pub fn avg_forward<T: Real>(&self, x: &[T], y: &mut [T], b: usize) {
        let (hw, ohw) = (self.h * self.w, self.h_out * self.w_out);
        let inv = T::from_f64(1.0 / (self.kernel[0] * self.kernel[1]) as f64);
        for pl in 0..self.planes(b) {
            let src = &x[pl * hw..(pl + 1) * hw];
            for oy in 0..self.h_out {
                for ox in 0..self.w_out {
                    let (y0, x0) = (oy * self.stride[0], ox * self.stride[1]);
                    let mut s = T::zero();
                    for a in 0..self.kernel[0] {
                        for c in 0..self.kernel[1] {
                            s += src[(y0 + a) * self.w + x0 + c];
                        }
                    }
                    y[pl * ohw + oy * self.w_out + ox] = s * inv;
                }
            }
        }
    }

    /// The adjoint of [`Pool::avg_forward`]: `dx (+)= Aᵀdy`.
    pub fn avg_backward<T: Real>(&self, dy: &[T], dx: &mut [T], acc: bool, b: usize) {
        let (hw, ohw) = (self.h * self.w, self.h_out * self.w_out);
        let inv = T::from_f64(1.0 / (self.kernel[0] * self.kernel[1]) as f64);
        if !acc {
            dx[..self.planes(b) * hw].iter_mut().for_each(|v| *v = T::zero());
        }
        for pl in 0..self.planes(b) {
            let dst = &mut dx[pl * hw..(pl + 1) * hw];
            for oy in 0..self.h_out {
                for ox in 0..self.w_out {
                    let g = dy[pl * ohw + oy * self.w_out + ox] * inv;
                    let (y0, x0) = (oy * self.stride[0], ox * self.stride[1]);
                    for a in 0..self.kernel[0] {
                        for c in 0..self.kernel[1] {
                            dst[(y0 + a) * self.w + x0 + c] += g;
                        }
                    }
                }
            }
        }
    }
}

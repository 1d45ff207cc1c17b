//! `nn.Flatten`: a channel-major image batch `[C, B, H·W]` becomes the vector batch `[C·H·W, B]`, feature
//! `c·H·W + p` in PyTorch's row-major (channel-first) order. A permutation: its adjoint is its inverse.

use crate::real::Real;

/// `out[(c·HW + p)·B + n] = x[(c·B + n)·HW + p]` (`inverse`: the other way round), `acc`: add.
pub fn permute<T: Real>(x: &[T], out: &mut [T], c: usize, hw: usize, b: usize, inverse: bool, acc: bool) {
    for ch in 0..c {
        for n in 0..b {
            for p in 0..hw {
                let (img, vec) = ((ch * b + n) * hw + p, (ch * hw + p) * b + n);
                let (src, dst) = if inverse { (vec, img) } else { (img, vec) };
                out[dst] = if acc { out[dst] + x[src] } else { x[src] };
            }
        }
    }
}

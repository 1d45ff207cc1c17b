//! Exponential symmetries `ℓ(e^{λA}θ, x) = ℓ(θ, x)` of a dense chain, with A symmetric.
//!
//! Three families (DESIGN.md §1), one file each with the same verbs — `act_in_place` (θ ← e^{λA}θ),
//! `charge` (θᵀAθ), `a_times_into` (Aθ or Av) and `quad` (gᵀAg):
//! - [`rescale`]: hidden unit j of layer l, φ positively homogeneous, no normalisation on layer l.
//!   A = +1 on row j of `W_l` and `b_l[j]`, −1 on column j of `W_{l+1}`.
//! - [`double_rotation`]: layers l, l+1 joined by the identity: `(W_{l+1}, W_l) → (W_{l+1}Q⁻¹, QW_l)` with
//!   `Q = e^{λB}`, B symmetric; `b_l` moves with `W_l`. Matrix charge `W_lW_lᵀ + b_lb_lᵀ − W_{l+1}ᵀW_{l+1}`.
//! - [`scale`]: the block `(W_l, b_l)` of a layer followed by RMS normalisation; A = I on the block.
//!
//! Module trees: [`channels`] (rescaling and scale classes from the graph) and [`linear_pairs`] (double
//! rotations of linear pairs from the graph, on the same [`double_rotation::PairLayout`] verbs).
//!
//! This module knows only θ and the architecture; the numerical check that a generator is a symmetry on data is
//! [`crate::stats::verify`] (statistics sit above symmetries).

pub mod channels;
pub mod double_rotation;
pub mod linear_pairs;
pub mod rescale;
pub mod scale;

use crate::error::{Error, Result};
use crate::model::Architecture;
use crate::real::Real;
use faer::Mat;
use serde::Serialize;

/// A generator A acting on a module tree's θ (a channel class's [`channels::DiagSymmetry`] or a linear pair's
/// [`linear_pairs::PairGenerator`]): what [`crate::stats::verify_net`] needs.
pub trait NetGenerator {
    /// θ ← e^{λA}θ.
    fn act_in_place<T: Real>(&self, theta: &mut [T], lambda: f64);
    /// `A v` (v laid out like θ).
    fn a_times(&self, v: &[f64]) -> Vec<f64>;
}

/// A symmetry family instance of a model, as listed by [`enumerate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "family", rename_all = "snake_case")]
pub enum Symmetry {
    /// Rescaling of hidden unit `unit` of layer `layer`.
    Rescale {
        /// Layer index l (the unit is an output of layer l).
        layer: usize,
        /// Unit index j.
        unit: usize,
    },
    /// Double rotation of the linear pair (`layer`, `layer + 1`).
    DoubleRotation {
        /// Index l of the first layer of the pair.
        layer: usize,
    },
    /// Scale invariance of the block of layer `layer` (followed by a normalisation).
    Scale {
        /// Layer index.
        layer: usize,
    },
}

/// A concrete generator A.
#[derive(Clone, Debug, PartialEq)]
pub enum Generator {
    /// Rescaling of hidden unit `unit` of layer `layer` (see [`rescale`]).
    Rescale {
        /// Layer index l.
        layer: usize,
        /// Unit index j.
        unit: usize,
    },
    /// Double rotation of the pair (`layer`, `layer + 1`) with symmetric `b` (`d × d`, d = width of layer l).
    DoubleRotation {
        /// Index l of the first layer of the pair.
        layer: usize,
        /// Symmetric direction B.
        b: Mat<f64>,
    },
    /// Scale of the block of layer `layer`.
    Scale {
        /// Layer index.
        layer: usize,
    },
}

/// Every exact exponential symmetry of a model: rescaling of each hidden unit of a positively homogeneous
/// (identity, relu, leaky relu) layer without normalisation; double rotation of each pair joined by an
/// identity activation; scale of each normalised block. Tanh layers have none.
pub fn enumerate(arch: &Architecture) -> Vec<Symmetry> {
    let mut out = Vec::new();
    let n = arch.n_layers();
    for l in 0..n {
        let ly = arch.layers[l];
        if l + 1 < n && !ly.norm && ly.activation.is_positively_homogeneous() {
            out.extend((0..ly.d_out).map(|unit| Symmetry::Rescale { layer: l, unit }));
        }
        if l + 1 < n && !ly.norm && ly.activation.is_identity() {
            out.push(Symmetry::DoubleRotation { layer: l });
        }
        if ly.norm {
            out.push(Symmetry::Scale { layer: l });
        }
    }
    out
}

impl Generator {
    /// Checks that the generator is an exact symmetry of `arch` (the right activations, widths and flags).
    pub fn check(&self, arch: &Architecture) -> Result<()> {
        let n = arch.n_layers();
        let fail = |msg: String| Err(Error::NoSymmetry(msg));
        match self {
            Generator::Rescale { layer, unit } => {
                let l = *layer;
                if l + 1 >= n {
                    return fail(format!(
                        "rescale needs a hidden layer; layer {l} of {n} is the output layer"
                    ));
                }
                let ly = arch.layers[l];
                if *unit >= ly.d_out {
                    return fail(format!("layer {l} has {} units, no unit {unit}", ly.d_out));
                }
                if !ly.activation.is_positively_homogeneous() || ly.norm {
                    return fail(format!(
                        "layer {l} ({}{}) has no rescaling symmetry: it needs a positively homogeneous activation \
                         (identity, relu, leaky_relu) and no normalisation",
                        ly.activation.name(),
                        if ly.norm { ", normalised" } else { "" }
                    ));
                }
            }
            Generator::DoubleRotation { layer, b } => {
                let l = *layer;
                if l + 1 >= n {
                    return fail(format!(
                        "double rotation needs layers {l} and {}; the model has {n}",
                        l + 1
                    ));
                }
                let ly = arch.layers[l];
                if !ly.activation.is_identity() || ly.norm {
                    return fail(format!(
                        "layers {l} and {} are not joined by the identity ({}), so they have no double rotation",
                        l + 1,
                        ly.activation.name()
                    ));
                }
                if b.nrows() != ly.d_out || b.ncols() != ly.d_out {
                    return Err(Error::shape(
                        "double-rotation direction B",
                        &[ly.d_out, ly.d_out],
                        &[b.nrows(), b.ncols()],
                    ));
                }
            }
            Generator::Scale { layer } => {
                if *layer >= n || !arch.layers[*layer].norm {
                    return fail(format!(
                        "layer {layer} is not followed by a normalisation, so it has no scale symmetry"
                    ));
                }
            }
        }
        Ok(())
    }

    /// θ ← e^{λA}θ.
    pub fn act_in_place<T: Real>(&self, arch: &Architecture, theta: &mut [T], lambda: f64) {
        match self {
            Generator::Rescale { layer, unit } => rescale::act_in_place(arch, *layer, *unit, theta, lambda),
            Generator::DoubleRotation { layer, b } => {
                double_rotation::act_in_place(arch, *layer, b, theta, lambda)
            }
            Generator::Scale { layer } => scale::act_in_place(arch, *layer, theta, lambda),
        }
    }

    /// `out ← A v` (`out` is overwritten everywhere).
    pub fn a_times_into(&self, arch: &Architecture, v: &[f64], out: &mut [f64]) {
        out.iter_mut().for_each(|o| *o = 0.0);
        match self {
            Generator::Rescale { layer, unit } => rescale::a_times_add(arch, *layer, *unit, v, out),
            Generator::DoubleRotation { layer, b } => double_rotation::a_times_add(arch, *layer, b, v, out),
            Generator::Scale { layer } => scale::a_times_add(arch, *layer, v, out),
        }
    }

    /// `A v` as a new vector.
    pub fn a_times(&self, arch: &Architecture, v: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; v.len()];
        self.a_times_into(arch, v, &mut out);
        out
    }

    /// `gᵀAg` for any vector g (the charge is `quad(θ)`).
    pub fn quad<T: Real>(&self, arch: &Architecture, g: &[T]) -> f64 {
        match self {
            Generator::Rescale { layer, unit } => rescale::quad(arch, *layer, *unit, g),
            Generator::DoubleRotation { layer, b } => double_rotation::quad(arch, *layer, b, g),
            Generator::Scale { layer } => scale::quad(arch, *layer, g),
        }
    }

    /// The Noether charge `C = θᵀAθ`.
    pub fn charge<T: Real>(&self, arch: &Architecture, theta: &[T]) -> f64 {
        self.quad(arch, theta)
    }

    /// A short human-readable name, e.g. `rescale(l=0, j=3)`.
    pub fn label(&self) -> String {
        match self {
            Generator::Rescale { layer, unit } => format!("rescale(l={layer}, j={unit})"),
            Generator::DoubleRotation { layer, .. } => format!("double_rotation(l={layer})"),
            Generator::Scale { layer } => format!("scale(l={layer})"),
        }
    }
}

impl Symmetry {
    /// The generator of a rescaling or scale symmetry; for a double rotation, the generator with direction `B`
    /// = identity (which is the sum of the rescalings of the pair's units).
    pub fn generator(&self, arch: &Architecture) -> Generator {
        match *self {
            Symmetry::Rescale { layer, unit } => Generator::Rescale { layer, unit },
            Symmetry::Scale { layer } => Generator::Scale { layer },
            Symmetry::DoubleRotation { layer } => {
                let d = arch.layers[layer].d_out;
                Generator::DoubleRotation { layer, b: Mat::identity(d, d) }
            }
        }
    }
}

/// A random symmetric `d × d` matrix with N(0, 1) entries (off-diagonals symmetrised), for tests and demos.
pub fn random_symmetric<R: rand::Rng>(d: usize, rng: &mut R) -> Mat<f64> {
    use rand_distr::{Distribution, StandardNormal};
    let mut m = Mat::<f64>::zeros(d, d);
    for i in 0..d {
        for j in 0..=i {
            let v: f64 = StandardNormal.sample(rng);
            m[(i, j)] = v;
            m[(j, i)] = v;
        }
    }
    m
}

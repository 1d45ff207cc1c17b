//! Double rotations of a module tree found from its graph (DESIGN.md §4): two `linear` modules of one sequence,
//! the second reading exactly the first's outputs, directly or through `identity` modules only. Then for every
//! invertible Q, `(W₂, W₁, b₁) → (W₂Q⁻¹, QW₁, Qb₁)` leaves the function unchanged (W₂Q⁻¹(QW₁x + Qb₁) + b₂ =
//! W₂(W₁x + b₁) + b₂); with `Q = e^{λB}`, B symmetric `d × d`, this is the exponential symmetry of
//! [`crate::symmetry::double_rotation`] on the pair's [`PairLayout`] (same generator, charge and verbs as a
//! dense chain's pair).
//!
//! Not a pair: a linear whose output tensor has any other reader, or is the network output. In particular a
//! linear that writes into a residual stream (the module before a `residual` entry, whose output is both the
//! body's input and the skip, or the last module of a body, whose output is summed with the skip) is not paired
//! with the stream's next linear: rotating its output by Q also rotates the skip's (or the add's) copy, which
//! the next linear then reads through `W₂Q⁻¹` together with the unrotated other summand, `W₂Q⁻¹(Qh + s) ≠
//! W₂(h + s)`, and the body's nonlinear maps do not commute with Q. So only a chain of single-reader tensors
//! between two linears of one sequence qualifies.

use super::double_rotation::PairLayout;
use crate::net::{Kind, NetArch, Program, Step};
use crate::real::Real;
use faer::Mat;

/// A linear pair of a module tree: the first linear (writer), the second (reader) and θ's layout of the pair.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearPair {
    /// State-dict prefix of the first linear (the writer of the rotated tensor).
    pub module: String,
    /// State-dict prefix of the second linear (its only reader, after identities).
    pub reader: String,
    /// Where `W₁`, `b₁` and `W₂` sit in θ.
    pub layout: PairLayout,
}

impl LinearPair {
    /// The pair's generator with direction `b` (symmetric, `d × d`).
    pub fn generator(&self, b: Mat<f64>) -> PairGenerator {
        PairGenerator { layout: self.layout, b }
    }
    /// The generator of direction B = I (the sum of the pair's unit rescalings; the dense path's default).
    pub fn identity_generator(&self) -> PairGenerator {
        self.generator(Mat::identity(self.layout.d, self.layout.d))
    }
    /// The matrix charge `W₁W₁ᵀ + b₁b₁ᵀ − W₂ᵀW₂` (`d × d`) at θ.
    pub fn matrix_charge<T: Real>(&self, theta: &[T]) -> Mat<f64> {
        self.layout.matrix_charge(theta)
    }
    /// Entries of the incoming block `[W₁ | b₁]` and of the outgoing block `W₂`.
    pub fn counts(&self) -> (usize, usize) {
        (self.layout.d * self.layout.in_cols(), self.layout.d_out * self.layout.d)
    }
    /// A short label: `double_rotation 0`.
    pub fn label(&self) -> String {
        format!("double_rotation {}", self.module)
    }
}

/// One double-rotation generator A of a tree (layout and direction B): the verbs of
/// [`crate::symmetry::double_rotation`].
#[derive(Clone, Debug, PartialEq)]
pub struct PairGenerator {
    /// The pair's layout in θ.
    pub layout: PairLayout,
    /// Symmetric direction B (`d × d`).
    pub b: Mat<f64>,
}

impl PairGenerator {
    /// θ ← e^{λA}θ.
    pub fn act_in_place<T: Real>(&self, theta: &mut [T], lambda: f64) {
        self.layout.act_in_place(&self.b, theta, lambda)
    }
    /// `C = θᵀAθ = ⟨B, W₁W₁ᵀ + b₁b₁ᵀ − W₂ᵀW₂⟩_F`.
    pub fn charge<T: Real>(&self, theta: &[T]) -> f64 {
        self.layout.quad(&self.b, theta)
    }
    /// `gᵀAg`.
    pub fn quad<T: Real>(&self, g: &[T]) -> f64 {
        self.layout.quad(&self.b, g)
    }
    /// `A v` as a new vector.
    pub fn a_times(&self, v: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; v.len()];
        self.layout.a_times_add(&self.b, v, &mut out);
        out
    }
}

impl super::NetGenerator for PairGenerator {
    fn act_in_place<T: Real>(&self, theta: &mut [T], lambda: f64) {
        PairGenerator::act_in_place(self, theta, lambda)
    }
    fn a_times(&self, v: &[f64]) -> Vec<f64> {
        PairGenerator::a_times(self, v)
    }
}

/// Every linear pair of `arch`, in state_dict order of the first linear.
pub fn pairs(arch: &NetArch) -> Vec<LinearPair> {
    let prog = Program::new(arch);
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); prog.bufs.len()];
    for (k, op) in prog.ops.iter().enumerate() {
        readers[op.x].push(k);
        if let Step::Add { skip } = op.step {
            readers[skip].push(k);
        }
    }
    let mut out = Vec::new();
    for op in &prog.ops {
        let Step::Module(Kind::Linear(first)) = &op.step else { continue };
        let mut buf = op.y;
        let second = loop {
            if buf == prog.output || readers[buf].len() != 1 {
                break None;
            }
            let next = &prog.ops[readers[buf][0]];
            match &next.step {
                Step::Module(Kind::Act(a)) if a.is_identity() => buf = next.y,
                Step::Module(Kind::Linear(l)) => break Some((next.name.clone(), l)),
                _ => break None,
            }
        };
        let Some((reader, second)) = second else { continue };
        debug_assert_eq!(second.d_in, first.d_out);
        out.push(LinearPair {
            module: op.name.clone(),
            reader,
            layout: PairLayout {
                w_in: first.weight.start,
                d_in: first.d_in,
                d: first.d_out,
                bias: first.bias.as_ref().map(|b| b.start),
                w_out: second.weight.start,
                d_out: second.d_out,
            },
        });
    }
    out.sort_by_key(|p| p.layout.w_in);
    out
}

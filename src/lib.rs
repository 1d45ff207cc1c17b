//! # noether — the noise geometry of SGD under parameter symmetries
//!
//! noether implements *Parameter Symmetry and Noise Equilibrium of Stochastic Gradient Descent* (Ziyin, Wang,
//! Li, Wu; NeurIPS 2024). When a loss has an exponential symmetry `ℓ(e^{λA}θ) = ℓ(θ)`, gradient flow
//! conserves the Noether charge `C = θᵀAθ` but SGD moves it, exactly `C_{t+1} − C_t = η² ĝᵀAĝ` per step, and
//! in continuous time `dC/dt = (η/S)·Tr[AΣ]`. Every orbit holds a unique noise equilibrium that SGD drifts to.
//!
//! ## Conventions
//! - N = data-set size, S = batch size, P = number of parameters, L = number of layers.
//! - Batch matrices are `[B, d]` (one row per sample); weights are `[out, in]` (PyTorch layout); θ is flat,
//!   layer by layer, weight row-major then bias.
//! - "mean" means 1/N. The gradient covariance Σ is **centred** with 1/N: `Σ = (1/N)Σ_n g_n g_nᵀ − ḡḡᵀ`.
//!   The minibatch second moment is `M_S = Σ/S + ∇L∇Lᵀ` (with replacement).
//! - "per step" counts SGD steps; "per unit time" uses `t = η·steps` (the SDE clock).
//! - f64 is the default for analysis; the engine also runs in f32 ([`Real`]).
//!
//! ## Design decisions
//! - The engine is an analytic batched backward over a chain of dense layers, not a general autodiff: it
//!   exposes each layer's inputs `X_l` and back-propagated pre-activation gradients `Δ_l`, from which
//!   per-sample statistics follow without forming per-sample gradients (the per-sample gradient of `W_l`
//!   is `δ_n x_nᵀ`), and exact Hessian-vector products follow by the R-operator.
//! - Everything random takes an explicit seeded ChaCha RNG: the same seed gives bit-identical output.

#![deny(missing_docs)]

pub mod curvature;
pub mod data;
pub mod dynamics;
pub mod equilibrium;
pub mod error;
pub mod experiments;
pub mod linalg;
pub mod loss;
pub mod model;
pub mod net;
pub mod real;
pub mod report;
pub mod stats;
pub mod sweep;
pub mod symmetry;
pub mod tensor_io;
#[doc(hidden)]
pub mod testutil;

pub use data::{Dataset, Targets};
pub use error::{Error, Result};
pub use loss::Loss;
pub use model::{Activation, Architecture, Layer, Model};
pub use real::Real;

/// The README's Rust example, compiled and run as a doc test so that it cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

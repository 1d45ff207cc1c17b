//! Module kinds, one file each with the same verbs on channel-major batches: forward, backward (input
//! gradient and parameter gradient), the R-operator pair (exact Hessian-vector products) and, for the
//! parameterised kinds, the per-sample gradient and the quadratic-form moments.
//!
//! The dispatch over kinds is [`crate::net::Tape`]'s closed `match` on [`crate::net::Kind`]: a new kind that
//! lacks a verb does not compile.

pub mod conv2d;
pub mod flatten;
pub mod linear;
pub mod pointwise;
pub mod pool;
pub mod rms_norm;

pub use conv2d::Conv2d;
pub use linear::Linear;
pub use pool::Pool;
pub use rms_norm::RmsNorm;

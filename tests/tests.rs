//! Integration tests. Module map:
//! - `engine`: gradients of the dense-chain engine against finite differences and the reference fixtures.
//! - `noise`: per-sample statistics vs the brute-force loop and the fixtures; equilibria; teleport.
//! - `reference`: loader for `tests/data/<case>/` (copied from `shared/reference`, see tests/data/README.md).
//! - `symmetry`: invariances and the exact discrete Noether identity for every family.

mod engine;
mod noise;
mod reference;
mod symmetry;

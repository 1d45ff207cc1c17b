//! Integration tests. Module map:
//! - `cli`: the binary end to end (determinism, run folders, errors on bad input).
//! - `engine`: gradients of the dense-chain engine against finite differences and the reference fixtures.
//! - `reference`: loader for `tests/data/<case>/` (copied from `shared/reference`, see tests/data/README.md).
//! - `symmetry`: invariances and the exact discrete Noether identity for every family.

mod cli;
mod engine;
mod gemm;
mod reference;
mod symmetry;

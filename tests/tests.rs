//! Integration tests. Module map:
//! - `alloc`: the step loop allocates nothing (counting global allocator, declared here).
//! - `cli`: the binary end to end (determinism, run folders, errors on bad input).
//! - `gemm`: the fused small-GEMM path of `linalg::gemm` against faer's `matmul`.
//! - `engine`: gradients of the dense-chain engine against finite differences and the reference fixtures.
//! - `reference`: loader for `tests/data/<case>/` (copied from `shared/reference`, see tests/data/README.md).
//! - `symmetry`: invariances and the exact discrete Noether identity for every family.

mod alloc;
mod cli;
mod engine;
mod gemm;
mod reference;
mod symmetry;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

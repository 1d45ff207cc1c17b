//! Integration tests. Module map:
//! - `curvature`: exact HVPs vs finite differences, spectra and traces vs reference cases, orbit sharpness.
//! - `engine`: gradients of the dense-chain engine against finite differences and the reference fixtures.
//! - `reference`: loader for `tests/data/<case>/` (copied from `shared/reference`, see tests/data/README.md).
//! - `symmetry`: invariances and the exact discrete Noether identity for every family.

mod curvature;
mod engine;
mod reference;
mod symmetry;

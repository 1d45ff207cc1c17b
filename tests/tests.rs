//! Integration tests. Module map:
//! - `engine`: gradients of the dense-chain engine against finite differences and the reference fixtures.
//! - `reference`: loader for `tests/data/<case>/` (copied from `shared/reference`, see tests/data/README.md).
//! - `report`: figures (PNG + SVG of every kind, degenerate data), the Markdown/HTML report.
//! - `symmetry`: invariances and the exact discrete Noether identity for every family.

mod engine;
mod reference;
mod report;
mod symmetry;

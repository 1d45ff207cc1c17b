//! Integration tests. Module map:
//! - `alloc`: the step loop allocates nothing (counting global allocator, declared here).
//! - `cli`: the binary end to end (determinism, run folders, errors on bad input).
//! - `curvature`: exact HVPs vs finite differences, spectra and traces vs reference cases, orbit sharpness.
//! - `idx`: MNIST-format IDX files (reader, standardisation, bad input, `noether data idx`, `kind = "idx"`, Fashion-MNIST).
//! - `gemm`: the fused small-GEMM path of `linalg::gemm` against faer's `matmul`.
//! - `flow`: gradient flow (fixed RK4 and adaptive Dormand–Prince) against the closed form of linear regression.
//! - `engine`: gradients of the dense-chain engine against finite differences and the reference fixtures.
//! - `net`: the module-tree engine (every kind against central differences and the brute-force loop, the cnn_*
//!   reference cases through the library and the CLI, graph symmetries, the exact SGD identity, state_dict files).
//! - `net_commands`: teleport's norm target, `--precision f32`, sharpness along an orbit and on a subset on module
//!   trees, against vanishing charges, the dense engine and the loss's invariance.
//! - `net_gauss_newton`: Gauss–Newton products on module trees against brute-force Jacobians (conv and residual
//!   nets), symmetry and PSD, the dense engine, closed forms on linear nets, f32, and `sharpness --gauss-newton`.
//! - `net_pairs`: double rotations of linear pairs on module trees (enumeration, invariance, moments vs the
//!   brute-force loop and the dense engine, the CLI, the exact SGD identity).
//! - `net_pair_observers`: the training observers' pair columns on a tree (`c_pair_{module}_*`,
//!   `tr_a_sigma_pair_{module}`) against the named tensors and the brute-force per-sample loop.
//! - `noise`: per-sample statistics vs the brute-force loop and the fixtures; equilibria; teleport.
//! - `readme`: every `$ noether …` command of the README's console blocks runs and prints what the README shows.
//! - `reference`: loader for `tests/data/<case>/` (copied from `shared/reference`, see tests/data/README.md).
//! - `sde`: SGD and the SDE against the predicted one-step drift of every charge (ensemble).
//! - `reproduce`: `noether reproduce --quick` end to end (noether-flow, fig2) and a smoke test of every other experiment.
//! - `robust`: every input that cannot mean what it says is an error naming the culprit; unconverged results are
//!   flagged; a second run never overwrites the first.
//! - `robust_outputs`: closed pipes, exports that would overwrite inputs (links, devices), and the flags and files
//!   of `sharpness`, `teleport`, `analyze` and `reproduce --list` that cannot mean what they say.
//! - `report`: figures (PNG + SVG of every kind, degenerate data), the Markdown/HTML report.
//! - `sweep`: sweep files (grid, zip, dotted keys, names), resumption and faults, identical tables for any
//!   worker count, the CLI's errors, and the SLURM backend on a real cluster (`NOETHER_SLURM=1`, see .ci/run).
//! - `symmetry`: invariances and the exact discrete Noether identity for every family.
//! - `train_net`: training module trees through the Trainer (the exact identity for every rescaling class, the
//!   dense trainer's trajectories, `[model] layers` configs through the CLI, sweeps over them).

mod alloc;
mod cli;
mod curvature;
mod engine;
mod flow;
mod gemm;
mod idx;
mod net;
mod net_commands;
mod net_gauss_newton;
mod net_pair_observers;
mod net_pairs;
mod noise;
mod readme;
mod reference;
mod report;
mod reproduce;
mod robust;
mod robust_outputs;
mod sde;
mod sweep;
mod symmetry;
mod train_net;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

//! Typed errors of the library. The binary adds context with `anyhow`; each `Display` says what went
//! wrong, where, and what to do about it.

use thiserror::Error;

/// Every error the noether library can return.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor or matrix has the wrong shape.
    #[error("shape mismatch in {what}: expected {expected:?}, got {got:?}")]
    ShapeMismatch {
        /// Which tensor or operation.
        what: String,
        /// The shape that was required.
        expected: Vec<usize>,
        /// The shape that was found.
        got: Vec<usize>,
    },
    /// A tensor has the wrong number of dimensions.
    #[error("{what} must have rank {rank} ({layout}), got a tensor of shape {got:?}")]
    WrongRank {
        /// Which tensor.
        what: String,
        /// The rank required.
        rank: usize,
        /// The layout required, e.g. `[out, in]`.
        layout: &'static str,
        /// The shape that was found.
        got: Vec<usize>,
    },
    /// A model file holds tensors the model does not use (as PyTorch's strict `load_state_dict` refuses).
    #[error(
        "{file} holds tensors noether does not use: {unused}; a model file holds only the `weight` [out, in] and \
         `bias` [out] of each dense layer (`layers.{{l}}.*` or `nn.Sequential` names); save only those, e.g. \
         {{k: v for k, v in model.state_dict().items() if k.endswith(('weight', 'bias'))}}"
    )]
    UnusedTensors {
        /// The file.
        file: String,
        /// The unused names, comma separated.
        unused: String,
    },
    /// A tensor that must be present is missing from a file.
    #[error("tensor `{name}` is missing from {file}; found: {found}")]
    MissingTensor {
        /// The tensor name looked for.
        name: String,
        /// The file.
        file: String,
        /// The names that are in the file.
        found: String,
    },
    /// Non-finite values where finite ones are required.
    #[error(
        "{what} contains a non-finite value ({value}) at index {index}; clean the input or check its source"
    )]
    NonFinite {
        /// What contained it.
        what: String,
        /// Flat index of the first offending value.
        index: usize,
        /// The value.
        value: f64,
    },
    /// The loss became non-finite during training.
    #[error("loss became {loss} at step {step} (lr = {lr}); lower the learning rate or add warmup")]
    Diverged {
        /// Step at which the loss was non-finite.
        step: u64,
        /// The loss value.
        loss: f64,
        /// Learning rate at that step.
        lr: f64,
    },
    /// Adaptive gradient flow could not keep its error tolerance: the substep shrank below what the time
    /// step can resolve.
    #[error(
        "gradient flow at step {step} (time {time}): the adaptive substep fell to {h:e}; the flow blows up there \
         or is too stiff for tolerance {tolerance} (raise it, or drop it for fixed RK4 substeps)"
    )]
    FlowStepUnderflow {
        /// Step at which it happened.
        step: u64,
        /// Flow time at the start of that step.
        time: f64,
        /// The rejected substep size.
        h: f64,
        /// The tolerance asked for.
        tolerance: f64,
    },
    /// An invalid configuration value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An unknown name (activation, loss, family, …).
    #[error("unknown {kind} `{name}`; expected one of: {expected}")]
    Unknown {
        /// What kind of name.
        kind: &'static str,
        /// The name given.
        name: String,
        /// The accepted names.
        expected: String,
    },
    /// Invalid data (labels out of range, wrong dtype, …).
    #[error("invalid data: {0}")]
    Data(String),
    /// A model lacks the requested symmetry.
    #[error("no symmetry: {0}")]
    NoSymmetry(String),
    /// A numerical routine failed.
    #[error("numerical failure in {what}: {reason}")]
    Numerical {
        /// The routine.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// A safetensors file could not be read or written.
    #[error("safetensors {file}: {reason}")]
    Safetensors {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// A malformed IDX (MNIST-format) file, or an image/label pair that does not fit together.
    #[error("IDX file {file}: {problem}")]
    Idx {
        /// The file at fault.
        file: String,
        /// What is wrong with it.
        problem: crate::data::IdxProblem,
    },
    /// A sweep folder holds the points of another sweep.
    #[error("{dir} holds a different sweep ({difference}); give another --out or delete the folder")]
    SweepMismatch {
        /// The folder.
        dir: String,
        /// The first difference, `key: value here, value there`.
        difference: String,
    },
    /// An external program (sbatch, squeue) is missing or failed.
    #[error("{program}: {reason}")]
    External {
        /// The program.
        program: String,
        /// What happened, with its stderr.
        reason: String,
    },
    /// I/O failure. The OS reason is part of the message (and not also a `source`, so that an error chain
    /// printed with its causes does not repeat it).
    #[error("{path}: {reason}")]
    Io {
        /// The path involved.
        path: String,
        /// The underlying error.
        reason: std::io::Error,
    },
}

/// Result alias of the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl AsRef<std::path::Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().display().to_string(), reason: source }
    }
    /// A wrong-rank error: `what` must have `rank` dimensions laid out as `layout`.
    pub fn rank(what: impl Into<String>, rank: usize, layout: &'static str, got: &[usize]) -> Self {
        Error::WrongRank { what: what.into(), rank, layout, got: got.to_vec() }
    }
    /// A shape mismatch error.
    pub fn shape(what: impl Into<String>, expected: &[usize], got: &[usize]) -> Self {
        Error::ShapeMismatch { what: what.into(), expected: expected.to_vec(), got: got.to_vec() }
    }
}

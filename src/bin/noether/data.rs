//! `noether data`: data-file conversions (library: `noether::data`).

use anyhow::{bail, Context, Result};
use noether::data::{load_idx, save_dataset_shaped, IdxOptions};
use noether::{Dataset, Real};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Arguments of `noether data`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: DataCommand,
}

/// The conversions.
#[derive(clap::Subcommand, Debug)]
pub enum DataCommand {
    /// Convert MNIST-format IDX images and labels (raw or .gz) into a safetensors data file for
    /// analyze/teleport/sharpness: `x` [N, 1, rows, cols] (pixels/255; --flat: [N, rows·cols]), `y` int64 [N].
    Idx(IdxArgs),
}

/// Floating-point type of the written `x`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrecisionArg {
    /// float64 (8 bytes a pixel).
    F64,
    /// float32 (half the file).
    F32,
}

/// Arguments of `noether data idx`.
#[derive(clap::Args, Debug)]
pub struct IdxArgs {
    /// Image file (magic 0x00000803), e.g. `/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz`.
    pub images: PathBuf,
    /// Label file of the same samples (magic 0x00000801), e.g. `.../train-labels-idx1-ubyte.gz`.
    pub labels: PathBuf,
    /// Output safetensors file, e.g. `--out fashion-train.safetensors`.
    #[arg(long)]
    pub out: PathBuf,
    /// Keep only the first N samples in file order, e.g. `--n 1000` (default: all).
    #[arg(long)]
    pub n: Option<usize>,
    /// Standardise each pixel to mean 0, std 1 over the kept samples (constant pixels become 0).
    #[arg(long)]
    pub standardize: bool,
    /// Float type of `x`: f64 or f32, e.g. `--precision f32`.
    #[arg(long, value_enum, default_value_t = PrecisionArg::F64)]
    pub precision: PrecisionArg,
    /// Write `x` as [N, rows·cols] instead of [N, 1, rows, cols] (the vector inputs a dense-chain model without
    /// an architecture file takes).
    #[arg(long)]
    pub flat: bool,
    /// Overwrite --out if it exists.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    match args.command {
        DataCommand::Idx(a) => match a.precision {
            PrecisionArg::F64 => idx::<f64>(&a),
            PrecisionArg::F32 => idx::<f32>(&a),
        },
    }
}

fn idx<T: Real>(a: &IdxArgs) -> Result<ExitCode> {
    if a.out.exists() && !a.force {
        bail!("--out {} exists; pass --force to overwrite it", a.out.display());
    }
    if a.standardize && a.n == Some(1) {
        bail!(
            "--standardize needs at least 2 samples, got --n 1: each pixel is standardised over the kept samples, \
             and over one sample every pixel would become 0; raise --n or drop --standardize"
        );
    }
    let options = IdxOptions { n: a.n, standardize: a.standardize };
    let (data, shape): (Dataset<T>, _) =
        load_idx(&a.images, &a.labels, &options).context("reading the IDX images and labels")?;
    let shape = if a.flat { vec![data.d_in()] } else { shape };
    save_dataset_shaped(&data, &shape, &a.out).with_context(|| format!("writing {}", a.out.display()))?;
    outln!("{}", summary(&data, &shape, &a.out, a.standardize));
    Ok(ExitCode::SUCCESS)
}

/// One line: what was written where. The labels are described by their range and the classes present.
fn summary<T: Real>(data: &Dataset<T>, shape: &[usize], out: &Path, standardized: bool) -> String {
    let labels = match &data.y {
        noether::data::Targets::Classes(c) => c,
        noether::data::Targets::Dense(_) => unreachable!("IDX labels are classes"),
    };
    let top = labels.iter().max().map_or(0, |&k| k + 1);
    let present = labels.iter().copied().collect::<std::collections::BTreeSet<usize>>().len();
    let classes = if present == top {
        format!("labels in {top} classes (0–{})", top.saturating_sub(1))
    } else {
        format!("labels 0–{} ({present} of those {top} classes present)", top.saturating_sub(1))
    };
    let x_shape: Vec<usize> = std::iter::once(data.len()).chain(shape.iter().copied()).collect();
    format!(
        "wrote {} samples to {}: x {x_shape:?} {:?} ({}), y [{}] int64 {classes}",
        data.len(),
        out.display(),
        T::DTYPE,
        if standardized { "standardised per pixel" } else { "pixels/255 in [0, 1]" },
        data.len(),
    )
}

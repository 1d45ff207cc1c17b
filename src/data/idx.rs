//! MNIST-format IDX files (MNIST, Fashion-MNIST, KMNIST): unsigned-byte images `[N, rows, cols]` (magic
//! `0x00000803`) and labels `[N]` (magic `0x00000801`), big-endian headers, raw or gzip-compressed (detected by
//! the gzip magic bytes `1f 8b`, not by the file name).
//!
//! Format (<http://yann.lecun.com/exdb/mnist/>): bytes 0–1 are zero, byte 2 is the element type (`0x08` =
//! unsigned byte, the only one read here), byte 3 the rank r; then r big-endian u32 sizes; then the values in
//! row-major order. A file must hold exactly the bytes its header announces.

use super::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::real::Real;
use faer::Mat;
use std::io::Read;
use std::path::Path;

/// IDX magic of unsigned-byte images `[N, rows, cols]`.
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// IDX magic of unsigned-byte labels `[N]`.
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;
/// The first two bytes of every gzip stream (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// How to read an image/label pair of IDX files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdxOptions {
    /// Keep only the first `n` samples in file order (`None`: all of them).
    pub n: Option<usize>,
    /// Standardise each pixel over the loaded samples (see [`load_idx`]).
    pub standardize: bool,
}

/// What is wrong with an IDX file (the `problem` of [`Error::Idx`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdxProblem {
    /// The magic number is not the expected one (not IDX, another element type, or another rank).
    #[error(
        "magic number 0x{found:08x} ({}) where 0x{expected:08x} ({}) is expected",
        describe_magic(*found),
        describe_magic(*expected)
    )]
    BadMagic {
        /// The first four bytes, big-endian.
        found: u32,
        /// The magic required.
        expected: u32,
    },
    /// The file ends before the header or the values it announces.
    #[error("truncated: the header announces {expected} bytes{}, the file holds {got}", dims_note(dims))]
    Truncated {
        /// Bytes required (header + values), saturating at `u64::MAX`.
        expected: u64,
        /// Bytes present (after decompression).
        got: u64,
        /// The sizes in the header, when it was complete.
        dims: Vec<usize>,
    },
    /// The file holds more bytes than its header announces.
    #[error("{got} bytes, but the header {dims:?} announces {expected}: trailing data, or a wrong header")]
    TrailingBytes {
        /// Bytes announced (header + values).
        expected: u64,
        /// Bytes present (after decompression).
        got: u64,
        /// The sizes in the header.
        dims: Vec<usize>,
    },
    /// No images, or images of zero rows or columns.
    #[error("{n} images of {rows}×{cols} pixels: every size must be at least 1")]
    EmptyImages {
        /// Images in the file.
        n: usize,
        /// Rows per image.
        rows: usize,
        /// Columns per image.
        cols: usize,
    },
    /// The label file and the image file hold different numbers of samples.
    #[error(
        "{labels} labels for {images} images in {images_file}; give the labels that belong to these images"
    )]
    CountMismatch {
        /// Samples in the label file.
        labels: usize,
        /// Samples in the image file.
        images: usize,
        /// The image file.
        images_file: String,
    },
    /// More samples were asked for than the file holds.
    #[error(
        "n = {requested} samples asked for, but the file holds {available}; lower n (at most {available})"
    )]
    TooFewSamples {
        /// The `n` asked for.
        requested: usize,
        /// Samples in the file.
        available: usize,
    },
    /// The file starts like gzip but does not decompress.
    #[error("bad gzip stream ({0}); the file starts with the gzip magic 1f 8b but is corrupt or cut short")]
    Gzip(String),
}

/// Human description of an IDX magic number: element type and rank, or "not an IDX file".
fn describe_magic(m: u32) -> String {
    if m >> 16 != 0 {
        return "not an IDX file: the first two bytes must be zero".into();
    }
    let ty = match (m >> 8) & 0xff {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0b => "int16",
        0x0c => "int32",
        0x0d => "float32",
        0x0e => "float64",
        _ => "unknown element type",
    };
    let rank = m & 0xff;
    let role = match m {
        IDX_IMAGES_MAGIC => ": images [N, rows, cols]",
        IDX_LABELS_MAGIC => ": labels [N]",
        _ => "",
    };
    format!("{ty}, rank {rank}{role}")
}

fn dims_note(dims: &[usize]) -> String {
    if dims.is_empty() {
        String::new()
    } else {
        format!(" (sizes {dims:?})")
    }
}

fn idx_error(path: &Path, problem: IdxProblem) -> Error {
    Error::Idx { file: path.display().to_string(), problem }
}

/// An unsigned-byte IDX array: its sizes and its values in row-major order.
struct IdxArray {
    dims: Vec<usize>,
    values: Vec<u8>,
}

/// The bytes of a file, gunzipped when it starts with the gzip magic.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    // The gzip trailer's ISIZE is the uncompressed size mod 2³²; a hint only (deflate expands ≤ 1032×).
    if let Some(t) = raw.len().checked_sub(4).and_then(|i| raw.get(i..)) {
        let isize = u32::from_le_bytes([t[0], t[1], t[2], t[3]]) as usize;
        out.reserve(isize.min(raw.len().saturating_mul(1032)));
    }
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| idx_error(path, IdxProblem::Gzip(e.to_string())))?;
    Ok(out)
}

/// Reads an unsigned-byte IDX file whose magic must be `expected`, checking that the file holds exactly the
/// bytes its header announces.
fn read_idx_u8(path: &Path, expected: u32) -> Result<IdxArray> {
    let mut bytes = read_maybe_gzip(path)?;
    let got = bytes.len() as u64;
    let rank = (expected & 0xff) as usize;
    let header = 4 + 4 * rank;
    let truncated =
        |need: u64, dims: Vec<usize>| idx_error(path, IdxProblem::Truncated { expected: need, got, dims });
    if bytes.len() < 4 {
        return Err(truncated(header as u64, vec![]));
    }
    let word = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    let found = word(0);
    if found != expected {
        return Err(idx_error(path, IdxProblem::BadMagic { found, expected }));
    }
    if bytes.len() < header {
        return Err(truncated(header as u64, vec![]));
    }
    let dims: Vec<usize> = (0..rank).map(|k| word(4 + 4 * k) as usize).collect();
    let need = dims
        .iter()
        .try_fold(1u64, |p, &d| p.checked_mul(d as u64))
        .and_then(|v| v.checked_add(header as u64))
        .unwrap_or(u64::MAX);
    if got < need {
        return Err(truncated(need, dims));
    }
    if got > need {
        return Err(idx_error(path, IdxProblem::TrailingBytes { expected: need, got, dims }));
    }
    bytes.drain(..header);
    Ok(IdxArray { dims, values: bytes })
}

/// Loads an MNIST-format image/label pair as a data set: `x` `[n, rows·cols]` (each image flattened row-major,
/// PyTorch's order) and class labels `y` `[n]`, with the per-sample shape `[1, rows, cols]`.
/// Samples: the first `n` in file order (all when `options.n` is `None`). Pixels: `p/255 ∈ [0, 1]`.
/// With `options.standardize`, each pixel j instead becomes `(p − mean_j)/std_j` with the mean and the
/// population std (1/n) over the **loaded** n samples (a test set standardised this way uses its own statistics,
/// not the training set's); a constant pixel (std_j = 0) becomes 0. Standardising makes the /255 irrelevant.
/// Errors ([`Error::Idx`], naming the file): wrong magic, truncated or overlong file, bad gzip, image and label
/// counts that differ, `n` beyond the file; [`Error::Config`] for `n = 0` and for `standardize` on fewer than 2
/// samples. Cost: O(N·rows·cols) time, the decompressed files in memory.
pub fn load_idx<T: Real>(
    images: &Path,
    labels: &Path,
    options: &IdxOptions,
) -> Result<(Dataset<T>, Vec<usize>)> {
    let img = read_idx_u8(images, IDX_IMAGES_MAGIC)?;
    let lab = read_idx_u8(labels, IDX_LABELS_MAGIC)?;
    let (available, rows, cols) = (img.dims[0], img.dims[1], img.dims[2]);
    if available == 0 || rows == 0 || cols == 0 {
        // (Nonzero sizes also bound rows·cols by the file length: no overflow below.)
        return Err(idx_error(images, IdxProblem::EmptyImages { n: available, rows, cols }));
    }
    if lab.dims[0] != available {
        return Err(idx_error(
            labels,
            IdxProblem::CountMismatch {
                labels: lab.dims[0],
                images: available,
                images_file: images.display().to_string(),
            },
        ));
    }
    let n = match options.n {
        None => available,
        Some(0) => {
            return Err(Error::Config(
                "n must be at least 1 (leave it out to load every sample), got 0".into(),
            ))
        }
        Some(n) if n > available => {
            return Err(idx_error(images, IdxProblem::TooFewSamples { requested: n, available }))
        }
        Some(n) => n,
    };
    if options.standardize && n < 2 {
        return Err(Error::Config(format!(
            "standardize needs n ≥ 2 samples, got n = {n}: each pixel is standardised over the loaded samples, and \
             over one sample every pixel is constant (all of x would be 0); load more samples or drop standardize"
        )));
    }
    let d = rows * cols;
    let pixels = &img.values[..n * d];
    let x = if options.standardize {
        standardized(pixels, n, d)
    } else {
        let scaled: Vec<T> = (0..=255u32).map(|p| T::from_f64(p as f64 / 255.0)).collect();
        matrix_of_bytes(pixels, n, d, |p, _| scaled[p as usize])
    };
    let y = Targets::Classes(lab.values[..n].iter().map(|&k| k as usize).collect());
    Ok((Dataset::new(x, y)?, vec![1, rows, cols]))
}

/// Per-pixel standardisation of `n` row-major byte images of `d` pixels: with the exact integer sums
/// `s₁ = Σp`, `s₂ = Σp²` and `q = n·s₂ − s₁²` (= n²·var), `(p − mean)/std = (n·p − s₁)/√q`, and 0 where `q = 0`.
fn standardized<T: Real>(pixels: &[u8], n: usize, d: usize) -> Mat<T> {
    let (mut s1, mut s2) = (vec![0u64; d], vec![0u64; d]);
    for row in pixels.chunks_exact(d) {
        for (j, &p) in row.iter().enumerate() {
            s1[j] += p as u64;
            s2[j] += (p as u64) * (p as u64);
        }
    }
    let sqrt_q: Vec<f64> =
        (0..d).map(|j| ((n as u128 * s2[j] as u128 - s1[j] as u128 * s1[j] as u128) as f64).sqrt()).collect();
    matrix_of_bytes(pixels, n, d, |p, j| {
        let num = n as f64 * p as f64 - s1[j] as f64; // exact below 2⁵³
        T::from_f64(if sqrt_q[j] == 0.0 { 0.0 } else { num / sqrt_q[j] })
    })
}

/// The `[n, d]` matrix `x_ij = f(bytes[i·d + j], j)` of row-major bytes, filled in blocks of rows so that both
/// the row-major reads and the column-major writes stay in cache (a plain `Mat::from_fn` strides by d).
fn matrix_of_bytes<T: Real>(bytes: &[u8], n: usize, d: usize, f: impl Fn(u8, usize) -> T) -> Mat<T> {
    const BLOCK_ROWS: usize = 64; // 64 rows of 784 bytes: 50 KB, in L2
    let mut x = Mat::<T>::zeros(n, d);
    for i0 in (0..n).step_by(BLOCK_ROWS) {
        let rows = i0..(i0 + BLOCK_ROWS).min(n);
        for j in 0..d {
            let col = &mut x.col_as_slice_mut(j)[rows.clone()];
            for (v, i) in col.iter_mut().zip(rows.clone()) {
                *v = f(bytes[i * d + j], j);
            }
        }
    }
    x
}

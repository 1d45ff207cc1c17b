//! Data files: safetensors with `x` `[N, d_in]` or `[N, C, H, W]` (float) and `y` `[N, d_out]` (float) or `[N]`
//! (integer labels). Image inputs are flattened per sample in PyTorch's (row-major, channel-first) order.

use super::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::real::Real;
use crate::tensor_io;
use faer::Mat;
use std::path::Path;

/// Loads a data set whose `x` is `[N, d_in]`. Float `y` of rank 1 is taken as `[N, 1]` regression targets;
/// integer `y` as labels.
pub fn load_dataset<T: Real>(path: &Path) -> Result<Dataset<T>> {
    let (data, shape) = load_dataset_shaped(path)?;
    if shape.len() != 1 {
        return Err(Error::Data(format!(
            "`x` in {} has per-sample shape {shape:?}; this model takes vectors ([N, d_in], rank 2): \
             give an architecture file (--arch) for image inputs",
            path.display()
        )));
    }
    Ok(data)
}

/// Loads a data set whose `x` is `[N, *shape]` (rank 2 to 4), flattening each sample row-major, and returns
/// the per-sample shape (`[d]` or `[C, H, W]`).
pub fn load_dataset_shaped<T: Real>(path: &Path) -> Result<(Dataset<T>, Vec<usize>)> {
    let bytes = tensor_io::read_file(path)?;
    let st = tensor_io::parse(&bytes, path)?;
    let mut extra: Vec<&str> = st.names().into_iter().filter(|n| !matches!(*n, "x" | "y")).collect();
    if !extra.is_empty() {
        extra.sort_unstable();
        return Err(Error::Data(format!(
            "{} holds tensors a data file does not have: {}; a data file holds exactly `x` and `y` (remove the \
             others, or write a file with only those two)",
            path.display(),
            extra.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
        )));
    }
    let x = tensor_io::view(&st, "x", path)?;
    if !(2..=4).contains(&x.shape().len()) {
        return Err(Error::Data(format!(
            "`x` in {} has shape {:?} (rank {}); expected rank 2 ([N, d_in]) or 4 ([N, C, H, W])",
            path.display(),
            x.shape(),
            x.shape().len()
        )));
    }
    let shape = x.shape()[1..].to_vec();
    let n = x.shape()[0];
    let xm: Mat<T> = tensor_io::matrix(&x, "x", path)?;
    let y = tensor_io::get(&st, "y", path)?;
    let is_int = !matches!(y.dtype, safetensors::Dtype::F64 | safetensors::Dtype::F32);
    let targets = match (y.shape.as_slice(), is_int) {
        ([m], true) if *m == n => {
            if let Some(i) = y.data.iter().position(|&v| v < 0.0) {
                return Err(Error::Data(format!("label {} of sample {i} is negative", y.data[i])));
            }
            Targets::Classes(y.data.iter().map(|&v| v as usize).collect())
        }
        ([m], false) if *m == n => Targets::Dense(Mat::from_fn(n, 1, |i, _| T::from_f64(y.data[i]))),
        ([m, k], false) if *m == n => {
            Targets::Dense(Mat::from_fn(n, *k, |i, j| T::from_f64(y.data[i * k + j])))
        }
        _ => {
            return Err(Error::Data(format!(
                "`y` in {} has shape {:?} ({:?}); expected [N={n}, d_out] float or [N={n}] integer labels",
                path.display(),
                y.shape,
                y.dtype
            )))
        }
    };
    Ok((Dataset::new(xm, targets)?, shape))
}

/// Saves a data set in the format [`load_dataset`] reads (labels as int64).
pub fn save_dataset<T: Real>(data: &Dataset<T>, path: &Path) -> Result<()> {
    save_dataset_shaped(data, &[data.d_in()], path)
}

/// Saves a data set with `x` as `[N, *shape]` (for example `[N, C, H, W]`), the format
/// [`load_dataset_shaped`] reads; `shape` must multiply to `d_in`.
pub fn save_dataset_shaped<T: Real>(data: &Dataset<T>, shape: &[usize], path: &Path) -> Result<()> {
    let (n, d) = (data.len(), data.d_in());
    if shape.iter().product::<usize>() != d {
        return Err(Error::shape("per-sample shape of `x` (its product must be d_in)", &[d], shape));
    }
    let rowmajor = |m: &Mat<T>| -> Vec<T> {
        let mut v = Vec::with_capacity(m.nrows() * m.ncols());
        for i in 0..m.nrows() {
            for j in 0..m.ncols() {
                v.push(m[(i, j)]);
            }
        }
        v
    };
    let x_shape: Vec<usize> = std::iter::once(n).chain(shape.iter().copied()).collect();
    let mut tensors = vec![("x".to_string(), T::DTYPE, x_shape, T::to_le_bytes_vec(&rowmajor(&data.x)))];
    match &data.y {
        Targets::Dense(y) => {
            tensors.push(("y".into(), T::DTYPE, vec![n, y.ncols()], T::to_le_bytes_vec(&rowmajor(y))))
        }
        Targets::Classes(c) => tensors.push((
            "y".into(),
            safetensors::Dtype::I64,
            vec![n],
            c.iter().flat_map(|&k| (k as i64).to_le_bytes()).collect(),
        )),
    }
    tensor_io::write(path, &tensors)
}

//! Data files: safetensors with `x` `[N, d_in]` (float) and `y` `[N, d_out]` (float) or `[N]` (integer labels).

use super::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::real::Real;
use crate::tensor_io;
use faer::Mat;
use std::path::Path;

/// Loads a data set. Float `y` of rank 1 is taken as `[N, 1]` regression targets; integer `y` as labels.
pub fn load_dataset<T: Real>(path: &Path) -> Result<Dataset<T>> {
    let bytes = tensor_io::read_file(path)?;
    let st = tensor_io::parse(&bytes, path)?;
    let x = tensor_io::get(&st, "x", path)?;
    if x.shape.len() != 2 {
        return Err(Error::rank(format!("`x` in {}", path.display()), 2, "[N, d_in]", &x.shape));
    }
    let (n, d) = (x.shape[0], x.shape[1]);
    let xm = Mat::from_fn(n, d, |i, j| T::from_f64(x.data[i * d + j]));
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
    Dataset::new(xm, targets)
}

/// Saves a data set in the format [`load_dataset`] reads (labels as int64).
pub fn save_dataset<T: Real>(data: &Dataset<T>, path: &Path) -> Result<()> {
    let (n, d) = (data.len(), data.d_in());
    let rowmajor = |m: &Mat<T>| -> Vec<T> {
        let mut v = Vec::with_capacity(m.nrows() * m.ncols());
        for i in 0..m.nrows() {
            for j in 0..m.ncols() {
                v.push(m[(i, j)]);
            }
        }
        v
    };
    let mut tensors = vec![("x".to_string(), T::DTYPE, vec![n, d], T::to_le_bytes_vec(&rowmajor(&data.x)))];
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

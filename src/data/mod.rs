//! Data sets: inputs `x` `[N, d_in]` with float targets `y` `[N, d_out]` or integer class labels `y` `[N]`;
//! the synthetic Gaussian teacher; safetensors loading; MNIST-format IDX images; minibatch sampling.

mod batch;
mod idx;
mod io;
mod rows;

pub use batch::{Batch, BatchSampler, Sampling};
pub use idx::{load_idx, IdxOptions, IdxProblem, IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC};
pub use io::{load_dataset, load_dataset_shaped, save_dataset, save_dataset_shaped};
pub use rows::{SampleMajor, SAMPLE_MAJOR_MAX_BYTES};
pub mod teacher;
pub use teacher::{Anisotropy, Teacher, TeacherMap, TeacherSampler};

use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::real::Real;
use faer::Mat;

/// Targets of a data set.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets<T> {
    /// Float targets `[N, d_out]` (for MSE).
    Dense(Mat<T>),
    /// Integer class labels `[N]` (for cross-entropy).
    Classes(Vec<usize>),
}

/// A finite data set held in memory, inputs column-major `[N, d_in]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset<T> {
    /// Inputs `[N, d_in]`.
    pub x: Mat<T>,
    /// Targets.
    pub y: Targets<T>,
}

impl<T: Real> Dataset<T> {
    /// A data set, checking that inputs and targets have the same number of rows and are finite.
    pub fn new(x: Mat<T>, y: Targets<T>) -> Result<Self> {
        let n = x.nrows();
        let ny = match &y {
            Targets::Dense(m) => m.nrows(),
            Targets::Classes(c) => c.len(),
        };
        if ny != n {
            return Err(Error::shape("targets `y` rows (must equal the rows of `x`)", &[n], &[ny]));
        }
        let d = Self { x, y };
        d.check_finite()?;
        Ok(d)
    }

    /// Number of samples N.
    pub fn len(&self) -> usize {
        self.x.nrows()
    }
    /// Whether the data set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Input width.
    pub fn d_in(&self) -> usize {
        self.x.ncols()
    }

    /// Width of the float targets per sample (`None` for class labels).
    pub fn target_width(&self) -> Option<usize> {
        match &self.y {
            Targets::Dense(y) => Some(y.ncols()),
            Targets::Classes(_) => None,
        }
    }

    /// Errors on the first NaN or infinite value in `x` or `y`.
    pub fn check_finite(&self) -> Result<()> {
        let check = |m: &Mat<T>, what: &str| -> Result<()> {
            for j in 0..m.ncols() {
                for i in 0..m.nrows() {
                    let v = m[(i, j)];
                    if !v.is_finite() {
                        return Err(Error::NonFinite {
                            what: format!("{what} (row {i}, column {j})"),
                            index: i * m.ncols() + j,
                            value: v.to_f64(),
                        });
                    }
                }
            }
            Ok(())
        };
        check(&self.x, "data `x`")?;
        if let Targets::Dense(y) = &self.y {
            check(y, "data `y`")?;
        }
        Ok(())
    }

    /// Checks that the inputs are `d_in` wide and that there is at least one sample.
    pub fn check_input_width(&self, d_in: usize) -> Result<()> {
        if self.d_in() != d_in {
            return Err(Error::shape("data `x` width vs model input width", &[d_in], &[self.d_in()]));
        }
        if self.is_empty() {
            return Err(Error::Data("the data set has no samples".into()));
        }
        Ok(())
    }

    /// Checks that inputs and targets fit a model with `d_in` inputs and `d_out` outputs, and the loss.
    pub fn check_fits(&self, d_in: usize, d_out: usize, loss: Loss) -> Result<()> {
        self.check_input_width(d_in)?;
        self.check_targets(d_out, loss)
    }

    /// Checks that the targets suit `loss` on a network with `d_out` outputs: float `y` `[N, d_out]` for
    /// mse, integer labels `0…d_out − 1` for cross entropy.
    pub fn check_targets(&self, d_out: usize, loss: Loss) -> Result<()> {
        match (&self.y, loss) {
            (Targets::Dense(y), Loss::Mse) => {
                if y.ncols() != d_out {
                    return Err(Error::shape("data `y` width vs model output width", &[d_out], &[y.ncols()]));
                }
            }
            (Targets::Classes(c), Loss::CrossEntropy) => {
                if let Some((i, &k)) = c.iter().enumerate().find(|(_, &k)| k >= d_out) {
                    return Err(Error::Data(format!(
                        "label {k} of sample {i} is out of range: the model has {d_out} outputs (classes 0–{})",
                        d_out - 1
                    )));
                }
            }
            (Targets::Dense(_), Loss::CrossEntropy) => {
                return Err(Error::Data(
                    "cross_entropy needs integer class labels `y` [N]; this data set has float targets"
                        .into(),
                ))
            }
            (Targets::Classes(_), Loss::Mse) => {
                return Err(Error::Data(
                    "mse needs float targets `y` [N, d_out]; this data set has class labels".into(),
                ))
            }
        }
        Ok(())
    }

    /// The data set converted to another precision.
    pub fn cast<U: Real>(&self) -> Dataset<U> {
        let conv = |m: &Mat<T>| Mat::from_fn(m.nrows(), m.ncols(), |i, j| U::from_f64(m[(i, j)].to_f64()));
        Dataset {
            x: conv(&self.x),
            y: match &self.y {
                Targets::Dense(y) => Targets::Dense(conv(y)),
                Targets::Classes(c) => Targets::Classes(c.clone()),
            },
        }
    }

    /// The samples `rows` as a new data set.
    pub fn select(&self, rows: &[usize]) -> Self {
        let x = Mat::from_fn(rows.len(), self.d_in(), |i, j| self.x[(rows[i], j)]);
        let y = match &self.y {
            Targets::Dense(y) => Targets::Dense(Mat::from_fn(rows.len(), y.ncols(), |i, j| y[(rows[i], j)])),
            Targets::Classes(c) => Targets::Classes(rows.iter().map(|&r| c[r]).collect()),
        };
        Self { x, y }
    }
}

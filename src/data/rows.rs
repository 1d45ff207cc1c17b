//! A sample-major copy of a finite data set, for fast minibatch gathers.
//!
//! [`Dataset`] stores `x` column-major `[N, d]` (what the analysis passes want), so gathering a random minibatch
//! from it touches one cache line per *element*: for the 30-40-30 net at S = 64 that is 3840 lines per step,
//! 13% of the step. Here row `n` of `x` is the contiguous run `x[n·d..(n+1)·d]`, so a gather touches a few
//! lines per *sample*. The copy doubles the data's memory; the trainer makes one only for SGD on finite data
//! of at most [`SAMPLE_MAJOR_MAX_BYTES`].

use super::{Dataset, Targets};
use crate::real::Real;
use faer::reborrow::ReborrowMut;
use faer::MatMut;

/// Largest data set (inputs and targets, in bytes) the trainer copies to sample-major order.
pub const SAMPLE_MAJOR_MAX_BYTES: usize = 256 << 20;

/// Inputs and targets of a finite data set, one contiguous row per sample.
#[derive(Clone, Debug)]
pub struct SampleMajor<T> {
    x: Vec<T>,
    y: Vec<T>,
    labels: Vec<usize>,
    n: usize,
    d_in: usize,
    d_out: usize,
}

impl<T: Real> SampleMajor<T> {
    /// The sample-major copy of `data`.
    pub fn new(data: &Dataset<T>) -> Self {
        let rows = |m: faer::MatRef<'_, T>| {
            let mut v = Vec::with_capacity(m.nrows() * m.ncols());
            for n in 0..m.nrows() {
                v.extend(m.row(n).iter().copied());
            }
            v
        };
        let (y, labels, d_out) = match &data.y {
            Targets::Dense(y) => (rows(y.as_ref()), Vec::new(), y.ncols()),
            Targets::Classes(c) => (Vec::new(), c.clone(), 0),
        };
        Self { x: rows(data.x.as_ref()), y, labels, n: data.len(), d_in: data.d_in(), d_out }
    }

    /// Bytes `data` takes in sample-major order (what [`SampleMajor::new`] allocates).
    pub fn bytes_for(data: &Dataset<T>) -> usize {
        let d_out = match &data.y {
            Targets::Dense(y) => y.ncols() * std::mem::size_of::<T>(),
            Targets::Classes(_) => std::mem::size_of::<usize>(),
        };
        data.len() * (data.d_in() * std::mem::size_of::<T>() + d_out)
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.n
    }
    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether the targets are class labels.
    pub fn has_labels(&self) -> bool {
        self.d_out == 0
    }
    /// Input width (features per sample).
    pub fn d_in(&self) -> usize {
        self.d_in
    }
    /// Width of the float targets (`None` for class labels).
    pub fn target_width(&self) -> Option<usize> {
        (!self.has_labels()).then_some(self.d_out)
    }

    /// `dst[(r, j)] = x[rows[r], j]`: the inputs of the samples `rows` into a `[B, d_in]` matrix of any layout.
    pub fn gather_x(&self, rows: &[usize], dst: MatMut<'_, T>) {
        gather(&self.x, self.n, self.d_in, rows, dst)
    }
    /// `dst[(r, j)] = y[rows[r], j]` (dense targets only).
    pub fn gather_y(&self, rows: &[usize], dst: MatMut<'_, T>) {
        assert!(!self.has_labels(), "gather_y on class labels");
        gather(&self.y, self.n, self.d_out, rows, dst)
    }
    /// `dst[r] = label[rows[r]]` (class labels only).
    pub fn gather_labels(&self, rows: &[usize], dst: &mut [usize]) {
        assert!(self.has_labels(), "gather_labels on dense targets");
        for (o, &i) in dst.iter_mut().zip(rows) {
            *o = self.labels[i];
        }
    }
}

/// `dst[(r, j)] = src[rows[r]·d + j]` for the `n × d` row-major `src`: one contiguous read per sample. Into a row-major `dst` each sample is
/// one contiguous copy; into a column-major one, four samples at a time, so that each column gets four
/// consecutive elements per pass (a transpose in 4-row blocks, all in cache).
fn gather<T: Real>(src: &[T], n: usize, d: usize, rows: &[usize], mut dst: MatMut<'_, T>) {
    assert!(dst.nrows() >= rows.len() && dst.ncols() == d, "gather: batch shape mismatch");
    assert!(rows.iter().all(|&i| i < n), "gather: row index out of range");
    let (rs, cs) = (dst.row_stride(), dst.col_stride());
    let p = dst.rb_mut().as_ptr_mut();
    let row = |i: usize| &src[i * d..(i + 1) * d];
    // SAFETY: every r < rows.len() ≤ dst.nrows() and j < d = dst.ncols(), so every offset is inside the view.
    unsafe {
        if cs == 1 {
            for (r, &i) in rows.iter().enumerate() {
                let out = p.offset(r as isize * rs);
                for (j, &v) in row(i).iter().enumerate() {
                    *out.add(j) = v;
                }
            }
            return;
        }
        let mut blocks = rows.chunks_exact(4);
        for (blk, q) in (&mut blocks).enumerate() {
            let (s0, s1, s2, s3) = (row(q[0]), row(q[1]), row(q[2]), row(q[3]));
            let out = p.offset(4 * blk as isize * rs);
            for j in 0..d {
                let o = out.offset(j as isize * cs);
                *o = s0[j];
                *o.offset(rs) = s1[j];
                *o.offset(2 * rs) = s2[j];
                *o.offset(3 * rs) = s3[j];
            }
        }
        let done = rows.len() - blocks.remainder().len();
        for (r, &i) in blocks.remainder().iter().enumerate() {
            let out = p.offset((done + r) as isize * rs);
            for (j, &v) in row(i).iter().enumerate() {
                *out.offset(j as isize * cs) = v;
            }
        }
    }
}

/// `dst[(r, j)] = src[(pick(r), j)]` for `r < n`, from a column-major `src` (a [`Dataset`]'s arrays; every
/// `pick(r)` checked by the caller): column by column when `dst` is column-major too, element by element
/// otherwise.
pub(crate) fn gather_columns<T: Real>(
    src: faer::MatRef<'_, T>,
    n: usize,
    pick: &impl Fn(usize) -> usize,
    mut dst: MatMut<'_, T>,
) {
    assert!(n <= dst.nrows() && src.ncols() == dst.ncols(), "gather: batch shape mismatch");
    for j in 0..src.ncols() {
        let s = crate::linalg::col_slice(src, j);
        let mut col = dst.rb_mut().col_mut(j);
        match col.rb_mut().try_as_col_major_mut() {
            Some(d) => d.as_slice_mut()[..n].iter_mut().enumerate().for_each(|(r, o)| *o = s[pick(r)]),
            None => (0..n).for_each(|r| col[r] = s[pick(r)]),
        }
    }
}

//! The one pass driver over a data set: the samples in chunks of [`CHUNK`], each chunk's tape handed to a
//! closure. Loss and gradient, per-sample losses, moments and HVPs are closures over it (all means are 1/N).
//!
//! Whole-data passes split the samples into [`LANES`] contiguous lanes (a fixed split, whatever the number of
//! threads), each with its own tape and accumulator, run on rayon's threads and summed in lane order: the
//! result is the same on every machine and every run.

use super::{Net, Rows, Tape};
use crate::data::Dataset;
use crate::error::Result;
use crate::loss::Loss;
use crate::real::Real;
use std::ops::Range;

/// Samples per chunk of a whole-data pass.
pub const CHUNK: usize = 256;

/// A tape a chunked pass can fill: a capacity in samples, and the loading of a range of a data set's samples
/// (the batch the next forward pass runs on). [`Tape`] and [`super::DenseTape`] are both chunk tapes, so one
/// driver, [`for_each_chunk_in`], steps every whole-data pass through its chunks.
pub trait ChunkTape<T: Real> {
    /// The most samples one load holds.
    fn capacity(&self) -> usize;
    /// Loads the samples `range` of `data` (`range.len() ≤ capacity`); errors on shape and label problems.
    fn load_range(&mut self, data: &Dataset<T>, range: Range<usize>) -> Result<()>;
}

impl<T: Real> ChunkTape<T> for Tape<T> {
    fn capacity(&self) -> usize {
        Tape::capacity(self)
    }
    fn load_range(&mut self, data: &Dataset<T>, range: Range<usize>) -> Result<()> {
        self.load(data, Rows::Range(range))
    }
}

/// Runs `f(tape, range)` for consecutive chunks of `data`, the chunk's samples loaded into `tape`.
pub fn for_each_chunk<T: Real, C: ChunkTape<T>>(
    tape: &mut C,
    data: &Dataset<T>,
    f: impl FnMut(&mut C, Range<usize>) -> Result<()>,
) -> Result<()> {
    for_each_chunk_in(tape, data, 0..data.len(), f)
}

/// [`for_each_chunk`] over the samples `range` only: consecutive chunks of the tape's capacity (the last one
/// shorter), each loaded before `f(tape, chunk range)` runs; the first error stops the pass.
pub fn for_each_chunk_in<T: Real, C: ChunkTape<T>>(
    tape: &mut C,
    data: &Dataset<T>,
    range: Range<usize>,
    mut f: impl FnMut(&mut C, Range<usize>) -> Result<()>,
) -> Result<()> {
    let step = tape.capacity().max(1);
    let mut start = range.start;
    while start < range.end {
        let end = (start + step).min(range.end);
        tape.load_range(data, start..end)?;
        f(tape, start..end)?;
        start = end;
    }
    Ok(())
}

/// Lanes of a whole-data pass (see the module doc).
pub const LANES: usize = 4;

/// The sample ranges of the lanes of a pass over `n` samples in chunks of `chunk` (whole chunks per lane).
pub fn lane_ranges(n: usize, chunk: usize) -> Vec<Range<usize>> {
    let chunks = n.div_ceil(chunk.max(1));
    let lanes = LANES.min(chunks).max(1);
    (0..lanes)
        .map(|l| ((l * chunks / lanes) * chunk).min(n)..(((l + 1) * chunks / lanes) * chunk).min(n))
        .collect()
}

/// Runs `f(tape, chunk range, accumulator)` over every chunk of `data`, the [`lane_ranges`] in parallel, and
/// returns the lanes' accumulators in lane order (the caller sums them in that order).
pub fn lanes_map<T: Real, A: Send>(
    net: &Net<T>,
    data: &Dataset<T>,
    init: impl Fn() -> A + Sync,
    f: impl Fn(&mut Tape<T>, Range<usize>, &mut A) -> Result<()> + Sync,
) -> Result<Vec<A>> {
    let chunk = CHUNK.min(data.len()).max(1);
    let lanes: Vec<_> = lane_ranges(data.len(), chunk).into_iter().map(|r| (r, ())).collect();
    lanes_map_with(data, &lanes, |_| Ok(Tape::new(&net.arch, chunk)), init, f)
}

/// The lane driver under every whole-data pass: for each lane `(range, how)`, a tape `make_tape(how)` and an
/// accumulator `init()`, and `f(tape, chunk range, accumulator)` over the lane's chunks ([`for_each_chunk_in`]);
/// the lanes run in parallel on rayon's threads and the accumulators come back in lane order, so a sum taken
/// in that order does not depend on the thread count. The first error of any lane is returned.
pub fn lanes_map_with<T: Real, L: Sync, C: ChunkTape<T>, A: Send>(
    data: &Dataset<T>,
    lanes: &[(Range<usize>, L)],
    make_tape: impl Fn(&L) -> Result<C> + Sync,
    init: impl Fn() -> A + Sync,
    f: impl Fn(&mut C, Range<usize>, &mut A) -> Result<()> + Sync,
) -> Result<Vec<A>> {
    use rayon::prelude::*;
    lanes
        .par_iter()
        .map(|(range, how)| {
            let mut tape = make_tape(how)?;
            let mut acc = init();
            for_each_chunk_in(&mut tape, data, range.clone(), |t, r| f(t, r, &mut acc))?;
            Ok(acc)
        })
        .collect()
}

/// Mean loss `L = (1/N) Σ ℓ_n` and mean gradient `∇L` (f64) over `data`.
pub fn loss_and_grad<T: Real>(net: &Net<T>, data: &Dataset<T>, loss: Loss) -> Result<(f64, Vec<f64>)> {
    let p = net.params.len();
    let lanes = lanes_map(
        net,
        data,
        || (0.0, vec![T::zero(); p], vec![0.0; p]),
        |t, _, (total, chunk_grad, g64)| {
            t.forward(&net.params);
            *total += t.loss_grad(loss);
            t.backward_into(&net.params, chunk_grad, T::one());
            for (a, &v) in g64.iter_mut().zip(chunk_grad.iter()) {
                *a += v.to_f64();
            }
            Ok(())
        },
    )?;
    let n = data.len() as f64;
    let mut total = 0.0;
    let mut g = vec![0.0; p];
    for (t, _, g64) in lanes {
        total += t;
        g.iter_mut().zip(&g64).for_each(|(a, b)| *a += b);
    }
    Ok((total / n, g.into_iter().map(|v| v / n).collect()))
}

/// Per-sample losses `ℓ_n` over `data`.
pub fn per_sample_losses<T: Real>(net: &Net<T>, data: &Dataset<T>, loss: Loss) -> Result<Vec<f64>> {
    let lanes = lanes_map(net, data, Vec::new, |t, r, out: &mut Vec<f64>| {
        t.forward(&net.params);
        let o = out.len();
        out.resize(o + r.len(), 0.0);
        t.losses_into(loss, &mut out[o..]);
        Ok(())
    })?;
    Ok(lanes.concat())
}

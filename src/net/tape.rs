//! The program of a module tree and its tape: forward caches, the analytic batched backward and the
//! R-operator (exact Hessian-vector products; Gauss–Newton products by the forward R-pass and the plain
//! backward), for batches of up to `capacity` samples.
//!
//! The tree compiles to a flat list of steps over buffers (buffer 0 is the input; every step writes a new
//! buffer; a residual entry becomes its body's steps and an add `y = x + body(x)`). Every buffer is
//! channel-major `[C, B, H·W]` (a vector batch is `[d, B]`). Gradients `∂ℓ_n/∂buffer` are per sample (not
//! divided by B); parameter gradients are accumulated into a θ-shaped vector with a caller's scale α. Where a
//! buffer feeds two steps (the skip of a residual), the later step in backward order adds to its gradient.
//!
//! All buffers are allocated once at the tape's capacity.

use super::modules::{flatten, pointwise};
use super::spec::{Kind, NetArch, Node};
use crate::data::{Batch, Dataset, Targets};
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::real::Real;
use faer::{Mat, MatMut, MatRef, Par};
use std::ops::Range;

/// One step of the compiled program.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// A module (never `Kind::Residual`).
    Module(Kind),
    /// `y = x + skip` (the end of a residual entry; `x` is the body's output).
    Add {
        /// The buffer the residual entry read (its skip connection).
        skip: usize,
    },
}

impl Step {
    /// The θ range of a parameterised step's parameters (weight, then bias; contiguous), if it has any.
    pub fn param_range(&self) -> Option<Range<usize>> {
        match self {
            Step::Module(Kind::Linear(l)) => {
                Some(l.weight.start..l.bias.as_ref().map_or(l.weight.end, |b| b.end))
            }
            Step::Module(Kind::Conv2d(c)) => {
                Some(c.weight.start..c.bias.as_ref().map_or(c.weight.end, |b| b.end))
            }
            _ => None,
        }
    }
}

/// A step with its buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct Op {
    /// The module's state-dict name (for an add, the residual entry's).
    pub name: String,
    /// What the step computes.
    pub step: Step,
    /// Input buffer.
    pub x: usize,
    /// Output buffer.
    pub y: usize,
    /// Whether backward adds to `∂x` (another step, later in backward order, already wrote it).
    pub acc: bool,
    /// For an add: whether backward adds to `∂skip`.
    pub skip_acc: bool,
}

/// The shape of a buffer: `c` channels of `hw` positions per sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    /// Channels (the width of a vector).
    pub c: usize,
    /// Positions per channel (1 for a vector).
    pub hw: usize,
}

impl Buf {
    fn of(shape: &[usize]) -> Self {
        match shape {
            [d] => Buf { c: *d, hw: 1 },
            [c, h, w] => Buf { c: *c, hw: h * w },
            _ => unreachable!("shapes are [d] or [C, H, W]"),
        }
    }
    /// Elements per sample.
    pub fn len(&self) -> usize {
        self.c * self.hw
    }
    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The compiled program of an architecture.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// Steps in forward order.
    pub ops: Vec<Op>,
    /// Buffer shapes; buffer 0 is the input.
    pub bufs: Vec<Buf>,
    /// The output buffer.
    pub output: usize,
}

impl Program {
    /// Compiles the tree of `arch`.
    pub fn new(arch: &NetArch) -> Self {
        fn rec(nodes: &[Node], mut x: usize, bufs: &mut Vec<Buf>, ops: &mut Vec<Op>) -> usize {
            for node in nodes {
                let step = match &node.kind {
                    Kind::Residual(body) => {
                        let out = rec(body, x, bufs, ops);
                        let skip = x;
                        x = out;
                        Step::Add { skip }
                    }
                    k => Step::Module(k.clone()),
                };
                bufs.push(Buf::of(&node.output));
                let y = bufs.len() - 1;
                ops.push(Op { name: node.name.clone(), step, x, y, acc: false, skip_acc: false });
                x = y;
            }
            x
        }
        let mut bufs = vec![Buf::of(&arch.input)];
        let mut ops = Vec::new();
        let output = rec(&arch.nodes, 0, &mut bufs, &mut ops);
        let mut written = vec![false; bufs.len()];
        for op in ops.iter_mut().rev() {
            if let Step::Add { skip } = op.step {
                op.skip_acc = written[skip];
                written[skip] = true;
            }
            op.acc = written[op.x];
            written[op.x] = true;
        }
        Self { ops, bufs, output }
    }
}

/// Which samples of a data set a chunk holds.
#[derive(Clone, Debug)]
pub enum Rows<'a> {
    /// Consecutive samples.
    Range(Range<usize>),
    /// Samples by index.
    Index(&'a [usize]),
}

impl Rows<'_> {
    /// Number of samples.
    pub fn len(&self) -> usize {
        match self {
            Rows::Range(r) => r.len(),
            Rows::Index(i) => i.len(),
        }
    }
    /// Whether no sample is selected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Index of the `b`-th sample.
    pub fn get(&self, b: usize) -> usize {
        match self {
            Rows::Range(r) => r.start + b,
            Rows::Index(i) => i[b],
        }
    }
}

/// `(&v[read], &mut v[write])` for `read ≠ write`.
fn pair<T>(v: &mut [Vec<T>], read: usize, write: usize) -> (&[T], &mut [T]) {
    assert_ne!(read, write);
    if read < write {
        let (a, b) = v.split_at_mut(write);
        (&a[read], &mut b[0])
    } else {
        let (a, b) = v.split_at_mut(read);
        (&b[0], &mut a[write])
    }
}

/// Backward of `y = x + skip` over the first `n` entries: `∂x = ∂y`, `∂skip (+)= ∂y` (adds when another step
/// already wrote `∂skip`; nothing for the network input). Also the R-operator's, on the R-gradients.
fn add_backward<T: Real>(grads: &mut [Vec<T>], op: &Op, skip: usize, n: usize) {
    let (dy, dx) = pair(grads, op.y, op.x);
    dx[..n].copy_from_slice(&dy[..n]);
    if skip != 0 {
        let (dy, ds) = pair(grads, op.y, skip);
        if op.skip_acc {
            ds[..n].iter_mut().zip(&dy[..n]).for_each(|(s, &v)| *s += v);
        } else {
            ds[..n].copy_from_slice(&dy[..n]);
        }
    }
}

/// Forward caches, backward and R-operator buffers of one architecture.
#[derive(Clone, Debug)]
pub struct Tape<T> {
    prog: Program,
    cap: usize,
    batch: usize,
    acts: Vec<Vec<T>>,
    grads: Vec<Vec<T>>,
    cols: Vec<Vec<T>>,
    argmax: Vec<Vec<u32>>,
    rms: Vec<Vec<T>>,
    dcol: Vec<T>,
    y: Mat<T>,
    labels: Vec<usize>,
    rop: Option<RopBuffers<T>>,
    par: Par,
}

#[derive(Clone, Debug)]
struct RopBuffers<T> {
    racts: Vec<Vec<T>>,
    rgrads: Vec<Vec<T>>,
    rcols: Vec<Vec<T>>,
    rrms: Vec<Vec<T>>,
}

impl<T: Real> Tape<T> {
    /// A tape for `arch` holding up to `capacity` samples.
    pub fn new(arch: &NetArch, capacity: usize) -> Self {
        let prog = Program::new(arch);
        let cap = capacity.max(1);
        let acts: Vec<Vec<T>> = prog.bufs.iter().map(|b| vec![T::zero(); b.len() * cap]).collect();
        let grads = acts.clone();
        let mut max_col = 0;
        let cols = prog
            .ops
            .iter()
            .map(|op| match &op.step {
                Step::Module(Kind::Conv2d(c)) => {
                    let n = c.col_rows() * c.positions() * cap;
                    max_col = max_col.max(n);
                    vec![T::zero(); n]
                }
                _ => Vec::new(),
            })
            .collect();
        let argmax = prog
            .ops
            .iter()
            .map(|op| match &op.step {
                Step::Module(Kind::MaxPool2d(_)) => vec![0u32; prog.bufs[op.y].len() * cap],
                _ => Vec::new(),
            })
            .collect();
        let rms = prog
            .ops
            .iter()
            .map(|op| match &op.step {
                Step::Module(Kind::RmsNorm(_)) => vec![T::zero(); cap],
                _ => Vec::new(),
            })
            .collect();
        let d_out = prog.bufs[prog.output].len();
        Self {
            prog,
            cap,
            batch: 0,
            acts,
            grads,
            cols,
            argmax,
            rms,
            dcol: vec![T::zero(); max_col],
            y: Mat::zeros(cap, d_out),
            labels: vec![0; cap],
            rop: None,
            par: Par::Seq,
        }
    }

    /// Sets the parallelism of the large GEMMs.
    pub fn with_par(mut self, par: Par) -> Self {
        self.par = par;
        self
    }

    /// The compiled program.
    pub fn program(&self) -> &Program {
        &self.prog
    }
    /// The capacity in samples.
    pub fn capacity(&self) -> usize {
        self.cap
    }
    /// Samples of the loaded batch.
    pub fn batch(&self) -> usize {
        self.batch
    }
    /// Buffer `i` of the last forward pass (`[C, B, HW]`, the first `C·B·HW` entries).
    pub fn act(&self, i: usize) -> &[T] {
        &self.acts[i][..self.prog.bufs[i].len() * self.batch]
    }
    /// `∂ℓ_n/∂(buffer i)` after backward.
    pub fn grad(&self, i: usize) -> &[T] {
        &self.grads[i][..self.prog.bufs[i].len() * self.batch]
    }
    /// The unfolded input of conv step `op` after forward.
    pub fn col(&self, op: usize) -> &[T] {
        &self.cols[op]
    }

    /// Loads the samples `rows` of `data` (inputs flattened per sample in PyTorch order, `C·H·W` features).
    pub fn load(&mut self, data: &Dataset<T>, rows: Rows<'_>) -> Result<()> {
        let b = rows.len();
        let target_width = data.target_width();
        self.check_batch(b, data.d_in(), target_width)?;
        self.batch = b;
        let buf = self.prog.bufs[0];
        let x0 = &mut self.acts[0];
        for c in 0..buf.c {
            for p in 0..buf.hw {
                let col = data.x.col(c * buf.hw + p);
                for n in 0..b {
                    x0[(c * b + n) * buf.hw + p] = col[rows.get(n)];
                }
            }
        }
        match &data.y {
            Targets::Dense(y) => {
                for j in 0..y.ncols() {
                    for n in 0..b {
                        self.y[(n, j)] = y[(rows.get(n), j)];
                    }
                }
            }
            Targets::Classes(c) => {
                for n in 0..b {
                    self.labels[n] = c[rows.get(n)];
                }
            }
        }
        self.check_labels(target_width, |n| rows.get(n))
    }

    /// Loads the minibatch `batch` (allocation-free). Vector inputs go through [`Batch::copy_into`] into
    /// buffer 0 viewed as `[B, d]` column-major, which is its row-major `[d, B]` layout (one column per
    /// sample; a [`Batch::SampleMajorRows`] copy is read one contiguous row per sample); the float targets
    /// into the `[B, d_out]` targets, class labels beside. Image inputs (`[C, H, W]`, buffer `[C, B, H·W]`)
    /// load as [`Tape::load`] does; a sample-major batch of images is an error.
    pub fn load_batch(&mut self, batch: Batch<'_, T>) -> Result<()> {
        let buf = self.prog.bufs[0];
        if buf.hw != 1 {
            return match batch {
                Batch::Rows(data, rows) => self.load(data, Rows::Index(rows)),
                Batch::First(data, n) => self.load(data, Rows::Range(0..n)),
                Batch::SampleMajorRows(..) => Err(Error::Config(
                    "a sample-major batch loads vector inputs only, and this net's input is an image".into(),
                )),
            };
        }
        let b = batch.len();
        let target_width = batch.target_width();
        self.check_batch(b, batch.d_in(), target_width)?;
        self.batch = b;
        let x = MatMut::from_column_major_slice_mut(&mut self.acts[0][..buf.c * b], b, buf.c);
        batch.copy_into(x, self.y.as_mut(), &mut self.labels);
        self.check_labels(target_width, |n| batch.sample(n))
    }

    /// Errors unless a batch of `b` samples of `d_in` features and targets `target_width` wide (`None`:
    /// class labels) fits the tape.
    fn check_batch(&self, b: usize, d_in: usize, target_width: Option<usize>) -> Result<()> {
        if b > self.cap {
            return Err(Error::Config(format!(
                "a chunk of {b} samples exceeds the tape's capacity {}",
                self.cap
            )));
        }
        let input = self.prog.bufs[0].len();
        if d_in != input {
            return Err(Error::shape("input features of the data (x per sample)", &[input], &[d_in]));
        }
        let d_out = self.prog.bufs[self.prog.output].len();
        match target_width {
            Some(w) if w != d_out => {
                Err(Error::shape("targets `y` per sample (the network output)", &[d_out], &[w]))
            }
            _ => Ok(()),
        }
    }

    /// Errors when a loaded class label is out of range for the outputs (`sample(n)`: the data set's index
    /// of the batch's n-th sample, for the message); nothing to check for float targets.
    fn check_labels(&self, target_width: Option<usize>, sample: impl Fn(usize) -> usize) -> Result<()> {
        if target_width.is_some() {
            return Ok(());
        }
        let d_out = self.prog.bufs[self.prog.output].len();
        match self.labels[..self.batch].iter().position(|&l| l >= d_out) {
            Some(n) => Err(Error::Data(format!(
                "label {} of sample {} is out of range for {d_out} outputs (labels 0–{})",
                self.labels[n],
                sample(n),
                d_out - 1
            ))),
            None => Ok(()),
        }
    }

    /// The forward pass over the loaded batch.
    pub fn forward(&mut self, theta: &[T]) {
        let b = self.batch;
        let par = self.par;
        for (k, op) in self.prog.ops.iter().enumerate() {
            let (bx, by) = (self.prog.bufs[op.x], self.prog.bufs[op.y]);
            match &op.step {
                Step::Add { skip } => {
                    let n = by.len() * b;
                    let (xs, ys) = pair(&mut self.acts, op.x, op.y);
                    ys[..n].copy_from_slice(&xs[..n]);
                    let (ss, ys) = pair(&mut self.acts, *skip, op.y);
                    ys[..n].iter_mut().zip(&ss[..n]).for_each(|(y, &s)| *y += s);
                }
                Step::Module(kind) => {
                    let (x, y) = pair(&mut self.acts, op.x, op.y);
                    let (x, y) = (&x[..bx.len() * b], &mut y[..by.len() * b]);
                    match kind {
                        Kind::Linear(l) => l.forward(theta, x, y, b, par),
                        Kind::Conv2d(c) => {
                            c.im2col(x, &mut self.cols[k], b);
                            c.forward_from_col(theta, &self.cols[k], y, b, par);
                        }
                        Kind::Act(a) => pointwise::forward(*a, x, y),
                        Kind::MaxPool2d(p) => p.max_forward(x, y, &mut self.argmax[k], b),
                        Kind::AvgPool2d(p) => p.avg_forward(x, y, b),
                        Kind::Flatten => flatten::permute(x, y, bx.c, bx.hw, b, false, false),
                        Kind::RmsNorm(r) => r.forward(x, y, &mut self.rms[k], (bx.c, bx.hw, b)),
                        Kind::Residual(_) => unreachable!("compiled away"),
                    }
                }
            }
        }
    }

    /// The network output as a `[B, d_out]` view.
    pub fn output(&self) -> MatRef<'_, T> {
        let d = self.prog.bufs[self.prog.output].c;
        MatRef::from_row_major_slice(&self.acts[self.prog.output][..d * self.batch], d, self.batch)
            .transpose()
    }

    fn targets(&self) -> MatRef<'_, T> {
        let d = self.prog.bufs[self.prog.output].c;
        if self.y.ncols() == d {
            self.y.as_ref().subrows(0, self.batch)
        } else {
            self.y.as_ref().subrows(0, 0)
        }
    }

    /// Per-sample losses of the last forward pass into `out` (length B).
    pub fn losses_into(&self, loss: Loss, out: &mut [f64]) {
        loss.values_into(self.output(), self.targets(), &self.labels[..self.batch], &mut out[..self.batch]);
    }

    /// `Σ_n ℓ_n` of the last forward pass, with `∂ℓ_n/∂f` written as the output buffer's gradient.
    pub fn loss_grad(&mut self, loss: Loss) -> f64 {
        let (b, out) = (self.batch, self.prog.output);
        let d = self.prog.bufs[out].c;
        let f = MatRef::from_row_major_slice(&self.acts[out][..d * b], d, b).transpose();
        let y =
            if self.y.ncols() == d { self.y.as_ref().subrows(0, b) } else { self.y.as_ref().subrows(0, 0) };
        let g = MatMut::from_row_major_slice_mut(&mut self.grads[out][..d * b], d, b).transpose_mut();
        loss.value_and_grad_into(f, y, &self.labels[..b], g)
    }

    /// Scales sample n's output gradient (written by [`Tape::loss_grad`]) by `weights[n]`, so that the next
    /// backward pass gives `Σ_n w_n ∇ℓ_n` (the SDE's weighted pass).
    pub fn weight_output_grad(&mut self, weights: &[T]) {
        let (b, out) = (self.batch, self.prog.output);
        let d = self.prog.bufs[out].len();
        for row in self.grads[out][..d * b].chunks_exact_mut(b) {
            row.iter_mut().zip(&weights[..b]).for_each(|(g, &w)| *g *= w);
        }
    }

    /// The backward pass from the output gradient [`Tape::loss_grad`] wrote: every buffer's gradient, and
    /// `grad += α Σ_n ∇_θ ℓ_n` when `grad` is given (θ-shaped).
    pub fn backward(&mut self, theta: &[T], grad: Option<(&mut [T], T)>) {
        self.backward_impl(theta, grad.map(|(g, alpha)| (g, alpha, true)))
    }

    /// [`Tape::backward`] writing `grad = α Σ_n ∇_θ ℓ_n` (no zeroing pass, no read of the old values: each
    /// parameterised step overwrites its blocks, and the blocks tile θ).
    pub fn backward_into(&mut self, theta: &[T], grad: &mut [T], alpha: T) {
        debug_assert_eq!(
            self.prog.ops.iter().filter_map(|op| op.step.param_range()).map(|r| r.len()).sum::<usize>(),
            grad.len(),
            "the parameterised steps' blocks tile θ"
        );
        self.backward_impl(theta, Some((grad, alpha, false)))
    }

    /// Backward with the parameter gradient as `(grad, α, accumulate)`.
    fn backward_impl(&mut self, theta: &[T], mut grad: Option<(&mut [T], T, bool)>) {
        let b = self.batch;
        let par = self.par;
        for k in (0..self.prog.ops.len()).rev() {
            let op = &self.prog.ops[k];
            let (bx, by) = (self.prog.bufs[op.x], self.prog.bufs[op.y]);
            let need_dx = op.x != 0;
            let g = grad.as_mut().map(|(g, a, acc)| (&mut **g, *a, *acc));
            match &op.step {
                Step::Add { skip } => add_backward(&mut self.grads, op, *skip, by.len() * b),
                Step::Module(kind) => {
                    let (dy, dx) = pair(&mut self.grads, op.y, op.x);
                    let (dy, dx) = (&dy[..by.len() * b], &mut dx[..bx.len() * b]);
                    let x = &self.acts[op.x][..bx.len() * b];
                    let y = &self.acts[op.y][..by.len() * b];
                    let acc = op.acc;
                    match kind {
                        Kind::Linear(l) => l.backward(theta, x, dy, need_dx.then_some((dx, acc)), g, b, par),
                        Kind::Conv2d(c) => c.backward(
                            theta,
                            &self.cols[k],
                            dy,
                            need_dx.then_some((dx, acc, &mut self.dcol[..])),
                            g,
                            b,
                            par,
                        ),
                        _ if !need_dx => {}
                        Kind::Act(a) => pointwise::backward(*a, x, y, dy, dx, acc),
                        Kind::MaxPool2d(p) => p.max_scatter(dy, &self.argmax[k], dx, acc, b),
                        Kind::AvgPool2d(p) => p.avg_backward(dy, dx, acc, b),
                        Kind::Flatten => flatten::permute(dy, dx, bx.c, bx.hw, b, true, acc),
                        Kind::RmsNorm(r) => r.backward(y, &self.rms[k], dy, dx, acc, (bx.c, bx.hw, b)),
                        Kind::Residual(_) => unreachable!("compiled away"),
                    }
                }
            }
        }
    }

    /// The per-sample gradient of sample `n` with respect to the parameters of parameterised step `op`
    /// (its blocks in state_dict order: weight, then bias), after backward.
    pub fn per_sample_grad_into(&self, op: usize, n: usize, out: &mut [T]) {
        let o = &self.prog.ops[op];
        let b = self.batch;
        match &o.step {
            Step::Module(Kind::Linear(l)) => {
                l.per_sample_grad_into(&self.acts[o.x], &self.grads[o.y], b, n, out)
            }
            Step::Module(Kind::Conv2d(c)) => {
                c.per_sample_grad_into(&self.cols[op], &self.grads[o.y], b, n, out)
            }
            _ => {}
        }
    }

    /// Allocates the R-operator buffers on first use (the R-gradients only when `grads`; the Gauss–Newton
    /// product has none).
    fn ensure_rop(&mut self, grads: bool) {
        let r = self.rop.get_or_insert_with(|| RopBuffers {
            racts: self.acts.clone(),
            rgrads: Vec::new(),
            rcols: self.cols.clone(),
            rrms: self.rms.clone(),
        });
        if grads && r.rgrads.is_empty() {
            r.rgrads = self.grads.clone();
        }
    }

    /// The forward R-pass `R{buffer} = d/dε buffer(θ + εv)|_{ε=0}` of every buffer into `r` (after forward).
    fn r_forward(&self, theta: &[T], v: &[T], r: &mut RopBuffers<T>) {
        let b = self.batch;
        let par = self.par;
        for (k, op) in self.prog.ops.iter().enumerate() {
            let (bx, by) = (self.prog.bufs[op.x], self.prog.bufs[op.y]);
            let ny = by.len() * b;
            match &op.step {
                Step::Add { skip } => {
                    let (rx, ry) = pair(&mut r.racts, op.x, op.y);
                    ry[..ny].copy_from_slice(&rx[..ny]);
                    if *skip != 0 {
                        let (rs, ry) = pair(&mut r.racts, *skip, op.y);
                        ry[..ny].iter_mut().zip(&rs[..ny]).for_each(|(y, &s)| *y += s);
                    }
                }
                Step::Module(kind) => {
                    let (rxs, ry) = pair(&mut r.racts, op.x, op.y);
                    let ry = &mut ry[..ny];
                    let rx = (op.x != 0).then_some(&rxs[..bx.len() * b]);
                    let x = &self.acts[op.x][..bx.len() * b];
                    let y = &self.acts[op.y][..ny];
                    match kind {
                        Kind::Linear(l) => l.rop_forward(theta, v, x, rx, ry, b, par),
                        Kind::Conv2d(c) => {
                            let rcol = rx.map(|rx| {
                                c.im2col(rx, &mut r.rcols[k], b);
                                &r.rcols[k][..]
                            });
                            c.rop_forward(theta, v, &self.cols[k], rcol, ry, b, par);
                        }
                        _ if rx.is_none() => ry.iter_mut().for_each(|v| *v = T::zero()),
                        Kind::Act(a) => pointwise::rop_forward(*a, x, y, rx.unwrap(), ry),
                        Kind::MaxPool2d(p) => p.max_gather(rx.unwrap(), &self.argmax[k], ry, b),
                        Kind::AvgPool2d(p) => p.avg_forward(rx.unwrap(), ry, b),
                        Kind::Flatten => flatten::permute(rx.unwrap(), ry, bx.c, bx.hw, b, false, false),
                        Kind::RmsNorm(n) => {
                            n.rop_forward(y, &self.rms[k], rx.unwrap(), ry, &mut r.rrms[k], (bx.c, bx.hw, b))
                        }
                        Kind::Residual(_) => unreachable!("compiled away"),
                    }
                }
            }
        }
    }

    /// `out ← ∇²_f ℓ_n · R{f_n}` per sample (`out` is an output-shaped buffer, `[d_out, B]`), from the forward pass
    /// and the R-forward pass in `racts`.
    fn output_hessian_times_rf(&self, loss: Loss, racts: &[Vec<T>], out: &mut [T]) {
        let (b, o) = (self.batch, self.prog.output);
        let d = self.prog.bufs[o].c;
        let f = MatRef::from_row_major_slice(&self.acts[o][..d * b], d, b).transpose();
        let rf = MatRef::from_row_major_slice(&racts[o][..d * b], d, b).transpose();
        let rg = MatMut::from_row_major_slice_mut(&mut out[..d * b], d, b).transpose_mut();
        loss.hessian_times_into(f, rf, rg);
    }

    /// Exact Gauss–Newton-vector product on the loaded batch: `gv += α Σ_n J_nᵀ ∇²_f ℓ_n J_n v`, `J_n = ∂f_n/∂θ`
    /// (forward pass; `J_n v` by the forward R-pass; the loss Hessian at the output, [`Loss::hessian_times_into`];
    /// then the plain backward pass of that output vector, which applies `J_nᵀ` and has no second-order term).
    /// Max-pool's argmax is held fixed, as in [`Tape::hvp`]. Cost: a forward, an R-forward and a backward pass.
    pub fn ggn_vp(&mut self, theta: &[T], v: &[T], loss: Loss, gv: &mut [T], alpha: T) {
        self.forward(theta);
        self.ensure_rop(false);
        let mut r = self.rop.take().expect("ensured");
        self.r_forward(theta, v, &mut r);
        let out = self.prog.output;
        let mut g = std::mem::take(&mut self.grads[out]);
        self.output_hessian_times_rf(loss, &r.racts, &mut g);
        self.grads[out] = g;
        self.rop = Some(r);
        self.backward(theta, Some((gv, alpha)));
    }

    /// Exact Hessian-vector product on the loaded batch: `hv += α Σ_n ∇²_θ ℓ_n · v` by the R-operator
    /// (forward, loss gradient and backward are run here; max-pool's argmax is held fixed, as autograd does).
    /// Returns `Σ_n ℓ_n`.
    pub fn hvp(&mut self, theta: &[T], v: &[T], loss: Loss, hv: &mut [T], alpha: T) -> f64 {
        self.forward(theta);
        let total = self.loss_grad(loss);
        self.backward(theta, None);
        self.ensure_rop(true);
        let b = self.batch;
        let par = self.par;
        let mut r = self.rop.take().expect("ensured");
        self.r_forward(theta, v, &mut r);
        // R{∂f} = ∇²_f ℓ · R{f}.
        self.output_hessian_times_rf(loss, &r.racts, &mut r.rgrads[self.prog.output]);
        // R-backward.
        for k in (0..self.prog.ops.len()).rev() {
            let op = &self.prog.ops[k];
            let (bx, by) = (self.prog.bufs[op.x], self.prog.bufs[op.y]);
            let (nx, ny) = (bx.len() * b, by.len() * b);
            let need_dx = op.x != 0;
            match &op.step {
                Step::Add { skip } => add_backward(&mut r.rgrads, op, *skip, ny),
                Step::Module(kind) => {
                    let (rdy, rdx) = pair(&mut r.rgrads, op.y, op.x);
                    let (rdy, rdx) = (&rdy[..ny], &mut rdx[..nx]);
                    let dy = &self.grads[op.y][..ny];
                    let x = &self.acts[op.x][..nx];
                    let y = &self.acts[op.y][..ny];
                    let rx = need_dx.then_some(&r.racts[op.x][..nx]);
                    let acc = op.acc;
                    match kind {
                        Kind::Linear(l) => l.rop_backward(
                            theta,
                            v,
                            (x, rx),
                            (dy, rdy),
                            need_dx.then_some((rdx, acc)),
                            (hv, alpha),
                            b,
                            par,
                        ),
                        Kind::Conv2d(c) => c.rop_backward(
                            theta,
                            v,
                            (&self.cols[k], need_dx.then_some(&r.rcols[k][..])),
                            (dy, rdy),
                            need_dx.then_some((rdx, acc, &mut self.dcol[..])),
                            (hv, alpha),
                            b,
                            par,
                        ),
                        _ if !need_dx => {}
                        Kind::Act(a) => pointwise::rop_backward(*a, (x, y), rx, (dy, rdy), rdx, acc),
                        Kind::MaxPool2d(p) => p.max_scatter(rdy, &self.argmax[k], rdx, acc, b),
                        Kind::AvgPool2d(p) => p.avg_backward(rdy, rdx, acc, b),
                        Kind::Flatten => flatten::permute(rdy, rdx, bx.c, bx.hw, b, true, acc),
                        Kind::RmsNorm(n) => n.rop_backward(
                            (y, &r.racts[op.y][..ny]),
                            (&self.rms[k], &r.rrms[k]),
                            (dy, rdy),
                            rdx,
                            acc,
                            (bx.c, bx.hw, b),
                        ),
                        Kind::Residual(_) => unreachable!("compiled away"),
                    }
                }
            }
        }
        self.rop = Some(r);
        total
    }
}

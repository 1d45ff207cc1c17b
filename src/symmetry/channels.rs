//! Symmetries of a module tree found from its graph (DESIGN.md §5).
//!
//! - Channel rescaling: channel j of an activation tensor is followed forwards and backwards across
//!   per-channel positively homogeneous maps (relu, leaky_relu, identity, max_pool2d, avg_pool2d), flatten
//!   (channel j ↔ its H·W features) and residual adds (the add's channel j joins both summands'). A class that
//!   meets neither the network input nor its output nor any other map (tanh, rms_norm) carries the symmetry
//!   `e^λ` on every writer's `weight[j]`, `bias[j]` and `e^{−λ}` on every reader's channel-j slice:
//!   A = +1 on writers' entries, −1 on readers' (an entry both written and read cancels to 0).
//! - Scale: the parameterised modules that feed an `rms_norm` through positively homogeneous maps and adds,
//!   with no other reader of anything on the way: A = +1 on their whole blocks (weight and bias).
//!
//! Every generator here is diagonal: a sorted list of `(θ index, a_k)`.

use crate::net::{Kind, NetArch, Op, Program, Step};
use crate::real::Real;
use serde::Serialize;

/// The family of a graph symmetry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Channel rescaling (indefinite A).
    Rescale,
    /// Scale invariance of the blocks in front of a normalisation (A ≥ 0).
    Scale,
}

/// A diagonal generator found from the graph.
#[derive(Clone, Debug, PartialEq)]
pub struct DiagSymmetry {
    /// Its family.
    pub family: Family,
    /// State-dict prefix of its first writer in state_dict order.
    pub module: String,
    /// The channel (unit) of that writer; `None` for a scale symmetry.
    pub unit: Option<usize>,
    /// State-dict prefixes of the writers, in state_dict order.
    pub writers: Vec<String>,
    /// State-dict prefixes of the readers, in state_dict order.
    pub readers: Vec<String>,
    /// `(θ index, a_k)` with `a_k ≠ 0`, sorted by index.
    pub entries: Vec<(usize, f64)>,
}

impl DiagSymmetry {
    /// θ ← e^{λA}θ.
    pub fn act_in_place<T: Real>(&self, theta: &mut [T], lambda: f64) {
        for &(k, a) in &self.entries {
            theta[k] = T::from_f64(theta[k].to_f64() * (lambda * a).exp());
        }
    }
    /// `C = θᵀAθ`.
    pub fn charge<T: Real>(&self, theta: &[T]) -> f64 {
        self.entries.iter().map(|&(k, a)| a * theta[k].to_f64().powi(2)).sum()
    }
    /// `gᵀAg`.
    pub fn quad<T: Real>(&self, g: &[T]) -> f64 {
        self.charge(g)
    }
    /// `(Aθ)ᵀ g`.
    pub fn a_dot<T: Real>(&self, theta: &[T], g: &[T]) -> f64 {
        self.entries.iter().map(|&(k, a)| a * theta[k].to_f64() * g[k].to_f64()).sum()
    }
    /// Number of entries with `a_k > 0` and with `a_k < 0`.
    pub fn counts(&self) -> (usize, usize) {
        let pos = self.entries.iter().filter(|e| e.1 > 0.0).count();
        (pos, self.entries.len() - pos)
    }
    /// A short label: `rescale 0:3` or `scale 2`.
    pub fn label(&self) -> String {
        match self.unit {
            Some(u) => format!("rescale {}:{u}", self.module),
            None => format!("scale {}", self.module),
        }
    }
}

impl super::NetGenerator for DiagSymmetry {
    fn act_in_place<T: Real>(&self, theta: &mut [T], lambda: f64) {
        DiagSymmetry::act_in_place(self, theta, lambda)
    }
    fn a_times(&self, v: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; v.len()];
        for &(k, a) in &self.entries {
            out[k] = a * v[k];
        }
        out
    }
}

/// The θ entries of output channel `j` of a parameterised step (writer slice: `weight[j]`, `bias[j]`).
fn writer_entries(step: &Step, j: usize, out: &mut Vec<(usize, f64)>) {
    let (w, per, bias) = match step {
        Step::Module(Kind::Linear(l)) => (&l.weight, l.d_in, &l.bias),
        Step::Module(Kind::Conv2d(c)) => (&c.weight, c.col_rows(), &c.bias),
        _ => return,
    };
    out.extend((w.start + j * per..w.start + (j + 1) * per).map(|k| (k, 1.0)));
    if let Some(b) = bias {
        out.push((b.start + j, 1.0));
    }
}

/// The θ entries reading input feature/channel `i` of a parameterised step (reader slice: `weight[:, i]`).
fn reader_entries(step: &Step, i: usize, out: &mut Vec<(usize, f64)>) {
    match step {
        Step::Module(Kind::Linear(l)) => {
            out.extend((0..l.d_out).map(|r| (l.weight.start + r * l.d_in + i, -1.0)))
        }
        Step::Module(Kind::Conv2d(c)) => {
            let k = c.kernel[0] * c.kernel[1];
            for o in 0..c.c_out {
                let s = c.weight.start + o * c.col_rows() + i * k;
                out.extend((s..s + k).map(|q| (q, -1.0)));
            }
        }
        _ => {}
    }
}

fn merged(mut e: Vec<(usize, f64)>) -> Vec<(usize, f64)> {
    e.sort_by_key(|x| x.0);
    let mut out: Vec<(usize, f64)> = Vec::with_capacity(e.len());
    for (k, a) in e {
        match out.last_mut() {
            Some(last) if last.0 == k => last.1 += a,
            _ => out.push((k, a)),
        }
    }
    out.retain(|x| x.1 != 0.0);
    out
}

struct UnionFind(Vec<usize>);
impl UnionFind {
    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra.max(rb)] = ra.min(rb);
        }
    }
}

fn is_param(step: &Step) -> bool {
    matches!(step, Step::Module(Kind::Linear(_) | Kind::Conv2d(_)))
}

fn is_homogeneous(step: &Step) -> bool {
    match step {
        Step::Module(Kind::Act(a)) => a.is_positively_homogeneous(),
        Step::Module(Kind::MaxPool2d(_) | Kind::AvgPool2d(_) | Kind::Flatten) => true,
        Step::Add { .. } => true,
        _ => false,
    }
}

fn weight_start(step: &Step) -> usize {
    match step {
        Step::Module(Kind::Linear(l)) => l.weight.start,
        Step::Module(Kind::Conv2d(c)) => c.weight.start,
        _ => usize::MAX,
    }
}

/// Every channel-rescaling class of `arch` that is an exact symmetry, ordered by (first writer in state_dict
/// order, channel).
pub fn rescalings(arch: &NetArch) -> Vec<DiagSymmetry> {
    rescalings_of(&Program::new(arch))
}

fn rescalings_of(prog: &Program) -> Vec<DiagSymmetry> {
    let base: Vec<usize> = prog
        .bufs
        .iter()
        .scan(0, |acc, b| {
            let s = *acc;
            *acc += b.c;
            Some(s)
        })
        .collect();
    let total = base.last().map_or(0, |&s| s + prog.bufs.last().unwrap().c);
    let mut uf = UnionFind((0..total).collect());
    let mut bad = vec![false; total];
    for j in 0..prog.bufs[0].c {
        bad[base[0] + j] = true;
    }
    for j in 0..prog.bufs[prog.output].c {
        bad[base[prog.output] + j] = true;
    }
    for op in &prog.ops {
        let (bx, by) = (prog.bufs[op.x], prog.bufs[op.y]);
        match &op.step {
            Step::Module(Kind::Flatten) => {
                for c in 0..bx.c {
                    for p in 0..bx.hw {
                        uf.union(base[op.x] + c, base[op.y] + c * bx.hw + p);
                    }
                }
            }
            Step::Add { skip } => {
                for c in 0..by.c {
                    uf.union(base[op.x] + c, base[op.y] + c);
                    uf.union(base[*skip] + c, base[op.y] + c);
                }
            }
            s if is_homogeneous(s) => {
                for c in 0..by.c {
                    uf.union(base[op.x] + c, base[op.y] + c);
                }
            }
            s if is_param(s) => {}
            _ => {
                for c in 0..bx.c {
                    bad[base[op.x] + c] = true;
                }
                for c in 0..by.c {
                    bad[base[op.y] + c] = true;
                }
            }
        }
    }
    // Per class root: bad flag, writers (op, channel) and readers (op, channel).
    let mut root_bad = vec![false; total];
    for i in 0..total {
        if bad[i] {
            let r = uf.find(i);
            root_bad[r] = true;
        }
    }
    let mut writers: Vec<Vec<(usize, usize)>> = vec![Vec::new(); total];
    let mut readers: Vec<Vec<(usize, usize)>> = vec![Vec::new(); total];
    for (k, op) in prog.ops.iter().enumerate() {
        if !is_param(&op.step) {
            continue;
        }
        for j in 0..prog.bufs[op.y].c {
            let r = uf.find(base[op.y] + j);
            writers[r].push((k, j));
        }
        for i in 0..prog.bufs[op.x].c {
            let r = uf.find(base[op.x] + i);
            readers[r].push((k, i));
        }
    }
    let names = |ops: &[Op], list: &[(usize, usize)]| -> Vec<String> {
        let mut v: Vec<(usize, String)> =
            list.iter().map(|&(k, _)| (weight_start(&ops[k].step), ops[k].name.clone())).collect();
        v.sort();
        v.dedup();
        v.into_iter().map(|x| x.1).collect()
    };
    let mut out = Vec::new();
    for r in 0..total {
        if uf.0[r] != r || root_bad[r] || writers[r].is_empty() || readers[r].is_empty() {
            continue;
        }
        let mut e = Vec::new();
        for &(k, j) in &writers[r] {
            writer_entries(&prog.ops[k].step, j, &mut e);
        }
        for &(k, i) in &readers[r] {
            reader_entries(&prog.ops[k].step, i, &mut e);
        }
        let &(k0, j0) =
            writers[r].iter().min_by_key(|&&(k, j)| (weight_start(&prog.ops[k].step), j)).unwrap();
        out.push((
            (weight_start(&prog.ops[k0].step), j0),
            DiagSymmetry {
                family: Family::Rescale,
                module: prog.ops[k0].name.clone(),
                unit: Some(j0),
                writers: names(&prog.ops, &writers[r]),
                readers: names(&prog.ops, &readers[r]),
                entries: merged(e),
            },
        ));
    }
    out.sort_by_key(|x| x.0);
    out.into_iter().map(|x| x.1).filter(|s| !s.entries.is_empty()).collect()
}

/// Every scale symmetry of `arch`: for each `rms_norm`, the parameterised modules that feed it through
/// positively homogeneous maps and adds, when nothing else reads any tensor on the way.
pub fn scales(arch: &NetArch) -> Vec<DiagSymmetry> {
    let prog = Program::new(arch);
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); prog.bufs.len()];
    let mut producer = vec![usize::MAX; prog.bufs.len()];
    for (k, op) in prog.ops.iter().enumerate() {
        readers[op.x].push(k);
        if let Step::Add { skip } = op.step {
            readers[skip].push(k);
        }
        producer[op.y] = k;
    }
    let mut out = Vec::new();
    for (k, op) in prog.ops.iter().enumerate() {
        if !matches!(op.step, Step::Module(Kind::RmsNorm(_))) {
            continue;
        }
        // Walk back from the normaliser's input.
        let (mut stack, mut visited_ops, mut writers, mut ok) =
            (vec![(op.x, k)], Vec::new(), Vec::new(), true);
        while let Some((buf, consumer)) = stack.pop() {
            if buf == 0 || readers[buf].iter().any(|&r| r != consumer) {
                ok = false;
                break;
            }
            let p = producer[buf];
            let pop = &prog.ops[p];
            if is_param(&pop.step) {
                writers.push(p);
            } else if is_homogeneous(&pop.step) {
                visited_ops.push(p);
                stack.push((pop.x, p));
                if let Step::Add { skip } = pop.step {
                    stack.push((skip, p));
                }
            } else {
                ok = false;
                break;
            }
        }
        if !ok || writers.is_empty() {
            continue;
        }
        writers.sort_by_key(|&w| weight_start(&prog.ops[w].step));
        writers.dedup();
        let mut e = Vec::new();
        for &w in &writers {
            if let Some(r) = prog.ops[w].step.param_range() {
                e.extend(r.map(|i| (i, 1.0)));
            }
        }
        out.push(DiagSymmetry {
            family: Family::Scale,
            module: prog.ops[writers[0]].name.clone(),
            unit: None,
            writers: writers.iter().map(|&w| prog.ops[w].name.clone()).collect(),
            readers: Vec::new(),
            entries: merged(e),
        });
    }
    out
}

/// Rescalings then scale symmetries.
pub fn enumerate(arch: &NetArch) -> Vec<DiagSymmetry> {
    let mut v = rescalings(arch);
    v.extend(scales(arch));
    v
}

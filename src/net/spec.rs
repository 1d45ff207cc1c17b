//! Architecture files (`ARCH.toml`, DESIGN.md §5): the module list of a PyTorch `nn.Sequential` with PyTorch's
//! own argument names, resolved into a tree of [`Node`]s with per-sample shapes and the θ layout.
//!
//! Names: an entry's `name` is the state_dict prefix of its parameters; by default its index in its list, and
//! `{name}.body.{i}` inside a residual entry's body. θ holds every parameterised module's `weight` then `bias`
//! in state_dict order (depth first, bodies in place), each tensor in PyTorch memory layout (row-major).

use super::modules::{Conv2d, Linear, Pool, RmsNorm};
use crate::error::{Error, Result};
use crate::model::Activation;
use std::ops::Range;
use toml::Value;

/// The kind of a module with its resolved arguments (shapes and θ offsets included).
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// `nn.Linear`.
    Linear(Linear),
    /// `nn.Conv2d` (groups = 1, zero padding).
    Conv2d(Conv2d),
    /// An elementwise activation (`relu`, `leaky_relu`, `tanh`, `identity`).
    Act(Activation),
    /// `nn.MaxPool2d` (no padding).
    MaxPool2d(Pool),
    /// `nn.AvgPool2d` (no padding).
    AvgPool2d(Pool),
    /// `nn.Flatten`: `[C, H, W] → [C·H·W]` in row-major (channel-first) order.
    Flatten,
    /// Parameter-free RMS normalisation over the whole per-sample tensor.
    RmsNorm(RmsNorm),
    /// `y = x + body(x)`.
    Residual(Vec<Node>),
}

/// One module of the tree with its name and per-sample shapes (`[d]` or `[C, H, W]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// State-dict prefix (`"0"`, `"2.body.1"`, …).
    pub name: String,
    /// Kind and arguments.
    pub kind: Kind,
    /// Per-sample input shape.
    pub input: Vec<usize>,
    /// Per-sample output shape.
    pub output: Vec<usize>,
}

impl Node {
    /// The kind's name as written in architecture files.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            Kind::Linear(_) => "linear",
            Kind::Conv2d(_) => "conv2d",
            Kind::Act(Activation::Identity) => "identity",
            Kind::Act(Activation::Relu) => "relu",
            Kind::Act(Activation::LeakyRelu { .. }) => "leaky_relu",
            Kind::Act(Activation::Tanh) => "tanh",
            Kind::MaxPool2d(_) => "max_pool2d",
            Kind::AvgPool2d(_) => "avg_pool2d",
            Kind::Flatten => "flatten",
            Kind::RmsNorm(_) => "rms_norm",
            Kind::Residual(_) => "residual",
        }
    }
}

/// A named parameter tensor of θ.
#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    /// State-dict name (`"0.weight"`).
    pub name: String,
    /// Its range in θ.
    pub range: Range<usize>,
    /// Its PyTorch shape.
    pub shape: Vec<usize>,
}

/// A resolved architecture: the module tree, the per-sample input shape and the θ layout.
#[derive(Clone, Debug, PartialEq)]
pub struct NetArch {
    /// Per-sample input shape (`[d]` or `[C, H, W]`).
    pub input: Vec<usize>,
    /// The top-level modules in order.
    pub nodes: Vec<Node>,
    /// Parameter tensors in state_dict order.
    pub blocks: Vec<Block>,
    /// The architecture file's text in canonical form (what [`NetArch::to_toml`] writes).
    canonical: String,
}

/// The module kinds an architecture file may name.
pub const KINDS: &str =
    "linear, conv2d, relu, leaky_relu, tanh, identity, max_pool2d, avg_pool2d, flatten, rms_norm, residual";

fn keys_for(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "linear" => &["in_features", "out_features", "bias"],
        "conv2d" => &["in_channels", "out_channels", "kernel_size", "stride", "padding", "bias", "groups"],
        "relu" | "tanh" | "identity" | "flatten" => &[],
        "leaky_relu" => &["negative_slope"],
        "max_pool2d" | "avg_pool2d" => &["kernel_size", "stride"],
        "rms_norm" => &["eps", "normalized_shape"],
        "residual" => &["body"],
        _ => return None,
    })
}

fn cfg(msg: String) -> Error {
    Error::Config(msg)
}

fn get_usize(t: &toml::Table, key: &str, what: &str) -> Result<Option<usize>> {
    match t.get(key) {
        None => Ok(None),
        Some(Value::Integer(i)) if *i >= 0 => Ok(Some(*i as usize)),
        Some(v) => Err(cfg(format!("{what}: `{key}` must be a non-negative integer, got {v}"))),
    }
}

fn need_usize(t: &toml::Table, key: &str, what: &str) -> Result<usize> {
    get_usize(t, key, what)?.ok_or_else(|| cfg(format!("{what}: missing `{key}`")))
}

/// An int or a pair `[a, b]` (PyTorch's `_pair`).
fn get_pair(t: &toml::Table, key: &str, what: &str) -> Result<Option<[usize; 2]>> {
    match t.get(key) {
        None => Ok(None),
        Some(Value::Integer(i)) if *i >= 0 => Ok(Some([*i as usize; 2])),
        Some(Value::Array(a)) if a.len() == 2 => {
            let mut out = [0; 2];
            for (o, v) in out.iter_mut().zip(a) {
                match v {
                    Value::Integer(i) if *i >= 0 => *o = *i as usize,
                    _ => {
                        return Err(cfg(format!("{what}: `{key}` must be an integer or [int, int], got {v}")))
                    }
                }
            }
            Ok(Some(out))
        }
        Some(v) => Err(cfg(format!("{what}: `{key}` must be an integer or [int, int], got {v}"))),
    }
}

fn get_bool(t: &toml::Table, key: &str, what: &str, default: bool) -> Result<bool> {
    match t.get(key) {
        None => Ok(default),
        Some(Value::Boolean(b)) => Ok(*b),
        Some(v) => Err(cfg(format!("{what}: `{key}` must be true or false, got {v}"))),
    }
}

fn get_f64(t: &toml::Table, key: &str, what: &str, default: f64) -> Result<f64> {
    let v = match t.get(key) {
        None => return Ok(default),
        Some(Value::Float(f)) => *f,
        Some(Value::Integer(i)) => *i as f64,
        Some(v) => return Err(cfg(format!("{what}: `{key}` must be a number, got {v}"))),
    };
    if !v.is_finite() {
        return Err(cfg(format!("{what}: `{key}` must be finite, got {v}")));
    }
    Ok(v)
}

fn shape_str(s: &[usize]) -> String {
    format!("{s:?}")
}

/// Resolves one list of module tables (top level or a body) starting from per-sample shape `shape`.
fn resolve_list(
    list: &[Value],
    prefix: &str,
    mut shape: Vec<usize>,
    blocks: &mut Vec<Block>,
    offset: &mut usize,
) -> Result<(Vec<Node>, Vec<usize>)> {
    let mut nodes = Vec::with_capacity(list.len());
    for (i, v) in list.iter().enumerate() {
        let Value::Table(t) = v else {
            return Err(cfg(format!("module {prefix}{i}: each entry of `layers` must be a table, got {v}")));
        };
        let name = match t.get("name") {
            None => format!("{prefix}{i}"),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(v) => {
                return Err(cfg(format!("module {prefix}{i}: `name` must be a non-empty string, got {v}")))
            }
        };
        let kind = match t.get("kind") {
            Some(Value::String(s)) => s.as_str(),
            Some(v) => return Err(cfg(format!("module `{name}`: `kind` must be a string, got {v}"))),
            None => return Err(cfg(format!("module `{name}`: missing `kind`; known kinds: {KINDS}"))),
        };
        let what = format!("module `{name}` ({kind})");
        let allowed = keys_for(kind).ok_or_else(|| Error::Unknown {
            kind: "module kind",
            name: kind.to_string(),
            expected: KINDS.into(),
        })?;
        for key in t.keys() {
            if key != "kind" && key != "name" && !allowed.contains(&key.as_str()) {
                let known = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
                return Err(cfg(format!("{what}: unknown argument `{key}`; its arguments are: {known}")));
            }
        }
        let image = |shape: &[usize]| -> Result<[usize; 3]> {
            match shape {
                [c, h, w] => Ok([*c, *h, *w]),
                _ => Err(cfg(format!(
                    "{what} needs an image input [C, H, W], but its input has shape {}",
                    shape_str(shape)
                ))),
            }
        };
        let mut push_block = |suffix: &str, shape: Vec<usize>| -> Range<usize> {
            let len: usize = shape.iter().product();
            let range = *offset..*offset + len;
            *offset += len;
            blocks.push(Block { name: format!("{name}.{suffix}"), range: range.clone(), shape });
            range
        };
        let (kind, out) = match kind {
            "linear" => {
                let d_in = need_usize(t, "in_features", &what)?;
                let d_out = need_usize(t, "out_features", &what)?;
                if d_in == 0 || d_out == 0 {
                    return Err(cfg(format!("{what}: in_features and out_features must be positive")));
                }
                if shape != [d_in] {
                    return Err(Error::ShapeMismatch {
                        what: format!("input of {what} (in_features = {d_in}; add a flatten before it?)"),
                        expected: vec![d_in],
                        got: shape.clone(),
                    });
                }
                let bias = get_bool(t, "bias", &what, true)?;
                let weight = push_block("weight", vec![d_out, d_in]);
                let bias = bias.then(|| push_block("bias", vec![d_out]));
                (Kind::Linear(Linear { d_in, d_out, weight, bias }), vec![d_out])
            }
            "conv2d" => {
                let c_in = need_usize(t, "in_channels", &what)?;
                let c_out = need_usize(t, "out_channels", &what)?;
                if c_in == 0 || c_out == 0 {
                    return Err(cfg(format!("{what}: in_channels and out_channels must be positive")));
                }
                if let Some(g) = get_usize(t, "groups", &what)? {
                    if g != 1 {
                        return Err(cfg(format!("{what}: groups = {g} is not supported (only groups = 1)")));
                    }
                }
                let [c, h, w] = image(&shape)?;
                if c != c_in {
                    return Err(Error::ShapeMismatch {
                        what: format!("input channels of {what} (in_channels = {c_in})"),
                        expected: vec![c_in, h, w],
                        got: shape.clone(),
                    });
                }
                let k = get_pair(t, "kernel_size", &what)?
                    .ok_or_else(|| cfg(format!("{what}: missing `kernel_size`")))?;
                let s = get_pair(t, "stride", &what)?.unwrap_or([1, 1]);
                let p = get_pair(t, "padding", &what)?.unwrap_or([0, 0]);
                if k.contains(&0) || s.contains(&0) {
                    return Err(cfg(format!("{what}: kernel_size and stride must be positive")));
                }
                let (hp, wp) = (h + 2 * p[0], w + 2 * p[1]);
                if k[0] > hp || k[1] > wp {
                    return Err(cfg(format!(
                        "{what}: kernel {k:?} is larger than its padded input {hp}×{wp} (input {h}×{w}, padding {p:?})"
                    )));
                }
                let (ho, wo) = ((hp - k[0]) / s[0] + 1, (wp - k[1]) / s[1] + 1);
                let bias = get_bool(t, "bias", &what, true)?;
                let weight = push_block("weight", vec![c_out, c_in, k[0], k[1]]);
                let bias = bias.then(|| push_block("bias", vec![c_out]));
                let conv = Conv2d {
                    c_in,
                    c_out,
                    kernel: k,
                    stride: s,
                    padding: p,
                    h,
                    w,
                    h_out: ho,
                    w_out: wo,
                    weight,
                    bias,
                };
                (Kind::Conv2d(conv), vec![c_out, ho, wo])
            }
            "relu" => (Kind::Act(Activation::Relu), shape.clone()),
            "tanh" => (Kind::Act(Activation::Tanh), shape.clone()),
            "identity" => (Kind::Act(Activation::Identity), shape.clone()),
            "leaky_relu" => {
                let alpha = get_f64(t, "negative_slope", &what, 0.01)?;
                (Kind::Act(Activation::LeakyRelu { alpha }), shape.clone())
            }
            "max_pool2d" | "avg_pool2d" => {
                let [c, h, w] = image(&shape)?;
                let k = get_pair(t, "kernel_size", &what)?
                    .ok_or_else(|| cfg(format!("{what}: missing `kernel_size`")))?;
                let s = get_pair(t, "stride", &what)?.unwrap_or(k);
                if k.contains(&0) || s.contains(&0) {
                    return Err(cfg(format!("{what}: kernel_size and stride must be positive")));
                }
                if k[0] > h || k[1] > w {
                    return Err(cfg(format!("{what}: kernel {k:?} is larger than its input {h}×{w}")));
                }
                let (ho, wo) = ((h - k[0]) / s[0] + 1, (w - k[1]) / s[1] + 1);
                let pool = Pool { c, h, w, kernel: k, stride: s, h_out: ho, w_out: wo };
                let out = vec![c, ho, wo];
                (if kind == "max_pool2d" { Kind::MaxPool2d(pool) } else { Kind::AvgPool2d(pool) }, out)
            }
            "flatten" => (Kind::Flatten, vec![shape.iter().product()]),
            "rms_norm" => {
                let eps = get_f64(t, "eps", &what, 0.0)?;
                if eps < 0.0 {
                    return Err(cfg(format!("{what}: eps must be ≥ 0, got {eps}")));
                }
                if let Some(ns) = t.get("normalized_shape") {
                    let ok = match ns {
                        Value::Integer(i) => shape.len() == 1 && shape[0] as i64 == *i,
                        Value::Array(a) => {
                            a.len() == shape.len()
                                && a.iter().zip(&shape).all(|(v, &d)| v.as_integer() == Some(d as i64))
                        }
                        _ => false,
                    };
                    if !ok {
                        return Err(cfg(format!(
                            "{what}: normalized_shape = {ns} must equal the whole per-sample shape {} \
                             (rms_norm normalises each sample over all its features)",
                            shape_str(&shape)
                        )));
                    }
                }
                (Kind::RmsNorm(RmsNorm { eps }), shape.clone())
            }
            "residual" => {
                let body = match t.get("body") {
                    Some(Value::Array(a)) if !a.is_empty() => a,
                    _ => return Err(cfg(format!("{what}: needs a non-empty `body` list ([[layers.body]])"))),
                };
                let (body, out) =
                    resolve_list(body, &format!("{name}.body."), shape.clone(), blocks, offset)?;
                if out != shape {
                    return Err(Error::ShapeMismatch {
                        what: format!("output of the body of {what} (must equal its input for x + body(x))"),
                        expected: shape.clone(),
                        got: out,
                    });
                }
                (Kind::Residual(body), shape.clone())
            }
            _ => unreachable!("kinds are checked by keys_for"),
        };
        nodes.push(Node { name, kind, input: shape, output: out.clone() });
        shape = out;
    }
    Ok((nodes, shape))
}

impl NetArch {
    /// Parses an architecture file's text (DESIGN.md §5).
    pub fn parse(text: &str) -> Result<Self> {
        let table: toml::Table =
            toml::from_str(text).map_err(|e| cfg(format!("architecture file: {}", e.message())))?;
        Self::from_table(&table)
    }

    /// Reads and parses an architecture file.
    pub fn load(path: &std::path::Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Resolves an architecture from a TOML table with `input` and `layers`.
    pub fn from_table(table: &toml::Table) -> Result<Self> {
        for key in table.keys() {
            if key != "input" && key != "layers" {
                return Err(cfg(format!("architecture: unknown key `{key}`; expected `input` and `layers`")));
            }
        }
        let input: Vec<usize> = match table.get("input") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::Integer(i) if *i > 0 => Ok(*i as usize),
                    _ => {
                        Err(cfg(format!("architecture: `input` entries must be positive integers, got {v}")))
                    }
                })
                .collect::<Result<_>>()?,
            Some(v) => return Err(cfg(format!("architecture: `input` must be [d] or [C, H, W], got {v}"))),
            None => return Err(cfg("architecture: missing `input` ([d] or [C, H, W])".into())),
        };
        if input.len() != 1 && input.len() != 3 {
            return Err(cfg(format!("architecture: `input` must be [d] or [C, H, W], got {input:?}")));
        }
        let layers = match table.get("layers") {
            Some(Value::Array(a)) if !a.is_empty() => a,
            _ => return Err(cfg("architecture: needs a non-empty `layers` list ([[layers]])".into())),
        };
        let mut blocks = Vec::new();
        let mut offset = 0;
        let (nodes, out) = resolve_list(layers, "", input.clone(), &mut blocks, &mut offset)?;
        if out.len() != 1 {
            return Err(cfg(format!(
                "architecture: the network output has per-sample shape {out:?}; the loss needs a vector [d] \
                 (end with flatten and linear)"
            )));
        }
        let mut names = std::collections::HashSet::new();
        for b in &blocks {
            if !names.insert(b.name.as_str()) {
                return Err(cfg(format!("architecture: two modules share the parameter name `{}`", b.name)));
            }
        }
        let canonical = toml::to_string(table).map_err(|e| cfg(format!("architecture: {e}")))?;
        Ok(Self { input, nodes, blocks, canonical })
    }

    /// The architecture in the file format (for `__metadata__["noether.arch"]` and run folders).
    pub fn to_toml(&self) -> &str {
        &self.canonical
    }

    /// Total parameter count P.
    pub fn n_params(&self) -> usize {
        self.blocks.last().map_or(0, |b| b.range.end)
    }

    /// Per-sample output shape `[d_out]`.
    pub fn output(&self) -> &[usize] {
        &self.nodes.last().expect("an architecture has modules").output
    }

    /// Output width d_out.
    pub fn d_out(&self) -> usize {
        self.output()[0]
    }

    /// Number of input features (`C·H·W` or d).
    pub fn input_len(&self) -> usize {
        self.input.iter().product()
    }

    /// Every module of the tree, depth first (a residual before its body), with its depth.
    pub fn walk(&self) -> Vec<&Node> {
        fn rec<'a>(nodes: &'a [Node], out: &mut Vec<&'a Node>) {
            for n in nodes {
                out.push(n);
                if let Kind::Residual(body) = &n.kind {
                    rec(body, out);
                }
            }
        }
        let mut out = Vec::new();
        rec(&self.nodes, &mut out);
        out
    }

    /// The block named `name`.
    pub fn block(&self, name: &str) -> Option<&Block> {
        self.blocks.iter().find(|b| b.name == name)
    }

    /// The architecture of a dense chain (`Architecture`): `linear` modules named `layers.{l}` (the names the
    /// dense-chain files use), each followed by `rms_norm` where the layer normalises and by its activation.
    pub fn from_dense(arch: &crate::model::Architecture) -> Result<Self> {
        let names: Vec<String> = (0..arch.n_layers()).map(|l| format!("layers.{l}")).collect();
        Self::from_dense_named(arch, &names)
    }

    /// [`NetArch::from_dense`] with the linear modules named `names[l]` (the tensor stems of a file that
    /// does not use `layers.{l}`, e.g. `0`, `2`, `4` of an `nn.Sequential`); one name per layer.
    pub fn from_dense_named(arch: &crate::model::Architecture, names: &[String]) -> Result<Self> {
        if names.len() != arch.n_layers() {
            return Err(cfg(format!("{} module names for {} dense layers", names.len(), arch.n_layers())));
        }
        let mut text = format!("input = [{}]\n", arch.d_in());
        for (l, ly) in arch.layers.iter().enumerate() {
            text += &format!(
                "[[layers]]\nkind = \"linear\"\nname = {:?}\nin_features = {}\nout_features = {}\nbias = {}\n",
                names[l], ly.d_in, ly.d_out, ly.bias
            );
            if ly.norm {
                text += &format!("[[layers]]\nkind = \"rms_norm\"\nname = \"norm.{l}\"\n");
            }
            let act = match ly.activation {
                Activation::Identity => "kind = \"identity\"".to_string(),
                Activation::Relu => "kind = \"relu\"".to_string(),
                Activation::Tanh => "kind = \"tanh\"".to_string(),
                Activation::LeakyRelu { alpha } => {
                    format!("kind = \"leaky_relu\"\nnegative_slope = {alpha:?}")
                }
            };
            text += &format!("[[layers]]\n{act}\nname = \"act.{l}\"\n");
        }
        Self::parse(&text)
    }

    /// The dense chain this architecture is, with its linear modules' names, when it is exactly what
    /// [`NetArch::from_dense_named`] writes for some [`crate::model::Architecture`] (`linear`, an optional
    /// `rms_norm` with ε = 0, one activation, per layer): the files noether
    /// writes for dense chains. `None` for any other tree.
    pub fn dense_chain(&self) -> Option<(crate::model::Architecture, Vec<String>)> {
        let mut dims = vec![*self.input.first()?];
        if self.input.len() != 1 {
            return None;
        }
        let (mut acts, mut bias, mut norm, mut names) = (vec![], vec![], vec![], vec![]);
        let mut nodes = self.nodes.iter().peekable();
        while let Some(n) = nodes.next() {
            let Kind::Linear(lin) = &n.kind else { return None };
            dims.push(lin.d_out);
            bias.push(lin.bias.is_some());
            names.push(n.name.clone());
            let normed = matches!(nodes.peek().map(|n| &n.kind), Some(Kind::RmsNorm(r)) if r.eps == 0.0);
            if normed {
                nodes.next();
            }
            norm.push(normed);
            acts.push(match nodes.peek().map(|n| &n.kind) {
                Some(Kind::Act(a)) => {
                    let a = *a;
                    nodes.next();
                    a
                }
                _ => Activation::Identity,
            });
        }
        let arch = crate::model::Architecture::new(&dims, &acts, &bias, &norm).ok()?;
        let again = Self::from_dense_named(&arch, &names).ok()?;
        (again.to_toml() == self.to_toml()).then_some((arch, names))
    }
}

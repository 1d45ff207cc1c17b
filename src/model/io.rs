//! Model files in safetensors: `layers.{l}.weight` `[out, in]` and `layers.{l}.bias` `[out]`, or the names of a
//! PyTorch `nn.Sequential` of `Linear` layers (`0.weight`, `2.weight`, …, optionally under a prefix such as
//! `net.`). Layers are taken in index order.

use super::{Activation, Architecture, Layer, Model};
use crate::error::{Error, Result};
use crate::real::Real;
use crate::tensor_io::{self, Tensor};
use std::path::Path;

/// The `(stem, index)` of every `*.{index}.weight` tensor, sorted by index.
fn weight_stems(names: &[String]) -> Vec<(String, usize)> {
    let mut v: Vec<(String, usize)> = names
        .iter()
        .filter_map(|n| {
            let stem = n.strip_suffix(".weight")?;
            let idx = stem.rsplit('.').next()?.parse::<usize>().ok()?;
            Some((stem.to_string(), idx))
        })
        .collect();
    v.sort_by_key(|(_, i)| *i);
    v
}

/// Reads a weight or bias, which must be stored as a float (an integer tensor, e.g. quantised weights, would
/// be read without its scale).
fn float_tensor(st: &safetensors::SafeTensors<'_>, name: &str, path: &Path) -> Result<Tensor> {
    let t = tensor_io::get(st, name, path)?;
    if !matches!(t.dtype, safetensors::Dtype::F64 | safetensors::Dtype::F32) {
        return Err(Error::Safetensors {
            file: path.display().to_string(),
            reason: format!("tensor `{name}` is {:?}; model weights must be float32 or float64", t.dtype),
        });
    }
    Ok(t)
}

/// Reads weights and biases in layer order: `(weight, bias)` tensors. Every tensor of the file must be one of
/// them ([`Error::UnusedTensors`] otherwise), and the layer indices must be distinct.
fn read_layers(path: &Path) -> Result<Vec<(String, Tensor, Option<Tensor>)>> {
    let bytes = tensor_io::read_file(path)?;
    let st = tensor_io::parse(&bytes, path)?;
    let names: Vec<String> = st.names().into_iter().map(|s| s.to_string()).collect();
    let stems = weight_stems(&names);
    if stems.is_empty() {
        return Err(Error::MissingTensor {
            name: "layers.0.weight (or 0.weight)".into(),
            file: path.display().to_string(),
            found: tensor_io::names(&st),
        });
    }
    // A conv or residual state_dict (a weight of rank ≠ 2) needs its architecture, before anything else.
    for (stem, _) in &stems {
        if let Ok(v) = st.tensor(&format!("{stem}.weight")) {
            if v.shape().len() != 2 {
                return Err(Error::Data(format!(
                    "tensor `{stem}.weight` in {} has shape {:?} (rank {}); a dense layer's weight is [out, in] \
                     (rank 2); for conv or residual nets give the architecture with --arch ARCH.toml",
                    path.display(),
                    v.shape(),
                    v.shape().len()
                )));
            }
        }
    }
    if let Some(w) = stems.windows(2).find(|w| w[0].1 == w[1].1) {
        return Err(Error::Config(format!(
            "{}: `{}.weight` and `{}.weight` both claim layer index {}; a model file holds one chain of layers",
            path.display(),
            w[0].0,
            w[1].0,
            w[0].1
        )));
    }
    let mut used = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (stem, _) in stems {
        let wname = format!("{stem}.weight");
        let w = float_tensor(&st, &wname, path)?;
        if w.shape.len() != 2 {
            return Err(Error::Data(format!(
                "tensor `{stem}.weight` in {} has shape {:?} (rank {}); a dense layer's weight is [out, in] \
                 (rank 2); for conv or residual nets give the architecture with --arch ARCH.toml",
                path.display(),
                w.shape,
                w.shape.len()
            )));
        }
        let bname = format!("{stem}.bias");
        let b = if names.contains(&bname) { Some(float_tensor(&st, &bname, path)?) } else { None };
        if let Some(b) = &b {
            if b.shape != [w.shape[0]] {
                return Err(Error::shape(
                    format!("tensor `{bname}` (must be [out] = [{}])", w.shape[0]),
                    &[w.shape[0]],
                    &b.shape,
                ));
            }
        }
        used.insert(wname);
        used.insert(bname);
        out.push((stem, w, b));
    }
    let mut unused: Vec<&String> = names.iter().filter(|n| !used.contains(*n)).collect();
    if !unused.is_empty() {
        unused.sort();
        return Err(Error::UnusedTensors {
            file: path.display().to_string(),
            unused: unused.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
        });
    }
    Ok(out)
}

/// Loads a model whose hidden layers use `hidden` and whose last layer is linear; widths and biases come from
/// the file. Consecutive layers must chain (`in` of layer l+1 = `out` of layer l).
pub fn load_safetensors<T: Real>(path: &Path, hidden: Activation) -> Result<Model<T>> {
    let layers = read_layers(path)?;
    let n = layers.len();
    let arch = Architecture::from_layers(
        layers
            .iter()
            .enumerate()
            .map(|(l, (_, w, b))| Layer {
                d_in: w.shape[1],
                d_out: w.shape[0],
                bias: b.is_some(),
                norm: false,
                activation: if l + 1 == n { Activation::Identity } else { hidden },
            })
            .collect(),
    );
    for l in 1..n {
        if arch.layers[l].d_in != arch.layers[l - 1].d_out {
            return Err(Error::shape(
                format!("`{}.weight` input width (layers do not chain)", layers[l].0),
                &[arch.layers[l].d_out, arch.layers[l - 1].d_out],
                &layers[l].1.shape,
            ));
        }
    }
    if let Some((stem, w, _)) = layers.iter().find(|(_, w, _)| w.shape.contains(&0)) {
        return Err(Error::Config(format!(
            "{}: `{stem}.weight` has shape {:?}: a layer of width zero computes nothing; remove it",
            path.display(),
            w.shape
        )));
    }
    let mut model = Model::zeros(arch);
    fill(&mut model, &layers)?;
    Ok(model)
}

/// Overwrites the parameters of `model` with those of a file, checking every shape against the architecture.
pub fn load_params_into<T: Real>(model: &mut Model<T>, path: &Path) -> Result<()> {
    let layers = read_layers(path)?;
    if layers.len() != model.arch.n_layers() {
        return Err(Error::Config(format!(
            "{} holds {} layers but the model has {}",
            path.display(),
            layers.len(),
            model.arch.n_layers()
        )));
    }
    for (l, (stem, w, b)) in layers.iter().enumerate() {
        let ly = model.arch.layers[l];
        if w.shape != [ly.d_out, ly.d_in] {
            return Err(Error::shape(format!("tensor `{stem}.weight`"), &[ly.d_out, ly.d_in], &w.shape));
        }
        if b.is_some() != ly.bias {
            return Err(Error::Config(format!(
                "layer {l}: the model {} a bias but {} {}",
                if ly.bias { "has" } else { "has no" },
                path.display(),
                if b.is_some() { "holds one" } else { "holds none" }
            )));
        }
    }
    fill(model, &layers)
}

fn fill<T: Real>(model: &mut Model<T>, layers: &[(String, Tensor, Option<Tensor>)]) -> Result<()> {
    for (l, (stem, w, b)) in layers.iter().enumerate() {
        let wr = model.arch.weight_range(l);
        for (dst, &v) in model.params[wr].iter_mut().zip(&w.data) {
            *dst = T::from_f64(v);
        }
        if let Some(b) = b {
            let br = model.arch.bias_range(l);
            for (dst, &v) in model.params[br].iter_mut().zip(&b.data) {
                *dst = T::from_f64(v);
            }
        }
        let _ = stem;
    }
    model.check_finite()
}

/// The tensors of a model as `(name, dtype, shape, bytes)`, in precision `U`.
pub fn tensors_to_safetensors_bytes<T: Real, U: Real>(
    model: &Model<T>,
) -> Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    model
        .arch
        .tensor_layout()
        .into_iter()
        .map(|(name, r, shape)| {
            let v: Vec<U> = model.params[r].iter().map(|x| U::from_f64(x.to_f64())).collect();
            (name, U::DTYPE, shape, U::to_le_bytes_vec(&v))
        })
        .collect()
}

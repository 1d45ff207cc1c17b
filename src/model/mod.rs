//! Chains of dense layers `z_l = W_l h_{l−1} + b_l`, optional parameter-free RMS normalisation
//! `u_l = z_l / rms(z_l)`, and `h_l = φ_l(u_l)` (or `φ_l(z_l)` without normalisation).
//!
//! Parameters live in one flat vector θ, layer by layer: `W_l` row-major `[out, in]`, then `b_l` (if any).
//! This is the flattening order of `shared/reference/*/case.json` and of PyTorch's `nn.Linear`.

mod activation;
mod fused;
mod init;
mod io;
mod linear_chain;
mod spec;

pub use activation::Activation;
pub use fused::{SmallBatchStep, FUSED_MAX_BATCH};
pub use init::Init;
pub use io::{load_params_into, load_safetensors, tensors_to_safetensors_bytes};
pub use linear_chain::{gram_step_fmas, layered_step_fmas, LinearChainStep};
pub use spec::{Flags, ModelSpec};

use crate::error::{Error, Result};
use crate::real::Real;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// One dense layer of a chain: shapes, bias, normalisation and activation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    /// Input width.
    pub d_in: usize,
    /// Output width.
    pub d_out: usize,
    /// Whether the layer has a bias `b_l`.
    pub bias: bool,
    /// Whether the pre-activation is RMS-normalised per sample, `u = z / √(mean_j z_j²)`, before φ.
    /// This makes `(W_l, b_l)` scale invariant.
    pub norm: bool,
    /// The activation φ applied after the (optional) normalisation.
    pub activation: Activation,
}

/// The shape of a dense chain and its parameter layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Architecture {
    /// The layers in order.
    pub layers: Vec<Layer>,
    offsets: Vec<usize>,
}

impl Architecture {
    /// A chain with widths `dims = [d_0, …, d_L]` and per-layer activation, bias and normalisation.
    pub fn new(dims: &[usize], activations: &[Activation], bias: &[bool], norm: &[bool]) -> Result<Self> {
        let n = dims.len().saturating_sub(1);
        if n == 0 {
            return Err(Error::Config(format!(
                "a model needs at least two widths (input and output), got {dims:?}"
            )));
        }
        if let Some(i) = dims.iter().position(|&d| d == 0) {
            return Err(Error::Config(format!("width {i} of {dims:?} is zero")));
        }
        for (what, len) in
            [("activations", activations.len()), ("bias flags", bias.len()), ("norm flags", norm.len())]
        {
            if len != n {
                return Err(Error::Config(format!("{n} layers but {len} {what}")));
            }
        }
        let layers = (0..n)
            .map(|l| Layer {
                d_in: dims[l],
                d_out: dims[l + 1],
                bias: bias[l],
                norm: norm[l],
                activation: activations[l],
            })
            .collect();
        Ok(Self::from_layers(layers))
    }

    /// An architecture from explicit layers (widths must chain).
    pub fn from_layers(layers: Vec<Layer>) -> Self {
        let mut offsets = Vec::with_capacity(layers.len() + 1);
        let mut off = 0;
        for layer in &layers {
            offsets.push(off);
            off += layer.d_in * layer.d_out + if layer.bias { layer.d_out } else { 0 };
        }
        offsets.push(off);
        Self { layers, offsets }
    }

    /// Checks that the widths chain (`d_out` of layer l equals `d_in` of layer l+1).
    pub fn validate(&self) -> Result<()> {
        if let Some((l, ly)) = self.layers.iter().enumerate().find(|(_, ly)| ly.d_in == 0 || ly.d_out == 0) {
            return Err(Error::Config(format!(
                "layer {l} is [out, in] = [{}, {}]: a layer of width zero computes nothing; remove it",
                ly.d_out, ly.d_in
            )));
        }
        for l in 1..self.layers.len() {
            if self.layers[l].d_in != self.layers[l - 1].d_out {
                return Err(Error::shape(
                    format!("layer {l} input (layers do not chain)"),
                    &[self.layers[l - 1].d_out],
                    &[self.layers[l].d_in],
                ));
            }
        }
        Ok(())
    }

    /// A chain with the same activation on every hidden layer, a linear last layer, one bias flag.
    pub fn mlp(dims: &[usize], hidden: Activation, bias: bool) -> Result<Self> {
        let n = dims.len().saturating_sub(1);
        let mut acts = vec![hidden; n];
        if let Some(last) = acts.last_mut() {
            *last = Activation::Identity;
        }
        Self::new(dims, &acts, &vec![bias; n], &vec![false; n])
    }

    /// Number of layers L.
    pub fn n_layers(&self) -> usize {
        self.layers.len()
    }
    /// Total parameter count P.
    pub fn n_params(&self) -> usize {
        *self.offsets.last().unwrap_or(&0)
    }
    /// Input width d_0.
    pub fn d_in(&self) -> usize {
        self.layers[0].d_in
    }
    /// Output width d_L.
    pub fn d_out(&self) -> usize {
        self.layers[self.layers.len() - 1].d_out
    }
    /// Widths `[d_0, …, d_L]`.
    pub fn dims(&self) -> Vec<usize> {
        std::iter::once(self.d_in()).chain(self.layers.iter().map(|l| l.d_out)).collect()
    }
    /// Largest width, for workspace sizing.
    pub fn max_width(&self) -> usize {
        self.dims().into_iter().max().unwrap_or(0)
    }
    /// Range of θ holding `W_l` (row-major `[out, in]`).
    pub fn weight_range(&self, l: usize) -> Range<usize> {
        let o = self.offsets[l];
        o..o + self.layers[l].d_in * self.layers[l].d_out
    }
    /// Range of θ holding `b_l` (empty when the layer has no bias).
    pub fn bias_range(&self, l: usize) -> Range<usize> {
        let w = self.weight_range(l);
        w.end..self.offsets[l + 1]
    }
    /// Range of θ holding all of layer l.
    pub fn layer_range(&self, l: usize) -> Range<usize> {
        self.offsets[l]..self.offsets[l + 1]
    }
    /// Flat index of `W_l[i, j]`.
    #[inline]
    pub fn weight_index(&self, l: usize, i: usize, j: usize) -> usize {
        self.offsets[l] + i * self.layers[l].d_in + j
    }
    /// Tensor names `layers.{l}.weight` / `layers.{l}.bias` with their θ ranges and shapes.
    pub fn tensor_layout(&self) -> Vec<(String, Range<usize>, Vec<usize>)> {
        let mut out = Vec::new();
        for (l, layer) in self.layers.iter().enumerate() {
            out.push((format!("layers.{l}.weight"), self.weight_range(l), vec![layer.d_out, layer.d_in]));
            if layer.bias {
                out.push((format!("layers.{l}.bias"), self.bias_range(l), vec![layer.d_out]));
            }
        }
        out
    }
    /// FLOPs of one forward + backward (weight and input gradients) pass over `n` samples (2 per MAC).
    pub fn train_flops(&self, n: usize) -> f64 {
        self.layers
            .iter()
            .enumerate()
            .map(|(l, ly)| (if l == 0 { 4.0 } else { 6.0 }) * (ly.d_in * ly.d_out * n) as f64)
            .sum()
    }
}

/// A dense chain with its parameters θ (flat, see the module doc for the layout).
#[derive(Clone, Debug, PartialEq)]
pub struct Model<T> {
    /// Shapes and layout.
    pub arch: Architecture,
    /// Flat parameter vector θ.
    pub params: Vec<T>,
}

impl<T: Real> Model<T> {
    /// A model with all parameters zero.
    pub fn zeros(arch: Architecture) -> Self {
        let p = arch.n_params();
        Self { arch, params: vec![T::zero(); p] }
    }

    /// A model from explicit parameters, checking the length.
    pub fn from_params(arch: Architecture, params: Vec<T>) -> Result<Self> {
        if params.len() != arch.n_params() {
            return Err(Error::shape("parameter vector", &[arch.n_params()], &[params.len()]));
        }
        Ok(Self { arch, params })
    }

    /// `W_l` as a `[out, in]` view of θ.
    pub fn weight(&self, l: usize) -> faer::MatRef<'_, T> {
        let ly = self.arch.layers[l];
        faer::MatRef::from_row_major_slice(&self.params[self.arch.weight_range(l)], ly.d_out, ly.d_in)
    }
    /// `W_l` as a mutable `[out, in]` view of θ.
    pub fn weight_mut(&mut self, l: usize) -> faer::MatMut<'_, T> {
        let ly = self.arch.layers[l];
        let r = self.arch.weight_range(l);
        faer::MatMut::from_row_major_slice_mut(&mut self.params[r], ly.d_out, ly.d_in)
    }
    /// `b_l` (empty when the layer has no bias).
    pub fn bias(&self, l: usize) -> &[T] {
        &self.params[self.arch.bias_range(l)]
    }

    /// Converts the parameters to another precision.
    pub fn cast<U: Real>(&self) -> Model<U> {
        Model {
            arch: self.arch.clone(),
            params: self.params.iter().map(|&v| U::from_f64(v.to_f64())).collect(),
        }
    }

    /// ‖θ_l‖² of each layer (weights and bias).
    pub fn layer_norms_sq(&self) -> Vec<f64> {
        (0..self.arch.n_layers())
            .map(|l| self.params[self.arch.layer_range(l)].iter().map(|v| v.to_f64() * v.to_f64()).sum())
            .collect()
    }

    /// Errors when any parameter is NaN or infinite.
    pub fn check_finite(&self) -> Result<()> {
        if let Some(i) = self.params.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFinite {
                what: "model parameters".into(),
                index: i,
                value: self.params[i].to_f64(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_follows_reference_flattening() {
        let arch = Architecture::new(
            &[3, 2, 4],
            &[Activation::Relu, Activation::Identity],
            &[true, false],
            &[false, false],
        )
        .unwrap();
        assert_eq!(arch.weight_range(0), 0..6);
        assert_eq!(arch.bias_range(0), 6..8);
        assert_eq!(arch.weight_range(1), 8..16);
        assert_eq!(arch.bias_range(1), 16..16);
        assert_eq!(arch.n_params(), 16);
        assert_eq!(arch.weight_index(1, 2, 1), 8 + 2 * 2 + 1);
    }

    #[test]
    fn bad_architectures_are_errors() {
        assert!(Architecture::new(&[3], &[], &[], &[]).is_err());
        assert!(Architecture::new(&[3, 0, 2], &[Activation::Relu; 2], &[true; 2], &[false; 2]).is_err());
        assert!(Architecture::new(&[3, 4, 2], &[Activation::Relu; 1], &[true; 2], &[false; 2]).is_err());
    }
}

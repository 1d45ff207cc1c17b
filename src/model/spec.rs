//! The model description of a config file (`[model]` in TOML) and the compact CLI form `30-40-30`.

use super::{Activation, Architecture, Init, Model};
use crate::error::{Error, Result};
use crate::real::Real;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// A per-layer flag: one value for every layer, or a list with one entry per layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Flags {
    /// The same for every layer.
    All(bool),
    /// One per layer.
    Each(Vec<bool>),
}

impl Flags {
    fn resolve(&self, n: usize, what: &str) -> Result<Vec<bool>> {
        match self {
            Flags::All(b) => Ok(vec![*b; n]),
            Flags::Each(v) if v.len() == n => Ok(v.clone()),
            Flags::Each(v) => Err(Error::Config(format!("`{what}` has {} entries for {n} layers", v.len()))),
        }
    }
}

/// A model as described in a config file.
///
/// ```toml
/// [model]
/// dims = [30, 40, 30]
/// activation = "relu"          # hidden layers; the last layer is linear
/// bias = false                 # or one flag per layer
/// norm_layers = []             # layers whose pre-activation is RMS-normalised
/// init = "kaiming"             # "xavier", { gaussian = 0.1 }, { file = "model.safetensors" }
/// layer_scales = [1.0, 0.1]    # optional multiplier of each layer's initial weights
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// Widths `[d_0, …, d_L]`.
    pub dims: Vec<usize>,
    /// Activation of the hidden layers.
    #[serde(default)]
    pub activation: Activation,
    /// Per-layer activations (overrides `activation`; length L).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activations: Option<Vec<Activation>>,
    /// Biases.
    #[serde(default = "no_flags")]
    pub bias: Flags,
    /// Indices of layers whose pre-activation is RMS-normalised.
    #[serde(default)]
    pub norm_layers: Vec<usize>,
    /// Initialisation.
    #[serde(default)]
    pub init: Init,
    /// Per-layer multipliers of the initial weights.
    #[serde(default)]
    pub layer_scales: Vec<f64>,
}

fn no_flags() -> Flags {
    Flags::All(false)
}

impl ModelSpec {
    /// The compact form `30-40-30` (also `30x40x30` or `30,40,30`) with a hidden activation and a bias flag.
    pub fn from_compact(s: &str, activation: Activation, bias: bool) -> Result<Self> {
        let dims = s
            .split(['-', 'x', ','])
            .map(|t| t.trim().parse::<usize>())
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|_| Error::Config(format!("model `{s}` is not of the form 30-40-30")))?;
        Ok(Self {
            dims,
            activation,
            activations: None,
            bias: Flags::All(bias),
            norm_layers: vec![],
            init: Init::Kaiming,
            layer_scales: vec![],
        })
    }

    /// The architecture described.
    pub fn architecture(&self) -> Result<Architecture> {
        let n = self.dims.len().saturating_sub(1);
        let acts = match &self.activations {
            Some(_) if self.activation != Activation::default() => {
                return Err(Error::Config(format!(
                    "[model] activation = \"{}\" beside activations: the per-layer list sets every layer, so \
                     `activation` would be ignored; give one or the other",
                    self.activation.name()
                )))
            }
            Some(a) => a.clone(),
            None => {
                let mut a = vec![self.activation; n];
                if let Some(last) = a.last_mut() {
                    *last = Activation::Identity;
                }
                a
            }
        };
        let bias = self.bias.resolve(n, "bias")?;
        let mut norm = vec![false; n];
        for &l in &self.norm_layers {
            if l >= n {
                return Err(Error::Config(format!(
                    "norm_layers names layer {l} but the model has {n} layers"
                )));
            }
            if norm[l] {
                return Err(Error::Config(format!(
                    "norm_layers = {:?} names layer {l} twice; give each layer at most once",
                    self.norm_layers
                )));
            }
            norm[l] = true;
        }
        if let Init::Gaussian(std) = self.init {
            if !(std.is_finite() && std >= 0.0) {
                return Err(Error::Config(format!(
                    "init = {{ gaussian = {std} }}: the standard deviation must be finite and ≥ 0"
                )));
            }
        }
        if let Some((l, s)) =
            self.layer_scales.iter().enumerate().find(|(_, s)| !(s.is_finite() && **s > 0.0))
        {
            return Err(Error::Config(format!(
                "layer_scales[{l}] = {s}: every multiplier of the initial weights must be finite and > 0"
            )));
        }
        if !self.layer_scales.is_empty() && self.layer_scales.len() != n {
            return Err(Error::Config(format!(
                "`layer_scales` has {} entries for {n} layers",
                self.layer_scales.len()
            )));
        }
        Architecture::new(&self.dims, &acts, &bias, &norm)
    }

    /// Builds and initialises the model, drawing weights from `rng`.
    pub fn build<T: Real, R: Rng>(&self, rng: &mut R) -> Result<Model<T>> {
        let mut m = Model::zeros(self.architecture()?);
        self.init.apply(&mut m, &self.layer_scales, rng)?;
        Ok(m)
    }
}

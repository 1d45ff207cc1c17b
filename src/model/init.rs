//! Parameter initialisations. Biases start at zero; weights are i.i.d. Gaussian with a per-layer standard
//! deviation, optionally multiplied by a per-layer scale (to start balanced or imbalanced).

use super::Model;
use crate::error::Result;
use crate::real::Real;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How weights are drawn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Kaiming (He) normal, fan-in: `std = √(2 / d_in)`.
    #[default]
    Kaiming,
    /// Xavier (Glorot) normal: `std = √(2 / (d_in + d_out))`.
    Xavier,
    /// Plain Gaussian with the given standard deviation.
    Gaussian(f64),
    /// Explicit values from a safetensors file (names and layout as in `model::io`).
    File(PathBuf),
}

impl Init {
    /// Standard deviation of layer weights with fan-in `d_in` and fan-out `d_out` (None for `File`).
    pub fn std(&self, d_in: usize, d_out: usize) -> Option<f64> {
        match self {
            Init::Kaiming => Some((2.0 / d_in as f64).sqrt()),
            Init::Xavier => Some((2.0 / (d_in + d_out) as f64).sqrt()),
            Init::Gaussian(s) => Some(*s),
            Init::File(_) => None,
        }
    }

    /// Fills `model.params` (weights drawn row-major layer by layer from `rng`, biases zero), then multiplies
    /// layer l's weights by `layer_scales[l]` when given.
    pub fn apply<T: Real, R: Rng>(
        &self,
        model: &mut Model<T>,
        layer_scales: &[f64],
        rng: &mut R,
    ) -> Result<()> {
        match self {
            Init::File(path) => super::load_params_into(model, path)?,
            _ => {
                for l in 0..model.arch.n_layers() {
                    let ly = model.arch.layers[l];
                    let std = self.std(ly.d_in, ly.d_out).unwrap_or(1.0);
                    let wr = model.arch.weight_range(l);
                    for w in &mut model.params[wr] {
                        let g: f64 = StandardNormal.sample(rng);
                        *w = T::from_f64(std * g);
                    }
                    let br = model.arch.bias_range(l);
                    model.params[br].iter_mut().for_each(|b| *b = T::zero());
                }
            }
        }
        for (l, &s) in layer_scales.iter().enumerate().take(model.arch.n_layers()) {
            let wr = model.arch.weight_range(l);
            model.params[wr].iter_mut().for_each(|w| *w *= T::from_f64(s));
        }
        Ok(())
    }
}

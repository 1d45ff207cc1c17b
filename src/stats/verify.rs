//! Numerical verification that a generator is a symmetry of a model on a data set (a dense chain's
//! [`Generator`], or a module tree's [`NetGenerator`]: a channel class or a linear pair).

use super::per_sample_directional;
use crate::data::Dataset;
use crate::error::Result;
use crate::loss::Loss;
use crate::model::Model;
use crate::net::Net;
use crate::real::Real;
use crate::symmetry::{Generator, NetGenerator};
use serde::Serialize;

/// What [`verify`] measured.
#[derive(Clone, Debug, Serialize)]
pub struct Verification {
    /// The λ of the transformation.
    pub lambda: f64,
    /// `max_n |ℓ(e^{λA}θ, x_n) − ℓ(θ, x_n)|`.
    pub max_loss_change: f64,
    /// `max_n |ℓ(θ, x_n)|`, the scale for a relative reading of `max_loss_change`.
    pub max_loss: f64,
    /// `max_n |(Aθ)ᵀ∇ℓ(θ, x_n)|`.
    pub max_gradient_overlap: f64,
    /// `max_n ‖Aθ‖·‖∇ℓ(θ, x_n)‖`, the scale for a relative reading of `max_gradient_overlap`.
    pub overlap_scale: f64,
}

/// Measures `max_n |ℓ(e^{λA}θ, x_n) − ℓ(θ, x_n)|` and `max_n |(Aθ)ᵀ∇ℓ(θ, x_n)|` over the samples.
pub fn verify<T: Real>(
    model: &Model<T>,
    data: &Dataset<T>,
    loss: Loss,
    generator: &Generator,
    lambda: f64,
) -> Result<Verification> {
    generator.check(&model.arch)?;
    let before = model.per_sample_losses(data, loss, 4096)?;
    let mut moved = model.clone();
    generator.act_in_place(&model.arch, &mut moved.params, lambda);
    let after = moved.per_sample_losses(data, loss, 4096)?;
    let theta: Vec<f64> = model.params.iter().map(|v| v.to_f64()).collect();
    let a_theta = generator.a_times(&model.arch, &theta);
    let d = per_sample_directional(model, data, loss, &a_theta, 4096)?;
    let a_norm = a_theta.iter().map(|v| v * v).sum::<f64>().sqrt();
    Ok(Verification {
        lambda,
        max_loss_change: before.iter().zip(&after).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max),
        max_loss: before.iter().map(|v| v.abs()).fold(0.0, f64::max),
        max_gradient_overlap: d.dots.iter().map(|v| v.abs()).fold(0.0, f64::max),
        overlap_scale: a_norm * d.grad_norms.iter().cloned().fold(0.0, f64::max),
    })
}

/// [`verify`] for a module tree's generator (a channel class's diagonal one or a linear pair's double
/// rotation): `max_n |ℓ_n(e^{λA}θ) − ℓ_n(θ)|` and `max_n |(Aθ)ᵀ∇ℓ_n(θ)|` (per-sample gradients one module
/// at a time).
pub fn verify_net<T: Real, G: NetGenerator>(
    net: &Net<T>,
    data: &Dataset<T>,
    loss: Loss,
    sym: &G,
    lambda: f64,
) -> Result<Verification> {
    let before = crate::net::per_sample_losses(net, data, loss)?;
    let mut moved = net.clone();
    sym.act_in_place(&mut moved.params, lambda);
    let after = crate::net::per_sample_losses(&moved, data, loss)?;
    let theta: Vec<f64> = net.params.iter().map(|v| v.to_f64()).collect();
    let a_theta = sym.a_times(&theta);
    let (dots, norms) = super::net::per_sample_directional(net, data, loss, &a_theta)?;
    let a_norm = a_theta.iter().map(|v| v * v).sum::<f64>().sqrt();
    Ok(Verification {
        lambda,
        max_loss_change: before.iter().zip(&after).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max),
        max_loss: before.iter().map(|v| v.abs()).fold(0.0, f64::max),
        max_gradient_overlap: dots.iter().map(|v| v.abs()).fold(0.0, f64::max),
        overlap_scale: a_norm * norms.iter().cloned().fold(0.0, f64::max),
    })
}

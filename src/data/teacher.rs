//! The synthetic Gaussian teacher: `x ~ N(0, Σ_x)`, `y = V x + ε`, `ε ~ N(0, Σ_ε)`, with diagonal Σ_x, Σ_ε.
//!
//! Anisotropy φ (the paper's φ_x): variances spaced geometrically from 1 to φ,
//! `σ_i² = scale · φ^{i/(d−1)}` for `i = 0..d−1`, so φ is the condition number of Σ and φ = 1 is isotropic
//! (`scale · I`). An explicit list of variances overrides φ.

use super::{Dataset, Targets};
use crate::error::{Error, Result};
use crate::real::Real;
use faer::Mat;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

/// A diagonal covariance: explicit variances, or a geometric spread φ around a scale. In TOML the two forms
/// exclude each other: `phi` or `scale` beside `variances` is an error (they would be ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawAnisotropy", into = "RawAnisotropy")]
pub struct Anisotropy {
    /// Condition number φ of the diagonal (1 = isotropic).
    pub phi: f64,
    /// Overall variance scale.
    pub scale: f64,
    /// Explicit variances (length d); `phi` and `scale` must then stay at 1 (TOML: be absent).
    pub variances: Option<Vec<f64>>,
}

/// The TOML form of an [`Anisotropy`]: which keys were given, so that keys of the other form are errors.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnisotropy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phi: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    variances: Option<Vec<f64>>,
}

impl RawAnisotropy {
    /// The covariance; `key` (e.g. `data.teacher.sigma_x`) names it in the error.
    fn resolve(self, key: &str) -> std::result::Result<Anisotropy, String> {
        if self.variances.is_some() {
            if let Some((k, v)) =
                [("phi", self.phi), ("scale", self.scale)].iter().find_map(|(k, v)| v.map(|v| (k, v)))
            {
                return Err(format!(
                    "{key}.{k} = {v} does not apply beside {key}.variances (explicit variances set every σ_i² \
                     themselves); give either `variances` or `phi`/`scale`"
                ));
            }
        }
        Ok(Anisotropy {
            phi: self.phi.unwrap_or(1.0),
            scale: self.scale.unwrap_or(1.0),
            variances: self.variances,
        })
    }
}

impl TryFrom<RawAnisotropy> for Anisotropy {
    type Error = String;
    fn try_from(r: RawAnisotropy) -> std::result::Result<Self, String> {
        r.resolve("the covariance")
    }
}

impl From<Anisotropy> for RawAnisotropy {
    fn from(a: Anisotropy) -> Self {
        match a.variances {
            Some(v) => RawAnisotropy { phi: None, scale: None, variances: Some(v) },
            None => RawAnisotropy { phi: Some(a.phi), scale: Some(a.scale), variances: None },
        }
    }
}

impl Default for Anisotropy {
    fn default() -> Self {
        Self { phi: 1.0, scale: 1.0, variances: None }
    }
}

impl Anisotropy {
    /// Isotropic with variance `scale`.
    pub fn isotropic(scale: f64) -> Self {
        Self { phi: 1.0, scale, variances: None }
    }
    /// Geometric spread with condition number φ, variance scale 1.
    pub fn condition(phi: f64) -> Self {
        Self { phi, scale: 1.0, variances: None }
    }
    /// The d variances `σ_i²`.
    pub fn variances(&self, d: usize) -> Result<Vec<f64>> {
        self.variances_of(d, "the covariance")
    }

    /// The d variances `σ_i²`; errors name the covariance as `key` (e.g. `data.teacher.sigma_x`).
    fn variances_of(&self, d: usize, key: &str) -> Result<Vec<f64>> {
        let v = match &self.variances {
            Some(v) => {
                if self.phi != 1.0 || self.scale != 1.0 {
                    return Err(Error::Config(format!(
                        "{key}: phi = {} and scale = {} do not apply beside explicit variances; give one form",
                        self.phi, self.scale
                    )));
                }
                if v.len() != d {
                    return Err(Error::Config(format!(
                        "{key}.variances has {} entries, but this covariance needs {d} (one per dimension)",
                        v.len()
                    )));
                }
                v.clone()
            }
            None => {
                if !(self.phi > 0.0 && self.phi.is_finite()) {
                    return Err(Error::Config(format!(
                        "{key}.phi = {}: the anisotropy (condition number) must be positive and finite",
                        self.phi
                    )));
                }
                if !(self.scale >= 0.0 && self.scale.is_finite()) {
                    return Err(Error::Config(format!(
                        "{key}.scale = {}: the variance scale must be ≥ 0 and finite",
                        self.scale
                    )));
                }
                (0..d)
                    .map(|i| self.scale * if d > 1 { self.phi.powf(i as f64 / (d - 1) as f64) } else { 1.0 })
                    .collect()
            }
        };
        if let Some(i) = v.iter().position(|&s| !(s >= 0.0 && s.is_finite())) {
            return Err(Error::Config(format!("{key}.variances[{i}] = {}: must be ≥ 0 and finite", v[i])));
        }
        Ok(v)
    }
}

/// The teacher map V in `y = V x + ε`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TeacherMap {
    /// V = I (needs d_in = d_out).
    #[default]
    Identity,
    /// V with i.i.d. N(0, 1/d_in) entries, drawn once from the seed.
    Random,
    /// Explicit rows `[d_out][d_in]`.
    Given(Vec<Vec<f64>>),
}

/// The Gaussian teacher distribution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawTeacher", into = "RawTeacher")]
pub struct Teacher {
    /// Input covariance Σ_x.
    pub sigma_x: Anisotropy,
    /// Label-noise covariance Σ_ε.
    pub sigma_eps: Anisotropy,
    /// The map V.
    pub map: TeacherMap,
}

/// The TOML form of a [`Teacher`], whose covariances' errors name `sigma_x` or `sigma_eps`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTeacher {
    #[serde(default)]
    sigma_x: RawAnisotropy,
    #[serde(default)]
    sigma_eps: RawAnisotropy,
    #[serde(default)]
    map: TeacherMap,
}

impl TryFrom<RawTeacher> for Teacher {
    type Error = String;
    fn try_from(r: RawTeacher) -> std::result::Result<Self, String> {
        Ok(Teacher {
            sigma_x: r.sigma_x.resolve("data.teacher.sigma_x")?,
            sigma_eps: r.sigma_eps.resolve("data.teacher.sigma_eps")?,
            map: r.map,
        })
    }
}

impl From<Teacher> for RawTeacher {
    fn from(t: Teacher) -> Self {
        RawTeacher { sigma_x: t.sigma_x.into(), sigma_eps: t.sigma_eps.into(), map: t.map }
    }
}

impl Default for Teacher {
    fn default() -> Self {
        Self { sigma_x: Anisotropy::default(), sigma_eps: Anisotropy::default(), map: TeacherMap::Identity }
    }
}

/// A teacher with its V drawn and its standard deviations computed, ready to sample.
#[derive(Clone, Debug)]
pub struct TeacherSampler {
    /// Standard deviations of x.
    pub std_x: Vec<f64>,
    /// Standard deviations of ε.
    pub std_eps: Vec<f64>,
    /// V, `[d_out, d_in]`.
    pub v: Mat<f64>,
}

impl Teacher {
    /// Resolves the teacher for widths `d_in → d_out`, drawing V (if random) from `rng`.
    pub fn build<R: Rng>(&self, d_in: usize, d_out: usize, rng: &mut R) -> Result<TeacherSampler> {
        let v = match &self.map {
            TeacherMap::Identity => {
                if d_in != d_out {
                    return Err(Error::Config(format!(
                        "teacher map `identity` needs d_in = d_out, got {d_in} → {d_out}; use map = \"random\""
                    )));
                }
                Mat::identity(d_in, d_in)
            }
            TeacherMap::Random => {
                let s = 1.0 / (d_in as f64).sqrt();
                Mat::from_fn(d_out, d_in, |_, _| {
                    let g: f64 = StandardNormal.sample(rng);
                    s * g
                })
            }
            TeacherMap::Given(rows) => {
                if rows.len() != d_out || rows.iter().any(|r| r.len() != d_in) {
                    return Err(Error::shape(
                        "teacher map V",
                        &[d_out, d_in],
                        &[rows.len(), rows.first().map_or(0, |r| r.len())],
                    ));
                }
                Mat::from_fn(d_out, d_in, |i, j| rows[i][j])
            }
        };
        let std = |a: &Anisotropy, d, key| -> Result<Vec<f64>> {
            Ok(a.variances_of(d, key)?.into_iter().map(f64::sqrt).collect())
        };
        Ok(TeacherSampler {
            std_x: std(&self.sigma_x, d_in, "data.teacher.sigma_x")?,
            std_eps: std(&self.sigma_eps, d_out, "data.teacher.sigma_eps")?,
            v,
        })
    }
}

impl TeacherSampler {
    /// Σ_x as a dense diagonal matrix.
    pub fn sigma_x(&self) -> Mat<f64> {
        Mat::from_fn(
            self.std_x.len(),
            self.std_x.len(),
            |i, j| if i == j { self.std_x[i].powi(2) } else { 0.0 },
        )
    }
    /// Σ_ε as a dense diagonal matrix.
    pub fn sigma_eps(&self) -> Mat<f64> {
        Mat::from_fn(self.std_eps.len(), self.std_eps.len(), |i, j| {
            if i == j {
                self.std_eps[i].powi(2)
            } else {
                0.0
            }
        })
    }

    /// N fresh samples.
    pub fn sample<T: Real, R: Rng>(&self, n: usize, rng: &mut R) -> Dataset<T> {
        let mut d = Dataset {
            x: Mat::zeros(n, self.std_x.len()),
            y: Targets::Dense(Mat::zeros(n, self.std_eps.len())),
        };
        self.resample_into(&mut d, rng);
        d
    }

    /// Overwrites every sample of `data` with fresh draws (online sampling, no allocation).
    pub fn resample_into<T: Real, R: Rng>(&self, data: &mut Dataset<T>, rng: &mut R) {
        let n = data.x.nrows();
        let (din, dout) = (self.std_x.len(), self.std_eps.len());
        let Targets::Dense(y) = &mut data.y else { unreachable!("teacher data sets have dense targets") };
        // Row by row so that the stream of draws is independent of the storage layout; y is computed from
        // the stored (possibly rounded) x so that y = Vx + ε holds exactly in the working precision.
        for i in 0..n {
            for j in 0..din {
                let g: f64 = StandardNormal.sample(rng);
                data.x[(i, j)] = T::from_f64(self.std_x[j] * g);
            }
            for k in 0..dout {
                let mut s = 0.0;
                for j in 0..din {
                    s += self.v[(k, j)] * data.x[(i, j)].to_f64();
                }
                let e: f64 = StandardNormal.sample(rng);
                y[(i, k)] = T::from_f64(s + self.std_eps[k] * e);
            }
        }
    }
}

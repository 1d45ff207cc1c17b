//! The validated description of a training run (`noether train CONFIG.toml`). Unknown keys are errors.

use super::model_config::ModelConfig;
use super::Schedule;
use crate::data::{load_dataset, load_dataset_shaped, load_idx, Dataset, IdxOptions, Sampling, Teacher};
use crate::error::{Error, Result};
use crate::loss::Loss;
use crate::model::Model;
use crate::net::NetArch;
use crate::real::Real;
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Where the training data come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DataSpec {
    /// The Gaussian teacher `y = Vx + ε`: a finite set of `n` samples, or fresh samples every step when `n` is
    /// absent (online). Online runs evaluate the logged loss on `eval_n` held samples.
    Teacher {
        /// The teacher distribution.
        #[serde(default)]
        teacher: Teacher,
        /// Finite data-set size; absent for online sampling.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        n: Option<usize>,
        /// Held-out samples for the logged loss of online runs (absent: `DEFAULT_EVAL_N`, 1000); given with `n`, an
        /// error (it would be ignored).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eval_n: Option<usize>,
    },
    /// A safetensors file with `x` and `y`.
    File {
        /// Path of the file.
        path: PathBuf,
    },
    /// MNIST-format IDX images and labels (raw or gzip; [`crate::data::load_idx`]): `x` `[n, rows·cols]` with
    /// pixels in [0, 1], the first `n` samples in file order. Paths are relative to the working directory.
    Idx {
        /// Image file (magic 0x00000803), e.g. `/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz`.
        images: PathBuf,
        /// Label file (magic 0x00000801) of the same samples.
        labels: PathBuf,
        /// Keep the first `n` samples; absent: all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        n: Option<usize>,
        /// Standardise each pixel over the loaded samples (constant pixels become 0).
        #[serde(default)]
        standardize: bool,
    },
}

/// Held-out samples of an online run's logged loss when `data.eval_n` is absent.
pub const DEFAULT_EVAL_N: usize = 1000;

impl DataSpec {
    /// The Gaussian teacher with `n` samples (`None`: online), online runs logging the loss on 1000 held samples.
    pub fn teacher(teacher: Teacher, n: Option<usize>) -> Self {
        DataSpec::Teacher { teacher, n, eval_n: None }
    }

    /// What sets the number N of samples the observers see, for messages: `data.n = 1`, `data.eval_n = 1`, …
    fn n_source(&self, n: usize) -> String {
        match self {
            DataSpec::Teacher { n: Some(_), .. } | DataSpec::Idx { n: Some(_), .. } => {
                format!("data.n = {n}")
            }
            DataSpec::Teacher { n: None, .. } => {
                format!("data.eval_n = {n} (the held samples of an online run)")
            }
            DataSpec::File { path } => format!("the data file {} holds N = {n}", path.display()),
            DataSpec::Idx { images, .. } => format!("the IDX file {} holds N = {n}", images.display()),
        }
    }
}

impl Default for DataSpec {
    fn default() -> Self {
        DataSpec::teacher(Teacher::default(), Some(1000))
    }
}

/// The optimiser.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum Method {
    /// Full-batch gradient descent `θ ← θ − η∇L`.
    Gd,
    /// Minibatch SGD `θ ← θ − ηĝ`, `ĝ` the mean gradient of S samples.
    Sgd {
        /// Batch size S.
        batch_size: usize,
        /// With or without replacement.
        #[serde(default)]
        sampling: Sampling,
    },
    /// Euler–Maruyama for `dθ = −∇L dt + √(η/S·Σ) dW`, `dt = η`, with the exact finite-data Σ.
    Sde {
        /// Batch size S of the SGD being modelled.
        batch_size: usize,
    },
    /// Gradient flow `dθ/dt = −(∇L + γθ)`: each step advances time by η. Without `tolerance`, in `substeps`
    /// classical RK4 steps of η/substeps; with it, by Dormand–Prince 5(4) with error control, which shrinks the
    /// substeps where the flow turns stiff (RK4 at a fixed substep h stops following the flow once
    /// h·λ_max(∇²L) nears its stability limit 2.79). Error control assumes a smooth flow: with relu or
    /// leaky_relu units the gradient has kinks where a sample's pre-activation crosses zero, and where the flow
    /// slides along one the substeps shrink with the tolerance (a 6-8-8-5 relu net at η = 0.01: about 3
    /// substeps per step at tolerance 1e-6, over a thousand at 1e-9; tanh and identity nets: one).
    GradientFlow {
        /// RK4 substeps per step; with `tolerance`, only the first trial substep η/substeps.
        #[serde(default = "default_substeps")]
        substeps: usize,
        /// Adaptive integration: every accepted substep's local error estimate `e` satisfies
        /// `sqrt(mean_i (e_i / (tol·(1 + max(|θ_i|, |θ'_i|))))²) ≤ 1` (θ, θ' the substep's ends).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tolerance: Option<f64>,
    },
}

fn default_substeps() -> usize {
    10
}

impl Default for Method {
    fn default() -> Self {
        Method::Sgd { batch_size: 64, sampling: Sampling::WithReplacement }
    }
}

impl Method {
    /// The short name used in file names and legends: `gd`, `sgd`, `sde`, `gf`.
    pub fn short(&self) -> &'static str {
        match self {
            Method::Gd => "gd",
            Method::Sgd { .. } => "sgd",
            Method::Sde { .. } => "sde",
            Method::GradientFlow { .. } => "gf",
        }
    }
    /// The batch size S (N for full-batch methods, given the data-set size).
    pub fn batch_size(&self, n: usize) -> usize {
        match self {
            Method::Sgd { batch_size, .. } | Method::Sde { batch_size } => *batch_size,
            _ => n,
        }
    }
}

/// The smallest adaptive gradient-flow tolerance an f32 run accepts: below it the error estimate is round-off,
/// and the substeps would shrink without buying accuracy.
pub const F32_MIN_FLOW_TOLERANCE: f64 = 1e-5;

/// Floating-point precision of the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    /// f64 (default).
    #[default]
    F64,
    /// f32 (faster, for large models).
    F32,
}

/// What is logged besides step, time, learning rate, loss, layer norms and charges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveSpec {
    /// Entries of each linear pair's matrix charge logged individually (row-major, upper triangle).
    #[serde(default = "default_pair_entries")]
    pub pair_entries: usize,
    /// Log every rescaling unit's charge (can be many columns).
    #[serde(default = "yes")]
    pub unit_charges: bool,
    /// Log the top Hessian eigenvalue and trace every this many steps (0 = never; must divide into logged
    /// steps, other logged rows get NaN). Costs Lanczos iterations plus trace probes, each one HVP.
    #[serde(default)]
    pub sharpness_every: u64,
    /// Trace method of the sharpness observer: `exact` (P HVPs), `hutchinson` or `hutch++`, or `none`
    /// (absent: `hutchinson`). Only with `sharpness_every > 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharpness_trace: Option<String>,
    /// Log Tr Σ, every symmetry's Tr\[AΣ\] and each rescaling's λ* every this many steps (0 = never; one pass
    /// over the logging data each time).
    #[serde(default)]
    pub noise_every: u64,
    /// Samples (a fixed seeded subset) the sharpness observer uses; 0 or absent = all. Only with
    /// `sharpness_every > 0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharpness_subset: Option<usize>,
}

impl ObserveSpec {
    /// The sharpness observer's trace method (`hutchinson` unless given).
    pub fn trace(&self) -> &str {
        self.sharpness_trace.as_deref().unwrap_or("hutchinson")
    }
    /// The sharpness observer's subset size (0 = all).
    pub fn subset(&self) -> usize {
        self.sharpness_subset.unwrap_or(0)
    }
}

fn default_pair_entries() -> usize {
    10
}
fn yes() -> bool {
    true
}

impl Default for ObserveSpec {
    fn default() -> Self {
        Self {
            pair_entries: default_pair_entries(),
            unit_charges: true,
            sharpness_every: 0,
            sharpness_trace: None,
            sharpness_subset: None,
            noise_every: 0,
        }
    }
}

/// A complete training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed of every random draw (initialisation, data, batches, SDE noise).
    #[serde(default)]
    pub seed: u64,
    /// Number of steps.
    pub steps: u64,
    /// Log a metrics row every this many steps (and at the first and last step).
    #[serde(default = "default_log_every")]
    pub log_every: u64,
    /// Peak learning rate η.
    pub lr: f64,
    /// Weight decay γ: the update uses `ĝ + γθ`.
    #[serde(default)]
    pub weight_decay: f64,
    /// Loss.
    #[serde(default)]
    pub loss: Loss,
    /// Precision.
    #[serde(default)]
    pub precision: Precision,
    /// The model: a dense chain (`dims`) or a module tree (`input`, `layers`).
    pub model: ModelConfig,
    /// The data.
    #[serde(default)]
    pub data: DataSpec,
    /// The optimiser.
    #[serde(default)]
    pub optimizer: Method,
    /// The learning-rate schedule.
    #[serde(default)]
    pub schedule: Schedule,
    /// Extra logging.
    #[serde(default)]
    pub observe: ObserveSpec,
}

fn default_log_every() -> u64 {
    100
}

impl TrainConfig {
    /// A run of `steps` steps of `optimizer` at peak learning rate `lr` on `model`, every other field at its TOML
    /// default: seed 0, a row every 100 steps, no weight decay, MSE, f64, [`DataSpec::default`], constant
    /// schedule, default observers. Chain the `with_*` setters for the rest; call [`validate`](Self::validate)
    /// before use (the trainer does).
    pub fn new(model: impl Into<ModelConfig>, optimizer: Method, lr: f64, steps: u64) -> Self {
        Self {
            seed: 0,
            steps,
            log_every: default_log_every(),
            lr,
            weight_decay: 0.0,
            loss: Loss::default(),
            precision: Precision::default(),
            model: model.into(),
            data: DataSpec::default(),
            optimizer,
            schedule: Schedule::default(),
            observe: ObserveSpec::default(),
        }
    }

    /// Sets the seed of every random draw.
    pub fn with_seed(self, seed: u64) -> Self {
        Self { seed, ..self }
    }

    /// Logs a metrics row every `log_every` steps.
    pub fn with_log_every(self, log_every: u64) -> Self {
        Self { log_every, ..self }
    }

    /// Sets the weight decay γ (the update uses `ĝ + γθ`).
    pub fn with_weight_decay(self, weight_decay: f64) -> Self {
        Self { weight_decay, ..self }
    }

    /// Sets the loss.
    pub fn with_loss(self, loss: Loss) -> Self {
        Self { loss, ..self }
    }

    /// Sets the training data.
    pub fn with_data(self, data: DataSpec) -> Self {
        Self { data, ..self }
    }

    /// Sets the learning-rate schedule.
    pub fn with_schedule(self, schedule: Schedule) -> Self {
        Self { schedule, ..self }
    }

    /// Sets the extra logging.
    pub fn with_observe(self, observe: ObserveSpec) -> Self {
        Self { observe, ..self }
    }

    /// Parses TOML; unknown keys and bad values are errors naming the key.
    pub fn from_toml(s: &str) -> Result<Self> {
        let table: toml::Table = s.parse().map_err(|e: toml::de::Error| Error::Config(e.to_string()))?;
        Self::check_keys_beside_tags(&table)?;
        let c: TrainConfig = toml::from_str(s).map_err(|e| Error::Config(e.to_string()))?;
        c.validate()?;
        Ok(c)
    }

    /// The checks of a config table that serde cannot make: serde ignores extra keys of an internally tagged
    /// unit variant (`method = "gd"`, `kind = "constant"`); they cannot mean what they say, so they are errors
    /// like unknown keys. [`from_toml`](Self::from_toml) runs this; so does every sweep point's table.
    pub fn check_keys_beside_tags(table: &toml::Table) -> Result<()> {
        no_keys_beside_tag(table, "optimizer", "method", "gd", "batch_size and sampling apply to sgd")?;
        no_keys_beside_tag(
            table,
            "schedule",
            "kind",
            "constant",
            "warmup_steps applies to warmup and warmup_cosine",
        )
    }

    /// The config as TOML with every default filled in.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a TrainConfig always serialises")
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Config(format!("lr must be positive and finite, got {}", self.lr)));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::Config(format!("weight_decay must be ≥ 0, got {}", self.weight_decay)));
        }
        if self.observe.trace() != "none" {
            crate::curvature::TraceMethod::parse(self.observe.trace())?;
        }
        if self.steps == 0 {
            return Err(Error::Config("steps = 0: a run takes at least 1 step".into()));
        }
        if self.log_every == 0 {
            return Err(Error::Config("log_every must be at least 1".into()));
        }
        self.schedule.validate(self.lr, self.steps)?;
        self.validate_observe()?;
        self.model.validate()?;
        self.validate_tree_data()?;
        self.validate_loss()?;
        if let DataSpec::Teacher { n: Some(n), .. } = self.data {
            self.check_sample_count(n)?;
        }
        match (&self.optimizer, &self.data) {
            (Method::Sgd { batch_size: 0, .. } | Method::Sde { batch_size: 0 }, _) => {
                return Err(Error::Config("batch_size must be at least 1".into()))
            }
            (Method::GradientFlow { substeps: 0, .. }, _) => {
                return Err(Error::Config("substeps must be at least 1".into()))
            }
            (Method::GradientFlow { tolerance: Some(tol), .. }, _) if !(*tol > 0.0 && *tol < 1.0) => {
                return Err(Error::Config(format!("tolerance must lie in (0, 1), got {tol}")))
            }
            (Method::GradientFlow { tolerance: Some(tol), .. }, _)
                if self.precision == Precision::F32 && *tol < F32_MIN_FLOW_TOLERANCE =>
            {
                return Err(Error::Config(format!(
                    "tolerance {tol} is below what an f32 run can deliver (at least {F32_MIN_FLOW_TOLERANCE}: \
                     f32 round-off would dominate the error estimate); raise it or use precision = \"f64\""
                )))
            }
            (
                Method::Sde { .. } | Method::Gd | Method::GradientFlow { .. },
                DataSpec::Teacher { n: None, .. },
            ) => {
                return Err(Error::Config(format!(
                    "optimizer `{}` needs a finite data set: give data.n (online sampling is for SGD only)",
                    self.optimizer.short()
                )))
            }
            (
                Method::Sgd { batch_size, sampling: Sampling::WithoutReplacement },
                DataSpec::Teacher { n: Some(n), .. },
            ) if batch_size > n => {
                return Err(Error::Config(format!(
                    "batch_size {batch_size} exceeds data.n = {n} without replacement"
                )))
            }
            _ => {}
        }
        Ok(())
    }

    /// Cross entropy needs at least two classes (outputs) and class labels (not the teacher's float targets).
    fn validate_loss(&self) -> Result<()> {
        if self.loss != Loss::CrossEntropy {
            return Ok(());
        }
        let (d_out, what) = match &self.model {
            ModelConfig::Dense(spec) => {
                (spec.dims.last().copied().unwrap_or(0), format!("[model] dims = {:?} ends in", spec.dims))
            }
            ModelConfig::Tree(t) => (t.arch.d_out(), "the last layer of [model] has".to_string()),
        };
        if d_out < 2 {
            return Err(Error::Config(format!(
                "loss = \"cross_entropy\" needs at least 2 outputs (one per class), but {what} {d_out}: a \
                 softmax over one output is constant (loss 0, gradient 0); widen the last layer or use loss = \"mse\""
            )));
        }
        if let DataSpec::Teacher { .. } = self.data {
            return Err(Error::Config(
                "loss = \"cross_entropy\" needs integer class labels, but data kind = \"teacher\" gives float \
                 targets y = Vx + ε; use loss = \"mse\", or file or IDX data with labels"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Checks the settings that depend on the number `n` of samples the trainer and its observers see (the data
    /// set, or an online run's held samples): the centred gradient covariance Σ of the noise observer and of the
    /// SDE is 0 for one sample (and λ* = 0/0), a without-replacement batch and the sharpness subset must fit.
    pub fn check_sample_count(&self, n: usize) -> Result<()> {
        let source = || self.data.n_source(n);
        if n < 2 {
            if self.observe.noise_every > 0 {
                return Err(Error::Config(format!(
                    "observe.noise_every = {} needs N ≥ 2 samples, but {}: the noise covariance Σ is centred over \
                     the samples (0 for one), so Tr Σ would be 0 and λ* undefined; use more samples or drop \
                     noise_every",
                    self.observe.noise_every,
                    source()
                )));
            }
            if let Method::Sde { .. } = self.optimizer {
                return Err(Error::Config(format!(
                    "optimizer method = \"sde\" needs N ≥ 2 samples, but {}: its noise covariance Σ is centred \
                     over the samples (0 for one), so the SDE would be gradient descent; use more samples or \
                     method = \"gd\"",
                    source()
                )));
            }
        }
        if let Method::Sgd { batch_size, sampling: Sampling::WithoutReplacement } = self.optimizer {
            if batch_size > n && !matches!(self.data, DataSpec::Teacher { n: None, .. }) {
                return Err(Error::Config(format!(
                    "optimizer.batch_size = {batch_size} exceeds the data set size: {} without replacement; \
                     lower optimizer.batch_size to at most {n} or use sampling = \"with_replacement\"",
                    source()
                )));
            }
        }
        if self.observe.sharpness_every > 0 && self.observe.subset() > n {
            return Err(Error::Config(format!(
                "observe.sharpness_subset = {} exceeds the samples the observer sees: {}; use at most {n} (0 = all)",
                self.observe.subset(),
                source()
            )));
        }
        Ok(())
    }

    /// Observer options that only matter with another one, and the data options that only matter online.
    fn validate_observe(&self) -> Result<()> {
        let o = &self.observe;
        for (key, every) in [("noise_every", o.noise_every), ("sharpness_every", o.sharpness_every)] {
            if every > 0 && !every.is_multiple_of(self.log_every) {
                return Err(Error::Config(format!(
                    "observe.{key} = {every} is not a multiple of log_every = {}: observers run on logged rows \
                     only; use a multiple of {}",
                    self.log_every, self.log_every
                )));
            }
        }
        if o.sharpness_every == 0 {
            if let Some(sub) = o.sharpness_subset {
                return Err(Error::Config(format!(
                    "observe.sharpness_subset = {sub} does nothing without observe.sharpness_every > 0; set \
                     sharpness_every or drop the key"
                )));
            }
            if let Some(trace) = &o.sharpness_trace {
                return Err(Error::Config(format!(
                    "observe.sharpness_trace = \"{trace}\" does nothing without observe.sharpness_every > 0; set \
                     sharpness_every or drop the key"
                )));
            }
        }
        if let DataSpec::Teacher { n, eval_n, .. } = &self.data {
            if *eval_n == Some(0) {
                return Err(Error::Config(
                    "data.eval_n = 0: online runs log the loss on eval_n ≥ 1 held samples".into(),
                ));
            }
            if let (Some(_), Some(eval_n)) = (n, eval_n) {
                return Err(Error::Config(format!(
                    "data.eval_n = {eval_n} applies to online data only (no data.n); with data.n the loss is logged \
                     on the data set itself"
                )));
            }
            if let (Some(n), sub) = (n, o.subset()) {
                if sub > *n {
                    return Err(Error::Config(format!(
                        "observe.sharpness_subset = {sub} exceeds data.n = {n}; use at most {n} (0 = all)"
                    )));
                }
            }
            if n.is_none() {
                if let Method::Sgd { sampling: Sampling::WithoutReplacement, .. } = self.optimizer {
                    return Err(Error::Config(
                        "optimizer.sampling = \"without_replacement\" needs a finite data set (data.n); online \
                         samples are fresh at every step"
                            .into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The data kinds a module tree takes: teacher data only for a vector input `[d]`.
    fn validate_tree_data(&self) -> Result<()> {
        if let (ModelConfig::Tree(t), DataSpec::Teacher { .. }) = (&self.model, &self.data) {
            if t.arch.input.len() != 1 {
                return Err(Error::Config(format!(
                    "data kind \"teacher\" draws vectors x ∈ R^d, but [model] input = {:?} is an image; give \
                     image data (kind = \"file\" with x [N, C, H, W], or kind = \"idx\")",
                    t.arch.input
                )));
            }
        }
        Ok(())
    }

    /// Builds the dense-chain model (initialised from the seeded `rng`); an error for a module tree.
    pub fn build_model<T: Real, R: Rng>(&self, rng: &mut R) -> Result<Model<T>> {
        match &self.model {
            ModelConfig::Dense(spec) => spec.build(rng),
            ModelConfig::Tree(_) => Err(Error::Config(
                "[model] is a module tree (`layers`); it builds a net, not a dense chain".into(),
            )),
        }
    }
}

/// Training data resolved from a [`DataSpec`].
#[derive(Clone, Debug)]
pub enum TrainData<T> {
    /// A finite data set.
    Finite(Dataset<T>),
    /// Online teacher sampling, with a held-out evaluation set.
    Online {
        /// The sampler.
        sampler: crate::data::teacher::TeacherSampler,
        /// Held-out evaluation samples for the logged loss.
        eval: Dataset<T>,
    },
}

impl DataSpec {
    /// Loads or draws the data for a model with widths `d_in → d_out`.
    pub fn build<T: Real, R: Rng>(&self, d_in: usize, d_out: usize, rng: &mut R) -> Result<TrainData<T>> {
        match self {
            DataSpec::File { path } => Ok(TrainData::Finite(load_dataset(path)?)),
            DataSpec::Idx { images, labels, n, standardize } => {
                let options = IdxOptions { n: *n, standardize: *standardize };
                Ok(TrainData::Finite(load_idx(images, labels, &options)?.0))
            }
            DataSpec::Teacher { teacher, n, eval_n } => {
                let s = teacher.build(d_in, d_out, rng)?;
                match n {
                    Some(0) => Err(Error::Config("data.n must be at least 1".into())),
                    Some(n) => Ok(TrainData::Finite(s.sample(*n, rng))),
                    None => {
                        let eval = s.sample(eval_n.unwrap_or(DEFAULT_EVAL_N), rng);
                        Ok(TrainData::Online { sampler: s, eval })
                    }
                }
            }
        }
    }
}

impl DataSpec {
    /// Loads or draws the data for the module tree `arch`, checking each sample's shape against its `input`:
    /// a file's `x` `[N, *input]` (or `[N, C·H·W]`), IDX images `[1, rows, cols]`, teacher vectors for `[d]`.
    pub fn build_for_net<T: Real, R: Rng>(&self, arch: &NetArch, rng: &mut R) -> Result<TrainData<T>> {
        let check = |shape: &[usize], what: &str| -> Result<()> {
            if shape == arch.input.as_slice() || (shape.len() == 1 && shape[0] == arch.input_len()) {
                Ok(())
            } else {
                Err(Error::shape(
                    format!("per-sample shape of the {what} ([model] input)"),
                    &arch.input,
                    shape,
                ))
            }
        };
        match self {
            DataSpec::File { path } => {
                let (data, shape) = load_dataset_shaped(path)?;
                check(&shape, &format!("data `x` in {}", path.display()))?;
                Ok(TrainData::Finite(data))
            }
            DataSpec::Idx { images, labels, n, standardize } => {
                let options = IdxOptions { n: *n, standardize: *standardize };
                let (data, shape) = load_idx(images, labels, &options)?;
                check(&shape, &format!("IDX images in {}", images.display()))?;
                Ok(TrainData::Finite(data))
            }
            DataSpec::Teacher { .. } => {
                if arch.input.len() != 1 {
                    return Err(Error::Config(format!(
                        "data kind \"teacher\" draws vectors, but [model] input = {:?}",
                        arch.input
                    )));
                }
                self.build(arch.input[0], arch.d_out(), rng)
            }
        }
    }
}

/// Errors when the table `[section]` has `tag = value` (a variant without fields) and any other key.
fn no_keys_beside_tag(table: &toml::Table, section: &str, tag: &str, value: &str, hint: &str) -> Result<()> {
    let Some(toml::Value::Table(t)) = table.get(section) else { return Ok(()) };
    if t.get(tag).and_then(|v| v.as_str()) != Some(value) {
        return Ok(());
    }
    match t.keys().find(|k| k.as_str() != tag) {
        Some(k) => Err(Error::Config(format!(
            "{section}.{k} does not apply to {tag} = \"{value}\", which takes no other keys ({hint})"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_fills_in_the_toml_defaults() {
        let toml = "steps = 7\nlr = 0.1\n[model]\ndims = [2, 3]\n[optimizer]\nmethod = \"gd\"\n";
        let parsed = TrainConfig::from_toml(toml).unwrap();
        assert_eq!(TrainConfig::new(parsed.model.clone(), Method::Gd, 0.1, 7), parsed);
    }
}

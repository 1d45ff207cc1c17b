//! `[model]` of a training config, in one of two forms (exactly one):
//!
//! - the dense-chain form `dims = [d_0, …, d_L]` with its flags ([`ModelSpec`]);
//! - the module-tree form `input = [C, H, W]` (or `[d]`) and `layers = [...]`, the schema of architecture files
//!   (DESIGN.md §5, parsed by [`NetArch::from_table`]), with an optional `init = { file = "m.safetensors" }`
//!   (a state dict loaded strictly by name; default: PyTorch's initialisation, drawn from the run's seed).

use crate::error::{Error, Result};
use crate::model::ModelSpec;
use crate::net::NetArch;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::PathBuf;

/// The model of a training run.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelConfig {
    /// A dense chain (`dims = [...]`).
    Dense(ModelSpec),
    /// A module tree (`input` and `layers`).
    Tree(TreeSpec),
}

/// A module tree with its initialisation.
#[derive(Clone, Debug, PartialEq)]
pub struct TreeSpec {
    /// The resolved architecture.
    pub arch: NetArch,
    /// A state dict to start from (`init = { file = "…" }`); `None`: PyTorch's default initialisation.
    pub init_file: Option<PathBuf>,
}

impl From<ModelSpec> for ModelConfig {
    fn from(spec: ModelSpec) -> Self {
        ModelConfig::Dense(spec)
    }
}

impl From<NetArch> for ModelConfig {
    fn from(arch: NetArch) -> Self {
        ModelConfig::Tree(TreeSpec { arch, init_file: None })
    }
}

/// The keys of the dense form, named in the error when they appear beside `layers`.
const DENSE_KEYS: [&str; 7] =
    ["dims", "activation", "activations", "bias", "norm_layers", "init", "layer_scales"];

impl ModelConfig {
    /// Reads the `[model]` table; a table with both `dims` and `layers`, or neither, or a key of one form in
    /// the other, is an error naming the key.
    pub fn from_table(t: &toml::Table) -> Result<Self> {
        let cfg = |m: String| Error::Config(m);
        match (t.contains_key("dims"), t.contains_key("layers")) {
            (true, true) => Err(cfg(
                "[model] has both `dims` (a dense chain) and `layers` (a module tree); give exactly one".into(),
            )),
            (false, false) => Err(cfg(
                "[model] needs `dims = [d_0, …, d_L]` (a dense chain) or `input` and `layers` (a module tree, the \
                 schema of architecture files: docs/architecture-files.md)"
                    .into(),
            )),
            (true, false) => {
                if t.contains_key("input") {
                    return Err(cfg(
                        "[model] `input` belongs to the module-tree form (with `layers`); the dense form's input \
                         width is dims[0]"
                            .into(),
                    ));
                }
                if t.contains_key("activation") && t.contains_key("activations") {
                    return Err(cfg(format!(
                        "[model] has both activation = {} and activations = {}: the per-layer list sets every \
                         layer, so `activation` would be ignored; give one or the other",
                        t["activation"], t["activations"]
                    )));
                }
                ModelSpec::deserialize(toml::Value::Table(t.clone()))
                    .map(ModelConfig::Dense)
                    .map_err(|e| cfg(format!("[model]: {}", e.message())))
            }
            (false, true) => {
                let mut arch_table = toml::Table::new();
                let mut init_file = None;
                for (k, v) in t {
                    match k.as_str() {
                        "input" | "layers" => {
                            arch_table.insert(k.clone(), v.clone());
                        }
                        "init" => init_file = Some(tree_init(v)?),
                        _ if DENSE_KEYS.contains(&k.as_str()) => {
                            return Err(cfg(format!(
                                "[model] `{k}` belongs to the dense form (with `dims`); in the `layers` form \
                                 activations, biases and normalisations are modules and their arguments"
                            )))
                        }
                        _ => {
                            return Err(cfg(format!(
                                "[model] unknown key `{k}`; the module-tree form takes `input`, `layers` and `init`"
                            )))
                        }
                    }
                }
                let arch = NetArch::from_table(&arch_table).map_err(|e| match e {
                    Error::Config(m) => cfg(format!("[model] {m}")),
                    other => cfg(format!("[model] architecture: {other}")),
                })?;
                Ok(ModelConfig::Tree(TreeSpec { arch, init_file }))
            }
        }
    }

    /// The `[model]` table this config is written as (defaults filled in for the dense form).
    pub fn to_table(&self) -> toml::Table {
        match self {
            ModelConfig::Dense(spec) => match toml::Value::try_from(spec) {
                Ok(toml::Value::Table(mut t)) => {
                    // `activations` sets every layer; `activation` beside it is refused on reading.
                    if spec.activations.is_some() {
                        t.remove("activation");
                    }
                    t
                }
                _ => unreachable!("a ModelSpec serialises to a table"),
            },
            ModelConfig::Tree(tree) => {
                let mut t: toml::Table =
                    tree.arch.to_toml().parse().expect("the canonical architecture text parses");
                if let Some(f) = &tree.init_file {
                    let mut init = toml::Table::new();
                    init.insert("file".into(), toml::Value::String(f.display().to_string()));
                    t.insert("init".into(), toml::Value::Table(init));
                }
                t
            }
        }
    }

    /// The dense-chain spec, if this is the dense form.
    pub fn dense(&self) -> Option<&ModelSpec> {
        match self {
            ModelConfig::Dense(s) => Some(s),
            ModelConfig::Tree(_) => None,
        }
    }

    /// Checks what parsing cannot (the dense form's widths and flags; a tree is checked when parsed).
    pub fn validate(&self) -> Result<()> {
        match self {
            ModelConfig::Dense(spec) => spec.architecture().map(|_| ()),
            ModelConfig::Tree(_) => Ok(()),
        }
    }
}

/// `init = { file = "…" }` of the module-tree form.
fn tree_init(v: &toml::Value) -> Result<PathBuf> {
    let bad = || {
        Error::Config(format!(
            "[model] init = {v}: the module-tree form takes `init = {{ file = \"model.safetensors\" }}` (a state \
             dict loaded by name) or no `init` (PyTorch's default initialisation)"
        ))
    };
    let toml::Value::Table(t) = v else { return Err(bad()) };
    match (t.len(), t.get("file")) {
        (1, Some(toml::Value::String(s))) if !s.is_empty() => Ok(PathBuf::from(s)),
        _ => Err(bad()),
    }
}

impl Serialize for ModelConfig {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            ModelConfig::Dense(_) | ModelConfig::Tree(_) => self.to_table().serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ModelConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let t = toml::Table::deserialize(d)?;
        ModelConfig::from_table(&t).map_err(|e| match e {
            Error::Config(m) => serde::de::Error::custom(m),
            other => serde::de::Error::custom(other),
        })
    }
}

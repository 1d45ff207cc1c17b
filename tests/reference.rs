//! Loads the reference fixtures in `tests/data/<case>/` (copied from `shared/reference`).
#![allow(dead_code)]

use noether::data::load_dataset;
use noether::model::load_safetensors;
use noether::{Activation, Dataset, Loss, Model};
use serde_json::Value;
use std::path::PathBuf;

pub const CASES: &[&str] = &["deep_linear_mse", "relu_mlp_ce", "relu_mlp_mse", "tanh_mlp_mse"];

pub struct Case {
    pub name: String,
    pub model: Model<f64>,
    pub data: Dataset<f64>,
    pub loss: Loss,
    pub json: Value,
}

pub fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

pub fn load(name: &str) -> Case {
    let d = dir(name);
    let json: Value = serde_json::from_str(&std::fs::read_to_string(d.join("case.json")).unwrap()).unwrap();
    let hidden = Activation::parse(json["activations"][0].as_str().unwrap()).unwrap();
    let model = load_safetensors::<f64>(&d.join("model.safetensors"), hidden).unwrap();
    let acts: Vec<String> =
        json["activations"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
    for (l, a) in acts.iter().enumerate() {
        assert_eq!(model.arch.layers[l].activation, Activation::parse(a).unwrap());
    }
    let data = load_dataset::<f64>(&d.join("data.safetensors")).unwrap();
    let loss = Loss::parse(json["loss"].as_str().unwrap()).unwrap();
    Case { name: name.into(), model, data, loss, json }
}

pub fn all() -> Vec<Case> {
    CASES.iter().map(|c| load(c)).collect()
}

//! Training module trees through the one [`Trainer`]: the exact SGD identity `C_{t+1} − C_t = η²ĝᵀAĝ` for every
//! rescaling class of a conv net and of a residual net, the same trajectories as the dense trainer on an MLP
//! written both ways (GD, SGD, SDE, gradient flow), `[model] layers` configs through the CLI (errors, run
//! folders whose model carries its architecture, refusal of a second run) and a sweep over a tree config.

use crate::cli::{noether, stderr, tmp};
use faer::Mat;
use noether::data::{save_dataset_shaped, Dataset, Targets};
use noether::dynamics::{Method, Schedule, TrainConfig, TrainData, Trainer};
use noether::model::{load_safetensors, Activation, Model, ModelSpec};
use noether::net::{load_net, Net, NetArch};
use noether::symmetry::channels::{rescalings, Family};
use noether::Loss;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// conv 2→3 (3×3, padding 1), relu, max-pool 2, conv 3→4 (2×2), leaky relu, flatten, linear 16 → 3.
pub const CONV: &str = r#"
input = [2, 6, 6]
[[layers]]
kind = "conv2d"
in_channels = 2
out_channels = 3
kernel_size = 3
padding = 1
[[layers]]
kind = "relu"
[[layers]]
kind = "max_pool2d"
kernel_size = 2
[[layers]]
kind = "conv2d"
in_channels = 3
out_channels = 4
kernel_size = 2
[[layers]]
kind = "leaky_relu"
negative_slope = 0.1
[[layers]]
kind = "flatten"
[[layers]]
kind = "linear"
in_features = 16
out_features = 3
"#;

/// linear 5→6, relu, residual (linear 6→6, relu, linear 6→6), relu, linear 6 → 3.
pub const RESIDUAL: &str = r#"
input = [5]
[[layers]]
kind = "linear"
in_features = 5
out_features = 6
[[layers]]
kind = "relu"
[[layers]]
kind = "residual"
[[layers.body]]
kind = "linear"
in_features = 6
out_features = 6
[[layers.body]]
kind = "relu"
[[layers.body]]
kind = "linear"
in_features = 6
out_features = 6
[[layers]]
kind = "relu"
[[layers]]
kind = "linear"
in_features = 6
out_features = 3
"#;

/// `n` samples with standard normal inputs of `d` features and labels in `0..classes`.
pub fn class_data(n: usize, d: usize, classes: usize, seed: u64) -> Dataset<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = Mat::from_fn(n, d, |_, _| rng.random_range(-1.0..1.0));
    let y = (0..n).map(|_| rng.random_range(0..classes)).collect();
    Dataset::new(x, Targets::Classes(y)).unwrap()
}

/// Steps SGD (S = 4, η = 0.05, cross entropy) on `arch` for 1000 steps and returns the worst
/// `|ΔC − η²ĝᵀAĝ| / (ε·Σ_{k∈A}(θ_k² + η²ĝ_k²))` over steps and rescaling classes, the number of classes, and the
/// largest `η²|ĝᵀAĝ|` in the same units (how far above round-off the identity is tested).
fn worst_identity_error(arch_text: &str) -> (f64, usize, f64) {
    let arch = NetArch::parse(arch_text).unwrap();
    let syms = rescalings(&arch);
    let data = class_data(40, arch.input_len(), 3, 1);
    let net = Net::<f64>::init(arch.clone(), 2);
    let lr = 0.05;
    let opt = Method::Sgd { batch_size: 4, sampling: Default::default() };
    let config = TrainConfig::new(arch, opt, lr, 1000).with_loss(Loss::CrossEntropy);
    let mut tr =
        Trainer::<f64, Net<f64>>::new(net, TrainData::Finite(data), &config, ChaCha8Rng::seed_from_u64(3))
            .unwrap();
    tr.record_direction(true);
    let (mut worst, mut largest) = (0.0f64, 0.0f64);
    let mut before = vec![0.0; syms.len()];
    for _ in 0..1000 {
        for (b, s) in before.iter_mut().zip(&syms) {
            *b = s.charge(&tr.model.params);
        }
        tr.step().unwrap();
        let g = tr.last_direction().unwrap();
        let theta = &tr.model.params;
        for (s, b) in syms.iter().zip(&before) {
            let lhs = s.charge(theta) - b;
            let rhs = lr * lr * s.quad(g);
            let scale: f64 =
                s.entries.iter().map(|&(k, _)| theta[k] * theta[k] + lr * lr * g[k] * g[k]).sum();
            worst = worst.max((lhs - rhs).abs() / (f64::EPSILON * scale));
            largest = largest.max(rhs.abs() / (f64::EPSILON * scale));
        }
    }
    (worst, syms.len(), largest)
}

/// The exact identity holds at every one of 1000 steps to round-off: within 64 ε of the charge's scale
/// `Σ_{k∈A}(θ_k² + η²ĝ_k²)` (the sums behind C have at most a few hundred terms; their round-off is a few ε of
/// that scale, and `θᵀAĝ`, zero exactly, is zero to the round-off of ĝ).
#[test]
fn exact_sgd_identity_for_every_rescaling_class_of_a_conv_and_a_residual_net() {
    for (name, arch, classes) in [("conv", CONV, 7), ("residual", RESIDUAL, 12)] {
        let (worst, n, largest) = worst_identity_error(arch);
        eprintln!("{name}: worst |ΔC − η²ĝᵀAĝ| = {worst:.2} ε of the charge's scale over {n} classes (largest step {largest:.3e} ε)");
        assert_eq!(n, classes, "{name}: rescaling classes");
        assert!(
            largest > 1e8,
            "{name}: the charges barely move ({largest} ε); the test would not see a failure"
        );
        assert!(worst <= 64.0, "{name}: worst |ΔC − η²ĝᵀAĝ| = {worst} ε of the charge's scale");
    }
}

/// A residual stream's class has several writers and readers; the identity above covers such classes.
#[test]
fn the_residual_stream_classes_have_two_writers() {
    let syms = rescalings(&NetArch::parse(RESIDUAL).unwrap());
    let stream: Vec<_> = syms.iter().filter(|s| s.writers.len() == 2).collect();
    assert_eq!(stream.len(), 6);
    assert!(stream.iter().all(|s| s.family == Family::Rescale && s.readers.len() == 2));
}

/// The 4-6-5-3 dense chain with `activation`, and the same function and θ as a module tree.
fn mlp_both_ways(activation: Activation) -> (Model<f64>, Net<f64>) {
    let mut spec = ModelSpec::from_compact("4-6-5-3", activation, true).unwrap();
    spec.init = noether::model::Init::Gaussian(0.5);
    let model: Model<f64> = spec.build(&mut ChaCha8Rng::seed_from_u64(5)).unwrap();
    let arch = NetArch::from_dense(&model.arch).unwrap();
    let layout = model.arch.tensor_layout();
    let blocks: Vec<_> =
        arch.blocks.iter().map(|b| (b.name.clone(), b.range.clone(), b.shape.clone())).collect();
    assert_eq!(layout, blocks, "the dense θ layout is the state_dict's");
    let net = Net::from_params(arch, model.params.clone()).unwrap();
    (model, net)
}

/// Every optimiser on a tree follows the dense trainer's θ trajectory on the same MLP to round-off (the same
/// arithmetic, summed in other orders): at each of 40 steps `max_k |θ_tree − θ_dense| ≤ 1e-12·(1 + max_k |θ|)`.
#[test]
fn every_optimizer_on_a_tree_follows_the_dense_trainer_on_the_same_mlp() {
    let data = {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let x = Mat::from_fn(24, 4, |_, _| rng.random_range(-1.0..1.0));
        let y = Mat::from_fn(24, 3, |_, _| rng.random_range(-1.0..1.0));
        Dataset::new(x, Targets::Dense(y)).unwrap()
    };
    let methods = [
        (Method::Gd, Activation::Tanh),
        (Method::Sgd { batch_size: 5, sampling: Default::default() }, Activation::Relu),
        (Method::Sgd { batch_size: 2, sampling: Default::default() }, Activation::Tanh),
        (
            Method::Sgd { batch_size: 6, sampling: noether::data::Sampling::WithoutReplacement },
            Activation::Tanh,
        ),
        (Method::Sde { batch_size: 3 }, Activation::Tanh),
        (Method::GradientFlow { substeps: 3, tolerance: None }, Activation::Tanh),
        (Method::GradientFlow { substeps: 3, tolerance: Some(1e-8) }, Activation::Tanh),
    ];
    for (method, act) in methods {
        let (model, net) = mlp_both_ways(act);
        let spec = ModelSpec::from_compact("4-6-5-3", act, true).unwrap();
        let config = TrainConfig::new(spec, method.clone(), 0.05, 40)
            .with_weight_decay(1e-3)
            .with_schedule(Schedule::WarmupCosine { warmup_steps: 5, total_steps: 0, min_lr: 0.01 });
        config.validate().unwrap();
        let finite = || TrainData::Finite(data.clone());
        let rng = || ChaCha8Rng::seed_from_u64(11);
        let mut dense = Trainer::<f64>::new(model, finite(), &config, rng()).unwrap();
        let mut tree = Trainer::<f64, Net<f64>>::new(net, finite(), &config, rng()).unwrap();
        for step in 0..40 {
            dense.step().unwrap();
            tree.step().unwrap();
            let scale = 1.0 + dense.model.params.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let diff = dense
                .model
                .params
                .iter()
                .zip(&tree.model.params)
                .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
            assert!(diff <= 1e-12 * scale, "{method:?} step {step}: θ differs by {diff}");
            assert!((dense.last_loss() - tree.last_loss()).abs() <= 1e-12 * (1.0 + dense.last_loss().abs()));
        }
        assert_eq!(dense.time(), tree.time());
        assert_eq!(dense.flow_substeps(), tree.flow_substeps(), "{method:?}");
    }
}

/// A training config with `model` as its `[model]` body and `data` as its `[data]` body.
fn config_text(model: &str, data: &str) -> String {
    format!(
        "seed = 4\nsteps = 30\nlog_every = 10\nlr = 0.05\nloss = \"cross_entropy\"\n[model]\n{model}\n[data]\n{data}\n\
         [optimizer]\nmethod = \"sgd\"\nbatch_size = 4\n[observe]\nnoise_every = 10\nsharpness_every = 30\n"
    )
}

/// The `[model]` body of [`CONV`]: its `input` and its `[[layers]]` moved under `[model]`.
fn conv_model() -> String {
    CONV.replace("[[layers]]", "[[model.layers]]").replace("[[layers.body]]", "[[model.layers.body]]")
}

/// Writes image data `[N, 2, 6, 6]` with labels 0–2 and returns its path.
fn conv_data(dir: &std::path::Path, shape: &[usize]) -> String {
    let d = shape.iter().product();
    let p = dir.join("data.safetensors");
    save_dataset_shaped(&class_data(32, d, 3, 6), shape, &p).unwrap();
    p.display().to_string()
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// A `[model]` with `input` first (TOML puts `[[model.layers]]` after the table's keys).
fn tree_model_text() -> String {
    let body = conv_model();
    let (input, layers) = body.trim_start().split_once('\n').unwrap();
    format!("{input}\n{layers}")
}

#[test]
fn train_on_a_tree_config_writes_a_model_that_carries_its_architecture() {
    let d = tmp("train-net");
    let data = conv_data(&d, &[2, 6, 6]);
    let model = tree_model_text();
    let text = config_text("", &format!("kind = \"file\"\npath = \"{data}\""));
    // [model] keys go under the [model] header: put the layers after it.
    let text = text.replace("[model]\n\n", &format!("[model]\n{model}\n"));
    let cfg = write(&d, "cnn.toml", &text);
    let out = d.join("run").display().to_string();
    let o = noether(&["train", &cfg, "--out", &out]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let run = d.join("run");
    // The model reloads from its own metadata, under the architecture of the config.
    let net: Net<f64> = load_net(&run.join("model.safetensors"), None).unwrap();
    assert_eq!(net.arch, NetArch::parse(CONV).unwrap());
    // config.toml reloads to the same config.
    let written = std::fs::read_to_string(run.join("config.toml")).unwrap();
    let original = TrainConfig::from_toml(&text).unwrap();
    assert_eq!(TrainConfig::from_toml(&written).unwrap(), original);
    // Every symmetry logs its charge and noise; the sharpness has a value on its row.
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    let header = metrics.lines().next().unwrap();
    for col in
        ["norm_sq_0", "norm_sq_6", "c_rescale_0_u2", "c_rescale_3_u3", "tr_a_sigma_3_u0", "sharpness_top"]
    {
        assert!(header.split(',').any(|c| c == col), "{col} missing from {header}");
    }
    let last = metrics.lines().last().unwrap();
    assert!(last.split(',').all(|v| v.parse::<f64>().is_ok_and(f64::is_finite)), "{last}");
    // analyze reads the trained model without --arch, on the data the run wrote ([N, 2, 6, 6]).
    let m = run.join("model.safetensors").display().to_string();
    let dd = run.join("data.safetensors").display().to_string();
    let o = noether(&["analyze", "--model", &m, "--data", &dd, "--loss", "cross_entropy", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(json["neurons"].as_array().map(|a| a.len()), Some(7), "{json}");
    // A second run into the same folder is refused without --force.
    let o = noether(&["train", &cfg, "--out", &out]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    let o = noether(&["train", &cfg, "--out", &out, "--force"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn dense_models_written_by_train_carry_their_architecture_and_still_load_as_dense() {
    let d = tmp("train-dense-arch");
    let text = "steps = 5\nlr = 0.05\n[model]\ndims = [3, 4, 2]\nactivation = \"tanh\"\nbias = true\n\
                [data]\nkind = \"teacher\"\nn = 16\nteacher = { map = \"random\" }\n[optimizer]\nmethod = \"gd\"\n";
    let cfg = write(&d, "mlp.toml", text);
    let out = d.join("run");
    let o = noether(&["train", &cfg, "--out", &out.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let path = out.join("model.safetensors");
    let dense: Model<f64> = load_safetensors(&path, Activation::Tanh).unwrap();
    let net: Net<f64> = load_net(&path, None).unwrap();
    assert_eq!(net.arch, NetArch::from_dense(&dense.arch).unwrap());
    assert_eq!(net.params, dense.params);
}

#[test]
fn bad_model_sections_exit_2_naming_the_culprit() {
    let d = tmp("train-net-errors");
    let data = conv_data(&d, &[2, 6, 6]);
    let file = format!("kind = \"file\"\npath = \"{data}\"");
    // 72 features per sample like the net's input [2, 6, 6], in another shape.
    let other = tmp("train-net-errors-shape");
    let wrong = format!("kind = \"file\"\npath = \"{}\"", conv_data(&other, &[2, 4, 9]));
    let model = tree_model_text();
    let cases: Vec<(&str, String, String, &str)> = vec![
        ("both", format!("dims = [72, 3]\n{model}"), file.clone(), "both `dims`"),
        ("neither", "activation = \"relu\"".into(), file.clone(), "needs `dims"),
        ("unknown kind", model.replace("\"max_pool2d\"", "\"max_pool3d\""), file.clone(), "max_pool3d"),
        (
            "dense key",
            format!("activation = \"relu\"\n{model}"),
            file.clone(),
            "`activation` belongs to the dense",
        ),
        ("input with dims", "dims = [72, 3]\ninput = [72]".into(), file.clone(), "`input` belongs"),
        ("shape", model.clone(), wrong.clone(), "[2, 4, 9]"),
        ("input chain", model.replace("input = [2, 6, 6]", "input = [2, 4, 9]"), file.clone(), "in_features"),
        ("teacher on images", model.clone(), "kind = \"teacher\"\nn = 8".into(), "teacher"),
    ];
    for (name, model, data, needle) in cases {
        let text = config_text("", &data).replace("[model]\n\n", &format!("[model]\n{model}\n"));
        let cfg = write(&d, "bad.toml", &text);
        let out = d.join(format!("run-{}", name.replace(' ', "-"))).display().to_string();
        let o = noether(&["train", &cfg, "--out", &out]);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{name}: `{needle}` not in {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{name}: {}", stderr(&o));
        assert!(!std::path::Path::new(&out).join("metrics.csv").exists(), "{name}: left a run behind");
    }
    // The shape error names both shapes.
    let text = config_text("", &wrong).replace("[model]\n\n", &format!("[model]\n{model}\n"));
    let o = noether(&["train", &write(&d, "bad.toml", &text), "--out", &d.join("r").display().to_string()]);
    assert!(stderr(&o).contains("[2, 6, 6]") && stderr(&o).contains("[2, 4, 9]"), "{}", stderr(&o));
}

#[test]
fn a_sweep_over_a_tree_config_runs_every_point() {
    let d = tmp("sweep-net");
    let data = conv_data(&d, &[2, 6, 6]);
    let model = tree_model_text().replace("[[model.", "[[base.model.");
    let text = format!(
        "name = \"cnn\"\n[base]\nsteps = 20\nlog_every = 10\nlr = 0.05\nloss = \"cross_entropy\"\n[base.model]\n\
         {model}\n[base.data]\nkind = \"file\"\npath = \"{data}\"\n[base.optimizer]\nmethod = \"sgd\"\nbatch_size = 4\n\
         [grid]\nlr = [0.02, 0.05]\n[collect]\nfinal = [\"loss\", \"c_rescale_0_u0\"]\n"
    );
    let f = write(&d, "sweep.toml", &text);
    let out = d.join("out");
    let o = noether(&["sweep", &f, "--out", &out.display().to_string(), "-q"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.lines().next().unwrap().contains("c_rescale_0_u0"), "{csv}");
    assert!(!csv.contains("failed"), "{csv}");
}

/// A residual tree's config (bodies included) and a tree started from a state dict round-trip through TOML,
/// and `init = { file }` starts from that file's θ.
#[test]
fn tree_configs_round_trip_and_start_from_a_state_dict() {
    let d = tmp("train-net-init");
    let arch = NetArch::parse(RESIDUAL).unwrap();
    let start = Net::<f64>::init(arch.clone(), 9);
    let file = d.join("start.safetensors");
    noether::net::save_net::<f64, f64>(&start, &file).unwrap();
    let model = RESIDUAL
        .replace("[[layers]]", "[[model.layers]]")
        .replace("[[layers.body]]", "[[model.layers.body]]");
    let (input, layers) = model.trim_start().split_once('\n').unwrap();
    let text = format!(
        "steps = 3\nlr = 0.01\n[model]\n{input}\ninit = {{ file = \"{}\" }}\n{layers}\n[data]\nkind = \"teacher\"\nn = 12\n\
         teacher = {{ map = \"random\" }}\n[optimizer]\nmethod = \"gd\"\n",
        file.display()
    );
    let config = TrainConfig::from_toml(&text).unwrap();
    assert_eq!(TrainConfig::from_toml(&config.to_toml()).unwrap(), config, "{}", config.to_toml());
    let tr = Trainer::<f64, Net<f64>>::from_config(&config).unwrap();
    assert_eq!(tr.model, start);
    // Without `init`, PyTorch's initialisation is drawn from the seed: a new seed, a new θ.
    let plain = text.replace(&format!("init = {{ file = \"{}\" }}\n", file.display()), "");
    let a = Trainer::<f64, Net<f64>>::from_config(&TrainConfig::from_toml(&plain).unwrap()).unwrap();
    let b =
        Trainer::<f64, Net<f64>>::from_config(&TrainConfig::from_toml(&plain).unwrap().with_seed(1)).unwrap();
    assert_eq!(a.model.arch, arch);
    assert_ne!(a.model.params, b.model.params);
    // A bad init is an error naming the key.
    let bad = text.replace("init = {", "init = { gaussian = 0.1, ");
    let e = TrainConfig::from_toml(&bad).unwrap_err().to_string();
    assert!(e.contains("init"), "{e}");
}

/// `precision = "f32"` trains a tree in f32 and writes an f32 state dict that reloads.
#[test]
fn f32_tree_runs_write_f32_state_dicts() {
    let d = tmp("train-net-f32");
    let data = conv_data(&d, &[2, 6, 6]);
    let text = config_text("", &format!("kind = \"file\"\npath = \"{data}\""))
        .replace("[model]\n\n", &format!("precision = \"f32\"\n[model]\n{}\n", tree_model_text()));
    let cfg = write(&d, "f32.toml", &text);
    let out = d.join("run");
    let o = noether(&["train", &cfg, "--out", &out.display().to_string()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let net: Net<f32> = load_net(&out.join("model.safetensors"), None).unwrap();
    assert!(net.params.iter().all(|v| v.is_finite()));
}

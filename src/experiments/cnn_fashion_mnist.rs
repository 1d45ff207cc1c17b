//! cnn-fashion-mnist: the theory on a real conv net and real data. A small conv net (conv 1→8, relu, max-pool,
//! conv 8→16, relu, max-pool, flatten, linear → 10) is trained by SGD on Fashion-MNIST (Debian's
//! `dataset-fashion-mnist`), started off its noise equilibrium by a function-preserving rescaling of the first
//! conv's channels (λ = 1 on each), next to large-batch SGD (the GD reference: S_GD = 16·S, the same η).
//!
//! Claims under test:
//! - the exact identity `C_{t+1} − C_t = η² ĝᵀAĝ` at every step for every channel-rescaling class;
//! - the expected drift of every class's charge over a window, `Σ_k η²(Tr[AΣ(θ_k)]/S + ∇L(θ_k)ᵀA∇L(θ_k))`
//!   (sampling with replacement from the training subset), evaluated at the window's ends (trapezoid);
//! - SGD drifts towards the noise equilibrium of the joint rescaling orbit and the large-batch run much less:
//!   at the end, SGD's distance (max |λ*| of the joint problem) is below the large-batch run's.
//!
//! Without the data set the experiment says how to install it and decides nothing; it never substitutes data.

use super::{Context, Experiment};
use crate::data::{load_idx, IdxOptions};
use crate::data::{Dataset, Sampling, Targets};
use crate::dynamics::{Method, TrainConfig, TrainData, Trainer};
use crate::equilibrium::net::{apply_joint, net_analysis, NetAnalysis};
use crate::equilibrium::Time;
use crate::error::Result;
use crate::loss::Loss;
use crate::net::{Net, NetArch};
use crate::report::document::Rule;
use crate::report::{Check, Figure, Plot, Section, Series};
use crate::stats::net::{net_moments, MomentPath};
use crate::symmetry::channels::{rescalings, DiagSymmetry};
use std::path::PathBuf;

/// The experiment.
pub struct CnnFashionMnist;

const NAME: &str = "cnn-fashion-mnist";

/// Where Debian's `dataset-fashion-mnist` puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The architecture (an `nn.Sequential` in the file format).
pub const ARCH: &str = r#"
input = [1, 28, 28]
[[layers]]
kind = "conv2d"
in_channels = 1
out_channels = 8
kernel_size = 3
padding = 1
[[layers]]
kind = "relu"
[[layers]]
kind = "max_pool2d"
kernel_size = 2
[[layers]]
kind = "conv2d"
in_channels = 8
out_channels = 16
kernel_size = 3
padding = 1
[[layers]]
kind = "relu"
[[layers]]
kind = "max_pool2d"
kernel_size = 2
[[layers]]
kind = "flatten"
[[layers]]
kind = "linear"
in_features = 784
out_features = 10
"#;

struct Sizes {
    n_train: usize,
    n_test: usize,
    steps: usize,
    windows: usize,
    batch: usize,
    lr: f64,
}

fn sizes(quick: bool) -> Sizes {
    if quick {
        Sizes { n_train: 2048, n_test: 1000, steps: 600, windows: 6, batch: 16, lr: 0.05 }
    } else {
        Sizes { n_train: 12000, n_test: 10000, steps: 3000, windows: 10, batch: 32, lr: 0.05 }
    }
}

/// One run's record at the window boundaries.
struct Track {
    steps: Vec<f64>,
    /// Charge of every class at every boundary.
    charges: Vec<Vec<f64>>,
    /// Predicted expected drift per step `η²(Tr[AΣ]/S + ∇LᵀA∇L)` of every class at every boundary.
    drift: Vec<Vec<f64>>,
    /// Sum over the window of `η²ĝᵀAĝ` of every class, and of its square (for the standard error).
    window_sum: Vec<Vec<f64>>,
    window_sq: Vec<Vec<f64>>,
    /// max |λ*| of the joint problem and Tr Σ / Tr Σ* at every boundary.
    distance: Vec<f64>,
    trace_ratio: Vec<f64>,
    /// Worst `|ΔC − η²ĝᵀAĝ|` over steps and classes, in units of its round-off tolerance.
    identity_worst: f64,
}

fn analysis_at(
    net: &Net<f64>,
    data: &Dataset<f64>,
    syms: &[DiagSymmetry],
) -> Result<(NetAnalysis, Vec<f64>)> {
    let m = net_moments(net, data, Loss::CrossEntropy, MomentPath::Auto)?;
    let a = net_analysis(&m, &net.params, syms, Time::Continuous);
    // ∇LᵀA∇L per class.
    let gag = syms.iter().map(|s| s.quad(&m.mean_grad)).collect();
    Ok((a, gag))
}

fn run_track(
    ctx: &Context<'_>,
    net: Net<f64>,
    data: &Dataset<f64>,
    syms: &[DiagSymmetry],
    sz: &Sizes,
    batch: usize,
    seed: u64,
    phase: &str,
    done0: u64,
    total: u64,
) -> Result<(Track, Net<f64>)> {
    let method = Method::Sgd { batch_size: batch, sampling: Sampling::WithReplacement };
    let config =
        TrainConfig::new(net.arch.clone(), method, sz.lr, sz.steps as u64).with_loss(Loss::CrossEntropy);
    let rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed);
    let mut sgd = Trainer::<f64, Net<f64>>::new(net, TrainData::Finite(data.clone()), &config, rng)?;
    sgd.record_direction(true);
    let k = syms.len();
    let eta2 = sz.lr * sz.lr;
    let per = sz.steps / sz.windows;
    let mut t = Track {
        steps: Vec::new(),
        charges: Vec::new(),
        drift: Vec::new(),
        window_sum: Vec::new(),
        window_sq: Vec::new(),
        distance: Vec::new(),
        trace_ratio: Vec::new(),
        identity_worst: 0.0,
    };
    let record = |t: &mut Track, net: &Net<f64>, step: usize| -> Result<()> {
        let (a, gag) = analysis_at(net, data, syms)?;
        t.steps.push(step as f64);
        t.charges.push(syms.iter().map(|s| s.charge(&net.params)).collect());
        t.drift.push(
            a.symmetries.iter().zip(&gag).map(|(r, g)| eta2 * (r.tr_a_sigma / batch as f64 + g)).collect(),
        );
        t.distance.push(a.joint.lambda.iter().map(|l| l.abs()).fold(0.0, f64::max));
        t.trace_ratio.push(a.joint.trace_target / a.joint.trace_target_at_star);
        Ok(())
    };
    record(&mut t, &sgd.model, 0)?;
    let mut before = vec![0.0; k];
    for w in 0..sz.windows {
        let (mut sum, mut sq) = (vec![0.0; k], vec![0.0; k]);
        for _ in 0..per {
            for (b, s) in before.iter_mut().zip(syms) {
                *b = s.charge(&sgd.model.params);
            }
            sgd.step()?;
            let g = sgd.last_direction().expect("SGD keeps ĝ with record_direction");
            for (j, s) in syms.iter().enumerate() {
                let rhs = eta2 * s.quad(g);
                let lhs = s.charge(&sgd.model.params) - before[j];
                let (mut th, mut gs) = (0.0, 0.0);
                for &(i, _) in &s.entries {
                    th += sgd.model.params[i] * sgd.model.params[i];
                    gs += g[i] * g[i];
                }
                let tol = 32.0 * f64::EPSILON * th + 1e-9 * eta2 * gs;
                t.identity_worst = t.identity_worst.max((lhs - rhs).abs() / tol.max(f64::MIN_POSITIVE));
                sum[j] += rhs;
                sq[j] += rhs * rhs;
            }
        }
        t.window_sum.push(sum);
        t.window_sq.push(sq);
        record(&mut t, &sgd.model, (w + 1) * per)?;
        (ctx.progress)(done0 + (w + 1) as u64, total, phase);
    }
    Ok((t, sgd.model))
}

fn accuracy(net: &Net<f64>, data: &Dataset<f64>) -> Result<f64> {
    let Targets::Classes(labels) = &data.y else { return Ok(f64::NAN) };
    let mut tape = crate::net::Tape::new(&net.arch, crate::net::CHUNK.min(data.len()));
    let mut right = 0usize;
    crate::net::for_each_chunk(&mut tape, data, |t, r| {
        t.forward(&net.params);
        let f = t.output();
        for (b, n) in r.enumerate() {
            let best =
                (0..f.ncols()).max_by(|&i, &j| f[(b, i)].partial_cmp(&f[(b, j)]).unwrap()).unwrap_or(0);
            right += usize::from(best == labels[n]);
        }
        Ok(())
    })?;
    Ok(right as f64 / data.len() as f64)
}

impl Experiment for CnnFashionMnist {
    fn name(&self) -> &'static str {
        NAME
    }
    fn description(&self) -> &'static str {
        "A conv net trained by SGD on Fashion-MNIST: the exact Noether identity for every channel class, the predicted charge drift, and the drift towards the noise equilibrium"
    }

    fn run(&self, ctx: &Context<'_>) -> Result<Section> {
        let dir = PathBuf::from(FASHION_MNIST_DIR);
        let files = [
            "train-images-idx3-ubyte.gz",
            "train-labels-idx1-ubyte.gz",
            "t10k-images-idx3-ubyte.gz",
            "t10k-labels-idx1-ubyte.gz",
        ];
        if let Some(missing) = files.iter().find(|f| !dir.join(f).exists()) {
            let text = format!(
                "Skipped: the Fashion-MNIST files are not on this machine ({} is missing). Install them with \
                 `apt-get install dataset-fashion-mnist` (Debian) and run again; this experiment never substitutes \
                 other data.",
                dir.join(missing).display()
            );
            return Ok(Section::new(NAME, text).check(
                Check::absolute(NAME, "Fashion-MNIST is installed", 1.0, 0.0, 0.0)
                    .tests("the data set is present")
                    .undecided(),
            ));
        }
        let sz = sizes(ctx.quick);
        let opts = |n| IdxOptions { n: Some(n), standardize: true };
        let (train, _) = load_idx::<f64>(&dir.join(files[0]), &dir.join(files[1]), &opts(sz.n_train))?;
        let (test, _) = load_idx::<f64>(&dir.join(files[2]), &dir.join(files[3]), &opts(sz.n_test))?;
        let arch = NetArch::parse(ARCH)?;
        std::fs::create_dir_all(&ctx.dir).map_err(|e| crate::error::Error::io(&ctx.dir, e))?;
        std::fs::write(ctx.dir.join("arch.toml"), ARCH).map_err(|e| crate::error::Error::io(&ctx.dir, e))?;
        let syms = rescalings(&arch);
        let mut net = Net::<f64>::init(arch, ctx.seed);
        // Off equilibrium by a function-preserving move: λ = 1 on the first conv's channel classes.
        let lambda: Vec<f64> = syms.iter().map(|s| if s.module == "0" { 1.0 } else { 0.0 }).collect();
        apply_joint(&mut net.params, &syms, &lambda);
        let total = 2 * sz.windows as u64;
        let (sgd, sgd_net) =
            run_track(ctx, net.clone(), &train, &syms, &sz, sz.batch, ctx.seed + 1, "SGD", 0, total)?;
        let big = 16 * sz.batch;
        let (gd, gd_net) = run_track(
            ctx,
            net,
            &train,
            &syms,
            &sz,
            big,
            ctx.seed + 2,
            "large-batch SGD",
            sz.windows as u64,
            total,
        )?;

        // Drift over windows: measured Σ η²ĝᵀAĝ against the trapezoid of the predicted per-step drift.
        let per = (sz.steps / sz.windows) as f64;
        let (mut within, mut pairs) = (0usize, 0usize);
        let mut scatter = Vec::new();
        for w in 0..sz.windows {
            for j in 0..syms.len() {
                let pred = 0.5 * per * (sgd.drift[w][j] + sgd.drift[w + 1][j]);
                let meas = sgd.window_sum[w][j];
                let mean = meas / per;
                let var = (sgd.window_sq[w][j] / per - mean * mean).max(0.0);
                // Standard error of the window sum (steps independent given θ) and the trapezoid's own error.
                let se = (var * per).sqrt();
                let disc = 0.5 * per * (sgd.drift[w + 1][j] - sgd.drift[w][j]).abs();
                let sigma = (se * se + disc * disc).sqrt();
                within += usize::from((meas - pred).abs() <= 3.0 * sigma);
                pairs += 1;
                scatter.push((pred, meas));
            }
        }
        let frac = within as f64 / pairs as f64;
        let acc_sgd = accuracy(&sgd_net, &test)?;
        let acc_gd = accuracy(&gd_net, &test)?;
        let (d0, d_sgd, d_gd) =
            (sgd.distance[0], *sgd.distance.last().unwrap(), *gd.distance.last().unwrap());

        let text = format!(
            "conv 1→8 → relu → max-pool → conv 8→16 → relu → max-pool → flatten → linear → 10 (P = {}), {} rescaling \
             classes (8 + 16 channels), trained on the first {} Fashion-MNIST training images (standardised per pixel) \
             by SGD (S = {}, η = {}) and by large-batch SGD (S = {big}, same η) for {} steps each, both started at the \
             same point: PyTorch's default init moved off its noise equilibrium by e^{{λA}} with λ = 1 on the first \
             conv's 8 channel classes (the same function). Test accuracy on {} test images: SGD {:.3}, large-batch {:.3}. \
             Distance to the joint noise equilibrium (max |λ*|): {d0:.3} at the start, {d_sgd:.3} after SGD, {d_gd:.3} \
             after large-batch SGD.",
            sgd_net.params.len(),
            syms.len(),
            sz.n_train,
            sz.batch,
            sz.lr,
            sz.steps,
            sz.n_test,
            acc_sgd,
            acc_gd
        );
        let mut section =
            Section::new(NAME, text).tests("noise equilibrium of a real conv net (extension of the paper)");
        section = section
            .check(
                Check::new(
                    NAME,
                    "C_{t+1} − C_t = η²ĝᵀAĝ at every step, every class (worst / round-off tolerance)",
                    1.0,
                    sgd.identity_worst.max(gd.identity_worst),
                    0.0,
                    Rule::AtMost,
                )
                .tests("the exact discrete Noether identity"),
            )
            .check(
                Check::new(
                    NAME,
                    "window drifts of every class within 3σ of Σ η²(Tr[AΣ]/S + ∇LᵀA∇L) (fraction)",
                    0.9,
                    frac,
                    0.0,
                    Rule::AtLeast,
                )
                .tests("the expected drift of the Noether charge per step"),
            )
            .check(
                Check::new(
                    NAME,
                    "SGD's final distance to the noise equilibrium (max |λ*|) below large-batch SGD's",
                    d_gd,
                    d_sgd,
                    0.0,
                    Rule::AtMost,
                )
                .tests("SGD drifts to the noise equilibrium (Theorem: attractive θ*)"),
            )
            .check(
                Check::absolute(NAME, "test accuracy after SGD", f64::NAN, acc_sgd, 0.0)
                    .measurement()
                    .tests("training works"),
            )
            .check(
                Check::absolute(
                    NAME,
                    "Tr Σ / Tr Σ* at the end of SGD",
                    1.0,
                    *sgd.trace_ratio.last().unwrap(),
                    0.0,
                )
                .measurement()
                .tests("noise equilibrium (distance in noise)"),
            )
            .check(
                Check::absolute(
                    NAME,
                    "Tr Σ / Tr Σ* at the end of large-batch SGD",
                    1.0,
                    *gd.trace_ratio.last().unwrap(),
                    0.0,
                )
                .measurement()
                .tests("noise equilibrium (distance in noise)"),
            );

        // Figures: charges of the first conv's channels, distance to equilibrium, drift scatter.
        let mut charges = Plot::new("Charges of conv `0`'s channel classes", "step", "C = θᵀAθ");
        for (j, s) in syms.iter().enumerate().filter(|(_, s)| s.module == "0").take(4) {
            let pts = |t: &Track| t.steps.iter().zip(&t.charges).map(|(&x, c)| (x, c[j])).collect::<Vec<_>>();
            charges = charges
                .series(Series::line(format!("SGD ch {}", s.unit.unwrap_or(0)), pts(&sgd)))
                .series(Series::line(format!("large batch ch {}", s.unit.unwrap_or(0)), pts(&gd)));
        }
        section = section.figure(
            Figure::single(charges).save(&ctx.dir, "charges")?,
            "Charges of four of the first conv's channel classes: SGD moves them, large-batch SGD much less.",
        );
        let dist = Plot::new("Distance to the noise equilibrium", "step", "max |λ*| (joint)")
            .series(Series::line(
                "SGD",
                sgd.steps.iter().copied().zip(sgd.distance.iter().copied()).collect(),
            ))
            .series(Series::line(
                format!("large batch (S = {big})"),
                gd.steps.iter().copied().zip(gd.distance.iter().copied()).collect(),
            ));
        section = section.figure(
            Figure::single(dist).save(&ctx.dir, "distance")?,
            "max |λ*| of the joint rescaling equilibrium along training.",
        );
        let sc =
            Plot::new("Charge drift over windows", "predicted Σ η²(Tr[AΣ]/S + ∇LᵀA∇L)", "measured Σ η²ĝᵀAĝ")
                .series(Series::new("(class, window)", scatter, crate::report::Style::Markers))
                .diagonal();
        section = section.figure(
            Figure::single(sc).save(&ctx.dir, "drift")?,
            "Measured against predicted drift of every class over every window (SGD).",
        );
        Ok(section)
    }
}

//! `noether sharpness`: top Hessian eigenvalues and trace, optionally along a symmetry orbit.

use crate::common::{ExportArgs, Global, ModelData};
use crate::progress;
use anyhow::{bail, Context, Result};
use noether::curvature::{
    orbit_sharpness, parse_grid, Curvature, HvpOptions, LanczosOptions, Orbit, Sharpness, SharpnessOptions,
    Subset, TraceMethod,
};
use noether::report::records::SharpnessRecord;
use noether::symmetry::{enumerate, Generator};
use noether::Architecture;
use serde::Serialize;
use std::process::ExitCode;

/// Arguments of `noether sharpness` (serialised as the exports' `config`).
#[derive(clap::Args, Debug, Serialize)]
pub struct Args {
    #[command(flatten)]
    #[serde(flatten)]
    md: ModelData,
    /// Number of top eigenvalues k (1 ≤ k ≤ P), by Lanczos.
    #[arg(long, default_value_t = 1)]
    top: usize,
    /// Also report the smallest eigenvalue.
    #[arg(long)]
    bottom: bool,
    /// Trace: exact (P HVPs), hutchinson, hutch++ or none. Default: exact when P ≤ 2000, else hutchinson.
    #[arg(long)]
    trace: Option<String>,
    /// Probes for hutchinson (products for hutch++).
    #[arg(long, default_value_t = 100)]
    probes: usize,
    /// Sharpness along a symmetry orbit e^{λA}θ over λ = LO..HI (N points), e.g. `--orbit -1:1:21`.
    #[arg(long, value_name = "LO:HI:N", allow_hyphen_values = true)]
    orbit: Option<String>,
    /// Orbit generator: rescale:LAYER:UNIT, scale:LAYER or double_rotation:LAYER (B = I). Default: the model's first symmetry.
    #[arg(long)]
    generator: Option<String>,
    /// Use the Gauss–Newton matrix instead of the Hessian.
    #[arg(long)]
    gauss_newton: bool,
    /// Use a fixed random subset of this many samples (seeded by --seed).
    #[arg(long)]
    subset: Option<usize>,
    /// Seed of the Lanczos start vector, trace probes and subset.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Lanczos relative residual tolerance.
    #[arg(long, default_value_t = 1e-8)]
    tol: f64,
    /// Lanczos iteration cap (memory: max_iter · P doubles).
    #[arg(long, default_value_t = 300)]
    max_iter: usize,
    /// Samples per chunk of the HVP.
    #[arg(long, default_value_t = 4096)]
    chunk: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    #[serde(skip)]
    json: bool,
    #[command(flatten)]
    #[serde(skip)]
    export: ExportArgs,
}

/// One point of the orbit curve in the JSON output.
#[derive(Serialize)]
struct Point {
    lambda: f64,
    top_eigenvalue: f64,
    trace: Option<f64>,
    loss: f64,
}

/// The JSON document.
#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    at_theta: &'a Sharpness,
    curvature: Curvature,
    #[serde(skip_serializing_if = "Option::is_none")]
    orbit_generator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    orbit: Option<Vec<Point>>,
}

/// Parses `rescale:L:J`, `scale:L` or `double_rotation:L`.
fn parse_generator(s: &str, arch: &Architecture) -> Result<Generator> {
    let parts: Vec<&str> = s.split(':').map(str::trim).collect();
    let num = |i: usize, what: &str| -> Result<usize> {
        parts
            .get(i)
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("generator `{s}`: {what} is not a non-negative integer"))
    };
    let g = match (parts[0], parts.len()) {
        ("rescale", 3) => Generator::Rescale { layer: num(1, "LAYER")?, unit: num(2, "UNIT")? },
        ("scale", 2) => Generator::Scale { layer: num(1, "LAYER")? },
        ("double_rotation", 2) => {
            let layer = num(1, "LAYER")?;
            let d = arch.layers.get(layer).map_or(0, |l| l.d_out);
            Generator::DoubleRotation { layer, b: faer::Mat::identity(d, d) }
        }
        _ => bail!("generator `{s}` not understood; expected rescale:LAYER:UNIT, scale:LAYER or double_rotation:LAYER"),
    };
    g.check(arch)?;
    Ok(g)
}

pub fn run(args: Args, global: &Global) -> Result<ExitCode> {
    if let Some((net, data, loss)) = args.md.load_net()? {
        crate::arch::refuse_exports(&args.export)?;
        if args.orbit.is_some() || args.generator.is_some() || args.gauss_newton || args.subset.is_some() {
            bail!("--orbit, --generator, --gauss-newton and --subset are not available with an architecture yet");
        }
        let p = net.arch.n_params();
        if args.top == 0 || args.top > p {
            bail!("--top {} is out of range: the model has P = {p} parameters; use 1 ≤ k ≤ {p}", args.top);
        }
        let opts = LanczosOptions { max_iter: args.max_iter, tol: args.tol };
        let ok = crate::arch::sharpness(
            &net,
            &data,
            loss,
            (args.top, args.bottom),
            args.trace.as_deref(),
            args.probes,
            opts,
            args.seed,
            args.json,
        )?;
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    let exports = args.export.create()?;
    let (model, data, loss) = args.md.load()?;
    let p = model.arch.n_params();
    if args.top == 0 || args.top > p {
        bail!("--top {} is out of range: the model has P = {p} parameters; use 1 ≤ k ≤ {p}", args.top);
    }
    let trace = match args.trace.as_deref() {
        None => Some(if p <= 2000 { TraceMethod::Exact } else { TraceMethod::Hutchinson }),
        Some("none") => None,
        Some(s) => Some(TraceMethod::parse(s)?),
    };
    // Validate the orbit before any expensive work.
    let orbit = match &args.orbit {
        None => None,
        Some(range) => {
            let grid = parse_grid(range)?;
            let generator = match &args.generator {
                Some(s) => parse_generator(s, &model.arch)?,
                None => match enumerate(&model.arch).first() {
                    Some(sym) => sym.generator(&model.arch),
                    None => bail!(noether::Error::NoSymmetry(format!(
                        "the model ({}) has no exponential symmetry to move along; --orbit needs one",
                        model.arch.layers.iter().map(|l| l.activation.name()).collect::<Vec<_>>().join(", ")
                    ))),
                },
            };
            Some((grid, Orbit::Generator(generator)))
        }
    };
    let opts = SharpnessOptions {
        top: args.top,
        bottom: args.bottom,
        trace,
        trace_samples: args.probes,
        lanczos: LanczosOptions { max_iter: args.max_iter, tol: args.tol },
        hvp: HvpOptions {
            curvature: if args.gauss_newton { Curvature::GaussNewton } else { Curvature::Hessian },
            chunk: args.chunk,
            cache: true,
        },
        subset: args.subset.map_or(Subset::All, |n| Subset::Random { n }),
        seed: args.seed,
    };
    let at_theta = noether::curvature::sharpness(&model, &data, loss, &opts)?;
    let mut records = SharpnessRecord::at_theta(&at_theta);
    let mut points = None;
    if let Some((grid, orbit)) = &orbit {
        let bar = progress::bar(grid.len() as u64, format!("orbit {}", orbit.label()), global);
        let mut pts = Vec::with_capacity(grid.len());
        for &lambda in grid {
            let o = orbit_sharpness(&model, &data, loss, orbit, &[lambda], &opts)?;
            records.push(SharpnessRecord::on_orbit(&o[0]));
            pts.push(Point {
                lambda,
                top_eigenvalue: o[0].top_eigenvalue,
                trace: o[0].trace,
                loss: o[0].loss,
            });
            bar.inc(1);
        }
        bar.finish_and_clear();
        points = Some(pts);
    }
    let out = Output {
        at_theta: &at_theta,
        curvature: opts.hvp.curvature,
        orbit_generator: orbit.as_ref().map(|(_, o)| o.label()),
        orbit: points,
    };
    crate::common::export(&exports, "sharpness", &args, Some(args.seed), &records)?;
    if exports.to_stdout() {
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    let s = &at_theta;
    let what = if args.gauss_newton { "Gauss–Newton" } else { "Hessian" };
    println!("{what} of the mean loss ({} samples, P = {}), loss {:.6e}", s.samples, s.n_params, s.loss);
    for (i, e) in s.top_eigenvalues.iter().enumerate() {
        println!("  λ_{:<3} {e:>14.6e}", i + 1);
    }
    if let Some(b) = s.bottom_eigenvalue {
        println!("  λ_min {b:>14.6e}");
    }
    println!(
        "  Lanczos: {} iterations, residual {:.2e}, {}",
        s.lanczos.iterations,
        s.lanczos.residual,
        if s.lanczos.converged { "converged" } else { "NOT converged (raise --max-iter or --tol)" }
    );
    if let (Some(t), Some(m), Some(ci)) = (s.trace, s.trace_method, s.trace_ci95) {
        if m == TraceMethod::Exact {
            println!("  trace  {t:>14.6e} (exact)");
        } else {
            println!("  trace  {t:>14.6e} ({}; 95% interval [{:.6e}, {:.6e}])", m.name(), ci[0], ci[1]);
        }
    }
    println!("  {} Hessian-vector products", s.hvps);
    if let (Some((_, orbit)), Some(pts)) = (&orbit, &out.orbit) {
        println!("\nalong the orbit e^(λA)θ of {}:", orbit.label());
        println!("  {:>10} {:>14} {:>14} {:>14}", "lambda", "top_eig", "trace", "loss");
        for pt in pts {
            let tr = pt.trace.map_or("-".to_string(), |t| format!("{t:.6e}"));
            println!("  {:>10.4} {:>14.6e} {:>14} {:>14.6e}", pt.lambda, pt.top_eigenvalue, tr, pt.loss);
        }
    }
    Ok(ExitCode::SUCCESS)
}

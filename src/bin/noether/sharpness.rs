//! `noether sharpness`: top eigenvalues and trace of the Hessian (or the Gauss–Newton matrix), optionally along a
//! symmetry orbit.

use crate::common::{ExportArgs, Global, ModelData, PrecisionArg};
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
    /// Probes for hutchinson (products for hutch++); default 100.
    #[arg(long)]
    probes: Option<usize>,
    /// Sharpness along a symmetry orbit e^{λA}θ over λ = LO..HI (N points), e.g. `--orbit -1:1:21`.
    #[arg(long, value_name = "LO:HI:N", allow_hyphen_values = true)]
    orbit: Option<String>,
    /// Orbit generator: rescale:LAYER:UNIT, scale:LAYER or double_rotation:LAYER (B = I). Default: the model's first symmetry.
    #[arg(long)]
    generator: Option<String>,
    /// Use the Gauss–Newton matrix G = (1/N) Σ_n J_nᵀ ∇²_f ℓ_n J_n (PSD) instead of the Hessian (both engines).
    #[arg(long)]
    gauss_newton: bool,
    /// Use a fixed random subset of this many samples (seeded by --seed).
    #[arg(long)]
    subset: Option<usize>,
    /// Seed of the Lanczos start vector, trace probes and subset.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Lanczos relative residual tolerance.
    #[arg(long, default_value_t = 1e-8, allow_hyphen_values = true)]
    tol: f64,
    /// Lanczos iteration cap (memory: max_iter · P doubles).
    #[arg(long, default_value_t = 300)]
    max_iter: usize,
    /// Float type of the Hessian (or Gauss–Newton) vector products: f64, or f32 summed in f64 (runs on the
    /// module-tree engine, a dense-chain file too).
    #[arg(long, value_enum, default_value_t = PrecisionArg::F64)]
    precision: PrecisionArg,
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

/// One point of the orbit curve in the JSON output (both engines).
#[derive(Serialize)]
pub struct Point {
    pub lambda: f64,
    pub top_eigenvalue: f64,
    pub trace: Option<f64>,
    pub loss: f64,
    /// Lanczos converged there and every value is finite.
    pub converged: bool,
}

/// The largest |λ| whose orbit point e^{λA}θ the Lanczos run survives in a float type of largest value `max`:
/// e^{λA} multiplies parameters by up to e^{|λ|}, Hessian entries grow like e^{2|λ|} and Lanczos squares them, so
/// beyond |λ| ≈ (ln max − 2 ln(scale) − ln P)/4 the products overflow to inf/NaN (scale = the largest |eigenvalue|
/// at θ, at least 1; a further factor 1e3 of margin).
pub fn largest_safe_lambda(at_theta: &Sharpness, p: usize, max: f64) -> f64 {
    let scale =
        at_theta.top_eigenvalues[0].abs().max(at_theta.bottom_eigenvalue.unwrap_or(0.0).abs()).max(1.0);
    ((max.ln() - 2.0 * scale.ln() - (p as f64).ln() - 1e3f64.ln()) / 4.0).floor()
}

/// The orbit table of the text output.
pub fn print_orbit(label: &str, pts: &[Point]) -> std::io::Result<()> {
    outln!("\nalong the orbit e^(λA)θ of {label}:");
    outln!("  {:>10} {:>14} {:>14} {:>14}", "lambda", "top_eig", "trace", "loss");
    for pt in pts {
        let tr = pt.trace.map_or("-".to_string(), |t| format!("{t:.6e}"));
        let flag = if pt.converged { "" } else { "   NOT converged" };
        outln!("  {:>10.4} {:>14.6e} {:>14} {:>14.6e}{flag}", pt.lambda, pt.top_eigenvalue, tr, pt.loss);
    }
    Ok(())
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

/// A dense chain's generator (`rescale:LAYER:UNIT`, `scale:LAYER`, `double_rotation:LAYER`) in the names of
/// the chain's module tree (`layers.{LAYER}`), where a dense file runs in f32; other text is passed on.
fn dense_generator_on_tree(g: &str) -> String {
    let mut parts: Vec<String> = g.split(':').map(str::to_string).collect();
    let family = matches!(parts[0].as_str(), "rescale" | "scale" | "double_rotation");
    if family && parts.len() >= 2 && parts[1].parse::<usize>().is_ok() {
        parts[1] = format!("layers.{}", parts[1]);
    }
    parts.join(":")
}

/// Flags out of range, or that only matter with another flag, before any work.
fn check_flags(args: &Args) -> Result<()> {
    if !(args.tol.is_finite() && args.tol > 0.0 && args.tol < 1.0) {
        bail!(
            "--tol {}: the Lanczos relative residual tolerance must lie in (0, 1) (at 1 or above any Ritz value \
             passes)",
            crate::common::flag_num(args.tol)
        );
    }
    if args.max_iter == 0 {
        bail!("--max-iter 0: Lanczos needs at least one iteration");
    }
    if args.chunk == 0 {
        bail!("--chunk 0: the HVP needs chunks of at least one sample");
    }
    if args.generator.is_some() && args.orbit.is_none() {
        bail!("--generator only applies with --orbit LO:HI:N; add --orbit or drop --generator");
    }
    let stochastic = matches!(args.trace.as_deref(), Some("hutchinson" | "hutch++") | None);
    if let (Some(n), false) = (args.probes, stochastic) {
        bail!(
            "--probes {n} only applies to --trace hutchinson or hutch++, not --trace {}",
            args.trace.as_deref().unwrap_or("")
        );
    }
    if args.probes == Some(0) {
        bail!("--probes 0: a stochastic trace needs at least one probe");
    }
    Ok(())
}

/// The probes of the stochastic trace, once P is known: `--probes` without `--trace` is an error when the
/// default trace is the exact one (P ≤ 2000), which uses none.
fn probes_for(args: &Args, p: usize) -> Result<usize> {
    if let (Some(n), None, true) = (args.probes, &args.trace, p <= EXACT_TRACE_MAX_P) {
        bail!(
            "--probes {n}: the model has P = {p} ≤ {EXACT_TRACE_MAX_P} parameters, so the trace is exact (no \
             probes); add --trace hutchinson (or hutch++) or drop --probes"
        );
    }
    Ok(args.probes.unwrap_or(100))
}

/// Up to this many parameters the default trace is exact (P HVPs).
pub const EXACT_TRACE_MAX_P: usize = 2000;

/// The trace method of `--trace` (default: exact up to [`EXACT_TRACE_MAX_P`] parameters, else Hutchinson).
fn trace_for(trace: Option<&str>, p: usize) -> Result<Option<TraceMethod>> {
    Ok(match trace {
        None => Some(if p <= EXACT_TRACE_MAX_P { TraceMethod::Exact } else { TraceMethod::Hutchinson }),
        Some("none") => None,
        Some(s) => Some(TraceMethod::parse(s)?),
    })
}

pub fn run(args: Args, global: &Global) -> Result<ExitCode> {
    check_flags(&args)?;
    let f32 = args.precision == PrecisionArg::F32;
    let mut from_dense = false;
    let tree = match args.md.load_net()? {
        Some(t) => Some(t),
        // A dense-chain file in f32 runs on the module-tree engine (the same function and θ layout).
        None if f32 => {
            let (model, data, loss) = args.md.load()?;
            let arch = noether::net::NetArch::from_dense(&model.arch)?;
            from_dense = true;
            Some((noether::net::Net::from_params(arch, model.params.clone())?, data, loss))
        }
        None => None,
    };
    if let Some((net, data, loss)) = tree {
        let exports = args.export.create(&args.md.files())?;
        let data = match args.subset {
            Some(n) => noether::curvature::select_subset(&data, Subset::Random { n }, args.seed)
                .map_err(|e| anyhow::anyhow!("--subset {n}: {e}"))?
                .into_owned(),
            None => data,
        };
        let p = net.arch.n_params();
        if args.top == 0 || args.top > p {
            bail!("--top {} is out of range: the model has P = {p} parameters; use 1 ≤ k ≤ {p}", args.top);
        }
        noether::curvature::check_basis_memory(args.max_iter.min(p), p)
            .map_err(|e| anyhow::anyhow!("--max-iter {}: {e}", args.max_iter))?;
        let orbit = match &args.orbit {
            Some(range) => Some((
                parse_grid(range)?,
                args.generator
                    .as_deref()
                    .map(|g| if from_dense { dense_generator_on_tree(g) } else { g.into() }),
            )),
            None => None,
        };
        let req = crate::arch::SharpnessRequest {
            top: args.top,
            bottom: args.bottom,
            trace: trace_for(args.trace.as_deref(), p)?,
            probes: probes_for(&args, p)?,
            lanczos: LanczosOptions { max_iter: args.max_iter, tol: args.tol },
            seed: args.seed,
            f32,
            curvature: if args.gauss_newton { Curvature::GaussNewton } else { Curvature::Hessian },
            chunk: args.chunk,
            orbit,
        };
        let ok = crate::arch::sharpness(&net, &data, loss, &req, global, (&exports, &args), args.json)?;
        if !ok {
            eprintln!(
                "warning: some results did not converge or are not finite (flagged `converged: false`)"
            );
        }
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    let exports = args.export.create(&args.md.files())?;
    let (model, data, loss) = args.md.load()?;
    if let Some(n) = args.subset {
        if n == 0 || n > data.len() {
            bail!(
                "--subset {n}: the data hold N = {} samples; use 1 ≤ --subset ≤ {}",
                data.len(),
                data.len()
            );
        }
    }
    let p = model.arch.n_params();
    if args.top == 0 || args.top > p {
        bail!("--top {} is out of range: the model has P = {p} parameters; use 1 ≤ k ≤ {p}", args.top);
    }
    let trace = trace_for(args.trace.as_deref(), p)?;
    let probes = probes_for(&args, p)?;
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
        trace_samples: probes,
        lanczos: LanczosOptions { max_iter: args.max_iter, tol: args.tol },
        hvp: HvpOptions {
            curvature: if args.gauss_newton { Curvature::GaussNewton } else { Curvature::Hessian },
            chunk: args.chunk,
        },
        subset: args.subset.map_or(Subset::All, |n| Subset::Random { n }),
        seed: args.seed,
    };
    noether::curvature::check_basis_memory(opts.lanczos.max_iter.min(p), p)
        .map_err(|e| anyhow::anyhow!("--max-iter {}: {e}", args.max_iter))?;
    let at_theta = noether::curvature::sharpness(&model, &data, loss, &opts)?;
    let mut reliable = at_theta.is_reliable();
    let mut records = SharpnessRecord::at_theta(&at_theta);
    let mut points = None;
    if let Some((grid, orbit)) = &orbit {
        let safe = largest_safe_lambda(&at_theta, p, f64::MAX);
        if let Some(&bad) = grid.iter().find(|l| l.abs() > safe) {
            bail!(
                "--orbit {}: λ = {bad} would overflow (the Hessian at e^(λA)θ grows like e^(2|λ|)); the largest \
                 safe |λ| for this model is {safe}",
                args.orbit.as_deref().unwrap_or("")
            );
        }
        let bar = progress::bar(grid.len() as u64, format!("orbit {}", orbit.label()), global);
        let mut pts = Vec::with_capacity(grid.len());
        for &lambda in grid {
            let o = orbit_sharpness(&model, &data, loss, orbit, &[lambda], &opts)?;
            records.push(SharpnessRecord::on_orbit(&o[0]));
            let converged = o[0].sharpness.is_reliable();
            reliable &= converged;
            pts.push(Point {
                lambda,
                top_eigenvalue: o[0].top_eigenvalue,
                trace: o[0].trace,
                loss: o[0].loss,
                converged,
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
    // A result the user asked for that did not converge (or overflowed) is flagged in every format and exits 1.
    let code = if reliable { ExitCode::SUCCESS } else { ExitCode::from(1) };
    if !reliable {
        eprintln!(
            "warning: some results did not converge or are not finite (flagged `converged: false`); raise \
             --max-iter or --tol, or narrow --orbit"
        );
    }
    if exports.to_stdout() {
        return Ok(code);
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(code);
    }
    let s = &at_theta;
    let what = if args.gauss_newton { "Gauss–Newton" } else { "Hessian" };
    outln!("{what} of the mean loss ({} samples, P = {}), loss {:.6e}", s.samples, s.n_params, s.loss);
    for (i, e) in s.top_eigenvalues.iter().enumerate() {
        outln!("  λ_{:<3} {e:>14.6e}", i + 1);
    }
    if let Some(b) = s.bottom_eigenvalue {
        outln!("  λ_min {b:>14.6e}");
    }
    outln!(
        "  Lanczos: {} iterations, residual {:.2e} (threshold {:.2e}), {}",
        s.lanczos.iterations,
        s.lanczos.residual,
        s.lanczos.threshold,
        if s.lanczos.converged { "converged" } else { "NOT converged (raise --max-iter or --tol)" }
    );
    if let (Some(t), Some(m), Some(ci)) = (s.trace, s.trace_method, s.trace_ci95) {
        if m == TraceMethod::Exact {
            outln!("  trace  {t:>14.6e} (exact)");
        } else {
            outln!("  trace  {t:>14.6e} ({}; 95% interval [{:.6e}, {:.6e}])", m.name(), ci[0], ci[1]);
        }
    }
    let products = if args.gauss_newton { "Gauss–Newton-vector" } else { "Hessian-vector" };
    outln!("  {} {products} products", s.hvps);
    if let (Some((_, orbit)), Some(pts)) = (&orbit, &out.orbit) {
        print_orbit(&orbit.label(), pts)?;
    }
    Ok(code)
}

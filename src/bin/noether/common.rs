//! Arguments shared by several subcommands.

use anyhow::{Context, Result};
use noether::data::load_dataset;
use noether::model::load_safetensors;
use noether::report::{ExportDoc, ExportFormat, Exports, Record};
use noether::{Activation, Dataset, Loss, Model};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// How progress is shown.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Style {
    /// Bars when stderr is a terminal.
    #[default]
    Auto,
    /// Plain bars without colour.
    Basic,
    /// Full bars with rates and ETA.
    Full,
    /// No progress output.
    None,
}

/// Options of every subcommand.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Hide progress bars.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
    /// Progress style: auto, basic, full, none.
    #[arg(long, value_enum, default_value_t = Style::Auto, global = true)]
    pub style: Style,
}

/// A module-tree model with its data and loss.
pub type NetData = (noether::net::Net<f64>, Dataset<f64>, Loss);

/// A model file, a data file and how to read them.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct ModelData {
    /// Model weights (safetensors: `layers.{l}.weight` [out, in] and `.bias`, or nn.Sequential names), e.g. `--model mlp.safetensors`.
    #[arg(long)]
    pub model: PathBuf,
    /// Data (safetensors: `x` [N, d_in], `y` [N, d_out] float or [N] integer labels), e.g. `--data train.safetensors`.
    #[arg(long)]
    pub data: PathBuf,
    /// Activation of the hidden layers (the last layer is linear): identity, relu (default), leaky_relu(0.1),
    /// tanh. Not needed (and refused if it disagrees) for files noether wrote, which carry their architecture.
    #[arg(long)]
    pub activation: Option<String>,
    /// Loss: mse (½‖f − y‖²) or cross_entropy (integer labels).
    #[arg(long, default_value = "mse")]
    pub loss: String,
    /// Architecture file (the module list of an `nn.Sequential`, docs/architecture-files.md); the model file
    /// is then a PyTorch state_dict with those names. Files noether wrote carry it and need no --arch.
    #[arg(long, value_name = "ARCH.toml")]
    pub arch: Option<PathBuf>,
}

/// A dense-chain model file: with the architecture it carries (files noether wrote; `--activation`, if given,
/// must agree with it), else with `activation` (default relu) on every hidden layer.
pub fn load_dense_model<T: noether::Real>(
    path: &std::path::Path,
    activation: Option<&str>,
) -> Result<Model<T>> {
    let described = noether::net::load_dense_described::<T>(path)
        .with_context(|| format!("loading the model from {}", path.display()))?;
    if let Some(model) = described {
        if let Some(a) = activation {
            let want = Activation::parse(a)?;
            let n = model.arch.n_layers();
            if let Some(ly) = model.arch.layers[..n - 1].iter().find(|ly| ly.activation != want) {
                anyhow::bail!(
                    "--activation {a}: {} carries its architecture, whose hidden layers use {}; drop --activation",
                    path.display(),
                    ly.activation.name()
                );
            }
        }
        return Ok(model);
    }
    let act = Activation::parse(activation.unwrap_or("relu"))?;
    load_safetensors::<T>(path, act).with_context(|| format!("loading the model from {}", path.display()))
}

/// The floating-point type a command computes in.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PrecisionArg {
    /// f32 passes (moments accumulated in f64 across chunks): about twice as fast on large models.
    F32,
    /// f64 throughout (default).
    #[default]
    F64,
}

impl ModelData {
    /// The model and data on the module-tree engine, when `--arch` is given or the model file carries its
    /// architecture; `None` for a plain dense-chain file.
    pub fn load_net(&self) -> Result<Option<NetData>> {
        let Some(net) = crate::arch::net_model(&self.model, self.arch.as_deref())? else { return Ok(None) };
        crate::arch::refuse_dense_flags(self.activation.as_deref(), &[])?;
        let loss = Loss::parse(&self.loss)?;
        let data = crate::arch::load_data(&net, &self.data, loss)?;
        Ok(Some((net, data, loss)))
    }

    #[allow(dead_code)] // used by analyze, teleport and sharpness
    /// Loads model and data in f64 and checks that they fit together and the loss.
    pub fn load(&self) -> Result<(Model<f64>, Dataset<f64>, Loss)> {
        self.load_as::<f64>()
    }

    /// Loads model and data in `T` (converted from the files' dtypes) and checks that they fit together and
    /// the loss.
    pub fn load_as<T: noether::Real>(&self) -> Result<(Model<T>, Dataset<T>, Loss)> {
        let loss = Loss::parse(&self.loss)?;
        let model = load_dense_model::<T>(&self.model, self.activation.as_deref())?;
        let data = load_dataset::<T>(&self.data)
            .with_context(|| format!("loading the data from {}", self.data.display()))?;
        data.check_fits(model.arch.d_in(), model.arch.d_out(), loss)
            .with_context(|| format!("{} does not fit {}", self.data.display(), self.model.display()))?;
        Ok((model, data, loss))
    }
}

/// The export flags of the commands that produce a result table (STYLE.md §12; library: `noether::report::exporter`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ExportArgs {
    /// Also write the results as JSON, `{"noether_version", "command", "config", "seed", "results": [...]}`,
    /// e.g. `--export-json results.json` (`-` = stdout, replacing the table).
    #[arg(long, value_name = "FILE")]
    pub export_json: Option<PathBuf>,
    /// Also write one CSV row per result record with raw values, e.g. `--export-csv results.csv` (`-` = stdout).
    #[arg(long, value_name = "FILE")]
    pub export_csv: Option<PathBuf>,
    /// Also write the results as a Markdown table, e.g. `--export-markdown results.md` (`-` = stdout).
    #[arg(long, value_name = "FILE")]
    pub export_markdown: Option<PathBuf>,
}

/// A number as a user would write it back on the command line: plain decimals for moderate magnitudes, else
/// scientific notation (Rust's `{}` prints 1e-300 with 300 digits).
pub fn flag_num(x: f64) -> String {
    if x != 0.0 && x.is_finite() && (x.abs() < 1e-4 || x.abs() >= 1e6) {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

/// Whether `a` and `b` name the same file: the same file once symbolic links are resolved when both exist,
/// else the same absolute path.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => std::path::absolute(a).ok() == std::path::absolute(b).ok(),
    }
}

impl ModelData {
    /// The input files with their flags (for [`ExportArgs::create`]).
    pub fn files(&self) -> Vec<(&'static str, &Path)> {
        let mut f = vec![("--model", self.model.as_path()), ("--data", self.data.as_path())];
        if let Some(a) = &self.arch {
            f.push(("--arch", a.as_path()));
        }
        f
    }
}

impl ExportArgs {
    /// Checks every export path now, before any work, so that a bad path fails fast: an export may not be one
    /// of the command's `files` (its inputs and `--out`, with their flags) or another export's path, which it
    /// would overwrite.
    pub fn create(&self, files: &[(&str, &Path)]) -> Result<Exports> {
        let mut exports = Exports::default();
        let flags = [
            ("--export-json", ExportFormat::Json, &self.export_json),
            ("--export-csv", ExportFormat::Csv, &self.export_csv),
            ("--export-markdown", ExportFormat::Markdown, &self.export_markdown),
        ];
        let mut taken: Vec<(&str, &Path)> = files.to_vec();
        for (flag, _, path) in &flags {
            if let Some(path) = path.as_deref().filter(|p| p.as_os_str() != "-") {
                if let Some((other, _)) = taken.iter().find(|(_, q)| same_file(path, q)) {
                    anyhow::bail!(
                        "{flag} {}: that is the file of {other}, which the export would overwrite; give another \
                         path",
                        path.display()
                    );
                }
                taken.push((flag, path));
            }
        }
        for (flag, format, path) in flags {
            if let Some(path) = path {
                // The library error already names the path and the OS reason.
                exports.add(format, path.clone()).map_err(|e| {
                    anyhow::anyhow!("{flag}: {e}; give a path in an existing, writable directory")
                })?;
            }
        }
        Ok(exports)
    }
}

/// Writes `records` of `command` (run with `config`, seeded by `seed`) to every requested export.
pub fn export<R: Record>(
    exports: &Exports,
    command: &str,
    config: &impl Serialize,
    seed: Option<u64>,
    records: &[R],
) -> Result<()> {
    let doc = ExportDoc::new(command, config, seed, records)?;
    exports.write(&doc, &mut std::io::stdout().lock())?;
    Ok(())
}

/// The `--force` flag of every command that writes a run folder or an output file.
#[derive(clap::Args, Debug, Clone, Copy, Default, Serialize)]
#[serde(transparent)]
pub struct Force {
    /// Overwrite the results of an earlier run in the output folder or file (refused without it).
    #[arg(long)]
    pub force: bool,
}

/// Refuses to write into `path` (given by `flag`) when it already holds an earlier run, i.e. when `path` is a
/// file (`markers` empty) or a folder holding one of `markers`, unless `--force` was given.
pub fn refuse_overwrite(path: &std::path::Path, markers: &[&str], flag: &str, force: Force) -> Result<()> {
    if !markers.is_empty() && path.exists() && !path.is_dir() {
        anyhow::bail!(
            "{flag} {}: that is a file, not a run folder; give {flag} a folder path (new, or holding an earlier run \
             to overwrite with --force)",
            path.display()
        )
    }
    if force.force {
        return Ok(());
    }
    let held: Vec<&str> = if markers.is_empty() {
        if path.exists() {
            vec![""]
        } else {
            vec![]
        }
    } else {
        markers.iter().copied().filter(|m| path.join(m).exists()).collect()
    };
    if held.is_empty() {
        return Ok(());
    }
    if markers.is_empty() {
        anyhow::bail!(
            "{flag} {}: the file already exists; pass --force to overwrite it, or choose another {flag}",
            path.display()
        )
    }
    anyhow::bail!(
        "{flag} {}: the folder already holds an earlier run ({}); pass --force to overwrite it, or choose another {flag}",
        path.display(),
        held.join(", ")
    )
}

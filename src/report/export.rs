//! Run-folder exports: `metrics.csv` streamed row by row, `summary.json`, `config.toml` (DESIGN.md §3).
//!
//! Files are created when a run starts and every row is flushed as it is written, so a run that diverges or is
//! interrupted leaves valid partial results (STYLE.md §12). Values are raw (unrounded, SI).
//!
//! ```no_run
//! use noether::report::{RunDir, Summary};
//! let run = RunDir::create("runs/demo")?;
//! let mut metrics = run.metrics(&["step", "loss", "charge"])?;
//! metrics.row(&[0.0, 1.25, 0.5])?;
//! run.write_config(&serde_json::json!({"lr": 0.1}))?;
//! run.write_summary(&Summary::new("train", &serde_json::json!({"lr": 0.1}), Some(0), &serde_json::json!({}))?)?;
//! # Ok::<(), noether::Error>(())
//! ```

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::report::plot::{Figure, FigureFiles};
use crate::{Error, Result};

/// A CSV file of numeric rows under a fixed header; each row is flushed to disk when written.
#[derive(Debug)]
pub struct MetricsWriter {
    path: PathBuf,
    columns: usize,
    /// Index of the `step` column, written as an integer.
    step: Option<usize>,
    out: BufWriter<File>,
}

impl MetricsWriter {
    /// Creates (truncates) `path` and writes the header line. Column names should carry units
    /// (`t_sde`, `wall_time_s`); swept values use `param_<name>` columns.
    pub fn create(path: impl AsRef<Path>, columns: &[&str]) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if columns.is_empty() {
            return Err(Error::Config(format!(
                "{}: a metrics file needs at least one column",
                path.display()
            )));
        }
        if let Some(c) = columns.iter().find(|c| c.contains([',', '"', '\n', '\r'])) {
            return Err(Error::Config(format!("metrics column `{c}` contains a comma, quote or newline")));
        }
        let file = File::create(&path).map_err(|e| Error::io(&path, e))?;
        let step = columns.iter().position(|c| *c == "step");
        let mut w = MetricsWriter { path, columns: columns.len(), step, out: BufWriter::new(file) };
        let header = columns.join(",");
        w.line(&header)?;
        Ok(w)
    }

    fn line(&mut self, s: &str) -> Result<()> {
        let path = &self.path;
        writeln!(self.out, "{s}").and_then(|()| self.out.flush()).map_err(|e| Error::io(path, e))
    }

    /// Appends one row (one value per column, shortest round-trip decimal form; non-finite values as `NaN`,
    /// `inf`, `-inf`; a column named `step` as an integer when its value is a whole number) and flushes it.
    pub fn row(&mut self, values: &[f64]) -> Result<()> {
        if values.len() != self.columns {
            return Err(Error::shape(
                format!("metrics row for {}", self.path.display()),
                &[self.columns],
                &[values.len()],
            ));
        }
        let line = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                if Some(i) == self.step && v.fract() == 0.0 && v.abs() < 2f64.powi(53) {
                    format!("{}", *v as i64)
                } else {
                    format!("{v:?}")
                }
            })
            .collect::<Vec<_>>()
            .join(",");
        self.line(&line)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The `summary.json` schema shared by every command: `{"noether_version", "command", "config", "seed",
/// "results"}`. `config` is the resolved configuration, `results` the command's own result struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Version of the crate that produced the run.
    pub noether_version: String,
    /// The subcommand or experiment name (`train`, `reproduce fig2`, …).
    pub command: String,
    /// The exact configuration used, defaults filled in.
    pub config: serde_json::Value,
    /// RNG seed; `null` for deterministic commands.
    pub seed: Option<u64>,
    /// The command's results.
    pub results: serde_json::Value,
}

fn to_value(what: &str, v: &impl Serialize) -> Result<serde_json::Value> {
    serde_json::to_value(v).map_err(|e| Error::Config(format!("{what} cannot be serialized to JSON: {e}")))
}

impl Summary {
    /// A summary from any serializable config and results (non-finite floats become `null`).
    pub fn new(
        command: &str,
        config: &impl Serialize,
        seed: Option<u64>,
        results: &impl Serialize,
    ) -> Result<Self> {
        Ok(Summary {
            noether_version: env!("CARGO_PKG_VERSION").to_string(),
            command: command.to_string(),
            config: to_value("config", config)?,
            seed,
            results: to_value("results", results)?,
        })
    }

    /// Writes the summary as pretty JSON to `path` atomically (temporary file + rename), so a reader never sees
    /// a half-written file when it is rewritten after each finished run.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| Error::Config(format!("summary: {e}")))?;
        write_atomic(path.as_ref(), &(text + "\n"))
    }
}

/// Writes `text` to `path` via a sibling temporary file and a rename.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// A run folder: `metrics.csv`, `summary.json`, `config.toml` and figures (`<name>.png` + `<name>.svg`).
#[derive(Debug, Clone)]
pub struct RunDir {
    dir: PathBuf,
}

impl RunDir {
    /// Creates the folder (and its parents) if needed.
    pub fn create(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(RunDir { dir })
    }
    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// `dir/name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// Creates `metrics.csv` with the given columns.
    pub fn metrics(&self, columns: &[&str]) -> Result<MetricsWriter> {
        MetricsWriter::create(self.path("metrics.csv"), columns)
    }
    /// Writes `summary.json` (atomically).
    pub fn write_summary(&self, summary: &Summary) -> Result<PathBuf> {
        let p = self.path("summary.json");
        summary.write(&p)?;
        Ok(p)
    }
    /// Writes `config.toml`, the exact configuration used (a struct or map; TOML has no null, so `None` fields
    /// are omitted).
    pub fn write_config(&self, config: &impl Serialize) -> Result<PathBuf> {
        let p = self.path("config.toml");
        let text = toml::to_string_pretty(config).map_err(|e| Error::Config(format!("config.toml: {e}")))?;
        write_atomic(&p, &text)?;
        Ok(p)
    }
    /// Saves a figure as `name.png` and `name.svg` in the folder.
    pub fn figure(&self, figure: &Figure, name: &str) -> Result<FigureFiles> {
        figure.save(&self.dir, name)
    }
}

impl crate::dynamics::MetricsSink for MetricsWriter {
    fn begin(&mut self, _columns: &[String]) -> Result<()> {
        // The header was written by `MetricsWriter::create`.
        Ok(())
    }
    fn row(&mut self, values: &[f64]) -> Result<()> {
        MetricsWriter::row(self, values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_rows_are_on_disk_before_the_writer_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path().join("a/b")).unwrap();
        let mut w = run.metrics(&["step", "loss"]).unwrap();
        assert_eq!(std::fs::read_to_string(w.path()).unwrap(), "step,loss\n");
        w.row(&[0.0, 1.5]).unwrap();
        w.row(&[1.0, f64::NAN]).unwrap();
        // Read through an independent reader while the writer is still alive.
        let mut r = csv::Reader::from_path(w.path()).unwrap();
        assert_eq!(r.headers().unwrap(), vec!["step", "loss"]);
        let rows: Vec<Vec<f64>> =
            r.records().map(|rec| rec.unwrap().iter().map(|f| f.parse::<f64>().unwrap()).collect()).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], [0.0, 1.5]);
        assert!(rows[1][1].is_nan());
        drop(w);
    }

    #[test]
    fn metrics_values_round_trip_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = MetricsWriter::create(dir.path().join("m.csv"), &["x"]).unwrap();
        let xs = [0.1 + 0.2, 1e-300, -7.25e12, f64::MIN_POSITIVE, f64::INFINITY];
        for x in xs {
            w.row(&[x]).unwrap();
        }
        let text = std::fs::read_to_string(w.path()).unwrap();
        let back: Vec<f64> = text.lines().skip(1).map(|l| l.parse().unwrap()).collect();
        assert_eq!(back, xs);
    }

    #[test]
    fn metrics_reject_wrong_row_length_and_bad_columns() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = MetricsWriter::create(dir.path().join("m.csv"), &["a", "b"]).unwrap();
        assert!(matches!(w.row(&[1.0]), Err(Error::ShapeMismatch { .. })));
        assert!(MetricsWriter::create(dir.path().join("n.csv"), &[]).is_err());
        assert!(MetricsWriter::create(dir.path().join("n.csv"), &["a,b"]).is_err());
        assert!(matches!(
            MetricsWriter::create(dir.path().join("no/such/dir/m.csv"), &["a"]),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn summary_has_the_shared_schema_and_round_trips() {
        #[derive(Serialize)]
        struct Cfg {
            lr: f64,
            batch: usize,
        }
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        let results = serde_json::json!({"final_loss": 0.25});
        let s = Summary::new("train", &Cfg { lr: 0.1, batch: 32 }, Some(7), &results).unwrap();
        let p = run.write_summary(&s).unwrap();
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        for k in ["noether_version", "command", "config", "seed", "results"] {
            assert!(keys.contains(&k), "missing {k} in {keys:?}");
        }
        assert_eq!(v["noether_version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(v["config"]["batch"], 32);
        assert_eq!(v["seed"], 7);
        let back: Summary = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
        // Non-finite results are null, never a number.
        let s = Summary::new("x", &(), None, &[f64::NAN]).unwrap();
        assert_eq!(s.results, serde_json::json!([null]));
        assert!(!dir.path().join("summary.json.tmp").exists());
    }

    #[test]
    fn config_toml_round_trips() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct Cfg {
            lr: f64,
            widths: Vec<usize>,
        }
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::create(dir.path()).unwrap();
        let cfg = Cfg { lr: 0.05, widths: vec![3, 4, 1] };
        let p = run.write_config(&cfg).unwrap();
        let back: Cfg = toml::from_str(&std::fs::read_to_string(p).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }
}

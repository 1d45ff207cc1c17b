//! The sweep table: one [`Row`] per point, built from the run folders alone (so the local backend and the
//! SLURM aggregation job produce the same table), written as `sweep.csv`, `sweep.json` and `sweep.md` with
//! the `[[plot]]` figures under `plots/`.
//!
//! `sweep.csv` columns: `index, name, param_<key>…, status, <collected>…, error, wall_time_s`. Values are raw
//! (shortest round-trip decimals), an absent value is an empty cell; only `wall_time_s` differs between two
//! runs of the same sweep.

use super::point::{folder, partial_folder, read_record, Status};
use super::spec::{as_f64, Source, SweepSpec};
use crate::error::{Error, Result};
use crate::report::table::{table, Align, Cell, Markdown};
use crate::report::{fmt_num, Figure, FigureFiles, Plot, Series};
use serde::Serialize;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// One point of the table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// Stable index.
    pub index: usize,
    /// Folder name under `points/`.
    pub name: String,
    /// The swept values, in axis order.
    pub params: Vec<toml::Value>,
    /// done, failed or missing.
    pub status: Status,
    /// The collected values in column order (None: not available).
    pub values: Vec<Option<f64>>,
    /// Why the point failed.
    pub error: Option<String>,
    /// Wall-clock time of the point, seconds.
    pub wall_time_s: Option<f64>,
    /// A `.partial` folder is present: a run of this point was interrupted (or is running).
    #[serde(skip)]
    pub partial: bool,
}

/// Point counts of a table.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Points in the sweep.
    pub total: usize,
    /// Ran to the end.
    pub done: usize,
    /// Diverged or failed.
    pub failed: usize,
    /// Not run or interrupted.
    pub missing: usize,
}

/// The table of a sweep: its spec and one row per point, in index order.
#[derive(Clone, Debug)]
pub struct Table {
    /// The spec the rows belong to.
    pub spec: SweepSpec,
    /// Collected column names.
    pub columns: Vec<String>,
    sources: Vec<Source>,
    /// Rows, `rows[i].index == i`.
    pub rows: Vec<Row>,
}

impl Table {
    /// A table of `spec` with every point `missing`.
    pub fn new(spec: &SweepSpec) -> Result<Self> {
        let (columns, sources) = spec.columns()?.into_iter().unzip();
        let rows = (0..spec.len())
            .map(|i| Row {
                index: i,
                name: spec.name_of(i),
                params: spec.values_of(i).into_iter().map(|(_, v)| v).collect(),
                status: Status::Missing,
                values: vec![],
                error: None,
                wall_time_s: None,
                partial: false,
            })
            .collect();
        Ok(Table { spec: spec.clone(), columns, sources, rows })
    }

    /// The table as the run folders under `dir` hold it (what `noether sweep collect` writes).
    pub fn scan(spec: &SweepSpec, dir: &Path) -> Result<Self> {
        let mut t = Table::new(spec)?;
        for i in 0..t.rows.len() {
            t.refresh(dir, i)?;
        }
        Ok(t)
    }

    /// Re-reads row `index` from its run folder.
    pub fn refresh(&mut self, dir: &Path, index: usize) -> Result<()> {
        let row = &mut self.rows[index];
        row.partial = partial_folder(dir, &row.name).exists();
        match read_record(dir, &row.name)? {
            None => {
                row.status = Status::Missing;
                row.values.clear();
                row.error = None;
                row.wall_time_s = None;
            }
            Some(rec) => {
                row.status = rec.status;
                row.error = rec.error;
                row.wall_time_s = Some(rec.wall_time_s);
                row.values = if rec.status == Status::Done {
                    collect_values(&folder(dir, &row.name), &self.sources)?
                } else {
                    vec![None; self.sources.len()]
                };
            }
        }
        Ok(())
    }

    /// Marks row `index` failed with `error` (a point whose folder could not be written).
    pub fn fail(&mut self, index: usize, error: String) {
        let row = &mut self.rows[index];
        row.status = Status::Failed;
        row.error = Some(error);
        row.values = vec![None; self.sources.len()];
    }

    /// How many points are done, failed, missing.
    pub fn counts(&self) -> Counts {
        let mut c = Counts { total: self.rows.len(), ..Default::default() };
        for r in &self.rows {
            match r.status {
                Status::Done => c.done += 1,
                Status::Failed => c.failed += 1,
                Status::Missing => c.missing += 1,
            }
        }
        c
    }

    /// The CSV text (see the module docs for the columns).
    pub fn csv(&self) -> Result<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut header = vec!["index".to_string(), "name".to_string()];
        header.extend(self.spec.keys().iter().map(|k| format!("param_{k}")));
        header.push("status".into());
        header.extend(self.columns.iter().cloned());
        header.extend(["error".to_string(), "wall_time_s".to_string()]);
        let csv_err = |e: csv::Error| Error::Config(format!("sweep.csv: {e}"));
        w.write_record(&header).map_err(csv_err)?;
        let num = |v: Option<f64>| v.map_or(String::new(), |x| format!("{x:?}"));
        for r in &self.rows {
            let mut rec = vec![r.index.to_string(), r.name.clone()];
            rec.extend(r.params.iter().map(param_text));
            rec.push(r.status.as_str().into());
            rec.extend((0..self.columns.len()).map(|k| num(r.values.get(k).copied().flatten())));
            rec.push(r.error.clone().unwrap_or_default());
            rec.push(num(r.wall_time_s));
            w.write_record(&rec).map_err(csv_err)?;
        }
        let bytes = w.into_inner().map_err(|e| Error::Config(format!("sweep.csv: {e}")))?;
        String::from_utf8(bytes).map_err(|e| Error::Config(format!("sweep.csv: {e}")))
    }

    /// The JSON document `{"noether_version", "command", "config", "seed", "complete", "counts", "results"}`.
    pub fn json(&self) -> Result<String> {
        let keys = self.spec.keys();
        let results: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let params: serde_json::Map<String, serde_json::Value> = keys
                    .iter()
                    .zip(&r.params)
                    .map(|(k, v)| (k.to_string(), serde_json::to_value(v).unwrap_or_default()))
                    .collect();
                let values: serde_json::Map<String, serde_json::Value> = self
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(k, c)| (c.clone(), serde_json::json!(r.values.get(k).copied().flatten())))
                    .collect();
                serde_json::json!({
                    "index": r.index, "name": r.name, "params": params, "status": r.status,
                    "values": values, "error": r.error, "wall_time_s": r.wall_time_s,
                })
            })
            .collect();
        let c = self.counts();
        let doc = serde_json::json!({
            "noether_version": env!("CARGO_PKG_VERSION"),
            "command": "sweep",
            "config": self.spec,
            "seed": null,
            "complete": c.done == c.total,
            "counts": c,
            "results": results,
        });
        serde_json::to_string_pretty(&doc).map_err(|e| Error::Config(format!("sweep.json: {e}")))
    }

    /// One figure per `[[plot]]`: the mean of `y` over the done points (those matching `where`) at each `x`
    /// (other axes averaged), one line per value of `lines`.
    pub fn figures(&self) -> Vec<(String, Figure)> {
        self.plots().into_iter().map(|(stem, plot)| (stem, Figure::single(plot))).collect()
    }

    /// What the figures leave out: every plotted mean of `y` that is ≤ 0 (or not finite) on a `log_y` axis,
    /// as a line naming the plot, the line, x and y. (A `log_x` axis over x ≤ 0 is refused with the spec.)
    pub fn plot_omissions(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (stem, plot) in self.plots() {
            for s in &plot.series {
                for &(x, y) in &s.points {
                    if plot.log_y && !(y > 0.0 && y.is_finite()) {
                        out.push(format!(
                            "plot `{stem}`: {} at x = {x} is {y}, which a log_y axis cannot show; it is left out",
                            s.name
                        ));
                    }
                }
            }
        }
        out
    }

    fn plots(&self) -> Vec<(String, Plot)> {
        self.spec
            .plots
            .iter()
            .map(|p| {
                let keys = self.spec.keys();
                let xi = keys.iter().position(|k| *k == p.x).unwrap_or(0);
                let yi = self.columns.iter().position(|c| *c == p.y).unwrap_or(0);
                let li = p.lines.as_ref().and_then(|l| keys.iter().position(|k| k == l));
                let filter: Vec<(usize, &toml::Value)> = p
                    .filter
                    .iter()
                    .filter_map(|(k, v)| Some((keys.iter().position(|a| a == k)?, v)))
                    .collect();
                let xs = &self.spec.axis(&p.x).map(|a| a.values.clone()).unwrap_or_default();
                let lines: Vec<Option<toml::Value>> = match li {
                    Some(li) => {
                        let key = keys[li];
                        self.spec
                            .axis(key)
                            .map(|a| a.values.iter().cloned().map(Some).collect())
                            .unwrap_or_default()
                    }
                    None => vec![None],
                };
                let short = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
                let mut plot = Plot::new(
                    p.title.clone().unwrap_or_else(|| format!("{} vs {}", p.y, p.x)),
                    p.x.clone(),
                    p.y.clone(),
                )
                .log(p.log_x, p.log_y);
                for line in &lines {
                    let mut pts = Vec::new();
                    for xv in dedup(xs) {
                        let ys: Vec<f64> = self
                            .rows
                            .iter()
                            .filter(|r| filter.iter().all(|&(k, v)| &r.params[k] == v))
                            .filter(|r| r.params[xi] == xv)
                            .filter(|r| line.as_ref().is_none_or(|l| li.is_some_and(|li| &r.params[li] == l)))
                            .filter_map(|r| r.values.get(yi).copied().flatten())
                            .collect();
                        if !ys.is_empty() {
                            pts.push((
                                as_f64(&xv).unwrap_or(f64::NAN),
                                ys.iter().sum::<f64>() / ys.len() as f64,
                            ));
                        }
                    }
                    let label = match (line, &p.lines) {
                        (Some(v), Some(k)) => format!("{} = {}", short(k), param_text(v)),
                        _ => p.y.clone(),
                    };
                    plot = plot.series(Series::new(label, pts, crate::report::Style::LineMarkers));
                }
                (p.stem(), plot)
            })
            .collect()
    }

    /// The Markdown report: counts (an incomplete table says so first), the figures, the table.
    pub fn markdown(&self, figures: &[(String, FigureFiles)]) -> String {
        let c = self.counts();
        let mut s = format!("# Sweep `{}`\n\n", self.spec.name);
        if c.done < c.total {
            s += &format!(
                "**Incomplete**: {} of {} points done, {} failed, {} missing.\n\n",
                c.done, c.total, c.failed, c.missing
            );
        } else {
            s += &format!("All {} points done.\n\n", c.total);
        }
        for (stem, _) in figures {
            s += &format!("![{stem}](plots/{stem}.png)\n\n");
        }
        for line in self.plot_omissions() {
            s += &format!("- Not shown: {line}.\n");
        }
        let mut names = vec!["index".to_string()];
        names.extend(self.spec.keys().iter().map(|k| k.to_string()));
        names.push("status".into());
        names.extend(self.columns.iter().cloned());
        names.push("wall time (s)".into());
        let names_ref: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
        let nparams = self.spec.keys().len();
        let align: Vec<Align> = (0..names.len())
            .map(|k| if k == 0 || k > nparams + 1 { Align::Right } else { Align::Left })
            .collect();
        let rows: Vec<Vec<Cell>> =
            self.rows
                .iter()
                .map(|r| {
                    let mut cells = vec![Cell::plain(r.index.to_string())];
                    cells.extend(r.params.iter().map(|v| Cell::plain(param_text(v))));
                    cells.push(Cell::plain(r.status.as_str()));
                    cells.extend((0..self.columns.len()).map(|k| {
                        Cell::plain(r.values.get(k).copied().flatten().map_or(String::new(), fmt_num))
                    }));
                    cells.push(Cell::plain(r.wall_time_s.map_or(String::new(), fmt_num)));
                    cells
                })
                .collect();
        s += &table(&Markdown, &names_ref, &align, &rows);
        let failed: Vec<&Row> = self.rows.iter().filter(|r| r.status == Status::Failed).collect();
        if !failed.is_empty() {
            s += "\n## Failed points\n\n";
            for r in failed {
                s += &format!("- {} `{}`: {}\n", r.index, r.name, r.error.as_deref().unwrap_or(""));
            }
        }
        s
    }

    /// Writes `sweep.csv`, `sweep.json`, the figures and `sweep.md` into `dir`, each atomically.
    pub fn write(&self, dir: &Path) -> Result<TableFiles> {
        use crate::report::export::write_atomic;
        let csv = dir.join("sweep.csv");
        write_atomic(&csv, &self.csv()?)?;
        let json = dir.join("sweep.json");
        write_atomic(&json, &(self.json()? + "\n"))?;
        let mut figures = Vec::new();
        for (stem, fig) in self.figures() {
            figures.push((stem.clone(), fig.save(dir.join("plots"), &stem)?));
        }
        let md = dir.join("sweep.md");
        write_atomic(&md, &self.markdown(&figures))?;
        Ok(TableFiles { csv, json, markdown: md, figures: figures.into_iter().map(|(_, f)| f).collect() })
    }
}

/// The files [`Table::write`] wrote.
#[derive(Clone, Debug)]
pub struct TableFiles {
    /// `sweep.csv`.
    pub csv: PathBuf,
    /// `sweep.json`.
    pub json: PathBuf,
    /// `sweep.md`.
    pub markdown: PathBuf,
    /// PNG + SVG of every plot.
    pub figures: Vec<FigureFiles>,
}

fn dedup(xs: &[toml::Value]) -> Vec<toml::Value> {
    let mut out: Vec<toml::Value> = Vec::new();
    for x in xs {
        if !out.contains(x) {
            out.push(x.clone());
        }
    }
    out
}

/// A swept value in a table cell: strings bare, everything else as inline TOML.
pub fn param_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Float(f) => format!("{f:?}"),
        other => other.to_string(),
    }
}

/// Reads the collected values of a done point's folder: `summary.json` fields and, streaming `metrics.csv`
/// (keeping only the last k rows of the needed columns), the final and mean-of-last-k metrics.
fn collect_values(run: &Path, sources: &[Source]) -> Result<Vec<Option<f64>>> {
    // The metrics each source reads, as indices into `names` (each metric read once).
    let slot = |m: &str, names: &mut Vec<String>| -> usize {
        names.iter().position(|n| n == m).unwrap_or_else(|| {
            names.push(m.to_string());
            names.len() - 1
        })
    };
    let mut names: Vec<String> = Vec::new();
    let uses: Vec<Vec<usize>> = sources
        .iter()
        .map(|s| match s {
            Source::Final(m) | Source::MeanLast(m, _) => vec![slot(m, &mut names)],
            Source::Ratio(a, b) => vec![slot(a, &mut names), slot(b, &mut names)],
            Source::Summary(_) => vec![],
        })
        .collect();
    let metric_names: Vec<&str> = names.iter().map(|n| n.as_str()).collect();
    let keep = sources
        .iter()
        .map(|s| match s {
            Source::MeanLast(_, k) => *k,
            _ => 1,
        })
        .max()
        .unwrap_or(1);
    let mut tail: VecDeque<Vec<f64>> = VecDeque::with_capacity(keep + 1);
    let mut col_index: Vec<Option<usize>> = Vec::new();
    if !metric_names.is_empty() {
        let p = run.join("metrics.csv");
        // A done point's metrics.csv is complete; what cannot be read is a damaged file, not a missing value.
        let corrupt = |what: String| {
            Error::Config(format!(
                "{}: {what}; the point is recorded as done but its metrics are damaged: delete its folder to \
                 run it again",
                p.display()
            ))
        };
        let bad = |e: csv::Error| corrupt(e.to_string());
        let mut r = csv::Reader::from_path(&p).map_err(bad)?;
        let headers = r.headers().map_err(bad)?.clone();
        col_index = metric_names.iter().map(|m| headers.iter().position(|h| h == *m)).collect();
        let mut rows = 0usize;
        for rec in r.records() {
            let rec = rec.map_err(bad)?;
            rows += 1;
            let mut vals = Vec::with_capacity(col_index.len());
            for (c, name) in col_index.iter().zip(&metric_names) {
                let Some(c) = *c else {
                    vals.push(f64::NAN);
                    continue;
                };
                let cell = rec.get(c).unwrap_or("");
                // The writer's non-finite values (`NaN`, `inf`, `-inf`) parse; anything else is damage.
                let x = cell.parse::<f64>().map_err(|_| {
                    let line = rec.position().map_or(0, |pos| pos.line());
                    corrupt(format!("line {line}, column `{name}`: {cell:?} is not a number"))
                })?;
                vals.push(x);
            }
            tail.push_back(vals);
            if tail.len() > keep {
                tail.pop_front();
            }
        }
        if rows == 0 {
            return Err(corrupt("no rows after the header".into()));
        }
        if rows < keep {
            return Err(corrupt(format!(
                "[collect] mean_last.k = {keep} needs {keep} rows, the file has {rows}"
            )));
        }
    }
    let summary: Option<serde_json::Value> = if sources.iter().any(|s| matches!(s, Source::Summary(_))) {
        let p = run.join("summary.json");
        let text = std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?;
        Some(serde_json::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", p.display())))?)
    } else {
        None
    };
    let finite = |x: f64| Some(x).filter(|x| x.is_finite());
    // Mean of metric slot `c` over the last `k` rows (None if the column is absent); the file has k rows.
    let mean = |c: usize, k: usize| -> Option<f64> {
        col_index[c]?;
        finite(tail.iter().rev().take(k).map(|r| r[c]).sum::<f64>() / k as f64)
    };
    Ok(sources
        .iter()
        .zip(&uses)
        .map(|(s, u)| match s {
            Source::Final(_) => mean(u[0], 1),
            Source::MeanLast(_, k) => mean(u[0], *k),
            Source::Ratio(..) => finite(mean(u[0], 1)? / mean(u[1], 1)?),
            Source::Summary(f) => summary.as_ref()?["results"][f].as_f64().and_then(finite),
        })
        .collect())
}

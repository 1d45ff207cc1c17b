//! The sweep file (`SWEEP.toml`): a base training config plus axes, parsed into a validated [`SweepSpec`] and
//! expanded into [`Point`]s.
//!
//! ```toml
//! name = "lr-by-batch"                 # optional; default: the file's stem
//! base = "../matrix_factorization.toml" # or an inline [base] table holding a training config
//!
//! [grid]                               # cartesian product; the first axis varies slowest
//! lr = [0.01, 0.02, 0.05]
//! "optimizer.batch_size" = [1, 4, 16]  # dotted keys address any config key
//! seed = { range = [0, 10] }           # integers start ≤ i < end (optional third entry: the step)
//!
//! [zip]                                # optional: axes that vary together (equal lengths), fastest of all
//! "data.teacher.sigma_x.phi" = [1.0, 10.0]
//! steps = [2000, 4000]
//!
//! [collect]                            # the table's value columns
//! final = ["loss"]                     # the last logged row's value → column `final_loss`
//! mean_last = { k = 10, metrics = ["c_pair_l0_fro"] }  # mean over the last k logged rows → `mean10_…`
//! summary = ["t", "steps"]             # numeric fields of summary.json's results → columns of that name
//! ratio = [["norm_sq_l1", "norm_sq_l0"]]  # a / b at the last logged row → `norm_sq_l1_over_norm_sq_l0`
//!
//! [[plot]]                             # a collected column against an axis, one line per value of another
//! y = "final_loss"
//! x = "lr"
//! lines = "optimizer.batch_size"       # optional; other axes are averaged over
//! log_x = true
//! where = { seed = 0 }                 # optional: only the points with these axis values
//! ```
//!
//! Point `i` (0-based) is the mixed-radix number whose digits index the axes' values, grid axes in file
//! order (most significant first) and the zip group last. Its folder name is `{i:0w}-{key}={value}_…` with
//! `w` the digit count of the last index and `key` the last segment of the dotted key (the full key where two
//! axes share a last segment). Every point's config is the base with the point's values set, parsed by the
//! training config's own deserializer and checks, so an unknown key or a mistyped value is an error naming the
//! axis; overlapping axes, repeated values, names that are not plain file names and log axes over values ≤ 0
//! are refused.

use crate::dynamics::TrainConfig;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Longest point label kept in a folder name (characters after the index); longer labels are cut.
const MAX_LABEL: usize = 120;

/// One swept key and its values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Axis {
    /// Dotted config key, e.g. `optimizer.batch_size`.
    pub key: String,
    /// The values in order.
    pub values: Vec<toml::Value>,
}

/// Which values become table columns.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectSpec {
    /// Metrics columns read at the last logged row → columns `final_<metric>`.
    #[serde(default, rename = "final")]
    pub final_metrics: Vec<String>,
    /// The mean of metrics over the last `k` logged rows → columns `mean<k>_<metric>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_last: Option<MeanLast>,
    /// Numeric fields of `summary.json`'s results (see [`SUMMARY_FIELDS`]) → columns of the same name.
    #[serde(default)]
    pub summary: Vec<String>,
    /// Ratios `[a, b]` of two metrics at the last logged row → columns `<a>_over_<b>` (e.g. a norm balance).
    #[serde(default)]
    pub ratio: Vec<[String; 2]>,
}

/// `mean_last = { k, metrics }` of `[collect]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeanLast {
    /// How many of the last logged rows (≥ 1, and at most the rows every point logs: checked up front).
    pub k: usize,
    /// Metrics columns.
    pub metrics: Vec<String>,
}

/// The numeric fields of a run's `summary.json` results that `[collect] summary` accepts.
pub const SUMMARY_FIELDS: &[&str] = &["final_loss", "t", "steps", "seed"];

/// Where a collected value comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// The last logged row of a metrics column.
    Final(String),
    /// The mean over the last `k` logged rows of a metrics column.
    MeanLast(String, usize),
    /// A field of summary.json's results.
    Summary(String),
    /// `a / b` at the last logged row.
    Ratio(String, String),
}

/// One `[[plot]]`: a collected column (`y`) against an axis (`x`), one line per value of `lines`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlotSpec {
    /// A collected column, e.g. `final_loss`.
    pub y: String,
    /// A numeric axis key.
    pub x: String,
    /// An axis key: one line per value (absent: one line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lines: Option<String>,
    /// Logarithmic x axis.
    #[serde(default)]
    pub log_x: bool,
    /// Logarithmic y axis.
    #[serde(default)]
    pub log_y: bool,
    /// Title (default: `y vs x`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// File stem under `plots/` (default: `<y>_vs_<x>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only the points with these axis values, e.g. `where = { "model.dims" = [8, 1, 8] }`.
    #[serde(default, rename = "where", skip_serializing_if = "BTreeMap::is_empty")]
    pub filter: BTreeMap<String, toml::Value>,
}

impl PlotSpec {
    /// The file stem of the figure.
    pub fn stem(&self) -> String {
        self.name.clone().unwrap_or_else(|| sanitize(&format!("{}_vs_{}", self.y, self.x)))
    }
}

/// A validated sweep: the resolved base config, the axes, what to collect and plot. This is also what
/// `DIR/spec.json` holds, so `status` and `collect` need only the folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepSpec {
    /// Name of the sweep.
    pub name: String,
    /// The base training config, every default filled in.
    pub base: TrainConfig,
    /// Grid axes in file order (cartesian product, first slowest).
    pub grid: Vec<Axis>,
    /// Axes that vary together (equal lengths), as one axis after the grid axes.
    pub zip: Vec<Axis>,
    /// Table columns.
    pub collect: CollectSpec,
    /// Figures.
    pub plots: Vec<PlotSpec>,
    /// The base config as the sweep file wrote it (no defaults filled in), on which every point's values are
    /// also set to check what serde cannot (keys beside a tag that takes none, as `noether train` refuses);
    /// absent in `spec.json`, whose points were checked when it was written.
    #[serde(skip)]
    base_table: Option<toml::Table>,
}

/// One grid point: its index, folder name, swept values and resolved config.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    /// Stable 0-based index.
    pub index: usize,
    /// Folder name under `DIR/points/`.
    pub name: String,
    /// `(key, value)` of every axis, grid axes then zip axes.
    pub values: Vec<(String, toml::Value)>,
    /// The training config of this point.
    pub config: TrainConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    name: Option<String>,
    base: toml::Value,
    #[serde(default)]
    grid: Option<BTreeMap<String, toml::Spanned<toml::Value>>>,
    #[serde(default)]
    zip: Option<BTreeMap<String, toml::Spanned<toml::Value>>>,
    #[serde(default)]
    collect: CollectSpec,
    #[serde(default)]
    plot: Vec<PlotSpec>,
}

fn cfg(msg: impl Into<String>) -> Error {
    Error::Config(msg.into())
}

impl SweepSpec {
    /// Reads and validates a sweep file; `base = "path"` is relative to the file's folder.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or("sweep".into());
        Self::from_toml(&text, &stem, path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| cfg(format!("{}: {}", path.display(), strip_config(&e))))
    }

    /// Parses a sweep from TOML text; `default_name` names it when it has no `name`, `dir` resolves `base`.
    pub fn from_toml(text: &str, default_name: &str, dir: &Path) -> Result<Self> {
        let raw: RawSweep = toml::from_str(text).map_err(|e| cfg(e.to_string()))?;
        let (base, base_table) = match raw.base {
            toml::Value::String(p) => {
                let p = if Path::new(&p).is_absolute() { PathBuf::from(&p) } else { dir.join(&p) };
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| cfg(format!("base = \"{}\": cannot read it ({e})", p.display())))?;
                let base = TrainConfig::from_toml(&text)
                    .map_err(|e| cfg(format!("base config {}: {}", p.display(), strip_config(&e))))?;
                (base, text.parse::<toml::Table>().ok())
            }
            toml::Value::Table(t) => {
                let text = toml::to_string(&t).map_err(|e| cfg(e.to_string()))?;
                let base = TrainConfig::from_toml(&text)
                    .map_err(|e| cfg(format!("[base]: {}", strip_config(&e))))?;
                (base, Some(t))
            }
            other => {
                return Err(cfg(format!(
                    "base must be a path (base = \"train.toml\") or a [base] table, got a {}",
                    other.type_str()
                )))
            }
        };
        let grid = axes("grid", raw.grid.unwrap_or_default())?;
        let zip = axes("zip", raw.zip.unwrap_or_default())?;
        if grid.is_empty() && zip.is_empty() {
            return Err(cfg(
                "the sweep has no axes: give [grid] (and/or [zip]) with at least one key, e.g. lr = [0.01, 0.1]",
            ));
        }
        if let Some(first) = zip.first() {
            if let Some(a) = zip.iter().find(|a| a.values.len() != first.values.len()) {
                return Err(cfg(format!(
                    "[zip] axes vary together and need equal lengths: `{}` has {} values, `{}` has {}",
                    first.key,
                    first.values.len(),
                    a.key,
                    a.values.len()
                )));
            }
        }
        let all: Vec<&Axis> = grid.iter().chain(&zip).collect();
        for (i, a) in all.iter().enumerate() {
            for b in &all[..i] {
                if a.key == b.key {
                    return Err(cfg(format!("axis `{}` is given twice ([grid] and [zip])", a.key)));
                }
                let (outer, inner) = if a.key.len() < b.key.len() { (a, b) } else { (b, a) };
                if inner.key.starts_with(&format!("{}.", outer.key)) {
                    return Err(cfg(format!(
                        "axes `{}` and `{}` overlap: every value of `{}` sets `{}` too, so one axis would \
                         override the other and the point names would lie; drop one, or give `{}` inside the \
                         values of `{}`",
                        outer.key,
                        inner.key,
                        outer.key,
                        inner.key,
                        inner.key.strip_prefix(&format!("{}.", outer.key)).unwrap_or(&inner.key),
                        outer.key
                    )));
                }
            }
        }
        for a in &grid {
            for (j, v) in a.values.iter().enumerate() {
                if let Some(i) = a.values[..j].iter().position(|u| same_value(u, v)) {
                    return Err(cfg(format!(
                        "[grid] axis `{}` lists the same value twice ({} at position {}, {} at position {}): \
                         both would run the same point; drop one",
                        a.key,
                        a.values[i],
                        i + 1,
                        v,
                        j + 1
                    )));
                }
            }
        }
        if let Some(first) = zip.first() {
            let tuple = |j: usize| zip.iter().map(|a| &a.values[j]).collect::<Vec<_>>();
            for j in 0..first.values.len() {
                let here = tuple(j);
                let same = |i: usize| tuple(i).iter().zip(&here).all(|(u, v)| same_value(u, v));
                if let Some(i) = (0..j).find(|&i| same(i)) {
                    let vals = zip.iter().map(|a| format!("{} = {}", a.key, a.values[j])).collect::<Vec<_>>();
                    return Err(cfg(format!(
                        "[zip] positions {} and {} hold the same values ({}): both would run the same point; \
                         drop one",
                        i + 1,
                        j + 1,
                        vals.join(", ")
                    )));
                }
            }
        }
        let spec = SweepSpec {
            name: raw.name.unwrap_or_else(|| default_name.to_string()),
            base,
            grid,
            zip,
            collect: raw.collect,
            plots: raw.plot,
            base_table,
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the name, the collect and plot sections against the axes.
    pub fn validate(&self) -> Result<()> {
        plain_file_name(&self.name).map_err(|why| {
            cfg(format!(
                "name = {:?} {why}: the sweep's name is its folder (runs/<name>) and must be a plain file name",
                self.name
            ))
        })?;
        for (i, p) in self.plots.iter().enumerate() {
            if let Some(n) = &p.name {
                plain_file_name(n).map_err(|why| {
                    cfg(format!(
                        "[[plot]] name = {n:?} {why}: it is the file stem under plots/ and must be a plain file name"
                    ))
                })?;
            }
            if let Some(q) = self.plots[..i].iter().find(|q| q.stem() == p.stem()) {
                return Err(cfg(format!(
                    "two [[plot]] entries write plots/{}.png ({} vs {} and {} vs {}): give each its own name",
                    p.stem(),
                    q.y,
                    q.x,
                    p.y,
                    p.x
                )));
            }
        }
        let cols = self.columns()?;
        if let Some(m) = &self.collect.mean_last {
            if m.k == 0 {
                return Err(cfg("[collect] mean_last.k must be at least 1"));
            }
        }
        if let Some(f) = self.collect.summary.iter().find(|f| !SUMMARY_FIELDS.contains(&f.as_str())) {
            return Err(cfg(format!(
                "[collect] summary field `{f}` is not a numeric summary field; expected one of: {}",
                SUMMARY_FIELDS.join(", ")
            )));
        }
        for p in &self.plots {
            if !cols.iter().any(|(c, _)| *c == p.y) {
                let names: Vec<&str> = cols.iter().map(|(c, _)| c.as_str()).collect();
                return Err(cfg(format!(
                    "[[plot]] y = \"{}\" is not a collected column; collected: {}",
                    p.y,
                    if names.is_empty() {
                        "(none: add a [collect] section)".into()
                    } else {
                        names.join(", ")
                    }
                )));
            }
            let x = self.axis(&p.x).ok_or_else(|| {
                cfg(format!("[[plot]] x = \"{}\" is not an axis; axes: {}", p.x, self.keys().join(", ")))
            })?;
            if let Some(v) = x.values.iter().find(|v| as_f64(v).is_none()) {
                return Err(cfg(format!(
                    "[[plot]] x = \"{}\" must be a numeric axis, but it holds {v}",
                    p.x
                )));
            }
            for (k, v) in &p.filter {
                let a = self.axis(k).ok_or_else(|| {
                    cfg(format!("[[plot]] where: `{k}` is not an axis; axes: {}", self.keys().join(", ")))
                })?;
                if !a.values.contains(v) {
                    return Err(cfg(format!("[[plot]] where: axis `{k}` has no value {v}")));
                }
            }
            if p.log_x {
                let only = p.filter.get(&p.x);
                let bad = x.values.iter().filter(|v| only.is_none_or(|o| o == *v)).find(|v| {
                    as_f64(v).is_some_and(|f| f.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater))
                });
                if let Some(v) = bad {
                    return Err(cfg(format!(
                        "[[plot]] `{}`: log_x = true, but its x axis `{}` holds {v}, which a logarithmic axis \
                         cannot show (x must be > 0); drop log_x or the value",
                        p.stem(),
                        p.x
                    )));
                }
            }
            if let Some(l) = &p.lines {
                if self.axis(l).is_none() {
                    return Err(cfg(format!(
                        "[[plot]] lines = \"{l}\" is not an axis; axes: {}",
                        self.keys().join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    /// The axis keys, grid then zip.
    pub fn keys(&self) -> Vec<&str> {
        self.grid.iter().chain(&self.zip).map(|a| a.key.as_str()).collect()
    }

    /// The axis named `key`.
    pub fn axis(&self, key: &str) -> Option<&Axis> {
        self.grid.iter().chain(&self.zip).find(|a| a.key == key)
    }

    /// The collected columns in table order, with their sources; duplicate names are an error.
    pub fn columns(&self) -> Result<Vec<(String, Source)>> {
        let c = &self.collect;
        let mut out: Vec<(String, Source)> =
            c.final_metrics.iter().map(|m| (format!("final_{m}"), Source::Final(m.clone()))).collect();
        if let Some(ml) = &c.mean_last {
            out.extend(
                ml.metrics.iter().map(|m| (format!("mean{}_{m}", ml.k), Source::MeanLast(m.clone(), ml.k))),
            );
        }
        out.extend(c.summary.iter().map(|f| (f.clone(), Source::Summary(f.clone()))));
        out.extend(
            c.ratio.iter().map(|[a, b]| (format!("{a}_over_{b}"), Source::Ratio(a.clone(), b.clone()))),
        );
        for (i, (name, _)) in out.iter().enumerate() {
            if out[..i].iter().any(|(n, _)| n == name) {
                return Err(cfg(format!("[collect] yields the column `{name}` twice; drop one of them")));
            }
        }
        Ok(out)
    }

    /// Number of points: the product of the grid axes' lengths times the zip length.
    pub fn len(&self) -> usize {
        self.radices().iter().product()
    }

    /// Always false: a sweep has at least one point (empty axes are rejected).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn radices(&self) -> Vec<usize> {
        let mut r: Vec<usize> = self.grid.iter().map(|a| a.values.len()).collect();
        if let Some(z) = self.zip.first() {
            r.push(z.values.len());
        }
        r
    }

    /// The swept `(key, value)` pairs of point `index` (< [`len`](Self::len)).
    pub fn values_of(&self, index: usize) -> Vec<(String, toml::Value)> {
        let radices = self.radices();
        let mut digits = vec![0; radices.len()];
        let mut rest = index;
        for (d, r) in digits.iter_mut().zip(&radices).rev() {
            *d = rest % r;
            rest /= r;
        }
        let mut out: Vec<(String, toml::Value)> =
            self.grid.iter().zip(&digits).map(|(a, &d)| (a.key.clone(), a.values[d].clone())).collect();
        if let Some(&dz) = digits.get(self.grid.len()) {
            out.extend(self.zip.iter().map(|a| (a.key.clone(), a.values[dz].clone())));
        }
        out
    }

    /// Folder name of point `index`: `{index:0w}-{key}={value}_…` (see the module docs).
    pub fn name_of(&self, index: usize) -> String {
        let width = (self.len().max(1) - 1).to_string().len();
        let keys = self.keys();
        let short = |key: &str| -> String {
            let last = key.rsplit('.').next().unwrap_or(key);
            let clash = keys.iter().filter(|k| k.rsplit('.').next() == Some(last)).count() > 1;
            if clash {
                key.to_string()
            } else {
                last.to_string()
            }
        };
        let label = self
            .values_of(index)
            .iter()
            .map(|(k, v)| format!("{}={}", short(k), label_value(v)))
            .collect::<Vec<_>>()
            .join("_");
        let label: String = sanitize(&label).chars().take(MAX_LABEL).collect();
        format!("{index:0width$}-{label}")
    }

    /// Point `index` with its resolved config; an unknown key or a bad value is an error naming the axis.
    pub fn point(&self, index: usize) -> Result<Point> {
        self.point_from(&self.base_value()?, index)
    }

    /// The table every point's values are set on: the base as the sweep file wrote it, so that a point
    /// resolves like `noether train` on the same text (an axis switching `optimizer.method` to `sde` does not
    /// inherit SGD's defaulted `sampling`); for a spec read back from `spec.json`, the resolved base.
    fn base_value(&self) -> Result<toml::Value> {
        match &self.base_table {
            Some(t) => Ok(toml::Value::Table(t.clone())),
            None => toml::Value::try_from(&self.base).map_err(|e| cfg(format!("base config: {e}"))),
        }
    }

    fn point_from(&self, base: &toml::Value, index: usize) -> Result<Point> {
        let values = self.values_of(index);
        let point_err = |e: Error| {
            let vals = values.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ");
            cfg(format!("point {index} ({vals}): {}", strip_config(&e)))
        };
        let mut v = base.clone();
        for (key, value) in &values {
            set_dotted(&mut v, key, value.clone())?;
        }
        // The checks `noether train` makes on the table it reads, made on the base as written with this
        // point's values set (the resolved base would hold defaults the file never gave).
        if let (Some(_), toml::Value::Table(t)) = (&self.base_table, &v) {
            TrainConfig::check_keys_beside_tags(t).map_err(point_err)?;
        }
        let config = parse_config(v).map_err(point_err)?;
        Ok(Point { index, name: self.name_of(index), values, config })
    }

    /// Every point, each checked. Nothing runs before this succeeds. A point that fails is reported by the
    /// axis value that fails on the base alone, when one of its values does (the error then names the
    /// axis), else as the point; a value valid only beside another axis's value is accepted.
    pub fn points(&self) -> Result<Vec<Point>> {
        let base = self.base_value()?;
        (0..self.len())
            .map(|i| self.point_from(&base, i).map_err(|e| self.axis_alone_error(&base, i).unwrap_or(e)))
            .collect()
    }

    /// The first value of point `index` that fails when set alone on the base, as an error naming its axis.
    fn axis_alone_error(&self, base: &toml::Value, index: usize) -> Option<Error> {
        self.values_of(index).into_iter().find_map(|(key, value)| {
            let mut v = base.clone();
            if let Err(e) = set_dotted(&mut v, &key, value.clone()) {
                return Some(e);
            }
            parse_config(v).err().map(|e| cfg(format!("axis `{key}` = {value}: {}", strip_config(&e))))
        })
    }

    /// Checks that every collected metric is a `metrics.csv` column of at least one point (columns depend on
    /// the model and `[observe]`, so each distinct pair is checked once; a point lacking a column gets an empty
    /// cell), and that every point logs at least `mean_last.k` rows.
    pub fn check_metrics(&self, points: &[Point]) -> Result<()> {
        let c = &self.collect;
        if let Some(ml) = &c.mean_last {
            if let Some((p, rows)) =
                points.iter().map(|p| (p, logged_rows(&p.config))).find(|&(_, rows)| ml.k as u64 > rows)
            {
                return Err(cfg(format!(
                    "[collect] mean_last.k = {} exceeds the {rows} rows point {} ({}) logs (steps = {}, \
                     log_every = {}: the start, every log_every-th step and the last); use k ≤ {rows} or log \
                     more often",
                    ml.k, p.index, p.name, p.config.steps, p.config.log_every
                )));
            }
        }
        let metrics: Vec<&str> = c
            .final_metrics
            .iter()
            .chain(c.mean_last.iter().flat_map(|ml| ml.metrics.iter()))
            .chain(c.ratio.iter().flatten())
            .map(|m| m.as_str())
            .collect();
        if metrics.is_empty() {
            return Ok(());
        }
        let mut seen: Vec<serde_json::Value> = Vec::new();
        let mut found: Vec<String> = Vec::new();
        let mut first: Option<Vec<String>> = None;
        for p in points {
            let key = serde_json::json!([p.config.model, p.config.observe]);
            if seen.contains(&key) {
                continue;
            }
            seen.push(key);
            let cols = super::point::metric_columns(&p.config)
                .map_err(|e| cfg(format!("point {} ({}): {}", p.index, p.name, strip_config(&e))))?;
            found.extend(cols.iter().cloned());
            first.get_or_insert(cols);
        }
        if let Some(m) = metrics.iter().find(|m| !found.iter().any(|c| c == *m)) {
            return Err(cfg(format!(
                "[collect] metric `{m}` is not a column of metrics.csv; point 0 logs: {}",
                first.unwrap_or_default().join(", ")
            )));
        }
        Ok(())
    }

    /// The first difference between the points this spec and `other` define (base config and axes), as
    /// `"<path>: <this> here, <other> there"`; `None` when they define the same sweep.
    pub fn difference(&self, other: &SweepSpec) -> Option<String> {
        let a = serde_json::json!({"base": self.base, "grid": self.grid, "zip": self.zip});
        let b = serde_json::json!({"base": other.base, "grid": other.grid, "zip": other.zip});
        first_difference("", &a, &b)
    }
}

fn first_difference(path: &str, a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
    use serde_json::Value as J;
    let join = |k: &str| if path.is_empty() { k.to_string() } else { format!("{path}.{k}") };
    match (a, b) {
        (J::Object(x), J::Object(y)) => {
            let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
            keys.into_iter().find_map(|k| match (x.get(k), y.get(k)) {
                (Some(u), Some(v)) => first_difference(&join(k), u, v),
                (u, v) => Some(format!("{}: {} here, {} there", join(k), show(u), show(v))),
            })
        }
        (J::Array(x), J::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (u, v))| first_difference(&format!("{path}[{i}]"), u, v)),
        _ if a == b => None,
        _ => Some(format!("{path}: {a} here, {b} there")),
    }
}

fn show(v: Option<&serde_json::Value>) -> String {
    v.map_or("absent".into(), |v| v.to_string())
}

/// The rows of `metrics.csv` a run of `config` logs when it does not diverge: the start, every
/// `log_every`-th step and the last step.
fn logged_rows(config: &TrainConfig) -> u64 {
    let (steps, every) = (config.steps, config.log_every.max(1));
    1 + steps / every + u64::from(!steps.is_multiple_of(every))
}

/// Why `name` is not a plain file name (empty, `.`, `..`, or holding a path separator or NUL).
fn plain_file_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        Err("is empty")
    } else if name == "." || name == ".." {
        Err("names a folder, not a file")
    } else if name.contains(['/', '\\']) {
        Err("holds a path separator")
    } else if name.contains('\0') {
        Err("holds a NUL character")
    } else {
        Ok(())
    }
}

/// Whether two axis values give the same point: numbers equal as floats (`1` and `1.0`, `0.01` and
/// `0.010000000000000001`), arrays and tables element by element.
fn same_value(a: &toml::Value, b: &toml::Value) -> bool {
    use toml::Value as V;
    match (a, b) {
        (V::Integer(x), V::Integer(y)) => x == y,
        (V::Integer(_) | V::Float(_), V::Integer(_) | V::Float(_)) => as_f64(a) == as_f64(b),
        (V::Array(x), V::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(u, v)| same_value(u, v)),
        (V::Table(x), V::Table(y)) => {
            x.len() == y.len() && x.iter().all(|(k, u)| y.get(k).is_some_and(|v| same_value(u, v)))
        }
        _ => a == b,
    }
}

/// Parses a config value through the training config's own deserializer and validation.
fn parse_config(v: toml::Value) -> Result<TrainConfig> {
    let c: TrainConfig = v.try_into().map_err(|e: toml::de::Error| cfg(e.message().to_string()))?;
    c.validate().map_err(|e| cfg(strip_config(&e)))?;
    Ok(c)
}

/// The message of a config error without the "invalid configuration: " prefix (for nesting).
fn strip_config(e: &Error) -> String {
    match e {
        Error::Config(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Keys of one config table that give the same setting in two forms (the training config refuses both at
/// once): an axis that sets the first removes the others from its point's table.
const ALTERNATIVE_FORMS: &[(&str, &[&str])] = &[
    ("activations", &["activation"]),
    ("activation", &["activations"]),
    ("variances", &["phi", "scale"]),
    ("phi", &["variances"]),
    ("scale", &["variances"]),
];

/// Sets `key` (dotted) in a TOML table, creating missing intermediate tables.
fn set_dotted(root: &mut toml::Value, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(cfg(format!("axis key `{key}` has an empty segment")));
    }
    let mut cur = root;
    for (i, p) in parts.iter().enumerate() {
        let here = parts[..i].join(".");
        let table = cur.as_table_mut().ok_or_else(|| {
            cfg(format!("axis `{key}`: `{here}` is not a table in the config, so it has no key `{p}`"))
        })?;
        if i + 1 == parts.len() {
            // The axis's form of a setting replaces the other form the base carries (the base is written
            // out whole, with defaults, so it always has one of them).
            for (key, others) in ALTERNATIVE_FORMS {
                if key == p {
                    others.iter().for_each(|o| drop(table.remove(*o)));
                }
            }
            table.insert(p.to_string(), value);
            return Ok(());
        }
        cur = table.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
    Ok(())
}

/// The axes of a `[grid]` or `[zip]` table, in the order the file lists them.
fn axes(section: &str, table: BTreeMap<String, toml::Spanned<toml::Value>>) -> Result<Vec<Axis>> {
    let mut entries: Vec<(String, toml::Spanned<toml::Value>)> = table.into_iter().collect();
    entries.sort_by_key(|(_, v)| v.span().start);
    entries
        .into_iter()
        .map(|(key, v)| {
            let values = axis_values(&key, v.into_inner())
                .map_err(|e| cfg(format!("[{section}] {}", strip_config(&e))))?;
            Ok(Axis { key, values })
        })
        .collect()
}

fn axis_values(key: &str, v: toml::Value) -> Result<Vec<toml::Value>> {
    let values = match v {
        toml::Value::Array(a) => a,
        toml::Value::Table(t) if t.len() == 1 && t.contains_key("range") => {
            let r = t["range"].as_array().filter(|r| (2..=3).contains(&r.len()));
            let ints: Option<Vec<i64>> = r.and_then(|r| r.iter().map(|x| x.as_integer()).collect());
            let Some(ints) = ints else {
                return Err(cfg(format!(
                    "axis `{key}`: range must be [start, end] or [start, end, step] of integers, got {}",
                    t["range"]
                )));
            };
            let step = ints.get(2).copied().unwrap_or(1);
            if step <= 0 {
                return Err(cfg(format!("axis `{key}`: the range step must be positive, got {step}")));
            }
            (ints[0]..ints[1]).step_by(step as usize).map(toml::Value::Integer).collect()
        }
        other => {
            return Err(cfg(format!(
                "axis `{key}`: give an array of values or {{ range = [start, end] }}, got {other}"
            )))
        }
    };
    if values.is_empty() {
        return Err(cfg(format!("axis `{key}` has no values; give at least one")));
    }
    Ok(values)
}

/// A value as a number (integers and floats).
pub fn as_f64(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    }
}

/// A value as it appears in a folder name: numbers in shortest form, arrays joined by `x`, tables' values by
/// `+`.
fn label_value(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => format!("{f:?}"),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(a) => a.iter().map(label_value).collect::<Vec<_>>().join("x"),
        toml::Value::Table(t) => t.values().map(label_value).collect::<Vec<_>>().join("+"),
        toml::Value::Datetime(d) => d.to_string(),
    }
}

/// Keeps `[A-Za-z0-9._+=-]`, replaces every other character by `-`.
pub fn sanitize(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._+=-".contains(c) { c } else { '-' }).collect()
}

//! The report: a table of [`Check`]s and a section per experiment with its text and figures, written as
//! `report.md` (figures linked by relative path) and a self-contained `report.html` (figures embedded as
//! base64 PNG data URIs, inline CSS; opens offline).
//!
//! ```no_run
//! use noether::report::{Check, Report, Section};
//! let check = Check::relative("fig2", "C_{t+1} − C_t = η²ĝᵀAĝ", 1.0e-3, 1.02e-3, 0.05);
//! let section = Section::new("fig2", "The charge drifts as predicted.").check(check);
//! let report = Report::new("noether reproduction").section(section);
//! report.write("out")?;
//! # Ok::<(), noether::Error>(())
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::report::fmt_num;
use crate::report::plot::FigureFiles;
use crate::report::table::{html_escape, table, Align, Cell, Html, Markdown, TableSyntax};
use crate::{Error, Result};

/// How `measured` is compared with `predicted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// `|measured − predicted| ≤ tolerance·|predicted|`.
    Relative,
    /// `|measured − predicted| ≤ tolerance`.
    Absolute,
    /// `measured ≤ predicted + tolerance` (predicted is an upper bound).
    AtMost,
    /// `measured ≥ predicted − tolerance` (predicted is a lower bound).
    AtLeast,
}

/// The verdict of a row of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A claim of the theory that holds.
    Pass,
    /// A claim of the theory that does not hold (the CLI exits 1).
    #[default]
    Fail,
    /// A claim the run is too small to decide (quick mode): neither passed nor failed.
    Undecided,
    /// A reported measurement that tests no claim of the theory: not pass/fail.
    Measured,
    /// A pre-registered prediction whose check failed and whose refutation is explained in docs/experiments.md
    /// (set only by [`Check::refuted_if_failing`]): reported as such, counted apart, does not fail the run.
    Refuted,
}

impl Outcome {
    /// The word in the report's result column.
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::Undecided => "not decided at this size",
            Outcome::Measured => "measurement",
            Outcome::Refuted => "REFUTED",
        }
    }
}

/// `null` in JSON reads back as NaN (serde_json writes non-finite floats as `null`).
fn f64_or_nan<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// One quantitative claim and its outcome: a row of the report's table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// Experiment name (e.g. `fig2`).
    pub experiment: String,
    /// The claim in words or as a formula.
    pub claim: String,
    /// Predicted value (theory); JSON `null` if not finite.
    #[serde(deserialize_with = "f64_or_nan")]
    pub predicted: f64,
    /// Measured value; JSON `null` if not finite (a non-finite measurement fails).
    #[serde(deserialize_with = "f64_or_nan")]
    pub measured: f64,
    /// Tolerance, interpreted by `rule`.
    #[serde(deserialize_with = "f64_or_nan")]
    pub tolerance: f64,
    /// Comparison rule.
    pub rule: Rule,
    /// Whether `measured` meets `rule` (for a measurement row: only whether it lies within the stated range).
    pub pass: bool,
    /// The claim of the paper (or of noether's extension) the row tests; empty for a reported measurement.
    #[serde(default)]
    pub tests: String,
    /// The row's verdict: from `pass` for a check, [`Outcome::Measured`] or [`Outcome::Undecided`] otherwise.
    #[serde(default)]
    pub outcome: Outcome,
}

impl Check {
    /// A check decided by `rule`; NaN anywhere fails.
    pub fn new(
        experiment: impl Into<String>,
        claim: impl Into<String>,
        predicted: f64,
        measured: f64,
        tolerance: f64,
        rule: Rule,
    ) -> Self {
        let (p, m, t) = (predicted, measured, tolerance);
        let pass = match rule {
            Rule::Relative => (m - p).abs() <= t * p.abs(),
            Rule::Absolute => (m - p).abs() <= t,
            Rule::AtMost => m <= p + t,
            Rule::AtLeast => m >= p - t,
        } && m.is_finite();
        Check {
            experiment: experiment.into(),
            claim: claim.into(),
            predicted,
            measured,
            tolerance,
            rule,
            pass,
            tests: String::new(),
            outcome: if pass { Outcome::Pass } else { Outcome::Fail },
        }
    }
    /// Names the claim the row tests (see [`Check::tests`]).
    pub fn tests(mut self, claim: impl Into<String>) -> Self {
        self.tests = claim.into();
        self
    }
    /// Marks the row as a reported measurement that tests no claim of the theory (never fails the run).
    pub fn measurement(mut self) -> Self {
        self.outcome = Outcome::Measured;
        self.tests.clear();
        self
    }
    /// Marks the row "not decided at this size" (quick mode too small for the claim; never fails the run).
    pub fn undecided(mut self) -> Self {
        self.outcome = Outcome::Undecided;
        self
    }
    /// A pre-registered row whose prediction the data refute, with the refutation explained in
    /// docs/experiments.md (`why`: one clause naming the derived row that carries the claim, appended to the
    /// row). Decided by the measurement: the row becomes [`Outcome::Refuted`] only if its own comparison failed
    /// (`outcome` Fail and `pass` false); a passing, undecided or measurement row is returned unchanged, so the
    /// flag can neither turn a pass into anything else nor hide a failure of another row.
    pub fn refuted_if_failing(mut self, why: impl AsRef<str>) -> Self {
        if self.outcome == Outcome::Fail && !self.pass {
            self.outcome = Outcome::Refuted;
            self.claim = format!(
                "{} — REFUTED (pre-registered prediction; why, and the row that carries the claim: {}; \
                 docs/experiments.md)",
                self.claim,
                why.as_ref()
            );
        }
        self
    }
    /// Passes iff `|measured − predicted| ≤ tol·|predicted|`.
    pub fn relative(
        experiment: impl Into<String>,
        claim: impl Into<String>,
        predicted: f64,
        measured: f64,
        tol: f64,
    ) -> Self {
        Self::new(experiment, claim, predicted, measured, tol, Rule::Relative)
    }
    /// Passes iff `|measured − predicted| ≤ tol`.
    pub fn absolute(
        experiment: impl Into<String>,
        claim: impl Into<String>,
        predicted: f64,
        measured: f64,
        tol: f64,
    ) -> Self {
        Self::new(experiment, claim, predicted, measured, tol, Rule::Absolute)
    }

    /// Human text of the predicted column (`≤ 0.5` for bounds).
    fn predicted_text(&self) -> String {
        match self.rule {
            Rule::Relative | Rule::Absolute => fmt_num(self.predicted),
            Rule::AtMost => format!("≤ {}", fmt_num(self.predicted)),
            Rule::AtLeast => format!("≥ {}", fmt_num(self.predicted)),
        }
    }
    /// Deviation in the unit of the tolerance: relative error, absolute error, or by how much a bound is
    /// exceeded (negative when inside it).
    pub fn deviation(&self) -> f64 {
        let (p, m) = (self.predicted, self.measured);
        match self.rule {
            Rule::Relative => (m - p).abs() / p.abs(),
            Rule::Absolute => (m - p).abs(),
            Rule::AtMost => m - p,
            Rule::AtLeast => p - m,
        }
    }
    /// Human text of the deviation column (`0.04%`, `3.2e-9`).
    fn deviation_text(&self) -> String {
        match self.rule {
            Rule::Relative => format!("{}%", fmt_num(100.0 * self.deviation())),
            _ => fmt_num(self.deviation()),
        }
    }
    /// Human text of the tolerance column (`±5%`, `±0.01`, `+0.01`).
    fn tolerance_text(&self) -> String {
        match self.rule {
            Rule::Relative => format!("±{}%", fmt_num(100.0 * self.tolerance)),
            Rule::Absolute => format!("±{}", fmt_num(self.tolerance)),
            Rule::AtMost | Rule::AtLeast if self.tolerance == 0.0 => "—".into(),
            Rule::AtMost | Rule::AtLeast => format!("+{}", fmt_num(self.tolerance)),
        }
    }
}

/// A figure of a section: its files and a caption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionFigure {
    /// The PNG (embedded in HTML, linked in Markdown) and SVG (linked) files.
    pub files: FigureFiles,
    /// Caption shown under the figure.
    pub caption: String,
}

/// The part of the report about one experiment.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Section {
    /// Experiment name (section heading).
    pub experiment: String,
    /// A short explanation; paragraphs separated by blank lines (Markdown is kept verbatim in `report.md`).
    pub text: String,
    /// Figures, in order.
    pub figures: Vec<SectionFigure>,
    /// The experiment's checks.
    pub checks: Vec<Check>,
    /// The claim a check tests when it names none (set by [`Section::tests`]).
    #[serde(skip)]
    pub default_claim: String,
}

impl Section {
    /// A section with a heading and text.
    pub fn new(experiment: impl Into<String>, text: impl Into<String>) -> Self {
        Section { experiment: experiment.into(), text: text.into(), ..Default::default() }
    }
    /// Adds a figure with a caption.
    pub fn figure(mut self, files: FigureFiles, caption: impl Into<String>) -> Self {
        self.figures.push(SectionFigure { files, caption: caption.into() });
        self
    }
    /// Sets the claim that checks added after it test when they name none of their own.
    pub fn tests(mut self, claim: impl Into<String>) -> Self {
        self.default_claim = claim.into();
        self
    }
    /// Adds a check (a pass/fail row without a claim of its own tests the section's, see [`Section::tests`]).
    pub fn check(mut self, mut check: Check) -> Self {
        if check.tests.is_empty() && check.outcome != Outcome::Measured {
            check.tests = self.default_claim.clone();
        }
        self.checks.push(check);
        self
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Report {
    /// Document title.
    pub title: String,
    /// Sections, one per experiment.
    pub sections: Vec<Section>,
}

/// Paths written by [`Report::write`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.html`.
    pub html: PathBuf,
}

const CHECK_COLUMNS: [&str; 8] =
    ["experiment", "claim tested", "row", "predicted", "measured", "deviation", "tolerance", "result"];
const CHECK_ALIGN: [Align; 8] = [
    Align::Left,
    Align::Left,
    Align::Left,
    Align::Right,
    Align::Right,
    Align::Right,
    Align::Right,
    Align::Left,
];

/// The checks table in a given syntax (shared by Markdown and HTML).
pub fn checks_table(syntax: &dyn TableSyntax, checks: &[&Check]) -> String {
    let rows: Vec<Vec<Cell>> = checks
        .iter()
        .map(|c| {
            vec![
                Cell::plain(&c.experiment),
                Cell::plain(if c.outcome == Outcome::Measured {
                    "— (reported measurement)"
                } else {
                    &c.tests
                }),
                Cell::plain(&c.claim),
                Cell::plain(c.predicted_text()),
                Cell::plain(fmt_num(c.measured)),
                Cell::plain(c.deviation_text()),
                Cell::plain(c.tolerance_text()),
                Cell::outcome(c.outcome),
            ]
        })
        .collect();
    table(syntax, &CHECK_COLUMNS, &CHECK_ALIGN, &rows)
}

/// Whether a row is a pass/fail check (refuted rows are checks that did not pass).
fn is_check(c: &Check) -> bool {
    matches!(c.outcome, Outcome::Pass | Outcome::Fail | Outcome::Refuted)
}

/// `(passed, pass/fail rows, refuted)` of one section.
fn section_counts(s: &Section) -> (usize, usize, usize) {
    let count = |o: Outcome| s.checks.iter().filter(|c| c.outcome == o).count();
    (count(Outcome::Pass), s.checks.iter().filter(|c| is_check(c)).count(), count(Outcome::Refuted))
}

/// `Checks: p of n passed.` with the refuted rows named.
fn section_line(s: &Section) -> String {
    let (p, n, r) = section_counts(s);
    if r > 0 {
        format!("Checks: {p} of {n} passed, {r} REFUTED (see docs/experiments.md).")
    } else {
        format!("Checks: {p} of {n} passed.")
    }
}

/// `path` relative to `base` when it lies inside it, else unchanged; `/` separators for links.
fn link(path: &Path, base: &Path) -> String {
    match path.strip_prefix(base) {
        Ok(rel) => rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/"),
        Err(_) => path.display().to_string(),
    }
}

/// An HTML id / Markdown anchor from a heading.
fn anchor(s: &str) -> String {
    s.chars().map(|c| if c.is_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1100px;margin:2em auto;\
padding:0 1em;color:#222;line-height:1.45}h1{border-bottom:2px solid #ddd;padding-bottom:.3em}\
h2{margin-top:2em;border-bottom:1px solid #eee}table{border-collapse:collapse;margin:1em 0;font-size:.92em}\
th,td{border:1px solid #ccc;padding:.35em .7em;vertical-align:top}th{background:#f4f4f4;text-align:left}\
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
td.pass{background:#dff3e0;color:#17632a;font-weight:bold}td.fail{background:#fbe0e0;color:#a31515;font-weight:bold}\
td.undecided{background:#fff4d6;color:#7a5a00}td.measured{background:#eef2f7;color:#334}\
td.refuted{background:#ffd8a8;color:#8a3c00;font-weight:bold}\
.verdict-pass{color:#17632a;font-weight:bold}.verdict-fail{color:#a31515;font-weight:bold}\
.verdict-refuted{color:#8a3c00;font-weight:bold}\
figure{margin:1.5em 0;text-align:center}figure img{max-width:100%;height:auto;border:1px solid #eee}\
figcaption{color:#555;font-size:.92em;margin-top:.4em}";

impl Report {
    /// An empty report.
    pub fn new(title: impl Into<String>) -> Self {
        Report { title: title.into(), sections: Vec::new() }
    }
    /// Adds a section.
    pub fn section(mut self, s: Section) -> Self {
        self.sections.push(s);
        self
    }
    /// All checks, section by section.
    pub fn checks(&self) -> impl Iterator<Item = &Check> {
        self.sections.iter().flat_map(|s| s.checks.iter())
    }
    /// `(passed, total)` counts of the pass/fail rows, refuted ones included in the total (measurements and
    /// undecided rows are not counted).
    pub fn counts(&self) -> (usize, usize) {
        let decided = self.checks().filter(|c| is_check(c));
        let (mut p, mut n) = (0, 0);
        for c in decided {
            n += 1;
            p += usize::from(c.outcome == Outcome::Pass);
        }
        (p, n)
    }
    /// Number of rows with the given outcome.
    pub fn count(&self, outcome: Outcome) -> usize {
        self.checks().filter(|c| c.outcome == outcome).count()
    }
    /// True when no pass/fail row failed (the CLI exits 1 otherwise); refuted rows do not fail the run.
    pub fn all_passed(&self) -> bool {
        self.checks().all(|c| c.outcome != Outcome::Fail)
    }

    fn verdict_line(&self) -> String {
        let (p, n) = self.counts();
        let mut line = format!("{p} of {n} checks passed");
        let (f, r) = (self.count(Outcome::Fail), self.count(Outcome::Refuted));
        if r > 0 {
            line += &format!(
                "; {r} REFUTED (pre-registered predictions the data refute, explained in docs/experiments.md); \
                 {f} failed"
            );
        }
        let (u, m) = (self.count(Outcome::Undecided), self.count(Outcome::Measured));
        if u > 0 {
            line += &format!("; {u} not decided at this size");
        }
        if m > 0 {
            line += &format!("; {m} reported measurements");
        }
        line
    }

    /// The Markdown document; figure links are relative to `base` (the folder `report.md` is written to).
    pub fn markdown(&self, base: &Path) -> String {
        let mut out = format!("# {}\n\n{}.\n\n", self.title, self.verdict_line());
        let checks: Vec<&Check> = self.checks().collect();
        if !checks.is_empty() {
            out += &checks_table(&Markdown, &checks);
            out += "\n";
        }
        for s in &self.sections {
            out += &format!("## {}\n\n", s.experiment);
            if !s.text.trim().is_empty() {
                out += &format!("{}\n\n", s.text.trim());
            }
            if !s.checks.is_empty() {
                out += &format!("{}\n\n", section_line(s));
            }
            for f in &s.figures {
                let png = link(&f.files.png, base);
                let svg = link(&f.files.svg, base);
                out += &format!(
                    "![{}]({png})\n\n*{}* ([SVG]({svg}))\n\n",
                    f.caption.replace(']', "\\]"),
                    f.caption
                );
            }
        }
        out
    }

    /// The self-contained HTML document (PNG figures read from disk and embedded as base64 data URIs).
    pub fn html(&self) -> Result<String> {
        let mut out = format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{t}</title>\n\
             <style>{CSS}</style>\n</head>\n<body>\n<h1>{t}</h1>\n",
            t = html_escape(&self.title)
        );
        let class = match (self.all_passed(), self.count(Outcome::Refuted)) {
            (false, _) => "verdict-fail",
            (true, 0) => "verdict-pass",
            (true, _) => "verdict-refuted",
        };
        out += &format!("<p class=\"{class}\">{}.</p>\n", self.verdict_line());
        let checks: Vec<&Check> = self.checks().collect();
        if !checks.is_empty() {
            out += &checks_table(&Html, &checks);
        }
        if self.sections.len() > 1 {
            out += "<nav><ul>\n";
            for s in &self.sections {
                out += &format!(
                    "<li><a href=\"#{}\">{}</a></li>\n",
                    anchor(&s.experiment),
                    html_escape(&s.experiment)
                );
            }
            out += "</ul></nav>\n";
        }
        for s in &self.sections {
            out += &format!(
                "<section id=\"{}\">\n<h2>{}</h2>\n",
                anchor(&s.experiment),
                html_escape(&s.experiment)
            );
            for para in s.text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
                out += &format!("<p>{}</p>\n", html_escape(para));
            }
            if !s.checks.is_empty() {
                let (p, n, r) = section_counts(s);
                let class = match (p == n, r) {
                    (true, _) => "verdict-pass",
                    (false, r) if p + r == n => "verdict-refuted",
                    _ => "verdict-fail",
                };
                out += &format!("<p class=\"{class}\">{}</p>\n", html_escape(&section_line(s)));
            }
            for f in &s.figures {
                let bytes = std::fs::read(&f.files.png).map_err(|e| Error::io(&f.files.png, e))?;
                out += &format!(
                    "<figure>\n<img src=\"data:image/png;base64,{}\" alt=\"{c}\">\n<figcaption>{c}</figcaption>\n</figure>\n",
                    base64(&bytes),
                    c = html_escape(&f.caption)
                );
            }
            out += "</section>\n";
        }
        out += "</body>\n</html>\n";
        Ok(out)
    }

    /// Writes `dir/report.md` and `dir/report.html` (creating `dir`).
    pub fn write(&self, dir: impl AsRef<Path>) -> Result<ReportFiles> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let files = ReportFiles { markdown: dir.join("report.md"), html: dir.join("report.html") };
        let html = self.html()?;
        std::fs::write(&files.markdown, self.markdown(dir)).map_err(|e| Error::io(&files.markdown, e))?;
        std::fs::write(&files.html, html).map_err(|e| Error::io(&files.html, e))?;
        Ok(files)
    }
}

/// Standard base64 (RFC 4648 §4, alphabet `A–Z a–z 0–9 + /`, `=` padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        for (k, s) in sextets.iter().enumerate() {
            // A chunk of m bytes yields m + 1 symbols, then padding.
            out.push(if k <= chunk.len() { ALPHABET[*s as usize] as char } else { '=' });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        // RFC 4648 §10.
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in vectors {
            assert_eq!(base64(input.as_bytes()), want, "base64({input:?})");
        }
        // All 64 symbols: bytes 0..=255 cover every sextet; check against the bit-by-bit definition.
        let bytes: Vec<u8> = (0..=255).collect();
        let bits: Vec<u8> = bytes.iter().flat_map(|b| (0..8).rev().map(move |k| (b >> k) & 1)).collect();
        let symbols: String = bits
            .chunks(6)
            .map(|c| {
                let v =
                    c.iter().chain(std::iter::repeat(&0)).take(6).fold(0usize, |v, b| 2 * v + *b as usize);
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"[v] as char
            })
            .collect();
        let padded = format!("{symbols}{}", "=".repeat((4 - symbols.len() % 4) % 4));
        assert_eq!(base64(&bytes), padded);
    }

    #[test]
    fn check_rules_decide_pass_and_nan_fails() {
        assert!(Check::relative("e", "c", 2.0, 2.09, 0.05).pass);
        assert!(!Check::relative("e", "c", 2.0, 2.11, 0.05).pass);
        assert!(!Check::relative("e", "c", -2.0, -2.11, 0.05).pass);
        assert!(Check::absolute("e", "c", 0.0, -0.009, 0.01).pass);
        assert!(!Check::absolute("e", "c", 0.0, 0.011, 0.01).pass);
        assert!(Check::new("e", "c", 1.0, 1.0, 0.0, Rule::AtMost).pass);
        assert!(!Check::new("e", "c", 1.0, 1.1, 0.0, Rule::AtMost).pass);
        assert!(Check::new("e", "c", 1.0, 0.95, 0.1, Rule::AtLeast).pass);
        assert!(!Check::new("e", "c", 1.0, 0.85, 0.1, Rule::AtLeast).pass);
        assert!(!Check::relative("e", "c", 1.0, f64::NAN, 0.5).pass);
        assert!(!Check::new("e", "c", 1.0, f64::NEG_INFINITY, 0.0, Rule::AtMost).pass);
        assert!((Check::relative("e", "c", -4.0, -5.0, 0.1).deviation() - 0.25).abs() < 1e-15);
        assert_eq!(Check::new("e", "c", 1.0, 1.5, 0.0, Rule::AtMost).deviation(), 0.5);
        assert_eq!(Check::new("e", "c", 1.0, 1.5, 0.0, Rule::AtLeast).deviation(), -0.5);
    }

    #[test]
    fn check_json_round_trips_with_null_for_nan() {
        let c = Check::relative("e", "c", 1.0, f64::NAN, 0.1);
        let s = serde_json::to_string(&c).unwrap();
        assert!(s.contains("\"measured\":null"), "{s}");
        assert!(s.contains("\"rule\":\"relative\""), "{s}");
        let back: Check = serde_json::from_str(&s).unwrap();
        assert!(back.measured.is_nan() && !back.pass && back.claim == "c");
    }

    #[test]
    fn links_are_relative_to_the_report_folder() {
        assert_eq!(link(Path::new("out/figs/a.png"), Path::new("out")), "figs/a.png");
        assert_eq!(link(Path::new("/elsewhere/a.png"), Path::new("out")), "/elsewhere/a.png");
    }
}

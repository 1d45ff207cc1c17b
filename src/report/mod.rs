//! Exports and figures: CSV/JSON writers, PNG + SVG plots, the Markdown/HTML report.
//!
//! This module formats and writes results; it computes no physics. Its pieces:
//! - [`plot`]: a [`Figure`] description (line, dashed, marker series; log axes; `y = x` scatter; small-multiple
//!   grids; matrix heat maps) rendered by one routine to both PNG and SVG, with fixed colours per method name.
//! - [`export`]: the run folder (`metrics.csv` streamed row by row, `summary.json`, `config.toml`).
//! - [`exporter`]: `--export-json/-csv/-markdown` of the table-producing commands, one [`Exporter`] per format,
//!   over the per-command result structs of [`records`].
//! - [`table`]: one table routine; Markdown and HTML supply only their row and divider syntax.
//! - [`document`]: [`Check`] rows (claim tested, row, predicted, measured, tolerance, [`Outcome`]) and the [`Report`] written as
//!   `report.md` (figures linked) and a self-contained `report.html` (figures embedded as base64 PNG).
//!
//! Conventions: CSV and JSON carry raw values (unrounded, SI); human tables use [`fmt_num`] (4 significant
//! digits, scientific notation below 10⁻³ and from 10⁴). An undefined value is JSON `null`, never 0.

pub mod document;
pub mod export;
pub mod exporter;
pub mod plot;
pub mod records;
pub mod table;

pub use document::{base64, Check, Outcome, Report, ReportFiles, Rule, Section};
pub use export::{MetricsWriter, RunDir, Summary};
pub use exporter::{ExportDoc, ExportFormat, Exporter, Exports, Record};
pub use plot::{color_for, Color, Figure, FigureFiles, Heatmap, Panel, Plot, Series, Style};

/// A number for humans: 4 significant digits, trailing zeros dropped; fixed notation for `10⁻³ ≤ |x| < 10⁴`,
/// scientific (`1.234e-5`) otherwise; `0`, `NaN`, `inf`, `-inf` as such. Raw exports never use this.
pub fn fmt_num(x: f64) -> String {
    fmt_sig(x, 4)
}

/// [`fmt_num`] with `sig` significant digits (≥ 1): fixed for `10⁻³ ≤ |x| < 10^max(4, sig)`, else scientific.
pub fn fmt_sig(x: f64, sig: usize) -> String {
    let sig = sig.max(1);
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if x == 0.0 {
        return "0".into();
    }
    let a = x.abs();
    if a >= 1e-3 && a < 10f64.powi(sig.max(4) as i32) {
        let decimals = (sig as i32 - 1 - a.log10().floor() as i32).max(0) as usize;
        let s = format!("{x:.decimals$}");
        let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
        // Rounding may reach 10⁴ (9999.7 → "10000"); that is still the 4-digit value.
        if s == "-0" {
            "0".into()
        } else {
            s
        }
    } else {
        let s = format!("{x:.prec$e}", prec = sig - 1);
        let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let mant = if mant.contains('.') { mant.trim_end_matches('0').trim_end_matches('.') } else { mant };
        format!("{mant}e{exp}")
    }
}

#[cfg(test)]
mod tests {
    use super::{fmt_num, fmt_sig};

    #[test]
    fn fmt_sig_keeps_the_requested_digits() {
        assert_eq!(fmt_sig(1.0000000005, 11), "1.0000000005");
        assert_eq!(fmt_sig(123456.0, 6), "123456");
        assert_eq!(fmt_sig(1234567.0, 6), "1.23457e6");
        assert_eq!(fmt_sig(0.5, 1), "0.5");
        assert_eq!(fmt_sig(2.6e-7, 0), "3e-7"); // sig is at least 1
    }

    #[test]
    fn fmt_num_rounds_to_four_significant_digits() {
        let cases = [
            (0.0, "0"),
            (1.0, "1"),
            (1.5, "1.5"),
            (std::f64::consts::PI, "3.142"),
            (-123.456, "-123.5"),
            (0.0123456, "0.01235"),
            (0.001, "0.001"),
            (9999.0, "9999"),
            (12346.0, "1.235e4"),
            (1.0e-5, "1e-5"),
            (-2.5e-7, "-2.5e-7"),
            (6.02214076e23, "6.022e23"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (x, want) in cases {
            assert_eq!(fmt_num(x), want, "fmt_num({x})");
        }
    }
}

//! Report module: every figure kind renders to a valid PNG and SVG, degenerate data never panics, the report
//! documents contain every check. Set `NOETHER_KEEP_FIGURES=<dir>` to keep the rendered files for inspection.

use std::path::{Path, PathBuf};

use noether::report::plot::PNG_SCALE;
use noether::report::{
    base64, Check, Figure, FigureFiles, Heatmap, Outcome, Panel, Plot, Report, Section, Series,
};

/// Output folder: `$NOETHER_KEEP_FIGURES/<name>` if set, else a temporary folder deleted at drop.
fn out_dir(name: &str) -> (PathBuf, Option<tempfile::TempDir>) {
    match std::env::var_os("NOETHER_KEEP_FIGURES") {
        Some(d) => (Path::new(&d).join(name), None),
        None => {
            let t = tempfile::tempdir().unwrap();
            (t.path().to_path_buf(), Some(t))
        }
    }
}

/// Width and height from the IHDR chunk after checking the PNG signature (RFC 2083 §3.1, §4.1.1).
fn png_size(path: &Path) -> (u32, u32) {
    let b = std::fs::read(path).unwrap();
    assert!(b.len() > 33, "{} too short", path.display());
    assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&b[12..16], b"IHDR", "first chunk must be IHDR");
    let be = |k: usize| u32::from_be_bytes([b[k], b[k + 1], b[k + 2], b[k + 3]]);
    (be(16), be(20))
}

fn expected_png_size(fig: &Figure) -> (u32, u32) {
    let cols = fig.cols.min(fig.panels.len()).max(1) as f64;
    let rows = fig.panels.len().div_ceil(cols as usize).max(1) as f64;
    let title = if fig.title.is_some() { 50.0 } else { 0.0 };
    let w = fig.panel_size.0 as f64 * cols * PNG_SCALE;
    let h = (fig.panel_size.1 as f64 * rows + title) * PNG_SCALE;
    (w.round() as u32, h.round() as u32)
}

/// Renders and checks both files; returns the SVG text.
fn render(fig: &Figure, name: &str, texts: &[&str]) -> (FigureFiles, String) {
    let (dir, _keep) = out_dir("figures");
    let files = fig.save(&dir, name).unwrap();
    assert_eq!(png_size(&files.png), expected_png_size(fig), "{name}.png size");
    let bytes = std::fs::metadata(&files.png).unwrap().len();
    assert!(bytes > 4_000, "{name}.png suspiciously small ({bytes} bytes)");
    let svg = std::fs::read_to_string(&files.svg).unwrap();
    assert!(svg.contains("<svg"), "{name}.svg is not SVG");
    assert!(svg.trim_end().ends_with("</svg>"), "{name}.svg is truncated");
    for t in texts {
        assert!(svg.contains(t), "{name}.svg lacks {t:?}");
    }
    (files, svg)
}

fn curve(f: impl Fn(f64) -> f64, n: usize, x0: f64, x1: f64) -> Vec<(f64, f64)> {
    (0..n).map(|k| x0 + (x1 - x0) * k as f64 / (n - 1) as f64).map(|x| (x, f(x))).collect()
}

fn lines_plot() -> Plot {
    Plot::new("Noether charge under SGD", "t = η·steps", "C = θᵀAθ")
        .series(Series::line(
            "SGD",
            curve(|t| 1.0 - 0.8 * (1.0 - (-t).exp()) + 0.02 * (7.0 * t).sin(), 200, 0.0, 5.0),
        ))
        .series(Series::line("GD", curve(|_| 1.0, 50, 0.0, 5.0)))
        .series(Series::dashed("theory", curve(|t| 1.0 - 0.8 * (1.0 - (-t).exp()), 200, 0.0, 5.0)))
        .series(Series::new(
            "layer 2",
            curve(|t| 0.5 + 0.1 * t, 11, 0.0, 5.0),
            noether::report::Style::LineMarkers,
        ))
}

#[test]
fn line_plot_renders_png_and_svg_with_labels_and_legend() {
    let fig = Figure::single(lines_plot());
    render(
        &fig,
        "lines",
        &["Noether charge under SGD", "t = η·steps", "C = θᵀAθ", "SGD", "GD", "theory", "layer 2"],
    );
}

#[test]
fn legend_never_hides_data_that_fills_the_plot() {
    // Every corner holds data: the y axis gets headroom for the legend instead.
    let noisy = |phase: f64| curve(move |x| (13.0 * x + phase).sin() * (5.0 * x).cos(), 400, 0.0, 1.0);
    let plot = Plot::new("Dense data", "x", "y")
        .series(Series::line("SGD", noisy(0.0)))
        .series(Series::line("SDE", noisy(1.0)))
        .series(Series::dashed("theory", noisy(2.0)))
        .series(Series::line("frame", vec![(0.0, -1.0), (1.0, -1.0), (1.0, 1.0), (0.0, 1.0), (0.0, -1.0)]));
    render(&Figure::single(plot.clone()), "headroom", &["Dense data"]);
    render(
        &Figure::single(
            plot.log(false, true).series(Series::line("frame top", vec![(0.0, 1e-3), (1.0, 1e-3)])),
        ),
        "headroom_log",
        &["Dense data"],
    );
}

#[test]
fn log_axes_skip_zeros_negatives_and_nan() {
    let mut pts = curve(|x| x.powf(-1.5), 60, 0.0, 100.0); // includes x = 0 → y = inf
    pts.extend([(-1.0, 1.0), (2.0, 0.0), (3.0, -4.0), (f64::NAN, 1.0), (5.0, f64::NAN)]);
    let plot = Plot::new("Power law", "steps", "Tr Σ")
        .log(true, true)
        .series(Series::markers("SGD", pts))
        .series(Series::dashed("theory", curve(|x| x.powf(-1.5), 50, 0.5, 100.0)));
    render(&Figure::single(plot), "loglog", &["Power law", "steps", "Tr Σ"]);
    // Less than one decade and a log-x / linear-y mix.
    let plot = Plot::new("Narrow", "x", "y")
        .log(true, false)
        .series(Series::line("a", vec![(2.0, -1.0), (3.0, 1.0)]));
    render(&Figure::single(plot), "narrow_log", &["Narrow"]);
}

#[test]
fn scatter_with_diagonal_reference() {
    let pts: Vec<(f64, f64)> =
        (1..=30).map(|k| k as f64 * 0.1).map(|p| (p, p * (1.0 + 0.05 * (3.0 * p).sin()))).collect();
    let plot = Plot::new("Equilibrium: predicted vs measured", "predicted λ*", "measured λ*")
        .diagonal()
        .series(Series::markers("SGD", pts));
    render(&Figure::single(plot), "scatter", &["y = x", "predicted λ*", "measured λ*"]);
}

#[test]
fn heatmap_has_every_cell_and_a_colour_bar() {
    let d = 8;
    let h = Heatmap::from_fn("W Wᵀ − Uᵀ U", d, d, |i, j| {
        (i as f64 - j as f64) * 0.3 + if i == j { 1.0 } else { 0.0 }
    })
    .labels("unit j", "unit i");
    let (_, svg) = render(&Figure::single(h), "heatmap", &["W Wᵀ − Uᵀ U", "unit j", "unit i"]);
    assert!(svg.matches("<rect").count() >= d * d + 128, "cells and colour-bar bands");
}

#[test]
fn small_multiples_grid() {
    let panels: Vec<Panel> = vec![
        lines_plot().into(),
        Plot::new("log-y", "step", "loss")
            .log(false, true)
            .series(Series::line("SGD", curve(|x| (-x).exp(), 50, 0.0, 8.0)))
            .into(),
        Plot::new("scatter", "predicted", "measured")
            .diagonal()
            .series(Series::markers("GF", vec![(1.0, 1.1), (2.0, 1.9)]))
            .into(),
        Heatmap::from_fn("Σ", 5, 5, |i, j| if i == j { 1.0 } else { -0.2 }).into(),
    ];
    let fig = Figure::grid("Small multiples", panels, 2);
    render(&fig, "grid", &["Small multiples", "log-y", "scatter", "Σ"]);
}

#[test]
fn degenerate_data_gives_a_readable_empty_plot() {
    let all_nan = Plot::new("All NaN", "x", "y")
        .series(Series::line("SGD", vec![(f64::NAN, 1.0), (1.0, f64::INFINITY)]));
    render(&Figure::single(all_nan), "all_nan", &["no finite data"]);
    let empty = Plot::new("Empty", "x", "y").series(Series::line("SGD", vec![]));
    render(&Figure::single(empty), "empty_series", &["no finite data"]);
    let neg_log = Plot::new("Negative on log", "x", "y")
        .log(false, true)
        .series(Series::line("SGD", vec![(1.0, -1.0)]));
    render(&Figure::single(neg_log), "neg_log", &["no positive finite data"]);
    let constant = Plot::new("Constant", "x", "y").series(Series::line("SGD", vec![(1.0, 2.0), (1.0, 2.0)]));
    render(&Figure::single(constant), "constant", &["Constant"]);
    let nan_heat = Heatmap::from_fn("NaN matrix", 2, 2, |_, _| f64::NAN);
    render(&Figure::single(nan_heat), "nan_heatmap", &["no finite data"]);
    let empty_heat = Heatmap::from_fn("0x0", 0, 0, |_, _| 0.0);
    render(&Figure::single(empty_heat), "empty_heatmap", &["0x0"]);
    render(&Figure::grid("No panels", vec![], 2), "no_panels", &["No panels"]);
}

#[test]
fn extreme_ranges_do_not_panic() {
    let cases = [
        ("huge", vec![(-1e308, -1e308), (1e308, 1e308)], false),
        ("tiny span", vec![(1.0, 1.0), (1.0 + 1e-15, 1.0 + 2e-15)], false),
        ("subnormal", vec![(0.0, 5e-324), (1.0, -5e-324)], false),
        ("600 decades", vec![(1e-300, 1e-300), (1e-150, 1e-150), (1e150, 1e150), (1e300, 1e300)], true),
    ];
    for (name, pts, log) in cases {
        let plot = Plot::new(name, "x", "y").log(log, log).series(Series::line("SGD", pts));
        render(&Figure::single(plot), &name.replace(' ', "_"), &[name]);
    }
    let h = Heatmap::from_fn("huge heatmap", 2, 2, |i, j| if i == j { f64::MAX } else { -f64::MAX });
    render(&Figure::single(h), "huge_heatmap", &["huge heatmap"]);
}

#[test]
fn malformed_heatmap_is_an_error_not_a_panic() {
    let mut h = Heatmap::from_fn("bad", 2, 2, |_, _| 1.0);
    h.values.pop();
    let dir = tempfile::tempdir().unwrap();
    assert!(Figure::single(h).save(dir.path(), "bad").is_err());
}

#[test]
fn report_markdown_and_html_contain_every_check() {
    let (dir, _keep) = out_dir("report");
    let files = Figure::single(lines_plot()).save(dir.join("figs"), "charge").unwrap();
    let checks = [
        Check::relative("fig2", "C_{t+1} − C_t = η²ĝᵀAĝ", 1.0e-3, 1.0004e-3, 1e-6),
        Check::absolute("fig2", "Tr[AΣ] at λ* | zero", 0.0, 3.2e-9, 1e-8),
        Check::relative("fig4", "λ* <geometric mean>", 0.25, 0.4, 0.05),
    ];
    assert_eq!(checks.iter().map(|c| c.pass).collect::<Vec<_>>(), [false, true, false]);
    let report = Report::new("noether — reproduction")
        .section(
            Section::new("fig2", "Charge drift.\n\nSecond paragraph & more.")
                .figure(files.clone(), "Charge vs time")
                .check(checks[0].clone())
                .check(checks[1].clone()),
        )
        .section(Section::new("fig4", "Equilibrium.").check(checks[2].clone()));
    assert_eq!(report.counts(), (1, 3));
    assert!(!report.all_passed());
    let out = report.write(&dir).unwrap();
    let md = std::fs::read_to_string(&out.markdown).unwrap();
    let html = std::fs::read_to_string(&out.html).unwrap();

    // Markdown: one table row per check, escaped pipes, relative figure links.
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| fig")).collect();
    assert_eq!(rows.len(), 3, "{md}");
    assert!(rows[0].contains(r"C\_{t+1} − C\_t = η²ĝᵀAĝ") && rows[0].contains("FAIL"));
    assert!(rows[0].contains("| 0.04% | ±1e-4% |"), "deviation column: {}", rows[0]);
    assert!(
        rows[1].contains(r"Tr\[AΣ\] at λ\* \| zero")
            && rows[1].contains("pass")
            && rows[1].contains("3.2e-9")
    );
    assert!(rows[2].contains("±5%") && rows[2].contains("FAIL"));
    assert!(md.contains("](figs/charge.png)") && md.contains("](figs/charge.svg)"), "{md}");
    assert!(md.contains("1 of 3 checks passed"));

    // HTML: the same rows, coloured verdicts, escaped text, PNG embedded byte for byte, nothing external.
    assert_eq!(html.matches("<td class=\"pass\">pass</td>").count(), 1);
    assert_eq!(html.matches("<td class=\"fail\">FAIL</td>").count(), 2);
    assert!(html.contains("λ* &lt;geometric mean&gt;"));
    assert!(html.contains("Second paragraph &amp; more."));
    let png = std::fs::read(&files.png).unwrap();
    assert!(html.contains(&format!("data:image/png;base64,{}\"", base64(&png))));
    for external in ["src=\"http", "href=\"http", "<link", "<script"] {
        assert!(!html.contains(external), "report.html must be self-contained ({external})");
    }
    assert!(html.contains("<style>") && html.contains("td.pass{") && html.contains("td.fail{"));
}

/// Measurements and rows not decided at this size are shown with their own verdict, name no claim (measurement) or
/// the section's claim, and neither count as passed nor fail the report.
#[test]
fn measurements_and_undecided_rows_do_not_count_as_pass_or_fail() {
    let (dir, _keep) = out_dir("report-outcomes");
    let section = Section::new("relaxation", "Limits.")
        .tests("paper: κ = (η/S)·Tr[A²Σ]/‖Aθ*‖²")
        .check(Check::relative("relaxation", "κ ratio → 1", 1.0, 0.97, 0.1))
        .check(Check::relative("relaxation", "finite η/S = 0.02: κ ratio", 1.0, 1.42, 0.0).measurement())
        .check(Check::absolute("relaxation", "order of the spread", 1.0, 3.0, 0.3).undecided())
        .check(Check::absolute("relaxation", "own claim", 0.0, 0.5, 0.1).tests("noether: λ∞ → 0"));
    let c = &section.checks;
    assert_eq!(c[0].tests, "paper: κ = (η/S)·Tr[A²Σ]/‖Aθ*‖²", "a row without a claim tests the section's");
    assert!(c[1].tests.is_empty() && c[1].outcome == Outcome::Measured, "a measurement tests no claim");
    assert_eq!(c[2].outcome, Outcome::Undecided);
    assert_eq!((c[3].tests.as_str(), c[3].outcome), ("noether: λ∞ → 0", Outcome::Fail));
    let report = Report::new("outcomes").section(section);
    assert_eq!(report.counts(), (1, 2), "only pass/fail rows are counted");
    assert!(!report.all_passed(), "the failing row fails the report");
    let ok = Report::new("outcomes").section(
        Section::new("e", "")
            .check(Check::relative("e", "holds", 1.0, 1.0, 0.1))
            .check(Check::relative("e", "finite-η", 1.0, 9.0, 0.1).measurement())
            .check(Check::relative("e", "too small", 1.0, 9.0, 0.1).undecided()),
    );
    assert!(ok.all_passed(), "measurements and undecided rows never fail the run");
    let out = report.write(&dir).unwrap();
    let md = std::fs::read_to_string(&out.markdown).unwrap();
    let html = std::fs::read_to_string(&out.html).unwrap();
    assert!(md.contains("1 of 2 checks passed; 1 not decided at this size; 1 reported measurements"), "{md}");
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| relaxation")).collect();
    assert_eq!(rows.len(), 4, "{md}");
    assert!(rows[0].contains("paper: κ") && rows[0].contains("pass"), "{}", rows[0]);
    assert!(rows[1].contains("reported measurement") && rows[1].contains("measurement |"), "{}", rows[1]);
    assert!(rows[2].contains("not decided at this size"), "{}", rows[2]);
    assert!(rows[3].contains("noether: λ∞ → 0") && rows[3].contains("FAIL"), "{}", rows[3]);
    assert_eq!(html.matches("<td class=\"measured\">measurement</td>").count(), 1);
    assert_eq!(html.matches("<td class=\"undecided\">not decided at this size</td>").count(), 1);
}

/// A refuted flag is decided by the measurement: a flagged row that passes stays a pass, a flagged row that fails
/// is refuted (shown and counted apart, does not fail the run), an unflagged failing row fails the run.
#[test]
fn refuted_rows_are_decided_by_the_measurement_and_do_not_hide_failures() {
    let why = "the derived row carries the claim";
    let passes = Check::relative("e", "holds", 1.0, 1.02, 0.1).refuted_if_failing(why);
    assert_eq!(passes.outcome, Outcome::Pass);
    assert_eq!(passes.claim, "holds", "a pass is untouched");
    let refuted = Check::relative("e", "pre-registered order", 2.0, 1.0, 0.15).refuted_if_failing(why);
    assert_eq!(refuted.outcome, Outcome::Refuted);
    assert!(refuted.claim.contains("REFUTED") && refuted.claim.contains(why), "{}", refuted.claim);
    // Measurements and undecided rows stay what they are, whatever their numbers.
    let m = Check::relative("e", "finite η", 1.0, 9.0, 0.1).measurement().refuted_if_failing(why);
    let u = Check::relative("e", "too small", 1.0, 9.0, 0.1).undecided().refuted_if_failing(why);
    assert_eq!((m.outcome, u.outcome), (Outcome::Measured, Outcome::Undecided));

    let ok = Report::new("refuted").section(
        Section::new("e", "").check(passes.clone()).check(refuted.clone()).check(m.clone()).check(u.clone()),
    );
    assert!(ok.all_passed(), "a refuted row does not fail the run (exit 0)");
    assert_eq!(ok.counts(), (1, 2), "refuted rows count as checks that did not pass");
    assert_eq!(ok.count(Outcome::Refuted), 1);
    let failing = Check::relative("e", "new regression", 1.0, 2.0, 0.1);
    assert_eq!(failing.outcome, Outcome::Fail);
    let bad = Report::new("refuted").section(Section::new("e", "").check(refuted.clone()).check(failing));
    assert!(!bad.all_passed(), "an unflagged failure fails the run (exit 1) next to a refuted row");

    let (dir, _keep) = out_dir("report-refuted");
    let out = ok.write(&dir).unwrap();
    let md = std::fs::read_to_string(&out.markdown).unwrap();
    let html = std::fs::read_to_string(&out.html).unwrap();
    assert!(md.contains("1 of 2 checks passed; 1 REFUTED"), "{md}");
    assert!(md.contains("0 failed") && md.contains("Checks: 1 of 2 passed, 1 REFUTED"), "{md}");
    let row = md.lines().find(|l| l.contains("pre-registered order")).unwrap();
    assert!(row.contains("**REFUTED**"), "{row}");
    assert_eq!(html.matches("<td class=\"refuted\">REFUTED</td>").count(), 1);
    assert!(html.contains("class=\"verdict-refuted\"") && html.contains("td.refuted{"));
    let json = serde_json::to_string(&refuted).unwrap();
    assert!(json.contains("\"outcome\":\"refuted\""), "{json}");
    let back: Check = serde_json::from_str(&json).unwrap();
    assert_eq!(back.outcome, Outcome::Refuted);
}

//! Figures: one description ([`Figure`]) rendered by one routine to PNG and SVG.
//!
//! A figure is a grid of panels; a panel is either a [`Plot`] (line / marker / dashed series, optional log
//! axes, optional `y = x` reference line) or a [`Heatmap`] (a matrix with a diverging colour bar centred at 0).
//! Non-finite points, and non-positive values on a log axis, are skipped (a line breaks there); a panel
//! without drawable data shows its axes and the note "no finite data" instead of failing.
//!
//! ```no_run
//! use noether::report::plot::{Figure, Plot, Series};
//! let plot = Plot::new("Noether charge", "step", "C = θᵀAθ")
//!     .series(Series::line("SGD", vec![(0.0, 1.0), (1.0, 0.8)]))
//!     .series(Series::dashed("theory", vec![(0.0, 1.0), (1.0, 0.75)]));
//! Figure::single(plot).save("out", "charge")?;
//! # Ok::<(), noether::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{Color as _, FontStyle};

use crate::report::{fmt_num, fmt_sig};
use crate::{Error, Result};

/// The bundled font (DejaVu Sans, license in `assets/DejaVuSans.LICENSE`), registered as "sans-serif".
static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Registers the bundled font once per process; no system font library is needed.
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok =
        *REGISTERED.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Numerical { what: "report::plot", reason: "bundled font could not be parsed".into() })
    }
}

/// An sRGB colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Color(pub u8, pub u8, pub u8);

impl Color {
    fn rgb(self) -> RGBColor {
        RGBColor(self.0, self.1, self.2)
    }
    /// `#rrggbb` form, for HTML/CSS.
    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

/// Fixed colours of the method names used across all figures (matched case-insensitively on the first word,
/// so "SGD (S = 32)" is drawn like "SGD").
const METHOD_COLORS: &[(&str, Color)] = &[
    ("sgd", Color(0x1f, 0x77, 0xb4)),    // blue
    ("gd", Color(0xff, 0x7f, 0x0e)),     // orange
    ("sde", Color(0x2c, 0xa0, 0x2c)),    // green
    ("gf", Color(0x94, 0x67, 0xbd)),     // purple
    ("theory", Color(0x00, 0x00, 0x00)), // black
];

/// Palette for all other series (the remaining tab10 colours, none equal to a method colour).
pub const PALETTE: [Color; 6] = [
    Color(0xd6, 0x27, 0x28), // red
    Color(0x17, 0xbe, 0xcf), // cyan
    Color(0x8c, 0x56, 0x4b), // brown
    Color(0xe3, 0x77, 0xc2), // pink
    Color(0xbc, 0xbd, 0x22), // olive
    Color(0x7f, 0x7f, 0x7f), // grey
];

/// Colour of a series name: the fixed colour of a known method ("SGD", "GD", "SDE", "GF", "theory"), otherwise
/// a palette colour chosen by a stable hash of the name (same name → same colour in every figure). Within one
/// panel the renderer moves a palette colour that is already taken to the next free one.
pub fn color_for(name: &str) -> Color {
    if let Some(c) = method_color(name) {
        return c;
    }
    // FNV-1a: stable across runs and platforms (std's hasher is randomly seeded).
    let h =
        name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    PALETTE[(h % PALETTE.len() as u64) as usize]
}

fn method_color(name: &str) -> Option<Color> {
    let first = name.split(|c: char| !c.is_alphanumeric()).find(|w| !w.is_empty())?.to_ascii_lowercase();
    METHOD_COLORS.iter().find(|(k, _)| *k == first).map(|&(_, c)| c)
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Solid line through the points.
    Line,
    /// Dashed line (the convention for theory curves).
    Dashed,
    /// Markers only (scatter).
    Markers,
    /// Solid line with a marker at every point.
    LineMarkers,
}

/// One named data series of a [`Plot`].
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend entry; also selects the colour (see [`color_for`]).
    pub name: String,
    /// `(x, y)` points, drawn in the given order.
    pub points: Vec<(f64, f64)>,
    /// Line, dashed, markers.
    pub style: Style,
    /// Explicit colour overriding [`color_for`].
    pub color: Option<Color>,
}

impl Series {
    /// A series with an explicit style.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>, style: Style) -> Self {
        Series { name: name.into(), points, style, color: None }
    }
    /// Solid line.
    pub fn line(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self::new(name, points, Style::Line)
    }
    /// Dashed line.
    pub fn dashed(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self::new(name, points, Style::Dashed)
    }
    /// Markers only.
    pub fn markers(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self::new(name, points, Style::Markers)
    }
    /// Overrides the colour.
    pub fn color(mut self, color: Color) -> Self {
        self.color = Some(color);
        self
    }
}

/// A 2-D plot: axes, labels (put units in them, e.g. "t = η·steps"), series.
#[derive(Debug, Clone)]
pub struct Plot {
    /// Panel title.
    pub title: String,
    /// x-axis label with units.
    pub x_label: String,
    /// y-axis label with units.
    pub y_label: String,
    /// Logarithmic x axis (non-positive x are skipped).
    pub log_x: bool,
    /// Logarithmic y axis (non-positive y are skipped).
    pub log_y: bool,
    /// Draw the grey dashed reference line `y = x`, with equal x and y ranges (predicted-vs-measured scatter).
    pub diagonal: bool,
    /// The series, drawn in order (later on top).
    pub series: Vec<Series>,
}

impl Plot {
    /// An empty linear-axes plot.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Plot {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_x: false,
            log_y: false,
            diagonal: false,
            series: Vec::new(),
        }
    }
    /// Adds a series.
    pub fn series(mut self, s: Series) -> Self {
        self.series.push(s);
        self
    }
    /// Sets log scales.
    pub fn log(mut self, log_x: bool, log_y: bool) -> Self {
        self.log_x = log_x;
        self.log_y = log_y;
        self
    }
    /// Turns on the `y = x` reference line.
    pub fn diagonal(mut self) -> Self {
        self.diagonal = true;
        self
    }
}

/// A matrix drawn cell by cell with a diverging colour map centred at 0 (blue < 0 < red) and a colour bar.
/// Row 0 is at the top, as the matrix is written.
#[derive(Debug, Clone)]
pub struct Heatmap {
    /// Panel title.
    pub title: String,
    /// Label of the column index axis.
    pub x_label: String,
    /// Label of the row index axis.
    pub y_label: String,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row-major values, `rows·cols` long; non-finite cells are drawn grey.
    pub values: Vec<f64>,
}

impl Heatmap {
    /// A heat map of the `rows × cols` matrix with entries `f(i, j)`, e.g. `|i, j| m[(i, j)]` for a faer matrix.
    pub fn from_fn(
        title: impl Into<String>,
        rows: usize,
        cols: usize,
        f: impl Fn(usize, usize) -> f64,
    ) -> Self {
        let values = (0..rows).flat_map(|i| (0..cols).map(move |j| (i, j))).map(|(i, j)| f(i, j)).collect();
        Heatmap {
            title: title.into(),
            x_label: "column j".into(),
            y_label: "row i".into(),
            rows,
            cols,
            values,
        }
    }
    /// Sets the axis labels.
    pub fn labels(mut self, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        self.x_label = x_label.into();
        self.y_label = y_label.into();
        self
    }
}

/// One panel of a [`Figure`].
#[derive(Debug, Clone)]
pub enum Panel {
    /// Line / scatter plot.
    Plot(Plot),
    /// Matrix heat map.
    Heatmap(Heatmap),
}

impl From<Plot> for Panel {
    fn from(p: Plot) -> Self {
        Panel::Plot(p)
    }
}
impl From<Heatmap> for Panel {
    fn from(h: Heatmap) -> Self {
        Panel::Heatmap(h)
    }
}

/// A figure: an optional overall title and a grid of panels (small multiples), filled row by row.
#[derive(Debug, Clone)]
pub struct Figure {
    /// Title above all panels (`None` for a single panel, whose own title suffices).
    pub title: Option<String>,
    /// Panels, row by row.
    pub panels: Vec<Panel>,
    /// Number of grid columns (≥ 1).
    pub cols: usize,
    /// Size of one panel in SVG pixels; the PNG is rendered at [`PNG_SCALE`] times this.
    pub panel_size: (u32, u32),
}

/// PNG resolution multiplier relative to the SVG size (2 gives crisp figures on print and HiDPI screens).
pub const PNG_SCALE: f64 = 2.0;

/// The two files written by [`Figure::save`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FigureFiles {
    /// The raster version (embedded in the HTML report).
    pub png: PathBuf,
    /// The vector version (for papers).
    pub svg: PathBuf,
}

impl Figure {
    /// A figure of one panel.
    pub fn single(panel: impl Into<Panel>) -> Self {
        Figure { title: None, panels: vec![panel.into()], cols: 1, panel_size: (800, 560) }
    }
    /// A grid of panels with `cols` columns (e.g. 4 panels, `cols = 2` → 2×2) under an overall title.
    pub fn grid(title: impl Into<String>, panels: Vec<Panel>, cols: usize) -> Self {
        Figure { title: Some(title.into()), panels, cols: cols.max(1), panel_size: (640, 480) }
    }

    fn size(&self, scale: f64) -> (u32, u32) {
        let cols = self.cols.clamp(1, self.panels.len().max(1));
        let rows = self.panels.len().div_ceil(cols).max(1);
        let title = if self.title.is_some() { 50 } else { 0 };
        let w = self.panel_size.0 as f64 * cols as f64;
        let h = self.panel_size.1 as f64 * rows as f64 + title as f64;
        ((w * scale).round() as u32, (h * scale).round() as u32)
    }

    /// Writes `dir/stem.png` and `dir/stem.svg` (same drawing routine, PNG at [`PNG_SCALE`]), creating `dir`.
    pub fn save(&self, dir: impl AsRef<Path>, stem: &str) -> Result<FigureFiles> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let files =
            FigureFiles { png: dir.join(format!("{stem}.png")), svg: dir.join(format!("{stem}.svg")) };
        self.save_png(&files.png)?;
        self.save_svg(&files.svg)?;
        Ok(files)
    }

    /// Writes the PNG version to `path`.
    pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
        ensure_font()?;
        let path = path.as_ref();
        let root = BitMapBackend::new(path, self.size(PNG_SCALE)).into_drawing_area();
        draw_figure(&root, self, PNG_SCALE)
            .and_then(|()| root.present().map_err(|e| e.to_string()))
            .map_err(|e| render_error(path, e))
    }

    /// Writes the SVG version to `path`.
    pub fn save_svg(&self, path: impl AsRef<Path>) -> Result<()> {
        ensure_font()?;
        let path = path.as_ref();
        let root = SVGBackend::new(path, self.size(1.0)).into_drawing_area();
        draw_figure(&root, self, 1.0)
            .and_then(|()| root.present().map_err(|e| e.to_string()))
            .map_err(|e| render_error(path, e))
    }
}

fn render_error(path: &Path, reason: String) -> Error {
    Error::io(path, std::io::Error::other(format!("rendering figure failed: {reason}")))
}

type DrawResult = std::result::Result<(), String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Font sizes (SVG pixels) and stroke widths, multiplied by the render scale.
struct Sizes {
    s: f64,
}
impl Sizes {
    fn px(&self, v: f64) -> u32 {
        (v * self.s).round().max(1.0) as u32
    }
    fn font(&self, v: f64) -> TextStyle<'static> {
        TextStyle::from((FAMILY, v * self.s))
    }
}

/// The one drawing routine behind both backends.
fn draw_figure<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, fig: &Figure, s: f64) -> DrawResult {
    let z = Sizes { s };
    root.fill(&WHITE).map_err(err)?;
    let area = match &fig.title {
        Some(t) => {
            let (top, rest) = root.split_vertically(z.px(50.0));
            let (w, h) = top.dim_in_pixel();
            let style = z.font(26.0).pos(Pos::new(HPos::Center, VPos::Center));
            top.draw_text(t, &style, (w as i32 / 2, h as i32 / 2)).map_err(err)?;
            rest
        }
        None => root.clone(),
    };
    if fig.panels.is_empty() {
        return note(&area, "empty figure", &z);
    }
    let cols = fig.cols.clamp(1, fig.panels.len());
    let rows = fig.panels.len().div_ceil(cols);
    for (panel, cell) in fig.panels.iter().zip(area.split_evenly((rows, cols))) {
        match panel {
            Panel::Plot(p) => draw_plot(&cell, p, &z)?,
            Panel::Heatmap(h) => draw_heatmap(&cell, h, &z)?,
        }
    }
    Ok(())
}

fn note<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, text: &str, z: &Sizes) -> DrawResult {
    let (w, h) = area.dim_in_pixel();
    let style = z.font(18.0).color(&RGBColor(0x80, 0x80, 0x80)).pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(text, &style, (w as i32 / 2, h as i32 / 2)).map_err(err)
}

/// Largest magnitude drawn on a linear axis: plotters' tick search needs a finite span with room to pad.
const LINEAR_LIMIT: f64 = f64::MAX / 4.0;
/// Range of values drawn on a log axis: plotters' log ticks need `end / start` finite, so at most 300 decades.
const LOG_LIMITS: (f64, f64) = (1e-150, 1e150);

/// A point is drawable if finite and within the axis limits: `|v| ≤ f64::MAX/4` on a linear axis,
/// `1e-150 ≤ v ≤ 1e150` on a log axis (so non-positive values are skipped there).
fn drawable(p: (f64, f64), log_x: bool, log_y: bool) -> bool {
    let ok = |v: f64, log: bool| {
        if log {
            (LOG_LIMITS.0..=LOG_LIMITS.1).contains(&v)
        } else {
            v.is_finite() && v.abs() <= LINEAR_LIMIT
        }
    };
    ok(p.0, log_x) && ok(p.1, log_y)
}

/// Axis range of drawable values: padded 5% (linear; at least 1e-9 relative or 1e-300 absolute, so tick
/// generation terminates) or widened to whole decades (log, so that tick marks exist; nudged outward by 1e-9
/// so that round-off in plotters' tick generation keeps the end decades).
fn axis_range(lo: f64, hi: f64, log: bool) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return if log { (1.0 - 1e-9, 10.0 * (1.0 + 1e-9)) } else { (0.0, 1.0) };
    }
    if log {
        let (a, b) = (lo.log10().floor(), hi.log10().ceil());
        let b = if b <= a { a + 1.0 } else { b };
        (10f64.powf(a) * (1.0 - 1e-9), 10f64.powf(b) * (1.0 + 1e-9))
    } else {
        let mag = lo.abs().max(hi.abs());
        let min_span = (1e-9 * mag).max(1e-300);
        if hi - lo >= min_span {
            let pad = 0.05 * (hi - lo);
            (lo - pad, hi + pad)
        } else if mag < 1e-300 {
            (-1.0, 1.0)
        } else {
            let c = 0.5 * lo + 0.5 * hi;
            (c - min_span, c + min_span)
        }
    }
}

/// A tick label with enough significant digits to tell neighbouring ticks apart (at least 4), round-off
/// residue around 0 on linear axes shown as 0.
fn tick_text(v: f64, r: (f64, f64), log: bool) -> String {
    if log {
        return fmt_num(v);
    }
    let span = (r.1 - r.0).abs();
    if v.abs() < 1e-9 * span {
        return "0".into();
    }
    let mag = r.0.abs().max(r.1.abs());
    let step = span / N_TICKS as f64;
    let digits = (mag / step).log10().ceil() as i64 + 1;
    fmt_sig(v, digits.clamp(4, 15) as usize)
}

/// Position of `v` in `[0, 1]` across the axis range `r` (log or linear).
fn unit(v: f64, r: (f64, f64), log: bool) -> f64 {
    if log {
        (v.ln() - r.0.ln()) / (r.1.ln() - r.0.ln())
    } else {
        (v - r.0) / (r.1 - r.0)
    }
}

/// Tick labels plotters will draw for this axis (same key-point algorithm, same formatter).
fn tick_labels(r: (f64, f64), log: bool, n: usize) -> Vec<String> {
    let keys: Vec<f64> = if log {
        let c: plotters::coord::combinators::LogCoord<f64> = (r.0..r.1).log_scale().into();
        c.key_points(n)
    } else {
        let c: plotters::coord::types::RangedCoordf64 = (r.0..r.1).into();
        c.key_points(n)
    };
    keys.iter().map(|&v| tick_text(v, r, log)).collect()
}

const N_TICKS: usize = 8;

/// Number of tick labels to ask plotters for: on a log axis of a single decade, 10 so that 1, 2, …, 9 get labels.
fn n_ticks(r: (f64, f64), log: bool) -> usize {
    if log && (r.1 / r.0).log10() < 1.5 {
        10
    } else {
        N_TICKS
    }
}

/// Where the legend goes and how far the y axis must extend so that the legend covers no data.
struct Layout {
    x: (f64, f64),
    y: (f64, f64),
    corner: SeriesLabelPosition,
    y_label_area: u32,
    margin_right: u32,
}

fn text_width<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, text: &str, style: &TextStyle) -> u32 {
    area.estimate_text_size(text, style).map(|(w, _)| w).unwrap_or(0)
}

/// Picks the first legend corner (upper right, upper left, lower right, lower left) that no data point or line
/// crosses; if every corner is taken, raises the top of the y axis so the data sits below the legend.
fn plot_layout<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Plot, z: &Sizes) -> Layout {
    let ok = |q| drawable(q, p.log_x, p.log_y);
    let (mut xl, mut xh, mut yl, mut yh) =
        (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
    for (x, y) in p.series.iter().flat_map(|s| s.points.iter().copied()).filter(|&q| ok(q)) {
        (xl, xh, yl, yh) = (xl.min(x), xh.max(x), yl.min(y), yh.max(y));
    }
    if p.diagonal && xl.is_finite() && p.log_x == p.log_y {
        (xl, yl) = (xl.min(yl), xl.min(yl));
        (xh, yh) = (xh.max(yh), xh.max(yh));
    }
    let x = axis_range(xl, xh, p.log_x);
    let mut y = axis_range(yl, yh, p.log_y);

    let label_font = z.font(15.0);
    let y_area = |y: (f64, f64)| {
        let widest = tick_labels(y, p.log_y, n_ticks(y, p.log_y))
            .iter()
            .map(|t| text_width(area, t, &label_font))
            .max();
        // tick labels + tick mark and gaps + rotated axis description
        widest.unwrap_or(0) + z.px(5.0 + 10.0 + 24.0 + 6.0)
    };
    let (w, h) = area.dim_in_pixel();
    // Room right of the plot for half the last x tick label (centred on the axis end).
    let last_x =
        tick_labels(x, p.log_x, n_ticks(x, p.log_x)).last().map(|t| text_width(area, t, &label_font));
    let margin_right = (last_x.unwrap_or(0) / 2 + z.px(6.0)).max(z.px(28.0));
    let plot_w = w.saturating_sub(y_area(y) + z.px(12.0) + margin_right).max(1) as f64;
    let plot_h = h.saturating_sub(z.px(12.0 * 2.0 + 40.0 + 52.0)).max(1) as f64;

    // Legend box, in units of the plotting area (plotters: text block + sample + 2 margins, 5 px offset).
    let names: Vec<&str> =
        p.series.iter().map(|s| s.name.as_str()).chain(p.diagonal.then_some("y = x")).collect();
    let widest = names.iter().map(|n| text_width(area, n, &label_font)).max().unwrap_or(0) as f64;
    let line_h = area.estimate_text_size("Ag", &label_font).map(|(_, h)| h).unwrap_or(z.px(15.0)) as f64;
    let box_w = (widest + z.px(34.0 + 20.0) as f64 + 5.0) / plot_w + 0.02;
    let box_h = (names.len() as f64 * line_h * 1.3 + z.px(20.0) as f64 + 5.0) / plot_h + 0.02;

    // Sample the drawn geometry in unit coordinates: points, 8 steps along each line segment, the diagonal.
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let to_unit = |q: (f64, f64), y: (f64, f64)| (unit(q.0, x, p.log_x), unit(q.1, y, p.log_y));
    for s in &p.series {
        let mut prev: Option<(f64, f64)> = None;
        for &q in &s.points {
            if !ok(q) {
                prev = None;
                continue;
            }
            let u = to_unit(q, y);
            if let (Some(a), Style::Line | Style::Dashed | Style::LineMarkers) = (prev, s.style) {
                samples.extend(
                    (1..8).map(|k| k as f64 / 8.0).map(|t| (a.0 + t * (u.0 - a.0), a.1 + t * (u.1 - a.1))),
                );
            }
            samples.push(u);
            prev = Some(u);
        }
    }
    if p.diagonal {
        let d = |v: f64| (unit(v, x, p.log_x), unit(v, y, p.log_y));
        let (lo, hi) = (x.0.max(y.0), x.1.min(y.1));
        samples.extend((0..=64).map(|k| {
            let t = k as f64 / 64.0;
            if p.log_x {
                d(lo * (hi / lo).powf(t))
            } else {
                d(lo + t * (hi - lo))
            }
        }));
    }
    let free = |right: bool, top: bool| {
        !samples.iter().any(|&(u, v)| {
            let inx = if right { u >= 1.0 - box_w } else { u <= box_w };
            let iny = if top { v >= 1.0 - box_h } else { v <= box_h };
            inx && iny
        })
    };
    let corners = [
        (true, true, SeriesLabelPosition::UpperRight),
        (false, true, SeriesLabelPosition::UpperLeft),
        (true, false, SeriesLabelPosition::LowerRight),
        (false, false, SeriesLabelPosition::LowerLeft),
    ];
    let corner = corners.into_iter().find(|&(r, t, _)| free(r, t)).map(|(_, _, c)| c);
    let corner = match corner {
        Some(c) => c,
        None => {
            // Headroom: put the highest data point at 1 − box_h of the new range (at most 40% headroom).
            let f = box_h.min(0.4);
            let top = samples.iter().map(|&(_, v)| v).fold(f64::NEG_INFINITY, f64::max).min(1.0);
            if top.is_finite() {
                let grow = top / (1.0 - f);
                y = if p.log_y {
                    let (a, b) = (y.0.ln(), y.1.ln());
                    (y.0, (a + (b - a) * grow.max(1.0)).exp())
                } else {
                    (y.0, y.0 + (y.1 - y.0) * grow.max(1.0))
                };
            }
            SeriesLabelPosition::UpperRight
        }
    };
    Layout { x, y, corner, y_label_area: y_area(y), margin_right }
}

fn draw_plot<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Plot, z: &Sizes) -> DrawResult {
    let layout = plot_layout(area, p, z);
    let (x, y) = (layout.x.0..layout.x.1, layout.y.0..layout.y.1);
    match (p.log_x, p.log_y) {
        (false, false) => draw_xy(area, p, z, &layout, x, y),
        (true, false) => draw_xy(area, p, z, &layout, x.log_scale(), y),
        (false, true) => draw_xy(area, p, z, &layout, x, y.log_scale()),
        (true, true) => draw_xy(area, p, z, &layout, x.log_scale(), y.log_scale()),
    }
}

/// Series colours of one panel: explicit > method colour > hashed palette colour, moved to the next free
/// palette entry when already taken in this panel.
fn panel_colors(series: &[Series]) -> Vec<Color> {
    let mut used: Vec<Color> =
        series.iter().filter_map(|s| s.color.or_else(|| method_color(&s.name))).collect();
    series
        .iter()
        .map(|s| {
            if let Some(c) = s.color.or_else(|| method_color(&s.name)) {
                return c;
            }
            let start = PALETTE.iter().position(|&c| c == color_for(&s.name)).unwrap_or(0);
            let c = (0..PALETTE.len())
                .map(|k| PALETTE[(start + k) % PALETTE.len()])
                .find(|c| !used.contains(c))
                .unwrap_or(PALETTE[start]);
            used.push(c);
            c
        })
        .collect()
}

fn draw_xy<DB, X, Y>(
    area: &DrawingArea<DB, Shift>,
    p: &Plot,
    z: &Sizes,
    layout: &Layout,
    x: X,
    y: Y,
) -> DrawResult
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, z.font(22.0))
        .margin(z.px(12.0))
        .margin_right(layout.margin_right)
        .x_label_area_size(z.px(52.0))
        .y_label_area_size(layout.y_label_area)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    let (lx, ly) = (layout.x, layout.y);
    let fx = |v: &f64| tick_text(*v, lx, p.log_x);
    let fy = |v: &f64| tick_text(*v, ly, p.log_y);
    chart
        .configure_mesh()
        .x_desc(&p.x_label)
        .y_desc(&p.y_label)
        .x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .x_labels(n_ticks(lx, p.log_x))
        .y_labels(n_ticks(ly, p.log_y))
        // Minor grid lines only on log axes (at 2..9 × 10^k).
        .x_max_light_lines(if p.log_x { 10 } else { 0 })
        .y_max_light_lines(if p.log_y { 10 } else { 0 })
        .label_style(z.font(15.0))
        .axis_desc_style(z.font(18.0))
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd).stroke_width(z.px(1.0)))
        .light_line_style(RGBColor(0xf2, 0xf2, 0xf2).stroke_width(z.px(1.0)))
        .axis_style(BLACK.stroke_width(z.px(1.0)))
        .set_all_tick_mark_size(z.px(5.0))
        .draw()
        .map_err(err)?;

    let (xs, ys) = (chart.x_range(), chart.y_range());
    let has_data = p.series.iter().any(|s| s.points.iter().any(|&q| drawable(q, p.log_x, p.log_y)));
    if !has_data {
        let what = if p.log_x || p.log_y { "no positive finite data (log axis)" } else { "no finite data" };
        let (w, h) = chart.plotting_area().dim_in_pixel();
        let style = z.font(18.0).color(&RGBColor(0x80, 0x80, 0x80)).pos(Pos::new(HPos::Center, VPos::Center));
        chart
            .plotting_area()
            .strip_coord_spec()
            .draw_text(what, &style, (w as i32 / 2, h as i32 / 2))
            .map_err(err)?;
    }

    let lw = z.px(2.0);
    let legend_len = z.px(28.0) as i32;
    let grey = RGBColor(0x90, 0x90, 0x90);
    if p.diagonal {
        let lo = xs.start.max(ys.start);
        let hi = xs.end.min(ys.end);
        let line = vec![(lo, lo), (hi, hi)];
        let dash = (z.px(6.0), z.px(4.0));
        let style = grey.stroke_width(lw);
        chart
            .draw_series(DashedLineSeries::new(line, dash.0, dash.1, style))
            .map_err(err)?
            .label("y = x")
            .legend(move |(x, y)| {
                DashedPathElement::new(vec![(x, y), (x + legend_len, y)], dash.0, dash.1, style)
            });
    }

    let colors = panel_colors(&p.series);
    let radius = z.px(3.5);
    for (s, c) in p.series.iter().zip(colors) {
        let style = c.rgb().stroke_width(lw);
        // Runs of drawable points: a line breaks at skipped points instead of bridging them.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &q in &s.points {
            if drawable(q, p.log_x, p.log_y) {
                if let Some(r) = runs.last_mut() {
                    r.push(q);
                }
            } else if runs.last().is_some_and(|r| !r.is_empty()) {
                runs.push(Vec::new());
            }
        }
        for run in &runs {
            match s.style {
                Style::Line | Style::LineMarkers => {
                    chart.draw_series(LineSeries::new(run.iter().copied(), style)).map_err(err)?;
                }
                Style::Dashed => {
                    let d = DashedLineSeries::new(run.iter().copied(), z.px(8.0), z.px(5.0), style);
                    chart.draw_series(d).map_err(err)?;
                }
                Style::Markers => {}
            }
            if matches!(s.style, Style::Markers | Style::LineMarkers) {
                chart
                    .draw_series(run.iter().map(|&q| Circle::new(q, radius, c.rgb().filled())))
                    .map_err(err)?;
            }
        }
        // Legend entry, attached to an empty series so it appears once even for broken lines.
        let (d0, d1) = (z.px(8.0), z.px(5.0));
        let anno = chart.draw_series(std::iter::empty::<Circle<(f64, f64), u32>>()).map_err(err)?;
        anno.label(&s.name);
        let fill = c.rgb().filled();
        match s.style {
            Style::Line => {
                anno.legend(move |(x, y)| PathElement::new(vec![(x, y), (x + legend_len, y)], style))
            }
            Style::Dashed => anno.legend(move |(x, y)| {
                DashedPathElement::new(vec![(x, y), (x + legend_len, y)], d0, d1, style)
            }),
            Style::Markers => anno.legend(move |(x, y)| Circle::new((x + legend_len / 2, y), radius, fill)),
            Style::LineMarkers => anno.legend(move |(x, y)| {
                EmptyElement::at((x, y))
                    + PathElement::new(vec![(0, 0), (legend_len, 0)], style)
                    + Circle::new((legend_len / 2, 0), radius, fill)
            }),
        };
    }

    if !p.series.is_empty() || p.diagonal {
        chart
            .configure_series_labels()
            .position(layout.corner.clone())
            .margin(z.px(10.0))
            .legend_area_size(z.px(34.0))
            .label_font(z.font(15.0))
            .background_style(WHITE.mix(0.9))
            .border_style(RGBColor(0xb0, 0xb0, 0xb0))
            .draw()
            .map_err(err)?;
    }
    Ok(())
}

/// Diverging colour map (ColorBrewer RdBu, reversed): `t ∈ [-1, 1]`, blue < 0, white at 0, red > 0.
pub fn diverging(t: f64) -> Color {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (-1.0, [5.0, 48.0, 97.0]),
        (-0.5, [67.0, 147.0, 195.0]),
        (0.0, [247.0, 247.0, 247.0]),
        (0.5, [214.0, 96.0, 77.0]),
        (1.0, [103.0, 0.0, 31.0]),
    ];
    let t = if t.is_finite() { t.clamp(-1.0, 1.0) } else { 0.0 };
    let k = STOPS.windows(2).position(|w| t <= w[1].0).unwrap_or(STOPS.len() - 2);
    let ((t0, a), (t1, b)) = (STOPS[k], STOPS[k + 1]);
    let u = (t - t0) / (t1 - t0);
    let c = |i: usize| (a[i] + u * (b[i] - a[i])).round() as u8;
    Color(c(0), c(1), c(2))
}

fn draw_heatmap<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, h: &Heatmap, z: &Sizes) -> DrawResult {
    if h.values.len() != h.rows * h.cols {
        return Err(format!(
            "heat map `{}`: {} values for a {}×{} matrix",
            h.title,
            h.values.len(),
            h.rows,
            h.cols
        ));
    }
    let (rows, cols) = (h.rows.max(1), h.cols.max(1));
    let m = h.values.iter().filter(|v| v.is_finite()).fold(0.0f64, |m, v| m.max(v.abs()));
    let m = if m > 0.0 { m } else { 1.0 };

    // Layout in pixels: square cells, centred; the colour bar sits right of the matrix, as tall as it.
    let (w, ht) = area.dim_in_pixel();
    let (w, ht) = (w as f64, ht as f64);
    let title_font = z.font(22.0);
    let cap_h =
        area.estimate_text_size(&h.title, &title_font).map(|(_, th)| th + 2 * (th / 2).min(5)).unwrap_or(0)
            as f64;
    let label_font = z.font(15.0);
    let widest = (0..rows).map(|i| text_width(area, &i.to_string(), &label_font)).max().unwrap_or(0);
    let y_area = (widest + z.px(5.0 + 10.0 + 24.0 + 6.0)) as f64;
    let x_area = z.px(52.0) as f64;
    let (mg, bar_w, bar_gap, bar_labels) =
        (z.px(12.0) as f64, z.px(22.0) as f64, z.px(16.0) as f64, z.px(70.0) as f64);
    let avail_w = (w - 2.0 * mg - y_area - bar_gap - bar_w - bar_labels).max(1.0);
    let avail_h = (ht - 2.0 * mg - cap_h - x_area).max(1.0);
    let cell = (avail_w / cols as f64).min(avail_h / rows as f64);
    let (extra_w, extra_h) = ((avail_w - cell * cols as f64) / 2.0, (avail_h - cell * rows as f64) / 2.0);
    let px = |v: f64| v.max(0.0).round() as u32;
    let plot_right = mg + extra_w + y_area + cell * cols as f64;

    let mut chart = ChartBuilder::on(area)
        .caption(&h.title, title_font)
        .margin_left(px(mg + extra_w))
        .margin_right(px(w - plot_right))
        .margin_top(px(mg + extra_h))
        .margin_bottom(px(mg + extra_h))
        .x_label_area_size(px(x_area))
        .y_label_area_size(px(y_area))
        .build_cartesian_2d(-0.5..cols as f64 - 0.5, -0.5..rows as f64 - 0.5)
        .map_err(err)?;
    // Integer ticks only; y is flipped so row 0 is on top.
    let index = |v: f64, n: usize| {
        let r = v.round();
        if (v - r).abs() < 1e-9 && r >= 0.0 && (r as usize) < n {
            format!("{r}")
        } else {
            String::new()
        }
    };
    let fx = |v: &f64| index(*v, cols);
    let fy = |v: &f64| index(rows as f64 - 1.0 - *v, rows);
    chart
        .configure_mesh()
        .disable_mesh()
        .x_desc(&h.x_label)
        .y_desc(&h.y_label)
        .x_label_formatter(&fx)
        .y_label_formatter(&fy)
        .x_labels(cols.min(10) + 1)
        .y_labels(rows.min(10) + 1)
        .label_style(z.font(15.0))
        .axis_desc_style(z.font(18.0))
        .axis_style(BLACK.stroke_width(z.px(1.0)))
        .set_all_tick_mark_size(z.px(5.0))
        .draw()
        .map_err(err)?;
    let grey = RGBColor(0xa0, 0xa0, 0xa0);
    let cells = (0..h.rows).flat_map(|i| (0..h.cols).map(move |j| (i, j))).map(|(i, j)| {
        let v = h.values[i * h.cols + j];
        let yc = (rows - 1 - i) as f64;
        let fill = if v.is_finite() { diverging(v / m).rgb() } else { grey };
        Rectangle::new([(j as f64 - 0.5, yc - 0.5), (j as f64 + 0.5, yc + 0.5)], fill.filled())
    });
    chart.draw_series(cells).map_err(err)?;
    if h.values.is_empty() || h.values.iter().all(|v| !v.is_finite()) {
        let (w, hh) = chart.plotting_area().dim_in_pixel();
        let style = z.font(18.0).color(&RGBColor(0x60, 0x60, 0x60)).pos(Pos::new(HPos::Center, VPos::Center));
        chart
            .plotting_area()
            .strip_coord_spec()
            .draw_text("no finite data", &style, (w as i32 / 2, hh as i32 / 2))
            .map_err(err)?;
    }

    // Colour bar: symmetric range [-m, m] so white is exactly 0.
    let bar_left = plot_right + bar_gap;
    let mut cb = ChartBuilder::on(area)
        .margin_left(px(bar_left))
        .margin_right(px(w - bar_left - bar_w - bar_labels))
        .margin_top(px(mg + extra_h + cap_h))
        .margin_bottom(px(mg + extra_h + x_area))
        .right_y_label_area_size(px(bar_labels))
        .build_cartesian_2d(0.0..1.0, -1.0..1.0)
        .map_err(err)?;
    // The bar runs over [-1, 1] in units of m (2m may overflow f64); ticks sit at nice fractions of m
    // (±m, ±m/2, 0, …) and are labelled in data units.
    let fmt = |v: &f64| fmt_num(*v * m);
    cb.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_label_formatter(&fmt)
        .y_labels(7)
        .label_style(z.font(14.0))
        .set_all_tick_mark_size(z.px(5.0))
        .axis_style(BLACK.stroke_width(z.px(1.0)))
        .draw()
        .map_err(err)?;
    let steps = 128;
    let band = |k: usize| -1.0 + 2.0 * k as f64 / steps as f64;
    cb.draw_series((0..steps).map(|k| {
        let mid = 0.5 * (band(k) + band(k + 1));
        Rectangle::new([(0.0, band(k)), (1.0, band(k + 1))], diverging(mid).rgb().filled())
    }))
    .map_err(err)?;
    cb.draw_series(std::iter::once(Rectangle::new([(0.0, -1.0), (1.0, 1.0)], BLACK.stroke_width(z.px(1.0)))))
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_colours_are_fixed_and_distinct_from_the_palette() {
        assert_eq!(color_for("SGD"), color_for("sgd (S = 32)"));
        assert_eq!(color_for("GD"), Color(0xff, 0x7f, 0x0e));
        assert_ne!(color_for("GD"), color_for("GF"));
        assert_eq!(color_for("theory"), Color(0, 0, 0));
        // "SGDM" is not "SGD": only the first whole word counts.
        assert!(PALETTE.contains(&color_for("SGDM")));
        for (_, c) in METHOD_COLORS {
            assert!(!PALETTE.contains(c));
        }
        // Unknown names hash to a palette colour, the same every time.
        assert_eq!(color_for("layer 2"), color_for("layer 2"));
    }

    #[test]
    fn colours_within_a_panel_are_distinct() {
        let names = ["SGD", "GD", "theory", "a", "b", "c", "d", "e", "f"];
        let series: Vec<Series> = names.iter().map(|n| Series::line(*n, vec![])).collect();
        let colors = panel_colors(&series);
        assert_eq!(colors[0], color_for("SGD"));
        for i in 0..colors.len() {
            for j in 0..i {
                assert_ne!(colors[i], colors[j], "{} and {} share a colour", names[i], names[j]);
            }
        }
        // An explicit colour wins.
        let c = panel_colors(&[Series::line("SGD", vec![]).color(Color(1, 2, 3))]);
        assert_eq!(c, [Color(1, 2, 3)]);
    }

    #[test]
    fn diverging_map_is_white_at_zero_and_monotone_in_each_channel_sign() {
        assert_eq!(diverging(0.0), Color(247, 247, 247));
        assert_eq!(diverging(-1.0), Color(5, 48, 97));
        assert_eq!(diverging(1.0), Color(103, 0, 31));
        assert_eq!(diverging(5.0), diverging(1.0));
        assert_eq!(diverging(f64::NAN), diverging(0.0));
        // Moving away from 0 darkens (sum of channels decreases) on both sides.
        let lum = |c: Color| u32::from(c.0) + u32::from(c.1) + u32::from(c.2);
        for k in 0..20 {
            let (a, b) = (k as f64 / 20.0, (k + 1) as f64 / 20.0);
            assert!(lum(diverging(b)) <= lum(diverging(a)));
            assert!(lum(diverging(-b)) <= lum(diverging(-a)));
        }
    }

    #[test]
    fn log_ranges_cover_whole_decades_and_keep_end_ticks() {
        let (a, b) = axis_range(0.5, 100.0, true);
        assert!((a / 0.1 - 1.0).abs() < 1e-8 && (b / 100.0 - 1.0).abs() < 1e-8);
        let ticks = tick_labels((a, b), true, N_TICKS);
        assert_eq!(ticks.first().map(String::as_str), Some("0.1"));
        assert_eq!(ticks.last().map(String::as_str), Some("100"));
        // A single decade gets labelled 1, 2, …, 10 (plotters emits 10 twice: bold and light tick).
        let r = axis_range(2.0, 3.0, true);
        let mut t = tick_labels(r, true, n_ticks(r, true));
        t.dedup();
        assert_eq!(t, ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]);
        // Linear round-off residue prints as 0.
        assert_eq!(tick_text(5.5e-17, (-1.0, 1.0), false), "0");
    }
}

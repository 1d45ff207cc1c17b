//! Exports and figures: CSV/JSON writers, PNG + SVG plots, the Markdown/HTML report.

//! Result exports of the table-producing commands (`analyze`, `sharpness`, `symmetries`, `teleport`):
//! `--export-json`, `--export-csv`, `--export-markdown FILE` (`-` = stdout), one [`Exporter`] per format.
//!
//! A command turns its results into [`Record`]s (one per row; see [`records`](super::records)) and wraps them
//! in an [`ExportDoc`]. JSON is the shared [`Summary`] schema `{"noether_version", "command", "config",
//! "seed", "results": [...]}` (undefined values null). CSV is one line per record under a header of the
//! field names, raw values (shortest round-trip decimals; undefined values empty). Markdown is the same rows
//! through the shared [`table`] routine, numbers rounded by [`fmt_num`], undefined values `—`.
//! [`Exports::create`] creates every file when the command starts, so a bad path fails before any work.
//!
//! ```no_run
//! use noether::report::exporter::{ExportDoc, ExportFormat, Exports};
//! use noether::report::records::SymmetryRecord;
//! let exports = Exports::create([(ExportFormat::Csv, "symmetries.csv".into())])?; // created now
//! let records = vec![SymmetryRecord { family: "scale", layer: 0, unit: None, charge: Some(2.5), charge_fro: None }];
//! let doc = ExportDoc::new("symmetries", &serde_json::json!({}), None, &records)?;
//! exports.write(&doc, &mut std::io::stdout())?;
//! # Ok::<(), noether::Error>(())
//! ```

use super::export::{write_atomic, Summary};
use super::fmt_num;
use super::table::{table, Align, Cell, Markdown};
use crate::{Error, Result};
use serde::Serialize;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;

/// One result row: a flat serde struct (numbers, strings, unit enums, `Option`s of them).
pub trait Record: Serialize {
    /// The field names in declaration order: the CSV and Markdown header.
    const COLUMNS: &'static [&'static str];
}

/// A command's results, ready for every format: the [`Summary`] (JSON) and each record's raw CSV fields.
#[derive(Debug, Clone)]
pub struct ExportDoc {
    summary: Summary,
    columns: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

impl ExportDoc {
    /// The export of `records` from `command` run with `config` (the resolved arguments) and `seed` (`None` for
    /// deterministic commands).
    pub fn new<R: Record>(
        command: &str,
        config: &impl Serialize,
        seed: Option<u64>,
        records: &[R],
    ) -> Result<Self> {
        let summary = Summary::new(command, config, seed, &records)?;
        let rows = records.iter().map(csv_fields).collect::<Result<Vec<_>>>()?;
        Ok(ExportDoc { summary, columns: R::COLUMNS, rows })
    }
    /// The JSON document.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }
    /// Column names.
    pub fn columns(&self) -> &[&'static str] {
        self.columns
    }
    /// Raw CSV fields of each record (empty = undefined).
    pub fn rows(&self) -> &[Vec<String>] {
        &self.rows
    }
}

fn csv_error(e: impl std::fmt::Display) -> Error {
    Error::Config(format!("a result record cannot be written as CSV: {e}"))
}

/// One record written through the `csv` crate's serde support (shortest round-trip floats, `None` empty),
/// with its header: `[header, fields]`.
fn csv_lines<R: Serialize>(record: &R) -> Result<[Vec<String>; 2]> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.serialize(record).map_err(csv_error)?;
    let bytes = w.into_inner().map_err(csv_error)?;
    let mut r = csv::ReaderBuilder::new().has_headers(false).from_reader(bytes.as_slice());
    let mut lines = r.records().map(|rec| rec.map(|rec| rec.iter().map(String::from).collect::<Vec<_>>()));
    match (lines.next(), lines.next()) {
        (Some(h), Some(f)) => Ok([h.map_err(csv_error)?, f.map_err(csv_error)?]),
        _ => Err(csv_error("expected a header and one row")),
    }
}

fn csv_fields<R: Serialize>(record: &R) -> Result<Vec<String>> {
    csv_lines(record).map(|[_, fields]| fields)
}

/// The CSV header serde derives for `record` (what [`Record::COLUMNS`] must equal).
pub fn csv_header<R: Serialize>(record: &R) -> Result<Vec<String>> {
    csv_lines(record).map(|[header, _]| header)
}

/// One export format.
pub trait Exporter {
    /// The whole file for `doc`.
    fn render(&self, doc: &ExportDoc) -> Result<String>;
}

/// `--export-json`: the [`Summary`] as pretty JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonExporter;

impl Exporter for JsonExporter {
    fn render(&self, doc: &ExportDoc) -> Result<String> {
        let text =
            serde_json::to_string_pretty(&doc.summary).map_err(|e| Error::Config(format!("JSON: {e}")))?;
        Ok(text + "\n")
    }
}

/// `--export-csv`: a header of the field names, then one line per record (raw values).
#[derive(Debug, Clone, Copy, Default)]
pub struct CsvExporter;

impl Exporter for CsvExporter {
    fn render(&self, doc: &ExportDoc) -> Result<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(doc.columns).map_err(csv_error)?;
        for row in &doc.rows {
            w.write_record(row).map_err(csv_error)?;
        }
        let bytes = w.into_inner().map_err(csv_error)?;
        String::from_utf8(bytes).map_err(csv_error)
    }
}

/// `--export-markdown`: a pipe table through [`table`]; integers and text as they are, other numbers by
/// [`fmt_num`], undefined values `—`. Columns whose values are all numbers are right-aligned.
#[derive(Debug, Clone, Copy, Default)]
pub struct MarkdownExporter;

impl Exporter for MarkdownExporter {
    fn render(&self, doc: &ExportDoc) -> Result<String> {
        let is_number = |s: &str| s.parse::<f64>().is_ok();
        let align: Vec<Align> = (0..doc.columns.len())
            .map(|k| {
                let numeric = doc.rows.iter().map(|r| r[k].as_str()).all(|s| s.is_empty() || is_number(s));
                if numeric {
                    Align::Right
                } else {
                    Align::Left
                }
            })
            .collect();
        let human = |s: &String| match (s.is_empty(), s.parse::<i64>(), s.parse::<f64>()) {
            (true, _, _) => Cell::plain("—"),
            (_, Ok(_), _) | (_, _, Err(_)) => Cell::plain(s.as_str()),
            (_, _, Ok(x)) => Cell::plain(fmt_num(x)),
        };
        let rows: Vec<Vec<Cell>> = doc.rows.iter().map(|r| r.iter().map(human).collect()).collect();
        let title = format!("noether {} (noether {})\n\n", doc.summary.command, doc.summary.noether_version);
        Ok(title + &table(&Markdown, doc.columns, &align, &rows))
    }
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// [`JsonExporter`].
    Json,
    /// [`CsvExporter`].
    Csv,
    /// [`MarkdownExporter`].
    Markdown,
}

impl ExportFormat {
    /// The format's exporter.
    pub fn exporter(self) -> &'static dyn Exporter {
        match self {
            ExportFormat::Json => &JsonExporter,
            ExportFormat::Csv => &CsvExporter,
            ExportFormat::Markdown => &MarkdownExporter,
        }
    }
}

/// Where an export goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportTarget {
    /// Standard output (the path `-`).
    Stdout,
    /// A regular file (symbolic links resolved), replaced whole when written (temporary file + rename).
    File(PathBuf),
    /// A device or a named pipe (e.g. `/dev/stdout`, `/dev/null`), written in place: renaming over it would
    /// replace the device by a regular file.
    Stream(PathBuf),
}

/// The exports a command was asked for, with their files already created.
#[derive(Debug, Clone, Default)]
pub struct Exports {
    sinks: Vec<(ExportFormat, ExportTarget)>,
}

impl Exports {
    /// Checks every path now ([`Exports::add`]), so an unwritable path fails before the command computes
    /// anything; the path `-` means standard output.
    pub fn create(requests: impl IntoIterator<Item = (ExportFormat, PathBuf)>) -> Result<Self> {
        let mut exports = Exports::default();
        for (format, path) in requests {
            exports.add(format, path)?;
        }
        Ok(exports)
    }

    /// Adds one export; `-` means standard output. A path that does not exist is created empty now (so an
    /// unwritable directory fails before any work); an existing regular file is opened for appending, which
    /// checks that it is writable without touching its contents (it is replaced only when the results are
    /// written); a symbolic link is followed, so the file it points to is replaced and the link stays; a device
    /// or named pipe is written in place. A directory is an error.
    pub fn add(&mut self, format: ExportFormat, path: PathBuf) -> Result<()> {
        let target = if path.as_os_str() == "-" {
            ExportTarget::Stdout
        } else {
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => {
                    return Err(Error::io(
                        &path,
                        std::io::Error::other("is a directory; give a file name for the export"),
                    ))
                }
                Ok(m) if m.is_file() => {
                    std::fs::OpenOptions::new().append(true).open(&path).map_err(|e| Error::io(&path, e))?;
                    ExportTarget::File(std::fs::canonicalize(&path).map_err(|e| Error::io(&path, e))?)
                }
                Ok(_) => {
                    std::fs::OpenOptions::new().write(true).open(&path).map_err(|e| Error::io(&path, e))?;
                    ExportTarget::Stream(path)
                }
                Err(_) => {
                    File::create_new(&path).map_err(|e| Error::io(&path, e))?;
                    ExportTarget::File(path)
                }
            }
        };
        self.sinks.push((format, target));
        Ok(())
    }

    /// Whether an export goes to standard output (the command then prints nothing else there).
    pub fn to_stdout(&self) -> bool {
        self.sinks.iter().any(|(_, t)| *t == ExportTarget::Stdout)
    }

    /// Writes `doc` in every requested format: files are replaced whole (temporary file + rename), stdout
    /// exports go to `stdout` in the order requested.
    pub fn write(&self, doc: &ExportDoc, stdout: &mut dyn Write) -> Result<()> {
        for (format, target) in &self.sinks {
            let text = format.exporter().render(doc)?;
            match target {
                ExportTarget::Stdout => {
                    stdout.write_all(text.as_bytes()).map_err(|e| Error::io("<stdout>", e))?
                }
                ExportTarget::File(path) => write_atomic(path, &text)?,
                ExportTarget::Stream(path) => std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|mut f| f.write_all(text.as_bytes()))
                    .map_err(|e| Error::io(path, e))?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Row {
        name: &'static str,
        count: usize,
        value: Option<f64>,
    }

    impl Record for Row {
        const COLUMNS: &'static [&'static str] = &["name", "count", "value"];
    }

    fn doc() -> ExportDoc {
        let rows = [
            Row { name: "a_b", count: 3, value: Some(0.1 + 0.2) },
            Row { name: "c", count: 12345, value: None },
        ];
        ExportDoc::new("test", &serde_json::json!({"lr": 0.1}), Some(3), &rows).unwrap()
    }

    #[test]
    fn csv_is_raw_and_round_trips() {
        let text = CsvExporter.render(&doc()).unwrap();
        assert_eq!(text, "name,count,value\na_b,3,0.30000000000000004\nc,12345,\n");
    }

    #[test]
    fn json_has_the_summary_schema() {
        let v: serde_json::Value = serde_json::from_str(&JsonExporter.render(&doc()).unwrap()).unwrap();
        assert_eq!(v["command"], "test");
        assert_eq!(v["seed"], 3);
        assert_eq!(v["config"]["lr"], 0.1);
        assert_eq!(v["results"][0]["value"], 0.30000000000000004);
        assert!(v["results"][1]["value"].is_null());
    }

    #[test]
    fn markdown_rounds_numbers_and_marks_undefined_values() {
        let text = MarkdownExporter.render(&doc()).unwrap();
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            lines,
            ["| name | count | value |", "|---|---:|---:|", "| a\\_b | 3 | 0.3 |", "| c | 12345 | — |"]
        );
    }

    #[test]
    fn files_are_created_up_front_and_bad_paths_fail_early() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        let exports = Exports::create([(ExportFormat::Csv, path.clone())]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert!(!exports.to_stdout());
        exports.write(&doc(), &mut Vec::new()).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("name,count,value\n"));
        let bad = dir.path().join("no/such/dir/out.json");
        assert!(matches!(Exports::create([(ExportFormat::Json, bad)]), Err(Error::Io { .. })));
        let mut out = Vec::new();
        let stdout = Exports::create([(ExportFormat::Json, PathBuf::from("-"))]).unwrap();
        assert!(stdout.to_stdout());
        stdout.write(&doc(), &mut out).unwrap();
        assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
    }
}

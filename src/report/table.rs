//! One table routine for every human-readable format: a format supplies only its row and divider syntax
//! (STYLE.md §12), so Markdown and HTML tables cannot drift apart.

/// Horizontal alignment of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text columns.
    Left,
    /// Number columns.
    Right,
}

/// Emphasis of a cell: pass/fail cells are coloured in HTML and marked in Markdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Plain cell.
    Plain,
    /// A passed check (green).
    Pass,
    /// A failed check (red).
    Fail,
    /// A claim not decided at this size (amber).
    Undecided,
    /// A reported measurement, not pass/fail (grey).
    Measured,
    /// A pre-registered prediction the data refute, explained in the docs (orange, bold).
    Refuted,
}

/// One table cell: raw text (the syntax escapes it) and its emphasis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// Unescaped text.
    pub text: String,
    /// Emphasis.
    pub mark: Mark,
}

impl Cell {
    /// A plain cell.
    pub fn plain(text: impl Into<String>) -> Self {
        Cell { text: text.into(), mark: Mark::Plain }
    }
    /// A pass/fail cell.
    pub fn verdict(pass: bool) -> Self {
        if pass {
            Cell { text: "pass".into(), mark: Mark::Pass }
        } else {
            Cell { text: "FAIL".into(), mark: Mark::Fail }
        }
    }
    /// The result cell of a report row.
    pub fn outcome(o: crate::report::document::Outcome) -> Self {
        use crate::report::document::Outcome;
        let mark = match o {
            Outcome::Pass => Mark::Pass,
            Outcome::Fail => Mark::Fail,
            Outcome::Undecided => Mark::Undecided,
            Outcome::Measured => Mark::Measured,
            Outcome::Refuted => Mark::Refuted,
        };
        Cell { text: o.word().into(), mark }
    }
}

/// The syntax of one output format. [`table`] calls `open`, `header`, `divider`, `row` per row, `close`.
pub trait TableSyntax {
    /// Text before the table.
    fn open(&self) -> String;
    /// The header row.
    fn header(&self, names: &[&str], align: &[Align]) -> String;
    /// The line between header and body (empty if the format has none).
    fn divider(&self, align: &[Align]) -> String;
    /// One body row.
    fn row(&self, cells: &[Cell], align: &[Align]) -> String;
    /// Text after the table.
    fn close(&self) -> String;
}

/// Renders a table: `names` and `align` give the columns, each row has one cell per column (missing cells are
/// empty, extra ones dropped).
pub fn table(syntax: &dyn TableSyntax, names: &[&str], align: &[Align], rows: &[Vec<Cell>]) -> String {
    let mut out = syntax.open();
    out += &syntax.header(names, align);
    out += &syntax.divider(align);
    for r in rows {
        let cells: Vec<Cell> =
            (0..names.len()).map(|k| r.get(k).cloned().unwrap_or_else(|| Cell::plain(""))).collect();
        out += &syntax.row(&cells, align);
    }
    out += &syntax.close();
    out
}

/// GitHub-flavoured Markdown pipe tables.
#[derive(Debug, Clone, Copy, Default)]
pub struct Markdown;

/// Backslash-escapes the characters that Markdown would read as table, emphasis, code or HTML syntax.
fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '|' | '*' | '_' | '`' | '<' | '>' | '[' | ']' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

impl TableSyntax for Markdown {
    fn open(&self) -> String {
        String::new()
    }
    fn header(&self, names: &[&str], _: &[Align]) -> String {
        let cells: Vec<String> = names.iter().map(|n| md_escape(n)).collect();
        format!("| {} |\n", cells.join(" | "))
    }
    fn divider(&self, align: &[Align]) -> String {
        let cells: Vec<&str> =
            align.iter().map(|a| if *a == Align::Right { "---:" } else { "---" }).collect();
        format!("|{}|\n", cells.join("|"))
    }
    fn row(&self, cells: &[Cell], _: &[Align]) -> String {
        let cells: Vec<String> = cells
            .iter()
            .map(|c| match c.mark {
                Mark::Plain => md_escape(&c.text),
                Mark::Pass => format!("✅ {}", md_escape(&c.text)),
                Mark::Fail => format!("❌ **{}**", md_escape(&c.text)),
                Mark::Undecided => format!("⏸ {}", md_escape(&c.text)),
                Mark::Measured => format!("📏 {}", md_escape(&c.text)),
                Mark::Refuted => format!("⚠️ **{}**", md_escape(&c.text)),
            })
            .collect();
        format!("| {} |\n", cells.join(" | "))
    }
    fn close(&self) -> String {
        String::new()
    }
}

/// HTML `<table>`; pass/fail cells get the CSS classes `pass` / `fail` (styled by the report's stylesheet).
#[derive(Debug, Clone, Copy, Default)]
pub struct Html;

/// Escapes `& < > " '` for HTML text and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html_align(a: Align) -> &'static str {
    if a == Align::Right {
        " class=\"num\""
    } else {
        ""
    }
}

impl TableSyntax for Html {
    fn open(&self) -> String {
        "<table>\n".into()
    }
    fn header(&self, names: &[&str], align: &[Align]) -> String {
        let cells: String = names
            .iter()
            .zip(align.iter().copied().chain(std::iter::repeat(Align::Left)))
            .map(|(n, a)| format!("<th{}>{}</th>", html_align(a), html_escape(n)))
            .collect();
        format!("<thead><tr>{cells}</tr></thead>\n")
    }
    fn divider(&self, _: &[Align]) -> String {
        "<tbody>\n".into()
    }
    fn row(&self, cells: &[Cell], align: &[Align]) -> String {
        let cells: String = cells
            .iter()
            .zip(align.iter().copied().chain(std::iter::repeat(Align::Left)))
            .map(|(c, a)| match c.mark {
                Mark::Plain => format!("<td{}>{}</td>", html_align(a), html_escape(&c.text)),
                Mark::Pass => format!("<td class=\"pass\">{}</td>", html_escape(&c.text)),
                Mark::Fail => format!("<td class=\"fail\">{}</td>", html_escape(&c.text)),
                Mark::Undecided => format!("<td class=\"undecided\">{}</td>", html_escape(&c.text)),
                Mark::Measured => format!("<td class=\"measured\">{}</td>", html_escape(&c.text)),
                Mark::Refuted => format!("<td class=\"refuted\">{}</td>", html_escape(&c.text)),
            })
            .collect();
        format!("<tr>{cells}</tr>\n")
    }
    fn close(&self) -> String {
        "</tbody>\n</table>\n".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<Vec<Cell>> {
        vec![vec![Cell::plain("a|b"), Cell::verdict(true)], vec![Cell::plain("<x>"), Cell::verdict(false)]]
    }

    #[test]
    fn markdown_table_has_header_divider_and_escaped_rows() {
        let t = table(&Markdown, &["name", "ok"], &[Align::Left, Align::Right], &rows());
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines,
            ["| name | ok |", "|---|---:|", "| a\\|b | ✅ pass |", "| \\<x\\> | ❌ **FAIL** |"]
        );
    }

    #[test]
    fn html_table_escapes_and_marks_verdicts() {
        let t = table(&Html, &["name", "ok"], &[Align::Left, Align::Right], &rows());
        assert!(t.contains("<td>&lt;x&gt;</td>"), "{t}");
        assert!(t.contains("<td class=\"pass\">pass</td>"), "{t}");
        assert!(t.contains("<td class=\"fail\">FAIL</td>"), "{t}");
        assert_eq!(t.matches("<tr>").count(), 3);
    }

    #[test]
    fn short_rows_are_padded() {
        let t = table(&Markdown, &["a", "b"], &[Align::Left, Align::Left], &[vec![Cell::plain("x")]]);
        assert!(t.ends_with("| x |  |\n"), "{t}");
    }
}

//! Aligned plain-text tables, and escaping that keeps each row on one line.

use std::fmt::Write as _;

/// How a column lines up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    /// Text: padded on the right.
    Left,
    /// Numbers: padded on the left.
    Right,
}

/// A table: a header row (optional) and rows of cells, printed with two spaces between
/// columns and no trailing spaces.
#[derive(Debug, Default)]
pub(crate) struct Table {
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table whose first row is `header`, with every column aligned left.
    pub(crate) fn new<S: Into<String>>(header: impl IntoIterator<Item = S>) -> Table {
        let mut t = Table::default();
        t.row(header);
        t
    }

    /// A table with no header row (key/value listings).
    pub(crate) fn headless() -> Table {
        Table::default()
    }

    /// Aligns column `i` (from 0).
    pub(crate) fn align(mut self, i: usize, align: Align) -> Table {
        if self.align.len() <= i {
            self.align.resize(i + 1, Align::Left);
        }
        self.align[i] = align;
        self
    }

    /// Adds a row. Cells must already be escaped ([`escape`]).
    pub(crate) fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// The table as lines of text, each ending in a newline.
    pub(crate) fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0; columns];
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i] - cell.chars().count();
                match self.align.get(i).copied().unwrap_or(Align::Left) {
                    Align::Left => {
                        line.push_str(cell);
                        let _ = write!(line, "{:pad$}", "");
                    }
                    Align::Right => {
                        let _ = write!(line, "{:pad$}", "");
                        line.push_str(cell);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `s` with backslashes, control characters and invisible formatting characters escaped, so
/// that a key or an error message stays on one line and cannot move the cursor or reorder
/// text: `\\` for a backslash, `\n`, `\t`, `\r`, `\xHH` for the other ASCII controls and
/// `\uHHHH` for the rest. These are the escapes of bash's and zsh's `$'…'` quoting, so a key
/// shown escaped is typed back inside `$'…'` ([`shell_quote`] writes it so). Quotes are left
/// alone.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if c.is_control() || is_invisible(c) => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// `s` as one shell word that bash, zsh and ksh read back as exactly `s`: `'s'` when it needs
/// no escape, else `$'…'` with [`escape`]'s escapes (and `\'` for a quote). For the command
/// lines the tool suggests (`next page: --after …`).
pub(crate) fn shell_quote(s: &str) -> String {
    let escaped = escape(s);
    if escaped == s && !s.contains('\'') {
        return format!("'{s}'");
    }
    format!("$'{}'", escaped.replace('\'', "\\'"))
}

/// Characters that change how text around them shows without showing themselves:
/// zero-width characters, bidirectional overrides, line and paragraph separators.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// How much of a key a table shows: a key may be 1,024 bytes, and one long key would widen
/// every row. `show`, `--json` and the `next page:` cursor give keys whole.
pub(crate) const KEY_WIDTH: usize = 64;

/// A key as a table cell: escaped, and cut past [`KEY_WIDTH`] characters with `…`.
pub(crate) fn key_cell(key: &str) -> String {
    escape_short(key, KEY_WIDTH)
}

/// `s` escaped and cut to at most `max` characters, with `…` marking the cut.
pub(crate) fn escape_short(s: &str, max: usize) -> String {
    let e = escape(s);
    if e.chars().count() <= max {
        return e;
    }
    let mut cut: String = e.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_without_trailing_spaces() {
        let mut t = Table::new(["KEY", "N"]).align(1, Align::Right);
        t.row(["a", "1"]);
        t.row(["long/key", "100"]);
        t.row(["é", ""]);
        assert_eq!(
            t.render(),
            "KEY         N\na           1\nlong/key  100\né\n"
        );
    }

    #[test]
    fn escaping_keeps_one_line_and_is_unambiguous() {
        assert_eq!(escape("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(escape("x\u{1b}[2Jy\u{7f}"), "x\\x1b[2Jy\\x7f");
        assert_eq!(escape("back\\slash"), "back\\\\slash");
        assert_eq!(escape("say \"hi\" é/ü"), "say \"hi\" é/ü");
        assert_eq!(escape("rtl\u{202E}txt\u{85}"), "rtl\\u202etxt\\u0085");
        assert_eq!(escape_short("abcdef", 4), "abc…");
        assert_eq!(escape_short("a\nb", 10), "a\\nb");
    }

    #[test]
    fn shell_quoting_reads_back() {
        assert_eq!(shell_quote("orders/1001"), "'orders/1001'");
        assert_eq!(shell_quote("a b;c"), "'a b;c'");
        assert_eq!(shell_quote("multi\nline"), "$'multi\\nline'");
        assert_eq!(shell_quote("it's"), "$'it\\'s'");
        assert_eq!(shell_quote("back\\slash"), "$'back\\\\slash'");
    }
}

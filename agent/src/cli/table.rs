//! Text rendering for people: borderless aligned columns (upper-case
//! headers, two spaces between columns, numbers right-aligned, no trailing
//! spaces), `Label:  value` blocks, and small formatting helpers.
//!
//! A small renderer rather than `comfy-table`: that crate pads every cell
//! (lines start with a space and end in trailing blanks), and wraps to the
//! terminal's width when it can see one, so the same data renders
//! differently in a terminal, a pipe and a test. Here the output depends
//! only on the data: golden tests pin it byte for byte, and `grep`/`awk`
//! see exactly what a person sees. Long lists are split one item per row
//! (continuation rows leave the other cells blank) so tables stay readable
//! in 80 columns.

use std::fmt::Write;

/// Columns are separated by this.
const GAP: &str = "  ";

/// Text is wrapped to this width where it is prose (explain's steps).
pub const WIDTH: usize = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A borderless table.
#[derive(Debug)]
pub struct Table {
    headers: Vec<&'static str>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Self {
            headers: headers.to_vec(),
            align: vec![Align::Left; headers.len()],
            rows: Vec::new(),
        }
    }

    /// Right-aligns column `index` (for numbers).
    pub fn right(mut self, index: usize) -> Self {
        if let Some(align) = self.align.get_mut(index) {
            *align = Align::Right;
        }
        self
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut row: Vec<String> = cells.into_iter().map(Into::into).collect();
        row.resize(self.headers.len(), String::new());
        self.rows.push(row);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table, one line per row after the header, each ending in `\n`.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (index, cell) in row.iter().enumerate() {
                let w = widths.get(index).copied().unwrap_or(0);
                let pad = " ".repeat(w.saturating_sub(width(cell)));
                if index > 0 {
                    line.push_str(GAP);
                }
                match self.align.get(index) {
                    Some(Align::Right) => {
                        line.push_str(&pad);
                        line.push_str(cell);
                    }
                    _ => {
                        line.push_str(cell);
                        line.push_str(&pad);
                    }
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

fn width(text: &str) -> usize {
    text.chars().count()
}

/// `Label:  value` lines with the values aligned.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let label = pairs.iter().map(|(l, _)| width(l)).max().unwrap_or(0) + 1;
    let mut out = String::new();
    for (name, value) in pairs {
        let _ = writeln!(out, "{:<label$}{GAP}{value}", format!("{name}:"));
    }
    out
}

/// A duration in whole seconds, the way people say it: `45s`, `3m12s`,
/// `2h05m`, `3d4h`.
pub fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (
        seconds / 86_400,
        seconds / 3600 % 24,
        seconds / 60 % 60,
        seconds % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s:02}s"),
        (0, _, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h}h"),
    }
}

/// An age with fractions: `0.4s` under 10 s, then as [`duration`].
pub fn age(seconds: f64) -> String {
    if seconds < 10.0 {
        format!("{seconds:.1}s")
    } else {
        // Truncation is intended: whole seconds of an age.
        duration(seconds as u64)
    }
}

/// Unix time as `HH:MM:SS.mmm` (UTC).
pub fn clock(unix: f64) -> String {
    // Truncation is intended: whole milliseconds; negative times read as 0.
    let ms = (unix.max(0.0) * 1000.0) as u64;
    let day = ms / 1000 % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day / 3600,
        day / 60 % 60,
        day % 60,
        ms % 1000
    )
}

/// `yes` or `no`.
pub fn yes_no(value: bool) -> &'static str {
    if value { "yes" } else { "no" }
}

/// Items joined by `, `, or `-` for none.
pub fn list<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `text` wrapped at word boundaries so that each line, with `indent`
/// spaces before it, fits in [`WIDTH`]; `first` is put before the first
/// line instead of the indent (e.g. `"  1. "`).
pub fn wrap(first: &str, indent: usize, text: &str) -> String {
    let mut out = String::new();
    let mut line = first.to_owned();
    let mut empty = true;
    for word in text.split_whitespace() {
        if !empty && width(&line) + 1 + width(word) > WIDTH {
            out.push_str(line.trim_end());
            out.push('\n');
            line = " ".repeat(indent);
            empty = true;
        }
        if !empty {
            line.push(' ');
        }
        line.push_str(word);
        empty = false;
    }
    out.push_str(line.trim_end());
    out.push('\n');
    out
}

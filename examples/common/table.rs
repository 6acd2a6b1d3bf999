//! The comparison table every example ends with: a header row, then one row per variant,
//! the first column left-aligned and the others right-aligned, each as wide as its widest
//! cell.
#![allow(dead_code)]

/// A table of already-formatted cells.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: header.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; it must have one cell per column.
    pub fn row(&mut self, cells: Vec<String>) {
        assert_eq!(cells.len(), self.header.len(), "one cell per column");
        self.rows.push(cells);
    }

    /// The table as text, one line per row, with a blank line before it.
    pub fn render(&self) -> String {
        let widths: Vec<usize> = (0..self.header.len())
            .map(|c| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let parts: Vec<String> = cells
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, &w))| {
                    let pad = " ".repeat(w - cell.chars().count());
                    if c == 0 {
                        format!("{cell}{pad}")
                    } else {
                        format!("{pad}{cell}")
                    }
                })
                .collect();
            parts.join("  ").trim_end().to_string()
        };
        let mut out = String::from("\n");
        for r in std::iter::once(&self.header).chain(&self.rows) {
            out.push_str(&line(r));
            out.push('\n');
        }
        out
    }

    /// Prints [`render`](Self::render).
    pub fn print(&self) {
        print!("{}", self.render());
    }
}

/// A share in `[0, 1]` as a percentage with one decimal.
pub fn percent(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

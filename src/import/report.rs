//! What a weight import did: the report a user reads after loading a checkpoint.

use std::fmt;

/// One tensor whose shape in the file differs from the model's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The model's parameter path.
    pub key: String,
    /// The shape the model expects (burn layout).
    pub expected: Vec<usize>,
    /// The shape found in the file (after the PyTorch → burn layout change).
    pub found: Vec<usize>,
}

/// The outcome of [`import_weights`](super::import_weights), in PyTorch's vocabulary
/// (`missing_keys`, `unexpected_keys`) plus shape mismatches and unreadable tensors.
///
/// A load is *clean* when every parameter of the model was loaded and the file held nothing
/// else (apart from keys the options ignore). Strict mode turns anything else into an error
/// that quotes this report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Model parameters that received a tensor from the file.
    pub loaded: Vec<String>,
    /// Model parameters the file has no tensor for (they keep their initial values).
    pub missing: Vec<String>,
    /// File tensors that match no model parameter (after key remapping).
    pub unexpected: Vec<String>,
    /// Tensors present on both sides with different shapes (the model keeps its values).
    pub mismatched: Vec<ShapeMismatch>,
    /// Tensors that could not be read or converted, with the reason.
    pub unreadable: Vec<(String, String)>,
    /// Model parameters left out on purpose by [`ImportOptions::with_only`](super::ImportOptions::with_only).
    pub not_selected: Vec<String>,
    /// File keys dropped by [`ImportOptions::with_ignore`](super::ImportOptions::with_ignore).
    pub ignored: Vec<String>,
    /// File tensors converted to the model's float type (e.g. f16 → f32), with the source type.
    pub converted: Vec<(String, String)>,
}

impl ImportReport {
    /// True when every model parameter was loaded from the file and nothing else was in it.
    pub fn is_clean(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.mismatched.is_empty()
            && self.unreadable.is_empty()
    }

    /// One line: counts of each outcome.
    pub fn summary_line(&self) -> String {
        format!(
            "loaded {}, missing {}, unexpected {}, shape mismatches {}, unreadable {}, not selected {}, ignored {}",
            self.loaded.len(),
            self.missing.len(),
            self.unexpected.len(),
            self.mismatched.len(),
            self.unreadable.len(),
            self.not_selected.len(),
            self.ignored.len()
        )
    }

    /// The problems only (what strict mode reports), one per line, keys named.
    pub fn problems(&self) -> String {
        let mut out = Vec::new();
        if !self.missing.is_empty() {
            out.push(format!(
                "missing in the file (in the model): {}",
                list(&self.missing)
            ));
        }
        if !self.unexpected.is_empty() {
            out.push(format!(
                "unexpected in the file (not in the model): {}",
                list(&self.unexpected)
            ));
        }
        for m in &self.mismatched {
            out.push(format!(
                "shape mismatch for `{}`: model {:?}, file {:?}",
                m.key, m.expected, m.found
            ));
        }
        for (key, why) in &self.unreadable {
            out.push(format!("cannot read `{key}`: {why}"));
        }
        out.join("\n")
    }
}

/// Lists at most 12 keys, then how many more, so a message stays readable for a 300-tensor
/// checkpoint loaded into the wrong architecture.
fn list(keys: &[String]) -> String {
    const SHOWN: usize = 12;
    let mut s = keys
        .iter()
        .take(SHOWN)
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if keys.len() > SHOWN {
        s.push_str(&format!(" and {} more", keys.len() - SHOWN));
    }
    s
}

impl fmt::Display for ImportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary_line())?;
        if !self.converted.is_empty() {
            writeln!(
                f,
                "converted to the model's float type: {} tensors (first: `{}` from {})",
                self.converted.len(),
                self.converted[0].0,
                self.converted[0].1
            )?;
        }
        let problems = self.problems();
        if !problems.is_empty() {
            writeln!(f, "{problems}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_only_without_problems_and_long_lists_are_cut() {
        let mut r = ImportReport {
            loaded: vec!["a".into()],
            ignored: vec!["x".into()],
            ..Default::default()
        };
        assert!(r.is_clean());
        r.unexpected = (0..20).map(|i| format!("k{i}")).collect();
        assert!(!r.is_clean());
        let p = r.problems();
        assert!(p.contains("`k0`") && p.contains("and 8 more"), "{p}");
        assert!(!p.contains("`k19`"));
    }
}

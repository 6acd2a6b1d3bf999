//! A readable table of a module's parameters, like PEFT's `print_trainable_parameters`.

use super::paths::ParamInfo;

/// Every float tensor of a module with its path, shape, size and whether it trains.
///
/// `Display` prints a table and a totals line:
/// `trainable params: 10,250 || all params: 1,863,690 || trainable%: 0.5500`.
/// Buffers (BatchNorm running statistics) are listed but not counted as parameters, as in
/// PyTorch's `parameters()`.
#[derive(Clone, Debug)]
pub struct ParamSummary {
    /// One entry per float tensor, in visiting order.
    pub entries: Vec<ParamInfo>,
}

impl ParamSummary {
    /// Number of learnable scalars (buffers excluded).
    pub fn total(&self) -> usize {
        self.params().map(ParamInfo::numel).sum()
    }

    /// Number of learnable scalars that currently receive gradients.
    pub fn trainable(&self) -> usize {
        self.params()
            .filter(|p| p.trainable)
            .map(ParamInfo::numel)
            .sum()
    }

    /// Number of learnable scalars that are frozen.
    pub fn frozen(&self) -> usize {
        self.total() - self.trainable()
    }

    /// Trainable share in percent (0 for an empty module).
    pub fn trainable_percent(&self) -> f64 {
        let total = self.total();
        if total == 0 {
            0.0
        } else {
            100.0 * self.trainable() as f64 / total as f64
        }
    }

    /// Paths of the parameters that receive gradients.
    pub fn trainable_paths(&self) -> Vec<&str> {
        self.params()
            .filter(|p| p.trainable)
            .map(|p| p.path.as_str())
            .collect()
    }

    /// The one-line totals, PEFT style.
    pub fn totals_line(&self) -> String {
        format!(
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            thousands(self.trainable()),
            thousands(self.total()),
            self.trainable_percent()
        )
    }

    fn params(&self) -> impl Iterator<Item = &ParamInfo> {
        self.entries.iter().filter(|p| !p.buffer)
    }
}

impl std::fmt::Display for ParamSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let width = self
            .entries
            .iter()
            .map(|p| p.path.len())
            .max()
            .unwrap_or(4)
            .max(4);
        writeln!(
            f,
            "{:<width$}  {:<16} {:>12}  trainable",
            "path", "shape", "params"
        )?;
        for p in &self.entries {
            let status = match (p.buffer, p.trainable) {
                (true, _) => "buffer",
                (false, true) => "yes",
                (false, false) => "no",
            };
            writeln!(
                f,
                "{:<width$}  {:<16} {:>12}  {}",
                p.path,
                format!("{:?}", p.shape),
                thousands(p.numel()),
                status
            )?;
        }
        write!(f, "{}", self.totals_line())
    }
}

/// `1234567` → `1,234,567`.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::ParamId;

    fn info(path: &str, shape: &[usize], trainable: bool) -> ParamInfo {
        ParamInfo {
            path: path.into(),
            id: ParamId::new(),
            shape: shape.to_vec(),
            trainable,
            buffer: super::super::paths::is_buffer_path(path),
            owner: "Linear".into(),
        }
    }

    #[test]
    fn totals_skip_buffers_and_format_thousands() {
        let s = ParamSummary {
            entries: vec![
                info("body.weight", &[1000, 1000], false),
                info("body.norm.running_mean", &[1000], false),
                info("head.weight", &[1000, 10], true),
                info("head.bias", &[10], true),
            ],
        };
        assert_eq!(s.total(), 1_010_010);
        assert_eq!(s.trainable(), 10_010);
        assert_eq!(s.frozen(), 1_000_000);
        assert_eq!(s.trainable_paths(), ["head.weight", "head.bias"]);
        let text = s.to_string();
        assert!(
            text.contains(
                "trainable params: 10,010 || all params: 1,010,010 || trainable%: 0.9911"
            ),
            "{text}"
        );
        assert!(text.contains("buffer"), "{text}");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }
}

//! Selecting parameters by their module path.
//!
//! A path is the chain of field names (and `Vec` indices) from the root module to a parameter,
//! joined by dots, exactly as a user reads it: `encoder.layers.3.mlp.weight`.

use crate::error::{Result, TransferError};

/// Which parameters an operation (freeze, unfreeze, learning-rate group, LoRA target) applies to.
///
/// A glob pattern matches a path when it matches the whole path **or a module prefix** of it
/// (cut at a dot), so `backbone` selects every parameter under `backbone`, `layers.0` selects
/// `layers.0.weight` and `layers.0.bias`, and `*.bias` selects every bias. Patterns use `*`
/// (any characters, dots included), `?` (one character) and classes such as `[0-3]`.
///
/// ```
/// use burn_transfer::freeze::Selector;
/// let s = Selector::globs(["backbone.*", "*.bias"]).unwrap();
/// assert!(s.matches_path("backbone.layers.0.weight"));
/// assert!(s.matches_path("head.bias"));
/// assert!(!s.matches_path("head.weight"));
/// ```
///
/// Selectors serialise as data (globs as the text written), so a run's configuration that
/// holds them saves and loads as JSON.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Selector {
    /// Any of these glob patterns.
    Globs(Vec<GlobPattern>),
    /// The last `count` entries of a `Vec` of layers found at `stack` (e.g. `encoder.layers`).
    LastLayers {
        /// Path of the `Vec` field holding the layers.
        stack: String,
        /// How many layers, counted from the end.
        count: usize,
    },
    /// The first `count` entries of a `Vec` of layers found at `stack`.
    FirstLayers {
        /// Path of the `Vec` field holding the layers.
        stack: String,
        /// How many layers, counted from the start.
        count: usize,
    },
    /// Every parameter that the inner selector does not select.
    Not(Box<Selector>),
    /// Every parameter that any of the selectors selects.
    Any(Vec<Selector>),
}

/// One parsed glob pattern, keeping the text the user wrote for error messages; it
/// serialises as that text and is parsed again when read.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct GlobPattern {
    text: String,
    pattern: glob::Pattern,
}

impl TryFrom<String> for GlobPattern {
    type Error = TransferError;

    fn try_from(text: String) -> Result<Self> {
        Self::new(&text)
    }
}

impl From<GlobPattern> for String {
    fn from(pattern: GlobPattern) -> Self {
        pattern.text
    }
}

impl GlobPattern {
    /// Parses a glob pattern; a malformed one (e.g. an unclosed `[`) is an error.
    pub fn new(text: &str) -> Result<Self> {
        let pattern = glob::Pattern::new(text).map_err(|e| TransferError::InvalidPattern {
            pattern: text.to_string(),
            reason: e.msg.to_string(),
        })?;
        Ok(Self {
            text: text.to_string(),
            pattern,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern matches the path or one of its module prefixes.
    pub fn matches(&self, path: &str) -> bool {
        if self.pattern.matches(path) {
            return true;
        }
        path.match_indices('.')
            .any(|(i, _)| self.pattern.matches(&path[..i]))
    }
}

impl Selector {
    /// A selector for one glob pattern.
    pub fn glob(pattern: &str) -> Result<Self> {
        Ok(Self::Globs(vec![GlobPattern::new(pattern)?]))
    }

    /// A selector for any of several glob patterns.
    pub fn globs<I, S>(patterns: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let patterns = patterns
            .into_iter()
            .map(|p| GlobPattern::new(p.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        if patterns.is_empty() {
            return Err(TransferError::config(
                "selector",
                "[]",
                "give at least one pattern, or use Selector::all()",
            ));
        }
        Ok(Self::Globs(patterns))
    }

    /// Every parameter.
    pub fn all() -> Self {
        Self::Globs(vec![GlobPattern::new("*").expect("`*` is a valid pattern")])
    }

    /// The last `count` layers of the `Vec` at `stack`.
    pub fn last_layers(stack: &str, count: usize) -> Self {
        Self::LastLayers {
            stack: stack.to_string(),
            count,
        }
    }

    /// The first `count` layers of the `Vec` at `stack`.
    pub fn first_layers(stack: &str, count: usize) -> Self {
        Self::FirstLayers {
            stack: stack.to_string(),
            count,
        }
    }

    /// Everything this selector does not select.
    pub fn negate(self) -> Self {
        Self::Not(Box::new(self))
    }

    /// Whether a single path is selected, for selectors that need no knowledge of the module.
    ///
    /// Layer-stack selectors need the module's other paths to know the stack's length; for
    /// them this resolves against the one path given, which is rarely what you want: use
    /// [`Selector::resolve`] with all paths instead.
    pub fn matches_path(&self, path: &str) -> bool {
        self.resolve_unchecked(&[path.to_string()])[0]
    }

    /// For each path, whether it is selected. An error when nothing is selected (the error
    /// lists the available paths) or when a layer stack is too short.
    pub fn resolve(&self, paths: &[String]) -> Result<Vec<bool>> {
        self.check_stacks(paths)?;
        let selected = self.resolve_unchecked(paths);
        if !selected.iter().any(|&s| s) {
            return Err(TransferError::SelectorMatchedNothing {
                selector: self.to_string(),
                available: paths.to_vec(),
            });
        }
        Ok(selected)
    }

    fn check_stacks(&self, paths: &[String]) -> Result<()> {
        match self {
            Self::LastLayers { stack, count } | Self::FirstLayers { stack, count } => {
                let len = stack_len(stack, paths);
                if len == 0 {
                    return Err(TransferError::SelectorMatchedNothing {
                        selector: self.to_string(),
                        available: paths.to_vec(),
                    });
                }
                if *count > len {
                    return Err(TransferError::StackTooShort {
                        prefix: stack.clone(),
                        requested: *count,
                        available: len,
                    });
                }
                Ok(())
            }
            Self::Not(inner) => inner.check_stacks(paths),
            Self::Any(all) => all.iter().try_for_each(|s| s.check_stacks(paths)),
            Self::Globs(_) => Ok(()),
        }
    }

    fn resolve_unchecked(&self, paths: &[String]) -> Vec<bool> {
        match self {
            Self::Globs(patterns) => paths
                .iter()
                .map(|p| patterns.iter().any(|g| g.matches(p)))
                .collect(),
            Self::LastLayers { stack, count } => {
                let len = stack_len(stack, paths);
                let first = len.saturating_sub(*count);
                paths
                    .iter()
                    .map(|p| layer_index(stack, p).is_some_and(|i| i >= first))
                    .collect()
            }
            Self::FirstLayers { stack, count } => paths
                .iter()
                .map(|p| layer_index(stack, p).is_some_and(|i| i < *count))
                .collect(),
            Self::Not(inner) => inner
                .resolve_unchecked(paths)
                .into_iter()
                .map(|s| !s)
                .collect(),
            Self::Any(all) => {
                let mut out = vec![false; paths.len()];
                for s in all {
                    for (o, v) in out.iter_mut().zip(s.resolve_unchecked(paths)) {
                        *o |= v;
                    }
                }
                out
            }
        }
    }
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Globs(g) => {
                let texts: Vec<&str> = g.iter().map(GlobPattern::as_str).collect();
                write!(f, "{}", texts.join(" | "))
            }
            Self::LastLayers { stack, count } => write!(f, "last {count} layers of {stack}"),
            Self::FirstLayers { stack, count } => write!(f, "first {count} layers of {stack}"),
            Self::Not(s) => write!(f, "not ({s})"),
            Self::Any(all) => {
                let texts: Vec<String> = all.iter().map(|s| format!("({s})")).collect();
                write!(f, "{}", texts.join(" | "))
            }
        }
    }
}

impl TryFrom<&str> for Selector {
    type Error = TransferError;
    fn try_from(pattern: &str) -> Result<Self> {
        Self::glob(pattern)
    }
}

/// The index of the layer `path` belongs to in the stack at `stack`, if any.
fn layer_index(stack: &str, path: &str) -> Option<usize> {
    let rest = path.strip_prefix(stack)?.strip_prefix('.')?;
    rest.split('.').next()?.parse().ok()
}

/// The number of layers of the stack at `stack` (one more than the largest index seen).
fn stack_len(stack: &str, paths: &[String]) -> usize {
    paths
        .iter()
        .filter_map(|p| layer_index(stack, p))
        .max()
        .map_or(0, |m| m + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> Vec<String> {
        [
            "backbone.layers.0.weight",
            "backbone.layers.0.bias",
            "backbone.layers.1.weight",
            "backbone.layers.1.bias",
            "backbone.layers.2.weight",
            "backbone.layers.10.weight",
            "head.weight",
            "head.bias",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn picked(sel: &Selector) -> Vec<String> {
        let p = paths();
        let r = sel.resolve(&p).unwrap();
        p.into_iter()
            .zip(r)
            .filter(|(_, s)| *s)
            .map(|(p, _)| p)
            .collect()
    }

    #[test]
    fn globs_match_whole_paths_and_module_prefixes() {
        assert_eq!(
            picked(&Selector::glob("head").unwrap()),
            ["head.weight", "head.bias"]
        );
        assert_eq!(picked(&Selector::glob("*.bias").unwrap()).len(), 3);
        assert_eq!(
            picked(&Selector::glob("backbone.layers.[0-1].*").unwrap()),
            [
                "backbone.layers.0.weight",
                "backbone.layers.0.bias",
                "backbone.layers.1.weight",
                "backbone.layers.1.bias"
            ]
        );
        // `layers.1` must not catch `layers.10` through a prefix.
        assert_eq!(
            picked(&Selector::glob("backbone.layers.1").unwrap()),
            ["backbone.layers.1.weight", "backbone.layers.1.bias"]
        );
        assert_eq!(picked(&Selector::all()).len(), 8);
    }

    #[test]
    fn layer_stacks_count_from_either_end() {
        // Indices 0, 1, 2 and 10: the stack has 11 entries, the last two are 9 and 10.
        assert_eq!(
            picked(&Selector::last_layers("backbone.layers", 2)),
            ["backbone.layers.10.weight"]
        );
        assert_eq!(
            picked(&Selector::first_layers("backbone.layers", 2)).len(),
            4
        );
        let err = Selector::last_layers("backbone.layers", 12)
            .resolve(&paths())
            .unwrap_err();
        assert!(
            matches!(err, TransferError::StackTooShort { available: 11, .. }),
            "{err}"
        );
    }

    #[test]
    fn negation_and_union() {
        let not_head = Selector::glob("head").unwrap().negate();
        assert_eq!(picked(&not_head).len(), 6);
        let any = Selector::Any(vec![
            Selector::glob("head.weight").unwrap(),
            Selector::last_layers("backbone.layers", 1),
        ]);
        assert_eq!(picked(&any), ["backbone.layers.10.weight", "head.weight"]);
    }

    #[test]
    fn empty_match_lists_available_paths() {
        let err = Selector::glob("encoder.*")
            .unwrap()
            .resolve(&paths())
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("encoder.*"), "{msg}");
        assert!(msg.contains("backbone.layers.0.weight"), "{msg}");
        let err = Selector::last_layers("nope", 1)
            .resolve(&paths())
            .unwrap_err();
        assert!(matches!(err, TransferError::SelectorMatchedNothing { .. }));
    }

    #[test]
    fn malformed_pattern_is_an_error() {
        let err = Selector::glob("layers.[0-").unwrap_err();
        assert!(matches!(err, TransferError::InvalidPattern { .. }), "{err}");
        assert!(Selector::globs(Vec::<&str>::new()).is_err());
    }
}

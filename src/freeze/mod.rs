//! Freezing and unfreezing parameters by path, on any burn module.
//!
//! [`Freeze`] is implemented for every [`Module`], so `model.freeze_matching("backbone")`
//! works on your own types without any code of theirs changing. A frozen parameter has
//! `require_grad = false`: autodiff builds no graph through a fully frozen prefix, the
//! optimizer never sees it (no gradient, no weight decay), and it stays bitwise unchanged.
//!
//! For a part that must never change, whatever is done to the rest of the model, wrap it in
//! [`Frozen`]: it runs on the non-autodiff backend, so it cannot be trained, and BatchNorm
//! inside it keeps its running statistics. A BatchNorm frozen by path in this crate's CNNs
//! does the same by default ([`FrozenNorm`]).

mod frozen;
mod norm;
mod paths;
mod schedule;
mod selector;
mod summary;

pub use frozen::{Frozen, ToInner};
pub use norm::FrozenNorm;
pub use paths::{ParamInfo, is_buffer_path, materialize};
pub use schedule::{UnfreezeSchedule, UnfreezeStep};
pub use selector::{GlobPattern, Selector};
pub use summary::ParamSummary;

use crate::error::Result;
use burn::module::Module;
use burn::prelude::Backend;
pub(crate) use paths::ParamCollector;
use paths::RequireGradSetter;

/// Anything that can be turned into a [`Selector`]: a selector, or a glob pattern (`&str`).
pub trait IntoSelector {
    /// The selector; an error for a malformed pattern.
    fn into_selector(self) -> Result<Selector>;
}

impl IntoSelector for Selector {
    fn into_selector(self) -> Result<Selector> {
        Ok(self)
    }
}

impl IntoSelector for &Selector {
    fn into_selector(self) -> Result<Selector> {
        Ok(self.clone())
    }
}

impl IntoSelector for &str {
    fn into_selector(self) -> Result<Selector> {
        Selector::glob(self)
    }
}

impl IntoSelector for &String {
    fn into_selector(self) -> Result<Selector> {
        Selector::glob(self)
    }
}

/// Freeze and unfreeze parameters of any burn [`Module`] by path.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::{Linear, LinearConfig};
/// use burn_transfer::freeze::Freeze;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let layer: Linear<B> = LinearConfig::new(4, 2).init(&device);
/// let layer = layer.freeze_matching("weight").unwrap();
/// let summary = layer.param_summary();
/// assert_eq!(summary.trainable(), 2); // only the bias
/// assert!(layer.freeze_matching("nothing.here").is_err());
/// ```
pub trait Freeze<B: Backend>: Module<B> + Sized {
    /// Every float tensor with its path, shape and trainable flag.
    fn param_summary(&self) -> ParamSummary {
        ParamSummary {
            entries: ParamCollector::collect(self),
        }
    }

    /// The paths of all float tensors, in visiting order.
    fn param_paths(&self) -> Vec<String> {
        ParamCollector::collect(self)
            .into_iter()
            .map(|p| p.path)
            .collect()
    }

    /// Freezes every parameter.
    fn freeze(self) -> Self {
        let n = ParamCollector::collect(&self).len();
        RequireGradSetter::apply(self, &vec![true; n], false)
    }

    /// Makes every parameter trainable (buffers stay untouched).
    fn unfreeze(self) -> Self {
        let n = ParamCollector::collect(&self).len();
        RequireGradSetter::apply(self, &vec![true; n], true)
    }

    /// Freezes the parameters the selector picks; an error if it picks none.
    fn freeze_matching(self, selector: impl IntoSelector) -> Result<Self> {
        set_matching(self, selector.into_selector()?, false)
    }

    /// Unfreezes the parameters the selector picks; an error if it picks none.
    fn unfreeze_matching(self, selector: impl IntoSelector) -> Result<Self> {
        set_matching(self, selector.into_selector()?, true)
    }

    /// Freezes everything under `stack` (a `Vec` of layers, e.g. `encoder.layers`) except
    /// its last `k` layers, leaving the rest of the model as it was.
    fn freeze_all_but_last(self, stack: &str, k: usize) -> Result<Self> {
        let paths = self.param_paths();
        let last = Selector::last_layers(stack, k);
        // Validates the stack length (k may be 0: then the whole stack freezes).
        if k > 0 {
            last.resolve(&paths)?;
        }
        let whole = Selector::glob(stack)?.resolve(&paths)?;
        let keep = last.resolve_or_none(&paths);
        let selected: Vec<bool> = whole.iter().zip(&keep).map(|(w, k)| *w && !k).collect();
        Ok(RequireGradSetter::apply(self, &selected, false))
    }
}

impl<B: Backend, M: Module<B>> Freeze<B> for M {}

fn set_matching<B: Backend, M: Module<B>>(
    module: M,
    selector: Selector,
    require_grad: bool,
) -> Result<M> {
    let paths: Vec<String> = ParamCollector::collect(&module)
        .into_iter()
        .map(|p| p.path)
        .collect();
    let selected = selector.resolve(&paths)?;
    Ok(RequireGradSetter::apply(module, &selected, require_grad))
}

impl Selector {
    /// Like [`Selector::resolve`], but an empty selection is not an error.
    fn resolve_or_none(&self, paths: &[String]) -> Vec<bool> {
        self.resolve(paths)
            .unwrap_or_else(|_| vec![false; paths.len()])
    }
}

//! Walking a module's parameters with their paths.
//!
//! burn's derive calls `enter_module(field)` / `exit_module(field)` around every field (and
//! `Vec` index), so a stack of names gives each parameter's path as a user reads it.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::prelude::*;
use std::collections::HashSet;

/// Last path segments of tensors that burn stores beside parameters but never trains
/// (BatchNorm's running statistics). They appear in visitors like parameters, so they are
/// told apart by name; making them trainable would let an optimizer overwrite them.
const BUFFER_NAMES: [&str; 2] = ["running_mean", "running_var"];

/// Whether the path names a buffer (running statistic) rather than a parameter.
pub fn is_buffer_path(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    BUFFER_NAMES.contains(&last)
}

/// What is known of one float tensor of a module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamInfo {
    /// Dotted path from the root module, e.g. `layers.0.weight`.
    pub path: String,
    /// burn's parameter id (stable across optimizer steps).
    pub id: ParamId,
    /// Tensor shape.
    pub shape: Vec<usize>,
    /// Whether gradients are computed for it (always false on a non-autodiff backend).
    pub trainable: bool,
    /// A running statistic rather than a learnable parameter.
    pub buffer: bool,
    /// The type of the module that holds it (`Linear`, `Conv2d`, `Embedding`, ...).
    pub owner: String,
}

impl ParamInfo {
    /// Number of scalar values.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Tracks the current path (and the type of each enclosing module) while a visitor or
/// mapper walks a module.
#[derive(Default)]
pub(crate) struct PathStack(Vec<(String, String)>);

impl PathStack {
    pub(crate) fn enter(&mut self, name: &str, container_type: &str) {
        self.0.push((name.to_string(), container_type.to_string()));
    }
    pub(crate) fn exit(&mut self) {
        self.0.pop();
    }
    pub(crate) fn current(&self) -> String {
        let names: Vec<&str> = self.0.iter().map(|(n, _)| n.as_str()).collect();
        names.join(".")
    }
    /// The type of the struct whose field is being visited (`Struct:Linear` → `Linear`).
    pub(crate) fn owner(&self) -> String {
        self.0
            .last()
            .map(|(_, c)| c.strip_prefix("Struct:").unwrap_or(c).to_string())
            .unwrap_or_default()
    }
}

/// Collects [`ParamInfo`] for every float tensor of a module, in visiting order.
pub(crate) struct ParamCollector {
    stack: PathStack,
    pub(crate) params: Vec<ParamInfo>,
}

impl ParamCollector {
    pub(crate) fn collect<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamInfo> {
        let mut c = Self {
            stack: PathStack::default(),
            params: Vec::new(),
        };
        module.visit(&mut c);
        c.params
    }
}

impl<B: Backend> ModuleVisitor<B> for ParamCollector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let path = self.stack.current();
        self.params.push(ParamInfo {
            buffer: is_buffer_path(&path),
            id: param.id,
            shape: param.lazy_shape().to_vec(),
            trainable: param.is_require_grad(),
            owner: self.stack.owner(),
            path,
        });
    }
}

/// Initialises every lazily initialised parameter of `module` in place.
///
/// burn creates parameters lazily, and cloning a module whose parameters are not yet
/// initialised gives clones that each draw *their own* random values on first use. Every
/// constructor of this crate, and every place where it copies a model, calls this first, so
/// a clone is always a copy.
pub fn materialize<B: Backend, M: Module<B>>(module: &M) {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

/// Sets `require_grad` on the parameters whose path is selected.
///
/// Paths rather than visiting positions identify them, so a module whose `map` differs from
/// its `visit` (such as [`Frozen`](super::Frozen)) cannot shift the selection.
/// Buffers are never made trainable: an optimizer would then treat them as weights.
pub(crate) struct RequireGradSetter {
    stack: PathStack,
    selected: HashSet<String>,
    require_grad: bool,
}

impl RequireGradSetter {
    /// Applies the flag to each parameter whose entry in `selected` (parallel to the
    /// collector's visiting order) is true.
    pub(crate) fn apply<B: Backend, M: Module<B>>(
        module: M,
        selected: &[bool],
        require_grad: bool,
    ) -> M {
        let selected = ParamCollector::collect(&module)
            .into_iter()
            .zip(selected)
            .filter(|(_, s)| **s)
            .map(|(p, _)| p.path)
            .collect();
        let mut setter = Self {
            stack: PathStack::default(),
            selected,
            require_grad,
        };
        module.map(&mut setter)
    }
}

impl<B: Backend> ModuleMapper<B> for RequireGradSetter {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let path = self.stack.current();
        if !self.selected.contains(&path) || (self.require_grad && is_buffer_path(&path)) {
            return param;
        }
        param.set_require_grad(self.require_grad)
    }
}

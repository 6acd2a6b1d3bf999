//! A module that is frozen by construction: it always runs on the non-autodiff backend.

use burn::module::{
    AutodiffModule, Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper,
    ModuleVisitor,
};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{BasicAutodiffOps, TensorKind};

/// Wraps a module so that it can never be trained.
///
/// Its forward pass runs through the module's inner form ([`AutodiffModule::valid`]) on
/// `B::InnerBackend` and lifts the result back as a constant. So:
/// - autodiff records nothing for it: no graph, no activation memory, no gradient;
/// - BatchNorm inside it uses, and never updates, its running statistics, and dropout is off;
/// - even `unfreeze()` cannot make it trainable: `map` re-freezes every parameter.
///
/// Use it for a backbone whose features you only read (head-only fine-tuning). Weights
/// still load and save with the rest of the model.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn_transfer::freeze::{Freeze, Frozen};
/// use burn_transfer::backbone::MlpBackbone;
///
/// type B = Autodiff<NdArray>;
/// let body: MlpBackbone<B> = MlpBackbone::new(&[8, 16], &Default::default()).unwrap();
/// let frozen = Frozen::new(body).unfreeze();
/// assert_eq!(frozen.param_summary().trainable(), 0);
/// ```
#[derive(Clone, Debug)]
pub struct Frozen<M> {
    module: M,
}

impl<M> Frozen<M> {
    /// Freezes `module` for good.
    pub fn new<B: AutodiffBackend>(module: M) -> Self
    where
        M: AutodiffModule<B>,
    {
        super::materialize(&module);
        Self {
            module: module.no_grad(),
        }
    }

    /// The wrapped module (still frozen).
    pub fn get(&self) -> &M {
        &self.module
    }

    /// Gives the module back, still with `require_grad = false` on every parameter; call
    /// `unfreeze()` on it to train it.
    pub fn into_inner(self) -> M {
        self.module
    }
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> Module<B> for Frozen<M> {
    type Record = M::Record;

    fn collect_devices(&self, devices: Devices<B>) -> Devices<B> {
        self.module.collect_devices(devices)
    }

    fn fork(self, device: &B::Device) -> Self {
        Self {
            module: self.module.fork(device).no_grad(),
        }
    }

    fn to_device(self, device: &B::Device) -> Self {
        Self {
            module: self.module.to_device(device).no_grad(),
        }
    }

    fn visit<V: ModuleVisitor<B>>(&self, visitor: &mut V) {
        self.module.visit(visitor)
    }

    fn map<Mp: ModuleMapper<B>>(self, mapper: &mut Mp) -> Self {
        // Weight loading goes through `map` too, so it is delegated; whatever the mapper did
        // to the gradient flags is undone.
        Self {
            module: self.module.map(mapper).no_grad(),
        }
    }

    fn load_record(self, record: Self::Record) -> Self {
        Self {
            module: self.module.load_record(record).no_grad(),
        }
    }

    fn into_record(self) -> Self::Record {
        self.module.into_record()
    }
}

impl<B: AutodiffBackend, M: AutodiffModule<B>> AutodiffModule<B> for Frozen<M> {
    // The inner (evaluation) form of a frozen module is just the module: off autodiff there
    // is nothing to guard against.
    type InnerModule = M::InnerModule;

    fn valid(&self) -> Self::InnerModule {
        self.module.valid()
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        Self {
            module: M::from_inner(module).no_grad(),
        }
    }
}

impl<M: ModuleDisplayDefault> ModuleDisplayDefault for Frozen<M> {
    fn content(&self, content: Content) -> Option<Content> {
        self.module.content(content)
    }

    fn num_params(&self) -> usize {
        self.module.num_params()
    }
}

impl<M: ModuleDisplay> ModuleDisplay for Frozen<M> {}

/// Inputs that can be moved from an autodiff backend to its inner backend, so that a
/// [`Frozen`] module can run there.
pub trait ToInner<B: AutodiffBackend> {
    /// The same input on `B::InnerBackend`.
    type Inner;
    /// Drops the autodiff wrapper (no copy of the data).
    fn to_inner(self) -> Self::Inner;
}

impl<B, const D: usize, K> ToInner<B> for Tensor<B, D, K>
where
    B: AutodiffBackend,
    K: BasicAutodiffOps<B> + TensorKind<B>,
{
    type Inner = Tensor<B::InnerBackend, D, K::InnerKind>;
    fn to_inner(self) -> Self::Inner {
        self.inner()
    }
}

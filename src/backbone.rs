//! Backbones: the pretrained body of a network, from input to a feature vector.

use burn::module::{Module, ModuleDisplay};
use burn::nn::{Linear, LinearConfig};
use burn::prelude::*;

use crate::error::{Result, TransferError};
use crate::freeze::{Frozen, ToInner};
use crate::layer_outputs::{LayerOutputs, LayerRequest, LayerSpec};
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;

/// The body of a transfer model: turns an input into one feature vector per sample.
///
/// Implement it for your own network (a ResNet trunk, a BERT encoder with pooling, ...) and
/// it composes with any [`Head`](crate::head::Head) in a
/// [`TransferModel`](crate::head::TransferModel), with [`Freeze`](crate::freeze::Freeze) and
/// with [`Frozen`].
pub trait Backbone<B: Backend>: Module<B> + ModuleDisplay {
    /// What the backbone reads (an image batch, token ids, ...).
    type Input: 'static;

    /// Features of shape `[batch, feature_dim]`.
    fn features(&self, input: Self::Input) -> Tensor<B, 2>;

    /// Width of the feature vector: the input width a head must have.
    fn feature_dim(&self) -> usize;

    /// Checks that `input` has a shape this backbone takes, before any computation, with a
    /// message that names what differs. The default accepts everything.
    fn check_input(&self, input: &Self::Input) -> Result<()> {
        let _ = input;
        Ok(())
    }

    /// The intermediate outputs this backbone exposes for feature distillation
    /// ([`LayerSpec`]); none by default.
    fn layer_spec(&self) -> LayerSpec {
        LayerSpec::default()
    }

    /// The features together with the intermediate outputs `request` asks for; by default
    /// the features and nothing else.
    fn features_with_layers(
        &self,
        input: Self::Input,
        request: LayerRequest,
    ) -> (Tensor<B, 2>, LayerOutputs<B>) {
        let _ = request;
        (self.features(input), LayerOutputs::default())
    }
}

/// A stack of `Linear` + ReLU layers: a small, fully connected backbone for tabular data and
/// small images (flattened), used by the examples and the benchmarks.
///
/// Its layers are at `layers.N`, so `Selector::last_layers("layers", k)` picks the top `k`.
#[derive(Module, Debug)]
pub struct MlpBackbone<B: Backend> {
    /// The linear layers, each followed by ReLU (fused into the layer's pass:
    /// [`crate::kernels`]).
    pub layers: Vec<Linear<B>>,
}

impl<B: Backend> MlpBackbone<B> {
    /// A backbone with layer widths `widths` (input first): `[64, 128, 64]` gives two
    /// layers, 64→128 and 128→64, and 64 features. Fewer than two widths, or a zero width,
    /// is an error.
    pub fn new(widths: &[usize], device: &B::Device) -> Result<Self> {
        if widths.len() < 2 || widths.contains(&0) {
            return Err(TransferError::config(
                "MlpBackbone widths",
                format!("{widths:?}"),
                "give at least [input, output], every width ≥ 1",
            ));
        }
        let layers = widths
            .windows(2)
            .map(|w| LinearConfig::new(w[0], w[1]).init(device))
            .collect();
        let backbone = Self { layers };
        crate::freeze::materialize(&backbone);
        Ok(backbone)
    }
}

impl<B: Backend> MlpBackbone<B> {
    /// A backbone from existing layers (e.g. copied or pruned from a teacher); the widths
    /// must chain.
    pub fn from_layers(layers: Vec<Linear<B>>) -> Result<Self> {
        if layers.is_empty() {
            return Err(TransferError::config(
                "layers",
                "[]",
                "a backbone needs at least one layer",
            ));
        }
        for (i, pair) in layers.windows(2).enumerate() {
            let out = pair[0].weight.dims()[1];
            let next_in = pair[1].weight.dims()[0];
            if out != next_in {
                return Err(TransferError::WidthMismatch {
                    what: format!("layer {i} output vs layer {} input", i + 1),
                    expected: out,
                    actual: next_in,
                    hint: "consecutive layers must chain: pick layers whose widths match".into(),
                });
            }
        }
        let backbone = Self { layers };
        crate::freeze::materialize(&backbone);
        Ok(backbone)
    }
}

impl<B: Backend> Backbone<B> for MlpBackbone<B> {
    type Input = Tensor<B, 2>;

    fn features(&self, input: Tensor<B, 2>) -> Tensor<B, 2> {
        self.layers
            .iter()
            .fold(input, |x, layer| crate::kernels::linear_relu(layer, x))
    }

    fn check_input(&self, input: &Tensor<B, 2>) -> Result<()> {
        let [rows, width] = input.dims();
        let expected = self.layers.first().map_or(0, |l| l.weight.dims()[0]);
        if rows == 0 {
            return Err(TransferError::BatchShape("the inputs have no rows".into()));
        }
        if width != expected {
            return Err(TransferError::BatchShape(format!(
                "the inputs are [{rows}, {width}] but the backbone's first layer takes {expected} features; give each sample {expected} values"
            )));
        }
        Ok(())
    }

    fn feature_dim(&self) -> usize {
        self.layers
            .last()
            .map(|l| l.weight.dims()[1])
            .unwrap_or_default()
    }

    /// Hidden state 0 is the input, `k` the output of layer `k` (after its ReLU), each one
    /// position long.
    fn layer_spec(&self) -> LayerSpec {
        let input = self.layers.first().map(|l| l.weight.dims()[0]);
        LayerSpec {
            hidden_widths: input
                .into_iter()
                .chain(self.layers.iter().map(|l| l.weight.dims()[1]))
                .collect(),
            ..LayerSpec::default()
        }
    }

    fn features_with_layers(
        &self,
        input: Tensor<B, 2>,
        request: LayerRequest,
    ) -> (Tensor<B, 2>, LayerOutputs<B>) {
        if !request.hidden {
            return (self.features(input), LayerOutputs::default());
        }
        let as_sequence = |x: &Tensor<B, 2>| x.clone().unsqueeze_dim::<3>(1);
        let mut hidden = vec![as_sequence(&input)];
        let features = self.layers.iter().fold(input, |x, layer| {
            let y = crate::kernels::linear_relu(layer, x);
            hidden.push(as_sequence(&y));
            y
        });
        let layers = LayerOutputs {
            hidden,
            ..LayerOutputs::default()
        };
        (features, layers)
    }
}

/// A frozen body runs on the inner backend: no graph, no gradient, BatchNorm in inference
/// mode; its features come back as constants of the autodiff backend.
impl<B, M> Backbone<B> for Frozen<M>
where
    B: AutodiffBackend,
    M: AutodiffModule<B> + Backbone<B>,
    M::Input: ToInner<B>,
    M::InnerModule: Backbone<B::InnerBackend, Input = <M::Input as ToInner<B>>::Inner>,
{
    type Input = M::Input;

    fn features(&self, input: Self::Input) -> Tensor<B, 2> {
        Tensor::from_inner(self.get().valid().features(input.to_inner()))
    }

    fn feature_dim(&self) -> usize {
        self.get().feature_dim()
    }

    fn check_input(&self, input: &Self::Input) -> Result<()> {
        self.get().check_input(input)
    }

    fn layer_spec(&self) -> LayerSpec {
        self.get().layer_spec()
    }

    fn features_with_layers(
        &self,
        input: Self::Input,
        request: LayerRequest,
    ) -> (Tensor<B, 2>, LayerOutputs<B>) {
        let (features, layers) = self
            .get()
            .valid()
            .features_with_layers(input.to_inner(), request);
        (
            Tensor::from_inner(features),
            LayerOutputs::from_inner(layers),
        )
    }
}

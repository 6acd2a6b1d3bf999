//! A teacher on another backend or device than the student: a big teacher on the GPU for a
//! student trained on the CPU, a teacher on the CPU while the GPU trains the student, or a
//! teacher on a second GPU.

use crate::cross_backend::CrossBackend;
use crate::error::Result;
use crate::generation::GenerationConfig;
use crate::layer_outputs::{LayerOutputs, LayerRequest, LayerSpec};
use crate::task::{CausalLm, Classifier};
use burn::module::{
    Content, Devices, EmptyRecord, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper,
    ModuleVisitor,
};
use burn::prelude::*;
use core::marker::PhantomData;

/// Teacher `M`, which lives on backend `T`, seen from backend `B` (the student's inner
/// backend, what a [`Distiller`](super::Distiller) holds its teacher on): inputs are copied
/// to the teacher's device, its outputs copied back to the input's device.
///
/// To the distiller it is a parameterless module on `B`, so the student's optimizer never
/// sees the teacher's weights, and the outputs come back as new tensors made from data, so no
/// gradient path leads to the teacher, whatever `T` is. Handing it to an optimizer for the
/// student's backend does not compile:
///
/// ```compile_fail,E0277
/// use burn::backend::{Autodiff, NdArray};
/// use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
/// use burn_transfer::distill::TeacherOn;
/// use burn_transfer::prelude::*;
/// type B = Autodiff<NdArray>;
/// type Net<Bk> = TransferModel<Bk, MlpBackbone<Bk>, LinearHead<Bk>>;
///
/// let device = Default::default();
/// let teacher: Net<NdArray> =
///     TransferModel::with_linear_head(MlpBackbone::new(&[4, 8], &device).unwrap(), 3, &device).unwrap();
/// let remote: TeacherOn<B, NdArray, Net<NdArray>> = TeacherOn::new(teacher);
/// let mut optim = AdamWConfig::new().init::<B, TeacherOn<B, NdArray, Net<NdArray>>>();
/// // error[E0277]: the trait bound `TeacherOn<..>: AutodiffModule<..>` is not satisfied
/// let _ = optim.step(1e-3, remote, GradientsParams::new());
/// ```
///
/// Build it with [`TeacherOn::new`] from a model already on its device (for a trained
/// autodiff model, its `valid()`), and give it to [`Distiller::new`](super::Distiller::new):
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn_transfer::distill::{Distiller, TeacherOn};
/// use burn_transfer::loss::DistillLossConfig;
/// use burn_transfer::prelude::*;
/// type B = Autodiff<NdArray>;
/// // Here both sides are NdArray; with the `wgpu` feature the teacher would be a
/// // `TransferModel<Wgpu, ..>` built on a `WgpuDevice`.
/// let device = Default::default();
/// let teacher: TransferModel<NdArray, MlpBackbone<NdArray>, LinearHead<NdArray>> =
///     TransferModel::with_linear_head(MlpBackbone::new(&[4, 8], &device)?, 3, &device)?;
/// let distiller = Distiller::new(
///     TeacherOn::<NdArray, _, _>::new(teacher),
///     DistillLossConfig::new(),
///     FineTuner::<B>::new(),
/// )?;
/// # Ok::<(), burn_transfer::TransferError>(())
/// ```
#[derive(Clone, Debug)]
pub struct TeacherOn<B: Backend, T: Backend, M> {
    model: M,
    device: T::Device,
    _student: PhantomData<fn() -> B>,
}

impl<B: Backend, T: Backend, M: Module<T>> TeacherOn<B, T, M> {
    /// Wraps `model`, which runs on the device its parameters are on (the backend's default
    /// device for a model without parameters).
    pub fn new(model: M) -> Self {
        let device = model.devices().into_iter().next().unwrap_or_default();
        // Lazy parameters would otherwise be initialised inside the first step.
        crate::freeze::materialize(&model);
        Self {
            model,
            device,
            _student: PhantomData,
        }
    }

    /// The teacher on its own backend.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The device the teacher runs on.
    pub fn device(&self) -> &T::Device {
        &self.device
    }
}

// A module without parameters on `B`: the teacher's own parameters live on `T`, out of
// reach of anything that visits or maps the student's side.
impl<B: Backend, T: Backend, M: Module<T>> Module<B> for TeacherOn<B, T, M> {
    type Record = EmptyRecord;

    fn visit<V: ModuleVisitor<B>>(&self, _visitor: &mut V) {}

    fn map<Mp: ModuleMapper<B>>(self, _mapper: &mut Mp) -> Self {
        self
    }

    fn load_record(self, _record: Self::Record) -> Self {
        self
    }

    fn into_record(self) -> Self::Record {
        EmptyRecord::new()
    }

    fn to_device(self, _device: &B::Device) -> Self {
        self
    }

    fn fork(self, _device: &B::Device) -> Self {
        self
    }

    fn collect_devices(&self, devices: Devices<B>) -> Devices<B> {
        devices
    }
}

impl<B: Backend, T: Backend, M> ModuleDisplayDefault for TeacherOn<B, T, M> {
    fn content(&self, content: Content) -> Option<Content> {
        content
            .add_formatted(&format!("teacher on {}", T::name(&self.device)))
            .optional()
    }
}

impl<B: Backend, T: Backend, M> ModuleDisplay for TeacherOn<B, T, M> {}

impl<B, T, M> Classifier<B> for TeacherOn<B, T, M>
where
    B: Backend,
    T: Backend,
    M: Classifier<T>,
    M::Input: CrossBackend<T>,
    <M::Input as CrossBackend<T>>::On<B>: CrossBackend<B, On<T> = M::Input> + 'static,
{
    type Input = <M::Input as CrossBackend<T>>::On<B>;

    fn logits(&self, input: Self::Input) -> Tensor<B, 2> {
        let device = input.device();
        let logits = self.model.logits(input.to_backend::<T>(&self.device));
        logits.to_backend::<B>(&device)
    }

    fn layer_spec(&self) -> LayerSpec {
        self.model.layer_spec()
    }

    /// The teacher's intermediate outputs come back through their data too.
    fn logits_with_layers(
        &self,
        input: Self::Input,
        request: LayerRequest,
    ) -> (Tensor<B, 2>, LayerOutputs<B>) {
        let device = input.device();
        let (logits, layers) = self
            .model
            .logits_with_layers(input.to_backend::<T>(&self.device), request);
        (
            logits.to_backend::<B>(&device),
            layers.to_backend::<B>(&device),
        )
    }
}

impl<B, T, M> CausalLm<B> for TeacherOn<B, T, M>
where
    B: Backend,
    T: Backend,
    M: CausalLm<T>,
{
    fn vocab_size(&self) -> usize {
        self.model.vocab_size()
    }

    fn next_token_logits(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 3>> {
        let device = CrossBackend::device(&input_ids);
        let logits = self.model.next_token_logits(
            input_ids.to_backend::<T>(&self.device),
            attention_mask.to_backend::<T>(&self.device),
        )?;
        Ok(logits.to_backend::<B>(&device))
    }

    /// Generation runs wholly on the teacher's side (the model's own, e.g. GPT-2's
    /// key/value cache); only token ids cross.
    fn generate(&self, prompts: &[Vec<u32>], config: &GenerationConfig) -> Result<Vec<Vec<u32>>> {
        self.model.generate(prompts, config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::MlpBackbone;
    use crate::head::{LinearHead, TransferModel};
    use burn::backend::NdArray;

    type Net = TransferModel<NdArray, MlpBackbone<NdArray>, LinearHead<NdArray>>;

    #[test]
    fn gives_the_models_logits_and_shows_no_parameters() {
        let device = Default::default();
        <NdArray as Backend>::seed(&device, 3);
        let model: Net = TransferModel::with_linear_head(
            MlpBackbone::new(&[4, 8], &device).unwrap(),
            3,
            &device,
        )
        .unwrap();
        let x = Tensor::<NdArray, 2>::random([5, 4], burn::tensor::Distribution::Default, &device);
        let remote = TeacherOn::<NdArray, NdArray, Net>::new(model.clone());
        remote
            .logits(x.clone())
            .into_data()
            .assert_eq(&model.logits(x).into_data(), true);
        assert_eq!(Module::<NdArray>::num_params(&remote), 0);
        assert!(Module::<NdArray>::num_params(&model) > 0);
    }

    #[test]
    fn gives_the_models_layer_outputs_and_spec() {
        let device = Default::default();
        <NdArray as Backend>::seed(&device, 4);
        let model: Net = TransferModel::with_linear_head(
            MlpBackbone::new(&[4, 8, 6], &device).unwrap(),
            3,
            &device,
        )
        .unwrap();
        let remote = TeacherOn::<NdArray, NdArray, Net>::new(model.clone());
        assert_eq!(remote.layer_spec(), model.layer_spec());
        assert_eq!(remote.layer_spec().hidden_widths, [4, 8, 6]);
        let x = Tensor::<NdArray, 2>::random([5, 4], burn::tensor::Distribution::Default, &device);
        let request = LayerRequest {
            hidden: true,
            ..LayerRequest::default()
        };
        let (logits, layers) = remote.logits_with_layers(x.clone(), request);
        let (want_logits, want) = model.logits_with_layers(x, request);
        logits.into_data().assert_eq(&want_logits.into_data(), true);
        assert_eq!(layers.hidden.len(), 3);
        for (got, want) in layers.hidden.into_iter().zip(want.hidden) {
            got.into_data().assert_eq(&want.into_data(), true);
        }
    }
}

use super::*;
use crate::adapter::{LoraConfig, LoraModel};
use crate::freeze::Freeze;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Distribution, Tolerance};

type N = NdArray;
type A = Autodiff<NdArray>;

fn tiny() -> ViTConfig {
    ViTConfig::vit_base_patch16_224()
        .for_images(16, 4, 3)
        .shallower(2)
        .narrower(16, 4)
}

fn images<B: Backend>(n: usize, h: usize, w: usize) -> Tensor<B, 4> {
    Tensor::random(
        [n, 3, h, w],
        Distribution::Normal(0.0, 1.0),
        &Default::default(),
    )
}

/// The fused attention (no maps asked for) and the tensor-operation one (maps kept) give
/// the same outputs.
#[test]
fn outputs_agree_with_and_without_attention_maps() {
    let vit = ViT::<N>::new(&tiny(), true, &Default::default()).unwrap();
    let x = images::<N>(2, 16, 16);
    let plain = vit.forward(x.clone(), false);
    let mapped = vit.forward(x, true);
    assert!(plain.attentions.is_empty());
    assert_eq!(mapped.attentions.len(), 2);
    assert_eq!(mapped.attentions[1].dims(), [2, 4, 17, 17]);
    assert_eq!(plain.hidden_states.len(), 3);
    let tolerance = Tolerance::rel_abs(1e-4, 1e-5);
    plain
        .last_hidden_state
        .into_data()
        .assert_approx_eq::<f32>(&mapped.last_hidden_state.into_data(), tolerance);
    let pooled = plain.pooler_output.unwrap();
    assert_eq!(pooled.dims(), [2, 16]);
    // tanh output
    assert!(pooled.abs().max().into_scalar() <= 1.0);
}

/// Bigger and non-square images run with resampled position embeddings, and the
/// gradient reaches the trained embeddings through the resampling.
#[test]
fn other_image_sizes_train_the_position_embeddings() {
    let vit = ViT::<A>::new(&tiny(), false, &Default::default()).unwrap();
    let x = images::<A>(2, 24, 20);
    vit.check_images(&x).unwrap();
    let out = vit.forward(x, false);
    assert_eq!(out.last_hidden_state.dims(), [2, 1 + 6 * 5, 16]);
    let grads = out.last_hidden_state.powi_scalar(2).mean().backward();
    let grad = vit.embeddings.position_embeddings.grad(&grads).unwrap();
    assert_eq!(grad.dims(), [1, 17, 16]);
    assert!(grad.abs().sum().into_scalar() > 0.0);
    assert!(vit.embeddings.cls_token.grad(&grads).is_some());
}

#[test]
fn image_batches_are_checked_before_they_run() {
    let vit = ViT::<N>::new(&tiny(), false, &Default::default()).unwrap();
    for (x, what) in [
        (
            Tensor::<N, 4>::zeros([0, 3, 16, 16], &Default::default()),
            "no images",
        ),
        (
            Tensor::zeros([1, 1, 16, 16], &Default::default()),
            "3 channels",
        ),
        (
            Tensor::zeros([1, 3, 3, 16], &Default::default()),
            "4×4 patch",
        ),
    ] {
        let err = vit.check_input(&x).unwrap_err().to_string();
        assert!(err.contains(what), "{err}");
    }
    assert!(ViT::<N>::new(&tiny().narrower(18, 4), false, &Default::default()).is_err());
}

/// A student copies the embeddings and the chosen layers of its teacher.
#[test]
fn keep_layers_copies_the_chosen_layers() {
    let teacher = ViT::<N>::new(&tiny().shallower(4), false, &Default::default()).unwrap();
    let student = teacher.keep_layers(&[1, 3]).unwrap();
    assert_eq!(student.num_layers(), 2);
    let weight = |m: &ViT<N>, i: usize| {
        m.encoder.layer[i]
            .intermediate
            .dense
            .weight
            .val()
            .into_data()
    };
    weight(&student, 1).assert_eq(&weight(&teacher, 3), true);
    assert!(teacher.keep_layers(&[]).is_err());
    let err = teacher.keep_layers(&[0, 4]).unwrap_err().to_string();
    assert!(err.contains("encoder.layer"), "{err}");
}

/// LoRA finds the query and value projections by path and trains only its factors.
#[test]
fn lora_adapts_the_attention_projections_by_path() {
    let device = Default::default();
    let base = ViT::<A>::new(&tiny(), false, &device).unwrap();
    let lora = LoraModel::new(
        base,
        "a",
        LoraConfig::new(
            2,
            4.0,
            ["*.attention.attention.query", "*.attention.attention.value"],
        ),
    )
    .unwrap();
    assert_eq!(lora.active().unwrap().targets().len(), 4);
    // A [2, 16] and B [16, 2] for each of the 4 projections.
    assert_eq!(lora.param_summary().trainable(), 4 * (2 * 16 + 16 * 2));
    let features = lora.features(images::<A>(1, 16, 16));
    let grads = features.powi_scalar(2).mean().backward();
    assert!(lora.adapters[0].weights[0].lora_a.grad(&grads).is_some());
    let query = &lora.base.encoder.layer[0].attention.attention.query;
    assert!(query.weight.grad(&grads).is_none());
}

/// The initialisation is transformers': biases 0, weights with the configured spread.
#[test]
fn initialisation_follows_transformers() {
    let mut config = tiny();
    config.initializer_range = 0.5;
    let vit = ViT::<N>::new(&config, false, &Default::default()).unwrap();
    let layer = &vit.encoder.layer[0];
    let bias = layer.intermediate.dense.bias.as_ref().unwrap().val();
    assert_eq!(bias.abs().sum().into_scalar(), 0.0);
    let std = layer
        .intermediate
        .dense
        .weight
        .val()
        .var(0)
        .mean()
        .sqrt()
        .into_scalar();
    assert!((std - 0.5).abs() < 0.1, "{std}");
    let mut no_bias = tiny();
    no_bias.qkv_bias = false;
    let vit = ViT::<N>::new(&no_bias, false, &Default::default()).unwrap();
    assert!(vit.encoder.layer[0].attention.attention.key.bias.is_none());
}

//! ViT against transformers: tiny random `ViTForImageClassification` and `ViTModel`
//! checkpoints written by transformers itself (`scripts/make_vit_fixture.py`, committed in
//! `tests/fixtures/vit-tiny/`) load strictly, in the hub's names and in transformers 5's, and
//! give transformers' logits, hidden states, attention maps and pooler output, at the trained
//! image size and with interpolated position embeddings at another.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::Tolerance;
use burn_transfer::backbone::Backbone;
use burn_transfer::models::vit::{ViT, ViTConfig};
use burn_transfer::task::Classifier;
use serde_json::Value;
use std::path::PathBuf;

type B = burn::backend::NdArray;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vit-tiny")
}

/// One float32 tensor of `reference.safetensors` as burn data.
fn expected(name: &str) -> TensorData {
    let bytes = std::fs::read(fixture().join("reference.safetensors")).unwrap();
    crate::common::reference_tensor(&bytes, name)
}

fn input(name: &str) -> Tensor<B, 4> {
    Tensor::from_data(expected(name), &Default::default())
}

fn close<const D: usize>(got: Tensor<B, D>, name: &str) {
    got.into_data()
        .assert_approx_eq::<f32>(&expected(name), Tolerance::rel_abs(1e-4, 1e-4));
}

#[test]
fn the_classifier_gives_transformers_outputs() {
    let (model, report) = ViT::<B>::classifier_from_pretrained(fixture(), &Default::default())
        .expect("the fixture loads strictly");
    assert!(report.is_clean(), "{report}");
    let pixels = input("pixel_values");
    close(model.logits(pixels.clone()), "logits");
    let out = model.backbone.forward(pixels, true);
    close(out.last_hidden_state, "last_hidden_state");
    assert_eq!(out.hidden_states.len(), 3);
    for (i, h) in out.hidden_states.into_iter().enumerate() {
        close(h, &format!("hidden_states.{i}"));
    }
    assert_eq!(out.attentions.len(), 2);
    for (i, a) in out.attentions.into_iter().enumerate() {
        close(a, &format!("attentions.{i}"));
    }
    assert!(out.pooler_output.is_none());
}

/// 48×40 images on a model trained at 32×32: the position embeddings are resampled to the
/// 6×5 patch grid as transformers' `interpolate_pos_encoding=True` does.
#[test]
fn other_image_sizes_match_interpolate_pos_encoding() {
    let (model, _) = ViT::<B>::classifier_from_pretrained(fixture(), &Default::default()).unwrap();
    let pixels = input("pixel_values_48x40");
    model.backbone.check_input(&pixels).unwrap();
    close(model.logits(pixels.clone()), "logits_48x40");
    close(
        model.backbone.forward(pixels, false).last_hidden_state,
        "last_hidden_state_48x40",
    );
}

/// The same weights saved with transformers 5's own names (`save_original_format=False`)
/// load to the same model.
#[test]
fn transformers5_names_load_to_the_same_model() {
    let (model, report) =
        ViT::<B>::classifier_from_pretrained(fixture().join("v5-names"), &Default::default())
            .unwrap();
    assert!(report.is_clean(), "{report}");
    close(model.logits(input("pixel_values")), "logits");
}

/// The body alone from a classification checkpoint (the classifier is ignored, ready for a
/// new head) and from a `ViTModel` with its pooler.
#[test]
fn the_body_loads_from_either_kind_of_checkpoint() {
    let device = Default::default();
    let (body, report) = ViT::<B>::from_pretrained(fixture(), &device).unwrap();
    assert!(report.missing.is_empty() && report.unexpected.is_empty());
    assert_eq!(report.ignored.len(), 2, "{report}");
    assert!(body.pooler.is_none());
    close(
        body.forward(input("pixel_values"), false).last_hidden_state,
        "last_hidden_state",
    );

    let (base, report) = ViT::<B>::from_pretrained(fixture().join("base"), &device).unwrap();
    assert!(report.is_clean(), "{report}");
    let out = base.forward(input("pixel_values"), false);
    close(out.last_hidden_state, "base.last_hidden_state");
    close(out.pooler_output.unwrap(), "base.pooler_output");
}

/// `classifier 32 → 5` replaced by a new `32 → 3` head; the body keeps its weights.
#[test]
fn the_head_is_replaced_for_a_new_task() {
    let device = Default::default();
    let (model, _) = ViT::<B>::classifier_from_pretrained(fixture(), &device).unwrap();
    let model = model.replace_linear_head(3, &device).unwrap();
    let pixels = input("pixel_values");
    assert_eq!(model.logits(pixels.clone()).dims(), [2, 3]);
    close(
        model.backbone.forward(pixels, false).last_hidden_state,
        "last_hidden_state",
    );
}

/// ViT-Base/16 has as many parameters as transformers counts, with the 1000-class
/// classifier and as a `ViTModel` with its pooler.
#[test]
fn vit_base_has_transformers_parameter_counts() {
    let text = std::fs::read_to_string(fixture().join("reference.json")).unwrap();
    let reference: Value = serde_json::from_str(&text).unwrap();
    let device = Default::default();
    let config = ViTConfig::vit_base_patch16_224();
    let body = ViT::<B>::new(&config, false, &device).unwrap();
    let classifier = body.num_params() + 768 * 1000 + 1000;
    assert_eq!(
        classifier as u64,
        reference["param_count_vit_base_patch16_224"]
            .as_u64()
            .unwrap()
    );
    let with_pooler = ViT::<B>::new(&config, true, &device).unwrap();
    assert_eq!(
        with_pooler.num_params() as u64,
        reference["param_count_vit_base_model_with_pooler"]
            .as_u64()
            .unwrap()
    );
}

//! BERT's poolings against transformers and sentence-transformers: a tiny random `BertModel`
//! with its pooler, written by transformers itself (`scripts/make_bert_fixture.py`,
//! committed in `tests/fixtures/bert-tiny/`), loads strictly and gives transformers' final
//! hidden states, its `pooler_output` and sentence-transformers' normalised mean embedding;
//! a pooling that does not use the pooler leaves it untrained.

use burn::module::AutodiffModule;
use burn::prelude::*;
use burn::tensor::Tolerance;
use burn_transfer::backbone::Backbone;
use burn_transfer::models::{Bert, BertConfig, BertInput};
use burn_transfer::prelude::*;
use std::path::PathBuf;

type B = burn::backend::NdArray;
type A = burn::backend::Autodiff<B>;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert-tiny")
}

/// One float32 tensor of `reference.safetensors` as burn data.
fn expected(name: &str) -> TensorData {
    let bytes = std::fs::read(fixture().join("reference.safetensors")).unwrap();
    crate::common::reference_tensor(&bytes, name)
}

fn input<Bk: Backend>() -> BertInput<Bk> {
    let ints = |name: &str| Tensor::<Bk, 2>::from_data(expected(name), &Default::default()).int();
    BertInput::with_mask(ints("input_ids"), ints("attention_mask"))
}

fn close<const D: usize>(got: Tensor<B, D>, name: &str) {
    got.into_data()
        .assert_approx_eq::<f32>(&expected(name), Tolerance::rel_abs(1e-4, 1e-5));
}

fn bert<Bk: Backend>() -> Bert<Bk> {
    let (bert, report) = Bert::<Bk>::from_pretrained(fixture(), &Default::default())
        .expect("the fixture loads strictly");
    assert!(report.is_clean(), "{report}");
    assert!(bert.pooler.is_some());
    bert
}

#[test]
fn poolings_give_transformers_and_sentence_transformers_outputs() {
    let bert = bert::<B>();
    let hidden = bert.forward(input(), false).last_hidden_state;
    close(hidden.clone(), "last_hidden_state");
    let pooled = |pooling| {
        Pooled::new(bert.clone(), pooling)
            .unwrap()
            .features(input())
    };
    close(pooled(Pooling::Pooler), "pooler_output");
    close(pooled(Pooling::MeanNormalized), "mean_normalized");
    close(bert.sentence_embeddings(input()), "mean_normalized");
    // Cls is the first position; MeanNormalized is Mean with rows of length 1.
    pooled(Pooling::Cls).into_data().assert_eq(
        &hidden
            .slice([0..2, 0..1, 0..32])
            .reshape([2, 32])
            .into_data(),
        true,
    );
    let mean = pooled(Pooling::Mean);
    let norm = mean.clone().powi_scalar(2).sum_dim(1).sqrt();
    close(mean / norm, "mean_normalized");
}

/// The pooler trains only when the pooling uses it; asking an encoder without one for its
/// pooler is an error at construction.
#[test]
fn the_pooler_trains_only_when_the_pooling_uses_it() {
    let device = Default::default();
    let config = BertConfig::all_minilm_l6_v2().shallower(1).narrower(16, 4);
    let pooler_params = 16 * 16 + 16;
    let bert = Bert::<A>::new(&config, &device).unwrap();
    let total = bert.param_summary().total();
    for (pooling, trainable) in [
        (Pooling::Pooler, total),
        (Pooling::Cls, total - pooler_params),
        (Pooling::Mean, total - pooler_params),
        (Pooling::MeanNormalized, total - pooler_params),
    ] {
        let pooled = Pooled::new(bert.clone(), pooling).unwrap();
        assert_eq!(pooled.param_summary().trainable(), trainable, "{pooling:?}");
        // And the gradient agrees: the pooler gets one exactly when it is used.
        let ids = Tensor::<A, 2, Int>::from_ints([[101, 7, 9, 102]], &device);
        let grads = pooled.features(BertInput::new(ids)).sum().backward();
        let weight = &pooled.encoder.pooler.as_ref().unwrap().dense.weight;
        assert_eq!(
            weight.grad(&grads).is_some(),
            pooling == Pooling::Pooler,
            "{pooling:?}"
        );
    }

    let mut without = config.clone();
    without.with_pooler = false;
    let err = Pooled::new(Bert::<A>::new(&without, &device).unwrap(), Pooling::Pooler).unwrap_err();
    assert!(matches!(err, TransferError::InvalidConfig { .. }), "{err}");
    assert!(err.to_string().contains("no pooler"), "{err}");
}

fn peft_expected(name: &str) -> TensorData {
    let bytes = std::fs::read(fixture().join("peft-reference.safetensors")).unwrap();
    crate::common::reference_tensor(&bytes, name)
}

/// Adapters written by Python PEFT (`scripts/make_peft_fixture.py`: LoRA on query/value;
/// rank-stabilised LoRA on key and the attention output with the pooler in
/// `modules_to_save`) load onto this crate's `Bert` through BERT's import rules and give
/// PEFT's outputs.
#[test]
fn peft_adapters_load_and_give_peft_outputs() {
    use burn_transfer::adapter::LoraModel;
    use burn_transfer::models::bert::bert_import_options;
    let rules = bert_import_options().unwrap();
    for (folder, targets, trainable) in [
        ("peft-query-value", 4, 4 * (4 * 32 + 32 * 4)),
        // The pooler (32·32 + 32) trains with the factors, as PEFT's modules_to_save.
        (
            "peft-rslora-modules-to-save",
            4,
            4 * (2 * 32 + 32 * 2) + 32 * 32 + 32,
        ),
    ] {
        let lora = LoraModel::load_peft_adapter(bert::<A>(), &fixture().join(folder), &rules)
            .unwrap_or_else(|e| panic!("{folder}: {e}"));
        assert_eq!(lora.active().unwrap().targets().len(), targets, "{folder}");
        assert_eq!(lora.param_summary().trainable(), trainable, "{folder}");
        // Compared in inference (the autodiff backend trains: BERT's dropout is on).
        let merged = lora.merge().valid();
        // The adapter's effect (adapted output − base output, up to 4 here) matches PEFT's
        // to 1e-5 relative; the outputs themselves carry the base forward pass's own float
        // differences too.
        let base = bert::<B>().forward(input::<B>(), false).last_hidden_state;
        let out = merged.forward(input::<B>(), false).last_hidden_state;
        let want = peft_expected(&format!("{folder}.last_hidden_state"));
        let reference_base = expected("last_hidden_state");
        let minus = |a: &TensorData, b: &TensorData| -> Vec<f32> {
            let (a, b) = (a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
            a.iter().zip(&b).map(|(x, y)| x - y).collect()
        };
        let ours = minus(&out.clone().into_data(), &base.into_data());
        let theirs = minus(&want, &reference_base);
        let worst = ours
            .iter()
            .zip(&theirs)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0f32, f32::max);
        assert!(
            worst < 1e-5,
            "{folder}: the adapter's effect differs by {worst}"
        );
        assert!(
            theirs.iter().any(|d| d.abs() > 0.1),
            "{folder}: the adapter matters"
        );
        let tolerance = Tolerance::rel_abs(1e-4, 2e-5);
        out.into_data().assert_approx_eq::<f32>(&want, tolerance);
        Pooled::new(merged, Pooling::Pooler)
            .unwrap()
            .features(input::<B>())
            .into_data()
            .assert_approx_eq::<f32>(
                &peft_expected(&format!("{folder}.pooler_output")),
                tolerance,
            );
    }
}

/// What cannot load says why: a model the rules do not reach (BERT inside a classifier
/// without a prefix rule), then the same with the rule; a DoRA adapter; a truncated file.
#[test]
fn peft_adapters_that_cannot_load_are_errors() {
    use burn_transfer::adapter::LoraModel;
    use burn_transfer::models::bert::bert_import_options;
    let source = fixture().join("peft-query-value");
    let rules = bert_import_options().unwrap();
    let device = Default::default();
    let classifier = || {
        TransferModel::new(
            Pooled::new(bert::<A>(), Pooling::Mean).unwrap(),
            LinearHead::new(32, 2, &device).unwrap(),
        )
        .unwrap()
    };
    let err = LoraModel::load_peft_adapter(classifier(), &source, &rules).unwrap_err();
    assert!(
        err.to_string()
            .contains("encoder.layer.0.attention.self.query"),
        "{err}"
    );
    assert!(err.to_string().contains("prefix"), "{err}");
    let prefixed = rules.clone().with_remap("^", "backbone.encoder.").unwrap();
    let lora = LoraModel::load_peft_adapter(classifier(), &source, &prefixed).unwrap();
    assert_eq!(lora.active().unwrap().targets().len(), 4);

    let dir = tempfile::tempdir().unwrap();
    let copy = |config: &str, weights: &[u8]| {
        std::fs::write(dir.path().join("adapter_config.json"), config).unwrap();
        std::fs::write(dir.path().join("adapter_model.safetensors"), weights).unwrap();
    };
    let config = std::fs::read_to_string(source.join("adapter_config.json")).unwrap();
    let weights = std::fs::read(source.join("adapter_model.safetensors")).unwrap();
    copy(
        &config.replace("\"use_dora\": false", "\"use_dora\": true"),
        &weights,
    );
    let err = LoraModel::load_peft_adapter(bert::<A>(), dir.path(), &rules).unwrap_err();
    assert!(err.to_string().contains("DoRA"), "{err}");
    copy(&config, &weights[..weights.len() - 100]);
    let err = LoraModel::load_peft_adapter(bert::<A>(), dir.path(), &rules).unwrap_err();
    assert!(matches!(err, TransferError::Checkpoint { .. }), "{err}");
}

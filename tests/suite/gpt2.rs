//! GPT-2 against transformers: a tiny random `GPT2LMHeadModel` written by transformers
//! itself (`scripts/make_gpt2_fixture.py`, committed in `tests/fixtures/gpt2-tiny/`) loads
//! strictly and gives transformers' token ids, logits, hidden states, attention maps, loss
//! and greedy continuations.

use burn::prelude::*;
use burn::tensor::Tolerance;
use burn_transfer::loss::functional::causal_lm_loss;
use burn_transfer::models::gpt2::{
    GenerationConfig, Gpt2Config, Gpt2Input, Gpt2LmHeadModel, Gpt2Tokenizer,
};
use burn_transfer::task::{CausalLm, TokenBatch};
use safetensors::SafeTensors;
use serde_json::Value;
use std::path::PathBuf;

type B = burn::backend::NdArray;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2-tiny")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn rows(value: &Value) -> Vec<Vec<u32>> {
    serde_json::from_value(value.clone()).unwrap()
}

use crate::common::reference_tensor as expected;

fn model() -> Gpt2LmHeadModel<B> {
    let (model, report) = Gpt2LmHeadModel::<B>::from_pretrained(fixture(), &Default::default())
        .expect("the fixture loads strictly");
    assert!(
        report.missing.is_empty() && report.unexpected.is_empty(),
        "{report}"
    );
    model
}

fn int(rows: &[Vec<u32>]) -> Tensor<B, 2, Int> {
    let flat: Vec<i64> = rows.iter().flatten().map(|&t| t as i64).collect();
    Tensor::from_data(
        TensorData::new(flat, [rows.len(), rows[0].len()]),
        &Default::default(),
    )
}

#[test]
fn the_tokenizer_gives_transformers_ids_and_round_trips() {
    let reference = reference();
    let tokenizer = Gpt2Tokenizer::from_file(fixture().join("tokenizer.json")).unwrap();
    assert_eq!(tokenizer.end_of_text(), Some(0));
    let ids = rows(&reference["ids"]);
    for (text, expected) in reference["texts"].as_array().unwrap().iter().zip(&ids) {
        let text = text.as_str().unwrap();
        let got = tokenizer.encode(text).unwrap();
        assert_eq!(&got, expected, "{text}");
        assert_eq!(tokenizer.decode(&got, false).unwrap(), text);
    }
    let texts: Vec<&str> = reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let batch = tokenizer.batch::<B>(&texts, &Default::default()).unwrap();
    let batch_ids: Vec<i64> = batch.input_ids.into_data().to_vec().unwrap();
    let expected: Vec<i64> = rows(&reference["batch"])
        .into_iter()
        .flatten()
        .map(i64::from)
        .collect();
    assert_eq!(batch_ids, expected);
}

/// Logits, all hidden states and all attention maps of a right-padded batch, and the LM
/// loss over its real tokens, as transformers computes them (1e-4).
#[test]
fn forward_matches_transformers_output_for_output() {
    let reference = reference();
    let bytes = std::fs::read(fixture().join("reference.safetensors")).unwrap();
    let model = model();
    let ids = int(&rows(&reference["batch"]));
    let mask = int(&rows(&reference["mask"]));
    let out = model
        .forward(Gpt2Input::with_mask(ids.clone(), mask.clone()), None, true)
        .unwrap();
    let tolerance = Tolerance::absolute(1e-4);
    out.logits
        .clone()
        .into_data()
        .assert_approx_eq::<f32>(&expected(&bytes, "logits"), tolerance);
    assert_eq!(out.decoder.hidden_states.len(), 3);
    for (i, h) in out.decoder.hidden_states.iter().enumerate() {
        h.clone()
            .into_data()
            .assert_approx_eq::<f32>(&expected(&bytes, &format!("hidden_states.{i}")), tolerance);
    }
    assert_eq!(out.decoder.attentions.len(), 2);
    for (i, a) in out.decoder.attentions.iter().enumerate() {
        a.clone()
            .into_data()
            .assert_approx_eq::<f32>(&expected(&bytes, &format!("attentions.{i}")), tolerance);
    }
    // Without the maps, the fused attention gives the same logits.
    let fused = model
        .forward(Gpt2Input::with_mask(ids.clone(), mask.clone()), None, false)
        .unwrap();
    fused
        .logits
        .clone()
        .into_data()
        .assert_approx_eq::<f32>(&expected(&bytes, "logits"), tolerance);
    let loss = causal_lm_loss(fused.logits, ids, mask)
        .unwrap()
        .into_scalar();
    let want = reference["loss"].as_f64().unwrap() as f32;
    assert!(
        (loss - want).abs() < 1e-4,
        "loss {loss} vs transformers {want}"
    );
    // One batch: the perplexity is exp of that loss.
    let ids = int(&rows(&reference["batch"]));
    let mask = int(&rows(&reference["mask"]));
    let perplexity = model.perplexity(&[TokenBatch::new(ids, mask)]).unwrap();
    let want = (want as f64).exp();
    assert!(
        (perplexity - want).abs() < 1e-4 * want,
        "perplexity {perplexity} vs {want}"
    );
}

/// Greedy continuations equal transformers' `generate` token for token: one prompt that
/// stops at `<|endoftext|>`, and a left-padded batch of two prompts of different lengths.
#[test]
fn greedy_generation_matches_transformers_generate() {
    let reference = reference();
    let model = model();
    let prompt: Vec<u32> = serde_json::from_value(reference["greedy_prompt"].clone()).unwrap();
    let single = model
        .generate(&[prompt], &GenerationConfig::greedy(12))
        .unwrap();
    assert_eq!(single, rows(&reference["greedy"]));
    let batch = model
        .generate(
            &rows(&reference["greedy_batch_prompts"]),
            &GenerationConfig::greedy(8),
        )
        .unwrap();
    assert_eq!(batch, rows(&reference["greedy_batch"]));
}

/// The standard configurations have transformers' parameter counts (the LM head shares the
/// embedding matrix, so it adds none).
#[test]
fn standard_configurations_have_transformers_parameter_counts() {
    let reference = reference();
    let device = Default::default();
    for (config, key) in [
        (Gpt2Config::gpt2(), "param_count_gpt2"),
        (Gpt2Config::distilgpt2(), "param_count_distilgpt2"),
    ] {
        let model = Gpt2LmHeadModel::<B>::new(&config, &device).unwrap();
        assert_eq!(
            model.num_params() as u64,
            reference[key].as_u64().unwrap(),
            "{key}"
        );
    }
}

/// A bare `GPT2Model` file (keys without `transformer.`), with the causal-mask buffers
/// older checkpoints carry and a stored copy of the tied head, loads strictly too.
#[test]
fn older_and_bare_checkpoints_load_with_the_same_weights() {
    use safetensors::tensor::{Dtype, TensorView};
    let bytes = std::fs::read(fixture().join("model.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let mask: Vec<u8> = vec![0; 64 * 64 * 4];
    let mut entries: Vec<(String, TensorView)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| (name.trim_start_matches("transformer.").to_string(), view))
        .collect();
    for block in 0..2 {
        let buffer = TensorView::new(Dtype::F32, vec![1, 1, 64, 64], &mask).unwrap();
        entries.push((format!("h.{block}.attn.bias"), buffer));
    }
    let wte = file.tensor("transformer.wte.weight").unwrap();
    entries.push(("lm_head.weight".into(), wte));
    let dir = tempfile::tempdir().unwrap();
    for name in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture().join(name), dir.path().join(name)).unwrap();
    }
    let written = safetensors::serialize(entries, None).unwrap();
    std::fs::write(dir.path().join("model.safetensors"), written).unwrap();
    let (bare, report) = Gpt2LmHeadModel::<B>::from_pretrained(dir.path(), &Default::default())
        .expect("the bare file loads strictly");
    assert_eq!(report.ignored.len(), 3, "{report}");
    let ids = int(&[vec![5, 6, 7]]);
    let a = model()
        .forward(Gpt2Input::new(ids.clone()), None, false)
        .unwrap();
    let b = bare.forward(Gpt2Input::new(ids), None, false).unwrap();
    assert_eq!(a.logits.into_data(), b.logits.into_data());
}

//! Whisper's encoder and log-mel front end against transformers: a tiny random
//! `WhisperForConditionalGeneration` written by transformers itself
//! (`scripts/make_whisper_fixture.py`, committed in `tests/fixtures/whisper-tiny/`) loads its
//! encoder strictly and gives transformers' hidden states and attention maps; the features of
//! fixed waveforms are `WhisperFeatureExtractor`'s.

use burn::module::Module;
use burn::prelude::*;
use burn::tensor::Tolerance;
use burn_transfer::models::whisper::{WhisperEncoder, WhisperEncoderConfig, WhisperFeatureConfig};
use serde_json::Value;
use std::path::PathBuf;

type B = burn::backend::NdArray;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/whisper-tiny")
}

fn reference() -> Value {
    let text = std::fs::read_to_string(fixture().join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// One float32 tensor of `reference.safetensors` as burn data.
fn expected(name: &str) -> TensorData {
    let bytes = std::fs::read(fixture().join("reference.safetensors")).unwrap();
    crate::common::reference_tensor(&bytes, name)
}

fn samples(name: &str) -> Vec<f32> {
    expected(name).to_vec().unwrap()
}

/// Raw audio → log-mel features as transformers computes them: to 1e-5 against its float64
/// NumPy path; its float32 torch path (what `__call__` runs when torch is installed) differs
/// from that by up to 2.8e-5 itself, so 1e-4 there.
#[test]
fn log_mel_features_match_the_feature_extractor() {
    let device = Default::default();
    let extractor = WhisperFeatureConfig::default()
        .with_chunk_length(2)
        .init()
        .unwrap();
    let (a, b) = (samples("waveform.0"), samples("waveform.1"));
    let features = extractor.batch::<B>(&[&a, &b], &device).unwrap();
    features
        .clone()
        .into_data()
        .assert_approx_eq::<f32>(&expected("input_features_numpy"), Tolerance::absolute(1e-5));
    features
        .into_data()
        .assert_approx_eq::<f32>(&expected("input_features"), Tolerance::absolute(1e-4));
}

/// The default 30-second extractor (3000 frames): the first 300 frames and the sum of all.
#[test]
fn thirty_second_features_match_too() {
    let extractor = WhisperFeatureConfig::default().init().unwrap();
    let features = extractor.extract(&samples("waveform.0")).unwrap();
    assert_eq!(features.len(), 80 * 3000);
    let head: Vec<f32> = features
        .chunks(3000)
        .flat_map(|row| row[..300].to_vec())
        .collect();
    TensorData::new(head, [1, 80, 300]).assert_approx_eq::<f32>(
        &expected("input_features_30s_head"),
        Tolerance::absolute(1e-4),
    );
    let sum: f64 = features.iter().map(|&x| x as f64).sum();
    let reference = reference()["features_30s_sum"].as_f64().unwrap();
    assert!(
        (sum - reference).abs() < 1e-3 * reference.abs(),
        "{sum} vs {reference}"
    );
}

#[test]
fn the_encoder_gives_transformers_outputs() {
    let (encoder, report) = WhisperEncoder::<B>::from_pretrained(fixture(), &Default::default())
        .expect("the fixture's encoder loads strictly");
    assert!(
        report.missing.is_empty() && report.unexpected.is_empty() && report.mismatched.is_empty(),
        "{report}"
    );
    assert!(
        report
            .ignored
            .iter()
            .all(|k| k.starts_with("model.decoder.")
                || k.starts_with("decoder.")
                || k.starts_with("proj_out")),
        "{:?}",
        report.ignored
    );
    let features = Tensor::<B, 3>::from_data(expected("input_features"), &Default::default());
    let tolerance = Tolerance::rel_abs(1e-4, 1e-4);
    let out = encoder.forward(features.clone(), true);
    out.last_hidden_state
        .into_data()
        .assert_approx_eq::<f32>(&expected("last_hidden_state"), tolerance);
    assert_eq!(
        out.hidden_states.len() as u64,
        reference()["hidden_states"].as_u64().unwrap()
    );
    for (i, h) in out.hidden_states.into_iter().enumerate() {
        h.into_data()
            .assert_approx_eq::<f32>(&expected(&format!("hidden_states.{i}")), tolerance);
    }
    for (i, a) in out.attentions.into_iter().enumerate() {
        a.narrow(0, 0, 1)
            .into_data()
            .assert_approx_eq::<f32>(&expected(&format!("attentions.{i}")), tolerance);
    }
}

/// whisper-tiny's encoder has as many parameters as transformers counts (the fixed position
/// table included, as transformers counts it).
#[test]
fn whisper_tiny_encoder_has_transformers_parameter_count() {
    let encoder =
        WhisperEncoder::<B>::new(&WhisperEncoderConfig::whisper_tiny(), &Default::default())
            .unwrap();
    assert_eq!(
        encoder.num_params() as u64,
        reference()["param_count_whisper_tiny_encoder"]
            .as_u64()
            .unwrap()
    );
}

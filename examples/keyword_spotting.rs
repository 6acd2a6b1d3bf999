//! Keyword spotting with Whisper's encoder architecture: spoken words synthesised with
//! espeak-ng (8 voices × 3 speeds × 3 pitches a word, `scripts/make-speech.sh`), turned into
//! Whisper's log-mel features (`WhisperFeatureExtractor`, one-second clips: 80 × 100), a small
//! `WhisperEncoder` (2 layers, width 64, 50 positions) pretrained here on ten words (the
//! Speech Commands vocabulary: yes, no, up, down, left, right, on, off, stop, go), then given a
//! new head for five other words (cat, dog, bird, house, tree) learnt from two voices and
//! tested on the six others.
//!
//!     apt-get install espeak-ng sox        # once: the synthesiser (Debian)
//!     scripts/make-speech.sh               # once: the 1,080 clips (13 s)
//!     cargo run --release --example keyword_spotting
//!
//! Compared on the same clips and budget, on 4 draws (each pair of voices in turn as the
//! labelled speakers): the head on the frozen pretrained encoder, the whole encoder
//! fine-tuned from that head, and the same encoder from random initialisation. Exits 1
//! unless, on average, the pretrained encoder beats random initialisation. (Fine-tuning the
//! whole encoder on two voices does not beat its frozen features on the six others: see
//! docs/examples.md.) `KWS_PRETRAIN_EPOCHS` (default 20), `KWS_EPOCHS` (on the new words,
//! default 40), `KWS_DRAWS` (default 4) and `KWS_SPEAKERS` (labelled voices per draw, default
//! 2) change the run: CI runs a quick mode with fewer epochs and one draw (same code path and
//! check).

#[path = "common/table.rs"]
mod table;
#[path = "common/transfer.rs"]
mod transfer;
use burn::module::AutodiffModule;
use burn::prelude::*;
use burn_transfer::finetune::evaluate;
use burn_transfer::models::whisper::{
    WhisperEncoder, WhisperEncoderConfig, WhisperFeatureConfig, WhisperFeatureExtractor,
};
use burn_transfer::prelude::*;
use std::path::{Path, PathBuf};
use std::time::Instant;
use table::percent;
use transfer::{B, Budget, Draws, Inner, env_or, pretrainer, three_ways};

type Clips<Bk> = Vec<ClassificationBatch<Bk, Tensor<Bk, 3>>>;

const SEED: u64 = 11;
const SOURCE: [&str; 10] = [
    "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go",
];
const TARGET: [&str; 5] = ["cat", "dog", "bird", "house", "tree"];
/// The voices of `scripts/make-speech.sh`, as they appear in the file names.
const VOICES: [&str; 8] = [
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-029",
    "en-gb-x-rp",
    "en-us-f2",
    "en-gb-f4",
    "en-us-m3",
];
const BATCH: usize = 30;
/// Voices whose clips of the new words are labelled, per draw (the others are the test).
const SPEAKERS: usize = 2;
/// Epochs of the fine-tuned and scratch encoders on the new words (`KWS_EPOCHS` changes it).
const EPOCHS: usize = 40;

/// One clip: its word's index, the voice's index and its features `[80 · 100]`.
struct Clip {
    word: usize,
    voice: usize,
    features: Vec<f32>,
}

fn main() -> burn_transfer::Result<()> {
    // CPU training: this thread computes as one of rayon's, and freed buffers are kept for
    // the next step instead of paying page faults.
    burn_transfer::kernels::join_compute_pool();
    burn_transfer::kernels::reuse_freed_memory();
    let speakers = env_or("KWS_SPEAKERS", SPEAKERS).clamp(1, VOICES.len() - 1);
    let budget = Budget {
        head_only: 1e-2,
        head_epochs: 200,
        fine_tune: (1e-4, 3e-3),
        scratch: 1e-3,
        epochs: env_or("KWS_EPOCHS", EPOCHS).max(1),
        seed: SEED,
    };
    let (pretrain_epochs, draw_count) = (
        env_or("KWS_PRETRAIN_EPOCHS", 20),
        env_or("KWS_DRAWS", VOICES.len() / speakers).clamp(1, VOICES.len() / speakers),
    );
    let device = Default::default();
    let dir = speech_dir();
    let extractor = WhisperFeatureConfig::default()
        .with_chunk_length(1)
        .init()?;
    let source = load(&dir, &SOURCE, &extractor)?;
    let target = load(&dir, &TARGET, &extractor)?;
    let frames = extractor.config().frames();
    println!(
        "{} clips of {} words and {} clips of {} words, {}×{frames} log-mel features each",
        source.len(),
        SOURCE.len(),
        target.len(),
        TARGET.len(),
        extractor.config().feature_size
    );

    // 1. Pretraining on the source words, every voice.
    let config = WhisperEncoderConfig::whisper_tiny()
        .for_seconds(1)
        .narrower(64, 4)
        .shallower(2);
    B::seed(&device, SEED);
    let model = TransferModel::with_linear_head(
        WhisperEncoder::<B>::new(&config, &device)?,
        SOURCE.len(),
        &device,
    )?;
    println!(
        "pretraining a Whisper encoder ({} parameters) on {} ({pretrain_epochs} epochs)",
        model.param_summary().total(),
        SOURCE.join(", ")
    );
    let started = Instant::now();
    let all: Vec<&Clip> = source.iter().collect();
    let pretrained = pretrainer(pretrain_epochs, SEED)
        .fit(model, &batches::<B>(&all, frames, &device), None)?
        .model;
    let accuracy = evaluate(
        &pretrained.valid(),
        &batches::<Inner>(&all, frames, &device),
    )?;
    println!(
        "pretrained in {:.0} s: {} on its own clips",
        started.elapsed().as_secs_f64(),
        percent(accuracy.accuracy)
    );
    let (body, _) = pretrained.into_parts();

    // 2. The new words: two voices labelled, the six others to test, each pair in turn.
    println!(
        "transfer to {}: {} labelled clips per word ({speakers} voices), tested on the other {}",
        TARGET.join(", "),
        target.len() / TARGET.len() / VOICES.len() * speakers,
        VOICES.len() - speakers
    );
    let mut draws = Draws::default();
    for draw in 0..draw_count {
        let labelled = draw * speakers..(draw + 1) * speakers;
        let (train, test): (Vec<&Clip>, Vec<&Clip>) =
            target.iter().partition(|c| labelled.contains(&c.voice));
        let train = batches::<B>(&train, frames, &device);
        let test = batches::<Inner>(&test, frames, &device);
        let scratch = || WhisperEncoder::<B>::new(&config, &device);
        draws.record(three_ways(
            &body,
            scratch,
            TARGET.len(),
            &train,
            &test,
            &budget,
        )?);
    }
    draws.print();
    // Fine-tuning is not required to match the frozen encoder here: on clips of two voices,
    // tested on six others, the whole encoder fitted to the two drifts from what carries
    // over to new voices (figures in docs/examples.md); the frozen features
    // are the result to use. Transfer must still beat training from scratch.
    draws.check_transfer("encoder");
    Ok(())
}

/// The clips' folder (`$BURN_TRANSFER_DATA/speech`, else `~/.cache/burn-transfer/data/speech`),
/// or exits with the commands that make it.
fn speech_dir() -> PathBuf {
    let base = std::env::var_os("BURN_TRANSFER_DATA")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| {
                PathBuf::from(h)
                    .join(".cache")
                    .join("burn-transfer")
                    .join("data")
            })
        })
        .unwrap_or_default();
    let dir = base.join("speech");
    if !dir.join("COMPLETE").is_file() {
        eprintln!(
            "no synthesised speech in {}; run `apt-get install espeak-ng sox` and `scripts/make-speech.sh` first",
            dir.display()
        );
        std::process::exit(2);
    }
    dir
}

/// Every clip of `words`, interleaved (all words of one voice, speed and pitch, then the
/// next), so that every batch mixes the words.
fn load(
    dir: &Path,
    words: &[&str],
    extractor: &WhisperFeatureExtractor,
) -> burn_transfer::Result<Vec<Clip>> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join(words[0]))
        .map_err(|e| burn_transfer::TransferError::BatchShape(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".wav"))
        .collect();
    names.sort();
    let mut clips = Vec::new();
    for name in &names {
        let voice = VOICES
            .iter()
            .position(|v| {
                name.strip_prefix(v)
                    .is_some_and(|rest| rest.starts_with('_'))
            })
            .unwrap_or_else(|| panic!("{name}: not one of the script's voices"));
        for (word, w) in words.iter().enumerate() {
            let path = dir.join(w).join(name);
            let reader =
                hound::WavReader::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(reader.spec().sample_rate, 16_000, "{}", path.display());
            let samples: Vec<f32> = reader
                .into_samples::<i16>()
                .map(|s| s.map(|s| s as f32 / 32768.0))
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            clips.push(Clip {
                word,
                voice,
                features: extractor.extract(&samples)?,
            });
        }
    }
    Ok(clips)
}

/// Batches of `[BATCH, 80, frames]` features with the words' indices.
fn batches<Bk: Backend>(clips: &[&Clip], frames: usize, device: &Bk::Device) -> Clips<Bk> {
    clips
        .chunks(BATCH)
        .map(|chunk| {
            let x: Vec<f32> = chunk.iter().flat_map(|c| c.features.clone()).collect();
            let y: Vec<i64> = chunk.iter().map(|c| c.word as i64).collect();
            ClassificationBatch::new(
                Tensor::from_data(TensorData::new(x, [chunk.len(), 80, frames]), device),
                Tensor::from_data(TensorData::new(y, [chunk.len()]), device),
            )
        })
        .collect()
}
